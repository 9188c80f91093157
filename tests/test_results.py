"""Claims follow the data: fabricated artifacts force each outcome of every data-dependent sentence."""

import copy

import numpy as np
import pandas as pd
import pytest

from avalanche_nb import results

MODELS = ["m1", "m2"]


def reader(objs: dict):
    return lambda name: objs[name]


def claims(phase: str, objs: dict) -> dict:
    return results.collect_phase(phase, reader(objs), MODELS).claims


# --------------------------------------------------------------------------- 04: g*, perplexity, ARC


def gstar_artifacts(outcome="interior", gstar=0.6, p_easy=1e-5, easy=(0.52, 0.34), chal=(0.23, 0.25), p_chal=0.6):
    gs = {"gstar": gstar, "outcome": outcome, "gstar_limits": [0.1, 3.0], "rule": "chi_perc_max"}
    tr = pd.DataFrame({"g": [0.6, 1.0, 1.2], "perplexity": [36.0, 29.4, 47.1]})
    rows = []
    for subset, (a1, a2) in (("ARC-Easy", easy), ("ARC-Challenge", chal)):
        for g, a in sorted({1.0: a1, gstar: a2}.items()):
            rows.append({"subset": subset, "g": g, "n": 100, "acc": a, "acc_lo": a - 0.05, "acc_hi": a + 0.05,
                         "acc_norm": a, "acc_norm_lo": a - .05, "acc_norm_hi": a + .05, "chance": 0.25})
    test = lambda p: {"acc": {"p_exact": p, "n01": 30, "n10": 10}, "acc_norm": {"p_exact": p, "n01": 1, "n10": 1}}
    summ = {"gstar": gstar, "full": rows, "grid": rows, "mcnemar": {"ARC-Easy": test(p_easy), "ARC-Challenge": test(p_chal)}}
    return {"gstar.json": gs, "transfer.parquet": tr, "arc_summary.json": summ}


def test_gstar_outcome_and_arc_verdicts_follow_the_data():
    c = claims("04_gstar", gstar_artifacts())
    assert c["GstarOutcome"].outcome == "interior" and "interior optimum" in c["GstarOutcome"].markdown
    assert c["ArcEasy"].outcome == "gone_better"
    assert c["ArcEasy"].markdown.startswith("g = 1 beats g* on ARC-Easy (acc 0.520 vs 0.340")
    assert c["ArcChallenge"].outcome == "no_difference" and "do not differ significantly" in c["ArcChallenge"].markdown
    assert c["PerplexityB"].outcome == "gone_best"
    # the opposite outcomes
    c = claims("04_gstar", gstar_artifacts(outcome="limit", easy=(0.30, 0.45), p_easy=1e-3))
    assert c["GstarOutcome"].outcome == "limit" and "limit of the search" in c["GstarOutcome"].markdown
    assert "\\GstarLimitLow" in c["GstarOutcome"].latex
    assert c["ArcEasy"].outcome == "gstar_better" and c["ArcEasy"].markdown.startswith("g* beats g = 1 on ARC-Easy")
    objs = gstar_artifacts()
    objs["transfer.parquet"] = pd.DataFrame({"g": [0.6, 1.0, 1.2], "perplexity": [20.0, 29.4, 47.1]})
    assert claims("04_gstar", objs)["PerplexityB"].outcome == "other_best"
    assert claims("04_gstar", gstar_artifacts(gstar=1.0))["ArcEasy"].outcome == "same_gain"


# --------------------------------------------------------------------------- 03: nulls, rate, tails


def sweep_rows(z=(5.0, 4.0, 3.0), p_value=0.5, fold=1.3):
    rows = []
    for mode in ("fixed", "rate_matched"):
        for g in (0.5, 1.0, 1.5):
            rate = 1e-3 * (1 + (fold - 1) * (g - 0.5)) if mode == "fixed" else 1e-3
            rows.append({"ablation": "all", "target_rate": 1e-3, "spike_def": "pos", "threshold_mode": mode, "g": g,
                         "rate_mean": rate, "rate_max_rel_err": 0.001, "z_tot_n1": z[0], "z_tot_n2": z[1],
                         "z_tot_n3": z[2], "delta_b_tot_n1": 0.1, "delta_b_tot_n3": 0.05, "alpha": 2.1,
                         "p_value": p_value, "lr_lognormal": -0.5})
    return {"sweep.parquet": pd.DataFrame(rows)}


