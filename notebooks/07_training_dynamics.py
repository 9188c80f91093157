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
# Llama-style models from scratch (SmolLM2's tokenizer, random init, AdamW with warm-up, seeded) on a
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
run_dir = ""  # run folder, injected by `avalanche-nb run`
phase = "07_training_dynamics"  # phase name, injected by `avalanche-nb run`
device = "cpu"  # torch device
torch_threads = 2  # CPU threads for torch
seed = 0  # seeds initialisation, batches and every random draw
progress = True  # show progress bars
train_architectures = ["2x64x2x4", "4x64x4x4"]  # LAYERSxWIDTHxHEADSxMLP_RATIO per model
train_steps = 200  # AdamW steps per model
train_checkpoint_every = 25  # checkpoint spacing after the powers of two
train_batch_size = 8  # windows per step
train_window = 64  # tokens per window
train_tokens = 1000000  # tokens of the training stream
train_lr = 0.001  # peak learning rate
train_warmup = 30  # warm-up steps
train_probe_sequences = 10  # held-out probe windows
trajectories_file = None  # CSV or parquet of extra trajectories (None: none)

# %%
import time
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from avalanche_nb import emergence as em
from avalanche_nb import predictors, provenance, runtime, training
from avalanche_nb.models import load_model

runtime.configure(seed, torch_threads)
out = provenance.phase_output(run_dir, phase)
archs = [training.parse_architecture(a) for a in train_architectures]
tokenizer = load_model("smollm2-135m-instruct").tokenizer
extra = None
if trajectories_file:
    path = Path(trajectories_file).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"trajectories_file {path} does not exist")
    extra = em.check_trajectories(pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path))
windows = training.training_windows(tokenizer, ["boolq", "sciq", "hellaswag"], train_tokens, train_window, seed)
if len(windows) <= train_probe_sequences:
    raise ValueError(f"{len(windows)} windows: too few for {train_probe_sequences} probe windows and training")
train_windows, probe = windows[:-train_probe_sequences], windows[-train_probe_sequences:]
training.check_memory(archs, len(tokenizer), train_batch_size, train_window, device)
checkpoints = training.checkpoint_steps(train_steps, train_checkpoint_every)
print(f"{len(train_windows)} training windows of {train_window} tokens, {len(probe)} probe windows; "
      f"checkpoints {checkpoints}")

# %% [markdown]
# ## Training and recording

# %%
# papermill_description=training
records, losses = [], []
for arch in archs:
    t0 = time.perf_counter()
    loss = training.train(
        arch, train_windows, train_steps, checkpoints, tokenizer,
        lambda model, step: records.append(training.record(model, probe, step, arch.name)),
        batch_size=train_batch_size, lr=train_lr, warmup=train_warmup, seed=seed, device=device, progress=progress)
    losses.append(pd.DataFrame({"model": arch.name, "step": np.arange(1, len(loss) + 1), "loss": loss}))
    print(f"{arch.name}: {arch.n_params(len(tokenizer)) / 1e6:.2f} M parameters, loss {loss[0]:.2f} -> "
          f"{np.mean(loss[-10:]):.2f}; {time.perf_counter() - t0:.0f} s")
trajectories = pd.concat(records, ignore_index=True)
losses = pd.concat(losses, ignore_index=True)
provenance.save_parquet(out / "trajectories.parquet", trajectories)
provenance.save_parquet(out / "losses.parquet", losses)

# %%
# NBVAL_CHECK_OUTPUT
ratio = trajectories[trajectories.stat == "ratio"]
print(ratio.pivot_table(index=["model", "layer"], columns="step", values="mean").round(1).to_string())

# %% [markdown]
# ## Fits per (model, layer)

# %%
series = ratio.rename(columns={"mean": "ratio"})[["model", "layer", "step", "ratio"]]
if extra is not None:
    series = pd.concat([series, extra[list(em.TRAJECTORY_COLUMNS)]], ignore_index=True)
fits = em.fit_trajectories(series)
provenance.save_parquet(out / "fits.parquet", fits)

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
# Top-1/median ratio per layer over training (probe mean, 95% interval shaded), the 5-parameter fit
# (solid) and the best step response (dotted).

# %%
# NBVAL_IGNORE_OUTPUT
for name, sel in ratio.groupby("model", sort=False):
    layers = sorted(sel.layer.unique())
    fig = make_subplots(rows=1, cols=len(layers), subplot_titles=[f"layer {l}" for l in layers])
    for j, layer in enumerate(layers, 1):
        g = sel[sel.layer == layer].sort_values("step")
        t = g.step.to_numpy(float)
        fig.add_trace(go.Scatter(x=t, y=g["mean"], mode="markers", name="probe mean", showlegend=j == 1,
                                 error_y=dict(type="data", symmetric=False, array=g.ci_hi - g["mean"],
                                              arrayminus=g["mean"] - g.ci_lo)), row=1, col=j)
        dense = np.linspace(0, t.max(), 400)
        for model_name, dash in (("ma5", "solid"), ("step2_under", "dot"), ("step1", "dash")):
            f = em.fit(t, g["mean"].to_numpy(float), model_name)
            if f.ok:
                fig.add_trace(go.Scatter(x=dense, y=f.predict(dense), mode="lines", line=dict(dash=dash),
                                         name=f"{model_name} (R² {f.r2:.3f})", showlegend=True), row=1, col=j)
    fig.update_layout(title=f"{name}: top-1 / median |h| over training", height=380)
    fig.update_xaxes(title_text="step")
    fig.show()

# %%
# NBVAL_IGNORE_OUTPUT
for col, title in (("t_peak", "peak step (Lambert W)"), ("r2", "R² of the 5-parameter fit")):
    grid = ma5[col].unstack(0)
    fig = go.Figure(go.Heatmap(z=grid.values, x=list(grid.columns), y=list(grid.index), colorbar=dict(title=col)))
    fig.update_layout(title=f"{title} per layer × model", xaxis_title="model", yaxis_title="layer", height=360)
    fig.show()

# %% [markdown]
# ## Predicting the fitted parameters from architecture
# Features of seed 003's Table 4; Ridge and random forest, 5-fold cross-validated R² with its spread,
# permutation importance. With few (model, layer) rows nothing can be concluded, and the table says so.

# %%
arch_of = {a.name: a for a in archs}
rows = ma5[ma5.ok].reset_index()
rows = rows[rows.model.isin(list(arch_of))]
for key in ("layers", "width", "heads", "mlp_ratio"):
    rows[key] = [getattr(arch_of[m], key) for m in rows.model]
pred = predictors.predict(rows, ["p_lambda", "p_K", "p_gamma", "p_A", "p_t0"], seed=seed)
provenance.save_parquet(out / "predictors.parquet", pred)

# %%
# NBVAL_CHECK_OUTPUT
print(pred[["target", "n_rows", "regressor", "conclusive", "note"]].to_string(index=False))
