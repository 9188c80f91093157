"""Log-likelihood scoring: continuations, ARC choice, perplexity, against direct recomputation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avalanche_nb import data, hooks, scoring
from tiny_models import load

TINY = ["tiny-llama", "tiny-qwen2", "tiny-gemma3", "tiny-gpt-neox", "tiny-gpt2"]


def naive_loglik(model, context, continuation):
    """One unpadded full forward with the model's own LM head (logits as HF returns them)."""
    ids = torch.tensor([list(context) + list(continuation)])
    with torch.no_grad():
        lp = torch.log_softmax(model(ids).logits.float(), -1)[0]
    n = len(context)
    return sum(float(lp[n - 1 + k, t]) for k, t in enumerate(continuation))


def random_prompts(rng, n=9, vocab=100):
    def seq(lo, hi):
        return tuple(int(x) for x in rng.integers(3, vocab, rng.integers(lo, hi)))
    return [scoring.Prompt(seq(1, 9), tuple(seq(1, 5) for _ in range(rng.integers(2, 6)))) for _ in range(n)]


@pytest.mark.parametrize("name", TINY)
def test_batched_shared_context_scoring_equals_one_at_a_time(name):
    model = load(name).model
    prompts = random_prompts(np.random.default_rng(1))
    got = scoring.continuation_loglik(model, prompts, score_batch_size=4, progress=False)
    want = [naive_loglik(model, p.context, c) for p in prompts for c in p.continuations]
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_scoring_applies_gemmas_final_logit_softcap():
    model = load("tiny-gemma3").model
    model.config.final_logit_softcapping = 0.5  # tiny logits: a small cap makes it matter
    prompts = random_prompts(np.random.default_rng(2), n=4)
    got = scoring.continuation_loglik(model, prompts, score_batch_size=3, progress=False)
    want = [naive_loglik(model, p.context, c) for p in prompts for c in p.continuations]
    np.testing.assert_allclose(got, want, atol=1e-4)
    model.config.final_logit_softcapping = None
    assert not np.allclose(scoring.continuation_loglik(model, prompts, score_batch_size=8, progress=False), got, atol=1e-3)


def test_scoring_under_a_gain_equals_the_hooked_model():
    model = load("tiny-llama").model
    prompts = random_prompts(np.random.default_rng(3), n=4)
    got = scoring.continuation_loglik(model, prompts, g=1.7, score_batch_size=8, progress=False)
    with hooks.gain(model, 1.7):
        want = [naive_loglik(model, p.context, c) for p in prompts for c in p.continuations]
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert hooks.hook_count(model) == 0


def test_choose_picks_by_sum_and_by_character():
    # sums -4 and -6: acc picks choice 0; per character -4/2 = -2 < -6/6 = -1: acc_norm picks choice 1
    assert scoring.choose([-4.0, -6.0], [2, 6]) == (0, 1)
    assert scoring.choose([-3.0, -3.0, -9.0], [3, 3, 1]) == (0, 0)  # ties go to the first choice
    with pytest.raises(ValueError):
        scoring.choose([-1.0], [1])


def test_perplexity_is_exp_mean_token_nll_by_hand():
    model = load("tiny-llama").model
    tokens = np.random.default_rng(0).integers(3, 128, (3, 12))
    nll = scoring.window_nll(model, tokens, score_batch_size=2)
    with torch.no_grad():
        logits = model(torch.tensor(tokens)).logits[:, :-1]
    by_hand = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.tensor(tokens)[:, 1:].reshape(-1),
                              reduction="none").reshape(3, 11).double().numpy()
    np.testing.assert_allclose(nll, by_hand, atol=1e-5)
    assert scoring.perplexity(nll) == pytest.approx(float(np.exp(by_hand.mean())), rel=1e-6)
    with pytest.raises(ValueError):
        scoring.perplexity(np.zeros(0))


def test_arc_questions_with_three_or_five_choices_are_scored(smol_tokenizer, wide_tiny_llama):
    arc = data.load_arc(data.ARC_SUBSETS, seed=0)
    odd = [q for q in arc if len(q.choices) == 3][:2] + [q for q in arc if len(q.choices) == 5][:2] + arc[:2]
    df = scoring.score_arc(wide_tiny_llama, smol_tokenizer, odd, score_batch_size=4, progress=False)
    assert len(df) == len(odd) and df.n_choices.tolist() == [len(q.choices) for q in odd]
    prompts, chars = scoring.arc_prompts(smol_tokenizer, odd)
    assert len(chars) == sum(len(q.choices) for q in odd)
    for q, p, row in zip(odd, prompts, df.itertuples()):
        assert smol_tokenizer.decode(list(p.context)).endswith(scoring.ARC_PROMPT.format(question=q.question))
        assert [smol_tokenizer.decode(list(c)) for c in p.continuations] == [" " + c for c in q.choices]
        want = [naive_loglik(wide_tiny_llama, p.context, c) for c in p.continuations]
        np.testing.assert_allclose(row.loglik, want, atol=1e-4)
        assert row.pred == int(np.argmax(want)) and row.correct == (row.pred == q.answer)
        norm = np.asarray(want) / np.array([len(c) for c in q.choices])
        assert row.pred_norm == int(np.argmax(norm))


