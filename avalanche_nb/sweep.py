"""The gain sweep: lattices at every gain under fixed and rate-matched thresholds, and their rows.

For each gain ``g`` one forward pass (MLP outputs × g, standardised with the g = 1 calibration)
gives the sparse events; from them, per target rate and spike definition, two lattices:

* ``fixed``: the g = 1 rate-matched thresholds held constant, so the rate moves with g;
* ``rate_matched``: thresholds re-matched per layer to the g = 1 targets, so only structure moves.

Ablations (the seed's): the gain on all MLPs (``all``), on one layer band (``early`` / ``mid`` /
``late`` thirds), on attention outputs instead (``attn``), and the input control ``shuffled``
(all MLPs, the same sequences with their valid tokens permuted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from . import lattice as lat
from .options import ABLATIONS, THRESHOLD_MODES, check_gain_grid



def check_gains(gains: Sequence[float]) -> np.ndarray:
    """Sorted float [G] gain grid (:func:`options.check_gain_grid`: non-empty, >= 0, unique, with 1.0)."""
    return np.asarray(check_gain_grid(gains))


def ablation_target(name: str, n_layers: int) -> tuple[str, list[int] | None]:
    """(where, layers) of the gain hook for an ablation; layers None means every layer."""
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; use one of {ABLATIONS}")
    if name in ("all", "shuffled"):
        return "mlp", None
    if name == "attn":
        return "attn", None
    bands = np.array_split(np.arange(n_layers), 3)
    return "mlp", bands[("early", "mid", "late").index(name)].tolist()


def shuffle_tokens(tokens: np.ndarray, valid: np.ndarray, seed: int) -> np.ndarray:
    """Input control: each sequence's valid-position tokens permuted (masked positions stay put)."""
    rng = np.random.default_rng(seed)
    out = tokens.copy()
    for n in range(len(tokens)):
        pos = np.flatnonzero(valid[n])
        out[n, pos] = tokens[n, rng.permutation(pos)]
    return out


@dataclass
class GainLattice:
    """The lattices of one gain: keyed by (target index, spike_def, threshold mode)."""

    g: float
    floor: float
    thresholds: dict[tuple[int, str, str], lat.Thresholds]
    counts: dict[tuple[int, str, str], np.ndarray]  # int32 [N, T, L]


def _all_thresholds(events: lat.EventSet, targets: list[np.ndarray], fixed: dict[tuple[int, str], np.ndarray]):
    out = {}
    for r, target in enumerate(targets):
        for d in lat.SPIKE_DEFS:
            out[(r, d, "rate_matched")] = lat.rate_matched_thresholds(events, target, d)
            out[(r, d, "fixed")] = lat.fixed_thresholds(events, fixed[(r, d)], d)
    return out


def gain_lattices(model, tokens: np.ndarray, valid: np.ndarray, calib: lat.Calibration, gains: Sequence[float],
                  targets: list[np.ndarray], fixed: dict[tuple[int, str], np.ndarray], where: str = "mlp",
                  layers: Sequence[int] | None = None, floor: float = 4.0, batch_size: int = 8,
                  progress: bool = True) -> Iterator[GainLattice]:
    """For each gain: one forward pass, then both threshold modes for every target and spike definition.

    ``targets``: per-layer target rates (float [L] each), set at g = 1. ``fixed``: thresholds [L] per
    (target index, spike_def), normally the g = 1 rate-matched ones. The floor drops (and the pass is
    redone) whenever a threshold would fall below it, so every count is exact.
    """
    for g in gains:
        f = floor
        while True:
            events = lat.collect_events(model, tokens, valid, calib, f, None, batch_size, float(g), where, layers,
                                        progress=progress)
            try:
                ths = _all_thresholds(events, targets, fixed)
                break
            except lat.FloorTooHighError:
                f = lat.next_floor(f)
        counts = {k: lat.count_lattice(events, th.tau, k[1]) for k, th in ths.items()}
        yield GainLattice(float(g), events.floor, ths, counts)


def reference(model, tokens: np.ndarray, valid: np.ndarray, calib: lat.Calibration, rates: Sequence[float],
              profile: str = "baseline_profile", floor: float = 4.0, reference_tau: float = 2.5, batch_size: int = 8,
              progress: bool = True, *, fixed_tau: float | None
              ) -> tuple[list[lat.Lattice], list[np.ndarray], dict[tuple[int, str], np.ndarray]]:
    """The g = 1 rate-matched lattices of Dataset A (one per target rate), their per-layer targets
    (float [L] each) and the thresholds the ``fixed`` mode holds, keyed (target index, spike_def):
    the g = 1 rate-matched ones, or ``fixed_tau`` in every layer when it is given."""
    base = [lat.rate_matched_lattice(model, tokens, valid, calib, r, profile, floor, reference_tau, batch_size,
                                     progress=progress) for r in rates]
    if fixed_tau is None:
        fixed = {(i, d): b.thresholds[d].tau for i, b in enumerate(base) for d in lat.SPIKE_DEFS}
    else:
        fixed = {(i, d): np.full(calib.n_layers, float(fixed_tau)) for i in range(len(base)) for d in lat.SPIKE_DEFS}
    return base, [b.target_rate for b in base], fixed


