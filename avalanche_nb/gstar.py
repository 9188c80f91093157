"""Choosing g*: pre-registered rules over the gain sweep's Dataset A lattices, with bootstrap SEs.

Everything here reads Dataset A lattices only (rate-matched, gain on all MLPs, one spike definition);
Dataset B and ARC are never an input, so the rule cannot peek at the evaluation.

Criteria per gain (all pooled over sequences, as in the sweep table):

* ``b_tot``     co-occupancy branching ``b_time + b_depth``;
* ``chi_perc``  percolation susceptibility (largest avalanche of each sequence excluded);
* ``z_tot_n1``  null-normalised delta-b: ``(b_tot - mean_N1) / sd_N1`` over N1 draws.

Each is a ratio of per-sequence sums, so a bootstrap over sequences is a matrix product of
resampling weights with the per-sequence parts (every gain sees the same resamples). The N1 null of a
resample reuses each drawn sequence's own null draws.

Rules (:data:`RULES`):

* ``seed_b_tot``   the g minimising ``|b_tot - 1|`` (the seed's; kept to reproduce it);
* ``chi_perc_max`` the g maximising ``chi_perc`` (default);
* ``z_tot_n1_max`` the g maximising ``z_tot_n1`` (called ``delta_b_max`` before; the old name still works);
* ``plateau``      the g nearest 1 whose ``chi_perc`` lies within one bootstrap SE of the best
  (the SE of the best g's value).

Ties (equal values) go to the g nearest 1, then to the smaller g.

A pick on the edge of the gain grid is not an optimum: :func:`extended_search` adds gains beyond
that edge (same spacing, up to ``gstar_limits``) until the pick is interior or the limit is reached,
still on Dataset A only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from . import avalanches as av
from . import nulls
from .options import GSTAR_RULES, gstar_rule
from .stats import bootstrap_weights

RULES = GSTAR_RULES


@dataclass
class SequenceParts:
    """Per-sequence sums of one lattice (float [N]; null ones [K, N])."""

    time_num: np.ndarray
    time_den: np.ndarray
    depth_num: np.ndarray
    depth_den: np.ndarray
    s2: np.ndarray  # sum of n_sites^2 over avalanches, the sequence's largest excluded
    s1: np.ndarray  # sum of n_sites over the same avalanches
    null_time_num: np.ndarray
    null_time_den: np.ndarray
    null_depth_num: np.ndarray
    null_depth_den: np.ndarray


def _branching_parts(X: np.ndarray) -> tuple[np.ndarray, ...]:
    """(time_num, time_den, depth_num, depth_den) per sequence of X bool [..., N, T, L] -> [..., N]."""
    ax = (-2, -1)
    return ((X[..., :-1, :] & X[..., 1:, :]).sum(ax), X[..., :-1, :].sum(ax),
            (X[..., :-1] & X[..., 1:]).sum(ax), X[..., :-1].sum(ax))


def sequence_parts(counts: np.ndarray, valid: np.ndarray, adjacency: str, *, null_draws: int,
                   seed: int) -> SequenceParts:
    """Per-sequence parts of b_tot, chi_perc and the N1 null of ``counts`` int [N, T, L].

    The N1 draws are draws 0 .. null_draws - 1 of :func:`nulls.draws`, the ones
    :func:`nulls.null_branching` summarises for the same seed (whatever its chunking), so the point
    z-score matches the sweep table's ``z_tot_n1``.
    """
    X = av.occupancy(counts, valid)
    N = X.shape[0]
    kept_seq, kept = av.clusters_but_largest(av.avalanche_table(counts, valid, adjacency=adjacency))
    s2, s1 = np.zeros(N), np.zeros(N)
    np.add.at(s2, kept_seq, kept**2)
    np.add.at(s1, kept_seq, kept)
    draws = nulls.draws(X, valid, "n1", null_draws, seed=seed)
    return SequenceParts(*(p.astype(float) for p in _branching_parts(X)), s2, s1,
                         *(p.astype(float) for p in _branching_parts(draws)))


def criteria(parts: SequenceParts, weights: np.ndarray) -> dict[str, np.ndarray]:
    """b_tot, chi_perc and z_tot_n1 (float [B]) of the sequence multisets in ``weights`` int [B, N]."""
    W = np.asarray(weights, dtype=float)
    b = av.ratios(W @ parts.time_num, W @ parts.time_den) + av.ratios(W @ parts.depth_num, W @ parts.depth_den)
    nb = (av.ratios(W @ parts.null_time_num.T, W @ parts.null_time_den.T)
          + av.ratios(W @ parts.null_depth_num.T, W @ parts.null_depth_den.T))  # [B, K]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean, sd = np.nanmean(nb, 1), np.nanstd(nb, 1, ddof=1)
        z = np.where(sd > 0, (b - mean) / sd, np.nan)
    return {"b_tot": b, "chi_perc": av.ratios(W @ parts.s2, W @ parts.s1), "z_tot_n1": z}


def evidence(counts: np.ndarray, valid: np.ndarray, gains, p: Mapping[str, Any]) -> pd.DataFrame:
    """One row per gain with each criterion, its bootstrap SE over sequences and ``abs_b_tot_minus_1``.

    ``counts`` int [G, N, T, L]: the rate-matched Dataset A lattices of the gains ``gains`` [G]; the
    params ``p`` give the adjacency (first of ``adjacencies``), ``null_draws``, ``bootstrap_draws`` and
    ``seed``. Rows are independent: the evidence of one more gain is :func:`evidence` of its lattice.
    """
    adjacency, null_draws, seed = p["adjacencies"][0], p["null_draws"], p["seed"]
    counts = np.asarray(counts)
    gains = np.asarray(gains, dtype=float)
    if counts.ndim != 4 or len(counts) != len(gains):
        raise ValueError(f"counts must be [G, N, T, L] with G = {len(gains)} gains, got shape {counts.shape}")
    N = counts.shape[1]
    W = np.vstack([np.ones((1, N), int), bootstrap_weights(N, p["bootstrap_draws"], seed)])  # row 0: the sample
    rows = []
    for g, c in zip(gains, counts):
        crit = criteria(sequence_parts(c, valid, adjacency, null_draws=null_draws, seed=seed), W)
        crit["abs_b_tot_minus_1"] = np.abs(crit["b_tot"] - 1)
        row = {"g": float(g)}
        for name, v in crit.items():
            row[name] = float(v[0])
            row[f"{name}_se"] = float(np.nanstd(v[1:], ddof=1)) if np.isfinite(v[1:]).sum() > 1 else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _nearest_one(g: np.ndarray, idx: np.ndarray) -> int:
    """The index among ``idx`` whose gain is nearest 1 (then the smaller gain)."""
    return int(idx[np.lexsort((g[idx], np.abs(g[idx] - 1)))[0]])


def _best(g: np.ndarray, v: np.ndarray, maximise: bool) -> int:
    """Index of the best finite value; ties to the g nearest 1, then the smaller g."""
    v = np.where(np.isfinite(v), v if maximise else -v, -np.inf)
    if not np.isfinite(v).any():
        raise ValueError("every value of the criterion is undefined (NaN): no gain can be chosen")
    return _nearest_one(g, np.flatnonzero(v == v.max()))


def pick(ev: pd.DataFrame, rule: str) -> float:
    """The gain chosen by ``rule`` from an :func:`evidence` table."""
    rule = gstar_rule(rule)
    g = ev["g"].to_numpy(float)
    if rule == "seed_b_tot":
        return float(g[_best(g, ev["abs_b_tot_minus_1"].to_numpy(float), maximise=False)])
    if rule == "z_tot_n1_max":
        return float(g[_best(g, ev["z_tot_n1"].to_numpy(float), maximise=True)])
    v = ev["chi_perc"].to_numpy(float)
    i = _best(g, v, maximise=True)
    if rule == "chi_perc_max":
        return float(g[i])
    se = ev["chi_perc_se"].to_numpy(float)[i]
    band = v >= v[i] - (se if np.isfinite(se) else 0.0)
    return float(g[_nearest_one(g, np.flatnonzero(band & np.isfinite(v)))])


def picks(ev: pd.DataFrame) -> dict[str, float]:
    """Every rule's gain."""
    return {rule: pick(ev, rule) for rule in RULES}


