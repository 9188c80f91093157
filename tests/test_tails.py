"""Tail diagnostics against known answers: synthetic laws, the ``powerlaw`` package, hand formulas.

Every test is seeded. The slow reference (one ``powerlaw.Fit`` per data set) is only run on small
cases; the statistical checks use sample sizes where a correct estimator passes by a wide margin.
"""

import warnings

import numpy as np
import powerlaw
import pytest
from scipy.special import zeta

from avalanche_nb import tails

ALPHA_RANGE = tails.DEFAULT_ALPHA_RANGE


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


def xmin_window(x: np.ndarray, xmin_max: float) -> tuple[float, float]:
    """powerlaw's ``xmin=(lo, hi)`` that keeps the candidates ``<= xmin_max``.

    Written out here rather than taken from ``tails``: powerlaw takes the distinct values in
    ``[lo, hi)`` and drops the largest, so ``hi`` is the second distinct value above xmin_max.
    """
    u = np.unique(x)
    above = u[u > xmin_max]
    return float(u[0]), float(above[1])


def branching_counts(seed: int, m: float, drive: float, n_trials: int, t_len: int,
                     burn: int = 100) -> np.ndarray:
    """[n_trials, t_len] activity of a driven branching process, ``A_t+1 ~ Poisson(m A_t + h)``."""
    rng = np.random.default_rng(seed)
    a = rng.poisson(drive / (1 - m), n_trials)  # start near the stationary mean
    out = np.empty((n_trials, t_len))
    for t in range(burn + t_len):
        a = rng.poisson(m * a + drive)
        if t >= burn:
            out[:, t - burn] = a
    return out


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


def test_fit_power_law_recovers_alpha():
    out = tails.fit_power_law(power_law(2, 2.5, 1, 10_000))
    assert out["reason"] is None
    assert abs(out["alpha"] - 2.5) < 0.05
    assert out["xmin"] <= 3 and out["n_tail"] > 5000


def test_fit_power_law_drops_non_finite_and_non_positive_sizes():
    x = power_law(3, 2.5, 1, 2000).astype(float)
    dirty = np.r_[x, [np.nan, np.inf, 0.0, -4.0]]
    assert tails.fit_power_law(dirty) == tails.fit_power_law(x)
    with pytest.raises(ValueError, match="integers"):
        tails.fit_power_law(np.r_[x, 2.5])


def test_fit_power_law_flags_the_fallback_when_every_fit_is_at_the_range_edge():
    # true alpha 3.5 outside (1.01, 2): every candidate sits at the bound, powerlaw falls back
    out = tails.fit_power_law(power_law(4, 3.5, 1, 1000), alpha_range=(1.01, 2.0))
    assert np.isfinite(out["alpha"]) and "fell back" in out["reason"]


# ----------------------------------------------------------------------------- replica vs powerlaw


def _replica_cases():
    rng = np.random.default_rng(10)
    mixed = np.r_[rng.integers(1, 30, 400), power_law(11, 2.7, 30, 400)]
    return {
        "power law": (power_law(12, 2.5, 1, 1500), ALPHA_RANGE, None),
        "shallow power law": (power_law(13, 1.5, 1, 800), ALPHA_RANGE, None),
        "lognormal integers": (np.ceil(rng.lognormal(1.0, 1.2, 1000)), ALPHA_RANGE, None),
        "exponential integers": (discrete_exponential(14, 5.0, 1000), ALPHA_RANGE, None),
        "xmin >= 10, direct CSN estimate": (power_law(15, 2.2, 10, 800), ALPHA_RANGE, None),
        "xmin >= 10, steep (Nelder-Mead)": (power_law(16, 4.0, 12, 800), ALPHA_RANGE, None),
        "xmin_max": (mixed, ALPHA_RANGE, 20.0),
        "narrow range": (mixed, (1.5, 3.5), None),
        "all fits at the edge": (power_law(17, 3.5, 1, 600), (1.01, 2.0), None),
    }


@pytest.mark.parametrize("name", list(_replica_cases()))
def test_fast_discrete_fit_equals_powerlaw_fit(name):
    x, alpha_range, xmin_max = _replica_cases()[name]
    window = None if xmin_max is None else xmin_window(x, xmin_max)
    alpha, xmin, d = reference_fit(x, alpha_range, window)
    fast = tails.fast_discrete_fit(x, alpha_range, xmin_max)
    assert fast["xmin"] == xmin
    assert fast["alpha"] == pytest.approx(alpha, rel=1e-9, abs=0)
    assert fast["ks"] == pytest.approx(d, rel=1e-9, abs=0)
    assert fast["n_tail"] == np.sum(x >= xmin)
    if xmin_max is not None:
        assert xmin <= xmin_max


