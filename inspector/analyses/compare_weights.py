"""What moved between two checkpoints of one architecture: parameters, embedding rows, σ(QKᵀ).

Split from `compare` (which compares the two models' predictions on a text, and whose
`compare_models` runs these parts too and re-exports them):

- same parameter names and shapes: drift per tensor, per layer and per norm layer (`parameter_drift`);
- same vocabulary too: each token's input-embedding drift against its frequency in the text (`embedding_drift`);
- same number of layers and heads: σ(QKᵀ) per layer × head of A against B (`attention_sigma`).

Each `*_unavailable_reason` says why a pair cannot be compared (None when it can). Norms and
cosines are computed in float64, in row chunks for large matrices.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import capture
from ..errors import NotAvailableError
from ..inputs import clean_text, content_ids, display_tokens, encode
from ..tokens import same_vocabulary
from ._common import CHUNK_ELEMENTS, MAX_TOP_K, check_int

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel

__all__ = ["ParameterDrift", "EmbeddingDrift", "AttentionComparison", "DRIFT_COMPONENTS", "parameter_drift",
           "embedding_drift", "attention_sigma", "drift_unavailable_reason", "embedding_drift_unavailable_reason",
           "attention_unavailable_reason"]

# Columns of ParameterDrift.layer_component_rel_change.
DRIFT_COMPONENTS = ("attention", "mlp", "norm", "other")


# --------------------------------------------------------------------------- results


@dataclass
class ParameterDrift:
    """How far B's parameters moved from A's, tensor by tensor (same architecture only).

    P = parameter tensors present in both (tied weights once), M = norm modules, L = layers.
    Norms are L2 (Frobenius) norms of the flattened tensors, in float64. rel_change = ‖B−A‖/‖A‖
    (0 when nothing changed, NaN when ‖A‖ = 0 and B moved: zero-initialised biases); cosine between flattened
    A and B (NaN where either is zero).
    """

    spec_a: str
    spec_b: str
    names: list[str]  # (P,) A's parameter names (named_parameters order; matched to B relative to the backbone)
    layer: np.ndarray  # (P,) int64, transformer block index; -1 outside the blocks
    component: list[str]  # (P,) "attention" | "mlp" | "norm" | "embedding" | "head" | "other"
    shapes: list[tuple[int, ...]]  # (P,)
    numel: np.ndarray  # (P,) int64
    norm_a: np.ndarray  # (P,) ‖A‖
    norm_b: np.ndarray  # (P,) ‖B‖
    delta_norm: np.ndarray  # (P,) ‖B − A‖
    rel_change: np.ndarray  # (P,) ‖B − A‖ / ‖A‖; 0 when unchanged, NaN when ‖A‖ = 0 and B ≠ A
    cosine: np.ndarray  # (P,) cos(A, B)
    max_abs_delta: np.ndarray  # (P,) max |B − A|
    changed: np.ndarray  # (P,) bool, any element differs
    norm_modules: list[str]  # (M,) LayerNorm / RMSNorm module names
    norm_layer: np.ndarray  # (M,) int64, block index; -1 outside the blocks
    norm_mean_abs_dgamma: np.ndarray  # (M,) mean |γ_B − γ_A|
    norm_mean_abs_dbeta: np.ndarray  # (M,) mean |β_B − β_A|; NaN for a norm without bias
    n_layers: int
    components: list[str]  # (C,) columns of layer_component_rel_change (DRIFT_COMPONENTS)
    layer_rel_change: np.ndarray  # (L,) ‖ΔΘ_l‖ / ‖Θ_l^A‖ over all parameters of block l
    layer_cosine: np.ndarray  # (L,) cosine of the concatenated block parameters
    layer_component_rel_change: np.ndarray  # (L, C) the same per component; NaN when empty
    outside_rel_change: float  # over parameters outside the blocks (embeddings, final norm, heads)
    total_rel_change: float  # over all compared parameters
    total_cosine: float
    n_changed: int  # tensors with any change
    only_in_a: list[str]  # parameter names present only in A (not compared)
    only_in_b: list[str]


@dataclass
class EmbeddingDrift:
    """Per-token drift of the input embedding rows against the token's frequency in the text.

    V = vocabulary rows. Drift is 1 − cos(row_A, row_B) (cosine distance); Spearman ρ > 0 means
    tokens that are frequent in the text moved more. Frequencies are counts in the given text
    (tokenised by the shared tokenizer, no special tokens), not in a training corpus.
    """

    spec_a: str
    spec_b: str
    vocab_size: int  # V
    d_model: int
    cosine: np.ndarray  # (V,) cos(row_A, row_B); NaN where a row is zero
    rel_change: np.ndarray  # (V,) ‖row_B − row_A‖ / ‖row_A‖ (0 when unchanged)
    frequency: np.ndarray  # (V,) int64, occurrences in the text
    mean_cosine: float
    rho_seen: float  # Spearman(1 − cos, frequency) over tokens seen at least once; NaN if < 3 or constant
    p_seen: float
    n_seen: int
    rho_all: float  # over every row, unseen tokens as frequency 0 (many ties)
    p_all: float
    most_drifted_ids: np.ndarray  # (k,) int64, lowest cosine first
    most_drifted_tokens: list[str]  # (k,)
    most_drifted_cosine: np.ndarray  # (k,)
    tied_a: bool  # output matrix is the input embedding (drift then includes the output side's updates)
    tied_b: bool


@dataclass
class AttentionComparison:
    """σ(QKᵀ) per layer × head of A against B on the same text (seed 003).

    Arrays (L, H). "Unscaled" is σ(q·k); "scaled" is σ after the model's 1/√d_head scaling, what
    the softmax sees. Each model reads its own tokenisation of the text (cut to its context).
    """

    spec_a: str
    spec_b: str
    n_layers: int
    n_heads: int
    d_head_a: int
    d_head_b: int
    std_a: np.ndarray  # (L, H) σ(q·k) of A
    std_b: np.ndarray  # (L, H)
    std_scaled_a: np.ndarray  # (L, H)
    std_scaled_b: np.ndarray  # (L, H)
    std_diff: np.ndarray  # (L, H) std_b − std_a
    std_ratio: np.ndarray  # (L, H) std_b / std_a
    std_scaled_diff: np.ndarray  # (L, H) std_scaled_b − std_scaled_a
    layer_std_a: np.ndarray  # (L,) mean over heads of std_a
    layer_std_b: np.ndarray  # (L,)
    n_tokens_a: int
    n_tokens_b: int
    truncated_a: bool
    truncated_b: bool
    same_tokenisation: bool


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan, math.nan
    r = spearmanr(x, y)
    return float(r.statistic), float(r.pvalue)


# --------------------------------------------------------------------------- parameter drift

_LAYER = re.compile(r"\.(?:h|layer|layers|block|blocks)\.(\d+)\.")


def _module(x):
    return getattr(x, "model", x)


def _n_layers(x) -> int:
    n = getattr(x, "n_layers", None)
    return int(n) if n is not None else int(_module(x).config.num_hidden_layers)


def _key(model, name: str) -> str:
    """Name relative to the backbone, so BertModel and BertForMaskedLM parameters line up."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    return name[len(prefix) + 1:] if prefix and name.startswith(prefix + ".") else name


