"""Plotly figures (and escaped coloured-token HTML) built from inspector's result dataclasses.

Every function takes a result object (or plain arrays from one) and returns a
`plotly.graph_objects.Figure` or an HTML string; nothing here computes an analysis, imports
Streamlit, or touches a model. The app shows these figures; anything else may embed them.

Text safety: token strings come from user input. Plotly renders a subset of HTML tags in
labels and hover text, so every token reaching a figure goes through `token_label` (HTML
escaped, whitespace made visible); `colored_tokens_html` escapes every token with html.escape.

One concern that reads better whole (about 800 lines): every Plotly builder of the app with one shared
style (palette, log axes, token labels); splitting it by page would scatter that style.
"""
from __future__ import annotations

import html
import math
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .tokens import strip_html

__all__ = [
    "token_label", "colored_tokens_html",
    "histogram_figure", "param_histogram", "norm_layer_ranges", "norm_histogram_heatmap", "norm_activation_chart",
    "attention_sigma_heatmaps", "attention_heatmap", "attention_pattern_heatmap", "head_grid_figure",
    "token_row_chart", "token_ticks", "scaling_what_if_chart",
    "embedding_scatter", "norm_frequency_chart", "position_cosine_heatmap", "position_norms_chart",
    "contextual_layers_chart", "token_cosine_heatmap",
    "sigma_vs_dim_chart", "softmax_scaling_chart", "temperature_chart", "loss_race_chart", "gaussian_kl_chart",
    "discrete_kl_chart", "divergence_chart", "layer_drift_chart", "attention_comparison_heatmaps",
    "token_bar_chart", "attribution_bar_chart", "chart_figure", "PALETTE", "LOG_AXIS",
]

# One style for the app and the reports: the Okabe–Ito palette is defined once, in svg_charts.
from .svg_charts import PALETTE  # noqa: E402
LOG_AXIS = dict(type="log", dtick=1)  # log axes tick at 1, 10, 100 (not 1, 2, 5, 10, 20, …)
_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=60, b=50), hoverlabel=dict(namelength=-1))


# --------------------------------------------------------------------------- tokens and text


def token_label(token: str, max_len: int = 24) -> str:
    """A token string safe for Plotly labels/hover and HTML: escaped, whitespace shown, shortened."""
    s = str(token)
    if len(s) > max_len:
        s = s[: max_len - 1] + "…"
    s = s.replace("\n", "↵").replace("\r", "␍").replace("\t", "⇥")
    if s == "":
        s = "∅"
    elif s.strip() == "":
        s = s.replace(" ", "·")
    return html.escape(s, quote=False)  # Plotly understands &amp; &lt; &gt; but not every named entity


def _indexed_labels(tokens: Sequence[str]) -> list[str]:
    """Axis labels that stay distinct when a token repeats (Plotly merges equal categories)."""
    return [f"{token_label(t)} ({i})" for i, t in enumerate(tokens)]


def _rgba(value: float, vmax: float, signed: bool) -> str:
    """Background colour of one token: white → orange (unsigned) or blue ← white → red (signed)."""
    if vmax <= 0 or value is None or not math.isfinite(value):
        return "rgba(0,0,0,0)"
    a = max(-1.0, min(1.0, value / vmax))
    if signed and a < 0:
        return f"rgba(33,102,172,{-a * 0.75:.3f})"
    if signed:
        return f"rgba(178,24,43,{a * 0.75:.3f})"
    return f"rgba(230,120,0,{max(a, 0.0) * 0.8:.3f})"


def colored_tokens_html(tokens: Sequence[str], values: Sequence[float | None], *, signed: bool = False,
                        vmax: float | None = None, value_name: str = "value", unit: str = "",
                        skip: Sequence[bool] | None = None, digits: int = 3) -> str:
    """Tokens as inline spans coloured by `values` (None / NaN = no colour), with a hover title.

    Every token string is passed through html.escape: user text can never inject markup.
    `signed` uses a blue–red diverging scale around 0; otherwise white → orange up to `vmax`.
    """
    vals = [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in values]
    finite = [abs(v) for v in vals if v is not None and math.isfinite(v)]
    top = float(vmax) if vmax is not None else (max(finite) if finite else 0.0)
    backgrounds, titles, muted = [], [], []
    for i, tok in enumerate(tokens):
        v = vals[i] if i < len(vals) else None
        is_skipped = skip is not None and i < len(skip) and bool(skip[i])
        if v is None or is_skipped:
            titles.append(f"token {i}: {str(tok)!r} — no {value_name}")
            backgrounds.append("")
            muted.append(True)
        else:
            titles.append(f"token {i}: {str(tok)!r} — {value_name} {v:.{digits}g}{(' ' + unit) if unit else ''}")
            backgrounds.append(_rgba(v, top, signed))
            muted.append(False)
    strip = strip_html(tokens, backgrounds=backgrounds, titles=titles, muted=muted, data_index=True)
    legend = ("blue = negative, red = positive" if signed else f"darker = higher {html.escape(value_name)}")
    scale = f"; full colour at {top:.{digits}g}{(' ' + html.escape(unit)) if unit else ''}" if top else ""
    return (f'<div style="font-size:0.95rem">{strip}</div>'
            f'<div style="font-size:0.8rem;color:#666;margin-top:4px">{legend}{scale}; hover a token for its value.</div>')


# --------------------------------------------------------------------------- LayerNorm


def histogram_figure(edges, counts, name: str, *, title: str, mean: float | None = None,
                     band: tuple[float, float] | None = None, log_y: bool = True, color: str = PALETTE[0],
                     height: int = 340) -> go.Figure:
    """Bars from precomputed bin edges and counts (log-scale y by default; empty bins left as gaps)."""
    edges = np.asarray(edges, dtype=float)
    counts = np.asarray(counts, dtype=float)
    centres = (edges[:-1] + edges[1:]) / 2
    y = np.where(counts > 0, counts, np.nan) if log_y else counts
    fig = go.Figure(go.Bar(
        x=centres, y=y, width=np.diff(edges), marker_color=color, name=name,
        customdata=np.stack([edges[:-1], edges[1:], counts], axis=-1),
        hovertemplate="[%{customdata[0]:.4g}, %{customdata[1]:.4g}): %{customdata[2]:,.0f} values<extra></extra>",
    ))
    if band is not None:
        fig.add_vrect(x0=band[0], x1=band[1], fillcolor=PALETTE[2], opacity=0.12, line_width=0,
                      annotation_text=f"{band[0]:g}–{band[1]:g}", annotation_position="top left")
    if mean is not None and math.isfinite(mean):
        fig.add_vline(x=mean, line_dash="dash", line_color="#444", annotation_text=f"mean {mean:.3g}",
                      annotation_position="top right")
    fig.update_layout(**_LAYOUT, title=dict(text=title, font=dict(size=14)), bargap=0.02, showlegend=False,
                      xaxis_title=name,
                      yaxis_title="count (log)" if log_y else "count", height=height)
    if log_y:
        fig.update_yaxes(**LOG_AXIS)
    return fig


