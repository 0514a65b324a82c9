"""Report writers, part 2: one self-contained HTML file (inline CSS and SVG, no script, no URL).

One concern that reads better whole: the page's CSS, the per-section writers (each knows the
result dataclasses of its analysis) and `blocks_html`, the generic writer of the declared views
of analyses on the contract. Every string that reaches the page goes through `_h` (escaped).
"""
from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import analysis as _contract
from . import report as _r
from . import svg_charts as svg
from .tokens import guesses, strip_html, visible
from .report_markdown import (_compare_rows, _fmt,
                              _model_fact_rows, _scalar_rows)

if TYPE_CHECKING:  # pragma: no cover
    from .report import Report, Section  # noqa: F401

# --------------------------------------------------------------------------- HTML

_CSS = """
:root{--fg:#1d2330;--muted:#5b6472;--line:#dde1e7;--bg:#ffffff;--soft:#f5f7fa;--accent:#0072B2;--warn:#9a5b00}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{padding:20px 32px;border-bottom:1px solid var(--line);background:var(--soft)}
header h1{margin:0 0 4px;font-size:22px}
header p{margin:2px 0;color:var(--muted)}
nav{padding:8px 32px;border-bottom:1px solid var(--line);position:sticky;top:0;background:var(--bg);z-index:1}
nav a{margin-right:14px;color:var(--accent);text-decoration:none;font-size:14px}
main{padding:8px 32px 32px;max-width:1200px}
section{margin:28px 0;padding-top:4px;border-top:1px solid var(--line)}
h2{font-size:19px;margin:14px 0 8px}
h3{font-size:16px;margin:18px 0 6px}
table{border-collapse:collapse;margin:8px 0 14px;font-size:13px}
th,td{border:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.charts{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
svg.chart{border:1px solid var(--line);border-radius:4px;max-width:100%;height:auto}
pre.text{white-space:pre-wrap;word-break:break-word;background:var(--soft);padding:10px 12px;border-radius:4px;
  max-height:320px;overflow:auto;font:13px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.tokens{line-height:2.1;font:13px/2.1 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.note{color:var(--muted);font-size:13px}
.unavailable{color:var(--warn);background:#fff8ec;border:1px solid #f1ddb8;padding:6px 10px;border-radius:4px}
.failed{color:#8a1c1c;background:#fdf0f0;border:1px solid #efc4c4;padding:6px 10px;border-radius:4px}
.kv td:first-child{color:var(--muted);white-space:nowrap}
footer{padding:16px 32px;color:var(--muted);font-size:12px;border-top:1px solid var(--line)}
"""

# Content-Security-Policy as a meta tag: even a viewer that ignores everything else will not
# load anything from anywhere or run any script from this file.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def _h(s) -> str:
    """Escape text for HTML content or a quoted attribute (shared with the SVG charts)."""
    return svg.escape(s)


