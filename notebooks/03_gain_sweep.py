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
# # 03 · Gain sweep under controls
#
# Does the MLP gain `g` change the **connectivity** of event cascades, or only how many events there
# are? Every cascade statistic moves with the firing rate, so each gain is read two ways:
#
# * `fixed` thresholds (the g = 1 rate-matched `tau`, held constant): the rate moves with g;
# * `rate_matched` thresholds (re-matched per layer and gain to the g = 1 targets): the rate is
#   pinned and only structure can move.
#
# Against three marginal-preserving nulls (per sequence): **N1** permutes token positions within each
# layer row, **N2** circularly shifts each row (keeps its run structure), **N3** is a curveball null
# keeping every row *and* column count. `delta_b = b − null mean`, with the null's 95% interval and a
# z-score. The input control runs the same sequences with their tokens shuffled.
#
# Tail fits (discrete power law by KS/MLE, likelihood ratios vs lognormal and exponential, the CSN
# bootstrap goodness-of-fit p-value, the seed's continuous fit with xmin at the 80th percentile) and
# the crackling exponent are **descriptive diagnostics**; none of them is evidence of criticality. With
# xmin chosen by KS the fit can find a short steep tail even in exponential data, so a large bootstrap
# p-value is weak evidence on its own: read it with `xmin`, `n_tail` and the likelihood ratios.
#
# Artifacts: `sweep.parquet`, `layer_profile.parquet`, `sweep_lattices.npz`, `sweep_avalanches.parquet`.

# %% tags=["parameters"]
run_dir = ""  # run folder, injected by `avalanche-nb run`
phase = "03_gain_sweep"  # phase name, injected by `avalanche-nb run`
model = "smollm2-135m-instruct"  # registry name, local path (folder or .gguf) or HF id in the local cache
dtype = "float32"  # weights and compute dtype
device = "cpu"  # torch device
torch_threads = 2  # CPU threads for torch
batch_size = 8  # sequences per forward pass
seed = 0  # seeds slice sampling and every random draw
progress = True  # show progress bars
dataset_a = "boolq"  # source of Dataset A
window = 128  # tokens per window
n_sequences = 16  # Dataset A windows in the lattice slice
n_calibration = 16  # Dataset A windows for mu/sigma
exclude_first_token = True  # leave the first token out of calibration and lattices
target_rates = [4e-05]  # target neuron firing rates; the first defines lattice.npz
rate_reference_d_ff = 18944  # MLP width the target rates refer to (None: as given)
target_profile = "baseline_profile"  # baseline_profile or uniform
reference_tau = 2.5  # z threshold whose per-layer rates shape baseline_profile
z_floor = 4.0  # keep |z| above this in the forward pass (lowered automatically if needed)
fixed_tau = None  # threshold of the fixed mode in every layer (None: the rate-matched ones at g 1)
adjacencies = ["von_neumann", "moore", "causal"]  # site adjacencies; the first is used for the sweep
gains = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5]  # gain grid (must include 1.0)
ablations = ["all", "early", "mid", "late", "attn", "shuffled"]  # where the gain acts (see README)
null_draws = 100  # draws per null model (N1, N2, N3)
gof_draws = 100  # CSN bootstrap draws for the tail goodness-of-fit p-value (ablation 'all' only)
bootstrap_draws = 200  # bootstrap draws for the crackling exponent's CI
alpha_range = [1.01, 6.0]  # allowed power-law exponent range for the tail fits

# %%
import json
import time

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from avalanche_nb import lattice as lat
from avalanche_nb import gain_stack, plots, provenance, runtime, sweep
from avalanche_nb.models import load_model

gain_grid = sweep.check_gains(gains)  # fail before any forward pass
for a in ablations:
    sweep.ablation_target(a, 1)
