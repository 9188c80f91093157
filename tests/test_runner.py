"""The runner's contract on small stand-in notebooks: up-front checks, staging, manifests, refusal,
failures, resume, interrupts; and the phase notebooks it runs."""

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


def test_ctrl_c_names_the_phase_keeps_the_finished_ones_and_prints_the_resume_command(tmp_path, notebooks):
    """SIGINT during phase 01 (seed 17 sleeps there): a short message, no traceback, then --resume alone finishes."""
    out = tmp_path / "runs"
    code = ("import sys; from pathlib import Path; from avalanche_nb import cli, runner; "
            f"runner.NOTEBOOKS = Path({str(notebooks)!r}); "
            f"sys.exit(cli.main(['run', '--params', {str(params_file(tmp_path, 17))!r}, '--out', {str(out)!r}, "
            "'--run-id', 'r']))")
    # SIGINT back to its default in the child: a shell that starts the suite as a background job hands every
    # process SIGINT ignored, and Python then never installs its KeyboardInterrupt handler
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    # wait for the cell itself: under load the kernel can take longer to start than any fixed delay
    while not (out / "r" / ".01_event_lattice.partial" / "sleeping").exists() and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert "interrupted during phase 01_event_lattice" in stderr and "finished phases 00 are intact" in stderr
    assert "Traceback" not in stderr and "ZMQError" not in stderr, stderr
    assert "--run-id r --resume" in stderr
    assert runner.verify(out / "r") == [] and (out / "r" / "00_data_and_model").is_dir()
    # the interrupted phase left only its staging folder; --resume alone finishes the run (seed 17 sleeps again,
    # so resume with the phase notebook swapped for a quick one, as a user would after fixing a hang)
    (notebooks / "01_event_lattice.py").write_text(HEADER.format(phase="01_event_lattice"))
    runner.run(out / "r" / "params.yaml", out=out, run_id="r", notebooks=notebooks, resume=True)
    assert runner.finished(out / "r") == list(phases.names()) and runner.verify(out / "r") == []


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
