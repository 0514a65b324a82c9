"""LayerNorm / RMSNorm parameters (γ gain, β bias) of every normalisation layer, and what they do to activations.

Seed 003 claims GPT-2's γ lie mostly in 0.2–0.4 and its β near 0; `layernorm_stats` measures
that per layer and pooled over the model. Norm layers are found by what they are, not by
`isinstance(nn.LayerNorm)` (which misses every RMSNorm): a module whose class name contains
"Norm", with a 1-D `weight` parameter and an `eps` / `variance_epsilon` attribute.
γ is always the *effective* gain: `1 + weight` for Gemma-style RMSNorms, `weight` otherwise.
What the norm layers do to a text (`layernorm_activations`) comes from the one capture mechanism,
`capture.run(lm, batch, norms=True)`. `LayerNormAnalysis` is the report section on the contract:
its parts "params" and "activations", its view the figures, charts and tables of both.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import capture
from ..analysis import Analysis, Chart, Heading, Metric, Note, Table, Unavailable, part, setting, unavailable_note
from ..norm_hooks import find_norm_layers, is_norm_layer  # noqa: F401 - imported from here by other analyses
from ..errors import InputError
from ..svg_charts import fmt_number
from ._common import QUANTILE_LEVELS, bin_edges, histogram

if TYPE_CHECKING:  # pragma: no cover
    from ..inputs import Encoded
    from ..models import LoadedModel

GAMMA_BAND = (0.2, 0.4)  # seed 003: "γ mostly 0.2–0.4"
BETA_TOL = 0.05  # seed 003: "β near 0", read as |β| < 0.05
DEFAULT_BINS = 60


# --------------------------------------------------------------------------- results


@dataclass
class ParamStats:
    """Summary of one set of values (the γ or β of one layer, or pooled over the model)."""

    n: int  # number of values
    mean: float
    std: float  # population standard deviation (ddof = 0)
    min: float
    max: float
    quantiles: np.ndarray  # (7,) at QUANTILE_LEVELS (1, 5, 25, 50, 75, 95, 99 %), numpy 'linear'
    frac_in_band: float  # fraction of values v with band[0] <= v <= band[1] (the γ claim)
    frac_near_zero: float  # fraction with |v| < tol (the β claim)
    hist_edges: np.ndarray  # (bins + 1,) shared by every layer of the same parameter: comparable
    hist_counts: np.ndarray  # (bins,) int; zero bins are fine for a log y axis (plotted as gaps)


@dataclass
class NormLayer:
    """One normalisation layer: where it sits, its parameters and their summary."""

    name: str  # module path, stable across runs, e.g. "transformer.h.0.ln_1"
    block: int | None  # transformer block index; None for embeddings / final / head norms
    role: str  # ln_1 | ln_2 | ln_f | embeddings | attention-output | ffn-output | mlm-head | final | <attr>
    kind: str  # "layernorm" (centres and has β) | "rmsnorm" (no centring, usually no β)
    class_name: str  # e.g. "LayerNorm", "LlamaRMSNorm"
    eps: float
    size: int  # number of features d
    gamma_offset: float  # 1.0 when the layer scales by (1 + weight) (Gemma); γ below includes it
    gamma: np.ndarray  # (d,) effective gain, float64
    beta: np.ndarray | None  # (d,) bias, float64; None when the layer has none
    gamma_stats: ParamStats
    beta_stats: ParamStats | None


@dataclass
class LayerNormReport:
    """Every norm layer of a model (in module registration order) plus pooled γ and β summaries."""

    model: str  # model spec
    layers: list[NormLayer]
    pooled_gamma: ParamStats  # over all γ of all layers (torch.cat of the gains)
    pooled_beta: ParamStats | None  # over all β; None when no layer has a bias
    quantile_levels: np.ndarray  # (7,) the levels of every `quantiles` array
    gamma_band: tuple[float, float] = GAMMA_BAND
    beta_tol: float = BETA_TOL
    bins: int = DEFAULT_BINS

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def layer(self, name: str) -> NormLayer:
        """The layer with module path `name` (InputError listing the valid names otherwise)."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise InputError(f"No norm layer named '{name}'.", f"Known layers: {', '.join(self.names)}.")

    def gammas(self) -> dict[str, np.ndarray]:
        """name -> (d,) effective γ, for comparing checkpoints layer by layer."""
        return {layer.name: layer.gamma for layer in self.layers}

    def betas(self) -> dict[str, np.ndarray]:
        """name -> (d,) β, layers without a bias left out."""
        return {layer.name: layer.beta for layer in self.layers if layer.beta is not None}

    def table(self) -> list[dict]:
        """One flat row per layer for a table view (no arrays)."""
        rows = []
        for layer in self.layers:
            g, b = layer.gamma_stats, layer.beta_stats
            rows.append({
                "name": layer.name, "block": layer.block, "role": layer.role, "kind": layer.kind, "size": layer.size,
                "gamma_mean": g.mean, "gamma_std": g.std, "gamma_min": g.min, "gamma_max": g.max,
                "gamma_median": float(g.quantiles[3]), "gamma_frac_in_band": g.frac_in_band,
                "beta_mean": b.mean if b else None, "beta_std": b.std if b else None,
                "beta_min": b.min if b else None, "beta_max": b.max if b else None,
                "beta_frac_near_zero": b.frac_near_zero if b else None,
            })
        return rows


