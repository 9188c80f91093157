"""Artifacts by name: written after a check against their schema in the phase registry, read back only
after their sha256 matches the manifest of the phase that wrote them.

    artifacts.write(out, "sweep.parquet", table)          # in a phase notebook
    table = artifacts.read(run_dir, "sweep.parquet", out)  # a later phase (records the input's hash)

Parquet artifacts are pandas DataFrames, npz artifacts dicts of arrays, json artifacts dicts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import phases, provenance


class ArtifactSchemaError(ValueError):
    """An artifact does not match its schema in :mod:`phases`."""


# --------------------------------------------------------------------------- validation


def _column_kind_ok(series, kind: str) -> bool:
    """Whether a column holds ``kind`` values (``?``: missing values allowed; all missing passes)."""
    import numpy as np
    import pandas as pd

    nullable, kind = kind.endswith("?"), kind.rstrip("?")
    values = series.dropna() if nullable else series
    if kind == "any" or (nullable and values.empty):
        return True
    if kind == "float":
        return series.dtype.kind == "f"
    if kind == "int":
        return series.dtype.kind in "iu"
    if kind == "bool":
        return series.dtype.kind == "b" or all(isinstance(v, (bool, np.bool_)) for v in values)
    if kind == "str":
        return pd.api.types.is_string_dtype(series.dtype) or all(isinstance(v, str) for v in values)
    if kind == "list":
        return all(isinstance(v, (list, tuple, np.ndarray)) for v in values)
    raise ValueError(f"unknown column kind {kind!r}")


def _check_table(art: phases.Table, df) -> None:
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise ArtifactSchemaError(f"{art.name}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in art.columns if c not in df.columns]
    extra = [c for c in df.columns if c not in art.columns]
    if missing or extra:
        raise ArtifactSchemaError(f"{art.name}: columns differ from its schema (missing {missing}, "
                                  f"undeclared {extra}); declare them in avalanche_nb/phases.py")
    for col, kind in art.columns.items():
        if len(df) and not _column_kind_ok(df[col], kind):
            raise ArtifactSchemaError(f"{art.name}: column {col!r} has dtype {df[col].dtype}, schema says {kind}")


_ARRAY_KINDS = {"float": "f", "int": "iu", "bool": "b", "str": "U"}


def _check_arrays(art: phases.Arrays, arrays: dict) -> None:
    import numpy as np

    missing = [k for k in art.arrays if k not in arrays]
    extra = [k for k in arrays if k not in art.arrays]
    if missing or extra:
        raise ArtifactSchemaError(f"{art.name}: keys differ from its schema (missing {missing}, undeclared {extra})")
    sizes: dict[str, tuple[int, str]] = {}
    for key, (kind, dims) in art.arrays.items():
        a = np.asarray(arrays[key])
        if a.dtype.kind not in _ARRAY_KINDS[kind]:
            raise ArtifactSchemaError(f"{art.name}: {key!r} has dtype {a.dtype}, schema says {kind}")
        if a.ndim != len(dims):
            raise ArtifactSchemaError(f"{art.name}: {key!r} has shape {a.shape}, schema says [{', '.join(map(str, dims))}]")
        for axis, (dim, n) in enumerate(zip(dims, a.shape)):
            if isinstance(dim, int):
                if n != dim:
                    raise ArtifactSchemaError(f"{art.name}: {key!r} axis {axis} has size {n}, schema says {dim}")
            elif dim in sizes and sizes[dim][0] != n:
                raise ArtifactSchemaError(f"{art.name}: {key!r} axis {axis} ({dim}) has size {n}, but {dim} is "
                                          f"{sizes[dim][0]} in {sizes[dim][1]!r}")
            else:
                sizes.setdefault(dim, (n, key))


_JSON_KINDS = {"object": dict, "list": list, "str": str, "bool": bool, "int": int, "number": (int, float)}


def _check_record(art: phases.Record, obj) -> None:
    if not isinstance(obj, dict):
        raise ArtifactSchemaError(f"{art.name}: expected a mapping, got {type(obj).__name__}")
    expected = art.keys.items() if art.keys is not None else ((k, art.values) for k in obj)
    for key, kind in expected:
        if key not in obj:
            raise ArtifactSchemaError(f"{art.name}: required key {key!r} is missing")
        nullable, kind = kind.endswith("?"), kind.rstrip("?")
        value = obj[key]
        if kind == "any" or (nullable and value is None):
            continue
        ok = isinstance(value, _JSON_KINDS[kind]) and not (kind in ("int", "number") and isinstance(value, bool))
        if not ok and kind in ("int", "number"):  # numpy scalars serialise as numbers
            import numpy as np

            ok = isinstance(value, np.integer if kind == "int" else np.number)
        if not ok:
            raise ArtifactSchemaError(f"{art.name}: {key!r} is {type(value).__name__}, schema says {kind}")


def validate(name: str, obj: Any) -> phases.Artifact:
    """Check ``obj`` against the schema of artifact ``name``; returns the artifact's declaration."""
    art = phases.producer(name).artifact(name)
    {phases.Table: _check_table, phases.Arrays: _check_arrays, phases.Record: _check_record}[type(art)](art, obj)
    return art


# --------------------------------------------------------------------------- writing and reading


def write(out: str | Path, name: str, obj: Any) -> None:
    """Validate ``obj`` as artifact ``name`` and write it atomically into the phase folder ``out``.

    ``out`` must be the folder of the phase that declares ``name`` (its staging folder, or a scratch
    folder named after it), so an artifact cannot land in another phase by mistake.
    """
    out = Path(out)
    phase = phases.producer(name)
    if phase.name not in out.name:
        raise ArtifactSchemaError(f"{name} belongs to phase {phase.name}, not to the folder {out}")
    art = validate(name, obj)
    path = out / name
    if isinstance(art, phases.Table):
        provenance.save_parquet(path, obj)
    elif isinstance(art, phases.Arrays):
        provenance.save_npz(path, **obj)
    else:
        provenance.save_json(path, obj)


def read(run_dir: str | Path, name: str, out: str | Path | None = None) -> Any:
    """Artifact ``name`` of a finished phase of ``run_dir``, after checking its sha256 against that phase's
    manifest; with ``out`` the input and its hash are recorded in the current phase's manifest."""
    return load(provenance.load_input(run_dir, f"{phases.producer(name).name}/{name}", out))


def load(path: str | Path) -> Any:
    """An artifact file as its object (no hash check: for a phase's own, unfinished folder)."""
    path = Path(path)
    art = phases.producer(path.name).artifact(path.name)
    if isinstance(art, phases.Table):
        import pandas as pd

        return pd.read_parquet(path)
    if isinstance(art, phases.Arrays):
        import numpy as np

        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    return json.loads(path.read_text())


def missing(phase_dir: str | Path, phase: phases.Phase) -> list[str]:
    """The declared artifacts of ``phase`` that ``phase_dir`` lacks."""
    return [a.name for a in phase.writes if not (Path(phase_dir) / a.name).is_file()]


def empty(name: str):
    """An empty DataFrame with the columns of table artifact ``name`` (a phase that measured nothing of
    that kind still writes the file, with its schema)."""
    import pandas as pd

    art = phases.producer(name).artifact(name)
    if not isinstance(art, phases.Table):
        raise ValueError(f"{name} is not a table artifact")
    return pd.DataFrame(columns=list(art.columns))