def _keyed_parameters(model) -> dict[str, tuple[str, torch.nn.Parameter]]:
    return {_key(model, n): (n, p) for n, p in model.named_parameters()}


def _norm_modules(model) -> dict[str, torch.nn.Module]:
    """LayerNorm and RMSNorm-like modules (RMSNorms are not nn.LayerNorm subclasses)."""
    out = {}
    for name, m in model.named_modules():
        tname = type(m).__name__
        if (isinstance(m, torch.nn.LayerNorm) or tname.endswith("Norm")) and getattr(m, "weight", None) is not None:
            out[name] = m
    return out


def _component(name: str, layer: int, norm_names: set[str]) -> str:
    owner = name.rsplit(".", 1)[0]
    if owner in norm_names:
        return "norm"
    low = name.lower()
    if layer < 0:
        if "wte" in low or "wpe" in low or "embed" in low:
            return "embedding"
        if "lm_head" in low or low.startswith("cls.") or ".cls." in low:
            return "head"
        return "other"
    if "attn" in low or "attention" in low:
        return "attention"
    if "mlp" in low or "intermediate" in low or ".output." in low or "ffn" in low or "feed_forward" in low:
        return "mlp"
    return "other"


def drift_unavailable_reason(lm_a, lm_b) -> str | None:
    """Why parameter drift cannot be computed for this pair, or None when it can."""
    ma, mb = _module(lm_a), _module(lm_b)
    fa, fb = ma.config.model_type, mb.config.model_type
    if fa != fb:
        return f"not comparable: A is {fa}, B is {fb} (different architectures)"
    la, lb = _n_layers(lm_a), _n_layers(lm_b)
    if la != lb:
        return f"not comparable: A has {la} layers, B has {lb}"
    pa, pb = _keyed_parameters(ma), _keyed_parameters(mb)
    common = [k for k in pa if k in pb]
    if not common:
        return "not comparable: the models have no parameter names in common"
    for k in common:
        (na, a), (_, b) = pa[k], pb[k]
        if a.shape != b.shape:
            return f"not comparable: parameter shapes differ (e.g. {na}: A {tuple(a.shape)}, B {tuple(b.shape)})"
    return None


