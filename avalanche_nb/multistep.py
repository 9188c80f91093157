"""Multistep-regression branching estimate along tokens (Wilting & Priesemann 2018, ``mrestimator``).

:func:`mr_branching` fits ``r_k = b m^k`` to the lag-k regression slopes of a layer's spike
counts, which estimates the branching parameter ``m`` without the bias that subsampling gives the
naive lag-1 regression. Degenerate input (empty, non-finite, too short, constant series) gives
NaNs and a ``reason`` string, never an exception or a warning.

The numbers are mrestimator's (``coefficients(method="ts")``, ``fit(fitfunc="exponential")``), computed
here with its arithmetic, op for op, in numpy and ``scipy.optimize.leastsq`` (what its ``curve_fit``
runs), without the package's per-call overhead; :func:`mr_branching_many` stacks the lag regressions of
many series (every layer of a lattice). :func:`mr_branching_mrestimator` goes through the package
itself: the tests hold the two equal, bit for bit.
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
    """Import ``mrestimator`` without its global side effects, as its numpy version.

    Importing it patches ``tqdm.tqdm.__init__`` to ``disable=True`` for the whole process; the
    original is put back (mrestimator's own bars are silenced by :func:`_quiet_mr` instead). And where
    numba is importable (it is here: ``tap_kernel``) mrestimator sums with numba kernels compiled with
    ``fastmath``, whose reassociated sums differ in the last digits from its numpy sums; the numbers this
    module reproduces (and that it is checked against) are the numpy ones, so numba is hidden from it.
    """
    if "mrestimator" not in sys.modules:
        import tqdm

        before = tqdm.tqdm.__dict__.get("__init__")
        numba = sys.modules.get("numba")
        sys.modules["numba"] = None  # makes `from numba import ...` raise ImportError
        try:
            import mrestimator  # noqa: F401
        finally:
            if numba is None:
                del sys.modules["numba"]
            else:
                sys.modules["numba"] = numba
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


# The fit of mrestimator.fit(fitfunc="exponential"): its five start values (tau, A) of f_exponential, tried in
# order, the one with the smallest sum of squared residuals kept (the first on ties); maxfev 100 (n + 1),
# then 10000 when none converged.
_MR_STARTS = np.array([(20, 1), (200, 1), (-20, 1), (-200, 1), (-1, 1)])  # mrestimator.fit.default_fitpars
_MR_MAXFEV = (100 * (2 + 1), 10000)


def _check_series(counts, k_max: int) -> tuple[np.ndarray | None, int, str | None]:
    """(the trials that vary, kmax, None) of one series ``counts`` [N, T] (1-D: one trial), or (None, 0, reason)."""
    a = np.asarray(counts, dtype=float)
    a = a[None, :] if a.ndim == 1 else a
    if a.ndim != 2 or a.size == 0 or not np.all(np.isfinite(a)):
        return None, 0, "counts must be a finite [N, T] array"
    kmax = min(a.shape[1] // 4, int(k_max))
    if kmax < 3:
        return None, 0, f"too few tokens (T = {a.shape[1]}) for 3 lags"
    a = a[np.ptp(a[:, : a.shape[1] - kmax], axis=1) > 0]
    if a.shape[0] == 0:
        return None, 0, "constant series (no trial varies)"
    return a, kmax, None


def _ts_rows(data: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Per-trial lag-k regression slopes [trials, K] of ``data`` float [trials, T]: the arithmetic of
    ``mrestimator.coefficients.ts_precompute`` (without numba: numpy sums per row, float64), so each
    row's numbers are the same bits whichever other rows (of other series) are stacked with it."""
    N, T = data.shape
    res = np.zeros(shape=(N, len(steps)), dtype=np.float64)
    for idx in range(len(steps)):
        k = steps[idx]
        frontmean = np.empty((N, 1), np.float64)
        backmean = np.empty((N, 1), np.float64)
        frontmean[:, 0] = np.sum(data[:, :-k], axis=1, dtype=np.float64) / (T - k)
        frontvar = np.sum((data[:, :-k] - frontmean) ** 2, axis=1, dtype=np.float64) / (T - k)
        backmean[:, 0] = np.sum(data[:, k:], axis=1, dtype=np.float64) / (T - k)
        res[:, idx] = (np.sum((data[:, :-k] - frontmean) * (data[:, k:] - backmean), axis=1, dtype=np.float64)
                       / frontvar / (T - k))
    return res


def _exp_fit(x: np.ndarray, y: np.ndarray) -> float:
    """tau of ``mrestimator.fit(rk, fitfunc="exponential")`` on the coefficients ``y`` at steps ``x``
    (float, in units of dt): ``scipy.optimize.leastsq`` (what ``curve_fit`` runs for an unbounded fit,
    with the same residual arithmetic) from each start, NaN when none converged."""
    from scipy.optimize import leastsq

    negx, buf = -x, np.empty_like(y)

    def resid(p):  # curve_fit's func(xdata, *params) - ydata with f_exponential, |A| exp(-xdata / tau) - ydata,
        np.divide(negx, p[0], out=buf)  # op for op (the intermediates in one buffer; minpack keeps what it
        np.exp(buf, out=buf)  # is handed, so the result is a new array)
        np.multiply(abs(p[1]), buf, out=buf)
        return buf - y

    for maxfev in _MR_MAXFEV:
        best, best_ss = None, np.inf
        for p0 in _MR_STARTS:
            try:
                popt, _, _, _, ier = leastsq(resid, p0, full_output=1, maxfev=maxfev)
                if ier not in (1, 2, 3, 4):  # curve_fit raises: mrestimator skips the start
                    continue
                ss = np.sum((y - np.abs(popt[1]) * np.exp(-x / popt[0])) ** 2)
            except Exception:  # noqa: BLE001 -- as mrestimator: a start that fails is skipped
                continue
            if ss < best_ss:
                best, best_ss = popt, ss
        if best is not None:
            return best[0]
    return np.nan


def mr_branching_many(series, dt: float = 1.0, k_max: int = 20) -> list[dict]:
    """:func:`mr_branching` of each series ``series[b]`` [N, T] (e.g. every layer of a lattice), equal to
    calling it on each; the lag regressions of all series run as one stack."""
    dt = float(dt)
    if not dt > 0:  # as mrestimator.coefficients
        raise ValueError(f"dt must be > 0, got {dt}")
    checked = [_check_series(s, k_max) for s in series]
    keys = ("mr_m", "mr_tau", "n_trials")
    out: list[dict] = [_nan_result(keys, reason) if reason else {} for _, _, reason in checked]
    groups: dict[tuple[int, int], list[int]] = {}  # (T, kmax) -> series, stacked together
    for b, (a, kmax, reason) in enumerate(checked):
        if reason is None:
            groups.setdefault((a.shape[1], kmax), []).append(b)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for (_, kmax), members in groups.items():
            steps = np.arange(1, kmax + 1, dtype=int)
            rows = _ts_rows(np.concatenate([checked[b][0] for b in members]), steps)
            x = steps * dt
            start = 0
            for b in members:
                n = checked[b][0].shape[0]
                part = rows[start:start + n]
                start += n
                rk = np.sum(part, axis=0, dtype=np.float64) / part.shape[0]  # ts_method
                if not np.all(np.isfinite(rk)):
                    out[b] = _nan_result(keys, "non-finite correlation coefficients")
                    continue
                tau = _exp_fit(x, rk)
                m = np.exp(-1 * dt / tau)
                m, tau = float(m), float(tau)
                if not (np.isfinite(m) and np.isfinite(tau)):
                    out[b] = _nan_result(keys, "exponential fit did not converge")
                    continue
                out[b] = {"mr_m": m, "mr_tau": tau, "n_trials": float(n), "reason": None}
    return out


def mr_branching(counts: np.ndarray, dt: float = 1.0, k_max: int = 20) -> dict:
    """Multistep-regression branching estimate along tokens (Wilting & Priesemann 2018).

    The numbers of ``mrestimator.coefficients(method="ts")`` (trial-separated: trials = sequences) over
    ``k = 1 .. min(T // 4, k_max)``, then ``mrestimator.fit`` with the exponential model
    ``r_k = b m^k``; ``m = exp(-dt / tau)``. Trials whose first ``T - k_max`` tokens are constant
    have no defined autocorrelation and are dropped. Computed with numpy and
    ``scipy.optimize.leastsq`` by mrestimator's own arithmetic (without its per-call overhead):
    :func:`mr_branching_mrestimator` is the same estimate through the package, which the tests hold
    this one to, bit for bit.

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
    return mr_branching_many([counts], dt=dt, k_max=k_max)[0]


def mr_branching_mrestimator(counts: np.ndarray, dt: float = 1.0, k_max: int = 20) -> dict:
    """The reference of :func:`mr_branching`: the same estimate through ``mrestimator`` itself
    (``coefficients(method="ts", numboot=0)``, then ``fit(fitfunc="exponential")``). Slow (its
    per-call overhead); for the tests and the benchmark."""
    keys = ("mr_m", "mr_tau", "n_trials")
    a, kmax, reason = _check_series(counts, k_max)
    if reason:
        return _nan_result(keys, reason)
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
