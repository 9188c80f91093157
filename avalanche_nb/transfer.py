"""Held-out transfer of a gain: Dataset B signatures at g = 1 and g*, and B's perplexity at every gain.

The thresholds come from Dataset A (its g = 1 per-layer targets, and the fixed-mode thresholds), and
so does the calibration (mu, sigma): B is measured with A's yardstick, nothing is refitted on B.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from . import lattice as lat
from . import scoring, sweep

#: the sweep-table columns carried into the headline transfer table
SIGNATURES = ("rate_mean", "b_tot", "delta_b_tot_n1", "z_tot_n1", "delta_b_time_n2", "delta_b_tot_n3", "chi_perc",
              "chi_fano", "n_avalanches")


def perplexity_table(model, tokens: np.ndarray, gains: Sequence[float], batch_size: int = 16,
                     log=print) -> pd.DataFrame:
    """Perplexity of the windows ``tokens`` int [N, T] at each gain (gain on every MLP).

    Columns: g, nll_mean (nats per token), perplexity, n_tokens (scored positions, N·(T-1)).
    """
    rows = []
    for g in gains:
        nll = scoring.window_nll(model, tokens, batch_size, float(g))
        rows.append({"g": float(g), "nll_mean": float(nll.mean()), "perplexity": scoring.perplexity(nll),
                     "n_tokens": int(nll.size)})
        if log:
            log(f"perplexity g={g:.2f}: {rows[-1]['perplexity']:.3f}")
    return pd.DataFrame(rows)


def signatures(model, tokens: np.ndarray, valid: np.ndarray, calib: lat.Calibration, gains: Sequence[float],
               rates: Sequence[float], targets: list[np.ndarray], fixed: dict, **sweep_kw) -> pd.DataFrame:
    """The sweep rows (:func:`sweep.run`, ablation ``all``) of ``tokens`` at ``gains``, with A's thresholds."""
    res = sweep.run(model, tokens, valid, calib, sorted({float(g) for g in gains}), rates, targets, fixed, "all",
                    **sweep_kw)
    return pd.DataFrame(res.rows)


def a_rows_at(model, tokens: np.ndarray, valid: np.ndarray, calib: lat.Calibration, gstar: float,
              gains: Sequence[float], rates: Sequence[float], targets: list[np.ndarray], fixed: dict,
              **sweep_kw) -> pd.DataFrame:
    """Dataset A's sweep rows at ``gstar`` when the extended g* search put it beyond the sweep's ``gains``
    (so the headline can show A's signatures there); empty when g* is on the grid."""
    if np.isclose(np.asarray(gains, float), gstar).any():
        return pd.DataFrame()
    return signatures(model, tokens, valid, calib, [gstar], rates, targets, fixed, log=None, **sweep_kw)


def headline(ppl: pd.DataFrame, b_rows: pd.DataFrame, a_rows: pd.DataFrame, gstar: float,
             spike_def: str = "pos") -> pd.DataFrame:
    """One row per gain: B's perplexity, and at g = 1 and g* the rate-matched signatures of B and
    (prefixed ``a_``) of A, for ``spike_def`` at the first target rate."""
    def pick(rows: pd.DataFrame, prefix: str) -> pd.DataFrame:
        sel = sweep.main_rows(rows, spike_def)
        return sel[["g", *SIGNATURES]].rename(columns={c: prefix + c for c in SIGNATURES})

    out = ppl.copy()
    out["is_gstar"] = np.isclose(out.g, gstar)
    out["g_round"] = out.g.round(9)
    for rows, prefix in ((b_rows, "b_"), (a_rows, "a_")):
        sig = pick(rows, prefix)
        sig = sig[np.isclose(sig.g.to_numpy()[:, None], [1.0, gstar]).any(1)].assign(g_round=lambda x: x.g.round(9))
        out = out.merge(sig.drop(columns="g"), on="g_round", how="left")
    return out.drop(columns="g_round")
