"""Small inferential statistics shared by the evaluation phases: bootstrap CIs and McNemar's test."""

from __future__ import annotations

import numpy as np
from scipy import stats as _st


def bootstrap_weights(n: int, draws: int, seed: int) -> np.ndarray:
    """Multinomial resampling weights int [draws, n]: row b counts how often unit i is drawn in resample b.

    A statistic that is a ratio of per-unit sums is then ``(W @ num) / (W @ den)`` for all resamples at once.
    """
    if n < 1 or draws < 1:
        raise ValueError(f"need n >= 1 units and draws >= 1, got n={n}, draws={draws}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=draws)


def bootstrap_mean_ci(x, draws: int, seed: int, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean of ``x`` [n] and its percentile bootstrap interval (``level``, ``draws``
    seeded resamples of the units)."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"x must be a non-empty 1-D array, got shape {x.shape}")
    means = bootstrap_weights(x.size, draws, seed) @ x / x.size
    q = (1 - level) / 2
    lo, hi = np.quantile(means, [q, 1 - q])
    return float(x.mean()), float(lo), float(hi)


def mcnemar(correct_a, correct_b) -> dict[str, float]:
    """Paired McNemar test of two classifiers on the same items (bool [n] each).

    ``n01``: items A gets right and B wrong; ``n10``: the reverse. ``p_exact`` is the two-sided exact
    binomial p-value of ``min(n01, n10)`` under Binomial(n01 + n10, 1/2); ``chi2`` the continuity-
    corrected statistic ``(|n01 - n10| - 1)^2 / (n01 + n10)`` with its p-value ``p_chi2``. With no
    discordant pair both p-values are 1.
    """
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired outcomes must be 1-D of equal length, got {a.shape} and {b.shape}")
    n01, n10 = int((a & ~b).sum()), int((~a & b).sum())
    n = n01 + n10
    if n == 0:
        return {"n01": 0, "n10": 0, "p_exact": 1.0, "chi2": 0.0, "p_chi2": 1.0}
    p_exact = _st.binomtest(min(n01, n10), n, 0.5).pvalue
    chi2 = max(abs(n01 - n10) - 1, 0) ** 2 / n
    return {"n01": n01, "n10": n10, "p_exact": float(p_exact), "chi2": float(chi2),
            "p_chi2": float(_st.chi2.sf(chi2, 1))}
