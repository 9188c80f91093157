"""Hook points against manual recomputation on tiny random models."""

import pytest
import torch
import torch.nn.functional as F

from avalanche_nb import hooks
from avalanche_nb.models import load_model


def ids(vocab=128, B=2, T=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (B, T), generator=g)


def capture_tap(model, x):
    got = {}
    with hooks.mlp_tap(model, lambda l, u: got.__setitem__(l, u.detach().clone())):
        hooks.forward_hidden(model, x)
    return got


def capture_mlp_inputs(model, arch_mlps):
    """Inputs of each layer's MLP module (to recompute the tap by hand)."""
    seen, handles = {}, []
    for l, mlp in enumerate(arch_mlps):
        handles.append(mlp.register_forward_pre_hook(lambda m, a, l=l: seen.__setitem__(l, a[0].detach().clone())))
    return seen, handles


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2", "tiny-gemma3"])
def test_gated_tap_is_act_gate_times_up(name):
    model = load_model(name).model
    x = ids()
    mlps = [layer.mlp for layer in hooks.decoder_layers(model)]
    seen, handles = capture_mlp_inputs(model, mlps)
    try:
        got = capture_tap(model, x)
    finally:
        for h in handles:
            h.remove()
    assert sorted(got) == list(range(model.config.num_hidden_layers))
    for l, mlp in enumerate(mlps):
        h = seen[l]
        manual = mlp.act_fn(h @ mlp.gate_proj.weight.T) * (h @ mlp.up_proj.weight.T)
        torch.testing.assert_close(got[l], manual, rtol=1e-5, atol=1e-6)


def test_gpt_neox_tap_is_activation_output():
    model = load_model("tiny-gpt-neox").model
    x = ids()
    mlps = [layer.mlp for layer in hooks.decoder_layers(model)]
    seen, handles = capture_mlp_inputs(model, mlps)
    try:
        got = capture_tap(model, x)
    finally:
        for h in handles:
            h.remove()
    for l, mlp in enumerate(mlps):
        pre = F.linear(seen[l], mlp.dense_h_to_4h.weight, mlp.dense_h_to_4h.bias)
        torch.testing.assert_close(got[l], F.gelu(pre), rtol=1e-5, atol=1e-6)


def test_gpt2_tap_is_activation_output():
    model = load_model("tiny-gpt2").model
    x = ids()
    mlps = [layer.mlp for layer in hooks.decoder_layers(model)]
    seen, handles = capture_mlp_inputs(model, mlps)
    try:
        got = capture_tap(model, x)
    finally:
        for h in handles:
            h.remove()
    for l, mlp in enumerate(mlps):
        pre = seen[l] @ mlp.c_fc.weight + mlp.c_fc.bias  # Conv1D stores [in, out]
        torch.testing.assert_close(got[l], mlp.act(pre), rtol=1e-5, atol=1e-6)


def test_tap_does_not_change_the_forward():
    model = load_model("tiny-llama").model
    x = ids()
    plain = hooks.forward_hidden(model, x)
    with hooks.mlp_tap(model, lambda l, u: None):
        tapped = hooks.forward_hidden(model, x)
    assert torch.equal(plain, tapped)


def test_hooks_are_removed_when_the_forward_raises():
    model = load_model("tiny-llama").model
    assert hooks.hook_count(model) == 0

    def boom(layer, u):
        if layer == 1:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with hooks.gain(model, 2.0), hooks.gain(model, 0.5, "attn"), hooks.mlp_tap(model, boom), \
                hooks.residual_tap(model, lambda l, h: None):
            assert hooks.hook_count(model) > 0
            hooks.forward_hidden(model, ids())
    assert hooks.hook_count(model) == 0


def test_gain_one_registers_nothing_and_is_bit_identical():
    model = load_model("tiny-llama").model
    x = ids()
    plain = model(x).logits
    with hooks.gain(model, 1.0):
        assert hooks.hook_count(model) == 0
        same = model(x).logits
    assert torch.equal(plain, same)


def residual_updates(model, x):
    """Per layer: (layer output - layer input), i.e. what the layer adds to the residual stream."""
    arch = hooks.architecture(model)
    ins, outs, handles = {}, {}, []
    for l, layer in enumerate(arch.layers):
        handles.append(layer.register_forward_pre_hook(
            lambda m, a, kw, l=l: ins.__setitem__(l, (a[0] if a else kw["hidden_states"]).clone()), with_kwargs=True))
        handles.append(layer.register_forward_hook(
            lambda m, a, o, l=l: outs.__setitem__(l, (o[0] if isinstance(o, tuple) else o).clone())))
    try:
        hooks.forward_hidden(model, x)
    finally:
        for h in handles:
            h.remove()
    return ins, outs


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma3", "tiny-gpt-neox"])
def test_gain_two_doubles_each_layers_mlp_update(name):
    """With the inputs of a layer fixed, g = 2 doubles exactly the MLP's contribution to its output.

    Checked layer by layer: feed layer l the same input with and without the gain hook on layer l only.
    For Gemma-3 the gain must act after post_feedforward_layernorm, or the norm would undo it.
    """
    model = load_model(name).model
    x = ids()
    arch = hooks.architecture(model)
    ins, outs = residual_updates(model, x)
    for l in range(arch.n_layers):
        mlp_out = {}
        h = arch.mlp_out[l].register_forward_hook(lambda m, a, o: mlp_out.__setitem__("v", o.clone()))
        try:
            hooks.forward_hidden(model, x)
        finally:
            h.remove()
        _, outs_g = _run_with_gain_on_layer(model, x, l, 2.0)
        # layer l's input is unchanged (earlier layers have no gain), so the output moves by one more MLP update
        torch.testing.assert_close(outs_g[l] - outs[l], mlp_out["v"], rtol=1e-4, atol=1e-5)


