"""Fixtures shared by several test files.

End-to-end: one smoke run of every phase per session (the real embedded SmolLM2 on
``params/smoke.yaml``) and the model itself for independent recomputation. Unit tests: the hand-made
gain stack (``hand_stack``) and the runner's stand-in notebooks (``stand_in_notebooks``)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    from avalanche_nb import phases, runner

    out = tmp_path_factory.mktemp("runs")
    return runner.run(ROOT / "params" / "smoke.yaml", out=out, run_id="smoke")


@pytest.fixture(scope="session")
def smol():
    from avalanche_nb.models import load_model

    return load_model("smollm2-135m-instruct", dtype="float32", device="cpu", seed=0)


@pytest.fixture
def stack(tmp_path):
    """The hand-made gain stack of ``hand_stack``, exporting into ``tmp_path / "exports"``."""
    from hand_stack import make_stack

    return make_stack(tmp_path / "exports")


@pytest.fixture
def notebooks(tmp_path):
    """A folder of stand-in phase notebooks (``stand_in_notebooks``)."""
    from stand_in_notebooks import write_notebooks

    return write_notebooks(tmp_path / "notebooks")
