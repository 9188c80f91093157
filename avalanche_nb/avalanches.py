"""Avalanches: connected components of the event lattice, their shapes, branching and susceptibility.

Input everywhere is the lattice ``A`` int [N, T, L] (spiking neurons per token/layer site of each
sequence) or its occupancy ``X`` bool [N, T, L], with an optional ``valid`` bool [N, T] mask of the
token sites that enter the lattice (masked sites count as empty). Components never cross sequences.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from .options import ADJACENCIES

_PLANE = {
    # 3x3 (token, layer) neighbourhoods, rows = t-1, t, t+1 and columns = l-1, l, l+1
    "von_neumann": [[0, 1, 0], [1, 1, 1], [0, 1, 0]],
    "moore": [[1, 1, 1], [1, 1, 1], [1, 1, 1]],
    # von Neumann plus the (t+1, l+1) diagonal, which makes (t-1, l-1) a neighbour too (symmetry)
    "causal": [[1, 1, 0], [1, 1, 1], [0, 1, 1]],
}
TABLE_COLUMNS: tuple[str, ...] = ("seq", "size", "n_sites", "t_span", "l_span", "t0", "l0")


def _structure(adjacency: str) -> np.ndarray:
    """bool [3, 3, 3] structuring element for ``ndimage.label``."""
    if adjacency not in _PLANE:
        raise ValueError(f"unknown adjacency {adjacency!r}; valid names: {', '.join(ADJACENCIES)}")
    s = np.zeros((3, 3, 3), dtype=bool)
    s[1] = _PLANE[adjacency]  # no neighbours along the sequence axis: sequences never merge
    return s


def check_lattice(A: np.ndarray, name: str = "lattice") -> np.ndarray:
    """``A`` as an array, which must be 3-D [N, T, L] (ValueError naming ``name`` otherwise)."""
    A = np.asarray(A)
    if A.ndim != 3:
        raise ValueError(f"{name} must be 3-D [N, T, L], got shape {A.shape}")
    return A


def _as_counts(A: np.ndarray) -> np.ndarray:
    A = check_lattice(A)
    if A.dtype.kind not in "biu":  # sizes are exact spike counts; a float lattice is a caller bug
        raise ValueError(f"lattice must hold integer spike counts, got dtype {A.dtype}")
    return A


def check_valid(valid: np.ndarray | None, A: np.ndarray) -> np.ndarray | None:
    """``valid`` as bool [N, T] matching the lattice ``A`` [N, T, L] (None stays None: every site)."""
    if valid is None:
        return None
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != A.shape[:2]:
        raise ValueError(f"valid has shape {valid.shape}, expected {A.shape[:2]} (the lattice's [N, T])")
    return valid


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def ratios(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Element-wise ``num / den`` as float, NaN where ``den`` is 0 (an undefined branching ratio)."""
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)  # `where` avoids the 0/0 warning
    return out