def at_edge(ev: pd.DataFrame, picked: dict[str, float]) -> dict[str, bool]:
    """Per rule: whether its gain is the lowest or the highest gain of ``ev`` (an edge, not an optimum)."""
    lo, hi = ev["g"].min(), ev["g"].max()
    return {rule: bool(np.isclose(g, lo) or np.isclose(g, hi)) for rule, g in picked.items()}


@dataclass
class Search:
    """The outcome of :func:`extended_search`.

    ``evidence``: one row per gain evaluated (the grid's and the added ones), sorted by g;
    ``picks`` / ``at_edge``: every rule's gain on it and whether that gain is an edge; ``gstar``: the
    chosen rule's gain; ``added``: the gains added beyond the grid, in the order they were added;
    ``outcome``: ``"interior"`` (the chosen rule's pick has gains on both sides) or ``"limit"`` (it sits
    on an edge that cannot move further: the limit of ``gstar_limits`` is reached, or the grid has one gain).
    """

    evidence: pd.DataFrame
    rule: str
    picks: dict[str, float]
    at_edge: dict[str, bool]
    gstar: float
    added: list[float]
    outcome: str

    def sentence(self) -> str:
        """What happened, in words (for the notebook and the paper)."""
        if self.outcome == "interior":
            return f"interior optimum at g* = {self.gstar:g} ({self.rule})"
        return (f"monotone up to the limit: {self.rule} keeps improving towards g = {self.gstar:g}, the end of "
                f"the search range, so g* is that limit, not an optimum")


