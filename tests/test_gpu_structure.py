"""The GPU path proven on CPU: every phase on params that keep every structural choice of
``params/gpu.yaml`` (its four target rates, 200 null draws, all six ablations, both replication
models, the rigidity grid of alphas x mask rates, three trained architectures of growing depth) and
shrink only sizes, step counts, the gain count, the math tasks and the number of rigidity control layers (gpu.yaml's
"every other layer" is a count: ``ma_experiments.control_layers`` is unit-tested with it).

What broke only at the GPU's shapes was the null draws' chunking (phase 04 stopped on "z_tot_n1
recomputed ... differs"). At these sizes a lattice would hold the 200 draws in one chunk, so the
chunk budget is lowered through ``$AVALANCHE_NB_NULL_CHUNK_MB`` until they split into several chunks:
the code path of the GPU's shape, at a size CI can afford.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from avalanche_nb import figure_export, nulls, phases, runner
from avalanche_nb import params as P

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

#: sizes only: slices, windows, batch sizes, steps, draws the issue allows to reduce, the gain count
SIZES = {
    "device": "cpu", "torch_threads": 2, "batch_size": 4, "window": 16, "n_sequences": 2, "n_calibration": 2,
    "n_sequences_b": 2, "gains": [1.0, 1.1], "gstar_limits": [0.9, 1.2], "rigidity_controls": 1, "gof_draws": 5, "bootstrap_draws": 20,
    "arc_grid_limit": 2, "arc_full": False, "score_batch_size": 8, "ma_probe_sequences": 2,
    "ma_calibration_sequences": 2, "rigidity_arc_limit": 1, "train_architectures": ["4x16x4x4", "8x16x4x4", "12x24x12x4"],
    "train_steps": 8, "train_checkpoint_every": 4, "train_batch_size": 2, "train_window": 16, "train_warmup": 2,
    "train_tokens": 5000, "train_probe_sequences": 2, "gen_prompts": 2, "gen_prompt_tokens": 8, "gen_tokens": 4,
    "probe_windows": 12, "probe_window": 8, "probe_max_tokens": 40, "probe_folds": 2, "progress": False,
    # one document of one bpb task (the fine-tuning text) and one multiple-choice task; no math control layer
    # (the fine-tune then edits the nearest control all the same)
    "math_tasks": ["gsm8k/gold_bpb_5shot", "basic_skills_arithmetic/rc_5shot"], "math_limit": 1, "math_controls": 0,
    "finetune_steps": 2, "finetune_batch_size": 2, "finetune_window": 16,
}
CHUNK_MB = 0.3  # 2 x 16 x 30 sites x 16 B per site and draw: 20 draws per chunk, 200 draws in 10 chunks


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    gpu = yaml.safe_load((ROOT / "params" / "gpu.yaml").read_text())
    params = gpu | SIZES
    path = tmp_path_factory.mktemp("gpu") / "gpu_structure.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(nulls.CHUNK_ENV, str(CHUNK_MB))  # inherited by the papermill kernels
        mp.setenv(figure_export.IMAGES_ENV, "0")  # CSV only: the smoke run checks the images
        return runner.run(path, out=tmp_path_factory.mktemp("runs"), run_id="gpu-structure"), P.load(path)


def test_the_structure_is_gpu_yamls(gpu_run):
    _, p = gpu_run
    gpu = P.load(ROOT / "params" / "gpu.yaml")
    for key in ("target_rates", "null_draws", "ablations", "replication_models", "rigidity_alphas",
                "rigidity_mask_rates", "adjacencies", "gstar_rule", "ma_interventions"):
        assert p[key] == gpu[key], key
    assert len(p["target_rates"]) == 4 and p["null_draws"] == 200 and len(p["ablations"]) == 6


def test_the_null_draws_split_into_several_chunks(gpu_run):
    run_dir, p = gpu_run
    z = np.load(run_dir / "03_gain_sweep" / "sweep_lattices.npz")
    sites = int(np.prod(z["counts_pos"].shape[1:]))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(nulls.CHUNK_ENV, str(CHUNK_MB))
        assert nulls._chunk_size(p["null_draws"], sites, None) < p["null_draws"] // 2


def test_every_phase_finishes_and_gstar_is_written(gpu_run):
    run_dir, p = gpu_run
    assert runner.verify(run_dir) == []
    assert all((run_dir / phase).is_dir() for phase in phases.names())
    gs = json.loads((run_dir / "04_gstar" / "gstar.json").read_text())
    assert set(gs["at_edge"]) == set(gs["picks"]) and gs["outcome"] in ("interior", "limit")
    assert p["gstar_limits"][0] - 1e-9 <= gs["gstar"] <= p["gstar_limits"][1] + 1e-9
    sweep = pd.read_parquet(run_dir / "03_gain_sweep" / "sweep.parquet")
    assert sweep.target_rate.nunique() == 4 and set(sweep.ablation) == set(p["ablations"])
    rep = json.loads((run_dir / "05_replication" / "replication.json").read_text())
    assert rep["failures"] == {} and set(rep["models"]) == set(p["replication_models"])
    me = json.loads((run_dir / "06_massive" / "me_layer.json").read_text())
    assert me["failures"] == {}
    losses = pd.read_parquet(run_dir / "07_training_dynamics" / "losses.parquet")
    assert losses.model.nunique() == 3
    cascades = json.loads((run_dir / "08_cascades_and_mas" / "cascades.json").read_text())
    assert cascades["failures"] == {} and set(cascades["models"]) | set(cascades["skipped"]) == set(p["replication_models"])
    use = json.loads((run_dir / "09_ma_in_use" / "ma_use.json").read_text())
    assert use["failures"] == {} and set(use["models"]) | set(use["skipped"]) == set(p["replication_models"])
