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
# # 04 · Choosing g* on Dataset A, evaluating it unchanged on Dataset B and ARC
#
# Is g = 1 the best gain, or does a gain chosen from connectivity signatures do better on held-out
# text and on a downstream task? The choice is **pre-registered**: the rule is the params key
# `gstar_rule`, fixed before this notebook runs, and it reads only Dataset A's rate-matched sweep
# lattices (phase 03). `gstar.json` is written before Dataset B or ARC is touched.
#
# Rules (all computed and shown, the configured one decides; `pos` spikes, gain on all MLPs):
#
# * `seed_b_tot`: argmin |b_tot − 1| (the seed's). Under rate matching `b_tot` is pinned by the rate,
#   so this rule drifts with noise; it is kept to reproduce the seed.
# * `chi_perc_max` (default): argmax of the percolation susceptibility.
# * `z_tot_n1_max` (formerly `delta_b_max`): argmax of the null-normalised delta-b z-score under N1.
# * `plateau`: the g nearest 1 whose `chi_perc` lies within one bootstrap SE of the best.
#
# SEs are bootstraps over Dataset A's sequences. A pick on the grid's edge is not an optimum: the search
# then adds gains beyond that edge on Dataset A (same spacing, up to `gstar_limits`) until the pick is
# interior or the limit is reached, still before B or ARC is read. Then: Dataset B's signatures at g = 1
# and g* (same calibration and per-layer targets as A), B's perplexity at every gain, and ARC-Easy /
# ARC-Challenge multiple choice (summed log-likelihood of each choice; `acc`, and `acc_norm` per
# character of the choice text) with bootstrap 95% CIs and McNemar's paired test of g* against g = 1.
#
# Artifacts: `gstar.json`, `transfer.parquet`, `transfer_signatures.parquet`, `arc.parquet`,
# `arc_summary.json`.

# %% tags=["parameters"]
run_dir = ""  # the run folder, injected by `avalanche-nb run` (empty: the defaults, artifacts to a scratch folder)

# %%
import numpy as np
import pandas as pd

from avalanche_nb import artifacts, gstar, pipeline, plots, provenance, runtime, scoring, sweep, transfer
from avalanche_nb.models import load_model

p, out = runtime.start(run_dir, "04_gstar")
gain_grid = sweep.check_gains(p.gains)
lattices = artifacts.read(run_dir, "sweep_lattices.npz", out)
sweep_table = artifacts.read(run_dir, "sweep.parquet", out)
if not np.allclose(lattices["g"], gain_grid):
    raise ValueError(f"the sweep's gains {lattices['g'].tolist()} differ from `gains` {gain_grid.tolist()}")
valid = lattices["valid"]
tokens = pipeline.read_tokens(run_dir, out)
ref = pipeline.read_reference(run_dir, out)
lm = load_model(p.model, dtype=p.dtype, device=p.device, seed=p.seed, device_map=p.device_map)

# %% [markdown]
# ## The rule's evidence, from Dataset A only
# Each criterion per gain with its bootstrap SE over sequences; the point values on the grid equal the
# sweep table's (checked below). When the chosen rule's pick lies on the grid's edge, gains beyond it are
# added (Dataset A only) until the pick is interior or `gstar_limits` is reached.

# %%
# papermill_description=gstar_search
with provenance.timed(out, "gstar_search"):
    search = gstar.search(lattices["counts_pos"], valid, gain_grid, p,
                          lambda g: sweep.lattice_at(lm.model, tokens["a_lattice"], valid, ref, g, p), log=print)
evidence, g_star = search.evidence, search.gstar
on_grid = evidence[np.isclose(evidence.g.to_numpy()[:, None], gain_grid).any(1)].reset_index(drop=True)
main_a = sweep.main_rows(sweep_table)
for col in ("b_tot", "chi_perc", "z_tot_n1"):
    if not np.allclose(on_grid[col], main_a[col], equal_nan=True):
        raise RuntimeError(f"{col} recomputed from the lattices differs from the sweep table")
artifacts.write(out, "gstar.json", {
    "rule": search.rule, "gstar": g_star, "picks": search.picks, "at_edge": search.at_edge, "outcome": search.outcome,
    "outcome_text": search.sentence(), "grid": gain_grid.tolist(), "added_gains": search.added,
    "gstar_limits": p.gstar_limits, "dataset": p.dataset_a, "spike_def": "pos", "threshold_mode": "rate_matched",
    "ablation": "all", "bootstrap_draws": p.bootstrap_draws, "null_draws": p.null_draws,
    "n_sequences": int(valid.shape[0]), "evidence": evidence.to_dict("records")})
