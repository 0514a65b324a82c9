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
        if name == "attention":  # imported here: a writer works on an installation without that analysis
            from .analyses.attention_view import per_layer_rows, what_if_rows
        if name == "attention" and dataclasses.is_dataclass(r.get("logits")):
            out["attention_per_layer"] = per_layer_rows(r["logits"])
        if name == "attention" and dataclasses.is_dataclass(r.get("what_if")):
            wi = r["what_if"]
            out["attention_what_if"] = {
                "layer": wi.layer,
                "rows": [{"softmax_input": label, "logit_std": float(np.nanmean(a)), "entropy": float(np.nanmean(b)),
                          "entropy_fraction": float(np.nanmean(c)), "max_prob": float(np.nanmean(d))}
                         for label, a, b, c, d in what_if_rows(wi)]}
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
            from .analyses.foundations import claim_rows

            out["claims"] = claim_rows(r.get("claims"))
        if name == "compare" and hasattr(r.get("comparison"), "divergence_unavailable_reason"):
            out["comparison"] = [{"quantity": q, "a": va, "b": vb} for q, va, vb in _compare_rows(r["comparison"])]
    return out


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
            if metrics:
                lines.append(f"{_r.SECTION_TITLES.get(name, name)}: "
                             + "; ".join(f"{m.label} {m.formatted()}" for m in metrics))
    return lines

