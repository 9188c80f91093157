"""The numbers and claims of a run, read off its hash-checked artifacts: one source for the paper
(``numbers.tex``, ``claims.tex``), every phase notebook's closing "What this shows", the run's
``SUMMARY.md`` and ``docs/RESULTS.md``.

A :class:`Number` has a macro name, its unrounded value, a format and where it came from (the artifact
and the key path or table row it was read at, or the two numbers it is the ratio / difference of), so
anyone can recompute it. A :class:`Claim` is a sentence whose wording is chosen from the data (a run
with the opposite outcome gets the opposite sentence), in LaTeX and in Markdown, citing numbers.

    res = results.collect(run_dir)           # every finished phase
    res.numbers["GstarValue"].text           # "0.5"
    res.claims["GstarOutcome"].markdown
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import artifacts, phases

#: LaTeX-safe section names of the phases (macro names may hold letters only)
SECTIONS = {"00_data_and_model": "data", "01_event_lattice": "lattice", "02_avalanches": "avalanches",
            "03_gain_sweep": "sweep", "04_gstar": "gstar", "05_replication": "replication",
            "06_massive": "massive", "07_training_dynamics": "training", "08_cascades_and_mas": "cascades",
            "09_ma_in_use": "mause"}
ALPHA = 0.05  # significance level of the paired tests quoted in words


@dataclass(frozen=True)
class Number:
    """A number the text quotes, with where it came from (``source``, enough to recompute it):

    * ``{"artifact", "path"}``: a json artifact's value at a key path, or an npz artifact's array at
      ``[key, index...]``;
    * ``{"artifact", "row", "column"}``: the one table row matching ``row`` (column -> value);
    * ``{"artifact", "row", "column", "reduce"}``: ``min`` / ``max`` / ``mean`` / ``max_abs`` of the column
      over the matching rows, or ``count`` of them;
    * ``{"ratio": [a, b]}`` / ``{"difference": [a, b]}`` of two other numbers;
    and an optional ``"scale"`` the value was multiplied by (e.g. 1e-6 for millions)."""

    name: str
    value: float
    fmt: str
    source: dict
    phase: str

    @property
    def text(self) -> str:
        """The value as LaTeX prints it (powers of ten as ``\\times 10^{k}``)."""
        return _latex_number(self._formatted())

    @property
    def markdown(self) -> str:
        """The value as Markdown prints it."""
        return self._formatted()

    def _formatted(self) -> str:
        v = self.value
        if v is None or not math.isfinite(v):
            return "n/a"
        if self.fmt == "d":
            return f"{int(round(v)):d}"
        if self.fmt == "%":
            return f"{100 * v:.1f}%"
        if self.fmt == "p":
            return f"{v:.2g}" if v < 0.1 else f"{v:.2f}"
        return f"{v:{self.fmt}}"


@dataclass(frozen=True)
class Claim:
    """A sentence chosen by the data: ``latex`` (numbers as macros) and ``markdown`` (numbers inline)."""

    name: str
    latex: str
    markdown: str
    phase: str
    outcome: str  # a short code of which sentence was chosen (tests force each outcome)


@dataclass
class Results:
    """Every number, text and claim of the finished phases of a run, and the phases it lacks."""

    numbers: dict[str, Number] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)  # macro -> plain text (model names, the rule, ...)
    claims: dict[str, Claim] = field(default_factory=dict)
    phases: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def of(self, phase: str) -> tuple[list[Number], list[Claim]]:
        return ([n for n in self.numbers.values() if n.phase == phase],
                [c for c in self.claims.values() if c.phase == phase])


def _latex_number(text: str) -> str:
    """``5.62e+04`` -> ``\\ensuremath{5.62\\times 10^{4}}``; ``12%`` -> ``12\\%``."""
    if "e" in text and text not in ("n/a",):
        mantissa, exp = text.split("e")
        return f"\\ensuremath{{{mantissa}\\times 10^{{{int(exp)}}}}}"
    return text.replace("%", "\\%")


def sentence(text: str) -> str:
    """A claim as the start of a sentence: capitalised, unless it starts with a symbol such as g* or a
    name that is not a word (a model id such as smollm2-135m-instruct keeps its spelling)."""
    if text.startswith(("g*", "g =", "b_")) or not text.split(" ", 1)[0].rstrip(":,").isalpha():
        return text
    return text[0].upper() + text[1:]


def tex_escape(text: str) -> str:
    """Plain text made safe for LaTeX (``{}`` placeholders kept)."""
    for a, b in (("\\", "\\textbackslash{}"), ("_", "\\_"), ("%", "\\%"), ("&", "\\&"), ("#", "\\#"),
                 ("^", "\\^{}"), ("~", "\\~{}"), ("<", "\\textless{}"), (">", "\\textgreater{}"),
                 ("χ", "$\\chi$"), ("Δ", "$\\Delta$"), ("*", "$^*$")):
        text = text.replace(a, b)
    return text


def select(table, row: dict):
    """The rows of ``table`` matching ``row`` (floats compared to 1e-9)."""
    for k, v in row.items():
        table = table[(table[k] - v).abs() < 1e-9] if isinstance(v, float) else table[table[k] == v]
    return table


REDUCE = {"min": lambda c: c.min(), "max": lambda c: c.max(), "mean": lambda c: c.mean(),
          "max_abs": lambda c: c.abs().max(), "count": lambda c: len(c)}


# --------------------------------------------------------------------------- recording


class _Phase:
    """Numbers and claims of one phase, read through ``read(artifact)``."""

    def __init__(self, res: Results, phase: str, read: Callable[[str], Any], models: list[str]):
        self.res, self.phase, self.read, self.models = res, phase, read, models

    def json(self, name: str, artifact: str, path: list, fmt: str = ".3g", scale: float = 1.0) -> Number:
        """The value at ``path`` of a json artifact (or ``[key, index...]`` of an npz one)."""
        value: Any = self.read(artifact)
        for key in path:
            value = value[key]
        return self._add(name, float(value) * scale, fmt, {"artifact": artifact, "path": list(path)}
                         | ({"scale": scale} if scale != 1.0 else {}))

    def row(self, name: str, artifact: str, row: dict, column: str, fmt: str = ".3g", reduce: str | None = None
            ) -> Number:
        """``column`` of the one row of a table artifact matching ``row`` (or ``reduce`` over the matches)."""
        sel = select(self.read(artifact), row)
        if reduce is None and len(sel) != 1:
            raise ValueError(f"{artifact}: {len(sel)} rows match {row}, need exactly one for {name}")
        value = sel[column].iloc[0] if reduce is None else REDUCE[reduce](sel[column])
        return self._add(name, value, fmt, {"artifact": artifact, "row": row, "column": column}
                         | ({"reduce": reduce} if reduce else {}))

    def ratio(self, name: str, a: Number, b: Number, fmt: str = ".3g") -> Number:
        return self._add(name, a.value / b.value if b.value else float("nan"), fmt, {"ratio": [a.name, b.name]})

    def _add(self, name: str, value, fmt: str, source: dict) -> Number:
        if not name.isalpha():
            raise ValueError(f"number name {name!r} must be letters only (a LaTeX macro)")
        n = Number(name, float(value) if value is not None else float("nan"), fmt, source, self.phase)
        self.res.numbers[name] = n
        return n

    def claim(self, name: str, outcome: str, template: str, *numbers: Number) -> Claim:
        """A claim from ``template`` whose ``{}`` take ``numbers`` (macros in LaTeX, values in Markdown)."""
        latex = tex_escape(template).format(*(f"\\{n.name}{{}}" for n in numbers))
        markdown = template.format(*(n.markdown for n in numbers))
        c = Claim(name, latex, markdown, self.phase, outcome)
        self.res.claims[name] = c
        return c


# --------------------------------------------------------------------------- per phase


def _data(ph: _Phase) -> None:
    ph.json("ModelLayers", "model.json", ["num_layers"], "d")
    ph.json("ModelDff", "model.json", ["d_ff"], "d")
    ph.json("ModelParamsM", "model.json", ["n_parameters"], ".0f", scale=1e-6)
    for key, name in (("a_lattice", "SliceA"), ("b", "SliceB"), ("a_calibration", "SliceCal")):
        ph.json(f"{name}Windows", "slices.json", [key, "n_sequences"], "d")
    tokens = ph.json("WindowTokens", "slices.json", ["a_lattice", "window"], "d")
    info = ph.read("model.json")
    ph.claim("ModelAndSlices", "measured",
             f"the run measures {info['name']} ({info['model_type']}, {{}} layers, MLP width {{}}, about {{}} M "
             f"parameters) on {{}} windows of {{}} tokens of Dataset A, {{}} calibration windows and {{}} windows "
             f"of Dataset B", ph.res.numbers["ModelLayers"], ph.res.numbers["ModelDff"],
             ph.res.numbers["ModelParamsM"], ph.res.numbers["SliceAWindows"], tokens,
             ph.res.numbers["SliceCalWindows"], ph.res.numbers["SliceBWindows"])


def _lattice(ph: _Phase) -> None:
    ph.json("TargetRate", "reference.npz", ["rates", 0], ".2g")
    first = float(ph.read("reference.npz")["rates"][0])
    ph.row("RateMaxRelErr", "thresholds.parquet", {"target_mean": first}, "rel_err", "%", reduce="max_abs")
    pos = {"target_mean": first, "spike_def": "pos"}
    ph.row("TauMin", "thresholds.parquet", pos, "tau", ".3g", reduce="min")
    ph.row("TauMax", "thresholds.parquet", pos, "tau", ".3g", reduce="max")
    ph.row("Occupancy", "thresholds.parquet", pos, "occupancy", ".3g", reduce="mean")
    spikes = ph.row("SpikesPerSite", "thresholds.parquet", pos, "spikes_per_site", ".3g", reduce="mean")
    err = ph.res.numbers["RateMaxRelErr"]
    exact = err.value <= 0.01
    ph.claim("RateMatching", "exact" if exact else "loose",
             ("rate matching holds every layer's neuron rate within {} of its target at g = 1 (thresholds {} to {} "
              "in z units, {} spikes per site on average)" if exact else
              "rate matching misses a layer's target by up to {} at g = 1 (thresholds {} to {} in z units, {} spikes "
              "per site on average): ties in the standardised values"),
             err, ph.res.numbers["TauMin"], ph.res.numbers["TauMax"], spikes)


def _avalanches(ph: _Phase) -> None:
    base = ["pos", "von_neumann"]
    n = ph.json("AvalanchesGOne", "summary.json", base + ["n_avalanches"], "d")
    b = ph.json("BTotGOne", "summary.json", base + ["b_tot"], ".3f")
    ph.json("ChiPercGOne", "summary.json", base + ["chi_perc"], ".3g")
    ph.json("ChiFanoGOne", "summary.json", base + ["chi_fano"], ".3g")
    ph.claim("AvalanchesConnect", "more" if b.value > 1 else "fewer",
             ("at g = 1 the {} avalanches have a co-occupancy branching ratio b_tot = {}, "
              + ("above 1: an occupied site has more than one occupied neighbour in time or depth on average"
                 if b.value > 1 else "at most 1: occupied sites mostly stand alone")), n, b)


def _sweep(ph: _Phase) -> None:
    sweep = ph.read("sweep.parquet")
    rate = float(sweep.target_rate.iloc[0])
    gains = sorted(sweep.g.unique())
    key = {"ablation": "all", "target_rate": rate, "spike_def": "pos"}
    rm = {**key, "threshold_mode": "rate_matched", "g": 1.0}
    z1 = ph.row("ZTotNOne", "sweep.parquet", rm, "z_tot_n1", ".3g")
    z2 = ph.row("ZTotNTwo", "sweep.parquet", rm, "z_tot_n2", ".3g")
    z3 = ph.row("ZTotNThree", "sweep.parquet", rm, "z_tot_n3", ".3g")
    ph.row("DeltaBTotNOne", "sweep.parquet", rm, "delta_b_tot_n1", ".3g")
    ph.row("DeltaBTotNThree", "sweep.parquet", rm, "delta_b_tot_n3", ".3g")
    lo = ph.row("RateFixedLowG", "sweep.parquet", {**key, "threshold_mode": "fixed", "g": float(gains[0])}, "rate_mean", ".3g")
    hi = ph.row("RateFixedHighG", "sweep.parquet", {**key, "threshold_mode": "fixed", "g": float(gains[-1])}, "rate_mean", ".3g")
    ph.row("GainLow", "sweep.parquet", {**key, "threshold_mode": "fixed", "g": float(gains[0])}, "g", ".2g")
    ph.row("GainHigh", "sweep.parquet", {**key, "threshold_mode": "fixed", "g": float(gains[-1])}, "g", ".2g")
    fold = ph.ratio("RateFixedFold", hi, lo, ".2f")
    ph.row("RateMatchedErrGOne", "sweep.parquet", rm, "rate_max_rel_err", "%")
    ph.claim("RateMoves", "moves" if abs(fold.value - 1) > 0.05 else "flat",
             ("held at the g = 1 thresholds, the mean neuron rate changes {}-fold across the gain grid"
              if abs(fold.value - 1) > 0.05 else
              "held at the g = 1 thresholds, the mean neuron rate barely moves across the gain grid ({}-fold)"), fold)
    strong = [z for z in (z1, z2, z3) if z.value > 2]
    outcome = "all" if len(strong) == 3 else "some" if strong else "none"
    text = {"all": "at g = 1 the observed b_tot exceeds all three null models (z = {} against N1, {} against N2, "
                   "{} against N3): the connectivity is more than the marginal rates explain",
            "some": "at g = 1 the observed b_tot exceeds some of the null models only (z = {} against N1, {} against "
                    "N2, {} against N3)",
            "none": "at g = 1 the observed b_tot does not exceed the null models (z = {} against N1, {} against N2, "
                    "{} against N3): the marginal rates explain the connectivity"}[outcome]
    ph.claim("DeltaBNulls", outcome, text, z1, z2, z3)
    a = ph.row("AlphaGOne", "sweep.parquet", rm, "alpha", ".3g")
    pv = ph.row("TailPGOne", "sweep.parquet", rm, "p_value", ".2f")
    ph.row("TailLRLognormal", "sweep.parquet", rm, "lr_lognormal", ".3g")
    # Clauset, Shalizi & Newman (2009): a bootstrap p <= 0.1 rules the power law out
    tail = "untested" if not math.isfinite(pv.value) else "rejected" if pv.value <= 0.1 else "plausible"
    ph.claim("TailFit", tail, {
        "untested": "the size tail at g = 1 was not tested (too few avalanches or no goodness-of-fit draws): alpha = {}",
        "rejected": "a discrete power law is rejected for the size tail at g = 1 (alpha = {}, bootstrap p = {})",
        "plausible": "a discrete power law is not rejected for the size tail at g = 1 (alpha = {}, bootstrap p = {}); "
                     "this is descriptive, not evidence of criticality"}[tail], *([a] if tail == "untested" else [a, pv]))


def _gstar(ph: _Phase) -> None:
    gs = ph.read("gstar.json")
    g = ph.json("GstarValue", "gstar.json", ["gstar"], "g")
    outcome = gs["outcome"]
    lim = ph.json("GstarLimitLow" if gs["gstar"] < 1 else "GstarLimitHigh", "gstar.json",
                  ["gstar_limits", 0 if gs["gstar"] < 1 else 1], "g")
    ph.claim("GstarOutcome", outcome,
             "g* = {} is an interior optimum of the pre-registered rule on Dataset A" if outcome == "interior" else
             "the pre-registered rule keeps improving up to the search limit: g* = {} is the limit of the search "
             "(limit {}), not an optimum", *([g] if outcome == "interior" else [g, lim]))
    tr = ph.read("transfer.parquet")
    p1 = ph.row("PerplexityBGOne", "transfer.parquet", {"g": 1.0}, "perplexity", ".3g")
    ps = ph.row("PerplexityBGstar", "transfer.parquet", {"g": float(gs["gstar"])}, "perplexity", ".3g")
    ratio = ph.ratio("PerplexityBRatio", ps, p1, ".3g")
    best_g = float(tr.loc[tr.perplexity.idxmin(), "g"])
    ph.claim("PerplexityB", "gone_best" if abs(best_g - 1) < 1e-9 else "other_best",
             ("Dataset B's perplexity is lowest at g = 1 ({}); at g* it is {} times that"
              if abs(best_g - 1) < 1e-9 else "Dataset B's perplexity is {} at g = 1 and {} times that at g*; "
              "the lowest perplexity lies at another gain"), p1, ratio)
    summ = ph.read("arc_summary.json")
    table = "full" if summ["full"] else "grid"
    rows = summ[table]
    for subset, tag in (("ARC-Easy", "Easy"), ("ARC-Challenge", "Challenge")):
        if not any(r["subset"] == subset for r in rows):
            continue
        idx1 = next(i for i, r in enumerate(rows) if r["subset"] == subset and abs(r["g"] - 1) < 1e-9)
        idxs = next(i for i, r in enumerate(rows) if r["subset"] == subset and abs(r["g"] - gs["gstar"]) < 1e-9)
        a1 = ph.json(f"Arc{tag}AccGOne", "arc_summary.json", [table, idx1, "acc"], ".3f")
        ph.json(f"Arc{tag}AccGOneLo", "arc_summary.json", [table, idx1, "acc_lo"], ".3f")
        ph.json(f"Arc{tag}AccGOneHi", "arc_summary.json", [table, idx1, "acc_hi"], ".3f")
        ph.json(f"Arc{tag}AccNormGOne", "arc_summary.json", [table, idx1, "acc_norm"], ".3f")
        a2 = ph.json(f"Arc{tag}AccGstar", "arc_summary.json", [table, idxs, "acc"], ".3f")
        ph.json(f"Arc{tag}AccGstarLo", "arc_summary.json", [table, idxs, "acc_lo"], ".3f")
        ph.json(f"Arc{tag}AccGstarHi", "arc_summary.json", [table, idxs, "acc_hi"], ".3f")
        ph.json(f"Arc{tag}N", "arc_summary.json", [table, idx1, "n"], "d")
        p = ph.json(f"Arc{tag}McNemarP", "arc_summary.json", ["mcnemar", subset, "acc", "p_exact"], "p")
        ph.json(f"Arc{tag}OnlyGOne", "arc_summary.json", ["mcnemar", subset, "acc", "n01"], "d")
        ph.json(f"Arc{tag}OnlyGstar", "arc_summary.json", ["mcnemar", subset, "acc", "n10"], "d")
        if abs(gs["gstar"] - 1) < 1e-9:
            ph.claim(f"Arc{tag}", "same_gain", f"g* is 1 itself, so {subset} has nothing to compare (acc {{}})", a1)
            continue
        sig = p.value < ALPHA
        outcome = ("gone_better" if a1.value > a2.value else "gstar_better") if sig else "no_difference"
        text = {"gone_better": f"g = 1 beats g* on {subset} (acc {{}} vs {{}}, McNemar p = {{}})",
                "gstar_better": f"g* beats g = 1 on {subset} (acc {{}} vs {{}}, McNemar p = {{}})",
                "no_difference": f"on {subset} g* and g = 1 do not differ significantly (acc {{}} vs {{}}, "
                                 f"McNemar p = {{}})"}[outcome]
        ph.claim(f"Arc{tag}", outcome, text, a2 if outcome == "gstar_better" else a1,
                 a1 if outcome == "gstar_better" else a2, p)


def _replication(ph: _Phase) -> None:
    rep = ph.read("replication.json")
    models = [m for m in ph.models if m in rep["models"]]
    picks = [rep["side_by_side"][m]["g*"] for m in models]
    same = len(set(round(g, 9) for g in picks)) == 1
    for m, tag in zip(models, ("Run", "Other")):
        ph.json(f"ReplGstar{tag}", "replication.json", ["side_by_side", m, "g*"], "g")
        ph.json(f"ReplZ{tag}", "replication.json", ["side_by_side", m, "z_tot N1 (g=1)"], ".3g")
    ph.claim("ReplicationAgrees", "same" if same else "different",
             ("every model gets the same g* under the pre-registered rule ({})" if same else
              "the models get different g* under the pre-registered rule ({} for " + models[0] + "; "
              + ("{} for " + models[1] if len(models) > 1 else "") + ")"),
             *([ph.res.numbers["ReplGstarRun"]] if same else
               [ph.res.numbers["ReplGstarRun"]] + ([ph.res.numbers["ReplGstarOther"]] if len(models) > 1 else [])))


def _massive(ph: _Phase) -> None:
    me = ph.read("me_layer.json")
    found = ph.read("findings.json")
    for model, tag in zip(ph.models, ("Run", "Other")):  # the run's model, then the first replication model
        if model not in me["models"]:
            continue
        rec = me["models"][model]
        if not rec["found"]:
            # every claim of a model exists in every run, worded by what was found
            none = f"{model}: no layer meets the {me['criterion']} criterion"
            ph.claim(f"MAContrast{tag}", "none", none + ", so no massive activation was edited")
            ph.claim(f"MAFactorial{tag}", "none", none + ": there is no ME layer to ablate")
            ph.claim(f"MARigidity{tag}", "none", none + ": rigidity reduction has no ME layer to act at")
            continue
        layer = ph.json(f"MELayer{tag}", "me_layer.json", ["models", model, "me_layer"], "d")
        f = found[model]
        zero = ph.json(f"MAZeroRatio{tag}", "findings.json", [model, "perplexity_ratio", "zero"], ".3g")
        mean = ph.json(f"MAMeanRatio{tag}", "findings.json", [model, "perplexity_ratio", "mean"], ".3f")
        contrast = zero.value > 10 and mean.value < 1.5
        ph.claim(f"MAContrast{tag}", "contrast" if contrast else "no_contrast",
                 f"{model}: the ME layer is {{}}; zeroing the massive activations from there multiplies Dataset B's "
                 f"perplexity by {{}}, writing their calibration mean by {{}}"
                 + (": they act as a fixed bias" if contrast else ": not the zero/mean contrast the seeds report"),
                 layer, zero, mean)
        stops = [cell for cell, persists in f["ma_persists_in_factorial"].items() if not persists]
        mlp_only = stops == [c for c in f["ma_persists_in_factorial"] if "mlp=removed" in c] and stops
        ph.claim(f"MAFactorial{tag}", "mlp" if mlp_only else "other" if stops else "none",
                 f"{model}: " + ("removing the ME layer's MLP output at the MA token stops the MA, its norm does not"
                                 if mlp_only else ("the MA is stopped by " + "; ".join(stops)) if stops else
                                 "no factorial cell at the ME layer stops the MA"))
        rig = [r for r in f["rigidity"] if r["at_me_layer"]]
        vanish = any(r["ma_persists"] is False for r in rig)
        ph.claim(f"MARigidity{tag}", "removes" if vanish else "keeps",
                 f"{model}: rigidity reduction at the ME layer " + ("removes" if vanish else "does not remove")
                 + " the MA downstream")


def _training(ph: _Phase) -> None:
    traj = ph.read("trajectories.parquet")
    ratio = traj[traj.stat == "ratio"]
    top = ratio.loc[ratio["mean"].idxmax()]
    peak = ph.row("TrainMaxRatio", "trajectories.parquet", {"model": top.model, "layer": int(top.layer),
                                                             "step": int(top.step), "stat": "ratio"}, "mean", ".3g")
    emerged = peak.value >= 100  # the relaxed MA criterion of seed 003 for small models
    ph.claim("TrainEmergence", "emerged" if emerged else "none",
             ("a massive activation emerges during training: the top-1/median ratio reaches {}"
              if emerged else "no massive activation emerges at this training scale: the top-1/median ratio "
              "stays below 100 (at most {})"), peak)
    chosen = ph.row("TrainMaFiveChosen", "fits.parquet", {"chosen": True, "fit": "ma5"}, "layer", "d", reduce="count")
    series = ph.row("TrainSeries", "fits.parquet", {"fit": "ma5"}, "layer", "d", reduce="count")
    ph.claim("TrainFits", "ma5_most" if chosen.value > series.value / 2 else "ma5_few",
             "AIC chooses the five-parameter emergence model for {} of {} layer trajectories"
             + ("" if chosen.value > series.value / 2 else "; step responses describe the others better"),
             chosen, series)


def _excludes_zero(lo: Number, hi: Number) -> bool:
    return lo.value > 0 or hi.value < 0


def _cascades(ph: _Phase) -> None:
    rec = ph.read("cascades.json")
    for model, tag in zip(ph.models, ("Run", "Other")):  # the run's model, then the first replication model
        if model not in rec["models"]:
            why = rec["skipped"].get(model) or rec["failures"].get(model) or "not measured"
            for q in ("Gain", "Sites", "Edits", "Layer"):
                ph.claim(f"Casc{q}{tag}", "skipped", f"{model}: not measured ({why})")
            continue
        me_l = rec["models"][model]["me_layer"]
        layer = ph.json(f"CascMELayer{tag}", "cascades.json", ["models", model, "me_layer"], "d")
        # 1. the gain and the MAs
        gain = select(ph.read("gain_ma.parquet"), {"model": model, "scope": "all"}).sort_values("g")
        g_lo, g_hi = float(gain.g.iloc[0]), float(gain.g.iloc[-1])
        at = {}
        for key, g in (("Low", g_lo), ("One", 1.0), ("High", g_hi)):
            at[key] = ph.row(f"CascMa{key}{tag}", "gain_ma.parquet", {"model": model, "scope": "all", "g": g}, "ma_me")
        for key, how in (("Low", "min"), ("High", "max")):
            ph.row(f"CascGain{key}{tag}", "gain_ma.parquet", {"model": model, "scope": "all"}, "g", "g", reduce=how)
        rule = ph.read("me_layer.json")["criterion"]
        found = gain[f"me_layer_{rule}"]
        where = found.dropna().astype(int).unique().tolist()
        outcome = ("fixed" if where == [me_l] and found.notna().all() else
                   "vanishes" if found.isna().any() else "moves")
        text = {"fixed": f"the ME layer stays at layer {{}} at every gain from {{}} to {{}}",
                "vanishes": "the ME layer is layer {} at g = 1, but at some gain from {} to {} no layer meets the "
                            "criterion",
                "moves": "the ME layer moves with the gain from {} (g = 1) between {} and {}"}[outcome]
        ph.claim(f"CascGain{tag}", outcome, f"{model}: " + text + "; the MA at its site at the ME layer goes from {} "
                 "to {} (at g = 1: {})", layer, ph.res.numbers[f"CascGainLow{tag}"],
                 ph.res.numbers[f"CascGainHigh{tag}"], at["Low"], at["High"], at["One"])
        # 2. avalanche starts and spikes at the MA token
        nums = {}
        for measure, short in (("starts", "Starts"), ("spikes", "Spikes")):
            row = {"model": model, "site": "ma_token", "measure": measure}
            cols = (("Obs", "observed", "%"), ("Null", "null_mean", "%"), ("Z", "z", ".2g"))
            if measure == "starts":
                cols += (("Lo", "null_lo", "%"), ("Hi", "null_hi", "%"))
            nums[short] = [ph.row(f"Casc{short}{k}{tag}", "site_shares.parquet", row, col, fmt) for k, col, fmt in cols]
        obs, _, _, lo, hi = (n.value for n in nums["Starts"])
        outcome = ("undetermined" if not all(math.isfinite(v) for v in (obs, lo, hi)) else
                   "over" if obs > hi else "under" if obs < lo else "as_null")
        first = rec["models"][model].get("ma_pos") == 0
        ph.claim(f"CascSites{tag}", outcome,
                 f"{model}: {{}} of avalanches "
                 + ("reach the MA token (the first token, so each of them starts there)" if first else
                    "start at the MA token")
                 + ", against {} under N2 (each sequence-layer row's rate and runs kept, its positions shifted; "
                 "95% of the draws between {} and {}): "
                 + {"over": "more than N2 gives", "under": "fewer than N2 gives", "as_null": "within what N2 gives",
                    "undetermined": "undetermined"}[outcome]
                 + "; the MA token holds {} of the spikes (N2: {}, z = {})",
                 nums["Starts"][0], nums["Starts"][1], nums["Starts"][3], nums["Starts"][4], *nums["Spikes"])
        # 3. the lattice under the MA edits
        edits = ph.read("edit_lattices.parquet")
        parts, kinds = [], []
        numbers: list[Number] = []
        for mode in [m for m in select(edits, {"model": model}).intervention if m != "none"]:
            row = {"model": model, "intervention": mode}
            t = mode.capitalize()
            rr = [ph.row(f"CascRate{t}{k}{tag}", "edit_lattices.parquet", row, c, ".4g")
                  for k, c in (("", "rate_ratio"), ("Lo", "rate_ratio_lo"), ("Hi", "rate_ratio_hi"))]
            db = [ph.row(f"CascDb{t}{k}{tag}", "edit_lattices.parquet", row, c, ".2g")
                  for k, c in (("", "d_b_tot"), ("Lo", "d_b_tot_lo"), ("Hi", "d_b_tot_hi"))]
            rate = rr[1].value > 1 or rr[2].value < 1
            conn = _excludes_zero(db[1], db[2])
            kinds.append("both" if rate and conn else "rate" if rate else "connectivity" if conn else "neither")
            verdict = {"both": "the rate changes, and at matched rates so does the connectivity",
                       "rate": "the rate changes; at matched rates no change in connectivity is detected",
                       "connectivity": "no change in the rate is detected, but at matched rates the connectivity "
                                       "changes",
                       "neither": "no change is detected in the rate or, at matched rates, in the connectivity"
                       }[kinds[-1]]
            parts.append(f"{mode} multiplies the rate at the unedited thresholds by {{}} [{{}}, {{}}] and changes "
                         f"the rate-matched b_tot by {{}} [{{}}, {{}}]: {verdict}")
            numbers += rr + db
        if parts:
            ph.claim(f"CascEdits{tag}", "+".join(kinds), f"{model}, MA edits from the ME layer on: " + "; ".join(parts),
                     *numbers)
        # 4. the ME layer in the lattice: its b_depth change against every other change between adjacent layers
        change = select(ph.read("me_layer_change.parquet"), {"model": model, "lattice": "standard", "stat": "b_depth"})
        transition = "into" if change.set_index("transition").change.notna().get("into", False) else "out"
        row = {"model": model, "lattice": "standard", "stat": "b_depth", "transition": transition}
        d = [ph.row(f"CascLayer{k}{tag}", "me_layer_change.parquet", row, c, ".3f")
             for k, c in (("", "change"), ("Lo", "lo"), ("Hi", "hi"))]
        rank = ph.row(f"CascLayerRank{tag}", "me_layer_change.parquet", row, "rank", "d")
        ph.row(f"CascLayerSteps{tag}", "me_layer_change.parquet", row, "n_steps", "d")
        ok = math.isfinite(d[0].value) and math.isfinite(rank.value)
        outcome = ("undetermined" if not ok else
                   "stands_out" if _excludes_zero(d[1], d[2]) and rank.value == 1 else "ordinary")
        step = "from the layer below into it" if transition == "into" else "from it to the layer above (it is the first)"
        ph.claim(f"CascLayer{tag}", outcome,
                 f"{model}: b_depth changes by {{}} [{{}}, {{}}] {step}, in size number {{}} of the {{}} changes between "
                 "adjacent layers: " + {"stands_out": "the ME layer stands out in the lattice",
                                        "ordinary": "the ME layer does not stand out in the lattice",
                                        "undetermined": "undetermined"}[outcome],
                 *d, ph.res.numbers[f"CascLayerRank{tag}"], ph.res.numbers[f"CascLayerSteps{tag}"])


def _paired_outcome(nums: list[Number]) -> str:
    """worse / better / same from (diff, lo, hi, p) of a paired test: the bootstrap interval must exclude 0
    and Wilcoxon's p be below ALPHA (with few prompts the exact test cannot reach it, and says so)."""
    _, lo, hi, p = (n.value for n in nums)
    if not (p < ALPHA):
        return "same"
    return "worse" if lo > 0 else "better" if hi < 0 else "same"