def evidence_at_gain(model, tokens: np.ndarray, valid: np.ndarray, calib: lat.Calibration, targets: list[np.ndarray],
                     fixed: dict[tuple[int, str], np.ndarray], *, adjacency: str, null_draws: int, bootstrap_draws: int,
                     seed: int, z_floor: float, batch_size: int, progress: bool):
    """``g -> gstar.evidence`` row of Dataset A's lattice at gain g (rate-matched to the first target,
    ``pos``, gain on every MLP): what :func:`gstar.extended_search` adds beyond the grid's edge."""
    from . import gstar

    def at(g: float):
        gl = next(gain_lattices(model, tokens, valid, calib, [g], targets[:1], {k: v for k, v in fixed.items() if k[0] == 0},
                                floor=z_floor, batch_size=batch_size, progress=progress))
        return gstar.evidence(gl.counts[(0, "pos", "rate_matched")][None], valid, [g], adjacency, null_draws,
                              bootstrap_draws, seed)
    return at


def search_gstar(model, tokens: np.ndarray, valid: np.ndarray, calib: lat.Calibration, targets: list[np.ndarray],
                 fixed: dict[tuple[int, str], np.ndarray], lattices: np.ndarray, gains: Sequence[float], p: dict,
                 progress: bool, log=None):
    """g* on Dataset A: the evidence of the sweep's rate-matched ``pos`` lattices ``lattices`` int [G, N, T, L]
    at ``gains``, then :func:`gstar.extended_search` with the params' rule and ``gstar_limits`` (a pick on
    the grid's edge adds gains beyond it, computed here on A). Returns the :class:`gstar.Search`."""
    from . import gstar

    kw = dict(adjacency=p["adjacencies"][0], null_draws=p["null_draws"], bootstrap_draws=p["bootstrap_draws"],
              seed=p["seed"])
    ev = gstar.evidence(lattices, valid, gains, kw["adjacency"], kw["null_draws"], kw["bootstrap_draws"], kw["seed"])
    at = evidence_at_gain(model, tokens, valid, calib, targets, fixed, z_floor=p["z_floor"],
                          batch_size=p["batch_size"], progress=progress, **kw)
    return gstar.extended_search(ev, p["gstar_rule"], p["gstar_limits"], at, log=log)


@dataclass
class SweepResult:
    """The rows of one ablation's sweep, and its lattices at the first target rate."""

    rows: list[dict]
    profiles: list["pd.DataFrame"]
    sizes: list["pd.DataFrame"]
    lattices: dict[tuple[str, str], np.ndarray]  # (spike_def, threshold mode) -> int32 [G, N, T, L]


def run(model, tokens: np.ndarray, valid: np.ndarray, calib: lat.Calibration, gains: Sequence[float],
        rates: Sequence[float], targets: list[np.ndarray], fixed: dict[tuple[int, str], np.ndarray],
        ablation: str = "all", adjacency: str = "von_neumann", null_draws: int = 100, gof_draws: int = 100,
        boot: int = 200, alpha_range: Sequence[float] = (1.01, 6.0), seed: int = 0, floor: float = 4.0,
        batch_size: int = 8, progress: bool = True, log=print) -> SweepResult:
    """Every gain of one ablation: a row per (target rate, spike_def, threshold mode) with
    :func:`lattice_row`'s statistics, per-layer profiles and avalanche sizes.

    ``rates``: the target rates (per neuron) that ``targets`` / ``fixed`` were set for. The tail
    goodness-of-fit bootstrap runs for ablation ``all`` only (``gof_draws``); ``shuffled`` feeds the
    sequences with their valid tokens permuted (:func:`shuffle_tokens`).
    """
    import time

    where, layers = ablation_target(ablation, calib.n_layers)
    inputs = shuffle_tokens(tokens, valid, seed) if ablation == "shuffled" else tokens
    G = len(gains)
    out = SweepResult([], [], [], {(d, m): np.zeros((G,) + tokens.shape + (calib.n_layers,), np.int32)
                                   for d in lat.SPIKE_DEFS for m in THRESHOLD_MODES})
    t0 = time.perf_counter()
    for gi, gl in enumerate(gain_lattices(model, inputs, valid, calib, gains, targets, fixed, where, layers, floor,
                                          batch_size, progress)):
        for (r, d, mode), counts in gl.counts.items():
            th = gl.thresholds[(r, d, mode)]
            keys = dict(ablation=ablation, g=gl.g, target_rate=rates[r], spike_def=d, threshold_mode=mode)
            row, table = lattice_row(counts, valid, adjacency, null_draws, gof_draws if ablation == "all" else 0,
                                     boot, alpha_range, seed)
            err = np.nanmax(np.abs(th.rel_err)) if mode == "rate_matched" else np.nan
            out.rows.append(keys | {"rate_mean": th.rate.mean(), "rate_max_rel_err": err, "floor": gl.floor} | row)
            out.profiles.append(layer_rows(counts, valid, th, per_layer_mr=mode == "rate_matched").assign(**keys))
            out.sizes.append(table[["size", "n_sites", "t_span", "l_span"]].assign(**keys))
            if r == 0:
                out.lattices[(d, mode)][gi] = counts
        if log:
            log(f"{ablation:8s} g={gl.g:.2f} done ({time.perf_counter() - t0:.0f} s)")
    return out