@pytest.mark.parametrize("z,outcome", [((5, 4, 3), "all"), ((5, 1, 0.5), "some"), ((1, 0.5, -1), "none")])
def test_delta_b_claim_follows_the_z_scores(z, outcome):
    c = claims("03_gain_sweep", sweep_rows(z=z))["DeltaBNulls"]
    assert c.outcome == outcome
    assert ("marginal rates explain the connectivity" in c.markdown) == (outcome == "none")


@pytest.mark.parametrize("p,outcome", [(0.5, "plausible"), (0.1, "rejected"), (0.01, "rejected"), (np.nan, "untested")])
def test_tail_claim_follows_the_bootstrap_p(p, outcome):
    c = claims("03_gain_sweep", sweep_rows(p_value=p))["TailFit"]
    assert c.outcome == outcome and "criticality" in c.markdown if outcome == "plausible" else c.outcome == outcome


def test_rate_claim_says_whether_the_rate_moves():
    assert claims("03_gain_sweep", sweep_rows(fold=2.0))["RateMoves"].outcome == "moves"
    assert claims("03_gain_sweep", sweep_rows(fold=1.01))["RateMoves"].outcome == "flat"


# --------------------------------------------------------------------------- 06, 07, 05


def massive_artifacts(zero=1.6e5, mean=1.004, persists=None, rig_persists=True, found=True):
    persists = persists or {"norm=as_is, mlp=as_is": True, "norm=as_is, mlp=removed": False,
                            "norm=mean, mlp=as_is": True, "norm=mean, mlp=removed": False}
    rec = {"found": found, "me_layer": 11 if found else None}
    me = {"criterion": "sun", "models": {"m1": rec}}
    findings = {"m1": {"perplexity_ratio": {"none": 1.0, "zero": zero, "mean": mean},
                       "ma_persists_in_factorial": persists,
                       "rigidity": [{"at_me_layer": True, "ma_persists": rig_persists}]}} if found else {}
    return {"me_layer.json": me, "findings.json": findings}


def test_massive_claims_follow_the_edits():
    c = claims("06_massive", massive_artifacts())
    assert c["MAContrastRun"].outcome == "contrast" and c["MAFactorialRun"].outcome == "mlp"
    assert "removing the ME layer's MLP output at the MA token stops the MA" in c["MAFactorialRun"].markdown
    assert c["MARigidityRun"].outcome == "keeps" and "does not remove" in c["MARigidityRun"].markdown
    c = claims("06_massive", massive_artifacts(zero=1.2, mean=1.0, rig_persists=False,
                                               persists={"norm=as_is, mlp=as_is": True, "norm=mean, mlp=as_is": False}))
    assert c["MAContrastRun"].outcome == "no_contrast" and c["MAFactorialRun"].outcome == "other"
    assert c["MARigidityRun"].outcome == "removes"
    none = claims("06_massive", massive_artifacts(persists={"a": True}))
    assert none["MAFactorialRun"].outcome == "none"
    absent = claims("06_massive", massive_artifacts(found=False))
    assert {absent[k].outcome for k in ("MAContrastRun", "MAFactorialRun", "MARigidityRun")} == {"none"}


def trajectories(peak):
    rows = [{"model": "2x64", "layer": 0, "step": s, "stat": "ratio", "mean": v} for s, v in ((0, 4.0), (10, peak))]
    fits = pd.DataFrame({"model": "2x64", "layer": [0, 0], "fit": ["ma5", "step1"], "chosen": [True, False]})
    return {"trajectories.parquet": pd.DataFrame(rows), "fits.parquet": fits}


def test_emergence_claim_follows_the_largest_ratio():
    assert claims("07_training_dynamics", trajectories(15.0))["TrainEmergence"].outcome == "none"
    c = claims("07_training_dynamics", trajectories(340.0))["TrainEmergence"]
    assert c.outcome == "emerged" and "reaches 340" in c.markdown


def test_replication_claim_says_whether_the_models_agree():
    rep = {"models": MODELS, "side_by_side": {m: {"g*": 0.5, "z_tot N1 (g=1)": 3.0} for m in MODELS}}
    assert claims("05_replication", {"replication.json": rep})["ReplicationAgrees"].outcome == "same"
    other = copy.deepcopy(rep)
    other["side_by_side"]["m2"]["g*"] = 1.3
    c = claims("05_replication", {"replication.json": other})["ReplicationAgrees"]
    assert c.outcome == "different" and "1.3 for m2" in c.markdown


