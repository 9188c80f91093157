"""The command line: errors exit non-zero before any work, the light commands import no torch, a
closed pipe ends quietly, and removing a run needs confirmation."""

import subprocess
import sys
from pathlib import Path

from avalanche_nb import cli, runner
from stand_in_notebooks import params_file

ROOT = Path(__file__).resolve().parent.parent


def test_cli_errors_exit_nonzero_before_any_work(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("n_sequencs: 3\n")
    assert cli.main(["run", "--params", str(bad), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "unknown params key 'n_sequencs'" in err and "n_sequences" in err
    assert not (tmp_path / "runs").exists()
    assert cli.main(["run", "--params", str(params_file(tmp_path, 0)), "--phases", "99",
                     "--out", str(tmp_path / "runs")]) == 2
    assert "unknown phase '99'" in capsys.readouterr().err


def test_list_verify_params_import_no_torch(tmp_path):
    code = ("import sys; from avalanche_nb import cli; "
            f"cli.main(['list', '--out', {str(tmp_path)!r}]); cli.main(['params']); cli.main(['artifacts']); "
            f"cli.main(['verify', {str(tmp_path)!r}]); "
            "heavy = [m for m in ('torch', 'transformers', 'pandas') if m in sys.modules]; "
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_params_piped_into_head_exits_cleanly():
    proc = subprocess.run(f"{sys.executable} -m avalanche_nb.cli params | head -3", shell=True, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.count("\n") == 3
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_remove_needs_confirmation_and_only_deletes_runs(tmp_path, notebooks):
    run_dir = runner.run(params_file(tmp_path, 1), phases="00", out=tmp_path / "runs", run_id="r", notebooks=notebooks)
    assert cli.main(["remove", str(run_dir)]) == 2 and run_dir.exists()
    assert cli.main(["remove", str(run_dir), "--yes"]) == 0 and not run_dir.exists()
    assert cli.main(["remove", str(tmp_path), "--yes"]) == 2 and tmp_path.exists()  # not a run folder
