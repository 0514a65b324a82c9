"""One instrumented forward pass: pre-softmax QKᵀ statistics with the model's SDPA path kept.

How it works (and why it is thread-safe on one shared model):
- `install(model)` switches the model, once, to the attention function registered here under
  `ATTENTION_NAME`. That function calls transformers' own `sdpa_attention_forward` unchanged
  and, only when a collector is active *in the calling context*, also reduces `query @ keyᵀ`
  to per-head statistics. Outside a `capture(...)` block it is exactly SDPA.
- The active collector lives in a `contextvars.ContextVar`, so two threads (two browser
  sessions) running the same model each see only their own collector. No hook is attached to
  the model per call; nothing is left behind when the block exits, also on an exception.
- Statistics are reduced inside the attention call in chunks (batch items, and query rows for
  long sequences), so no L×L tensor per layer is kept unless a layer's probabilities or logits
  are explicitly asked for. Each chunk makes one pass of row reductions with at most two
  chunk-sized tensors alive (the shifted logits and their exponentials): entropy, largest
  probability, mean and variance all come from per-row sums (see `_Collector._row_reductions`).

- With `norms=True` the same block also attaches the norm-layer hooks of `norm_hooks` (LayerNorm
  and RMSNorm alike), under `lm.lock`, removed in `finally`, with the same `ContextVar` rule, so
  another session's forward through the shared model is never mixed in.

One concern that reads better whole (about 720 lines): the attention function, the per-row reductions
and their exact float64 merge share one set of numerics and one mask convention; split, each part
would need the others' internals. The norm-layer hooks are their own module (`norm_hooks`).
"""
from __future__ import annotations

import contextvars
import dataclasses
import math
import threading
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

# the norm-layer hooks (re-exported: capture.run(..., norms=True), capture.observe_norms)
from .norm_hooks import (NormStats, _active_norms, _norm_hooks, _NormCollector, find_norm_layers,  # noqa: F401
                         is_norm_layer, norm_stats, observe_norms)

if TYPE_CHECKING:  # pragma: no cover
    from .models import LoadedModel

ATTENTION_NAME = "inspector_sdpa"

_active_collector: contextvars.ContextVar["_Collector | None"] = contextvars.ContextVar(
    "inspector_active_collector", default=None)
_install_lock = threading.Lock()
_registered = False


# --------------------------------------------------------------------------- registration


def _inspector_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                         is_causal=None, **kwargs):
    """transformers' SDPA attention, plus statistics of QKᵀ when a collector is active."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    collector = _active_collector.get()
    softcap = kwargs.pop("softcap", None)
    if collector is not None:
        collector.observe(module, query, key, attention_mask, scaling, is_causal, softcap=softcap)
    if softcap is not None:  # SDPA refuses softcapping (Gemma 2): the family's own eager attention
        return _softcap_attention(module, query, key, value, attention_mask, dropout, scaling, is_causal, softcap,
                                  **kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                  scaling=scaling, is_causal=is_causal, **kwargs)


def _softcap_attention(module, query, key, value, attention_mask, dropout, scaling, is_causal, softcap, **kwargs):
    """Attention with tanh logit capping, by the eager function of the module's own modeling file.

    Our mask function is SDPA's (boolean, or None when only causality applies); the eager
    function adds a float mask, so the boolean one is turned into 0 / dtype-min here.
    """
    import sys

    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward")
    Tq, Tk = query.shape[2], key.shape[2]
    if attention_mask is None:
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        attention_mask = torch.ones(1, 1, Tq, Tk, dtype=torch.bool, device=query.device)
        if causal and Tq > 1:
            attention_mask = torch.tril(attention_mask, diagonal=Tk - Tq)
    if attention_mask.dtype == torch.bool:
        attention_mask = torch.zeros(attention_mask.shape, dtype=query.dtype, device=query.device).masked_fill(
            ~attention_mask, torch.finfo(query.dtype).min)
    return eager(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, softcap=softcap,
                 **kwargs)


def register() -> None:
    """Register the attention function and its mask function with transformers, once per process."""
    global _registered
    if _registered:
        return
    with _install_lock:
        if _registered:
            return
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(ATTENTION_NAME, _inspector_attention)
        # Without a mask function transformers passes attention_mask=None and padding is ignored.
        AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
        _registered = True


def install(model: torch.nn.Module) -> None:
    """Make `model` use inspector's attention function (idempotent; done once at load time)."""
    register()
    if getattr(model.config, "_attn_implementation", None) == ATTENTION_NAME:
        return
    with _install_lock:
        if model.config._attn_implementation != ATTENTION_NAME:
            if getattr(model, "_supports_sdpa", True):
                model.set_attn_implementation(ATTENTION_NAME)
            else:
                # transformers checks SDPA support for any name containing "sdpa" and Gemma 2 declares none
                # (SDPA cannot softcap); our function handles softcapping itself, so set the name directly.
                model.config._attn_implementation = ATTENTION_NAME