def param_histogram(stats, name: str, *, title: str | None = None, band: tuple[float, float] | None = None,
                    log_y: bool = True, color: str = PALETTE[0]) -> go.Figure:
    """Histogram of one parameter set (γ or β) from a layernorm `ParamStats` (edges + counts), log-scale y."""
    return histogram_figure(stats.hist_edges, stats.hist_counts, name, title=title or f"{name}: {stats.n:,} values",
                            mean=stats.mean, band=band, log_y=log_y, color=color)


def norm_layer_ranges(report, which: str = "gamma") -> go.Figure:
    """Per norm layer: median with 5–95 % and 25–75 % ranges of γ (or β), in registration order."""
    rows = [(layer.name, layer.gamma_stats if which == "gamma" else layer.beta_stats) for layer in report.layers]
    rows = [(n, s) for n, s in rows if s is not None]
    names = [html.escape(n, quote=False) for n, _ in rows]
    q = np.array([s.quantiles for _, s in rows]) if rows else np.zeros((0, 7))
    sym = "γ" if which == "gamma" else "β"
    fig = go.Figure()
    if rows:
        fig.add_trace(go.Scatter(x=names, y=q[:, 3], mode="markers", name="median", marker=dict(size=8, color=PALETTE[0]),
                                 error_y=dict(type="data", symmetric=False, array=q[:, 5] - q[:, 3],
                                              arrayminus=q[:, 3] - q[:, 1], color="#999", thickness=1.5),
                                 hovertemplate="%{x}<br>median %{y:.4g}<extra>5–95 %% range shown</extra>"))
        fig.add_trace(go.Scatter(x=names, y=[s.mean for _, s in rows], mode="markers", name="mean",
                                 marker=dict(symbol="x", size=7, color=PALETTE[3]),
                                 hovertemplate="%{x}<br>mean %{y:.4g}<extra></extra>"))
    if which == "gamma":
        lo, hi = report.gamma_band
        fig.add_hrect(y0=lo, y1=hi, fillcolor=PALETTE[2], opacity=0.12, line_width=0,
                      annotation_text=f"claimed band {lo:g}–{hi:g}", annotation_position="top left")
    else:
        fig.add_hline(y=0, line_color="#888", line_dash="dot")
    fig.update_layout(**_LAYOUT, title=f"{sym} per norm layer: median, 5–95 % range and mean", height=380,
                      xaxis_title="norm layer (registration order)", yaxis_title=sym,
                      legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))
    fig.update_xaxes(tickangle=-45)
    return fig


def norm_histogram_heatmap(report, which: str = "gamma") -> go.Figure:
    """Layers × bins heat map of the per-layer histograms (shared bin edges), colour = log10(count + 1)."""
    layers = [layer for layer in report.layers if (layer.gamma_stats if which == "gamma" else layer.beta_stats)]
    stats = [(layer.gamma_stats if which == "gamma" else layer.beta_stats) for layer in layers]
    sym = "γ" if which == "gamma" else "β"
    if not stats:
        return _empty(f"No layer has {sym}.")
    edges = np.asarray(stats[0].hist_edges, dtype=float)
    centres = (edges[:-1] + edges[1:]) / 2
    counts = np.array([s.hist_counts for s in stats], dtype=float)
    fig = go.Figure(go.Heatmap(
        z=np.log10(counts + 1), x=centres, y=[html.escape(layer.name, quote=False) for layer in layers], customdata=counts,
        colorscale="Viridis", colorbar=dict(title="log10(n+1)"),
        hovertemplate="%{y}<br>" + sym + " ≈ %{x:.4g}<br>%{customdata:,.0f} values<extra></extra>"))
    fig.update_layout(**_LAYOUT, title=f"{sym} histograms of every norm layer (shared bins)",
                      xaxis_title=sym, height=max(300, 24 * len(layers) + 120))
    fig.update_yaxes(autorange="reversed")
    return fig


def norm_activation_chart(activations: Sequence) -> go.Figure:
    """Std of each norm layer's input and output on the text (from `NormActivation` results)."""
    names = [html.escape(a.name, quote=False) for a in activations]
    fig = go.Figure([
        go.Bar(x=names, y=[a.input_std for a in activations], name="input σ", marker_color=PALETTE[1]),
        go.Bar(x=names, y=[a.output_std for a in activations], name="output σ", marker_color=PALETTE[0]),
    ])
    fig.update_layout(**_LAYOUT, barmode="group", title="What each norm layer does to the activations (this text)",
                      yaxis_title="std over tokens × features", height=380,
                      legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))
    fig.update_yaxes(**LOG_AXIS)
    fig.update_xaxes(tickangle=-45)
    return fig


# --------------------------------------------------------------------------- attention


def _lh_heatmap(z: np.ndarray, *, zmid: float | None, colorscale: str, colorbar: str, text_fmt: str = ".2f",
                hover_name: str = "value") -> go.Heatmap:
    L, H = z.shape
    return go.Heatmap(
        z=z, x=list(range(H)), y=list(range(L)), zmid=zmid, colorscale=colorscale,
        colorbar=dict(title=colorbar), text=np.vectorize(lambda v: format(v, text_fmt))(z) if z.size else None,
        texttemplate="%{text}" if L * H <= 400 else None,
        hovertemplate="layer %{y}, head %{x}<br>" + hover_name + " = %{z:.4g}<extra></extra>")


def _ratio_heatmap(values: np.ndarray, reference: float, *, name: str, colorbar_x: float) -> go.Heatmap:
    """Heat map of `values` coloured by log2(value / reference): white = the reference, red above, blue below.

    The cells show the values themselves; the colour bar is labelled in multiples of the reference.
    """
    v = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.log2(v / reference)
    finite = np.abs(z[np.isfinite(z)])
    top = max(1.0, float(np.ceil(finite.max()))) if finite.size else 1.0
    ticks = list(range(-int(top), int(top) + 1))
    L, H = v.shape
    return go.Heatmap(
        z=z, x=list(range(H)), y=list(range(L)), zmin=-top, zmax=top, colorscale="RdBu_r",
        customdata=v, text=np.vectorize(lambda x: f"{x:.2f}")(v) if v.size else None,
        texttemplate="%{text}" if L * H <= 400 else None,
        colorbar=dict(title=f"× {reference:.3g}", x=colorbar_x, len=0.9, tickvals=ticks,
                      ticktext=[f"×{2.0 ** t:g}" for t in ticks]),
        hovertemplate="layer %{y}, head %{x}<br>" + name + " = %{customdata:.4g}<extra></extra>")