@dataclass
class NormActivation:
    """What one norm layer did to the activations of one text (real tokens only).

    Element statistics are over all (token, feature) values; per-token arrays have shape (T,).
    """

    name: str
    block: int | None
    role: str
    n_tokens: int
    input_mean: float
    input_std: float
    output_mean: float
    output_std: float
    input_token_mean: np.ndarray  # (T,) mean over features of each token's input (what LayerNorm subtracts)
    input_token_std: np.ndarray  # (T,) std over features of each token's input (what LayerNorm divides by)
    input_token_rms: np.ndarray  # (T,) root mean square of each token's input (what RMSNorm divides by)
    output_token_std: np.ndarray  # (T,) std over features of each token's output


# --------------------------------------------------------------------------- finding norm layers


_GAMMA_OFFSET_RE = re.compile(r"\(\s*1(\.0*)?\s*\+\s*self\.weight")
_offset_cache: dict[type, float] = {}


def _gamma_offset(module: torch.nn.Module) -> float:
    """1.0 when the layer multiplies by (1 + weight) (Gemma, Qwen3-Next, ...), read from its forward's source."""
    cls = type(module)
    if cls not in _offset_cache:
        offset = 0.0
        try:
            if _GAMMA_OFFSET_RE.search(inspect.getsource(cls.forward)):
                offset = 1.0
        except (OSError, TypeError):
            offset = 1.0 if "Gemma" in cls.__name__ and "RMSNorm" in cls.__name__ else 0.0
        _offset_cache[cls] = offset
    return _offset_cache[cls]


def _block_index(name: str) -> int | None:
    for piece in name.split("."):
        if piece.isdigit():
            return int(piece)
    return None


def _role(name: str, block: int | None) -> str:
    parts = name.split(".")
    last = parts[-1]
    if last in ("ln_1", "ln_2", "ln_f"):
        return last
    if "embeddings" in parts:
        return "embeddings"
    if "predictions" in parts or parts[0] == "cls" or "lm_head" in parts:
        return "mlm-head"
    if block is not None and len(parts) >= 2 and parts[-2] == "output":
        return "attention-output" if "attention" in parts else "ffn-output"
    if block is None and last in ("norm", "final_layernorm", "final_layer_norm", "ln_final"):
        return "final"
    return last


# --------------------------------------------------------------------------- statistics


