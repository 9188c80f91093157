"""Fits of how a layer's massive-activation ratio evolves over training (seed 003, DESIGN.md §5).

The 5-parameter model ``f(t) = A exp(-lambda x) log(x) + K`` with ``x = gamma t + t0`` is fitted in
its reparametrised form ``f(t) = exp(-beta t) [A1 log(t + tau0) + A2] + K`` (``beta = lambda gamma``,
``tau0 = t0 / gamma``, ``A1 = A exp(-lambda t0)``, ``A2 = A1 log gamma``) by trust-region-reflective
least squares with an analytic Jacobian and ``beta >= 0`` (i.e. ``lambda >= 0``), on min-max normalised
data, from the paper's initial guess. The alternatives are the first-order step response
``K (1 - exp(-t / tau))`` and the second-order step response (under-, critically and over-damped)
as the paper states them, each plus a free offset ``c``: the ratio does not start at 0, and without
it the step forms lose every comparison on the early checkpoints alone. Every fit reports R² and AIC (``n log(RSS / n) + 2 k``) in the
data's own units; a fit that cannot be made is returned as failed, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from scipy.optimize import curve_fit
from scipy.special import lambertw

from .phases import FIT_PARAMETERS

MODELS = ("ma5", "step1", "step2_under", "step2_critical", "step2_over")
_TINY = 1e-9
MIN_DOF = 3  # residual degrees of freedom a fit needs: checkpoints >= parameters + 3


# --------------------------------------------------------------------------------------------------
# model functions (normalised time and value)


def ma5(t: np.ndarray, beta: float, tau0: float, a1: float, a2: float, k: float) -> np.ndarray:
    """Reparametrised 5-parameter model ``exp(-beta t) [a1 log(t + tau0) + a2] + k``."""
    return np.exp(-beta * t) * (a1 * np.log(t + tau0) + a2) + k


def ma5_jacobian(t: np.ndarray, beta: float, tau0: float, a1: float, a2: float, k: float) -> np.ndarray:
    """d ma5 / d(beta, tau0, a1, a2, k), shape [n, 5]."""
    e, lg = np.exp(-beta * t), np.log(t + tau0)
    return np.stack([-t * e * (a1 * lg + a2), e * a1 / (t + tau0), e * lg, e, np.ones_like(t)], axis=1)


def step1(t: np.ndarray, k: float, tau: float, c: float = 0.0) -> np.ndarray:
    """First-order step response ``c + k (1 - exp(-t / tau))``."""
    return c + k * (1.0 - np.exp(-t / tau))


def step2_under(t: np.ndarray, k: float, wn: float, zeta: float, c: float = 0.0) -> np.ndarray:
    """Under-damped second-order step response (0 <= zeta < 1), plus ``c``."""
    wd = wn * np.sqrt(1.0 - zeta ** 2)
    return c + k * (1.0 - np.exp(-zeta * wn * t) * np.sin(wd * t + np.arccos(zeta)) / np.sqrt(1.0 - zeta ** 2))


def step2_critical(t: np.ndarray, k: float, wn: float, c: float = 0.0) -> np.ndarray:
    """Critically damped second-order step response (zeta = 1), plus ``c``."""
    return c + k * (1.0 - np.exp(-wn * t) * (1.0 + wn * t))


def step2_over(t: np.ndarray, k: float, wn: float, zeta: float, c: float = 0.0) -> np.ndarray:
    """Over-damped second-order step response (zeta > 1), plus ``c``."""
    s = np.sqrt(zeta ** 2 - 1.0)
    r1, r2 = -wn * (zeta - s), -wn * (zeta + s)
    return c + k * (1.0 - (r2 / (r2 - r1) * np.exp(r1 * t) + r1 / (r1 - r2) * np.exp(r2 * t)))


# --------------------------------------------------------------------------------------------------
# original <-> reparametrised parameters, peak


def to_reparam(A: float, lam: float, gamma: float, t0: float, K: float) -> tuple[float, ...]:
    """(A, lambda, gamma, t0, K) -> (beta, tau0, A1, A2, K)."""
    a1 = A * np.exp(-lam * t0)
    return lam * gamma, t0 / gamma, a1, a1 * np.log(gamma), K


def from_reparam(beta: float, tau0: float, a1: float, a2: float, k: float) -> tuple[float, ...]:
    """(beta, tau0, A1, A2, K) -> (A, lambda, gamma, t0, K); inverse of :func:`to_reparam` (A1 != 0)."""
    gamma = np.exp(a2 / a1)
    lam, t0 = beta / gamma, tau0 * gamma
    return a1 * np.exp(lam * t0), lam, gamma, t0, k


def original(t: np.ndarray, A: float, lam: float, gamma: float, t0: float, K: float) -> np.ndarray:
    """The model in its original form ``A exp(-lambda x) log(x) + K``, ``x = gamma t + t0``."""
    x = gamma * t + t0
    return A * np.exp(-lam * x) * np.log(x) + K


def peak_time(lam: float, gamma: float, t0: float) -> float:
    """Critical point of the original form, ``(exp(W(1/lambda)) - t0) / gamma`` (inf when lambda = 0)."""
    if not lam > 0 or not gamma > 0:
        return float("inf")
    with np.errstate(all="ignore"):
        return float((np.exp(lambertw(1.0 / lam).real) - t0) / gamma)


# --------------------------------------------------------------------------------------------------
# fitting


@dataclass
class Fit:
    """One fitted model on one series (time and values in the data's own units)."""

    model: str
    ok: bool
    reason: str = ""
    params: dict = field(default_factory=dict)
    r2: float = float("nan")
    aic: float = float("nan")
    rss: float = float("nan")
    n: int = 0
    predict: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class _Spec:
    fn: Callable
    names: tuple[str, ...]
    p0: Callable[[np.ndarray], list[list]]  # starting points, tried in order; the lowest RSS wins
    lower: tuple
    upper: tuple
    jac: Callable | None = None


def _ma5_p0(t: np.ndarray) -> list[list]:
    """The paper's guess (original form, normalised data: A = range = 1, K = min + A / 2, lambda = 1/std,
    gamma = 1/range, t0 = 1), then a fixed grid of starts for early, sharp peaks it cannot reach."""
    lam, gamma = 1.0 / max(np.std(t), _TINY), 1.0 / max(np.ptp(t), _TINY)
    starts = [list(to_reparam(1.0, lam, gamma, 1.0, 0.5))]
    for beta in (0.3, 3.0, 30.0):
        for tau0 in (1e-3, 1e-2, 1e-1):
            starts.append([beta, tau0, 0.3, 1.0, 0.0])
    return starts


SPECS: dict[str, _Spec] = {
    "ma5": _Spec(ma5, ("beta", "tau0", "A1", "A2", "K"), _ma5_p0,
                 (0.0, _TINY, -np.inf, -np.inf, -np.inf), (np.inf, np.inf, np.inf, np.inf, np.inf), ma5_jacobian),
    "step1": _Spec(step1, ("K", "tau", "c"), lambda t: [[1.0, 0.2, 0.0], [1.0, 0.02, 0.0]],
                   (-np.inf, _TINY, -np.inf), (np.inf, np.inf, np.inf)),
    "step2_under": _Spec(step2_under, ("K", "wn", "zeta", "c"), lambda t: [[1.0, 5.0, 0.5, 0.0], [1.0, 30.0, 0.2, 0.0]],
                         (-np.inf, _TINY, 0.0, -np.inf), (np.inf, np.inf, 1.0 - 1e-6, np.inf)),
    "step2_critical": _Spec(step2_critical, ("K", "wn", "c"), lambda t: [[1.0, 5.0, 0.0], [1.0, 30.0, 0.0]],
                            (-np.inf, _TINY, -np.inf), (np.inf, np.inf, np.inf)),
    "step2_over": _Spec(step2_over, ("K", "wn", "zeta", "c"), lambda t: [[1.0, 5.0, 2.0, 0.0], [1.0, 30.0, 5.0, 0.0]],
                        (-np.inf, _TINY, 1.0 + 1e-6, -np.inf), (np.inf, np.inf, np.inf, np.inf)),
}


def _to_data_units(model: str, p: dict, t_max: float, y_min: float, y_range: float) -> dict:
    """Parameters of the normalised fit in the data's units (time in steps, values in ratio units)."""
    if model == "ma5":
        # the original form may not exist (A1 = 0, or gamma overflowing): its parameters are then inf/nan
        out = {"beta": p["beta"] / t_max, "tau0": p["tau0"] * t_max, "A1": y_range * p["A1"],
               "A2": y_range * (p["A2"] - p["A1"] * np.log(t_max)), "K": y_min + y_range * p["K"]}
        with np.errstate(all="ignore"):
            A, lam, gamma, t0, K = from_reparam(out["beta"], out["tau0"], out["A1"], out["A2"], out["K"])
        out.update(A=A, **{"lambda": lam}, gamma=gamma, t0=t0)
        return out
    out = {"K": p["K"] * y_range}
    if "tau" in p:
        out["tau"] = p["tau"] * t_max
    if "wn" in p:
        out["wn"] = p["wn"] / t_max
    if "zeta" in p:
        out["zeta"] = p["zeta"]
    out["c"] = y_min + y_range * p["c"]
    return out


def fit(t: np.ndarray, y: np.ndarray, model: str = "ma5", maxfev: int = 20000) -> Fit:
    """Fit ``model`` to the series ``y`` at times ``t`` (>= 0), on min-max normalised data.

    Returns a :class:`Fit`; ``ok=False`` with ``reason`` for too few points, a constant or non-finite
    series, or a solver failure (never an exception, never a silent default).
    """
    spec = SPECS[model]
    t, y = np.asarray(t, float), np.asarray(y, float)
    k = len(spec.names)
    if t.shape != y.shape or t.ndim != 1:
        return Fit(model, False, f"t and y must be 1-D of one length, got {t.shape} and {y.shape}")
    n = len(t)
    if n < k + MIN_DOF:
        # a fit with fewer residual degrees of freedom interpolates the series; its R² and AIC say nothing
        # (and the solver then wanders to maxfev from every start: a minute per series for no answer)
        return Fit(model, False, f"{n} checkpoints for {k} parameters: need at least {k + MIN_DOF}", n=n)
    if not (np.isfinite(t).all() and np.isfinite(y).all()):
        return Fit(model, False, "non-finite time or value", n=n)
    if (t < 0).any():
        return Fit(model, False, "negative training step", n=n)
    y_min, y_range, t_max = float(y.min()), float(np.ptp(y)), float(t.max())
    if y_range == 0:
        return Fit(model, False, "constant series: nothing to fit", n=n)
    if t_max == 0:
        return Fit(model, False, "all checkpoints at step 0", n=n)
    tn, yn = t / t_max, (y - y_min) / y_range
    popt, best, errors = None, np.inf, []
    for p0 in spec.p0(tn):
        try:
            with np.errstate(all="ignore"):
                p, _ = curve_fit(spec.fn, tn, yn, p0=p0, bounds=(spec.lower, spec.upper), method="trf",
                                 jac=spec.jac, maxfev=maxfev)
                rss_n = float(np.sum((spec.fn(tn, *p) - yn) ** 2))
        except (RuntimeError, ValueError, FloatingPointError) as err:
            errors.append(str(err))
            continue
        if np.isfinite(rss_n) and rss_n < best:
            popt, best = p, rss_n
    if popt is None:
        return Fit(model, False, "did not converge from any start: " + (errors[0] if errors else "non-finite fit"), n=n)
    norm = dict(zip(spec.names, map(float, popt)))

    def predict(ts: np.ndarray) -> np.ndarray:
        return y_min + y_range * spec.fn(np.asarray(ts, float) / t_max, *popt)

    rss = float(np.sum((predict(t) - y) ** 2))
    tss = float(np.sum((y - y.mean()) ** 2))
    aic = n * np.log(max(rss, 1e-300) / n) + 2 * k
    return Fit(model, True, "", _to_data_units(model, norm, t_max, y_min, y_range), 1.0 - rss / tss, float(aic), rss, n,
               predict)


def fit_all(t: np.ndarray, y: np.ndarray, models=MODELS) -> dict[str, Fit]:
    """Every model on one series."""
    return {m: fit(t, y, m) for m in models}


def choose(fits: dict[str, Fit]) -> str | None:
    """The model with the lowest AIC among those that fitted (None when none did)."""
    ok = {m: f.aic for m, f in fits.items() if f.ok}
    return min(ok, key=ok.get) if ok else None


def peak(f: Fit, horizon: float) -> dict:
    """Peak of a fitted ``ma5``: its time by Lambert W, and whether a maximum is observable in (0, horizon].

    ``trajectory_class`` is ``early-peak`` when it is, else ``log-increase``.
    """
    if not f.ok or f.model != "ma5":
        return {"t_peak": float("nan"), "peak_observable": False, "trajectory_class": None}
    p = f.params
    t_peak = peak_time(p["lambda"], p["gamma"], p["t0"])
    observable = bool(p["A"] > 0 and 0 < t_peak <= horizon)
    return {"t_peak": t_peak, "peak_observable": observable,
            "trajectory_class": "early-peak" if observable else "log-increase"}


def curve(row, t: np.ndarray) -> np.ndarray:
    """The fitted trajectory of one ``fits.parquet`` row at steps ``t`` (data units), from its ``p_*``
    parameters: the reparametrised ma5 or a step response (no refit; NaN for a failed fit)."""
    t = np.asarray(t, dtype=float)
    if not row["ok"]:
        return np.full(t.shape, np.nan)
    q = {k: row[f"p_{k}"] for k in FIT_PARAMETERS}
    if row["fit"] == "ma5":
        return ma5(t, q["beta"], q["tau0"], q["A1"], q["A2"], q["K"])
    fn = SPECS[row["fit"]].fn
    args = [q["K"], q["tau"]] if row["fit"] == "step1" else [q["K"], q["wn"]] + ([q["zeta"]] if "zeta" in
                                                                                 SPECS[row["fit"]].names else [])
    return fn(t, *args, q["c"])


def read_trajectories(path: str | Path) -> pd.DataFrame:
    """Trajectories to fit besides the trained ones (``trajectories_file``: CSV or parquet with columns
    model, layer, step, ratio, e.g. the released Pythia data), checked."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"trajectories_file {path} does not exist")
    return check_trajectories(pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path))


# --------------------------------------------------------------------------------------------------
# per (model, layer) over a trajectories table

TRAJECTORY_COLUMNS = ("model", "layer", "step", "ratio")


def check_trajectories(df: pd.DataFrame) -> pd.DataFrame:
    """The columns model, layer, step, ratio (extra columns kept), or ValueError naming what is missing."""
    missing = [c for c in TRAJECTORY_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"trajectories lack the column(s) {missing}; need {list(TRAJECTORY_COLUMNS)}")
    if df.empty:
        raise ValueError("the trajectories table is empty")
    return df


def fit_trajectories(traj: pd.DataFrame, models=MODELS) -> pd.DataFrame:
    """Every model fitted per (model, layer) of ``traj`` (columns model, layer, step, ratio).

    One row per (model, layer, fit): ``ok``, ``reason``, ``r2``, ``aic``, ``n``, the fitted parameters
    (data units), ``chosen`` (lowest AIC of the row's series), and for ``ma5`` its Lambert-W ``t_peak``,
    ``peak_observable`` within the series' last step and ``trajectory_class``.
    """
    check_trajectories(traj)
    rows = []
    for (name, layer), g in traj.sort_values("step").groupby(["model", "layer"], sort=True):
        t, y = g.step.to_numpy(float), g.ratio.to_numpy(float)
        fits = fit_all(t, y, models)
        best = choose(fits)
        for m, f in fits.items():
            row = {"model": name, "layer": int(layer), "fit": m, "ok": f.ok, "reason": f.reason, "r2": f.r2,
                   "aic": f.aic, "n": f.n, "chosen": m == best,
                   "t_peak": float("nan"), "peak_observable": None, "trajectory_class": None}
            if m == "ma5":
                row.update(peak(f, float(t.max()) if len(t) else 0.0))
            # every parameter column on every row (NaN where this fit has no such parameter or failed), so
            # the table's columns never depend on which fits succeeded
            rows.append(row | {f"p_{k}": float(f.params.get(k, np.nan)) for k in FIT_PARAMETERS})
    return pd.DataFrame(rows)
