"""The runner's contract on small stand-in notebooks: up-front checks, staging, manifests, refusal,
failures, resume, interrupts; and the phase notebooks it runs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avalanche_nb import phases, provenance, runner
from avalanche_nb import params as P
from stand_in_notebooks import HEADER, params_file

ROOT = Path(__file__).resolve().parent.parent


def tree(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_run_writes_verified_phases_and_refuses_an_existing_run(tmp_path, notebooks):
    out = tmp_path / "runs"
    run_dir = runner.run(params_file(tmp_path, 1), out=out, run_id="r1", notebooks=notebooks)
    assert sorted(p.name for p in run_dir.iterdir()) == [*phases.names(), "SUMMARY.md", "logs", "params.yaml", "plotly.min.js"]
    assert runner.verify(run_dir) == []
    m = provenance.read_manifest(run_dir / "01_event_lattice")
    assert m["params"]["seed"] == 1 and "timings" in m
    assert set(m["artifacts"]) == {"01_event_lattice.ipynb", "b.txt", "facts.json"} | {
        a.name for a in phases.get("01").writes}
    assert m["inputs"] == {"00_data_and_model/model.json":
                           provenance.sha256_file(run_dir / "00_data_and_model" / "model.json")}
    assert provenance.read_manifest(run_dir / "00_data_and_model")["facts"]["note"] == "first"

    before = tree(run_dir)
    with pytest.raises(provenance.RunExistsError, match="r1"):
        runner.run(params_file(tmp_path, 2), out=out, run_id="r1", notebooks=notebooks)
    assert tree(run_dir) == before  # left untouched

    (run_dir / "02_avalanches" / "summary.json").write_text("tampered")
    assert runner.verify(run_dir) == ["02_avalanches/summary.json: sha256 mismatch"]


def test_a_failing_phase_names_itself_and_keeps_earlier_phases(tmp_path, notebooks):
    out = tmp_path / "runs"
    with pytest.raises(runner.PhaseFailedError, match=r"phase 01_event_lattice failed .*ValueError: planted failure"):
        runner.run(params_file(tmp_path, 13), out=out, run_id="bad", notebooks=notebooks)
    run_dir = out / "bad"
    assert (run_dir / "00_data_and_model" / "manifest.json").exists()
    assert runner.verify(run_dir) == []  # the finished phase is intact
    assert (run_dir / "01_event_lattice.failed" / "01_event_lattice.ipynb").exists()
    assert not (run_dir / "01_event_lattice").exists() and not (run_dir / "02_avalanches").exists()


def test_a_phase_that_skips_a_declared_artifact_fails(tmp_path, notebooks):
    (notebooks / "00_data_and_model.py").write_text(HEADER.format(phase="00_data_and_model")
                                                    + '(out / "slices.npz").unlink()\n')
    with pytest.raises(runner.PhaseFailedError, match="without writing slices.npz"):
        runner.run(params_file(tmp_path, 1), phases="00", out=tmp_path / "runs", run_id="r", notebooks=notebooks)


def test_a_bad_model_is_refused_before_any_folder_exists(tmp_path, notebooks):
    out = tmp_path / "runs"
    with pytest.raises(P.ParamsError, match=r"unknown model 'smollm3-135m-instruct'.*did you mean 'smollm2-135m-instruct'"):
        runner.run(params_file(tmp_path, 0, model="smollm3-135m-instruct"), out=out, run_id="x", notebooks=notebooks)
    assert not out.exists()


def test_a_phase_whose_inputs_are_missing_is_refused_at_once(tmp_path, notebooks):
    out = tmp_path / "runs"
    t0 = time.perf_counter()
    with pytest.raises(P.ParamsError, match=r"phase 04_gstar reads artifacts of 00_data_and_model, 01_event_lattice, "
                                            r"03_gain_sweep.*add 00, 01, 03"):
        runner.run(params_file(tmp_path, 0), phases="04", out=out, run_id="x", notebooks=notebooks)
    assert time.perf_counter() - t0 < 5 and not out.exists()
    runner.check_inputs(["03_gain_sweep", "04_gstar"], ["00_data_and_model", "01_event_lattice"])  # 03 comes first


def test_resume_accepts_a_run_made_before_a_key_existed_only_at_its_default(tmp_path, notebooks):
    import yaml

    out = tmp_path / "runs"
    run_dir = runner.run(params_file(tmp_path, 1), phases="00", out=out, run_id="r", notebooks=notebooks)
    recorded = yaml.safe_load((run_dir / P.PARAMS_FILE).read_text())
    del recorded["position_buckets"]  # as a run made by an avalanche-nb without phase 08 has it
    (run_dir / P.PARAMS_FILE).write_text(yaml.safe_dump(recorded))
    changed = tmp_path / "changed.yaml"
    changed.write_text(params_file(tmp_path, 1).read_text() + "position_buckets: [1, 8]\n")
    with pytest.raises(P.ParamsError, match="params differ .* position_buckets"):
        runner.run(changed, phases="01", out=out, run_id="r", notebooks=notebooks, resume=True)
    runner.run(params_file(tmp_path, 1), phases="01", out=out, run_id="r", notebooks=notebooks, resume=True)
    assert runner.finished(run_dir) == ["00_data_and_model", "01_event_lattice"]


def test_resume_alone_runs_what_the_run_lacks_under_the_same_params(tmp_path, notebooks):
    out = tmp_path / "runs"
    run_dir = runner.run(params_file(tmp_path, 1), phases="00", out=out, run_id="r", notebooks=notebooks)
    first = tree(run_dir / "00_data_and_model")
    (run_dir / ".01_event_lattice.partial").mkdir()  # leftover of an interrupted attempt
    with pytest.raises(P.ParamsError, match="params differ .* seed"):
        runner.run(params_file(tmp_path, 2), out=out, run_id="r", notebooks=notebooks, resume=True)
    with pytest.raises(provenance.RunExistsError, match="has finished 00_data_and_model"):
        runner.run(params_file(tmp_path, 1), phases="00,01", out=out, run_id="r", notebooks=notebooks, resume=True)
    runner.run(params_file(tmp_path, 1), out=out, run_id="r", notebooks=notebooks, resume=True)
    assert sorted(p.name for p in run_dir.iterdir()) == [*phases.names(), "SUMMARY.md", "logs", "params.yaml", "plotly.min.js"]  # stale staging gone
    assert tree(run_dir / "00_data_and_model") == first
    assert runner.verify(run_dir) == []
    with pytest.raises(provenance.RunExistsError, match="finished every phase"):
        runner.run(params_file(tmp_path, 1), out=out, run_id="r", notebooks=notebooks, resume=True)
    with pytest.raises(provenance.RunExistsError, match="does not exist"):
        runner.run(params_file(tmp_path, 1), phases="01", out=out, run_id="nope", notebooks=notebooks, resume=True)


@pytest.mark.parametrize("jobs", [1, 2])
def test_ctrl_c_names_the_phase_keeps_the_finished_ones_and_prints_the_resume_command(tmp_path, notebooks, jobs):
    """SIGINT during phase 01 (seed 17 sleeps there): a short message, no traceback, then --resume alone
    finishes. With two jobs 06 sleeps too, so that two kernels are stopped."""
    out = tmp_path / "runs"
    if jobs == 2:  # 06 sleeps too, in a child process of its kernel, which must not outlive the interrupt
        child = ('import subprocess\nproc = subprocess.Popen(["sleep", "600"])\n'
                 '(out / "child").write_text(str(proc.pid))\nproc.wait()\n')
        (notebooks / "06_massive.py").write_text(HEADER.format(phase="06_massive") + child)
    code = ("import sys; from pathlib import Path; from avalanche_nb import cli, runner; "
            f"runner.NOTEBOOKS = Path({str(notebooks)!r}); "
            f"sys.exit(cli.main(['run', '--params', {str(params_file(tmp_path, 17))!r}, '--out', {str(out)!r}, "
            f"'--run-id', 'r', '--jobs', '{jobs}']))")
    # SIGINT back to its default in the child: a shell that starts the suite as a background job hands every
    # process SIGINT ignored, and Python then never installs its KeyboardInterrupt handler
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    # wait for the cell itself: under load the kernel can take longer to start than any fixed delay
    markers = [out / "r" / ".01_event_lattice.partial" / "sleeping"]
    if jobs == 2:
        markers.append(out / "r" / ".06_massive.partial" / "child")
    while not all(m.exists() for m in markers) and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    stopped = "01_event_lattice, 06_massive" if jobs == 2 else "01_event_lattice"
    assert f"interrupted during phase {stopped};" in stderr and "finished phases 00 are intact" in stderr, stderr
    assert "Traceback" not in stderr and "ZMQError" not in stderr, stderr
    assert "--run-id r --resume" in stderr
    assert runner.verify(out / "r") == [] and (out / "r" / "00_data_and_model").is_dir()
    left = sorted(p.name for p in (out / "r").iterdir() if p.name.startswith(".") or p.name.endswith(".failed"))
    assert left == [".01_event_lattice.partial"] + ([".06_massive.partial"] if jobs == 2 else [])
    if jobs == 2:  # the kernel's process group was stopped, its child with it
        pid = int((out / "r" / ".06_massive.partial" / "child").read_text())
        deadline = time.time() + 10
        while _alive(pid) and time.time() < deadline:
            time.sleep(0.2)
        assert not _alive(pid)
    # the interrupted phase left only its staging folder; --resume alone finishes the run (seed 17 sleeps again,
    # so resume with the phase notebook swapped for a quick one, as a user would after fixing a hang)
    for phase in ("01_event_lattice", "06_massive"):
        (notebooks / f"{phase}.py").write_text(HEADER.format(phase=phase))
    runner.run(out / "r" / "params.yaml", out=out, run_id="r", notebooks=notebooks, resume=True)
    assert runner.finished(out / "r") == list(phases.names()) and runner.verify(out / "r") == []


def test_dependencies_follow_the_artifacts_each_phase_reads():
    deps = runner.dependencies(list(phases.names()))
    # by hand from the registry's reads: 06 reads nothing, 07 only model.json, 08 and 09 only me_layer.json
    assert deps["00_data_and_model"] == set() and deps["06_massive"] == set()
    assert deps["01_event_lattice"] == {"00_data_and_model"} and deps["02_avalanches"] == {"01_event_lattice"}
    assert deps["03_gain_sweep"] == {"00_data_and_model", "01_event_lattice"}
    assert deps["07_training_dynamics"] == {"00_data_and_model"}
    assert deps["08_cascades_and_mas"] == deps["09_ma_in_use"] == {"06_massive"}
    # a phase finished earlier (outside the chosen ones) is no dependency
    assert runner.dependencies(["04_gstar", "05_replication"]) == {"04_gstar": set(), "05_replication": {"04_gstar"}}


def test_the_start_order_puts_what_others_wait_for_first():
    assert runner.start_order(list(phases.names())) == [
        "00_data_and_model",  # 01-05 and 07 wait for it
        "01_event_lattice",  # 02-05
        "06_massive", "03_gain_sweep",  # 08, 09 / 04, 05: a tie, the later first
        "04_gstar",  # 05
        "09_ma_in_use", "08_cascades_and_mas", "07_training_dynamics", "05_replication", "02_avalanches"]
    assert runner.start_order(["07_training_dynamics", "08_cascades_and_mas"]) == ["08_cascades_and_mas",
                                                                                 "07_training_dynamics"]


#: a stand-in body that records when the phase ran and its kernel's wait policy (beside its artifacts)
TIMED = ('import os, json\nt0 = time.time()\ntime.sleep(0.5)\n'
         '(out / "ran.json").write_text(json.dumps([t0, time.time(), os.environ.get("OMP_WAIT_POLICY")]))\n')
#: 00 and 06 read nothing: each waits (at most $STAND_IN_MEET_S seconds) until the other has started
MEET = ('import os\nfrom pathlib import Path\nmeet = Path(os.environ["STAND_IN_MEET"])\n'
        '(meet / "{me}").write_text("")\ndeadline = time.time() + float(os.environ["STAND_IN_MEET_S"])\n'
        'while not (meet / "{other}").exists():\n'
        '    assert time.time() < deadline, "{other} never ran beside {me}"\n    time.sleep(0.1)\n')


def test_two_jobs_run_independent_phases_side_by_side_and_each_after_what_it_reads(tmp_path, monkeypatch):
    from stand_in_notebooks import write_notebooks

    monkeypatch.setenv("STAND_IN_MEET", str(tmp_path / "meet"))
    monkeypatch.setenv("STAND_IN_MEET_S", "120")  # two kernels starting on a loaded machine
    (tmp_path / "meet").mkdir()
    bodies = {ph: TIMED for ph in phases.names()}
    bodies["00_data_and_model"] = MEET.format(me="00", other="06") + TIMED
    bodies["06_massive"] = MEET.format(me="06", other="00") + TIMED
    notebooks = write_notebooks(tmp_path / "nb", bodies)
    run_dir = runner.run(params_file(tmp_path, 1), out=tmp_path / "runs", run_id="r", notebooks=notebooks, jobs=2)
    assert runner.finished(run_dir) == list(phases.names()) and runner.verify(run_dir) == []
    ran = {ph: json.loads((run_dir / ph / "ran.json").read_text()) for ph in phases.names()}
    for ph, needs in runner.dependencies(list(phases.names())).items():
        assert all(ran[ph][0] >= ran[n][1] for n in needs), ph  # started after everything it reads was written
    assert all(policy == "PASSIVE" for _, _, policy in ran.values())
    assert os.getcwd() == str(ROOT)  # papermill's cwd would move the whole process: the kernels start there
    # one phase at a time, 00 would wait for 06 in vain
    monkeypatch.setenv("STAND_IN_MEET", str(tmp_path / "alone"))
    monkeypatch.setenv("STAND_IN_MEET_S", "5")
    (tmp_path / "alone").mkdir()
    with pytest.raises(runner.PhaseFailedError, match="06 never ran beside 00"):
        runner.run(params_file(tmp_path, 1), phases="00", out=tmp_path / "runs", run_id="one", notebooks=notebooks)


def test_with_two_jobs_a_failure_lets_the_running_phase_finish_and_starts_nothing_new(tmp_path, notebooks):
    out = tmp_path / "runs"
    # 06 runs beside 00 and then 01, and finishes only once 01 has failed
    wait = ('from pathlib import Path\ndeadline = time.time() + 120\n'
            'while not (Path(run_dir) / "01_event_lattice.failed").exists():\n'
            '    assert time.time() < deadline\n    time.sleep(0.1)\n')
    (notebooks / "06_massive.py").write_text(HEADER.format(phase="06_massive") + wait)
    with pytest.raises(runner.PhaseFailedError, match=r"phase 01_event_lattice failed .*planted failure"):
        runner.run(params_file(tmp_path, 13), out=out, run_id="bad", notebooks=notebooks, jobs=2)
    run_dir = out / "bad"
    assert runner.finished(run_dir) == ["00_data_and_model", "06_massive"] and runner.verify(run_dir) == []
    assert (run_dir / "01_event_lattice.failed").is_dir()
    assert not list(run_dir.glob(".*.partial"))  # nothing else was started


def test_jobs_must_be_a_positive_integer(tmp_path, notebooks):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(P.ParamsError, match="jobs must be a positive integer"):
            runner.run(params_file(tmp_path, 1), out=tmp_path / "runs", run_id="r", notebooks=notebooks, jobs=bad)
    assert not (tmp_path / "runs").exists()


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_select_phases():
    assert runner.select_phases(None) == list(phases.names())
    assert runner.select_phases("02,00") == ["00_data_and_model", "02_avalanches"]
    assert runner.select_phases("01_event_lattice") == ["01_event_lattice"]


# --------------------------------------------------------------------------- the phase notebooks it runs


@pytest.mark.parametrize("phase", phases.names())
def test_a_notebook_declares_only_the_run_folder(phase):
    """Settings live in the schema and the run's params file, never in a notebook's parameters cell."""
    nb = runner.read_notebook(phase)
    runner.check_notebook(nb, phase)
    assert runner.declared_parameters(nb) == {"run_dir": ""}
    import papermill

    assert set(papermill.inspect_notebook(str(ROOT / "notebooks" / f"{phase}.ipynb"))) == {"run_dir"}


@pytest.mark.parametrize("phase", phases.names() + ("explore", "campaign"))
def test_ipynb_is_in_sync_with_its_py_source(phase):
    import jupytext

    py = jupytext.read(ROOT / "notebooks" / f"{phase}.py")
    nb = jupytext.read(ROOT / "notebooks" / f"{phase}.ipynb")
    assert [c.source for c in py.cells] == [c.source for c in nb.cells], f"run `make sync` ({phase})"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "keep .ipynb unexecuted in git"