register()


# --------------------------------------------------------------------------- results


@dataclass
class AttentionLogitStats:
    """Per layer × head statistics of the pre-softmax attention logits QKᵀ.

    All arrays have shape (n_layers, n_heads) and describe the *unscaled* logits q·k over the
    (query, key) pairs the model actually attends to (causal mask and padding respected).
    Scaled figures (what the softmax sees) are the unscaled ones times `scaling` of the layer.
    """

    d_head: int
    scaling: np.ndarray  # (L,) scale the model applies, 1/sqrt(d_head) for GPT-2 and BERT
    count: np.ndarray  # number of attended (query, key) pairs
    mean: np.ndarray
    std: np.ndarray  # population standard deviation of q·k
    min: np.ndarray
    max: np.ndarray
    entropy: np.ndarray  # mean over query rows of the softmax entropy, nats
    entropy_fraction: np.ndarray  # mean over rows with >= 2 keys of entropy / log(n_keys)
    max_prob: np.ndarray  # mean over query rows of the largest attention probability
    # Mean over query rows of the probability on the first real token (with left padding not index 0;
    # 0 on rows a sliding window keeps from seeing it). Large values mark "attention sinks".
    sink_mass: np.ndarray | None = None
    # (L,) tanh logit cap (Gemma 2), NaN where none. Where set, every figure above describes the capped
    # logits the softmax sees, in unscaled units: softcap·tanh(scaling·q·k / softcap) / scaling.
    softcap: np.ndarray | None = None
    # (L, H, D + 1) with D = CaptureOptions.distance_profile: number, mean and population std of the (unscaled,
    # capped where softcapped) logits at |query position − key position| = 0 … D − 1, and ≥ D in the last bucket.
    distance_count: np.ndarray | None = None
    distance_mean: np.ndarray | None = None
    distance_std: np.ndarray | None = None

    @property
    def var(self) -> np.ndarray:
        return self.std ** 2

    @property
    def sqrt_d_head(self) -> float:
        return math.sqrt(self.d_head)

    @property
    def std_scaled(self) -> np.ndarray:
        return self.std * self.scaling[:, None]

    @property
    def mean_scaled(self) -> np.ndarray:
        return self.mean * self.scaling[:, None]

    @property
    def max_scaled(self) -> np.ndarray:
        return self.max * self.scaling[:, None]

    @property
    def ratio_to_sqrt_d(self) -> np.ndarray:
        """σ(QKᵀ)/√d_head: 1 when q and k entries are independent with unit variance (σ(q·k) ≈ √d)."""
        return self.std / self.sqrt_d_head


@dataclass
class KeptAttention:
    """Full attention tensors of one layer, kept only on request. Shapes (B, H, Tq, Tk)."""

    layer: int
    scores: np.ndarray | None  # unscaled q·k, float32
    probs: np.ndarray | None  # softmax(scaled scores) over valid keys
    valid: np.ndarray  # bool, which (query, key) pairs are attended
    scaling: float


@dataclass
class CaptureOptions:
    attention_stats: bool = True
    keep_probs_layers: tuple[int, ...] = ()
    keep_scores_layers: tuple[int, ...] = ()
    hidden_states: bool = False
    embeddings: bool = False
    logits: bool = True
    # > 0: also reduce q·k per |query − key| distance 0 … distance_profile − 1, larger ones in one last
    # bucket (AttentionLogitStats.distance_*). Rotary models have no position table: this is where their
    # positions show. Off by default (one more pass over each chunk's scores, in float64).
    distance_profile: int = 0
    # > 0: also count query rows per layer × head in this many equal bins on [0, 1] of entropy / log(n_keys)
    # and of the largest probability (read with `moments(collector)`; the torch path, not the fused kernel).
    row_histogram_bins: int = 0
    # Also reduce each norm layer's input and output (CaptureResult.norms): forward hooks on the norm layers,
    # attached for the block only, under lm.lock.
    norms: bool = False


