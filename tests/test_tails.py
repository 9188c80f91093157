"""Tail diagnostics against known answers: synthetic laws, the ``powerlaw`` package, hand formulas.

Every test is seeded. The slow reference (one ``powerlaw.Fit`` per data set) is only run on small
cases; the statistical checks use sample sizes where a correct estimator passes by a wide margin.
"""

import dataclasses
import warnings

import numpy as np
import powerlaw
import pytest
from scipy.special import zeta

from avalanche_nb import tails

ALPHA_RANGE = (1.01, 6.0)  # the params default


# ----------------------------------------------------------------------------- helpers


def power_law(seed: int, alpha: float, xmin: int, n: int) -> np.ndarray:
    return tails.sample_discrete_power_law(np.random.default_rng(seed), alpha, xmin, n)


def discrete_exponential(seed: int, scale: float, n: int) -> np.ndarray:
    return np.ceil(np.random.default_rng(seed).exponential(scale, n))


def reference_fit(x: np.ndarray, alpha_range=ALPHA_RANGE, xmin=None) -> tuple[float, float, float]:
    """(alpha, xmin, D) straight from ``powerlaw.Fit`` (its own chatter silenced)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        fit = powerlaw.Fit(np.asarray(x, float), discrete=True, xmin=xmin,
                           parameter_ranges={"alpha": alpha_range}, verbose=0)
    return float(fit.alpha), float(fit.xmin), float(fit.D)


def xmin_window(x: np.ndarray, xmin_min: float | None, xmin_max: float | None) -> tuple[float, float] | None:
    """powerlaw's ``xmin=(lo, hi)`` that keeps the candidates in ``[xmin_min, xmin_max]``.

    Written out here rather than taken from ``tails``: powerlaw takes the distinct values in
    ``[lo, hi)`` and drops the largest, so ``lo`` is xmin_min itself and ``hi`` the second
    distinct value above xmin_max (the largest value when there is no upper bound).
    """
    if xmin_min is None and xmin_max is None:
        return None
    u = np.unique(x)
    lo = u[0] if xmin_min is None else xmin_min
    hi = u[-1] if xmin_max is None else u[u > xmin_max][1]
    return float(lo), float(hi)


# ----------------------------------------------------------------------------- sampler, fit


def test_sampler_matches_the_zeta_pmf_within_binomial_error():
    n, a = 10_000, 2.5
    x = power_law(0, a, 1, n)
    assert x.dtype == np.int64 and x.min() >= 1
    for k in (1, 2, 3):
        p = k**-a / zeta(a)  # Riemann zeta from scipy, independent of the sampler's tail search
        assert abs(np.mean(x == k) - p) < 4 * np.sqrt(p * (1 - p) / n), k
    # the tail, and a lower bound xmin > 1: P(X >= k) = zeta(a, k) / zeta(a, xmin)
    y = power_law(1, a, 5, n)
    assert y.min() == 5
    for k in (6, 20, 100):
        p = zeta(a, k) / zeta(a, 5)
        assert abs(np.mean(y >= k) - p) < 4 * np.sqrt(p * (1 - p) / n), k


def test_sampler_caps_at_kmax():
    x = tails.sample_discrete_power_law(np.random.default_rng(0), 1.2, 1, 5000, kmax=1000)
    p_cap = zeta(1.2, 1000) / zeta(1.2, 1)  # all mass at and beyond the cap lands on it
    assert x.max() == 1000
    assert abs(np.mean(x == 1000) - p_cap) < 4 * np.sqrt(p_cap * (1 - p_cap) / 5000)


@pytest.mark.parametrize("alpha, xmin, size, kmax, match", [
    (1.0, 1, 10, 1e12, "alpha"),  # zeta(1, xmin) diverges: the first guess divided by zero
    (0.8, 1, 10, 1e12, "alpha"),  # every draw landed on the cap
    (np.nan, 1, 10, 1e12, "alpha"),
    (2.5, 2.5, 10, 1e12, "xmin"),  # draws below xmin came back
    (2.5, 0, 10, 1e12, "xmin"),
    (2.5, np.inf, 10, 1e12, "xmin"),
    (2.5, 5, -1, 1e12, "size"),
    (2.5, 5, 2.5, 1e12, "size"),
    (2.5, 5, 10, 4, "kmax"),
])
def test_sampler_rejects_bad_arguments(alpha, xmin, size, kmax, match):
    with pytest.raises(ValueError, match=match):
        tails.sample_discrete_power_law(np.random.default_rng(0), alpha, xmin, size, kmax)


def test_sampler_takes_a_whole_float_xmin():
    as_int = tails.sample_discrete_power_law(np.random.default_rng(0), 2.5, 5, 500)
    np.testing.assert_array_equal(tails.sample_discrete_power_law(np.random.default_rng(0), 2.5, 5.0, 500),
                                  as_int)
    assert as_int.min() >= 5
    assert tails.sample_discrete_power_law(np.random.default_rng(0), 2.5, 5, 0).shape == (0,)


def test_fit_power_law_recovers_alpha():
    out = tails.fit_power_law(power_law(2, 2.5, 1, 10_000), alpha_range=ALPHA_RANGE)
    assert out["reason"] is None
    assert abs(out["alpha"] - 2.5) < 0.05
    assert out["xmin"] <= 3 and out["n_tail"] > 5000


def test_fit_power_law_drops_non_finite_and_non_positive_sizes():
    x = power_law(3, 2.5, 1, 2000).astype(float)
    dirty = np.r_[x, [np.nan, np.inf, 0.0, -4.0]]
    fit = lambda v: tails.fit_power_law(v, alpha_range=ALPHA_RANGE)
    assert fit(dirty) == fit(x)


def test_non_whole_sizes_give_nan_and_a_reason():
    x = np.r_[power_law(3, 2.5, 1, 2000), 2.5]
    out = tails.fit_power_law(x, alpha_range=ALPHA_RANGE)
    assert np.isnan(out["alpha"]) and "whole numbers" in out["reason"]
    one = tails.fit_tail(x, alpha_range=ALPHA_RANGE, gof_draws=5, seed=0)
    assert np.isnan(one.alpha) and one.xmin is None and "whole numbers" in one.reasons["alpha"]
    assert "whole numbers" in one.reasons["p_value"]


def test_fit_power_law_flags_the_fallback_when_every_fit_is_at_the_range_edge():
    # true alpha 3.5 outside (1.01, 2): every candidate sits at the bound, powerlaw falls back
    out = tails.fit_power_law(power_law(4, 3.5, 1, 1000), alpha_range=(1.01, 2.0))
    assert np.isfinite(out["alpha"]) and "fell back" in out["reason"]


# ----------------------------------------------------------------------------- replica vs powerlaw


def _replica_cases():
    rng = np.random.default_rng(10)
    mixed = np.r_[rng.integers(1, 30, 400), power_law(11, 2.7, 30, 400)]
    pl, expo = power_law(12, 2.5, 1, 1500), discrete_exponential(14, 5.0, 1000)
    return {  # data, alpha_range, xmin_min, xmin_max
        "power law": (pl, ALPHA_RANGE, None, None),
        "shallow power law": (power_law(13, 1.5, 1, 800), ALPHA_RANGE, None, None),
        "lognormal integers": (np.ceil(rng.lognormal(1.0, 1.2, 1000)), ALPHA_RANGE, None, None),
        "exponential integers": (expo, ALPHA_RANGE, None, None),
        "xmin >= 10, direct CSN estimate": (power_law(15, 2.2, 10, 800), ALPHA_RANGE, None, None),
        "xmin >= 10, steep (Nelder-Mead)": (power_law(16, 4.0, 12, 800), ALPHA_RANGE, None, None),
        "xmin_max": (mixed, ALPHA_RANGE, None, 20.0),
        "xmin_min": (pl, ALPHA_RANGE, 4.5, None),  # between data values on purpose
        "xmin_min and xmin_max": (expo, ALPHA_RANGE, 8.5, 12.0),
        "narrow range": (mixed, (1.5, 3.5), None, None),
        "all fits at the edge": (power_law(17, 3.5, 1, 600), (1.01, 2.0), None, None),
    }


@pytest.mark.parametrize("name", list(_replica_cases()))
def test_fast_discrete_fit_equals_powerlaw_fit(name):
    x, alpha_range, xmin_min, xmin_max = _replica_cases()[name]
    alpha, xmin, d = reference_fit(x, alpha_range, xmin_window(x, xmin_min, xmin_max))
    fast = tails.fast_discrete_fit(x, alpha_range=alpha_range, xmin_min=xmin_min, xmin_max=xmin_max)
    assert fast["xmin"] == xmin
    assert fast["alpha"] == pytest.approx(alpha, rel=1e-9, abs=0)
    assert fast["ks"] == pytest.approx(d, rel=1e-9, abs=0)
    assert fast["n_tail"] == np.sum(x >= xmin)
    assert (xmin_max is None or xmin <= xmin_max) and (xmin_min is None or xmin >= xmin_min)


def test_replica_cases_reach_the_branches_they_name():
    cases = _replica_cases()
    x, _, _, _ = cases["xmin >= 10, direct CSN estimate"]
    fit = tails.fast_discrete_fit(x, alpha_range=ALPHA_RANGE)
    tail = x[x >= fit["xmin"]]
    assert fit["xmin"] >= 10
    assert fit["alpha"] == pytest.approx(1 + tail.size / np.sum(np.log(tail / (fit["xmin"] - 0.5))),
                                         rel=1e-12)  # CSN eq. 3.7, no numerical fit
    x, _, _, _ = cases["xmin >= 10, steep (Nelder-Mead)"]
    fit = tails.fast_discrete_fit(x, alpha_range=ALPHA_RANGE)
    assert fit["xmin"] >= 10 and fit["alpha"] > 3
    x, _, _, xmin_max = cases["xmin_max"]
    assert tails.fast_discrete_fit(x, alpha_range=ALPHA_RANGE)["xmin"] > xmin_max  # the restriction binds
    x, _, xmin_min, _ = cases["xmin_min"]
    assert tails.fast_discrete_fit(x, alpha_range=ALPHA_RANGE)["xmin"] < xmin_min  # this one too
    x, _, xmin_min, xmin_max = cases["xmin_min and xmin_max"]
    assert tails.fast_discrete_fit(x, alpha_range=ALPHA_RANGE)["xmin"] > xmin_max  # both bind:
    assert tails.fast_discrete_fit(x, alpha_range=ALPHA_RANGE, xmin_max=xmin_max)["xmin"] < xmin_min
    x, alpha_range, _, _ = cases["all fits at the edge"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert powerlaw.Fit(x, discrete=True, parameter_ranges={"alpha": alpha_range},
                            verbose=0).noise_flag


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (isinstance(a[k], float) and np.isnan(a[k]) and np.isnan(b[k]))
                                        for k in a)


def _scan_cases():
    """The replica cases, avalanche-like sizes (power law with a cutoff, as on a finite lattice), geometric
    durations and a few windows."""
    rng = np.random.default_rng(19)
    cases = {name: case for name, case in _replica_cases().items()}
    for i in range(6):
        s = power_law(40 + i, rng.uniform(1.4, 2.6), 1, 3000)
        cases[f"cutoff {i}"] = (s[rng.random(s.size) < np.exp(-s / rng.uniform(30, 1000))], ALPHA_RANGE, None, None)
    cases["geometric durations"] = (rng.geometric(0.15, 2500), ALPHA_RANGE, None, None)
    cases["cutoff, window"] = (cases["cutoff 0"][0], ALPHA_RANGE, 2.0, 30.0)
    return cases


@pytest.mark.parametrize("name", list(_scan_cases()))
def test_fit_power_law_equals_the_whole_powerlaw_scan(name):
    """The pruned xmin scan (replica ranks the candidates, powerlaw fits those that can win) gives
    ``powerlaw.Fit``'s numbers to the last bit, likelihood ratios and reasons included (the
    edge case falls back to the whole scan)."""
    x, alpha_range, xmin_min, xmin_max = _scan_cases()[name]
    kw = dict(alpha_range=alpha_range, xmin_min=xmin_min, xmin_max=xmin_max)
    assert _same(tails.fit_power_law(x, **kw), tails._fit_with_powerlaw(x, **kw))
    no_ratios = tails.fit_power_law(x, compare=False, **kw)
    assert _same({k: v for k, v in no_ratios.items() if not k.startswith(("lr_", "p_"))},
                 {k: v for k, v in tails._fit_with_powerlaw(x, **kw).items() if not k.startswith(("lr_", "p_"))})
    assert all(np.isnan(no_ratios[k]) for k in ("lr_lognormal", "p_lognormal", "lr_exponential", "p_exponential"))


def test_replica_equals_powerlaw_on_every_candidate():
    """What the pruned scan leans on: the replica's alpha, validity and KS of *every* xmin candidate equal
    powerlaw's own scan to the last bit (not only at the chosen xmin)."""
    for name in ("power law", "lognormal integers", "xmin >= 10, steep (Nelder-Mead)", "cutoff 1"):
        x, alpha_range, _, _ = _scan_cases()[name]
        x = np.sort(np.asarray(x, float))
        b = tails._Batch([x], None, None)
        with np.errstate(all="ignore"):
            alpha, valid = tails._fit_alphas(b, *alpha_range)
            ks = tails._ks(b, np.arange(alpha.size), alpha, (alpha > alpha_range[0]) & (alpha < alpha_range[1]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = powerlaw.Fit(x, discrete=True, parameter_ranges={"alpha": alpha_range}, verbose=0).xmin_fitting_results
        assert np.array_equal(b.xmin, ref["xmins"]) and np.array_equal(valid, ref["valid_fits"]), name
        assert np.array_equal(alpha, ref["alphas"]) and np.array_equal(ks, ref["distances"]), name


def test_scan_falls_back_when_it_cannot_vouch_for_the_winner():
    x, alpha_range, _, _ = _replica_cases()["all fits at the edge"]
    assert tails._scan_xmin(np.sort(x.astype(float)), alpha_range, None, None) is None  # no valid candidate
    assert tails._scan_xmin(np.array([1.0, 2, 3]), ALPHA_RANGE, None, None) is None  # one candidate


def test_fast_discrete_fit_agrees_with_fit_power_law():
    x = np.ceil(np.random.default_rng(18).lognormal(1.5, 1.0, 800))
    slow = tails.fit_power_law(x, alpha_range=ALPHA_RANGE, xmin_max=8)
    fast = tails.fast_discrete_fit(x, alpha_range=ALPHA_RANGE, xmin_max=8)
    assert fast == {k: slow[k] for k in fast}


# ----------------------------------------------------------------------------- bootstrap p-value


@pytest.mark.parametrize("x, xmin_min, xmin_max", [
    (power_law(20, 2.2, 1, 300), None, None),
    # body below xmin is resampled, xmin restricted: the other branches of the synthetic sets
    (np.r_[np.random.default_rng(21).integers(1, 8, 150), power_law(22, 2.5, 8, 250)], None, 12.0),
    (np.r_[np.random.default_rng(21).integers(1, 8, 150), power_law(22, 2.5, 8, 250)], 3.0, 12.0),
])
def test_gof_pvalue_equals_the_naive_loop(x, xmin_min, xmin_max):
    kw = dict(gof_draws=20, seed=5, alpha_range=ALPHA_RANGE, xmin_min=xmin_min, xmin_max=xmin_max)
    fast, naive = tails.gof_pvalue(x, **kw), tails.naive_gof_pvalue(x, **kw)
    assert fast["p_value"] == naive["p_value"]
    assert fast == tails.gof_pvalue(x, **kw, batch=3)
    assert 0 < fast["p_value"] < 1  # a p-value of 0 or 1 would make the equality trivial
    # the fit each p-value tests: replica and powerlaw agree
    assert fast["xmin"] == naive["xmin"] and fast["n_tail"] == naive["n_tail"]
    assert fast["alpha"] == pytest.approx(naive["alpha"], rel=1e-9)
    assert fast["ks"] == pytest.approx(naive["ks"], rel=1e-9)


def test_synthetic_sets_are_the_csn_semi_parametric_bootstrap():
    # the stream shared by the fast and the naive p-value, so their equality cannot check it
    rng = np.random.default_rng(23)
    x = np.sort(np.r_[rng.integers(1, 8, 300), power_law(24, 2.5, 8, 200)]).astype(float)
    sets = list(tails._synthetic_sets(np.random.default_rng(0), x, 2.5, 8.0, 200))
    assert all(s.size == x.size and s.dtype == np.int64 for s in sets)
    pooled = np.concatenate(sets)
    body, tail = pooled[pooled < 8], pooled[pooled >= 8]
    assert set(np.unique(body)) <= set(np.unique(x[x < 8]))
    p_tail, n = 200 / 500, pooled.size  # tail share of the data, binomial per set
    assert abs(tail.size / n - p_tail) < 4 * np.sqrt(p_tail * (1 - p_tail) / n)
    p8 = 8**-2.5 / zeta(2.5, 8)  # tail drawn from the fitted law above xmin
    assert abs(np.mean(tail == 8) - p8) < 4 * np.sqrt(p8 * (1 - p8) / tail.size)
    # body resampled from the data below xmin (uniform on 1..7 here)
    assert abs(np.mean(body == 1) - np.mean(x[x < 8] == 1)) < 0.01


def test_gof_pvalue_is_roughly_uniform_on_power_law_data():
    # under the null p is about uniform: 20 sets give P(p > 0.1) ~ 0.9 each
    ps = np.array([tails.gof_pvalue(power_law(100 + s, 2.5, 1, 500), gof_draws=100, seed=s,
                                    alpha_range=ALPHA_RANGE)["p_value"] for s in range(20)])
    assert np.sum(ps > 0.1) >= 15, ps
    assert 0.3 < ps.mean() < 0.7, ps


def test_gof_pvalue_rejects_discretised_exponential_data():
    # xmin is kept in the body: with a free xmin the KS search walks out to a short tail
    # (tens of points) where an exponential is indistinguishable from a steep power law
    ps = [tails.gof_pvalue(discrete_exponential(200 + s, 10.0, 500), gof_draws=50, seed=s,
                           alpha_range=ALPHA_RANGE, xmin_max=5)["p_value"] for s in range(5)]
    assert max(ps) < 0.05, ps


def test_likelihood_ratio_sign():
    pl = tails.fit_power_law(power_law(30, 2.5, 1, 2000), alpha_range=ALPHA_RANGE)
    assert pl["lr_exponential"] > 0 and pl["p_exponential"] < 0.01
    ex = tails.fit_power_law(discrete_exponential(31, 10.0, 2000), alpha_range=ALPHA_RANGE, xmin_max=5)
    assert ex["lr_exponential"] < 0 and ex["p_exponential"] < 0.01


# ----------------------------------------------------------------------------- the one call


def test_fit_tail_is_the_fit_plus_the_pvalue_with_the_same_settings():
    x = power_law(80, 2.5, 1, 1000)
    one = tails.fit_tail(x, alpha_range=ALPHA_RANGE, gof_draws=30, seed=4)
    fit = tails.fit_power_law(x, alpha_range=ALPHA_RANGE)
    gof = tails.gof_pvalue(x, gof_draws=30, seed=4, alpha_range=ALPHA_RANGE)
    for k in tails.FIT_KEYS:
        assert getattr(one, k) == fit[k], k
    assert one.p_value == gof["p_value"] and 0 < one.p_value < 1
    assert one.reasons == {} and one.warning is None
    assert (one.alpha_range, one.xmin_min, one.xmin_max, one.gof_draws, one.seed) == (ALPHA_RANGE, None, None, 30, 4)
    assert one.n == x.size
    assert list(one.row()) == list(tails.TAIL_COLUMNS)


def test_fit_tail_xmin_and_n_tail_are_python_ints():
    one = tails.fit_tail(power_law(81, 2.5, 1, 500), alpha_range=ALPHA_RANGE, gof_draws=0, seed=0)
    assert type(one.xmin) is int and type(one.n_tail) is int and type(one.n) is int
    assert all(type(getattr(one, k)) is float for k in tails.TAIL_COLUMNS if k not in ("xmin", "n_tail"))
    assert one.row()["xmin"] == float(one.xmin) and one.row()["n_tail"] == float(one.n_tail)


def test_fit_tail_alpha_se_by_hand():
    # xmin >= 10 with CSN eq. 3.7 in (1.5, 3]: powerlaw takes that estimate as alpha, so the
    # whole fit is a closed formula of the tail
    x = power_law(15, 2.2, 10, 800)
    one = tails.fit_tail(x, alpha_range=ALPHA_RANGE, gof_draws=0, seed=0)
    tail = x[x >= one.xmin]
    alpha = 1 + tail.size / np.sum(np.log(tail / (one.xmin - 0.5)))
    assert one.n_tail == tail.size and one.xmin >= 10
    assert one.alpha == pytest.approx(alpha, rel=1e-12)
    assert one.alpha_se == pytest.approx((alpha - 1) / np.sqrt(tail.size), rel=1e-12)  # CSN eq. 3.2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # powerlaw's own value (sigma is deprecated)
        pl = powerlaw.Fit(x.astype(float), discrete=True, xmin=one.xmin,
                          parameter_ranges={"alpha": ALPHA_RANGE}, verbose=0).power_law
    assert one.alpha_se == pytest.approx(pl.standard_err, rel=1e-12)


def test_fit_tail_pvalue_uses_the_fits_alpha_range():
    # uniform body below 30, alpha 2.7 tail above: a range that ends at 2.5 binds (the fit moves
    # to xmin 28, alpha < 2.5) and holds the synthetic refits too, so a p-value computed with
    # the default range is a different number (0.7 vs 0.175 here)
    rng = np.random.default_rng(10)
    x = np.r_[rng.integers(1, 30, 400), power_law(11, 2.7, 30, 400)]
    narrow = (1.5, 2.5)
    one = tails.fit_tail(x, alpha_range=narrow, gof_draws=40, seed=1)
    same = tails.gof_pvalue(x, gof_draws=40, seed=1, alpha_range=narrow)
    other = tails.gof_pvalue(x, gof_draws=40, seed=1, alpha_range=ALPHA_RANGE)
    assert one.p_value == same["p_value"] and abs(same["p_value"] - other["p_value"]) > 0.2
    assert one.xmin == same["xmin"] != other["xmin"]  # the p-value tested this fit
    assert one.alpha == tails.fit_power_law(x, alpha_range=narrow)["alpha"] < 2.5
    assert one.warning is None and one.alpha_range == narrow


def test_fit_tail_pvalue_uses_the_fits_xmin_bounds():
    # discretised exponential: with xmin held in the body the power law is rejected; with a free
    # xmin the KS search walks out to a short tail where it is not (see the rejection test)
    x = discrete_exponential(200, 10.0, 500)
    one = tails.fit_tail(x, alpha_range=ALPHA_RANGE, gof_draws=40, seed=0, xmin_max=5)
    free = tails.fit_tail(x, alpha_range=ALPHA_RANGE, gof_draws=40, seed=0)
    assert one.xmin <= 5 < free.xmin
    assert one.p_value == tails.gof_pvalue(x, gof_draws=40, seed=0, alpha_range=ALPHA_RANGE,
                                           xmin_max=5)["p_value"]
    assert one.p_value < 0.05 < free.p_value
    low = tails.fit_tail(x, alpha_range=ALPHA_RANGE, gof_draws=40, seed=0, xmin_min=free.xmin + 1)
    assert low.p_value == tails.gof_pvalue(x, gof_draws=40, seed=0, alpha_range=ALPHA_RANGE,
                                           xmin_min=free.xmin + 1)["p_value"]


def test_fit_tail_respects_xmin_min():
    x = power_law(82, 2.5, 1, 3000)
    free = tails.fit_tail(x, alpha_range=ALPHA_RANGE, gof_draws=0, seed=0)
    bound = tails.fit_tail(x, alpha_range=ALPHA_RANGE, gof_draws=20, seed=0, xmin_min=6)
    assert free.xmin < 6 <= bound.xmin and bound.xmin_min == 6
    assert bound.n_tail == np.sum(x >= bound.xmin)
    alpha, xmin, _ = reference_fit(x, ALPHA_RANGE, xmin_window(x, 6, None))
    assert bound.xmin == xmin and bound.alpha == pytest.approx(alpha, rel=1e-12)
    # above every candidate: no fit, and it says why
    none = tails.fit_tail(x, alpha_range=ALPHA_RANGE, gof_draws=5, seed=0, xmin_min=x.max())
    assert none.xmin is None and "fewer than 2 xmin candidates" in none.reasons["alpha"]
    with pytest.raises(ValueError, match="xmin_min"):
        tails.fit_tail(x, alpha_range=ALPHA_RANGE, gof_draws=5, seed=0, xmin_min=10, xmin_max=5)


def test_fit_tail_skips_the_bootstrap_with_zero_draws_and_says_so():
    x = power_law(83, 2.5, 1, 500)
    skipped = tails.fit_tail(x, alpha_range=ALPHA_RANGE, gof_draws=0, seed=0)
    run = tails.fit_tail(x, alpha_range=ALPHA_RANGE, gof_draws=10, seed=0)
    assert np.isnan(skipped.p_value) and "gof_draws = 0" in skipped.reasons["p_value"]
    assert list(skipped.reasons) == ["p_value"]
    assert {k: v for k, v in skipped.row().items() if k != "p_value"} == \
        {k: v for k, v in run.row().items() if k != "p_value"}
    assert "gof_draws = 0" in tails.gof_pvalue(x, gof_draws=0, seed=0, alpha_range=ALPHA_RANGE)["reason"]
    with pytest.raises(ValueError, match="gof_draws"):
        tails.fit_tail(x, alpha_range=ALPHA_RANGE, gof_draws=-1, seed=0)


def test_fit_tail_is_frozen():
    one = tails.fit_tail(power_law(84, 2.5, 1, 200), alpha_range=ALPHA_RANGE, gof_draws=0, seed=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.alpha = 2.0
    with pytest.raises(TypeError):
        one.reasons["alpha"] = "edited"
    assert hash(one) == hash(dataclasses.replace(one))  # hashable despite the mapping field


def test_fit_tail_requires_the_params_arguments():
    x = power_law(85, 2.5, 1, 200)
    with pytest.raises(TypeError):
        tails.fit_tail(x, gof_draws=0, seed=0)  # no alpha_range default
    with pytest.raises(TypeError):
        tails.fit_tail(x, ALPHA_RANGE, 0, 0)  # keyword-only
    with pytest.raises(TypeError):
        tails.crackling(x, x, seed=0)  # no bootstrap_draws default


# ----------------------------------------------------------------------------- hand formulas


def test_continuous_fit_p80_by_hand():
    x = np.random.default_rng(40).pareto(1.5, 997) + 1.0
    xmin = np.percentile(x, 80)
    tail = x[x >= xmin]
    out = tails.continuous_fit_p80(x)
    assert out["xmin_c"] == xmin
    assert out["alpha_c"] == pytest.approx(1 + tail.size / np.sum(np.log(tail / xmin)), rel=1e-12)
    assert out["reason"] is None
    assert abs(out["alpha_c"] - 2.5) < 0.3  # continuous Pareto with alpha = 2.5


def test_predicted_gamma():
    assert tails.predicted_gamma(2.5, 3.0) == pytest.approx(2.0 / 1.5)
    assert tails.predicted_gamma(1.5, 2.0) == pytest.approx(2.0)
    for a_s, a_d in ((1.0, 2.0), (np.nan, 2.0), (2.0, np.inf), (np.inf, 2.0)):
        assert np.isnan(tails.predicted_gamma(a_s, a_d))


# ----------------------------------------------------------------------------- crackling


def crackling_data(seed: int, gamma: float = 1.5, n: int = 20_000):
    """Durations 1..100, ``size = 2 D^gamma G`` with ``G ~ Gamma(D/4, 4/D)`` (mean 1).

    ``E[size | D]`` is exactly ``2 D^gamma``, but the noise shrinks with D, so a fit of the
    geometric mean (mean log size) would give a slope near 1.67 instead.
    """
    rng = np.random.default_rng(seed)
    d = rng.integers(1, 101, n)
    return 2.0 * d**gamma * rng.gamma(d / 4, 4 / d), d


def test_crackling_by_hand():
    d = np.array([2, 3, 3, 4, 4, 4, 10, 64, 64, 65])
    s = np.array([1e6, 5.0, 7.0, 8.0, 9.0, 13.0, 40.0, 500.0, 700.0, 1e-3])
    keep = (d >= 3) & (d <= 64)  # d_range is inclusive at both ends
    u = np.unique(d[keep])
    mean = np.array([s[keep][d[keep] == v].mean() for v in u])
    slope = np.polyfit(np.log(u), np.log(mean), 1)[0]
    assert tails.crackling(s, d, bootstrap_draws=50, seed=0)["gamma"] == pytest.approx(slope, rel=1e-12)
    exact = tails.crackling(np.array([3.0, 4.0, 64.0]) ** 1.5, [3, 4, 64], bootstrap_draws=10, seed=0)
    assert exact["gamma"] == pytest.approx(1.5, rel=1e-12)


def test_crackling_recovers_gamma_with_a_covering_interval():
    s, d = crackling_data(51)
    out = tails.crackling(s, d, bootstrap_draws=500, seed=1)
    assert out["reason"] is None
    assert abs(out["gamma"] - 1.5) < 0.03  # ~4 standard errors
    assert out["gamma_lo"] < 1.5 < out["gamma_hi"]
    assert out["gamma_lo"] < out["gamma"] < out["gamma_hi"]
    assert out["gamma_hi"] - out["gamma_lo"] < 0.06


def test_crackling_interval_covers_about_95_percent():
    # 20 data sets: a 95% interval misses ~1; >= 16 hits fails only for real under-coverage
    runs = [tails.crackling(*crackling_data(500 + k), bootstrap_draws=200, seed=k) for k in range(20)]
    hits = sum(r["gamma_lo"] < 1.5 < r["gamma_hi"] for r in runs)
    assert hits >= 16, runs
    assert abs(np.mean([r["gamma"] for r in runs]) - 1.5) < 0.006  # unbiased (SE ~0.002)
    # width ~ 3.92 x the sampling SD of gamma (0.008 over 100 simulated sets): resampling
    # fewer avalanches than observed would widen it, resampling too many would narrow it
    width = np.mean([r["gamma_hi"] - r["gamma_lo"] for r in runs])
    assert 0.025 < width < 0.042, width
    # and centred on the estimate (a bootstrap of the wrong avalanches would drift off it)
    off = [abs((r["gamma_hi"] + r["gamma_lo"]) / 2 - r["gamma"]) / (r["gamma_hi"] - r["gamma_lo"])
           for r in runs]
    assert np.mean(off) < 0.08, off


def test_crackling_uses_only_d_range_and_is_reproducible():
    s, d = crackling_data(51)
    base = tails.crackling(s, d, bootstrap_draws=200, seed=2)
    assert tails.crackling(s, d, bootstrap_draws=200, seed=2) == base
    assert tails.crackling(s, d, bootstrap_draws=200, seed=3)["gamma_lo"] != base["gamma_lo"]
    # avalanches outside [3, 64], non-positive or NaN sizes are dropped before anything is drawn
    wild_s, wild_d = np.r_[s, 1e9, 1e9, -1.0, 0.0, np.nan], np.r_[d, 200, 2, 10, 10, 10]
    assert tails.crackling(wild_s, wild_d, bootstrap_draws=200, seed=2) == base
    with pytest.raises(ValueError, match="differ in length"):
        tails.crackling(s, d[:-1], bootstrap_draws=10, seed=0)


# ----------------------------------------------------------------------------- degenerate input


DEGENERATE_SIZES = {
    "empty": [],
    "three points": [1, 2, 3],
    "all equal": [5] * 100,
    "three distinct": [1, 2, 3] * 30,
    "all NaN": [np.nan] * 50,
    "NaN and few points": [np.nan] * 50 + [1, 2, 3, 4, 5],
    "non-positive": [0, -1, -2] * 20,
    "non-whole": list(range(1, 40)) + [2.5],
}


@pytest.mark.parametrize("name", list(DEGENERATE_SIZES))
def test_degenerate_sizes_give_nan_and_a_reason_without_warnings(name):
    x = np.array(DEGENERATE_SIZES[name], dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fits = [tails.fit_power_law(x, alpha_range=ALPHA_RANGE), tails.fast_discrete_fit(x, alpha_range=ALPHA_RANGE)]
        gofs = [f(x, gof_draws=5, seed=0, alpha_range=ALPHA_RANGE)
                for f in (tails.gof_pvalue, tails.naive_gof_pvalue)]
        one = tails.fit_tail(x, alpha_range=ALPHA_RANGE, gof_draws=5, seed=0)
        c80 = tails.continuous_fit_p80(x)
        crack = tails.crackling(x, np.arange(x.size) % 10 + 3, bootstrap_draws=20, seed=0)
    outs = fits + gofs + ([] if name == "non-whole" else [c80])  # the continuous fit takes any size
    for out in outs:
        assert all(np.isnan(v) for k, v in out.items() if k != "reason"), out
        assert isinstance(out["reason"], str) and out["reason"]
    if name == "non-whole":
        assert all("whole numbers" in out["reason"] for out in fits + gofs)
    assert one.xmin is None and one.n_tail is None
    assert all(np.isnan(v) for v in one.row().values())
    assert set(one.reasons) == set(tails.TAIL_COLUMNS)  # every NaN field says why
    if name in ("empty", "all NaN", "non-positive"):  # no usable size at all
        assert np.isnan(crack["gamma"]) and crack["reason"]


def test_degenerate_crackling_gives_nan_and_a_reason_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        two_durations = tails.crackling([1.0, 2.0, 3.0, 4.0], [3, 3, 4, 4], bootstrap_draws=10, seed=0)
        outside = tails.crackling(np.ones(50), np.full(50, 100), bootstrap_draws=10, seed=0)
        # only a few avalanches: replicates that lose a duration are skipped, no warning
        sparse = tails.crackling([1.0, 4.0, 9.0], [3, 4, 5], bootstrap_draws=50, seed=0)
        # no replicate keeps all 3 durations (6/27 chance each): a point estimate, no interval
        no_interval = tails.crackling([1.0, 4.0, 9.0], [3, 4, 5], bootstrap_draws=1, seed=0)
    for out in (two_durations, outside):
        assert np.isnan(out["gamma"]) and np.isnan(out["gamma_lo"]) and out["reason"]
    assert np.isfinite(sparse["gamma"]) and sparse["reason"] is None
    assert np.isfinite(no_interval["gamma"]) and np.isnan(no_interval["gamma_hi"])
    assert no_interval["reason"]


@pytest.mark.parametrize("alpha_range", [(0.5, 3.0), (1.0, 3.0), (3.0, 2.0), (2.0, 2.0),
                                         (1.5, np.inf), (np.nan, 3.0)])
def test_bad_alpha_range_raises(alpha_range):
    x = power_law(70, 2.5, 1, 100)
    for fn in (tails.fit_power_law, tails.fast_discrete_fit):
        with pytest.raises(ValueError, match="alpha_range"):
            fn(x, alpha_range=alpha_range)
    for fn in (tails.gof_pvalue, tails.naive_gof_pvalue, tails.fit_tail):
        with pytest.raises(ValueError, match="alpha_range"):
            fn(x, gof_draws=2, seed=0, alpha_range=alpha_range)
