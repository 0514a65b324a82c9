"""Attention logits: how large QKᵀ really is, how peaked the softmax gets, and what the 1/√d scaling buys.

Seed 003 claims that with unit-variance q and k, σ(q·k) ≈ √d_head and that dividing by √d_head
brings the logits back to ≈ 1, keeping the softmax out of saturation. These analyses measure it on
a real model and text, from the statistics `inspector.capture` reduces inside the attention call:

- `attention_logit_report`: per layer × head σ(QKᵀ) unscaled and scaled, σ/√d_head, softmax
  entropy and mean max-probability, plus a fidelity figure (instrumented vs plain forward).
- `attention_pattern`: one layer/head's attention probabilities (T × T) for drawing.
- `scaling_what_if`: entropy and max-probability one layer would have without the 1/√d scaling,
  or at other softmax temperatures, from the captured unscaled logits.

`AttentionAnalysis` is the report section on the contract (inspector.analysis): its parts are
"logits", "pattern" and "what_if"; its view is in `attention_view`.
"""
from __future__ import annotations

import contextvars
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import capture
from ..analysis import Analysis, Unavailable, part, setting
from ..errors import InputError
from ..inputs import Encoded, display_token
from .attention_view import attention_blocks

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel

__all__ = [
    "AttentionReport", "AttentionPattern", "ScalingWhatIf", "AttentionSection", "AttentionAnalysis",
    "attention_logit_report", "attention_pattern", "scaling_what_if",
]


# --------------------------------------------------------------------------- results


@dataclass
class AttentionPattern:
    """Attention probabilities of one layer/head on one text, for drawing.

    Rows are queries, columns keys, both over the item's real tokens (padding removed).
    """

    layer: int
    head: int
    item: int  # which batch item (0 for a single text)
    tokens: list[str]  # (T,) display strings of the real tokens
    probs: np.ndarray  # (T, T) float32, softmax(scaling · q·k) over attended keys; 0 where not attended
    valid: np.ndarray  # (T, T) bool, True where the query attends to the key (causal mask, padding)
    scaling: float  # factor the model applies to q·k before the softmax (1/√d_head)
    entropy: np.ndarray  # (T,) float64, softmax entropy of each query row, nats
    max_prob: np.ndarray  # (T,) float64, largest probability of each query row
    n_keys: np.ndarray  # (T,) int64, number of keys each query attends to (entropy is at most log n_keys)


@dataclass
class AttentionReport:
    """Per layer × head statistics of the attention logits q·k on the given text(s).

    Every (L, H) array has L = n_layers rows (layer 0 first) and H = n_heads columns. "Unscaled"
    is q·k itself; "scaled" is what the softmax sees (× `scaling`, 1/√d_head for GPT-2 and BERT).
    Statistics run over the (query, key) pairs the model attends to (causal mask and padding
    respected); entropies and max-probabilities are means over the real query rows.
    """

    spec: str
    family: str
    dtype: str  # model dtype, e.g. "float32"
    n_layers: int
    n_heads: int
    d_head: int
    sqrt_d_head: float  # the reference of seed 003: σ(q·k) ≈ √d_head for unit-variance q, k
    n_items: int  # batch size B
    n_tokens: np.ndarray  # (B,) int64, real tokens per item
    tokens: list[str] | None  # display strings of item 0's real tokens
    scaling: np.ndarray  # (L,) factor applied to q·k before the softmax
    count: np.ndarray  # (L, H) int64, attended (query, key) pairs
    mean: np.ndarray  # (L, H) mean of q·k, unscaled
    std: np.ndarray  # (L, H) population std of q·k, unscaled
    min: np.ndarray  # (L, H) unscaled
    max: np.ndarray  # (L, H) unscaled
    mean_scaled: np.ndarray  # (L, H) mean · scaling
    std_scaled: np.ndarray  # (L, H) std · scaling: the σ the softmax sees
    max_scaled: np.ndarray  # (L, H) max · scaling
    ratio: np.ndarray  # (L, H) std / √d_head (1 when q, k entries have unit variance)
    entropy: np.ndarray  # (L, H) mean softmax entropy per query row, nats
    entropy_fraction: np.ndarray  # (L, H) mean of entropy / log(n_keys) over rows with >= 2 keys, in [0, 1]
    max_prob: np.ndarray  # (L, H) mean largest attention probability per query row (1 = saturated)
    fidelity_max_abs_diff: float  # max |Δ| between the instrumented and a plain forward (fp32: exactly 0)
    fidelity_quantity: str  # what was compared: "logits" or "last hidden state" (encoder-only models)
    kept_layers: np.ndarray  # (K,) int64, layers whose full probabilities are kept (`keep_layers`)
    kept_probs: np.ndarray | None  # (K, B, H, T, T) float32 attention probabilities, None when K = 0
    kept_valid: np.ndarray | None  # (B, T, T) bool, attended (query, key) pairs, None when K = 0
    attention_mask: np.ndarray  # (B, T) int64, 1 = real token

    def pattern(self, layer: int, head: int, item: int = 0) -> AttentionPattern:
        """The kept probabilities of one layer/head as an `AttentionPattern` (no forward pass)."""
        layers = [int(x) for x in self.kept_layers]
        if layer not in layers or self.kept_probs is None:
            raise InputError(f"Layer {layer} was not kept in this report.",
                             f"Kept layers: {layers or 'none'}; pass keep_layers=({layer},) "
                             "or use attention_pattern().")
        _check_index(head, self.n_heads, "head")
        _check_index(item, self.n_items, "item")
        probs = self.kept_probs[layers.index(layer), item, head]
        tokens = self.tokens if item == 0 and self.tokens is not None else None
        return _pattern_from(layer, head, item, probs, self.kept_valid[item], self.attention_mask[item],
                             float(self.scaling[layer]), tokens)