def param_stats(values: np.ndarray, edges: np.ndarray, band: tuple[float, float] = GAMMA_BAND,
                tol: float = BETA_TOL) -> ParamStats:
    """Summary of a 1-D array of parameter values, histogram over the given bin edges."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise InputError("No values to summarise.")
    return ParamStats(
        n=int(v.size),
        mean=float(v.mean()),
        std=float(v.std()),
        min=float(v.min()),
        max=float(v.max()),
        quantiles=np.quantile(v, QUANTILE_LEVELS),
        frac_in_band=float(np.mean((v >= band[0]) & (v <= band[1]))),
        frac_near_zero=float(np.mean(np.abs(v) < tol)),
        hist_edges=np.asarray(edges, dtype=np.float64),
        hist_counts=histogram(v, edges),
    )


def _raw_params(module: torch.nn.Module) -> tuple[np.ndarray, np.ndarray | None, float]:
    offset = _gamma_offset(module)
    gamma = module.weight.detach().to("cpu", torch.float64).numpy() + offset
    bias = module._parameters.get("bias")
    beta = bias.detach().to("cpu", torch.float64).numpy() if isinstance(bias, torch.Tensor) else None
    return gamma, beta, offset


def layernorm_stats(lm: LoadedModel, bins: int = DEFAULT_BINS, *, gamma_band: tuple[float, float] = GAMMA_BAND,
                    beta_tol: float = BETA_TOL) -> LayerNormReport:
    """γ/β of every norm layer of `lm` with per-layer and pooled summaries and histograms.

    All γ histograms share one set of bin edges (the model-wide γ range), likewise all β ones,
    so layers can be compared or stacked into a heat map.
    """
    if not isinstance(bins, (int, np.integer)) or isinstance(bins, bool) or not 1 <= bins <= 10_000:
        raise InputError(f"bins must be an integer between 1 and 10000, got {bins!r}.")
    lo, hi = gamma_band
    if not lo <= hi:
        raise InputError(f"gamma_band must be (low, high) with low <= high, got {gamma_band!r}.")
    found = find_norm_layers(lm.model)
    if not found:
        raise InputError("This model has no normalisation layer with a learned gain.")
    raw = [(name, m, *_raw_params(m)) for name, m in found]
    all_gamma = np.concatenate([r[2] for r in raw])
    betas = [r[3] for r in raw if r[3] is not None]
    all_beta = np.concatenate(betas) if betas else None
    g_edges = bin_edges(all_gamma, bins)
    b_edges = bin_edges(all_beta, bins) if all_beta is not None else None
    band = (float(lo), float(hi))

    layers = []
    for name, m, gamma, beta, offset in raw:
        block = _block_index(name)
        has_centring = isinstance(m, torch.nn.LayerNorm) or "RMS" not in type(m).__name__ and beta is not None
        eps = getattr(m, "eps", None)
        if eps is None:
            eps = getattr(m, "variance_epsilon", float("nan"))
        layers.append(NormLayer(
            name=name, block=block, role=_role(name, block),
            kind="layernorm" if has_centring else "rmsnorm",
            class_name=type(m).__name__, eps=float(eps), size=int(gamma.size), gamma_offset=offset,
            gamma=gamma, beta=beta,
            gamma_stats=param_stats(gamma, g_edges, band, beta_tol),
            beta_stats=param_stats(beta, b_edges, band, beta_tol) if beta is not None else None,
        ))
    return LayerNormReport(
        model=getattr(lm, "spec", ""),
        layers=layers,
        pooled_gamma=param_stats(all_gamma, g_edges, band, beta_tol),
        pooled_beta=param_stats(all_beta, b_edges, band, beta_tol) if all_beta is not None else None,
        quantile_levels=np.asarray(QUANTILE_LEVELS, dtype=np.float64),
        gamma_band=band,
        beta_tol=float(beta_tol),
        bins=int(bins),
    )


# --------------------------------------------------------------------------- activation side


def layernorm_activations(lm: LoadedModel, encoded) -> list[NormActivation]:
    """Mean/std of each norm layer's input and output on one text (an `Encoded` or a string).

    One forward pass through `capture.run(..., norms=True)` (hooks that reduce to statistics in
    place, attached for that pass only); layers the forward never reached (e.g. the MLM head of a
    model without it) are left out. Registration order.
    """
    from ..inputs import Encoded, encode

    if isinstance(encoded, str):
        encoded = encode(lm, encoded)
    if not isinstance(encoded, Encoded):
        raise InputError("layernorm_activations needs a text or an Encoded input.")
    seen = capture.run(lm, encoded.batch(), attention_stats=False, logits=False, norms=True).norms
    out = []
    for name, d in seen.items():
        block = _block_index(name)
        out.append(NormActivation(
            name=name, block=block, role=_role(name, block), n_tokens=int(d.n),
            input_mean=d.input_mean, input_std=d.input_std, output_mean=d.output_mean, output_std=d.output_std,
            input_token_mean=d.input_token_mean, input_token_std=d.input_token_std,
            input_token_rms=d.input_token_rms, output_token_std=d.output_token_std,
        ))
    return out


# --------------------------------------------------------------------------- the analysis (report section)


@dataclass(frozen=True)
class LayerNormResult:
    """The report section's two parts (an `Unavailable` where a part does not apply, None where not computed)."""

    params: LayerNormReport | Unavailable | None = None  # γ / β of every norm layer (`layernorm_stats`)
    activations: list[NormActivation] | Unavailable | None = None  # on the text (`layernorm_activations`)


def _short_names(names: list[str]) -> list[str]:
    """Module paths without the dotted prefix they all share (transformer.h.0.ln_1 -> h.0.ln_1)."""
    parts = [n.split(".") for n in names]
    common = 0
    while parts and all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    return [".".join(p[common:]) for p in parts]