def _next_gain(g: np.ndarray, side: str, limits: tuple[float, float]) -> float | None:
    """The gain one grid step beyond the ``side`` edge of the sorted gains ``g``, or None past the limit."""
    if len(g) < 2:
        return None
    step = g[1] - g[0] if side == "low" else g[-1] - g[-2]
    nxt = round(float(g[0] - step if side == "low" else g[-1] + step), 10)
    inside = nxt >= limits[0] - 1e-9 if side == "low" else nxt <= limits[1] + 1e-9
    return nxt if inside and nxt >= 0 else None


def search(lattices: np.ndarray, valid: np.ndarray, gains, p: Mapping[str, Any], lattice_at, log=None) -> Search:
    """g* on Dataset A: :func:`evidence` of the rate-matched ``pos`` lattices ``lattices`` int [G, N, T, L] at
    ``gains``, then :func:`extended_search` with the params' ``gstar_rule`` and ``gstar_limits``;
    ``lattice_at(g)`` computes Dataset A's lattice at a gain beyond the grid (:func:`sweep.lattice_at`)."""
    ev = evidence(lattices, valid, gains, p)
    return extended_search(ev, p["gstar_rule"], p["gstar_limits"],
                           lambda g: evidence(lattice_at(g)[None], valid, [g], p), log=log)


def extended_search(ev: pd.DataFrame, rule: str, gstar_limits: tuple[float, float], evidence_at,
                    log=None) -> Search:
    """Apply ``rule`` to the evidence ``ev`` and, while its pick lies on the lowest (highest) gain, add
    the gain one step below (above) it and apply the rule again.

    ``evidence_at(g)`` returns the :func:`evidence` row(s) of gain g (Dataset A only); the step is the
    spacing of the two outermost gains on that side; gains outside ``gstar_limits`` [lo, hi] (or below
    0) are never added. Every rule's pick and edge flag are reported on the final evidence.
    """
    rule = gstar_rule(rule)
    lo, hi = (float(x) for x in gstar_limits)
    if not 0 <= lo <= 1 <= hi:
        raise ValueError(f"gstar_limits {list(gstar_limits)} must satisfy 0 <= lo <= 1 <= hi")
    ev = ev.sort_values("g").reset_index(drop=True)
    added: list[float] = []
    while True:
        g = ev["g"].to_numpy(float)
        chosen = pick(ev, rule)
        side = "low" if np.isclose(chosen, g[0]) else "high" if np.isclose(chosen, g[-1]) else None
        nxt = _next_gain(g, side, (lo, hi)) if side and len(g) > 1 else None
        if nxt is None:
            break
        if log:
            log(f"g* = {chosen:g} lies on the grid's {side} edge: adding g = {nxt:g} (Dataset A)")
        ev = pd.concat([ev, evidence_at(nxt)], ignore_index=True).sort_values("g").reset_index(drop=True)
        added.append(nxt)
    picked = picks(ev)
    edge = at_edge(ev, picked)
    outcome = "limit" if edge[rule] else "interior"
    return Search(ev, rule, picked, edge, picked[rule], added, outcome)
