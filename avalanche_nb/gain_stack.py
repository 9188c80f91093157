"""A gain stack: the event lattices of one slice at every gain of a grid, under both spike
definitions and both threshold modes, with what the interactive explorer reads off them.

A stack comes from a run (``03_gain_sweep/sweep_lattices.npz``, hash-checked against its manifest)
or is computed for a model on a few Dataset A windows exactly as phase 03 computes its ``all``
ablation (cached on disk, keyed by the params). From it: the per-gain signatures (b, delta-b against
N1, chi) of :func:`signatures`, the avalanches of one sequence's lattice (:func:`sequence_avalanches`)
and the detail of one avalanche (:func:`avalanche_detail`), exported by :func:`export_avalanche`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import avalanches as av
from . import lattice as lat
from . import nulls, provenance
from .sweep import THRESHOLD_MODES

KEYS: tuple[tuple[str, str], ...] = tuple((d, m) for d in lat.SPIKE_DEFS for m in THRESHOLD_MODES)
SWEEP_PHASE = "03_gain_sweep"
NPZ = "sweep_lattices.npz"
EXPORT_FOLDER = "explore"  # a run's exports: beside its phase folders, never inside one
OUTPUTS = Path(__file__).resolve().parent.parent / "outputs"  # the project's runs and live exports
#: the live explorer's slice: small enough for a minute on 2 CPU cores, overridable by any params key
LIVE_DEFAULTS: dict[str, Any] = {"n_sequences": 4, "n_calibration": 8, "window": 64}
#: params keys a live stack depends on (its cache key)
LIVE_KEYS = ("model", "dtype", "device", "torch_threads", "batch_size", "seed", "dataset_a", "window", "n_sequences",
             "n_calibration", "exclude_first_token", "target_rates", "rate_reference_d_ff", "target_profile",
             "reference_tau", "z_floor", "fixed_tau", "gains")


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
    are the defaults of the signatures (a run's own, so its curves equal ``sweep.parquet``);
    ``export_dir`` is where selections are exported.
    """

    g: np.ndarray
    counts: dict[tuple[str, str], np.ndarray]
    valid: np.ndarray
    tokens: np.ndarray
    token_text: np.ndarray
    target_rate: np.ndarray
    d_ff: int
    adjacency: str = "von_neumann"
    null_draws: int = 100
    seed: int = 0
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
    if spike_def not in lat.SPIKE_DEFS:
        raise ValueError(f"unknown spike definition {spike_def!r}; use one of {lat.SPIKE_DEFS}")
    if mode not in THRESHOLD_MODES:
        raise ValueError(f"unknown threshold mode {mode!r}; use one of {THRESHOLD_MODES}")
    return spike_def, mode


# --------------------------------------------------------------------------- sources


def from_run(run_dir: str | Path) -> GainStack:
    """The stack of a run's finished phase 03 (its ``all`` ablation, first target rate)."""
    run_dir = Path(run_dir)
    phase_dir = run_dir / SWEEP_PHASE
    if not phase_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} has no finished {SWEEP_PHASE} phase (run it with "
                                f"`avalanche-nb run --run-id {run_dir.name} --resume --phases 03`)")
    path = provenance.load_input(run_dir, f"{SWEEP_PHASE}/{NPZ}")  # sha256 checked against the manifest
    params = provenance.read_manifest(phase_dir)["params"]
    with np.load(path) as z:
        return GainStack.from_npz_dict(z, adjacency=params["adjacencies"][0], null_draws=params["null_draws"],
                                       seed=params["seed"], source=f"run {run_dir}",
                                       export_dir=run_dir / EXPORT_FOLDER)


def live_params(model: str, **overrides: Any) -> dict[str, Any]:
    """Validated params of a live stack: the schema's defaults, then ``LIVE_DEFAULTS``, then ``overrides``."""
    from . import params as P

    return P.validate(LIVE_DEFAULTS | {"model": model} | overrides)


#: the package modules a live stack is computed by: a change to any of them invalidates the cache
LIVE_CODE = ("data.py", "models.py", "hooks.py", "lattice.py", "sweep.py", "runtime.py", "gain_stack.py")


