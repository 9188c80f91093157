"""Explorer benchmark: one gain-slider step (in-place figure updates) against rebuilding the figures.

A step is what dragging the slider by one notch runs in the kernel: ``scrubber.gain.value = i``, i.e.
the lattice's avalanches, the heatmap's colours and hover text, the per-layer rates, the three curve
markers, and the inspector's size-sorted list and largest avalanche. The baseline re-renders the
output instead: new heatmap, rates and curves ``FigureWidget``s for the same state. Both are timed in
CPU seconds of this process, interleaved, over every gain of the grid; medians are reported, with the
step's median against the 200 ms target (PASS / FAIL) and the baseline / step ratio.

Data: by default the lattices of the default run (SmolLM2, 16 Dataset A windows × 128 tokens × 30
layers × 11 gains, computed live as phase 03's ``all`` ablation with the default params and cached;
about 2 minutes the first time on 2 cores). ``--synthetic`` uses a Poisson lattice of the same shape
(0.75 spikes per site) instead. Exit status 1 on FAIL.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np

from avalanche_nb import gain_stack as gs
from avalanche_nb import live_stack
from avalanche_nb import params as P
from avalanche_nb import widgets
from timing import timed, timed_result

TARGET_MS = 200.0
SHAPE = (11, 16, 128, 30)  # gains, sequences, tokens, layers of the default run


def synthetic_stack(p) -> gs.GainStack:
    """A Poisson lattice of the default run's shape, drawn with ``p.seed``; ``p`` also sets the signatures'
    adjacency (the first of ``adjacencies``), ``null_draws`` and ``seed``."""
    rng = np.random.default_rng(p.seed)
    G, N, T, L = SHAPE
    valid = np.ones((N, T), bool)
    valid[:, 0] = False
    counts = {k: rng.poisson(0.75, SHAPE).astype(np.int32) * valid[None, :, :, None] for k in gs.KEYS}
    text = np.array([[f"tok{t}" for t in range(T)] for _ in range(N)])
    return gs.GainStack(np.round(np.linspace(0.5, 1.5, G), 2), counts, valid, np.zeros((N, T), int), text,
                        np.full(L, 5e-4), 1536, adjacency=p.adjacencies[0], null_draws=p.null_draws, seed=p.seed,
                        source="synthetic")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synthetic", action="store_true", help="a Poisson lattice of the default shape")
    ap.add_argument("--repeats", type=int, default=3, help="passes over the gain grid")
    args = ap.parse_args()
    if args.synthetic:
        stack = synthetic_stack(P.validate({}))
    else:
        stack = live_stack.compute("smollm2-135m-instruct", n_sequences=16, n_calibration=16, window=128)
    G, N, T, L = stack.shape
    print(f"data: {stack.source}, {N} sequences x {T} tokens x {L} layers at {G} gains; "
          f"{int((stack.counts[('pos', 'rate_matched')] > 0).mean() * 100)}% of sites occupied (pos, rate_matched)")
    opened, ex = timed_result(lambda: widgets.Explorer(stack))
    print(f"opening (signatures of the view, N1 {stack.null_draws} draws at {G} gains, and the figures): "
          f"{opened:.2f} s CPU")
    s = ex.scrubber
    steps, rebuilds = [], []
    for _ in range(args.repeats):
        for i in list(range(G)) + list(range(G - 2, -1, -1)):
            steps.append(timed(lambda: setattr(s.gain, "value", i)))
            rebuilds.append(timed(lambda: (s._heatmap_figure(), s._rates_figure(), s._curves_figure())))
    step, rebuild = 1000 * statistics.median(steps), 1000 * statistics.median(rebuilds)
    ok = step < TARGET_MS
    print(f"slider step (in place): median {step:.1f} ms CPU, max {1000 * max(steps):.1f} ms over {len(steps)} steps "
          f"-> {'PASS' if ok else 'FAIL'} (target < {TARGET_MS:.0f} ms)")
    print(f"re-render baseline: median {rebuild:.1f} ms CPU -> in-place updates {rebuild / step:.1f}x faster")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
