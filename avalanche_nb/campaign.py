"""Campaigns: many ordinary runs side by side (models x seeds x slices x settings), each a Ray task.

A campaign file names a base params file and the cells to run::

    base: default.yaml              # a params file, relative to the campaign file
    grid:                           # every combination is a cell (keys in this order name it)
      model: [smollm2-135m-instruct, gemma3-270m]
      seed: [0, 1]
    cells:                          # extra cells, each a set of overrides (optional `id`)
      - {id: smol-long, model: smollm2-135m-instruct, n_sequences: 64}
    phases: "00,01,02,03,04,06"     # optional; default every phase
    cpus_per_cell: 2                # optional; default the cell's torch_threads
    jobs_per_cell: 2                # optional; phases a cell runs at once (avalanche-nb run --jobs), default 1
    gpus_per_cell: 1                # optional; default 1 for a cell on CUDA (device / device_map), else 0
    max_retries: 2                  # optional; re-runs of a cell whose worker died (default 2)

Each cell is one ordinary run (:func:`runner.run`: the same phases, staging folders and manifests)
into ``<out>/<campaign_id>/runs/<cell_id>/``. Every cell's params are validated before any cell
starts; whether a cell's model loads is the cell's own first step (in a cluster the models may live
only on the workers), so an unknown model fails that cell, named with its reason, while the others
go on. A worker that dies mid-phase leaves that phase's staging folder; Ray re-runs the cell, which
resumes the run (:func:`runner.run` with ``resume``): the staging folder is removed and the phase
starts clean. ``--resume`` re-queues every cell that has not finished; a finished cell is never run
again. The campaign folder must be visible at the same path to the driver and every worker (one
machine, or a shared filesystem on a cluster).

After the cells, ``campaign.parquet`` holds one row per cell (:func:`headline`) and the campaign
notebook (``notebooks/campaign.py``) is executed into the campaign folder with its figures.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import math
import os
import re
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import params as P
from . import provenance
from . import runner
from .runner import check_inputs, finished, select_phases

CAMPAIGN_KEYS = {
    "base": "params file every cell starts from (relative to the campaign file); default: the schema's defaults",
    "grid": "params key -> list of values; every combination is a cell",
    "cells": "list of extra cells, each a mapping of params overrides with an optional `id`",
    "phases": "phases of every cell (`avalanche-nb run --phases` syntax); default every phase",
    "cpus_per_cell": "CPUs Ray reserves for a cell; default the cell's torch_threads (1 when 0)",
    "jobs_per_cell": "phases a cell runs at once, as `avalanche-nb run --jobs` (the same artifacts); default 1",
    "gpus_per_cell": "GPUs Ray reserves for a cell; default 1 when its params say device: cuda... or give a "
                     "device_map, else 0",
    "max_retries": "times Ray re-runs a cell whose worker died (a failing phase is not retried); default 2",
}
CAMPAIGN_FILE, CELLS_FILE, TABLE, LOCK = "campaign.yaml", "cells.json", "campaign.parquet", ".lock"
NOTEBOOK = "campaign"  # notebooks/campaign.py, executed as <campaign>/report/campaign.ipynb
REPORT = "report"  # the executed campaign notebook and its figures/


class CampaignInterrupted(RuntimeError):
    """Ctrl-C: scheduling stopped, finished cells intact, the command to resume in the message."""


@dataclass(frozen=True)
class Cell:
    """One run of a campaign: its id (the run folder's name), its overrides and its resolved params."""

    cell_id: str
    overrides: dict
    params: P.Params


@dataclass(frozen=True)
class Campaign:
    campaign_id: str
    source: Path  # the campaign file
    cells: tuple[Cell, ...]
    phases: tuple[str, ...]
    cpus_per_cell: float | None
    gpus_per_cell: float | None
    max_retries: int
    jobs_per_cell: int = 1


# --------------------------------------------------------------------------- the campaign file


def _value_id(value: Any) -> str:
    if isinstance(value, list):
        return "+".join(_value_id(v) for v in value) or "none"
    text = Path(value).name if isinstance(value, str) and "/" in value else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip(".") or "x"


def cell_id(overrides: dict) -> str:
    """``{"model": "gemma3-270m", "seed": 1}`` -> ``model=gemma3-270m,seed=1`` (file-name safe; a long id
    is cut and given a hash of the overrides so ids stay unique)."""
    text = ",".join(f"{k}={_value_id(v)}" for k, v in overrides.items()) or "base"
    if len(text) > 80:
        digest = hashlib.sha256(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:8]
        text = f"{text[:71]}-{digest}"
    return text


def _error(source: Path, msg: str) -> P.ParamsError:
    return P.ParamsError(f"campaign {source}: {msg}")


def _cells(spec: dict, source: Path) -> list[tuple[str, dict]]:
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict):
        raise _error(source, "`grid` must map params keys to lists of values")
    for key, values in grid.items():
        if key not in P.SCHEMA:
            raise _error(source, f"grid: {P.unknown_key_message(key, P.SCHEMA)}")
        if not isinstance(values, list) or not values:
            raise _error(source, f"grid key {key!r} must be a non-empty list of values, got {values!r}")
    cells = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] if grid else []
    out = [(cell_id(c), c) for c in cells]
    extra = spec.get("cells") or []
    if not isinstance(extra, list) or not all(isinstance(c, dict) for c in extra):
        raise _error(source, "`cells` must be a list of mappings of params overrides")
    for c in extra:
        c = dict(c)
        given = c.pop("id", None)
        if given is not None and (not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.,=+_-]*", str(given))):
            raise _error(source, f"cell id {given!r} may hold letters, digits and .,=+_- only")
        out.append((str(given) if given is not None else cell_id(c), c))
    if not out:
        raise _error(source, "no cells: give a `grid` or `cells`")
    seen = [i for i, _ in out]
    dup = sorted({i for i in seen if seen.count(i) > 1})
    if dup:
        raise _error(source, f"cell ids repeat: {', '.join(dup)} (give the extra cells an `id`)")
    return out