def _table(header: list[str], rows: list[list], *, cls: str = "") -> str:
    head = "".join(f"<th>{_h(c)}</th>" for c in header)
    body = []
    for row in rows:
        cells = []
        for c in row:
            numeric = isinstance(c, (int, float, np.integer, np.floating)) and not isinstance(c, bool)
            cells.append(f'<td class="num">{_h(_fmt(c))}</td>' if numeric else f"<td>{_h(_fmt(c))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cls_attr = f' class="{cls}"' if cls else ""
    return f"<table{cls_attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _kv(rows: list[list]) -> str:
    return ('<table class="kv"><tbody>' + "".join(
        f"<tr><td>{_h(k)}</td><td>{_h(_fmt(v))}</td></tr>" for k, v in rows) + "</tbody></table>")


def _unavail_html(what: _r.Unavailable | _r.Section) -> str:
    status = what.status
    cls = "failed" if status == "failed" else "unavailable"
    return f'<p class="{cls}">{_h(str(what))}</p>'


_visible = visible  # a token as a reader can see it (inspector.tokens); report._visible for the tests


def _tokens_html(tokens: list[str], special=None, colors: list[str] | None = None,
                 titles: list[str] | None = None) -> str:
    """A wrapping token strip: the text each token covers, original spaces between (inspector.tokens)."""
    return '<div class="tokens">' + strip_html(tokens, backgrounds=colors, titles=titles or None, special=special,
                                               chips=True) + "</div>"


def _charts(*items: str) -> str:
    return '<div class="charts">' + "".join(i for i in items if i) + "</div>"


def _html_overview(report: _r.Report, sec: _r.Section) -> str:
    o = sec.results.get("overview")
    parts = ["<h3>Model</h3>", _kv(_model_fact_rows(report.model))]
    if report.model_b:
        parts += ["<h3>Model B</h3>", _kv(_model_fact_rows(report.model_b))]
    parts.append("<h3>Text</h3>")
    if o is not None:
        parts.append(f'<p class="note">{o.n_characters:,} characters, {o.n_tokens:,} tokens'
                     + (" — cut to the model's context; the analyses cover these tokens only." if o.truncated
                        else ".") + "</p>")
    parts.append(f'<pre class="text">{_h(report.text)}</pre>')
    if report.text_pair:
        parts += ['<p class="note">Second sentence:</p>', f'<pre class="text">{_h(report.text_pair)}</pre>']
    if o is not None:
        titles = [f"#{i} id {int(t)}" for i, t in enumerate(o.token_ids)]
        parts += ["<h3>Tokens</h3>", _tokens_html(o.tokens, o.special, titles=titles)]
    return "".join(parts)




def _light(hex_color: str, amount: float = 0.55) -> str:
    """Mix a colour with white so dark text on it stays readable."""
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    mix = lambda c: round(c + (255 - c) * amount)  # noqa: E731
    return "#%02x%02x%02x" % (mix(r), mix(g), mix(b))


_VERDICT_STYLE = {"holds": "background:#e3f4e8", "does not hold": "background:#fbe4e4",
                  "not applicable": "background:#f0f0f0;color:#666"}


def _generic_html(obj) -> str:
    """Any result: its scalar fields as a table, 1-D arrays as line charts, small 2-D arrays as heat maps."""
    if obj is None:
        return ""
    if isinstance(obj, _r.Unavailable):
        return _unavail_html(obj)
    if isinstance(obj, (list, tuple)):
        return "".join(_generic_html(x) for x in obj[:20])
    if isinstance(obj, dict):
        return "".join(f"<h3>{_h(k)}</h3>{_generic_html(v)}" for k, v in obj.items())
    if not dataclasses.is_dataclass(obj):
        return f"<p>{_h(_fmt(obj))}</p>"
    parts = []
    rows = _scalar_rows(obj, limit=80)
    if rows:
        parts.append(_kv(rows))
    charts = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, np.ndarray) and v.dtype.kind in "fiu" and v.size > 1:
            if v.ndim == 1 and v.size <= 4096:
                charts.append(svg.line_chart({f.name: (np.arange(v.size), v)}, title=f.name, markers=v.size <= 64))
            elif v.ndim == 2 and v.shape[0] <= 64 and v.shape[1] <= 64:
                charts.append(svg.heatmap(v.astype(float), title=f.name))
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            parts.append(f"<h3>{_h(f.name)}</h3>" + _generic_html(v))
        elif isinstance(v, list) and v and dataclasses.is_dataclass(v[0]):
            parts.append(f"<h3>{_h(f.name)}</h3>" + "".join(_generic_html(x) for x in v[:20]))
    if charts:
        parts.append(_charts(*charts[:12]))
    return "".join(parts)


