"""What a phase notebook does first: params and output folder of a run (or the defaults and a scratch
folder without one), the seeds and progress setting it applies, and plotly.js written once per run."""

import os
import random

import numpy as np
import plotly.io as pio
import pytest
import torch

from avalanche_nb import params as P
from avalanche_nb import progress, provenance, runtime


@pytest.fixture
def global_state(monkeypatch):
    """Put back what runtime.start changes in this process: env, progress, plotly renderer, threads, seeds."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # records the original value for the teardown ...
    monkeypatch.delenv("HF_HUB_OFFLINE")  # ... and leaves it unset for the test
    monkeypatch.setattr(progress, "ENABLED", progress.ENABLED)
    monkeypatch.setattr(pio.renderers, "default", pio.renderers.default)
    threads, states = torch.get_num_threads(), (np.random.get_state(), random.getstate(), torch.get_rng_state())
    yield
    torch.set_num_threads(threads)
    np.random.set_state(states[0])
    random.setstate(states[1])
    torch.set_rng_state(states[2])


def test_start_without_a_run_gives_the_defaults_and_a_scratch_folder(tmp_path, monkeypatch, global_state):
    monkeypatch.setenv(provenance.SCRATCH_ENV, str(tmp_path / "scratch"))
    progress.ENABLED = False
    p, out = runtime.start("", "02_avalanches")
    assert dict(p) == P.defaults() and p.seed == 0 and p.progress is True
    assert out == tmp_path / "scratch" / "02_avalanches" and out.is_dir()
    assert progress.ENABLED is True and os.environ["HF_HUB_OFFLINE"] == "1"
    assert torch.get_num_threads() == p.torch_threads == 2
    assert np.random.rand() == np.random.RandomState(0).rand() and random.random() == random.Random(0).random()
    assert pio.renderers.default == "plotly_mimetype+run_html"


def test_start_in_a_run_reads_its_params_and_writes_to_the_staging_folder(tmp_path, monkeypatch, global_state):
    monkeypatch.delenv(provenance.SCRATCH_ENV, raising=False)
    run = tmp_path / "run"
    stage = provenance.staging_dir(run, "02_avalanches")
    stage.mkdir(parents=True)
    (run / P.PARAMS_FILE).write_text(P.dump(P.validate({"seed": 7, "progress": False, "torch_threads": 1})))
    p, out = runtime.start(str(run), "02_avalanches")
    assert (p.seed, p.progress, p.torch_threads) == (7, False, 1)
    assert out == stage and progress.ENABLED is False and torch.get_num_threads() == 1
    assert np.random.rand() == np.random.RandomState(7).rand()
    expected = torch.Generator().manual_seed(7)
    assert torch.equal(torch.rand(3), torch.rand(3, generator=expected))


def test_plotly_js_is_written_once(tmp_path):
    from plotly.offline import get_plotlyjs

    runtime.write_plotly_js(tmp_path)
    assert (tmp_path / runtime.PLOTLY_JS).read_text() == get_plotlyjs()
    (tmp_path / runtime.PLOTLY_JS).write_text("kept")
    runtime.write_plotly_js(tmp_path)
    assert (tmp_path / runtime.PLOTLY_JS).read_text() == "kept"
