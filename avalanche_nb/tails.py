"""Tail diagnostics of avalanche sizes and durations (DESIGN.md §4). Descriptive fits only.

* :func:`fit_tail` -- the one call for a size distribution: the discrete power-law fit, the
  standard error of alpha, the bootstrap goodness-of-fit p-value and the likelihood ratios, all
  computed with the same ``alpha_range`` and xmin bounds, returned as one frozen
  :class:`TailFit`. It composes the two parts below, which stay public.
* :func:`fit_power_law` -- discrete power law (Clauset, Shalizi & Newman 2009) through the
  ``powerlaw`` package: xmin by KS, MLE alpha, likelihood ratios vs lognormal and exponential.
* :func:`gof_pvalue` -- the CSN semi-parametric bootstrap goodness-of-fit p-value, which
  ``powerlaw`` lacks. It refits every synthetic data set with a vectorised replica of
  ``powerlaw.Fit(discrete=True)`` (:func:`fast_discrete_fit`) and gives the same p-value as the
  slow loop over ``powerlaw.Fit`` (:func:`naive_gof_pvalue`) for the same seed.
* :func:`continuous_fit_p80` -- the seed paper's continuous fit with xmin at the 80th percentile.
* :func:`crackling` / :func:`predicted_gamma` -- ``E[size | D] ~ D^gamma`` and the exponent
  relation ``(alpha_D - 1) / (alpha_S - 1)``.

The multistep-regression branching estimate along tokens is in :mod:`avalanche_nb.multistep`.

Arguments named like a params key (``alpha_range``, ``gof_draws``, ``bootstrap_draws``,
``seed``) are keyword-only and have no default: the caller passes the run's value. The xmin
bounds ``xmin_min`` / ``xmin_max`` are not params keys and default to ``None`` (no bound).

Degenerate input (empty, too few points, all values equal, non-whole sizes, constant series)
gives NaNs and a reason, never an exception or a warning; a bad *argument* (an alpha range
outside ``(1, inf)``, crossed xmin bounds, negative draws) raises ``ValueError``. Every result
dict carries ``reason`` (``None`` when the numbers are usable); :class:`TailFit` carries
``reasons`` (field name -> why that field is NaN / ``None``).

What ``powerlaw`` 2.0.0 does for ``Fit(data, discrete=True)`` (read from its source; the replica
below follows it step by step):

* xmin candidates are the distinct data values in ``[min, max)`` with the largest of them dropped
  as well, i.e. every distinct value except the two largest (fewer than 2 candidates: NaN fit).
  CSN scan every distinct value; dropping the last two is powerlaw's choice (a KS distance needs
  a few tail values), kept so that the replica and ``powerlaw`` agree. ``xmin_min`` /
  ``xmin_max`` cut this list further (passed to powerlaw as its ``xmin=(lo, hi)`` window).
* For each candidate a ``Power_Law`` is fitted on ``x >= xmin``. Its start value is the
  continuous MLE ``1 + n / sum(log(x / xmin))``, or for ``xmin >= 10`` the CSN approximation
  ``1 + n / sum(log(x / (xmin - 1/2)))`` (eq. 3.7), raised to 1 if below 1. When ``xmin >= 10``
  and that approximation lies in (1.5, 3] it *is* the answer (no numerical fit; the hard-coded 3
  ignores ``parameter_ranges``). Otherwise alpha is the exact discrete MLE found by
  ``scipy.optimize.minimize(method="Nelder-Mead", bounds=[alpha_range], tol=1e-4)`` on
  ``-sum(log(x^-alpha / zeta(alpha, xmin)))`` (normaliser computed as ``1 - (1 - zeta)``). A fit
  is invalid when alpha is not strictly inside the range, within 0.01 of a bound, or when
  Nelder-Mead did not converge.
* KS distance: max |model CDF - empirical CDF| over the distinct data values ``>= xmin``, with
  both CDFs strict (``P(X < x)``; the empirical one renormalised to the tail).
* The chosen xmin minimises KS over the valid candidates (the first one on ties); with no valid
  candidate ``powerlaw`` warns and takes the smallest KS over all of them.
* Default ``parameter_ranges`` for the power law is ``alpha in [0, 3]`` (``Power_Law.
  DEFAULT_PARAMETER_RANGES``): tails steeper than 3 hit the bound and are flagged invalid, which
  pushes xmin to where the tail looks shallower. We always pass an explicit range (CSN have no
  range; a bounded one is a deviation, needed for the Nelder-Mead bounds).
* Standard error of alpha: ``(alpha - 1) / sqrt(n_tail)`` (CSN eq. 3.2, derived for the
  continuous MLE), which is also what ``powerlaw`` reports (``Power_Law.standard_err``, formerly
  ``sigma``) for discrete data. CSN give the exact discrete expression (eq. 3.6, from the second
  derivative of ``log zeta(alpha, xmin)``). We report the approximation, as powerlaw does: it
  is within 1% of eq. 3.6 for ``xmin >= 6`` (alpha <= 3) but too small at ``xmin = 1``, by 6%
  at alpha = 2 and 17% at alpha = 3.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from .phases import TAIL_COLUMNS
from scipy.special import zeta

FIT_KEYS: tuple[str, ...] = (
    "alpha", "alpha_se", "xmin", "ks", "n_tail",
    "lr_lognormal", "p_lognormal", "lr_exponential", "p_exponential",
)
GOF_KEYS: tuple[str, ...] = ("p_value", "alpha", "xmin", "ks", "n_tail")
# the sweep table's tail columns, as TailFit.row() gives them
MIN_POINTS = 10  # fewer sizes (or tail points) than this: NaN with a reason
KMAX_SAMPLE = 1e12  # cutoff of the discrete power-law sampler (values are capped here)

# Constants of the replica (scipy Nelder-Mead defaults in 1-D as called by powerlaw)
_TINY = 10.0 ** sys.float_info.min_10_exp  # powerlaw's floor for likelihoods / out-of-range CDFs
_NM_TOL = 1e-4  # powerlaw passes tol=1e-4 -> xatol = fatol = 1e-4
_NM_MAXFUN = 200  # N * 200 with N = 1 parameter (also maxiter)
_EDGE_EPS = 1e-2  # powerlaw flags a fit within this distance of a range bound


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def _nan_result(keys: Iterable[str], reason: str) -> dict:
    out: dict = {k: float("nan") for k in keys}
    out["reason"] = reason
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence warnings, floating-point warnings and prints (powerlaw chatter)."""
    sink_out, sink_err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(), np.errstate(all="ignore"), contextlib.redirect_stdout(
        sink_out
    ), contextlib.redirect_stderr(sink_err):
        warnings.simplefilter("ignore")
        yield


def _clean_sizes(sizes: Sequence[float] | np.ndarray) -> tuple[np.ndarray, str | None]:
    """Finite positive sizes as float64 (sorted); a reason string when they cannot be fitted."""
    x = np.asarray(sizes, dtype=float).ravel()
    x = np.sort(x[np.isfinite(x) & (x > 0)])
    if x.size < MIN_POINTS:
        return x, f"fewer than {MIN_POINTS} positive sizes ({x.size})"
    odd = x[x != np.round(x)]
    if odd.size:
        return x, (f"sizes must be whole numbers (spike counts) for a discrete fit; {odd.size} of {x.size} "
                   f"are not (e.g. {odd[0]:g})")
    if np.unique(x).size < 4:
        return x, "fewer than 4 distinct sizes: no xmin candidates (powerlaw needs 2)"
    return x, None


