"""Campaigns on a local Ray (2 CPUs): cells of stand-in runs, a failing cell reported while the others
finish, --resume finishing only what is unfinished, a worker killed mid-phase retried clean, and the
campaign table equal to each cell's own artifacts."""

import json
import math
import socket
import subprocess
from pathlib import Path

import pandas as pd
import psutil
import pytest

from avalanche_nb import artifacts, campaign, cli, models, params as P, provenance
from stand_in_notebooks import write_notebooks

# phase 00 of seed 5 kills its Ray worker once, mid-phase, after writing a file into its staging folder; then
# it writes a real model.json (its numbers vary with the seed, so each row is told apart)
BODIES = {
    "00_data_and_model": (
        'import os, signal\nfrom pathlib import Path\nfrom avalanche_nb import artifacts\n'
        'flag = Path(run_dir).parent.parent / "killed-once"\n'
        'if seed == 5 and not flag.exists():\n'
        '    (out / "attempt1").write_text("")\n'
        '    flag.write_text(str(os.getpid()))  # this kernel: it must not outlive its worker\n'
        '    os.kill(os.getppid(), signal.SIGKILL)  # the Ray worker that runs this cell\n'
        '    time.sleep(120)\n'
        'artifacts.write(out, "model.json", {"name": params.for_run(run_dir).model, "source": "tiny", '
        '"weights_sha256": "", "model_type": "llama", "num_layers": 3 + seed, "hidden_size": 8, "d_ff": 16 * seed, '
        '"gated_mlp": True, "n_parameters": 1000 + seed})\n'),
}


@pytest.fixture
def campaign_notebooks(tmp_path):
    return write_notebooks(tmp_path / "nbs", BODIES)


def campaign_file(tmp_path, later_model):
    (tmp_path / "base.yaml").write_text("model: tiny-llama\nprogress: false\ntorch_threads: 1\n")
    f = tmp_path / "three.yaml"
    f.write_text(f"base: base.yaml\ngrid:\n  seed: [1, 5]\ncells:\n  - {{id: later, model: {later_model}, seed: 2}}\n"
                 "phases: '00'\ncpus_per_cell: 1\nmax_retries: 2\njobs_per_cell: 2\n")
    return f


def manifests(run_dir: Path) -> dict:
    return {p.relative_to(run_dir).as_posix(): p.stat().st_mtime_ns for p in run_dir.glob("*/manifest.json")}