def test_replica_cases_reach_the_branches_they_name():
    cases = _replica_cases()
    x, _, _ = cases["xmin >= 10, direct CSN estimate"]
    fit = tails.fast_discrete_fit(x)
    tail = x[x >= fit["xmin"]]
    assert fit["xmin"] >= 10
    assert fit["alpha"] == pytest.approx(1 + tail.size / np.sum(np.log(tail / (fit["xmin"] - 0.5))),
                                         rel=1e-12)  # CSN eq. 3.7, no numerical fit
    x, _, _ = cases["xmin >= 10, steep (Nelder-Mead)"]
    fit = tails.fast_discrete_fit(x)
    assert fit["xmin"] >= 10 and fit["alpha"] > 3
    x, _, xmin_max = cases["xmin_max"]
    assert tails.fast_discrete_fit(x)["xmin"] > xmin_max  # the restriction binds
    x, alpha_range, _ = cases["all fits at the edge"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert powerlaw.Fit(x, discrete=True, parameter_ranges={"alpha": alpha_range},
                            verbose=0).noise_flag


def test_fast_discrete_fit_agrees_with_fit_power_law():
    x = np.ceil(np.random.default_rng(18).lognormal(1.5, 1.0, 800))
    slow, fast = tails.fit_power_law(x, xmin_max=8), tails.fast_discrete_fit(x, xmin_max=8)
    assert fast == {k: slow[k] for k in fast}


# ----------------------------------------------------------------------------- bootstrap p-value


@pytest.mark.parametrize("x, xmin_max", [
    (power_law(20, 2.2, 1, 300), None),
    # body below xmin is resampled, xmin restricted: the other branches of the synthetic sets
    (np.r_[np.random.default_rng(21).integers(1, 8, 150), power_law(22, 2.5, 8, 250)], 12.0),
])
def test_gof_pvalue_equals_the_naive_loop(x, xmin_max):
    fast = tails.gof_pvalue(x, n_boot=20, seed=5, xmin_max=xmin_max)
    assert fast == tails.naive_gof_pvalue(x, n_boot=20, seed=5, xmin_max=xmin_max)
    assert fast == tails.gof_pvalue(x, n_boot=20, seed=5, xmin_max=xmin_max, batch=3)
    assert 0 < fast < 1  # a p-value of 0 or 1 would make the equality trivial


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
    ps = np.array([tails.gof_pvalue(power_law(100 + s, 2.5, 1, 500), n_boot=100, seed=s)
                   for s in range(20)])
    assert np.sum(ps > 0.1) >= 15, ps
    assert 0.3 < ps.mean() < 0.7, ps


def test_gof_pvalue_rejects_discretised_exponential_data():
    # xmin is kept in the body: with a free xmin the KS search walks out to a short tail
    # (tens of points) where an exponential is indistinguishable from a steep power law
    ps = [tails.gof_pvalue(discrete_exponential(200 + s, 10.0, 500), n_boot=50, seed=s,
                           xmin_max=5) for s in range(5)]
    assert max(ps) < 0.05, ps


def test_likelihood_ratio_sign():
    pl = tails.fit_power_law(power_law(30, 2.5, 1, 2000))
    assert pl["lr_exponential"] > 0 and pl["p_exponential"] < 0.01
    ex = tails.fit_power_law(discrete_exponential(31, 10.0, 2000), xmin_max=5)
    assert ex["lr_exponential"] < 0 and ex["p_exponential"] < 0.01


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
    assert tails.crackling(s, d, n_boot=50)["gamma"] == pytest.approx(slope, rel=1e-12)
    exact = tails.crackling(np.array([3.0, 4.0, 64.0]) ** 1.5, [3, 4, 64], n_boot=10)
    assert exact["gamma"] == pytest.approx(1.5, rel=1e-12)


def test_crackling_recovers_gamma_with_a_covering_interval():
    s, d = crackling_data(51)
    out = tails.crackling(s, d, n_boot=500, seed=1)
    assert out["reason"] is None
    assert abs(out["gamma"] - 1.5) < 0.03  # ~4 standard errors
    assert out["gamma_lo"] < 1.5 < out["gamma_hi"]
    assert out["gamma_lo"] < out["gamma"] < out["gamma_hi"]
    assert out["gamma_hi"] - out["gamma_lo"] < 0.06


def test_crackling_interval_covers_about_95_percent():
    # 20 data sets: a 95% interval misses ~1; >= 16 hits fails only for real under-coverage
    runs = [tails.crackling(*crackling_data(500 + k), n_boot=200, seed=k) for k in range(20)]
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
    base = tails.crackling(s, d, n_boot=200, seed=2)
    assert tails.crackling(s, d, n_boot=200, seed=2) == base
    assert tails.crackling(s, d, n_boot=200, seed=3)["gamma_lo"] != base["gamma_lo"]
    # avalanches outside [3, 64], non-positive or NaN sizes are dropped before anything is drawn
    wild_s, wild_d = np.r_[s, 1e9, 1e9, -1.0, 0.0, np.nan], np.r_[d, 200, 2, 10, 10, 10]
    assert tails.crackling(wild_s, wild_d, n_boot=200, seed=2) == base
    with pytest.raises(ValueError, match="differ in length"):
        tails.crackling(s, d[:-1])


# ----------------------------------------------------------------------------- MR branching


def test_mr_branching_is_robust_to_subsampling():
    m = 0.9
    full = branching_counts(60, m, drive=10.0, n_trials=100, t_len=200)
    sub = np.random.default_rng(61).binomial(full.astype(np.int64), 0.1).astype(float)
    # naive lag-1 regression (per-trial means removed) is biased by subsampling: r_1 = b m, b << 1
    dev = sub - sub.mean(axis=1, keepdims=True)
    naive = np.sum(dev[:, 1:] * dev[:, :-1]) / np.sum(dev[:, :-1] ** 2)
    assert naive < 0.5
    out, ref = tails.mr_branching(sub), tails.mr_branching(full)
    assert out["reason"] is None and out["n_trials"] == 100
    # trial-separated MR on 200-token trials is itself biased low by ~0.05 at m = 0.9 (per-trial
    # means); the estimate must not depend on the subsampling, and stay near the truth
    assert abs(out["mr_m"] - ref["mr_m"]) < 0.02
    assert abs(out["mr_m"] - m) < 0.07
    assert out["mr_tau"] == pytest.approx(-1.0 / np.log(out["mr_m"]), rel=1e-6)


def test_mr_branching_drops_constant_trials():
    counts = branching_counts(62, 0.8, drive=5.0, n_trials=20, t_len=100)
    counts[:3] = 7.0
    out = tails.mr_branching(counts)
    assert out["n_trials"] == 17 and out["reason"] is None


# ----------------------------------------------------------------------------- degenerate input


DEGENERATE_SIZES = {
    "empty": [],
    "three points": [1, 2, 3],
    "all equal": [5] * 100,
    "three distinct": [1, 2, 3] * 30,
    "all NaN": [np.nan] * 50,
    "NaN and few points": [np.nan] * 50 + [1, 2, 3, 4, 5],
    "non-positive": [0, -1, -2] * 20,
}


@pytest.mark.parametrize("name", list(DEGENERATE_SIZES))
def test_degenerate_sizes_give_nan_and_a_reason_without_warnings(name):
    x = np.array(DEGENERATE_SIZES[name], dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fits = [tails.fit_power_law(x), tails.fast_discrete_fit(x)]
        p_fast, p_naive = tails.gof_pvalue(x, n_boot=5), tails.naive_gof_pvalue(x, n_boot=5)
        c80 = tails.continuous_fit_p80(x)
        crack = tails.crackling(x, np.arange(x.size) % 10 + 3, n_boot=20)
    for out in fits + [c80]:
        assert all(np.isnan(v) for k, v in out.items() if k != "reason"), out
        assert isinstance(out["reason"], str) and out["reason"]
    assert np.isnan(p_fast) and np.isnan(p_naive)
    if name in ("empty", "all NaN", "non-positive"):  # no usable size at all
        assert np.isnan(crack["gamma"]) and crack["reason"]


@pytest.mark.parametrize("name, counts", [
    ("empty", np.zeros((0, 0))),
    ("constant series", np.full((5, 100), 3.0)),
    ("too few tokens", np.arange(10.0)[None, :]),
    ("NaN", np.where(np.eye(4, 100) > 0, np.nan, 1.0) + np.arange(100)),
    ("3-d", np.ones((2, 3, 40))),
])
def test_degenerate_counts_give_nan_and_a_reason_without_warnings(name, counts):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = tails.mr_branching(counts)
    assert np.isnan(out["mr_m"]) and np.isnan(out["mr_tau"]) and np.isnan(out["n_trials"])
    assert isinstance(out["reason"], str) and out["reason"]


def test_degenerate_crackling_gives_nan_and_a_reason_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        two_durations = tails.crackling([1.0, 2.0, 3.0, 4.0], [3, 3, 4, 4], n_boot=10)
        outside = tails.crackling(np.ones(50), np.full(50, 100), n_boot=10)
        # only a few avalanches: replicates that lose a duration are skipped, no warning
        sparse = tails.crackling([1.0, 4.0, 9.0], [3, 4, 5], n_boot=50)
        # no replicate keeps all 3 durations (6/27 chance each): a point estimate, no interval
        no_interval = tails.crackling([1.0, 4.0, 9.0], [3, 4, 5], n_boot=1, seed=0)
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
    for fn in (tails.gof_pvalue, tails.naive_gof_pvalue):
        with pytest.raises(ValueError, match="alpha_range"):
            fn(x, n_boot=2, alpha_range=alpha_range)
