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
# # 05 · Replication on a second model
#
# The measurements of phases 01–04 (gain on every MLP) repeated on the models of
# `replication_models`, with the same params and the same steps: Dataset A calibration and rate-matched
# lattices, the gain sweep against the nulls, the pre-registered g* rule on A (with the edge extension),
# then Dataset B (signatures, perplexity) and ARC on the grid questions. The run's own model is read
# from phases 03–04, not recomputed. The embedded default pairs SmolLM2-135M-Instruct (Llama
# architecture) with Gemma-3-270m base: different families, sizes, tokenizers and training, so
# agreement is a **cross-family** replication, not a base-vs-instruct comparison; give a pair of one
# family (e.g. a base and its instruct model from the local HF cache) for that.
#
# A model that cannot be loaded offline is reported with the reason and skipped; the others go on.
#
# Artifacts: `replication.parquet` (per model and gain), `replication.json` (side-by-side table,
# every rule's g*, failures).

# %% tags=["parameters"]
run_dir = ""  # the run folder, injected by `avalanche-nb run` (empty: the defaults, artifacts to a scratch folder)

# %%
import json

import pandas as pd

from avalanche_nb import artifacts, plots, provenance, replication, runtime
from avalanche_nb.progress import track

p, out = runtime.start(run_dir, "05_replication")

# %% [markdown]
# ## Measurements per model

# %%
# papermill_description=replication
models, failures = {}, {}
for name in track(p.replication_models, "replication", unit="model"):
    with provenance.timed(out, f"model {name}"):
        if name == p.model:  # the run's model: phases 03 and 04 already measured it
            m = replication.from_run(run_dir, out)
        else:
            try:
                m = replication.measure(name, p)
            except replication.ReplicationModelError as err:
                failures[name] = str(err)
                print(f"SKIPPED {name}: {err}")
                continue
            m["curves"] = replication.curves(name, m["sweep"], m["transfer"], m["arc_grid"], m["gstar"])
            m["source"] = "measured here"
    models[name] = m
    print(f"{name}: g* = {m['gstar']:g} ({p.gstar_rule})")
if not models:
    raise RuntimeError(f"no replication model could be measured: {failures}")
relation = replication.family_relation([m["info"]["model_type"] for m in models.values()])
table = replication.side_by_side(models)
curves = pd.concat([m["curves"] for m in models.values()], ignore_index=True)
artifacts.write(out, "replication.parquet", curves)
artifacts.write(out, "replication.json", {
    "models": list(models), "relation": relation, "failures": failures, "gstar_rule": p.gstar_rule,
    "side_by_side": json.loads(table.to_json()), "sources": {k: m["source"] for k, m in models.items()},
    "picks": {k: m["picks"] for k, m in models.items()}})

# %%
# NBVAL_CHECK_OUTPUT
print(f"{len(models)} model(s), {relation}; failed: {', '.join(failures) or 'none'}")
print(table.to_string(float_format=lambda x: f"{x:.4g}"))

# %% [markdown]
# ## Overlaid curves
# Fixed-threshold rate, rate-matched `b_tot`, delta-b z (N1), `chi_perc`, Dataset B perplexity and
# ARC accuracy (grid questions, both subsets pooled) against the gain, each model's g* starred.

# %%
# NBVAL_IGNORE_OUTPUT
plots.show(plots.replication_curves(curves, relation), "replication_curves")

# %%
# NBVAL_CHECK_OUTPUT
from IPython.display import Markdown

from avalanche_nb import results

Markdown(results.what_this_shows(run_dir, out, "05_replication"))
