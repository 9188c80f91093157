"""Multistep-regression branching estimate along tokens (Wilting & Priesemann 2018, ``mrestimator``).

:func:`mr_branching` fits ``r_k = b m^k`` to the lag-k regression slopes of a layer's spike
counts, which estimates the branching parameter ``m`` without the bias that subsampling gives the
naive lag-1 regression. Degenerate input (empty, non-finite, too short, constant series) gives
NaNs and a ``reason`` string, never an exception or a warning.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from collections.abc import Iterable, Iterator

import numpy as np


def _nan_result(keys: Iterable[str], reason: str) -> dict:
    out: dict = {k: float("nan") for k in keys}
    out["reason"] = reason
    return out


def _mrestimator():
    """Import ``mrestimator`` without its global side effect on tqdm.

    Importing it patches ``tqdm.tqdm.__init__`` to ``disable=True`` for the whole process; the
    original is put back (mrestimator's own bars are silenced by :func:`_quiet_mr` instead).
    """
    if "mrestimator" not in sys.modules:
        import tqdm

        before = tqdm.tqdm.__dict__.get("__init__")
        import mrestimator  # noqa: F401

        if before is not None and tqdm.tqdm.__dict__.get("__init__") is not before:
            tqdm.tqdm.__init__ = before
    return sys.modules["mrestimator"]


@contextlib.contextmanager
def _quiet_mr() -> Iterator[None]:
    """Silence mrestimator: its logger (warnings go to stderr by default), warnings,
    floating-point warnings, prints and progress bars."""
    logger = logging.getLogger("mrestimator")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"), contextlib.redirect_stdout(
            io.StringIO()
        ), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def mr_branching(counts: np.ndarray, dt: float = 1.0, k_max: int = 20) -> dict:
    """Multistep-regression branching estimate along tokens (Wilting & Priesemann 2018).

    ``mrestimator.coefficients(method="ts")`` (trial-separated: trials = sequences) over
    ``k = 1 .. min(T // 4, k_max)``, then ``mrestimator.fit`` with the exponential model
    ``r_k = b m^k``; ``m = exp(-dt / tau)``. Trials whose first ``T - k_max`` tokens are constant
    have no defined autocorrelation and are dropped.

    Parameters
    ----------
    counts : array_like, shape [N sequences, T tokens]
        Spike counts per token of one layer (a 1-D series is one trial).
    dt : float
        Token step.
    k_max : int
        Largest lag, in steps.

    Returns
    -------
    dict
        ``mr_m``, ``mr_tau`` (in units of ``dt``), ``n_trials`` (used) and ``reason``.
    """
    keys = ("mr_m", "mr_tau", "n_trials")
    a = np.asarray(counts, dtype=float)
    a = a[None, :] if a.ndim == 1 else a
    if a.ndim != 2 or a.size == 0 or not np.all(np.isfinite(a)):
        return _nan_result(keys, "counts must be a finite [N, T] array")
    kmax = min(a.shape[1] // 4, int(k_max))
    if kmax < 3:
        return _nan_result(keys, f"too few tokens (T = {a.shape[1]}) for 3 lags")
    a = a[np.ptp(a[:, : a.shape[1] - kmax], axis=1) > 0]
    if a.shape[0] == 0:
        return _nan_result(keys, "constant series (no trial varies)")
    mre = _mrestimator()
    with _quiet_mr():
        rk = mre.coefficients(a, method="ts", steps=(1, kmax), dt=dt, dtunit="token", numboot=0)
        if not np.all(np.isfinite(rk.coefficients)):
            return _nan_result(keys, "non-finite correlation coefficients")
        res = mre.fit(rk, fitfunc="exponential")
    m, tau = float(res.mre), float(res.tau)
    if not (np.isfinite(m) and np.isfinite(tau)):
        return _nan_result(keys, "exponential fit did not converge")
    return {"mr_m": m, "mr_tau": tau, "n_trials": float(a.shape[0]), "reason": None}