def _run_with_gain_on_layer(model, x, layer, g):
    with hooks.gain(model, g, layers=[layer]):
        return residual_updates(model, x)


def test_gemma_gain_acts_after_the_post_feedforward_norm():
    model = load_model("tiny-gemma3").model
    arch = hooks.architecture(model)
    assert all(m is layer.post_feedforward_layernorm for m, layer in zip(arch.mlp_out, arch.layers))
    assert all(m is layer.post_attention_layernorm for m, layer in zip(arch.attn_out, arch.layers))


def test_gain_zero_equals_mlps_that_output_zero():
    model = load_model("tiny-llama").model
    x = ids()
    with hooks.gain(model, 0.0):
        gained = model(x).logits
    zero_hooks = [layer.mlp.register_forward_hook(lambda m, a, o: torch.zeros_like(o))
                  for layer in hooks.decoder_layers(model)]
    try:
        zeroed = model(x).logits
    finally:
        for h in zero_hooks:
            h.remove()
    assert torch.equal(gained, zeroed)


def test_attention_gain_scales_the_attention_output():
    model = load_model("tiny-llama").model
    x = ids()
    arch = hooks.architecture(model)
    got = {}
    h = arch.attn_out[0].register_forward_hook(lambda m, a, o: got.setdefault("plain", o[0].clone()))
    hooks.forward_hidden(model, x)
    h.remove()
    with hooks.gain(model, 3.0, "attn", layers=[0]):
        h = arch.attn_out[0].register_forward_hook(lambda m, a, o: got.setdefault("scaled", o[0].clone()))
        hooks.forward_hidden(model, x)
        h.remove()
    torch.testing.assert_close(got["scaled"], 3.0 * got["plain"])


def test_unsupported_architecture_is_named():
    from transformers import AutoModelForCausalLM, OPTConfig

    model = AutoModelForCausalLM.from_config(OPTConfig(vocab_size=64, hidden_size=16, ffn_dim=32, num_hidden_layers=2,
                                                       num_attention_heads=2, word_embed_proj_dim=16,
                                                       max_position_embeddings=32))
    with pytest.raises(hooks.UnsupportedArchitectureError, match="opt"):
        hooks.architecture(model)


def test_bad_gain_target():
    model = load_model("tiny-llama").model
    with pytest.raises(ValueError, match="mlp' or 'attn"):
        with hooks.gain(model, 2.0, "resid"):
            pass


def test_gemma_mlp_update_by_hand_geglu_tanh_sandwich_norms_and_gain():
    """Gemma-3 by hand: update = post_ff_norm(down(gelu_tanh(gate(n)) * up(n))), n = pre_ff_norm(r), where
    r is the residual after attention; the layer outputs r + g * update, and the tap is the down_proj input."""
    model = load_model("tiny-gemma3").model
    x = ids()
    arch = hooks.architecture(model)
    for l, layer in enumerate(arch.layers):
        seen = {}
        handles = [layer.pre_feedforward_layernorm.register_forward_pre_hook(
                       lambda m, a: seen.__setitem__("r", a[0].detach().clone())),
                   layer.register_forward_hook(lambda m, a, o: seen.__setitem__(
                       "out", (o[0] if isinstance(o, tuple) else o).detach().clone()))]
        try:
            taps = capture_tap(model, x)
            r, out1 = seen["r"], seen["out"]
            with hooks.gain(model, 2.0, layers=[l]):
                hooks.forward_hidden(model, x)
            out2 = seen["out"]
        finally:
            for h in handles:
                h.remove()
        n = layer.pre_feedforward_layernorm(r)
        mlp = layer.mlp
        u = F.gelu(n @ mlp.gate_proj.weight.T, approximate="tanh") * (n @ mlp.up_proj.weight.T)
        update = layer.post_feedforward_layernorm(u @ mlp.down_proj.weight.T)
        torch.testing.assert_close(taps[l], u, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out1, r + update, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out2, r + 2 * update, rtol=1e-5, atol=1e-5)  # layer l's input is unchanged
    assert hooks.hook_count(model) == 0


def test_forward_hidden_includes_gemmas_scaled_embeddings():
    model = load_model("tiny-gemma3").model
    x = ids()
    with torch.no_grad():
        ref = model(x, output_hidden_states=True).hidden_states
        emb = F.embedding(x, model.get_input_embeddings().weight)  # the raw lookup, unscaled
    torch.testing.assert_close(ref[0], emb * torch.tensor(model.config.hidden_size ** 0.5, dtype=emb.dtype))
    torch.testing.assert_close(hooks.forward_hidden(model, x), ref[-1])