def _flat64(p: torch.Tensor) -> torch.Tensor:
    return p.detach().reshape(-1).to(torch.float64)


@torch.no_grad()
def parameter_drift(lm_a, lm_b) -> ParameterDrift:
    """Relative change ‖B−A‖/‖A‖, cosine and max |Δ| per parameter tensor, per block and per norm layer.

    Accepts LoadedModels or plain modules. Raises NotAvailableError (with the reason) when the
    architectures differ (family, layer count or parameter shapes).
    """
    reason = drift_unavailable_reason(lm_a, lm_b)
    if reason:
        raise NotAvailableError(reason[0].upper() + reason[1:] + ".")
    ma, mb = _module(lm_a), _module(lm_b)
    pa, pb = _keyed_parameters(ma), _keyed_parameters(mb)
    keys = [k for k in pa if k in pb]
    names = [pa[k][0] for k in keys]
    norms = _norm_modules(ma)
    norm_names = set(norms)
    L = _n_layers(lm_a)
    C = len(DRIFT_COMPONENTS)

    P = len(names)
    layer = np.full(P, -1, dtype=np.int64)
    comp, shapes = [], []
    numel = np.zeros(P, dtype=np.int64)
    n_a, n_b, n_d, dot, mx = (np.zeros(P) for _ in range(5))
    changed = np.zeros(P, dtype=bool)
    for i, name in enumerate(names):
        m = _LAYER.search("." + name)
        layer[i] = int(m.group(1)) if m and int(m.group(1)) < L else -1
        comp.append(_component(name, int(layer[i]), norm_names))
        pa_, pb_ = pa[keys[i]][1], pb[keys[i]][1]
        a, b = _flat64(pa_), _flat64(pb_).to(pa_.device)
        d = b - a
        shapes.append(tuple(int(s) for s in pa_.shape))
        numel[i] = a.numel()
        n_a[i], n_b[i], n_d[i] = float(a.norm()), float(b.norm()), float(d.norm())
        dot[i] = float(a @ b)
        mx[i] = float(d.abs().max()) if d.numel() else 0.0
        changed[i] = bool((d != 0).any())
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(n_d == 0, 0.0, np.where(n_a > 0, n_d / np.where(n_a > 0, n_a, 1.0), np.nan))
        cos = np.where((n_a > 0) & (n_b > 0), np.clip(dot / np.where(n_a * n_b > 0, n_a * n_b, 1.0), -1, 1), np.nan)

    def agg(mask):
        sa, sd, sb = (float(np.sum(v[mask] ** 2)) for v in (n_a, n_d, n_b))
        sdot = float(np.sum(dot[mask]))
        r = math.sqrt(sd) / math.sqrt(sa) if sa > 0 else math.nan
        c = sdot / math.sqrt(sa * sb) if sa > 0 and sb > 0 else math.nan
        return r, c

    layer_rel, layer_cos = np.full(L, np.nan), np.full(L, np.nan)
    layer_comp = np.full((L, C), np.nan)
    comp_arr = np.array(comp)
    for l in range(L):  # noqa: E741
        in_layer = layer == l
        if in_layer.any():
            layer_rel[l], layer_cos[l] = agg(in_layer)
        for j, c in enumerate(DRIFT_COMPONENTS):
            sel = in_layer & (comp_arr == c)
            if sel.any():
                layer_comp[l, j] = agg(sel)[0]
    outside = layer < 0
    outside_rel = agg(outside)[0] if outside.any() else math.nan
    total_rel, total_cos = agg(np.ones(P, dtype=bool))

    mods_b = {_key(mb, n): m for n, m in mb.named_modules()}
    nm_names, nm_layer, dg, db = [], [], [], []
    for name, m in norms.items():
        mb_ = mods_b.get(_key(ma, name))
        if mb_ is None or getattr(mb_, "weight", None) is None or mb_.weight.shape != m.weight.shape:
            continue
        nm_names.append(name)
        mm = _LAYER.search("." + name + ".")
        nm_layer.append(int(mm.group(1)) if mm and int(mm.group(1)) < L else -1)
        dg.append(float((_flat64(mb_.weight).to(m.weight.device) - _flat64(m.weight)).abs().mean()))
        bias_a, bias_b = getattr(m, "bias", None), getattr(mb_, "bias", None)
        db.append(float((_flat64(bias_b).to(bias_a.device) - _flat64(bias_a)).abs().mean())
                  if bias_a is not None and bias_b is not None else math.nan)

    return ParameterDrift(
        spec_a=getattr(lm_a, "spec", type(ma).__name__), spec_b=getattr(lm_b, "spec", type(mb).__name__),
        names=names, layer=layer, component=comp, shapes=shapes, numel=numel,
        norm_a=n_a, norm_b=n_b, delta_norm=n_d, rel_change=rel, cosine=cos, max_abs_delta=mx, changed=changed,
        norm_modules=nm_names, norm_layer=np.asarray(nm_layer, dtype=np.int64),
        norm_mean_abs_dgamma=np.asarray(dg, dtype=np.float64), norm_mean_abs_dbeta=np.asarray(db, dtype=np.float64),
        n_layers=L, components=list(DRIFT_COMPONENTS),
        layer_rel_change=layer_rel, layer_cosine=layer_cos, layer_component_rel_change=layer_comp,
        outside_rel_change=float(outside_rel), total_rel_change=float(total_rel), total_cosine=float(total_cos),
        n_changed=int(changed.sum()),
        only_in_a=[pa[k][0] for k in pa if k not in pb], only_in_b=[pb[k][0] for k in pb if k not in pa],
    )


