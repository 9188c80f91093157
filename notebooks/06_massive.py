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
# # 06 · Massive activations: where they emerge, what they do, what removing them does
#
# For the run's model and every model of `replication_models` (DESIGN.md §5, seeds 002–004):
#
# 1. **Profile** of each decoder layer's output `h[l]` on a probe slice of Dataset A: top-k `|h|` with
#    position, token and dim, median `|h|`, top-1/median ratio (mean and spread over sequences); Sun et
#    al.'s criterion (`|a| > 100` and ratio ≥ 1000) and the relaxed ratio of seed 003.
# 2. **ME layer**: the first layer meeting `ma_criterion` (and the layer of the largest jump in log ratio),
#    the MA token and dims; **propagation**: how much the MA token's state changes from layer to layer,
#    against ordinary tokens. Checked against an independent scan of HF's `output_hidden_states`.
# 3. **Interventions** on the MA sites from the ME layer on (zero / calibration mean / clip): Dataset B
#    perplexity ratio and per-token loss change by token class.
# 4. **Attention sinks**: attention mass on the first token per layer and head, before and after.
# 5. **Factorial ablation at the ME layer**: pre-MLP norm weight as-is or replaced by its mean × MLP
#    output kept or removed at the MA token — which component makes the MA?
# 6. **Rigidity reduction** (the ME_Layer authors' method) at the ME layer and at control layers: do MAs
#    vanish downstream, and do perplexity, ARC and sink mass move, only when it is applied at the ME layer?
#
# Artifacts: `profile.parquet`, `profile_topk.parquet`, `me_layer.json`, `propagation.parquet`,
# `interventions.parquet`, `token_class.parquet`, `attention_sink.parquet`, `factorial.parquet`,
# `rigidity.parquet`, `findings.json`.

# %% tags=["parameters"]
run_dir = ""  # run folder, injected by `avalanche-nb run`
phase = "06_massive"  # phase name, injected by `avalanche-nb run`
model = "smollm2-135m-instruct"  # registry name, local path (folder or .gguf) or HF id in the local cache
dtype = "float32"  # weights and compute dtype
device = "cpu"  # torch device
torch_threads = 2  # CPU threads for torch
batch_size = 8  # sequences per forward pass
seed = 0  # seeds slice sampling and every random draw
progress = True  # show progress bars
dataset_a = "boolq"  # source of the probe and calibration slices
dataset_b = "sciq"  # source of the perplexity slice
window = 128  # tokens per window
n_sequences_b = 16  # Dataset B windows
arc_subsets = ["ARC-Easy", "ARC-Challenge"]  # ARC validation subsets
score_batch_size = 16  # ARC questions or B windows per forward pass when scoring
replication_models = ["smollm2-135m-instruct", "gemma3-270m"]  # models analysed besides the run's model
ma_probe_sequences = 10  # Dataset A windows of the probe slice
ma_calibration_sequences = 16  # Dataset A windows whose MA-site means the mean intervention writes
ma_top_k = 10  # largest entries kept per layer and sequence
ma_criterion = "sun"  # sun or relaxed
ma_relaxed_ratio = 100.0  # top-1 over median ratio of the relaxed criterion
ma_interventions = ["zero", "mean", "clip"]  # edits of the MA sites from the ME layer on
ma_clip_multiple = 10.0  # clip MA sites to this multiple of the median
rigidity_alphas = [0.0]  # factors for the largest dims of the MA token's normed state
rigidity_mask_rates = [0.01]  # fractions of d_model scaled
rigidity_controls = 3  # control layers besides the ME layer (None: every other layer)
rigidity_arc_limit = 25  # ARC questions per subset per rigidity configuration (None: all)

# %%
import time

import numpy as np
import pandas as pd
import torch

from avalanche_nb import ma_experiments as mx
from avalanche_nb import massive, plots, provenance, replication, runtime
from avalanche_nb.data import build_slice, load_arc

