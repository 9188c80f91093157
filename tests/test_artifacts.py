"""Artifacts by name: schemas from the phase registry, validation on write, hash-checked reads."""

import numpy as np
import pandas as pd
import pytest

from avalanche_nb import artifacts, phases, provenance


def thresholds(**over):
    df = pd.DataFrame({"target_mean": [1e-3], "spike_def": ["pos"], "layer": [0], "target": [1e-3], "tau": [4.0],
                       "rate": [1e-3], "rel_err": [0.0], "occupancy": [0.2], "spikes_per_site": [0.3]})
    return df.assign(**over)


def test_tables_must_have_exactly_their_columns_and_kinds():
    artifacts.validate("thresholds.parquet", thresholds())
    with pytest.raises(artifacts.ArtifactSchemaError, match="undeclared \\['extra'\\]"):
        artifacts.validate("thresholds.parquet", thresholds(extra=1))
    with pytest.raises(artifacts.ArtifactSchemaError, match="missing \\['tau'\\]"):
        artifacts.validate("thresholds.parquet", thresholds().drop(columns="tau"))
    with pytest.raises(artifacts.ArtifactSchemaError, match="'layer' has dtype float64, schema says int"):
        artifacts.validate("thresholds.parquet", thresholds(layer=[0.5]))
    with pytest.raises(artifacts.ArtifactSchemaError, match="'spike_def'.* schema says str"):
        artifacts.validate("thresholds.parquet", thresholds(spike_def=[3]))


def test_nullable_columns_accept_missing_values_only_where_declared():
    row = {"model": "m", "layer": 0, "fit": "ma5", "ok": False, "reason": "too few points", "r2": np.nan,
           "aic": np.nan, "n": 3, "chosen": False, "t_peak": np.nan, "peak_observable": None,
           "trajectory_class": None} | {f"p_{k}": np.nan for k in phases.FIT_PARAMETERS}
    artifacts.validate("fits.parquet", pd.DataFrame([row]))
    with pytest.raises(artifacts.ArtifactSchemaError, match="'n'"):
        artifacts.validate("fits.parquet", pd.DataFrame([row | {"n": None}]))


def test_arrays_check_kinds_and_shared_dimensions():
    ok = {"mu": np.zeros((3, 8)), "sigma": np.ones((3, 8)), "n_sites": np.array(12)}
    artifacts.validate("calibration.npz", ok)
    with pytest.raises(artifacts.ArtifactSchemaError, match="'sigma' axis 1 \\(D\\) has size 9, but D is 8"):
        artifacts.validate("calibration.npz", ok | {"sigma": np.ones((3, 9))})
    with pytest.raises(artifacts.ArtifactSchemaError, match="'n_sites' has dtype float64"):
        artifacts.validate("calibration.npz", ok | {"n_sites": np.array(1.5)})
    with pytest.raises(artifacts.ArtifactSchemaError, match="has shape \\(3,\\)"):
        artifacts.validate("calibration.npz", ok | {"mu": np.zeros(3)})


def test_records_need_their_keys():
    with pytest.raises(artifacts.ArtifactSchemaError, match="required key 'weights_sha256' is missing"):
        artifacts.validate("model.json", {"name": "m", "source": "gguf"})
    artifacts.validate("findings.json", {"any-model": {"a": 1}})
    with pytest.raises(artifacts.ArtifactSchemaError, match="schema says object"):
        artifacts.validate("findings.json", {"any-model": 3})


def test_write_validates_lands_in_its_own_phase_and_reads_back_after_the_hash_check(tmp_path):
    run = tmp_path / "run"
    stage = provenance.staging_dir(run, "01_event_lattice")
    stage.mkdir(parents=True)
    with pytest.raises(artifacts.ArtifactSchemaError, match="belongs to phase 01_event_lattice"):
        artifacts.write(tmp_path, "thresholds.parquet", thresholds())
    with pytest.raises(artifacts.ArtifactSchemaError):
        artifacts.write(stage, "thresholds.parquet", thresholds(extra=1))
    assert not (stage / "thresholds.parquet").exists()  # nothing written when the check fails
    artifacts.write(stage, "thresholds.parquet", thresholds())
    provenance.finish_phase(run, "01_event_lattice", "run", {}, tmp_path, 0.0)
    pd.testing.assert_frame_equal(artifacts.read(run, "thresholds.parquet"), thresholds())
    (run / "01_event_lattice" / "thresholds.parquet").write_bytes(b"changed")
    with pytest.raises(provenance.ManifestError, match="sha256 does not match"):
        artifacts.read(run, "thresholds.parquet")


def test_empty_tables_carry_their_columns():
    assert list(artifacts.empty("propagation.parquet").columns) == list(phases.producer("propagation.parquet")
                                                                          .artifact("propagation.parquet").columns)
