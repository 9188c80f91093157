"""Plotly figures the notebooks share (the notebooks only arrange them)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go


def lattice_heatmap(counts: np.ndarray, tokens: Sequence[str], valid: np.ndarray | None = None,
                    title: str = "", labels: np.ndarray | None = None) -> go.Figure:
    """Token × layer heatmap of one sequence's spike counts ``counts`` [T, L].

    Tokens run along x (their strings as tick labels; the axis is numeric so repeated tokens stay
    apart), layers along y. Masked sites are blank. With ``labels`` [T, L] (avalanche ids) the colour
    is the avalanche id and the hover shows the count.
    """
    T, L = counts.shape
    z = counts.astype(float).T.copy()  # [L, T]
    if labels is not None:
        # golden-ratio hues: neighbouring ids get distant colours
        z = np.where(labels.T > 0, (labels.T * 0.6180339887) % 1.0 + 1e-3, 0.0)
    if valid is not None:
        z[:, ~valid] = np.nan
    z[z == 0] = np.nan  # empty sites blank: events stand out
    hover = [[f"t={t} {tokens[t]!r}<br>layer {l}<br>spikes {counts[t, l]}" for t in range(T)] for l in range(L)]
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(T)), y=list(range(L)), text=hover, hoverinfo="text",
        colorscale="Turbo" if labels is not None else "Viridis", showscale=labels is None,
        colorbar=dict(title="spikes")))
    step = max(1, T // 48)
    fig.update_layout(
        title=title, height=380 + 6 * L, margin=dict(l=50, r=20, t=50, b=110),
        xaxis=dict(tickmode="array", tickvals=list(range(0, T, step)), ticktext=list(tokens)[::step],
                   tickangle=-60, title="token"),
        yaxis=dict(title="layer"), plot_bgcolor="white")
    return fig


def per_layer(values: dict[str, np.ndarray], title: str, yaxis: str, log: bool = False) -> go.Figure:
    """Lines of per-layer values, one per key."""
    fig = go.Figure()
    for name, v in values.items():
        fig.add_trace(go.Scatter(x=np.arange(len(v)), y=v, mode="lines+markers", name=name))
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title=yaxis, height=380)
    if log:
        fig.update_yaxes(type="log")
    return fig


def ccdf(samples: dict[str, np.ndarray], title: str, xaxis: str) -> go.Figure:
    """Empirical complementary CDFs P(X >= x) on log-log axes, one trace per key."""
    fig = go.Figure()
    for name, x in samples.items():
        x = np.sort(np.asarray(x))
        if len(x) == 0:
            continue
        values, first = np.unique(x, return_index=True)
        fig.add_trace(go.Scatter(x=values, y=1.0 - first / len(x), mode="lines", line_shape="hv", name=name))
    fig.update_layout(title=title, xaxis_title=xaxis, yaxis_title="P(X ≥ x)", height=400)
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    return fig