def _html_compare(report: _r.Report, sec: _r.Section) -> str:
    c = sec.results.get("comparison")
    if c is None or not hasattr(c, "divergence_unavailable_reason"):
        return _generic_html(sec.result)
    parts = [_kv([["A", c.spec_a], ["B", c.spec_b], ["kinds", f"{c.kind_a} / {c.kind_b}"],
                  ["layers × heads", f"{c.n_layers_a} × {c.n_heads_a} / {c.n_layers_b} × {c.n_heads_b}"],
                  ["same tokenizer", "yes" if c.same_tokenizer else f"no: {c.tokenizer_difference}"]])]
    if c.comparable:
        parts.append("<h3>What was compared</h3><ul>" + "".join(f"<li>{_h(x)}</li>" for x in c.comparable) + "</ul>")
    if c.notes:
        parts.append("".join(f'<p class="note">{_h(n)}</p>' for n in c.notes))
    rows = _compare_rows(c)
    if rows:
        parts.append(_table(["quantity", "A", "B"], rows))

    def missing(reason):
        return _unavail_html(_r.Unavailable(reason or "not computed"))

    d = c.divergence
    parts.append("<h3>Predictive distributions</h3>")
    if d is None:
        parts.append(missing(c.divergence_unavailable_reason))
    else:
        labels = [_visible(d.tokens[int(p)]) for p in d.positions]
        x = [int(p) for p in d.positions]
        parts.append(f'<p class="note">{_h(d.objective_label)} Identity H(A,B) = H(A) + KL(A‖B) holds to '
                     f'{_h(_fmt(d.identity_max_abs_residual))} nats.</p>')
        parts.append(_charts(
            svg.line_chart({"loss A": (x, d.loss_a_nats), "loss B": (x, d.loss_b_nats)}, x_label="position",
                           y_label="nats", title="per-token loss of A and B", markers=len(x) <= 80),
            svg.bar_chart(labels, d.js_nats, title="Jensen–Shannon divergence per token", y_label="nats",
                          width=svg.bar_width(len(labels)))))
        parts.append(_table(["position", "token", "JS", "KL(A‖B)", "KL(B‖A)", "loss A", "loss B", "A's top guesses",
                             "B's top guesses"],
                            [[g.position, _visible(g.token), g.js_nats, g.kl_ab_nats, g.kl_ba_nats, g.loss_a_nats,
                              g.loss_b_nats,
                              guesses(g.top_tokens_a, g.top_probs_a), guesses(g.top_tokens_b, g.top_probs_b)]
                             for g in d.disagreements]))
    w = c.words
    parts.append("<h3>Loss per word</h3>")
    if w is None:
        parts.append(missing(c.words_unavailable_reason))
    else:
        shown = min(len(w.words), 150)
        parts.append(_charts(svg.bar_chart(w.words[:shown], w.nll_diff_nats[:shown], width=svg.bar_width(shown),
                                           title="NLL of B − NLL of A per word (positive: B is more surprised)",
                                           y_label="nats")))
        order = [i for i in np.argsort(-np.abs(np.nan_to_num(w.nll_diff_nats)), kind="stable") if w.comparable[i]][:10]
        parts.append(_table(["word", "NLL A", "NLL B", "B − A", "bits/byte A", "bits/byte B"],
                            [[w.words[i], w.nll_a_nats[i], w.nll_b_nats[i], w.nll_diff_nats[i], w.bits_per_byte_a[i],
                              w.bits_per_byte_b[i]] for i in order]))
    dr = c.drift
    parts.append("<h3>Parameter drift</h3>")
    if dr is None:
        parts.append(missing(c.drift_unavailable_reason))
    else:
        layers = list(range(len(dr.layer_rel_change)))
        parts.append(_charts(
            svg.line_chart({"‖ΔΘ‖/‖Θ_A‖": (layers, dr.layer_rel_change)}, x_label="layer",
                           title="relative change per layer"),
            svg.heatmap(dr.layer_component_rel_change, row_labels=[f"layer {i}" for i in layers],
                        col_labels=list(dr.components), title="relative change per layer and component")))
        top = np.argsort(-np.nan_to_num(dr.rel_change, nan=np.inf), kind="stable")[:10]
        parts.append(_table(["parameter", "component", "shape", "‖B−A‖/‖A‖", "cosine", "max |Δ|"],
                            [[dr.names[i], dr.component[i], "×".join(str(n) for n in dr.shapes[i]),
                              dr.rel_change[i], dr.cosine[i], dr.max_abs_delta[i]] for i in top]))
    e = c.embedding_drift
    parts.append("<h3>Embedding drift</h3>")
    if e is None:
        parts.append(missing(c.embedding_drift_unavailable_reason))
    else:
        parts.append(_kv([["mean cosine of rows", e.mean_cosine], ["Spearman ρ (seen tokens)", e.rho_seen],
                          ["p", e.p_seen], ["tokens seen in the text", e.n_seen]]))
        parts.append(_table(["most drifted token", "cosine A vs B"],
                            [[_visible(t), float(v)]
                             for t, v in zip(e.most_drifted_tokens[:10], e.most_drifted_cosine[:10])]))
    a = c.attention
    parts.append("<h3>Attention scale</h3>")
    if a is None:
        parts.append(missing(c.attention_unavailable_reason))
    else:
        rl = [f"layer {i}" for i in range(a.n_layers)]
        cl = [f"h{j}" for j in range(a.n_heads)]
        parts.append(_charts(
            svg.line_chart({"A": (range(a.n_layers), a.layer_std_a), "B": (range(a.n_layers), a.layer_std_b)},
                           x_label="layer", title="σ(q·k) per layer (mean over heads)"),
            svg.heatmap(a.std_scaled_a, row_labels=rl, col_labels=cl, title="σ scaled, A"),
            svg.heatmap(a.std_scaled_b, row_labels=rl, col_labels=cl, title="σ scaled, B"),
            svg.heatmap(a.std_ratio, row_labels=rl, col_labels=cl, title="σ(B) / σ(A)")))
    return "".join(parts)