def test_numbers_format_for_latex_and_markdown():
    n = results.Number("X", 56234.0, ".3g", {}, "p")
    assert n.markdown == "5.62e+04" and n.text == r"\ensuremath{5.62\times 10^{4}}"
    assert results.Number("Y", 0.0123, "%", {}, "p").text == r"1.2\%"
    assert results.Number("Z", float("nan"), ".3g", {}, "p").text == "n/a"
    with pytest.raises(ValueError, match="letters only"):
        results._Phase(results.Results(), "p", lambda n: {"a": 1}, MODELS).json("Bad1", "a.json", ["a"])


def test_a_sentence_is_capitalised_but_symbols_and_model_ids_keep_their_spelling():
    assert results.sentence("the ME layer is 3") == "The ME layer is 3"
    assert results.sentence("g* = 0.9 lies at the grid limit") == "g* = 0.9 lies at the grid limit"
    assert results.sentence("smollm2-135m-instruct: the ME layer is 3") == "smollm2-135m-instruct: the ME layer is 3"
    assert results.sentence("gemma3-270m: no MA") == "gemma3-270m: no MA"


# --------------------------------------------------------------------------- 08: cascades meet MAs


def cascade_artifacts(ma=(800.0, 1000.0, 1200.0), me_layers=(3, 3, 3), starts=(0.1, 0.05, 0.08), zero=((3.0, 2.5, 3.5), (0.1, 0.05, 0.15)),
                      b_depth=(-0.05, -0.08, -0.02), per_layer=(0.5, 0.5, 0.51, 0.46, 0.47), skipped_other=False):
    gain = pd.DataFrame({"model": "m1", "scope": "all", "g": [0.5, 1.0, 1.5], "ma_me": list(ma),
                         "me_layer_sun": pd.array(list(me_layers), dtype="Int64")})
    obs, lo, hi = starts
    shares = pd.DataFrame([{"model": "m1", "site": "ma_token", "measure": m, "observed": obs if m == "starts" else 0.1,
                            "null_mean": (lo + hi) / 2 if m == "starts" else 0.05, "null_lo": lo, "null_hi": hi,
                            "z": 2.0} for m in ("spikes", "sites", "starts")])
    (r, r_lo, r_hi), (d, d_lo, d_hi) = zero
    edits = pd.DataFrame([{"model": "m1", "intervention": "none", "rate_ratio": 1.0, "rate_ratio_lo": 1.0,
                           "rate_ratio_hi": 1.0, "d_b_tot": 0.0, "d_b_tot_lo": 0.0, "d_b_tot_hi": 0.0},
                          {"model": "m1", "intervention": "zero", "rate_ratio": r, "rate_ratio_lo": r_lo,
                           "rate_ratio_hi": r_hi, "d_b_tot": d, "d_b_tot_lo": d_lo, "d_b_tot_hi": d_hi}])
    def rank(c):  # as ma_lattice.layer_change records it
        steps = np.abs(np.diff(per_layer))
        return float((steps > abs(c) + 1e-12).sum() + 1) if np.isfinite(c) else np.nan

    change = pd.DataFrame([{"model": "m1", "lattice": "standard", "stat": "b_depth", "transition": t, "change": c,
                            "lo": lo, "hi": hi, "rank": rank(c), "n_steps": len(per_layer) - 1}
                           for t, (c, lo, hi) in (("into", b_depth), ("out", (0.0, -0.1, 0.1)))])
    layers = pd.DataFrame({"model": "m1", "lattice": "standard", "layer": range(5), "b_depth": list(per_layer)})
    models = {"m1": {"me_layer": 3, "ma_pos": 0}}
    skipped = {"m2": "no ME layer in phase 06: ratio 40 at most"} if skipped_other else {}
    if not skipped_other:
        models["m2"] = {"me_layer": 0, "ma_pos": 0}
        gain = pd.concat([gain, gain.assign(model="m2", me_layer_sun=pd.array([0, 0, 0], dtype="Int64"))])
        shares = pd.concat([shares, shares.assign(model="m2")])
        edits = pd.concat([edits, edits.assign(model="m2")])
        nan = float("nan")
        change = pd.concat([change, change.assign(model="m2", change=[nan, 0.2], lo=[nan, 0.1], hi=[nan, 0.3],
                                                  rank=[nan, 1.0])])
        layers = pd.concat([layers, layers.assign(model="m2", b_depth=[0.3, 0.5, 0.52, 0.5, 0.49])])
    return {"cascades.json": {"models": models, "skipped": skipped, "failures": {}},
            "me_layer.json": {"criterion": "sun"}, "gain_ma.parquet": gain, "site_shares.parquet": shares,
            "edit_lattices.parquet": edits, "me_layer_change.parquet": change, "lattice_layers.parquet": layers}