def load(path: str | Path, campaign_id: str | None = None) -> Campaign:
    """Read a campaign file and validate every cell's params (keys, types, cross-key checks); raises
    :class:`params.ParamsError` naming the file, the cell and the problem before anything runs."""
    source = Path(path).resolve()
    if not source.is_file():
        raise P.ParamsError(f"campaign file {path} does not exist")
    spec = yaml.safe_load(source.read_text()) or {}
    if not isinstance(spec, dict):
        raise _error(source, "must be a mapping (base, grid, cells, ...)")
    for key in spec:
        if key not in CAMPAIGN_KEYS:
            raise _error(source, P.unknown_key_message(key, CAMPAIGN_KEYS).replace("params key", "campaign key"))
    base: dict = {}
    if spec.get("base"):
        base_file = (source.parent / spec["base"]).resolve()
        if not base_file.is_file():
            raise _error(source, f"base params file {base_file} does not exist")
        base = yaml.safe_load(base_file.read_text()) or {}
        P.load(base_file)  # the base alone must be valid too: its own errors name its own file
    cells = []
    for cid, overrides in _cells(spec, source):
        try:
            cells.append(Cell(cid, overrides, P.validate(base | overrides)))
        except P.ParamsError as err:
            raise _error(source, f"cell {cid}: {err}") from None
    for key in ("cpus_per_cell", "gpus_per_cell"):
        v = spec.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise _error(source, f"{key} must be a number >= 0, got {v!r}")
    retries = spec.get("max_retries", 2)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise _error(source, f"max_retries must be an integer >= 0, got {retries!r}")
    jobs = spec.get("jobs_per_cell", 1)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise _error(source, f"jobs_per_cell must be an integer >= 1, got {jobs!r}")
    cid = campaign_id or source.stem
    if "/" in cid or cid.startswith("."):
        raise _error(source, f"campaign id {cid!r} may not contain '/' or start with '.'")
    phases = tuple(select_phases(spec.get("phases")))
    try:
        check_inputs(list(phases), [])  # every cell starts a fresh run: a phase's inputs must be in the campaign
    except P.ParamsError as err:
        raise _error(source, f"phases: {err}") from None
    return Campaign(cid, source, tuple(cells), phases,
                    spec.get("cpus_per_cell"), spec.get("gpus_per_cell"), retries, jobs)


# --------------------------------------------------------------------------- one cell (a Ray task)


def cell_state(run_dir: Path, phases: tuple[str, ...]) -> tuple[str, str | None]:
    """(state, phase) of a cell's run folder read from disk: ``done`` (every phase finished), ``running``
    with the phases whose staging folders exist (comma-separated: a cell may run two at once), ``failed``
    with the first phase kept as ``<phase>.failed``, ``queued`` (no folder or nothing started)."""
    if not run_dir.is_dir():
        return "queued", None
    done = finished(run_dir)
    if all(ph in done for ph in phases):
        return "done", None
    staging = [ph for ph in phases if provenance.staging_dir(run_dir, ph).is_dir()]
    if staging:
        return "running", ", ".join(staging)
    failed = [ph for ph in phases if (run_dir / f"{ph}.failed").is_dir()]
    return ("failed", failed[0]) if failed else ("queued", None)


