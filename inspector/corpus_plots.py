"""Plotly figures of corpus results (the Corpus page) and SVG charts of the same data (reports)."""
from __future__ import annotations

import numpy as np

from .corpus import LOSS_EDGES, ModelCorpusResult

LABELS = {"std": "σ(QKᵀ) raw", "std_scaled": "σ(QKᵀ) scaled", "mean": "mean QKᵀ raw", "max": "max QKᵀ raw",
          "max_scaled": "max QKᵀ scaled", "entropy": "attention entropy (nats)",
          "entropy_fraction": "entropy / log(keys)", "max_prob": "largest probability", "sink_mass": "sink mass"}


def head_heatmap(values: np.ndarray, title: str):
    """(layers, heads) -> heatmap; a click selects a (layer, head) cell."""
    import plotly.graph_objects as go

    L, H = values.shape
    fig = go.Figure(go.Heatmap(z=values, x=[f"head {h}" for h in range(H)], y=[f"layer {i}" for i in range(L)],
                               colorscale="Viridis", hovertemplate="%{y}, %{x}: %{z:.4g}<extra></extra>"))
    fig.update_layout(title=title, height=120 + 40 * L, margin=dict(l=60, r=20, t=50, b=40),
                      yaxis=dict(autorange="reversed"), clickmode="event+select")
    return fig


def trajectory(steps, values, title: str, y_label: str):
    """One statistic against training step (x: step, or checkpoint index when steps are unknown)."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=list(steps), y=list(values), mode="lines+markers", name=y_label))
    fig.update_layout(title=title, xaxis_title="training step", yaxis_title=y_label, height=320,
                      margin=dict(l=60, r=20, t=50, b=40))
    return fig


def histogram(counts, edges, title: str, x_label: str):
    import plotly.graph_objects as go

    edges = np.asarray(edges, dtype=float)
    fig = go.Figure(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=np.asarray(counts), width=np.diff(edges),
                           name=x_label))
    fig.update_layout(title=title, xaxis_title=x_label, yaxis_title="count", height=300, bargap=0,
                      margin=dict(l=60, r=20, t=50, b=40))
    return fig


def loss_histogram(result: ModelCorpusResult):
    return histogram(result.state.loss_hist, LOSS_EDGES, f"Per-token loss — {result.spec}", "NLL (nats)")


def steps_of(results: list[ModelCorpusResult]) -> list:
    """Training step per result; the checkpoint index where a step is unknown."""
    steps = [r.step for r in results]
    return steps if all(s is not None for s in steps) else list(range(len(results)))