_HTML_SECTIONS: dict[str, Callable[[_r.Report, _r.Section], str]] = {
    "overview": _html_overview,
    "compare": _html_compare,
}


def _coloured_tokens_html(b: _contract.ColouredTokens) -> str:
    vals = [v for v in b.values if v is not None and np.isfinite(v)]
    vmax = max((abs(v) for v in vals), default=0.0) or 1.0
    scale = "diverging" if b.signed else "viridis"
    colors = ["#ffffff" if v is None or not np.isfinite(v) else
              _light(svg.color_at((v / vmax + 1) / 2 if b.signed else 1 - v / vmax, scale), 0.45) for v in b.values]
    titles = [f"#{i}: " + ("not scored" if v is None or not np.isfinite(v) else f"{_fmt(v)} {b.value_name}")
              for i, v in enumerate(b.values)]
    caption = f'<p class="note">{_h(b.caption)}</p>' if b.caption else ""
    return caption + _tokens_html(list(b.tokens), list(b.special) or None, colors, titles)


def _table_html(b: _contract.Table) -> str:
    head = f"<h3>{_h(b.title)}</h3>" if b.title else ""
    note = f'<p class="note">{_h(b.note)}</p>' if b.note else ""
    if not b.verdict_column or b.verdict_column not in b.columns:
        return head + _table(list(b.columns), [list(r) for r in b.rows]) + note
    col = b.columns.index(b.verdict_column)
    body = []
    for row in b.rows:
        cells = []
        for j, v in enumerate(row):
            style = f' style="{_VERDICT_STYLE[v]}"' if j == col and v in _VERDICT_STYLE else ""
            cells.append(f"<td{style}>{_h(_fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    header = "".join(f"<th>{_h(c)}</th>" for c in b.columns)
    return head + f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(body)}</tbody></table>" + note


def _metric_value(m: _contract.Metric):
    """The value as the writers print it (`_fmt`: 4 significant digits, thousands separators), or as the metric
    asks for other digits."""
    return m.formatted() if m.digits != 4 and isinstance(m.value, float) else m.value


def blocks_html(blocks) -> str:
    """HTML of an analysis view (inspector.analysis blocks), in order: consecutive metrics as one two-column
    table, consecutive charts side by side, headings, tables, coloured tokens, notes."""
    parts: list[str] = []
    metrics: list = []
    charts: list[str] = []

    def flush() -> None:
        if metrics:
            parts.append(_kv([[m.label, _metric_value(m)] for m in metrics]))
            metrics.clear()
        if charts:
            parts.append(_charts(*charts))
            charts.clear()

    for b in blocks:
        if isinstance(b, _contract.Metric):
            if charts:
                flush()
            metrics.append(b)
            continue
        if isinstance(b, _contract.Chart):
            if metrics:
                flush()
            charts.append(svg.chart_svg(b))
            continue
        flush()
        if isinstance(b, _contract.Heading):
            parts.append(f"<h3>{_h(b.text)}</h3>")
        elif isinstance(b, _contract.Note):
            cls = "unavailable" if b.level == "warning" else "note"
            parts.append(f'<p class="{cls}">{_h(b.text)}</p>')
        elif isinstance(b, _contract.Table):
            parts.append(_table_html(b))
        elif isinstance(b, _contract.ColouredTokens):
            parts.append(_coloured_tokens_html(b))
    flush()
    return "".join(parts)


