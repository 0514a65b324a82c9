"""Report writers, part 1: the summaries shared by every writer and the Markdown report.

`summary(report)` gives the derived figures (also stored in the JSON); `to_markdown` the summary
tables for a README or an issue; `blocks_markdown` / `blocks_text` render the view of an analysis
written on the contract (inspector.analysis). Nothing here computes: it formats a built `Report`.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from . import analysis as _contract
from . import report as _r
from . import svg_charts as svg
from .perplexity import label as ppl_label
from .perplexity import value as ppl_value

if TYPE_CHECKING:  # pragma: no cover
    from .report import Report, Section  # noqa: F401

# --------------------------------------------------------------------------- summaries shared by writers


def _perplexity(report: _r.Report) -> float | None:
    sec = report.sections.get("loss")
    if sec is None or not sec.available:
        return None
    res = sec.results.get("loss")
    value = getattr(res, "perplexity", None)
    return float(value) if value is not None else None


def _attention_rows(att) -> list[dict]:
    """Per layer: σ(q·k) and friends, averaged over heads (min–max over heads where useful)."""
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


def _claims_rows(claims) -> list[dict]:
    """Rows of the claims table, whatever its container (dataclass with .claims / .rows, or a list)."""
    if claims is None:
        return []
    items = None
    for attr in ("claims", "rows", "items"):
        if hasattr(claims, attr) and isinstance(getattr(claims, attr), (list, tuple)):
            items = getattr(claims, attr)
            break
    if items is None:
        items = claims if isinstance(claims, (list, tuple)) else [claims]
    rows = []
    for item in items:
        if dataclasses.is_dataclass(item):
            rows.append({f.name: getattr(item, f.name) for f in dataclasses.fields(item)})
        elif isinstance(item, dict):
            rows.append(dict(item))
    return rows


_CLAIM_COLUMNS = ("seed", "key", "id", "claim", "source", "expected", "measured", "threshold", "verdict", "status",
                  "holds", "detail", "evidence", "note")


def _claim_columns(rows: list[dict]) -> list[str]:
    """Scalar columns of the claims table: known ones first, in a readable order."""
    scalar = lambda v: v is None or isinstance(v, (str, int, float, bool, np.generic))  # noqa: E731
    present = [k for k in rows[0] if all(scalar(r.get(k)) for r in rows)] if rows else []
    ordered = [c for c in _CLAIM_COLUMNS if c in present]
    return [c for c in ordered + [c for c in present if c not in ordered] if c not in _CLAIM_HIDDEN]


# Internal identifiers (article numbers, keys) stay in the JSON; tables say the claim itself.
_CLAIM_HIDDEN = frozenset({"seed", "key", "id"})
_COLUMN_NAMES = {"claim": "claim", "measured": "measured on this model", "threshold": "rule for the verdict",
                 "verdict": "verdict", "note": "note", "source": "source", "expected": "expected"}


def column_name(key: str) -> str:
    """A readable table heading for a result field ('mean_ce_nats' -> 'mean ce nats')."""
    return _COLUMN_NAMES.get(key, key.replace("_", " "))


def _fmt(v, digits: int = 4) -> str:
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return "–" if v is None else str(v)
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    return svg.fmt_number(v, digits)


def summary(report: _r.Report) -> dict:
    """The figures the HTML and Markdown derive from the results (means over heads, tables, ...).

    Written into the JSON beside the full results, so a script reading the JSON finds every
    number the HTML shows without recomputing it.
    """
    out: dict[str, Any] = {"perplexity": _perplexity(report)}
    for name, sec in report.sections.items():
        if not sec.available:
            continue
        r = sec.results
        if name == "attention" and dataclasses.is_dataclass(r.get("logits")):
            out["attention_per_layer"] = _attention_rows(r["logits"])
        if name == "attention" and dataclasses.is_dataclass(r.get("what_if")):
            wi = r["what_if"]
            out["attention_what_if"] = {
                "layer": wi.layer,
                "rows": [{"softmax_input": label, "logit_std": float(np.nanmean(a)), "entropy": float(np.nanmean(b)),
                          "entropy_fraction": float(np.nanmean(c)), "max_prob": float(np.nanmean(d))}
                         for label, a, b, c, d in _what_if_rows(wi)]}
        if name == "layernorm" and dataclasses.is_dataclass(r.get("params")):
            out["layernorm_table"] = r["params"].table()
        if name == "loss" and hasattr(r.get("loss"), "mean_ce_nats"):
            res = r["loss"]
            out["loss"] = {"perplexity": res.perplexity, "mean_ce_nats": res.mean_ce_nats,
                           "mean_ce_bits": res.mean_ce_bits, "n_scored": res.n_scored,
                           "top1_accuracy": float(np.mean(res.rank == 1)) if res.n_scored else None}
        elif name == "loss" and hasattr(r.get("loss"), "n_chosen"):
            res = r["loss"]
            out["loss"] = {"perplexity": res.perplexity, "loss": res.loss, "accuracy": res.accuracy,
                           "n_chosen": res.n_chosen}
        if name == "attribution" and dataclasses.is_dataclass(r.get("attribution")):
            out["attribution_relative_delta"] = r["attribution"].relative_delta
        if name == "foundations":
            out["claims"] = _claims_rows(r.get("claims"))
        if name == "compare" and hasattr(r.get("comparison"), "divergence_unavailable_reason"):
            out["comparison"] = [{"quantity": q, "a": va, "b": vb} for q, va, vb in _compare_rows(r["comparison"])]
    return out


def _what_if_rows(wi):
    """(label, logit σ, entropy, entropy fraction, max prob) per softmax input, each an (H,) array."""
    rows = [(f"model (× {_fmt(wi.model_scaling)})", wi.logit_std_model, wi.entropy_model, wi.entropy_fraction_model,
             wi.max_prob_model),
            ("no scaling (× 1)", wi.logit_std_unscaled, wi.entropy_unscaled, wi.entropy_fraction_unscaled,
             wi.max_prob_unscaled)]
    for k, t in enumerate(wi.temperatures):
        rows.append((f"temperature {_fmt(float(t))}", wi.logit_std[k], wi.entropy[k], wi.entropy_fraction[k],
                     wi.max_prob[k]))
    return rows


# --------------------------------------------------------------------------- Markdown


def _md_cell(v) -> str:
    s = v if isinstance(v, str) else _fmt(v)
    s = s.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    return s.replace("<", "&lt;").replace(">", "&gt;").replace("`", "\\`")


def _md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _md_fence(text: str) -> str:
    longest = max((len(run) for run in text.split("\n") for run in _backtick_runs(run)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _backtick_runs(line: str) -> list[str]:
    runs, cur = [], ""
    for ch in line:
        if ch == "`":
            cur += ch
        elif cur:
            runs.append(cur)
            cur = ""
    return runs + ([cur] if cur else [])


def _model_fact_rows(model: dict) -> list[list]:
    prov = model.get("provenance") or {}
    rows = [
        ["spec", model.get("spec")], ["architecture", model.get("architecture")],
        ["kind", model.get("kind_label") or model.get("kind")],
        ["layers × heads", f"{model.get('n_layers')} × {model.get('n_heads')}"],
        ["d_model / d_head", f"{model.get('d_model')} / {model.get('d_head')}"],
        ["vocabulary", model.get("vocab_size")], ["context (positions)", model.get("max_positions")],
        ["parameters", model.get("n_parameters")], ["dtype", model.get("dtype")], ["device", model.get("device")],
        ["source", prov.get("source")], ["revision", prov.get("revision") or "–"],
        ["commit / weights hash", prov.get("commit_hash") or "–"],
    ]
    return rows


def to_markdown(report: _r.Report) -> str:
    """Summary tables for a README or an issue: model, perplexity, attention σ, LayerNorm, claims."""
    out = [f"# inspector report: {_md_cell(report.title)}", "",
           f"Generated {report.created_utc} (UTC) by inspector {_md_cell(report.versions.get('inspector'))}; "
           f"torch {report.versions.get('torch')}, transformers {report.versions.get('transformers')}.", ""]
    out += ["## Model", "", _md_table(["fact", "value"], _model_fact_rows(report.model)), ""]
    if report.model_b:
        out += ["## Model B", "", _md_table(["fact", "value"], _model_fact_rows(report.model_b)), ""]

    ov = report.sections.get("overview")
    out += ["## Text", ""]
    if ov is not None and ov.available:
        o = ov.results["overview"]
        out += [f"{o.n_characters:,} characters, {o.n_tokens:,} tokens"
                + (" (cut to the model's context)." if o.truncated else "."), ""]
    excerpt = report.text if len(report.text) <= 600 else report.text[:600] + " …"
    out += [_md_fence(excerpt), ""]

    loss_sec = report.sections.get("loss")
    if loss_sec is not None and "loss" not in _r._CONTRACT:  # else: its declared view, below
        out += ["## Loss and perplexity", ""]
        ppl = _perplexity(report)
        if ppl is not None:
            res = loss_sec.results["loss"]
            if hasattr(res, "mean_ce_nats"):
                rows = [[ppl_label(res), ppl_value(ppl)], ["mean loss (nats/token)", f"{res.mean_ce_nats:.6g}"],
                        ["bits per token", f"{res.mean_ce_bits:.6g}"], ["scored tokens", res.n_scored]]
            else:
                rows = [[ppl_label(res), ppl_value(ppl)], ["MLM loss (nats)", f"{res.loss:.6g}"],
                        ["accuracy on masked positions", f"{res.accuracy:.4g}"],
                        ["masked positions", f"{res.n_chosen} of {res.n_candidates} (seed {res.seed})"]]
                pll = loss_sec.get("pll")
                if pll is not None:
                    rows.append([ppl_label(pll), ppl_value(pll.pseudo_perplexity)])
            out += [_md_table(["quantity", "value"], rows), ""]
        else:
            out += [f"_{_md_cell(str(loss_sec))}_", ""]

    att_sec = report.sections.get("attention")
    if att_sec is not None and "attention" not in _r._CONTRACT:  # else: its declared view, below
        out += ["## Attention logits per layer", ""]
        att = att_sec.get("logits") if att_sec.available else None
        if att is not None:
            out += [f"σ of q·k over attended pairs, mean over {att.n_heads} heads; d_head = {att.d_head}, "
                    f"√d_head = {att.sqrt_d_head:.4g}. Scaled = what the softmax sees (× {att.scaling[0]:.4g}).", ""]
            rows = [[r["layer"], _fmt(r["std"]), f"{_fmt(r['std_min'])}–{_fmt(r['std_max'])}", _fmt(r["std_scaled"]),
                     _fmt(r["ratio"]), _fmt(r["entropy"]), _fmt(r["entropy_fraction"]), _fmt(r["max_prob"])]
                    for r in _attention_rows(att)]
            out += [_md_table(["layer", "σ(q·k)", "σ range over heads", "σ scaled", "σ/√d_head",
                               "entropy (nats)",
                               "entropy / log n", "mean max prob"], rows), ""]
        else:
            out += [f"_{_md_cell(str(att_sec if not att_sec.available else att_sec.results.get('logits')))}_", ""]

    ln_sec = report.sections.get("layernorm")
    if ln_sec is not None and "layernorm" not in _r._CONTRACT:  # else: its declared view, below
        out += ["## LayerNorm summary", ""]
        ln = ln_sec.get("params") if ln_sec.available else None
        if ln is not None:
            lo, hi = ln.gamma_band
            rows = []
            for r in ln.table():
                rows.append([r["name"], r["role"], r["size"], _fmt(r["gamma_mean"]), _fmt(r["gamma_std"]),
                             _fmt(r["gamma_median"]), _fmt(r["gamma_frac_in_band"], 3), _fmt(r["beta_mean"]),
                             _fmt(r["beta_std"]), _fmt(r["beta_frac_near_zero"], 3)])
            pg, pb = ln.pooled_gamma, ln.pooled_beta
            rows.append(["**all layers**", "", pg.n, _fmt(pg.mean), _fmt(pg.std), _fmt(float(pg.quantiles[3])),
                         _fmt(pg.frac_in_band, 3), _fmt(pb.mean if pb else None), _fmt(pb.std if pb else None),
                         _fmt(pb.frac_near_zero if pb else None, 3)])
            out += [_md_table(["layer", "role", "d", "γ mean", "γ std", "γ median", f"γ in [{lo:g}, {hi:g}]",
                               "β mean", "β std", f"|β| < {ln.beta_tol:g}"], rows), ""]
        else:
            out += [f"_{_md_cell(str(ln_sec))}_", ""]

    f_sec = report.sections.get("foundations")
    if f_sec is not None and "foundations" not in _r._CONTRACT:  # else: its declared view, below
        out += ["## Claims", ""]
        rows = _claims_rows(f_sec.get("claims")) if f_sec.available else []
        if rows:
            cols = _claim_columns(rows)
            out += [_md_table([column_name(c) for c in cols], [[r.get(c) for c in cols] for r in rows]), ""]
        else:
            out += [f"_{_md_cell(str(f_sec))}_", ""]

    cmp_sec = report.sections.get("compare")
    if cmp_sec is not None:
        out += ["## Comparison", ""]
        c = cmp_sec.get("comparison") if cmp_sec.available else None
        if c is not None and hasattr(c, "divergence_unavailable_reason"):
            out += [f"A = `{_md_cell(c.spec_a)}`, B = `{_md_cell(c.spec_b)}`.", ""]
            out += [_md_table(["quantity", "A", "B"], _compare_rows(c)), ""]
            for label, reason in (("distributions", c.divergence_unavailable_reason),
                                  ("loss per word", c.words_unavailable_reason),
                                  ("parameter drift", c.drift_unavailable_reason),
                                  ("embedding drift", c.embedding_drift_unavailable_reason),
                                  ("attention", c.attention_unavailable_reason)):
                if reason:
                    out.append(f"- {label}: {_md_cell(reason)}")
            out.append("")
        elif cmp_sec.available:
            out += [_md_table(["quantity", "value"], _scalar_rows(cmp_sec.result, limit=40)), ""]
        else:
            out += [f"_{_md_cell(str(cmp_sec))}_", ""]

    for name, sec in report.sections.items():
        if name in _r._CONTRACT and sec.available:
            out += [f"## {_md_cell(_r.SECTION_TITLES.get(name, name))}", "", blocks_markdown(_r.contract_view(name, sec))]

    missing = [(n, s) for n, s in report.sections.items() if not s.available]
    if missing:
        out += ["## Sections not included", ""] + [f"- {_r.SECTION_TITLES.get(n, n)}: {_md_cell(str(s))}"
                                                   for n, s in missing] + [""]
    out += ["## Versions", "", _md_table(["package", "version"], [[k, v or "–"] for k, v in report.versions.items()]),
            ""]
    return "\n".join(out)


def _scalar_rows(obj, prefix: str = "", limit: int = 60) -> list[list]:
    """(name, value) of every scalar field of a dataclass (nested dataclasses flattened with dots)."""
    rows: list[list] = []
    if isinstance(obj, dict):
        items = obj.items()
    elif dataclasses.is_dataclass(obj):
        items = ((f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj))
    else:
        return rows
    for name, v in items:
        key = f"{prefix}{name}"
        if isinstance(v, (str, bool, int, float, np.generic)) or v is None:
            rows.append([key, v])
        elif isinstance(v, np.ndarray) and v.size == 1:
            rows.append([key, v.reshape(-1)[0].item()])
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            rows += _scalar_rows(v, key + ".", limit)
        if len(rows) >= limit:
            break
    return rows[:limit]


def _compare_rows(c) -> list[list]:
    """Headline figures of a ComparisonReport as (quantity, A, B) rows (shared by HTML, Markdown, JSON)."""
    rows: list[list] = []
    d = c.divergence
    if d is not None:
        rows += [[ppl_label(d), d.perplexity_a, d.perplexity_b],
                 ["mean loss (nats/token)", d.mean_loss_a_nats, d.mean_loss_b_nats],
                 ["mean KL(A‖B) / KL(B‖A) (nats)", d.mean_kl_ab_nats, d.mean_kl_ba_nats],
                 ["mean Jensen–Shannon (nats)", d.mean_js_nats, None]]
    w = c.words
    if w is not None:
        rows += [["bits per byte", w.bits_per_byte_total_a, w.bits_per_byte_total_b],
                 ["total NLL (nats)", w.total_nll_a_nats, w.total_nll_b_nats]]
    a = c.attention
    if a is not None:
        rows += [[f"σ(q·k) layer {i} (mean over heads)", float(x), float(y)]
                 for i, (x, y) in enumerate(zip(a.layer_std_a, a.layer_std_b))]
    dr = c.drift
    if dr is not None:
        rows += [["parameter drift ‖B−A‖/‖A‖ (all)", dr.total_rel_change, None],
                 ["cosine of all parameters", dr.total_cosine, None],
                 ["tensors changed / compared", f"{dr.n_changed} / {len(dr.names)}", None]]
    e = c.embedding_drift
    if e is not None:
        rows += [["mean cosine of embedding rows A vs B", e.mean_cosine, None],
                 ["Spearman ρ(drift, frequency in text)", e.rho_seen, None]]
    return rows


def blocks_markdown(blocks) -> str:
    """Markdown of an analysis view, in order: consecutive metrics as one table, headings, tables, notes
    (charts are named; their numbers are in the JSON)."""
    out: list[str] = []
    metrics: list = []

    def flush() -> None:
        if metrics:
            out.extend([_md_table(["quantity", "value"], [[m.label, m.formatted() if m.digits != 4 else m.value]
                                                          for m in metrics]), ""])
            metrics.clear()

    for b in blocks:
        if isinstance(b, _contract.Metric):
            metrics.append(b)
            continue
        flush()
        if isinstance(b, _contract.Heading):
            out += [f"### {_md_cell(b.text)}", ""]
        elif isinstance(b, _contract.Table):
            if b.title:
                out += [f"### {_md_cell(b.title)}", ""]
            out += [_md_table(list(b.columns), [list(r) for r in b.rows]), ""]
            if b.note:
                out += [_md_cell(b.note), ""]
        elif isinstance(b, _contract.Note):
            out += [("_" + _md_cell(b.text) + "_") if b.level == "warning" else _md_cell(b.text), ""]
        elif isinstance(b, _contract.Chart):
            out += [f"Chart in the HTML report: {_md_cell(b.title)}.", ""]
    flush()
    return "\n".join(out)


def _first_metrics(blocks) -> list:
    """The view's first group of consecutive metrics (its headline figures)."""
    out: list = []
    for b in blocks:
        if isinstance(b, _contract.Metric):
            out.append(b)
        elif out:
            break
    return out


def blocks_text(report: _r.Report) -> list[str]:
    """One terminal line per analysis on the contract: its title and headline metrics (the CLI prints them)."""
    lines = []
    for name, sec in report.sections.items():
        if name in _r._CONTRACT and sec.available:
            metrics = _first_metrics(_r.contract_view(name, sec))
            lines.append(f"{_r.SECTION_TITLES.get(name, name)}: " + "; ".join(f"{m.label} {m.formatted()}" for m in metrics))
    return lines

