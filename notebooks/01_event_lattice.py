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
# # 01 · Event lattice and the g = 1 reference
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
# The calibration, the per-layer targets of every target rate and the thresholds the `fixed` mode holds
# are the **g = 1 reference** that every later gain is measured against; phases 03 and 04 read it back.
#
# Artifacts: `calibration.npz`, `reference.npz`, `lattice.npz` (the first target rate),
# `thresholds.parquet`.

# %% tags=["parameters"]
run_dir = ""  # the run folder, injected by `avalanche-nb run` (empty: the defaults, artifacts to a scratch folder)

# %%
import numpy as np

from avalanche_nb import artifacts, pipeline, plots, provenance, runtime
from avalanche_nb.data import token_strings
from avalanche_nb.lattice import SPIKE_DEFS
from avalanche_nb.models import load_model

p, out = runtime.start(run_dir, "01_event_lattice")
lm = load_model(p.model, dtype=p.dtype, device=p.device, seed=p.seed, device_map=p.device_map)
tokens = pipeline.read_tokens(run_dir, out)

# %% [markdown]
# ## Calibration and rate-matched thresholds at g = 1
# Target rates are scaled from the seed's MLP width to this model's `d_ff` so the expected spikes per
# site match the seed's.

# %%
# papermill_description=reference
with provenance.timed(out, "reference"):
    ref = pipeline.build_reference(lm.model, tokens["a_calibration"], tokens["a_lattice"], p, progress=p.progress)
main = ref.lattices[0]
valid = main.valid
table = pipeline.thresholds_table(ref, valid)
artifacts.write(out, "calibration.npz", pipeline.calibration_arrays(ref.calibration))
artifacts.write(out, "reference.npz", ref.to_arrays())
artifacts.write(out, "lattice.npz", main.to_npz_dict())
artifacts.write(out, "thresholds.parquet", table)
provenance.record(out, floor_used=ref.floor, target_rates_scaled=ref.rates)
print(f"calibration on {ref.calibration.n_sites} sites; {len(ref.rates)} target rate(s), both spike definitions "
      f"(sparse floor used: {ref.floor})")

# %%
# NBVAL_CHECK_OUTPUT
summary = table.groupby(["target_mean", "spike_def"]).agg(
    tau_min=("tau", "min"), tau_max=("tau", "max"), rate_mean=("rate", "mean"),
    max_abs_rel_err=("rel_err", lambda e: np.abs(e).max()), occupancy=("occupancy", "mean"),
    spikes_per_site=("spikes_per_site", "mean"))
print(summary.map(lambda x: f"{x:.3g}").to_string())

# %% [markdown]
# ## Target vs achieved rate per layer
# Rate matching holds each layer on its target (markers: achieved; line: target); `tau` absorbs the
# differences between layers.

# %%
# NBVAL_IGNORE_OUTPUT
plots.show(plots.rate_targets(main.thresholds, SPIKE_DEFS), "rate_targets")

# %% [markdown]
# ## Lattices
# Spike counts per (token, layer) site for the first sequences (`pos`); blank = no spike, the
# first token is masked.

# %%
# NBVAL_IGNORE_OUTPUT
for n in range(min(p.n_heatmaps, len(valid))):
    plots.show(plots.lattice_heatmap(main.counts["pos"][n], token_strings(lm.tokenizer, main.tokens[n]), valid[n],
                                     title=f"sequence {n}: pos spikes"), f"lattice_seq{n}")

# %%
# NBVAL_CHECK_OUTPUT
from IPython.display import Markdown

from avalanche_nb import results

Markdown(results.what_this_shows(run_dir, out, "01_event_lattice"))