@dataclass
class ScalingWhatIf:
    """Softmax entropy and saturation of one layer under other logit scalings (seed 003: scaling ≈ temperature).

    Logits are z = q·k · factor: the model's factor is `model_scaling` (1/√d_head); "unscaled" is
    factor 1; temperature T gives factor model_scaling / T. (H,) arrays are per head, (K, H) per
    temperature × head; entropies in nats, means over real query rows as in `AttentionReport`.
    """

    layer: int
    n_heads: int
    d_head: int
    model_scaling: float
    temperatures: np.ndarray  # (K,) float64
    logit_std_model: np.ndarray  # (H,) σ of the logits the model's softmax sees
    entropy_model: np.ndarray  # (H,) nats
    entropy_fraction_model: np.ndarray  # (H,) entropy / log(n_keys)
    max_prob_model: np.ndarray  # (H,)
    logit_std_unscaled: np.ndarray  # (H,) σ(q·k) with no 1/√d scaling
    entropy_unscaled: np.ndarray  # (H,)
    entropy_fraction_unscaled: np.ndarray  # (H,)
    max_prob_unscaled: np.ndarray  # (H,)
    logit_std: np.ndarray  # (K, H) σ of softmax input at each temperature
    entropy: np.ndarray  # (K, H)
    entropy_fraction: np.ndarray  # (K, H)
    max_prob: np.ndarray  # (K, H)


# --------------------------------------------------------------------------- helpers


def _check_index(value, n: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"The {what} must be a whole number, got {value!r}.")
    if not 0 <= int(value) < n:
        raise InputError(f"{what.capitalize()} {value} does not exist.", f"Choose a {what} from 0 to {n - 1}.")
    return int(value)


def _as_batch(lm: LoadedModel, encoded_or_batch) -> tuple[dict[str, torch.Tensor], list[str] | None]:
    """Accept an `Encoded` text or a ready batch dict; return (batch on lm.device, tokens of item 0)."""
    if isinstance(encoded_or_batch, Encoded):
        batch, tokens = encoded_or_batch.batch(), list(encoded_or_batch.tokens)
    elif isinstance(encoded_or_batch, dict) and "input_ids" in encoded_or_batch:
        batch, tokens = dict(encoded_or_batch), None
    else:
        raise InputError("Give an encoded text (inspector.inputs.encode) or a batch with input_ids.")
    batch = {k: v.to(lm.device) for k, v in batch.items() if v is not None}
    ids = batch["input_ids"]
    if ids.dim() != 2 or ids.shape[1] == 0 or ids.shape[0] == 0:
        raise InputError("The input holds no tokens.", "Type or paste some text.")
    if "attention_mask" not in batch:
        batch["attention_mask"] = torch.ones_like(ids)
    if tokens is None:
        real = batch["attention_mask"][0].bool().cpu()
        tokens = [display_token(lm.tokenizer, int(i)) for i in ids[0].cpu()[real]]
    return batch, tokens


