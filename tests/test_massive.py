"""Massive activations: the scan and its profile, the ME layer, attention sinks (tiny models)."""

import numpy as np
import pytest
import torch

from avalanche_nb import hooks, massive
from tiny_models import PLANT_DIM, PLANT_LAYER, layer_outputs, load, planted_llama, scan, tokens


def test_profile_finds_the_planted_dim_token_and_layer():
    model = planted_llama()
    s = scan(model, tokens(), 4)
    me = massive.me_layer(s, "sun", 100.0)
    assert me["found"] and me["me_layer"] == PLANT_LAYER and me["jump_layer"] == PLANT_LAYER
    assert me["ma_pos"] == 0 and me["ma_dims"] == [PLANT_DIM]
    prof = massive.profile_table(s, 100.0)
    assert list(prof.layer) == [-1, 0, 1, 2]
    assert prof.set_index("layer").loc[PLANT_LAYER, "top1_dim"] == PLANT_DIM
    assert not prof.set_index("layer").loc[0, "sun"] and prof.set_index("layer").loc[PLANT_LAYER:, "sun"].all()


def test_scan_equals_a_numpy_scan_of_the_hidden_states():
    model = planted_llama()
    toks = tokens()
    s = scan(model, toks, 3, batch_size=2)
    hs = layer_outputs(model, toks)
    for l, h in hs.items():
        a = h.abs().double().numpy().reshape(len(toks), -1)
        order = np.argsort(-a, axis=1)[:, :3]
        np.testing.assert_allclose(s.top_abs[l + 1], np.take_along_axis(a, order, 1), rtol=1e-6)
        np.testing.assert_array_equal(s.pos[l + 1] * h.shape[2] + s.dim[l + 1], order)
        np.testing.assert_allclose(s.median[l + 1], np.median(a, axis=1), rtol=1e-5)
    emb = model.get_input_embeddings()(torch.as_tensor(toks)).detach().abs().double().numpy().reshape(len(toks), -1)
    np.testing.assert_allclose(s.top_abs[0, :, 0], emb.max(1), rtol=1e-6)
    prev, cur = hs[0].double(), hs[1].double()
    cos = (prev * cur).sum(-1) / prev.norm(dim=-1) / cur.norm(dim=-1)
    np.testing.assert_allclose(s.cos_prev[1], cos.numpy(), rtol=1e-4)


def test_a_model_without_massive_activations_reports_none_found():
    s = scan(load("tiny-llama").model, tokens(), 4)
    me = massive.me_layer(s, "sun", 100.0)
    assert not me["found"] and me["me_layer"] is None and me["ma_dims"] == []
    assert "no decoder layer meets the sun criterion" in me["reason"]


def test_independent_scan_agrees_with_the_hooked_scan():
    model = planted_llama()
    toks = tokens()
    me = massive.me_layer(scan(model, toks, 4), "sun", 100.0)
    ind = massive.independent_scan(model, toks, "sun", 100.0)
    assert ind == {"me_layer": PLANT_LAYER, "ma_pos": 0, "top1_dim": PLANT_DIM}
    assert ind["me_layer"] == me["me_layer"] and ind["ma_pos"] == me["ma_pos"] and ind["top1_dim"] in me["ma_dims"]
    assert massive.independent_scan(load("tiny-llama").model, toks, "sun", 100.0) == {"me_layer": None}


def test_bad_inputs_are_refused():
    model = load("tiny-llama").model
    with pytest.raises(ValueError, match="fewer than ma_top_k"):
        scan(model, tokens(T=4), 10)
    with pytest.raises(ValueError, match="unknown MA criterion"):
        massive.layer_flags(scan(model, tokens(), 2), "loose", 100.0)


def test_nan_activations_stop_the_scan():
    model = load("tiny-llama").model
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="layer 1"):
        scan(model, tokens(), 2)


def manual_sink_mass(model, toks, layer):
    """Attention mass on token 0 of ``layer``, recomputed from q/k projections, RoPE and a causal softmax."""
    attn = model.model.layers[layer].self_attn
    seen = {}
    handle = attn.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    with torch.no_grad():
        model.base_model(input_ids=torch.as_tensor(toks), use_cache=False)
    handle.remove()
    x, (cos, sin) = seen["hidden_states"].detach(), seen["position_embeddings"]
    B, T, _ = x.shape
    hd = attn.head_dim
    with torch.no_grad():
        q = attn.q_proj(x).view(B, T, -1, hd).transpose(1, 2)
        k = attn.k_proj(x).view(B, T, -1, hd).transpose(1, 2)

    def rope(v):
        half = torch.cat([-v[..., hd // 2:], v[..., :hd // 2]], -1)
        return v * cos[:, None] + half * sin[:, None]

    q, k = rope(q), rope(k)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scores = q @ k.transpose(-1, -2) / hd ** 0.5
    scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    w = torch.softmax(scores.double(), -1)
    return w[:, :, 1:, 0].mean(-1).numpy()  # [B, H]


def test_attention_sink_mass_equals_a_manual_softmax():
    model = planted_llama()
    toks = tokens()
    s = scan(model, toks, 2, sinks=True)
    for layer in range(3):
        np.testing.assert_allclose(s.sink[layer], manual_sink_mass(model, toks, layer), rtol=1e-4, atol=1e-6)
    assert model.config._attn_implementation != "eager"  # restored


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2", "tiny-gemma3", "tiny-gpt-neox", "tiny-gpt2"])
def test_scan_and_sinks_run_on_every_supported_family(name):
    model = load(name).model
    s = scan(model, tokens(2, T=8), 3, sinks=True)
    assert s.sink.shape == (3, 2, 4) and ((s.sink > 0) & (s.sink <= 1 + 1e-6)).all()
    assert np.isfinite(s.ratio).all() and hooks.hook_count(model) == 0
