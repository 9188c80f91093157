"""Components, shapes, branching and susceptibilities against hand-computed values."""

import warnings
from collections import deque

import numpy as np
import pandas as pd
import pytest

from avalanche_nb import avalanches as av


def lattice(*rows_per_seq):
    """Build A [N, T, L] from strings: one string per token, one char per layer ('.' = 0, digit = count)."""
    return np.array([[[0 if c == "." else int(c) for c in row] for row in seq] for seq in rows_per_seq])


def rows(table):
    return [tuple(r) for r in table[av.TABLE_COLUMNS].to_numpy().tolist()]


def test_von_neumann_components_sizes_and_spans():
    A = lattice([
        "21..",   # t=0
        ".1..",   # t=1
        "...3",   # t=2
        "..1.",   # t=3  (diagonal to (2,3): separate under von Neumann)
    ])
    t = av.avalanche_table(A, adjacency="von_neumann")
    # component 1: (0,0)=2, (0,1)=1, (1,1)=1 -> size 4, 3 sites, tokens 0-1, layers 0-1
    # component 2: (2,3)=3 -> size 3, 1 site ; component 3: (3,2)=1
    assert rows(t) == [(0, 4, 3, 2, 2, 0, 0), (0, 3, 1, 1, 1, 2, 3), (0, 1, 1, 1, 1, 3, 2)]


def test_moore_joins_both_diagonals():
    A = lattice(["1..", ".1.", "1.."])  # (0,0) ~ (1,1) ~ (2,0) only through diagonals
    assert rows(av.avalanche_table(A, adjacency="von_neumann")) == [
        (0, 1, 1, 1, 1, 0, 0), (0, 1, 1, 1, 1, 1, 1), (0, 1, 1, 1, 1, 2, 0)]
    # one component: 3 spikes, 3 sites, tokens 0..2 (span 3), layers 0..1 (span 2)
    assert rows(av.avalanche_table(A, adjacency="moore")) == [(0, 3, 3, 3, 2, 0, 0)]


def test_causal_joins_only_the_forward_diagonal():
    up = lattice(["1.", ".1"])    # (0,0) -> (1,1): the (t+1, l+1) diagonal
    down = lattice([".1", "1."])  # (0,1) -> (1,0): the (t+1, l-1) diagonal
    assert rows(av.avalanche_table(up, adjacency="causal")) == [(0, 2, 2, 2, 2, 0, 0)]
    assert len(av.avalanche_table(down, adjacency="causal")) == 2
    assert len(av.avalanche_table(down, adjacency="moore")) == 1


def test_empty_full_single_and_border_lattices():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = np.zeros((2, 5, 3), int)
        t = av.avalanche_table(empty)
        assert len(t) == 0 and list(t.columns) == av.TABLE_COLUMNS
        s = av.summarise(empty, None, "moore")
        assert s["n_avalanches"] == 0
        assert all(np.isnan(s[k]) for k in ("b_time", "b_depth", "b_diag", "b_tot", "chi_fano", "chi_perc"))
    full = np.ones((1, 4, 3), int)
    assert rows(av.avalanche_table(full)) == [(0, 12, 12, 4, 3, 0, 0)]
    b = av.branching(full > 0)
    assert (b["b_time"], b["b_depth"], b["b_diag"], b["b_tot"]) == (1.0, 1.0, 1.0, 2.0)
    single = np.zeros((1, 4, 3), int)
    single[0, 2, 1] = 5
    assert rows(av.avalanche_table(single)) == [(0, 5, 1, 1, 1, 2, 1)]
    # a ring along all four borders of a 4x4 lattice is one component touching every edge
    ring = np.ones((1, 4, 4), int)
    ring[0, 1:3, 1:3] = 0
    assert rows(av.avalanche_table(ring)) == [(0, 12, 12, 4, 4, 0, 0)]


def test_sequences_never_merge():
    A = np.zeros((2, 3, 2), int)
    A[0, 2, :] = 1  # last token of sequence 0
    A[1, 0, :] = 1  # first token of sequence 1: adjacent in memory, not in the lattice
    for adj in av.ADJACENCIES:
        t = av.avalanche_table(A, adjacency=adj)
        assert rows(t) == [(0, 2, 2, 1, 2, 2, 0), (1, 2, 2, 1, 2, 0, 0)]
    labels, k = av.label_avalanches(A > 0)
    assert k == 2 and set(np.unique(labels[0])) == {0, 1} and set(np.unique(labels[1])) == {0, 2}


def test_valid_mask_removes_sites_and_splits_components():
    A = lattice(["1", "1", "1"])  # one column, tokens 0..2
    valid = np.array([[True, False, True]])
    assert rows(av.avalanche_table(A, valid)) == [(0, 1, 1, 1, 1, 0, 0), (0, 1, 1, 1, 1, 2, 0)]
    assert av.chi_fano(np.stack([A[0], 2 * A[0]]), np.array([[True, False, True]] * 2)) == pytest.approx(
        # Y = [2, 4]: mean 3, sample variance 2 -> 2/3
        2 / 3)


