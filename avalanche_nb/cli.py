"""The ``avalanche-nb`` command: run notebook phases with papermill, verify and list runs.

    avalanche-nb run --params params/default.yaml [--phases 00,01,02] [--out outputs/runs] [--run-id ID]
    avalanche-nb verify outputs/runs/<run_id>
    avalanche-nb list [--out outputs/runs]
    avalanche-nb params            # every params key with its default and meaning
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import shutil
import sys
import time
from pathlib import Path

from . import params as P
from . import provenance

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
KERNEL = "avalanche-nb"

#: phases in run order; each is notebooks/<phase>.py (the jupytext source, paired with .ipynb)
PHASES = ("00_data_and_model", "01_event_lattice", "02_avalanches", "03_gain_sweep", "04_gstar", "05_replication",
          "06_massive", "07_training_dynamics")


class PhaseFailedError(RuntimeError):
    """A phase's notebook raised; its staging folder is kept as ``<phase>.failed``."""


def select_phases(spec: str | None) -> list[str]:
    """``"00,02"`` or full names -> phase names in run order; None -> all."""
    if not spec:
        return list(PHASES)
    chosen = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        match = [ph for ph in PHASES if ph == part or ph.split("_")[0] == part]
        if not match:
            raise P.ParamsError(f"unknown phase {part!r}; phases: {', '.join(PHASES)}")
        chosen.append(match[0])
    return [ph for ph in PHASES if ph in chosen]


def read_notebook(phase: str, notebooks: Path = NOTEBOOKS):
    """The phase notebook from its jupytext ``.py`` source (the reviewed file)."""
    import jupytext

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


def check_notebook_parameters(nb, phase: str) -> list[str]:
    """The params keys ``phase`` declares; fails on a key the schema does not know."""
    declared = declared_parameters(nb)
    for key in declared:
        if key not in P.SCHEMA and key not in P.RUNNER_KEYS:
            raise P.ParamsError(f"notebook {phase} declares {P.unknown_key_message(key, P.SCHEMA)}")
    return [k for k in declared if k in P.SCHEMA]


def ensure_kernel() -> None:
    """Register this environment's kernel (papermill would otherwise pick whatever `python3` is)."""
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL not in KernelSpecManager().find_kernel_specs():
        from ipykernel.kernelspec import install

        install(kernel_name=KERNEL, display_name=f"Python ({KERNEL})", prefix=sys.prefix)


def default_run_id(params: dict) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{provenance.params_sha256(params)[:8]}"


def _resume_check(run_dir: Path, params: dict, chosen: list[str]) -> None:
    """An existing run may take only phases it lacks, under exactly the params it was made with."""
    import yaml

    if not run_dir.is_dir():
        raise provenance.RunExistsError(f"--resume: run {run_dir} does not exist")
    recorded = yaml.safe_load((run_dir / "params.yaml").read_text())
    changed = sorted(k for k in set(recorded) | set(params) if recorded.get(k) != params.get(k))
    if changed:
        raise P.ParamsError(f"--resume: params differ from run {run_dir.name}'s in {', '.join(changed)}; "
                            "start a new run instead")
    done = [ph for ph in chosen if (run_dir / ph).exists()]
    if done:
        raise provenance.RunExistsError(f"--resume: {run_dir.name} has finished {', '.join(done)} already "
                                        "(finished phases are never overwritten); pick other --phases")
    for ph in chosen:  # leftovers of an interrupted or failed attempt are not results: clear them
        for stale in (provenance.staging_dir(run_dir, ph), run_dir / f"{ph}.failed"):
            if stale.exists():
                print(f"[avalanche-nb] removing {stale.name} from an earlier attempt", flush=True)
                shutil.rmtree(stale)


