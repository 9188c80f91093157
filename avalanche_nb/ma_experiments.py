"""The massive-activation experiments of phase 06, one function per table (DESIGN.md §5).

Each function takes a loaded model, the MA sites found by :func:`massive.me_layer` and token windows,
and returns tidy DataFrames; the notebook concatenates them over models and plots. Every forward
pass (probe scans, Dataset B log-likelihoods, ARC) runs ``score_batch_size`` sequences at a time.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial
from itertools import product
from typing import Sequence

import numpy as np
import pandas as pd

from . import interventions as iv
from . import massive, scoring, stats
from .progress import track
from .provenance import clocked
from .token_classes import loss_change_by_class, token_classes


def _measure(model, probe: np.ndarray, b_tokens: np.ndarray, ma_top_k: int, score_batch_size: int
             ) -> tuple[massive.Scan, np.ndarray]:
    """Probe scan with attention sinks and Dataset B's per-token NLL, under whatever edit is active."""
    return (massive.scan(model, probe, ma_top_k=ma_top_k, batch_size=score_batch_size, progress=False, sinks=True),
            scoring.window_nll(model, b_tokens, score_batch_size))


def _per_layer(s: massive.Scan, **keys) -> list[dict]:
    """Rows per decoder layer: mean top-1, median, ratio and (if recorded) sink mass over heads."""
    ratio = s.ratio.mean(1)[1:]
    rows = []
    for l in range(s.n_layers):
        row = {**keys, "layer": l, "top1": float(s.top_abs[l + 1, :, 0].mean()), "median": float(s.median[l + 1].mean()),
               "ratio": float(ratio[l])}
        if s.sink is not None:
            row["sink"] = float(s.sink[l].mean())
        rows.append(row)
    return rows


