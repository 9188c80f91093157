"""Per-row statistics of the gain sweep: one `sweep.lattice_row` and `sweep.layer_rows` at the default size,
fast paths against their reference paths, measured in one run.

`python bench/sweep_row_bench.py` builds an avalanche-like lattice of the default size (16 sequences x 128
tokens x 30 layers, first token invalid, occupancy 0.39 in small correlated clusters, 1 + Poisson(0.9)
spikes per occupied site: ~3200 avalanches, like a rate-matched SmolLM2 lattice; `--lattice FILE.npz` takes
a real one, arrays `counts` [N, T, L] and `valid` [N, T]) and the default params (100 draws per null, 100
goodness-of-fit draws, 200 bootstrap draws). Each row is computed twice:

* fast: the code as it runs in the sweep;
* reference: the same function with every fast path swapped for its reference, i.e. the code before
  the speed-up: n3 as a loop of `nulls._trade` (`nulls._n3_reference`), the null ratios from expanded
  draws (`nulls.branching_batch`), powerlaw's whole xmin scan (`tails._fit_with_powerlaw`, likelihood
  ratios of the durations included) and mrestimator for every MR estimate
  (`multistep.mr_branching_mrestimator`).

Reported: CPU time of this process (medians of interleaved repeats) of each, their ratio, and the same
split by part (nulls, tail fits, MR estimates), and whether the lattice_row speed-up meets the target
(informational: CPU time still moves with what else the machine runs). The rows must be identical to the
last bit: the exit status is 1 when they are not. No absolute-time assertions.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from contextlib import contextmanager

import numpy as np

from avalanche_nb import lattice as lat
from avalanche_nb import multistep, nulls, sweep, tails
from avalanche_nb import params as P
from timing import timed_result

TARGET = 2.0  # lattice_row (gof = False, the common row: 220 of the default run's 264), reference / fast


def synthetic_lattice(seed: int, n: int = 16, t: int = 128, l: int = 30,
                      occupancy: float = 0.39) -> tuple[np.ndarray, np.ndarray]:
    """(counts int32 [n, t, l], valid [n, t]): a thresholded, slightly smoothed Gaussian field (clusters of a
    few sites, a layer profile), 1 + Poisson(0.9) spikes per occupied site, first token invalid."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(n, t, l)), sigma=(0, 0.5, 0.6)) + np.linspace(-0.3, 0.3, l)
    valid = np.ones((n, t), bool)
    valid[:, 0] = False
    occupied = field > np.quantile(field, 1 - occupancy)
    counts = (occupied * (1 + rng.poisson(0.9, occupied.shape))).astype(np.int32)
    return counts * valid[:, :, None], valid


@contextmanager
def reference_paths():
    """Every fast path of the row statistics swapped for its reference (the code before the speed-up)."""
    saved = (nulls._n3, nulls._branching_compressed, tails.fit_power_law, multistep.mr_branching,
             multistep.mr_branching_many)
    nulls._n3 = nulls._n3_reference
    nulls._branching_compressed = lambda C, lay, T: nulls.branching_batch(nulls._expand(C, lay, T))
    tails.fit_power_law = lambda sizes, compare=True, **kw: tails._fit_with_powerlaw(sizes, **kw)
    multistep.mr_branching = multistep.mr_branching_mrestimator
    multistep.mr_branching_many = lambda series, **kw: [multistep.mr_branching_mrestimator(s, **kw) for s in series]
    try:
        yield
    finally:
        (nulls._n3, nulls._branching_compressed, tails.fit_power_law, multistep.mr_branching,
         multistep.mr_branching_many) = saved


def same(a, b) -> bool:
    """Equal to the last bit (NaN equals NaN): floats, dicts, lists / tuples, DataFrames."""
    if hasattr(a, "equals"):
        return a.equals(b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, (float, np.floating)):
        return type(a) is type(b) and (a == b or (math.isnan(a) and math.isnan(b)))
    return type(a) is type(b) and a == b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lattice", help="npz with counts [N, T, L] and valid [N, T] (default: a synthetic one)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic lattice")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (medians)")
    args = ap.parse_args()

    if args.lattice:
        z = np.load(args.lattice)
        counts, valid = z["counts"].astype(np.int32), z["valid"].astype(bool)
    else:
        counts, valid = synthetic_lattice(args.seed)
    L = counts.shape[2]
    rng = np.random.default_rng(1)
    th = lat.Thresholds("pos", rng.uniform(6, 8, L), np.full(L, 5e-4), np.full(L, 5e-4))
    p = P.validate({})
    occ = (counts > 0)[valid].mean()
    print(f"lattice {counts.shape[0]} x {counts.shape[1]} x {L} ({'from ' + args.lattice if args.lattice else 'synthetic'}), "
          f"occupancy {occ:.2f}; {p['null_draws']} draws per null, {p['gof_draws']} goodness-of-fit draws, "
          f"{p['bootstrap_draws']} bootstrap draws; CPU time, medians of {args.repeats} interleaved repeats")

    cols = valid.all(0)
    X = counts > 0
    table = sweep.lattice_row(counts, valid, p, gof=False)[1]
    sizes, durations = table["size"].to_numpy(), table["t_span"].to_numpy()
    print(f"  {len(table)} avalanches, {np.unique(sizes).size} distinct sizes")
    variants = {  # name -> function; each runs fast and under reference_paths()
        "lattice_row (gof=False)": lambda: sweep.lattice_row(counts, valid, p, gof=False),
        "lattice_row (gof=True)": lambda: sweep.lattice_row(counts, valid, p, gof=True),
        "layer_rows (per-layer MR)": lambda: sweep.layer_rows(counts, valid, th, per_layer_mr=True),
        "  nulls n1, n2, n3": lambda: nulls.null_branching(X, valid, null_draws=p["null_draws"], seed=p["seed"]),
        "  tail fits (sizes, durations)": lambda: (
            tails.fit_tail(sizes, alpha_range=p["alpha_range"], gof_draws=0, seed=p["seed"]).row(),
            tails.fit_power_law(durations, alpha_range=p["alpha_range"], compare=False)["alpha"]),
        "  MR (tokens + 30 layers)": lambda: [r["mr_m"] for r in multistep.mr_branching_many(
            [sweep.token_series(counts, valid)] + [counts[:, cols, l] for l in range(L)])],
    }
    times: dict[str, dict[str, list[float]]] = {name: {"fast": [], "reference": []} for name in variants}
    results: dict[str, dict[str, object]] = {name: {} for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            t, out = timed_result(fn)
            times[name]["fast"].append(t)
            results[name]["fast"] = out
            with reference_paths():
                t, out = timed_result(fn)
            times[name]["reference"].append(t)
            results[name]["reference"] = out

    ok = True
    for name in variants:
        identical = same(results[name]["fast"], results[name]["reference"])
        t_fast, t_ref = statistics.median(times[name]["fast"]), statistics.median(times[name]["reference"])
        ok &= identical
        print(f"  {name:32s} reference {t_ref:7.2f} s   fast {t_fast:6.2f} s   speed-up {t_ref / t_fast:5.1f}x   "
              f"{'identical' if identical else 'NOT IDENTICAL'}")
    ratio = statistics.median(times["lattice_row (gof=False)"]["reference"]) / statistics.median(
        times["lattice_row (gof=False)"]["fast"])
    met = ratio >= TARGET
    print(f"  lattice_row (gof=False) speed-up {ratio:.1f}x (target >= {TARGET:g}x): {'met' if met else 'NOT met'}; "
          f"rows {'identical' if ok else 'NOT IDENTICAL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