def cache_key(params: dict[str, Any]) -> str:
    """sha256 of what a live stack depends on: its params, the code computing it (``LIVE_CODE``) and,
    for a local model path, the file's size and mtime."""
    here = Path(__file__).resolve().parent
    keyed = {k: params[k] for k in LIVE_KEYS} | {"code": [provenance.sha256_file(here / f) for f in LIVE_CODE]}
    path = Path(str(params["model"])).expanduser()
    if path.exists():
        st = path.stat()
        keyed["model_file"] = [str(path.resolve()), st.st_size, st.st_mtime_ns]
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()


def compute(model: str, cache: bool = True, progress: bool = True, **overrides: Any) -> GainStack:
    """A live stack for ``model`` on ``n_sequences`` Dataset A windows (any params key may be overridden;
    an unknown key stops here), computed as phase 03's ``all`` ablation at the first target rate.

    Cached under ``$AVALANCHE_NB_CACHE/explore/<key>.npz``; a cached stack is returned without loading
    the model. Exports go to ``outputs/explore/<key[:12]>/``.
    """
    from . import runtime, sweep
    from .models import cache_dir, load_model

    p = live_params(model, **overrides)
    key = cache_key(p)
    meta = dict(adjacency=p["adjacencies"][0], null_draws=p["null_draws"], seed=p["seed"], source=f"model {model}",
                export_dir=OUTPUTS / EXPORT_FOLDER / key[:12])
    path = cache_dir() / "explore" / f"{key}.npz"
    if cache and path.exists():
        with np.load(path) as z:
            return GainStack.from_npz_dict(z, **meta)
    gains = sweep.check_gains(p["gains"])
    runtime.configure(p["seed"], p["torch_threads"])
    lm = load_model(model, dtype=p["dtype"], device=p["device"], seed=p["seed"])
    if lm.tokenizer is None:
        raise ValueError(f"model {model!r} has no tokenizer: a live stack needs real text")
    calib_slice, slice_ = runtime.dataset_a_slices(lm.tokenizer, p["dataset_a"], p["n_calibration"], p["n_sequences"],
                                                   p["window"], p["seed"])
    calib_valid = lat.valid_mask(p["n_calibration"], p["window"], p["exclude_first_token"])
    calibration = lat.calibrate(lm.model, calib_slice.tokens, calib_valid, p["batch_size"], progress)
    valid = lat.valid_mask(p["n_sequences"], p["window"], p["exclude_first_token"])
    rates = lat.scale_seed_rates(p["target_rates"][:1], calibration.d_ff, p["rate_reference_d_ff"])
    _, targets, fixed = sweep.reference(lm.model, slice_.tokens, valid, calibration, rates, p["target_profile"],
                                        p["z_floor"], p["reference_tau"], p["batch_size"], progress,
                                        fixed_tau=p["fixed_tau"])
    counts = {k: np.zeros((len(gains),) + valid.shape + (calibration.n_layers,), np.int32) for k in KEYS}
    for gi, gl in enumerate(sweep.gain_lattices(lm.model, slice_.tokens, valid, calibration, gains, targets, fixed,
                                                floor=p["z_floor"], batch_size=p["batch_size"], progress=progress)):
        for d, m in KEYS:
            counts[(d, m)][gi] = gl.counts[(0, d, m)]
    text = np.array([runtime.token_strings(lm.tokenizer, row) for row in slice_.tokens], dtype=str)
    stack = GainStack(gains, counts, valid, np.asarray(slice_.tokens), text, targets[0], calibration.d_ff, **meta)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        provenance.save_npz(path, **stack.to_npz_dict())
    return stack


# --------------------------------------------------------------------------- what the explorer reads off


def layer_rates(counts: np.ndarray, valid: np.ndarray, d_ff: int) -> np.ndarray:
    """float [L] neuron firing rate per layer of ``counts`` int [N, T, L]: spikes / (valid sites × d_ff)."""
    return counts.sum((0, 1)) / (valid.sum() * d_ff)


