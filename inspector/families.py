"""What differs between the supported model families, in one table.

Every analysis asks this module, not `config.model_type == "gpt2"`, where a family keeps its
token embeddings, whether it has a position table or rotary positions, which norm it uses and
how many key/value heads its attention has. `family_of(config)` raises the clear "not supported
yet" error for anything else.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class Family:
    """Static facts of one model family (transformers `model_type`)."""

    model_type: str
    label: str
    positions: str  # "learned" (a position-embedding table) | "rotary" (RoPE applied to q and k)
    norm: str  # "layernorm" (centres, has β) | "rmsnorm" (no centring, no β)
    gamma_offset: float  # 1.0 when the norm scales by (1 + weight) (Gemma), else 0.0
    token_embedding: str  # attribute path from the base model to the token-embedding module
    position_embedding: str | None  # attribute path to the position table, None for rotary
    layers: str  # attribute path from the base model to the list of decoder / encoder blocks
    final_norm: str | None  # attribute path from the base model to the final norm
    decoder: bool  # causal decoder (token_type_ids never passed)
    has_token_types: bool  # BERT segment embeddings
    needs_use_cache_off: bool  # pass use_cache=False (decoders would build a KV cache otherwise)


_DECODER_DEFAULTS = dict(positions="rotary", norm="rmsnorm", gamma_offset=0.0, token_embedding="embed_tokens",
                         position_embedding=None, layers="layers", final_norm="norm", decoder=True,
                         has_token_types=False, needs_use_cache_off=True)

FAMILIES: dict[str, Family] = {
    "gpt2": Family("gpt2", "GPT-2", positions="learned", norm="layernorm", gamma_offset=0.0, token_embedding="wte",
                   position_embedding="wpe", layers="h", final_norm="ln_f", decoder=True, has_token_types=False,
                   needs_use_cache_off=True),
    "bert": Family("bert", "BERT", positions="learned", norm="layernorm", gamma_offset=0.0,
                   token_embedding="embeddings.word_embeddings", position_embedding="embeddings.position_embeddings",
                   layers="encoder.layer", final_norm=None, decoder=False, has_token_types=True,
                   needs_use_cache_off=False),
    "llama": Family("llama", "Llama", **_DECODER_DEFAULTS),
    "mistral": Family("mistral", "Mistral", **_DECODER_DEFAULTS),
    "qwen2": Family("qwen2", "Qwen2", **_DECODER_DEFAULTS),
    "qwen3": Family("qwen3", "Qwen3", **_DECODER_DEFAULTS),
    "gemma": Family("gemma", "Gemma", **{**_DECODER_DEFAULTS, "gamma_offset": 1.0}),
    "gemma2": Family("gemma2", "Gemma 2", **{**_DECODER_DEFAULTS, "gamma_offset": 1.0}),
    "gemma3_text": Family("gemma3_text", "Gemma 3 (text)", **{**_DECODER_DEFAULTS, "gamma_offset": 1.0}),
}

# Architectures (config.architectures[0]) accepted per family; a config without `architectures`
# is accepted by model_type alone. Multimodal wrappers (Gemma3ForConditionalGeneration, model_type
# "gemma3") are not in the table and get the "not supported yet" error.
_ARCHITECTURES = {
    "llama": ("LlamaForCausalLM",),
    "mistral": ("MistralForCausalLM",),
    "qwen2": ("Qwen2ForCausalLM",),
    "qwen3": ("Qwen3ForCausalLM",),
    "gemma": ("GemmaForCausalLM",),
    "gemma2": ("Gemma2ForCausalLM",),
    "gemma3_text": ("Gemma3ForCausalLM",),
}


def _installed(model_type: str) -> bool:
    """Whether the installed transformers knows this model_type (Qwen3 / Gemma 3 are recent)."""
    try:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    except ImportError:  # pragma: no cover
        return model_type in ("gpt2", "bert")
    return model_type in CONFIG_MAPPING


def supported_model_types() -> tuple[str, ...]:
    return tuple(t for t in FAMILIES if _installed(t))


def family_of(config) -> Family:
    """The family of a transformers config, or UnsupportedArchitectureError (clear message)."""
    model_type = getattr(config, "model_type", None)
    fam = FAMILIES.get(model_type)
    if fam is None or not _installed(model_type):
        raise UnsupportedArchitectureError(f"Architecture '{model_type}' is not supported yet.")
    archs = getattr(config, "architectures", None) or []
    allowed = _ARCHITECTURES.get(model_type)
    if archs and allowed is not None and archs[0] not in allowed:
        raise UnsupportedArchitectureError(
            f"Architecture '{archs[0]}' ({model_type}) is not supported yet: only {', '.join(allowed)}.")
    return fam


def _getpath(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def base_model(model):
    """The body below the LM head (GPT2Model, BertModel, LlamaModel, ...)."""
    return getattr(model, "base_model", model)


def token_embedding(model, fam: Family):
    """The module mapping ids to input vectors (Gemma's scales by √d inside its forward)."""
    return _getpath(base_model(model), fam.token_embedding)


def position_table(model, fam: Family):
    """The learned position-embedding module, or None for rotary families."""
    return _getpath(base_model(model), fam.position_embedding) if fam.position_embedding else None


def blocks(model, fam: Family):
    return _getpath(base_model(model), fam.layers)


def n_kv_heads(config) -> int:
    return int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)


def head_dim(config) -> int:
    """Per-head width: `head_dim` when the config sets it (Gemma 256, Qwen3 128), else d_model / heads."""
    explicit = getattr(config, "head_dim", None)
    return int(explicit) if explicit else config.hidden_size // config.num_attention_heads


def sliding_windows(config) -> tuple[int | None, ...]:
    """Per layer: the sliding-window size, or None where the layer attends to the full causal past."""
    L = config.num_hidden_layers
    window = getattr(config, "sliding_window", None)
    if not window or getattr(config, "use_sliding_window", True) is False:
        return (None,) * L
    types = getattr(config, "layer_types", None)
    if types:
        return tuple(window if t == "sliding_attention" else None for t in types)
    return (int(window),) * L


def kv_groups(n_heads: int, n_kv: int) -> list[list[int]]:
    """Query heads sharing each key/value head: [[0, 1, 2], [3, 4, 5], ...] (transformers' repeat_kv order)."""
    per = n_heads // max(n_kv, 1)
    return [list(range(g * per, (g + 1) * per)) for g in range(n_kv)]


def tied_embeddings(model) -> bool:
    """Whether the output head shares its weight with the input token embedding."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if head is None or emb is None or getattr(head, "weight", None) is None:
        return False
    return head.weight.data_ptr() == emb.weight.data_ptr() or head.weight is emb.weight


class SoftcappedHead(torch.nn.Module):
    """The output head followed by Gemma 2's final logit capping, cap·tanh(logits / cap), as its forward does."""

    def __init__(self, head: torch.nn.Module, cap: float):
        super().__init__()
        self.head = head
        self.cap = float(cap)
        self.weight = head.weight  # same Parameter: tied / untied checks still see the real head
        self.bias = getattr(head, "bias", None)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(hidden) / self.cap) * self.cap


def output_head(model):
    """hidden (.., D) -> the logits the model returns: `get_output_embeddings()`, plus the final logit
    softcap where the config sets one (Gemma 2); None when the model has no head."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    cap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    if head is None or not cap:
        return head
    return SoftcappedHead(head, cap)
