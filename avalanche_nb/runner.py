"""Running phases: each phase notebook executed by papermill into a staging folder, hashed into a
manifest, then renamed to its phase name (so a folder named after a phase is always complete).

Everything that can be checked is checked before anything is created: the params (and their
cross-key constraints), the model name (registry, local path or cached HF id, without loading
weights), the notebooks and their parameters cell, and the inputs of every requested phase (each
artifact a phase reads must come from a phase the run has finished or runs earlier in this call).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from . import params as P
from . import phases as registry
from . import provenance

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
KERNEL = "avalanche-nb"
LOGS = "logs"  # the run folder's subfolder of kernel output, one file per phase
#: the environment of phase kernels that run side by side (``jobs`` > 1). By default an idle libgomp thread
#: spins for its next task (GOMP_SPINCOUNT, 300,000 spins) before it sleeps, also while another process
#: needs the core: on 2 cores two torch kernels of 2 threads each ran 4-20x slower than alone
#: (docs/PROFILE.md). PASSIVE threads sleep at once. The policy changes no number (same threads, same work).
SIDE_BY_SIDE_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


class PhaseFailedError(RuntimeError):
    """A phase's notebook raised; its staging folder is kept as ``<phase>.failed``."""

    def __init__(self, message: str, phase: str):
        super().__init__(message)
        self.phase = phase


class UnverifiedRunError(ValueError):
    """A run's artifacts do not match their manifests, so nothing may be built from it."""


class RunInterrupted(RuntimeError):
    """Ctrl-C during a phase: earlier phases are intact, the interrupted one left only its staging folder."""


def select_phases(spec: str | None) -> list[str]:
    """``"00,02"`` or full names -> phase names in run order; None -> all."""
    if not spec:
        return list(registry.names())
    chosen = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        try:
            chosen.append(registry.get(part).name)
        except KeyError as err:
            raise P.ParamsError(err.args[0]) from None
    return [ph for ph in registry.names() if ph in chosen]


def read_notebook(phase: str, notebooks: Path | None = None):
    """The phase notebook from its jupytext ``.py`` source (the reviewed file)."""
    import jupytext

    notebooks = notebooks or NOTEBOOKS
    path = notebooks / f"{phase}.py"
    if not path.exists():
        raise FileNotFoundError(f"notebook source {path} is missing")
    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {"name": KERNEL, "language": "python", "display_name": f"Python ({KERNEL})"}
    return nb


def declared_parameters(nb) -> dict:
    """Names and defaults of the notebook's ``parameters`` cell."""
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"a phase notebook needs exactly one 'parameters' cell, found {len(cells)}")
    namespace: dict = {}
    exec(cells[0].source, {}, namespace)  # flat literals only, by convention
    return namespace


def check_notebook(nb, phase: str) -> None:
    """A phase notebook's parameters cell holds exactly what identifies the run (``run_dir``); every
    other setting comes from the run's params file, read inside the notebook."""
    declared = set(declared_parameters(nb))
    if declared != set(P.RUNNER_KEYS):
        raise P.ParamsError(f"notebook {phase}'s parameters cell declares {sorted(declared)}; it must declare only "
                            f"{list(P.RUNNER_KEYS)} (the notebook reads its params with runtime.start)")


def finished(run_dir: Path) -> list[str]:
    """Phases the run folder holds as finished (a folder named after the phase)."""
    return [ph for ph in registry.names() if (run_dir / ph).is_dir()]


def check_inputs(chosen: list[str], done: list[str]) -> None:
    """Every artifact a chosen phase reads comes from a finished phase or one chosen before it."""
    available = set(done)
    for ph in chosen:
        missing = sorted({registry.producer(a).name for a in registry.get(ph).reads} - available)
        if missing:
            raise P.ParamsError(f"phase {ph} reads artifacts of {', '.join(missing)}, which this run has not "
                                f"finished: add {', '.join(m.split('_')[0] for m in missing)} to --phases")
        available.add(ph)


def dependencies(chosen: list[str]) -> dict[str, set[str]]:
    """Per phase of ``chosen``, the phases of ``chosen`` whose artifacts it reads: it may start once they
    have finished (phases outside ``chosen`` are finished already, :func:`check_inputs`)."""
    picked = set(chosen)
    return {ph: {registry.producer(a).name for a in registry.get(ph).reads} & picked for ph in chosen}


