"""Report writers, part 2: one self-contained HTML file (inline CSS and SVG, no script, no URL).

One concern that reads better whole: the page's CSS, the per-section writers (each knows the
result dataclasses of its analysis) and `blocks_html`, the generic writer of the declared views
of analyses on the contract. Every string that reaches the page goes through `_h` (escaped).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from . import analysis as _contract
from . import report as _r
from . import svg_charts as svg
from .perplexity import label as ppl_label
from .perplexity import value as ppl_value
from .tokens import strip_html
from .report_markdown import column_name  # noqa: E402
from .report_markdown import (_attention_rows, _claim_columns, _claims_rows, _compare_rows, _fmt,  # noqa: F401
                              _model_fact_rows, _perplexity, _scalar_rows, _what_if_rows, summary)

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


_INVISIBLE = {"\n": "⏎", "\r": "␍", "\t": "⇥"}


def _visible(token: str) -> str:
    """A token as a reader can see it: newlines and tabs as symbols, a blank token's spaces as ␣."""
    s = "".join(_INVISIBLE.get(ch, ch) for ch in str(token))
    return s.replace(" ", "␣") if s.strip() == "" else s


def _vis(tokens) -> list[str]:
    return [_visible(t) for t in tokens]


def _guesses(tokens, probs) -> str:
    """A model's top predictions as 'token (p), ...'."""
    return ", ".join(f"{_visible(t)} ({float(p):.2f})" for t, p in zip(tokens, probs))


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


def _html_layernorm(report: _r.Report, sec: _r.Section) -> str:
    parts = []
    ln = sec.results.get("params")
    if isinstance(ln, _r.Unavailable):
        parts.append(_unavail_html(ln))
    elif ln is not None:
        lo, hi = ln.gamma_band
        pg, pb = ln.pooled_gamma, ln.pooled_beta
        parts.append(f'<p>{len(ln.layers)} normalisation layers. Over all of them: γ mean {_h(_fmt(pg.mean))}, '
                     f'median {_h(_fmt(float(pg.quantiles[3])))}; {pg.frac_in_band:.1%} of γ lie in '
                     f'[{lo:g}, {hi:g}]' + (f"; {pb.frac_near_zero:.1%} of β have |β| &lt; {ln.beta_tol:g}"
                                            if pb else "; no β (RMSNorm: a gain γ only, no bias)") + ".</p>")
        names = _short_names([layer.name for layer in ln.layers])
        charts = [svg.histogram(pg.hist_counts, pg.hist_edges, log_y=True, title="γ over all layers",
                                x_label="γ", markers={"band lo": lo, "band hi": hi})]
        if pb is not None:
            charts.append(svg.histogram(pb.hist_counts, pb.hist_edges, log_y=True, title="β over all layers",
                                        x_label="β", markers={"0": 0.0}))
        charts.append(svg.bar_chart(names, [layer.gamma_stats.quantiles[3] for layer in ln.layers],
                                    title="median γ per layer", y_label="γ"))
        charts.append(svg.heatmap(np.stack([layer.gamma_stats.hist_counts for layer in ln.layers]).astype(float),
                                  row_labels=names, col_labels=[svg.fmt_number(e) for e in pg.hist_edges[:-1]],
                                  title="γ histogram per layer (count)", x_label="γ bin (left edge)"))
        parts.append(_charts(*charts))
        rows = [[r["name"], r["role"], r["kind"], r["size"], r["gamma_mean"], r["gamma_std"], r["gamma_min"],
                 r["gamma_max"], r["gamma_median"], r["gamma_frac_in_band"], r["beta_mean"], r["beta_std"],
                 r["beta_frac_near_zero"]] for r in ln.table()]
        parts.append(_table(["layer", "role", "kind", "d", "γ mean", "γ std", "γ min", "γ max", "γ median",
                             f"γ in [{lo:g}, {hi:g}]", "β mean", "β std", f"|β| < {ln.beta_tol:g}"], rows))
    acts = sec.results.get("activations")
    if isinstance(acts, _r.Unavailable):
        parts.append(_unavail_html(acts))
    elif acts:
        parts.append("<h3>What the norm layers do to this text</h3>")
        x = list(range(len(acts)))
        parts.append(_charts(svg.line_chart(
            {"input std": (x, [a.input_std for a in acts]), "output std": (x, [a.output_std for a in acts])},
            title="activation std before and after each norm layer", x_label="norm layer (registration order)",
            log_y=True)))
        parts.append(_table(["layer", "role", "tokens", "input mean", "input std", "output mean", "output std"],
                            [[a.name, a.role, a.n_tokens, a.input_mean, a.input_std, a.output_mean, a.output_std]
                             for a in acts]))
    return "".join(parts)


