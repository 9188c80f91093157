"""The steps every measurement of a model composes, written once: the text slices, and the g = 1
reference (calibration, target rates, per-layer targets, fixed thresholds, g = 1 lattices) that
every gain is measured against.

Phase 00 builds and stores the slices, phase 01 the reference; phases 03-04 read them back (hash-checked);
replication (05) and the live explorer build them for other models or slices with these same functions.

    slices = pipeline.build_slices(tokenizer, p)                         # phase 00
    ref = pipeline.build_reference(model, calib_tokens, tokens, p)       # phase 01
    ref = pipeline.read_reference(run_dir, out)                          # phases 03, 04
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import artifacts
from . import lattice as lat
from .data import TokenSlice, build_slice
from .options import SPIKE_DEFS

#: the slices of a run, in the order phase 00 builds them
SLICES = ("a_calibration", "a_lattice", "b")


# --------------------------------------------------------------------------- slices


def build_slices(tokenizer, p: Mapping[str, Any], names: tuple[str, ...] = SLICES) -> dict[str, TokenSlice]:
    """The slices ``names`` of params ``p``: Dataset A's calibration and lattice slices (consecutive,
    disjoint windows of one seeded stream: ``n_calibration`` from offset 0, then ``n_sequences``) and
    Dataset B (``n_sequences_b`` windows), all of ``window`` tokens. Besides :data:`SLICES`: the MA probe
    (``ma_probe``: ``ma_probe_sequences`` windows of Dataset A from offset 0) and the windows after it whose
    MA-site means the ``mean`` edit writes (``ma_calibration``: ``ma_calibration_sequences``)."""
    spec = {"a_calibration": (p["dataset_a"], p["n_calibration"], 0),
            "a_lattice": (p["dataset_a"], p["n_sequences"], p["n_calibration"]),
            "b": (p["dataset_b"], p["n_sequences_b"], 0),
            "ma_probe": (p["dataset_a"], p["ma_probe_sequences"], 0),
            "ma_calibration": (p["dataset_a"], p["ma_calibration_sequences"], p["ma_probe_sequences"])}
    unknown = [n for n in names if n not in spec]
    if unknown:
        raise ValueError(f"unknown slice(s) {unknown}; slices: {', '.join(spec)}")
    return {n: build_slice(tokenizer, spec[n][0], spec[n][1], p["window"], seed=p["seed"], offset=spec[n][2])
            for n in names}


def read_tokens(run_dir: str | Path, out: str | Path | None = None) -> dict[str, np.ndarray]:
    """Phase 00's token ids per slice (int64 [n, window]), hash-checked against its manifest."""
    return artifacts.read(run_dir, "slices.npz", out)


def valid_mask(tokens: np.ndarray, p: Mapping[str, Any]) -> np.ndarray:
    """bool [N, T] sites of ``tokens`` that enter a lattice (``exclude_first_token``)."""
    n, window = np.shape(tokens)
    return lat.valid_mask(n, window, p["exclude_first_token"])


# --------------------------------------------------------------------------- the g = 1 reference