def _check_range(alpha_range: Sequence[float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in alpha_range)
    if not (1.0 < lo < hi < np.inf):
        raise ValueError(f"alpha_range must satisfy 1 < lo < hi < inf, got {tuple(alpha_range)}")
    return lo, hi


def _check_xmin_bounds(xmin_min: float | None, xmin_max: float | None) -> None:
    for name, v in (("xmin_min", xmin_min), ("xmin_max", xmin_max)):
        if v is not None and not np.isfinite(float(v)):
            raise ValueError(f"{name} must be a finite number or None, got {v}")
    if xmin_min is not None and xmin_max is not None and float(xmin_min) > float(xmin_max):
        raise ValueError(f"xmin_min ({xmin_min}) must not exceed xmin_max ({xmin_max})")


def _check_draws(name: str, draws: int) -> int:
    if int(draws) != draws or draws < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {draws}")
    return int(draws)


def _candidates(u: np.ndarray, xmin_min: float | None, xmin_max: float | None) -> tuple[int, int]:
    """Index range ``[j0, m)`` of the xmin candidates among the distinct values ``u`` (sorted).

    powerlaw's list is ``u[:-2]`` (see the module docstring); the bounds keep the candidates in
    ``[xmin_min, xmin_max]``. Fewer than 2 candidates: ``(0, 0)`` (powerlaw fits nothing).
    """
    m = max(u.size - 2, 0)
    if xmin_max is not None:
        m = min(m, int(np.searchsorted(u, xmin_max, side="right")))
    j0 = 0 if xmin_min is None else int(np.searchsorted(u, xmin_min, side="left"))
    return (j0, m) if m - j0 >= 2 else (0, 0)


def _no_candidates(xmin_min: float | None, xmin_max: float | None) -> str:
    bounds = "" if xmin_min is None and xmin_max is None else f" in [{xmin_min}, {xmin_max}]"
    return f"fewer than 2 xmin candidates{bounds}"


def _xmin_arg(u: np.ndarray, j0: int, m: int) -> tuple[float, float] | None:
    """``xmin`` argument for ``powerlaw.Fit`` that makes ``u[j0:m]`` its candidates.

    ``powerlaw`` takes the distinct values in ``[lo, hi)`` and drops the largest, so ``lo =
    u[j0]`` and ``hi = u[m + 1]``, the second distinct value above the last wanted candidate.
    ``None`` (powerlaw's default window) when the bounds remove nothing.
    """
    if j0 == 0 and m == u.size - 2:
        return None
    return float(u[j0]), float(u[m + 1])


# ------------------------------------------------------------------------------------------
# powerlaw wrappers
# ------------------------------------------------------------------------------------------


def _powerlaw_fit(x: np.ndarray, alpha_range: tuple[float, float], xmin_min: float | None,
                  xmin_max: float | None):
    """``powerlaw.Fit`` with explicit parameter ranges and xmin window, silenced (call inside
    :func:`_quiet`); ``None`` when fewer than 2 candidates are left."""
    import powerlaw

    u = np.unique(x)
    j0, m = _candidates(u, xmin_min, xmin_max)
    if m == 0:
        return None
    return powerlaw.Fit(
        x, discrete=True, xmin=_xmin_arg(u, j0, m),
        parameter_ranges={"alpha": tuple(alpha_range)}, verbose=0,
    )


def fit_power_law(
    sizes: Sequence[float] | np.ndarray,
    *,
    alpha_range: Sequence[float],
    xmin_min: float | None = None,
    xmin_max: float | None = None,
    compare: bool = True,
) -> dict:
    """Discrete power-law fit of avalanche sizes with ``powerlaw`` (CSN 2009), no p-value.

    Part of :func:`fit_tail`, which adds the goodness-of-fit p-value with the same ranges; use
    this alone for fits that need no p-value (durations).

    The numbers are those of ``powerlaw.Fit(sizes, discrete=True, ...)``. By default the xmin scan
    runs :func:`_scan_xmin`: the vectorised replica ranks every candidate, and ``powerlaw`` fits only
    the candidates that can win (identical numbers, several times faster); where that cannot be
    vouched for, the whole ``powerlaw.Fit`` runs (:func:`_fit_with_powerlaw`, also the reference).

    Parameters
    ----------
    sizes : array_like of int, shape [n]
        Avalanche sizes (whole numbers >= 1); non-finite and non-positive values are dropped.
    alpha_range : (float, float)
        Open interval for alpha passed as ``parameter_ranges`` (powerlaw's default ``[0, 3]``
        biases steep tails).
    xmin_min, xmin_max : float, optional
        Smallest / largest xmin candidate (default: every distinct value but the two largest).
    compare : bool
        Compute the likelihood ratios (False: they are NaN, e.g. for durations, whose ratios
        nothing reads; every other number is the same).

    Returns
    -------
    dict
        ``alpha``, ``alpha_se`` (``(alpha - 1) / sqrt(n_tail)``), ``xmin``, ``ks`` (KS distance
        at xmin), ``n_tail`` (floats), ``lr_lognormal``, ``p_lognormal``, ``lr_exponential``,
        ``p_exponential`` (normalised log-likelihood ratios; positive favours the power law) and
        ``reason``: ``None`` when fine, why the numbers are NaN, or -- with finite numbers -- the
        note that no candidate gave a valid fit and powerlaw fell back to the smallest KS.
    """
    return _fit_power_law(sizes, alpha_range, xmin_min, xmin_max, compare, scan=True)


def _fit_with_powerlaw(sizes, *, alpha_range, xmin_min=None, xmin_max=None, compare=True) -> dict:
    """:func:`fit_power_law` with the whole ``powerlaw.Fit`` (its xmin scan over every candidate): the
    reference the tests hold the pruned scan to, bit for bit."""
    return _fit_power_law(sizes, alpha_range, xmin_min, xmin_max, compare, scan=False)


def _fit_power_law(sizes, alpha_range, xmin_min, xmin_max, compare: bool, scan: bool) -> dict:
    lo_hi = _check_range(alpha_range)
    _check_xmin_bounds(xmin_min, xmin_max)
    x, reason = _clean_sizes(sizes)
    if reason:
        return _nan_result(FIT_KEYS, reason)
    with _quiet():
        found = _scan_xmin(x, lo_hi, xmin_min, xmin_max) if scan else None
        if found is None:  # powerlaw's own scan
            fit = _powerlaw_fit(x, lo_hi, xmin_min, xmin_max)
            if fit is None:
                return _nan_result(FIT_KEYS, _no_candidates(xmin_min, xmin_max))
            alpha, xmin, ks, noise = fit.alpha, fit.xmin, fit.D, fit.noise_flag
        else:
            (alpha, xmin, ks, fit), noise = found, False
        out = {"alpha": float(alpha), "xmin": float(xmin), "ks": float(ks),
               "n_tail": float(np.sum(x >= xmin)) if np.isfinite(xmin) else np.nan}
        if not np.isfinite(out["alpha"]):
            return _nan_result(FIT_KEYS, "powerlaw returned no fit")
        if out["n_tail"] < MIN_POINTS:
            return _nan_result(FIT_KEYS, f"tail above xmin has {int(out['n_tail'])} < {MIN_POINTS} points")
        out["alpha_se"] = (out["alpha"] - 1.0) / np.sqrt(out["n_tail"])  # CSN eq. 3.2 (see module doc)
        if compare and fit is None:  # the tail at the chosen xmin: the same fits as the scan's Fit would make
            fit = _fixed_xmin_fit(x, xmin, lo_hi)
        for name in ("lognormal", "exponential"):
            lr, p = fit.distribution_compare("power_law", name, normalized_ratio=True) if compare else (np.nan,) * 2
            out[f"lr_{name}"], out[f"p_{name}"] = float(lr), float(p)
    out = {k: out[k] for k in FIT_KEYS}
    out["reason"] = ("no xmin candidate gave a valid fit (alpha at the range edge); powerlaw "
                     "fell back to the smallest KS") if noise else None
    return out


# how far above the replica's best KS a candidate is still fitted by powerlaw itself (see _scan_xmin)
SCAN_MARGIN = 1e-2


def _fixed_xmin_fit(x: np.ndarray, xmin: float, alpha_range: tuple[float, float]):
    """``powerlaw.Fit`` of ``x`` with xmin fixed (no scan): its ``fitting_cdf`` is that of all of ``x``
    (as during a scan) and its data the tail ``x >= xmin`` (as after one)."""
    import powerlaw

    return powerlaw.Fit(x, discrete=True, xmin=xmin, parameter_ranges={"alpha": tuple(alpha_range)}, verbose=0)


def _candidate_fit(parent, x: np.ndarray, xmin: float) -> tuple[float, float, bool]:
    """(KS, alpha, valid) of the candidate ``xmin``, exactly as ``powerlaw.Fit.find_xmin``'s
    ``fit_function`` computes them (the same ``Power_Law`` call on all of ``x``, ``parent`` giving
    the data's CDF)."""
    pl = parent.xmin_distribution(xmin=xmin, xmax=parent.xmax, discrete=parent.discrete,
                                  fit_method=parent.fit_method, data=x, parameters=parent.initial_parameters,
                                  parameter_ranges=parent.parameter_ranges,
                                  parameter_constraints=parent.parameter_constraints, parent_Fit=parent,
                                  estimate_discrete=parent.estimate_discrete, verbose=0)
    return pl.D, getattr(pl, "alpha", np.nan), bool(pl.in_range() and not pl.noise_flag)


def _scan_xmin(x: np.ndarray, alpha_range: tuple[float, float], xmin_min: float | None,
               xmin_max: float | None) -> tuple[float, float, float, object] | None:
    """(alpha, xmin, KS) that ``powerlaw.Fit``'s xmin scan picks for the sorted sizes ``x``, the same
    numbers, with ``powerlaw`` fitting only the candidates that can win, and a ``powerlaw.Fit`` with
    that xmin fixed (or None); None when that cannot be vouched for (no candidate, none valid, a NaN
    distance, or a winner too close to the cut), and the caller runs the whole ``powerlaw.Fit``.

    The vectorised replica (:func:`_fit_alphas`, :func:`_ks`) fits every candidate (on the sizes of
    real lattices its alpha, KS and validity equal powerlaw's to the last bit on every candidate:
    ``bench/sweep_row_bench.py`` and the tests check it). ``powerlaw`` then fits the candidates whose
    replica KS lies within ``SCAN_MARGIN`` of the best valid one, valid or not; its winner among them
    (the smallest KS of a valid fit, the first on ties, as powerlaw's masked argmin) must lie at least
    ``SCAN_MARGIN / 2`` below the cut. Every candidate left out then has a replica KS above the cut,
    and an exact KS above the winner's unless the replica's KS is off by ``SCAN_MARGIN / 2``, 5e-3: a
    Nelder-Mead path that parts from scipy's on a rounding (never seen) moves alpha by about its
    tolerance, 1e-4, and the KS by a few times that.
    """
    b = _Batch([x], xmin_min, xmin_max)
    if b.alpha0.size < 2:
        return None
    lo, hi = alpha_range
    with np.errstate(all="ignore"):
        alpha, valid = _fit_alphas(b, lo, hi)
        dist = _ks(b, np.arange(alpha.size), alpha, (alpha > lo) & (alpha < hi))
    if not valid.any() or np.isnan(dist).any():
        return None
    likely = np.flatnonzero(valid)[np.argmin(dist[valid])]  # the replica's pick
    cut = dist[likely] + SCAN_MARGIN
    # any fixed-xmin Fit gives the candidates all of x's CDF; at the likely xmin it also serves the ratios
    parent = _fixed_xmin_fit(x, b.xmin[likely], alpha_range)
    best = None
    for lane in np.flatnonzero(dist <= cut):
        ks, a, ok = _candidate_fit(parent, x, b.xmin[lane])
        if np.isnan(ks):  # powerlaw's argmin would pick a NaN distance: let it
            return None
        if ok and (best is None or ks < best[2]):
            best = (a, b.xmin[lane], ks)
    if best is None or not best[2] <= cut - SCAN_MARGIN / 2:
        return None
    return best + (parent if best[1] == b.xmin[likely] else None,)


# ------------------------------------------------------------------------------------------
# vectorised replica of powerlaw.Fit(discrete=True)
# ------------------------------------------------------------------------------------------


class _Batch:
    """Several data sets and their xmin candidates ("lanes"), flattened for vector work.

    Lane arrays: ``set_id``, ``g0`` (global index of the lane's xmin among the concatenated
    distinct values ``u``), ``g1`` (end of its data set's values), ``n_t`` (tail size),
    ``alpha0`` (powerlaw's start value) and ``sum_log`` (sum of log x over the tail).
    """

    def __init__(self, datasets: Sequence[np.ndarray], xmin_min: float | None,
                 xmin_max: float | None):
        self.n_sets = len(datasets)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in
                                              ("u", "f", "set_id", "g0", "g1", "n_t", "a0", "s")}
        self.lane_start = np.zeros(self.n_sets + 1, dtype=np.int64)
        offset = 0
        for d, data in enumerate(datasets):
            x = np.sort(np.asarray(data, dtype=float))
            u, start = np.unique(x, return_index=True)
            j0, m = _candidates(u, xmin_min, xmin_max)
            k = m - j0
            a0, s = _start_values(x, u[j0:m], start[j0:m])
            for key, val in (("u", u), ("f", start / x.size), ("set_id", np.full(k, d)),
                             ("g0", offset + np.arange(j0, m)), ("g1", np.full(k, offset + u.size)),
                             ("n_t", x.size - start[j0:m]), ("a0", a0), ("s", s)):
                parts[key].append(val)
            offset += u.size
            self.lane_start[d + 1] = self.lane_start[d] + k
        cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
        self.u, self.f = cat["u"], cat["f"]  # f: strict empirical CDF P(X < u), as powerlaw.cdf
        self.set_id, self.g0, self.g1, self.n_t = (cat[k].astype(np.int64)
                                                   for k in ("set_id", "g0", "g1", "n_t"))
        self.alpha0, self.sum_log = cat["a0"], cat["s"]
        self.xmin = self.u[self.g0]

    def lanes(self, d: int) -> np.ndarray:
        """Lane indices of data set ``d`` (contiguous)."""
        return np.arange(self.lane_start[d], self.lane_start[d + 1])