def _status_path(folder: Path, cid: str) -> Path:
    return folder / "status" / f"{cid}.json"


def write_status(folder: Path, cid: str, **record: Any) -> None:
    path = _status_path(folder, cid)
    path.parent.mkdir(exist_ok=True)
    record = {"cell": cid, "time": _dt.datetime.now().isoformat(timespec="seconds"), **record}
    provenance.atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record, indent=1, sort_keys=True)))


def read_status(folder: Path, cid: str) -> dict:
    path = _status_path(folder, cid)
    return json.loads(path.read_text()) if path.exists() else {"cell": cid, "state": "queued"}


def run_cell(folder: str, cid: str, phases: list[str], notebooks: str | None, jobs: int = 1) -> dict:
    """Run (or finish) one cell's run folder (``jobs`` phases at once); returns its status record. Runs
    inside a Ray worker:
    a failing phase, a refused model or any other error becomes a ``failed`` record (the campaign goes
    on); a dead worker is Ray's to retry, and the retry resumes the run, removing the dead attempt's
    staging folder (its kernel exited with its worker: see ``runner._kernel_manager``)."""
    import shutil

    folder = Path(folder)
    host = socket.gethostname()
    if not (folder / CELLS_FILE).is_file():  # a cluster node that does not mount the campaign folder
        return {"cell": cid, "state": "failed", "phase": "plan", "host": host,
                "reason": f"the campaign folder {folder} is not visible on {host}: put it on a filesystem every "
                          "node mounts at the same path"}
    runs, params_file = folder / "runs", folder / "params" / f"{cid}.yaml"
    run_dir = runs / cid
    prior = read_status(folder, cid)
    if cell_state(run_dir, tuple(phases))[0] == "done":  # e.g. the worker died after the last phase
        if prior.get("state") != "done":
            kept = {k: v for k, v in prior.items() if k not in ("cell", "time")}
            write_status(folder, cid, **kept | {"state": "done", "phase": None, "reason": None})
        return read_status(folder, cid)
    attempt = prior.get("attempt", 0) + 1
    write_status(folder, cid, state="running", attempt=attempt, host=host, pid=os.getpid())
    t0 = time.perf_counter()
    if run_dir.is_dir() and not (run_dir / P.PARAMS_FILE).exists():
        shutil.rmtree(run_dir)  # a worker died between creating the folder and writing its params: nothing in it
    resume = run_dir.is_dir()
    todo = [ph for ph in phases if not (resume and (run_dir / ph).is_dir())]
    record: dict[str, Any] = {"attempt": attempt, "host": host}
    try:
        runner.run(params_file, ",".join(todo), out=runs, run_id=cid, resume=resume,
                   notebooks=Path(notebooks) if notebooks else None, jobs=jobs)
        record |= {"state": "done"}
    except runner.PhaseFailedError as err:
        record |= {"state": "failed", "phase": err.phase, "reason": str(err)}
    except (P.ParamsError, provenance.RunExistsError) as err:
        record |= {"state": "failed", "phase": "plan", "reason": str(err)}
    except (runner.RunInterrupted, KeyboardInterrupt) as err:
        record |= {"state": "interrupted", "phase": cell_state(run_dir, tuple(phases))[1], "reason": str(err)}
    except Exception as err:  # noqa: BLE001 - whatever else stops a cell is its own failure, not the campaign's
        record |= {"state": "failed", "phase": cell_state(run_dir, tuple(phases))[1] or "plan",
                   "reason": f"{type(err).__name__}: {err}"}
    record["seconds"] = round(time.perf_counter() - t0, 1)
    write_status(folder, cid, **record)
    return read_status(folder, cid)


# --------------------------------------------------------------------------- the campaign