def _cell_picker(L: int, H: int, hover: list[str], selected: tuple[int, int] | None = None,
                 size: int = 18) -> go.Scatter:
    """Transparent squares over a layer × head grid: Streamlit's selection events fire on scatter points,
    not on heat-map cells (streamlit#8760), so a click on a cell selects the square on top of it.
    customdata = [layer, head]; the selected cell gets a dark outline."""
    layers, heads = np.divmod(np.arange(L * H), H)
    return go.Scatter(
        x=heads, y=layers, mode="markers", customdata=np.stack([layers, heads], axis=1), text=hover,
        marker=dict(symbol="square-open", size=size, color="rgba(0,0,0,0)", line=dict(width=0)),
        selected=dict(marker=dict(opacity=0)),
        unselected=dict(marker=dict(opacity=0)), hovertemplate="%{text}<br><i>click: open this head</i><extra></extra>",
        showlegend=False, name="pick")


def _outline(fig: go.Figure, layer: int, head: int, row: int | None = None, col: int | None = None) -> None:
    grid = {} if row is None else {"row": row, "col": col}
    fig.add_shape(type="rect", x0=head - 0.5, x1=head + 0.5, y0=layer - 0.5, y1=layer + 0.5,
                  line=dict(color="#111", width=3), **grid)


def attention_sigma_heatmaps(report, selected: tuple[int, int] | None = None) -> go.Figure:
    """Layer × head σ(QKᵀ): unscaled against √d_head, and scaled (what the softmax sees) against 1.

    Colour = log2 of the ratio to the prediction σ ≈ √d_head (white: as predicted; each step of the
    colour bar is a factor 2); the cells print the σ values themselves. Clicking a cell selects that
    head (transparent picker squares on top); `selected` is outlined.
    """
    sq = float(report.sqrt_d_head)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.2, subplot_titles=(
        f"σ(QKᵀ) unscaled vs √d_head = {sq:.3g}", "σ(QKᵀ)·scaling (softmax input) vs 1"))
    L, H = np.asarray(report.std).shape
    for col, (values, ref, name, cx) in enumerate(((report.std, sq, "σ(q·k)", 0.4),
                                                   (report.std_scaled, 1.0, "σ(q·k)·scaling", 1.0)), start=1):
        hm = _ratio_heatmap(values, ref, name=name, colorbar_x=cx)
        hm.hoverinfo, hm.hovertemplate = "skip", None
        fig.add_trace(hm, row=1, col=col)
        v = np.asarray(values, dtype=float)
        hover = [f"layer {la}, head {h}<br>{name} = {v[la, h]:.4g}" for la in range(L) for h in range(H)]
        fig.add_trace(_cell_picker(L, H, hover, selected), row=1, col=col)
        if selected is not None:
            _outline(fig, *selected, row=1, col=col)
    for c in (1, 2):
        fig.update_xaxes(title_text="head", dtick=1, row=1, col=c, showgrid=False, zeroline=False)
        fig.update_yaxes(title_text="layer", dtick=1, autorange="reversed", row=1, col=c, showgrid=False,
                         zeroline=False)
    fig.update_layout(**_LAYOUT, height=max(320, 34 * report.n_layers + 160), dragmode=False)
    return fig


_ATTN_QUANTITIES = {
    "ratio": ("σ(QKᵀ) / √d_head", 1.0, "RdBu_r"),
    "entropy_fraction": ("softmax entropy / log(n keys)  (1 = uniform)", None, "Viridis"),
    "max_prob": ("mean max attention probability  (1 = saturated)", None, "Viridis"),
    "entropy": ("softmax entropy, nats", None, "Viridis"),
    "mean": ("mean q·k (unscaled)", 0.0, "RdBu_r"),
    "max_scaled": ("max scaled logit", None, "Viridis"),
}


def attention_heatmap(report, quantity: str = "entropy_fraction", selected: tuple[int, int] | None = None
                      ) -> go.Figure:
    """One layer × head heat map of an `AttentionReport` array (ratio, entropy_fraction, max_prob, ...);
    a click on a cell selects that head, `selected` is outlined."""
    title, zmid, scale = _ATTN_QUANTITIES.get(quantity, (quantity, None, "Viridis"))
    z = np.asarray(getattr(report, quantity), dtype=float)
    hm = _lh_heatmap(z, zmid=zmid, colorscale=scale, colorbar="", hover_name=quantity)
    hm.hoverinfo, hm.hovertemplate = "skip", None
    fig = go.Figure(hm)
    L, H = z.shape
    fig.add_trace(_cell_picker(L, H, [f"layer {la}, head {h}<br>{quantity} = {z[la, h]:.4g}"
                                      for la in range(L) for h in range(H)], selected))
    if selected is not None:
        _outline(fig, *selected)
    fig.update_xaxes(title_text="head", dtick=1, showgrid=False, zeroline=False)
    fig.update_yaxes(title_text="layer", dtick=1, autorange="reversed", showgrid=False, zeroline=False)
    fig.update_layout(**_LAYOUT, title=title, height=max(300, 34 * report.n_layers + 140), dragmode=False)
    return fig


def token_ticks(tokens: Sequence[str], every_up_to: int = 64, max_ticks: int = 48) -> tuple[list[int], list[str]]:
    """Tick positions and labels for a token axis: every token when there are at most `every_up_to`,
    otherwise every k-th (at most `max_ticks`); hover shows all of them."""
    n = len(tokens)
    step = 1 if n <= every_up_to else int(math.ceil(n / max_ticks))
    vals = list(range(0, n, step))
    return vals, [f"{token_label(tokens[i], 14)} ({i})" for i in vals]