def intervention_tables(model, tokenizer, me: dict, probe: np.ndarray, calib: np.ndarray, b_tokens: np.ndarray, *,
                        ma_interventions: Sequence[str], ma_clip_multiple: float, ma_top_k: int,
                        score_batch_size: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Edit the MA sites at every layer from the ME layer on (:func:`interventions.edit_sites`); for
    ``none`` and each of ``ma_interventions`` measure:

    * ``interventions``: Dataset B perplexity and its ratio to ``none``, per-layer top-1 / ratio on the probe;
    * ``token_class``: per-token loss change by token class (:func:`token_classes.loss_change_by_class`);
    * ``attention_sink``: attention mass on the first token per layer and head.

    ``calib`` int [N, T]: the windows whose MA-site means the ``mean`` edit writes.
    """
    n_layers = model.config.num_hidden_layers
    sites = {"layers": list(range(me["me_layer"], n_layers)), "positions": [me["ma_pos"]], "dims": me["ma_dims"]}
    means = iv.site_means(model, calib, **sites, batch_size=score_batch_size) if "mean" in ma_interventions else None
    classes = token_classes(tokenizer, b_tokens)
    rows, classes_rows, sink_rows, base = [], [], [], None
    for mode in ("none", *ma_interventions):
        with iv.edit_sites(model, **sites, mode=mode, ma_clip_multiple=ma_clip_multiple, values=means):
            s, nll = _measure(model, probe, b_tokens, ma_top_k, score_batch_size)
        if base is None:
            base = nll
        ppl = scoring.perplexity(nll)
        for row in _per_layer(s, intervention=mode):
            rows.append({**row, "perplexity": ppl, "perplexity_ratio": ppl / scoring.perplexity(base)})
        classes_rows.append(loss_change_by_class(base, nll, classes).assign(intervention=mode))
        L, N, H = s.sink.shape
        sink_rows.append(pd.DataFrame({"intervention": mode, "layer": np.repeat(np.arange(L), H),
                                       "head": np.tile(np.arange(H), L), "sink": s.sink.mean(1).ravel()}))
    return pd.DataFrame(rows), pd.concat(classes_rows, ignore_index=True), pd.concat(sink_rows, ignore_index=True)


def factorial_table(model, me: dict, probe: np.ndarray, b_tokens: np.ndarray, *, ma_top_k: int,
                    score_batch_size: int) -> pd.DataFrame:
    """{pre-MLP norm weight as-is / its mean} × {MLP as-is / MLP output removed at the MA token}, only at
    the ME layer: per-layer top-1 and ratio on the probe, and Dataset B perplexity, per cell."""
    layer, positions = me["me_layer"], [me["ma_pos"]]
    rows = []
    for norm, mlp in product(("as_is", "mean"), ("as_is", "removed")):
        with (iv.norm_weight_mean(model, layer) if norm == "mean" else nullcontext()), \
             (iv.remove_mlp(model, layer, positions) if mlp == "removed" else nullcontext()):
            s = massive.scan(model, probe, ma_top_k=ma_top_k, batch_size=score_batch_size, progress=False)
            ppl = scoring.perplexity(scoring.window_nll(model, b_tokens, score_batch_size))
        rows += [{**r, "perplexity": ppl} for r in _per_layer(s, norm=norm, mlp=mlp)]
    return pd.DataFrame(rows)


def control_layers(n_layers: int, me_layer: int, rigidity_controls: int | None) -> list[int]:
    """The ME layer first, then ``rigidity_controls`` other layers evenly spread over the depth (None: all)."""
    others = [l for l in range(n_layers) if l != me_layer]
    n = rigidity_controls
    if n is not None and n < len(others):
        others = sorted({others[i] for i in np.round(np.linspace(0, len(others) - 1, n)).astype(int)}) if n > 0 else []
    return [me_layer] + others


def rigidity_table(model, tokenizer, me: dict, probe: np.ndarray, b_tokens: np.ndarray, questions, *,
                   layers: Sequence[int], rigidity_alphas: Sequence[float], rigidity_mask_rates: Sequence[float],
                   ma_top_k: int, score_batch_size: int, progress: bool) -> pd.DataFrame:
    """Rigidity reduction (:func:`interventions.rigidity_reduction`) at each of ``layers`` × alpha × mask
    rate, plus the unedited model (``applied = -1``). Per configuration and decoder layer: probe top-1 /
    ratio and sink mass; per configuration: Dataset B perplexity and ARC ``acc`` / ``acc_norm`` on
    ``questions`` (none: NaN), with ``arc_p`` the exact McNemar p-value of ``acc`` against the unedited
    model on the same questions."""
    iv.check_rigidity_grid(rigidity_alphas, rigidity_mask_rates, model.config.hidden_size)
    prompts = scoring.arc_prompts(tokenizer, questions) if questions else None
    configs = [(-1, 1.0, 0.0)] + list(product(layers, rigidity_alphas, rigidity_mask_rates))
    rows, base_correct = [], None
    for applied, alpha, rate in track(configs, "rigidity reduction", unit="configuration") if progress \
            else configs:
        ctx = iv.rigidity_reduction(model, applied, [me["ma_pos"]], alpha, rate) if applied >= 0 else nullcontext()
        with ctx:
            s, nll = _measure(model, probe, b_tokens, ma_top_k, score_batch_size)
            arc = (scoring.score_arc(model, tokenizer, questions, score_batch_size=score_batch_size, progress=False,
                                     prompts=prompts) if questions else None)
        keys = {"applied": applied, "at_me_layer": applied == me["me_layer"], "alpha": alpha, "mask_rate": rate}
        extra = {"perplexity": scoring.perplexity(nll), "arc_acc": np.nan, "arc_acc_norm": np.nan, "arc_p": np.nan}
        if arc is not None:
            base_correct = arc.correct.to_numpy() if base_correct is None else base_correct
            extra.update(arc_acc=float(arc.correct.mean()), arc_acc_norm=float(arc.correct_norm.mean()),
                         arc_p=stats.mcnemar(base_correct, arc.correct.to_numpy())["p_exact"])
        rows += [{**r, **extra} for r in _per_layer(s, **keys)]
    return pd.DataFrame(rows)


def _meets(rows: pd.DataFrame, ma_criterion: str, ma_relaxed_ratio: float) -> bool:
    """Whether any of the per-layer rows (columns top1, ratio) meets the criterion."""
    return bool(massive.meets(rows.top1.to_numpy(), rows.ratio.to_numpy(), ma_criterion, ma_relaxed_ratio).any())


def findings(me: dict, interventions_rows: pd.DataFrame, factorial_rows: pd.DataFrame,
             rigidity_rows: pd.DataFrame) -> dict:
    """The plain answers the notebook states, from the three tables of one model.

    * ``perplexity_ratio``: B perplexity of each intervention over ``none``;
    * ``factorial``: per cell, whether any layer from the ME layer on still meets the criterion;
    * ``rigidity``: per configuration, whether MAs persist from the layer it was applied at on (the edit
      acts on that layer's input, so its own output is downstream of it, as in the factorial), and its
      perplexity / ARC / mean sink mass changes relative to the unedited model.
    """
    criterion, relaxed = me["criterion"], me["relaxed_ratio"]
    me_l = me["me_layer"]
    ratio = interventions_rows.groupby("intervention", sort=False).perplexity_ratio.first().to_dict()
    fac = {}
    for (norm, mlp), g in factorial_rows.groupby(["norm", "mlp"], sort=False):
        fac[f"norm={norm}, mlp={mlp}"] = bool(_meets(g[g.layer >= me_l], criterion, relaxed))
    base = rigidity_rows[rigidity_rows.applied == -1]
    rig = []
    for (applied, alpha, rate), g in rigidity_rows[rigidity_rows.applied >= 0].groupby(["applied", "alpha", "mask_rate"]):
        deeper = g[g.layer >= applied]  # the edited layer's own output is downstream of the edit
        rig.append({"applied": int(applied), "at_me_layer": int(applied) == me_l, "alpha": alpha, "mask_rate": rate,
                    "ma_persists": _meets(deeper, criterion, relaxed) if len(deeper) else None,
                    "d_perplexity": float(g.perplexity.iloc[0] - base.perplexity.iloc[0]),
                    "d_arc_acc": float(g.arc_acc.iloc[0] - base.arc_acc.iloc[0]), "arc_p": float(g.arc_p.iloc[0]),
                    "d_sink": float(g.sink.mean() - base.sink.mean())})
    return {"perplexity_ratio": ratio, "ma_persists_in_factorial": fac, "rigidity": rig}


#: the tables :func:`analyse` returns per model (phase 06's parquet artifacts, without the suffix)
TABLES = ("profile", "profile_topk", "propagation", "interventions", "token_class", "attention_sink", "factorial",
          "rigidity")


def analyse(lm, p, questions, seconds: dict[str, float] | None = None
            ) -> tuple[dict, dict[str, pd.DataFrame], dict | None]:
    """Every massive-activation measurement of one loaded model ``lm`` with params ``p``: (ME-layer record,
    tables keyed by :data:`TABLES` (each with a ``model`` column), findings).

    The probe (``ma_probe_sequences`` windows of Dataset A from offset 0) is profiled; the ME layer, MA
    token and dims must agree with :func:`massive.independent_scan` (HF's own hidden states, no hooks) or
    this raises. Without a layer meeting ``ma_criterion`` only the profile is returned ("none found",
    findings None); otherwise the interventions (calibration: the next ``ma_calibration_sequences``
    windows), the factorial and the rigidity reduction at the ME layer and control layers follow.
    ``seconds`` (if given) collects the wall time of each of these steps.
    """
    clock = seconds if seconds is not None else {}
    timed = partial(clocked, clock)

    from .data import token_strings
    from .pipeline import build_slices

    name, tok = lm.name, lm.tokenizer
    slices = build_slices(tok, p, ("ma_probe", "ma_calibration", "b"))
    probe, calib, b = slices["ma_probe"], slices["ma_calibration"], slices["b"]
    text = [token_strings(tok, row) for row in probe.tokens]
    s = timed("profile scan", massive.scan, lm.model, probe.tokens, ma_top_k=p["ma_top_k"], batch_size=p["batch_size"],
              progress=p["progress"])
    me = massive.me_layer(s, p["ma_criterion"], p["ma_relaxed_ratio"])
    me.update(model=name, n_layers=s.n_layers, probe_sha256=probe.sha256,
              ma_token=text[0][me["ma_pos"]] if me["found"] else None,
              independent=timed("independent scan", massive.independent_scan, lm.model, probe.tokens,
                                p["ma_criterion"], p["ma_relaxed_ratio"]))
    _check_independent(name, me)
    tables = {"profile": massive.profile_table(s, p["ma_relaxed_ratio"]), "profile_topk": massive.topk_table(s, text)}
    if not me["found"]:
        return me, {k: v.assign(model=name) for k, v in tables.items()}, None
    tables["propagation"] = massive.propagation(s, me["ma_pos"])
    kw = dict(ma_top_k=p["ma_top_k"], score_batch_size=p["score_batch_size"])
    tables["interventions"], tables["token_class"], tables["attention_sink"] = timed(
        "interventions", intervention_tables, lm.model, tok, me, probe.tokens, calib.tokens, b.tokens,
        ma_interventions=p["ma_interventions"], ma_clip_multiple=p["ma_clip_multiple"], **kw)
    tables["factorial"] = timed("factorial", factorial_table, lm.model, me, probe.tokens, b.tokens, **kw)
    layers = control_layers(s.n_layers, me["me_layer"], p["rigidity_controls"])
    tables["rigidity"] = timed("rigidity reduction", rigidity_table, lm.model, tok, me, probe.tokens, b.tokens, questions,
                               layers=layers,
                                        rigidity_alphas=p["rigidity_alphas"], rigidity_mask_rates=p["rigidity_mask_rates"],
                                        progress=p["progress"], **kw)
    found = findings(me, tables["interventions"], tables["factorial"], tables["rigidity"])
    return me, {k: v.assign(model=name) for k, v in tables.items()}, found


def _check_independent(name: str, me: dict) -> None:
    """The hooked scan and HF's hidden states must name the same ME layer, MA position and a top-1 dim
    among the MA dims (HF's last hidden state is post-norm, so an ME layer there cannot be checked)."""
    ind = me["independent"]
    if me["found"] and me["me_layer"] >= me["n_layers"] - 1:
        return
    same = ind["me_layer"] == me["me_layer"] and (not me["found"] or (ind["ma_pos"] == me["ma_pos"]
                                                                      and ind["top1_dim"] in me["ma_dims"]))
    if not same:
        raise RuntimeError(f"{name}: the hooked scan {me} disagrees with the independent hidden-state scan {ind}")
