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

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from . import lattice as lat
from .progress import track
from .options import ABLATIONS, THRESHOLD_MODES, check_gain_grid

if TYPE_CHECKING:
    import pandas as pd

    from .pipeline import Reference


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


def _all_thresholds(events: lat.EventSet, ref: "Reference"):
    out = {}
    for r, target in enumerate(ref.targets):
        for d in lat.SPIKE_DEFS:
            out[(r, d, "rate_matched")] = lat.rate_matched_thresholds(events, target, d)
            out[(r, d, "fixed")] = lat.fixed_thresholds(events, ref.fixed[(r, d)], d)
    return out


def gain_lattices(model, tokens: np.ndarray, valid: np.ndarray, ref: "Reference", gains: Sequence[float],
                  p: Mapping[str, Any], *, where: str = "mlp", layers: Sequence[int] | None = None
                  ) -> Iterator[GainLattice]:
    """For each gain: one forward pass (standardised with ``ref``'s calibration), then both threshold
    modes for every target rate of ``ref`` and spike definition.

    The floor starts at ``z_floor`` and drops (the pass is redone) whenever a threshold would fall below
    it, so every count is exact. ``where``/``layers``: where the gain acts (:func:`ablation_target`).
    """
    for g in gains:
        f = p["z_floor"]
        while True:
            events = lat.collect_events(model, tokens, valid, ref.calibration, z_floor=f, reference_tau=None,
                                        batch_size=p["batch_size"], progress=p["progress"], g=float(g),
                                        gain_where=where, gain_layers=layers)
            try:
                ths = _all_thresholds(events, ref)
                break
            except lat.FloorTooHighError:
                f = lat.next_floor(f)
        counts = {k: lat.count_lattice(events, th.tau, k[1]) for k, th in ths.items()}
        yield GainLattice(float(g), events.floor, ths, counts)


def lattice_at(model, tokens: np.ndarray, valid: np.ndarray, ref: "Reference", g: float,
               p: Mapping[str, Any]) -> np.ndarray:
    """int32 [N, T, L]: the rate-matched ``pos`` lattice of ``tokens`` at gain ``g`` on every MLP and the
    first target rate, the lattice the g* rules read (:func:`gstar.search` adds gains with it)."""
    return next(gain_lattices(model, tokens, valid, ref.first(), [g], p)).counts[(0, "pos", "rate_matched")]


@dataclass
class SweepResult:
    """The rows of one ablation's sweep, and its lattices at the first target rate."""

    rows: list[dict]
    profiles: list["pd.DataFrame"]
    sizes: list["pd.DataFrame"]
    lattices: dict[tuple[str, str], np.ndarray]  # (spike_def, threshold mode) -> int32 [G, N, T, L]
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per step (forward passes, statistics)