def attention_pattern_heatmap(pattern, max_tokens: int = 256, selected_token: int | None = None) -> go.Figure:
    """Query × key attention probabilities of one layer/head (unattended = blank).

    Token axes are positions labelled with tokens (every token up to 64, else an interval; hover names
    both tokens). A click on a cell selects its query token (customdata = [query, key]).
    """
    T = len(pattern.tokens)
    n = min(T, max_tokens)
    probs = np.asarray(pattern.probs, dtype=float)[:n, :n]
    valid = np.asarray(pattern.valid, dtype=bool)[:n, :n]
    z = np.where(valid, np.round(probs, 5), np.nan)
    fig = go.Figure(go.Heatmap(z=z, x=list(range(n)), y=list(range(n)), colorscale="Blues", zmin=0,
                               colorbar=dict(title="P", thickness=14), hoverinfo="skip"))
    labels = [token_label(t, 16) for t in pattern.tokens[:n]]
    q, k = np.nonzero(valid)
    hover = [f"query {a}: {labels[a]}<br>key {b}: {labels[b]}<br>P = {probs[a, b]:.4f}" for a, b in zip(q, k)]
    if selected_token is not None and 0 <= selected_token < n:
        fig.add_shape(type="rect", x0=-0.5, x1=n - 0.5, y0=selected_token - 0.5, y1=selected_token + 0.5,
                      line=dict(color="#e6550d", width=2))
    trace = go.Scattergl if len(q) > 5000 else go.Scatter
    fig.add_trace(trace(
        x=k, y=q, mode="markers", customdata=np.stack([q, k], axis=1), text=hover, showlegend=False, name="pick",
        marker=dict(symbol="square", size=max(4, min(16, 560 // max(n, 1))), color="rgba(0,0,0,0)"),
        selected=dict(marker=dict(opacity=0)), unselected=dict(marker=dict(opacity=0)),
        hovertemplate="%{text}<br><i>click: inspect the query token</i><extra></extra>"))
    vals, ticks = token_ticks(pattern.tokens[:n])
    font = dict(size=10 if n <= 40 else 8)
    fig.update_xaxes(title_text="key", tickangle=-60, tickfont=font, tickvals=vals, ticktext=ticks, showgrid=False,
                     zeroline=False, range=[-0.5, n - 0.5])
    fig.update_yaxes(title_text="query", autorange="reversed", tickfont=font, tickvals=vals, ticktext=ticks,
                     showgrid=False, zeroline=False)
    note = f" (first {n} of {T} tokens)" if n < T else ""
    fig.update_layout(**_LAYOUT, title=f"Attention of layer {pattern.layer}, head {pattern.head}{note}",
                      height=min(900, max(460, 14 * n + 220)), dragmode=False)
    return fig


def head_grid_figure(grid, highlight_token: int | None = None, selected: tuple[int, int] | None = None,
                     scale: int = 1) -> go.Figure:
    """All layers × heads as ONE raster image (`heads.head_grid_rgb`, a PNG data URI), with a transparent
    picker square over each thumbnail: a click selects that head (customdata = [layer, head])."""
    import base64

    from .analyses.heads import head_grid_rgb, png_bytes

    gap = 2
    rgb = head_grid_rgb(grid, highlight_token=highlight_token, gap=gap)
    uri = "data:image/png;base64," + base64.b64encode(png_bytes(rgb, scale=scale)).decode("ascii")
    h_px, w_px = rgb.shape[0] * scale, rgb.shape[1] * scale
    c = (grid.cell + gap) * scale
    fig = go.Figure(go.Image(source=uri, x0=0, y0=0, dx=1, dy=1, hoverinfo="skip"))
    L, H = grid.n_layers, grid.n_heads
    layers, heads = np.divmod(np.arange(L * H), H)
    centre = gap * scale + c / 2 - gap * scale / 2
    ef = np.asarray(grid.entropy_fraction, dtype=float)
    fig.add_trace(go.Scatter(
        x=centre + heads * c, y=centre + layers * c, mode="markers", customdata=np.stack([layers, heads], axis=1),
        text=[f"layer {la}, head {h}<br>entropy / log n = {ef[la, h]:.3f}" for la, h in zip(layers, heads)],
        marker=dict(symbol="square-open", size=max(8, c - 4), color="rgba(0,0,0,0)", line=dict(width=0)),
        selected=dict(marker=dict(opacity=0)),
        unselected=dict(marker=dict(opacity=0)), showlegend=False, name="pick",
        hovertemplate="%{text}<br><i>click: open this head</i><extra></extra>"))
    if selected is not None:
        x0, y0 = gap * scale / 2 + selected[1] * c, gap * scale / 2 + selected[0] * c
        fig.add_shape(type="rect", x0=x0, x1=x0 + c, y0=y0, y1=y0 + c, line=dict(color="#e6550d", width=2))
    fig.update_xaxes(range=[0, w_px], tickvals=list(centre + np.arange(H) * c), ticktext=[str(h) for h in range(H)],
                     title_text="head", showgrid=False, zeroline=False, constrain="domain")
    fig.update_yaxes(range=[h_px, 0], tickvals=list(centre + np.arange(L) * c), ticktext=[str(la) for la in range(L)],
                     title_text="layer", showgrid=False, zeroline=False, scaleanchor="x")
    fig.update_layout(**{**_LAYOUT, "margin": dict(l=50, r=10, t=30, b=40)}, height=min(900, h_px + 80),
                      width=min(1100, w_px + 70), dragmode=False)
    return fig


def token_row_chart(tokens: Sequence[str], values: Sequence[float], *, title: str, y_title: str,
                    selected: int | None = None) -> go.Figure:
    """One bar per token (e.g. an attention row); token axis readable as in the pattern view."""
    n = len(tokens)
    colors = ["#e6550d" if i == selected else PALETTE[0] for i in range(n)]
    fig = go.Figure(go.Bar(x=list(range(n)), y=np.asarray(values, dtype=float), marker_color=colors,
                           customdata=[token_label(t) for t in tokens],
                           hovertemplate="%{x}: %{customdata}<br>%{y:.4f}<extra></extra>"))
    vals, ticks = token_ticks(tokens)
    fig.update_xaxes(tickvals=vals, ticktext=ticks, tickangle=-60, tickfont=dict(size=9))
    fig.update_layout(**_LAYOUT, title=title, yaxis_title=y_title, height=340)
    return fig


def scaling_what_if_chart(what_if) -> go.Figure:
    """Mean softmax entropy / log(n keys) and max-probability per head against the softmax temperature.

    The model's own scaling is T = 1 (dotted line); the unscaled softmax (no 1/√d) is drawn as
    crosses at its equivalent temperature T = scaling = 1/√d_head.
    """
    temps = np.asarray(what_if.temperatures, dtype=float)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("entropy / log(n keys)  (1 = uniform)",
                                                        "mean max probability  (1 = one key takes all)"))
    for h in range(what_if.n_heads):
        color = PALETTE[h % len(PALETTE)]
        for col, arr in ((1, what_if.entropy_fraction), (2, what_if.max_prob)):
            fig.add_trace(go.Scatter(x=temps, y=np.asarray(arr)[:, h], mode="lines+markers", name=f"head {h}",
                                     legendgroup=f"h{h}", showlegend=col == 1, line=dict(color=color, width=1.5),
                                     hovertemplate=f"head {h}<br>T = %{{x:.3g}}<br>%{{y:.4f}}<extra></extra>"),
                          row=1, col=col)
    sq = math.sqrt(what_if.d_head)
    for col, arr in ((1, what_if.entropy_fraction_unscaled), (2, what_if.max_prob_unscaled)):
        fig.add_trace(go.Scatter(x=[1 / sq] * what_if.n_heads, y=np.asarray(arr), mode="markers",
                                 marker=dict(symbol="x", size=9, color="#000"), name="no 1/√d scaling",
                                 legendgroup="unscaled", showlegend=col == 1,
                                 hovertemplate="unscaled (T = 1/√d)<br>%{y:.4f}<extra></extra>"), row=1, col=col)
        fig.add_vline(x=1.0, line_dash="dot", line_color="#666", row=1, col=col)
    fig.update_xaxes(**LOG_AXIS, title_text="temperature T (softmax of q·k·scaling / T)")
    fig.update_layout(**_LAYOUT, height=420, title=f"Layer {what_if.layer}: the 1/√d scaling as a temperature")
    return fig


# --------------------------------------------------------------------------- embeddings


def embedding_scatter(projection, labels=None, exemplars=None) -> go.Figure:
    """2-D map of tokens (`Projection`), one colour per cluster (`ClusterResult.labels`), token on hover.

    `labels` must be aligned with `projection.ids` (same token set). WebGL markers keep thousands
    of points fast.
    """
    xy = np.asarray(projection.coords, dtype=float)
    toks = [token_label(t) for t in projection.tokens]
    method = projection.method.upper() if projection.method == "pca" else "t-SNE"
    evr = np.asarray(projection.explained_variance_ratio, dtype=float)
    axis = [f"{method} {i + 1}" + (f" ({evr[i]:.1%} of variance)" if i < evr.size and math.isfinite(evr[i]) else "")
            for i in range(2)]
    fig = go.Figure()
    if labels is None:
        fig.add_trace(go.Scattergl(x=xy[:, 0], y=xy[:, 1], mode="markers", text=toks,
                                   marker=dict(size=5, color=PALETTE[0], opacity=0.7),
                                   hovertemplate="%{text}<extra></extra>"))
    else:
        labels = np.asarray(labels)
        for c in np.unique(labels):
            sel = np.flatnonzero(labels == c)
            ex = ""
            if exemplars is not None and int(c) < len(exemplars):
                ex = ", ".join(token_label(t, 12) for t in exemplars[int(c)][:5])
            fig.add_trace(go.Scattergl(
                x=xy[sel, 0], y=xy[sel, 1], mode="markers", name=f"cluster {int(c)} ({sel.size})",
                text=[toks[i] for i in sel], marker=dict(size=5, opacity=0.75, color=_cluster_color(int(c))),
                hovertemplate=f"%{{text}}<br>cluster {int(c)}" + (f" — e.g. {ex}" if ex else "") + "<extra></extra>"))
    fig.update_layout(**_LAYOUT, title=f"{len(toks):,} tokens in 2-D ({method}"
                                       f"{', unit-normalised' if projection.normalized else ''})",
                      xaxis_title=axis[0], yaxis_title=axis[1], height=560,
                      legend=dict(itemsizing="constant", font=dict(size=10)))
    return fig


def _cluster_color(c: int) -> str:
    extra = ("#999999", "#8c564b", "#17becf", "#bcbd22", "#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
             "#9467bd", "#e377c2", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5")
    palette = PALETTE[:7] + extra
    return palette[c % len(palette)]


def norm_frequency_chart(nf) -> go.Figure:
    """Token-embedding norm against corpus frequency (`NormFrequency`): a sample and the per-bin mean."""
    fig = go.Figure()
    fig.add_trace(go.Scattergl(x=np.asarray(nf.sample_counts, dtype=float), y=nf.sample_norms, mode="markers",
                               name="tokens (sample)", marker=dict(size=4, opacity=0.4, color=PALETTE[0]),
                               hovertemplate="count %{x:,.0f}<br>norm %{y:.4g}<extra></extra>"))
    edges = np.asarray(nf.bin_edges, dtype=float)
    centres = 10 ** ((edges[:-1] + edges[1:]) / 2)
    fig.add_trace(go.Scatter(x=centres, y=nf.bin_mean_norm, mode="lines+markers", name="mean per frequency bin",
                             line=dict(color=PALETTE[3], width=2),
                             hovertemplate="≈ %{x:,.0f} occurrences<br>mean norm %{y:.4g}<extra></extra>"))
    fig.update_xaxes(**LOG_AXIS, title_text="occurrences in the corpus (log)")
    fig.update_layout(**_LAYOUT, yaxis_title="‖embedding‖", height=420,
                      title=f"Norm vs frequency: Spearman ρ = {nf.rho_seen:.3f} over {nf.n_seen:,} seen tokens",
                      legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))
    return fig


def position_cosine_heatmap(pos) -> go.Figure:
    """Cosine similarity between position embeddings (`PositionEmbeddings.cos_matrix`)."""
    p = np.asarray(pos.cos_positions)
    fig = go.Figure(go.Heatmap(z=np.asarray(pos.cos_matrix, dtype=float), x=p, y=p, colorscale="RdBu_r", zmid=0,
                               colorbar=dict(title="cos"),
                               hovertemplate="positions %{y} and %{x}<br>cos = %{z:.3f}<extra></extra>"))
    fig.update_xaxes(title_text="position")
    fig.update_yaxes(title_text="position", autorange="reversed")
    fig.update_layout(**_LAYOUT, height=460, title=f"Position × position cosine ({pos.n_positions} positions, "
                                                   f"{'learned' if pos.learned else 'fixed'} table)")
    return fig


def position_norms_chart(pos) -> go.Figure:
    """Norm of each position embedding and the cosine between neighbouring positions."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("‖position embedding‖", "cos(position p, p + 1)"))
    fig.add_trace(go.Scatter(y=pos.norms, mode="lines", line=dict(color=PALETTE[0]), name="norm",
                             hovertemplate="position %{x}: %{y:.4g}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(y=pos.adjacent_cosine, mode="lines", line=dict(color=PALETTE[1]), name="cos",
                             hovertemplate="positions %{x}, %{x}+1: %{y:.4f}<extra></extra>"), row=1, col=2)
    fig.update_xaxes(title_text="position")
    fig.update_layout(**_LAYOUT, height=340, showlegend=False)
    return fig


def contextual_layers_chart(ctx_emb) -> go.Figure:
    """Per layer: mean pairwise cosine between the text's tokens and each token's similarity to the next layer."""
    L1 = len(ctx_emb.mean_pairwise_cosine)
    fig = go.Figure([
        go.Scatter(x=list(range(L1)), y=ctx_emb.mean_pairwise_cosine, mode="lines+markers",
                   name="mean cosine between tokens", line=dict(color=PALETTE[0])),
        go.Scatter(x=list(range(L1)), y=ctx_emb.mean_self_sim_final, mode="lines+markers",
                   name="cosine of a token with its last-layer self", line=dict(color=PALETTE[1])),
        go.Scatter(x=[i + 0.5 for i in range(L1 - 1)], y=ctx_emb.mean_self_sim_next, mode="lines+markers",
                   name="cosine of a token with itself one layer up", line=dict(color=PALETTE[2], dash="dot")),
    ])
    fig.update_xaxes(title_text="layer (0 = embedding output)", dtick=1)
    fig.update_layout(**_LAYOUT, yaxis_title="cosine", height=400, title="How the text's token vectors evolve",
                      legend=dict(orientation="h", y=-0.25))
    return fig


def token_cosine_heatmap(ctx_emb, layer: int, max_tokens: int = 120) -> go.Figure:
    """Token × token cosine of the text's vectors at one layer."""
    n = min(len(ctx_emb.tokens), max_tokens)
    labels = _indexed_labels(ctx_emb.tokens[:n])
    z = np.round(np.asarray(ctx_emb.token_cosine[layer], dtype=float)[:n, :n], 4)
    fig = go.Figure(go.Heatmap(z=z, x=labels, y=labels, colorscale="RdBu_r", zmid=0, zmin=-1, zmax=1,
                               colorbar=dict(title="cos"),
                               hovertemplate="%{y}<br>%{x}<br>cos = %{z:.3f}<extra></extra>"))
    font = dict(size=10 if n < 60 else 8)
    fig.update_xaxes(type="category", tickangle=-60, tickfont=font)
    fig.update_yaxes(type="category", autorange="reversed", tickfont=font)
    fig.update_layout(**_LAYOUT, height=min(900, max(420, 14 * n + 200)),
                      title=f"Cosine between the text's tokens at layer {layer}")
    return fig


# --------------------------------------------------------------------------- foundations (seed experiments)


def sigma_vs_dim_chart(res) -> go.Figure:
    """Seed 003: σ(QKᵀ) of Gaussian Q, K against √d, and after dividing by √d (`SigmaVsDim`)."""
    sq = np.asarray(res.sqrt_d, dtype=float)
    fig = go.Figure([
        go.Scatter(x=sq, y=res.sigma_qk, mode="markers", name="σ(QKᵀ) measured", marker=dict(color=PALETTE[0], size=6),
                   customdata=res.dims, hovertemplate="d = %{customdata}<br>σ = %{y:.3f}<extra></extra>"),
        go.Scatter(x=sq, y=sq, mode="lines", name="√d (prediction)", line=dict(color="#444", dash="dash")),
        go.Scatter(x=sq, y=res.sigma_scaled, mode="markers", name="σ(QKᵀ / √d)", marker=dict(color=PALETTE[1], size=6),
                   customdata=res.dims, hovertemplate="d = %{customdata}<br>σ scaled = %{y:.3f}<extra></extra>"),
    ])
    fig.update_layout(**_LAYOUT, title=f"σ(QKᵀ) against √d ({res.n} × d Gaussian Q, K; seed {res.seed})",
                      xaxis_title="√d", yaxis_title="standard deviation", height=420,
                      legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))
    return fig


def softmax_scaling_chart(res) -> go.Figure:
    """Seed 003: one row of QKᵀ through softmax and −log softmax, unscaled vs divided by √d (`SoftmaxScaling`)."""
    k = np.arange(res.n)
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        f"softmax: max p {res.max_prob:.2f} unscaled vs {res.max_prob_scaled:.2f} scaled",
        "−log softmax (nats)"))
    for col, (a, b) in ((1, (res.softmax, res.softmax_scaled)), (2, (res.neg_log_softmax, res.neg_log_softmax_scaled))):
        fig.add_trace(go.Bar(x=k, y=a, name="unscaled QKᵀ", marker_color=PALETTE[3], legendgroup="u",
                             showlegend=col == 1), row=1, col=col)
        fig.add_trace(go.Bar(x=k, y=b, name="QKᵀ / √d", marker_color=PALETTE[0], legendgroup="s",
                             showlegend=col == 1), row=1, col=col)
    fig.update_xaxes(title_text="key")
    fig.update_layout(**_LAYOUT, barmode="group", height=380, title=f"Row {res.row} of QKᵀ (n = {res.n}, d = {res.d})")
    return fig