@dataclass
class CaptureResult:
    """What one instrumented forward pass saw. Tensors are detached copies on the CPU."""

    input_ids: np.ndarray  # (B, T)
    attention_mask: np.ndarray  # (B, T), 1 = real token
    attention: AttentionLogitStats | None
    kept: dict[int, KeptAttention] = field(default_factory=dict)
    logits: torch.Tensor | None = None  # (B, T, V) float32 (MLM/causal logits; NSP not included)
    nsp_logits: torch.Tensor | None = None  # (B, 2) when the model has an NSP head
    hidden_states: tuple[torch.Tensor, ...] | None = None  # n_layers + 1 of (B, T, D)
    embeddings: dict[str, torch.Tensor] | None = None  # token / position / segment, (B, T, D)
    # module path -> what that norm layer did (registration order; layers the forward never reached are absent)
    norms: dict[str, NormStats] | None = None


# --------------------------------------------------------------------------- collector


_MIN_BLOCK_ROWS = 64


def _chunk_elements(device: torch.device) -> int:
    """Scores per chunk. GPU: 2^24 float32 = 64 MiB per chunk-sized tensor, small beside a GPT-2-small
    forward at 8×1024 (its bf16 logits alone are 0.8 GB) yet large enough to keep kernels busy."""
    return (1 << 24) if device.type == "cuda" else (1 << 23)


class _Accumulator:
    """Per-head running moments merged chunk by chunk (Chan et al.), in float64.

    Kept on the device of the attention call: nothing is copied to the host (and no GPU sync
    happens) until the statistics are read after the forward pass.
    """

    def __init__(self, n_heads: int, device: torch.device | str = "cpu", hist_bins: int = 0):
        z = lambda: torch.zeros(n_heads, dtype=torch.float64, device=device)  # noqa: E731
        self.n, self.mean, self.m2 = z(), z(), z()
        self.min = torch.full((n_heads,), math.inf, dtype=torch.float64, device=device)
        self.max = torch.full((n_heads,), -math.inf, dtype=torch.float64, device=device)
        self.ent_sum, self.rows = z(), z()
        self.frac_sum, self.frac_rows = z(), z()
        self.maxp_sum = z()
        self.sink_sum = z()
        self.dist_n = self.dist_s1 = self.dist_s2 = None  # (H, D + 1) when a distance profile is asked for
        self.hist_bins = int(hist_bins)
        if self.hist_bins:
            self.hist_frac = torch.zeros(n_heads, self.hist_bins, dtype=torch.float64, device=device)
            self.hist_maxp = torch.zeros(n_heads, self.hist_bins, dtype=torch.float64, device=device)

    def add_row_histograms(self, frac, frac_ok, maxp, row_ok):
        """Count rows (b, H, r) into per-head bins on [0, 1] (weights 0/1: rows that do not count add 0)."""
        bins = self.hist_bins
        H = frac.shape[1]
        offset = (torch.arange(H, device=frac.device) * bins)[None, :, None]
        for hist, value, ok in ((self.hist_frac, frac, frac_ok), (self.hist_maxp, maxp, row_ok)):
            index = (value.clamp(0.0, 1.0) * bins).long().clamp(max=bins - 1) + offset
            hist.view(-1).index_add_(0, index.reshape(-1), ok.reshape(-1).to(hist.dtype))

    def add_moments(self, n, mean, m2, lo, hi):
        tot = self.n + n
        safe = torch.where(tot > 0, tot, torch.ones_like(tot))
        delta = mean - self.mean
        self.mean = torch.where(tot > 0, self.mean + delta * n / safe, self.mean)
        self.m2 = self.m2 + m2 + delta ** 2 * self.n * n / safe
        self.n = tot
        self.min = torch.minimum(self.min, lo)
        self.max = torch.maximum(self.max, hi)