#: the math tasks' metrics, as the claims name them
TASK_METRICS = {"bpb": "bits per byte", "correct": "accuracy", "correct_per_char": "accuracy per character",
                "correct_per_token": "accuracy per token"}


def _letters(i: int) -> str:
    """A, B, ..., Z, BA, BB, ...: the i-th task's part of a macro name (macro names hold letters only)."""
    return (_letters(i // 26) if i >= 26 else "") + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[i % 26]


def _math_rigidity(ph: _Phase, model: str, tag: str, me_layer: int) -> None:
    """Part 3 of phase 09: does the rigidity reduction at the ME layer help a math task, training-free and
    after fine-tuning, and more than at the control layers (rigidity_task_tests.parquet)."""
    tests = ph.read("rigidity_task_tests.parquet")
    for setting, label in (("pretrained", "training-free, edit minus none"),
                           ("finetuned", "after one LoRA fine-tune with the edit in place, minus one without it "
                                         "(one training run each: the intervals cover documents, not training)")):
        me = select(tests, {"model": model, "setting": setting, "applied": me_layer, "against": -1})
        key = f"MathRigidity{setting.capitalize()}{tag}"
        if me.empty:
            ph.claim(key, "not_scored", f"{model}: the rigidity reduction at the ME layer was not scored "
                     f"{label.split(',')[0].split(' (')[0]}")
            continue
        alpha, rate = me.alpha.iloc[0], me.mask_rate.iloc[0]
        parts, numbers, helped, hurt, specific, controls_seen = [], [], [], [], [], False
        for i, task in enumerate(me.task.unique()):
            row = {"model": model, "setting": setting, "task": task, "applied": me_layer, "against": -1,
                   "alpha": alpha, "mask_rate": rate}
            nums = [ph.row(f"MathRig{setting.capitalize()[:3]}{_letters(i)}{c.capitalize()}{tag}",
                           "rigidity_task_tests.parquet", row, c, f)
                    for c, f in (("diff", ".3g"), ("lo", ".3g"), ("hi", ".3g"), ("p", "p"))]
            r = select(tests, row).iloc[0]
            mine = select(tests, {k: v for k, v in row.items() if k != "against"})
            controls = mine[mine.against >= 0]
            controls_seen |= len(controls) > 0
            helped += [task] if r.better else []
            hurt += [task] if r.worse else []
            if r.better and len(controls) and controls.better.all():
                specific.append(task)
            parts.append(f"{task.split('/')[0]} {TASK_METRICS.get(r.metric, r.metric)} {{}} [{{}}, {{}}] (p = {{}})")
            numbers += nums
        if helped and hurt:
            outcome, verdict = "mixed", f"it helps {', '.join(helped)} but hurts {', '.join(hurt)}"
        elif specific:
            outcome, verdict = "helps_me_layer", (f"it helps {', '.join(specific)}, significantly more than at every "
                                                  "control layer")
        elif helped:
            outcome = "helps"
            verdict = f"it helps {', '.join(helped)}, " + ("but not significantly more than at every control layer"
                                                            if controls_seen else "and no control layer was scored")
        elif hurt:
            outcome, verdict = "hurts", f"it hurts {', '.join(hurt)} and helps nothing measured"
        else:
            outcome, verdict = "none", "no measurable change on these models and documents"
        ph.claim(key, outcome, f"{model}: rigidity reduction at the ME layer (layer {me_layer}, alpha {alpha:g}, mask "
                 f"rate {rate:g}) {label}: " + "; ".join(parts) + f": {verdict}", *numbers)


def _ma_use(ph: _Phase) -> None:
    rec = ph.read("ma_use.json")
    tests = ph.read("generation_tests.parquet")
    probes = ph.read("probes.parquet")
    for model, tag in zip(ph.models, ("Run", "Other")):
        if model not in rec["models"]:
            why = rec["skipped"].get(model) or rec["failures"].get(model) or "not measured"
            for q in ("Generation", "Transition", "Probes", "MathRigidityPretrained", "MathRigidityFinetuned"):
                ph.claim(f"Use{q}{tag}" if not q.startswith("Math") else f"{q}{tag}", "skipped",
                         f"{model}: not measured ({why})")
            continue
        # 1. does zeroing the MAs break generation: the continuation's NLL under the unedited model
        parts, kinds, numbers = [], [], []
        for kind, label in (("b", "Dataset B prompts"), ("transition", "transition prompts")):
            row = {"model": model, "kind": kind, "decoding": "greedy", "intervention": "zero", "metric": "cont_nll"}
            if select(tests, row).empty:
                continue
            k = "B" if kind == "b" else "T"
            nums = [ph.row(f"UseZero{k}{c.capitalize()}{tag}", "generation_tests.parquet", row, c, f)
                    for c, f in (("diff", ".3g"), ("lo", ".3g"), ("hi", ".3g"), ("p", "p"))]
            kinds.append(_paired_outcome(nums))
            parts.append(f"after {label} by {{}} [{{}}, {{}}] nats per token (Wilcoxon p = {{}}: "
                         + {"worse": "more surprising", "better": "less surprising",
                            "same": "no significant change"}[kinds[-1]] + ")")
            numbers += nums
        if parts:
            outcome = "+".join(kinds)
            ph.claim(f"UseGeneration{tag}", outcome,
                     f"{model}: zeroing the MAs changes how surprising the greedy continuation is to the unedited "
                     "model " + " and ".join(parts), *numbers)
        row = {"model": model, "kind": "transition", "decoding": "greedy", "intervention": "zero", "metric": "second_nll"}
        if not select(tests, row).empty:
            d = [ph.row(f"UseSecond{c.capitalize()}{tag}", "generation_tests.parquet", row, c, f)
                 for c, f in (("diff", ".3g"), ("lo", ".3g"), ("hi", ".3g"), ("p", "p"))]
            outcome = _paired_outcome(d)
            ph.claim(f"UseTransition{tag}", outcome,
                     f"{model}: after a context transition, zeroing the MAs changes the loss on the second passage by "
                     "{} [{}, {}] nats per token (p = {}): "
                     + {"worse": "the model loses track across the transition",
                        "better": "the second passage becomes easier to predict",
                        "same": "no significant change"}[outcome], *d)
        # 2. what is linearly decodable from the MA dims beyond token identity
        sel = select(probes, {"model": model, "group": "ma", "features": "ma_dims", "probe": "linear"})
        if sel.empty:
            ph.claim(f"UseProbes{tag}", "none", f"{model}: no target varies across the MA tokens, so nothing was probed")
        else:
            _probe_claim(ph, model, tag, sel)
        # 3. rigidity reduction on math tasks
        _math_rigidity(ph, model, tag, int(rec["models"][model]["me_layer"]))


def _probe_claim(ph: _Phase, model: str, tag: str, sel) -> None:
    """What the most selective linear probe of the MA dims at the MA token reads (rows ``sel`` of probes.parquet)."""
    scored = sel[sel.selectivity.notna()]
    best = scored.loc[scored.selectivity.idxmax()] if len(scored) else sel.loc[sel.acc.fillna(-1).idxmax()]
    row = {"model": model, "group": "ma", "features": "ma_dims", "probe": "linear", "layer": int(best.layer),
           "target": best.target}
    nums = [ph.row(f"UseProbe{c.capitalize()}{tag}", "probes.parquet", row, c, ".2f")
            for c in ("acc", "lo", "majority", "selectivity")]
    above = nums[1].value > nums[2].value  # the interval's lower end clears the majority baseline
    outcome = "decodable" if above and nums[3].value > 0.05 else "not_decodable"
    ph.claim(f"UseProbes{tag}", outcome,
             f"{model}: the most selective linear probe of the MA dims at the MA token reads {best.target} at layer "
             f"{int(best.layer)} with accuracy {{}} (lower 95% bound {{}}) against a majority baseline of {{}} "
             "and a selectivity of {}: "
             + ("the MA dims carry it beyond token identity" if outcome == "decodable" else
                "nothing is decodable from the MA dims beyond the baseline and token identity"), *nums)


COLLECTORS: dict[str, Callable[[_Phase], None]] = {
    "00_data_and_model": _data, "01_event_lattice": _lattice, "02_avalanches": _avalanches,
    "03_gain_sweep": _sweep, "04_gstar": _gstar, "05_replication": _replication, "06_massive": _massive,
    "07_training_dynamics": _training, "08_cascades_and_mas": _cascades,
    "09_ma_in_use": _ma_use}


def models_of(p) -> list[str]:
    """The models a run measures, in order: its ``model``, then the other ``replication_models``."""
    return list(dict.fromkeys([p["model"], *p["replication_models"]]))


#: the params the paper's methods quote: macro -> (params key, format)
PARAMS = {"ParamNullDraws": ("null_draws", "d"), "ParamGofDraws": ("gof_draws", "d"),
          "ParamBootstrapDraws": ("bootstrap_draws", "d"), "ParamWindow": ("window", "d"),
          "ParamNSequences": ("n_sequences", "d"), "ParamNCalibration": ("n_calibration", "d"),
          "ParamNSequencesB": ("n_sequences_b", "d"), "ParamReferenceTau": ("reference_tau", "g"),
          "ParamRefDff": ("rate_reference_d_ff", "d"), "ParamZFloor": ("z_floor", "g"),
          "ParamArcGridLimit": ("arc_grid_limit", "d"), "ParamMaProbe": ("ma_probe_sequences", "d"),
          "ParamMaTopK": ("ma_top_k", "d"), "ParamTrainSteps": ("train_steps", "d"),
          "ParamTrainWindow": ("train_window", "d"), "ParamSeed": ("seed", "d"),
          "ParamGstarLimitLow": ("gstar_limits", "g"), "ParamGstarLimitHigh": ("gstar_limits", "g")}
#: the params the paper quotes as text
PARAM_TEXTS = {"ParamModel": "model", "ParamGstarRule": "gstar_rule", "ParamDatasetA": "dataset_a",
               "ParamDatasetB": "dataset_b", "ParamTargetProfile": "target_profile", "ParamMaCriterion": "ma_criterion"}


def _params(res: Results, p) -> None:
    """The run's resolved params that the methods quote (source: the run's params.yaml)."""
    for name, (key, fmt) in PARAMS.items():
        value = p[key]
        if isinstance(value, list):
            value = value[0] if name.endswith("Low") else value[-1]
        res.numbers[name] = Number(name, float("nan") if value is None else float(value), fmt,
                                   {"params": key} | ({"index": 0 if name.endswith("Low") else -1}
                                                      if isinstance(p[key], list) else {}), "params")
    gains = sorted(p["gains"])
    for name, value in (("ParamGainLow", gains[0]), ("ParamGainHigh", gains[-1]), ("ParamGainCount", len(gains)),
                        ("ParamTargetRateSeed", p["target_rates"][0]), ("ParamTargetRates", len(p["target_rates"]))):
        res.numbers[name] = Number(name, float(value), "d" if name in ("ParamGainCount", "ParamTargetRates") else "g",
                                   {"params": {"ParamGainLow": "gains", "ParamGainHigh": "gains",
                                               "ParamGainCount": "gains"}.get(name, "target_rates")}, "params")
    for name, key in PARAM_TEXTS.items():
        res.texts[name] = str(p[key])
    models = models_of(p)
    res.texts["ParamModels"] = ", ".join(models)
    res.texts["ParamModelOther"] = models[1] if len(models) > 1 else "(none)"


def collect(run_dir: str | Path) -> Results:
    """Every number and claim of the finished phases of ``run_dir``, read from its hash-checked artifacts."""
    from . import params as P

    run_dir = Path(run_dir)
    p = P.for_run(run_dir)
    models = models_of(p)
    res = Results()
    _params(res, p)
    res.texts["RunId"] = run_dir.name
    for phase in phases.names():
        if not (run_dir / phase).is_dir():
            res.missing.append(phase)
            continue
        COLLECTORS[phase](_Phase(res, phase, lambda name: artifacts.read(run_dir, name), models))
        res.phases.append(phase)
    return res


def collect_phase(phase: str, read: Callable[[str], Any], models: list[str]) -> Results:
    """The numbers and claims of one phase from ``read(artifact)`` (a phase's own unfinished folder,
    fabricated artifacts in tests); ``models``: :func:`models_of` the run's params."""
    res = Results(phases=[phase])
    COLLECTORS[phase](_Phase(res, phase, read, models))
    return res


def what_this_shows(run_dir: str | Path, out: str | Path, phase: str) -> str:
    """A phase notebook's closing section: its claims as Markdown (numbers inline), read from the phase's
    own folder ``out`` (not finished yet, so not hash-checked) and earlier phases of ``run_dir``."""
    def read(name: str):
        if phases.producer(name).name == phase:
            return artifacts.load(Path(out) / name)
        return artifacts.read(run_dir, name)

    from . import params as P

    claims = collect_phase(phase, read, models_of(P.for_run(run_dir))).claims.values()
    lines = [f"* {sentence(c.markdown)}." for c in claims]
    return "## What this shows\n\n" + ("\n".join(lines) if lines else "* Nothing to state beyond the tables above.")


def summary_markdown(run_dir: str | Path) -> str:
    """A run's one-page SUMMARY.md: per phase its verdicts (the claims) and a link to its notebook. A
    phase whose artifacts cannot be summarised says why instead of hiding it."""
    from . import params as P

    run_dir = Path(run_dir)
    p = P.for_run(run_dir)
    lines = [f"# Run {run_dir.name}", "", f"Models: {', '.join(models_of(p))}; Dataset A {p['dataset_a']}, "
             f"Dataset B {p['dataset_b']}; every setting in [params.yaml](params.yaml).", ""]
    for phase in phases.PHASES:
        lines += [f"## {phase.name}: {phase.title}", ""]
        if not (run_dir / phase.name).is_dir():
            lines += ["Not run.", ""]
            continue
        lines += [f"Notebook: [{phase.name}/{phase.notebook}]({phase.name}/{phase.notebook})", ""]
        try:
            claims = collect_phase(phase.name, lambda name: artifacts.read(run_dir, name), models_of(p)).claims
        except Exception as err:  # noqa: BLE001 - the summary names what it could not read
            lines += [f"(no summary: {type(err).__name__}: {err})", ""]
            continue
        lines += [f"* {sentence(c.markdown)}." for c in claims.values()] + [""]
    return "\n".join(lines)


def results_page(run_dir: str | Path) -> str:
    """docs/RESULTS.md: a run's verdicts and headline numbers, with the run id and the commit it came from."""
    from . import provenance, runner

    run_dir = Path(run_dir)
    commits: dict[str, list[str]] = {}  # phases added by --resume may come from a later commit
    for phase in runner.finished(run_dir):
        commits.setdefault(provenance.read_manifest(run_dir / phase)["git_commit"][:12], []).append(phase[:2])
    code = "; ".join(f"`{c}`" + (f" for phases {', '.join(ph)}" if len(commits) > 1 else "")
                     for c, ph in commits.items())
    res = collect(run_dir)
    lines = [f"# Results of run `{run_dir.name}`", "",
             f"Generated by `avalanche-nb results` from the hash-checked artifacts of run `{run_dir.name}` "
             f"(code at commit {code}); every sentence below was chosen by the data, every number can be "
             "traced in the paper's `numbers.json`. Regenerate with `make run` then "
             "`avalanche-nb results outputs/runs/<run_id> --out docs/RESULTS.md`.", ""]
    for phase in phases.PHASES:
        if phase.name in res.missing:
            lines += [f"## {phase.title} ({phase.number})", "", "Not in this run.", ""]
            continue
        numbers, claims = res.of(phase.name)
        lines += [f"## {phase.title} ({phase.number})", ""] + [f"* {sentence(c.markdown)}." for c in claims] + [""]
    return "\n".join(lines)