def test_branching_by_hand():
    X = lattice([
        "11.",  # t=0
        "1..",  # t=1
        ".11",  # t=2
    ]) > 0
    b = av.branching(X)
    # time pairs (t,l)->(t+1,l) over t<2: (0,0)->(1,0) yes, (0,1)->(1,1) no, (1,0)->(2,0) no: 1 of 3
    assert b["b_time"] == pytest.approx(1 / 3)
    # depth pairs (t,l)->(t,l+1) over l<2: (0,0)->(0,1) yes, (0,1)->(0,2) no, (1,0)->(1,1) no,
    # (2,1)->(2,2) yes: 2 of 4
    assert b["b_depth"] == pytest.approx(2 / 4)
    # diagonal (t,l)->(t+1,l+1) over t<2, l<2: (0,0)->(1,1) no, (0,1)->(1,2) no, (1,0)->(2,1) yes: 1 of 3
    assert b["b_diag"] == pytest.approx(1 / 3)
    assert b["b_tot"] == pytest.approx(1 / 3 + 1 / 2)
    # per layer: b_time[0] = 1/2 ((0,0)->(1,0) yes, (1,0)->(2,0) no), b_time[1] = 0/1, b_time[2] = NaN
    np.testing.assert_allclose(b["b_time_per_layer"], [0.5, 0.0, np.nan])
    # b_depth[0] = 1/2 ((0,0) yes, (1,0) no), b_depth[1] = 1/2 ((0,1) no, (2,1) yes), b_depth[2] = NaN
    np.testing.assert_allclose(b["b_depth_per_layer"], [0.5, 0.5, np.nan])


def test_chi_fano_by_hand():
    A = np.zeros((3, 2, 1), int)
    A[:, 1, 0] = [1, 2, 6]  # Y = [1, 2, 6]: mean 3, sample variance ((4 + 1 + 9) / 2) = 7
    assert av.chi_fano(A) == pytest.approx(7 / 3)
    assert np.isnan(av.chi_fano(A[:1]))


def test_chi_perc_by_hand():
    # sequence 0: clusters of 3, 2, 1 sites; sequence 1: clusters of 4 and 2 sites
    t = pd.DataFrame({"seq": [0, 0, 0, 1, 1], "n_sites": [3, 2, 1, 4, 2]})
    # drop each sequence's largest (3 and 4): left 2, 1, 2 -> (4 + 1 + 4) / (2 + 1 + 2) = 9 / 5
    assert av.chi_perc(t) == pytest.approx(9 / 5)
    assert np.isnan(av.chi_perc(t.iloc[[0, 3]].reset_index(drop=True)))  # nothing left


NEIGHBOURS = {
    "von_neumann": [(1, 0), (-1, 0), (0, 1), (0, -1)],
    "moore": [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0)],
    "causal": [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1)],
}


def bfs_sizes(A, adjacency):
    out = []
    for n in range(A.shape[0]):
        seen = np.zeros(A.shape[1:], bool)
        for t, l in zip(*np.nonzero(A[n])):
            if seen[t, l]:
                continue
            seen[t, l] = True
            q, sites = deque([(t, l)]), []
            while q:
                a, b = q.popleft()
                sites.append((a, b))
                for da, db in NEIGHBOURS[adjacency]:
                    c, d = a + da, b + db
                    if 0 <= c < A.shape[1] and 0 <= d < A.shape[2] and A[n, c, d] and not seen[c, d]:
                        seen[c, d] = True
                        q.append((c, d))
            ts, ls = np.array(sites).T
            out.append((n, int(A[n, ts, ls].sum()), len(sites), int(np.ptp(ts) + 1), int(np.ptp(ls) + 1),
                        int(ts.min()), int(ls.min())))
    return sorted(out)


@pytest.mark.parametrize("adjacency", av.ADJACENCIES)
@pytest.mark.parametrize("density", [0.1, 0.4, 0.6])
def test_table_matches_a_flood_fill(adjacency, density):
    rng = np.random.default_rng(int(density * 100))
    A = (rng.random((3, 17, 9)) < density) * rng.integers(1, 4, (3, 17, 9))
    assert sorted(rows(av.avalanche_table(A, adjacency=adjacency))) == bfs_sizes(A, adjacency)


@pytest.mark.parametrize("adjacency,p_c", [("von_neumann", 0.592746), ("moore", 0.407254)])
def test_chi_perc_peaks_at_the_site_percolation_threshold(adjacency, p_c):
    """On iid lattices the mean finite-cluster size peaks at p_c (up to a finite-size shift).

    For 256 x 256 lattices the shift is of order 256^(-3/4) ~ 0.016 (correlation-length exponent
    nu = 4/3); on a 0.01 grid we allow 0.02. Seeds 0-2 all peak within 0.01 of p_c.
    """
    rng = np.random.default_rng(0)
    grid = np.round(np.arange(p_c - 0.08, p_c + 0.081, 0.01), 4)
    chi = []
    for p in grid:
        X = rng.random((32, 256, 256)) < p
        chi.append(av.chi_perc(av.avalanche_table(X.astype(int), adjacency=adjacency)))
    peak = grid[int(np.argmax(chi))]
    assert abs(peak - p_c) <= 0.02, (peak, dict(zip(grid, np.round(chi, 1))))


def test_bad_input():
    A = np.zeros((1, 3, 2), int)
    with pytest.raises(ValueError, match="unknown adjacency 'hex'.*von_neumann"):
        av.avalanche_table(A, adjacency="hex")
    with pytest.raises(ValueError, match=r"valid has shape \(1, 4\)"):
        av.avalanche_table(A, np.ones((1, 4), bool))
    with pytest.raises(ValueError, match=r"\[N, T, L\]"):
        av.avalanche_table(np.zeros((3, 2), int))
