"""A gain stack computed live for a model (no run needed): a few Dataset A windows, exactly as phase 03
computes its ``all`` ablation at the first target rate, with the same pipeline steps; cached on disk,
keyed by the params and by the code that computes it, so reopening is instant."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from . import provenance
from .gain_stack import EXPORT_FOLDER, KEYS, OUTPUTS, GainStack

#: the live explorer's slice: small enough for a minute on 2 CPU cores, overridable by any params key
LIVE_DEFAULTS: dict[str, Any] = {"n_sequences": 4, "n_calibration": 8, "window": 64}
#: params keys a live stack depends on (its cache key)
LIVE_KEYS = ("model", "dtype", "device", "device_map", "torch_threads", "batch_size", "seed", "dataset_a", "window",
             "n_sequences", "n_calibration", "exclude_first_token", "target_rates", "rate_reference_d_ff", "target_profile",
             "reference_tau", "z_floor", "fixed_tau", "gains")


def live_params(model: str, **overrides: Any) -> dict[str, Any]:
    """Validated params of a live stack: the schema's defaults, then ``LIVE_DEFAULTS``, then ``overrides``."""
    from . import params as P

    return P.validate(LIVE_DEFAULTS | {"model": model} | overrides)


#: the package modules a live stack is computed by: a change to any of them invalidates the cache
LIVE_CODE = ("options.py", "params.py", "data.py", "models.py", "hooks.py", "lattice.py", "pipeline.py", "sweep.py",
             "runtime.py", "gain_stack.py", "live_stack.py")


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


def compute(model: str, cache: bool = True, **overrides: Any) -> GainStack:
    """A live stack for ``model`` on ``n_sequences`` Dataset A windows (any params key may be overridden,
    e.g. ``progress``; an unknown key stops here), computed as phase 03's ``all`` ablation at the first
    target rate.

    Cached under ``$AVALANCHE_NB_CACHE/explore/<key>.npz``; a cached stack is returned without loading
    the model. Exports go to ``outputs/explore/<key[:12]>/``.
    """
    from . import params as P
    from . import pipeline, runtime, sweep
    from .data import token_strings
    from .models import cache_dir, load_model

    p = live_params(model, **overrides)
    key = cache_key(p)
    meta = dict(adjacency=p["adjacencies"][0], null_draws=p["null_draws"], seed=p["seed"], source=f"model {model}",
                export_dir=OUTPUTS / EXPORT_FOLDER / key[:12])
    path = cache_dir() / "explore" / f"{key}.npz"
    if cache and path.exists():
        with np.load(path) as z:
            return GainStack.from_npz_dict(z, **meta)
    runtime.configure(p["seed"], p["torch_threads"])
    lm = load_model(model, dtype=p["dtype"], device=p["device"], seed=p["seed"], device_map=p["device_map"])
    if lm.tokenizer is None:
        raise ValueError(f"model {model!r} has no tokenizer: a live stack needs real text")
    a = pipeline.build_slices(lm.tokenizer, p, ("a_calibration", "a_lattice"))
    tokens = a["a_lattice"].tokens
    valid = pipeline.valid_mask(tokens, p)
    first = P.validate(dict(p) | {"target_rates": p["target_rates"][:1]})  # the explorer shows the first rate
    ref = pipeline.build_reference(lm.model, a["a_calibration"].tokens, tokens, first, progress=p["progress"])
    gains = sweep.check_gains(p["gains"])
    counts = {k: np.zeros((len(gains),) + valid.shape + (ref.calibration.n_layers,), np.int32) for k in KEYS}
    for gi, gl in enumerate(sweep.gain_lattices(lm.model, tokens, valid, ref, gains, first)):
        for d, m in KEYS:
            counts[(d, m)][gi] = gl.counts[(0, d, m)]
    text = np.array([token_strings(lm.tokenizer, row) for row in tokens], dtype=str)
    stack = GainStack(gains, counts, valid, np.asarray(tokens), text, ref.targets[0], ref.calibration.d_ff, **meta)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        provenance.save_npz(path, **stack.to_npz_dict())
    return stack
