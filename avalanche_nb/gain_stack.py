"""A gain stack: the event lattices of one slice at every gain of a grid, under both spike
definitions and both threshold modes, and its per-gain curves.

A stack comes from a run (``03_gain_sweep/sweep_lattices.npz``, hash-checked against its manifest,
:func:`from_run`) or is computed live for a model (:mod:`live_stack`); :func:`curves` gives the
per-gain b, delta-b against N1 and chi of the whole stack; :mod:`avalanche_detail` reads single
avalanches off it.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import artifacts, nulls
from . import avalanches as av
from .options import SPIKE_DEFS, THRESHOLD_MODES

KEYS: tuple[tuple[str, str], ...] = tuple((d, m) for d in SPIKE_DEFS for m in THRESHOLD_MODES)
NPZ = "sweep_lattices.npz"
#: the lattices a run offers the explorer: phase 03's, and phase 08's with the first token kept
LATTICES = {"standard": NPZ, "first_token": "first_token_lattices.npz"}
EXPORT_FOLDER = "explore"  # a run's exports: beside its phase folders, never inside one
OUTPUTS = Path(__file__).resolve().parent.parent / "outputs"  # the project's runs and live exports
def _npz_key(spike_def: str, mode: str) -> str:
    # rate-matched lattices keep their original names (counts_pos / counts_abs), fixed ones get a prefix
    return f"counts_{spike_def}" if mode == "rate_matched" else f"fixed_counts_{spike_def}"


@dataclass
class GainStack:
    """Lattices of N sequences at G gains.

    ``counts[(spike_def, threshold_mode)]``: int32 [G, N, T, L] spiking neurons per site; ``valid``
    bool [N, T] sites that enter the lattice; ``tokens`` int [N, T]; ``token_text`` str [N, T] (for
    labels); ``target_rate`` float [L] the g = 1 per-layer neuron rates the rate-matched mode keeps;
    ``d_ff`` the MLP width (rates are spikes / (sites × d_ff)). ``adjacency``, ``null_draws`` and ``seed``
    (keyword-only) are the defaults of the signatures (a run's own, so its curves equal ``sweep.parquet``);
    ``export_dir`` is where selections are exported.
    """

    g: np.ndarray
    counts: dict[tuple[str, str], np.ndarray]
    valid: np.ndarray
    tokens: np.ndarray
    token_text: np.ndarray
    target_rate: np.ndarray
    d_ff: int
    _: KW_ONLY
    adjacency: str
    null_draws: int
    seed: int
    source: str = ""
    export_dir: Path | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.g = np.asarray(self.g, dtype=float)
        missing = [k for k in KEYS if k not in self.counts]
        if missing:
            raise ValueError(f"gain stack lacks lattices for {missing}")
        shape = (len(self.g),) + self.valid.shape + (len(self.target_rate),)
        for k, c in self.counts.items():
            if c.shape != shape or c.dtype.kind not in "iu":
                raise ValueError(f"lattices {k} have shape {c.shape} ({c.dtype}), expected integer {shape}")
        if self.tokens.shape != self.valid.shape or self.token_text.shape != self.valid.shape:
            raise ValueError(f"tokens {self.tokens.shape} / token_text {self.token_text.shape} must match valid "
                             f"{self.valid.shape}")
        if not self.valid.any():
            raise ValueError("the stack has no valid site (empty slice)")
        if self.adjacency not in av.ADJACENCIES:
            raise ValueError(f"unknown adjacency {self.adjacency!r}; use one of {av.ADJACENCIES}")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(G, N, T, L)."""
        return self.counts[KEYS[0]].shape

    def gain_index(self, g: float) -> int:
        i = int(np.argmin(np.abs(self.g - g)))
        if not np.isclose(self.g[i], g, rtol=0, atol=1e-9):
            raise ValueError(f"gain {g} is not on the stack's grid {self.g.tolist()}")
        return i

    def lattice(self, spike_def: str, mode: str, gi: int) -> np.ndarray:
        """int32 [N, T, L] lattice at gain index ``gi``."""
        return self.counts[check_key(spike_def, mode)][gi]

    def to_npz_dict(self) -> dict[str, np.ndarray]:
        """The ``sweep_lattices.npz`` contract (see the README)."""
        out = {"g": self.g, "valid": self.valid, "tokens": self.tokens.astype(np.int64),
               "token_text": np.asarray(self.token_text, dtype=str), "target_rate": self.target_rate,
               "d_ff": np.int64(self.d_ff)}
        return out | {_npz_key(d, m): self.counts[(d, m)] for d, m in KEYS}

    @classmethod
    def from_npz_dict(cls, z, **meta: Any) -> "GainStack":
        need = ["g", "valid", "tokens", "token_text", "target_rate", "d_ff"] + [_npz_key(d, m) for d, m in KEYS]
        missing = [k for k in need if k not in z]
        if missing:
            raise ValueError(f"the lattice file lacks {missing}: it predates the explorer; re-run phase 03 "
                             "(or explore a model live)")
        counts = {(d, m): np.asarray(z[_npz_key(d, m)]) for d, m in KEYS}
        return cls(np.asarray(z["g"]), counts, np.asarray(z["valid"], bool), np.asarray(z["tokens"]),
                   np.asarray(z["token_text"]), np.asarray(z["target_rate"], float), int(z["d_ff"]), **meta)


def check_key(spike_def: str, mode: str) -> tuple[str, str]:
    if spike_def not in SPIKE_DEFS:
        raise ValueError(f"unknown spike definition {spike_def!r}; use one of {SPIKE_DEFS}")
    if mode not in THRESHOLD_MODES:
        raise ValueError(f"unknown threshold mode {mode!r}; use one of {THRESHOLD_MODES}")
    return spike_def, mode


# --------------------------------------------------------------------------- sources


def from_run(run_dir: str | Path, lattice: str = "standard") -> GainStack:
    """The stack of a run's finished phase 03 (its ``all`` ablation, first target rate), or with
    ``lattice="first_token"`` phase 08's lattices of the run's model that keep the first token."""
    from . import params as P
    from .phases import producer

    if lattice not in LATTICES:
        raise ValueError(f"unknown lattice {lattice!r}; a run offers {list(LATTICES)}")
    run_dir = Path(run_dir)
    name = LATTICES[lattice]
    phase = producer(name).name
    if not (run_dir / phase).is_dir():
        raise FileNotFoundError(f"{run_dir} has no finished {phase} phase (run it with "
                                f"`avalanche-nb run --run-id {run_dir.name} --resume --phases {phase[:2]}`)")

    z = artifacts.read(run_dir, name)  # sha256 checked against the manifest
    params = P.for_run(run_dir)
    return GainStack.from_npz_dict(z, adjacency=params.adjacencies[0], null_draws=params.null_draws,
                                   seed=params.seed, source=f"run {run_dir} ({lattice} lattice)",
                                   export_dir=run_dir / EXPORT_FOLDER)


# --------------------------------------------------------------------------- what the explorer reads off


def layer_rates(counts: np.ndarray, valid: np.ndarray, d_ff: int) -> np.ndarray:
    """float [L] neuron firing rate per layer of ``counts`` int [N, T, L]: spikes / (valid sites × d_ff)."""
    return counts.sum((0, 1)) / (valid.sum() * d_ff)


def curves(stack: GainStack, spike_def: str = "pos", mode: str = "rate_matched", adjacency: str | None = None,
               null_draws: int | None = None, seed: int | None = None) -> pd.DataFrame:
    """One row per gain of the whole stack (every sequence): ``g, rate_mean`` (mean over layers of the
    per-layer neuron rate), ``b_tot``, ``delta_b_tot_n1`` and ``z_tot_n1`` (N1, ``null_draws`` draws),
    ``chi_perc``, ``chi_fano``, ``n_avalanches``, computed as phase 03 does (same nulls, seed and
    adjacency give the same numbers as its ``sweep.parquet``). Cached on the stack.
    """
    check_key(spike_def, mode)
    adjacency = adjacency or stack.adjacency
    k = stack.null_draws if null_draws is None else null_draws
    seed = stack.seed if seed is None else seed
    memo = (spike_def, mode, adjacency, k, seed)
    if memo not in stack._cache:
        rows = []
        for gi, g in enumerate(stack.g):
            counts = stack.lattice(spike_def, mode, gi)
            X = av.occupancy(counts, stack.valid)
            nb = nulls.null_branching(X, stack.valid, ("n1",), null_draws=k, seed=seed)
            table = av.avalanche_table(counts, stack.valid, adjacency=adjacency)
            rows.append({"g": float(g), "rate_mean": layer_rates(counts, stack.valid, stack.d_ff).mean(),
                         "b_tot": nb["observed"]["tot"], "delta_b_tot_n1": nb["n1"]["tot"]["delta"],
                         "z_tot_n1": nb["n1"]["tot"]["z"], "chi_perc": av.chi_perc(table),
                         "chi_fano": av.chi_fano(counts, stack.valid), "n_avalanches": len(table)})
        stack._cache[memo] = pd.DataFrame(rows)
    return stack._cache[memo]


def find_run(run_id: str, runs: str | Path | None = None) -> Path:
    """The folder of run ``run_id`` under ``runs`` (default: the project's ``outputs/runs``)."""
    runs = Path(runs) if runs else OUTPUTS / "runs"
    path = runs / run_id
    if not path.is_dir():
        known = sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
        raise FileNotFoundError(f"no run {run_id!r} under {runs}; runs there: {known or 'none'}")
    return path