# --------------------------------------------------------------------------- rows of the sweep table


def main_rows(rows: "pd.DataFrame", spike_def: str = "pos", mode: str = "rate_matched") -> "pd.DataFrame":
    """The headline rows of a sweep table: ablation ``all``, the first target rate, one spike definition
    and threshold mode, sorted by g (index reset)."""
    sel = rows[(rows.ablation == "all") & (rows.spike_def == spike_def) & (rows.threshold_mode == mode)
               & (rows.target_rate == rows.target_rate.iloc[0])]
    return sel.sort_values("g").reset_index(drop=True)



def token_series(counts: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Spike counts per token [N, T'] summed over layers, over the token positions valid in every sequence."""
    return counts.sum(2)[:, valid.all(0)]


def lattice_row(counts: np.ndarray, valid: np.ndarray, adjacency: str = "von_neumann", null_draws: int = 100,
                gof_draws: int = 100, boot: int = 200, alpha_range: Sequence[float] = (1.01, 6.0),
                seed: int = 0) -> tuple[dict, "pd.DataFrame"]:
    """Every statistic of one lattice ``counts`` int [N, T, L]: branching, nulls, susceptibility, tails.

    Returns (row, avalanche table). A lattice with no events gives a defined row: NaN where a ratio
    is undefined and ``n_avalanches = 0``.
    """
    from . import avalanches as av
    from . import multistep, nulls, tails

    X = av.occupancy(counts, valid)
    b = av.branching(X)
    table = av.avalanche_table(counts, valid, adjacency)
    row = {f"b_{k}": b[f"b_{k}"] for k in ("time", "depth", "diag", "tot")}
    row |= nulls.flat_rows(nulls.null_branching(X, valid, null_draws=null_draws, seed=seed))
    row |= {"chi_fano": av.chi_fano(counts, valid), "chi_perc": av.chi_perc(table), "n_avalanches": len(table)}
    sizes, durations = table["size"].to_numpy(), table["t_span"].to_numpy()
    # sizes: fit, alpha_se, p-value (same alpha_range; gof_draws 0 = skipped) and likelihood ratios in one call
    fit = tails.fit_tail(sizes, alpha_range=alpha_range, gof_draws=gof_draws, seed=seed).row()
    fit_d = tails.fit_power_law(durations, alpha_range=alpha_range)
    crack = tails.crackling(sizes, durations, bootstrap_draws=boot, seed=seed)
    row |= {k: crack[k] for k in ("gamma", "gamma_lo", "gamma_hi")}
    row["gamma_pred"] = tails.predicted_gamma(fit["alpha"], fit_d["alpha"])
    row |= {k: fit[k] for k in tails.TAIL_COLUMNS if k != "p_value"}
    row["alpha_duration"] = fit_d["alpha"]
    row["p_value"] = fit["p_value"]
    row["alpha_c80"] = tails.continuous_fit_p80(sizes)["alpha_c"]
    row["mr_m"] = multistep.mr_branching(token_series(counts, valid))["mr_m"]
    return row, table


def layer_rows(counts: np.ndarray, valid: np.ndarray, th: lat.Thresholds, per_layer_mr: bool = False) -> "pd.DataFrame":
    """Per-layer profile of one lattice: rate, tau, b_time, b_depth (and the MR estimate per layer)."""
    import pandas as pd

    from . import avalanches as av
    from . import multistep

    b = av.branching(av.occupancy(counts, valid))
    df = pd.DataFrame({"layer": np.arange(counts.shape[2]), "rate": th.rate, "tau": th.tau,
                       "b_time": b["b_time_per_layer"], "b_depth": b["b_depth_per_layer"]})
    if per_layer_mr:
        cols = valid.all(0)
        df["mr_m"] = [multistep.mr_branching(counts[:, cols, l])["mr_m"] for l in range(counts.shape[2])]
    else:
        df["mr_m"] = np.nan
    return df