def _scale_series(x: list[int], rows: list[dict]) -> dict:
    """σ/√d_head and σ scaled per layer: one line when the model's scaling is exactly 1/√d_head."""
    ratio = [r["ratio"] for r in rows]
    scaled = [r["std_scaled"] for r in rows]
    if np.allclose(ratio, scaled, rtol=1e-9, atol=0.0, equal_nan=True):
        return {"σ scaled = σ(q·k)/√d_head": (x, scaled)}
    return {"σ(q·k)/√d_head": (x, ratio), "σ scaled": (x, scaled)}


def _short_names(names: list[str]) -> list[str]:
    """Module paths without the dotted prefix they all share (transformer.h.0.ln_1 -> h.0.ln_1)."""
    parts = [n.split(".") for n in names]
    common = 0
    while parts and all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    return [".".join(p[common:]) for p in parts]


def _html_attention(report: _r.Report, sec: _r.Section) -> str:
    parts = []
    att = sec.results.get("logits")
    if isinstance(att, _r.Unavailable):
        parts.append(_unavail_html(att))
    elif att is not None:
        L, H = att.n_layers, att.n_heads
        rows_lab = [f"layer {i}" for i in range(L)]
        cols_lab = [f"h{j}" for j in range(H)]
        parts.append(f"<p>σ of the attention logits q·k over the (query, key) pairs the model attends to; "
                     f"d_head = {att.d_head}, √d_head = {att.sqrt_d_head:.4g}. The softmax sees them × "
                     f"{_h(_fmt(float(att.scaling[0])))} (“scaled”). Instrumented vs plain forward: max |Δ "
                     f"{_h(att.fidelity_quantity)}| = {_h(_fmt(att.fidelity_max_abs_diff))}.</p>")
        rows = _attention_rows(att)
        x = [r["layer"] for r in rows]
        parts.append(_charts(
            svg.heatmap(att.std_scaled, row_labels=rows_lab, col_labels=cols_lab,
                        title="σ of scaled logits (what the softmax sees)"),
            svg.line_chart(_scale_series(x, rows),
                           title="logit scale per layer (mean over heads)", x_label="layer", reference=1.0,
                           reference_label="1 (unit-variance q, k)"),
            svg.heatmap(att.entropy_fraction, row_labels=rows_lab, col_labels=cols_lab, vmin=0.0, vmax=1.0,
                        title="softmax entropy / log(n keys) (1 = uniform)"),
            svg.heatmap(att.max_prob, row_labels=rows_lab, col_labels=cols_lab, vmin=0.0, vmax=1.0,
                        title="mean max attention probability (1 = saturated)"),
        ))
        parts.append(_table(["layer", "σ(q·k)", "σ min (head)", "σ max (head)", "σ scaled", "σ/√d_head",
                             "entropy (nats)", "entropy / log n", "mean max prob", "max scaled logit"],
                            [[r["layer"], r["std"], r["std_min"], r["std_max"], r["std_scaled"], r["ratio"],
                              r["entropy"], r["entropy_fraction"], r["max_prob"], r["max_scaled"]] for r in rows]))
    wi = sec.results.get("what_if")
    if isinstance(wi, _r.Unavailable):
        parts.append(_unavail_html(wi))
    elif wi is not None:
        parts.append(f"<h3>What the 1/√d scaling buys (layer {wi.layer})</h3>")
        rows = [[label, *(float(np.nanmean(v)) for v in values)] for label, *values in _what_if_rows(wi)]
        parts.append(_table(["softmax input", "σ of logits", "entropy (nats)", "entropy / log n", "mean max prob"],
                            rows))
        parts.append('<p class="note">Means over heads; temperature T divides the model\'s logits by T.</p>')
    pat = sec.results.get("pattern")
    if isinstance(pat, _r.Unavailable):
        parts.append(_unavail_html(pat))
    elif pat is not None:
        parts.append(f"<h3>Attention pattern, layer {pat.layer}, head {pat.head}</h3>")
        parts.append(_charts(svg.heatmap(np.where(pat.valid, pat.probs, np.nan), row_labels=_vis(pat.tokens),
                                         col_labels=_vis(pat.tokens), vmin=0.0, vmax=1.0, x_label="key",
                                         y_label="query", title=f"attention probabilities L{pat.layer} H{pat.head}")))
    return "".join(parts)