def temperature_chart(res) -> go.Figure:
    """Entropy and max probability of softmax(z / T) over T, with the chosen T marked (`TemperatureResult`)."""
    t = np.asarray(res.curve_temperatures, dtype=float)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=t, y=np.asarray(res.curve_entropy) / res.max_entropy, name="entropy / log n",
                             line=dict(color=PALETTE[0])), secondary_y=False)
    fig.add_trace(go.Scatter(x=t, y=res.curve_max_prob, name="max probability", line=dict(color=PALETTE[3])),
                  secondary_y=True)
    # On a log axis a shape takes the value itself but an annotation takes log10 of it: place both by hand.
    marks = [(res.temperature, "dash", "#444", f"T = {res.temperature:.3g}", 1.0)]
    if res.scaling_temperature:
        marks.append((res.scaling_temperature, "dot", PALETTE[2], f"T = √d = {res.scaling_temperature:.3g}", 0.08))
    for x, dash, color, text, y in marks:
        fig.add_shape(type="line", x0=x, x1=x, y0=0, y1=1, xref="x", yref="paper", line=dict(dash=dash, color=color))
        fig.add_annotation(x=math.log10(x), y=y, xref="x", yref="paper", text=text, showarrow=False,
                           xanchor="left", yanchor="top" if y > 0.5 else "bottom", font=dict(color=color))
    lo, hi = float(np.nanmin(t)), float(np.nanmax(t))
    fig.update_xaxes(**LOG_AXIS, title_text="temperature T", range=[math.log10(lo), math.log10(hi)])
    fig.update_yaxes(title_text="entropy / log n", range=[0, 1.05], secondary_y=False)
    fig.update_yaxes(title_text="max probability", range=[0, 1.05], secondary_y=True)
    fig.update_layout(**_LAYOUT, height=380, title="Softmax temperature: saturation (left) to uniform (right)",
                      legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))
    return fig


