"""What researchers look at first on a real decoder, all from one instrumented forward pass.

- Attention sinks: per layer × head, the mean attention probability on the first real token (and
  whether that token is the tokenizer's BOS), against what uniform attention would give.
- Massive activations: per norm layer, the largest |value| of its input (the residual stream entering
  it), at which token and which dimension, against the median |value|.
- Norm-weight outliers: dimensions whose effective γ lies far from the rest of their layer (robust
  z-score on the median and MAD), and the dimensions that are outliers in several layers.
- σ(QKᵀ) against query–key distance: rotary models have no position table; the distance profile of
  the logits is where their positions show.

Sinks and the distance profile come from the capture's attention function, massive activations from
pre-hooks on the norm layers attached for the same forward (always removed, held under `lm.lock`).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import capture, families, norm_hooks
from ..analysis import Analysis, Chart, Metric, Note, Table, setting
from ..inputs import display_token
from .layernorm import _block_index, _raw_params, _role, find_norm_layers

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel

MAD_TO_SIGMA = 1.4826  # MAD × this = σ for a normal distribution


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class MassiveActivation:
    """The largest |input| of one norm layer on the text (real tokens only)."""

    name: str  # norm module path
    block: int | None
    role: str
    top_values: np.ndarray  # (k,) signed values of the k largest |x|, largest first
    top_tokens: np.ndarray  # (k,) int token positions
    top_dims: np.ndarray  # (k,) int feature dimensions
    median_abs: float  # median |x| over all (token, dim) of real tokens
    ratio: float  # |top_values[0]| / median_abs


@dataclass(frozen=True)
class GammaOutliers:
    """Dimensions of one norm layer whose effective γ is far from the layer's median."""

    name: str
    block: int | None
    median: float
    mad: float  # median absolute deviation of γ in this layer
    dims: np.ndarray  # (n,) outlier dimensions, by decreasing |z|
    gamma: np.ndarray  # (n,) their γ
    z: np.ndarray  # (n,) robust z = (γ − median) / (1.4826 · MAD)


@dataclass(frozen=True)
class DecoderSignals:
    spec: str
    tokens: tuple[str, ...]
    first_position: int  # index of the first real token
    first_token: str
    first_is_bos: bool  # the first real token is the tokenizer's BOS token
    bos_token: str | None
    n_heads: int
    n_kv_heads: int
    kv_groups: tuple[tuple[int, ...], ...]  # query heads per key/value head
    sink_mass: np.ndarray  # (L, H) mean probability on the first real token
    uniform_sink: np.ndarray  # (L,) the same figure if every row attended uniformly to its keys
    windows: tuple[int | None, ...]  # (L,) sliding window per layer
    massive: tuple[MassiveActivation, ...]
    gamma_outliers: tuple[GammaOutliers, ...]
    z_threshold: float
    recurring_gamma_dims: tuple[tuple[int, int], ...]  # (dim, layers where it is a γ outlier), ≥ 2 layers
    recurring_massive_dims: tuple[tuple[int, int], ...]  # (dim, norm layers whose top-1 |x| is there), ≥ 2
    positions: str  # "rotary" | "learned"
    distance_max: int  # D: distances 0 … D − 1 exact, D = "≥ D"
    distance_count: np.ndarray  # (L, D + 1) attended pairs per distance, all heads
    distance_std: np.ndarray  # (L, D + 1) σ of the unscaled q·k over those pairs (pooled over heads)
    distance_mean: np.ndarray  # (L, D + 1)


# --------------------------------------------------------------------------- pieces


