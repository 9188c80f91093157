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
run_dir = ""  # the run folder, injected by `avalanche-nb run` (empty: the defaults, artifacts to a scratch folder)

# %%
import pandas as pd

from avalanche_nb import artifacts, massive, plots, provenance, replication, runtime
from avalanche_nb import ma_experiments as mx
from avalanche_nb.data import load_arc
from avalanche_nb.progress import track

p, out = runtime.start(run_dir, "06_massive")
names = list(dict.fromkeys([p.model, *p.replication_models]))
questions = load_arc(p.arc_subsets, limit=p.rigidity_arc_limit, seed=p.seed)
_, ratio_min = massive.thresholds(p.ma_criterion, p.ma_relaxed_ratio)

# %% [markdown]
# ## Per model: profile, ME layer, interventions, sinks, factorial ablation, rigidity reduction
# A model that cannot be loaded offline is reported and skipped; a model with no layer meeting the
# criterion gets its profile and "none found", and no interventions.

# %%
# papermill_description=massive
tables = {k: [] for k in mx.TABLES}
me_info, findings, failures = {}, {}, {}
for name in track(names, "massive activations", unit="model"):
    try:
        lm = replication.load(name, p.dtype, p.device, p.seed, p.device_map)
    except replication.ReplicationModelError as err:
        failures[name] = str(err)
        print(f"SKIPPED {name}: {err}")
        continue
    seconds = {}
    me, model_tables, found = mx.analyse(lm, p, questions, seconds)
    provenance.add_timings(out, {f"{name}: {step}": x for step, x in seconds.items()})
    me_info[name] = me
    for key, df in model_tables.items():
        tables[key].append(df)
    if found is None:
        print(f"{name}: none found — {me['reason']}")
        continue
    findings[name] = found
    print(f"{name}: ME layer {me['me_layer']} (largest jump {me['jump_layer']}), MA token {me['ma_pos']} "
          f"{me['ma_token']!r}, dims {me['ma_dims']}")
    del lm
if not me_info:
    raise RuntimeError(f"no model could be analysed: {failures}")
frames = {k: pd.concat(v, ignore_index=True) if v else artifacts.empty(f"{k}.parquet") for k, v in tables.items()}
for key, df in frames.items():
    artifacts.write(out, f"{key}.parquet", df)
artifacts.write(out, "me_layer.json", {"criterion": p.ma_criterion, "models": me_info, "failures": failures})
artifacts.write(out, "findings.json", findings)

# %%
# NBVAL_CHECK_OUTPUT
for name, me in me_info.items():
    ind = me["independent"]
    print(f"{name}: ME layer {me['me_layer']} ({p.ma_criterion}); first by criterion {me['first_layer']}; "
          f"largest jump {me['jump_layer']}; MA token {me['ma_pos']} {me['ma_token']!r}; dims {me['ma_dims']}; "
          f"independent scan: ME layer {ind['me_layer']}, position {ind.get('ma_pos')}, dim {ind.get('top1_dim')}")
for name, f in findings.items():
    print(name, "perplexity ratio: " + ", ".join(f"{k} {v:.3g}" for k, v in f["perplexity_ratio"].items()))
    print(name, "MA persists downstream in the factorial cells: "
          + ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in f["ma_persists_in_factorial"].items()))
print("failed:", ", ".join(failures) or "none")

# %% [markdown]
# ## Profiles
# Top-3 and median `|h|` per layer output (mean over the probe sequences, log scale), as in the seeds'
# figures; the dotted red line is the ME layer.

# %%
# NBVAL_IGNORE_OUTPUT
for name, prof in frames["profile"].groupby("model", sort=False):
    plots.show(plots.ma_profile(prof, me_info[name], f"{name}: largest and median |h| per layer"), f"profile_{name}")
cols = ["model", "layer", "top1", "top1_std", "median", "ratio", "ratio_sem", "sun", "relaxed", "top1_pos", "top1_dim"]
massive.around_me_layer(frames["profile"], me_info)[cols].round(3)  # the layers around each ME layer

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
    plots.show(fig, "propagation")

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
# unedited, and its change under each edit of the MA sites, all edits on one colour scale (so an edit
# that changes nothing looks blank next to one that does).

# %%
# NBVAL_IGNORE_OUTPUT
for name, sink in frames["attention_sink"].groupby("model", sort=False):
    base = sink[sink.intervention == "none"]
    plots.show(plots.layer_head_heatmap(base, "sink", f"{name}: attention mass on the first token"), f"sink_{name}")
    plots.show(plots.sink_changes(sink, p.ma_interventions, name), f"sink_changes_{name}")

# %% [markdown]
# ## Factorial ablation at the ME layer
# Which component creates the MA? Each cell edits only the ME layer; the lines are the downstream
# top-1/median ratio. An MA that no longer meets the criterion after the ME layer means that component
# is necessary for it.

# %%
# NBVAL_IGNORE_OUTPUT
for name, fac in frames["factorial"].groupby("model", sort=False):
    plots.show(plots.ratio_by_layer(fac, ["norm", "mlp"], f"{name}: factorial ablation at the ME layer",
                                    me_info[name]["me_layer"], ratio_min), f"factorial_{name}")
    display(fac.groupby(["norm", "mlp"], sort=False).perplexity.first().round(3).to_frame())

# %% [markdown]
# ## Rigidity reduction at the ME layer vs control layers
# The seed's decisive experiment. The method scales the MA token's largest normed dims on the way into
# attention at one layer; the residual stream itself is not edited. Left: downstream ratio per applied
# layer; the table: changes in perplexity, ARC accuracy and mean sink mass against the unedited model.

# %%
# NBVAL_IGNORE_OUTPUT
for name, rig in frames["rigidity"].groupby("model", sort=False):
    plots.show(plots.ratio_by_layer(rig, ["applied", "alpha", "mask_rate"],
                                    f"{name}: rigidity reduction (applied = -1: none)",
                                    me_info[name]["me_layer"], ratio_min), f"rigidity_{name}")
    display(pd.DataFrame(findings[name]["rigidity"]).round(4))

# %%
# NBVAL_CHECK_OUTPUT
from IPython.display import Markdown

from avalanche_nb import results

Markdown(results.what_this_shows(run_dir, out, "06_massive"))