def _kernel_manager(log: Path, cwd: Path, env: dict[str, str] | None = None, started: dict | None = None):
    """The kernel manager of a phase: the kernel talks over local (IPC) sockets, so it never opens a TCP
    port (and never warns, at every phase, that one is unencrypted; the socket files are removed at
    shutdown); it runs in its own session (jupyter_client always starts one on POSIX), so a Ctrl-C at the
    terminal reaches the runner, which stops the kernel itself; it watches its parent (``JPY_PARENT_PID``,
    set because it is not ``independent``) and exits when the runner's process dies, so a killed campaign
    worker leaves no kernel writing into a staging folder; and its own output goes to ``log`` instead of
    the terminal. It starts in ``cwd`` (papermill's own ``cwd`` changes the directory of the whole process,
    which phases side by side must not do); ``env``: its environment (default: this process's);
    ``started``: where its process is recorded under ``log`` while it lives (so that another thread can
    stop it)."""
    import tempfile
    import uuid

    from jupyter_client.manager import AsyncKernelManager

    class PhaseKernelManager(AsyncKernelManager):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.transport = "ipc"
            self.ip = str(Path(tempfile.gettempdir()) / f"avalanche_nb-kernel-{uuid.uuid4().hex[:12]}")

        async def start_kernel(self, **kw):
            log.parent.mkdir(exist_ok=True)
            stream = open(log, "ab")  # noqa: SIM115 - the kernel process owns it for its lifetime
            kw.setdefault("cwd", str(cwd))
            if env is not None:
                kw["env"] = env
            out = await super().start_kernel(independent=False, stdout=stream, stderr=stream, **kw)
            if started is not None:
                started[log] = self.provisioner
            return out

    return PhaseKernelManager


def _say(message: str) -> None:
    """One line on the terminal, written at once (phases side by side print from several threads)."""
    sys.stdout.write(f"[avalanche-nb] {message}\n")
    sys.stdout.flush()


_QUIET_LOCK = threading.Lock()
_QUIET: dict[str, list] = {}  # logger name -> [blocks inside, its level before the first]


@contextmanager
def _quiet(logger: str):
    """Silence ``logger`` in the block: papermill's notes (a dead kernel, an interrupted cell) reach the
    runner as exceptions, which say it once and clearly. Blocks may overlap (phases side by side): the
    logger's level comes back when the last one ends."""
    log = logging.getLogger(logger)
    with _QUIET_LOCK:
        state = _QUIET.setdefault(logger, [0, log.level])
        if state[0] == 0:
            state[1] = log.level
            log.setLevel(logging.CRITICAL + 1)
        state[0] += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            state[0] -= 1
            if state[0] == 0:
                log.setLevel(state[1])


@contextmanager
def _reporting_progress(path: Path, phase: str, every: float = 10.0):
    """While the block runs, print the progress lines the phase's notebook appends to ``path``
    (:mod:`progress`; the kernel learns the path from ``$AVALANCHE_NB_PROGRESS``, see :func:`_run_phase`):
    each step's start and end, and at most one line per ``every`` seconds between."""

    from . import progress

    stop, last = threading.Event(), {}

    def follow() -> None:
        seen = 0
        while True:
            finished = stop.wait(1.0)
            lines = path.read_text().splitlines() if path.exists() else []
            for line in lines[seen:]:
                rec = json.loads(line)
                now, edge = time.monotonic(), rec["done"] in (0, rec["total"])
                if edge or now - last.get(rec["step"], 0.0) >= every:
                    last[rec["step"]] = now
                    _say(f"{phase} · {progress.describe(rec)}")
            seen = len(lines)
            if finished:
                return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        path.unlink(missing_ok=True)


def ensure_kernel() -> None:
    """Register this environment's kernel (papermill would otherwise pick whatever `python3` is)."""
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL not in KernelSpecManager().find_kernel_specs():
        from ipykernel.kernelspec import install

        install(kernel_name=KERNEL, display_name=f"Python ({KERNEL})", prefix=sys.prefix)


def default_run_id(params) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{provenance.params_sha256(dict(params))[:8]}"


