"""LayerNorm / RMSNorm parameters (γ gain, β bias) of every normalisation layer, and what they do to activations.

Seed 003 claims GPT-2's γ lie mostly in 0.2–0.4 and its β near 0; `layernorm_stats` measures
that per layer and pooled over the model. Norm layers are found by what they are, not by
`isinstance(nn.LayerNorm)` (which misses every RMSNorm): a module whose class name contains
"Norm", with a 1-D `weight` parameter and an `eps` / `variance_epsilon` attribute.
γ is always the *effective* gain: `1 + weight` for Gemma-style RMSNorms, `weight` otherwise.
"""
from __future__ import annotations

import inspect
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from ..errors import InputError
from ._common import QUANTILE_LEVELS, bin_edges, histogram

if TYPE_CHECKING:  # pragma: no cover
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


def is_norm_layer(module: torch.nn.Module) -> bool:
    """A normalisation layer with a learned gain: LayerNorm and every RMSNorm-style class."""
    if "Norm" not in type(module).__name__:
        return False
    weight = module._parameters.get("weight") if hasattr(module, "_parameters") else None
    if not isinstance(weight, torch.Tensor) or weight.dim() != 1:
        return False
    return isinstance(module, torch.nn.LayerNorm) or hasattr(module, "eps") or hasattr(module, "variance_epsilon")


def _block_index(name: str) -> int | None:
    for part in name.split("."):
        if part.isdigit():
            return int(part)
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


def find_norm_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(module path, module) of every norm layer, in registration order (not execution order)."""
    return [(name, m) for name, m in model.named_modules() if name and is_norm_layer(m)]


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


class _NormSink:
    """Running per-layer sums, filled only by the thread that attached the hooks."""

    def __init__(self, owner: int, token_mask: torch.Tensor | None):
        self.owner = owner
        self.token_mask = token_mask  # (B, T) bool
        self.data: dict[str, dict] = {}

    @torch.no_grad()
    def observe(self, name: str, x: torch.Tensor, y: torch.Tensor) -> None:
        if threading.get_ident() != self.owner:
            return  # another session's forward on the shared model: not ours, leave it alone
        x = x.detach().float()
        y = y.detach().float()
        x2 = x.reshape(-1, x.shape[-1])  # (N, d)
        y2 = y.reshape(-1, y.shape[-1])
        m = self.token_mask
        if m is not None and m.numel() == x2.shape[0]:
            keep = m.reshape(-1).to(x2.device)
            x2, y2 = x2[keep], y2[keep]
        self.data[name] = {
            "n": x2.shape[0],
            "input_mean": x2.mean().item(), "input_std": x2.std(correction=0).item(),
            "output_mean": y2.mean().item(), "output_std": y2.std(correction=0).item(),
            "input_token_mean": x2.mean(dim=-1).double().cpu().numpy(),
            "input_token_std": x2.std(dim=-1, correction=0).double().cpu().numpy(),
            "input_token_rms": x2.pow(2).mean(dim=-1).sqrt().double().cpu().numpy(),
            "output_token_std": y2.std(dim=-1, correction=0).double().cpu().numpy(),
        }


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, torch.Tensor):
            return a
    return None


@contextmanager
def norm_hooks(lm: LoadedModel, token_mask: torch.Tensor | None = None) -> Iterator[_NormSink]:
    """Attach a reducing forward hook to every norm layer of `lm`; always removed on exit.

    Holds `lm.lock` while the hooks exist (other hook users wait), and the hooks record only
    forwards run by this thread, so a plain forward by another session is never mixed in.
    """
    sink = _NormSink(threading.get_ident(), token_mask)
    handles = []
    with lm.lock:
        try:
            for name, module in find_norm_layers(lm.model):
                def hook(mod, args, kwargs, output, _name=name):
                    x = _first_tensor(args, kwargs)
                    y = output[0] if isinstance(output, tuple) else output
                    if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
                        sink.observe(_name, x, y)
                handles.append(module.register_forward_hook(hook, with_kwargs=True))
            yield sink
        finally:
            for h in handles:
                h.remove()


def layernorm_activations(lm: LoadedModel, encoded) -> list[NormActivation]:
    """Mean/std of each norm layer's input and output on one text (an `Encoded` or a string).

    One forward pass with hooks that reduce to statistics in place; layers the forward never
    reached (e.g. the MLM head of a model without it) are left out. Registration order.
    """
    from .. import capture
    from ..inputs import Encoded, encode

    if isinstance(encoded, str):
        encoded = encode(lm, encoded)
    if not isinstance(encoded, Encoded):
        raise InputError("layernorm_activations needs a text or an Encoded input.")
    batch = encoded.batch()
    mask = batch["attention_mask"].bool()
    options = capture.CaptureOptions(attention_stats=False, logits=False)
    with norm_hooks(lm, mask) as sink:
        capture.run(lm, batch, options)
    out = []
    for name, _ in find_norm_layers(lm.model):
        d = sink.data.get(name)
        if d is None:
            continue
        block = _block_index(name)
        out.append(NormActivation(
            name=name, block=block, role=_role(name, block), n_tokens=int(d["n"]),
            input_mean=d["input_mean"], input_std=d["input_std"],
            output_mean=d["output_mean"], output_std=d["output_std"],
            input_token_mean=d["input_token_mean"], input_token_std=d["input_token_std"],
            input_token_rms=d["input_token_rms"], output_token_std=d["output_token_std"],
        ))
    return out