def _start_values(x: np.ndarray, xmins: np.ndarray, start: np.ndarray):
    """powerlaw's start alpha and the tail's sum(log x) for every candidate xmin.

    Start value as ``Power_Law.generate_initial_parameters`` with the same numpy calls (so the
    same bits): CSN eq. 3.7 ``1 + n / sum(log(x / (xmin - 1/2)))`` for ``xmin >= 10``, the
    continuous MLE otherwise, 1 if below 1.
    """
    a0 = np.empty(xmins.size)
    add, log, n = np.add.reduce, np.log, x.size  # np.sum's reduction without its Python wrapper (same bits)
    for j, (c, i) in enumerate(zip(xmins.tolist(), start.tolist())):
        a0[j] = 1 + (n - i) / add(log(x[i:] / (c - 0.5 if c >= 10 else c)))
    suffix = np.cumsum(np.log(x)[::-1])[::-1]
    return np.where(a0 < 1, 1.0, a0), suffix[start]


def _neg_loglik(a: np.ndarray, s: np.ndarray, n_t: np.ndarray, c: np.ndarray,
                lo: float, hi: float) -> np.ndarray:
    """Nelder-Mead cost of powerlaw's discrete fit, ``-sum log(x^-a / zeta(a, xmin))``.

    Same formula (normaliser ``1 / (1 - (1 - zeta))``, floor ``_TINY`` outside the range),
    evaluated through the sufficient statistic ``s = sum(log x)``.
    """
    inside = (a > lo) & (a < hi)
    cdf_xmin = 1.0 - zeta(a, c)
    norm = 1.0 / (1.0 - cdf_xmin)
    return np.where(inside, a * s - n_t * np.log(norm), -n_t * np.log(_TINY))


