"""inspector.plots: every figure builds from real results of tiny models, and user text is always escaped."""
from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import pytest

from inspector import plots
from inspector.inputs import encode

HOSTILE = ["<script>alert(1)</script>", "<b>", "a & b", '"quoted"', "\n", " ", "", "<img src=x onerror=alert(1)>"]


def test_token_label_escapes_and_shows_whitespace():
    assert plots.token_label("<b>") == "&lt;b&gt;"
    assert plots.token_label("a & b") == "a &amp; b"
    assert plots.token_label("\n") == "↵"
    assert plots.token_label("  ") == "··"
    assert plots.token_label("") == "∅"
    assert plots.token_label("x" * 100).endswith("…")


def test_colored_tokens_html_escapes_every_token():
    out = plots.colored_tokens_html(HOSTILE, [1.0, None, 0.5, float("nan"), 2.0, 0.0, 1.0, 3.0],
                                    value_name="<loss>", unit="<u>")
    assert "<script" not in out and "<img" not in out and "<b>" not in out and "<loss>" not in out
    assert "&lt;script&gt;" in out and "&amp;" in out
    assert out.count("<span ") == len(HOSTILE)


def test_colored_tokens_signed_colours():
    out = plots.colored_tokens_html(["up", "down"], [1.0, -1.0], signed=True)
    assert "rgba(178,24,43" in out and "rgba(33,102,172" in out


def _json(fig: go.Figure) -> go.Figure:
    """The figure itself, after checking it serialises (what Streamlit sends to the browser)."""
    assert isinstance(fig, go.Figure)
    json.loads(fig.to_json())
    return fig


def test_layernorm_figures(tiny_gpt2):
    from inspector.analyses import layernorm

    rep = layernorm.layernorm_stats(tiny_gpt2)
    fig = _json(plots.param_histogram(rep.pooled_gamma, "γ", band=rep.gamma_band))
    assert fig.layout.yaxis.type == "log"
    assert np.nansum(np.asarray(fig.data[0].y, dtype=float)) == rep.pooled_gamma.n
    assert len(_json(plots.norm_layer_ranges(rep)).data[0].x) == len(rep.layers)
    assert len(_json(plots.norm_histogram_heatmap(rep)).data[0].y) == len(rep.layers)
    acts = layernorm.layernorm_activations(tiny_gpt2, "The quick brown fox.")
    assert len(_json(plots.norm_activation_chart(acts)).data) == 2


def test_attention_figures(tiny_gpt2):
    from inspector.analyses import attention

    enc = encode(tiny_gpt2, "The quick brown fox <b> jumps & the the")
    rep = attention.attention_logit_report(tiny_gpt2, enc)
    fig = _json(plots.attention_sigma_heatmaps(rep, selected=(1, 2)))
    assert [t.type for t in fig.data] == ["heatmap", "scatter", "heatmap", "scatter"]  # heat map + click picker
    pick = fig.data[1]  # one picker square per cell, customdata = [layer, head] at x = head, y = layer
    cd = np.asarray(pick.customdata, dtype=int)
    assert (cd[:, 0] == np.asarray(pick.y)).all() and (cd[:, 1] == np.asarray(pick.x)).all()
    assert len(cd) == rep.n_layers * rep.n_heads
    assert any(sh.x0 == 1.5 and sh.y0 == 0.5 for sh in fig.layout.shapes)  # the selected cell is outlined
    np.testing.assert_allclose(np.asarray(fig.data[0].customdata, dtype=float), rep.std)  # cells show σ itself
    np.testing.assert_allclose(np.asarray(fig.data[0].z, dtype=float), np.log2(rep.std / rep.sqrt_d_head))
    for q in ("entropy_fraction", "max_prob", "ratio"):
        _json(plots.attention_heatmap(rep, q))
    pattern = attention.attention_pattern(tiny_gpt2, enc, 1, 2)
    fig = _json(plots.attention_pattern_heatmap(pattern))
    labels = list(fig.layout.xaxis.ticktext)  # positions on the axis, every token labelled (≤ 64)
    assert list(fig.layout.xaxis.tickvals) == list(range(enc.n_tokens))
    assert len(labels) == len(set(labels)) == enc.n_tokens  # repeated tokens keep their own column
    assert not any("<b>" in lab for lab in labels)
    many = plots.token_ticks([f"t{i}" for i in range(200)])
    assert many[0][:3] == [0, 5, 10] and len(many[0]) <= 48  # long texts: an interval, hover for each
    what_if = attention.scaling_what_if(tiny_gpt2, enc, 0)
    _json(plots.scaling_what_if_chart(what_if))


