"""Avalanches: connected components of the event lattice, their shapes, branching and susceptibility.

Input everywhere is the lattice ``A`` int [N, T, L] (spiking neurons per token/layer site of each
sequence) or its occupancy ``X`` bool [N, T, L], with an optional ``valid`` bool [N, T] mask of the
token sites that enter the lattice (masked sites count as empty). Components never cross sequences.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

ADJACENCIES = ("von_neumann", "moore", "causal")

_PLANE = {
    # 3x3 (token, layer) neighbourhoods; the centre is the site itself
    "von_neumann": [[0, 1, 0], [1, 1, 1], [0, 1, 0]],
    "moore": [[1, 1, 1], [1, 1, 1], [1, 1, 1]],
    # von Neumann plus the (t+1, l+1) diagonal, which makes (t-1, l-1) a neighbour too (symmetry)
    "causal": [[1, 1, 0], [1, 1, 1], [0, 1, 1]],
}
TABLE_COLUMNS = ["seq", "size", "n_sites", "t_span", "l_span", "t0", "l0"]


def _structure(adjacency: str) -> np.ndarray:
    if adjacency not in _PLANE:
        raise ValueError(f"unknown adjacency {adjacency!r}; use one of {ADJACENCIES}")
    s = np.zeros((3, 3, 3), dtype=bool)
    s[1] = _PLANE[adjacency]  # no neighbours along the sequence axis: sequences never merge
    return s


def _check_lattice(A: np.ndarray, valid: np.ndarray | None) -> None:
    if A.ndim != 3:
        raise ValueError(f"lattice must be [N, T, L], got shape {A.shape}")
    if valid is not None and valid.shape != A.shape[:2]:
        raise ValueError(f"valid has shape {valid.shape}, expected {A.shape[:2]} (the lattice's [N, T])")


def occupancy(A: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """bool [N, T, L]: ``A > 0`` at valid sites."""
    A = np.asarray(A)
    _check_lattice(A, valid)
    X = A > 0
    return X & valid[:, :, None] if valid is not None else X


def label_avalanches(X: np.ndarray, adjacency: str = "von_neumann") -> tuple[np.ndarray, int]:
    """Component labels int32 [N, T, L] (0 = no event, 1..K unique across sequences) and K.

    Labels are numbered in raster order of each component's first site (sequence, token, layer).
    """
    X = np.asarray(X, dtype=bool)
    _check_lattice(X, None)
    labels, k = ndimage.label(X, structure=_structure(adjacency))
    return labels.astype(np.int32), int(k)


def avalanche_table(A: np.ndarray, valid: np.ndarray | None = None, adjacency: str = "von_neumann") -> pd.DataFrame:
    """One row per avalanche, ordered by label: ``seq, size, n_sites, t_span, l_span, t0, l0``.

    ``size`` = spikes (sum of ``A`` over its sites), ``n_sites`` = occupied sites, ``t_span`` = token
    span D (max t - min t + 1), ``l_span`` = layer span H, ``t0`` = first token, ``l0`` = lowest layer.
    """
    A = np.asarray(A)
    labels, k = label_avalanches(occupancy(A, valid), adjacency)
    if k == 0:
        return pd.DataFrame({c: np.zeros(0, np.int64) for c in TABLE_COLUMNS})
    flat = labels.ravel()
    on = flat > 0
    lab = flat[on] - 1
    n, t, l = (ix.ravel()[on] for ix in np.indices(labels.shape, sparse=False))
    size = np.bincount(lab, weights=A.ravel()[on], minlength=k)
    n_sites = np.bincount(lab, minlength=k)

    def extreme(values, fn, init):
        out = np.full(k, init, dtype=np.int64)
        fn.at(out, lab, values)
        return out

    big = np.iinfo(np.int64).max
    t0, t1 = extreme(t, np.minimum, big), extreme(t, np.maximum, -1)
    l0, l1 = extreme(l, np.minimum, big), extreme(l, np.maximum, -1)
    return pd.DataFrame({
        "seq": extreme(n, np.minimum, big), "size": np.rint(size).astype(np.int64), "n_sites": n_sites.astype(np.int64),
        "t_span": t1 - t0 + 1, "l_span": l1 - l0 + 1, "t0": t0, "l0": l0,
    })


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def _ratios(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def branching(X: np.ndarray) -> dict:
    """Co-occupancy branching ratios of ``X`` bool [N, T, L], pooled over sequences.

    ``b_time = sum X[t,l] X[t+1,l] / sum_{t<T-1} X[t,l]``; ``b_depth`` likewise along layers,
    ``b_diag`` along (t+1, l+1); ``b_tot = b_time + b_depth``. Per-layer versions are float [L]
    (``b_depth_per_layer[-1]`` is NaN: there is no layer above). NaN where nothing is occupied.
    """
    X = np.asarray(X, dtype=bool)
    _check_lattice(X, None)
    Xi = X.astype(np.int64)
    time_num = (Xi[:, :-1, :] * Xi[:, 1:, :]).sum((0, 1))  # [L]
    time_den = Xi[:, :-1, :].sum((0, 1))
    depth_num = (Xi[:, :, :-1] * Xi[:, :, 1:]).sum((0, 1))  # [L-1]
    depth_den = Xi[:, :, :-1].sum((0, 1))
    diag_num = (Xi[:, :-1, :-1] * Xi[:, 1:, 1:]).sum()
    diag_den = Xi[:, :-1, :-1].sum()
    b_time, b_depth = _ratio(time_num.sum(), time_den.sum()), _ratio(depth_num.sum(), depth_den.sum())
    return {
        "b_time": b_time, "b_depth": b_depth, "b_diag": _ratio(diag_num, diag_den), "b_tot": b_time + b_depth,
        "b_time_per_layer": _ratios(time_num, time_den),
        "b_depth_per_layer": np.append(_ratios(depth_num, depth_den), np.nan),
    }


def chi_fano(A: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Fano factor Var(Y) / Mean(Y) of the total spikes Y[n] of each sequence (sample variance, ddof=1).

    NaN with fewer than two sequences or no spikes.
    """
    A = np.asarray(A)
    _check_lattice(A, valid)
    Y = (A * valid[:, :, None] if valid is not None else A).sum((1, 2)).astype(float)
    if len(Y) < 2 or Y.mean() == 0:
        return float("nan")
    return float(Y.var(ddof=1) / Y.mean())


