"""Components, shapes, branching and susceptibilities against hand-computed values."""

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from avalanche_nb import avalanches as av
from flood_fill import flood_fill_table


def lattice(*rows_per_seq):
    """Build A [N, T, L] from strings: one string per token, one char per layer ('.' = 0, digit = count)."""
    return np.array([[[0 if c == "." else int(c) for c in row] for row in seq] for seq in rows_per_seq])


def rows(table):
    return [tuple(r) for r in table[list(av.TABLE_COLUMNS)].to_numpy().tolist()]


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
    assert list(t.columns) == list(av.TABLE_COLUMNS)
    assert all(dtype == np.int64 for dtype in t.dtypes)


def test_l0_is_the_lowest_layer_over_all_sites():
    A = lattice([
        "..1",  # t=0: the first token only touches layer 2
        "111",  # t=1: layers 0..2
    ])
    # one component, 4 sites; t0 = 0, but l0 = 0 comes from t=1 (bounding-box corner, not a site)
    assert rows(av.avalanche_table(A, adjacency="von_neumann")) == [(0, 4, 4, 2, 3, 0, 0)]


def test_moore_joins_both_diagonals():
    A = lattice(["1..", ".1.", "1.."])  # (0,0) ~ (1,1) ~ (2,0) only through diagonals
    assert rows(av.avalanche_table(A, adjacency="von_neumann")) == [
        (0, 1, 1, 1, 1, 0, 0), (0, 1, 1, 1, 1, 1, 1), (0, 1, 1, 1, 1, 2, 0)]
    # one component: 3 spikes, 3 sites, tokens 0..2 (span 3), layers 0..1 (span 2)
    assert rows(av.avalanche_table(A, adjacency="moore")) == [(0, 3, 3, 3, 2, 0, 0)]


def test_causal_joins_only_the_forward_diagonal():
    up = lattice(["2.", ".3"])    # (0,0) -> (1,1): the (t+1, l+1) diagonal
    down = lattice([".2", "3."])  # (0,1) -> (1,0): the (t+1, l-1) diagonal
    assert rows(av.avalanche_table(up, adjacency="von_neumann")) == [(0, 2, 1, 1, 1, 0, 0), (0, 3, 1, 1, 1, 1, 1)]
    # joined: 2 + 3 = 5 spikes, 2 sites, tokens 0..1, layers 0..1
    assert rows(av.avalanche_table(up, adjacency="causal")) == [(0, 5, 2, 2, 2, 0, 0)]
    assert rows(av.avalanche_table(down, adjacency="causal")) == [(0, 2, 1, 1, 1, 0, 1), (0, 3, 1, 1, 1, 1, 0)]
    assert rows(av.avalanche_table(down, adjacency="moore")) == [(0, 5, 2, 2, 2, 0, 0)]


def test_empty_lattices_give_defined_results_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any 0/0 RuntimeWarning fails the test
        for empty, valid in [
            (np.zeros((2, 5, 3), int), None),                   # nothing spikes
            (np.ones((2, 5, 3), int), np.zeros((2, 5), bool)),  # everything masked
            (np.zeros((0, 5, 3), int), None),                   # no sequences
        ]:
            t = av.avalanche_table(empty, valid, adjacency="von_neumann")
            assert len(t) == 0 and list(t.columns) == list(av.TABLE_COLUMNS)
            assert all(dtype == np.int64 for dtype in t.dtypes)
            labels, k = av.label_avalanches(av.occupancy(empty, valid), "von_neumann")
            assert k == 0 and labels.dtype == np.int32 and not labels.any()
            assert math.isnan(av.chi_perc(t))
            s = av.summarise(empty, valid, adjacency="moore")
            assert s["n_avalanches"] == 0
            assert all(math.isnan(s[k]) for k in ("b_time", "b_depth", "b_diag", "b_tot", "chi_fano", "chi_perc"))
            assert np.isnan(s["b_time_per_layer"]).all() and np.isnan(s["b_depth_per_layer"]).all()
            assert len(s["occupancy_per_layer"]) == 3
        # a single token: no (t, t+1) pairs, so b_time and b_diag are NaN; depth pairs exist
        b = av.branching(np.ones((2, 1, 3), bool))
        assert math.isnan(b["b_time"]) and math.isnan(b["b_diag"]) and b["b_depth"] == 1.0