def _plain_forward(lm: LoadedModel, batch) -> tuple[torch.Tensor, str]:
    """The same model on the same batch with no collector active: the reference for the fidelity figure.

    Run in a fresh `contextvars.Context`, so no collector is active even when the caller is itself
    inside a capture block.
    """
    kwargs = dict(batch)
    if lm.fam.needs_use_cache_off:
        kwargs["use_cache"] = False

    def forward():
        assert not capture.is_capturing()
        with torch.no_grad():
            return lm.model(**kwargs)

    out = contextvars.Context().run(forward)
    logits = getattr(out, "logits", None)
    if logits is None:
        logits = getattr(out, "prediction_logits", None)
    if logits is not None:
        return logits.float().cpu(), "logits"
    return out.last_hidden_state.float().cpu(), "last hidden state"


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    """max |a − b| over real tokens (padded positions carry no meaning)."""
    keep = mask.bool().cpu()
    if not keep.any():
        return 0.0
    return float((a[keep] - b[keep]).abs().max())


def _pattern_from(layer, head, item, probs, valid, attention_mask, scaling, tokens) -> AttentionPattern:
    real = np.asarray(attention_mask).astype(bool)
    p = np.asarray(probs, dtype=np.float32)[np.ix_(real, real)]
    v = np.asarray(valid, dtype=bool)[np.ix_(real, real)]
    p = np.where(v, p, 0.0).astype(np.float32)
    p64 = p.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(p64 > 0, p64 * np.log(p64), 0.0).sum(axis=1)
    return AttentionPattern(
        layer=int(layer), head=int(head), item=int(item),
        tokens=list(tokens) if tokens is not None else [str(i) for i in range(int(real.sum()))],
        probs=p, valid=v, scaling=float(scaling), entropy=ent, max_prob=p64.max(axis=1, initial=0.0),
        n_keys=v.sum(axis=1).astype(np.int64),
    )


def _softmax_row_stats(scores: torch.Tensor, valid: torch.Tensor, factor: float):
    """Per head: mean row entropy (nats), mean entropy / log(n_keys) over rows with >= 2 keys, mean max-prob.

    scores: (B, H, Tq, Tk) unscaled q·k; valid: (B, H, Tq, Tk) bool. Computed in float64.
    """
    logits = (scores.double() * factor).masked_fill(~valid, -math.inf)
    probs = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # rows with no valid key -> 0
    ent = torch.special.entr(probs).sum(-1)  # (B, H, Tq)
    maxp = probs.amax(-1)
    n_keys = valid.sum(-1).double()
    rows = (n_keys > 0).double()
    multi = (n_keys >= 2).double()
    frac = ent / torch.log(n_keys.clamp(min=2))
    n_rows = rows.sum(dim=(0, 2)).clamp(min=1)
    n_multi = multi.sum(dim=(0, 2))
    entropy = (ent * rows).sum(dim=(0, 2)) / n_rows
    fraction = torch.where(n_multi > 0, (frac * multi).sum(dim=(0, 2)) / n_multi.clamp(min=1),
                           torch.full_like(n_multi, math.nan))
    max_prob = (maxp * rows).sum(dim=(0, 2)) / n_rows
    return entropy.numpy(), fraction.numpy(), max_prob.numpy()


def _logit_std(scores: torch.Tensor, valid: torch.Tensor, factor: float) -> np.ndarray:
    """Per head population std of scores · factor over valid pairs."""
    s = scores.double() * factor
    v = valid.double()
    n = v.sum(dim=(0, 2, 3)).clamp(min=1)
    mean = (s * v).sum(dim=(0, 2, 3)) / n
    var = (((s - mean[None, :, None, None]) * v) ** 2).sum(dim=(0, 2, 3)) / n
    return var.sqrt().numpy()


# --------------------------------------------------------------------------- analyses