runtime.configure(seed, torch_threads)
out = provenance.phase_output(run_dir, phase)
lm = load_model(model, dtype=dtype, device=device, seed=seed)
calib_slice, lattice_slice = runtime.dataset_a_slices(lm.tokenizer, dataset_a, n_calibration, n_sequences, window, seed)
recorded = json.loads(provenance.load_input(run_dir, "00_data_and_model/slices.json", out).read_text())
if recorded["a_lattice"]["sha256"] != lattice_slice.sha256:
    raise RuntimeError("the lattice slice differs from the one phase 00 recorded")
cal = np.load(provenance.load_input(run_dir, "01_event_lattice/calibration.npz", out))
calibration = lat.Calibration(cal["mu"], cal["sigma"], int(cal["n_sites"]))
tokens = lattice_slice.tokens
valid = lat.valid_mask(n_sequences, window, exclude_first_token)
adjacency = adjacencies[0]

# %% [markdown]
# ## Targets and fixed thresholds at g = 1
# The g = 1 rate-matched pass sets each target's per-layer targets and the thresholds that the
# `fixed` mode keeps. Its lattice must equal phase 01's (same model, slice and calibration).

# %%
rates = lat.scale_seed_rates(target_rates, calibration.d_ff, rate_reference_d_ff)
base, targets, fixed = sweep.reference(lm.model, tokens, valid, calibration, rates, target_profile, z_floor,
                                       reference_tau, batch_size, progress, fixed_tau=fixed_tau)
phase01 = np.load(provenance.load_input(run_dir, "01_event_lattice/lattice.npz", out))
for d in lat.SPIKE_DEFS:
    if not np.array_equal(phase01[f"counts_{d}"], base[0].counts[d]):
        raise RuntimeError(f"g = 1 lattice ({d}) differs from phase 01's: the run is not reproducible")
print("g = 1 lattices reproduce phase 01 exactly")

# %% [markdown]
# ## The sweep

# %%
# papermill_description=gain_sweep
t_start = time.perf_counter()
results = {a: sweep.run(lm.model, tokens, valid, calibration, gain_grid, rates, targets, fixed, a, adjacency, null_draws,
                        gof_draws, bootstrap_draws, alpha_range, seed, z_floor, batch_size, progress,
                        log=lambda m: print(m, flush=True)) for a in ablations}
wall = time.perf_counter() - t_start
rows = [row for res in results.values() for row in res.rows]
profiles = [p for res in results.values() for p in res.profiles]
sizes = [x for res in results.values() for x in res.sizes]
table = pd.DataFrame(rows)
provenance.save_parquet(out / "sweep.parquet", table)
provenance.save_parquet(out / "layer_profile.parquet", pd.concat(profiles, ignore_index=True))
provenance.save_parquet(out / "sweep_avalanches.parquet", pd.concat(sizes, ignore_index=True))
stack = gain_stack.GainStack(gain_grid, results["all"].lattices, valid, tokens,
                             np.array([runtime.token_strings(lm.tokenizer, row) for row in tokens]), targets[0],
                             calibration.d_ff)
provenance.save_npz(out / "sweep_lattices.npz", **stack.to_npz_dict())
provenance.record(out, sweep_seconds=round(wall, 1), n_rows=len(table))
print(f"sweep: {len(table)} rows in {wall:.0f} s")

# %%
# NBVAL_CHECK_OUTPUT
main_rows = table[(table.ablation == "all") & (table.target_rate == rates[0])]
cols = ["g", "spike_def", "threshold_mode", "rate_mean", "rate_max_rel_err", "b_tot", "delta_b_tot_n1", "z_tot_n1",
        "delta_b_time_n2", "chi_perc", "n_avalanches"]
print(main_rows[cols].sort_values(["spike_def", "threshold_mode", "g"]).to_string(
    index=False, float_format=lambda x: f"{x + 0.0:.3g}"))

# %% [markdown]
# ## Rate vs gain under fixed thresholds
# Held at the g = 1 thresholds, the firing rate moves with the gain; under rate matching it stays on
# target (dashed), which is what makes the structural comparison fair.