def test_acc_norm_divides_by_the_choice_text_without_the_leading_space(smol_tokenizer):
    # lm-evaluation-harness: completion_len = len(choice) for choice in doc_to_choice (the " " is the
    # target delimiter). Sums -3.0, -5.5: per character -1.5 < -1.375 picks choice 1; counting the
    # space (-1.0 > -1.1) would pick choice 0
    q = data.ArcQuestion("ARC-Easy", "t", "Which?", ("A", "B"), ("ab", "abcd"), 1)
    prompts, chars = scoring.arc_prompts(smol_tokenizer, [q])
    assert chars.tolist() == [2, 4]
    assert [smol_tokenizer.decode(list(c)) for c in prompts[0].continuations] == [" ab", " abcd"]
    assert scoring.choose([-3.0, -5.5], chars) == (0, 1)
    assert scoring.choose([-3.0, -5.5], [3, 5]) == (0, 0)  # the old, space-counting rule


def test_pred_norm_recomputes_from_loglik_and_choice_texts(smol_tokenizer, wide_tiny_llama):
    arc = data.load_arc(data.ARC_SUBSETS, seed=0)
    qs = arc[:6] + [q for q in arc if q.subset == "ARC-Challenge"][:6]
    df = scoring.score_arc(wide_tiny_llama, smol_tokenizer, qs, score_batch_size=4, progress=False)
    for q, row in zip(qs, df.itertuples()):
        assert (row.subset, row.id) == (q.subset, q.id)
        ll = np.asarray(row.loglik)
        assert row.pred_norm == int(np.argmax(ll / np.array([len(c) for c in q.choices], dtype=float)))
        assert row.correct_norm == (row.pred_norm == q.answer)


# --------------------------------------------------------------------------------------------------
# sliding-window attention: cached scoring must not depend on padding


def long_prompts(rng, n=8, vocab=100):
    """The audit's setting: contexts of 20-30 tokens (past tiny-gemma3's window of 16), 2-4 continuations."""
    def seq(lo, hi):
        return tuple(int(x) for x in rng.integers(3, vocab, rng.integers(lo, hi)))
    return [scoring.Prompt(seq(20, 31), tuple(seq(1, 6) for _ in range(rng.integers(2, 5)))) for _ in range(n)]


def test_attention_window_per_family():
    from transformers import Gemma3TextConfig, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

    assert scoring.attention_window(load("tiny-gemma3").model.config) == 16
    # Gemma-3-270m: 18 layers, five sliding (512) per full one
    assert scoring.attention_window(Gemma3TextConfig(num_hidden_layers=18, sliding_window=512)) == 512
    assert scoring.attention_window(LlamaConfig()) is None
    assert scoring.attention_window(GPT2Config()) is None
    assert scoring.attention_window(MistralConfig(sliding_window=None)) is None
    assert scoring.attention_window(MistralConfig(sliding_window=32)) == 32
    assert scoring.attention_window(Qwen2Config(sliding_window=32)) is None  # use_sliding_window=False
    assert scoring.attention_window(Qwen2Config(sliding_window=32, use_sliding_window=True,
                                                num_hidden_layers=4, max_window_layers=2)) == 32


@pytest.mark.parametrize("batch_size", [1, 4])
def test_sliding_window_scoring_equals_one_full_forward_per_continuation(batch_size):
    model = load("tiny-gemma3").model
    assert model.config.sliding_window == 16
    prompts = long_prompts(np.random.default_rng(0))
    got = scoring.continuation_loglik(model, prompts, score_batch_size=batch_size, progress=False)
    want = [naive_loglik(model, p.context, c) for p in prompts for c in p.continuations]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_cache_is_used_up_to_the_window_and_would_be_wrong_past_it():
    # contexts of C and 4 tokens (padded to C), continuations of up to 5 (M = 4 inputs): C + M = 16 is
    # the longest cached batch on a window of 16; forcing the cache at C + M = 17 evicts/masks real
    # tokens of the short context, which is what the full-sequence path avoids
    model = load("tiny-gemma3").model
    rng = np.random.default_rng(4)
    conts = ((5, 6, 7, 8, 9), (10, 11))
    for C, cached in ((12, True), (13, False)):
        chunk = [scoring.Prompt(tuple(int(x) for x in rng.integers(3, 100, n)), conts) for n in (C, 4)]
        assert scoring._cache_is_exact([C, 4], 4, 16) is cached
        want = [naive_loglik(model, p.context, c) for p in chunk for c in p.continuations]
        with torch.no_grad():
            got = [float(x.double().sum()) for x in scoring._batch_loglik(model, chunk, "cpu", 16)]
            forced = [float(x.double().sum()) for x in scoring._batch_loglik(model, chunk, "cpu", None)]
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert np.allclose(forced, want, atol=1e-5) is cached


