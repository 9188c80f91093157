"""Plotly figures the notebooks share (the notebooks only arrange them)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.colors
import plotly.graph_objects as go


def lattice_z(counts: np.ndarray, valid: np.ndarray | None = None, labels: np.ndarray | None = None) -> np.ndarray:
    """Heatmap values [L, T] of one sequence's lattice ``counts`` [T, L]: the count, or with ``labels``
    [T, L] a colour position in (0, 1] per avalanche id; empty and masked sites NaN (blank)."""
    z = counts.astype(float).T.copy()  # [L, T]
    if labels is not None:
        # golden-ratio hues: neighbouring ids get distant colours
        z = np.where(labels.T > 0, (labels.T * 0.6180339887) % 1.0 + 1e-3, 0.0)
    if valid is not None:
        z[:, ~np.asarray(valid, bool)] = np.nan
    z[z == 0] = np.nan  # empty sites blank: events stand out
    return z


def lattice_hover(counts: np.ndarray, tokens: Sequence[str], labels: np.ndarray | None = None) -> list[list[str]]:
    """Hover text [L][T] of one sequence's lattice ``counts`` [T, L] (and avalanche ids ``labels``).

    Tokens are shown as Python string literals of plain ``str`` (a numpy string's repr would read
    ``np.str_('...')``)."""
    T, L = counts.shape
    tokens = [str(t) for t in tokens]
    ids = (lambda t, l: f"<br>avalanche {labels[t, l]}" if labels[t, l] else "") if labels is not None else \
        (lambda t, l: "")
    return [[f"t={t} {tokens[t]!r}<br>layer {l}<br>spikes {counts[t, l]}{ids(t, l)}" for t in range(T)]
            for l in range(L)]


def lattice_heatmap(counts: np.ndarray, tokens: Sequence[str], valid: np.ndarray | None = None,
                    title: str = "", labels: np.ndarray | None = None) -> go.Figure:
    """Token × layer heatmap of one sequence's spike counts ``counts`` [T, L].

    Tokens run along x (their strings as tick labels; the axis is numeric so repeated tokens stay
    apart), layers along y. Masked sites are blank. With ``labels`` [T, L] (avalanche ids) the colour
    is the avalanche id and the hover shows the count and the id.
    """
    T, L = counts.shape
    fig = go.Figure(go.Heatmap(
        z=lattice_z(counts, valid, labels), x=list(range(T)), y=list(range(L)),
        text=lattice_hover(counts, tokens, labels), hoverinfo="text",
        # avalanche colours on a fixed [0, 1] scale, so an id keeps its colour when others change
        zmin=None if labels is None else 0.0, zmax=None if labels is None else 1.0,
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


def ccdf(samples: dict[str, np.ndarray], title: str, xaxis: str,
         fits: dict[str, tuple[float, float]] | None = None) -> go.Figure:
    """Empirical complementary CDFs P(X >= x) on log-log axes, one trace per key.

    ``fits``: per key a discrete power law ``(alpha, xmin)`` drawn (dotted, same colour) over
    x >= xmin as ``P(X >= xmin) * zeta(alpha, x) / zeta(alpha, xmin)``.
    """
    from scipy.special import zeta

    fig = go.Figure()
    colours = plotly.colors.qualitative.Plotly
    for i, (name, x) in enumerate(samples.items()):
        x = np.sort(np.asarray(x))
        if len(x) == 0:
            continue
        colour = colours[i % len(colours)]
        values, first = np.unique(x, return_index=True)
        fig.add_trace(go.Scatter(x=values, y=1.0 - first / len(x), mode="lines", line_shape="hv", name=name,
                                 line_color=colour))
        alpha, xmin = (fits or {}).get(name, (np.nan, np.nan))
        if np.isfinite(alpha) and np.isfinite(xmin):
            grid = np.unique(np.geomspace(xmin, values[-1], 60).round())
            tail = np.mean(x >= xmin) * zeta(alpha, grid) / zeta(alpha, xmin)
            fig.add_trace(go.Scatter(x=grid, y=tail, mode="lines", line=dict(color=colour, dash="dot"),
                                     name=f"{name}: fit α={alpha:.2f}, xmin={xmin:g}"))
    fig.update_layout(title=title, xaxis_title=xaxis, yaxis_title="P(X ≥ x)", height=400)
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    return fig


NULL_NAMES = {"n1": "N1 token permutation", "n2": "N2 circular shift", "n3": "N3 curveball"}


def null_bands(rows, direction: str, title: str) -> go.Figure:
    """Observed ``b_<direction>`` vs g with each null's 95% band (rows of the sweep table, sorted by g)."""
    fig = go.Figure()
    g = rows["g"].to_numpy()
    for null, name in NULL_NAMES.items():
        lo, hi = rows[f"{null}_b_{direction}_lo"].to_numpy(), rows[f"{null}_b_{direction}_hi"].to_numpy()
        fig.add_trace(go.Scatter(x=np.r_[g, g[::-1]], y=np.r_[hi, lo[::-1]], fill="toself", opacity=0.25,
                                 line_width=0, name=f"{name} 95%"))
        fig.add_trace(go.Scatter(x=g, y=rows[f"{null}_b_{direction}_mean"], mode="lines", line_dash="dot",
                                 name=f"{name} mean"))
    fig.add_trace(go.Scatter(x=g, y=rows[f"b_{direction}"], mode="lines+markers", name="observed",
                             line=dict(color="black")))
    fig.update_layout(title=title, xaxis_title="g", yaxis_title=f"b_{direction}", height=420)
    return fig


