"""Training dynamics: schedule, determinism, the recorder against a manual computation, fits over
trajectories, architecture predictors."""

import numpy as np
import pandas as pd
import pytest
import torch

from avalanche_nb import emergence as em
from avalanche_nb import hooks, predictors, training
from avalanche_nb import params as P


class Tok:
    """Just what the trainer reads from a tokenizer."""

    bos_token_id, eos_token_id = 1, 2

    def __len__(self):
        return 128


def windows(n=40, T=12, seed=0):
    w = np.random.default_rng(seed).integers(3, 128, (n, T))
    w[:, 0] = 1
    return w


def test_parse_architecture_and_schedule():
    a = training.parse_architecture("4x256x4x4")
    assert (a.layers, a.width, a.heads, a.mlp_ratio, a.name) == (4, 256, 4, 4.0, "4x256x4x4")
    for bad in ("4x256x4", "4x250x4x4", "0x64x2x4"):
        with pytest.raises(ValueError):
            training.parse_architecture(bad)
    with pytest.raises(P.ParamsError, match="train_architectures"):
        P.validate({"train_architectures": ["4x256"]})
    assert training.checkpoint_steps(300, 50) == [0, 1, 2, 4, 8, 16, 32, 50, 100, 150, 200, 250, 300]
    assert training.checkpoint_steps(10, 50) == [0, 1, 2, 4, 8, 10]


def test_training_is_deterministic_for_a_seed():
    arch = training.parse_architecture("2x16x2x2")
    pattern = np.tile(np.arange(3, 15), (40, 1))  # learnable: the loss must fall
    runs = [training.train(arch, pattern, 12, [0], Tok(), lambda m, s: None, batch_size=4, lr=1e-2, warmup=3, seed=5)
            for _ in range(2)]
    assert runs[0] == runs[1] and runs[0][0] > runs[0][-1]
    other = training.train(arch, pattern, 12, [0], Tok(), lambda m, s: None, batch_size=4, lr=1e-2, warmup=3, seed=6)
    assert other != runs[0]


def test_recorder_equals_a_manual_computation():
    arch = training.parse_architecture("2x16x2x2")
    probe = windows(5, seed=1)
    seen = {}

    def at_checkpoint(model, step):
        seen[step] = training.record(model, probe, step, arch.name)
        hs = {}
        with hooks.residual_tap(model, lambda l, h: hs.__setitem__(l, h.abs().double().numpy().reshape(5, -1))):
            model.base_model(input_ids=torch.as_tensor(probe))
        seen[f"manual{step}"] = hs

    training.train(arch, windows(), 4, [0, 4], Tok(), at_checkpoint, batch_size=4, warmup=1)
    for step in (0, 4):
        rec = seen[step].set_index(["layer", "stat"])
        for layer, a in seen[f"manual{step}"].items():
            srt = -np.sort(-a, axis=1)
            ratio = srt[:, 0] / np.median(a, axis=1)
            m, sem = ratio.mean(), ratio.std(ddof=1) / np.sqrt(5)
            assert rec.loc[(layer, "ratio"), "mean"] == pytest.approx(m, rel=1e-5)
            assert rec.loc[(layer, "ratio"), "sem_pct"] == pytest.approx(100 * sem / m, rel=1e-4)
            assert rec.loc[(layer, "ratio"), "cv_pct"] == pytest.approx(100 * ratio.std(ddof=1) / m, rel=1e-4)
            assert rec.loc[(layer, "top3"), "mean"] == pytest.approx(srt[:, 2].mean(), rel=1e-5)
            assert rec.loc[(layer, "ratio"), "ci_lo"] == pytest.approx(m - 2.776445 * sem, rel=1e-4)


def test_too_big_a_grid_is_refused_before_training():
    arch = training.parse_architecture("96x8192x64x4")
    with pytest.raises(MemoryError, match="96x8192x64x4"):
        training.check_memory([arch], 49152, 64, 2048, "cpu")


def test_fit_trajectories_marks_failures_and_reproduces_r2():
    t = np.array([0, 1, 2, 4, 8, 16, 32, 64, 100, 150, 200, 250, 300], float)
    good = em.original(t, 20.0, 0.5, 0.02, 1.0, 5.0) + np.random.default_rng(0).normal(0, 0.05, t.size)
    traj = pd.concat([
        pd.DataFrame({"model": "m", "layer": 0, "step": t, "ratio": good}),
        pd.DataFrame({"model": "m", "layer": 1, "step": t, "ratio": 7.0}),
        pd.DataFrame({"model": "m", "layer": 2, "step": t[:4], "ratio": [1.0, 2.0, 3.0, 4.0]})])
    fits = em.fit_trajectories(traj)
    ma5 = fits[fits.fit == "ma5"].set_index("layer")
    assert ma5.loc[0, "ok"] and ma5.loc[0, "r2"] > 0.99
    assert not ma5.loc[1, "ok"] and "constant" in ma5.loc[1, "reason"]
    assert not ma5.loc[2, "ok"] and "need more than 5" in ma5.loc[2, "reason"]
    assert fits.groupby("layer").chosen.sum().to_dict() == {0: 1, 1: 0, 2: 1}  # layer 2: a 2-3 parameter step still fits
    assert em.fit(t, good, "ma5").r2 == pytest.approx(ma5.loc[0, "r2"], rel=1e-12)
    with pytest.raises(ValueError, match="lack the column"):
        em.fit_trajectories(traj.drop(columns="ratio"))


def test_predictors_say_when_rows_are_too_few_and_find_a_planted_relation():
    rng = np.random.default_rng(0)
    n = 40
    rows = pd.DataFrame({"layer": rng.integers(0, 8, n), "layers": 8, "width": rng.choice([64, 128, 256], n),
                         "heads": 4, "mlp_ratio": 4.0})
    rows["p_K"] = 3.0 * np.log(rows.width) + rng.normal(0, 0.05, n)
    few = predictors.predict(rows.head(4), ["p_K"])
    assert not few.conclusive.any() and "too few" in few.note.iloc[0]
    # every fit failed (a trajectory too short for ma5): no parameter column at all, still an answer
    none = predictors.predict(rows.drop(columns="p_K").head(0), ["p_K", "p_lambda"])
    assert none.n_rows.tolist() == [0, 0] and not none.conclusive.any()
    res = predictors.predict(rows, ["p_K"]).set_index("regressor")
    assert res.loc["ridge", "cv_r2"] > 0.95
    imp = res.loc["ridge", [f"imp_{f}" for f in predictors.FEATURES]]
    assert imp.idxmax() in ("imp_log_hidden", "imp_width_per_depth", "imp_heads_per_hidden")