def loss_race_chart(race) -> go.Figure:
    """Seed 001: the parameter under SGD with each loss (`LossRace`), target dashed."""
    fig = go.Figure()
    for i, run in enumerate(race.runs):
        fig.add_trace(go.Scatter(y=run.predictions, mode="lines+markers", name=run.loss.upper() if run.loss != "huber"
                                 else "Huber", marker=dict(size=4), line=dict(color=PALETTE[i % len(PALETTE)]),
                                 hovertemplate="step %{x}<br>prediction %{y:.4f}<extra></extra>"))
    fig.add_hline(y=race.target, line_dash="dash", line_color="#444", annotation_text=f"target {race.target:g}")
    fig.update_layout(**_LAYOUT, height=400, xaxis_title="SGD step", yaxis_title="prediction",
                      title=f"One parameter from {race.start:g} to {race.target:g}, SGD lr {race.lr:g}")
    return fig


def gaussian_kl_chart(res) -> go.Figure:
    """Seed 004: the two Gaussian densities of a `GaussianKL`, with both KL directions in the title."""
    fig = go.Figure([
        go.Scatter(x=res.grid, y=res.pdf_p, name=f"P = N({res.mu_p:g}, {res.sigma_p:g}²)", fill="tozeroy",
                   line=dict(color=PALETTE[0])),
        go.Scatter(x=res.grid, y=res.pdf_q, name=f"Q = N({res.mu_q:g}, {res.sigma_q:g}²)", fill="tozeroy",
                   line=dict(color=PALETTE[1])),
    ])
    fig.update_layout(**_LAYOUT, height=360, xaxis_title="x", yaxis_title="density",
                      title=f"KL(P‖Q) = {res.kl_pq:.4f} nats, KL(Q‖P) = {res.kl_qp:.4f} nats")
    return fig


