"""The two-worker schedule of ``make test`` (tests/conftest.py): the smoke run is computed by one worker
only, its files run first, and a test that uses it from another file is refused."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CONFTEST = f'''
import importlib.util, os
import pytest
spec = importlib.util.spec_from_file_location("suite_conftest", {str(HERE / "conftest.py")!r})
suite = importlib.util.module_from_spec(spec)
spec.loader.exec_module(suite)
pytest_collection_modifyitems = suite.pytest_collection_modifyitems
pytest_xdist_make_scheduler = suite.pytest_xdist_make_scheduler
pytest_runtest_setup = suite.pytest_runtest_setup

@pytest.fixture(scope="session")
def smoke(tmp_path_factory):  # stands in for the smoke run: leaves a file per worker that computes it
    (tmp_path_factory.getbasetemp().parent.parent / f"smoke-{{os.environ.get('PYTEST_XDIST_WORKER')}}").touch()
    return "run", "rerun"

@pytest.fixture(scope="session")
def run_dir(smoke):
    return smoke[0]
'''


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess:
    (folder / "tmp").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=",
                           "--basetemp", str(folder / "tmp" / "base"), *args], cwd=folder, capture_output=True,
                          text=True, timeout=300)


def test_one_worker_computes_the_smoke_run_and_starts_with_it(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    # a larger file than the smoke run's: xdist alone would hand it out first (largest units first)
    (tmp_path / "test_other.py").write_text("import pytest\n\n@pytest.mark.parametrize('i', range(60))\n"
                                            "def test_o(i):\n    pass\n")
    (tmp_path / "test_smoke_run.py").write_text("def test_a(run_dir):\n    pass\n\ndef test_b():\n    pass\n")
    (tmp_path / "test_paper.py").write_text("import pytest\n\n@pytest.fixture\ndef built(run_dir):\n    return 1\n\n"
                                            "def test_p(built):\n    pass\n")
    proc = _pytest(tmp_path, "-n", "2", "-v")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert len(list(tmp_path.glob("tmp/smoke-*"))) == 1, proc.stdout[-3000:]  # not once per worker
    passed = [line.split() for line in proc.stdout.splitlines() if " PASSED " in line]  # [gwN] [ p%] PASSED id
    smoke_workers = {w[0] for w in passed if w[-1].startswith(("test_paper", "test_smoke_run"))}
    assert len(passed) == 63 and len(smoke_workers) == 1
    first_of_that_worker = next(w[-1] for w in passed if w[0] in smoke_workers)
    assert first_of_that_worker.startswith(("test_paper", "test_smoke_run")), proc.stdout[-3000:]
    for plain in (("-q",), ("-q", "-p", "no:xdist")):  # xdist inactive or not loaded: only the order changes
        res = _pytest(tmp_path, *plain)
        assert res.returncode == 0 and "63 passed" in res.stdout, res.stdout[-3000:]


def test_a_test_using_the_smoke_run_elsewhere_errs_before_computing_it(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_elsewhere.py").write_text("def test_x(run_dir):\n    pass\n\ndef test_y():\n    pass\n")
    for args in (("-q",), ("-q", "-n", "2")):
        proc = _pytest(tmp_path, *args)
        assert proc.returncode == 1 and "1 passed, 1 error" in proc.stdout, proc.stdout[-3000:]
        assert "test_elsewhere.py::test_x uses the smoke run: move it into one of" in proc.stdout
        assert not list(tmp_path.rglob("smoke-*"))