def run(params_file: str | Path, phases: str | None = None, out: str | Path = "outputs/runs",
        run_id: str | None = None, notebooks: Path = NOTEBOOKS, resume: bool = False) -> Path:
    """Execute phases into ``<out>/<run_id>/``; returns the run folder.

    ``resume``: add phases to the existing run ``run_id`` (same params, phases it has not finished).
    """
    import papermill as pm
    import yaml

    params = P.load(params_file)
    chosen = select_phases(phases)
    sources = {ph: read_notebook(ph, notebooks) for ph in chosen}
    keys = {ph: check_notebook_parameters(nb, ph) for ph, nb in sources.items()}  # fail before any work
    if resume and not run_id:
        raise P.ParamsError("--resume needs --run-id (the run to add phases to)")
    run_id = run_id or default_run_id(params)
    if "/" in run_id or run_id.startswith("."):
        raise P.ParamsError(f"run id {run_id!r} may not contain '/' or start with '.'")
    run_dir = Path(out).resolve() / run_id
    if resume:
        _resume_check(run_dir, params, chosen)
    elif run_dir.exists():
        raise provenance.RunExistsError(f"run {run_dir} exists already; pick another --run-id, or --resume to add "
                                        "phases it lacks (runs are never overwritten)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ensure_kernel()
    if not resume:
        run_dir.mkdir(parents=True)
        provenance._atomic_write(run_dir / "params.yaml",
                                 lambda p: p.write_text(yaml.safe_dump(params, sort_keys=True)))
    for phase in chosen:
        stage = provenance.staging_dir(run_dir, phase)
        stage.mkdir()
        injected = {k: params[k] for k in keys[phase]} | {"run_dir": str(run_dir), "phase": phase}
        print(f"[avalanche-nb] {run_id}: phase {phase}", flush=True)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(sources[phase], str(stage / f"{phase}.ipynb"), parameters=injected,
                                kernel_name=KERNEL, progress_bar=params["progress"], cwd=str(notebooks),
                                log_output=False)
        except pm.PapermillExecutionError as err:
            failed = run_dir / f"{phase}.failed"
            os.rename(stage, failed)
            raise PhaseFailedError(
                f"phase {phase} failed in cell {err.exec_count} ({err.ename}: {err.evalue}); "
                f"the executed notebook is in {failed}") from None
        final = provenance.finish_phase(run_dir, phase, run_id, params, REPO, time.perf_counter() - t0)
        print(f"[avalanche-nb] {phase} done in {time.perf_counter() - t0:.0f} s -> {final}", flush=True)
    return run_dir


def verify(run_dir: str | Path) -> list[str]:
    """Re-hash every finished phase of a run; returns the problems found."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return [f"{run_dir} is not a folder"]
    phases = [p for p in sorted(run_dir.iterdir()) if p.is_dir() and p.name in PHASES]
    if not phases:
        return [f"{run_dir} holds no finished phase"]
    return [msg for ph in phases for msg in provenance.verify_phase(ph)]


def _list_runs(out: Path) -> None:
    if not out.is_dir():
        print(f"no runs in {out}")
        return
    for run_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        done = [p.name.split("_")[0] for p in sorted(run_dir.iterdir()) if p.is_dir() and p.name in PHASES]
        bad = [p.name for p in run_dir.iterdir() if p.name.endswith((".failed", ".partial"))]
        print(f"{run_dir.name}  phases: {','.join(done) or '-'}" + (f"  incomplete: {', '.join(bad)}" if bad else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="avalanche-nb", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute notebook phases into a new run folder")
    r.add_argument("--params", required=True, help="YAML params file (see `avalanche-nb params`)")
    r.add_argument("--phases", help=f"comma-separated phase numbers or names (default all: {','.join(PHASES)})")
    r.add_argument("--out", default="outputs/runs", help="folder holding run folders (default outputs/runs)")
    r.add_argument("--run-id", help="name of the run folder (default: timestamp + params hash)")
    r.add_argument("--resume", action="store_true",
                   help="add phases to the existing run --run-id (same params; finished phases are refused)")
    v = sub.add_parser("verify", help="re-hash a run's artifacts against its manifests")
    v.add_argument("run_dir")
    ls = sub.add_parser("list", help="list runs and their finished phases")
    ls.add_argument("--out", default="outputs/runs")
    sub.add_parser("params", help="print every params key with its default and meaning")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "run":
            run_dir = run(args.params, args.phases, args.out, args.run_id, resume=args.resume)
            print(f"[avalanche-nb] run complete: {run_dir}")
        elif args.cmd == "verify":
            problems = verify(args.run_dir)
            for msg in problems:
                print(f"FAIL {msg}")
            if problems:
                return 1
            print(f"OK {args.run_dir}: every artifact matches its manifest")
        elif args.cmd == "list":
            _list_runs(Path(args.out))
        else:
            print(P.markdown_table())
    except (P.ParamsError, provenance.RunExistsError, PhaseFailedError, FileNotFoundError) as err:
        print(f"avalanche-nb: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
