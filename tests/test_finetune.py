"""The LoRA fine-tune: it lowers a tiny model's training loss, is seeded, never touches the model it copies,
trains under an attached edit, and stops on bad inputs and on memory it cannot have."""

import numpy as np
import pytest
import torch

from avalanche_nb import finetune, hooks
from avalanche_nb import interventions as iv
from tiny_models import load

SIZES = dict(steps=40, batch_size=4, lr=3e-2, rank=4, seed=0, progress=False)


def pattern_windows(n=16, T=12):
    """A learnable stream: each window counts up from a random start (mod 50, ids 3-52)."""
    starts = np.random.default_rng(0).integers(0, 50, n)
    return (3 + (starts[:, None] + np.arange(T)[None]) % 50).astype(np.int64)


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def loss(model, windows):
    ids = torch.as_tensor(windows)
    with torch.no_grad():
        return float(model(input_ids=ids, labels=ids).loss)


def test_finetune_lowers_the_training_loss_and_leaves_the_original_untouched():
    model = load("tiny-llama").model
    before = state(model)
    w = pattern_windows()
    tuned, losses = finetune.lora_finetune(model, w, **SIZES)
    assert losses.shape == (40,) and np.isfinite(losses).all()
    assert losses[-5:].mean() < losses[:5].mean()
    assert loss(tuned, w) < loss(model, w) - 0.1  # the whole training set, before and after
    after = state(model)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    # the adapters were merged into the copy's attention projections; its MLPs are the original ones
    t = state(tuned)
    assert t.keys() == before.keys()  # no LoRA modules left
    assert not torch.equal(t["model.layers.0.self_attn.q_proj.weight"], before["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(t["model.layers.0.mlp.down_proj.weight"], before["model.layers.0.mlp.down_proj.weight"])
    assert not tuned.training and not any(p.requires_grad for p in tuned.parameters())


def test_finetune_is_seeded_and_an_attached_edit_changes_it_and_is_removed():
    model = load("tiny-llama").model
    w = pattern_windows()
    _, a = finetune.lora_finetune(model, w, **SIZES)
    _, b = finetune.lora_finetune(model, w, **SIZES)
    np.testing.assert_array_equal(a, b)
    edit = lambda m: iv.rigidity_reduction(m, 1, [0], 0.0, 0.25)
    tuned, c = finetune.lora_finetune(model, w, **SIZES, edit=edit)
    assert not np.allclose(a, c)
    assert hooks.hook_count(model) == 0 and hooks.hook_count(tuned) == 0


def test_finetune_bad_inputs_and_memory_are_named():
    model = load("tiny-llama").model
    with pytest.raises(ValueError, match="steps"):
        finetune.lora_finetune(model, pattern_windows(), **{**SIZES, "steps": 0})
    with pytest.raises(ValueError, match="windows"):
        finetune.lora_finetune(model, np.arange(10), **SIZES)
    with pytest.raises(MemoryError, match="GiB"):
        finetune.check_memory(model, "cpu", batch_size=10**6, window=10**4, rank=8)
    finetune.check_memory(model, "cpu", batch_size=4, window=12, rank=4)  # fits
    small = finetune.memory_needed(model, batch_size=2, window=16, rank=4)
    assert finetune.memory_needed(model, batch_size=4, window=16, rank=4) > small > 0


def test_text_windows_take_the_last_tokens_of_long_enough_texts():
    tok = load("smollm2-135m-instruct").tokenizer
    texts = ["one two three four five six seven eight nine ten", "too short", "a b c d e f g h i j k l"]
    w = finetune.text_windows(tok, texts, 4, 6, seed=0)
    assert w.shape == (4, 6)
    ends = {tuple(tok(t, add_special_tokens=False)["input_ids"][-6:]) for t in (texts[0], texts[2])}
    assert {tuple(r) for r in w} == ends  # the short text is skipped, the two others cycle
    with pytest.raises(ValueError, match="window"):
        finetune.text_windows(tok, ["short"], 2, 50, seed=0)
