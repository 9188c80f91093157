"""Fixtures shared by the end-to-end tests: one smoke run of every phase per session (the real
embedded SmolLM2 on ``params/smoke.yaml``) and the model itself for independent recomputation."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    from avalanche_nb import cli

    out = tmp_path_factory.mktemp("runs")
    return cli.run(ROOT / "params" / "smoke.yaml", out=out, run_id="smoke")


@pytest.fixture(scope="session")
def smol():
    from avalanche_nb.models import load_model

    return load_model("smollm2-135m-instruct")
