"""g* rules on synthetic curves, the evidence against the sweep's own statistics, and no peeking."""

import numpy as np
import pandas as pd
import pytest

from avalanche_nb import avalanches as av
from avalanche_nb import gstar, nulls
from avalanche_nb import params as P


def params(**kw):
    return P.validate(kw)

G = np.round(np.arange(0.5, 1.51, 0.1), 10)


def table(chi, chi_se=None, b=None, z=None):
    n = len(G)
    b = np.ones(n) if b is None else np.asarray(b, float)
    return pd.DataFrame({"g": G, "chi_perc": chi, "chi_perc_se": np.zeros(n) if chi_se is None else chi_se,
                         "b_tot": b, "abs_b_tot_minus_1": np.abs(b - 1),
                         "z_tot_n1": np.zeros(n) if z is None else z})


def test_rules_pick_the_expected_gain_on_synthetic_curves():
    chi = -(G - 1.3) ** 2  # peak at 1.3
    b = 1 + (G - 0.7)  # |b - 1| smallest at 0.7
    z = G * 0 + np.where(np.isclose(G, 0.9), 5.0, 1.0)  # spike at 0.9
    ev = table(chi, b=b, z=z)
    assert gstar.picks(ev) == {"seed_b_tot": 0.7, "chi_perc_max": 1.3, "z_tot_n1_max": 0.9, "plateau": 1.3}


def test_ties_go_to_the_gain_nearest_one_then_the_smaller():
    chi = np.where(np.isclose(G, 0.6) | np.isclose(G, 1.2), 3.0, 1.0)
    assert gstar.pick(table(chi), "chi_perc_max") == 1.2  # |1.2 - 1| < |0.6 - 1|
    chi = np.where(np.isclose(G, 0.8) | np.isclose(G, 1.2), 3.0, 1.0)
    assert gstar.pick(table(chi), "chi_perc_max") == 0.8  # equally near: the smaller gain
    assert gstar.pick(table(np.ones(len(G))), "chi_perc_max") == 1.0  # a flat curve keeps g = 1


def test_plateau_takes_the_gain_nearest_one_within_one_se_of_the_best():
    chi = np.array([1, 2, 3, 4, 5, 6, 6.5, 7, 7.4, 7.5, 7.45])  # best at 1.4
    se = np.full(len(G), 0.6)
    assert gstar.pick(table(chi, se), "plateau") == 1.2  # 7.0 >= 7.5 - 0.6 and nearest 1
    assert gstar.pick(table(chi, se * 0), "plateau") == 1.4  # no uncertainty: the best itself
    assert gstar.pick(table(chi, se * 100), "plateau") == 1.0  # everything within one SE


def test_nan_and_unknown_rules_fail_clearly():
    with pytest.raises(ValueError, match="undefined"):
        gstar.pick(table(np.full(len(G), np.nan)), "chi_perc_max")
    with pytest.raises(ValueError, match="unknown g\\* rule"):
        gstar.pick(table(np.ones(len(G))), "best_arc")
    chi = np.where(np.isclose(G, 1.1), np.nan, G)  # a NaN is skipped, not chosen
    assert gstar.pick(table(chi), "chi_perc_max") == 1.5


@pytest.fixture(scope="module")
def lattices():
    rng = np.random.default_rng(0)
    counts = (rng.random((3, 6, 20, 5)) < np.array([0.2, 0.3, 0.4])[:, None, None, None]) * rng.integers(1, 4, (3, 6, 20, 5))
    valid = np.ones((6, 20), bool)
    valid[:, 0] = False
    counts[:, ~valid] = 0
    return counts, valid


def test_evidence_point_values_are_the_sweeps_statistics(lattices):
    counts, valid = lattices
    ev = gstar.evidence(counts, valid, [0.9, 1.0, 1.1], params(null_draws=40, bootstrap_draws=30, seed=5))
    for i, c in enumerate(counts):
        X = av.occupancy(c, valid)
        assert ev.b_tot[i] == pytest.approx(av.branching(X)["b_tot"])
        assert ev.chi_perc[i] == pytest.approx(av.chi_perc(av.avalanche_table(c, valid, adjacency="von_neumann")))
        z = nulls.null_branching(X, valid, ("n1",), null_draws=40, seed=5)["n1"]["tot"]["z"]
        assert ev.z_tot_n1[i] == pytest.approx(z)
    assert (ev[["b_tot_se", "chi_perc_se", "z_tot_n1_se"]] > 0).all().all()


@pytest.mark.parametrize("chunk", [1, 7, 17])
def test_sequence_parts_z_equals_null_branchings_in_chunks(lattices, chunk):
    """sequence_parts makes its 40 N1 draws at once; null_branching in chunks of ``chunk`` draws."""
    counts, valid = lattices
    parts = gstar.sequence_parts(counts[1], valid, "von_neumann", null_draws=40, seed=5)
    z = gstar.criteria(parts, np.ones((1, counts.shape[1])))["z_tot_n1"][0]
    X = av.occupancy(counts[1], valid)
    nb = nulls.null_branching(X, valid, ("n1",), null_draws=40, seed=5, chunk=chunk)
    assert z == pytest.approx(nb["n1"]["tot"]["z"], rel=1e-9)