def test_embedding_and_token_figures(tiny_gpt2):
    from inspector.analyses import embeddings

    proj = embeddings.project_tokens(tiny_gpt2, n_tokens=None)
    clusters = embeddings.cluster_tokens(tiny_gpt2, 4, n_tokens=None)
    fig = _json(plots.embedding_scatter(proj, clusters.clusters.labels, clusters.exemplars))
    assert sum(len(t.x) for t in fig.data) == len(proj.tokens)
    assert len(fig.data) == 4
    pos = embeddings.position_embeddings(tiny_gpt2)
    _json(plots.position_cosine_heatmap(pos))
    _json(plots.position_norms_chart(pos))
    ce = embeddings.contextual_embeddings(tiny_gpt2, "The quick brown fox.")
    _json(plots.contextual_layers_chart(ce))
    _json(plots.token_cosine_heatmap(ce, 0))
    fig = _json(plots.token_bar_chart(["<a>", "b"], [1.0, None], title="t", y_title="nats"))
    assert list(fig.layout.xaxis.ticktext) == ["&lt;a&gt; (0)", "b (1)"]


@pytest.mark.parametrize("method", ["integrated_gradients", "saliency"])
def test_attribution_figure(tiny_gpt2, method):
    from inspector.analyses import attribution

    res = attribution.attribute(tiny_gpt2, "The quick brown fox jumps", method=method, steps=8)
    fig = _json(plots.attribution_bar_chart(res))
    assert len(fig.data[0].y) == res.n_tokens


def test_a_declared_chart_draws_the_same_data_in_plotly_and_svg():
    """One Chart declaration, two renderers: the same numbers, palette, title; labels escaped in both."""
    import re

    from inspector import svg_charts
    from inspector.analysis import Chart

    line = Chart("line", "Median rank <b>per</b> layer", x_title="layer", y_title="rank", log_y=True,
                 series=(("median rank", (0, 1, 2, 3), (4000.0, 300.0, 20.0, 2.0)),
                         ("<script>x</script>", (0, 1, 2, 3), (1.0, 5.0, 50.0, 500.0))))
    fig = plots.chart_figure(line)
    assert [list(t.y) for t in fig.data] == [[4000.0, 300.0, 20.0, 2.0], [1.0, 5.0, 50.0, 500.0]]
    assert [t.line.color for t in fig.data] == list(svg_charts.PALETTE[:2]) and plots.PALETTE is svg_charts.PALETTE
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis.dtick == 1  # ticks at 1, 10, 100, ...
    svg = svg_charts.chart_svg(line)
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "Median rank &lt;b&gt;per&lt;/b&gt; layer" in svg
    ticks = set(re.findall(r">(1|10|100|1000|10 ?k|1e\+?0?[34])<", svg))
    assert {"1", "10", "100"} <= ticks, ticks
    assert svg_charts.PALETTE[0] in svg and svg_charts.PALETTE[1] in svg

    heat = Chart("heatmap", "log10 rank", z=((0.0, 1.0), (2.0, 3.0)), row_labels=("embeddings", "block 1"),
                 col_labels=("0:<b>", "1:x"), colorbar_title="log10 rank", zmin=0.0)
    fig = plots.chart_figure(heat)
    np.testing.assert_array_equal(np.asarray(fig.data[0].z), [[0.0, 1.0], [2.0, 3.0]])
    assert list(fig.layout.xaxis.ticktext) == ["0:&lt;b&gt;", "1:x"]
    svg = svg_charts.chart_svg(heat)
    assert "0:&lt;b&gt;" in svg and "<b>" not in svg and "block 1" in svg
    with pytest.raises(ValueError):
        Chart("pie", "no")


def test_declared_bars_histograms_and_repeated_labels():
    """A token that occurs twice keeps two bars / two heatmap rows; histograms, markers and reference lines are
    drawn by both renderers."""
    from inspector import svg_charts
    from inspector.analysis import Chart

    bars = Chart("bar", "loss per token", series=(("loss", (" the", " cat", " the"), (1.0, 2.0, 3.0)),),
                 reference=2.0, reference_label="mean")
    fig = plots.chart_figure(bars)
    assert list(fig.data[0].y) == [1.0, 2.0, 3.0] and list(fig.data[0].x) == [0, 1, 2]
    assert list(fig.layout.xaxis.ticktext) == [" the", " cat", " the"]
    assert [s.y0 for s in fig.layout.shapes] == [2.0]
    assert "mean" in svg_charts.chart_svg(bars)

    heat = Chart("heatmap", "cosine", z=((1.0, 0.5), (0.5, 1.0)), row_labels=("a", "a"), col_labels=("a", "a"))
    fig = plots.chart_figure(heat)
    assert list(fig.data[0].y) == [0, 1] and list(fig.layout.yaxis.ticktext) == ["a", "a"]

    hist = Chart("histogram", "γ", series=(("γ", (0.0, 0.5, 1.0), (3, 7)),), markers=(("band lo", 0.2),),
                 log_y=True)
    fig = plots.chart_figure(hist)
    np.testing.assert_allclose(fig.data[0].x, [0.25, 0.75])
    assert list(fig.data[0].y) == [3, 7] and [s.x0 for s in fig.layout.shapes] == [0.2]
    assert fig.layout.yaxis.type == "log"
    svg = svg_charts.chart_svg(hist)
    assert "band lo" in svg and "γ" in svg

