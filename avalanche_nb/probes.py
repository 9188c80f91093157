"""Probes of what a representation encodes (seed 004: "linear and non-linear probes ... of massive
activations"), with the controls that keep a probe honest.

* :func:`probe_accuracy`: stratified k-fold cross-validated accuracy of a ``linear`` probe (logistic
  regression on standardised features) or a non-linear ``mlp`` probe (one hidden layer), pooled over the
  out-of-fold predictions with a Wilson 95% interval, and the majority-class baseline on the same folds;
* :func:`control_labels`: Hewitt & Liang's (2019) control task: every token type gets a label drawn once
  from the target's label distribution, so a probe that scores on it has memorised token identity;
  selectivity = task accuracy - control accuracy.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats as st

#: probe families
PROBES = ("linear", "mlp")


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n."""
    if n == 0:
        return np.nan, np.nan
    z = st.norm.ppf(0.5 + level / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def _classifier(probe: str, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if probe == "linear":
        head = LogisticRegression(max_iter=2000, C=1.0)
    elif probe == "mlp":
        # L-BFGS: sklearn's choice for small data sets (hundreds to thousands of tokens), fast and deterministic
        head = MLPClassifier(hidden_layer_sizes=(32,), solver="lbfgs", max_iter=300, alpha=1e-3, random_state=seed)
    else:
        raise ValueError(f"unknown probe {probe!r}; use one of {PROBES}")
    return make_pipeline(StandardScaler(), head)


def probe_accuracy(X: np.ndarray, y: np.ndarray, probe: str, *, folds: int, seed: int) -> dict[str, float]:
    """Cross-validated accuracy of ``probe`` predicting labels ``y`` [n] from features ``X`` float [n, d].

    Stratified ``folds``-fold splits (shuffled with ``seed``; fewer folds when the rarest class has fewer
    members, at least 2). Returns ``acc`` (pooled out-of-fold), ``lo``/``hi`` (Wilson 95%), ``majority``
    (the training folds' most frequent class, scored out of fold), ``n``, ``classes`` and ``folds``; NaN
    accuracies when ``y`` has a single class or too few samples to split.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    X, y = np.asarray(X, float), np.asarray(y)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be [n, d] with one label per row, got X {X.shape}, y {y.shape}")
    if not np.isfinite(X).all():
        raise ValueError("probe features hold non-finite values")
    labels, counts = np.unique(y, return_counts=True)
    k = int(min(folds, counts.min())) if len(labels) > 1 else 0
    out = {"n": int(len(y)), "classes": int(len(labels)), "folds": k}
    if k < 2:
        return out | {"acc": np.nan, "lo": np.nan, "hi": np.nan, "majority": np.nan}
    right = right_major = 0
    # one BLAS thread: the probes' matrices are small (hundreds of rows) and OpenBLAS's second thread costs
    # more than it gives (the fits ran 4x faster with one). It also makes the MLP's L-BFGS path, which
    # depends on the order of float sums, independent of the machine's core count (docs/PROFILE.md)
    with threadpool_limits(limits=1, user_api="blas"):
        for train, test in StratifiedKFold(k, shuffle=True, random_state=seed).split(X, y):
            clf = _classifier(probe, seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(X[train], y[train])
            right += int((clf.predict(X[test]) == y[test]).sum())
            vals, c = np.unique(y[train], return_counts=True)
            right_major += int((y[test] == vals[np.argmax(c)]).sum())
    lo, hi = wilson(right, len(y))
    return out | {"acc": right / len(y), "lo": lo, "hi": hi, "majority": right_major / len(y)}


def control_labels(types: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Hewitt & Liang's control task: each distinct token type of ``types`` [n] gets one label drawn (with
    ``seed``) from the empirical distribution of ``y`` [n]; every occurrence of the type carries it."""
    types, y = np.asarray(types), np.asarray(y)
    labels, counts = np.unique(y, return_counts=True)
    kinds, inverse = np.unique(types, return_inverse=True)
    drawn = np.random.default_rng(seed).choice(labels, size=len(kinds), p=counts / counts.sum())
    return drawn[inverse]
