"""Plotly figures the notebooks share (the notebooks only arrange them), and :func:`show`, the one way a
phase notebook shows a figure: displayed as always, and exported into the phase's folder as
``figures/<name>.csv`` (its data) and, where Chromium runs, ``figures/<name>.svg`` and ``.png``."""

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


def rate_targets(thresholds: dict, spike_defs: Sequence[str]) -> go.Figure:
    """Per layer: the target neuron rate (one line: both spike definitions share the targets) with each
    spike definition's achieved rate as markers (log scale), and the rate-matched thresholds ``tau``."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("neuron firing rate per layer", "rate-matched threshold"))
    first = thresholds[spike_defs[0]]
    layers = np.arange(len(first.tau))
    fig.add_trace(go.Scatter(x=layers, y=first.target, mode="lines", name="target", line=dict(color="#999", width=6)),
                  row=1, col=1)
    for d, symbol in zip(spike_defs, ("circle", "x")):
        th = thresholds[d]
        fig.add_trace(go.Scatter(x=layers, y=th.rate, mode="markers", name=f"achieved ({d})",
                                 marker=dict(symbol=symbol, size=8)), row=1, col=1)
        fig.add_trace(go.Scatter(x=layers, y=th.tau, mode="lines+markers", name=f"tau ({d})"), row=1, col=2)
    fig.update_yaxes(type="log", title_text="rate (spikes per neuron and site)", row=1, col=1)
    fig.update_yaxes(title_text="tau (z units)", row=1, col=2)
    fig.update_xaxes(title_text="layer")
    fig.update_layout(height=420)
    return fig


def branching_per_layer(table) -> go.Figure:
    """``b_time`` and ``b_depth`` per layer (columns spike_def, layer, b_time, b_depth), one panel per
    spike definition on a shared y axis."""
    from plotly.subplots import make_subplots

    defs = list(dict.fromkeys(table.spike_def))
    fig = make_subplots(rows=1, cols=len(defs), shared_yaxes=True, subplot_titles=[f"{d} spikes" for d in defs])
    for j, d in enumerate(defs, 1):
        sel = table[table.spike_def == d]
        for col, colour in (("b_time", "#1f77b4"), ("b_depth", "#d62728")):
            fig.add_trace(go.Scatter(x=sel.layer, y=sel[col], mode="lines+markers", name=col, legendgroup=col,
                                     showlegend=j == 1, line_color=colour), row=1, col=j)
    fig.update_xaxes(title_text="layer")
    fig.update_yaxes(title_text="b (fraction of occupied sites)", row=1, col=1)
    fig.update_layout(title="co-occupancy branching per layer", height=400)
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
    """delta-b (observed minus null mean) vs g with the null's 95% interval around 0, one panel per
    direction (time, depth, diag, tot), one line per null: a reader follows three lines per panel."""
    from plotly.subplots import make_subplots

    directions = ("time", "depth", "diag", "tot")
    fig = make_subplots(rows=1, cols=4, shared_yaxes=True, subplot_titles=[f"b_{d}" for d in directions])
    colours = plotly.colors.qualitative.Plotly
    g = rows["g"].to_numpy()
    for j, d in enumerate(directions, 1):
        for i, (null, name) in enumerate(NULL_NAMES.items()):
            mean = rows[f"{null}_b_{d}_mean"].to_numpy()
            lo, hi = rows[f"{null}_b_{d}_lo"].to_numpy() - mean, rows[f"{null}_b_{d}_hi"].to_numpy() - mean
            fig.add_trace(go.Scatter(x=np.r_[g, g[::-1]], y=np.r_[hi, lo[::-1]], fill="toself", opacity=0.15,
                                     line_width=0, fillcolor=colours[i], showlegend=False, hoverinfo="skip",
                                     legendgroup=null), row=1, col=j)
            fig.add_trace(go.Scatter(x=g, y=rows[f"delta_b_{d}_{null}"], mode="lines+markers", name=name,
                                     legendgroup=null, showlegend=j == 1, line_color=colours[i]), row=1, col=j)
        fig.add_hline(y=0, line_color="gray", row=1, col=j)
    fig.update_xaxes(title_text="g")
    fig.update_yaxes(title_text="delta-b (observed − null mean)", row=1, col=1)
    fig.update_layout(title=title + " (band: the null's 95% interval around its mean)", height=420)
    return fig


def by_ablation(rows, column: str, title: str, yaxis: str) -> go.Figure:
    """``column`` vs g for every ablation (lines), one panel per spike definition, shared y axis."""
    from plotly.subplots import make_subplots

    defs = list(dict.fromkeys(rows.spike_def))
    fig = make_subplots(rows=1, cols=len(defs), shared_yaxes=True, subplot_titles=[f"{d} spikes" for d in defs])
    colours = plotly.colors.qualitative.Plotly
    for j, d in enumerate(defs, 1):
        for i, (a, sel) in enumerate(rows[rows.spike_def == d].groupby("ablation", sort=False)):
            sel = sel.sort_values("g")
            fig.add_trace(go.Scatter(x=sel.g, y=sel[column], mode="lines+markers", name=a, legendgroup=a,
                                     showlegend=j == 1, line_color=colours[i % len(colours)]), row=1, col=j)
    fig.update_xaxes(title_text="g")
    fig.update_yaxes(title_text=yaxis, row=1, col=1)
    fig.update_layout(title=title, height=420)
    return fig


def rate_vs_gain(rows) -> go.Figure:
    """Mean neuron rate vs g per spike definition: fixed thresholds (solid) move with g, rate-matched
    ones (dashed) stay on target."""
    fig = go.Figure()
    for (d, mode), sel in rows.groupby(["spike_def", "threshold_mode"]):
        fig.add_trace(go.Scatter(x=sel.g, y=sel.rate_mean, mode="lines+markers", name=f"{d} · {mode}",
                                 line_dash="dash" if mode == "rate_matched" else "solid"))
    fig.update_layout(title="mean neuron firing rate vs gain", xaxis_title="g",
                      yaxis_title="rate (spikes per neuron and site)", height=400)
    return fig


def crackling(rows) -> go.Figure:
    """The crackling exponent gamma vs g (bootstrap 95% CI) per spike definition, with the value the
    tail exponents predict (dotted)."""
    fig = go.Figure()
    colours = plotly.colors.qualitative.Plotly
    for i, (d, s) in enumerate(rows.groupby("spike_def", sort=False)):
        s = s.sort_values("g")
        fig.add_trace(go.Scatter(x=s.g, y=s.gamma, mode="lines+markers", name=f"{d}: gamma", line_color=colours[i],
                                 error_y=dict(type="data", symmetric=False, array=s.gamma_hi - s.gamma,
                                              arrayminus=s.gamma - s.gamma_lo)))
        fig.add_trace(go.Scatter(x=s.g, y=s.gamma_pred, mode="lines", line=dict(dash="dot", color=colours[i]),
                                 name=f"{d}: (alpha_D − 1)/(alpha_S − 1)"))
    fig.update_layout(title="crackling exponent vs g (rate-matched): E[size | D] ∝ D^gamma", xaxis_title="g",
                      yaxis_title="gamma", height=400)
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
    fig.update_layout(title=f"g* criteria on Dataset A (±1 bootstrap SE); g* = {picks[rule]:g} by {rule}",
                      height=380)
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


def layer_head_heatmap(table, value: str, title: str) -> go.Figure:
    """Layer × head heatmap of ``table[value]`` (rows: layer, head), one tick per layer and head."""
    grid = table.pivot(index="layer", columns="head", values=value)
    fig = go.Figure(go.Heatmap(z=grid.values, x=grid.columns, y=grid.index, colorbar=dict(title=value),
                               colorscale="Viridis"))
    fig.update_layout(title=title, height=420, xaxis=dict(title="head", dtick=1), yaxis=dict(title="layer", dtick=1))
    return fig


def sink_changes(sink, modes: Sequence[str], name: str) -> go.Figure:
    """Change of the attention-sink mass per layer × head under each MA edit (columns intervention, layer,
    head, sink), side by side on one symmetric colour scale: an edit that moves nothing stays blank
    instead of showing its numerical noise at full contrast."""
    from plotly.subplots import make_subplots

    base = sink[sink.intervention == "none"]
    grids = {}
    for mode in modes:
        edited = sink[sink.intervention == mode].merge(base, on=["layer", "head"], suffixes=("", "_none"))
        grids[mode] = (edited.assign(change=edited.sink - edited.sink_none)
                       .pivot(index="layer", columns="head", values="change"))
    zmax = max([float(np.nanmax(np.abs(g.values))) for g in grids.values()] + [1e-12])
    fig = make_subplots(rows=1, cols=len(grids), shared_yaxes=True,
                        subplot_titles=[f"{m} (max |change| {np.nanmax(np.abs(g.values)):.2g})" for m, g in grids.items()])
    for j, (mode, g) in enumerate(grids.items(), 1):
        fig.add_trace(go.Heatmap(z=g.values, x=g.columns, y=g.index, colorscale="RdBu_r", zmin=-zmax, zmax=zmax,
                                 showscale=j == len(grids), colorbar=dict(title="Δ sink")), row=1, col=j)
        fig.update_xaxes(title_text="head", dtick=1, row=1, col=j)
    fig.update_yaxes(title_text="layer", dtick=1, row=1, col=1)
    fig.update_layout(title=f"{name}: change of the attention mass on the first token (edited − unedited)", height=440)
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


def with_ci(table, x: str, y: str, group: str, title: str, yaxis: str, log: bool = False) -> go.Figure:
    """``y`` vs ``x`` with error bars from columns ``{y}_lo`` / ``{y}_hi``, one line per value of ``group``."""
    fig = go.Figure()
    for key, sel in table.groupby(group, sort=False):
        fig.add_trace(go.Scatter(x=sel[x], y=sel[y], mode="lines+markers", name=f"{group}={key}",
                                 error_y=dict(type="data", symmetric=False, array=sel[f"{y}_hi"] - sel[y],
                                              arrayminus=sel[y] - sel[f"{y}_lo"])))
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=yaxis, height=380)
    if log:
        fig.update_yaxes(type="log")
    return fig


def shares_vs_null(shares, title: str) -> go.Figure:
    """Observed share per (site set, measure) next to its N2 expectation, whose bar spans ± 1.96 null sd."""
    label = shares.site + " · " + shares.measure
    fig = go.Figure([go.Bar(x=label, y=shares.observed, name="observed"),
                     go.Bar(x=label, y=shares.null_mean, name="N2 expectation",
                            error_y=dict(type="data", array=1.96 * shares.null_sd))])
    fig.update_layout(title=title, yaxis_title="share", barmode="group", height=400)
    return fig


def layer_bucket_heatmap(table, value: str, title: str, buckets: Sequence[str]) -> go.Figure:
    """A (position bucket x layer) heatmap of ``value`` (columns layer, bucket), diverging around 0."""
    grid = table.pivot(index="bucket", columns="layer", values=value)
    fig = go.Figure(go.Heatmap(z=grid.to_numpy(), x=grid.columns, y=[buckets[b] for b in grid.index],
                               colorscale="RdBu", zmid=0, colorbar_title=value))
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title="token position", height=320)
    return fig


def paired_differences(tests, title: str, yaxis: str = "edit - none") -> go.Figure:
    """Mean paired difference (edit minus none) per edit, one bar group per ``series``, with 95% intervals
    (columns intervention, series, diff, lo, hi)."""
    fig = go.Figure()
    for series, sel in tests.groupby("series", sort=False):
        fig.add_trace(go.Bar(x=sel.intervention, y=sel["diff"], name=series,
                             error_y=dict(type="data", symmetric=False, array=sel.hi - sel["diff"],
                                          arrayminus=sel["diff"] - sel.lo)))
    fig.add_hline(y=0, line_color="grey")
    fig.update_layout(title=title, xaxis_title="edit", yaxis_title=yaxis, barmode="group", height=360)
    return fig


def probe_selectivity(table, title: str) -> go.Figure:
    """Probe selectivity per target (x), one bar per (layer, group, features, probe)."""
    fig = go.Figure()
    for key, sel in table.groupby(["layer", "group", "features", "probe"], sort=False):
        fig.add_trace(go.Bar(x=sel.target, y=sel.selectivity, name=f"layer {key[0]} · {key[1]} · {key[2]} · {key[3]}"))
    fig.update_layout(title=title, xaxis_title="target", yaxis_title="accuracy - control accuracy", barmode="group",
                      height=420)
    return fig


def replication_curves(curves, relation: str) -> go.Figure:
    """Per-gain curves of every model (``replication.parquet``), one panel per measure, g* starred."""
    from plotly.subplots import make_subplots

    panels = (("rate_fixed", "rate (fixed tau)"), ("b_tot", "b_tot (rate-matched)"), ("z_tot_n1", "delta-b z (N1)"),
              ("chi_perc", "chi_perc (sites)"), ("perplexity_b", "B perplexity"), ("arc_acc", "ARC acc (grid)"))
    fig = make_subplots(rows=2, cols=3, subplot_titles=[t for _, t in panels])
    colours = plotly.colors.qualitative.Plotly
    for i, (name, sel) in enumerate(curves.groupby("model", sort=False)):
        for j, (col, _) in enumerate(panels):
            r, c = j // 3 + 1, j % 3 + 1
            fig.add_trace(go.Scatter(x=sel.g, y=sel[col], mode="lines+markers", name=name, legendgroup=name,
                                     showlegend=j == 0, line_color=colours[i % len(colours)]), row=r, col=c)
            star = sel[sel.is_gstar]
            fig.add_trace(go.Scatter(x=star.g, y=star[col], mode="markers", showlegend=False, legendgroup=name,
                                     marker=dict(symbol="star", size=14, color=colours[i % len(colours)])), row=r, col=c)
    fig.update_layout(title=f"replication ({relation}): curves vs gain, g* starred", height=700)
    fig.update_xaxes(title_text="g")
    return fig


def trajectory_fits(ratio, fits, name: str) -> go.Figure:
    """One model's top-1/median ratio per layer over training (probe mean with its 95% interval), the
    5-parameter fit (solid) and the step responses (dotted / dashed), drawn from ``fits.parquet``."""
    from plotly.subplots import make_subplots

    from .emergence import curve

    sel = ratio[ratio.model == name]
    layers = sorted(sel.layer.unique())
    fig = make_subplots(rows=1, cols=len(layers), subplot_titles=[f"layer {l}" for l in layers], shared_yaxes=True)
    styles = {"ma5": "solid", "step2_under": "dot", "step1": "dash"}
    colours = dict(zip(styles, plotly.colors.qualitative.Plotly[1:]))
    for j, layer in enumerate(layers, 1):
        g = sel[sel.layer == layer].sort_values("step")
        fig.add_trace(go.Scatter(x=g.step, y=g["mean"], mode="markers", name="probe mean (95% CI)", legendgroup="data",
                                 showlegend=j == 1, marker_color="black",
                                 error_y=dict(type="data", symmetric=False, array=g.ci_hi - g["mean"],
                                              arrayminus=g["mean"] - g.ci_lo)), row=1, col=j)
        dense = np.linspace(0, g.step.max(), 400)
        rows = fits[(fits.model == name) & (fits.layer == layer) & fits.fit.isin(list(styles)) & fits.ok]
        for row in rows.to_dict("records"):
            fig.add_trace(go.Scatter(x=dense, y=curve(row, dense), mode="lines", legendgroup=row["fit"],
                                     name=row["fit"], showlegend=j == 1,
                                     line=dict(dash=styles[row["fit"]], color=colours[row["fit"]]),
                                     hovertext=f"R² {row['r2']:.3f}"), row=1, col=j)
    fig.update_layout(title=f"{name}: top-1 / median |h| over training", height=380)
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="top-1 / median |h|", row=1, col=1)
    return fig


def fit_heatmap(ma5, column: str, title: str) -> go.Figure:
    """``column`` of the ma5 fits per layer × model. Non-finite values (a peak at infinity, a failed fit) are
    left blank and listed in the hover instead of stretching the colour scale."""
    grid = ma5.pivot_table(index="layer", columns="model", values=column, aggfunc="first", dropna=False)
    z = grid.to_numpy(float)
    shown = np.where(np.isfinite(z), z, np.nan)
    text = [[f"{v:.4g}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=shown, x=list(grid.columns), y=list(grid.index), text=text,
                               hovertemplate="%{x}, layer %{y}: %{text}<extra></extra>", colorbar=dict(title=column)))
    fig.update_layout(title=title, xaxis_title="model", height=360,
                      yaxis=dict(title="layer", tickmode="array", tickvals=list(grid.index), dtick=1))
    return fig


def show(fig: go.Figure, name: str) -> None:
    """Display ``fig`` and export it (:func:`figure_export.export`: ``<name>.csv``, ``.svg``, ``.png``) into the
    current phase's ``figures/`` folder; ``name`` is unique within a notebook (e.g. ``rate_vs_gain``,
    ``lattice_seq0``). Outside a phase it only displays."""
    from . import figure_export

    fig.show()
    figure_export.export_current(fig, name)
