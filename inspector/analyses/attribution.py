"""Which input tokens drive one prediction: Captum attributions over the input embeddings.

Targets (all in nats):
- causal LM, ``next_token``: log P(token at `position` | tokens before it); the token is the
  actual one in the text or a user-chosen one (at `position == n_tokens`: the token after the text);
- causal LM, ``sequence_loss``: the mean next-token cross-entropy of the whole text;
- masked LM, ``masked_token``: the token at `position` is replaced by [MASK] and the target is
  log P(original token | masked text).

Methods: Integrated Gradients (with Captum's convergence delta), gradient × input, saliency.

Why IntegratedGradients on `inputs_embeds` rather than LayerIntegratedGradients: the layer
method hooks the shared embedding module, which breaks other sessions using the same model at
the same time (FACTS.md). Feeding `inputs_embeds` attaches nothing to the model and, because
positions (and segments) are added inside the model, gives the same attributions as Layer IG
over the word-embedding output. Gradients flow to the input embeddings only (Captum calls
`torch.autograd.grad` on the inputs): the shared model's parameters, `.grad` and mode are not
touched.

`AttributionAnalysis` is the report section on the contract (inspector.analysis): one part,
"attribution"; its view is in `attribution_view`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import families
from ..analysis import Analysis, Unavailable, setting
from ..errors import InputError, NotAvailableError, OutOfMemoryError
from ..inputs import Encoded, display_token, encode
from .attribution_view import attribution_blocks

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel

METHODS = ("integrated_gradients", "input_x_gradient", "saliency")
BASELINES = ("pad", "mask", "zero")
TARGETS = ("auto", "next_token", "sequence_loss", "masked_token")
DEFAULT_STEPS = 32
MAX_STEPS = 1024

METHOD_LABELS = {
    "integrated_gradients": "Integrated Gradients",
    "input_x_gradient": "gradient × input",
    "saliency": "saliency (gradient norm)",
}

# Rough element budget for one internal batch of interpolated inputs (activations + logits).
_ELEMENT_BUDGET = {"cpu": 1 << 24, "cuda": 1 << 28}


@dataclass
class TokenScore:
    """One token's attribution, for the "top contributors" list."""

    index: int  # position in the token sequence
    token: str  # display string
    score: float  # signed score (unsigned gradient norm for saliency)


@dataclass
class AttributionResult:
    """Per-token attributions of one target. Arrays have shape (T,) over the tokens fed to the model.

    Completeness (Integrated Gradients only): ``scores.sum() == f_input - f_baseline + delta``,
    where `delta` is the convergence delta Captum reports; |delta| shrinks as `steps` grows.
    """

    method: str  # one of METHODS
    target_kind: str  # "next_token" | "sequence_loss" | "masked_token"
    target: str  # human-readable description of the attributed quantity
    units: str  # unit of f_input / f_baseline / scores
    position: int | None  # index of the predicted token (next_token / masked_token); None for sequence_loss
    target_token_id: int | None
    target_token: str | None  # display string of the predicted token
    target_source: str | None  # "actual" | "user" | "model's top prediction"
    tokens: list[str]  # display strings, (T,)
    token_ids: np.ndarray  # (T,) int64 ids fed to the model ([MASK] at `position` for a masked LM)
    special: np.ndarray  # (T,) bool, special tokens ([CLS], [SEP], ...)
    scores: np.ndarray  # (T,) float64: attribution summed over the embedding dimension (signed)
    scores_l2: np.ndarray  # (T,) float64: L2 norm of the attribution vector over the embedding dimension
    scores_signed: bool  # False for saliency (scores are then gradient norms, >= 0)
    top: list[TokenScore]  # largest |score| first (special tokens and the masked position left out)
    f_input: float  # target value on the real input
    f_baseline: float | None  # target value on the baseline (Integrated Gradients only)
    delta: float | None  # Captum's convergence delta: scores.sum() - (f_input - f_baseline)
    steps: int | None  # integration steps (Integrated Gradients only)
    baseline: str | None  # "pad" | "mask" | "zero" (Integrated Gradients only)
    baseline_description: str | None
    n_tokens: int
    truncated: bool  # the text was cut to the model's context
    message: str  # "" or a note for the user (truncation, ...)
    model_spec: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def relative_delta(self) -> float | None:
        """|delta| / |f_input - f_baseline|: the convergence error as a fraction of what is explained."""
        if self.delta is None or self.f_baseline is None:
            return None
        span = abs(self.f_input - self.f_baseline)
        return abs(self.delta) / span if span > 0 else float("inf") if self.delta else 0.0


