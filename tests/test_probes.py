"""Probes on synthetic features: a planted linear signal (both probes find it), a planted non-linear one
(only the MLP), the control task at chance, the majority baseline and the Wilson interval."""

import numpy as np
import pytest
from scipy import stats as st

from avalanche_nb import probes


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 6))
    linear = (X[:, 0] > 0).astype(int)
    xor = ((X[:, 1] > 0) ^ (X[:, 2] > 0)).astype(int)
    types = rng.integers(0, 200, 600)  # token types the features know nothing about
    return X, linear, xor, types


def test_linear_probe_finds_only_the_linear_signal_the_mlp_both(data):
    X, linear, xor, _ = data
    lin = {name: probes.probe_accuracy(X, y, "linear", folds=5, seed=0) for name, y in (("lin", linear), ("xor", xor))}
    mlp = {name: probes.probe_accuracy(X, y, "mlp", folds=5, seed=0) for name, y in (("lin", linear), ("xor", xor))}
    assert lin["lin"]["acc"] > 0.95 and mlp["lin"]["acc"] > 0.9
    assert lin["xor"]["hi"] < 0.62  # chance is 0.5: the linear probe cannot read an XOR
    assert mlp["xor"]["acc"] > 0.8
    for r in (*lin.values(), *mlp.values()):
        assert r["lo"] <= r["acc"] <= r["hi"] and r["n"] == 600 and r["folds"] == 5
        assert 0.45 < r["majority"] < 0.56


def test_the_control_task_stays_at_chance(data):
    X, linear, _, types = data
    control = probes.control_labels(types, linear, seed=1)
    for t in np.unique(types):  # one label per token type
        assert len(set(control[types == t])) == 1
    for kind in probes.PROBES:
        r = probes.probe_accuracy(X, control, kind, folds=5, seed=0)
        assert r["lo"] < max(r["majority"], 0.5) + 0.02 and r["acc"] < 0.62
    # features that encode the token type make the control task learnable: what selectivity guards against
    onehot = np.eye(200)[types]
    assert probes.probe_accuracy(onehot, control, "linear", folds=5, seed=0)["acc"] > 0.8


def test_majority_baseline_wilson_and_degenerate_labels():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(100, 3))
    y = np.array([0] * 70 + [1] * 30)
    assert probes.probe_accuracy(X, y, "linear", folds=5, seed=0)["majority"] == pytest.approx(0.7)
    ci = st.binomtest(8, 10).proportion_ci(method="wilson")
    assert probes.wilson(8, 10) == pytest.approx((ci.low, ci.high))
    one = probes.probe_accuracy(X, np.zeros(100, int), "linear", folds=5, seed=0)
    assert np.isnan(one["acc"]) and one["classes"] == 1
    rare = probes.probe_accuracy(X, np.array([0] * 99 + [1]), "linear", folds=5, seed=0)
    assert np.isnan(rare["acc"])  # one member of a class: no stratified split
    with pytest.raises(ValueError, match="non-finite"):
        probes.probe_accuracy(np.full((4, 2), np.nan), np.array([0, 1, 0, 1]), "linear", folds=2, seed=0)
    with pytest.raises(ValueError, match="unknown probe"):
        probes.probe_accuracy(X, y, "forest", folds=5, seed=0)


def test_the_fits_run_on_one_blas_thread_whatever_the_blas_is_set_to(monkeypatch):
    """The limit in probe_accuracy is in force inside every fit, so the accuracies do not depend on the
    machine's BLAS threads (the default is one per core, and the MLP's L-BFGS path is sensitive to the
    order of float sums: at the default run's sizes 2 of 96 probe rows moved by one or two predictions
    between two threads and one)."""
    import threadpoolctl

    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 96))
    y = (X[:, :4].sum(1) + 0.5 * rng.normal(size=300) > 0).astype(int) + (X[:, 7] > 1)
    results = []
    for outside in (1, 2):
        with threadpoolctl.threadpool_limits(limits=outside, user_api="blas"):
            results.append({kind: probes.probe_accuracy(X, y, kind, folds=4, seed=1) for kind in probes.PROBES})
    assert results[0] == results[1]

    seen = []
    make = probes._classifier

    def recording(probe, seed):
        clf = make(probe, seed)
        fit = clf.fit

        def fit_and_record(*a, **kw):
            seen.extend(i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")
            return fit(*a, **kw)

        clf.fit = fit_and_record
        return clf

    monkeypatch.setattr(probes, "_classifier", recording)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        probes.probe_accuracy(X, y, "linear", folds=4, seed=1)
    assert seen and set(seen) == {1}
