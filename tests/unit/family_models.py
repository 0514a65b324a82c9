"""Tiny random configs of every supported decoder family, and an independent QKᵀ reference for them.

The reference takes q and k from forward hooks on the model's own projections (`q_proj` / `k_proj`,
or `q_norm` / `k_norm` where the family normalises per head), applies rotary positions with its
own implementation (default RoPE from the config's θ), repeats key heads for grouped-query attention
by hand, builds the causal / padding / sliding-window mask itself and reduces in float64 numpy.
Nothing of inspector.capture is used to compute an expected value.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from conftest import make_gpt2_tokenizer

# model_type -> (config class, causal LM class, extra config fields). Every one: GQA (4 query heads on
# 2 key/value heads), RoPE, RMSNorm, untied head unless the family ties by default (Gemma: tied).
FAMILY_CONFIGS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": 4}),  # shorter than the texts
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"sliding_window": 4, "query_pre_attn_scalar": 12,
                                                     "attn_logit_softcapping": 5.0,
                                                     "final_logit_softcapping": 30.0}),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM", {"sliding_window": 4, "query_pre_attn_scalar": 12,
                                                             "sliding_window_pattern": 2,
                                                             "layer_types": ["sliding_attention",
                                                                             "full_attention"]}),
}


def installed_families() -> list[str]:
    import transformers

    return [t for t, (cfg, cls, _) in FAMILY_CONFIGS.items() if hasattr(transformers, cfg) and hasattr(transformers, cls)]


def tiny_family_model(model_type: str, seed: int = 0, init_range: float = 0.3, attn: str = "sdpa", tok=None,
                      **overrides):
    import transformers

    cfg_name, cls_name, extra = FAMILY_CONFIGS[model_type]
    if model_type == "gemma2" and attn == "sdpa":
        attn = "eager"  # transformers refuses SDPA for Gemma 2 (softcapping); inspector's own function works
    torch.manual_seed(seed)
    tok = tok or make_gpt2_tokenizer()
    cfg = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
               initializer_range=init_range, rms_norm_eps=1e-6, attn_implementation=attn,
               bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    if not model_type.startswith("gemma"):
        cfg["tie_word_embeddings"] = False
    cfg.update(extra)
    cfg.update(overrides)
    config = getattr(transformers, cfg_name)(**cfg)
    model = getattr(transformers, cls_name)(config).eval()
    with torch.no_grad():  # norms start at γ = 1 (or weight 0 for Gemma): make them visible
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)
    return model, tok


def _rope(x: torch.Tensor, theta: float, positions: torch.Tensor) -> torch.Tensor:
    """Default rotary embedding, first-half / second-half pairing ("rotate_half"). x: (B, H, T, d)."""
    d = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))  # (d/2,)
    ang = positions.double()[..., None] * inv  # (B, T, d/2)
    cos = torch.cat([ang.cos(), ang.cos()], dim=-1)[:, None]  # (B, 1, T, d)
    sin = torch.cat([ang.sin(), ang.sin()], dim=-1)[:, None]
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos + rotated * sin


def _theta(config, layer: int) -> float:
    rp = config.rope_parameters
    if "rope_theta" in rp:
        return float(rp["rope_theta"])
    return float(rp[config.layer_types[layer]]["rope_theta"])


def reference_qk(model, batch) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer (q, k) float64 (B, H, T, d) after RoPE, key heads repeated to the query heads."""
    cfg = model.config
    H, Hkv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    seen: dict[tuple[int, str], torch.Tensor] = {}
    handles = []
    for i, layer in enumerate(model.model.layers):
        att = layer.self_attn
        for which in ("q", "k"):
            mod = getattr(att, f"{which}_norm", None) or getattr(att, f"{which}_proj")
            handles.append(mod.register_forward_hook(
                lambda m, a, out, _k=(i, which): seen.__setitem__(_k, out.detach().double())))
    try:
        with torch.no_grad():
            model(**batch, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    mask = batch["attention_mask"]
    positions = torch.arange(mask.shape[1])[None].expand_as(mask)  # transformers' default: 0..T-1, padding too
    out = []
    for i in range(cfg.num_hidden_layers):
        T = mask.shape[1]
        q, k = (_heads_first(seen[(i, w)], T, n, d) for w, n in (("q", H), ("k", Hkv)))
        q, k = _rope(q, _theta(cfg, i), positions), _rope(k, _theta(cfg, i), positions)
        k = torch.cat([k[:, g:g + 1].expand(-1, H // Hkv, -1, -1) for g in range(Hkv)], dim=1)
        out.append((q.numpy(), k.numpy()))
    return out


def _heads_first(x: torch.Tensor, T: int, n: int, d: int) -> torch.Tensor:
    """(B, n, T, d) from a projection output (B, T, n·d), a per-head norm output (B, T, n, d) (Qwen3)
    or one already transposed (B, n, T, d) (Gemma 3). T ≠ n in every test batch."""
    B = x.shape[0]
    if x.dim() == 4 and x.shape[1] == n and x.shape[2] == T:
        return x
    return x.reshape(B, T, n, d).transpose(1, 2)


def window_of(config, layer: int) -> int | None:
    w = getattr(config, "sliding_window", None)
    if not w or getattr(config, "use_sliding_window", True) is False:
        return None
    types = getattr(config, "layer_types", None)
    if types:
        return w if types[layer] == "sliding_attention" else None
    return w


def scaling_of(config) -> float:
    s = getattr(config, "query_pre_attn_scalar", None)
    return (s if s else config.head_dim) ** -0.5


def reference_valid(config, batch, layer: int) -> np.ndarray:
    """(B, 1, T, T) bool: causal, real tokens only, and j > i − window on sliding layers."""
    mask = batch["attention_mask"].numpy().astype(bool)
    T = mask.shape[1]
    i = np.arange(T)[:, None]
    j = np.arange(T)[None, :]
    allowed = j <= i
    w = window_of(config, layer)
    if w:
        allowed &= j > i - w
    return mask[:, None, :, None] & mask[:, None, None, :] & allowed[None, None]


def reference_logits(config, q: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, float]:
    """Unscaled q·k (B, H, T, T), softcapped as the model does (in unscaled units), and the scale."""
    scale = scaling_of(config)
    x = q @ np.swapaxes(k, -1, -2)
    cap = getattr(config, "attn_logit_softcapping", None)
    if cap:
        x = cap * np.tanh(x * scale / cap) / scale
    return x, scale


def reference_head_stats(scores: np.ndarray, valid: np.ndarray, scale: float, first: np.ndarray) -> dict:
    """Per head over valid pairs: count, mean, std, min, max; per valid row (averaged): entropy, entropy
    fraction, max probability, and probability on key `first[b]` (the first real token; 0 if not seen)."""
    keys = ("count", "mean", "std", "min", "max", "entropy", "entropy_fraction", "max_prob", "sink_mass")
    row = {k: [] for k in keys}
    for h in range(scores.shape[1]):
        s = scores[:, h][valid[:, h]]
        row["count"].append(s.size)
        row["mean"].append(s.mean())
        row["std"].append(s.std())
        row["min"].append(s.min())
        row["max"].append(s.max())
        ents, fracs, maxps, sinks = [], [], [], []
        for b in range(scores.shape[0]):
            for i in range(scores.shape[2]):
                sel = valid[b, h, i]
                if not sel.any():
                    continue
                z = np.where(sel, scores[b, h, i] * scale, -np.inf)
                p = np.exp(z - z.max())
                p /= p.sum()
                pv = p[sel]
                ent = -(pv * np.log(pv)).sum()
                ents.append(ent)
                maxps.append(pv.max())
                sinks.append(p[first[b]])
                if sel.sum() >= 2:
                    fracs.append(ent / math.log(sel.sum()))
        row["entropy"].append(np.mean(ents))
        row["entropy_fraction"].append(np.mean(fracs) if fracs else np.nan)
        row["max_prob"].append(np.mean(maxps))
        row["sink_mass"].append(np.mean(sinks))
    return row


def reference_stats(model, batch) -> dict[str, np.ndarray]:
    cfg = model.config
    first = batch["attention_mask"].numpy().astype(bool).argmax(axis=1)
    stats: dict[str, list] = {}
    for layer, (q, k) in enumerate(reference_qk(model, batch)):
        scores, scale = reference_logits(cfg, q, k)
        valid = np.broadcast_to(reference_valid(cfg, batch, layer), scores.shape)
        for key, v in reference_head_stats(scores, valid, scale, first).items():
            stats.setdefault(key, []).append(v)
    return {k: np.array(v) for k, v in stats.items()}
