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
# # 07 · Training dynamics: massive activations emerging while small LMs train
#
# The Pythia checkpoints of seed 003 cannot be downloaded here, so this phase trains its own small
# Llama-style models from scratch (the run's tokenizer, random init, AdamW with warm-up, seeded) on a
# fixed stream of the embedded text, and at Pythia-like checkpoints (0, powers of two, then every
# `train_checkpoint_every` steps) records, per layer, top-1/2/3 and median |h| on held-out probe windows,
# with mean, CV%, SEM% and a 95% interval over the probes (seed 003's Table 2).
#
# Each layer's top-1/median ratio trajectory is fitted by the 5-parameter model
# `f(t) = A exp(-lambda x) log(x) + K`, `x = gamma t + t0` (reparametrised, analytic Jacobian,
# trust-region reflective, lambda >= 0), and by first- and second-order step responses; R² and AIC
# decide, the Lambert-W peak says whether an early peak is observable within training. Trajectories
# from `trajectories_file` (e.g. the released Pythia data) go through the same fits. Finally the
# fitted parameters are regressed on architecture features (seed 003's Table 4).
#
# Artifacts: `trajectories.parquet`, `losses.parquet`, `fits.parquet`, `predictors.parquet`.

# %% tags=["parameters"]
run_dir = ""  # the run folder, injected by `avalanche-nb run` (empty: the defaults, artifacts to a scratch folder)

# %%
import numpy as np
import pandas as pd

from avalanche_nb import artifacts, plots, predictors, provenance, runtime, training
from avalanche_nb import emergence as em
from avalanche_nb.models import load_tokenizer

p, out = runtime.start(run_dir, "07_training_dynamics")
specs = {s.name: s for s in (training.parse_spec(a) for a in p.train_architectures)}
tokenizer = load_tokenizer(p.model)
extra = em.read_trajectories(p.trajectories_file) if p.trajectories_file else None
windows = training.training_windows(tokenizer, ["boolq", "sciq", "hellaswag"], p.train_tokens, p.train_window,
                                    seed=p.seed)
train_windows, probe = windows[:-p.train_probe_sequences], windows[-p.train_probe_sequences:]
training.check_memory(list(specs.values()), len(tokenizer), p.train_batch_size, p.train_window, p.device)
checkpoints = training.checkpoint_steps(p.train_steps, p.train_checkpoint_every)
print(f"{len(train_windows)} training windows of {p.train_window} tokens, {len(probe)} probe windows; "
      f"checkpoints at steps {', '.join(map(str, checkpoints))}")

# %% [markdown]
# ## Training and recording

# %%
# papermill_description=training
records, losses = [], []
for name, spec in specs.items():
    with provenance.timed(out, f"train {name}"):
        loss = training.train(spec, train_windows, checkpoints, tokenizer,
                              lambda model, step: records.append(training.record(model, probe, step, name,
                                                                                 batch_size=training.PROBE_BATCH)), p)
    losses.append(pd.DataFrame({"model": name, "step": np.arange(1, len(loss) + 1), "loss": loss}))
    print(f"{name}: {spec.n_params(len(tokenizer)) / 1e6:.2f} M parameters, loss {loss[0]:.2f} -> "
          f"{np.mean(loss[-10:]):.2f}")
trajectories = pd.concat(records, ignore_index=True)
artifacts.write(out, "trajectories.parquet", trajectories)
artifacts.write(out, "losses.parquet", pd.concat(losses, ignore_index=True))

# %%
# NBVAL_CHECK_OUTPUT
ratio = trajectories[trajectories.stat == "ratio"]
print(ratio.pivot_table(index=["model", "layer"], columns="step", values="mean").round(1).to_string())

# %% [markdown]
# ## Fits per (model, layer)

# %%
series = ratio.rename(columns={"mean": "ratio"})[list(em.TRAJECTORY_COLUMNS)]
if extra is not None:
    series = pd.concat([series, extra[list(em.TRAJECTORY_COLUMNS)]], ignore_index=True)
with provenance.timed(out, "fits"):
    fits = em.fit_trajectories(series)
artifacts.write(out, "fits.parquet", fits)

# %%
# NBVAL_CHECK_OUTPUT
chosen = fits[fits.chosen].set_index(["model", "layer"]).fit
ma5 = fits[fits.fit == "ma5"].set_index(["model", "layer"])
summary = pd.DataFrame({"chosen": chosen, "ma5_ok": ma5.ok, "ma5_r2": ma5.r2.round(3), "ma5_aic": ma5.aic.round(1),
                        "t_peak": ma5.t_peak.round(0), "class": ma5.trajectory_class})
print(summary.to_string())
failed = fits[~fits.ok]
print(f"{len(failed)} failed fit(s)" + (": " + "; ".join(sorted(set(failed.reason.str[:60]))) if len(failed) else ""))

# %% [markdown]
# ## Trajectories with fits
# Top-1/median ratio per layer over training (probe mean, 95% interval), the 5-parameter fit (solid)
# and the step responses (dotted, dashed), drawn from the fitted parameters.

# %%
# NBVAL_IGNORE_OUTPUT
for name in specs:
    plots.show(plots.trajectory_fits(ratio, fits, name), f"trajectory_{name}")
ma5_rows = fits[fits.fit == "ma5"]
plots.show(plots.fit_heatmap(ma5_rows, "t_peak",
                             "peak step of the 5-parameter fit (Lambert W; blank: none / infinite)"), "fit_t_peak")
plots.show(plots.fit_heatmap(ma5_rows, "r2", "R² of the 5-parameter fit"), "fit_r2")

# %% [markdown]
# ## Predicting the fitted parameters from architecture
# Features of seed 003's Table 4; Ridge and random forest, 5-fold cross-validated R² with its spread,
# permutation importance. With few (model, layer) rows nothing can be concluded, and the table says so.

# %%
pred = predictors.predict(predictors.fitted_rows(fits, specs), ["p_lambda", "p_K", "p_gamma", "p_A", "p_t0"], seed=p.seed)
artifacts.write(out, "predictors.parquet", pred)

# %%
# NBVAL_CHECK_OUTPUT
print(pred[["target", "n_rows", "regressor", "conclusive", "note"]].to_string(index=False))

# %%
# NBVAL_CHECK_OUTPUT
from IPython.display import Markdown

from avalanche_nb import results

Markdown(results.what_this_shows(run_dir, out, "07_training_dynamics"))