def discrete_kl_chart(res) -> go.Figure:
    """Seed 004: two discrete distributions side by side and the per-outcome terms p·log(p/q) (`DiscreteKL`)."""
    x = [str(i) for i in range(len(res.p))]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("p and q", "terms p·log(p/q) of KL(p‖q)"))
    fig.add_trace(go.Bar(x=x, y=res.p, name="p", marker_color=PALETTE[0]), row=1, col=1)
    fig.add_trace(go.Bar(x=x, y=res.q, name="q", marker_color=PALETTE[1]), row=1, col=1)
    fig.add_trace(go.Bar(x=x, y=res.kl_pq_terms, name="p·log(p/q)", marker_color=PALETTE[2]), row=1, col=2)
    fig.update_xaxes(title_text="outcome")
    fig.update_layout(**_LAYOUT, height=340, barmode="group")
    return fig


# --------------------------------------------------------------------------- compare


def divergence_chart(div) -> go.Figure:
    """Per compared position: Jensen–Shannon and both KL directions between A and B (`TokenDivergence`)."""
    pos = np.asarray(div.positions)
    labels = [token_label(div.tokens[int(p)]) for p in pos]
    fig = go.Figure([
        go.Bar(x=pos, y=div.js_nats, name="JS", marker_color=PALETTE[2], customdata=labels,
               hovertemplate="%{customdata} (%{x})<br>JS %{y:.4f} nats<extra></extra>"),
        go.Scatter(x=pos, y=div.kl_ab_nats, name="KL(A‖B)", mode="markers", marker=dict(color=PALETTE[0], size=5),
                   customdata=labels, hovertemplate="%{customdata} (%{x})<br>KL(A‖B) %{y:.4f}<extra></extra>"),
        go.Scatter(x=pos, y=div.kl_ba_nats, name="KL(B‖A)", mode="markers", marker=dict(color=PALETTE[3], size=5),
                   customdata=labels, hovertemplate="%{customdata} (%{x})<br>KL(B‖A) %{y:.4f}<extra></extra>"),
    ])
    fig.add_hline(y=math.log(2), line_dash="dot", line_color="#888", annotation_text="ln 2 (JS maximum)")
    fig.update_layout(**_LAYOUT, height=380, xaxis_title="token position", yaxis_title="nats",
                      title="How differently A and B predict each token",
                      legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))
    return fig


def layer_drift_chart(drift) -> go.Figure:
    """Relative parameter change ‖ΔΘ‖/‖Θ_A‖ per layer and component (`ParameterDrift`)."""
    z = np.asarray(drift.layer_component_rel_change, dtype=float)  # (L, C)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.12,
                        subplot_titles=("whole block", "by component"))
    fig.add_trace(go.Bar(x=list(range(drift.n_layers)), y=drift.layer_rel_change, marker_color=PALETTE[0],
                         name="block", hovertemplate="layer %{x}<br>‖ΔΘ‖/‖Θ_A‖ = %{y:.4g}<extra></extra>"),
                  row=1, col=1)
    fig.add_trace(go.Heatmap(z=z, x=list(drift.components), y=list(range(drift.n_layers)), colorscale="Viridis",
                             colorbar=dict(title="rel. change"),
                             texttemplate="%{z:.3f}" if z.size <= 200 else None,
                             hovertemplate="layer %{y}, %{x}<br>‖ΔΘ‖/‖Θ_A‖ = %{z:.4g}<extra></extra>"), row=1, col=2)
    fig.update_xaxes(title_text="layer", dtick=1, row=1, col=1)
    fig.update_yaxes(title_text="‖ΔΘ‖ / ‖Θ_A‖", row=1, col=1)
    fig.update_yaxes(title_text="layer", dtick=1, autorange="reversed", row=1, col=2)
    fig.update_layout(**_LAYOUT, height=max(340, 30 * drift.n_layers + 160), showlegend=False,
                      title=f"Parameter drift from A to B (total {drift.total_rel_change:.3g})")
    return fig


