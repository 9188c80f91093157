"""Replication on other models: the measurements of phases 01-04 (gain on every MLP) for one model,
and the per-gain curves that put models side by side.

:func:`measure` runs, for a model, with the run's params: calibration on Dataset A, the g = 1
rate-matched lattice and its avalanche summary, the gain sweep (ablation ``all``), the g* evidence
and every rule's pick (A only), Dataset B's signatures and perplexity, and ARC on the grid questions.
The run's own model is not measured again: :func:`curves` reads it from phases 03 and 04.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from . import avalanches as av
from . import gstar, hooks, pipeline, scoring, sweep, transfer

#: per-gain columns of ``replication.parquet``
CURVE_COLUMNS = ("model", "g", "rate_fixed", "b_tot", "delta_b_tot_n1", "z_tot_n1", "chi_perc", "perplexity_b",
                 "arc_acc", "arc_acc_norm", "is_gstar")


class ReplicationModelError(RuntimeError):
    """A replication model could not be loaded offline or is not supported."""


def load(name: str, dtype: str, device: str, seed: int, device_map: str | None):
    """The model (on ``device``, or dispatched by the accelerate strategy ``device_map``), or
    ReplicationModelError naming it and why (so the other models can go on)."""
    from .models import load_model

    try:
        lm = load_model(name, dtype=dtype, device=device, seed=seed, device_map=device_map)
        hooks.architecture(lm.model)
    except Exception as err:  # noqa: BLE001 - any load failure is reported per model, with its cause
        raise ReplicationModelError(f"replication model {name!r} cannot be used offline: "
                                    f"{type(err).__name__}: {err}") from err
    if lm.tokenizer is None:
        raise ReplicationModelError(f"replication model {name!r} has no tokenizer (a test model?)")
    return lm


def family_relation(model_types: list[str]) -> str:
    """'same family' when every model shares its architecture family, else 'cross-family'."""
    fam = {hooks.FAMILIES.get(t) for t in model_types}
    base = {t.replace("_text", "").rstrip("0123456789") for t in model_types}
    return "same family" if len(fam) == 1 and len(base) == 1 else "cross-family"


def curves(name: str, sweep_rows: pd.DataFrame, ppl: pd.DataFrame, arc_grid: pd.DataFrame, g_star: float) -> pd.DataFrame:
    """Per-gain curves of one model (:data:`CURVE_COLUMNS`): fixed-threshold rate, rate-matched b_tot,
    delta-b / z (N1) and chi_perc (pos), B perplexity, ARC acc / acc_norm over the grid questions; one
    row per gain of the sweep or of the perplexity table (g* included when the search went past the grid),
    NaN where a gain lacks that measurement."""
    rm, fx = sweep.main_rows(sweep_rows), sweep.main_rows(sweep_rows, mode="fixed")
    pooled = arc_grid[arc_grid.subset == "all"].sort_values("g").reset_index(drop=True)
    gains = np.array(sorted(set(np.round(rm.g, 9)) | set(np.round(ppl.g, 9))))
    out = pd.DataFrame({"model": name, "g": gains})

    def at(frame: pd.DataFrame, src: str) -> list[float]:
        return [float(frame.loc[np.isclose(frame.g, g), src].iloc[0]) if np.isclose(frame.g, g).any() else np.nan
                for g in gains]

    out["rate_fixed"] = at(fx, "rate_mean")
    for col in ("b_tot", "delta_b_tot_n1", "z_tot_n1", "chi_perc"):
        out[col] = at(rm, col)
    for col, frame, src in (("perplexity_b", ppl, "perplexity"), ("arc_acc", pooled, "acc"),
                            ("arc_acc_norm", pooled, "acc_norm")):
        out[col] = at(frame, src)
    out["is_gstar"] = np.isclose(out.g, g_star)
    return out[list(CURVE_COLUMNS)]


def from_run(run_dir, out) -> dict[str, Any]:
    """The run's own model as :func:`measure` would give it, read from phases 00, 03 and 04 (hash-checked)."""
    from . import artifacts

    gs = artifacts.read(run_dir, "gstar.json", out)
    rows = artifacts.read(run_dir, "sweep.parquet", out)
    tr = artifacts.read(run_dir, "transfer.parquet", out)
    arc_sum = artifacts.read(run_dir, "arc_summary.json", out)
    info = artifacts.read(run_dir, "model.json", out)
    return {"info": info, "picks": gs["picks"], "gstar": gs["gstar"], "source": "this run (phases 03-04)",
            "curves": curves(info["name"], rows, tr, pd.DataFrame(arc_sum["grid"]), gs["gstar"])}