# --------------------------------------------------------------------------- embedding drift


def embedding_drift_unavailable_reason(lm_a, lm_b) -> str | None:
    """Why embedding drift cannot be computed (architectures or vocabularies differ), or None."""
    reason = drift_unavailable_reason(lm_a, lm_b)
    if reason:
        return reason
    if not same_vocabulary(lm_a.tokenizer, lm_b.tokenizer):
        return "not comparable: the vocabularies differ, so row i is not the same token in A and B"
    return None


@torch.no_grad()
def embedding_drift(lm_a, lm_b, text: str, *, top_k: int = 20) -> EmbeddingDrift:
    """Cosine between each token's input-embedding rows in A and B, against its frequency in `text`."""
    text = clean_text(text)
    reason = embedding_drift_unavailable_reason(lm_a, lm_b)
    if reason:
        raise NotAvailableError(reason[0].upper() + reason[1:] + ".")
    wa = lm_a.model.get_input_embeddings().weight.detach()
    wb = lm_b.model.get_input_embeddings().weight.detach()
    V, D = wa.shape
    top_k = check_int(top_k, 1, min(MAX_TOP_K, V), "top_k")
    na, nb, nd, dot = (np.zeros(V) for _ in range(4))
    step = max(1, CHUNK_ELEMENTS // max(D, 1))
    for r0 in range(0, V, step):  # float64 in row chunks: no full float64 copy of a large matrix
        ea = wa[r0:r0 + step].to(torch.float64)
        eb = wb[r0:r0 + step].to(device=ea.device, dtype=torch.float64)
        sl = slice(r0, r0 + ea.shape[0])
        na[sl], nb[sl] = ea.norm(dim=1).cpu().numpy(), eb.norm(dim=1).cpu().numpy()
        nd[sl], dot[sl] = (eb - ea).norm(dim=1).cpu().numpy(), (ea * eb).sum(1).cpu().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where((na > 0) & (nb > 0), np.clip(dot / (na * nb), -1.0, 1.0), np.nan)
        rel = np.where(nd == 0, 0.0, np.where(na > 0, nd / na, np.nan))
    ids, _ = content_ids(lm_a, text, 1, needs="a comparison")
    ids = np.asarray([i for i in ids if 0 <= i < V], dtype=np.int64)
    freq = np.bincount(ids, minlength=V).astype(np.int64)
    drift = 1.0 - cos
    seen = freq > 0
    rho_seen, p_seen = _spearman(drift[seen], freq[seen])
    rho_all, p_all = _spearman(drift, freq)
    order = np.argsort(np.where(np.isnan(cos), np.inf, cos), kind="stable")[:top_k]

    def tied(lm: LoadedModel) -> bool:
        out = lm.model.get_output_embeddings()
        return out is not None and out.weight.data_ptr() == lm.model.get_input_embeddings().weight.data_ptr()

    return EmbeddingDrift(
        spec_a=lm_a.spec, spec_b=lm_b.spec, vocab_size=int(V), d_model=int(D),
        cosine=cos, rel_change=rel, frequency=freq, mean_cosine=float(np.nanmean(cos)),
        rho_seen=rho_seen, p_seen=p_seen, n_seen=int(seen.sum()), rho_all=rho_all, p_all=p_all,
        most_drifted_ids=order.astype(np.int64), most_drifted_tokens=display_tokens(lm_a.tokenizer, order),
        most_drifted_cosine=cos[order], tied_a=tied(lm_a), tied_b=tied(lm_b),
    )


# --------------------------------------------------------------------------- attention σ


def attention_unavailable_reason(lm_a, lm_b) -> str | None:
    if lm_a.n_layers != lm_b.n_layers:
        return f"not comparable: A has {lm_a.n_layers} layers, B has {lm_b.n_layers}"
    if lm_a.n_heads != lm_b.n_heads:
        return f"not comparable: A has {lm_a.n_heads} heads per layer, B has {lm_b.n_heads}"
    return None


def attention_sigma(lm_a, lm_b, text: str) -> AttentionComparison:
    """σ(QKᵀ) per layer × head of A and B on `text` (unscaled and as the softmax sees it)."""
    text = clean_text(text)
    reason = attention_unavailable_reason(lm_a, lm_b)
    if reason:
        raise NotAvailableError(reason[0].upper() + reason[1:] + ".")
    opts = capture.CaptureOptions(attention_stats=True, logits=False)
    stats, encs = [], []
    for lm in (lm_a, lm_b):
        enc = encode(lm, text, min_tokens=1)
        res = capture.run(lm, enc.batch(), opts)
        if res.attention is None:
            raise NotAvailableError(f"No attention statistics were captured for {lm.spec}.")
        stats.append(res.attention)
        encs.append(enc)
    sa, sb = stats
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = sb.std / sa.std
    return AttentionComparison(
        spec_a=lm_a.spec, spec_b=lm_b.spec, n_layers=lm_a.n_layers, n_heads=lm_a.n_heads,
        d_head_a=int(sa.d_head), d_head_b=int(sb.d_head),
        std_a=sa.std, std_b=sb.std, std_scaled_a=sa.std_scaled, std_scaled_b=sb.std_scaled,
        std_diff=sb.std - sa.std, std_ratio=ratio, std_scaled_diff=sb.std_scaled - sa.std_scaled,
        layer_std_a=sa.std.mean(axis=1), layer_std_b=sb.std.mean(axis=1),
        n_tokens_a=encs[0].n_tokens, n_tokens_b=encs[1].n_tokens,
        truncated_a=bool(encs[0].truncated), truncated_b=bool(encs[1].truncated),
        same_tokenisation=encs[0].input_ids.tolist() == encs[1].input_ids.tolist(),
    )