def test_cascade_claims_follow_the_data():
    c = claims("08_cascades_and_mas", cascade_artifacts())
    assert c["CascGainRun"].outcome == "fixed" and "stays at layer 3" in c["CascGainRun"].markdown
    assert c["CascSitesRun"].outcome == "over" and "reach the MA token (the first token" in c["CascSitesRun"].markdown
    assert c["CascEditsRun"].outcome == "both" and "zero multiplies the rate" in c["CascEditsRun"].markdown
    # b_depth 0.51 -> 0.46 into layer 3: the largest of the 4 steps, and its interval excludes 0
    assert c["CascLayerRun"].outcome == "stands_out" and "number 1 of the 4 changes" in c["CascLayerRun"].markdown
    # the ME layer is the first layer of m2: the change out of it is read instead (0.2, the largest step)
    assert c["CascLayerOther"].outcome == "stands_out" and "to the layer above" in c["CascLayerOther"].markdown
    # the opposite outcomes
    c = claims("08_cascades_and_mas", cascade_artifacts(me_layers=(None, 3, 3), starts=(0.06, 0.05, 0.08),
                                                         zero=((3.0, 2.5, 3.5), (0.01, -0.02, 0.04)),
                                                         per_layer=(0.2, 0.5, 0.51, 0.46, 0.47), skipped_other=True))
    assert c["CascGainRun"].outcome == "vanishes"
    assert c["CascSitesRun"].outcome == "as_null" and "within what N2 gives" in c["CascSitesRun"].markdown
    assert c["CascEditsRun"].outcome == "rate" and "no change in connectivity is detected" in c["CascEditsRun"].markdown
    assert c["CascLayerRun"].outcome == "ordinary" and "number 2 of the 4" in c["CascLayerRun"].markdown
    assert c["CascGainOther"].outcome == "skipped" and "no ME layer" in c["CascGainOther"].markdown
    assert claims("08_cascades_and_mas", cascade_artifacts(me_layers=(4, 3, 3)))["CascGainRun"].outcome == "moves"
    assert claims("08_cascades_and_mas", cascade_artifacts(starts=(0.01, 0.05, 0.08)))["CascSitesRun"].outcome == "under"
    c = claims("08_cascades_and_mas", cascade_artifacts(zero=((1.0, 0.9, 1.1), (0.1, 0.05, 0.15))))
    assert c["CascEditsRun"].outcome == "connectivity"
    c = claims("08_cascades_and_mas", cascade_artifacts(b_depth=(float("nan"),) * 3, skipped_other=True))
    assert c["CascLayerRun"].outcome == "ordinary"  # into is NaN: the change out of the layer is read


# --------------------------------------------------------------------------- 09: MAs in use


def math_tests(me=(-0.02, -0.03, -0.01, 0.001, True, False), vs_control=(-0.01, -0.02, -0.005, 0.01, True, False)):
    """rigidity_task_tests rows of m1 (ME layer 3, control layer 0) for one bpb task, pretrained only."""
    base = {"model": "m1", "setting": "pretrained", "task": "gsm8k/gold_bpb_5shot", "metric": "bpb", "alpha": 0.0,
            "mask_rate": 0.01}
    cols = ("diff", "lo", "hi", "p", "better", "worse")
    return pd.DataFrame([{**base, "applied": 3, "at_me_layer": True, "against": -1, **dict(zip(cols, me))},
                         {**base, "applied": 3, "at_me_layer": True, "against": 0, **dict(zip(cols, vs_control))},
                         {**base, "applied": 0, "at_me_layer": False, "against": -1,
                          **dict(zip(cols, (0.0, -0.01, 0.01, 0.9, False, False)))}])


