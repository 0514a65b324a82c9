"""The declared view of the attention section: σ(QKᵀ) per layer × head, the scaling what-if, one pattern.

Blocks only (inspector.analysis): the app, the HTML / Markdown reports and the CLI render them.
The per-layer rows (means over heads) and the what-if rows are the figures the report's summary
also derives (report_markdown.summary), computed the same way.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..analysis import Chart, Heading, Metric, Note, Table, Unavailable, unavailable_note
from ..svg_charts import fmt_number
from ..tokens import visible

if TYPE_CHECKING:  # pragma: no cover
    from .attention import AttentionPattern, AttentionReport, AttentionSection, ScalingWhatIf

PER_LAYER_COLUMNS = ("layer", "σ(q·k)", "σ min (head)", "σ max (head)", "σ scaled", "σ/√d_head",
                     "entropy (nats)", "entropy / log n", "mean max prob", "max scaled logit")
WHAT_IF_COLUMNS = ("softmax input", "σ of logits", "entropy (nats)", "entropy / log n", "mean max prob")


def _num(v: float) -> str:
    """A number as the report writers print it (4 significant digits)."""
    return fmt_number(v, 4)


def per_layer_rows(att: AttentionReport) -> list[dict]:
    """Per layer: σ(q·k) and friends, means over heads (min / max over heads where named so)."""
    rows = []
    with np.errstate(all="ignore"):
        for layer in range(int(att.n_layers)):
            rows.append({
                "layer": layer,
                "std": float(np.nanmean(att.std[layer])),
                "std_min": float(np.nanmin(att.std[layer])),
                "std_max": float(np.nanmax(att.std[layer])),
                "std_scaled": float(np.nanmean(att.std_scaled[layer])),
                "ratio": float(np.nanmean(att.ratio[layer])),
                "entropy": float(np.nanmean(att.entropy[layer])),
                "entropy_fraction": float(np.nanmean(att.entropy_fraction[layer])),
                "max_prob": float(np.nanmean(att.max_prob[layer])),
                "max_scaled": float(np.nanmax(att.max_scaled[layer])),
            })
    return rows


def what_if_rows(wi: ScalingWhatIf) -> list[tuple]:
    """(label, logit σ, entropy, entropy fraction, max prob) per softmax input, each an (H,) array."""
    rows = [(f"model (× {_num(wi.model_scaling)})", wi.logit_std_model, wi.entropy_model, wi.entropy_fraction_model,
             wi.max_prob_model),
            ("no scaling (× 1)", wi.logit_std_unscaled, wi.entropy_unscaled, wi.entropy_fraction_unscaled,
             wi.max_prob_unscaled)]
    for k, t in enumerate(wi.temperatures):
        rows.append((f"temperature {_num(float(t))}", wi.logit_std[k], wi.entropy[k], wi.entropy_fraction[k],
                     wi.max_prob[k]))
    return rows


def scale_series(x: tuple, rows: list[dict]) -> tuple:
    """σ/√d_head and σ scaled per layer: one line when the model's scaling is exactly 1/√d_head."""
    ratio = tuple(r["ratio"] for r in rows)
    scaled = tuple(r["std_scaled"] for r in rows)
    if np.allclose(ratio, scaled, rtol=1e-9, atol=0.0, equal_nan=True):
        return (("σ scaled = σ(q·k)/√d_head", x, scaled),)
    return (("σ(q·k)/√d_head", x, ratio), ("σ scaled", x, scaled))


def _grid(a) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in np.asarray(a, dtype=float))