def _section_html(report: _r.Report, name: str, sec: _r.Section) -> str:
    title = _r.SECTION_TITLES.get(name, name)
    head = f'<section id="sec-{_h(name)}"><h2>{_h(title)}</h2>'
    if not sec.available:
        return head + _unavail_html(sec) + "</section>"
    render = _HTML_SECTIONS.get(name)
    if name in _r._CONTRACT:  # written on the contract: its declared view
        def render(report, sec):
            return blocks_html(_r.contract_view(name, sec))
    try:
        body = render(report, sec) if render else _generic_html(sec.result)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
        # A result shape this writer does not know (an analysis module changed): show it generically.
        body = (f'<p class="note">Shown in the generic layout ({_h(type(exc).__name__)}: {_h(exc)}).</p>'
                + _generic_html(sec.result))
    timing = f'<p class="note">Computed in {sec.seconds:.2f} s.</p>'
    return head + body + timing + "</section>"


def to_html(report: _r.Report) -> str:
    """One self-contained HTML file: inline CSS, SVG charts, tables; no script and no external URL."""
    model = report.model
    prov = model.get("provenance") or {}
    nav = "".join(f'<a href="#sec-{_h(n)}">{_h(_r.SECTION_TITLES.get(n, n))}</a>' for n in report.sections)
    nav += '<a href="#sec-settings">Settings and versions</a>'
    subtitle = (f"{_h(model.get('architecture'))} · {_h(model.get('kind_label') or model.get('kind'))} · "
                f"{_h(model.get('dtype'))} on {_h(model.get('device'))}")
    if report.model_b:
        subtitle += f" — vs {_h(report.model_b.get('spec'))} ({_h(report.model_b.get('architecture'))})"
    body = "".join(_section_html(report, n, s) for n, s in report.sections.items())
    settings_rows = [[k, json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v]
                     for k, v in report.settings.items()]
    prov_rows = [["spec", prov.get("spec")], ["source", prov.get("source")],
                 ["resolved path", prov.get("resolved_path") or "–"], ["revision", prov.get("revision") or "–"],
                 ["commit / weights hash", prov.get("commit_hash") or "–"]]
    timing_rows = [[_r.SECTION_TITLES.get(n, n), str(s) if not s.available else "ok", s.seconds]
                   for n, s in report.sections.items()]
    tail = (f'<section id="sec-settings"><h2>Provenance, settings and versions</h2>'
            f"<h3>Provenance</h3>{_kv(prov_rows)}"
            + (f"<h3>Provenance of model B</h3>{_kv(list((report.model_b.get('provenance') or {}).items()))}"
               if report.model_b else "")
            + f"<h3>Settings</h3>{_kv(settings_rows)}"
            f"<h3>Versions</h3>{_kv([[k, v or '–'] for k, v in report.versions.items()])}"
            f"<h3>Timings</h3>{_table(['section', 'status', 'seconds'], timing_rows)}</section>")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="generator" content="inspector">'
        f"<title>inspector report: {_h(report.title)}</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<header><h1>inspector report: {_h(report.title)}</h1><p>{subtitle}</p>"
        f"<p>Generated {_h(report.created_utc)} (UTC) in {report.seconds:.1f} s · inspector "
        f"{_h(report.versions.get('inspector'))} · schema {report.schema_version}</p></header>"
        f"<nav>{nav}</nav><main>{body}{tail}</main>"
        "<footer>Self-contained report: no scripts, nothing loaded from the network. "
        "The same numbers are in the JSON report.</footer>"
        "</body></html>\n"
    )