def occupancy(A: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Occupancy bool [N, T, L]: ``A > 0`` at valid token sites (``valid`` bool [N, T])."""
    A = _as_counts(A)
    valid = check_valid(valid, A)
    X = A > 0
    return X & valid[:, :, None] if valid is not None else X


def label_avalanches(X: np.ndarray, adjacency: str) -> tuple[np.ndarray, int]:
    """Label the components of occupancy ``X`` bool [N, T, L] under ``adjacency``.

    Returns labels int32 [N, T, L] (0 = no event, 1..K unique across the whole array, one component
    never spanning two sequences) and K. Labels are numbered in raster order (sequence, token, layer)
    of each component's first site.
    """
    X = check_lattice(X, "occupancy").astype(bool, copy=False)
    labels, k = ndimage.label(X, structure=_structure(adjacency), output=np.int32)
    return labels, int(k)


def avalanche_table(A: np.ndarray, valid: np.ndarray | None = None, *, adjacency: str) -> pd.DataFrame:
    """One row per avalanche of the lattice ``A`` int [N, T, L] (``valid`` bool [N, T]) under ``adjacency``.

    Columns (all int64), ``TABLE_COLUMNS``:
      ``seq``     sequence index n;
      ``size``    spikes, the sum of ``A`` over the avalanche's sites;
      ``n_sites`` occupied (token, layer) sites;
      ``t_span``  token span D = max t - min t + 1;
      ``l_span``  layer span H = max l - min l + 1;
      ``t0``      first (minimum) token index;
      ``l0``      minimum layer index over ALL its sites (not only those at ``t0``), so that
                  (t0, l0) is the corner of its bounding box and need not be one of its sites.
    Row i is label i + 1 of ``label_avalanches(occupancy(A, valid), adjacency)``.
    """
    A = _as_counts(A)
    labels, k = label_avalanches(occupancy(A, valid), adjacency)
    n, t, l = np.nonzero(labels)
    lab = labels[n, t, l] - 1

    def reduce(ufunc: np.ufunc, values: np.ndarray, init: int) -> np.ndarray:
        out = np.full(k, init, dtype=np.int64)
        ufunc.at(out, lab, values)  # per-component reduction without a Python loop
        return out

    t0, l0 = reduce(np.minimum, t, np.iinfo(np.int64).max), reduce(np.minimum, l, np.iinfo(np.int64).max)
    return pd.DataFrame({
        "seq": reduce(np.maximum, n, 0),  # every site of a component shares its sequence
        "size": reduce(np.add, A[n, t, l].astype(np.int64), 0),
        "n_sites": np.bincount(lab, minlength=k).astype(np.int64),
        "t_span": reduce(np.maximum, t, -1) - t0 + 1,
        "l_span": reduce(np.maximum, l, -1) - l0 + 1,
        "t0": t0,
        "l0": l0,
    }, columns=list(TABLE_COLUMNS))


def branching(X: np.ndarray) -> dict:
    """Co-occupancy branching ratios of ``X`` bool [N, T, L], pooled over sequences (dimensionless).

    ``b_time  = sum X[n,t,l] X[n,t+1,l]   / sum_{t<T-1} X[n,t,l]``,
    ``b_depth = sum X[n,t,l] X[n,t,l+1]   / sum_{l<L-1} X[n,t,l]``,
    ``b_diag  = sum X[n,t,l] X[n,t+1,l+1] / sum_{t<T-1, l<L-1} X[n,t,l]``, ``b_tot = b_time + b_depth``.
    ``b_time_per_layer`` and ``b_depth_per_layer`` are float [L], the same ratios restricted to the
    sites of layer l (``b_depth_per_layer[-1]`` is NaN: there is no layer above). A ratio is NaN
    where its denominator is 0; no warning is raised.
    """
    X = check_lattice(X, "occupancy").astype(bool, copy=False)
    time_num = (X[:, :-1, :] & X[:, 1:, :]).sum((0, 1))  # [L]
    time_den = X[:, :-1, :].sum((0, 1))
    depth_num = (X[:, :, :-1] & X[:, :, 1:]).sum((0, 1))  # [L-1]
    depth_den = X[:, :, :-1].sum((0, 1))
    diag_num = (X[:, :-1, :-1] & X[:, 1:, 1:]).sum()
    diag_den = X[:, :-1, :-1].sum()
    b_time, b_depth = _ratio(time_num.sum(), time_den.sum()), _ratio(depth_num.sum(), depth_den.sum())
    return {
        "b_time": b_time, "b_depth": b_depth, "b_diag": _ratio(diag_num, diag_den), "b_tot": b_time + b_depth,
        "b_time_per_layer": ratios(time_num, time_den),
        "b_depth_per_layer": np.append(ratios(depth_num, depth_den), np.nan),
    }


def chi_fano(A: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Fano factor Var(Y) / Mean(Y) (units: spikes) of Y[n], the total spikes of sequence n of
    ``A`` int [N, T, L] over its valid sites (``valid`` bool [N, T]).

    Sample variance (ddof=1). NaN with fewer than two sequences or no spikes at all.
    """
    A = _as_counts(A)
    valid = check_valid(valid, A)
    Y = (A * valid[:, :, None] if valid is not None else A).sum((1, 2)).astype(float)
    if len(Y) < 2 or Y.mean() == 0:
        return float("nan")
    return float(Y.var(ddof=1) / Y.mean())


def chi_perc(table: pd.DataFrame) -> float:
    """Percolation susceptibility (units: sites) from an ``avalanche_table`` (needs ``seq`` and ``n_sites``).

    ``chi = sum' s^2 n_s / sum' s n_s``, the mean size of the cluster a random occupied site belongs
    to, with cluster size ``s`` = ``n_sites`` (site percolation) and the sum ``'`` over every avalanche
    except the largest one of each sequence (one per sequence on ties), pooled over sequences.
    NaN when nothing is left after the exclusion (e.g. at most one avalanche per sequence).
    """
    _, kept = clusters_but_largest(table)
    return _ratio((kept**2).sum(), kept.sum())


def clusters_but_largest(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(seq int [M], n_sites float [M]) of every avalanche but the largest of each sequence (one on ties):
    the clusters :func:`chi_perc` sums over."""
    seq = table["seq"].to_numpy()
    s = table["n_sites"].to_numpy(dtype=float)
    order = np.lexsort((-s, seq))  # by sequence, largest cluster first within each
    largest = np.r_[True, seq[order][1:] != seq[order][:-1]] if len(s) else np.zeros(0, bool)
    return seq[order][~largest], s[order][~largest]


def summarise(A: np.ndarray, valid: np.ndarray | None = None, *, adjacency: str) -> dict:
    """JSON-ready statistics of the lattice ``A`` int [N, T, L] (``valid`` bool [N, T]) under ``adjacency``.

    Keys: ``occupancy_per_layer`` (list [L], fraction of valid token sites occupied in each layer;
    NaN if no site is valid), the ``branching`` ratios (per-layer ones as lists), ``chi_fano``,
    ``chi_perc`` and ``n_avalanches`` (int). Values are Python floats/ints/lists; NaN is allowed.
    """
    A = _as_counts(A)
    valid = check_valid(valid, A)
    X = occupancy(A, valid)
    table = avalanche_table(A, valid, adjacency=adjacency)
    b = branching(X)
    n_valid = valid.sum((0, 1)) if valid is not None else A.shape[0] * A.shape[1]
    return {
        "occupancy_per_layer": ratios(X.sum((0, 1)), np.full(A.shape[2], n_valid)).tolist(),
        "b_time": b["b_time"], "b_depth": b["b_depth"], "b_diag": b["b_diag"], "b_tot": b["b_tot"],
        "b_time_per_layer": b["b_time_per_layer"].tolist(), "b_depth_per_layer": b["b_depth_per_layer"].tolist(),
        "chi_fano": chi_fano(A, valid), "chi_perc": chi_perc(table), "n_avalanches": int(len(table)),
    }


def lattice_summary(counts: dict[str, np.ndarray], valid: np.ndarray, adjacencies, rates: dict[str, np.ndarray]
                    ) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """Phase 02's three artifacts from the lattices ``counts[spike_def]`` int [N, T, L]:

    * the avalanche table of every spike definition and adjacency (columns ``seq, spike_def, adjacency``
      then :data:`TABLE_COLUMNS` but ``seq``);
    * per spike definition and adjacency, :func:`summarise` plus ``rate_per_layer`` (``rates[spike_def]``,
      the achieved neuron rates of phase 01);
    * branching per layer (adjacency-free): ``spike_def, layer, b_time, b_depth``.
    """
    tables, summary, per_layer = [], {}, []
    for d, A in counts.items():
        summary[d] = {}
        for adj in adjacencies:
            tables.append(avalanche_table(A, valid, adjacency=adj).assign(spike_def=d, adjacency=adj))
            summary[d][adj] = summarise(A, valid, adjacency=adj) | {"rate_per_layer": np.asarray(rates[d]).tolist()}
        b = branching(occupancy(A, valid))
        per_layer.append(pd.DataFrame({"spike_def": d, "layer": np.arange(A.shape[2]), "b_time": b["b_time_per_layer"],
                                       "b_depth": b["b_depth_per_layer"]}))
    columns = ["seq", "spike_def", "adjacency", *TABLE_COLUMNS[1:]]
    return pd.concat(tables, ignore_index=True)[columns], summary, pd.concat(per_layer, ignore_index=True)
