"""Benchmarks, reported as ratios against a baseline measured in the same run (`make bench`).

1. The MLP tap with its streaming reduction vs a plain forward of the same model and batch
   (target: at most +5%, issue 21), and the saving from skipping the LM head.
2. Memory: what the streaming reduction keeps vs a full [N, T, L, d_ff] activation cache, at two
   window lengths (kept bytes grow with the number of sites, never with d_ff).

Timings interleave the variants (A B A B ...) and quote medians, because these machines are noisy.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from avalanche_nb import hooks, runtime
from avalanche_nb import params as P
from avalanche_nb import lattice as lat
from avalanche_nb.data import build_slice
from avalanche_nb.models import load_model
from timing import timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    p = P.validate({})  # the schema's defaults: dtype, device, seed, z_floor, exclude_first_token
    runtime.configure(p.seed, args.threads)
    lm = load_model(args.model, dtype=p.dtype, device=p.device, seed=p.seed, device_map=p.device_map)
    model = lm.model
    s = build_slice(lm.tokenizer, "boolq", args.batch * 2, args.window, seed=p.seed)
    calib_tokens, tokens = s.tokens[: args.batch], s.tokens[args.batch:]
    cal = lat.calibrate(model, calib_tokens, lat.valid_mask(*calib_tokens.shape, p.exclude_first_token),
                        batch_size=args.batch, progress=False)
    ids = torch.tensor(tokens)
    valid = lat.valid_mask(*tokens.shape, p.exclude_first_token)

    def full():
        with torch.no_grad():
            model(ids, use_cache=False)

    def hidden():
        hooks.forward_hidden(model, ids)

    def tapped():
        lat.collect_events(model, tokens, valid, cal, z_floor=p.z_floor, reference_tau=None, batch_size=args.batch,
                           progress=False)

    variants = {"forward with LM head": full, "forward, no LM head": hidden, "tap + streaming reduction": tapped}
    for fn in variants.values():  # warm-up
        fn()
    times = {k: [] for k in variants}
    for _ in range(args.repeats):
        for k, fn in variants.items():
            times[k].append(timed(fn))
    base = times["forward, no LM head"]
    print(f"model {lm.name}, batch {args.batch} x {args.window} tokens, {args.threads} threads, "
          f"{args.repeats} interleaved repeats; process CPU seconds, median ratios from the same run")
    for k, ts in times.items():
        ratios = [t / b for t, b in zip(ts, base)]
        print(f"  {k:28s} median {statistics.median(ts):6.3f} s   ratio to no-LM-head forward "
              f"{statistics.median(ratios):5.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
    overhead = statistics.median([t / b for t, b in zip(times["tap + streaming reduction"], base)])
    print(f"tap overhead over a plain forward: {100 * (overhead - 1):+.1f}% (target <= +5%): "
          f"{'OK' if overhead <= 1.05 else 'OVER'}")

    print("\nmemory kept by the reduction vs a full activation cache")
    arch = hooks.architecture(model)
    for window in (args.window // 2, args.window):
        sub, v = tokens[:, :window], valid[:, :window]
        ev = lat.collect_events(model, sub, v, cal, z_floor=p.z_floor, reference_tau=None, batch_size=args.batch,
                                progress=False)
        kept = sum(a.nbytes for a in ev.z) + sum(a.nbytes for a in ev.site)
        full_cache = sub.size * arch.n_layers * arch.d_ff * 4
        print(f"  T={window:4d}: kept {kept / 2**20:7.2f} MiB, full cache {full_cache / 2**20:8.1f} MiB, "
              f"ratio {kept / full_cache:.4f} ({kept / (v.sum() * arch.n_layers):.1f} bytes per site)")


if __name__ == "__main__":
    main()
