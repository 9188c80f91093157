"""Null-model benchmark: vectorised n1 / n2 against per-row Python loops, n3's cost and its mixing.

1. Speed (`python bench/nulls_bench.py`): on an iid lattice (default 16 sequences x 128 tokens x
   30 layers, first token invalid, p = 0.3), K = 100 draws of `nulls.draws` for n1 and n2 against
   a straightforward loop over draws, sequences and layers (`rng.permutation` / `np.roll` of each
   row's valid tokens), interleaved (loop, vectorised, loop, ...), medians of CPU time of this process.
   n3 at its default trade count runs against a per-matrix curveball loop (a tenth of the draws, scaled).
   Target: the three vectorised nulls together >= 20x faster than their loops (PASS / FAIL); each null's
   own ratio is printed too; n3's packed trades (`nulls._n3`) also run against the per-trade vectorised
   loop they replaced (`nulls._n3_reference`): the same draws, bit for bit (FAIL when not), and their
   ratio. Also a whole `null_branching` call (3 nulls, K draws each).
2. Mixing of n3 (on by default, `--no-mixing` skips it): one curveball chain per draw, started from the
   observed matrices of a structured lattice (planted blocks of 4 tokens x 3 layers, layer-dependent
   rate), checkpointed at multiples of L ln L trades and at the default: null means of b_time, b_depth,
   b_diag and the fraction of events still at their starting site, each against its long-run value
   (pooled over the checkpoints >= 5 L ln L, which are far enough apart to be ~independent) in units of
   the Monte-Carlo standard error of the difference. Prints where each statistic settles (stays within
   3 SE) and PASS / FAIL for all four being settled at `nulls.default_trades`, the check behind it.

`--quick` runs both with fewer repeats and chains (~20 s instead of ~45 s on 2 cores). Exit status 1 if any check
FAILs.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys

import numpy as np

from avalanche_nb import nulls
from timing import timed


SPEED_TARGET = 20.0  # vectorised n1 / n2 vs the per-row loop, CPU time
SETTLED_SE = 3.0  # a statistic has settled when it stays within this many SE of its long-run value
REF_FROM = 5.0  # checkpoints (in L ln L) pooled into the long-run value


def iid_lattice(n: int, t: int, l: int, p: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    valid = np.ones((n, t), bool)
    valid[:, 0] = False
    return (rng.random((n, t, l)) < p) & valid[:, :, None], valid


def block_lattice(n: int, t: int, l: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Blocks of 4 tokens x 3 layers started at rate 0.01-0.06 rising with the layer (first token invalid)."""
    valid = np.ones((n, t), bool)
    valid[:, 0] = False
    starts = rng.random((n, t, l)) < np.linspace(0.01, 0.06, l)
    X = np.zeros((n, t + 3, l + 2), bool)
    for dt in range(4):
        for dl in range(3):
            X[:, dt:dt + t, dl:dl + l] |= starts
    return X[:, :t, :l] & valid[:, :, None], valid


# ----------------------------------------------------------------------------- per-row baselines


def loop_rows(X: np.ndarray, valid: np.ndarray, k: int, draw_row) -> np.ndarray:
    """``k`` draws, each row's valid tokens replaced by ``draw_row(row)``, one row at a time."""
    out = np.zeros((k,) + X.shape, bool)
    for d in range(k):
        for n in range(X.shape[0]):
            pos = np.flatnonzero(valid[n])
            for l in range(X.shape[2]):
                out[d, n, pos, l] = draw_row(X[n, pos, l])
    return out