def attention_logit_report(lm: LoadedModel, encoded_or_batch, keep_layers: tuple[int, ...] = ()) -> AttentionReport:
    """σ(QKᵀ), σ/√d_head, softmax entropy and saturation per layer × head on the given text(s).

    `keep_layers` also keeps those layers' full probabilities (for `AttentionReport.pattern`)
    from the same forward pass. The fidelity figure compares this instrumented forward with a
    plain forward of the same model outside any capture block.
    """
    batch, tokens = _as_batch(lm, encoded_or_batch)
    keep = tuple(sorted({_check_index(x, lm.n_layers, "layer") for x in keep_layers}))
    need_hidden = not (lm.has_mlm_head or lm.is_causal)
    options = capture.CaptureOptions(keep_probs_layers=keep, hidden_states=need_hidden)
    result = capture.run(lm, batch, options)
    stats = result.attention
    if stats is None:  # pragma: no cover - every supported model has attention
        raise InputError("No attention layer was seen during the forward pass.")

    plain, quantity = _plain_forward(lm, batch)
    instrumented = result.logits if quantity == "logits" else result.hidden_states[-1]
    fidelity = _max_abs_diff(instrumented, plain, batch["attention_mask"])

    mask = result.attention_mask.astype(np.int64)
    if keep:
        kept_probs = np.stack([result.kept[i].probs for i in keep]).astype(np.float32)
        kept_valid = result.kept[keep[0]].valid[:, 0].astype(bool)  # same for every head and layer
    else:
        kept_probs = kept_valid = None
    sqrt_d = math.sqrt(stats.d_head)
    return AttentionReport(
        spec=lm.spec,
        family=lm.family,
        dtype=str(lm.dtype).replace("torch.", ""),
        n_layers=int(stats.std.shape[0]),
        n_heads=int(stats.std.shape[1]),
        d_head=int(stats.d_head),
        sqrt_d_head=sqrt_d,
        n_items=int(mask.shape[0]),
        n_tokens=mask.sum(axis=1).astype(np.int64),
        tokens=tokens,
        scaling=np.array(stats.scaling, dtype=np.float64),
        count=np.array(stats.count, dtype=np.int64),
        mean=np.array(stats.mean),
        std=np.array(stats.std),
        min=np.array(stats.min),
        max=np.array(stats.max),
        mean_scaled=np.array(stats.mean_scaled),
        std_scaled=np.array(stats.std_scaled),
        max_scaled=np.array(stats.max_scaled),
        ratio=np.array(stats.std) / sqrt_d,
        entropy=np.array(stats.entropy),
        entropy_fraction=np.array(stats.entropy_fraction),
        max_prob=np.array(stats.max_prob),
        fidelity_max_abs_diff=fidelity,
        fidelity_quantity=quantity,
        kept_layers=np.array(keep, dtype=np.int64),
        kept_probs=kept_probs,
        kept_valid=kept_valid,
        attention_mask=mask,
    )


def attention_pattern(lm: LoadedModel, encoded, layer: int, head: int, item: int = 0) -> AttentionPattern:
    """Attention probabilities (T × T, real tokens only) of one layer/head, for drawing."""
    batch, tokens = _as_batch(lm, encoded)
    layer = _check_index(layer, lm.n_layers, "layer")
    head = _check_index(head, lm.n_heads, "head")
    item = _check_index(item, batch["input_ids"].shape[0], "item")
    options = capture.CaptureOptions(attention_stats=False, keep_probs_layers=(layer,), logits=False)
    result = capture.run(lm, batch, options)
    kept = result.kept[layer]
    if item != 0:
        real = result.attention_mask[item].astype(bool)
        tokens = [display_token(lm.tokenizer, int(i)) for i in result.input_ids[item][real]]
    return _pattern_from(layer, head, item, kept.probs[item, head], kept.valid[item, 0],
                         result.attention_mask[item], kept.scaling, tokens)


