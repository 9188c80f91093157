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
# # 01 · Event lattice
#
# The tapped tensor is the MLP intermediate `u` (gated MLPs: `act(gate)·up`, the input of the down
# projection). Per layer and neuron it is standardised with `mu`, `sigma` from the calibration slice
# at g = 1 (first token excluded): `z = (u − mu) / (sigma + 1e-6)`. A neuron spikes when `z > tau[l]`
# (`pos`) or `|z| > tau[l]` (`abs`); the lattice `A[n, t, l]` counts spiking neurons per
# (token, layer) site.
#
# Thresholds are **rate-matched**: per layer, `tau[l]` is set so the layer's neuron firing rate equals
# its target. Targets follow the layer profile at `reference_tau` (`baseline_profile`) or are
# `uniform`. The counting is exact (every `|z|` above a floor is kept in the forward pass), so the
# achieved rate differs from the target only through integer rounding of the spike count and ties.
#
# Artifacts: `lattice.npz` (contract in the README), `thresholds.parquet`, `calibration.npz`.

# %% tags=["parameters"]
run_dir = ""  # run folder, injected by `avalanche-nb run`
phase = "01_event_lattice"  # phase name, injected by `avalanche-nb run`
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
n_heatmaps = 3  # lattices drawn as heatmaps

# %%
import json
import time

import numpy as np
import pandas as pd

from avalanche_nb import lattice as lat
from avalanche_nb import plots, provenance, runtime
from avalanche_nb.models import load_model

runtime.configure(seed, torch_threads)
out = provenance.phase_output(run_dir, phase)
lm = load_model(model, dtype=dtype, device=device, seed=seed)
calib_slice, lattice_slice = runtime.dataset_a_slices(lm.tokenizer, dataset_a, n_calibration, n_sequences, window, seed)

# Fail closed if the slices differ from the ones phase 00 recorded (e.g. the data package changed).
recorded = json.loads(provenance.load_input(run_dir, "00_data_and_model/slices.json", out).read_text())
for name, s in (("a_calibration", calib_slice), ("a_lattice", lattice_slice)):
    if recorded[name]["sha256"] != s.sha256:
        raise RuntimeError(f"slice {name} differs from the one phase 00 recorded")

# %% [markdown]
# ## Calibration at g = 1

# %%
# papermill_description=calibration
t0 = time.perf_counter()
calib_valid = lat.valid_mask(n_calibration, window, exclude_first_token)
calibration = lat.calibrate(lm.model, calib_slice.tokens, calib_valid, batch_size, progress)
provenance.save_npz(out / "calibration.npz", mu=calibration.mu, sigma=calibration.sigma,
                    n_sites=np.array(calibration.n_sites))
print(f"calibration: {calibration.n_sites} sites, {time.perf_counter() - t0:.1f} s")

# %% [markdown]
# ## Rate-matched thresholds
# Target rates are scaled from the seed's MLP width to this model's `d_ff` so the expected spikes per
# site match the seed's.

# %%
# papermill_description=lattice
rates = lat.scale_seed_rates(target_rates, calibration.d_ff, rate_reference_d_ff)
valid = lat.valid_mask(n_sequences, window, exclude_first_token)
t0 = time.perf_counter()
lattices = [lat.rate_matched_lattice(lm.model, lattice_slice.tokens, valid, calibration, r, target_profile,
                                     z_floor, reference_tau, batch_size, progress=progress) for r in rates]
elapsed = time.perf_counter() - t0
main = lattices[0]
provenance.save_npz(out / "lattice.npz", **main.to_npz_dict())

rows = []
for r, L_ in zip(rates, lattices):
    for d in lat.SPIKE_DEFS:
        th = L_.thresholds[d]
        A = L_.counts[d]
        for l in range(len(th.tau)):
            rows.append(dict(target_mean=r, spike_def=d, layer=l, target=th.target[l], tau=th.tau[l],
                             rate=th.rate[l], rel_err=th.rel_err[l], occupancy=(A[:, :, l][valid] > 0).mean(),
                             spikes_per_site=A[:, :, l][valid].mean()))
table = pd.DataFrame(rows)
provenance.save_parquet(out / "thresholds.parquet", table)
provenance.record(out, lattice_seconds=round(elapsed, 2), floor_used=[L_.floor for L_ in lattices],
                  target_rates_scaled=rates, slices={"a_calibration": calib_slice.sha256, "a_lattice": lattice_slice.sha256})
print(f"{len(rates)} target(s), both spike definitions: {elapsed:.1f} s (floor used: {[L_.floor for L_ in lattices]})")

# %%
# NBVAL_CHECK_OUTPUT
summary = table.groupby(["target_mean", "spike_def"]).agg(
    tau_min=("tau", "min"), tau_max=("tau", "max"), rate_mean=("rate", "mean"),
    max_abs_rel_err=("rel_err", lambda e: np.abs(e).max()), occupancy=("occupancy", "mean"),
    spikes_per_site=("spikes_per_site", "mean"))
print(summary.map(lambda x: f"{x:.3g}").to_string())

# %% [markdown]
# ## Target vs achieved rate per layer
# Rate matching holds each layer at its target (the lines overlap); `tau` absorbs the differences
# between layers.

# %%
# NBVAL_IGNORE_OUTPUT
for d in lat.SPIKE_DEFS:
    th = main.thresholds[d]
    plots.per_layer({"target": th.target, "achieved": th.rate}, f"{d}: neuron firing rate per layer",
                    "rate", log=True).show()
plots.per_layer({d: main.thresholds[d].tau for d in lat.SPIKE_DEFS}, "rate-matched thresholds", "tau").show()

# %% [markdown]
# ## Lattices
# Spike counts per (token, layer) site for the first sequences (`pos`); blank = no spike, the
# first token is masked.

# %%
# NBVAL_IGNORE_OUTPUT
for n in range(min(n_heatmaps, n_sequences)):
    toks = runtime.token_strings(lm.tokenizer, main.tokens[n])
    plots.lattice_heatmap(main.counts["pos"][n], toks, valid[n], title=f"sequence {n}: pos spikes").show()
