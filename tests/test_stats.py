"""Bootstrap and McNemar against values computed by hand."""

import numpy as np
import pytest
from scipy import stats as st

from avalanche_nb.stats import bootstrap_mean_ci, bootstrap_weights, mcnemar


def test_mcnemar_on_a_known_table():
    # 10 items only A gets right, 2 only B, 5 both, 3 neither
    a = np.array([1] * 10 + [0] * 2 + [1] * 5 + [0] * 3, bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 5 + [0] * 3, bool)
    r = mcnemar(a, b)
    assert (r["n01"], r["n10"]) == (10, 2)
    assert r["p_exact"] == pytest.approx(2 * (1 + 12 + 66) / 2**12)  # 2 P(X <= 2), X ~ Bin(12, 1/2)
    assert r["chi2"] == pytest.approx(49 / 12)
    assert r["p_chi2"] == pytest.approx(st.chi2.sf(49 / 12, 1))
    assert mcnemar(b, a)["p_exact"] == r["p_exact"]


def test_mcnemar_without_discordant_pairs_is_one():
    x = np.array([1, 0, 1], bool)
    assert mcnemar(x, x) == {"n01": 0, "n10": 0, "p_exact": 1.0, "chi2": 0.0, "p_chi2": 1.0}
    with pytest.raises(ValueError):
        mcnemar(x, x[:2])


def test_bootstrap_weights_and_mean_ci():
    W = bootstrap_weights(7, 500, seed=3)
    assert W.shape == (500, 7) and (W.sum(1) == 7).all()
    assert np.array_equal(W, bootstrap_weights(7, 500, seed=3))
    x = np.r_[np.ones(60), np.zeros(40)]
    mean, lo, hi = bootstrap_mean_ci(x, 4000, seed=0)
    se = np.sqrt(0.6 * 0.4 / 100)  # binomial SE; the percentile CI is close to mean +- 1.96 SE
    assert mean == 0.6 and lo == pytest.approx(0.6 - 1.96 * se, abs=0.015) and hi == pytest.approx(0.6 + 1.96 * se, abs=0.015)
    assert bootstrap_mean_ci(np.full(5, 0.3), 100, seed=0) == pytest.approx((0.3, 0.3, 0.3))