def sweep_ablation(model, tokens: np.ndarray, valid: np.ndarray, ref: "Reference", p: Mapping[str, Any],
                   ablation: str, *, gains: Sequence[float] | None = None, log=None) -> SweepResult:
    """Every gain (``p["gains"]``, or the set ``gains``) of one ablation: a row per (target rate, spike_def,
    threshold mode) with :func:`lattice_row`'s statistics, per-layer profiles and avalanche sizes.

    The tail goodness-of-fit bootstrap runs for ablation ``all`` only; ``shuffled`` feeds the sequences
    with their valid tokens permuted (:func:`shuffle_tokens`). ``log(message)`` reports each gain.
    """
    import time

    # the params' grid (which holds 1.0), or other gains (B at g = 1 and g*, A at a g* beyond the grid)
    gains = check_gains(p["gains"]) if gains is None else np.asarray(sorted({float(g) for g in gains}))
    where, layers = ablation_target(ablation, ref.calibration.n_layers)
    inputs = shuffle_tokens(tokens, valid, p["seed"]) if ablation == "shuffled" else tokens
    G = len(gains)
    out = SweepResult([], [], [], {(d, m): np.zeros((G,) + tokens.shape + (ref.calibration.n_layers,), np.int32)
                                   for d in lat.SPIKE_DEFS for m in THRESHOLD_MODES})
    t0 = time.perf_counter()
    clock = {"forward passes and thresholds": 0.0, "row statistics": 0.0, "layer profiles": 0.0}
    steps = track(gains, f"sweep {ablation}", unit="gain")
    lattices = gain_lattices(model, inputs, valid, ref, steps, p, where=where, layers=layers)
    while True:
        t = time.perf_counter()
        gl = next(lattices, None)
        clock["forward passes and thresholds"] += time.perf_counter() - t
        if gl is None:
            break
        gi = int(np.flatnonzero(np.isclose(gains, gl.g))[0])
        for (r, d, mode), counts in gl.counts.items():
            th = gl.thresholds[(r, d, mode)]
            keys = dict(ablation=ablation, g=gl.g, target_rate=ref.rates[r], spike_def=d, threshold_mode=mode)
            t = time.perf_counter()
            row, table = lattice_row(counts, valid, p, gof=ablation == "all")
            clock["row statistics"] += time.perf_counter() - t
            err = np.nanmax(np.abs(th.rel_err)) if mode == "rate_matched" else np.nan
            out.rows.append(keys | {"rate_mean": th.rate.mean(), "rate_max_rel_err": err, "floor": gl.floor} | row)
            t = time.perf_counter()
            out.profiles.append(layer_rows(counts, valid, th, per_layer_mr=mode == "rate_matched").assign(**keys))
            clock["layer profiles"] += time.perf_counter() - t
            out.sizes.append(table[["size", "n_sites", "t_span", "l_span"]].assign(**keys))
            if r == 0:
                out.lattices[(d, mode)][gi] = counts
        if log:
            log(f"{ablation:8s} g={gl.g:.2f} done ({time.perf_counter() - t0:.0f} s)")
    out.seconds = clock
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


def lattice_row(counts: np.ndarray, valid: np.ndarray, p: Mapping[str, Any], *, gof: bool) -> tuple[dict, "pd.DataFrame"]:
    """Every statistic of one lattice ``counts`` int [N, T, L]: branching, nulls, susceptibility, tails,
    with the params ``p`` (the first of ``adjacencies``, ``null_draws``, ``alpha_range``,
    ``bootstrap_draws``, ``seed``; ``gof_draws`` when ``gof``, else the goodness-of-fit is skipped).

    Returns (row, avalanche table). A lattice with no events gives a defined row: NaN where a ratio
    is undefined and ``n_avalanches = 0``.
    """
    adjacency, null_draws, seed, alpha_range = p["adjacencies"][0], p["null_draws"], p["seed"], p["alpha_range"]
    gof_draws = p["gof_draws"] if gof else 0
    from . import avalanches as av
    from . import multistep, nulls, tails

    X = av.occupancy(counts, valid)
    b = av.branching(X)
    table = av.avalanche_table(counts, valid, adjacency=adjacency)
    row = {f"b_{k}": b[f"b_{k}"] for k in ("time", "depth", "diag", "tot")}
    row |= nulls.flat_rows(nulls.null_branching(X, valid, null_draws=null_draws, seed=seed))
    row |= {"chi_fano": av.chi_fano(counts, valid), "chi_perc": av.chi_perc(table), "n_avalanches": len(table)}
    sizes, durations = table["size"].to_numpy(), table["t_span"].to_numpy()
    # sizes: fit, alpha_se, p-value (same alpha_range; gof_draws 0 = skipped) and likelihood ratios in one call
    fit = tails.fit_tail(sizes, alpha_range=alpha_range, gof_draws=gof_draws, seed=seed).row()
    fit_d = tails.fit_power_law(durations, alpha_range=alpha_range, compare=False)  # only alpha is read
    crack = tails.crackling(sizes, durations, bootstrap_draws=p["bootstrap_draws"], seed=seed)
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
    if per_layer_mr:  # every layer's mr_branching, the lag regressions of all layers stacked
        cols = valid.all(0)
        df["mr_m"] = [r["mr_m"] for r in multistep.mr_branching_many([counts[:, cols, l] for l in range(counts.shape[2])])]
    else:
        df["mr_m"] = np.nan
    return df
