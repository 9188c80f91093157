"""g* rules on synthetic curves, the evidence against the sweep's own statistics, and no peeking."""

import numpy as np
import pandas as pd
import pytest

from avalanche_nb import avalanches as av
from avalanche_nb import gstar, nulls

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
    assert gstar.picks(ev) == {"seed_b_tot": 0.7, "chi_perc_max": 1.3, "delta_b_max": 0.9, "plateau": 1.3}


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
    ev = gstar.evidence(counts, valid, [0.9, 1.0, 1.1], null_draws=40, boot=30, seed=5)
    for i, c in enumerate(counts):
        X = av.occupancy(c, valid)
        assert ev.b_tot[i] == pytest.approx(av.branching(X)["b_tot"])
        assert ev.chi_perc[i] == pytest.approx(av.chi_perc(av.avalanche_table(c, valid)))
        z = nulls.null_branching(X, valid, ("n1",), k=40, seed=5)["n1"]["tot"]["z"]
        assert ev.z_tot_n1[i] == pytest.approx(z)
    assert (ev[["b_tot_se", "chi_perc_se", "z_tot_n1_se"]] > 0).all().all()


def test_evidence_se_matches_a_loop_over_resampled_sequences(lattices):
    from avalanche_nb.stats import bootstrap_weights

    counts, valid = lattices
    ev = gstar.evidence(counts[:1], valid, [1.0], null_draws=5, boot=25, seed=2)
    W = bootstrap_weights(6, 25, seed=2)
    vals = []
    for w in W:
        idx = np.repeat(np.arange(6), w)
        vals.append(av.chi_perc(av.avalanche_table(counts[0][idx], valid[idx])))
    assert ev.chi_perc_se[0] == pytest.approx(np.std(vals, ddof=1))


def test_selection_never_reads_dataset_b_or_arc(lattices, monkeypatch):
    from avalanche_nb import data, scoring, transfer

    def forbidden(*a, **k):
        raise AssertionError("the g* rule touched Dataset B or ARC")

    for mod, name in ((data, "build_slice"), (data, "load_arc"), (data, "load_documents"),
                      (scoring, "continuation_loglik"), (scoring, "window_nll"), (transfer, "signatures")):
        monkeypatch.setattr(mod, name, forbidden)
    counts, valid = lattices
    ev = gstar.evidence(counts, valid, [0.9, 1.0, 1.1], null_draws=10, boot=10)
    assert set(gstar.picks(ev)) == set(gstar.RULES)