def use_artifacts(diff=(9.0, 7.0, 11.0, 0.008), second=(0.4, 0.1, 0.8, 0.008), probe=(0.9, 0.8, 0.5, 0.3), math=None):
    rows = []
    for kind in ("b", "transition"):
        for metric, vals in (("cont_nll", diff), ("second_nll", second)):
            d, lo, hi, p = vals
            rows.append({"model": "m1", "kind": kind, "decoding": "greedy", "intervention": "zero", "metric": metric,
                         "diff": d, "lo": lo, "hi": hi, "p": p})
    acc, lo, major, sel = probe
    probes = pd.DataFrame([{"model": "m1", "group": "ma", "features": "ma_dims", "probe": "linear", "layer": 3,
                            "target": "next_class", "acc": acc, "lo": lo, "majority": major, "selectivity": sel},
                           {"model": "m1", "group": "ma", "features": "ma_dims", "probe": "linear", "layer": 3,
                            "target": "token_class", "acc": 0.5, "lo": 0.4, "majority": 0.5, "selectivity": float("nan")}])
    return {"ma_use.json": {"models": {"m1": {"me_layer": 3}}, "skipped": {"m2": "no ME layer"}, "failures": {}},
            "generation_tests.parquet": pd.DataFrame(rows), "probes.parquet": probes,
            "rigidity_task_tests.parquet": math_tests() if math is None else math}


def test_ma_use_claims_follow_the_data():
    c = claims("09_ma_in_use", use_artifacts())
    assert c["UseGenerationRun"].outcome == "worse+worse" and "more surprising" in c["UseGenerationRun"].markdown
    assert c["UseTransitionRun"].outcome == "worse" and "loses track" in c["UseTransitionRun"].markdown
    assert c["UseProbesRun"].outcome == "decodable" and "reads next_class at layer 3" in c["UseProbesRun"].markdown
    assert c["UseGenerationOther"].outcome == "skipped"
    # an interval that excludes 0 is not enough when Wilcoxon's p is not below 0.05 (few prompts)
    c = claims("09_ma_in_use", use_artifacts(diff=(9.0, 7.0, 11.0, 0.25), second=(-0.5, -0.9, -0.1, 0.01),
                                             probe=(0.6, 0.45, 0.5, 0.3)))
    assert c["UseGenerationRun"].outcome == "same+same" and "no significant change" in c["UseGenerationRun"].markdown
    assert c["UseTransitionRun"].outcome == "better"
    assert c["UseProbesRun"].outcome == "not_decodable"


def test_math_rigidity_claims_follow_the_data():
    c = claims("09_ma_in_use", use_artifacts())
    pre = c["MathRigidityPretrainedRun"]
    assert pre.outcome == "helps_me_layer" and "more than at every control layer" in pre.markdown
    assert "gsm8k bits per byte -0.02 [-0.03, -0.01]" in pre.markdown
    ft = c["MathRigidityFinetunedRun"]
    assert ft.outcome == "not_scored" and "not scored after one LoRA fine-tune" in ft.markdown
    assert c["MathRigidityPretrainedOther"].outcome == "skipped"
    not_specific = math_tests(vs_control=(0.0, -0.01, 0.01, 0.5, False, False))
    c = claims("09_ma_in_use", use_artifacts(math=not_specific))["MathRigidityPretrainedRun"]
    assert c.outcome == "helps" and "not significantly more than at every control layer" in c.markdown
    no_controls = math_tests().query("against == -1")
    c = claims("09_ma_in_use", use_artifacts(math=no_controls))["MathRigidityPretrainedRun"]
    assert c.outcome == "helps" and "no control layer was scored" in c.markdown
    # one task helped, another hurt: both are said
    other = math_tests(me=(-0.05, -0.08, -0.02, 0.001, False, True)).assign(task="basic_skills_arithmetic/rc_5shot",
                                                                          metric="correct_per_token")
    c = claims("09_ma_in_use", use_artifacts(math=pd.concat([math_tests(), other])))["MathRigidityPretrainedRun"]
    assert c.outcome == "mixed" and "helps gsm8k/gold_bpb_5shot but hurts basic_skills_arithmetic/rc_5shot" in c.markdown
    hurts = math_tests(me=(0.02, 0.01, 0.03, 0.001, False, True))
    c = claims("09_ma_in_use", use_artifacts(math=hurts))["MathRigidityPretrainedRun"]
    assert c.outcome == "hurts" and "hurts gsm8k" in c.markdown
    # an interval that excludes 0 without p < 0.05 is flagged neither better nor worse upstream: no change
    same = math_tests(me=(-0.02, -0.03, -0.01, 0.2, False, False))
    assert claims("09_ma_in_use", use_artifacts(math=same))["MathRigidityPretrainedRun"].outcome == "none"
