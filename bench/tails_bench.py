"""CSN bootstrap p-value: the vectorised replica (`tails.gof_pvalue`) against one `powerlaw.Fit` per draw.

`python bench/tails_bench.py` draws avalanche-like sizes (default 2000 from a discrete power law with
alpha = 1.8 and an exponential finite-size cutoff at 1000, the shape of avalanche-size histograms on a
finite lattice), then runs the bootstrap (default 1000 synthetic sets) with both `tails.gof_pvalue` and
`tails.naive_gof_pvalue` from the same seed. Reported: CPU time of this process for each (the fast one
as the median of a few repeats), their ratio (target: fast >= 5x faster) and both p-values, which must be
equal: the script exits 1 when they are not. No absolute-time assertions.

`--naive-boot K` runs the naive loop on the first K synthetic sets only (the stream is the same, so
the fast p-value on K sets must still equal it) and extrapolates its time to `--n-boot` draws; the
output says so. The default compares all draws (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np

from avalanche_nb import tails
from timing import timed_result


def avalanche_like_sizes(n: int, alpha: float, cutoff: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` draws of ``P(s) ~ s^-alpha exp(-s / cutoff)``, ``s >= 1`` (power law thinned by the cutoff)."""
    kept: list[np.ndarray] = []
    while sum(map(len, kept)) < n:
        s = tails.sample_discrete_power_law(rng, alpha, 1, 2 * n)
        kept.append(s[rng.random(s.size) < np.exp(-s / cutoff)])
    return np.concatenate(kept)[:n]


def describe(x: np.ndarray, args: argparse.Namespace) -> None:
    fit = tails.fast_discrete_fit(x, alpha_range=tuple(args.alpha_range))
    print(f"sizes: n = {x.size}, {np.unique(x).size} distinct values, max {x.max()} "
          f"(power law alpha = {args.alpha}, cutoff {args.cutoff:g}, data seed {args.data_seed})")
    print(f"  fit: alpha = {fit['alpha']:.4f}, xmin = {fit['xmin']:g}, KS = {fit['ks']:.5f}, "
          f"n_tail = {fit['n_tail']:g}; alpha range {tuple(args.alpha_range)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="number of sizes")
    ap.add_argument("--n-boot", type=int, default=1000, help="synthetic data sets")
    ap.add_argument("--naive-boot", type=int, default=None,
                    help="run the naive loop on only the first K sets and extrapolate its time")
    ap.add_argument("--alpha", type=float, default=1.8)
    ap.add_argument("--cutoff", type=float, default=1000.0)
    ap.add_argument("--alpha-range", type=float, nargs=2, default=(1.01, 6.0), help="the params default")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed (same for both)")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the fast p-value (median)")
    args = ap.parse_args()
    k_naive = args.n_boot if args.naive_boot is None else min(args.naive_boot, args.n_boot)

    x = avalanche_like_sizes(args.n, args.alpha, args.cutoff, np.random.default_rng(args.data_seed))
    describe(x, args)
    kw = {"seed": args.seed, "alpha_range": tuple(args.alpha_range)}
    tails.gof_pvalue(x, gof_draws=2, **kw), tails.naive_gof_pvalue(x, gof_draws=2, **kw)  # imports, caches

    def fast(draws: int) -> float:
        return tails.gof_pvalue(x, gof_draws=draws, **kw)["p_value"]

    def naive(draws: int) -> float:
        return tails.naive_gof_pvalue(x, gof_draws=draws, **kw)["p_value"]

    fast_runs = [timed_result(lambda: fast(args.n_boot)) for _ in range(args.repeats)]
    t_fast, p_fast = statistics.median(t for t, _ in fast_runs), fast_runs[0][1]
    assert all(p == p_fast for _, p in fast_runs)  # seeded: every repeat gives the same p
    t_naive, p_naive = timed_result(lambda: naive(k_naive))
    # the same seed gives the same first k_naive synthetic sets, so this p must equal the naive one
    p_fast_k = p_fast if k_naive == args.n_boot else fast(k_naive)

    scale = args.n_boot / k_naive
    mode = ("full comparison" if k_naive == args.n_boot else
            f"naive loop on the first {k_naive} of {args.n_boot} draws, its time extrapolated x{scale:g}")
    print(f"bootstrap: {args.n_boot} synthetic sets, seed {args.seed}; {mode}")
    print(f"  {f'fast  (gof_pvalue, median of {args.repeats}):':40s}{t_fast:8.2f} s CPU   "
          f"({t_fast / args.n_boot * 1e3:.2f} ms per set)")
    print(f"  {'naive (naive_gof_pvalue, once):':40s}{t_naive * scale:8.2f} s CPU   "
          f"({t_naive / k_naive * 1e3:.2f} ms per set)")
    ratio = t_naive * scale / t_fast
    print(f"  speed-up {ratio:.1f}x (target >= 5x: {'met' if ratio >= 5 else 'NOT met'})")
    print(f"  p-value fast {p_fast_k:.4f}  naive {p_naive:.4f}  over {k_naive} draws: "
          f"{'equal' if p_fast_k == p_naive else 'NOT EQUAL'}")
    if k_naive != args.n_boot:
        print(f"  p-value fast over all {args.n_boot} draws: {p_fast:.4f}")
    return 0 if p_fast_k == p_naive else 1


if __name__ == "__main__":
    sys.exit(main())