def _params_blocks(ln: LayerNormReport) -> list:
    lo, hi = ln.gamma_band
    pg, pb = ln.pooled_gamma, ln.pooled_beta
    median = float(pg.quantiles[3])
    blocks: list = [Note(
        f"{len(ln.layers)} normalisation layers. Over all of them: γ mean {fmt_number(pg.mean, 4)}, "
        f"median {fmt_number(median, 4)}; {pg.frac_in_band:.1%} of γ lie in [{lo:g}, {hi:g}]"
        + (f"; {pb.frac_near_zero:.1%} of β have |β| < {ln.beta_tol:g}" if pb
           else "; no β (RMSNorm: a gain γ only, no bias)") + ".")]
    blocks += [Metric("Norm layers", len(ln.layers)), Metric("γ mean (all layers)", pg.mean),
               Metric("γ median (all layers)", median), Metric(f"Share of γ in [{lo:g}, {hi:g}]", pg.frac_in_band)]
    if pb is not None:
        blocks.append(Metric(f"Share of β with |β| < {ln.beta_tol:g}", pb.frac_near_zero))
    names = tuple(_short_names([layer.name for layer in ln.layers]))
    blocks.append(Chart("histogram", "γ over all layers", x_title="γ", log_y=True,
                        series=(("γ", tuple(map(float, pg.hist_edges)), tuple(map(float, pg.hist_counts))),),
                        markers=(("band lo", lo), ("band hi", hi))))
    if pb is not None:
        blocks.append(Chart("histogram", "β over all layers", x_title="β", log_y=True,
                            series=(("β", tuple(map(float, pb.hist_edges)), tuple(map(float, pb.hist_counts))),),
                            markers=(("0", 0.0),)))
    medians = tuple(float(layer.gamma_stats.quantiles[3]) for layer in ln.layers)
    blocks.append(Chart("bar", "median γ per layer", y_title="γ", series=(("median γ", names, medians),)))
    blocks.append(Chart("heatmap", "γ histogram per layer (count)", x_title="γ bin (left edge)",
                        z=tuple(tuple(float(c) for c in layer.gamma_stats.hist_counts) for layer in ln.layers),
                        row_labels=names, col_labels=tuple(fmt_number(e) for e in pg.hist_edges[:-1])))
    rows = [(r["name"], r["role"], r["kind"], r["size"], r["gamma_mean"], r["gamma_std"], r["gamma_min"],
             r["gamma_max"], r["gamma_median"], r["gamma_frac_in_band"], r["beta_mean"], r["beta_std"],
             r["beta_frac_near_zero"]) for r in ln.table()]
    rows.append(("all layers", "", "", pg.n, pg.mean, pg.std, pg.min, pg.max, median, pg.frac_in_band,
                 pb.mean if pb else None, pb.std if pb else None, pb.frac_near_zero if pb else None))
    blocks.append(Table("LayerNorm summary", ("layer", "role", "kind", "d", "γ mean", "γ std", "γ min", "γ max",
                                              "γ median", f"γ in [{lo:g}, {hi:g}]", "β mean", "β std",
                                              f"|β| < {ln.beta_tol:g}"), tuple(rows),
                        note="all layers: every γ (and β) of every norm layer pooled; its d is the number of values."))
    return blocks


def _activation_blocks(acts: list[NormActivation]) -> list:
    x = tuple(range(len(acts)))
    return [
        Heading("What the norm layers do to this text"),
        Chart("line", "activation std before and after each norm layer", x_title="norm layer (registration order)",
              log_y=True, series=(("input std", x, tuple(a.input_std for a in acts)),
                                  ("output std", x, tuple(a.output_std for a in acts)))),
        Table("", ("layer", "role", "tokens", "input mean", "input std", "output mean", "output std"),
              tuple((a.name, a.role, a.n_tokens, a.input_mean, a.input_std, a.output_mean, a.output_std)
                    for a in acts)),
    ]


class LayerNormAnalysis(Analysis):
    name = "layernorm"
    title = "LayerNorm γ and β"
    description = ("The gain γ and bias β of every normalisation layer (LayerNorm and RMSNorm) against the claim "
                   "that γ lie mostly in 0.2–0.4 and β near 0, and what the norm layers do to the text's activations.")
    own_page = "layernorm"
    report_parts = True
    result_type = LayerNormResult

    @dataclass(frozen=True)
    class Settings:
        bins: int = setting(DEFAULT_BINS, "Histogram bins of γ and of β (every layer shares the model-wide edges).",
                            min=1, max=10_000, key="layernorm_bins")

    def run(self, lm: LoadedModel, encoded: Encoded, settings: LayerNormAnalysis.Settings) -> LayerNormResult:
        return LayerNormResult(params=part(lambda: layernorm_stats(lm, bins=int(settings.bins))),
                               activations=part(lambda: layernorm_activations(lm, encoded)))

    def view(self, result: LayerNormResult) -> list:
        blocks: list = []
        for value, render in ((result.params, _params_blocks), (result.activations, _activation_blocks)):
            if isinstance(value, Unavailable):
                blocks.append(unavailable_note(value))
            elif value:
                blocks += render(value)
        return blocks