print(f"g* = {g_star:g} by the pre-registered rule {search.rule!r} (Dataset A only): {search.sentence()}.")
print("gains added beyond the grid:", ", ".join(f"{g:g}" for g in search.added) or "none")

# %%
# NBVAL_CHECK_OUTPUT
print(evidence[["g", "b_tot", "b_tot_se", "chi_perc", "chi_perc_se", "z_tot_n1", "z_tot_n1_se"]].to_string(
    index=False, float_format=lambda x: f"{x + 0.0:.3g}"))
print(pd.DataFrame({"g*": search.picks, "on an edge": search.at_edge}).to_string())
print("outcome:", search.outcome)

# %%
# NBVAL_IGNORE_OUTPUT
plots.show(plots.gstar_evidence(evidence, search.picks, search.rule), "gstar_evidence")

# %% [markdown]
# ## Transfer to Dataset B
# B is read only now, after `gstar.json` exists. Its lattices use A's calibration and A's g = 1
# per-layer targets; perplexity is the model's own next-token loss on B at each gain.

# %%
# papermill_description=transfer
assert (out / "gstar.json").exists()
with provenance.timed(out, "transfer"):
    b_rows, _, table = transfer.evaluate(lm.model, tokens["a_lattice"], tokens["b"], ref, a_rows=sweep_table,
                                         search=search, p=p)
artifacts.write(out, "transfer_signatures.parquet", b_rows)
artifacts.write(out, "transfer.parquet", table)

# %%
# NBVAL_CHECK_OUTPUT
print("Dataset B perplexity per gain:")
print(table[["g", "perplexity", "nll_mean", "is_gstar"]].to_string(index=False, float_format=lambda x: f"{x + 0.0:.4g}"))
print("\nrate-matched pos signatures at g = 1 and g* (B with A's yardstick; A for comparison):")
print(transfer.signature_table(table, g_star).to_string(float_format=lambda x: f"{x + 0.0:.4g}"))

# %%
# NBVAL_IGNORE_OUTPUT
plots.show(plots.perplexity(table, g_star), "perplexity_b")

# %% [markdown]
# ## ARC multiple choice
# `acc` picks the choice with the largest summed log-likelihood, `acc_norm` the largest per
# character of the choice text (lm-evaluation-harness). The grid questions (a seeded subset per subset,
# or all) are scored at every gain; with `arc_full` every question is also scored at g = 1 and g*, and
# McNemar's test pairs those.

# %%
# papermill_description=arc
with provenance.timed(out, "arc"):
    arc, summary = scoring.evaluate_arc(lm.model, lm.tokenizer, transfer.evaluated_gains(p.gains, g_star), g_star, p,
                                        full=p.arc_full)
artifacts.write(out, "arc.parquet", arc)
artifacts.write(out, "arc_summary.json", summary)

# %%
# NBVAL_CHECK_OUTPUT
acc = pd.DataFrame(summary["full"] or summary["grid"])
print(f"{'full' if summary['full'] else 'grid'} set:")
print(acc[["subset", "g", "n", "acc", "acc_lo", "acc_hi", "acc_norm", "chance"]].to_string(
    index=False, float_format=lambda x: f"{x:.3f}"))
for subset, t in summary["mcnemar"].items():
    print(f"McNemar g*={g_star:g} vs g=1 ({summary['mcnemar_set']} set, {subset}, n={t['n']}); right only at g=1 / "
          f"only at g*: acc {t['acc']['n01']}/{t['acc']['n10']} (exact p={t['acc']['p_exact']:.3g}), "
          f"acc_norm {t['acc_norm']['n01']}/{t['acc_norm']['n10']} (p={t['acc_norm']['p_exact']:.3g})")

# %%
# NBVAL_IGNORE_OUTPUT
plots.show(plots.arc_accuracy(pd.DataFrame(summary["grid"]), g_star), "arc_accuracy")

# %%
# NBVAL_CHECK_OUTPUT
from IPython.display import Markdown

from avalanche_nb import results

Markdown(results.what_this_shows(run_dir, out, "04_gstar"))