def _loss_colors(tokens: list[str], positions, ce) -> tuple[list[str], list[str]]:
    """Background colour and hover text per token: darker = higher loss; unscored tokens white."""
    fin = np.asarray(ce, dtype=float)
    fin = fin[np.isfinite(fin)]
    hi = float(fin.max()) if fin.size else 1.0
    colors, titles = ["#ffffff"] * len(tokens), [f"#{i}: not scored" for i in range(len(tokens))]
    for p, v in zip(positions, ce):
        p = int(p)
        if 0 <= p < len(tokens) and np.isfinite(v):
            colors[p] = _light(svg.color_at(1 - float(v) / hi if hi > 0 else 1.0, "viridis"), 0.45)
            titles[p] = f"#{p}: {_fmt(float(v))} nats"
    return colors, titles


def _html_loss(report: _r.Report, sec: _r.Section) -> str:
    res = sec.results.get("loss")
    parts = []
    if res is not None and hasattr(res, "mean_ce_nats"):  # causal LM
        parts.append(_kv([[ppl_label(res), ppl_value(res.perplexity)], ["mean loss (nats/token)", res.mean_ce_nats],
                          ["bits per token", res.mean_ce_bits], ["scored tokens", res.n_scored],
                          ["window / stride / windows", f"{res.window} / {res.stride} / {res.n_windows}"],
                          ["top-1 accuracy", float(np.mean(res.rank == 1)) if res.n_scored else None]]))
        labels = [_visible(res.tokens[int(p)]) for p in res.positions]
        parts.append(_charts(
            svg.bar_chart(labels, res.ce_nats, title="loss of each predicted token", y_label="nats",
                          width=_bar_width(len(labels)), reference=res.mean_ce_nats,
                          reference_label="mean"),
            svg.histogram_from_values(res.ce_nats, bins=30, title="distribution of per-token loss", x_label="nats",
                                      markers={"mean": res.mean_ce_nats})))
        colors, titles = _loss_colors(res.tokens, res.positions, res.ce_nats)
        parts.append('<p class="note">Tokens coloured by their loss (darker = more surprising):</p>')
        parts.append(_tokens_html(res.tokens, colors=colors, titles=titles))
        worst = np.argsort(-res.ce_nats, kind="stable")[:10]
        parts.append("<h3>Most surprising tokens</h3>")
        parts.append(_table(["position", "token", "loss (nats)", "P(token)", "rank", "model's top guesses"],
                            [[int(res.positions[i]), _visible(res.tokens[int(res.positions[i])]), float(res.ce_nats[i]),
                              float(res.prob[i]), int(res.rank[i]),
                              _guesses(res.top_tokens[i], res.top_probs[i])]
                             for i in worst]))
    elif res is not None and hasattr(res, "n_chosen"):  # masked LM
        parts.append(_kv([[ppl_label(res), ppl_value(res.perplexity)], ["MLM loss (nats)", res.loss],
                          ["accuracy on chosen positions", res.accuracy],
                          ["chosen / content tokens", f"{res.n_chosen} / {res.n_candidates}"],
                          ["[MASK] / random / unchanged", f"{res.n_mask} / {res.n_random} / {res.n_unchanged}"],
                          ["seed, mask probability", f"{res.seed}, {res.mask_prob:g}"], ["chunks", res.n_chunks]]))
        kinds = {0: "[MASK]", 1: "random", 2: "unchanged"}
        parts.append(_table(["position", "original", "model saw", "replacement", "loss (nats)", "P(original)", "rank",
                             "top guesses"],
                            [[int(p), _visible(res.tokens[int(p)]), _visible(res.replacement_tokens[i]),
                              kinds.get(int(k), str(k)),
                              float(res.ce_nats[i]), float(res.prob[i]), int(res.rank[i]),
                              _guesses(res.top_tokens[i], res.top_probs[i])]
                             for i, (p, k) in enumerate(zip(res.positions, res.replacement_kind))]))
    elif res is not None:
        parts.append(_generic_html(res))
    pll = sec.results.get("pll")
    if isinstance(pll, _r.Unavailable):
        parts.append(_unavail_html(pll))
    elif pll is not None:
        parts.append("<h3>Pseudo-log-likelihood (each token masked in turn)</h3>")
        parts.append(_kv([[ppl_label(pll), ppl_value(pll.pseudo_perplexity)], ["PLL (nats)", pll.pll],
                          ["tokens", pll.n_tokens]]))
        colors, titles = _loss_colors(pll.tokens, range(len(pll.tokens)), -np.asarray(pll.log_prob))
        parts.append(_tokens_html(pll.tokens, colors=colors, titles=titles))
    nsp = sec.results.get("nsp")
    if isinstance(nsp, _r.Unavailable):
        parts.append(_unavail_html(nsp))
    elif nsp is not None:
        parts.append("<h3>Next-sentence prediction</h3>")
        parts.append(_kv([["P(IsNext)", nsp.p_is_next], ["prediction", nsp.prediction],
                          ["NSP loss if B follows A (nats)", nsp.loss_if_next]]))
    g = sec.results.get("gradient")
    if isinstance(g, _r.Unavailable):
        parts.append(_unavail_html(g))
    elif g is not None:
        parts.append(f"<h3>Gradient of the loss at position {g.position} ({_h(g.objective)})</h3>")
        parts.append(_kv([["target token", _visible(g.target_token)], ["loss (nats)", g.loss],
                          ["P(target)", g.prob_target],
                          ["max |autograd − (P − onehot)|", g.logit_grad_max_abs_diff],
                          ["∂L/∂z_target (= P − 1)", g.logit_grad_target],
                          ["Σ ∂L/∂z (= 0)", g.logit_grad_sum],
                          ["max |∂L/∂W_out − (P − onehot) ⊗ h|", g.output_formula_max_abs_diff],
                          ["cos(−∂L/∂w_target, h)", g.target_row_cos_h], ["weights tied", g.tied]]))
        parts.append(_table(["token", "∂L/∂z"],
                            [[_visible(t), float(v)] for t, v in zip(g.top_tokens, g.top_logit_grads)]))
    return "".join(parts)