def _resume(run_dir: Path, params, requested: list[str] | None) -> list[str]:
    """The phases to run on the existing ``run_dir``: those requested (default: every phase it lacks, in
    order), under exactly the params it was made with; leftovers of interrupted or failed attempts at
    them are removed first."""
    import yaml

    if not run_dir.is_dir():
        raise provenance.RunExistsError(f"--resume: run {run_dir} does not exist")
    recorded = yaml.safe_load((run_dir / P.PARAMS_FILE).read_text())
    # a key the run's params lack came with a newer avalanche-nb (e.g. with a new phase): at its default it
    # changes nothing the run has done, so such a run can still be completed
    defaults = P.defaults()
    changed = sorted(k for k in set(recorded) | set(params)
                     if recorded.get(k, defaults.get(k)) != params.get(k, defaults.get(k)))
    if changed:
        raise P.ParamsError(f"--resume: params differ from run {run_dir.name}'s in {', '.join(changed)}; "
                            "start a new run instead")
    done = finished(run_dir)
    if requested is None:
        chosen = [ph for ph in registry.names() if ph not in done]
        if not chosen:
            raise provenance.RunExistsError(f"--resume: run {run_dir.name} has finished every phase")
    else:
        chosen = requested
        again = [ph for ph in chosen if ph in done]
        if again:
            raise provenance.RunExistsError(f"--resume: {run_dir.name} has finished {', '.join(again)} already "
                                            "(finished phases are never overwritten); pick other --phases")
    for ph in chosen:  # leftovers of an interrupted or failed attempt are not results: clear them
        for stale in (provenance.staging_dir(run_dir, ph), run_dir / f"{ph}.failed"):
            if stale.exists():
                print(f"[avalanche-nb] removing {stale.name} from an earlier attempt", flush=True)
                shutil.rmtree(stale)
    return chosen


def plan(params_file: str | Path, phases: str | None, out: str | Path, run_id: str | None, resume: bool,
         notebooks: Path) -> tuple[P.Params, Path, list[str], dict]:
    """Everything checked before any folder is created: (params, run folder, phases, notebooks)."""
    from . import models

    params = P.load(params_file)
    requested = select_phases(phases) if phases else None
    if resume and not run_id:
        raise P.ParamsError("--resume needs --run-id (the run to add phases to)")
    run_id = run_id or default_run_id(params)
    if "/" in run_id or run_id.startswith("."):
        raise P.ParamsError(f"run id {run_id!r} may not contain '/' or start with '.'")
    try:
        models.resolve(params["model"])
    except models.UnknownModelError as err:
        raise P.ParamsError(f"params key 'model': {err}") from None
    run_dir = Path(out).resolve() / run_id
    if resume:
        chosen = _resume(run_dir, params, requested)
    elif run_dir.exists():
        raise provenance.RunExistsError(f"run {run_dir} exists already; pick another --run-id, or --resume to add "
                                        "phases it lacks (runs are never overwritten)")
    else:
        chosen = requested or list(registry.names())
    sources = {ph: read_notebook(ph, notebooks) for ph in chosen}
    for ph, nb in sources.items():
        check_notebook(nb, ph)
    check_inputs(chosen, finished(run_dir) if resume else [])
    return params, run_dir, chosen, sources


