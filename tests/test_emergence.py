"""Training-dynamics fits: recovery on synthetic curves of each family, AIC, Jacobian, Lambert-W peak,
fits over a trajectories table."""

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import approx_fprime

from avalanche_nb import emergence as em

T = np.concatenate([[0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512], np.arange(1000, 20001, 500)]).astype(float)


def noisy(y, rel=0.003, seed=0):
    return y + np.random.default_rng(seed).normal(0, rel * np.ptp(y), y.shape)


def test_reparametrisation_is_the_same_function():
    A, lam, gamma, t0, K = 30.0, 0.8, 2e-3, 1.5, 12.0
    r = em.to_reparam(A, lam, gamma, t0, K)
    np.testing.assert_allclose(em.ma5(T, *r), em.original(T, A, lam, gamma, t0, K), rtol=1e-10)
    np.testing.assert_allclose(em.from_reparam(*r), (A, lam, gamma, t0, K), rtol=1e-10)


def test_analytic_jacobian_matches_finite_differences():
    p = np.array([1.3, 0.4, 0.7, -0.2, 0.1])
    for t in (0.0, 0.05, 0.5, 1.0):
        num = approx_fprime(p, lambda q: em.ma5(np.array([t]), *q)[0], 1e-7)
        np.testing.assert_allclose(em.ma5_jacobian(np.array([t]), *p)[0], num, rtol=1e-5, atol=1e-6)


def test_lambert_w_peak_is_the_numerical_argmax():
    A, lam, gamma, t0 = 10.0, 0.5, 1e-3, 1.0
    tp = em.peak_time(lam, gamma, t0)
    grid = np.linspace(0, 20000, 2_000_001)
    assert tp == pytest.approx(grid[np.argmax(em.original(grid, A, lam, gamma, t0, 0.0))], abs=0.02)
    assert em.peak_time(0.0, gamma, t0) == float("inf")


def test_ma5_recovers_an_early_peak():
    truth = dict(A=40.0, lam=0.6, gamma=2e-3, t0=1.2, K=10.0)
    y = noisy(em.original(T, truth["A"], truth["lam"], truth["gamma"], truth["t0"], truth["K"]))
    f = em.fit(T, y, "ma5")
    assert f.ok and f.r2 > 0.99
    p = f.params
    assert p["lambda"] == pytest.approx(truth["lam"], rel=0.1) and p["gamma"] == pytest.approx(truth["gamma"], rel=0.15)
    assert p["K"] == pytest.approx(truth["K"], rel=0.05)
    pk = em.peak(f, T.max())
    assert pk["trajectory_class"] == "early-peak"
    assert pk["t_peak"] == pytest.approx(em.peak_time(truth["lam"], truth["gamma"], truth["t0"]), rel=0.1)


def test_ma5_on_a_log_increase_has_no_observable_peak():
    y = noisy(em.original(T, 15.0, 1e-5, 1e-3, 1.0, 12.0))
    f = em.fit(T, y, "ma5")
    assert f.ok and f.r2 > 0.99 and em.peak(f, T.max())["trajectory_class"] == "log-increase"


@pytest.mark.parametrize("model,fn,truth", [
    ("step1", em.step1, (50.0, 3000.0)),
    ("step2_under", em.step2_under, (50.0, 8e-4, 0.3)),
    ("step2_critical", em.step2_critical, (50.0, 6e-4)),
    ("step2_over", em.step2_over, (50.0, 1.5e-3, 1.3)),
])
def test_step_responses_recover_their_parameters_and_aic_picks_them(model, fn, truth):
    y = noisy(fn(T, *truth, 12.0), rel=0.01, seed=1)
    fits = em.fit_all(T, y)
    f = fits[model]
    assert f.ok and f.r2 > 0.99
    assert f.params["K"] == pytest.approx(truth[0], rel=0.05) and f.params["c"] == pytest.approx(12.0, abs=0.5)
    if "tau" in f.params:
        assert f.params["tau"] == pytest.approx(truth[1], rel=0.1)
    if model != "step1":
        assert f.params["wn"] == pytest.approx(truth[1], rel=0.1)
    if "zeta" in f.params:
        assert f.params["zeta"] == pytest.approx(truth[2], rel=0.15)
    assert em.choose(fits) == model


def test_aic_prefers_ma5_on_its_own_data():
    y = noisy(em.original(T, 40.0, 0.6, 2e-3, 1.2, 10.0))
    assert em.choose(em.fit_all(T, y)) == "ma5"


def test_bad_series_fail_with_a_reason():
    # five parameters need three residual degrees of freedom: 7 checkpoints are refused, 8 are fitted
    assert "need at least 8" in em.fit(T[:7], T[:7] ** 0.5, "ma5").reason
    assert "need at least 8" not in em.fit(T[:8], T[:8] ** 0.5, "ma5").reason
    assert "constant series" in em.fit(T, np.full_like(T, 3.0), "ma5").reason
    bad = T.copy()
    bad[3] = np.nan
    assert "non-finite" in em.fit(T, bad).reason
    assert not em.fit(T, np.ones_like(T)).ok and em.choose({"ma5": em.fit(T, np.ones_like(T))}) is None


def test_curve_from_the_table_equals_the_fit_itself():
    """The figures draw fits from fits.parquet's data-unit parameters: they must be the fitted curves."""
    rng = np.random.default_rng(3)
    t = np.array([0, 1, 2, 4, 8, 16, 32, 64, 96, 128, 160, 192, 224, 256], float)
    y = em.original(t, 30.0, 0.02, 0.05, 1.0, 5.0) + rng.normal(0, 0.2, t.size)
    table = em.fit_trajectories(pd.DataFrame({"model": "m", "layer": 0, "step": t, "ratio": y}))
    for row in table[table.ok].to_dict("records"):
        f = em.fit(t, y, row["fit"])
        np.testing.assert_allclose(em.curve(row, t), f.predict(t), rtol=1e-6, atol=1e-6)


def test_fit_trajectories_marks_failures_and_reproduces_r2():
    t = np.array([0, 1, 2, 4, 8, 16, 32, 64, 100, 150, 200, 250, 300], float)
    good = em.original(t, 20.0, 0.5, 0.02, 1.0, 5.0) + np.random.default_rng(0).normal(0, 0.05, t.size)
    traj = pd.concat([
        pd.DataFrame({"model": "m", "layer": 0, "step": t, "ratio": good}),
        pd.DataFrame({"model": "m", "layer": 1, "step": t, "ratio": 7.0}),
        pd.DataFrame({"model": "m", "layer": 2, "step": t[:6], "ratio": [1.0, 2.0, 3.0, 4.0, 4.5, 4.8]})])
    fits = em.fit_trajectories(traj)
    ma5 = fits[fits.fit == "ma5"].set_index("layer")
    assert ma5.loc[0, "ok"] and ma5.loc[0, "r2"] > 0.99
    assert not ma5.loc[1, "ok"] and "constant" in ma5.loc[1, "reason"]
    assert not ma5.loc[2, "ok"] and "need at least 8" in ma5.loc[2, "reason"]
    assert fits.groupby("layer").chosen.sum().to_dict() == {0: 1, 1: 0, 2: 1}  # layer 2: a 2-3 parameter step still fits
    assert em.fit(t, good, "ma5").r2 == pytest.approx(ma5.loc[0, "r2"], rel=1e-12)
    with pytest.raises(ValueError, match="lack the column"):
        em.fit_trajectories(traj.drop(columns="ratio"))