def test_the_n1_z_of_gstar_equals_null_branchings_at_a_real_lattice_shape():
    """128 sequences x 256 tokens x 30 layers with 200 draws: null_branching splits them into chunks
    (about 17 draws), gstar.sequence_parts draws all 200 at once; both must give the same N1 z."""
    rng = np.random.default_rng(0)
    valid = np.ones((128, 256), bool)
    valid[:, 0] = False
    counts = (rng.random((128, 256, 30)) < 0.05) * valid[:, :, None]
    X = av.occupancy(counts, valid)
    assert nulls._chunk_size(200, X.size, None) < 200
    nb = nulls.null_branching(X, valid, ("n1",), null_draws=200, seed=0)
    parts = gstar.sequence_parts(counts, valid, "von_neumann", null_draws=200, seed=0)
    z = gstar.criteria(parts, np.ones((1, len(counts))))["z_tot_n1"][0]
    assert z == pytest.approx(nb["n1"]["tot"]["z"], rel=1e-9)


def test_evidence_se_matches_a_loop_over_resampled_sequences(lattices):
    from avalanche_nb.stats import bootstrap_weights

    counts, valid = lattices
    ev = gstar.evidence(counts[:1], valid, [1.0], params(null_draws=5, bootstrap_draws=25, seed=2))
    W = bootstrap_weights(6, 25, seed=2)
    vals = []
    for w in W:
        idx = np.repeat(np.arange(6), w)
        vals.append(av.chi_perc(av.avalanche_table(counts[0][idx], valid[idx], adjacency="von_neumann")))
    assert ev.chi_perc_se[0] == pytest.approx(np.std(vals, ddof=1))


def test_selection_never_reads_dataset_b_or_arc(lattices, monkeypatch):
    from avalanche_nb import data, scoring, transfer

    def forbidden(*a, **k):
        raise AssertionError("the g* rule touched Dataset B or ARC")

    for mod, name in ((data, "build_slice"), (data, "load_arc"), (data, "load_documents"),
                      (scoring, "continuation_loglik"), (scoring, "window_nll"), (transfer, "evaluate")):
        monkeypatch.setattr(mod, name, forbidden)
    counts, valid = lattices
    ev = gstar.evidence(counts, valid, [0.9, 1.0, 1.1], params(null_draws=10, bootstrap_draws=10))
    assert set(gstar.picks(ev)) == set(gstar.RULES)


def synthetic_evidence(chi):
    """evidence_at(g) for a criterion curve chi(g): one row, zero SEs, b_tot and z flat."""
    def at(g):
        return pd.DataFrame({"g": [g], "chi_perc": [chi(g)], "chi_perc_se": [0.0], "b_tot": [1.0],
                             "abs_b_tot_minus_1": [0.0], "z_tot_n1": [0.0]})
    return at


def test_an_edge_pick_extends_the_search_outward_until_interior():
    chi = lambda g: -(g - 0.3) ** 2  # peak at 0.3, below the grid
    at = synthetic_evidence(chi)
    ev = pd.concat([at(g) for g in G], ignore_index=True)
    assert gstar.at_edge(ev, gstar.picks(ev))["chi_perc_max"]
    seen = []
    search = gstar.extended_search(ev, "chi_perc_max", (0.1, 3.0), lambda g: seen.append(g) or at(g))
    assert search.added == seen == [0.4, 0.3, 0.2]  # 0.2 shows 0.3 is a maximum
    assert search.gstar == 0.3 and search.outcome == "interior" and not search.at_edge["chi_perc_max"]
    assert search.evidence.g.tolist() == sorted(search.evidence.g.tolist()) and len(search.evidence) == len(G) + 3
    assert "interior optimum at g* = 0.3" in search.sentence()


def test_a_monotone_criterion_stops_at_the_limit_and_says_so():
    at = synthetic_evidence(lambda g: g)  # keeps growing with g
    ev = pd.concat([at(g) for g in G], ignore_index=True)
    search = gstar.extended_search(ev, "chi_perc_max", (0.1, 2.0), at)
    assert search.added == [1.6, 1.7, 1.8, 1.9, 2.0]
    assert search.gstar == 2.0 and search.outcome == "limit" and search.at_edge["chi_perc_max"]
    assert "monotone up to the limit" in search.sentence()


def test_an_interior_pick_adds_nothing_and_limits_are_checked():
    at = synthetic_evidence(lambda g: -(g - 1.2) ** 2)
    ev = pd.concat([at(g) for g in G], ignore_index=True)
    search = gstar.extended_search(ev, "chi_perc_max", (0.1, 3.0), lambda g: pytest.fail("nothing to add"))
    assert search.added == [] and search.gstar == 1.2 and search.outcome == "interior"
    with pytest.raises(ValueError, match="gstar_limits"):
        gstar.extended_search(ev, "chi_perc_max", (1.1, 3.0), at)


def test_the_old_rule_name_works_with_a_message_naming_the_new_one():
    chi = -(G - 1.3) ** 2
    z = np.where(np.isclose(G, 0.9), 5.0, 1.0)
    with pytest.warns(FutureWarning, match="now called 'z_tot_n1_max'"):
        assert gstar.pick(table(chi, z=z), "delta_b_max") == 0.9


def test_search_adds_gains_through_lattice_at_and_reads_nothing_else(lattices):
    counts, valid = lattices
    p = params(null_draws=10, bootstrap_draws=10, gstar_rule="chi_perc_max", gstar_limits=[0.7, 1.3],
               gains=[0.9, 1.0, 1.1])
    asked = []

    def lattice_at(g):  # a denser lattice beyond the edge: the search must find its own way
        asked.append(g)
        return counts[2]

    search = gstar.search(counts, valid, [0.9, 1.0, 1.1], p, lattice_at)
    assert asked == search.added and all(g < 0.9 or g > 1.1 for g in asked)
    on_grid = search.evidence[search.evidence.g.isin([0.9, 1.0, 1.1])].reset_index(drop=True)
    assert on_grid.equals(gstar.evidence(counts, valid, [0.9, 1.0, 1.1], p))