def test_full_single_and_border_lattices():
    full = np.ones((1, 4, 3), int)
    assert rows(av.avalanche_table(full, adjacency="von_neumann")) == [(0, 12, 12, 4, 3, 0, 0)]  # 4 x 3 sites of 1 spike
    b = av.branching(full > 0)
    assert (b["b_time"], b["b_depth"], b["b_diag"], b["b_tot"]) == (1.0, 1.0, 1.0, 2.0)
    single = np.zeros((1, 4, 3), int)
    single[0, 2, 1] = 5
    for adj in av.ADJACENCIES:
        assert rows(av.avalanche_table(single, adjacency=adj)) == [(0, 5, 1, 1, 1, 2, 1)]
    # a ring along all four borders of a 4x4 lattice is one component touching every edge:
    # 16 - 4 inner sites = 12 sites of 2 spikes -> size 24
    ring = np.full((1, 4, 4), 2)
    ring[0, 1:3, 1:3] = 0
    for adj in av.ADJACENCIES:
        assert rows(av.avalanche_table(ring, adjacency=adj)) == [(0, 24, 12, 4, 4, 0, 0)]
    # the four corners alone touch all borders and stay four separate components under every adjacency
    corners = np.zeros((1, 4, 4), int)
    corners[0, [0, 0, 3, 3], [0, 3, 0, 3]] = 1
    for adj in av.ADJACENCIES:
        assert rows(av.avalanche_table(corners, adjacency=adj)) == [
            (0, 1, 1, 1, 1, 0, 0), (0, 1, 1, 1, 1, 0, 3), (0, 1, 1, 1, 1, 3, 0), (0, 1, 1, 1, 1, 3, 3)]


def test_sequences_never_merge():
    A = np.zeros((2, 3, 2), int)
    A[0, 2, :] = 1  # last token of sequence 0
    A[1, 0, :] = 1  # first token of sequence 1: adjacent in memory, not in the lattice
    for adj in av.ADJACENCIES:
        t = av.avalanche_table(A, adjacency=adj)
        assert rows(t) == [(0, 2, 2, 1, 2, 2, 0), (1, 2, 2, 1, 2, 0, 0)]
        labels, k = av.label_avalanches(A > 0, adj)
        assert k == 2 and set(np.unique(labels[0])) == {0, 1} and set(np.unique(labels[1])) == {0, 2}
    # identical fully occupied sequences: one component each, not one across the batch
    assert rows(av.avalanche_table(np.ones((3, 2, 2), int), adjacency="moore")) == [
        (0, 4, 4, 2, 2, 0, 0), (1, 4, 4, 2, 2, 0, 0), (2, 4, 4, 2, 2, 0, 0)]


def test_masked_first_token_splits_a_component():
    A = lattice([
        "111",  # t=0 (BOS): the only bridge between layer 0 and layer 2
        "1.1",  # t=1
        "1.1",  # t=2
    ])
    assert rows(av.avalanche_table(A, adjacency="von_neumann")) == [(0, 7, 7, 3, 3, 0, 0)]
    valid = np.array([[False, True, True]])
    # without t=0: two columns of 2 sites each, tokens 1..2, layers 0 and 2
    assert rows(av.avalanche_table(A, valid, adjacency="von_neumann")) == [(0, 2, 2, 2, 1, 1, 0), (0, 2, 2, 2, 1, 1, 2)]
    assert not av.occupancy(A, valid)[0, 0].any()
    assert av.occupancy(A, valid.tolist()).dtype == bool  # lists and int masks are accepted