class _InputSink:
    """The k largest |x| of every norm layer's input (with their token and feature) and the median |x|."""

    def __init__(self, token_mask: torch.Tensor, k: int):
        self.token_mask, self.k = token_mask, k
        self.data: dict[str, tuple] = {}

    @torch.no_grad()
    def observe(self, name: str, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        if x.dim() != 3:
            return
        a = x.detach().float()  # (B, T, D)
        B, T, D = a.shape
        m = self.token_mask.to(a.device)
        if m.shape != (B, T):
            return
        flat = a.masked_fill(~m[..., None], 0.0).reshape(-1)  # padding can never be the largest |x|
        k = min(self.k, int(m.sum()) * D)
        idx = flat.abs().topk(k).indices
        v = a[m].abs().reshape(-1)  # (N·D,) real tokens only
        n = v.numel()  # median as numpy defines it: the mean of the two middle values when n is even
        median = 0.5 * (float(v.kthvalue((n + 1) // 2).values) + float(v.kthvalue(n // 2 + 1).values))
        self.data[name] = (flat[idx].double().cpu().numpy(), (idx // D % T).cpu().numpy(), (idx % D).cpu().numpy(),
                           median)


@contextmanager
def norm_input_hooks(lm: LoadedModel, token_mask: torch.Tensor, k: int):
    """Every norm layer's input reduced to its k largest |x|, through capture's norm-layer hooks."""
    sink = _InputSink(token_mask, k)
    with norm_hooks.observe_norms(lm, sink.observe):
        yield sink


def gamma_outliers(gamma: np.ndarray, z_threshold: float) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(median, MAD, outlier dims by decreasing |z|, their z) of one layer's γ (robust z-score)."""
    g = np.asarray(gamma, dtype=np.float64)
    med = float(np.median(g))
    mad = float(np.median(np.abs(g - med)))
    if mad == 0.0:  # all but a few γ equal: every other value is infinitely far
        z = np.select([g > med, g < med], [np.inf, -np.inf], 0.0)
    else:
        z = (g - med) / (MAD_TO_SIGMA * mad)
    dims = np.nonzero(np.abs(z) > z_threshold)[0]
    dims = dims[np.argsort(-np.abs(z[dims]), kind="stable")]
    return med, mad, dims, z[dims]


def _recurring(dim_lists: list[np.ndarray]) -> tuple[tuple[int, int], ...]:
    counts: dict[int, int] = {}
    for dims in dim_lists:
        for d in set(int(v) for v in dims):
            counts[d] = counts.get(d, 0) + 1
    return tuple(sorted(((d, c) for d, c in counts.items() if c >= 2), key=lambda t: (-t[1], t[0])))


def _uniform_sink(mask: np.ndarray, causal: bool, window: int | None) -> float:
    """Mean over real query rows of 1 / (number of keys the row attends), the first token included or not."""
    vals = []
    for row in mask:
        real = np.nonzero(row)[0]
        n = len(real)
        for rank in range(n):
            keys = rank + 1 if causal else n
            if window and causal:
                keys = min(keys, window)
            sees_first = (not causal) or window is None or rank < window
            vals.append(1.0 / keys if sees_first else 0.0)
    return float(np.mean(vals)) if vals else float("nan")


# --------------------------------------------------------------------------- the analysis


def decoder_signals(lm: LoadedModel, encoded, *, top_k: int = 5, z_threshold: float = 6.0,
                    distance_max: int = 64) -> DecoderSignals:
    """Sinks, massive activations, γ outliers and the distance profile from one forward pass."""
    batch = encoded.batch()
    if not lm.fam.has_token_types:
        batch.pop("token_type_ids", None)
    mask = batch["attention_mask"].bool()
    T = int(mask.shape[1])
    D = max(1, min(int(distance_max), T))
    options = capture.CaptureOptions(logits=False, distance_profile=D)
    with norm_input_hooks(lm, mask.to(lm.device), top_k) as sink:
        res = capture.run(lm, batch, options)
    st = res.attention
    m = res.attention_mask.astype(bool)
    first = int(np.argmax(m[0]))
    ids = res.input_ids[0]
    tok = lm.tokenizer
    bos = getattr(tok, "bos_token_id", None)
    windows = families.sliding_windows(lm.model.config) if lm.fam.decoder else (None,) * lm.n_layers

    massive = []
    for name, _ in find_norm_layers(lm.model):
        d = sink.data.get(name)
        if d is None:
            continue
        vals, toks, dims, med = d
        block = _block_index(name)
        massive.append(MassiveActivation(
            name=name, block=block, role=_role(name, block), top_values=vals, top_tokens=toks.astype(np.int64),
            top_dims=dims.astype(np.int64), median_abs=med,
            ratio=float(abs(vals[0]) / med) if med > 0 else float("inf")))

    outliers = []
    for name, module in find_norm_layers(lm.model):
        gamma = _raw_params(module)[0]
        med, mad, dims, z = gamma_outliers(gamma, z_threshold)
        outliers.append(GammaOutliers(name=name, block=_block_index(name), median=med, mad=mad, dims=dims,
                                      gamma=gamma[dims], z=z))

    n = st.distance_count.astype(np.float64)  # (L, H, D + 1)
    mean_h = np.nan_to_num(st.distance_mean)
    second = np.nan_to_num(st.distance_std) ** 2 + mean_h ** 2  # E[x²] per head
    N = n.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (n * mean_h).sum(axis=1) / N
        var = np.clip((n * second).sum(axis=1) / N - mean ** 2, 0.0, None)
    return DecoderSignals(
        spec=lm.spec, tokens=tuple(encoded.tokens), first_position=first,
        first_token=display_token(tok, int(ids[first])),
        first_is_bos=bos is not None and int(ids[first]) == int(bos),
        bos_token=display_token(tok, int(bos)) if bos is not None else None,
        n_heads=lm.n_heads, n_kv_heads=lm.kv_heads,
        kv_groups=tuple(tuple(g) for g in families.kv_groups(lm.n_heads, lm.kv_heads)),
        sink_mass=st.sink_mass, windows=tuple(windows),
        uniform_sink=np.array([_uniform_sink(m, lm.is_causal, w) for w in windows]),
        massive=tuple(massive), gamma_outliers=tuple(outliers), z_threshold=float(z_threshold),
        recurring_gamma_dims=_recurring([o.dims for o in outliers]),
        recurring_massive_dims=_recurring([a.top_dims[:1] for a in massive]),
        positions=lm.fam.positions, distance_max=D, distance_count=N.astype(np.int64),
        distance_std=np.where(N > 0, np.sqrt(var), np.nan), distance_mean=np.where(N > 0, mean, np.nan))


# --------------------------------------------------------------------------- views (pages use parts)


def sink_blocks(r: DecoderSignals) -> list:
    L, H = r.sink_mass.shape
    first = f"the first token ({r.first_token!r}, position {r.first_position})"
    bos = ("it is the BOS token, so this is also the mass on BOS" if r.first_is_bos else
           (f"it is not the BOS token ({r.bos_token!r})" if r.bos_token is not None else
            "the tokenizer has no BOS token"))
    blocks: list = [
        Note(f"Attention sinks: mean probability each query row puts on {first}; {bos}. Uniform attention over "
             "the keys a row sees would give the per-layer baseline."),
        Metric("Mean sink mass (all heads)", float(np.nanmean(r.sink_mass))),
        Metric("Largest head", float(np.nanmax(r.sink_mass)),
               help="layer.head " + "{}.{}".format(*np.unravel_index(int(np.nanargmax(r.sink_mass)), (L, H)))),
        Metric("Uniform baseline (mean over layers)", float(np.nanmean(r.uniform_sink))),
        Chart("heatmap", "Attention mass on the first token per layer × head", x_title="head", y_title="layer",
              z=tuple(tuple(float(v) for v in row) for row in r.sink_mass),
              row_labels=tuple(f"layer {i}" for i in range(L)), col_labels=tuple(f"h{h}" for h in range(H)),
              colorbar_title="mass", zmin=0.0, zmax=1.0),
        Table("Per layer", ("layer", "mean sink mass", "max over heads", "uniform baseline", "sliding window"),
              tuple((i, float(np.mean(r.sink_mass[i])), float(np.max(r.sink_mass[i])), float(r.uniform_sink[i]),
                     r.windows[i] if r.windows[i] else "—") for i in range(L))),
    ]
    blocks.extend(kv_group_blocks(r))
    return blocks


def kv_group_blocks(r: DecoderSignals) -> list:
    if r.n_kv_heads == r.n_heads:
        return [Note(f"Multi-head attention: each of the {r.n_heads} query heads has its own key/value head.")]
    rows = tuple((g, ", ".join(f"h{h}" for h in heads), float(np.mean(r.sink_mass[:, list(heads)])))
                 for g, heads in enumerate(r.kv_groups))
    return [Table(f"Grouped-query attention: {r.n_heads} query heads share {r.n_kv_heads} key/value heads",
                  ("key/value head", "query heads", "mean sink mass"), rows,
                  note="Query heads in one group see the same keys; statistics above are per query head.")]


def massive_blocks(r: DecoderSignals) -> list:
    if not r.massive:
        return [Note("No norm layer ran on this text.")]
    top = max(r.massive, key=lambda a: a.ratio)
    rows = tuple((a.name, a.role, float(a.top_values[0]), int(a.top_tokens[0]), r.tokens[int(a.top_tokens[0])],
                  int(a.top_dims[0]), a.median_abs, a.ratio) for a in r.massive)
    blocks: list = [
        Note("Massive activations: the largest |value| in the residual stream entering each norm layer, against "
             "the median |value| of that input (real tokens only)."),
        Metric("Largest |x| / median", top.ratio, help=f"{top.name}, token {int(top.top_tokens[0])}, "
               f"dimension {int(top.top_dims[0])}"),
        Chart("bar", "Largest |input| / median |input| per norm layer (log y)", x_title="norm layer",
              y_title="ratio", log_y=True, series=(("ratio", tuple(a.name for a in r.massive),
                                                    tuple(float(a.ratio) for a in r.massive)),)),
        Table("Largest |input| per norm layer", ("layer", "role", "value", "token position", "token", "dimension",
                                                 "median |x|", "ratio"), rows),
    ]
    if r.recurring_massive_dims:
        blocks.append(Note("Dimensions holding the largest |x| of several norm inputs: " + ", ".join(
            f"{d} ({c} layers)" for d, c in r.recurring_massive_dims[:10]) + "."))
    return blocks


def gamma_outlier_blocks(r: DecoderSignals) -> list:
    n_out = sum(len(o.dims) for o in r.gamma_outliers)
    rows = tuple((o.name, o.median, o.mad, len(o.dims),
                  ", ".join(f"{int(d)} (γ {g:.3g}, z {z:+.1f})" for d, g, z in zip(o.dims[:6], o.gamma, o.z)))
                 for o in r.gamma_outliers)
    blocks: list = [
        Note(f"Norm-weight outliers: dimensions whose effective γ is more than {r.z_threshold:g} robust σ "
             "(1.4826 × median absolute deviation) from the median γ of their layer."),
        Metric("Outlier dimensions (all layers)", n_out),
        Metric("Dimensions recurring in ≥ 2 layers", len(r.recurring_gamma_dims)),
        Table("γ outliers per norm layer", ("layer", "median γ", "MAD", "outliers", "largest (dim, γ, z)"), rows),
    ]
    if r.recurring_gamma_dims:
        blocks.append(Table("Dimensions that are γ outliers in several layers", ("dimension", "layers"),
                            tuple(r.recurring_gamma_dims[:30])))
        massive_dims = {d for d, _ in r.recurring_massive_dims} | {int(a.top_dims[0]) for a in r.massive}
        shared = [d for d, _ in r.recurring_gamma_dims if d in massive_dims]
        if shared:
            blocks.append(Note("Also where the largest norm inputs sit: dimension(s) " +
                               ", ".join(map(str, shared[:10])) + "."))
    return blocks


def distance_blocks(r: DecoderSignals) -> list:
    D = r.distance_max
    x = tuple(range(D)) + (D,)
    series = tuple((f"layer {i}", x, tuple(float(v) for v in r.distance_std[i])) for i in range(len(r.distance_std)))
    intro = ("Rotary positions: this model has no position-embedding table; positions enter by rotating q and k, "
             "so they show in how q·k depends on the query–key distance." if r.positions == "rotary" else
             "q·k against query–key distance (this model also has a learned position table).")
    return [
        Note(intro),
        Chart("line", "σ(QKᵀ) against query–key distance, per layer (pooled over heads)",
              x_title=f"|query − key| (last point: ≥ {D})", y_title="σ of unscaled q·k", series=series),
        Chart("line", "Mean QKᵀ against query–key distance, per layer", x_title=f"|query − key| (last point: ≥ {D})",
              y_title="mean of unscaled q·k",
              series=tuple((f"layer {i}", x, tuple(float(v) for v in r.distance_mean[i]))
                           for i in range(len(r.distance_mean)))),
    ]


class DecoderSignalsAnalysis(Analysis):
    name = "decoder_signals"
    title = "Sinks, massive activations, γ outliers"
    description = ("Attention sinks per layer × head, the largest activations entering each norm, norm-weight "
                   "outliers and σ(QKᵀ) against query–key distance, from one forward pass.")

    @dataclass(frozen=True)
    class Settings:
        top_k: int = setting(5, "Largest |x| kept per norm input.", min=1, max=50)
        z_threshold: float = setting(6.0, "Robust z-score above which a γ dimension is an outlier.", min=1.0,
                                     max=1000.0)
        distance_max: int = setting(64, "Query–key distances tracked one by one (larger ones pooled).", min=1,
                                    max=4096)

    @torch.no_grad()
    def run(self, lm: LoadedModel, encoded, settings: DecoderSignalsAnalysis.Settings) -> DecoderSignals:
        return decoder_signals(lm, encoded, top_k=settings.top_k, z_threshold=settings.z_threshold,
                               distance_max=settings.distance_max)

    def view(self, result: DecoderSignals) -> list:
        return sink_blocks(result) + massive_blocks(result) + gamma_outlier_blocks(result) + distance_blocks(result)
