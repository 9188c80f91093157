"""Generation under MA edits: the cached loop against full recomputation, seeded sampling repeatable bit
for bit, continuation metrics on fixed token strings, the paired test."""

import numpy as np
import pytest
import torch
from scipy import stats as st

from avalanche_nb import generation as gen
from avalanche_nb import interventions as iv
from avalanche_nb import scoring
from tiny_models import PLANT_DIM, PLANT_LAYER, load, planted_llama, tokens


def naive_greedy(model, prompts, n):
    """Greedy decoding by recomputing the whole sequence at every step (no cache)."""
    seq = torch.as_tensor(prompts)
    for _ in range(n):
        with torch.no_grad():
            nxt = model(input_ids=seq, use_cache=False).logits[:, -1].argmax(-1)
        seq = torch.cat([seq, nxt[:, None]], 1)
    return seq[:, prompts.shape[1]:].numpy()


def test_greedy_with_cache_equals_recomputation():
    model = load("tiny-llama").model
    prompts = tokens(3, T=6, seed=1)
    np.testing.assert_array_equal(gen.generate(model, prompts, 8, sample=False, seed=0), naive_greedy(model, prompts, 8))


def test_an_edit_of_the_ma_token_acts_as_in_full_recomputation():
    # the edit acts on the cache-free first pass (the MA token's keys and values), and full recomputation
    # applies it at every step: the same tokens either way, and other tokens than without the edit
    model = planted_llama()
    prompts = tokens(3, T=6, seed=2)
    sites = dict(layers=[PLANT_LAYER, PLANT_LAYER + 1], positions=[0], dims=[PLANT_DIM], mode="zero", ma_clip_multiple=10.0)
    with iv.edit_sites(model, **sites):
        cached = gen.generate(model, prompts, 8, sample=False, seed=0)
        full = naive_greedy(model, prompts, 8)
    np.testing.assert_array_equal(cached, full)


def test_seeded_sampling_is_repeatable_bit_for_bit():
    model = load("tiny-llama").model
    prompts = tokens(4, T=5, seed=3)
    a = gen.generate(model, prompts, 12, sample=True, seed=7)
    b = gen.generate(model, prompts, 12, sample=True, seed=7)
    c = gen.generate(model, prompts, 12, sample=True, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(ValueError, match="temperature"):
        gen.generate(model, prompts, 2, sample=True, seed=0, temperature=0.0)
    with pytest.raises(ValueError, match="n_tokens"):
        gen.generate(model, prompts, 0, sample=False, seed=0)


def test_continuation_metrics_on_fixed_strings():
    assert gen.distinct_n([1, 2, 1, 2, 3], 1) == 3 / 5
    assert gen.distinct_n([1, 2, 1, 2, 3], 2) == 3 / 4  # (1,2) twice, (2,1), (2,3)
    assert np.isnan(gen.distinct_n([4], 2))
    assert gen.longest_repeat([1, 2, 3, 1, 2, 3, 4]) == 3
    assert gen.longest_repeat([5, 5, 5]) == 2  # "5 5" at 0 and 1 (overlapping)
    assert gen.longest_repeat([1, 2, 3]) == 0
    assert gen.cut_at_eos([4, 5, 0, 6], 0) == ([4, 5], True)
    assert gen.cut_at_eos([4, 5, 6], 0) == ([4, 5, 6], False)
    text = {1: " the", 2: " cat", 3: ".", 4: " sat!", 0: "</s>"}
    m = gen.continuation_metrics([1, 2, 3, 1, 4, 0, 3, 3], text.get, eos_id=0)
    assert m == {"distinct1": 4 / 5, "distinct2": 1.0, "longest_repeat": 1.0, "sentence_end_rate": 2 / 5, "eos": 1.0,
                 "length": 5.0}


def test_continuation_nll_scores_only_the_continuation():
    model = load("tiny-llama").model
    prompts, cont = tokens(2, T=5, seed=4), tokens(2, T=4, seed=5)
    nll = gen.continuation_nll(model, prompts, cont, score_batch_size=2)
    full = torch.as_tensor(np.concatenate([prompts, cont], 1))
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=full).logits.double(), -1)
    by_hand = -logp[:, 4:-1].gather(-1, full[:, 5:, None])[..., 0].numpy()  # positions 4..7 predict 5..8
    np.testing.assert_allclose(nll, by_hand, rtol=1e-5)
    assert nll.shape == (2, 4)
    np.testing.assert_allclose(nll, scoring.window_nll(model, full.numpy(), 2)[:, 4:])


def test_paired_difference():
    r = gen.paired_difference(np.array([2.0, 3.0, 5.0, np.nan]), np.array([1.0, 1.0, 2.0, 1.0]), bootstrap_draws=200, seed=0)
    assert r["diff"] == 2.0 and r["n"] == 3 and r["lo"] <= 2.0 <= r["hi"]
    assert r["p"] == pytest.approx(st.wilcoxon([1.0, 2.0, 3.0]).pvalue)
    same = gen.paired_difference(np.ones(4), np.ones(4), bootstrap_draws=10, seed=0)
    assert same["diff"] == 0 and same["p"] == 1.0