def _sort_pair(s0, s1, f0, f1, idx):
    """scipy's ``argsort(fsim)`` on two vertices (stable; NaN last)."""
    swap = (f1[idx] < f0[idx]) | (np.isnan(f0[idx]) & ~np.isnan(f1[idx]))
    k = idx[swap]
    s0[k], s1[k] = s1[k], s0[k].copy()
    f0[k], f1[k] = f1[k], f0[k].copy()


def _nelder_mead(cost, x0: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Lock-step replica of ``scipy.optimize.minimize(method='Nelder-Mead')`` in 1-D.

    ``cost(idx, x)`` evaluates the lanes ``idx`` at points ``x``. Bounds clip every vertex,
    ``xatol = fatol = 1e-4``, ``maxiter = maxfev = 200``; the arithmetic of every vertex is the
    same as scipy's, so each lane follows scipy's path. Returns ``(x, success)``.
    """
    x0 = np.clip(x0, lo, hi)
    s0 = x0.copy()
    s1 = np.where(x0 != 0, (1 + 0.05) * x0, 0.00025)
    s1 = np.clip(np.where(s1 > hi, 2 * hi - s1, s1), lo, hi)
    every = np.arange(x0.size)
    f0, f1 = cost(every, s0), cost(every, s1)
    calls = np.full(x0.size, 2)
    iters = np.ones(x0.size, dtype=np.int64)
    _sort_pair(s0, s1, f0, f1, every)
    while True:
        run = (calls < _NM_MAXFUN) & (iters < _NM_MAXFUN)
        run &= ~((np.abs(s1 - s0) <= _NM_TOL) & (np.abs(f0 - f1) <= _NM_TOL))
        idx = np.flatnonzero(run)
        if idx.size == 0:
            break
        _nm_iteration(cost, idx, s0, s1, f0, f1, calls, iters, lo, hi)
        _sort_pair(s0, s1, f0, f1, idx)
    return s0, (calls < _NM_MAXFUN) & (iters < _NM_MAXFUN)


def _nm_iteration(cost, idx, s0, s1, f0, f1, calls, iters, lo, hi) -> None:
    """One Nelder-Mead iteration on lanes ``idx`` (reflect, then expand / contract / shrink)."""
    xbar, last = s0[idx], s1[idx]
    xr = np.clip((1 + 1) * xbar - 1 * last, lo, hi)
    fxr = cost(idx, xr)
    calls[idx] += 1
    expand = fxr < f0[idx]
    outside = ~expand & (fxr < f1[idx])
    x2 = np.where(expand, 3 * xbar - 2 * last,
                  np.where(outside, 1.5 * xbar - 0.5 * last, 0.5 * xbar + 0.5 * last))
    x2 = np.clip(x2, lo, hi)
    ok = calls[idx] < _NM_MAXFUN  # scipy raises before a call over budget: lane stops as is
    f2 = np.full(idx.size, np.nan)
    f2[ok] = cost(idx[ok], x2[ok])
    calls[idx[ok]] += 1
    take_e = ok & expand & (f2 < fxr)
    take_r = ok & expand & ~(f2 < fxr)
    take_c = ok & ~expand & np.where(outside, f2 <= fxr, f2 < f1[idx])
    shrink = ok & ~expand & ~take_c
    s1[idx[take_e]], f1[idx[take_e]] = x2[take_e], f2[take_e]
    s1[idx[take_r]], f1[idx[take_r]] = xr[take_r], fxr[take_r]
    s1[idx[take_c]], f1[idx[take_c]] = x2[take_c], f2[take_c]
    done = ok & ~shrink
    k = idx[shrink]
    s1[k] = np.clip(s0[k] + 0.5 * (s1[k] - s0[k]), lo, hi)
    ok3 = calls[k] < _NM_MAXFUN
    f1[k[ok3]] = cost(k[ok3], s1[k[ok3]])
    calls[k[ok3]] += 1
    iters[idx[done]] += 1
    iters[k[ok3]] += 1


def _fit_alphas(b: _Batch, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """alpha and validity of every lane, as powerlaw's per-candidate ``Power_Law`` fit."""
    alpha = b.alpha0.copy()
    direct = (b.xmin >= 10) & (b.alpha0 > 1.5) & (b.alpha0 <= 3)
    valid = direct & (alpha > lo) & (alpha < hi)
    nm = np.flatnonzero(~direct)
    if nm.size:
        s, n_t, c = b.sum_log[nm], b.n_t[nm], b.xmin[nm]

        def cost(i: np.ndarray, a: np.ndarray) -> np.ndarray:
            return _neg_loglik(a, s[i], n_t[i], c[i], lo, hi)

        a_nm, success = _nelder_mead(cost, b.alpha0[nm], lo, hi)
        alpha[nm] = a_nm
        inside = (a_nm > lo) & (a_nm < hi)
        near_edge = (a_nm - _EDGE_EPS < lo) | (a_nm + _EDGE_EPS > hi)
        valid[nm] = inside & success & ~near_edge
    return alpha, valid


def _ks(b: _Batch, lanes: np.ndarray, alpha: np.ndarray, valid_range: np.ndarray,
        offsets: np.ndarray | None = None) -> np.ndarray:
    """KS distance of ``lanes`` (all tail bins, or only bins at ``offsets`` from xmin).

    Same arithmetic as ``Distribution.compute_distance_metrics``, so a lower bound computed on
    a subset of bins never exceeds the full distance.
    """
    g0, g1 = b.g0[lanes], b.g1[lanes]
    if offsets is None:
        lengths = g1 - g0
        pos = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    else:
        keep = offsets[None, :] < (g1 - g0)[:, None]
        lengths = keep.sum(axis=1)
        pos = np.broadcast_to(offsets, keep.shape)[keep]
    rep = np.repeat(np.arange(lanes.size), lengths)
    g = np.repeat(g0, lengths) + pos
    f_start = b.f[g0][rep]
    empirical = (b.f[g] - f_start) / (1 - f_start)
    a = alpha[lanes]
    cdf_xmin = 1 - zeta(a, b.u[g0])
    model = ((1 - zeta(a[rep], b.u[g])) - cdf_xmin[rep]) / (1 - cdf_xmin[rep])
    model = np.where((cdf_xmin == 1)[rep], 1.0, model)
    model = np.where(valid_range[lanes][rep], model, _TINY)
    diff = model - empirical
    seg = np.cumsum(lengths) - lengths
    d_plus, d_minus = np.maximum.reduceat(diff, seg), -np.minimum.reduceat(diff, seg)
    return np.where(d_minus > d_plus, d_minus, d_plus)


_LB_OFFSETS = np.unique(np.r_[np.arange(8), np.geomspace(8, 1e9, 60).astype(np.int64)])


def _select_xmin(b: _Batch, alpha: np.ndarray, valid: np.ndarray,
                 in_range: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """KS of the candidates that can win, and the winning lane per data set (powerlaw's rule).

    Lower bounds from a few bins rank the candidates; exact KS is computed for the two best
    valid ones, then for every candidate whose bound does not exceed the best exact KS. The
    argmin over valid candidates (first index on ties) is therefore unchanged.
    """
    lower = _ks(b, np.arange(alpha.size), alpha, in_range, _LB_OFFSETS)
    dist = np.full(alpha.size, np.inf)
    done = np.zeros(alpha.size, dtype=bool)
    for pick in (_first_pick, _second_pick):
        todo = np.concatenate([pick(b.lanes(d), lower, valid, dist, done)
                               for d in range(b.n_sets)]).astype(np.int64)
        if todo.size:
            dist[todo], done[todo] = _ks(b, todo, alpha, in_range), True
    return dist, [_winner(b.lanes(d), dist, valid) for d in range(b.n_sets)]


def _first_pick(lanes, lower, valid, dist, done) -> np.ndarray:
    ok = lanes[valid[lanes]]
    if ok.size == 0 or np.isnan(lower[lanes]).any():
        return lanes  # powerlaw's fallback (argmin over all) or odd values: compute all
    return ok[np.argsort(lower[ok], kind="stable")[:2]]


def _second_pick(lanes, lower, valid, dist, done) -> np.ndarray:
    ok = lanes[valid[lanes] & done[lanes]]
    if ok.size == 0:
        return lanes[:0]
    return lanes[~done[lanes] & ~(lower[lanes] > np.min(dist[ok]))]


def _winner(lanes: np.ndarray, dist: np.ndarray, valid: np.ndarray) -> int:
    """powerlaw's choice: masked argmin over valid candidates, else argmin over all."""
    if lanes.size == 0:
        return -1
    if valid[lanes].any():
        return int(lanes[np.ma.masked_array(dist[lanes], mask=~valid[lanes]).argmin()])
    return int(lanes[np.argmin(dist[lanes])])


def _fast_fits(datasets: Sequence[np.ndarray], alpha_range: tuple[float, float],
               xmin_min: float | None, xmin_max: float | None) -> np.ndarray:
    """[n_sets, 4] array of (alpha, xmin, ks, n_tail) from the replica (NaN when no fit)."""
    lo, hi = alpha_range
    b = _Batch(datasets, xmin_min, xmin_max)
    out = np.full((b.n_sets, 4), np.nan)
    if b.alpha0.size == 0:
        return out
    with np.errstate(all="ignore"):
        alpha, valid = _fit_alphas(b, lo, hi)
        dist, winners = _select_xmin(b, alpha, valid, (alpha > lo) & (alpha < hi))
    for d, w in enumerate(winners):
        if w >= 0:
            out[d] = alpha[w], b.xmin[w], dist[w], b.n_t[w]
    return out


def fast_discrete_fit(
    sizes: Sequence[float] | np.ndarray,
    *,
    alpha_range: Sequence[float],
    xmin_min: float | None = None,
    xmin_max: float | None = None,
) -> dict:
    """Vectorised replica of ``powerlaw.Fit(sizes, discrete=True, parameter_ranges=...)``.

    Reproduces powerlaw's xmin, alpha and KS distance (see the module docstring for the steps);
    used by :func:`gof_pvalue` to refit the data and the synthetic data sets.

    Parameters
    ----------
    sizes : array_like of int, shape [n]
        Data (whole numbers >= 1).
    alpha_range : (float, float)
        Open interval for alpha.
    xmin_min, xmin_max : float, optional
        Smallest / largest xmin candidate.

    Returns
    -------
    dict
        ``alpha``, ``xmin``, ``ks``, ``n_tail`` (floats) and ``reason``.
    """
    keys = ("alpha", "xmin", "ks", "n_tail")
    lo_hi = _check_range(alpha_range)
    _check_xmin_bounds(xmin_min, xmin_max)
    x, reason = _clean_sizes(sizes)
    if reason:
        return _nan_result(keys, reason)
    row = _fast_fits([x], lo_hi, xmin_min, xmin_max)[0]
    if not np.isfinite(row[0]):
        return _nan_result(keys, _no_candidates(xmin_min, xmin_max))
    return {**dict(zip(keys, (float(v) for v in row))), "reason": None}


# ------------------------------------------------------------------------------------------
# CSN bootstrap goodness of fit
# ------------------------------------------------------------------------------------------


def sample_discrete_power_law(
    rng: np.random.Generator, alpha: float, xmin: float, size: int, kmax: float = KMAX_SAMPLE
) -> np.ndarray:
    """Exact inverse-CDF draws from ``P(X = k) = k^-alpha / zeta(alpha, xmin)``, ``k >= xmin``.

    ``X = max{k : zeta(alpha, k) > u * zeta(alpha, xmin)}`` for ``u ~ U[0, 1)``, found from the
    large-k approximation of the tail and corrected by unit steps against the Hurwitz zeta
    tail (exact up to floating point). Values are capped at ``kmax``: unlike CSN's sampler the
    law is truncated there (the mass beyond, ``~ (kmax / xmin)^(1 - alpha)``, lands on
    ``kmax``), which bounds time and memory; with the default cap it is below ``1e-6`` for
    ``alpha >= 1.5``, ``xmin = 1``, but not negligible for alpha close to 1.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the uniforms (``size`` draws).
    alpha : float
        Exponent, finite and > 1 (the normaliser ``zeta(alpha, xmin)`` diverges at alpha <= 1).
    xmin : int or whole float
        Lower bound, a whole number >= 1.
    size : int
        Number of draws (>= 0).
    kmax : float
        Cutoff (>= xmin).

    Returns
    -------
    numpy.ndarray of int64, shape [size]

    Raises
    ------
    ValueError
        For alpha <= 1 or not finite, a non-whole or non-positive xmin, a negative or non-whole
        size, or ``kmax < xmin``.
    """
    alpha, xmin_f, kmax = float(alpha), float(xmin), float(kmax)
    if not (np.isfinite(alpha) and alpha > 1.0):
        raise ValueError(f"alpha must be a finite number > 1 (zeta(alpha, xmin) diverges at alpha <= 1), "
                         f"got {alpha}")
    if not (np.isfinite(xmin_f) and xmin_f >= 1.0 and xmin_f == np.floor(xmin_f)):
        raise ValueError(f"xmin must be a whole number >= 1 (the law lives on the integers >= xmin), got {xmin}")
    if not kmax >= xmin_f:
        raise ValueError(f"kmax ({kmax:g}) must be >= xmin ({xmin_f:g})")
    if int(size) != size or size < 0:
        raise ValueError(f"size must be a whole number >= 0, got {size}")
    xmin, size = xmin_f, int(size)
    u = rng.random(size)
    target = u * zeta(alpha, xmin)
    with np.errstate(all="ignore"):
        # large-k form of the tail, zeta(a, k) ~ (k - 1/2)^(1 - a) / (a - 1), as first guess
        k = np.floor(0.5 + (target * (alpha - 1.0)) ** (-1.0 / (alpha - 1.0)))
    k = np.clip(np.nan_to_num(k, nan=kmax, posinf=kmax), xmin, kmax)
    idx = np.arange(size)
    while idx.size:  # too far out: P(X >= k) <= u
        idx = idx[(k[idx] > xmin) & (zeta(alpha, k[idx]) <= target[idx])]
        k[idx] -= 1
    idx = np.arange(size)
    while idx.size:  # not far enough: P(X >= k + 1) > u
        idx = idx[(k[idx] < kmax) & (zeta(alpha, k[idx] + 1) > target[idx])]
        k[idx] += 1
    return k.astype(np.int64)


def _synthetic_sets(rng: np.random.Generator, x: np.ndarray, alpha: float, xmin: float,
                    draws: int) -> Iterator[np.ndarray]:
    """CSN semi-parametric bootstrap data sets (same stream for the fast and the naive path)."""
    below = x[x < xmin].astype(np.int64)
    p_tail = np.sum(x >= xmin) / x.size
    for _ in range(draws):
        m = int(rng.binomial(x.size, p_tail))
        tail = sample_discrete_power_law(rng, alpha, xmin, m)
        body = rng.choice(below, size=x.size - m) if below.size else np.zeros(0, np.int64)
        yield np.concatenate([body, tail])


def _gof_start(sizes, gof_draws, alpha_range, xmin_min, xmin_max):
    """Checked arguments and cleaned sizes of the p-value functions; a reason when skipped."""
    lo_hi = _check_range(alpha_range)
    _check_xmin_bounds(xmin_min, xmin_max)
    draws = _check_draws("gof_draws", gof_draws)
    x, reason = _clean_sizes(sizes)
    if not reason and draws == 0:
        reason = "goodness-of-fit bootstrap skipped (gof_draws = 0)"
    return lo_hi, draws, x, reason


def _gof_fit(alpha, xmin, ks, n_tail, xmin_min, xmin_max) -> tuple[dict, str | None]:
    """The fit of the data a p-value refers to, and a reason when it cannot be tested."""
    fit = {"alpha": float(alpha), "xmin": float(xmin), "ks": float(ks), "n_tail": float(n_tail)}
    if not np.isfinite(fit["ks"]):
        return fit, _no_candidates(xmin_min, xmin_max)
    if not fit["n_tail"] >= MIN_POINTS:
        return fit, f"tail above xmin has {int(fit['n_tail'])} < {MIN_POINTS} points"
    return fit, None


def gof_pvalue(
    sizes: Sequence[float] | np.ndarray,
    *,
    gof_draws: int,
    seed: int,
    alpha_range: Sequence[float],
    xmin_min: float | None = None,
    xmin_max: float | None = None,
    batch: int = 50,
) -> dict:
    """Clauset-Shalizi-Newman bootstrap goodness-of-fit p-value of the discrete power law.

    Part of :func:`fit_tail`, which passes it the fit's ``alpha_range`` and xmin bounds.

    The data are fitted with the vectorised replica of ``powerlaw.Fit`` (equal to
    :func:`fit_power_law`'s alpha and KS to ~1e-9 relative, the same xmin), so the observed KS
    distance and the synthetic ones come from the same code. Each synthetic set has ``n``
    points: with probability ``n_tail / n`` a draw from the fitted power law above xmin,
    otherwise a resample of the data below xmin. It is refitted by the same procedure (xmin by
    KS over the same candidate rule and bounds, MLE alpha in ``alpha_range``); ``p`` is the
    fraction of synthetic KS distances ``>=`` the empirical one. Equal to
    :func:`naive_gof_pvalue` for the same arguments. Deviation from CSN: the synthetic fits are
    held to ``alpha_range`` and the xmin bounds, as the data's fit is (CSN have neither).

    Parameters
    ----------
    sizes : array_like of int, shape [n]
        Avalanche sizes (whole numbers >= 1).
    gof_draws : int
        Number of synthetic data sets (0: skipped, NaN with a reason).
    seed : int
        Seed of the ``numpy.random.Generator``.
    alpha_range : (float, float)
        Open interval for alpha.
    xmin_min, xmin_max : float, optional
        Smallest / largest xmin candidate, applied to every fit.
    batch : int
        Synthetic sets fitted together (memory / speed trade-off only).

    Returns
    -------
    dict
        ``p_value`` (a multiple of ``1 / gof_draws``), the replica's fit of the data it tests
        (``alpha``, ``xmin``, ``ks``, ``n_tail``; floats) and ``reason`` (``None``, or why
        ``p_value`` is NaN).
    """
    lo_hi, draws, x, reason = _gof_start(sizes, gof_draws, alpha_range, xmin_min, xmin_max)
    if reason:
        return _nan_result(GOF_KEYS, reason)
    fit, reason = _gof_fit(*_fast_fits([x], lo_hi, xmin_min, xmin_max)[0], xmin_min, xmin_max)
    if reason:
        return _nan_result(GOF_KEYS, reason)
    sets = _synthetic_sets(np.random.default_rng(seed), x, fit["alpha"], fit["xmin"], draws)
    hits = 0
    while chunk := list(itertools.islice(sets, batch)):
        hits += int(np.sum(_fast_fits(chunk, lo_hi, xmin_min, xmin_max)[:, 2] >= fit["ks"]))
    return {"p_value": hits / draws, **fit, "reason": None}


def naive_gof_pvalue(
    sizes: Sequence[float] | np.ndarray,
    *,
    gof_draws: int,
    seed: int,
    alpha_range: Sequence[float],
    xmin_min: float | None = None,
    xmin_max: float | None = None,
) -> dict:
    """Reference for :func:`gof_pvalue`: the same bootstrap, one ``powerlaw.Fit`` per data set.

    Parameters and return value as :func:`gof_pvalue` (the fit is powerlaw's; slow, for tests
    and the benchmark).
    """
    lo_hi, draws, x, reason = _gof_start(sizes, gof_draws, alpha_range, xmin_min, xmin_max)
    if reason:
        return _nan_result(GOF_KEYS, reason)
    with _quiet():
        pl = _powerlaw_fit(x, lo_hi, xmin_min, xmin_max)
        row = (np.nan,) * 3 if pl is None else (pl.alpha, pl.xmin, pl.D)
        n_tail = np.sum(x >= row[1]) if np.isfinite(row[1]) else np.nan
        fit, reason = _gof_fit(*row, n_tail, xmin_min, xmin_max)
        if reason:
            return _nan_result(GOF_KEYS, reason)
        sets = _synthetic_sets(np.random.default_rng(seed), x, fit["alpha"], fit["xmin"], draws)
        hits = 0
        for s in sets:
            refit = _powerlaw_fit(s.astype(float), lo_hi, xmin_min, xmin_max)
            hits += refit is not None and float(refit.D) >= fit["ks"]
    return {"p_value": hits / draws, **fit, "reason": None}


# ------------------------------------------------------------------------------------------
# the one call: fit, standard error, p-value and likelihood ratios with the same ranges
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TailFit:
    """Everything :func:`fit_tail` reports on one size distribution (immutable).

    Attributes
    ----------
    alpha : float
        MLE exponent of the discrete power law above ``xmin`` (``powerlaw``).
    alpha_se : float
        Its standard error ``(alpha - 1) / sqrt(n_tail)`` (CSN eq. 3.2; what ``powerlaw``
        reports as ``standard_err`` / ``sigma``; see the module docstring).
    xmin, n_tail : int or None
        Lower bound of the tail (a data value) and the number of sizes ``>= xmin``; ``None``
        when there is no fit.
    ks : float
        KS distance between the tail and the fitted law.
    p_value : float
        CSN bootstrap goodness-of-fit p-value (``gof_draws`` synthetic sets), computed with the
        same ``alpha_range`` and xmin bounds as the fit; NaN when skipped or untestable.
    lr_lognormal, p_lognormal, lr_exponential, p_exponential : float
        Normalised log-likelihood ratios power law vs the alternative (positive favours the
        power law) and their two-sided p-values.
    n : int
        Sizes used (finite and positive).
    alpha_range, xmin_min, xmin_max, gof_draws, seed
        The settings every number above was computed with.
    reasons : Mapping[str, str]
        Field name -> why that field is NaN (or ``None``); empty when every number is defined.
    warning : str or None
        A caveat on finite numbers (powerlaw's fallback when no xmin candidate gave a valid
        fit; a disagreement between ``powerlaw`` and the replica the p-value is based on).
    """

    alpha: float
    alpha_se: float
    xmin: int | None
    n_tail: int | None
    ks: float
    p_value: float
    lr_lognormal: float
    p_lognormal: float
    lr_exponential: float
    p_exponential: float
    n: int
    alpha_range: tuple[float, float]
    xmin_min: float | None
    xmin_max: float | None
    gof_draws: int
    seed: int
    reasons: Mapping[str, str] = field(default_factory=dict, hash=False)  # a read-only mapping
    warning: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "reasons", MappingProxyType(dict(self.reasons)))

    def row(self) -> dict[str, float]:
        """The sweep table's tail columns (:data:`TAIL_COLUMNS`) as floats (NaN for ``None``)."""
        return {k: float("nan") if getattr(self, k) is None else float(getattr(self, k))
                for k in TAIL_COLUMNS}


def fit_tail(
    sizes: Sequence[float] | np.ndarray,
    *,
    alpha_range: Sequence[float],
    gof_draws: int,
    seed: int,
    xmin_min: float | None = None,
    xmin_max: float | None = None,
    batch: int = 50,
) -> TailFit:
    """Discrete power-law fit, standard error, bootstrap p-value and likelihood ratios in one call.

    :func:`fit_power_law` (``powerlaw``: xmin, alpha, KS, likelihood ratios), then -- when the
    fit is finite and ``gof_draws > 0`` -- :func:`gof_pvalue` with the *same* ``alpha_range``,
    ``xmin_min`` and ``xmin_max``, so the p-value tests the procedure that produced the fit.

    Parameters
    ----------
    sizes : array_like of int, shape [n]
        Avalanche sizes (whole numbers >= 1); non-finite and non-positive values are dropped.
    alpha_range : (float, float)
        Open interval for alpha, ``1 < lo < hi < inf``.
    gof_draws : int
        Synthetic data sets of the bootstrap (0: skip it; ``p_value`` NaN with a reason).
    seed : int
        Seed of the bootstrap's ``numpy.random.Generator``.
    xmin_min, xmin_max : float, optional
        Smallest / largest xmin candidate (``None``: no bound).
    batch : int
        Synthetic sets refitted together (speed / memory only).

    Returns
    -------
    TailFit
    """
    lo_hi = _check_range(alpha_range)
    _check_xmin_bounds(xmin_min, xmin_max)
    draws = _check_draws("gof_draws", gof_draws)
    fit = fit_power_law(sizes, alpha_range=lo_hi, xmin_min=xmin_min, xmin_max=xmin_max)
    ok = bool(np.isfinite(fit["alpha"]))
    reasons: dict[str, str] = {} if ok else {k: fit["reason"] for k in FIT_KEYS}
    warning = fit["reason"] if ok else None
    p_value = float("nan")
    if not ok:
        reasons["p_value"] = f"no power-law fit ({fit['reason']})"
    elif draws == 0:
        reasons["p_value"] = "goodness-of-fit bootstrap skipped (gof_draws = 0)"
    else:
        gof = gof_pvalue(sizes, gof_draws=draws, seed=seed, alpha_range=lo_hi,
                         xmin_min=xmin_min, xmin_max=xmin_max, batch=batch)
        p_value = gof["p_value"]
        if gof["reason"]:
            reasons["p_value"] = gof["reason"]
        elif gof["xmin"] != fit["xmin"] or not np.isclose(gof["alpha"], fit["alpha"], rtol=1e-6, atol=0):
            # never seen (the replica is tested against powerlaw); say so rather than hide it
            note = (f"the p-value's fit (replica: alpha {gof['alpha']:.6g}, xmin {gof['xmin']:g}) differs "
                    f"from powerlaw's (alpha {fit['alpha']:.6g}, xmin {fit['xmin']:g})")
            warning = note if warning is None else f"{warning}; {note}"
    for k in ("lr_lognormal", "p_lognormal", "lr_exponential", "p_exponential"):
        if ok and not np.isfinite(fit[k]):
            reasons[k] = "powerlaw's likelihood-ratio comparison returned NaN"
    x = np.asarray(sizes, dtype=float).ravel()
    num = {k: float(fit[k]) for k in FIT_KEYS}  # Python floats, not numpy scalars
    return TailFit(
        alpha=num["alpha"], alpha_se=num["alpha_se"],
        xmin=int(fit["xmin"]) if ok else None, n_tail=int(fit["n_tail"]) if ok else None,
        ks=num["ks"], p_value=float(p_value),
        lr_lognormal=num["lr_lognormal"], p_lognormal=num["p_lognormal"],
        lr_exponential=num["lr_exponential"], p_exponential=num["p_exponential"],
        n=int(np.sum(np.isfinite(x) & (x > 0))), alpha_range=lo_hi,
        xmin_min=xmin_min, xmin_max=xmin_max, gof_draws=draws, seed=int(seed),
        reasons=reasons, warning=warning,
    )


# ------------------------------------------------------------------------------------------
# seed comparison fit, crackling relation
# ------------------------------------------------------------------------------------------


def continuous_fit_p80(sizes: Sequence[float] | np.ndarray) -> dict:
    """The seed paper's fit: continuous power-law MLE with xmin at the 80th percentile.

    ``alpha = 1 + n / sum(log(x / xmin))`` over ``x >= xmin``, ``xmin = np.percentile(sizes, 80)``
    (linear interpolation). Reported only as a comparison with :func:`fit_power_law`.

    Parameters
    ----------
    sizes : array_like
        Avalanche sizes (> 0).

    Returns
    -------
    dict
        ``alpha_c``, ``xmin_c`` and ``reason``.
    """
    keys = ("alpha_c", "xmin_c")
    x = np.asarray(sizes, dtype=float).ravel()
    x = x[np.isfinite(x) & (x > 0)]
    if x.size < MIN_POINTS:
        return _nan_result(keys, f"fewer than {MIN_POINTS} positive sizes ({x.size})")
    xmin = float(np.percentile(x, 80))
    tail = x[x >= xmin]
    total = float(np.sum(np.log(tail / xmin)))
    if tail.size < MIN_POINTS or total <= 0:
        return _nan_result(keys, "tail above the 80th percentile is too small or constant")
    return {"alpha_c": 1.0 + tail.size / total, "xmin_c": xmin, "reason": None}


def predicted_gamma(alpha_size: float, alpha_duration: float) -> float:
    """Exponent relation ``gamma = (alpha_D - 1) / (alpha_S - 1)`` (NaN if undefined).

    Parameters
    ----------
    alpha_size, alpha_duration : float
        Tail exponents of the size and duration distributions.

    Returns
    -------
    float
    """
    a_s, a_d = float(alpha_size), float(alpha_duration)
    if not (np.isfinite(a_s) and np.isfinite(a_d)) or a_s == 1.0:
        return float("nan")
    return (a_d - 1.0) / (a_s - 1.0)


def _slopes(logd: np.ndarray, mean_size: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Least-squares slopes of log mean size on log D, one per row, over present D values."""
    w = present.astype(float)
    count = w.sum(axis=1)
    with np.errstate(all="ignore"):
        y = np.where(present, np.log(np.where(present, mean_size, 1.0)), 0.0)
        mx = (w * logd).sum(axis=1) / count
        my = (w * y).sum(axis=1) / count
        dx = (logd[None, :] - mx[:, None]) * w
        slope = (dx * (y - my[:, None])).sum(axis=1) / (dx * dx).sum(axis=1)
    return np.where(count >= 3, slope, np.nan)


def crackling(
    sizes: Sequence[float] | np.ndarray,
    durations: Sequence[float] | np.ndarray,
    *,
    bootstrap_draws: int,
    seed: int,
    d_range: tuple[int, int] = (3, 64),
) -> dict:
    """Size-duration scaling ``E[size | D] ~ D^gamma`` with a bootstrap 95% interval.

    Least squares of log mean size on log D over the durations in ``d_range`` (inclusive) that
    occur, at least 3 distinct ones. The bootstrap resamples the avalanches in ``d_range`` (all
    replicates at once); replicates with fewer than 3 durations are skipped.

    Parameters
    ----------
    sizes, durations : array_like, shape [n avalanches]
        Per-avalanche size (> 0) and token duration ``D`` (``t_span``, tokens).
    d_range : (int, int)
        Durations used.
    bootstrap_draws : int
        Bootstrap replicates (0: no interval, NaN with a reason).
    seed : int
        Seed of the ``numpy.random.Generator``.

    Returns
    -------
    dict
        ``gamma``, ``gamma_lo``, ``gamma_hi`` (2.5 / 97.5 percentiles) and ``reason``.
    """
    keys = ("gamma", "gamma_lo", "gamma_hi")
    draws = _check_draws("bootstrap_draws", bootstrap_draws)
    s = np.asarray(sizes, dtype=float).ravel()
    d = np.asarray(durations, dtype=float).ravel()
    if s.shape != d.shape:
        raise ValueError(f"sizes and durations differ in length ({s.size} vs {d.size})")
    keep = (d >= d_range[0]) & (d <= d_range[1]) & np.isfinite(s) & (s > 0)
    s, d = s[keep], d[keep]
    values, code = np.unique(d, return_inverse=True)
    if values.size < 3:
        return _nan_result(keys, f"fewer than 3 distinct durations in {tuple(d_range)}")
    logd = np.log(values)
    mean = np.bincount(code, weights=s) / np.bincount(code)
    gamma = float(_slopes(logd, mean[None, :], np.ones((1, values.size), bool))[0])
    boot = _crackling_boot(np.random.default_rng(seed), s, code, logd, draws)
    boot = boot[np.isfinite(boot)]
    if not boot.size:  # NaN interval: say why, as for every NaN result
        why = "no bootstrap replicate with 3 durations" if draws else "bootstrap_draws = 0: no interval"
        return {"gamma": gamma, **_nan_result(keys[1:], why)}
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"gamma": gamma, "gamma_lo": float(lo), "gamma_hi": float(hi), "reason": None}


def _crackling_boot(rng: np.random.Generator, s: np.ndarray, code: np.ndarray,
                    logd: np.ndarray, draws: int, max_cells: int = 4_000_000) -> np.ndarray:
    """Bootstrap slopes: rows of resampled avalanches, reduced per duration with bincount."""
    n, n_d = s.size, logd.size
    rows = max(1, max_cells // max(n, 1))
    out = []
    for start in range(0, draws, rows):
        r = min(rows, draws - start)
        idx = rng.integers(0, n, size=(r, n))
        cell = (np.arange(r)[:, None] * n_d + code[idx]).ravel()
        count = np.bincount(cell, minlength=r * n_d).reshape(r, n_d)
        total = np.bincount(cell, weights=s[idx].ravel(), minlength=r * n_d).reshape(r, n_d)
        with np.errstate(all="ignore"):
            out.append(_slopes(logd, total / count, count > 0))
    return np.concatenate(out) if out else np.zeros(0)

