"""Edits of the massive-activation sites: zero, mean and clip, the factorial factors, rigidity
reduction, and edits that skip cached passes (tiny models)."""

import numpy as np
import pytest
import torch

from avalanche_nb import hooks, interventions as iv, scoring
from tiny_models import PLANT_DIM, PLANT_LAYER, layer_outputs, load, planted_llama, tokens


def zero_sites(model, layers, positions, dims):
    return iv.edit_sites(model, layers=layers, positions=positions, dims=dims, mode="zero", ma_clip_multiple=10.0)


def test_zeroing_changes_exactly_the_planted_scalar():
    model = planted_llama()
    toks = tokens()
    before = layer_outputs(model, toks)[PLANT_LAYER]
    assert before[:, 0, PLANT_DIM].abs().min() > 1000
    with zero_sites(model, [PLANT_LAYER], [0], [PLANT_DIM]):
        after = layer_outputs(model, toks)[PLANT_LAYER]
    diff = (after != before).nonzero().tolist()
    assert diff == [[b, 0, PLANT_DIM] for b in range(len(toks))]
    assert (after[:, 0, PLANT_DIM] == 0).all()
    assert hooks.hook_count(model) == 0


def test_mean_and_clip_write_the_expected_values():
    model = planted_llama()
    toks, calib = tokens(), tokens(4, seed=1)
    means = iv.site_means(model, calib, layers=[1, 2], positions=[0], dims=[PLANT_DIM], batch_size=8)
    want = [float(layer_outputs(model, calib)[l][:, 0, PLANT_DIM].double().mean()) for l in (1, 2)]
    np.testing.assert_allclose(means[:, 0], want, rtol=1e-6)
    with iv.edit_sites(model, layers=[1], positions=[0], dims=[PLANT_DIM], mode="mean", values=means[:1],
                       ma_clip_multiple=10.0):
        got = layer_outputs(model, toks)[1]
    np.testing.assert_allclose(got[:, 0, PLANT_DIM].numpy(), means[0, 0], rtol=1e-6)
    before = layer_outputs(model, toks)[1]
    with iv.edit_sites(model, layers=[1], positions=[0], dims=[PLANT_DIM], mode="clip", ma_clip_multiple=3.0):
        got = layer_outputs(model, toks)[1]
    cap = 3.0 * np.median(before.abs().numpy().reshape(len(toks), -1), axis=1)
    np.testing.assert_allclose(got[:, 0, PLANT_DIM].numpy(), np.sign(before[:, 0, PLANT_DIM].numpy()) * cap, rtol=1e-5)


def test_bad_inputs_are_refused():
    model = load("tiny-llama").model
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
        with iv.rigidity_reduction(model, 0, [0], 1.5, 0.1):
            pass
    with pytest.raises(ValueError, match="selects no dim"):
        iv.rigidity_k(0.01, 32)
    with pytest.raises(ValueError, match="unknown intervention"):
        with iv.edit_sites(model, layers=[0], positions=[0], dims=[1], mode="halve", ma_clip_multiple=10.0):
            pass
    with pytest.raises(ValueError, match="repeat a layer"):
        with zero_sites(model, [1, 1], [0], [1]):
            pass


def test_factorial_factors_edit_only_what_they_name():
    model = load("tiny-gemma3", seed=1).model  # Gemma: the pre-MLP norm is pre_feedforward_layernorm
    arch = hooks.architecture(model)
    norm = arch.mlp_norm[1]
    assert norm is model.model.layers[1].pre_feedforward_layernorm
    with torch.no_grad():
        norm.weight.normal_()
    saved = norm.weight.detach().clone()
    with iv.norm_weight_mean(model, 1):
        assert torch.allclose(norm.weight, saved.mean().expand_as(saved))
    assert torch.equal(norm.weight, saved)
    seen = {}
    with iv.remove_mlp(model, 1, [0]):
        # registered after the edit, so it sees the edited output: zero at token 0 only
        handle = arch.mlp_out[1].register_forward_hook(lambda m, a, o: seen.__setitem__("out", o.detach().clone()))
        model.base_model(input_ids=torch.as_tensor(tokens()), use_cache=False)
    handle.remove()
    assert (seen["out"][:, 0] == 0).all() and (seen["out"][:, 1:] != 0).any()
    assert hooks.hook_count(model) == 0


def test_rigidity_scales_the_largest_normed_dims_of_the_ma_token_only():
    model = planted_llama()
    toks = tokens()
    layer, alpha, rate = 2, 0.25, 0.1  # int(0.1 · 32) = 3 dims
    attn = model.model.layers[layer].self_attn

    def attn_input():
        seen = {}
        h = attn.register_forward_pre_hook(lambda m, a, kw: seen.update(x=kw["hidden_states"].clone()), with_kwargs=True)
        with torch.no_grad():
            model.base_model(input_ids=torch.as_tensor(toks), use_cache=False)
        h.remove()
        return seen["x"]

    before = attn_input()
    with iv.rigidity_reduction(model, layer, [0], alpha, rate):
        after = attn_input()
    top = before[:, 0].abs().topk(3, -1).indices
    want = before.clone()
    for b in range(len(toks)):
        want[b, 0, top[b]] *= alpha
    torch.testing.assert_close(after, want)
    assert PLANT_DIM in top[0].tolist()


def test_edits_skip_the_cached_continuation_pass():
    """Shared-context scoring under an edit equals one full edited forward per continuation."""
    model = planted_llama()
    prompts = [scoring.Prompt((1, 5, 9, 14), ((20, 21), (30,))), scoring.Prompt((1, 7), ((40, 41, 42),))]
    for ctx in (lambda: zero_sites(model, [1, 2], [0], [PLANT_DIM]),
                lambda: iv.rigidity_reduction(model, 1, [0], 0.0, 0.1)):
        with ctx():
            got = scoring.continuation_loglik(model, prompts, score_batch_size=2, progress=False)
            want = []
            for p in prompts:
                for c in p.continuations:
                    ids = torch.tensor([list(p.context) + list(c)])
                    with torch.no_grad():
                        lp = torch.log_softmax(model(ids).logits.float(), -1)[0]
                    want.append(sum(float(lp[len(p.context) - 1 + i, t]) for i, t in enumerate(c)))
        np.testing.assert_allclose(got, want, atol=1e-4)
        plain = scoring.continuation_loglik(model, prompts, score_batch_size=2, progress=False)
        assert not np.allclose(plain, got)