# --------------------------------------------------------------------------- target


@dataclass
class _Target:
    kind: str
    position: int | None  # predicted token index (None for sequence_loss)
    read_at: int | None  # index whose output logits are read
    token_id: int | None
    source: str | None


def _head(lm: LoadedModel):
    """The module mapping final hidden states to vocabulary logits (what the LM head applies)."""
    if lm.is_causal:
        return families.output_head(lm.model)  # lm_head (Gemma 2: with its final logit softcap)
    cls = getattr(lm.model, "cls", None)
    if cls is None or not hasattr(cls, "predictions"):
        raise NotAvailableError(f"{lm.architecture} has no masked-LM head to attribute through.")
    return cls.predictions


def _resolve_kind(lm: LoadedModel, target: str) -> str:
    if target not in TARGETS:
        raise InputError(f"Unknown attribution target '{target}'.", f"Choose one of: {', '.join(TARGETS)}.")
    if lm.is_causal:
        if target == "auto":
            return "next_token"
        if target == "masked_token":
            raise InputError("A causal language model has no masked-token target.",
                             "Use 'next_token' or 'sequence_loss'.")
        return target
    if lm.has_mlm_head:
        if target in ("auto", "masked_token"):
            return "masked_token"
        raise InputError(f"Target '{target}' needs a causal language model; this model is a {lm.kind.label}.",
                         "Use 'masked_token' (mask one position and explain its prediction).")
    raise NotAvailableError(_no_head_reason(lm),
                            "Load a causal LM (GPT-2) or a BERT checkpoint with its masked-LM head.")


def _no_head_reason(lm: LoadedModel) -> str:
    article = "an" if lm.kind.label[0] in "aeiou" else "a"
    return f"Attribution needs a language-model head; this model is {article} {lm.kind.label}."


def _token_id(lm: LoadedModel, token: int | str) -> int:
    if isinstance(token, (int, np.integer)):
        tid = int(token)
        if not 0 <= tid < lm.vocab_size:
            raise InputError(f"Token id {tid} is outside the vocabulary (0..{lm.vocab_size - 1}).")
        return tid
    tok = lm.tokenizer
    ids = tok.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        vocab_id = tok.convert_tokens_to_ids(token) if isinstance(token, str) else None
        if vocab_id is not None and vocab_id != tok.unk_token_id:
            return int(vocab_id)
        raise InputError(f"'{token}' is {len(ids)} tokens for this tokenizer, not one.",
                         "Pick a single token (GPT-2: a leading space is part of the token, e.g. ' dog').")
    return int(ids[0])