runtime.configure(seed, torch_threads)
out = provenance.phase_output(run_dir, phase)
names = list(dict.fromkeys([model, *replication_models]))
questions = load_arc(arc_subsets, limit=rigidity_arc_limit, seed=seed)
abs_min, ratio_min = massive.thresholds(ma_criterion, ma_relaxed_ratio)


def independent_scan(lm, tokens):
    """ME layer, MA position and dim from HF's own output_hidden_states with numpy (no hooks of ours)."""
    with torch.no_grad():
        ids = torch.as_tensor(np.array(tokens), device=lm.model.device)
        hs = lm.model.base_model(input_ids=ids, output_hidden_states=True).hidden_states
    # hidden_states[l + 1] is layer l's output, except the last, which HF returns after the final norm
    a = np.stack([h.abs().double().cpu().numpy() for h in hs[1:-1]])  # [L-1, N, T, d]
    flat = a.reshape(a.shape[0], a.shape[1], -1)
    top, med = flat.max(2), np.median(flat, axis=2)
    meets = (top.mean(1) > abs_min) & ((top / med).mean(1) >= ratio_min)
    if not meets.any():
        return {"me_layer": None}
    me_l = int(np.argmax(meets))
    where = flat[me_l].argmax(1)
    pos, dim = np.divmod(where, a.shape[3])
    return {"me_layer": me_l, "ma_pos": int(np.bincount(pos).argmax()), "top1_dim": int(np.bincount(dim).argmax())}


# %% [markdown]
# ## Per model: profile, ME layer, interventions, sinks, factorial ablation, rigidity reduction
# A model that cannot be loaded offline is reported and skipped; a model with no layer meeting the
# criterion gets its profile and "none found", and no interventions.

# %%
# papermill_description=massive
tables = {k: [] for k in ("profile", "profile_topk", "propagation", "interventions", "token_class",
                          "attention_sink", "factorial", "rigidity")}
me_info, findings, failures = {}, {}, {}
for name in names:
    t0 = time.perf_counter()
    try:
        lm = replication.load(name, dtype, device, seed)
    except replication.ReplicationModelError as err:
        failures[name] = str(err)
        print(f"SKIPPED {name}: {err}")
        continue
    tok = lm.tokenizer
    probe = build_slice(tok, dataset_a, ma_probe_sequences, window, seed=seed, offset=0)
    calib = build_slice(tok, dataset_a, ma_calibration_sequences, window, seed=seed, offset=ma_probe_sequences)
    slice_b = build_slice(tok, dataset_b, n_sequences_b, window, seed=seed)
    text = [runtime.token_strings(tok, row) for row in probe.tokens]
    s = massive.scan(lm.model, probe.tokens, ma_top_k, batch_size, progress=progress)
    me = massive.me_layer(s, ma_criterion, ma_relaxed_ratio)
    me.update(model=name, n_layers=s.n_layers, probe_sha256=probe.sha256,
              ma_token=text[0][me["ma_pos"]] if me["found"] else None, independent=independent_scan(lm, probe.tokens))
    ind = me["independent"]
    checkable = not me["found"] or me["me_layer"] < s.n_layers - 1  # HF's last hidden state is post-norm
    if checkable and (ind["me_layer"] != me["me_layer"] or (me["found"] and (ind["ma_pos"] != me["ma_pos"] or ind["top1_dim"] not in me["ma_dims"]))):
        raise RuntimeError(f"{name}: the hooked scan {me} disagrees with the independent hidden-state scan {ind}")
    me_info[name] = me
    tables["profile"].append(massive.profile_table(s, ma_relaxed_ratio).assign(model=name))
    tables["profile_topk"].append(massive.topk_table(s, text).assign(model=name))
    if not me["found"]:
        print(f"{name}: none found — {me['reason']}")
        continue
    tables["propagation"].append(massive.propagation(s, me["ma_pos"]).assign(model=name))
    inter, classes, sinks = mx.interventions(lm.model, tok, me, probe.tokens, calib.tokens, slice_b.tokens,
                                             ma_interventions, ma_clip_multiple, ma_top_k, score_batch_size)
    fact = mx.factorial(lm.model, me, probe.tokens, slice_b.tokens, ma_top_k, score_batch_size)
    layers = mx.control_layers(s.n_layers, me["me_layer"], rigidity_controls)
    rig = mx.rigidity(lm.model, tok, me, probe.tokens, slice_b.tokens, questions, layers, rigidity_alphas,
                      rigidity_mask_rates, ma_top_k, score_batch_size, progress)
    for key, df in (("interventions", inter), ("token_class", classes), ("attention_sink", sinks),
                    ("factorial", fact), ("rigidity", rig)):
        tables[key].append(df.assign(model=name))
    findings[name] = mx.findings(me, inter, fact, rig)
    print(f"{name}: ME layer {me['me_layer']} (jump {me['jump_layer']}), MA token {me['ma_pos']} "
          f"{me['ma_token']!r}, dims {me['ma_dims']}; {time.perf_counter() - t0:.0f} s")
    del lm