def scaling_what_if(lm: LoadedModel, encoded, layer: int, temperatures=(0.25, 0.5, 1.0, 2.0, 4.0)) -> ScalingWhatIf:
    """Entropy and max-probability of `layer` with no 1/√d scaling and at softmax temperatures T.

    From the captured unscaled logits s = q·k: softmax(s · scaling / T) for each T, and softmax(s).
    T = 1 is what the model does.
    """
    batch, _ = _as_batch(lm, encoded)
    layer = _check_index(layer, lm.n_layers, "layer")
    temps = np.atleast_1d(np.asarray(temperatures, dtype=np.float64))
    if temps.size == 0 or not np.all(np.isfinite(temps)) or np.any(temps <= 0):
        raise InputError("Temperatures must be positive, finite numbers.", "For example (0.5, 1, 2).")
    options = capture.CaptureOptions(attention_stats=False, keep_scores_layers=(layer,), logits=False)
    kept = capture.run(lm, batch, options).kept[layer]
    scores = torch.from_numpy(kept.scores)  # (B, H, T, T) unscaled
    valid = torch.from_numpy(kept.valid)
    scale = float(kept.scaling)

    ent_m, frac_m, maxp_m = _softmax_row_stats(scores, valid, scale)
    ent_u, frac_u, maxp_u = _softmax_row_stats(scores, valid, 1.0)
    per_t = [_softmax_row_stats(scores, valid, scale / t) for t in temps]
    std_u = _logit_std(scores, valid, 1.0)
    return ScalingWhatIf(
        layer=layer,
        n_heads=int(scores.shape[1]),
        d_head=int(lm.d_head),
        model_scaling=scale,
        temperatures=temps,
        logit_std_model=std_u * scale,
        entropy_model=ent_m,
        entropy_fraction_model=frac_m,
        max_prob_model=maxp_m,
        logit_std_unscaled=std_u,
        entropy_unscaled=ent_u,
        entropy_fraction_unscaled=frac_u,
        max_prob_unscaled=maxp_u,
        logit_std=np.stack([std_u * scale / t for t in temps]),
        entropy=np.stack([p[0] for p in per_t]),
        entropy_fraction=np.stack([p[1] for p in per_t]),
        max_prob=np.stack([p[2] for p in per_t]),
    )


# --------------------------------------------------------------------------- the report section


@dataclass(frozen=True)
class AttentionSection:
    """The attention section's parts (None: not computed, e.g. no pattern for a long text)."""

    logits: AttentionReport | Unavailable | None = None
    pattern: AttentionPattern | Unavailable | None = None
    what_if: ScalingWhatIf | Unavailable | None = None


def layer_index(index, n_layers: int) -> int | None:
    """A settings layer as an index: negative counts from the end (-1 = last), None = skip."""
    if index is None:
        return None
    index = int(index)
    if index < 0:
        index += n_layers
    if not 0 <= index < n_layers:
        raise InputError(f"Layer {index} does not exist.", f"Choose a layer from 0 to {n_layers - 1} (or -1).")
    return index


class AttentionAnalysis(Analysis):
    name = "attention"
    title = "Attention logits (QKᵀ)"
    description = ("σ(QKᵀ) per layer × head against √d_head, what the softmax sees after the 1/√d_head scaling, "
                   "how peaked it gets, what other scalings would do, and one head's attention pattern.")
    own_page = "attention"
    report_parts = True
    result_type = AttentionSection

    @dataclass(frozen=True)
    class Settings:
        pattern_layer: int | None = setting(-1, "Layer whose attention pattern is drawn (negative: from the end; "
                                                "None: no pattern).")
        pattern_head: int = setting(0, "Head whose attention pattern is drawn.", min=0)
        pattern_max_tokens: int = setting(64, "The T × T pattern is kept only for texts up to this many tokens.",
                                          min=0)
        what_if_layer: int | None = setting(-1, "Layer of the “no 1/√d scaling / temperature” what-if (negative: "
                                                "from the end; None: skip).")
        temperatures: tuple[float, ...] = setting((0.25, 0.5, 1.0, 2.0, 4.0),
                                                  "Softmax temperatures of the what-if (1 = the model).")

    def run(self, lm: LoadedModel, encoded: Encoded, settings: AttentionAnalysis.Settings) -> AttentionSection:
        logits = part(lambda: attention_logit_report(lm, encoded))
        pattern = what_if = None
        layer = layer_index(settings.pattern_layer, lm.n_layers)
        if layer is not None and encoded.n_tokens <= int(settings.pattern_max_tokens):
            head = int(settings.pattern_head)
            pattern = part(lambda: attention_pattern(lm, encoded, layer, head))
        what_if_layer = layer_index(settings.what_if_layer, lm.n_layers)
        if what_if_layer is not None:
            temps = tuple(settings.temperatures)
            what_if = part(lambda: scaling_what_if(lm, encoded, what_if_layer, temps))
        return AttentionSection(logits=logits, pattern=pattern, what_if=what_if)

    def view(self, result: AttentionSection) -> list:
        return attention_blocks(result)