def test_edits_act_on_the_full_sequence_pass_as_on_one_full_forward():
    """Past the window, edits (which skip cached passes) still act on every scored sequence."""
    from avalanche_nb import interventions as iv

    model = load("tiny-gemma3").model
    prompts = long_prompts(np.random.default_rng(5), n=4)
    # sites near the end of the shortest context (20 tokens), which the scored tokens' windows reach
    with iv.edit_sites(model, layers=[0, 1], positions=[3, 12, 19], dims=[0, 5, 7], mode="zero", ma_clip_multiple=10.0):
        got = scoring.continuation_loglik(model, prompts, score_batch_size=4, g=1.3, progress=False)
        with hooks.gain(model, 1.3):
            want = [naive_loglik(model, p.context, c) for p in prompts for c in p.continuations]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert not np.allclose(scoring.continuation_loglik(model, prompts, score_batch_size=4, g=1.3, progress=False), got, atol=1e-4)
    assert hooks.hook_count(model) == 0


def test_arc_sweep_scores_the_grid_everywhere_and_everything_at_full_gains(smol_tokenizer, wide_tiny_llama):
    from avalanche_nb.stats import mcnemar

    full = data.load_arc("ARC-Easy", limit=8, seed=1)
    grid = full[:3]
    arc, seconds = scoring.arc_sweep(wide_tiny_llama, smol_tokenizer, full, grid, [0.5, 1.0, 1.5], full_at=[1.0, 1.5],
                                     score_batch_size=4, log=None, progress=False)
    assert arc.groupby("g").size().to_dict() == {0.5: 3, 1.0: 8, 1.5: 8}
    assert set(seconds) == {1.0, 1.5} and arc.in_grid.sum() == 9
    s = scoring.arc_summary(arc, 1.5, boot=50, seed=0)
    assert s["mcnemar_set"] == "full" and s["mcnemar"]["all"]["n"] == 8
    a, b = arc[arc.g == 1.0].sort_values("id"), arc[arc.g == 1.5].sort_values("id")
    assert s["mcnemar"]["ARC-Easy"]["acc"] == mcnemar(a.correct, b.correct)
    grid_rows = {(r["subset"], r["g"]): r for r in s["grid"]}
    assert grid_rows[("all", 0.5)]["n"] == 3 and grid_rows[("ARC-Easy", 1.0)]["n"] == 3
    assert s["full_gains"] == [1.0, 1.5]
    with pytest.raises(ValueError, match="subset"):
        scoring.arc_sweep(wide_tiny_llama, smol_tokenizer, grid, full, [1.0], log=None, score_batch_size=8, progress=False)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma3"])
def test_shared_prefix_scoring_equals_one_full_forward_per_continuation(name):
    """Two few-shot blocks past tiny-gemma3's window of 16 and a prompt with neither, contexts and
    continuations of mixed lengths (single-token choices share a row)."""
    from avalanche_nb import interventions as iv

    model = load(name).model
    rng = np.random.default_rng(7)
    blocks = [tuple(int(x) for x in rng.integers(3, 100, 24)) for _ in range(2)]
    prompts = [scoring.Prompt(blocks[i % 2] + p.context, p.continuations) for i, p in enumerate(random_prompts(rng, n=7))]
    odd = tuple(int(x) for x in rng.integers(3, 100, 30))
    prompts.insert(3, scoring.Prompt(odd, ((5, 6), (7,))))  # shares its first tokens with no other prompt
    naive = lambda: [naive_loglik(model, p.context, c) for p in prompts for c in p.continuations]
    want = naive()
    for batch in (1, 5):
        np.testing.assert_allclose(scoring.shared_prefix_loglik(model, prompts, score_batch_size=batch), want, atol=1e-5)
    # an edit inside the prefix (the MA token's position) acts as on the full forward
    with iv.rigidity_reduction(model, 1, [0], 0.0, 0.1):
        got = scoring.shared_prefix_loglik(model, prompts, score_batch_size=4)
        edited = naive()
    np.testing.assert_allclose(got, edited, atol=1e-5)
    assert not np.allclose(edited, want, atol=1e-4)
    # an edit past the shared prefix (position 24, each prompt's own first token) needs min_prefix = 25:
    # those groups are then scored with a fresh context pass; without it the edit cannot reach them
    with iv.rigidity_reduction(model, 1, [24], 0.0, 0.1):
        guarded = scoring.shared_prefix_loglik(model, prompts, score_batch_size=4, min_prefix=25)
        edited = naive()
        with pytest.raises(IndexError):  # the 24-token prefix pass has no position 24
            scoring.shared_prefix_loglik(model, prompts, score_batch_size=4)
    np.testing.assert_allclose(guarded, edited, atol=1e-5)