if not me_info:
    raise RuntimeError(f"no model could be analysed: {failures}")
frames = {k: pd.concat(v, ignore_index=True) if v else pd.DataFrame() for k, v in tables.items()}
for key, df in frames.items():
    provenance.save_parquet(out / f"{key}.parquet", df)
provenance.save_json(out / "me_layer.json", {"criterion": ma_criterion, "models": me_info, "failures": failures})
provenance.save_json(out / "findings.json", findings)

# %%
# NBVAL_CHECK_OUTPUT
for name, me in me_info.items():
    print(f"{name}: ME layer {me['me_layer']} ({ma_criterion}); first by criterion {me['first_layer']}; "
          f"jump {me['jump_layer']}; MA token {me['ma_pos']} {me['ma_token']!r}; dims {me['ma_dims']}; "
          f"independent scan {me['independent']}")
for name, f in findings.items():
    print(name, "perplexity ratio:", {k: f"{v:.3g}" for k, v in f["perplexity_ratio"].items()})
    print(name, "MA persists downstream in the factorial cells:", f["ma_persists_in_factorial"])
print("failed:", failures or "none")

# %% [markdown]
# ## Profiles
# Top-3 and median `|h|` per layer output (mean over the probe sequences, log scale), as in the seeds'
# figures; the dotted red line is the ME layer.

# %%
# NBVAL_IGNORE_OUTPUT
for name, prof in frames["profile"].groupby("model", sort=False):
    plots.ma_profile(prof, me_info[name], f"{name}: largest and median |h| per layer").show()
cols = ["model", "layer", "top1", "top1_std", "median", "ratio", "ratio_sem", "sun", "relaxed", "top1_pos", "top1_dim"]
frames["profile"][cols].round(3)

# %% [markdown]
# ## Propagation
# Cosine similarity of a token's hidden state with its state one layer earlier. After the ME layer the
# MA token's state barely changes (≈ 1), while ordinary tokens keep being rewritten.

# %%
# NBVAL_IGNORE_OUTPUT
if len(frames["propagation"]):
    prop = frames["propagation"].assign(series=lambda d: d.model + " · " + d.group)
    fig = plots.per_layer({k: g.cos.to_numpy() for k, g in prop.groupby("series", sort=False)},
                          "cos(h[l-1], h[l]) of the MA token vs ordinary tokens", "cosine similarity")
    fig.show()

# %% [markdown]
# ## Interventions: perplexity and token classes
# Zeroing the MA sites from the ME layer on versus writing their calibration mean: the seeds report that
# zeroing destroys the model (perplexity up by orders of magnitude) while the mean leaves it nearly
# intact, i.e. the MA works as a fixed bias. Loss changes per token class follow (input token = the
# token whose state makes the prediction; target = the predicted token).