def test_a_campaign_reports_a_failing_cell_finishes_the_others_and_resumes_only_it(tmp_path, campaign_notebooks,
                                                                                    capsys):
    later = tmp_path / "later-model"  # not there yet: the cell fails at its model check
    f = campaign_file(tmp_path, later)
    out = tmp_path / "campaigns"
    folder = campaign.run(f, out, notebooks=campaign_notebooks, num_cpus=2, poll=0.5)
    assert folder == out / "three"
    table = pd.read_parquet(folder / campaign.TABLE).set_index("cell")
    assert sorted(table.index) == ["later", "seed=1", "seed=5"]
    assert table.loc["later", "state"] == "failed" and table.loc["later", "failed_phase"] == "plan"
    assert "later-model" in table.loc["later", "reason"]
    assert not (folder / "runs" / "later").exists()  # refused before any folder
    for cid, seed in (("seed=1", 1), ("seed=5", 5)):
        run_dir = folder / "runs" / cid
        assert table.loc[cid, "state"] == "done"
        info = artifacts.read(run_dir, "model.json")  # the row is the cell's own artifact
        assert (table.loc[cid, "num_layers"], table.loc[cid, "d_ff"], table.loc[cid, "n_parameters"]) == (
            info["num_layers"], info["d_ff"], info["n_parameters"]) == (3 + seed, 16 * seed, 1000 + seed)
        assert table.loc[cid, "seed"] == seed and table.loc[cid, "model"] == "tiny-llama"
        assert math.isnan(table.loc[cid, "gstar"])  # phase 04 was not in this campaign
        assert sorted(p.name for p in run_dir.iterdir() if p.is_dir()) == ["00_data_and_model", "logs"]
        assert [p.name for p in run_dir.iterdir() if p.name.startswith(".") or p.name.endswith(".failed")] == []
    # seed 5's worker was killed mid-phase: Ray ran the cell again, which started phase 00 clean
    orphan = int((folder / "killed-once").read_text())  # the killed worker's kernel exited with it
    assert not psutil.pid_exists(orphan) or psutil.Process(orphan).status() == psutil.STATUS_ZOMBIE
    assert campaign.read_status(folder, "seed=5")["attempt"] == 2
    assert campaign.read_status(folder, "seed=1")["attempt"] == 1
    assert not (folder / "runs" / "seed=5" / "00_data_and_model" / "attempt1").exists()
    assert provenance.verify_phase(folder / "runs" / "seed=5" / "00_data_and_model") == []
    printed = capsys.readouterr().out
    assert "[campaign] later: failed in plan" in printed and "done 2 · failed 1" in printed.replace("queued 0 · ", "")
    # the campaign notebook ran on the two finished cells
    nb = json.loads((folder / campaign.REPORT / "campaign.ipynb").read_text())
    assert "2 of 3 cells finished" in json.dumps(nb)

    assert cli.main(["campaign", str(f), "--out", str(out), "--status"]) == 0
    status = capsys.readouterr().out
    assert "later  failed in plan" in status and "seed=1  done" in status

    with pytest.raises(provenance.RunExistsError, match="--resume"):
        campaign.run(f, out, notebooks=campaign_notebooks, num_cpus=2)
    (folder / campaign.LOCK).write_text("pid 1 on elsewhere")  # another driver runs this campaign
    with pytest.raises(provenance.RunExistsError, match="another driver"):
        campaign.run(f, out, notebooks=campaign_notebooks, num_cpus=2, resume=True)
    (folder / campaign.LOCK).unlink()
    # the fix: the model now exists; --resume runs only the failed cell and touches no finished one
    models.REGISTRY["tiny-llama"].build_config().save_pretrained(later)
    before = {cid: manifests(folder / "runs" / cid) for cid in ("seed=1", "seed=5")}
    gone = subprocess.Popen(["true"])
    gone.wait()  # a driver killed on this host left its lock: it is taken over, saying so
    (folder / campaign.LOCK).write_text(f"pid {gone.pid} on {socket.gethostname()}")
    campaign.run(f, out, notebooks=campaign_notebooks, num_cpus=2, poll=0.5, resume=True)
    printed = capsys.readouterr().out
    assert "3 cells, 1 to run" in printed and "removing the lock of a driver that is gone" in printed
    assert not (folder / campaign.LOCK).exists()
    assert {cid: manifests(folder / "runs" / cid) for cid in before} == before
    table = pd.read_parquet(folder / campaign.TABLE).set_index("cell")
    assert (table.state == "done").all() and table.loc["later", "num_layers"] == 5
    assert campaign.read_status(folder, "seed=5")["attempt"] == 2  # not run again


