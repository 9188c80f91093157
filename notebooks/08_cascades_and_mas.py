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
# # 08 · Cascades meet massive activations
#
# Phases 01–05 measure avalanches and 06 measures massive activations (MAs), each on its own forward
# passes. Here both are read off the same passes of the same models (the run's `model` and every model
# of `replication_models`), with the controls of the rest of the project (rate matching, N1–N3, CIs):
#
# 1. **Does the MLP gain move the MAs?** The residual profile of 06's MA probe at every gain of the sweep
#    grid, with the gain on every MLP (`scope = all`) and on the ME layer's MLP alone (`me_layer`): the
#    ME layer by both criteria, the MA token and dims, and the MA's magnitude at its own site at the ME
#    layer and at the last layer, with bootstrap CIs over sequences.
# 2. **Where do avalanches sit relative to the MA sites?** On a lattice that keeps the first token (the MA
#    token of both embedded models; same calibration, same rate-matched thresholds logic): the share of
#    spikes, spiking sites and avalanche starts at the MA token, at the ME layer and at secondary outliers
#    (other tokens' sites whose largest |h| stands out, `secondary_outlier_ratio`), each against N2, which
#    keeps every (sequence, layer) row's rate and runs and moves positions; and the rank correlation of a
#    site's outlier ratio with its spike count within (layer, position) strata.
# 3. **Does removing the MAs change the cascades?** The params' rate-matched lattice recomputed under 06's
#    MA edits (from the ME layer on): b_tot, Δb against N1–N3 (same seed and draws), χ_perc, avalanche
#    counts and sizes, against the unedited model; the rate at the unedited thresholds says what the edit
#    does to the rate, the rate-matched lattice what it does to connectivity.
# 4. **Is the ME layer visible in the lattice?** Rate, b_time, b_depth and MR branching per layer, and their
#    change into and out of the ME layer with bootstrap CIs.
#
# A model with no ME layer in 06 is reported and skipped, as 06 does. Artifacts: `gain_ma_profile.parquet`,
# `gain_ma.parquet`, `site_shares.parquet`, `outlier_spikes.parquet`, `edit_lattices.parquet`,
# `edit_sizes.parquet`, `lattice_layers.parquet`, `me_layer_change.parquet`, `cascades.json`, and for the
# explorer `first_token_lattices.npz` (`explore(run_id=..., lattice="first_token")`).

# %% tags=["parameters"]
run_dir = ""  # the run folder, injected by `avalanche-nb run` (empty: the defaults, artifacts to a scratch folder)

# %%
import pandas as pd

from avalanche_nb import artifacts, massive, plots, provenance, replication, runtime
from avalanche_nb import ma_lattice as ml
from avalanche_nb.progress import track

p, out = runtime.start(run_dir, "08_cascades_and_mas")
names = list(dict.fromkeys([p.model, *p.replication_models]))
ma = artifacts.read(run_dir, "me_layer.json", out)

# %% [markdown]
# ## Per model: the four questions
# The MA sites (ME layer, MA token, dims) are phase 06's. The explorer's first-token lattices are made
# for the run's model whether or not it has an MA.

# %%
# papermill_description=cascades_and_mas
tables = {k: [] for k in ml.TABLES}
records, skipped, failures, stack = {}, {}, dict(ma["failures"]), None
for name in track(names, "cascades and massive activations", unit="model"):
    me = ma["models"].get(name)
    reason = massive.unusable(me, failures.get(name))
    if reason and name != p.model:  # the run's model still gets the explorer's lattices
        skipped[name] = reason
        print(f"SKIPPED {name}: {reason}")
        continue
    try:
        lm = replication.load(name, p.dtype, p.device, p.seed, p.device_map)
    except replication.ReplicationModelError as err:
        failures[name] = str(err)
        print(f"FAILED {name}: {err}")
        continue
    with provenance.timed(out, f"{name}: reference lattices"):
        refs = ml.references(lm, p)
    if name == p.model:
        with provenance.timed(out, "first-token lattices (explorer)"):
            stack = ml.first_token_stack(lm, p, refs)
    if reason:
        skipped[name] = reason
        print(f"{name}: the explorer's first-token lattices only; {reason}")
        continue
    seconds = {}
    model_tables, records[name] = ml.analyse(lm, p, me, refs, seconds=seconds, log=lambda m: print(f"{name}: {m}"))
    provenance.add_timings(out, {f"{name}: {step}": x for step, x in seconds.items()})
    for key, df in model_tables.items():
        tables[key].append(df.assign(model=name))
    del lm
if stack is None:
    raise RuntimeError(f"the run's model {p.model} could not be measured: {failures.get(p.model)}")
frames = {k: pd.concat(v, ignore_index=True) if v else artifacts.empty(f"{k}.parquet") for k, v in tables.items()}
for key, df in frames.items():
    artifacts.write(out, f"{key}.parquet", df)
artifacts.write(out, "cascades.json", {"models": records, "skipped": skipped, "failures": failures,
                                       "explorer_model": p.model})
artifacts.write(out, "first_token_lattices.npz", stack)

# %%
# NBVAL_CHECK_OUTPUT
for name, rec in records.items():
    g = frames["gain_ma"].query("model == @name and scope == 'all'")
    print(f"{name}: ME layer {rec['me_layer']}, MA token {rec['ma_pos']}, dims {rec['ma_dims']}; "
          f"ME layer ({p.ma_criterion}) over the gains: {g['me_layer_' + p.ma_criterion].tolist()}")
    e = frames["edit_lattices"].query("model == @name").set_index("intervention")
    print("  b_tot: " + ", ".join(f"{k} {v:.4f}" for k, v in e.b_tot.items())
          + "; rate at the unedited thresholds x " + ", ".join(f"{k} {v:.3f}" for k, v in e.rate_ratio.items()))