def run(params_file: str | Path, phases: str | None = None, out: str | Path = "outputs/runs",
        run_id: str | None = None, notebooks: Path | None = None, resume: bool = False, jobs: int = 1) -> Path:
    """Execute phases into ``<out>/<run_id>/``; returns the run folder.

    ``resume``: add phases to the existing run ``run_id`` (same params): ``phases``, or every phase it lacks.
    ``jobs``: phases run at once, each as soon as the phases it reads have finished (:func:`dependencies`),
    their kernels with :data:`SIDE_BY_SIDE_ENV`; the artifacts are the same as one at a time.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise P.ParamsError(f"jobs must be a positive integer, got {jobs!r}")
    notebooks = notebooks or NOTEBOOKS
    params, run_dir, chosen, sources = plan(params_file, phases, out, run_id, resume, notebooks)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ensure_kernel()
    if not resume:
        run_dir.mkdir(parents=True)
        provenance.atomic_write(run_dir / P.PARAMS_FILE, lambda p: p.write_text(P.dump(params)))
    from .runtime import write_plotly_js

    write_plotly_js(run_dir)
    ensure_figure_browser()
    if jobs == 1 or len(chosen) == 1:
        for phase in chosen:
            _run_phase(run_dir, phase, sources[phase], params, notebooks)
    else:
        _run_side_by_side(run_dir, chosen, sources, params, notebooks, jobs)
    write_summary(run_dir)
    return run_dir


def start_order(chosen: list[str]) -> list[str]:
    """The order in which :func:`run` with ``jobs`` > 1 starts the phases that are ready: first those that
    more chosen phases wait for (directly or not), then later phases first (of phases nothing waits for,
    the later ones are the longer ones here: 09 before 08, 07, 05 and 02, docs/PROFILE.md), so that
    the long chains start early and the short phases fill the gaps."""
    needs = dependencies(chosen)

    def waiting(ph: str) -> set[str]:
        direct = {q for q in chosen if ph in needs[q]}
        return direct.union(*(waiting(q) for q in direct))

    return sorted(chosen, key=lambda ph: (-len(waiting(ph)), -chosen.index(ph)))


def _run_side_by_side(run_dir: Path, chosen: list[str], sources: dict, params, notebooks: Path, jobs: int) -> None:
    """Up to ``jobs`` phases at once, each started (in :func:`start_order` among those ready) once the
    phases it reads have finished. A failure lets the running phases finish, starts nothing new and is
    raised (naming every phase that failed); Ctrl-C stops every running kernel, leaves their staging
    folders (as one phase at a time does) and raises :class:`RunInterrupted` naming them."""
    import concurrent.futures as cf

    needs = dependencies(chosen)
    pending, running, done, errors = start_order(chosen), {}, set(), []
    kernels: dict = {}  # kernel log -> provisioner of each live kernel
    live: set[str] = set()  # phases whose worker has started and not returned
    stop = threading.Event()

    def work(phase: str) -> Path:
        live.add(phase)  # first: the interrupt below kills until no worker is live
        try:
            if stop.is_set():
                raise RunInterrupted(f"phase {phase} was not started")
            return _run_phase(run_dir, phase, sources[phase], params, notebooks, SIDE_BY_SIDE_ENV, kernels, stop)
        finally:
            live.discard(phase)

    pool = cf.ThreadPoolExecutor(jobs, thread_name_prefix="phase")
    try:
        while pending or running:
            while not errors and len(running) < jobs:
                ready = next((ph for ph in pending if needs[ph] <= done), None)
                if ready is None:
                    break
                pending.remove(ready)
                running[pool.submit(work, ready)] = ready
            if not running:
                if pending and not errors:  # cannot happen after check_inputs; never end a run silently
                    raise RuntimeError(f"phases {', '.join(pending)} wait for phases that never run")
                break
            # a timeout, so that an interrupt raised in this thread by another one (Ray's cancel of a
            # campaign cell: _thread.interrupt_main) is seen within a second: a lock wait without one
            # never returns to the interpreter until a phase ends
            for future in cf.wait(running, timeout=0.5, return_when=cf.FIRST_COMPLETED)[0]:
                phase = running.pop(future)
                if future.exception() is None:
                    done.add(phase)
                else:
                    errors.append(future.exception())
    except KeyboardInterrupt:
        stop.set()
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # the cancelled cells' tasks, not news
        _stop_workers(live, kernels)
        pool.shutdown(wait=True, cancel_futures=True)
        stopped = [ph for ph in chosen if ph in running.values() and ph not in finished(run_dir)]
        raise _interrupted(run_dir, stopped) from None
    finally:
        pool.shutdown(wait=True)
    if len(errors) == 1:
        raise errors[0]
    if errors:  # every failure, in the order they happened
        raise PhaseFailedError("; ".join(str(e) for e in errors), getattr(errors[0], "phase", ""))


def _stop_workers(live: set[str], kernels: dict) -> None:
    """Kill the phase kernels until no phase worker is live (a kernel still starting registers itself
    later); a second Ctrl-C does not stop the stopping."""
    while live:
        try:
            for provisioner in list(kernels.values()):
                _kill(provisioner)
            time.sleep(0.2)
        except KeyboardInterrupt:
            continue


def _kill(provisioner) -> None:
    """Stop a phase kernel and what it started (its process group) now; its runner thread then sees a
    dead kernel."""
    import signal

    process = getattr(provisioner, "process", None)
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(provisioner.pgid, signal.SIGKILL)
    except (AttributeError, TypeError, OSError):
        process.kill()


def _interrupted(run_dir: Path, phases: list[str]) -> RunInterrupted:
    done = finished(run_dir)
    return RunInterrupted(
        f"interrupted during phase {', '.join(phases)}; "
        + (f"finished phases {', '.join(p.split('_')[0] for p in done)} are intact" if done else "no phase had finished")
        + f". Resume with:\n  {_resume_command(run_dir)}")


_browser_checked = False


def ensure_figure_browser() -> None:
    """Best effort, once per process, before the first phase: a Chromium for the SVG/PNG export of the
    notebooks' figures (``plots.show``), installed with apt when missing (``system.ensure``: root or
    passwordless sudo). Without one the phases export each figure's CSV only; said here once (and once in
    each notebook)."""
    global _browser_checked
    from . import figure_export, system

    if _browser_checked:
        return
    _browser_checked = True
    if system.browser() or os.environ.get(figure_export.IMAGES_ENV) == "0":
        return
    print("[avalanche-nb] figures: no Chromium for their SVG/PNG export; installing it (apt-get install chromium)",
          flush=True)
    try:
        system.ensure("chromium", ("chromium",))
    except system.SystemToolError as err:
        print(f"[avalanche-nb] figures: CSV only, no SVG/PNG: {err}", flush=True)


def write_summary(run_dir: Path) -> None:
    """The run's one-page SUMMARY.md (each finished phase's verdicts, links to its notebook), refreshed
    whenever phases finish; beside the phase folders, so it never touches a hashed artifact."""
    from .results import summary_markdown

    provenance.atomic_write(run_dir / "SUMMARY.md", lambda tmp: tmp.write_text(summary_markdown(run_dir)))


def _resume_command(run_dir: Path) -> str:
    return (f"avalanche-nb run --params {run_dir / P.PARAMS_FILE} --out {run_dir.parent} --run-id {run_dir.name} "
            "--resume")


def execute(nb, target: Path, parameters: dict, cwd: Path, log: Path, env: dict[str, str] | None = None,
            started: dict | None = None) -> None:
    """Execute ``nb`` with papermill into ``target`` in this package's kernel (:func:`_kernel_manager`, started
    in ``cwd``, its output to ``log``, its environment ``env``), without papermill's per-cell bar (it says nothing about a
    long cell's work: the notebooks report their own progress) or log lines (failures reach the caller as
    exceptions)."""
    import papermill as pm

    with _quiet("papermill"):
        pm.execute_notebook(nb, str(target), parameters=parameters, kernel_name=KERNEL, progress_bar=False,
                            log_output=False, kernel_manager_class=_kernel_manager(log, cwd, env, started))


def _run_phase(run_dir: Path, phase: str, nb, params, notebooks: Path, env: dict[str, str] | None = None,
               kernels: dict | None = None, stop=None) -> Path:
    """Execute one phase into its staging folder, check it and rename it to the phase's name.

    ``env``: variables added to the kernel's environment (unless set already); ``kernels``: where its live
    kernel is recorded;
    ``stop`` (a threading.Event): set when the run is interrupted, so a kernel killed for it is no failure.
    """
    import papermill as pm
    from nbclient.exceptions import DeadKernelError

    from . import artifacts, progress

    stage = provenance.staging_dir(run_dir, phase)
    stage.mkdir()
    _say(f"{run_dir.name}: phase {phase}")
    t0 = time.perf_counter()
    log = run_dir / LOGS / f"{phase}.kernel.log"
    # a variable the user has set wins over ``env`` (e.g. their own OMP_WAIT_POLICY)
    kernel_env = (env or {}) | os.environ | {progress.ENV: str(stage / ".progress")}
    try:
        with _reporting_progress(stage / ".progress", phase):
            execute(nb, stage / f"{phase}.ipynb", {"run_dir": str(run_dir)}, notebooks, log, kernel_env, kernels)
    except (pm.PapermillExecutionError, DeadKernelError) as err:
        if stop is not None and stop.is_set():
            raise RunInterrupted(f"phase {phase} was stopped") from None  # the caller says what it means
        failed = run_dir / f"{phase}.failed"
        os.rename(stage, failed)
        if isinstance(err, DeadKernelError):
            raise PhaseFailedError(f"phase {phase}: the kernel died (out of memory?); its output is in "
                                   f"{run_dir / LOGS / f'{phase}.kernel.log'}", phase) from None
        raise PhaseFailedError(f"phase {phase} failed in cell {err.exec_count} ({err.ename}: {err.evalue}); "
                               f"the executed notebook is in {failed}", phase) from None
    except KeyboardInterrupt:
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # the cancelled cell's task, not news
        raise _interrupted(run_dir, [phase]) from None
    finally:
        if kernels is not None:
            kernels.pop(log, None)
    lacking = artifacts.missing(stage, registry.get(phase))
    if lacking:
        failed = run_dir / f"{phase}.failed"
        os.rename(stage, failed)
        raise PhaseFailedError(f"phase {phase} finished without writing {', '.join(lacking)}; see {failed}", phase)
    final = provenance.finish_phase(run_dir, phase, run_dir.name, dict(params), REPO, time.perf_counter() - t0)
    _say(f"{phase} done in {time.perf_counter() - t0:.0f} s -> {final}")
    return final


def verify(run_dir: str | Path) -> list[str]:
    """Re-hash every finished phase of a run; returns the problems found."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return [f"{run_dir} is not a folder"]
    done = finished(run_dir)
    if not done:
        return [f"{run_dir} holds no finished phase"]
    return [msg for ph in done for msg in provenance.verify_phase(run_dir / ph)]


def remove(run_dir: str | Path) -> None:
    """Delete a run folder (only a folder that holds a run's ``params.yaml``)."""
    run_dir = Path(run_dir)
    if not (run_dir / P.PARAMS_FILE).is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no {P.PARAMS_FILE})")
    shutil.rmtree(run_dir)