def attention_comparison_heatmaps(att) -> go.Figure:
    """σ(QKᵀ) of B against A per layer × head: colour = log2(σ_B / σ_A), cells print σ_B / σ_A."""
    ratio = np.asarray(att.std_ratio, dtype=float)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.16, subplot_titles=(
        "σ(QKᵀ)·scaling of A (softmax input)", "σ_B / σ_A"))
    fig.add_trace(_ratio_heatmap(att.std_scaled_a, 1.0, name="σ scaled (A)", colorbar_x=0.42), row=1, col=1)
    fig.add_trace(_ratio_heatmap(ratio, 1.0, name="σ_B / σ_A", colorbar_x=1.0), row=1, col=2)
    for c in (1, 2):
        fig.update_xaxes(title_text="head", dtick=1, row=1, col=c)
        fig.update_yaxes(title_text="layer", dtick=1, autorange="reversed", row=1, col=c)
    fig.update_layout(**_LAYOUT, height=max(320, 34 * att.n_layers + 160))
    return fig


# --------------------------------------------------------------------------- per-token values


def token_bar_chart(tokens: Sequence[str], values: Sequence[float | None], *, title: str, y_title: str,
                    color: str = PALETTE[1], signed: bool = False, reference: float | None = None,
                    reference_label: str = "") -> go.Figure:
    """One bar per token (x = position with the token as tick label; hover shows both)."""
    vals = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    labels = [token_label(t) for t in tokens]
    colors = np.where(vals >= 0, PALETTE[3], PALETTE[0]).tolist() if signed else color
    n = len(labels)
    fig = go.Figure(go.Bar(
        x=list(range(n)), y=vals, marker_color=colors, customdata=labels,
        hovertemplate="token %{x}: %{customdata}<br>%{y:.4g}<extra></extra>"))
    vals_t, ticks = token_ticks(tokens)  # every token up to 64, else an interval (hover shows each)
    fig.update_xaxes(tickmode="array", tickvals=vals_t, ticktext=ticks, tickangle=-60, tickfont=dict(size=9),
                     title_text="token" if n <= 64 else "token (every few labelled; hover for each)")
    if reference is not None and math.isfinite(reference):
        fig.add_hline(y=reference, line_dash="dash", line_color="#444", annotation_text=reference_label,
                      annotation_position="top left")
    fig.update_layout(**_LAYOUT, title=title, yaxis_title=y_title, height=380, bargap=0.15)
    return fig


def attribution_bar_chart(result) -> go.Figure:
    """Per-token attribution scores of an `AttributionResult` (signed: red raises the target)."""
    return token_bar_chart(
        result.tokens, result.scores, signed=result.scores_signed,
        title=f"Attribution per token — {result.target}", y_title=f"score ({result.units.split(' (')[0]})")


# --------------------------------------------------------------------------- helpers


def _empty(message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=html.escape(message, quote=False), showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(**_LAYOUT, height=200, xaxis_visible=False, yaxis_visible=False)
    return fig


# --------------------------------------------------------------------------- declared charts (inspector.analysis.Chart)

# Shared with svg_charts.chart_svg: the same palette, titles and log axes ticked at powers of ten.


def chart_figure(chart) -> go.Figure:
    """Plotly figure of a declared `inspector.analysis.Chart` (the reports draw the same chart as SVG)."""
    fig = go.Figure()
    if chart.kind == "heatmap":
        z = np.asarray(chart.z, dtype=float)
        if not z.size:
            return _empty(f"{chart.title}: no data")
        # positional axes with the labels as tick text: a label that repeats (a token) keeps its own row / column
        cols = [html.escape(str(c), quote=False) for c in chart.col_labels] or [str(j) for j in range(z.shape[1])]
        rows = [html.escape(str(r), quote=False) for r in chart.row_labels] or [str(i) for i in range(z.shape[0])]
        hover = [[f"{r}<br>{c}" for c in cols] for r in rows]
        fig.add_trace(go.Heatmap(z=z, x=list(range(len(cols))), y=list(range(len(rows))), customdata=hover,
                                 colorscale="RdBu_r" if chart.signed else "Viridis",
                                 zmid=0.0 if chart.signed and chart.zmin is None else None,
                                 zmin=chart.zmin, zmax=chart.zmax,
                                 colorbar=dict(title=chart.colorbar_title),
                                 hovertemplate="%{customdata}<br>%{z:.4g}<extra></extra>"))
        fig.update_xaxes(tickmode="array", tickvals=list(range(len(cols))), ticktext=cols, tickangle=-60,
                         tickfont=dict(size=9))
        fig.update_yaxes(tickmode="array", tickvals=list(range(len(rows))), ticktext=rows, autorange="reversed")
        height = max(320, 28 * len(chart.row_labels) + 200)
    elif chart.kind == "histogram":
        name, edges, counts = chart.series[0] if chart.series else ("", (0.0, 1.0), ())
        edges = np.asarray(edges, dtype=float)
        fig.add_trace(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=list(counts), width=np.diff(edges), name=name,
                             marker_color=PALETTE[0], hovertemplate="%{x:.4g}: %{y}<extra></extra>"))
        for label, x in chart.markers:
            fig.add_vline(x=float(x), line_dash="dash", line_color="#555", annotation_text=html.escape(label))
        if chart.log_y:
            fig.update_yaxes(**LOG_AXIS)
        fig.update_layout(bargap=0, showlegend=False)
        height = 380
    else:
        for i, (name, xs, ys) in enumerate(chart.series):
            color = PALETTE[i % len(PALETTE)]
            if chart.kind == "bar":  # positional x: a label that repeats (a token) keeps its own bar
                fig.add_trace(go.Bar(x=list(range(len(xs))), y=list(ys), name=name, marker_color=color,
                                     customdata=[html.escape(str(x), quote=False) for x in xs],
                                     hovertemplate="%{customdata}: %{y:.4g}<extra></extra>"))
                fig.update_xaxes(tickmode="array", tickvals=list(range(len(xs))),
                                 ticktext=[html.escape(str(x), quote=False) for x in xs])
            else:
                fig.add_trace(go.Scatter(x=list(xs), y=list(ys), mode="lines+markers" if chart.points else "lines",
                                         name=name, line=dict(color=color)))
        if chart.reference is not None:
            fig.add_hline(y=float(chart.reference), line_dash="dash", line_color="#555",
                          annotation_text=html.escape(chart.reference_label))
        if chart.log_y:
            fig.update_yaxes(**LOG_AXIS)
        fig.update_layout(legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))
        height = 380
    fig.update_layout(**_LAYOUT, title=chart.title, xaxis_title=chart.x_title, yaxis_title=chart.y_title,
                      height=height)
    return fig