# %%
# NBVAL_IGNORE_OUTPUT
if len(frames["interventions"]):
    ppl = frames["interventions"].groupby(["model", "intervention"], sort=False)[["perplexity", "perplexity_ratio"]].first()
    display(ppl.round(4))
    tc = frames["token_class"]
    display(tc[tc.intervention != "none"].pivot_table(index=["model", "intervention", "class_by"],
                                                      columns="token_class", values="delta").round(3))

# %% [markdown]
# ## Attention sinks
# Attention mass on the first token, per layer and head (mean over query positions and probe sequences),
# unedited, and its change when the MA sites are zeroed.

# %%
# NBVAL_IGNORE_OUTPUT
for name, sink in frames["attention_sink"].groupby("model", sort=False):
    base = sink[sink.intervention == "none"]
    plots.layer_head_heatmap(base, "sink", f"{name}: attention mass on the first token").show()
    for mode in ma_interventions:
        edited = sink[sink.intervention == mode].merge(base, on=["layer", "head"], suffixes=("", "_none"))
        edited["change"] = edited.sink - edited.sink_none
        plots.layer_head_heatmap(edited, "change", f"{name}: sink mass change under '{mode}'", diverging=True).show()

# %% [markdown]
# ## Factorial ablation at the ME layer
# Which component creates the MA? Each cell edits only the ME layer; the lines are the downstream
# top-1/median ratio. An MA that no longer meets the criterion after the ME layer means that component
# is necessary for it.

# %%
# NBVAL_IGNORE_OUTPUT
for name, fac in frames["factorial"].groupby("model", sort=False):
    plots.ratio_by_layer(fac, ["norm", "mlp"], f"{name}: factorial ablation at the ME layer",
                         me_info[name]["me_layer"], ratio_min).show()
    display(fac.groupby(["norm", "mlp"], sort=False).perplexity.first().round(3).to_frame())

# %% [markdown]
# ## Rigidity reduction at the ME layer vs control layers
# The seed's decisive experiment. The method scales the MA token's largest normed dims on the way into
# attention at one layer; the residual stream itself is not edited. Left: downstream ratio per applied
# layer; the table: changes in perplexity, ARC accuracy and mean sink mass against the unedited model.

# %%
# NBVAL_IGNORE_OUTPUT
for name, rig in frames["rigidity"].groupby("model", sort=False):
    plots.ratio_by_layer(rig, ["applied", "alpha", "mask_rate"], f"{name}: rigidity reduction (applied = -1: none)",
                         me_info[name]["me_layer"], ratio_min).show()
    display(pd.DataFrame(findings[name]["rigidity"]).round(4))

# %% [markdown]
# ## What the numbers say

# %%
# NBVAL_CHECK_OUTPUT
for name, f in findings.items():
    r = f["perplexity_ratio"]
    if {"zero", "mean"} <= set(r):
        contrast = r["zero"] > 10 and r["mean"] < 1.5
        print(f"{name}: zeroing multiplies B perplexity by {r['zero']:.3g}, the calibration mean by {r['mean']:.3g}: "
              + ("the contrast the seeds report." if contrast else "NOT the contrast the seeds report."))
    cells = f["ma_persists_in_factorial"]
    stops = [c for c, persists in cells.items() if not persists]
    print(f"{name}: the MA is stopped by " + (", ".join(stops) if stops else "no factorial cell") + " at the ME layer.")
    rig = pd.DataFrame(f["rigidity"])
    if len(rig):
        at_me = rig[rig.at_me_layer]
        vanish = at_me.ma_persists.eq(False).any()
        print(f"{name}: rigidity reduction at the ME layer {'removes' if vanish else 'does not remove'} the MA downstream; "
              f"|d perplexity| at the ME layer {at_me.d_perplexity.abs().max():.3g} vs controls "
              f"{rig[~rig.at_me_layer].d_perplexity.abs().max():.3g}.")
