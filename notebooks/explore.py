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
# # Explore · gain scrubber and avalanche inspector
#
# Drag the gain and watch one sequence's event lattice, the per-layer rates and the signatures move;
# click an avalanche (or pick one from the size-sorted list) to read the tokens it spans.
#
# * **Source**: a run of `avalanche-nb run` (`run_id` under `outputs/runs`, or `run_dir`) shows phase 03's
#   lattices (`sweep_lattices.npz`: ablation `all`, the first target rate, both threshold modes);
#   otherwise `model` is computed live on `n_sequences` Dataset A windows, exactly as phase 03 does, and
#   cached (the first time takes about a minute on 2 CPU cores; later openings are instant).
# * **Heatmap**: tokens × layers of the chosen sequence; each avalanche (connected component under the
#   chosen adjacency) has its own colour, empty sites are blank; the selected avalanche is outlined.
# * **Rates**: neuron firing rate per layer at the current g over all sequences, with the g = 1 target.
#   Under `fixed` thresholds it moves with g; under `rate_matched` it stays on target.
# * **Curves**: b_tot, delta-b against the N1 null and the percolation susceptibility chi_perc over all
#   sequences vs g (the numbers of phase 03's `sweep.parquet` for its adjacency), marker at the current g.
# * **Export** writes the selected avalanche as csv + json under `<run>/explore/` (a run's phase folders
#   are never touched) or `outputs/explore/<key>/` for a live model.
#
# The widgets need a live kernel (JupyterLab 4, *Python (avalanche-nb)* kernel); plotly.js ships with
# the widget, so nothing is fetched from a CDN.

# %% tags=["parameters"]
run_id = ""  # a run under outputs/runs (empty: use run_dir or model)
run_dir = ""  # a run folder anywhere (empty: use run_id or model)
model = "smollm2-135m-instruct"  # computed live when neither run_id nor run_dir is given
n_sequences = 4  # live only: Dataset A windows
window = 64  # live only: tokens per window
gains = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5]  # live only: gain grid (must include 1.0)
g = 1.0  # gain shown first
spike_def = "pos"  # pos or abs
threshold_mode = "rate_matched"  # rate_matched or fixed
adjacency = ""  # von_neumann, moore or causal (empty: the run's own)
seq = 0  # sequence shown first

# %%
from avalanche_nb import runtime
from avalanche_nb.widgets import explore

runtime.configure(seed=0, torch_threads=0)  # offline mode and the plot renderer; a live stack sets its own
source = dict(run_dir=run_dir) if run_dir else dict(run_id=run_id) if run_id else dict(
    model=model, n_sequences=n_sequences, window=window, gains=gains)
ex = explore(**source, g=g, spike_def=spike_def, mode=threshold_mode, adjacency=adjacency or None, seq=seq)

# %%
# NBVAL_IGNORE_OUTPUT
ex

# %% [markdown]
# ## The curves in numbers
# The signatures of the current view over the whole stack (what the right-hand figure draws).

# %%
# NBVAL_CHECK_OUTPUT
G, N, T, L = ex.stack.shape
print(f"{N} sequences x {T} tokens x {L} layers at gains {ex.stack.g.tolist()}")
print(ex.scrubber.signatures().round(4).to_string(index=False))

# %% [markdown]
# ## Driving the explorer from code
# The controls are ordinary ipywidgets: setting a value runs the same callbacks as dragging. Here: the
# largest gain, then the inspector's current avalanche (the largest of the lattice on show).

# %%
# NBVAL_CHECK_OUTPUT
scrub, inspect = ex.scrubber, ex.inspector
scrub.gain.value = len(ex.stack.g) - 1
print(scrub.heatmap.layout.title.text)
d = inspect.detail
if d is None:
    print("no avalanche in this lattice")
else:
    print(f"avalanche #{d['avalanche']}: size {d['size']}, {d['n_sites']} sites, tokens {d['t0']}-{d['t1']}, "
          f"layers {d['layers']}")
    print(d["sites"].head(8).to_string(index=False))
scrub.gain.value = ex.stack.gain_index(g)
