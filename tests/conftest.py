"""Fixtures shared by several test files.

End-to-end: one smoke run of every phase per session (the real embedded SmolLM2 on
``params/smoke.yaml``) and the model itself for independent recomputation. Unit tests: the hand-made
gain stack (``hand_stack``) and the runner's stand-in notebooks (``stand_in_notebooks``)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


#: the test files that use the smoke run (the ``smoke`` session fixture, directly or through
#: ``run_dir`` or another fixture); the two-worker schedule below sends them to one worker
SMOKE_RUN_FILES = ("test_smoke_run.py", "test_paper.py", "test_explore_run.py", "test_browser.py")
SMOKE_UNIT = "smoke run"  # the schedule's unit of work holding SMOKE_RUN_FILES
_STRAY = pytest.StashKey[str]()


def pytest_collection_modifyitems(config, items):
    """The smoke run's test files first (the longest chain of the suite), and the smoke run used only
    from :data:`SMOKE_RUN_FILES`: a test elsewhere would make a second worker compute the whole run
    again, so it fails at set-up (before its fixtures) with a message saying where it belongs."""
    for it in items:
        if "smoke" in it.fixturenames and it.path.name not in SMOKE_RUN_FILES:
            it.stash[_STRAY] = (f"{it.nodeid} uses the smoke run: move it into one of {SMOKE_RUN_FILES} "
                                f"(tests/conftest.py), so that one pytest worker computes the run")
    first = [it for it in items if it.path.name in SMOKE_RUN_FILES]  # whole files: module fixtures built once
    items[:] = first + [it for it in items if it.path.name not in SMOKE_RUN_FILES]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if _STRAY in item.stash:
        pytest.fail(item.stash[_STRAY], pytrace=False)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: pytest without xdist must not reject it
def pytest_xdist_make_scheduler(config, log):
    """``pytest -n N`` (``--dist load``, xdist's default): the tests of :data:`SMOKE_RUN_FILES` are one
    unit of work, handed out first (one worker computes the session's smoke run once, from the start),
    every other test file one unit (its module fixtures built once; the Ray tests of test_campaign.py
    never run two at a time). Any other ``--dist`` is left to xdist. (xdist's ``--dist loadgroup``
    would group by marks, but pytest 9 loses its group suffix: it sets ``item._nodeid``, which pytest
    9's nodes no longer read.)"""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SmokeRunFirst(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return SMOKE_UNIT if Path(file).name in SMOKE_RUN_FILES else file

        def _assign_work_unit(self, node) -> None:
            # xdist orders units largest first (--loadscope-reorder); the smoke run goes first regardless
            if SMOKE_UNIT in self.workqueue:
                self.workqueue.move_to_end(SMOKE_UNIT, last=False)
            super()._assign_work_unit(node)

    return SmokeRunFirst(config, log)


@pytest.fixture(scope="session")
def smoke(tmp_path_factory, request):
    """(run folder, :class:`smoke_rerun.Rerun`): the smoke run, and nbval's re-execution of its
    notebooks, which starts on each phase as soon as the run has finished it (only when a selected
    test asks for it: ``rerun`` of test_smoke_run.py; else ``None``)."""
    from avalanche_nb import runner
    from smoke_rerun import Rerun

    out = tmp_path_factory.mktemp("runs")
    rerun = None
    if any("rerun" in it.fixturenames for it in request.session.items):
        rerun = Rerun(out / "smoke", tmp_path_factory.mktemp("nbval") / "scratch").start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            # the re-execution computes beside the run: the run's kernels inherit the side-by-side environment
            for key, value in (runner.SIDE_BY_SIDE_ENV if rerun is not None else {}).items():
                mp.setenv(key, value)
            run_dir = runner.run(ROOT / "params" / "smoke.yaml", out=out, run_id="smoke")
    finally:
        if rerun is not None:
            rerun.run_over.set()
    yield run_dir, rerun
    if rerun is not None:
        rerun.stop()  # a session cut short leaves no nbval kernel running


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