print("skipped:", "; ".join(f"{k} ({v})" for k, v in skipped.items()) or "none")
print("failed:", ", ".join(failures) or "none")

# %% [markdown]
# ## 1 · Does the MLP gain move the massive activations?
# Top-1/median ratio per layer at every gain (gain on every MLP), the dotted line the g = 1 ME layer;
# then the ME layer and the MA's magnitude at its site vs g, for both scopes, with 95% bootstrap CIs over
# the probe sequences.

# %%
# NBVAL_IGNORE_OUTPUT
for name, rec in records.items():
    prof = frames["gain_ma_profile"].query("model == @name and scope == 'all'")
    plots.show(plots.ratio_by_layer(prof, ["g"], f"{name}: top-1 / median |h| per layer, gain on every MLP",
                                    rec["me_layer"]), f"ratio_by_gain_{name}")
    g = frames["gain_ma"].query("model == @name")
    plots.show(plots.with_ci(g, "g", "ma_me", "scope", f"{name}: the MA at its site at the ME layer (layer "
                             f"{rec['me_layer']}) vs g", "max |h| over the MA dims", log=True), f"ma_vs_gain_{name}")
    plots.show(plots.with_ci(g, "g", "seq_me_layer", "scope", f"{name}: ME layer ({p.ma_criterion}) per sequence vs g",
                             "ME layer"), f"me_layer_vs_gain_{name}")
    display(g[["scope", "g", "me_layer_sun", "me_layer_relaxed", "ma_pos", "ma_dims", "seq_found", "ma_me", "ma_me_lo",
               "ma_me_hi", "ma_last", "ratio_me"]].round(3))

# %% [markdown]
# ## 2 · Where do avalanches sit relative to the MA sites?
# Shares on the first-token lattice next to their N2 expectation (bar: ± 1.96 null sd). N2 keeps each
# (sequence, layer) row's spike count, so the ME layer's share of spikes and sites is its rate-matched
# target by construction (no spread, no z); its share of avalanche *starts* is not. The heatmap: the
# rank correlation of a site's outlier ratio with its spike count per (position bucket, layer).

# %%
# NBVAL_IGNORE_OUTPUT
labels = ml.bucket_labels(p.position_buckets, p.window)
for name, rec in records.items():
    shares = frames["site_shares"].query("model == @name")
    plots.show(plots.shares_vs_null(shares, f"{name}: spikes, sites and avalanche starts at MA sites vs N2"),
               f"site_shares_{name}")
    display(shares.drop(columns="model").round(4))
    corr = frames["outlier_spikes"].query("model == @name and layer >= 0")
    plots.show(plots.layer_bucket_heatmap(corr, "rho", f"{name}: Spearman ρ of outlier ratio and spike count",
                                          labels), f"outlier_spikes_{name}")
    s = rec["outlier_spearman"]
    print(f"{name}: pooled within-stratum ρ = {s['rho']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}] over {s['n']} sites; "
          f"{rec['secondary_sites']} secondary-outlier sites")

# %% [markdown]
# ## 3 · Does removing the MAs change the cascades?
# The params' lattice under each MA edit of phase 06. `rate_ratio`: spikes at the unedited thresholds
# relative to no edit (what the edit does to the rate); `d_b_tot`: b_tot of the rate-matched lattice minus
# the unedited one (what it does to connectivity once the rate is held), both with paired bootstrap CIs
# over sequences; then the avalanche size distributions (`ks`: their KS distance from none's, descriptive:
# avalanches of a sequence are not independent, so no KS p-value is given).

# %%
# NBVAL_IGNORE_OUTPUT
cols = ["intervention", "rate_fixed", "rate_ratio", "rate_ratio_lo", "rate_ratio_hi", "b_tot", "d_b_tot", "d_b_tot_lo",
        "d_b_tot_hi", "delta_b_tot_n1", "z_tot_n1", "z_tot_n2", "z_tot_n3", "chi_perc", "n_avalanches", "mean_size",
        "ks"]
for name in records:
    display(frames["edit_lattices"].query("model == @name")[cols].round(4))
    sizes = frames["edit_sizes"].query("model == @name")
    plots.show(plots.ccdf({k: g["size"].to_numpy() for k, g in sizes.groupby("intervention", sort=False)},
                          f"{name}: avalanche sizes under the MA edits (rate-matched)", "size (spikes)"),
               f"edit_sizes_{name}")

# %% [markdown]
# ## 4 · Is the ME layer visible in the lattice?
# Per-layer rate, b_depth and MR branching on both lattices (dotted: the ME layer), then the change into
# and out of the ME layer with its bootstrap CI. In a rate-matched lattice the rate per layer is its target
# (with `baseline_profile`, the g = 1 rate at `reference_tau`).

# %%
# NBVAL_IGNORE_OUTPUT
for name, rec in records.items():
    lay = frames["lattice_layers"].query("model == @name")
    for stat in ("b_depth", "mr_m"):
        fig = plots.per_layer({k: g[stat].to_numpy() for k, g in lay.groupby("lattice", sort=False)},
                              f"{name}: {stat} per layer", stat)
        fig.add_vline(x=rec["me_layer"], line_dash="dot", line_color="crimson", annotation_text="ME layer")
        plots.show(fig, f"{stat}_per_layer_{name}")
    display(frames["me_layer_change"].query("model == @name").drop(columns="model").round(4))

# %%
# NBVAL_CHECK_OUTPUT
from IPython.display import Markdown

from avalanche_nb import results

Markdown(results.what_this_shows(run_dir, out, "08_cascades_and_mas"))
