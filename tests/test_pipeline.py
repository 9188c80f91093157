"""The shared pipeline steps: slices, the g = 1 reference, and reading it back from a finished phase."""

import numpy as np
import pytest

from avalanche_nb import artifacts, pipeline, provenance
from avalanche_nb import params as P
from avalanche_nb.lattice import SPIKE_DEFS
from avalanche_nb.models import load_model


@pytest.fixture(scope="module")
def tiny():
    model = load_model("tiny-llama", dtype="float32", device="cpu", seed=0, device_map=None).model
    rng = np.random.default_rng(0)
    return model, rng.integers(3, 128, (6, 16)), rng.integers(3, 128, (5, 16))


def params(**kw):
    return P.validate({"target_rates": [0.02, 0.05], "rate_reference_d_ff": None, "progress": False} | kw)


def test_reference_holds_per_rate_targets_and_the_g1_thresholds_as_fixed(tiny):
    model, tokens, calib = tiny
    ref = pipeline.build_reference(model, calib, tokens, params(), progress=False)
    assert ref.rates == [0.02, 0.05] and len(ref.targets) == len(ref.lattices) == 2
    for r, lattice in enumerate(ref.lattices):
        np.testing.assert_array_equal(ref.targets[r], lattice.target_rate)
        for d in SPIKE_DEFS:
            np.testing.assert_array_equal(ref.fixed[(r, d)], lattice.thresholds[d].tau)
    assert ref.calibration.n_sites == calib.shape[0] * (calib.shape[1] - 1)  # the first token is excluded
    first = ref.first()
    assert first.rates == [0.02] and set(first.fixed) == {(0, "pos"), (0, "abs")}


def test_fixed_tau_replaces_the_g1_thresholds(tiny):
    model, tokens, calib = tiny
    ref = pipeline.build_reference(model, calib, tokens, params(fixed_tau=3.0), progress=False)
    for key, tau in ref.fixed.items():
        np.testing.assert_array_equal(tau, np.full(3, 3.0))


def test_reference_round_trips_through_its_artifacts(tiny, tmp_path):
    model, tokens, calib = tiny
    p = params()
    ref = pipeline.build_reference(model, calib, tokens, p, progress=False)
    run = tmp_path / "run"
    stage = provenance.staging_dir(run, "01_event_lattice")
    stage.mkdir(parents=True)
    artifacts.write(stage, "calibration.npz", pipeline.calibration_arrays(ref.calibration))
    artifacts.write(stage, "reference.npz", ref.to_arrays())
    provenance.finish_phase(run, "01_event_lattice", "run", dict(p), tmp_path, 0.0)
    back = pipeline.read_reference(run)
    assert back.rates == ref.rates and back.floor == ref.floor and back.lattices is None
    np.testing.assert_array_equal(back.calibration.mu, ref.calibration.mu)
    for r in range(2):
        np.testing.assert_array_equal(back.targets[r], ref.targets[r])
    assert all(np.array_equal(back.fixed[k], ref.fixed[k]) for k in ref.fixed)


def test_slices_are_disjoint_consecutive_windows_of_dataset_a():
    from avalanche_nb.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    p = P.validate({"n_calibration": 2, "n_sequences": 3, "n_sequences_b": 1, "window": 16, "n_heatmaps": 1})
    s = pipeline.build_slices(tok, p)
    both = pipeline.build_slices(tok, P.validate(dict(p) | {"n_calibration": 5, "n_sequences": 1}), ("a_calibration",))
    np.testing.assert_array_equal(np.vstack([s["a_calibration"].tokens, s["a_lattice"].tokens]),
                                  both["a_calibration"].tokens)
    assert s["b"].source == "sciq" and s["b"].tokens.shape == (1, 16)
    with pytest.raises(ValueError, match="unknown slice"):
        pipeline.build_slices(tok, p, ("c",))