def _bar_width(n: int) -> int:
    """Width of a bar chart with one bar per token/word: readable for a few, bounded for many."""
    return int(max(440, min(1100, 120 + 14 * n)))


def _light(hex_color: str, amount: float = 0.55) -> str:
    """Mix a colour with white so dark text on it stays readable."""
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    mix = lambda c: round(c + (255 - c) * amount)  # noqa: E731
    return "#%02x%02x%02x" % (mix(r), mix(g), mix(b))


def _html_embeddings(report: _r.Report, sec: _r.Section) -> str:
    r = sec.results
    parts = []

    def block(name: str, title: str, render: Callable[[Any], str]) -> None:
        v = r.get(name)
        if v is None:
            return
        parts.append(f"<h3>{_h(title)}</h3>")
        parts.append(_unavail_html(v) if isinstance(v, _r.Unavailable) else render(v))

    def norms(tn) -> str:
        return (_charts(svg.histogram(tn.hist_counts, tn.hist_edges, log_y=True, x_label="‖e‖",
                                      title="token-embedding norms", markers={"mean": tn.mean}))
                + _kv([["mean", tn.mean], ["std", tn.std], ["min", tn.min], ["max", tn.max]])
                + _table(["largest norm", "smallest norm"],
                         [[_visible(a), _visible(b)] for a, b in zip(tn.largest_tokens[:10], tn.smallest_tokens[:10])]))

    def aniso(a) -> str:
        return _kv([["mean cosine of random token pairs", a.mean_cosine], ["std", a.std_cosine],
                    ["pairs", a.n_pairs], ["‖mean vector‖ / mean ‖vector‖", a.mean_vector_ratio]])

    def freq(nf) -> str:
        centres = (np.asarray(nf.bin_edges[:-1]) + np.asarray(nf.bin_edges[1:])) / 2
        return (_kv([["Spearman ρ (tokens seen)", nf.rho_seen], ["p", nf.p_seen], ["tokens seen", nf.n_seen],
                     ["Spearman ρ (all, unseen = 0)", nf.rho_all], ["corpus tokens", nf.n_corpus_tokens],
                     ["corpus", Path(str(nf.corpus)).name if nf.corpus not in ("text", "counts") else nf.corpus]])
                + _charts(svg.line_chart({"mean norm": (centres, nf.bin_mean_norm)}, x_label="log10 count",
                                         y_label="‖e‖", title="norm against corpus frequency")))

    def positions(p) -> str:
        idx = np.arange(len(p.norms))
        cm, cp = p.cos_matrix, p.cos_positions
        if cm.shape[0] > 40:  # keep the file small: an even subsample of the kept positions
            keep = np.unique(np.linspace(0, cm.shape[0] - 1, 40).round().astype(int))
            cm, cp = cm[np.ix_(keep, keep)], cp[keep]
        return (_kv([["positions × dim", f"{p.n_positions} × {p.dim}"], ["learned", p.learned],
                     ["similarity to sinusoidal (Pearson of cosine matrices)", p.sinusoidal_similarity],
                     ["mean best |r| per dim vs sinusoids", p.best_dim_correlation]])
                + _charts(svg.line_chart({"norm": (idx, p.norms)}, title="position-embedding norm",
                                         x_label="position", markers=False),
                          svg.line_chart({"cos(p, p+1)": (idx[:-1], p.adjacent_cosine)}, markers=False,
                                         title="cosine of neighbouring positions", x_label="position"),
                          svg.heatmap(cm, row_labels=[str(int(i)) for i in cp], col_labels=[str(int(i)) for i in cp],
                                      scale="diverging", vmin=-1.0, vmax=1.0, title="position × position cosine")))

    def segments(s) -> str:
        return _kv([["segment types", s.n_types], ["cosine(segment 0, segment 1)", s.cosine_0_1],
                    ["segment norms", ", ".join(_fmt(v) for v in s.norms)], ["mean token norm", s.mean_token_norm]])

    def output(o) -> str:
        return _kv([["tied to the input table", o.tied], ["rows × dim", f"{o.n_rows} × {o.dim}"],
                    ["mean ‖output row‖", o.mean_output_norm], ["mean ‖input row‖", o.mean_input_norm],
                    ["mean cos(input row, output row)", o.mean_row_cosine],
                    ["Spearman ρ(‖input‖, ‖output‖)", o.norm_spearman]])

    def contextual(c) -> str:
        L1 = len(c.mean_pairwise_cosine)
        items = [svg.line_chart({"mean cosine between tokens": (range(L1), c.mean_pairwise_cosine),
                                 "cosine with final layer": (range(L1), c.mean_self_sim_final)},
                                title="contextual embeddings by layer", x_label="layer (0 = embeddings)")]
        if len(c.tokens) <= 64 and c.token_cosine is not None:
            items.append(svg.heatmap(c.token_cosine[-1], row_labels=_vis(c.tokens), col_labels=_vis(c.tokens),
                                     scale="diverging", vmin=-1.0, vmax=1.0, title="token × token cosine, last layer"))
        return _charts(*items)

    def neighbours(nb) -> str:
        rows = [[_visible(q), ", ".join(f"{_visible(t)} ({c:.2f})" for t, c in zip(toks, cos))]
                for q, toks, cos in zip(nb.query_tokens, nb.tokens, nb.cosine)]
        return _table(["token", f"{nb.k} nearest by cosine"], rows)

    def clusters(tc) -> str:
        rows = [[i, int(size), ", ".join(ex)] for i, (size, ex) in enumerate(zip(tc.clusters.sizes, tc.exemplars))]
        return (_kv([["algorithm", tc.clusters.algorithm], ["silhouette", tc.clusters.silhouette]])
                + _table(["cluster", "size", "tokens nearest the centre"], rows))

    block("token_norms", "Token-embedding norms", norms)
    block("anisotropy", "Anisotropy", aniso)
    block("norm_frequency", "Norm against frequency", freq)
    block("positions", "Position embeddings", positions)
    block("segments", "Segment embeddings", segments)
    block("output_embeddings", "Output embeddings (unembedding)", output)
    block("contextual", "Contextual embeddings of this text", contextual)
    block("neighbours", "Nearest neighbours of tokens in this text", neighbours)
    block("clusters", "Clusters of frequent tokens", clusters)
    return "".join(parts)