@dataclass
class Reference:
    """What every gain is measured against, set at g = 1 on Dataset A.

    ``calibration``: per-(layer, neuron) mu and sigma; ``rates`` [R]: the target means per neuron,
    scaled to the model's d_ff; ``targets[r]`` float [L]: per-layer target rates; ``fixed[(r, spike_def)]``
    float [L]: the thresholds the ``fixed`` mode holds (the g = 1 rate-matched ones, or ``fixed_tau``);
    ``floor[r]``: the sparse floor the g = 1 pass needed; ``lattices[r]``: the g = 1 rate-matched
    lattices (only when built here, not when read back).
    """

    calibration: lat.Calibration
    rates: list[float]
    targets: list[np.ndarray]
    fixed: dict[tuple[int, str], np.ndarray]
    floor: list[float]
    lattices: list[lat.Lattice] | None = None

    def first(self) -> "Reference":
        """This reference restricted to its first target rate (what lattice.npz and the explorer use)."""
        return replace(self, rates=self.rates[:1], targets=self.targets[:1], floor=self.floor[:1],
                       fixed={k: v for k, v in self.fixed.items() if k[0] == 0},
                       lattices=None if self.lattices is None else self.lattices[:1])

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The ``reference.npz`` artifact (the calibration is ``calibration.npz``)."""
        return {"rates": np.asarray(self.rates, float), "targets": np.stack(self.targets).astype(float),
                **{f"fixed_tau_{d}": np.stack([self.fixed[(r, d)] for r in range(len(self.rates))]).astype(float)
                   for d in SPIKE_DEFS},
                "floor": np.asarray(self.floor, float)}


def calibration_arrays(calibration: lat.Calibration) -> dict[str, np.ndarray]:
    """The ``calibration.npz`` artifact."""
    return {"mu": calibration.mu, "sigma": calibration.sigma, "n_sites": np.array(calibration.n_sites)}


def build_reference(model, calib_tokens: np.ndarray, tokens: np.ndarray, p: Mapping[str, Any],
                    *, progress: bool, valid: np.ndarray | None = None,
                    calibration: lat.Calibration | None = None) -> Reference:
    """Calibrate at g = 1 on ``calib_tokens``, then per target rate of ``p`` (scaled to d_ff) the g = 1
    rate-matched lattices of ``tokens`` [N, T], their per-layer targets (``target_profile``) and the
    ``fixed``-mode thresholds (the g = 1 rate-matched ones, or ``fixed_tau`` in every layer).

    ``valid`` bool [N, T]: the lattice's sites if not the params' (:func:`valid_mask`; e.g. keeping the
    first token); ``calibration``: one already computed on ``calib_tokens`` (the calibration pass is skipped).
    """
    if calibration is None:
        calibration = lat.calibrate(model, calib_tokens, valid_mask(calib_tokens, p), batch_size=p["batch_size"],
                                    progress=progress)
    rates = lat.scale_seed_rates(p["target_rates"], calibration.d_ff, p["rate_reference_d_ff"])
    valid = valid_mask(tokens, p) if valid is None else np.asarray(valid, bool)
    base = [lat.rate_matched_lattice(model, tokens, valid, calibration, r, target_profile=p["target_profile"],
                                     z_floor=p["z_floor"], reference_tau=p["reference_tau"],
                                     batch_size=p["batch_size"], progress=progress) for r in rates]
    if p["fixed_tau"] is None:
        fixed = {(i, d): b.thresholds[d].tau for i, b in enumerate(base) for d in SPIKE_DEFS}
    else:
        fixed = {(i, d): np.full(calibration.n_layers, float(p["fixed_tau"])) for i in range(len(base))
                 for d in SPIKE_DEFS}
    return Reference(calibration, rates, [b.target_rate for b in base], fixed, [b.floor for b in base], base)


def read_reference(run_dir: str | Path, out: str | Path | None = None) -> Reference:
    """Phase 01's reference (``calibration.npz`` and ``reference.npz``, hash-checked), without lattices."""
    cal = artifacts.read(run_dir, "calibration.npz", out)
    ref = artifacts.read(run_dir, "reference.npz", out)
    R = len(ref["rates"])
    return Reference(lat.Calibration(cal["mu"], cal["sigma"], int(cal["n_sites"])), ref["rates"].tolist(),
                     list(ref["targets"]), {(r, d): ref[f"fixed_tau_{d}"][r] for r in range(R) for d in SPIKE_DEFS},
                     ref["floor"].tolist())


def thresholds_table(ref: Reference, valid: np.ndarray) -> "pd.DataFrame":
    """Per (target rate, spike definition, layer) of the built reference's g = 1 lattices: target and
    achieved rate, relative error, tau, occupancy and spikes per valid site (``thresholds.parquet``)."""
    import pandas as pd

    rows = []
    for r, lattice in zip(ref.rates, ref.lattices):
        for d in SPIKE_DEFS:
            th, A = lattice.thresholds[d], lattice.counts[d]
            for l in range(len(th.tau)):
                rows.append(dict(target_mean=r, spike_def=d, layer=l, target=th.target[l], tau=th.tau[l],
                                 rate=th.rate[l], rel_err=th.rel_err[l], occupancy=(A[:, :, l][valid] > 0).mean(),
                                 spikes_per_site=A[:, :, l][valid].mean()))
    return pd.DataFrame(rows)
