# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python (avalanche-nb)
#     language: python
#     name: avalanche-nb
# ---

# %% [markdown]
# # Campaign · many runs side by side
#
# One row per cell of a campaign (`avalanche-nb campaign CAMPAIGN.yaml`): each cell is an ordinary run
# (its own run folder, manifests and notebooks under `runs/<cell>/`), and `campaign.parquet` holds its
# headline results, read from the run's hash-checked artifacts by the same code as the paper's numbers
# (`campaign.headline`). The figures put the cells side by side: where the ME layer sits against the
# model's depth, g* per model and rule across seeds, the connectivity beyond the nulls against model size,
# and ARC at g = 1 against g*. A cell that failed is listed with its phase and reason; figures use the
# cells that finished the phases they read.

# %% tags=["parameters"]
campaign_dir = ""  # the campaign folder, injected by `avalanche-nb campaign`

# %%
from pathlib import Path

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from IPython.display import Markdown, display

from avalanche_nb import campaign, figure_export, plots, runtime

runtime.configure(seed=0, torch_threads=0)
if not campaign_dir:
    raise ValueError("campaign_dir is empty: run this notebook through `avalanche-nb campaign`, or set it to a "
                     "campaign folder (outputs/campaigns/<id>)")
folder = Path(campaign_dir)
figure_export.export_to(folder / campaign.REPORT)
table = pd.read_parquet(folder / campaign.TABLE)
done = table[table.state == "done"]
print(f"{len(table)} cells: {len(done)} done, {len(table) - len(done)} not")

# %% [markdown]
# ## The cells

# %%
# NBVAL_CHECK_OUTPUT
display(campaign.overview(table))

# %% [markdown]
# ## Where the ME layer sits against the model's depth
#
# The first layer meeting the massive-activation criterion (phase 06) for the run's model of each cell;
# a dashed segment marks each model's last layer. A model's seeds sit side by side, at one height when the ME layer
# does not depend on the slice.

# %%
me = done.dropna(subset=["me_layer", "num_layers"]) if "me_layer" in done else done.iloc[:0]
if len(me):
    # a model's seeds sit side by side, 0.3 layers apart, so that equal ME layers do not hide each other
    me = me.assign(depth=me.num_layers + 0.3 * (me.groupby("model").cumcount()
                                                 - (me.groupby("model").seed.transform("size") - 1) / 2))
    fig = px.scatter(me, x="depth", y="me_layer", color="model", symbol="model", hover_data=["cell", "seed", "ma_ratio"],
                     labels={"depth": "layers (seeds side by side)", "me_layer": "ME layer"},
                     title="ME layer vs model depth")
    fig.update_traces(marker={"size": 11})
    for i, depth in enumerate(sorted(me.num_layers.unique())):  # each depth's last layer, across its seeds
        fig.add_trace(go.Scatter(x=[depth - 0.6, depth + 0.6], y=[depth - 1, depth - 1], mode="lines",
                                 line={"dash": "dash", "color": "grey"}, name="last layer", showlegend=i == 0))
    plots.show(fig, "me_layer_vs_depth")
else:
    print("no cell finished phase 06: nothing to place")

# %% [markdown]
# ## g* per model and rule
#
# Every rule's pick on Dataset A (phase 04) for each cell (the rules side by side); an open marker is a
# pick at the edge of the search (the limit of the search, not an optimum).

# %%
picks = campaign.picks_long(done)
if len(picks):
    fig = go.Figure()
    for rule, sel in picks.groupby("rule", sort=True):
        fig.add_trace(go.Scatter(
            x=sel.cell, y=sel.gstar, mode="markers", name=rule, offsetgroup=rule, text=sel.model,
            marker={"size": 11, "symbol": ["circle-open" if e else "circle" for e in sel.at_edge]}))
    fig.update_layout(title="g* per cell and rule (open: at the search edge)", xaxis_title="cell",
                      yaxis_title="g*", scattermode="group")
    plots.show(fig, "gstar_per_model")
else:
    print("no cell finished phase 04: no g* to show")

# %% [markdown]
# ## Connectivity beyond the nulls against model size
#
# z of the co-occupancy branching ratio b_tot against the rate-preserving null N1 (and the stronger
# N2, N3) at g = 1 under rate-matched thresholds (phase 03), against the parameter count.

# %%
z = done.dropna(subset=["z_tot_n1_g1", "n_parameters"]) if "z_tot_n1_g1" in done else done.iloc[:0]
if len(z):
    long = z.melt(id_vars=["cell", "model", "seed", "n_parameters"], value_vars=["z_tot_n1_g1", "z_tot_n2_g1",
                                                                              "z_tot_n3_g1"],
                  var_name="null", value_name="z")
    long["null"] = long["null"].str.slice(6, 8).str.upper()
    fig = px.scatter(long, x="n_parameters", y="z", color="model", symbol="null", log_x=True,
                     hover_data=["cell", "seed"], title="z of b_tot against the nulls at g = 1 vs model size",
                     labels={"n_parameters": "parameters"})
    fig.add_hline(y=2, line_dash="dot", line_color="grey")
    plots.show(fig, "delta_b_vs_size")
else:
    print("no cell finished phase 03: no Δb to show")

# %% [markdown]
# ## ARC at g = 1 and at g*
#
# Accuracy (summed log-likelihood) with bootstrap 95% intervals, per cell (phase 04).

# %%
arc = campaign.arc_long(done)
if len(arc):
    fig = go.Figure()
    for (subset, at), sel in arc.groupby(["subset", "at"], sort=True):
        fig.add_trace(go.Scatter(x=sel.cell, y=sel.acc, mode="markers", name=f"{subset} · {at}",
                                 offsetgroup=f"{subset} · {at}",
                                 error_y={"type": "data", "symmetric": False, "array": sel.acc_hi - sel.acc,
                                          "arrayminus": sel.acc - sel.acc_lo}))
    fig.update_layout(title="ARC accuracy at g = 1 and g*", xaxis_title="cell", yaxis_title="accuracy",
                      scattermode="group")
    plots.show(fig, "arc_per_cell")
else:
    print("no cell finished phase 04: no ARC to show")

# %% [markdown]
# ## What this shows

# %%
# NBVAL_CHECK_OUTPUT
Markdown(campaign.findings(table))
