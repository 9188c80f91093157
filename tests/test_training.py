"""Training dynamics: schedule, determinism, the recorder against a manual computation, the memory check."""

import numpy as np
import pytest
import torch

from avalanche_nb import hooks, training
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


def train_params(**kw):
    from avalanche_nb import params as P

    return P.validate({"train_steps": 12, "train_batch_size": 4, "train_lr": 1e-2, "train_warmup": 3,
                       "train_checkpoint_every": 4, "progress": False} | kw)


def test_parse_spec_and_schedule():
    a = training.parse_spec("4x256x4x4")
    assert (a.layers, a.width, a.heads, a.mlp_ratio, a.name) == (4, 256, 4, 4.0, "4x256x4x4")
    for bad in ("4x256x4", "4x250x4x4", "0x64x2x4"):
        with pytest.raises(ValueError):
            training.parse_spec(bad)
    with pytest.raises(P.ParamsError, match="train_architectures"):
        P.validate({"train_architectures": ["4x256"]})
    assert training.checkpoint_steps(300, 50) == [0, 1, 2, 4, 8, 16, 32, 50, 100, 150, 200, 250, 300]
    assert training.checkpoint_steps(10, 50) == [0, 1, 2, 4, 8, 10]


def test_training_is_deterministic_for_a_seed():
    arch = training.parse_spec("2x16x2x2")
    pattern = np.tile(np.arange(3, 15), (40, 1))  # learnable: the loss must fall
    runs = [training.train(arch, pattern, [0], Tok(), lambda m, s: None, train_params(seed=5))
            for _ in range(2)]
    assert runs[0] == runs[1] and runs[0][0] > runs[0][-1]
    other = training.train(arch, pattern, [0], Tok(), lambda m, s: None, train_params(seed=6))
    assert other != runs[0]


def test_recorder_equals_a_manual_computation():
    arch = training.parse_spec("2x16x2x2")
    probe = windows(5, seed=1)
    seen = {}

    def at_checkpoint(model, step):
        seen[step] = training.record(model, probe, step, arch.name, batch_size=16)
        hs = {}
        keep = hooks.Hook("resid.out", lambda l, h: hs.__setitem__(l, h.abs().double().numpy().reshape(5, -1)))
        with hooks.attach(model, keep):
            model.base_model(input_ids=torch.as_tensor(probe))
        seen[f"manual{step}"] = hs

    training.train(arch, windows(), [0, 4], Tok(), at_checkpoint, train_params(train_steps=4, train_warmup=1,
                                                                                 train_lr=1e-3, train_checkpoint_every=4))
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
    arch = training.parse_spec("96x8192x64x4")
    with pytest.raises(MemoryError, match="96x8192x64x4"):
        training.check_memory([arch], 49152, 64, 2048, "cpu")
