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

# %%

# %% [markdown]
# # 05 · Replication on a second model
#
# The measurements of phases 01–04 (gain on every MLP) repeated on the models of
# `replication_models`, with the same params: Dataset A calibration and rate-matched lattices, the
# gain sweep against the nulls, the pre-registered g* rule on A, then Dataset B (signatures,
# perplexity) and ARC on the grid questions. The run's own model is read from phases 03–04, not
# recomputed. The embedded default pairs SmolLM2-135M-Instruct (Llama architecture) with Gemma-3-270m
# base: different families, sizes, tokenizers and training, so agreement is a **cross-family**
# replication, not a base-vs-instruct comparison; give a pair of one family (e.g. a base and its
# instruct model from the local HF cache) for that.
#
# A model that cannot be loaded offline is reported with the reason and skipped; the others go on.
#
# Artifacts: `replication.parquet` (per model and gain), `replication.json` (side-by-side table,
# every rule's g*, failures).

# %% tags=["parameters"]
run_dir = ""  # run folder, injected by `avalanche-nb run`
phase = "05_replication"  # phase name, injected by `avalanche-nb run`
model = "smollm2-135m-instruct"  # registry name, local path (folder or .gguf) or HF id in the local cache
dtype = "float32"  # weights and compute dtype
device = "cpu"  # torch device
torch_threads = 2  # CPU threads for torch
batch_size = 8  # sequences per forward pass
seed = 0  # seeds slice sampling and every random draw
progress = True  # show progress bars
dataset_a = "boolq"  # source of Dataset A
dataset_b = "sciq"  # source of Dataset B
window = 128  # tokens per window
n_sequences = 16  # Dataset A windows in the lattice slice
n_calibration = 16  # Dataset A windows for mu/sigma
n_sequences_b = 16  # Dataset B windows
exclude_first_token = True  # leave the first token out of calibration and lattices
target_rates = [4e-05]  # target neuron firing rates; the first defines lattice.npz
rate_reference_d_ff = 18944  # MLP width the target rates refer to (None: as given)
target_profile = "baseline_profile"  # baseline_profile or uniform
reference_tau = 2.5  # z threshold whose per-layer rates shape baseline_profile
z_floor = 4.0  # keep |z| above this in the forward pass (lowered automatically if needed)
fixed_tau = None  # threshold of the fixed mode in every layer (None: the rate-matched ones at g 1)
adjacencies = ["von_neumann", "moore", "causal"]  # site adjacencies; the first is used
gains = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5]  # gain grid (must include 1.0)
null_draws = 100  # draws per null model
gof_draws = 100  # CSN bootstrap draws for the tail goodness-of-fit p-value
bootstrap_draws = 200  # bootstrap draws
alpha_range = [1.01, 6.0]  # allowed power-law exponent range for the tail fits
gstar_rule = "chi_perc_max"  # pre-registered g* rule
gstar_limits = [0.1, 3.0]  # an edge g* extends the search on A outward up to these gains
arc_subsets = ["ARC-Easy", "ARC-Challenge"]  # ARC validation subsets
arc_grid_limit = 50  # ARC questions per subset at every gain (None: all)
score_batch_size = 16  # ARC questions or B windows per forward pass when scoring
replication_models = ["smollm2-135m-instruct", "gemma3-270m"]  # models compared

# %%
import json
import time

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from avalanche_nb import params as P
from avalanche_nb import provenance, replication, runtime, sweep

sweep.check_gains(gains)
runtime.configure(seed, torch_threads)
out = provenance.phase_output(run_dir, phase)
params = {k: globals()[k] for k in P.SCHEMA if k in globals()}  # this notebook's params, as measure() takes them

# %% [markdown]
# ## Measurements per model

# %%
# papermill_description=replication
models, failures = {}, {}
for name in replication_models:
    t0 = time.perf_counter()
    if name == model:  # the run's model: phases 03 and 04 already measured it
        rows = pd.read_parquet(provenance.load_input(run_dir, "03_gain_sweep/sweep.parquet", out))
        gs = json.loads(provenance.load_input(run_dir, "04_gstar/gstar.json", out).read_text())
        tr = pd.read_parquet(provenance.load_input(run_dir, "04_gstar/transfer.parquet", out))
        arc_sum = json.loads(provenance.load_input(run_dir, "04_gstar/arc_summary.json", out).read_text())
        info = json.loads(provenance.load_input(run_dir, "00_data_and_model/model.json", out).read_text())
        m = {"info": info, "picks": gs["picks"], "gstar": gs["gstar"], "source": "this run (phases 03-04)",
             "curves": replication.curves(name, rows, tr, pd.DataFrame(arc_sum["grid"]), gs["gstar"])}
    else:
        try:
            m = replication.measure(name, params, log=lambda s: print(f"[{name}] {s}", flush=True))
        except replication.ReplicationModelError as err:
            failures[name] = str(err)
            print(f"SKIPPED {name}: {err}")
            continue
        m["curves"] = replication.curves(name, m["sweep"], m["transfer"], m["arc_grid"], m["gstar"])
        m["source"] = "measured here"
    models[name] = m
    print(f"{name}: g* = {m['gstar']:g} ({gstar_rule}); {time.perf_counter() - t0:.0f} s")
if not models:
    raise RuntimeError(f"no replication model could be measured: {failures}")
relation = replication.family_relation([m["info"]["model_type"] for m in models.values()])
table = replication.side_by_side(models)
curves = pd.concat([m["curves"] for m in models.values()], ignore_index=True)
provenance.save_parquet(out / "replication.parquet", curves)
provenance.save_json(out / "replication.json", {
    "models": list(models), "relation": relation, "failures": failures, "gstar_rule": gstar_rule,
    "side_by_side": json.loads(table.to_json()), "sources": {k: m["source"] for k, m in models.items()},
    "picks": {k: m["picks"] for k, m in models.items()}})

# %%
# NBVAL_CHECK_OUTPUT
print(f"{len(models)} model(s), {relation}; failed: {failures or 'none'}")
print(table.to_string(float_format=lambda x: f"{x:.4g}"))

# %% [markdown]
# ## Overlaid curves
# Fixed-threshold rate, rate-matched `b_tot`, delta-b z (N1), `chi_perc`, Dataset B perplexity and
# ARC accuracy (grid questions, both subsets pooled) against the gain, each model's g* marked.

# %%
# NBVAL_IGNORE_OUTPUT
panels = (("rate_fixed", "rate (fixed tau)"), ("b_tot", "b_tot (rate-matched)"), ("z_tot_n1", "delta-b z (N1)"),
          ("chi_perc", "chi_perc"), ("perplexity_b", "B perplexity"), ("arc_acc", "ARC acc"))
fig = make_subplots(rows=2, cols=3, subplot_titles=[t for _, t in panels])
colours = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
for i, (name, sel) in enumerate(curves.groupby("model", sort=False)):
    for j, (col, _) in enumerate(panels):
        fig.add_trace(go.Scatter(x=sel.g, y=sel[col], mode="lines+markers", name=name, legendgroup=name,
                                 showlegend=j == 0, line_color=colours[i % 4]), row=j // 3 + 1, col=j % 3 + 1)
        star = sel[sel.is_gstar]
        fig.add_trace(go.Scatter(x=star.g, y=star[col], mode="markers", marker=dict(symbol="star", size=14,
                                 color=colours[i % 4]), showlegend=False, legendgroup=name), row=j // 3 + 1, col=j % 3 + 1)
fig.update_layout(title=f"replication ({relation}): curves vs gain, g* starred", height=700)
fig.update_xaxes(title_text="g")
fig.show()