def delta_b(rows, title: str) -> go.Figure:
    """delta-b (observed minus null mean) vs g for every direction and null."""
    fig = go.Figure()
    for direction in ("time", "depth", "diag", "tot"):
        for null in NULL_NAMES:
            fig.add_trace(go.Scatter(x=rows["g"], y=rows[f"delta_b_{direction}_{null}"], mode="lines+markers",
                                     name=f"{direction} · {null}"))
    fig.add_hline(y=0, line_color="gray")
    fig.update_layout(title=title, xaxis_title="g", yaxis_title="delta-b", height=420)
    return fig


def _gain_marker(fig: go.Figure, g: float, label: str) -> None:
    fig.add_vline(x=g, line_dash="dot", line_color="grey", annotation_text=label, annotation_position="top")


def gstar_evidence(evidence, picks: dict[str, float], rule: str) -> go.Figure:
    """The three g* criteria vs g (Dataset A) with ±1 bootstrap SE, one panel each, g* marked."""
    from plotly.subplots import make_subplots

    cols = (("abs_b_tot_minus_1", "|b_tot − 1|"), ("chi_perc", "chi_perc"), ("z_tot_n1", "delta-b z (N1)"))
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t in cols])
    for i, (col, _) in enumerate(cols, 1):
        fig.add_trace(go.Scatter(x=evidence.g, y=evidence[col], mode="lines+markers", showlegend=False,
                                 error_y=dict(type="data", array=evidence[f"{col}_se"])), row=1, col=i)
    fig.add_vline(x=picks[rule], line_dash="dot", line_color="crimson")
    fig.update_layout(title=f"g* criteria on Dataset A (±1 bootstrap SE); g* = {picks[rule]:g} by {rule}; "
                            f"all rules: {picks}", height=380)
    fig.update_xaxes(title_text="g")
    return fig


def perplexity(table, gstar: float) -> go.Figure:
    """Dataset B perplexity vs g, g = 1 and g* marked."""
    fig = go.Figure(go.Scatter(x=table.g, y=table.perplexity, mode="lines+markers", name="perplexity"))
    _gain_marker(fig, gstar, "g*")
    fig.update_layout(title="Dataset B perplexity vs gain", xaxis_title="g", yaxis_title="perplexity",
                      yaxis_type="log", height=380)
    return fig


def arc_accuracy(acc, gstar: float) -> go.Figure:
    """ARC acc and acc_norm vs g per subset with bootstrap 95% CIs, chance level dashed, g* marked."""
    fig = go.Figure()
    colours = plotly.colors.qualitative.Plotly
    for i, (subset, sel) in enumerate(acc.groupby("subset", sort=False)):
        sel = sel.sort_values("g")
        for metric, dash in (("acc", "solid"), ("acc_norm", "dot")):
            fig.add_trace(go.Scatter(
                x=sel.g, y=sel[metric], mode="lines+markers", name=f"{subset} {metric}",
                line=dict(color=colours[i % len(colours)], dash=dash),
                error_y=dict(type="data", symmetric=False, array=sel[f"{metric}_hi"] - sel[metric],
                             arrayminus=sel[metric] - sel[f"{metric}_lo"])))
        fig.add_trace(go.Scatter(x=sel.g, y=sel.chance, mode="lines", line=dict(color=colours[i % len(colours)],
                                 dash="dash", width=1), name=f"{subset} chance"))
    _gain_marker(fig, gstar, "g*")
    fig.update_layout(title="ARC accuracy vs gain (bootstrap 95% CIs)", xaxis_title="g", yaxis_title="accuracy",
                      height=420)
    return fig


def ma_profile(profile, me: dict, title: str) -> go.Figure:
    """Top-1/2/3 and median |h| per layer on a log axis (layer -1 = embeddings), the ME layer marked."""
    fig = go.Figure()
    for col in ("top1", "top2", "top3", "median"):
        if col in profile:
            fig.add_trace(go.Scatter(x=profile.layer, y=profile[col], mode="lines+markers", name=col,
                                     line=dict(dash="dot" if col == "median" else "solid")))
    if me.get("me_layer") is not None:
        fig.add_vline(x=me["me_layer"], line_dash="dot", line_color="crimson", annotation_text="ME layer")
    fig.update_layout(title=title, xaxis_title="layer output (-1: embeddings)", yaxis_title="|h|",
                      yaxis_type="log", height=380)
    return fig


def layer_head_heatmap(table, value: str, title: str, diverging: bool = False) -> go.Figure:
    """Layer × head heatmap of ``table[value]`` (rows: layer, head)."""
    grid = table.pivot(index="layer", columns="head", values=value)
    fig = go.Figure(go.Heatmap(z=grid.values, x=grid.columns, y=grid.index, colorbar=dict(title=value),
                               colorscale="RdBu_r" if diverging else "Viridis", zmid=0 if diverging else None))
    fig.update_layout(title=title, xaxis_title="head", yaxis_title="layer", height=420)
    return fig


def ratio_by_layer(table, group: Sequence[str], title: str, me_layer: int | None = None,
                   threshold: float | None = None) -> go.Figure:
    """Top-1/median ratio per layer (log axis), one line per value combination of ``group`` columns."""
    fig = go.Figure()
    for key, sel in table.groupby(list(group), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        fig.add_trace(go.Scatter(x=sel.layer, y=sel.ratio, mode="lines",
                                 name=", ".join(f"{g}={k}" for g, k in zip(group, key))))
    if me_layer is not None:
        fig.add_vline(x=me_layer, line_dash="dot", line_color="crimson", annotation_text="ME layer")
    if threshold:
        fig.add_hline(y=threshold, line_dash="dash", line_color="grey", annotation_text="criterion")
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title="top-1 / median |h|", yaxis_type="log", height=420)
    return fig