def loop_n1(X: np.ndarray, valid: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return loop_rows(X, valid, k, rng.permutation)


def loop_n2(X: np.ndarray, valid: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return loop_rows(X, valid, k, lambda row: np.roll(row, rng.integers(1, len(row)) if len(row) > 1 else 0))


def loop_n3(X: np.ndarray, valid: np.ndarray, k: int, rng: np.random.Generator, trades: int) -> np.ndarray:
    """Per-matrix curveball: the same trades as ``nulls._n3``, one matrix and one trade at a time."""
    N, T, L = X.shape
    out = np.zeros((k,) + X.shape, bool)
    for d in range(k):
        for n in range(N):
            pos = np.flatnonzero(valid[n])
            R = X[n, pos, :].T.copy()  # [L, m]
            for _ in range(trades):
                a, b = rng.choice(L, 2, replace=False)
                diff = R[a] ^ R[b]
                idx = np.flatnonzero(diff)
                give = rng.permutation(idx)[: np.count_nonzero(R[a] & diff)]
                R[a, idx], R[b, idx] = False, True
                R[a, give], R[b, give] = True, False
            out[d, n][np.ix_(pos, np.arange(L))] = R.T
    return out


# ----------------------------------------------------------------------------- 1. speed


def speed(args: argparse.Namespace) -> bool:
    """Time the nulls; True when vectorised n1 and n2 both meet ``SPEED_TARGET``."""
    rng = np.random.default_rng(args.seed)
    X, valid = iid_lattice(args.n, args.t, args.l, args.p, rng)
    print(f"lattice {args.n} x {args.t} x {args.l}, p = {args.p}, K = {args.k}, {args.repeats} interleaved repeats")
    variants = {
        "n1 loop": lambda: loop_n1(X, valid, args.k, rng),
        "n1 vectorised": lambda: nulls.draws(X, valid, "n1", args.k, seed=args.seed),
        "n2 loop": lambda: loop_n2(X, valid, args.k, rng),
        "n2 vectorised": lambda: nulls.draws(X, valid, "n2", args.k, seed=args.seed),
    }
    for name in ("n1", "n2"):  # same marginals, and the same null distribution of b_time
        a, b = variants[f"{name} loop"](), variants[f"{name} vectorised"]()
        assert (a.sum(2) == b.sum(2)).all() and (a.sum(2) == X.sum(1)).all()
        ba, bb = nulls.branching_batch(a)["time"], nulls.branching_batch(b)["time"]
        print(f"  check {name}: null mean b_time loop {ba.mean():.4f} +- {ba.std() / math.sqrt(len(ba)):.4f}, "
              f"vectorised {bb.mean():.4f} +- {bb.std() / math.sqrt(len(bb)):.4f}")
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            times[name].append(timed(fn))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name in ("n1", "n2"):
        loop, vec = med[f"{name} loop"], med[f"{name} vectorised"]
        print(f"  {name}: loop {loop * 1e3:8.1f} ms   vectorised {vec * 1e3:6.1f} ms   speed-up {loop / vec:6.1f}x")
    trades = nulls.default_trades(args.l)
    n3 = statistics.median(timed(lambda: nulls.draws(X, valid, "n3", args.k, seed=args.seed))
                           for _ in range(args.n3_repeats))
    k3 = max(1, args.k // 10)  # the per-matrix loop is slow: time a tenth of the draws and scale
    n3_loop = timed(lambda: loop_n3(X, valid, k3, rng, trades)) * args.k / k3
    print(f"  n3: loop {n3_loop * 1e3:8.1f} ms   vectorised {n3 * 1e3:6.1f} ms   speed-up {n3_loop / n3:6.1f}x "
          f"(default {trades} trades; per-matrix loop timed on {k3} draws and scaled)")
    # the packed trades against the plain per-trade vectorised loop they replace: the same draws, bit for bit
    C = nulls._compress(X, nulls._layout(valid))
    rngs = lambda: nulls._draw_rngs("n3", 0, args.k, args.seed)  # noqa: E731 -- fresh streams each call
    same = np.array_equal(nulls._n3(C, rngs(), trades), nulls._n3_reference(C, rngs(), trades))
    t_ref, t_fast = [], []
    for _ in range(args.n3_repeats):
        t_ref.append(timed(lambda: nulls._n3_reference(C, rngs(), trades)))
        t_fast.append(timed(lambda: nulls._n3(C, rngs(), trades)))
    print(f"  n3 trades: per-trade reference {statistics.median(t_ref) * 1e3:8.1f} ms   packed {statistics.median(t_fast) * 1e3:6.1f} ms"
          f"   speed-up {statistics.median(t_ref) / statistics.median(t_fast):5.1f}x   ({'identical' if same else 'NOT IDENTICAL'})")
    # The gate: the three nulls together, i.e. what one sweep row draws. n1 alone sits near 12x: an exact
    # uniform subset per row needs one sort of its random keys, and that sort alone is ~1/35 of the loop.
    loop = med["n1 loop"] + med["n2 loop"] + n3_loop
    vec = med["n1 vectorised"] + med["n2 vectorised"] + n3
    ok = loop / vec >= SPEED_TARGET and same
    print(f"  all nulls: loop {loop * 1e3:8.1f} ms   vectorised {vec * 1e3:6.1f} ms   speed-up {loop / vec:6.1f}x "
          f"(target >= {SPEED_TARGET:g}x): {'PASS' if ok else 'FAIL'}")
    full = timed(lambda: nulls.null_branching(X, valid, null_draws=args.k, seed=args.seed))
    print(f"  null_branching (n1, n2, n3; K = {args.k} each): {full:.2f} s")
    return ok


# ----------------------------------------------------------------------------- 2. n3 mixing


def _stats(draws: np.ndarray, lay, start: np.ndarray, t: int) -> dict[str, tuple[float, float]]:
    """Null mean and its standard error of b_time/b_depth/b_diag and of the events' overlap with the start,
    over the chains ``draws`` bool [k, N, L, M]."""
    k = len(draws)
    b = nulls.branching_batch(nulls._expand(draws, lay, t))
    out = {d: (float(b[d].mean()), float(b[d].std(ddof=1) / math.sqrt(k))) for d in ("time", "depth", "diag")}
    kept = (draws & start[None]).sum((1, 2, 3)) / start.sum()
    out["kept"] = (float(kept.mean()), float(kept.std(ddof=1) / math.sqrt(k)))
    return out


def _long_run(rows: list, key: str) -> tuple[float, float]:
    """Mean and SE of ``key`` pooled over the checkpoints at >= ``REF_FROM`` L ln L."""
    ref = [st[key] for c, _, st in rows if c >= REF_FROM]
    return statistics.fmean(v for v, _ in ref), math.sqrt(sum(se**2 for _, se in ref)) / len(ref)


def _settled(rows: list, key: str, ref: tuple[float, float]) -> float:
    """First checkpoint (in L ln L) from which ``key`` stays within ``SETTLED_SE`` of its long-run value."""
    r, rse = ref
    out = math.inf
    for c, _, st in reversed(rows):
        v, se = st[key]
        if abs(v - r) > SETTLED_SE * math.hypot(se, rse):
            break
        out = c
    return out


def mixing(args: argparse.Namespace) -> bool:
    """Run the n3 mixing check; True when every statistic has settled at the default trade count."""
    rng = np.random.default_rng(args.seed + 1)
    X, valid = block_lattice(args.n, args.t, args.l, rng)
    lay = nulls._layout(valid)
    C = nulls._compress(X, lay)
    L = C.shape[1]
    unit = L * math.log(L)
    k, default = args.mixing_k, nulls.default_trades(L)
    print(f"\nn3 mixing: block lattice {args.n} x {args.t} x {args.l} (occupancy {X.sum() / valid.sum() / args.l:.2f}), "
          f"{k} chains from the observed matrices; trades in units of L ln L = {unit:.1f}; "
          f"default = {default} trades")
    b = nulls.branching_batch(X[None])
    print(f"  observed b_time {b['time'][0]:.3f}  b_depth {b['depth'][0]:.3f}  b_diag {b['diag'][0]:.3f}")
    R = np.broadcast_to(C, (k,) + C.shape).copy()  # [k chains, N, L, M]
    units = [0, 0.125, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 5, 10, 20][: -1 if args.quick else None]
    checkpoints = {round(c * unit): c for c in units} | {default: default / unit}  # trades -> c (in L ln L)
    rngs = nulls._draw_rngs("n3", 0, k, args.seed)  # chain j: the stream of n3 draw j
    ia, ib = nulls._row_pairs(rngs, max(checkpoints), args.n, L)
    rows, done = [], 0
    for n_trades, c in sorted(checkpoints.items()):
        for i in range(done, n_trades):
            nulls._trade(R, ia[i], ib[i], rngs)
        done = n_trades
        rows.append((c, done, _stats(R, lay, C, args.t)))
    keys = ("time", "depth", "diag", "kept")
    refs = {key: _long_run(rows, key) for key in keys}
    print("  trades/(L ln L)  trades  " + "  ".join(f"{key:>22s}" for key in keys)
          + f"   (value, (value - long run) / SE; long run = mean over >= {REF_FROM:g} L ln L)")
    for c, done, st in rows:
        cells = []
        for key in keys:
            (v, se), (r, rse) = st[key], refs[key]
            cells.append(f"{v:8.4f} {(v - r) / math.hypot(se, rse):+8.1f} SE   ")
        mark = "  <- default" if done == default else "  (in long run)" if c >= REF_FROM else ""
        print(f"  {c:15.3g}  {done:6d}  " + "  ".join(cells) + mark)
    settled = {key: _settled(rows, key, refs[key]) for key in keys}
    print(f"  settled (within {SETTLED_SE:g} SE from then on), in L ln L: "
          + ", ".join(f"{key} {v:.3g}" for key, v in settled.items()))
    ok = max(settled.values()) <= default / unit
    print(f"  all settled by the default {default} trades ({default / unit:.2f} L ln L): {'PASS' if ok else 'FAIL'}")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--t", type=int, default=128)
    ap.add_argument("--l", type=int, default=30)
    ap.add_argument("--p", type=float, default=0.3)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=None, help="interleaved timing repeats (default 7, quick 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mixing-k", type=int, default=None, help="chains in the n3 mixing check (default 200, quick 50)")
    ap.add_argument("--no-mixing", dest="mixing", action="store_false")
    ap.add_argument("--quick", action="store_true", help="fewer repeats and chains, chains to 10 L ln L only")
    args = ap.parse_args()
    args.repeats = args.repeats or (3 if args.quick else 7)
    args.n3_repeats = 1 if args.quick else 3
    args.mixing_k = args.mixing_k or (50 if args.quick else 200)
    ok = speed(args)
    if args.mixing:
        ok &= mixing(args)
    print(f"\n{'PASS' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