def test_valid_mask_removes_sites():
    A = lattice(["1", "1", "1"])  # one column, tokens 0..2
    valid = np.array([[True, False, True]])
    assert rows(av.avalanche_table(A, valid, adjacency="von_neumann")) == [(0, 1, 1, 1, 1, 0, 0), (0, 1, 1, 1, 1, 2, 0)]
    assert av.chi_fano(np.stack([A[0], 2 * A[0]]), np.array([[True, False, True]] * 2)) == pytest.approx(
        # Y = [1 + 1, 2 + 2] = [2, 4]: mean 3, sample variance (1 + 1) / 1 = 2 -> 2/3
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
    # per layer: b_time[0] = 1/2 ((0,0)->(1,0) yes, (1,0)->(2,0) no), b_time[1] = 0/1 ((0,1)->(1,1) no),
    # b_time[2] = 0/0 -> NaN (layer 2 is occupied only at the last token)
    np.testing.assert_allclose(b["b_time_per_layer"], [0.5, 0.0, np.nan])
    # b_depth[0] = 1/2 ((0,0) yes, (1,0) no), b_depth[1] = 1/2 ((0,1) no, (2,1) yes), b_depth[2] = NaN
    np.testing.assert_allclose(b["b_depth_per_layer"], [0.5, 0.5, np.nan])


def test_b_diag_follows_only_the_forward_diagonal():
    up = lattice(["1.", ".1"]) > 0    # (0,0) -> (1,1)
    down = lattice([".1", "1."]) > 0  # (0,1) -> (1,0): not a (t+1, l+1) pair
    # denominator: occupied sites with t < 1 and l < 1, i.e. (0,0): 1 in `up`, 0 in `down`
    assert av.branching(up)["b_diag"] == 1.0  # 1 / 1
    assert math.isnan(av.branching(down)["b_diag"])  # 0 / 0
    assert av.branching(lattice(["1.", "11"]) > 0)["b_diag"] == 1.0  # (0,0) -> (1,1) yes: 1 / 1
    assert av.branching(lattice(["11", "1."]) > 0)["b_diag"] == 0.0  # (0,0) -> (1,1) no: 0 / 1


def test_branching_pools_over_sequences():
    X = np.stack([lattice(["1", "1"])[0], lattice(["1", "."])[0]]) > 0  # two sequences, one layer
    # seq 0: (0,0)->(1,0) yes; seq 1: (0,0)->(1,0) no -> 1 of 2; the pair never crosses sequences
    b = av.branching(X)
    assert b["b_time"] == 0.5 and math.isnan(b["b_depth"])  # L = 1: no depth pairs


def test_chi_fano_by_hand():
    A = np.zeros((3, 2, 1), int)
    A[:, 1, 0] = [1, 2, 6]  # Y = [1, 2, 6]: mean 3, sample variance ((4 + 1 + 9) / 2) = 7
    assert av.chi_fano(A) == pytest.approx(7 / 3)
    assert math.isnan(av.chi_fano(A[:1]))  # one sequence: no sample variance
    assert math.isnan(av.chi_fano(np.zeros((3, 2, 1), int)))  # mean 0


def test_chi_perc_by_hand():
    # sequence 0: clusters of 3, 2, 1 sites; sequence 1: clusters of 4 and 2 sites
    t = pd.DataFrame({"seq": [0, 0, 0, 1, 1], "n_sites": [3, 2, 1, 4, 2]}, index=[7, 7, 8, 9, 9])
    # drop each sequence's largest (3 and 4): left 2, 1, 2 -> (4 + 1 + 4) / (2 + 1 + 2) = 9 / 5
    assert av.chi_perc(t) == pytest.approx(9 / 5)  # (any index, duplicates included)
    assert math.isnan(av.chi_perc(t.iloc[[0, 3]]))  # one cluster per sequence: nothing left


def test_chi_perc_from_a_lattice():
    A = lattice(
        ["11.1", "....", "1..."],  # seq 0: clusters of 2, 1, 1 sites
        ["1111", "....", "..99"],  # seq 1: clusters of 4 and 2 sites (size counts spikes, s counts sites)
    )
    # drop 2 (seq 0) and 4 (seq 1): left 1, 1, 2 -> (1 + 1 + 4) / (1 + 1 + 2) = 6 / 4
    assert av.chi_perc(av.avalanche_table(A, adjacency="von_neumann")) == pytest.approx(6 / 4)
    # ties: one token "11.11" holds two clusters of 2 sites; exactly one is dropped -> 2^2 / 2 = 2
    assert av.chi_perc(av.avalanche_table(lattice(["11.11"]), adjacency="von_neumann")) == pytest.approx(2.0)


def test_summarise_by_hand_and_json():
    A = lattice(
        ["32", "1.", ".1"],
        ["..", "1.", "11"],
    )
    valid = np.array([[False, True, True], [False, True, True]])  # first token masked
    s = av.summarise(A, valid, adjacency="von_neumann")
    # valid occupied sites: seq 0 {(1,0), (2,1)}, seq 1 {(1,0), (2,0), (2,1)}; 4 valid token sites
    # layer 0: (0,1,0), (1,1,0), (1,2,0) = 3/4; layer 1: (0,2,1), (1,2,1) = 2/4
    assert s["occupancy_per_layer"] == [0.75, 0.5]
    # avalanches: seq 0 {(1,0)}, {(2,1)}; seq 1 {(1,0), (2,0), (2,1)} -> 3
    assert s["n_avalanches"] == 3
    # b_time: X[t<2] occupied = (0,1,0), (1,1,0); next token: (0,2,0) no, (1,2,0) yes -> 1/2
    assert s["b_time"] == 0.5 and s["b_time_per_layer"][0] == 0.5 and math.isnan(s["b_time_per_layer"][1])
    # b_depth: layer-0 occupied (0,1,0), (1,1,0), (1,2,0); layer 1 above: no, no, yes -> 1/3
    assert s["b_depth"] == pytest.approx(1 / 3)
    # chi_fano: Y = [1 + 1, 1 + 1 + 1] = [2, 3]: mean 2.5, var 0.5 -> 0.2
    assert s["chi_fano"] == pytest.approx(0.2)
    # chi_perc: drop seq 0's first 1-site cluster and seq 1's 3-site cluster: left [1] -> 1
    assert s["chi_perc"] == 1.0
    json.loads(json.dumps(s))  # plain Python types only (NaN is allowed by the json module)


@pytest.mark.parametrize("adjacency", av.ADJACENCIES)
@pytest.mark.parametrize("density", [0.1, 0.3, 0.5, 0.7])
def test_table_matches_a_flood_fill(adjacency, density):
    rng = np.random.default_rng(int(density * 100))
    for _ in range(5):
        A = (rng.random((4, 17, 9)) < density) * rng.integers(1, 4, (4, 17, 9))
        valid = rng.random((4, 17)) < 0.9
        t = av.avalanche_table(A, valid, adjacency=adjacency)
        assert sorted(rows(t)) == flood_fill_table(A, valid, adjacency)
        assert list(t["seq"]) == sorted(t["seq"])  # label order is raster order: sequences in turn


@pytest.mark.parametrize("adjacency,p_c", [
    ("von_neumann", 0.592746),  # square lattice, site percolation
    ("moore", 0.407254),        # square lattice with next-nearest neighbours (matching lattice: 1 - 0.592746)
    ("causal", 0.5),            # one diagonal added = triangular lattice, p_c = 1/2 exactly
])
def test_chi_perc_peaks_at_the_site_percolation_threshold(adjacency, p_c):
    """On iid open-boundary lattices the mean finite-cluster size peaks at p_c up to a finite-size shift.

    The shift scales as Lside^(-1/nu) = 256^(-3/4) ~ 0.016 (nu = 4/3). With open boundaries edge
    sites have fewer neighbours, so the peak sits at or slightly ABOVE p_c: over seeds 0-7 of
    32 x 256 x 256 lattices it fell at p_c + 0.00 .. 0.02 for all three adjacencies (and 0.00 .. 0.03
    for 20 x 128 x 128, too close to a 0.03 tolerance). We allow 0.025 on a 0.01 grid: two grid steps
    plus slack, yet far below the ~0.09 gaps between the three thresholds, so a wrong adjacency fails.
    """
    rng = np.random.default_rng(0)
    grid = p_c + 0.01 * np.arange(-5, 6)
    chi = [av.chi_perc(av.avalanche_table((rng.random((32, 256, 256)) < p).astype(np.int8), adjacency=adjacency))
           for p in grid]
    peak = grid[int(np.argmax(chi))]
    assert abs(peak - p_c) <= 0.025, (peak, dict(zip(np.round(grid, 3), np.round(chi, 1))))


def test_bad_input():
    A = np.zeros((1, 3, 2), int)
    for call in (lambda: av.avalanche_table(A, adjacency="hex"), lambda: av.label_avalanches(A > 0, "Moore"),
                 lambda: av.summarise(A, None, adjacency="hex")):
        with pytest.raises(ValueError, match="unknown adjacency .*von_neumann, moore, causal"):
            call()
    for call in (lambda v: av.avalanche_table(A, v, adjacency="von_neumann"), lambda v: av.occupancy(A, v),
                 lambda v: av.chi_fano(A, v), lambda v: av.summarise(A, v, adjacency="von_neumann")):
        with pytest.raises(ValueError, match=r"valid has shape \(1, 4\), expected \(1, 3\)"):
            call(np.ones((1, 4), bool))
    for call in (lambda X: av.avalanche_table(X, adjacency="von_neumann"), av.occupancy, av.chi_fano,
                 lambda X: av.label_avalanches(X, "von_neumann"), av.branching):
        with pytest.raises(ValueError, match=r"3-D \[N, T, L\], got shape \(3, 2\)"):
            call(np.zeros((3, 2), int))
    with pytest.raises(ValueError, match="integer spike counts"):
        av.avalanche_table(np.full((1, 2, 2), 1.5), adjacency="von_neumann")