class _Collector:
    """Receives (module, query, key, mask) from every attention call of one forward pass."""

    def __init__(self, n_layers: int, n_heads: int, options: CaptureOptions, token_mask: torch.Tensor | None):
        self.options = options
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.token_mask = token_mask  # (B, T) bool, True = real token
        self.acc: dict[int, _Accumulator] = {}
        self.scaling: dict[int, float] = {}
        self.softcap: dict[int, float] = {}
        self.d_head: int | None = None
        self.kept: dict[int, KeptAttention] = {}
        self.norms: _NormCollector | None = _NormCollector(token_mask) if options.norms else None
        self._calls = 0

    @torch.no_grad()
    def observe(self, module, query, key, attention_mask, scaling, is_causal, softcap=None) -> None:
        layer = getattr(module, "layer_idx", None)
        if layer is None:
            layer = self._calls
        self._calls += 1
        B, H, Tq, d = query.shape
        Tk = key.shape[2]
        scale = float(scaling) if scaling is not None else 1.0 / math.sqrt(d)
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        self.d_head = d
        self.scaling[layer] = scale
        self.softcap[layer] = float(softcap) if softcap is not None else math.nan
        acc = self.acc.setdefault(layer, _Accumulator(H, query.device, self.options.row_histogram_bins))
        keep_probs = layer in self.options.keep_probs_layers
        keep_scores = layer in self.options.keep_scores_layers
        # Kept tensors, distance profiles and softcapping need the torch path (row histograms do not).
        torch_only = keep_probs or keep_scores or self.options.distance_profile or softcap is not None
        if not torch_only:  # fused Triton kernels over all rows (CUDA; see fused_stats)
            from inspector import fused_stats

            if fused_stats.observe(self, module, query, key, attention_mask, scale, causal, acc):
                return
        if key.shape[1] != H:  # grouped-query attention: key heads shared by several query heads
            key = key.repeat_interleave(H // key.shape[1], dim=1)
        kept_scores, kept_probs, kept_valid = [], [], []

        budget = _chunk_elements(query.device)
        items = max(1, budget // max(H * Tq * Tk, 1))  # batch items per chunk
        rows = Tq if items > 1 else max(1, budget // max(H * Tk, 1))  # query rows per chunk (long sequences)
        if causal and Tq >= 2 * _MIN_BLOCK_ROWS:
            # Causal attention: a block of query rows needs keys only up to its last row, so up to
            # eight row blocks compute ~56 % of QKᵀ instead of all of it (the rest is masked anyway).
            # Blocks keep at least 64 rows: smaller ones lose more to per-call overhead (measured on CPU).
            rows = min(rows, max(_MIN_BLOCK_ROWS, -(-Tq // 8)))
        for b0 in range(0, B, items):
            b1 = min(B, b0 + items)
            valid_all = self._valid_mask(attention_mask, causal, b0, b1, Tq, Tk, query.device)  # (b,1|H,Tq,Tk)
            # The first real token of each item (the first key any row attends: with left padding not
            # index 0); its probability is the "sink" mass, 0 on rows that cannot see it (sliding window).
            first = valid_all.any(dim=2).any(dim=1).to(torch.uint8).argmax(dim=-1)  # (b,)
            k = key[b0:b1].float()
            chunk_scores, chunk_probs = [], []
            for r0 in range(0, Tq, rows):
                r1 = min(Tq, r0 + rows)
                valid = valid_all[:, :, r0:r1]
                # Keys after the last one any of these rows attends to change nothing: leave them out.
                keep = keep_scores or keep_probs  # kept matrices stay full width
                k_end = Tk if keep else self._last_key(valid, attention_mask, causal, r1, Tq, Tk)
                valid = valid[..., :k_end]
                q = query[b0:b1, :, r0:r1].float()
                x = q @ k[:, :, :k_end].transpose(-1, -2)  # (b, H, r, k_end) unscaled q·k
                if softcap is not None:  # what the softmax sees is softcap·tanh(scale·x / softcap)
                    x.mul_(scale / softcap).tanh_().mul_(softcap / scale)
                if self.options.distance_profile:
                    self._add_distances(acc, x, valid, r0, Tq, Tk, self.options.distance_profile)
                *row_figures, probs = self._row_reductions(
                    x, valid, scale, keep_scores, keep_probs, chunk_scores, first)
                self._merge_rows(acc, scale, *row_figures)
                if keep_probs:
                    chunk_probs.append(probs.cpu())
            if keep_scores:
                kept_scores.append(torch.cat(chunk_scores, dim=2))
            if keep_probs:
                kept_probs.append(torch.cat(chunk_probs, dim=2))
            if keep_scores or keep_probs:
                kept_valid.append(valid_all.expand(-1, H, -1, -1).cpu())

        if keep_scores or keep_probs:
            self.kept[layer] = KeptAttention(
                layer=layer,
                scores=torch.cat(kept_scores).numpy() if keep_scores else None,
                probs=torch.cat(kept_probs).numpy() if keep_probs else None,
                valid=torch.cat(kept_valid).numpy(),
                scaling=scale,
            )

    @staticmethod
    def _add_distances(acc, x, valid, r0, Tq, Tk, D) -> None:
        """Per head and |query − key| distance: count, Σx, Σx² over the attended pairs of this chunk."""
        H, r, k = x.shape[1], x.shape[2], x.shape[3]
        qpos = torch.arange(r0, r0 + r, device=x.device) + (Tk - Tq)  # queries are the last Tq positions
        dist = (qpos[:, None] - torch.arange(k, device=x.device)[None, :]).abs().clamp(max=D).reshape(-1)
        v = valid.to(torch.float64)  # (b, 1|H, r, k)
        xv = x.double() * v
        n = v.sum(dim=0).expand(H, -1, -1).reshape(H, -1)
        if acc.dist_n is None:
            z = lambda: torch.zeros(H, D + 1, dtype=torch.float64, device=x.device)  # noqa: E731
            acc.dist_n, acc.dist_s1, acc.dist_s2 = z(), z(), z()
        acc.dist_n.index_add_(1, dist, n)
        acc.dist_s1.index_add_(1, dist, xv.sum(dim=0).reshape(H, -1))
        acc.dist_s2.index_add_(1, dist, (xv * x.double()).sum(dim=0).reshape(H, -1))

    @staticmethod
    def _last_key(valid, attention_mask, causal, r1, Tq, Tk) -> int:
        """One past the last key that query rows [.., r1) attend to (from the shapes when there is no mask)."""
        if attention_mask is None:
            return min(Tk, r1 + Tk - Tq) if causal and Tq > 1 else Tk
        attended = valid.any(dim=2).any(dim=1).any(dim=0).nonzero()  # the one host sync per chunk
        return max(1, int(attended[-1]) + 1) if attended.numel() else 1

    @staticmethod
    def _row_reductions(x, valid, scale, keep_scores, keep_probs, kept_scores, first=None):
        """Per query row of unscaled scores x (b, H, r, Tk), over the keys the model attends to:
        count, min, max, Σ(z − zmax), Σ(z − zmax)², Σ exp(z − zmax), Σ exp(z − zmax)·(z − zmax),
        exp(z − zmax) at key `first` (b,) of each item (default: the row's first attended key; 0 where
        that key is not attended), with z = scale·x;
        plus the probabilities if asked. Works in place on x: two full-size
        tensors at most, about a dozen passes (memory and time both matter on a GPU).
        """
        H = x.shape[1]
        if keep_scores:
            kept_scores.append(x.detach().to("cpu", copy=True))
        x.mul_(scale)
        masked = ~valid
        n_row = valid.sum(dim=-1, dtype=torch.float32).expand(-1, H, -1)  # (b, H, r)
        lo_row = x.masked_fill(masked, math.inf).amin(dim=-1)
        x.masked_fill_(masked, -math.inf)
        zmax = x.amax(dim=-1, keepdim=True)
        hi_row = zmax[..., 0]
        x.sub_(torch.where(torch.isfinite(zmax), zmax, torch.zeros_like(zmax)))  # y = z − zmax ≤ 0
        e = x.exp()  # 0 where masked
        x.masked_fill_(masked, 0.0)
        s1_row = x.sum(dim=-1)
        s2_row = torch.linalg.vector_norm(x, dim=-1).square()
        l_row = e.sum(dim=-1)
        ey_row = (e.unsqueeze(-2) @ x.unsqueeze(-1))[..., 0, 0]
        if first is None:
            first = valid.to(torch.uint8).argmax(dim=-1, keepdim=True).expand(-1, H, -1, -1)  # (b, H, r, 1)
        else:
            # Clamped into the (possibly shortened) key range: a column before `first` is never attended (e = 0).
            first = first.clamp(max=x.shape[-1] - 1).view(-1, 1, 1, 1).expand(-1, H, x.shape[2], 1)
        e0_row = e.gather(-1, first)[..., 0]
        probs = e.div_(torch.where(l_row > 0, l_row, torch.ones_like(l_row))[..., None]) if keep_probs else None
        return n_row, lo_row, hi_row, s1_row, s2_row, l_row, ey_row, e0_row, probs

    @staticmethod
    def _merge_rows(acc, scale, n_row, lo_row, hi_row, s1_row, s2_row, l_row, ey_row, e0_row):
        """Fold per-row figures of the scaled logits into the per-head accumulator (unscaled moments)."""
        row_ok = n_row > 0
        n = n_row.double()
        safe_n = torch.where(row_ok, n, torch.ones_like(n))
        hi = torch.where(row_ok, hi_row, torch.zeros_like(hi_row)).double()
        mean_y = s1_row.double() / safe_n  # mean of z − zmax over the row
        m2_row = (s2_row.double() - s1_row.double() * mean_y).clamp(min=0.0)
        mean_row = hi + mean_y  # mean of z over the row
        n_head = n.sum(dim=(0, 2))
        mean_head = (n * mean_row).sum(dim=(0, 2)) / n_head.clamp(min=1)
        m2_head = (m2_row + n * (mean_row - mean_head[None, :, None]) ** 2).sum(dim=(0, 2))
        lo = lo_row.masked_fill(~row_ok, math.inf).amin(dim=(0, 2)).double()
        hi_head = hi_row.masked_fill(~row_ok, -math.inf).amax(dim=(0, 2)).double()
        acc.add_moments(n_head, mean_head / scale, m2_head / scale ** 2, lo / scale, hi_head / scale)

        rowf = row_ok.double()
        safe_l = torch.where(l_row > 0, l_row, torch.ones_like(l_row)).double()
        entropy = (torch.log(safe_l) - ey_row.double() / safe_l) * rowf  # H = log Σe − Σ e·y / Σe
        maxp = rowf / safe_l  # the largest probability is exp(0) / Σe
        multi = (n_row >= 2).double()
        acc.ent_sum += entropy.sum(dim=(0, 2))
        acc.maxp_sum += maxp.sum(dim=(0, 2))
        acc.sink_sum += (e0_row.double() / safe_l * rowf).sum(dim=(0, 2))
        acc.rows += rowf.sum(dim=(0, 2))
        acc.frac_sum += (entropy / torch.log(n.clamp(min=2)) * multi).sum(dim=(0, 2))
        acc.frac_rows += multi.sum(dim=(0, 2))
        if getattr(acc, "hist_bins", 0):
            acc.add_row_histograms(entropy / torch.log(n.clamp(min=2)), multi, maxp, rowf)

    def _valid_mask(self, attention_mask, causal, b0, b1, Tq, Tk, device) -> torch.Tensor:
        """Boolean (b, 1|H, Tq, Tk): True where the model attends."""
        if attention_mask is None:
            valid = torch.ones(1, 1, Tq, Tk, dtype=torch.bool, device=device)
            if causal and Tq > 1:
                valid = torch.tril(valid, diagonal=Tk - Tq)
            valid = valid.expand(b1 - b0, -1, -1, -1)
        else:
            m = attention_mask[b0:b1] if attention_mask.shape[0] > 1 else attention_mask
            valid = m if m.dtype == torch.bool else (m == 0)
            if valid.dim() == 2:
                valid = valid[:, None, None, :]
            valid = valid.expand(b1 - b0, -1, Tq, Tk)
        if self.token_mask is not None and self.token_mask.shape[1] == Tq == Tk:
            tm = self.token_mask[b0:b1].to(device)
            valid = valid & tm[:, None, :, None] & tm[:, None, None, :]
        return valid

    def attention_stats(self) -> AttentionLogitStats | None:
        if not self.acc:
            return None
        layers = sorted(self.acc)
        stack = lambda f: np.stack([f(self.acc[i]).cpu().numpy() for i in layers])  # noqa: E731
        count = stack(lambda a: a.n)
        rows = stack(lambda a: a.rows)
        frac_rows = stack(lambda a: a.frac_rows)
        dist = {}
        if self.options.distance_profile and all(self.acc[i].dist_n is not None for i in layers):
            n = stack(lambda a: a.dist_n)
            safe = np.maximum(n, 1)
            mean = stack(lambda a: a.dist_s1) / safe
            var = np.clip(stack(lambda a: a.dist_s2) / safe - mean ** 2, 0.0, None)
            dist = dict(distance_count=n.astype(np.int64), distance_mean=np.where(n > 0, mean, np.nan),
                        distance_std=np.where(n > 0, np.sqrt(var), np.nan))
        with np.errstate(invalid="ignore", divide="ignore"):
            return AttentionLogitStats(
                d_head=int(self.d_head),
                scaling=np.array([self.scaling[i] for i in layers]),
                count=count.astype(np.int64),
                mean=stack(lambda a: a.mean),
                std=np.sqrt(stack(lambda a: a.m2) / np.maximum(count, 1)),
                min=stack(lambda a: a.min),
                max=stack(lambda a: a.max),
                entropy=stack(lambda a: a.ent_sum) / np.maximum(rows, 1),
                entropy_fraction=np.where(frac_rows > 0, stack(lambda a: a.frac_sum) / np.maximum(frac_rows, 1),
                                          np.nan),
                max_prob=stack(lambda a: a.maxp_sum) / np.maximum(rows, 1),
                sink_mass=stack(lambda a: a.sink_sum) / np.maximum(rows, 1),
                softcap=np.array([self.softcap.get(i, math.nan) for i in layers]),
                **dist,
            )


# --------------------------------------------------------------------------- mergeable moments


_MOMENT_FIELDS = ("count", "mean", "m2", "min", "max", "ent_sum", "rows", "frac_sum", "frac_rows", "maxp_sum",
                  "sink_sum")


@dataclass
class AttentionMoments:
    """The mergeable sums behind `AttentionLogitStats`, per layer × head (float64 numpy, shape (L, H)).

    One forward pass gives one of these (`moments(collector)`); `merge` combines two (Chan et al. for
    mean/M2, sums and extremes for the rest) in any grouping, so a corpus job can add windows,
    checkpoint, resume and combine shards from several workers, and `stats()` gives the same figures
    `attention_stats()` gives for a single pass. Moments are of the *unscaled* q·k.
    """

    d_head: int
    scaling: np.ndarray  # (L,)
    count: np.ndarray  # attended (query, key) pairs
    mean: np.ndarray
    m2: np.ndarray  # Σ (q·k − mean)²
    min: np.ndarray
    max: np.ndarray
    ent_sum: np.ndarray  # Σ over query rows of the softmax entropy (nats)
    rows: np.ndarray  # query rows with at least one key
    frac_sum: np.ndarray  # Σ over rows with >= 2 keys of entropy / log(n_keys)
    frac_rows: np.ndarray
    maxp_sum: np.ndarray  # Σ over rows of the largest probability
    sink_sum: np.ndarray  # Σ over rows of the probability on the first attended key
    hist_entropy_fraction: np.ndarray | None = None  # (L, H, bins) row counts, bins on [0, 1]
    hist_max_prob: np.ndarray | None = None  # (L, H, bins)

    def merge(self, other: "AttentionMoments") -> "AttentionMoments":
        if self.count.shape != other.count.shape:
            raise ValueError(f"Cannot merge attention moments of shapes {self.count.shape} and {other.count.shape}.")
        n = self.count + other.count
        safe = np.where(n > 0, n, 1.0)
        delta = other.mean - self.mean
        hists = {}
        for name in ("hist_entropy_fraction", "hist_max_prob"):
            a, b = getattr(self, name), getattr(other, name)
            hists[name] = None if a is None or b is None else a + b
        return AttentionMoments(
            d_head=self.d_head, scaling=self.scaling,
            count=n, mean=np.where(n > 0, self.mean + delta * other.count / safe, self.mean),
            m2=self.m2 + other.m2 + delta ** 2 * self.count * other.count / safe,
            min=np.minimum(self.min, other.min), max=np.maximum(self.max, other.max),
            **{f: getattr(self, f) + getattr(other, f) for f in _MOMENT_FIELDS[5:]}, **hists)

    def stats(self) -> AttentionLogitStats:
        count, rows, frac_rows = self.count, self.rows, self.frac_rows
        with np.errstate(invalid="ignore", divide="ignore"):
            return AttentionLogitStats(
                d_head=int(self.d_head), scaling=np.asarray(self.scaling, dtype=np.float64),
                count=count.astype(np.int64), mean=self.mean, std=np.sqrt(self.m2 / np.maximum(count, 1)),
                min=self.min, max=self.max, entropy=self.ent_sum / np.maximum(rows, 1),
                entropy_fraction=np.where(frac_rows > 0, self.frac_sum / np.maximum(frac_rows, 1), np.nan),
                max_prob=self.maxp_sum / np.maximum(rows, 1), sink_mass=self.sink_sum / np.maximum(rows, 1))

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """Flat name -> array mapping (for np.savez); `from_arrays` reads it back exactly."""
        out = {f"{prefix}{f}": np.asarray(getattr(self, f)) for f in _MOMENT_FIELDS}
        out[f"{prefix}d_head"] = np.asarray(self.d_head)
        out[f"{prefix}scaling"] = np.asarray(self.scaling)
        for name in ("hist_entropy_fraction", "hist_max_prob"):
            if getattr(self, name) is not None:
                out[f"{prefix}{name}"] = getattr(self, name)
        return out

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "") -> "AttentionMoments":
        get = lambda name: np.asarray(arrays[f"{prefix}{name}"]) if f"{prefix}{name}" in arrays else None  # noqa: E731
        return cls(d_head=int(get("d_head")), scaling=get("scaling"), **{f: get(f) for f in _MOMENT_FIELDS},
                   hist_entropy_fraction=get("hist_entropy_fraction"), hist_max_prob=get("hist_max_prob"))


def moments(collector: "_Collector") -> AttentionMoments | None:
    """The mergeable per layer × head sums of everything `collector` saw (None when it saw no attention)."""
    if not collector.acc:
        return None
    layers = sorted(collector.acc)
    stack = lambda f: np.stack([f(collector.acc[i]).cpu().numpy() for i in layers])  # noqa: E731
    hist = all(getattr(collector.acc[i], "hist_bins", 0) for i in layers)
    return AttentionMoments(
        d_head=int(collector.d_head), scaling=np.array([collector.scaling[i] for i in layers]),
        count=stack(lambda a: a.n), mean=stack(lambda a: a.mean), m2=stack(lambda a: a.m2),
        min=stack(lambda a: a.min), max=stack(lambda a: a.max), ent_sum=stack(lambda a: a.ent_sum),
        rows=stack(lambda a: a.rows), frac_sum=stack(lambda a: a.frac_sum), frac_rows=stack(lambda a: a.frac_rows),
        maxp_sum=stack(lambda a: a.maxp_sum), sink_sum=stack(lambda a: a.sink_sum),
        hist_entropy_fraction=stack(lambda a: a.hist_frac) if hist else None,
        hist_max_prob=stack(lambda a: a.hist_maxp) if hist else None)


# --------------------------------------------------------------------------- public API


@contextmanager
def capture(lm: LoadedModel, options: CaptureOptions | None = None,
            attention_mask: torch.Tensor | None = None) -> Iterator[_Collector]:
    """Collect attention statistics (and, with `options.norms`, norm-layer statistics in `collector.norms`)
    from every forward pass of `lm.model` run inside the block.

    The collector is visible only to the current thread/context; it is removed on exit, also
    when the forward raises, and so are the norm-layer hooks.
    """
    options = options or CaptureOptions()
    install(lm.model)
    token_mask = attention_mask.bool() if attention_mask is not None else None
    collector = _Collector(lm.n_layers, lm.n_heads, options, token_mask)
    with ExitStack() as stack:
        if collector.norms is not None:
            stack.enter_context(_norm_hooks(lm, collector.norms))
        token = _active_collector.set(collector if options.attention_stats or options.keep_probs_layers
                                      or options.keep_scores_layers else None)
        try:
            yield collector
        finally:
            _active_collector.reset(token)


def is_capturing() -> bool:
    return _active_collector.get() is not None


def run(lm: LoadedModel, batch: dict[str, torch.Tensor], options: CaptureOptions | None = None,
        **overrides) -> CaptureResult:
    """One instrumented forward pass of `lm` on `batch` (input_ids, attention_mask, token_type_ids).

    `overrides` replace fields of `options` (e.g. `run(lm, batch, norms=True)`)."""
    options = options or CaptureOptions()
    if overrides:
        options = dataclasses.replace(options, **overrides)
    model = lm.model
    batch = {k: v.to(lm.device) for k, v in batch.items() if v is not None}
    attention_mask = batch.get("attention_mask")
    if attention_mask is None:
        attention_mask = torch.ones_like(batch["input_ids"])
        batch["attention_mask"] = attention_mask
    forward_kwargs = dict(batch)
    if not lm.fam.has_token_types:
        forward_kwargs.pop("token_type_ids", None)
    if lm.fam.needs_use_cache_off:
        forward_kwargs["use_cache"] = False
    if options.hidden_states:
        forward_kwargs["output_hidden_states"] = True
    with torch.no_grad(), capture(lm, options, attention_mask) as collector:
        out = model(**forward_kwargs)
        embeddings = _embedding_outputs(lm, batch) if options.embeddings else None

    logits = getattr(out, "logits", None)
    if logits is None:
        logits = getattr(out, "prediction_logits", None)
    result = CaptureResult(
        input_ids=batch["input_ids"].cpu().numpy(),
        attention_mask=attention_mask.cpu().numpy(),
        attention=collector.attention_stats() if options.attention_stats else None,
        kept=collector.kept,
        logits=logits.float().cpu() if (options.logits and logits is not None) else None,
        nsp_logits=out.seq_relationship_logits.float().cpu() if getattr(out, "seq_relationship_logits", None)
        is not None else None,
        hidden_states=tuple(h.float().cpu() for h in out.hidden_states) if options.hidden_states else None,
        embeddings=embeddings,
        norms=norm_stats(collector),
    )
    return result


def _embedding_outputs(lm: LoadedModel, batch) -> dict[str, torch.Tensor]:
    """Token, position and segment embeddings computed from the model's own embedding modules.

    Rotary families have no position table: only "token" (what the first block receives; Gemma's
    embedding module multiplies by √d itself)."""
    from . import families

    ids = batch["input_ids"]
    T = ids.shape[1]
    position_ids = torch.arange(T, device=ids.device)[None].expand_as(ids)
    base = lm.model.base_model
    if lm.fam.positions == "rotary":
        return {"token": families.token_embedding(lm.model, lm.fam)(ids).float().cpu()}
    if lm.family == "gpt2":
        return {"token": base.wte(ids).float().cpu(), "position": base.wpe(position_ids).float().cpu()}
    emb = base.embeddings
    out = {"token": emb.word_embeddings(ids).float().cpu(),
           "position": emb.position_embeddings(position_ids).float().cpu()}
    tti = batch.get("token_type_ids")
    if tti is None:
        tti = torch.zeros_like(ids)
    out["segment"] = emb.token_type_embeddings(tti).float().cpu()
    return out
