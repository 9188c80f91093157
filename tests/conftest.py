"""Fixtures shared by several test files.

End-to-end: one smoke run of every phase per session (the real embedded SmolLM2 on
``params/smoke.yaml``) and the model itself for independent recomputation. Unit tests: the hand-made
gain stack (``hand_stack``) and the runner's stand-in notebooks (``stand_in_notebooks``)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.hookimpl(tryfirst=True)  # before xdist turns the group marks into node ids
def pytest_collection_modifyitems(config, items):
    """Under ``pytest -n N --dist loadgroup`` (``make test``): every test of the smoke run (``smoke``,
    a session fixture, directly or through another fixture) goes to one worker, so the run is computed
    once, and first, because it is the longest chain of the suite; the Ray campaign tests share another
    worker, so two local Ray instances never start at once. Without xdist the marks do nothing."""
    smoke = [it for it in items if "smoke" in it.fixturenames]
    for it in smoke:
        it.add_marker(pytest.mark.xdist_group("smoke_run"))
    for it in items:
        if it.path.name == "test_campaign.py" and it not in smoke:
            it.add_marker(pytest.mark.xdist_group("ray"))
    first = set(map(id, smoke))
    items[:] = smoke + [it for it in items if id(it) not in first]


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """(run folder, :class:`smoke_rerun.Rerun`): the smoke run, and nbval's re-execution of its
    notebooks, which starts on each phase as soon as the run has finished it."""
    from avalanche_nb import runner
    from smoke_rerun import Rerun

    out = tmp_path_factory.mktemp("runs")
    rerun = Rerun(out / "smoke", tmp_path_factory.mktemp("nbval") / "scratch").start()
    try:
        run_dir = runner.run(ROOT / "params" / "smoke.yaml", out=out, run_id="smoke")
    finally:
        rerun.run_over.set()
    return run_dir, rerun


@pytest.fixture(scope="session")
def run_dir(smoke):
    return smoke[0]


@pytest.fixture(scope="session")
def smol():
    from avalanche_nb.models import load_model

    return load_model("smollm2-135m-instruct", dtype="float32", device="cpu", seed=0, device_map=None)


@pytest.fixture(scope="session")
def smol_tokenizer():
    from tiny_models import load

    return load("smollm2-135m-instruct").tokenizer


@pytest.fixture(scope="session")
def wide_tiny_llama(smol_tokenizer):
    """A random 3-layer Llama over SmolLM2's vocabulary: real prompts (ARC, 8-shot math) scored fast."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048)
    return LlamaForCausalLM(cfg).eval()


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