# %%
# NBVAL_IGNORE_OUTPUT
fig = go.Figure()
for (d, mode), sel in main_rows.groupby(["spike_def", "threshold_mode"]):
    fig.add_trace(go.Scatter(x=sel.g, y=sel.rate_mean, mode="lines+markers", name=f"{d} · {mode}",
                             line_dash="dash" if mode == "rate_matched" else "solid"))
fig.update_layout(title="mean neuron firing rate vs gain", xaxis_title="g", yaxis_title="rate", height=400)
fig.show()

# %% [markdown]
# ## Branching and delta-b under rate matching
# Observed `b` with each null's 95% band; `delta_b` is the part of `b` the marginals do not explain.

# %%
# NBVAL_IGNORE_OUTPUT
rm = main_rows[main_rows.threshold_mode == "rate_matched"]
for d in lat.SPIKE_DEFS:
    sel = rm[rm.spike_def == d].sort_values("g")
    plots.null_bands(sel, "tot", f"{d}: b_tot vs g (rate-matched), null 95% bands").show()
    plots.delta_b(sel, f"{d}: delta-b vs g (rate-matched)").show()

# %% [markdown]
# ## Susceptibility vs gain, all ablations

# %%
# NBVAL_IGNORE_OUTPUT
for col in ("chi_perc", "chi_fano"):
    fig = go.Figure()
    for (a, d), sel in table[(table.threshold_mode == "rate_matched") & (table.target_rate == rates[0])].groupby(
            ["ablation", "spike_def"]):
        fig.add_trace(go.Scatter(x=sel.g, y=sel[col], mode="lines+markers", name=f"{a} · {d}"))
    fig.update_layout(title=f"{col} vs g (rate-matched)", xaxis_title="g", yaxis_title=col, height=420)
    fig.show()

# %% [markdown]
# ## Size distributions and tail fits (descriptive)

# %%
# NBVAL_IGNORE_OUTPUT
av_sizes = pd.concat(sizes, ignore_index=True)
sel = av_sizes[(av_sizes.ablation == "all") & (av_sizes.threshold_mode == "rate_matched") &
               (av_sizes.spike_def == "pos") & (av_sizes.target_rate == rates[0])]
shown = [g for g in gain_grid if np.isclose(g, [gain_grid[0], 1.0, gain_grid[-1]]).any()]
fit_rows = rm[rm.spike_def == "pos"]
fits = {f"g={g:.1f}": tuple(fit_rows.loc[np.isclose(fit_rows.g, g), ["alpha", "xmin"]].iloc[0]) for g in shown}
fig = plots.ccdf({f"g={g:.1f}": sel[np.isclose(sel.g, g)]["size"].to_numpy() for g in shown},
                 "pos, rate-matched: avalanche size CCDF with discrete power-law fits (descriptive)",
                 "size (spikes)", fits=fits)
fig.show()
print(main_rows[["g", "spike_def", "threshold_mode", "alpha", "xmin", "n_tail", "p_value", "lr_lognormal",
                 "p_lognormal", "lr_exponential", "alpha_c80"]].round(3).to_string(index=False))

# %% [markdown]
# ## Crackling scaling
# `E[size | D] ∝ D^gamma` (fitted over D in [3, 64]) against the value predicted by the tail exponents.

# %%
# NBVAL_IGNORE_OUTPUT
fig = go.Figure()
for d in lat.SPIKE_DEFS:
    s = rm[rm.spike_def == d].sort_values("g")
    fig.add_trace(go.Scatter(x=s.g, y=s.gamma, mode="lines+markers", name=f"{d}: gamma",
                             error_y=dict(type="data", symmetric=False, array=s.gamma_hi - s.gamma,
                                          arrayminus=s.gamma - s.gamma_lo)))
    fig.add_trace(go.Scatter(x=s.g, y=s.gamma_pred, mode="lines", line_dash="dot", name=f"{d}: predicted"))
fig.update_layout(title="crackling exponent vs g (rate-matched)", xaxis_title="g", yaxis_title="gamma", height=400)
fig.show()
