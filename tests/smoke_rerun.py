"""nbval's re-execution of the smoke run's notebooks, each started as soon as its phase is finished.

The re-execution is the suite's second computation of every phase (nbval compares the checked outputs,
``test_smoke_run`` the artifacts' bytes). Run after the whole run, it doubled the longest chain of
``make test``; here a background thread re-executes phase k (one notebook at a time, each in its own
``pytest --nbval-lax``) while the run computes phase k + 1: each phase reads only finished phases'
artifacts and writes into its own scratch folder, so the two never touch the same files.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from avalanche_nb import figure_export, phases, provenance, runner

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 1500  # one notebook's re-execution


class Rerun:
    """Re-executes ``run_dir``'s phase notebooks in phase order as they appear, into ``scratch``."""

    def __init__(self, run_dir: Path, scratch: Path):
        self.run_dir, self.scratch = Path(run_dir), Path(scratch)
        # the run's own figure images are checked elsewhere: CSV only here
        # it runs beside the run's own kernels: both with the side-by-side environment (runner.SIDE_BY_SIDE_ENV)
        self.env = os.environ | runner.SIDE_BY_SIDE_ENV | {provenance.SCRATCH_ENV: str(scratch),
                                                           figure_export.IMAGES_ENV: "0"}
        self.results: dict[str, subprocess.CompletedProcess] = {}
        self.run_over = threading.Event()  # set when the run has returned or raised
        self._stopped = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="nbval-rerun", daemon=True)

    def start(self) -> "Rerun":
        self._thread.start()
        return self

    def nbval(self, notebook: Path) -> subprocess.CompletedProcess:
        """``pytest --nbval-lax`` on one executed notebook (with this scratch folder)."""
        args = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider",
                "-o", "addopts=", "-q", str(notebook)]
        with subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) as proc:
            self._proc = proc
            try:
                out, err = proc.communicate(timeout=TIMEOUT_S)
            except BaseException:
                proc.kill()
                raise
            finally:
                self._proc = None
        return subprocess.CompletedProcess(args, proc.returncode, out, err)

    def _loop(self) -> None:
        try:
            for phase in phases.names():
                # a finished phase's folder appears whole (renamed from its staging folder)
                notebook = self.run_dir / phase / f"{phase}.ipynb"
                while not notebook.exists():
                    if self._stopped.is_set() or (self.run_over.is_set() and not notebook.exists()):
                        return  # the run stopped before this phase; the run's own tests report why
                    time.sleep(1.0)
                if self._stopped.is_set():
                    return
                self.results[phase] = self.nbval(notebook)
        except BaseException as err:  # re-raised by wait(), in the test that reads the results
            self._error = err

    def wait(self) -> dict[str, subprocess.CompletedProcess]:
        """Every phase's nbval result (phase order), once all are done; an error of the thread is raised here."""
        self._thread.join()
        if self._error is not None:
            raise RuntimeError("nbval's re-execution of the smoke run failed") from self._error
        return self.results

    def stop(self) -> None:
        """Stop re-executing (the session ends): no new notebook starts, a running one is killed."""
        self._stopped.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        self._thread.join(timeout=30)