def _prepare(c: Campaign, folder: Path) -> list[Cell]:
    """Fill (or check, on resume) the campaign folder; returns the cells still to run."""
    todo = []
    for cell in c.cells:
        params_file = folder / "params" / f"{cell.cell_id}.yaml"
        run_dir = folder / "runs" / cell.cell_id
        stored = P.load(params_file) if params_file.exists() and run_dir.is_dir() else cell.params
        if stored != cell.params:
            changed = sorted(k for k in cell.params if stored[k] != cell.params[k])
            raise P.ParamsError(f"--resume: cell {cell.cell_id}'s params differ from its run's in "
                                f"{', '.join(changed)}; start a new campaign, or remove {run_dir} to redo the cell")
        if cell_state(run_dir, c.phases)[0] != "done":
            todo.append(cell)
    (folder / "params").mkdir(parents=True, exist_ok=True)
    (folder / "runs").mkdir(exist_ok=True)
    provenance.atomic_write(folder / CAMPAIGN_FILE, lambda tmp: tmp.write_text(c.source.read_text()))
    cells = {cell.cell_id: {"overrides": cell.overrides, "params_sha256": provenance.params_sha256(dict(cell.params))}
             for cell in c.cells}
    provenance.atomic_write(folder / CELLS_FILE, lambda tmp: tmp.write_text(json.dumps(cells, indent=1)))
    for cell in todo:
        provenance.atomic_write(folder / "params" / f"{cell.cell_id}.yaml",
                                lambda tmp, p=cell.params: tmp.write_text(P.dump(p)))
    return todo


def _resources(c: Campaign, cell: Cell) -> dict:
    """Ray resources of a cell: ``cpus_per_cell`` (default the cell's torch_threads) and ``gpus_per_cell``
    (default 1 when the cell's params put it on CUDA or give a device map, else 0: a CPU cell never holds
    a GPU, and a GPU cell always reserves one, so Ray gives it its own ``CUDA_VISIBLE_DEVICES``)."""
    cpus = c.cpus_per_cell if c.cpus_per_cell is not None else max(cell.params["torch_threads"], 1)
    gpus = c.gpus_per_cell
    if gpus is None:
        gpus = 1 if str(cell.params["device"]).startswith("cuda") or cell.params["device_map"] else 0
    return {"num_cpus": cpus, "num_gpus": gpus}


def _progress_line(folder: Path, c: Campaign, settled: dict[str, dict]) -> str:
    counts = {"queued": 0, "running": 0, "done": 0, "failed": 0}
    running = []
    for cell in c.cells:
        rec = settled.get(cell.cell_id)
        if rec is not None:
            counts["done" if rec["state"] == "done" else "failed"] += 1
            continue
        state, phase = cell_state(folder / "runs" / cell.cell_id, c.phases)
        live = read_status(folder, cell.cell_id).get("state") == "running"
        if live or state == "running":
            counts["running"] += 1
            running.append(f"{cell.cell_id}: {phase or 'starting'}")
        else:
            counts["queued"] += 1
    line = " · ".join(f"{k} {v}" for k, v in counts.items())
    return f"[campaign] {line}" + (f"  | {'; '.join(running)}" if running else "")


def run(path: str | Path, out: str | Path = "outputs/campaigns", address: str | None = None, resume: bool = False,
        campaign_id: str | None = None, notebooks: Path | None = None, num_cpus: int | None = None,
        poll: float = 2.0) -> Path:
    """Run a campaign; returns its folder. ``address``: None starts Ray on this machine (``num_cpus``:
    the CPUs it may use, default all), ``"auto"`` or ``"ray://HOST:PORT"`` joins an existing cluster."""
    # every cell's own progress lines through, each prefixed with its worker: Ray would otherwise fold
    # lines that repeat across cells ("[repeated 2x across cluster]"); read when ray is first imported
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    c = load(path, campaign_id)
    folder = Path(out).resolve() / c.campaign_id
    if folder.exists() and not resume:
        raise provenance.RunExistsError(f"campaign {folder} exists already; --resume finishes its unfinished cells "
                                        "(finished cells are never run again), or pick another campaign id")
    if resume and not folder.is_dir():
        raise provenance.RunExistsError(f"--resume: campaign {folder} does not exist")
    folder.mkdir(parents=True, exist_ok=True)
    with _lock(folder):
        todo = _prepare(c, folder)
        return _run(c, folder, todo, address, notebooks, num_cpus, poll)