def logits_blocks(att: AttentionReport) -> list:
    L, H = att.n_layers, att.n_heads
    rows_lab = tuple(f"layer {i}" for i in range(L))
    cols_lab = tuple(f"h{j}" for j in range(H))
    rows = per_layer_rows(att)
    x = tuple(r["layer"] for r in rows)
    with np.errstate(all="ignore"):
        mean = lambda a: float(np.nanmean(a)) if np.isfinite(a).any() else None  # noqa: E731
        headline = [Metric("σ scaled (softmax input), mean over layers × heads", mean(att.std_scaled),
                           help="≈ 1 keeps the softmax out of saturation.")]
        if not np.allclose(att.ratio, att.std_scaled, rtol=1e-9, atol=0.0, equal_nan=True):  # not 1/√d_head
            headline.append(Metric("σ(q·k)/√d_head, mean", mean(att.ratio),
                                   help="1 when the entries of q and k have unit variance."))
        headline += [Metric("mean max attention probability", mean(att.max_prob), help="1 = a saturated softmax."),
                     Metric(f"max |Δ {att.fidelity_quantity}|, instrumented vs plain",
                            float(att.fidelity_max_abs_diff))]
    return [
        Note(f"σ of the attention logits q·k over the (query, key) pairs the model attends to; "
             f"d_head = {att.d_head}, √d_head = {att.sqrt_d_head:.4g}. The softmax sees them × "
             f"{_num(float(att.scaling[0]))} (“scaled”). Instrumented vs plain forward: max |Δ "
             f"{att.fidelity_quantity}| = {_num(att.fidelity_max_abs_diff)}."),
        *headline,
        Chart("heatmap", "σ of scaled logits (what the softmax sees)", z=_grid(att.std_scaled), row_labels=rows_lab,
              col_labels=cols_lab),
        Chart("line", "logit scale per layer (mean over heads)", x_title="layer", series=scale_series(x, rows),
              reference=1.0, reference_label="1 (unit-variance q, k)"),
        Chart("heatmap", "softmax entropy / log(n keys) (1 = uniform)", z=_grid(att.entropy_fraction),
              row_labels=rows_lab, col_labels=cols_lab, zmin=0.0, zmax=1.0),
        Chart("heatmap", "mean max attention probability (1 = saturated)", z=_grid(att.max_prob),
              row_labels=rows_lab, col_labels=cols_lab, zmin=0.0, zmax=1.0),
        Table("Attention logits per layer", PER_LAYER_COLUMNS,
              tuple((r["layer"], r["std"], r["std_min"], r["std_max"], r["std_scaled"], r["ratio"], r["entropy"],
                     r["entropy_fraction"], r["max_prob"], r["max_scaled"]) for r in rows),
              note=f"Means over the {H} heads; σ min / max: the smallest and largest head; max scaled logit: the "
                   "largest over heads."),
    ]


def what_if_blocks(wi: ScalingWhatIf) -> list:
    with np.errstate(all="ignore"):
        rows = tuple((label, *(float(np.nanmean(v)) for v in values)) for label, *values in what_if_rows(wi))
    return [Heading(f"What the 1/√d scaling buys (layer {wi.layer})"),
            Table("", WHAT_IF_COLUMNS, rows, note="Means over heads; temperature T divides the model's logits by T.")]


def pattern_blocks(pat: AttentionPattern) -> list:
    labels = tuple(visible(t) for t in pat.tokens)
    return [Heading(f"Attention pattern, layer {pat.layer}, head {pat.head}"),
            Chart("heatmap", f"attention probabilities L{pat.layer} H{pat.head}", x_title="key", y_title="query",
                  z=_grid(np.where(pat.valid, pat.probs, np.nan)), row_labels=labels, col_labels=labels,
                  zmin=0.0, zmax=1.0)]


def attention_blocks(section: AttentionSection) -> list:
    """The section's parts in the report's order: logits, the scaling what-if, the pattern."""
    blocks: list = []
    for value, draw in ((section.logits, logits_blocks), (section.what_if, what_if_blocks),
                        (section.pattern, pattern_blocks)):
        if isinstance(value, Unavailable):
            blocks.append(unavailable_note(value))
        elif value is not None:
            blocks.extend(draw(value))
    return blocks