def test_every_cell_is_checked_before_anything_starts(tmp_path):
    (tmp_path / "base.yaml").write_text("model: tiny-llama\n")
    cases = {
        "grid:\n  sed: [0, 1]\n": "did you mean 'seed'",
        "grid:\n  seed: [0, 1]\ncells:\n  - {n_sequences: -3}\n": "cell n_sequences=-3",
        "grid:\n  seed: [0, 0]\n": "cell ids repeat",
        "grid:\n  seed: 3\n": "non-empty list",
        "grid:\n  seed: [0]\nphase: '00'\n": "did you mean 'phases'",
        "grid:\n  seed: [0]\nphases: '00,42'\n": "42",
        "base: nope.yaml\ngrid:\n  seed: [0]\n": "does not exist",
        "grid:\n  seed: [0]\n  train_steps: [10]\n  train_warmup: [20]\n": "train_warmup",
        "grid:\n  seed: [0]\nphases: '03'\n": "reads artifacts of 00_data_and_model",
        "grid:\n  seed: [0]\njobs_per_cell: 0\n": "jobs_per_cell must be an integer >= 1",
    }
    for i, (text, message) in enumerate(cases.items()):
        f = tmp_path / f"c{i}.yaml"
        f.write_text("base: base.yaml\n" * ("base:" not in text) + text)
        with pytest.raises(P.ParamsError, match=message):
            campaign.run(f, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cell_state_names_every_phase_a_cell_runs_at_once(tmp_path):
    phases = ("00_data_and_model", "04_gstar", "09_ma_in_use")
    run = tmp_path / "cell"
    assert campaign.cell_state(run, phases) == ("queued", None)
    run.mkdir()
    (run / "00_data_and_model.failed").mkdir()
    assert campaign.cell_state(run, phases) == ("failed", "00_data_and_model")
    provenance.staging_dir(run, "09_ma_in_use").mkdir()
    provenance.staging_dir(run, "04_gstar").mkdir()
    assert campaign.cell_state(run, phases) == ("running", "04_gstar, 09_ma_in_use")  # still running: not failed yet


def test_cells_are_the_grid_then_the_extra_cells_with_readable_ids(tmp_path):
    (tmp_path / "base.yaml").write_text("model: tiny-llama\nseed: 3\n")
    f = tmp_path / "c.yaml"
    f.write_text("base: base.yaml\ngrid:\n  model: [tiny-llama, /x/y/my-model]\n  seed: [0, 1]\n"
                 "cells:\n  - {n_sequences: 8}\n  - {id: long, window: 256}\n")
    c = campaign.load(f)
    assert [x.cell_id for x in c.cells] == ["model=tiny-llama,seed=0", "model=tiny-llama,seed=1",
                                            "model=my-model,seed=0", "model=my-model,seed=1", "n_sequences=8", "long"]
    assert c.cells[4].params["seed"] == 3 and c.cells[4].params["n_sequences"] == 8  # the base, then the overrides
    assert c.cells[5].params["window"] == 256 and c.campaign_id == "c" and len(c.phases) == 10
    long_id = campaign.cell_id({"model": "a" * 100})
    assert len(long_id) == 80 and long_id != campaign.cell_id({"model": "a" * 101})


@pytest.mark.parametrize("row, expected", [
    (dict(p_value=float("nan"), lr_lognormal=1.0, p_lognormal=0.01, lr_exponential=1.0, p_exponential=0.01), "untested"),
    (dict(p_value=0.5, lr_lognormal=0.3, p_lognormal=0.7, lr_exponential=2.0, p_exponential=0.01), "power_law"),
    (dict(p_value=0.1, lr_lognormal=0.3, p_lognormal=0.7, lr_exponential=2.0, p_exponential=0.01), "rejected"),
    (dict(p_value=0.5, lr_lognormal=-3.0, p_lognormal=0.02, lr_exponential=2.0, p_exponential=0.01), "lognormal"),
    (dict(p_value=0.01, lr_lognormal=-0.5, p_lognormal=0.6, lr_exponential=-4.0, p_exponential=0.001), "exponential"),
    (dict(p_value=0.01, lr_lognormal=-0.5, p_lognormal=0.6, lr_exponential=3.0, p_exponential=0.001), "rejected"),
])
def test_fit_class_follows_clauset_et_al(row, expected):
    assert campaign.fit_class(row) == expected


def test_findings_say_what_repeats_and_what_does_not():
    table = pd.DataFrame([
        dict(cell="a", state="done", failed_phase=None, reason=None, model="m1", me_layer=3.0, gstar=0.8,
             gstar_rule="chi_perc_max", gstar_outcome="interior", z_tot_n1_g1=5.0),
        dict(cell="b", state="done", failed_phase=None, reason=None, model="m1", me_layer=3.0, gstar=1.2,
             gstar_rule="chi_perc_max", gstar_outcome="edge", z_tot_n1_g1=1.0),
        dict(cell="c", state="done", failed_phase=None, reason=None, model="m2", me_layer=1.0, gstar=0.9,
             gstar_rule="chi_perc_max", gstar_outcome="interior", z_tot_n1_g1=3.0),
        dict(cell="d", state="done", failed_phase=None, reason=None, model="m2", me_layer=2.0, gstar=0.9,
             gstar_rule="chi_perc_max", gstar_outcome="interior", z_tot_n1_g1=float("nan")),
        dict(cell="e", state="failed", failed_phase="03_gain_sweep", reason="boom", model="m2"),
    ])
    text = campaign.findings(table)
    assert "* 4 of 5 cells finished" in text and "cell e failed in 03_gain_sweep: boom" in text
    assert "m1: the ME layer is 3 in all 2 cells" in text and "m2: the ME layer varies across its 2 cells (1, 2)" in text
    assert "m1: g* (chi_perc_max) = 0.8, 1.2 over 2 cells; 1 of them at the search edge" in text
    assert "m2: g* (chi_perc_max) = 0.9, 0.9 over 2 cells, each an interior optimum" in text
    assert "z > 2 at g = 1 in 2 of 3 cells" in text


@pytest.mark.parametrize("jobs", [1, 2])  # one phase at a time, and phases side by side
def test_ctrl_c_stops_the_campaign_and_keeps_finished_cells(tmp_path, jobs):
    import signal
    import subprocess
    import sys
    import time

    nbs = write_notebooks(tmp_path / "nbs", {"00_data_and_model": (
        'if seed == 17:  # a hang: the marker tells the test the cell is running\n'
        '    (out / "sleeping").write_text("")\n    time.sleep(120)\n')})
    (tmp_path / "base.yaml").write_text("model: tiny-llama\nprogress: false\ntorch_threads: 1\n")
    f = tmp_path / "hang.yaml"
    f.write_text(f"base: base.yaml\ngrid:\n  seed: [1, 17]\nphases: '00,01'\ncpus_per_cell: 1\njobs_per_cell: {jobs}\n")
    out = tmp_path / "campaigns"
    code = ("import sys\nfrom avalanche_nb import campaign\ntry:\n"
            "    campaign.run(sys.argv[2], sys.argv[3], notebooks=sys.argv[1], num_cpus=2, poll=0.5)\n"
            "except campaign.CampaignInterrupted as err:  # what `avalanche-nb campaign` does with it\n"
            "    print(err, file=sys.stderr)\n    sys.exit(130)\n")
    # SIGINT at its default in the child even when pytest itself runs as a background job (SIG_IGN)
    proc = subprocess.Popen([sys.executable, "-c", code, str(nbs), str(f), str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    folder = out / "hang"
    marker = folder / "runs" / "seed=17" / ".00_data_and_model.partial" / "sleeping"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (marker.exists() and campaign.read_status(folder, "seed=1").get("state") == "done"):
        time.sleep(0.5)
    assert marker.exists(), proc.communicate(timeout=60)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted; finished cells are intact" in stderr and "--resume" in stderr
    assert campaign.read_status(folder, "seed=1")["state"] == "done"
    assert provenance.verify_phase(folder / "runs" / "seed=1" / "00_data_and_model") == []
    hung = campaign.read_status(folder, "seed=17")
    assert hung["state"] == "interrupted"
    # the cell's runner stopped its kernel itself (not the campaign's kill after its grace time)
    assert hung["reason"].startswith("interrupted during phase 00_data_and_model"), hung
    assert not (folder / "runs" / "seed=17" / "00_data_and_model").exists()


@pytest.mark.parametrize("name", ["campaign.yaml", "campaign-smoke.yaml", "campaign-gpu.yaml"])
def test_the_shipped_campaign_files_load(name):
    c = campaign.load(Path(__file__).resolve().parent.parent / "params" / name)
    assert len(c.cells) >= 4 and all(cell.params["replication_models"] == [cell.params["model"]] for cell in c.cells)
    gpus = {campaign._resources(c, cell)["num_gpus"] for cell in c.cells}
    assert gpus == ({1} if name == "campaign-gpu.yaml" else {0})  # a CPU cell never holds a GPU


def test_a_cuda_cell_reserves_a_gpu_by_default(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("cells:\n  - {id: cpu, model: tiny-llama}\n  - {id: gpu, model: tiny-llama, device: 'cuda:0'}\n"
                 "  - {id: split, model: tiny-llama, device_map: auto}\n")
    c = campaign.load(f)
    assert [campaign._resources(c, cell)["num_gpus"] for cell in c.cells] == [0, 1, 1]


def test_a_local_ray_start_that_times_out_is_tried_again(monkeypatch, capsys):
    import ray

    calls = []

    def init(**kwargs):
        calls.append(kwargs["address"])
        if len(calls) < campaign.RAY_START_TRIES:
            raise Exception("The current node timed out during startup. This could happen because ...")

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    campaign._start_ray(None, 2)
    assert calls == ["local"] * campaign.RAY_START_TRIES
    assert "trying again" in capsys.readouterr().out
    calls.clear()  # a cluster's address is never retried, nor any other error
    with pytest.raises(Exception, match="timed out during startup"):
        campaign._start_ray("ray://head:10001", None)
    assert calls == ["ray://head:10001"]
    monkeypatch.setattr(ray, "init", lambda **kw: (_ for _ in ()).throw(RuntimeError("no such address")))
    with pytest.raises(RuntimeError, match="no such address"):
        campaign._start_ray(None, 2)