@contextmanager
def _lock(folder: Path):
    """One driver per campaign: a second one (``--resume`` while the first still runs) would re-queue
    running cells and clear their staging folders."""
    lock = folder / LOCK
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        if not _stale(lock):
            raise provenance.RunExistsError(f"campaign {folder.name} is being run by another driver "
                                            f"({lock.read_text()}); if it is not, remove {lock}") from None
        print(f"[campaign] removing the lock of a driver that is gone ({lock.read_text()})", flush=True)
        lock.unlink()
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
    os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _stale(lock: Path) -> bool:
    """A lock written on this host by a process that no longer exists (a killed driver)."""
    m = re.fullmatch(r"pid (\d+) on (\S+)", lock.read_text().strip())
    if not m or m[2] != socket.gethostname():
        return False  # another host's driver: only its owner can say
    try:
        os.kill(int(m[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


RAY_START_TRIES = 3  # Ray waits a fixed 30 s for its local raylet; a machine busy with other work can need more


def _start_ray(address: str | None, num_cpus: int | None) -> None:
    """Join the cluster at ``address``, or start a new Ray on this machine ("local": even when RAY_ADDRESS
    is set or a `ray start` cluster runs here). A local start that times out waiting for its own
    raylet (Ray's hard-coded 30 s, too short when the cores are busy) is tried again, up to
    RAY_START_TRIES times in all."""
    import psutil
    import ray

    for attempt in range(1, RAY_START_TRIES + 1):
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        try:
            ray.init(address=address or "local", num_cpus=num_cpus if address is None else None,
                     include_dashboard=False, log_to_driver=True, configure_logging=False)
            return
        except Exception as err:  # Ray raises a bare Exception for this
            if address is not None or "timed out during startup" not in str(err) or attempt == RAY_START_TRIES:
                raise
            ray.shutdown()
            # the failed start's GCS and raylet outlive it (Ray never recorded its node): stop them
            for proc in psutil.Process().children(recursive=True):
                if proc.pid not in before:
                    proc.kill()
            print(f"[campaign] Ray's local start timed out (a busy machine?); trying again ({attempt + 1}/"
                  f"{RAY_START_TRIES})", flush=True)


def _run(c: Campaign, folder: Path, todo: list[Cell], address: str | None, notebooks: Path | None,
         num_cpus: int | None, poll: float) -> Path:
    import ray

    settled = {cell.cell_id: read_status(folder, cell.cell_id) for cell in c.cells if cell not in todo}
    print(f"[campaign] {c.campaign_id}: {len(c.cells)} cells, {len(todo)} to run -> {folder}", flush=True)
    if todo:
        runner.ensure_kernel()
        started_here = not ray.is_initialized()
        if started_here:
            _start_ray(address, num_cpus)
        task = ray.remote(run_cell)
        refs = {task.options(max_retries=c.max_retries, retry_exceptions=False, **_resources(c, cell)).remote(
            str(folder), cell.cell_id, list(c.phases), str(notebooks) if notebooks else None, c.jobs_per_cell): cell
            for cell in todo}
        try:
            _collect(refs, folder, c, settled, poll)
        except KeyboardInterrupt:
            _stop(refs, folder, c)
            raise CampaignInterrupted(
                f"campaign {c.campaign_id} interrupted; finished cells are intact. Resume with:\n  avalanche-nb "
                f"campaign {c.source} --out {folder.parent} --id {c.campaign_id} --resume"
                + (f" --address {address}" if address else "")) from None
        finally:
            if started_here:
                ray.shutdown()
    table = aggregate(folder)
    failed = table[table.state != "done"]
    for _, row in failed.iterrows():
        print(f"[campaign] {row.cell} {row.state} in {row.failed_phase}: {row.reason}", flush=True)
    if (table.state == "done").any():
        execute_notebook(folder)
    print(f"[campaign] {c.campaign_id}: {int((table.state == 'done').sum())} done, {len(failed)} failed -> "
          f"{folder / TABLE}", flush=True)
    return folder


def _collect(refs: dict, folder: Path, c: Campaign, settled: dict, poll: float) -> None:
    import ray

    last = ""
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=len(pending), timeout=poll)
        for ref in ready:
            cid = refs[ref].cell_id
            try:
                rec = ray.get(ref)
                if "time" not in rec:  # a record the worker could not write (the folder not visible there)
                    write_status(folder, cid, **{k: v for k, v in rec.items() if k != "cell"})
            except ray.exceptions.RayTaskError as err:  # run_cell itself raised (it catches what a cell raises)
                write_status(folder, cid, state="failed", phase=cell_state(folder / "runs" / cid, c.phases)[1]
                             or "plan", reason=f"{type(err.cause).__name__}: {err.cause}")
            except ray.exceptions.RayError as err:  # the worker died more often than max_retries allow
                phase = cell_state(folder / "runs" / cid, c.phases)[1]
                write_status(folder, cid, state="failed", phase=phase or "worker",
                             attempt=read_status(folder, cid).get("attempt"),
                             reason=f"the worker died {c.max_retries + 1} times: {type(err).__name__}: "
                                    f"{str(err).splitlines()[0] if str(err) else ''}")
            settled[cid] = read_status(folder, cid)
            rec = settled[cid]
            print(f"[campaign] {cid}: {rec['state']}" + (f" in {rec.get('phase')}: {rec.get('reason')}"
                                                         if rec["state"] != "done" else ""), flush=True)
        line = _progress_line(folder, c, settled)
        if line != last:
            print(line, flush=True)
            last = line


def _stop(refs: dict, folder: Path, c: Campaign, grace: float = 60.0) -> None:
    """Ctrl-C: cancel queued cells; a running cell gets a KeyboardInterrupt (its runner stops the kernel
    and leaves the phase's staging folder for the resume to clear); force-kill what is still running
    after ``grace`` seconds."""
    import ray

    print("\n[campaign] stopping: no new cells; interrupting the running ones (Ctrl-C again: kill them)",
          flush=True)
    for ref in refs:
        ray.cancel(ref, force=False)
    try:
        _, left = ray.wait(list(refs), num_returns=len(refs), timeout=grace)
    except KeyboardInterrupt:
        left = list(refs)
    for ref in left:
        ray.cancel(ref, force=True)
    for cell in refs.values():
        if read_status(folder, cell.cell_id).get("state") == "running":
            write_status(folder, cell.cell_id, state="interrupted",
                         phase=cell_state(folder / "runs" / cell.cell_id, c.phases)[1], reason="Ctrl-C")


# --------------------------------------------------------------------------- aggregation


def fit_class(row) -> str:
    """The size tail's class in the convention of Clauset, Shalizi & Newman (2009): ``untested`` (no
    bootstrap p); ``power_law`` when the bootstrap p > 0.1 and no alternative is significantly
    preferred (likelihood ratio < 0 with p < 0.1); otherwise the preferred alternative (``lognormal``,
    then ``exponential``), or ``rejected`` when the power law fails (p <= 0.1, CSN's "ruled out") and
    neither alternative wins. ``power_law`` joins CSN's "moderate" and "good" support."""
    p = row["p_value"]
    if p is None or not math.isfinite(p):
        return "untested"
    for alt in ("lognormal", "exponential"):
        lr, lp = row[f"lr_{alt}"], row[f"p_{alt}"]
        if math.isfinite(lr) and math.isfinite(lp) and lr < 0 and lp < 0.1:
            return alt
    return "power_law" if p > 0.1 else "rejected"


def headline(run_dir: str | Path) -> dict[str, Any]:
    """A run's headline results, one flat row (NaN where the run lacks the phase): the model (layers,
    MLP width, parameters), at g = 1 under rate-matched thresholds the z of b_tot against N1-N3 and
    Delta b against N1, the size tail's fit class, g* by the pre-registered rule and by every rule with
    whether it sits at the search edge, ARC accuracy at g = 1 and g* with bootstrap 95% CIs, Dataset
    B's perplexity ratio g*/g = 1, and the run model's ME layer, MA ratio (top-1 / median at the ME
    layer) and perplexity ratios of its zero and mean edits. Every number is read from the run's
    hash-checked artifacts through :mod:`results` (the paper's own numbers), so they agree."""
    from . import artifacts, results

    run_dir = Path(run_dir)
    p = P.for_run(run_dir)
    models = results.models_of(p)
    row: dict[str, Any] = {"model": p["model"], "seed": int(p["seed"])}
    done = set(finished(run_dir))

    def read(name: str):
        return artifacts.read(run_dir, name)

    def numbers(phase: str) -> dict[str, float]:
        if phase not in done:
            return {}
        return {k: n.value for k, n in results.collect_phase(phase, read, models).numbers.items()}

    if "00_data_and_model" in done:
        info = read("model.json")
        row |= {"model_type": info["model_type"], "num_layers": info["num_layers"], "d_ff": info["d_ff"],
                "n_parameters": info["n_parameters"]}
    sweep = numbers("03_gain_sweep")
    for col, name in (("z_tot_n1_g1", "ZTotNOne"), ("z_tot_n2_g1", "ZTotNTwo"), ("z_tot_n3_g1", "ZTotNThree"),
                      ("delta_b_tot_n1_g1", "DeltaBTotNOne"), ("alpha_g1", "AlphaGOne"), ("tail_p_g1", "TailPGOne")):
        row[col] = sweep.get(name, math.nan)
    row["fit_class"] = None
    if sweep:
        tab = read("sweep.parquet")
        sel = results.select(tab, {"ablation": "all", "target_rate": float(tab.target_rate.iloc[0]), "spike_def": "pos",
                                   "threshold_mode": "rate_matched", "g": 1.0})
        row["fit_class"] = fit_class(sel.iloc[0])
    gstar = numbers("04_gstar")
    row["gstar"], row["gstar_rule"], row["gstar_outcome"] = gstar.get("GstarValue", math.nan), None, None
    if gstar:
        gs = read("gstar.json")
        row["gstar_rule"], row["gstar_outcome"] = gs["rule"], gs["outcome"]
        for rule, g in gs["picks"].items():
            row[f"gstar_{rule}"], row[f"at_edge_{rule}"] = g, bool(gs["at_edge"][rule])
    for tag in ("Easy", "Challenge"):
        for at, name in (("g1", "GOne"), ("gstar", "Gstar")):
            for suffix, key in (("", "acc"), ("Lo", "acc_lo"), ("Hi", "acc_hi")):
                row[f"arc_{tag.lower()}_{key}_{at}"] = gstar.get(f"Arc{tag}Acc{name}{suffix}", math.nan)
    row["ppl_b_ratio_gstar"] = gstar.get("PerplexityBRatio", math.nan)
    massive = numbers("06_massive")
    row["me_layer"] = massive.get("MELayerRun", math.nan)
    row["ma_zero_ppl_ratio"] = massive.get("MAZeroRatioRun", math.nan)
    row["ma_mean_ppl_ratio"] = massive.get("MAMeanRatioRun", math.nan)
    row["ma_ratio"] = math.nan
    if massive and math.isfinite(row["me_layer"]):
        sel = results.select(read("profile.parquet"), {"model": p["model"], "layer": int(row["me_layer"])})
        row["ma_ratio"] = float(sel["ratio"].iloc[0])
    return row


def _stored(folder: Path) -> tuple[dict, tuple[str, ...]]:
    """The campaign folder's cells (id -> overrides and params hash) and the phases every cell runs."""
    spec = yaml.safe_load((folder / CAMPAIGN_FILE).read_text()) or {}
    return json.loads((folder / CELLS_FILE).read_text()), tuple(select_phases(spec.get("phases")))


def settled_status(folder: Path, cid: str, phases: tuple[str, ...]) -> dict:
    """A cell's status record, ``done`` whenever its run finished every phase (whatever the file says:
    a worker may die after the last phase, before writing it)."""
    rec = read_status(folder, cid)
    if cell_state(folder / "runs" / cid, phases)[0] == "done":
        return rec | {"state": "done", "phase": None, "reason": None}
    return rec


def aggregate(folder: str | Path) -> "Any":
    """``campaign.parquet``: one row per cell of the campaign folder, its state (done / failed /
    interrupted / queued), the failed phase and reason, the overrides and :func:`headline` (written,
    then renamed)."""
    import pandas as pd

    folder = Path(folder)
    cells, phases = _stored(folder)
    rows = []
    for cid, meta in cells.items():
        run_dir = folder / "runs" / cid
        status = settled_status(folder, cid, phases)
        row = {"cell": cid, "state": status["state"], "failed_phase": status.get("phase"),
               "reason": status.get("reason"), "overrides": json.dumps(meta["overrides"], sort_keys=True),
               "seconds": status.get("seconds", math.nan)}
        if run_dir.is_dir() and (run_dir / P.PARAMS_FILE).exists():
            try:
                row |= headline(run_dir)
            except Exception as err:  # noqa: BLE001 - one unreadable run must not hide the other cells' rows
                row["headline_error"] = f"{type(err).__name__}: {err}"
        rows.append(row)
    table = pd.DataFrame(rows)
    provenance.save_parquet(folder / TABLE, table)
    return table


def execute_notebook(folder: Path) -> Path:
    """The campaign notebook executed into ``folder/report/campaign.ipynb`` (figures in ``report/figures``;
    written under a temporary name, then renamed)."""
    from .runtime import write_plotly_js

    folder = Path(folder).resolve()  # papermill runs in the notebooks' folder
    nb = runner.read_notebook(NOTEBOOK)
    write_plotly_js(folder)  # the archived notebook's figures load ../plotly.min.js
    report = folder / REPORT
    report.mkdir(exist_ok=True)
    target, tmp = report / f"{NOTEBOOK}.ipynb", report / f".{NOTEBOOK}.partial.ipynb"
    runner.execute(nb, tmp, {"campaign_dir": str(folder)}, runner.NOTEBOOKS, folder / "logs" / f"{NOTEBOOK}.kernel.log")
    os.replace(tmp, target)
    return target


# --------------------------------------------------------------------------- the campaign notebook's tables


OVERVIEW = ["cell", "state", "failed_phase", "model", "seed", "num_layers", "me_layer", "ma_ratio", "gstar",
            "gstar_outcome", "z_tot_n1_g1", "fit_class", "ppl_b_ratio_gstar", "seconds"]


def overview(table):
    """The campaign table's headline columns (those present), one row per cell."""
    return table[[c for c in OVERVIEW if c in table]].reset_index(drop=True)


def picks_long(table):
    """Every rule's g* per cell: columns cell, model, seed, rule, gstar, at_edge."""
    import pandas as pd

    rules = sorted(c.removeprefix("gstar_") for c in table if c.startswith("gstar_") and c not in
                   ("gstar_rule", "gstar_outcome"))
    rows = [{"cell": r.cell, "model": r.model, "seed": r.seed, "rule": rule, "gstar": r[f"gstar_{rule}"],
             "at_edge": bool(r[f"at_edge_{rule}"])}
            for _, r in table.iterrows() for rule in rules if pd.notna(r[f"gstar_{rule}"])]
    return pd.DataFrame(rows, columns=["cell", "model", "seed", "rule", "gstar", "at_edge"])


def arc_long(table):
    """ARC accuracy per cell, subset and gain: columns cell, subset, at (g = 1 / g*), acc, acc_lo, acc_hi."""
    import pandas as pd

    rows = []
    for _, r in table.iterrows():
        for subset in ("easy", "challenge"):
            for at, label in (("g1", "g = 1"), ("gstar", "g*")):
                acc = r.get(f"arc_{subset}_acc_{at}", math.nan)
                if pd.notna(acc):
                    rows.append({"cell": r.cell, "subset": f"ARC-{subset.title()}", "at": label, "acc": acc,
                                 "acc_lo": r[f"arc_{subset}_acc_lo_{at}"], "acc_hi": r[f"arc_{subset}_acc_hi_{at}"]})
    return pd.DataFrame(rows, columns=["cell", "subset", "at", "acc", "acc_lo", "acc_hi"])


def _values(series) -> str:
    return ", ".join(f"{v:g}" for v in series)


def findings(table) -> str:
    """The campaign's plain findings as Markdown bullets, chosen by the data: cells done and failed,
    per model whether the ME layer and g* repeat across its cells, and in how many cells b_tot beats
    N1 by z > 2."""
    import pandas as pd

    done = table[table.state == "done"]
    lines = [f"{len(done)} of {len(table)} cells finished"]
    for _, r in table[table.state != "done"].iterrows():
        lines.append(f"cell {r.cell} {r.state} in {r.failed_phase}: {r.reason}")
    for model, sel in done.groupby("model", sort=True):
        me = sel["me_layer"].dropna() if "me_layer" in sel else pd.Series(dtype=float)
        if len(me):
            lines.append(f"{model}: the ME layer is {me.iloc[0]:g} in all {len(me)} cells" if me.nunique() == 1 else
                         f"{model}: the ME layer varies across its {len(me)} cells ({_values(me)})")
        gs = sel.dropna(subset=["gstar"]) if "gstar" in sel else sel.iloc[:0]
        if len(gs):
            edge = int((gs.gstar_outcome != "interior").sum())
            lines.append(f"{model}: g* ({gs.gstar_rule.iloc[0]}) = {_values(gs.gstar)} over {len(gs)} cells"
                         + (f"; {edge} of them at the search edge, not an optimum" if edge else ", each an interior "
                            "optimum"))
    z = done["z_tot_n1_g1"].dropna() if "z_tot_n1_g1" in done else pd.Series(dtype=float)
    if len(z):
        lines.append(f"b_tot exceeds the N1 null by z > 2 at g = 1 in {int((z > 2).sum())} of {len(z)} cells")
    return "\n".join(f"* {line}" for line in lines)


def status_table(folder: str | Path) -> str:
    """One line per cell: state, phase, reason (``avalanche-nb campaign --status``)."""
    folder = Path(folder)
    cells, phases = _stored(folder)
    lines = []
    for cid in cells:
        rec = settled_status(folder, cid, phases)
        # a running cell's record names no phase: its staging folder does
        state, phase = rec["state"], rec.get("phase") or cell_state(folder / "runs" / cid, phases)[1]
        lines.append(f"{cid}  {state}" + (f" in {phase}" if phase and state != "done" else "")
                     + (f": {rec['reason']}" if state in ("failed", "interrupted") and rec.get("reason") else ""))
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `avalanche-nb campaign`")
