"""Multistep-regression branching estimate (``multistep.mr_branching``) on simulated branching processes.

Every test is seeded; the checks use trial counts where a correct estimator passes by a wide margin.
"""

import warnings

import numpy as np
import pytest

from avalanche_nb import multistep


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


def test_mr_branching_is_robust_to_subsampling():
    m = 0.9
    full = branching_counts(60, m, drive=10.0, n_trials=100, t_len=200)
    sub = np.random.default_rng(61).binomial(full.astype(np.int64), 0.1).astype(float)
    # naive lag-1 regression (per-trial means removed) is biased by subsampling: r_1 = b m, b << 1
    dev = sub - sub.mean(axis=1, keepdims=True)
    naive = np.sum(dev[:, 1:] * dev[:, :-1]) / np.sum(dev[:, :-1] ** 2)
    assert naive < 0.5
    out, ref = multistep.mr_branching(sub), multistep.mr_branching(full)
    assert out["reason"] is None and out["n_trials"] == 100
    # trial-separated MR on 200-token trials is itself biased low by ~0.05 at m = 0.9 (per-trial
    # means); the estimate must not depend on the subsampling, and stay near the truth
    assert abs(out["mr_m"] - ref["mr_m"]) < 0.02
    assert abs(out["mr_m"] - m) < 0.07
    assert out["mr_tau"] == pytest.approx(-1.0 / np.log(out["mr_m"]), rel=1e-6)


def test_mr_branching_drops_constant_trials():
    counts = branching_counts(62, 0.8, drive=5.0, n_trials=20, t_len=100)
    counts[:3] = 7.0
    out = multistep.mr_branching(counts)
    assert out["n_trials"] == 17 and out["reason"] is None


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
        out = multistep.mr_branching(counts)
    assert np.isnan(out["mr_m"]) and np.isnan(out["mr_tau"]) and np.isnan(out["n_trials"])
    assert isinstance(out["reason"], str) and out["reason"]


def test_mr_branching_import_leaves_tqdm_enabled():
    import io

    import tqdm

    multistep._mrestimator()  # importing mrestimator patches tqdm to disable=True; undone here
    with tqdm.tqdm(range(3), file=io.StringIO()) as bar:
        assert bar.disable is False


def test_mrestimator_is_imported_as_its_numpy_version_while_numba_stays_importable():
    import subprocess
    import sys

    code = ("import sys, numba\nfrom avalanche_nb import multistep\nmr = multistep._mrestimator()\n"
            "assert sys.modules['numba'] is numba\n"
            "assert not hasattr(sys.modules['mrestimator.coefficients'].sum_1d, 'py_func'), 'numba-compiled sums (fastmath)'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)  # a fresh mrestimator import
    assert out.returncode == 0, out.stderr


# ----------------------------------------------------------------------------- against mrestimator itself


def _mr_cases():
    """Series of many kinds: branching processes, Poisson and sparse binary counts, random walks, constant
    and short trials, one 1-D series, with several k_max."""
    rng = np.random.default_rng(70)
    out = []
    for i in range(60):
        n, t = int(rng.integers(1, 17)), int(rng.integers(8, 160))
        kind = i % 5
        if kind == 0:
            s = branching_counts(int(rng.integers(1000)), rng.uniform(0.3, 0.98), 2.0, n, t, burn=20)
        elif kind == 1:
            s = rng.poisson(rng.uniform(0.05, 5), (n, t)).astype(float)
        elif kind == 2:
            s = (rng.random((n, t)) < rng.uniform(0.01, 0.3)).astype(float)
        elif kind == 3:
            s = rng.normal(size=(n, t)).cumsum(1)
        else:
            s = rng.poisson(1.0, t).astype(float)  # one trial, 1-D
        if kind != 4 and i % 3 == 0:
            s[: max(1, n // 3)] = 2.0  # constant trials, dropped
        out.append((s, int(rng.integers(3, 30))))
    return out


def test_mr_branching_equals_mrestimator_bit_for_bit():
    """The numpy / leastsq estimate is mrestimator's (coefficients "ts", fit "exponential"), to the last bit,
    reasons included."""
    for s, k_max in _mr_cases():
        fast, ref = multistep.mr_branching(s, k_max=k_max), multistep.mr_branching_mrestimator(s, k_max=k_max)
        assert fast.keys() == ref.keys()
        assert all(fast[k] == ref[k] or (isinstance(ref[k], float) and np.isnan(fast[k]) and np.isnan(ref[k]))
                   for k in ref), (fast, ref)


def test_mr_branching_many_equals_one_series_at_a_time():
    """Stacking series (e.g. every layer of a lattice, some degenerate) changes no number."""
    rng = np.random.default_rng(71)
    lattice = rng.poisson(rng.uniform(0.1, 3, 12), (8, 100, 12)).astype(float)
    lattice[:, :, 3] = 0.0  # a silent layer: constant
    lattice[:2, :, 5] = 1.0  # two constant trials
    series = [lattice[:, :, l] for l in range(12)] + [np.ones((3, 5)), lattice[:, :40, 0]]
    many = multistep.mr_branching_many(series)
    for s, out in zip(series, many):
        one = multistep.mr_branching(s)
        assert out.keys() == one.keys()
        assert all(out[k] == one[k] or (isinstance(one[k], float) and np.isnan(out[k]) and np.isnan(one[k]))
                   for k in one)
    assert many[3]["reason"] and many[12]["reason"] and many[5]["n_trials"] == 6
