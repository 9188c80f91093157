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
# # 02 · Avalanches
#
# Avalanches are connected components of the occupancy `X = A > 0` of each sequence's token × layer
# lattice (phase 01, rate-matched, g = 1). Components never cross sequences. Three adjacencies:
# `von_neumann` (4 neighbours, the seed's), `moore` (8 neighbours) and `causal` (von Neumann plus the
# (t+1, l+1) diagonal).
#
# Per avalanche: `size` (spikes), `n_sites`, token span `t_span`, layer span `l_span`, first token
# `t0`, first layer `l0`. Per lattice: the co-occupancy branching ratios `b_time`, `b_depth`,
# `b_diag`, `b_tot = b_time + b_depth` (pooled over sequences and per layer), `chi_fano` (Fano factor
# of spikes per sequence) and `chi_perc` (mean cluster size excluding each sequence's largest).
#
# These are descriptive statistics of one model at g = 1; the gain sweep and its null models come in
# phase 03.
#
# Artifacts: `avalanches.parquet`, `summary.json`, `branching_per_layer.parquet`.

# %% tags=["parameters"]
run_dir = ""  # run folder, injected by `avalanche-nb run`
phase = "02_avalanches"  # phase name, injected by `avalanche-nb run`
model = "smollm2-135m-instruct"  # registry name, local path (folder or .gguf) or HF id in the local cache
seed = 0  # seeds every random draw
torch_threads = 2  # CPU threads for torch
adjacencies = ["von_neumann", "moore", "causal"]  # site adjacencies for avalanches
n_heatmaps = 3  # lattices drawn as heatmaps

# %%
import numpy as np
import pandas as pd

from avalanche_nb import avalanches as av
from avalanche_nb import plots, provenance, runtime
from avalanche_nb.lattice import SPIKE_DEFS
from avalanche_nb.models import load_model

runtime.configure(seed, torch_threads)
out = provenance.phase_output(run_dir, phase)
npz = np.load(provenance.load_input(run_dir, "01_event_lattice/lattice.npz", out))
valid, tokens = npz["valid"], npz["tokens"]
counts = {d: npz[f"counts_{d}"] for d in SPIKE_DEFS}
N, T, L = counts["pos"].shape
print(f"lattice: {N} sequences x {T} tokens x {L} layers, {int(valid.sum())} valid token sites")

# %% [markdown]
# ## Components

# %%
tables, summary, per_layer = [], {}, []
for d in SPIKE_DEFS:
    summary[d] = {}
    for adj in adjacencies:
        t = av.avalanche_table(counts[d], valid, adj)
        tables.append(t.assign(spike_def=d, adjacency=adj))
        s = av.summarise(counts[d], valid, adj)
        s["rate_per_layer"] = npz[f"rate_{d}"].tolist()  # achieved neuron firing rate (phase 01)
        summary[d][adj] = s
    b = av.branching(av.occupancy(counts[d], valid))  # adjacency-free
    per_layer.append(pd.DataFrame({"spike_def": d, "layer": np.arange(L), "b_time": b["b_time_per_layer"],
                                   "b_depth": b["b_depth_per_layer"]}))
columns = ["seq", "spike_def", "adjacency", "size", "n_sites", "t_span", "l_span", "t0", "l0"]
table = pd.concat(tables, ignore_index=True)[columns]
provenance.save_parquet(out / "avalanches.parquet", table)
provenance.save_json(out / "summary.json", summary)
provenance.save_parquet(out / "branching_per_layer.parquet", pd.concat(per_layer, ignore_index=True))
print(f"{len(table)} avalanches over {len(SPIKE_DEFS)} spike definitions x {len(adjacencies)} adjacencies")

# %%
# NBVAL_CHECK_OUTPUT
keys = ["n_avalanches", "b_time", "b_depth", "b_diag", "b_tot", "chi_fano", "chi_perc"]
rows = {(d, adj): {k: summary[d][adj][k] for k in keys} for d in SPIKE_DEFS for adj in adjacencies}
print(pd.DataFrame(rows).T.map(lambda x: f"{x + 0.0:.4g}").to_string())
print("largest avalanche (spikes):", table.groupby(["spike_def", "adjacency"])["size"].max().to_dict())

# %% [markdown]
# ## Size and span distributions
# Complementary CDFs on log-log axes. Small slices make short tails; read them as descriptions, not
# as evidence of criticality (tail fits with goodness-of-fit tests come with the gain sweep).

# %%
# NBVAL_IGNORE_OUTPUT
for col, label in (("size", "spikes"), ("t_span", "token span D"), ("l_span", "layer span H")):
    sel = {f"{d} · {adj}": g[col].to_numpy() for (d, adj), g in table.groupby(["spike_def", "adjacency"])}
    plots.ccdf(sel, f"avalanche {col}", label).show()

# %% [markdown]
# ## Branching per layer
# `b_time[l]`: of the occupied sites in layer `l`, the fraction whose next token is occupied too;
# `b_depth[l]`: the fraction whose site one layer up is occupied.

# %%
# NBVAL_IGNORE_OUTPUT
bl = pd.concat(per_layer, ignore_index=True)
for d in SPIKE_DEFS:
    sel = bl[bl.spike_def == d]
    plots.per_layer({"b_time": sel.b_time.to_numpy(), "b_depth": sel.b_depth.to_numpy()},
                    f"{d}: branching per layer", "b").show()

# %% [markdown]
# ## Avalanches on the lattice
# Each colour is one avalanche (`pos`, von Neumann adjacency); hover for the spike count.

# %%
# NBVAL_IGNORE_OUTPUT
tokenizer = load_model(model).tokenizer
labels, _ = av.label_avalanches(av.occupancy(counts["pos"], valid), adjacencies[0])
for n in range(min(n_heatmaps, N)):
    plots.lattice_heatmap(counts["pos"][n], runtime.token_strings(tokenizer, tokens[n]), valid[n],
                          title=f"sequence {n}: avalanches ({adjacencies[0]})", labels=labels[n]).show()
