"""Run folders, artifacts and manifests.

A run is ``<out>/<run_id>/``; each phase writes into a staging folder ``.<phase>.partial/`` and only
after its notebook ran to the end and ``manifest.json`` (sha256 of every file, resolved params,
facts the notebook recorded) is written is it renamed to ``<phase>/``. So a folder named after a phase
is always complete, and a finished phase is never overwritten.

Notebooks get their folder from :func:`phase_output` (through ``runtime.start``), write and read
artifacts by name through :mod:`artifacts` (schema-checked; written to a temporary name, then renamed;
read only after their sha256 matches the manifest), record facts with :func:`record` and the seconds
of named steps with :func:`timed`. Timings go to the manifest's ``timings``, never into an artifact,
so two runs of the same params are identical file for file (the notebooks aside).
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "manifest.json"
FACTS = "facts.json"
TIMINGS = ".timings.json"  # seconds per named step while the phase runs; moved into the manifest
SCRATCH_ENV = "AVALANCHE_NB_SCRATCH"  # nbval re-executions write here instead of the run folder

MANIFEST_SCHEMA = {
    "type": "object",
    "required": ["phase", "run_id", "created", "params", "params_sha256", "artifacts", "inputs",
                 "facts", "versions", "git_commit", "wall_seconds"],
    "properties": {
        "phase": {"type": "string"},
        "run_id": {"type": "string"},
        "created": {"type": "string"},
        "params": {"type": "object"},
        "params_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "artifacts": {"type": "object", "additionalProperties": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
        "inputs": {"type": "object", "additionalProperties": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
        "facts": {"type": "object"},
        "versions": {"type": "object"},
        "git_commit": {"type": "string"},
        "wall_seconds": {"type": "number"},
        "timings": {"type": "object", "additionalProperties": {"type": "number"}},
    },
}


class RunExistsError(FileExistsError):
    """The run (or phase) folder exists already; finished runs are never overwritten."""


class ManifestError(ValueError):
    """A manifest is missing, malformed, or does not match the files on disk."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def params_sha256(params: dict) -> str:
    return sha256_bytes(json.dumps(params, sort_keys=True).encode())


def staging_dir(run_dir: str | Path, phase: str) -> Path:
    return Path(run_dir) / f".{phase}.partial"


def phase_output(run_dir: str | Path, phase: str) -> Path:
    """Where the running notebook writes its artifacts: the phase's staging folder, which
    `avalanche-nb run` creates before it starts the notebook.

    Anywhere else (nbval re-executing an archived notebook, a notebook opened by hand) it is a scratch
    folder, ``$AVALANCHE_NB_SCRATCH/<phase>`` or a temporary one, so a finished run is never touched.
    """
    stage = staging_dir(run_dir, phase) if run_dir else None
    scratch = os.environ.get(SCRATCH_ENV)
    if stage is not None and stage.is_dir() and not scratch:
        return stage
    if not scratch:
        import tempfile

        scratch = tempfile.mkdtemp(prefix="avalanche_nb-")
        print(f"not run by `avalanche-nb run`: artifacts go to the scratch folder {scratch}/{phase}")
    out = Path(scratch) / phase
    out.mkdir(parents=True, exist_ok=True)
    return out


def atomic_write(path: Path, write) -> Path:
    """``write(tmp)`` to a temporary name beside ``path``, then rename: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


def save_json(path: str | Path, obj: Any) -> Path:
    return atomic_write(Path(path), lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"))


def save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    def write(p: Path):
        with open(p, "wb") as f:  # a file object keeps numpy from appending ".npz" to the temp name
            np.savez_compressed(f, **arrays)
    return atomic_write(Path(path), write)


def save_parquet(path: str | Path, df) -> Path:
    return atomic_write(Path(path), lambda p: df.to_parquet(p, index=False))


def save_csv(path: str | Path, df) -> Path:
    return atomic_write(Path(path), lambda p: df.to_csv(p, index=False))


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


@contextmanager
def timed(out: str | Path, step: str):
    """Time the block as the named ``step`` of the phase writing to ``out`` (seconds, in the manifest's
    ``timings``; a step timed twice adds up)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        add_timings(out, {step: time.perf_counter() - t0})


def clocked(clock: dict[str, float], step: str, fn, *args, **kw):
    """``fn(*args, **kw)``, its wall seconds added to ``clock[step]`` (steps of a package function, handed to
    :func:`add_timings` by the notebook that called it)."""
    t0 = time.perf_counter()
    try:
        return fn(*args, **kw)
    finally:
        clock[step] = clock.get(step, 0.0) + time.perf_counter() - t0