def measure(name: str, p: Mapping[str, Any], log=None) -> dict[str, Any]:
    """Phases 01-04 (ablation ``all``, grid ARC questions only) for model ``name`` with params ``p``,
    composed of the same steps the phase notebooks call.

    Returns ``{"info", "summary_g1", "sweep", "evidence", "picks", "gstar", "search", "transfer", "arc",
    "arc_grid", "mcnemar"}``.
    """
    lm = load(name, p["dtype"], p["device"], p["seed"], p["device_map"])
    arch = hooks.architecture(lm.model)
    a = pipeline.build_slices(lm.tokenizer, p, ("a_calibration", "a_lattice"))
    tokens = a["a_lattice"].tokens
    valid = pipeline.valid_mask(tokens, p)
    ref = pipeline.build_reference(lm.model, a["a_calibration"].tokens, tokens, p, progress=False)
    summary = av.summarise(ref.lattices[0].counts["pos"], valid, adjacency=p["adjacencies"][0])
    res = sweep.sweep_ablation(lm.model, tokens, valid, ref, p, "all", log=log)
    rows = pd.DataFrame(res.rows)
    search = gstar.search(res.lattices[("pos", "rate_matched")], valid, p["gains"], p,
                          lambda g: sweep.lattice_at(lm.model, tokens, valid, ref, g, p), log=log)
    # B and ARC only after g* is fixed from A
    b_tokens = pipeline.build_slices(lm.tokenizer, p, ("b",))["b"].tokens
    _, rows, headline = transfer.evaluate(lm.model, tokens, b_tokens, ref, a_rows=rows, search=search, p=p)
    gains = transfer.evaluated_gains(p["gains"], search.gstar)
    arc, arc_sum = scoring.evaluate_arc(lm.model, lm.tokenizer, gains, search.gstar, p, full=False, log=log)
    info = lm.describe() | {"d_ff": arch.d_ff, "n_layers": arch.n_layers}
    return {"info": info, "summary_g1": summary, "sweep": rows, "evidence": search.evidence, "picks": search.picks,
            "gstar": search.gstar, "search": search, "transfer": headline, "arc": arc,
            "arc_grid": pd.DataFrame(arc_sum["grid"]), "mcnemar": arc_sum["mcnemar"]}


def side_by_side(models: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One column per model: architecture, g = 1 signatures (rate-matched, pos), every rule's g*, and at
    g = 1 / g*: B perplexity and ARC accuracy (grid questions, pooled)."""
    cols = {}
    for name, m in models.items():
        c = m["curves"]
        g1, gs = c[np.isclose(c.g, 1.0)].iloc[0], c[c.is_gstar].iloc[0]
        col = {"model_type": m["info"]["model_type"], "layers": m["info"]["num_layers"], "d_ff": m["info"]["d_ff"],
               "rate (g=1)": g1.rate_fixed, "b_tot (g=1)": g1.b_tot, "delta_b_tot N1 (g=1)": g1.delta_b_tot_n1,
               "z_tot N1 (g=1)": g1.z_tot_n1, "chi_perc (g=1)": g1.chi_perc}
        col |= {f"g* {rule}": g for rule, g in m["picks"].items()}
        col |= {"g*": gs.g, "B perplexity (g=1)": g1.perplexity_b, "B perplexity (g*)": gs.perplexity_b,
                "ARC acc (g=1)": g1.arc_acc, "ARC acc (g*)": gs.arc_acc,
                "ARC acc_norm (g=1)": g1.arc_acc_norm, "ARC acc_norm (g*)": gs.arc_acc_norm}
        cols[name] = col
    return pd.DataFrame(cols)
