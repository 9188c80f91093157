"""The runner's contract on small stand-in notebooks: staging, manifests, refusal, failures."""

import json
from pathlib import Path

import pytest

from avalanche_nb import cli, provenance
from avalanche_nb import params as P

HEADER = """# %% tags=["parameters"]
run_dir = ""  # run folder
phase = "{phase}"  # phase name
seed = 0  # seed

# %%
from avalanche_nb import provenance
out = provenance.phase_output(run_dir, phase)
"""

BODIES = {
    "00_data_and_model": 'provenance.save_json(out / "a.json", {"seed": seed})\nprovenance.record(out, note="first")\n',
    "01_event_lattice": ('src = provenance.load_input(run_dir, "00_data_and_model/a.json", out)\n'
                         'if seed == 13:\n    raise ValueError("planted failure")\n'
                         '(out / "b.txt").write_text(src.read_text())\n'),
    "02_avalanches": '(out / "c.txt").write_text("done")\n',
}


@pytest.fixture
def notebooks(tmp_path):
    d = tmp_path / "notebooks"
    d.mkdir()
    for phase in cli.PHASES:  # later phases only mark themselves done
        body = BODIES.get(phase, f'(out / "{phase}.txt").write_text("done")\n')
        (d / f"{phase}.py").write_text(HEADER.format(phase=phase) + body)
    return d


def params_file(tmp_path, seed):
    f = tmp_path / f"p{seed}.yaml"
    f.write_text(f"seed: {seed}\nprogress: false\n")
    return f


def tree(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_run_writes_verified_phases_and_refuses_an_existing_run(tmp_path, notebooks):
    out = tmp_path / "runs"
    run_dir = cli.run(params_file(tmp_path, 1), out=out, run_id="r1", notebooks=notebooks)
    assert sorted(p.name for p in run_dir.iterdir()) == [*cli.PHASES, "params.yaml"]
    assert cli.verify(run_dir) == []
    m = provenance.read_manifest(run_dir / "01_event_lattice")
    assert m["params"]["seed"] == 1
    assert set(m["artifacts"]) == {"01_event_lattice.ipynb", "b.txt", "facts.json"}
    assert m["inputs"] == {"00_data_and_model/a.json": provenance.sha256_file(run_dir / "00_data_and_model" / "a.json")}
    assert provenance.read_manifest(run_dir / "00_data_and_model")["facts"]["note"] == "first"

    before = tree(run_dir)
    with pytest.raises(provenance.RunExistsError, match="r1"):
        cli.run(params_file(tmp_path, 2), out=out, run_id="r1", notebooks=notebooks)
    assert tree(run_dir) == before  # left untouched

    (run_dir / "02_avalanches" / "c.txt").write_text("tampered")
    assert cli.verify(run_dir) == ["02_avalanches/c.txt: sha256 mismatch"]


def test_a_failing_phase_names_itself_and_keeps_earlier_phases(tmp_path, notebooks):
    out = tmp_path / "runs"
    with pytest.raises(cli.PhaseFailedError, match=r"phase 01_event_lattice failed .*ValueError: planted failure"):
        cli.run(params_file(tmp_path, 13), out=out, run_id="bad", notebooks=notebooks)
    run_dir = out / "bad"
    assert (run_dir / "00_data_and_model" / "manifest.json").exists()
    assert cli.verify(run_dir) == []  # the finished phase is intact
    assert (run_dir / "01_event_lattice.failed" / "01_event_lattice.ipynb").exists()
    assert not (run_dir / "01_event_lattice").exists() and not (run_dir / "02_avalanches").exists()


def test_changed_input_is_refused(tmp_path, notebooks):
    run_dir = cli.run(params_file(tmp_path, 1), out=tmp_path / "runs", run_id="r", notebooks=notebooks)
    (run_dir / "00_data_and_model" / "a.json").write_text(json.dumps({"seed": 99}))
    with pytest.raises(provenance.ManifestError, match="sha256 does not match"):
        provenance.load_input(run_dir, "00_data_and_model/a.json")


def test_cli_errors_exit_nonzero_before_any_work(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("n_sequencs: 3\n")
    assert cli.main(["run", "--params", str(bad), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "unknown params key 'n_sequencs'" in err and "n_sequences" in err
    assert not (tmp_path / "runs").exists()
    assert cli.main(["run", "--params", str(params_file(tmp_path, 0)), "--phases", "09",
                     "--out", str(tmp_path / "runs")]) == 2
    assert "unknown phase '09'" in capsys.readouterr().err


def test_select_phases():
    assert cli.select_phases(None) == list(cli.PHASES)
    assert cli.select_phases("02,00") == ["00_data_and_model", "02_avalanches"]
    assert cli.select_phases("01_event_lattice") == ["01_event_lattice"]


def test_phase_output_refuses_outside_the_runner(tmp_path, monkeypatch):
    monkeypatch.delenv(provenance.SCRATCH_ENV, raising=False)
    with pytest.raises(provenance.RunExistsError, match="avalanche-nb run"):
        provenance.phase_output(tmp_path, "00_data_and_model")


def test_resume_adds_missing_phases_only_under_the_same_params(tmp_path, notebooks):
    out = tmp_path / "runs"
    run_dir = cli.run(params_file(tmp_path, 1), phases="00", out=out, run_id="r", notebooks=notebooks)
    first = tree(run_dir / "00_data_and_model")
    (run_dir / ".01_event_lattice.partial").mkdir()  # leftover of an interrupted attempt
    with pytest.raises(P.ParamsError, match="params differ .* seed"):
        cli.run(params_file(tmp_path, 2), phases="01", out=out, run_id="r", notebooks=notebooks, resume=True)
    with pytest.raises(provenance.RunExistsError, match="has finished 00_data_and_model"):
        cli.run(params_file(tmp_path, 1), phases="00,01", out=out, run_id="r", notebooks=notebooks, resume=True)
    cli.run(params_file(tmp_path, 1), phases="01,02", out=out, run_id="r", notebooks=notebooks, resume=True)
    assert sorted(p.name for p in run_dir.iterdir()) == [*cli.PHASES[:3], "params.yaml"]  # stale staging gone
    assert tree(run_dir / "00_data_and_model") == first
    assert cli.verify(run_dir) == []
    with pytest.raises(provenance.RunExistsError, match="does not exist"):
        cli.run(params_file(tmp_path, 1), phases="01", out=out, run_id="nope", notebooks=notebooks, resume=True)