def _html_attribution(report: _r.Report, sec: _r.Section) -> str:
    a = sec.results.get("attribution")
    if a is None:
        return ""
    rows = [["method", a.method], ["target", a.target], ["units", a.units], ["f(input)", a.f_input]]
    if a.f_baseline is not None:
        rows += [["f(baseline)", a.f_baseline], ["baseline", a.baseline_description or a.baseline],
                 ["convergence delta", a.delta], ["|delta| / |f(input) − f(baseline)|", a.relative_delta],
                 ["steps", a.steps]]
    parts = [_kv(rows)]
    if a.message:
        parts.append(f'<p class="unavailable">{_h(a.message)}</p>')
    for note in a.notes:
        parts.append(f'<p class="note">{_h(note)}</p>')
    scores = np.asarray(a.scores, dtype=float)
    parts.append(_charts(svg.bar_chart(_vis(a.tokens), scores, title="attribution per input token",
                                       y_label="score", width=_bar_width(len(scores)))))
    fin = np.abs(scores[np.isfinite(scores)])
    m = float(fin.max()) if fin.size else 1.0
    scale = "diverging" if a.scores_signed else "viridis"
    colors = [_light(svg.color_at((s / m + 1) / 2 if a.scores_signed else s / m, scale), 0.35)
              if m > 0 and np.isfinite(s) else "#ffffff" for s in scores]
    parts.append('<p class="note">Tokens coloured by score (red raises the target, blue lowers it):</p>'
                 if a.scores_signed else '<p class="note">Tokens coloured by gradient norm:</p>')
    parts.append(_tokens_html(a.tokens, a.special, colors=colors, titles=[f"#{i}: {_fmt(s)}" for i, s in
                                                                          enumerate(scores)]))
    parts.append(_table(["rank", "position", "token", "score"],
                        [[k + 1, t.index, _visible(t.token), t.score] for k, t in enumerate(a.top)]))
    return "".join(parts)