def chi_perc(table: pd.DataFrame) -> float:
    """Percolation susceptibility: mean cluster size excluding each sequence's largest cluster.

    ``chi = sum' s^2 n_s / sum' s n_s`` with cluster size ``s`` = ``n_sites`` (sites, as in site
    percolation), summed over every avalanche of ``table`` but the largest one of each sequence.
    NaN when nothing is left after the exclusion.
    """
    if len(table) == 0:
        return float("nan")
    s = table["n_sites"].to_numpy(dtype=float)
    largest = table.groupby("seq")["n_sites"].idxmax().to_numpy()  # one per sequence, first on ties
    keep = np.ones(len(s), dtype=bool)
    keep[table.index.get_indexer(largest)] = False
    return _ratio((s[keep] ** 2).sum(), s[keep].sum())


def summarise(A: np.ndarray, valid: np.ndarray | None = None, adjacency: str = "von_neumann") -> dict:
    """JSON-ready lattice statistics: occupancy per layer, branching, chi_fano, chi_perc, n_avalanches."""
    A = np.asarray(A)
    X = occupancy(A, valid)
    table = avalanche_table(A, valid, adjacency)
    b = branching(X)
    n_valid = valid.sum() if valid is not None else A.shape[0] * A.shape[1]
    return {
        "occupancy_per_layer": (X.sum((0, 1)) / n_valid if n_valid else np.full(A.shape[2], np.nan)).tolist(),
        "b_time": b["b_time"], "b_depth": b["b_depth"], "b_diag": b["b_diag"], "b_tot": b["b_tot"],
        "b_time_per_layer": b["b_time_per_layer"].tolist(), "b_depth_per_layer": b["b_depth_per_layer"].tolist(),
        "chi_fano": chi_fano(A, valid), "chi_perc": chi_perc(table), "n_avalanches": int(len(table)),
    }