def _resolve_target(lm: LoadedModel, enc: Encoded, kind: str, position: int | None, target_token) -> _Target:
    T = enc.n_tokens
    ids = enc.input_ids[0]
    if kind == "sequence_loss":
        if T < 2:
            raise InputError("The whole-text loss needs at least two tokens.", "Use a longer text.")
        if target_token is not None:
            raise InputError("A target token cannot be chosen for the whole-text loss.")
        return _Target(kind, None, None, None, None)
    if kind == "next_token":
        if position is None:
            position = T - 1 if T >= 2 else T
        if not 1 <= position <= T:
            raise InputError(f"Position {position} is out of range: choose 1..{T} "
                             f"({T} = the token after the text).", "Position 0 has no context to predict from.")
        if target_token is not None:
            return _Target(kind, position, position - 1, _token_id(lm, target_token), "user")
        if position < T:
            return _Target(kind, position, position - 1, int(ids[position]), "actual")
        return _Target(kind, position, position - 1, None, "model's top prediction")
    # masked_token
    content = [i for i in range(T) if not enc.special[i]]
    if not content:
        raise InputError("The text has no ordinary token to mask.", "Use a longer text.")
    if position is None:
        position = content[len(content) // 2]
    if not 0 <= position < T:
        raise InputError(f"Position {position} is out of range: choose 0..{T - 1}.")
    if enc.special[position]:
        raise InputError(f"Position {position} is the special token {enc.tokens[position]!r}.",
                         "Choose an ordinary token to mask.")
    if target_token is not None:
        return _Target(kind, position, position, _token_id(lm, target_token), "user")
    original = int(ids[position])
    if original == lm.tokenizer.mask_token_id:
        raise InputError(f"Position {position} is already [MASK]: its original token is unknown.",
                         "Choose the target token to explain.")
    return _Target(kind, position, position, original, "actual")


# --------------------------------------------------------------------------- forward


def _make_forward(lm: LoadedModel, enc: Encoded, target: _Target, input_ids: torch.Tensor):
    """f(inputs_embeds (B,T,D)) -> (B,) target values. No hooks: positions are added inside the model."""
    base = lm.model.base_model
    head = _head(lm)
    device = lm.device
    mask = enc.attention_mask.to(device)
    tti = enc.token_type_ids.to(device) if enc.token_type_ids is not None else None
    ids = input_ids.to(device)

    def forward(embeds: torch.Tensor) -> torch.Tensor:
        B, T = embeds.shape[:2]  # T may be a causal prefix of the text
        kwargs = dict(inputs_embeds=embeds, attention_mask=mask[:, :T].expand(B, -1))
        if lm.fam.needs_use_cache_off:
            kwargs["use_cache"] = False
        elif tti is not None:
            kwargs["token_type_ids"] = tti[:, :T].expand(B, -1)
        hidden = base(**kwargs).last_hidden_state  # (B, T, D)
        if target.kind == "sequence_loss":
            logp = torch.log_softmax(head(hidden[:, :-1]).float(), dim=-1)  # (B, T-1, V)
            nll = -logp.gather(-1, ids[:, 1:].expand(B, -1).unsqueeze(-1)).squeeze(-1)  # (B, T-1)
            return nll.mean(dim=-1)
        logp = torch.log_softmax(head(hidden[:, target.read_at]).float(), dim=-1)  # (B, V)
        return logp[:, target.token_id]

    return forward


def _baseline_embeds(lm: LoadedModel, embeds: torch.Tensor, input_ids: torch.Tensor, keep: np.ndarray, baseline: str):
    """Baseline (1,T,D): content tokens replaced by [PAD]/[MASK]/zeros; kept positions unchanged."""
    tok = lm.tokenizer
    if baseline == "zero":
        base = torch.zeros_like(embeds)
        desc = "zero embedding"
    else:
        if baseline == "pad":
            bid = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
            if bid is None:
                raise InputError("This tokenizer has neither a pad nor an end-of-text token.",
                                 "Use the 'zero' baseline.")
        else:
            bid = tok.mask_token_id
            if bid is None:
                raise InputError(f"This tokenizer has no mask token ({lm.family} is not a masked LM).",
                                 "Use the 'pad' or 'zero' baseline.")
        ids = torch.full_like(input_ids, int(bid))
        with torch.no_grad():
            base = lm.model.get_input_embeddings()(ids.to(lm.device)).detach()
        desc = f"{display_token(tok, int(bid))!r} embedding"
    keep_t = torch.as_tensor(keep, device=embeds.device)[None, :, None]
    base = torch.where(keep_t, embeds, base)
    if keep.any():
        desc += " at every ordinary token (special tokens and the masked position kept)"
    else:
        desc += " at every token"
    return base, desc


def _auto_internal_batch(lm: LoadedModel, T: int, kind: str, steps: int) -> int:
    per_example = T * (lm.d_model * max(lm.n_layers, 1) * 16 + (lm.vocab_size if kind == "sequence_loss" else 0))
    budget = _ELEMENT_BUDGET.get(lm.device.type, _ELEMENT_BUDGET["cpu"])
    return int(max(1, min(steps, budget // max(per_example, 1))))


# --------------------------------------------------------------------------- public API


def attribute(lm: LoadedModel, text: str, *, method: str = "integrated_gradients", target: str = "auto",
              position: int | None = None, target_token: int | str | None = None, baseline: str = "pad",
              steps: int = DEFAULT_STEPS, internal_batch_size: int | None = None,
              text_pair: str | None = None, max_tokens: int | None = None, top_k: int = 10) -> AttributionResult:
    """Attribute one target of `lm` on `text` to its input tokens.

    `position` is the index of the token whose probability is explained (causal: 1..T, with
    T = the token after the text; masked: the token that is masked). Defaults: the last token
    (causal), the middle ordinary token (masked). `target_token` (id or single-token string)
    replaces the actual token. Texts longer than the context are cut (`truncated`, `message`).
    """
    if method not in METHODS:
        raise InputError(f"Unknown attribution method '{method}'.", f"Choose one of: {', '.join(METHODS)}.")
    if baseline not in BASELINES:
        raise InputError(f"Unknown baseline '{baseline}'.", f"Choose one of: {', '.join(BASELINES)}.")
    steps = int(steps)
    if method == "integrated_gradients" and not 2 <= steps <= MAX_STEPS:
        raise InputError(f"Steps must lie in 2..{MAX_STEPS}; got {steps}.")
    kind = _resolve_kind(lm, target)

    enc = encode(lm, text, text_pair, max_tokens=max_tokens, truncate=True,
                 min_tokens=2 if kind == "sequence_loss" else 1)
    tgt = _resolve_target(lm, enc, kind, position, target_token)
    input_ids = enc.input_ids.clone()
    keep = enc.special.copy()
    if kind == "masked_token":
        input_ids[0, tgt.position] = lm.tokenizer.mask_token_id
        keep[tgt.position] = True

    from captum.attr import InputXGradient, IntegratedGradients, Saliency

    notes: list[str] = []
    # A causal prediction at `position` reads tokens 0..position-1 only: run on that prefix (later
    # tokens get exactly 0), which keeps long texts cheap.
    n_ctx = tgt.position if kind == "next_token" else enc.n_tokens
    try:
        with torch.inference_mode(False), torch.enable_grad():
            with torch.no_grad():
                embeds = lm.model.get_input_embeddings()(input_ids.to(lm.device)).detach().clone()  # (1, T, D)
            embeds = embeds[:, :n_ctx]
            if kind == "next_token" and tgt.token_id is None:  # token after the text: the model's top prediction
                with torch.no_grad():
                    hidden = lm.model.base_model(inputs_embeds=embeds, attention_mask=enc.attention_mask[:, :n_ctx]
                                                 .to(lm.device), use_cache=False).last_hidden_state
                    tgt.token_id = int(_head(lm)(hidden[:, tgt.read_at]).argmax(-1)[0])
            forward = _make_forward(lm, enc, tgt, input_ids)

            f_baseline = delta = None
            base_desc = None
            if method == "integrated_gradients":
                base, base_desc = _baseline_embeds(lm, embeds, input_ids[:, :n_ctx], keep[:n_ctx], baseline)
                ibs = internal_batch_size or _auto_internal_batch(lm, n_ctx, kind, steps)
                attr, d = IntegratedGradients(forward).attribute(
                    embeds, baselines=base, n_steps=steps, internal_batch_size=int(ibs), return_convergence_delta=True)
                delta = float(d.reshape(-1)[0])
                with torch.no_grad():
                    f_both = forward(torch.cat([embeds, base]))
                f_input, f_baseline = float(f_both[0]), float(f_both[1])
            else:
                embeds.requires_grad_()
                if method == "input_x_gradient":
                    attr = InputXGradient(forward).attribute(embeds)
                else:
                    attr = Saliency(forward).attribute(embeds, abs=False)
                embeds = embeds.detach()
                with torch.no_grad():
                    f_input = float(forward(embeds)[0])
    except torch.OutOfMemoryError:
        from ..models import release_memory

        release_memory()
        raise OutOfMemoryError(
            f"Out of memory attributing {n_ctx} tokens with {steps} steps on {lm.device}.",
            "Lower the steps or the internal batch size, or use a shorter text.") from None

    attr64 = torch.zeros(enc.n_tokens, embeds.shape[-1], dtype=torch.float64)  # (T, D)
    attr64[:n_ctx] = attr.detach()[0].double().cpu()
    scores_l2 = attr64.norm(dim=-1).numpy()
    signed = method != "saliency"
    scores = attr64.sum(dim=-1).numpy() if signed else scores_l2.copy()

    tokens = list(enc.tokens)
    if kind == "masked_token":
        gap = tokens[tgt.position][: len(tokens[tgt.position]) - len(tokens[tgt.position].lstrip())]
        tokens[tgt.position] = gap + display_token(lm.tokenizer, int(input_ids[0, tgt.position]))  # keeps the space
    candidates = [i for i in range(n_ctx) if not keep[i]]  # causal: tokens after the context are not inputs
    order = sorted(candidates, key=lambda i: -abs(scores[i]))[: max(0, int(top_k))]
    top = [TokenScore(index=i, token=tokens[i], score=float(scores[i])) for i in order]

    tok_str = display_token(lm.tokenizer, tgt.token_id) if tgt.token_id is not None else None
    if kind == "sequence_loss":
        desc = f"mean next-token loss of the text over {enc.n_tokens - 1} predictions"
        units = "nats per token (loss: positive scores raise the loss)"
    elif kind == "next_token":
        desc = (f"log P({tok_str!r} | tokens 0..{tgt.position - 1}) as token {tgt.position} "
                f"({tgt.source})")
        units = "nats (log-probability)"
    else:
        desc = f"log P({tok_str!r} at masked position {tgt.position}) ({tgt.source} token)"
        units = "nats (log-probability)"

    message = ""
    if enc.truncated:
        message = (f"The text was cut to {enc.n_tokens} tokens (this model reads at most "
                   f"{lm.max_positions}); the attributions cover those tokens only.")
    if kind == "next_token":
        notes.append(f"Tokens {tgt.position}.. come after the predicting context: their attribution is 0.")
    if method == "integrated_gradients" and f_baseline is not None and delta is not None:
        span = abs(f_input - f_baseline)
        if span > 0 and abs(delta) > 0.05 * span:
            notes.append(f"The convergence delta is {abs(delta) / span:.0%} of f(input) − f(baseline): "
                         "raise the number of steps for a faithful sum.")

    return AttributionResult(
        method=method,
        target_kind=kind,
        target=desc,
        units=units,
        position=tgt.position,
        target_token_id=tgt.token_id,
        target_token=tok_str,
        target_source=tgt.source,
        tokens=tokens,
        token_ids=input_ids[0].numpy().astype(np.int64),
        special=enc.special.copy(),
        scores=np.asarray(scores, dtype=np.float64),
        scores_l2=np.asarray(scores_l2, dtype=np.float64),
        scores_signed=signed,
        top=top,
        f_input=f_input,
        f_baseline=f_baseline,
        delta=delta,
        steps=steps if method == "integrated_gradients" else None,
        baseline=baseline if method == "integrated_gradients" else None,
        baseline_description=base_desc,
        n_tokens=enc.n_tokens,
        truncated=bool(enc.truncated),
        message=message,
        model_spec=lm.spec,
        notes=notes,
    )


# --------------------------------------------------------------------------- the report section


@dataclass(frozen=True)
class AttributionSection:
    """The attribution section's one part."""

    attribution: AttributionResult | Unavailable | None = None


class AttributionAnalysis(Analysis):
    name = "attribution"
    title = "Attribution"
    description = ("Which input tokens drive one prediction: Integrated Gradients (or gradient × input, saliency) "
                   "over the input embeddings, with the convergence delta.")
    own_page = "attribution"
    report_parts = True
    result_type = AttributionSection

    @dataclass(frozen=True)
    class Settings:
        method: str = setting("integrated_gradients", "Attribution method.", choices=METHODS)
        target: str = setting("auto", "What is explained (auto: the next token for a causal LM, a masked token "
                                      "for a masked LM).", choices=TARGETS)
        baseline: str = setting("pad", "Integrated Gradients baseline: the [PAD] / [MASK] embedding, or zeros.",
                                choices=BASELINES)
        steps: int = setting(DEFAULT_STEPS, "Integration steps (Integrated Gradients): more = smaller delta, slower.",
                             min=2, max=MAX_STEPS)
        position: int | None = setting(None, "Token whose prediction is explained (None: the last token for a "
                                             "causal LM, the middle ordinary token for a masked LM).", min=0)
        max_tokens: int | None = setting(None, "Cut the text to this many tokens (None: the model's context).",
                                         min=1, key="max_tokens")

    def available(self, lm: LoadedModel) -> tuple[bool, str]:
        if lm.is_causal or lm.has_mlm_head:
            return True, ""
        return False, _no_head_reason(lm)

    def run(self, lm: LoadedModel, encoded: Encoded, settings: AttributionAnalysis.Settings) -> AttributionSection:
        return AttributionSection(attribution=attribute(
            lm, encoded.text, text_pair=encoded.text_pair, method=settings.method, target=settings.target,
            baseline=settings.baseline, steps=int(settings.steps), position=settings.position,
            max_tokens=settings.max_tokens))

    def view(self, result: AttributionSection) -> list:
        return attribution_blocks(result)