def signatures(stack: GainStack, spike_def: str = "pos", mode: str = "rate_matched", adjacency: str | None = None,
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
            table = av.avalanche_table(counts, stack.valid, adjacency)
            rows.append({"g": float(g), "rate_mean": layer_rates(counts, stack.valid, stack.d_ff).mean(),
                         "b_tot": nb["observed"]["tot"], "delta_b_tot_n1": nb["n1"]["tot"]["delta"],
                         "z_tot_n1": nb["n1"]["tot"]["z"], "chi_perc": av.chi_perc(table),
                         "chi_fano": av.chi_fano(counts, stack.valid), "n_avalanches": len(table)})
        stack._cache[memo] = pd.DataFrame(rows)
    return stack._cache[memo]


def sequence_avalanches(counts: np.ndarray, valid: np.ndarray, adjacency: str) -> tuple[np.ndarray, pd.DataFrame]:
    """Avalanches of one sequence's lattice ``counts`` int [T, L] (``valid`` bool [T]).

    Returns labels int32 [T, L] (0 = no event, k = avalanche k) and the table (``avalanches.TABLE_COLUMNS``
    plus ``id`` = k and ``t1``, ``l1``, the last token and top layer), row k - 1 for avalanche k.
    """
    labels, _ = av.label_avalanches(av.occupancy(counts[None], valid[None]), adjacency)
    table = av.avalanche_table(counts[None], valid[None], adjacency).drop(columns="seq")
    table.insert(0, "id", np.arange(1, len(table) + 1))
    table["t1"] = table.t0 + table.t_span - 1
    table["l1"] = table.l0 + table.l_span - 1
    return labels[0], table


def avalanche_detail(stack: GainStack, gi: int, seq: int, avalanche: int, spike_def: str = "pos",
                     mode: str = "rate_matched", adjacency: str | None = None) -> dict[str, Any]:
    """Everything about avalanche ``avalanche`` (its id in :func:`sequence_avalanches`) of sequence ``seq``
    at gain index ``gi``: its sites with their spike counts under both spike definitions (same gain and
    threshold mode), size (spikes), n_sites, spans, layers and the tokens it spans."""
    check_key(spike_def, mode)
    adjacency = adjacency or stack.adjacency
    labels, table = sequence_avalanches(stack.lattice(spike_def, mode, gi)[seq], stack.valid[seq], adjacency)
    if not 1 <= avalanche <= len(table):
        raise ValueError(f"sequence {seq} has avalanches 1..{len(table)} at g = {stack.g[gi]:g}, not {avalanche}")
    row = table.iloc[avalanche - 1]
    t, l = np.nonzero(labels == avalanche)
    sites = pd.DataFrame({"token": t, "layer": l, "text": stack.token_text[seq][t]})
    for d in lat.SPIKE_DEFS:
        sites[f"spikes_{d}"] = stack.lattice(d, mode, gi)[seq][t, l]
    t0, t1 = int(row.t0), int(row.t1)
    return {"source": stack.source, "g": float(stack.g[gi]), "spike_def": spike_def, "threshold_mode": mode,
            "adjacency": adjacency, "seq": int(seq), "avalanche": int(avalanche), "size": int(row["size"]),
            "n_sites": int(row.n_sites), "t_span": int(row.t_span), "l_span": int(row.l_span), "t0": t0, "t1": t1,
            "layers": sorted(set(l.tolist())), "tokens": stack.token_text[seq][t0:t1 + 1].tolist(),
            "token_ids": stack.tokens[seq][t0:t1 + 1].tolist(), "sites": sites}


def export_avalanche(detail: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write one avalanche's detail as ``<stem>.json`` (everything, sites included) and ``<stem>.csv``
    (its sites), atomically, under ``out_dir``. Returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = (f"avalanche_g{detail['g']:g}_{detail['spike_def']}_{detail['threshold_mode']}_{detail['adjacency']}"
            f"_seq{detail['seq']}_id{detail['avalanche']}")
    sites = detail["sites"]
    js = provenance.save_json(out_dir / f"{stem}.json", {k: v for k, v in detail.items() if k != "sites"}
                              | {"sites": sites.to_dict(orient="records")})
    csv = provenance.save_csv(out_dir / f"{stem}.csv", sites)
    return js, csv


def find_run(run_id: str, runs: str | Path | None = None) -> Path:
    """The folder of run ``run_id`` under ``runs`` (default: the project's ``outputs/runs``)."""
    runs = Path(runs) if runs else OUTPUTS / "runs"
    path = runs / run_id
    if not path.is_dir():
        known = sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
        raise FileNotFoundError(f"no run {run_id!r} under {runs}; runs there: {known or 'none'}")
    return path
