"""The massive-activation experiments of phase 06, one function per table (DESIGN.md §5).

Each function takes a loaded model, the MA sites found by :func:`massive.me_layer` and token windows,
and returns a tidy DataFrame; the notebook concatenates them over models and plots.
"""

from __future__ import annotations

from contextlib import nullcontext
from itertools import product
from typing import Sequence

import numpy as np
import pandas as pd

from . import interventions as iv
from . import massive, scoring, stats
from .options import MA_INTERVENTIONS


def _measure(model, probe: np.ndarray, b_tokens: np.ndarray, k: int, batch_size: int) -> tuple[massive.Scan, np.ndarray]:
    """Probe scan with attention sinks and Dataset B's per-token NLL, under whatever edit is active."""
    return (massive.scan(model, probe, k, batch_size, sinks=True),
            scoring.window_nll(model, b_tokens, batch_size))


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


def interventions(model, tokenizer, me: dict, probe: np.ndarray, calib: np.ndarray, b_tokens: np.ndarray,
                  modes: Sequence[str] = MA_INTERVENTIONS, clip_multiple: float = 10.0, k: int = 10,
                  batch_size: int = 8) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Edit the MA sites at every layer from the ME layer on; for ``none`` and each mode measure:

    * ``interventions``: Dataset B perplexity and its ratio to ``none``, per-layer top-1 / ratio on the probe;
    * ``token_class``: per-token loss change by token class (:func:`interventions.loss_change_by_class`);
    * ``attention_sink``: attention mass on the first token per layer and head.
    """
    n_layers = model.config.num_hidden_layers
    layers = list(range(me["me_layer"], n_layers))
    positions, dims = [me["ma_pos"]], me["ma_dims"]
    means = iv.site_means(model, calib, layers, positions, dims, batch_size) if "mean" in modes else None
    classes = massive.token_classes(tokenizer, b_tokens)
    rows, classes_rows, sink_rows, base = [], [], [], None
    for mode in ("none", *modes):
        with iv.edit_sites(model, layers, positions, dims, mode, means, clip_multiple):
            s, nll = _measure(model, probe, b_tokens, k, batch_size)
        if base is None:
            base = nll
        ppl = scoring.perplexity(nll)
        for row in _per_layer(s, intervention=mode):
            rows.append({**row, "perplexity": ppl, "perplexity_ratio": ppl / scoring.perplexity(base)})
        classes_rows.append(iv.loss_change_by_class(base, nll, classes).assign(intervention=mode))
        L, N, H = s.sink.shape
        sink_rows.append(pd.DataFrame({"intervention": mode, "layer": np.repeat(np.arange(L), H),
                                       "head": np.tile(np.arange(H), L), "sink": s.sink.mean(1).ravel()}))
    return pd.DataFrame(rows), pd.concat(classes_rows, ignore_index=True), pd.concat(sink_rows, ignore_index=True)


def factorial(model, me: dict, probe: np.ndarray, b_tokens: np.ndarray, k: int = 10, batch_size: int = 8) -> pd.DataFrame:
    """{pre-MLP norm weight as-is / its mean} × {MLP as-is / MLP output removed at the MA token}, only at
    the ME layer: per-layer top-1 and ratio on the probe, and Dataset B perplexity, per cell."""
    layer, positions = me["me_layer"], [me["ma_pos"]]
    rows = []
    for norm, mlp in product(("as_is", "mean"), ("as_is", "removed")):
        with (iv.norm_weight_mean(model, layer) if norm == "mean" else nullcontext()), \
             (iv.remove_mlp(model, layer, positions) if mlp == "removed" else nullcontext()):
            s = massive.scan(model, probe, k, batch_size)
            ppl = scoring.perplexity(scoring.window_nll(model, b_tokens, batch_size))
        rows += [{**r, "perplexity": ppl} for r in _per_layer(s, norm=norm, mlp=mlp)]
    return pd.DataFrame(rows)


def control_layers(n_layers: int, me_layer: int, n_controls: int | None) -> list[int]:
    """The ME layer first, then ``n_controls`` other layers evenly spread over the depth (None: all)."""
    others = [l for l in range(n_layers) if l != me_layer]
    if n_controls is not None and n_controls < len(others):
        others = sorted({others[i] for i in np.round(np.linspace(0, len(others) - 1, n_controls)).astype(int)}) if n_controls > 0 else []
    return [me_layer] + others


def rigidity(model, tokenizer, me: dict, probe: np.ndarray, b_tokens: np.ndarray, questions, layers: Sequence[int],
             alphas: Sequence[float], mask_rates: Sequence[float], k: int = 10, batch_size: int = 8,
             progress: bool = False) -> pd.DataFrame:
    """Rigidity reduction (:func:`interventions.rigidity`) at each of ``layers`` × alpha × mask_rate, plus
    the unedited model (``applied = -1``). Per configuration and decoder layer: probe top-1 / ratio and
    sink mass; per configuration: Dataset B perplexity and ARC ``acc`` / ``acc_norm`` on ``questions``,
    with ``arc_p`` the exact McNemar p-value of ``acc`` against the unedited model on the same questions."""
    for a in alphas:  # fail before any work
        iv.check_alpha(a)
    for r in mask_rates:
        iv.rigidity_k(r, model.config.hidden_size)
    prompts = scoring.arc_prompts(tokenizer, questions) if questions else None
    configs = [(-1, 1.0, 0.0)] + list(product(layers, alphas, mask_rates))
    if progress:
        from tqdm.auto import tqdm
        configs = tqdm(configs, desc="rigidity", leave=False)
    rows, base_correct = [], None
    for applied, alpha, rate in configs:
        ctx = iv.rigidity(model, applied, [me["ma_pos"]], alpha, rate) if applied >= 0 else nullcontext()
        with ctx:
            s, nll = _measure(model, probe, b_tokens, k, batch_size)
            arc = (scoring.score_arc(model, tokenizer, questions, batch_size=batch_size, prompts=prompts)
                   if questions else None)
        keys = {"applied": applied, "at_me_layer": applied == me["me_layer"], "alpha": alpha, "mask_rate": rate}
        extra = {"perplexity": scoring.perplexity(nll), "arc_acc": np.nan, "arc_acc_norm": np.nan, "arc_p": np.nan}
        if arc is not None:
            base_correct = arc.correct.to_numpy() if base_correct is None else base_correct
            extra.update(arc_acc=float(arc.correct.mean()), arc_acc_norm=float(arc.correct_norm.mean()),
                         arc_p=stats.mcnemar(base_correct, arc.correct.to_numpy())["p_exact"])
        rows += [{**r, **extra} for r in _per_layer(s, **keys)]
    return pd.DataFrame(rows)


def _meets(rows: pd.DataFrame, kind: str, relaxed_ratio: float) -> bool:
    """Whether any of the per-layer rows (columns top1, ratio) meets the criterion."""
    return bool(massive.meets(rows.top1.to_numpy(), rows.ratio.to_numpy(), kind, relaxed_ratio).any())


def findings(me: dict, interventions_rows: pd.DataFrame, factorial_rows: pd.DataFrame,
             rigidity_rows: pd.DataFrame) -> dict:
    """The plain answers the notebook states, from the three tables of one model.

    * ``perplexity_ratio``: B perplexity of each intervention over ``none``;
    * ``factorial``: per cell, whether any layer from the ME layer on still meets the criterion;
    * ``rigidity``: per configuration, whether MAs persist from the layer it was applied at on (the edit
      acts on that layer's input, so its own output is downstream of it, as in the factorial), and its perplexity / ARC / mean sink mass changes relative to the unedited model.
    """
    kind, relaxed = me["criterion"], me["relaxed_ratio"]
    me_l = me["me_layer"]
    ratio = interventions_rows.groupby("intervention", sort=False).perplexity_ratio.first().to_dict()
    fac = {}
    for (norm, mlp), g in factorial_rows.groupby(["norm", "mlp"], sort=False):
        fac[f"norm={norm}, mlp={mlp}"] = bool(_meets(g[g.layer >= me_l], kind, relaxed))
    base = rigidity_rows[rigidity_rows.applied == -1]
    rig = []
    for (applied, alpha, rate), g in rigidity_rows[rigidity_rows.applied >= 0].groupby(["applied", "alpha", "mask_rate"]):
        deeper = g[g.layer >= applied]  # the edited layer's own output is downstream of the edit
        rig.append({"applied": int(applied), "at_me_layer": int(applied) == me_l, "alpha": alpha, "mask_rate": rate,
                    "ma_persists": _meets(deeper, kind, relaxed) if len(deeper) else None,
                    "d_perplexity": float(g.perplexity.iloc[0] - base.perplexity.iloc[0]),
                    "d_arc_acc": float(g.arc_acc.iloc[0] - base.arc_acc.iloc[0]), "arc_p": float(g.arc_p.iloc[0]),
                    "d_sink": float(g.sink.mean() - base.sink.mean())})
    return {"perplexity_ratio": ratio, "ma_persists_in_factorial": fac, "rigidity": rig}
