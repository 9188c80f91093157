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
run_dir = ""  # the run folder, injected by `avalanche-nb run` (empty: the defaults, artifacts to a scratch folder)

# %%
import pandas as pd

from avalanche_nb import artifacts, plots, runtime
from avalanche_nb import avalanches as av
from avalanche_nb.data import token_strings
from avalanche_nb.lattice import SPIKE_DEFS
from avalanche_nb.models import load_tokenizer

p, out = runtime.start(run_dir, "02_avalanches")
npz = artifacts.read(run_dir, "lattice.npz", out)
valid, tokens = npz["valid"], npz["tokens"]
counts = {d: npz[f"counts_{d}"] for d in SPIKE_DEFS}
N, T, L = counts["pos"].shape
print(f"lattice: {N} sequences x {T} tokens x {L} layers, {int(valid.sum())} valid token sites")

# %% [markdown]
# ## Components

# %%
table, summary, per_layer = av.lattice_summary(counts, valid, p.adjacencies,
                                               {d: npz[f"rate_{d}"] for d in SPIKE_DEFS})
artifacts.write(out, "avalanches.parquet", table)
artifacts.write(out, "summary.json", summary)
artifacts.write(out, "branching_per_layer.parquet", per_layer)
print(f"{len(table)} avalanches over {len(SPIKE_DEFS)} spike definitions x {len(p.adjacencies)} adjacencies")

# %%
# NBVAL_CHECK_OUTPUT
keys = ["n_avalanches", "b_time", "b_depth", "b_diag", "b_tot", "chi_fano", "chi_perc"]
rows = {(d, adj): {k: summary[d][adj][k] for k in keys} for d in SPIKE_DEFS for adj in p.adjacencies}
print(pd.DataFrame(rows).T.map(lambda x: f"{x + 0.0:.4g}").to_string())
print("largest avalanche (spikes):")
print(table.groupby(["spike_def", "adjacency"])["size"].max().unstack().to_string())

# %% [markdown]
# ## Size and span distributions
# Complementary CDFs on log-log axes. Small slices make short tails; read them as descriptions, not
# as evidence of criticality (tail fits with goodness-of-fit tests come with the gain sweep).

# %%
# NBVAL_IGNORE_OUTPUT
for col, label in (("size", "size (spikes)"), ("t_span", "token span D (tokens)"), ("l_span", "layer span H (layers)")):
    sel = {f"{d} · {adj}": g[col].to_numpy() for (d, adj), g in table.groupby(["spike_def", "adjacency"])}
    plots.show(plots.ccdf(sel, f"avalanche {col}: P(X ≥ x)", label), f"ccdf_{col}")

# %% [markdown]
# ## Branching per layer
# `b_time[l]`: of the occupied sites in layer `l`, the fraction whose next token is occupied too;
# `b_depth[l]`: the fraction whose site one layer up is occupied.

# %%
# NBVAL_IGNORE_OUTPUT
plots.show(plots.branching_per_layer(per_layer), "branching_per_layer")

# %% [markdown]
# ## Avalanches on the lattice
# Each colour is one avalanche (`pos`, the first adjacency); hover for the token, the spike count and the id.

# %%
# NBVAL_IGNORE_OUTPUT
tokenizer = load_tokenizer(p.model)
labels, _ = av.label_avalanches(av.occupancy(counts["pos"], valid), p.adjacencies[0])
for n in range(min(p.n_heatmaps, len(valid))):
    plots.show(plots.lattice_heatmap(counts["pos"][n], token_strings(tokenizer, tokens[n]), valid[n],
                                     title=f"sequence {n}: avalanches ({p.adjacencies[0]})", labels=labels[n]),
               f"avalanches_seq{n}")

# %%
# NBVAL_CHECK_OUTPUT
from IPython.display import Markdown

from avalanche_nb import results

Markdown(results.what_this_shows(run_dir, out, "02_avalanches"))