_VERDICT_STYLE = {"holds": "background:#e3f4e8", "does not hold": "background:#fbe4e4",
                  "not applicable": "background:#f0f0f0;color:#666"}


def _html_foundations(report: _r.Report, sec: _r.Section) -> str:
    claims = sec.results.get("claims")
    rows = _claims_rows(claims)
    if not rows:
        return _generic_html(claims)
    cols = _claim_columns(rows)
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r.get("verdict"))] = counts.get(str(r.get("verdict")), 0) + 1
    head = "".join(f"<th>{_h(column_name(c))}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            style = f' style="{_VERDICT_STYLE[r[c]]}"' if c == "verdict" and r.get(c) in _VERDICT_STYLE else ""
            cells.append(f"<td{style}>{_h(_fmt(r.get(c)))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    summary_line = ", ".join(f"{n} {_h(v)}" for v, n in counts.items())
    return (f"<p>{len(rows)} claims about transformers measured on this model and text: {summary_line}.</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


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
                          width=_bar_width(len(labels)))))
        parts.append(_table(["position", "token", "JS", "KL(A‖B)", "KL(B‖A)", "loss A", "loss B", "A's top guesses",
                             "B's top guesses"],
                            [[g.position, _visible(g.token), g.js_nats, g.kl_ab_nats, g.kl_ba_nats, g.loss_a_nats,
                              g.loss_b_nats,
                              _guesses(g.top_tokens_a, g.top_probs_a), _guesses(g.top_tokens_b, g.top_probs_b)]
                             for g in d.disagreements]))
    w = c.words
    parts.append("<h3>Loss per word</h3>")
    if w is None:
        parts.append(missing(c.words_unavailable_reason))
    else:
        shown = min(len(w.words), 150)
        parts.append(_charts(svg.bar_chart(w.words[:shown], w.nll_diff_nats[:shown], width=_bar_width(shown),
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
    "layernorm": _html_layernorm,
    "attention": _html_attention,
    "loss": _html_loss,
    "embeddings": _html_embeddings,
    "attribution": _html_attribution,
    "foundations": _html_foundations,
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

