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