def add_timings(out: str | Path, seconds: dict[str, float]) -> None:
    """Add seconds per named step (measured elsewhere, e.g. inside the sweep) to the phase's timings."""
    path = Path(out) / TIMINGS
    timings = json.loads(path.read_text()) if path.exists() else {}
    for step, s in seconds.items():
        timings[step] = round(timings.get(step, 0.0) + s, 3)
    save_json(path, timings)


def record(out: str | Path, **facts: Any) -> None:
    """Merge ``facts`` (model, slice hashes, timings, ...) into the phase's ``facts.json``."""
    path = Path(out) / FACTS
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(json.loads(json.dumps(facts, default=_json_default)))
    save_json(path, current)


def load_input(run_dir: str | Path, relpath: str, out: str | Path | None = None) -> Path:
    """Path of an earlier phase's artifact, after checking its sha256 against that phase's manifest.

    ``relpath`` is ``"<phase>/<file>"``. With ``out`` the input and its hash are recorded in the
    current phase's facts (they end up in its manifest's ``inputs``).
    """
    phase, _, name = relpath.partition("/")
    phase_dir = Path(run_dir) / phase
    manifest = read_manifest(phase_dir)
    if name not in manifest["artifacts"]:
        raise ManifestError(f"{relpath}: not an artifact of phase {phase}")
    digest = sha256_file(phase_dir / name)
    if digest != manifest["artifacts"][name]:
        raise ManifestError(f"{relpath}: sha256 does not match its manifest (file changed after the run)")
    if out is not None:
        path = Path(out) / FACTS
        facts = json.loads(path.read_text()) if path.exists() else {}
        facts.setdefault("inputs", {})[relpath] = digest
        save_json(path, facts)
    return phase_dir / name


def read_manifest(phase_dir: str | Path) -> dict:
    path = Path(phase_dir) / MANIFEST
    if not path.exists():
        raise ManifestError(f"{phase_dir} has no {MANIFEST}: the phase did not finish (or never ran)")
    manifest = json.loads(path.read_text())
    validate_manifest(manifest)
    return manifest


@functools.cache
def _manifest_validator():
    # fastjsonschema, not jsonschema: importing jsonschema builds an IRI grammar (rfc3987_syntax) for
    # several seconds, paid again in every phase's kernel that reads an input
    import fastjsonschema

    return fastjsonschema.compile(MANIFEST_SCHEMA)


def validate_manifest(manifest: dict) -> None:
    import fastjsonschema

    try:
        _manifest_validator()(manifest)
    except fastjsonschema.JsonSchemaException as err:
        raise ManifestError(f"manifest does not match its schema: {err.message}") from None


def verify_phase(phase_dir: str | Path) -> list[str]:
    """Problems found re-hashing a phase folder (empty list = verified)."""
    phase_dir = Path(phase_dir)
    try:
        manifest = read_manifest(phase_dir)
    except ManifestError as err:
        return [str(err)]
    problems = []
    on_disk = {str(p.relative_to(phase_dir)) for p in phase_dir.rglob("*") if p.is_file() and p.name != MANIFEST}
    for name, digest in manifest["artifacts"].items():
        if not (phase_dir / name).exists():
            problems.append(f"{phase_dir.name}/{name}: missing")
        elif sha256_file(phase_dir / name) != digest:
            problems.append(f"{phase_dir.name}/{name}: sha256 mismatch")
    problems += [f"{phase_dir.name}/{n}: not in the manifest" for n in sorted(on_disk - set(manifest["artifacts"]))]
    return problems


def git_commit(repo: str | Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("avalanche-nb", "torch", "transformers", "numpy", "scipy", "pandas", "papermill", "gguf"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def finish_phase(run_dir: Path, phase: str, run_id: str, params: dict, repo: Path, wall_seconds: float) -> Path:
    """Hash the staging folder, write its manifest, and rename it to the phase's final name."""
    stage, final = staging_dir(run_dir, phase), Path(run_dir) / phase
    if final.exists():
        raise RunExistsError(f"{final} exists already; a finished phase is never overwritten")
    facts_path, timings_path = stage / FACTS, stage / TIMINGS
    facts = json.loads(facts_path.read_text()) if facts_path.exists() else {}
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    timings_path.unlink(missing_ok=True)
    artifacts = {str(p.relative_to(stage)): sha256_file(p) for p in sorted(stage.rglob("*"))
                 if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")}
    manifest = {
        "phase": phase, "run_id": run_id,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "params": params, "params_sha256": params_sha256(params),
        "artifacts": artifacts, "inputs": facts.pop("inputs", {}), "facts": facts,
        "versions": versions(), "git_commit": git_commit(repo), "wall_seconds": round(wall_seconds, 2),
        "timings": timings,
    }
    validate_manifest(manifest)
    save_json(stage / MANIFEST, manifest)
    os.rename(stage, final)
    return final
