"""Held-out transfer of a gain: Dataset B signatures at g = 1 and g*, and B's perplexity at every gain.

The thresholds come from Dataset A (its g = 1 per-layer targets, and the fixed-mode thresholds), and
so does the calibration (mu, sigma): B is measured with A's yardstick, nothing is refitted on B.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from . import scoring, sweep
from .progress import track

if TYPE_CHECKING:
    from .gstar import Search
    from .pipeline import Reference

#: the sweep-table columns carried into the headline transfer table
HEADLINE = ("rate_mean", "b_tot", "delta_b_tot_n1", "z_tot_n1", "delta_b_time_n2", "delta_b_tot_n3", "chi_perc",
            "chi_fano", "n_avalanches")


def evaluated_gains(gains: Sequence[float], gstar: float) -> list[float]:
    """The gains B and ARC are evaluated at: the grid, and g* when the search put it beyond the grid."""
    return sorted({*(float(g) for g in gains), float(gstar)})


def perplexity_table(model, tokens: np.ndarray, gains: Sequence[float], score_batch_size: int,
                     log=None) -> pd.DataFrame:
    """Perplexity of the windows ``tokens`` int [N, T] at each gain (gain on every MLP).

    Columns: g, nll_mean (nats per token), perplexity, n_tokens (scored positions, N·(T-1)).
    """
    rows = []
    for g in track(gains, "Dataset B perplexity", unit="gain"):
        nll = scoring.window_nll(model, tokens, score_batch_size, float(g))
        rows.append({"g": float(g), "nll_mean": float(nll.mean()), "perplexity": scoring.perplexity(nll),
                     "n_tokens": int(nll.size)})
        if log:
            log(f"perplexity g={g:.2f}: {rows[-1]['perplexity']:.3f}")
    return pd.DataFrame(rows)


def rows_at(model, tokens: np.ndarray, valid: np.ndarray, ref: "Reference", gains: Sequence[float],
            p: Mapping[str, Any]) -> pd.DataFrame:
    """The sweep rows (ablation ``all``) of ``tokens`` at ``gains`` with ``ref``'s calibration and thresholds;
    empty for no gains."""
    if not len(gains):
        return pd.DataFrame()
    return pd.DataFrame(sweep.sweep_ablation(model, tokens, valid, ref, p, "all", gains=gains).rows)


def evaluate(model, a_tokens: np.ndarray, b_tokens: np.ndarray, ref: "Reference", *, a_rows: pd.DataFrame,
             search: "Search", p: Mapping[str, Any], log=None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Dataset B at the final g* of ``search``: B's sweep rows at g = 1 and g* (``transfer_signatures``),
    A's sweep rows ``a_rows`` with its rows at g* added when the search put g* beyond the grid, and the
    headline table (``transfer``): B's perplexity at every evaluated gain with, at g = 1 and g*, the
    rate-matched signatures of B and of A."""
    from .pipeline import valid_mask

    g_star = search.gstar
    b_rows = rows_at(model, b_tokens, valid_mask(b_tokens, p), ref, sorted({1.0, g_star}), p)
    beyond = [] if np.isclose(a_rows.g.to_numpy(float), g_star).any() else [g_star]
    a_rows = pd.concat([a_rows, rows_at(model, a_tokens, valid_mask(a_tokens, p), ref, beyond, p)], ignore_index=True)
    ppl = perplexity_table(model, b_tokens, evaluated_gains(p["gains"], g_star), p["score_batch_size"], log=log)
    return b_rows, a_rows, headline(ppl, b_rows, a_rows, g_star)


def headline(ppl: pd.DataFrame, b_rows: pd.DataFrame, a_rows: pd.DataFrame, gstar: float,
             spike_def: str = "pos") -> pd.DataFrame:
    """One row per gain: B's perplexity, and at g = 1 and g* the rate-matched signatures of B and
    (prefixed ``a_``) of A, for ``spike_def`` at the first target rate."""
    def pick(rows: pd.DataFrame, prefix: str) -> pd.DataFrame:
        sel = sweep.main_rows(rows, spike_def)
        return sel[["g", *HEADLINE]].rename(columns={c: prefix + c for c in HEADLINE})

    out = ppl.copy()
    out["is_gstar"] = np.isclose(out.g, gstar)
    out["g_round"] = out.g.round(9)
    for rows, prefix in ((b_rows, "b_"), (a_rows, "a_")):
        sig = pick(rows, prefix)
        sig = sig[np.isclose(sig.g.to_numpy()[:, None], [1.0, gstar]).any(1)].assign(g_round=lambda x: x.g.round(9))
        out = out.merge(sig.drop(columns="g"), on="g_round", how="left")
    return out.drop(columns="g_round")


def signature_table(table: pd.DataFrame, gstar: float) -> pd.DataFrame:
    """The headline signatures as a readable table: one row per signature, columns B and A at g = 1 and g*."""
    cols = {}
    for label, g in (("g = 1", 1.0), (f"g* = {gstar:g}", gstar)):
        row = table[np.isclose(table.g, g)].iloc[0]
        for prefix, name in (("b_", "B"), ("a_", "A")):
            cols[f"{name}, {label}"] = [row[prefix + c] for c in HEADLINE]
    return pd.DataFrame(cols, index=list(HEADLINE))
