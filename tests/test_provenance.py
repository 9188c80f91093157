"""Provenance: hash-checked inputs, and where a phase writes when the runner did not start it."""

import json

import pytest

from avalanche_nb import provenance, runner
from stand_in_notebooks import params_file


def test_changed_input_is_refused(tmp_path, notebooks):
    run_dir = runner.run(params_file(tmp_path, 1), phases="00", out=tmp_path / "runs", run_id="r", notebooks=notebooks)
    (run_dir / "00_data_and_model" / "model.json").write_text(json.dumps({"seed": 99}))
    with pytest.raises(provenance.ManifestError, match="sha256 does not match"):
        provenance.load_input(run_dir, "00_data_and_model/model.json")


def test_phase_output_outside_the_runner_is_a_scratch_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(provenance.SCRATCH_ENV, raising=False)
    out = provenance.phase_output(str(tmp_path), "00_data_and_model")
    assert out.is_dir() and tmp_path not in out.parents
    monkeypatch.setenv(provenance.SCRATCH_ENV, str(tmp_path / "s"))
    assert provenance.phase_output("", "02_avalanches") == tmp_path / "s" / "02_avalanches"
