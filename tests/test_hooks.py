"""Hook points against manual recomputation on tiny random models."""

import pytest
import torch
import torch.nn.functional as F

from avalanche_nb import hooks
from tiny_models import load


def ids(vocab=128, B=2, T=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (B, T), generator=g)


def capture(model, x, point):
    """The tensor at ``point`` of every layer in one forward pass."""
    got = {}
    with hooks.attach(model, hooks.Hook(point, lambda l, t: got.__setitem__(l, t.detach().clone()))):
        hooks.forward_hidden(model, x)
    return got


def capture_tap(model, x):
    return capture(model, x, "mlp.tap")


def capture_mlp_inputs(model, arch_mlps):
    """Inputs of each layer's MLP module (to recompute the tap by hand)."""
    seen, handles = {}, []
    for l, mlp in enumerate(arch_mlps):
        handles.append(mlp.register_forward_pre_hook(lambda m, a, l=l: seen.__setitem__(l, a[0].detach().clone())))
    return seen, handles


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2", "tiny-gemma3"])
def test_gated_tap_is_act_gate_times_up(name):
    model = load(name).model
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
    model = load("tiny-gpt-neox").model
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
    model = load("tiny-gpt2").model
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


def test_observers_do_not_change_the_forward():
    model = load("tiny-llama").model
    x = ids()
    plain = hooks.forward_hidden(model, x)
    with hooks.attach(model, *[hooks.Hook(p, lambda l, t: None) for p in hooks.POINTS if p != "attn.weights"]):
        tapped = hooks.forward_hidden(model, x)
    assert torch.equal(plain, tapped)


def test_hooks_are_removed_when_the_forward_raises():
    model = load("tiny-llama").model
    assert hooks.hook_count(model) == 0

    def boom(layer, u):
        if layer == 1:
            raise RuntimeError("boom")

    attn = model.config._attn_implementation
    with pytest.raises(RuntimeError, match="boom"):
        with hooks.gain(model, 2.0), hooks.gain(model, 0.5, "attn"), \
                hooks.attach(model, hooks.Hook("resid.out", lambda l, h: None, fresh_only=True),
                             hooks.Hook("attn.weights", lambda l, w: None), hooks.Hook("mlp.tap", boom)):
            assert hooks.hook_count(model) > 0 and model.config._attn_implementation == "eager"
            hooks.forward_hidden(model, ids())
    assert hooks.hook_count(model) == 0 and model.config._attn_implementation == attn


def test_gain_one_registers_nothing_and_is_bit_identical():
    model = load("tiny-llama").model
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
    model = load(name).model
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
    model = load("tiny-gemma3").model
    arch = hooks.architecture(model)
    assert all(m is layer.post_feedforward_layernorm for m, layer in zip(arch.mlp_out, arch.layers))
    assert all(m is layer.post_attention_layernorm for m, layer in zip(arch.attn_out, arch.layers))


def test_gain_zero_equals_mlps_that_output_zero():
    model = load("tiny-llama").model
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
    model = load("tiny-llama").model
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
    model = load("tiny-llama").model
    with pytest.raises(ValueError, match="mlp' or 'attn"):
        with hooks.gain(model, 2.0, "resid"):
            pass


def test_gemma_mlp_update_by_hand_geglu_tanh_sandwich_norms_and_gain():
    """Gemma-3 by hand: update = post_ff_norm(down(gelu_tanh(gate(n)) * up(n))), n = pre_ff_norm(r), where
    r is the residual after attention; the layer outputs r + g * update, and the tap is the down_proj input."""
    model = load("tiny-gemma3").model
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
    model = load("tiny-gemma3").model
    x = ids()
    with torch.no_grad():
        ref = model(x, output_hidden_states=True).hidden_states
        emb = F.embedding(x, model.get_input_embeddings().weight)  # the raw lookup, unscaled
    torch.testing.assert_close(ref[0], emb * torch.tensor(model.config.hidden_size ** 0.5, dtype=emb.dtype))
    torch.testing.assert_close(hooks.forward_hidden(model, x), ref[-1])


def test_resid_in_is_the_scaled_embeddings_then_the_previous_layers_output():
    model = load("tiny-gemma3").model  # Gemma scales its embeddings by sqrt(d_model)
    x = ids()
    with torch.no_grad():
        ref = model(x, output_hidden_states=True).hidden_states
    ins, outs = capture(model, x, "resid.in"), capture(model, x, "resid.out")
    assert torch.equal(ins[0], ref[0])
    for l in range(1, model.config.num_hidden_layers):
        assert torch.equal(ins[l], outs[l - 1])
        assert torch.equal(outs[l - 1], ref[l])


def test_an_edit_replaces_the_tensor_at_input_and_output_points():
    """Doubling the tap doubles the (bias-free, linear) down projection: the same forward as doubling mlp.out;
    and an edit of resid.in at layer l is the same edit of resid.out at layer l - 1."""
    model = load("tiny-llama").model
    x = ids()
    with hooks.attach(model, hooks.Hook("mlp.tap", lambda l, u: 2 * u, layers=[1])):
        tap_doubled = hooks.forward_hidden(model, x)
    with hooks.gain(model, 2.0, layers=[1]):
        out_doubled = hooks.forward_hidden(model, x)
    assert torch.equal(tap_doubled, out_doubled)
    assert not torch.equal(tap_doubled, hooks.forward_hidden(model, x))
    shift = lambda l, h: h + 1.0
    with hooks.attach(model, hooks.Hook("resid.in", shift, layers=[2])):
        a = hooks.forward_hidden(model, x)
    with hooks.attach(model, hooks.Hook("resid.out", shift, layers=[1])):
        b = hooks.forward_hidden(model, x)
    assert torch.equal(a, b)


def test_hooks_at_one_point_run_in_order_and_see_earlier_edits():
    model = load("tiny-llama").model
    seen = {}
    zero = hooks.Hook("attn.norm", lambda l, x: torch.zeros_like(x), layers=[0])
    look = hooks.Hook("attn.norm", lambda l, x: seen.__setitem__(l, x.clone()), layers=[0])
    with hooks.attach(model, zero, look):
        hooks.forward_hidden(model, ids())
    assert list(seen) == [0] and not seen[0].any()


def test_fresh_only_hooks_skip_passes_that_continue_a_cache():
    model = load("tiny-llama").model
    x = ids(T=6)
    calls = {"fresh_only": 0, "always": 0}
    count = lambda key: lambda l, h: calls.__setitem__(key, calls[key] + 1)
    with hooks.attach(model, hooks.Hook("resid.out", count("fresh_only"), layers=[0], fresh_only=True),
                      hooks.Hook("resid.out", count("always"), layers=[0])), torch.no_grad():
        past = model.base_model(input_ids=x[:, :4], use_cache=True).past_key_values
        model.base_model(input_ids=x[:, 4:], past_key_values=past, use_cache=True)
        model.base_model(input_ids=x, use_cache=False)
    assert calls == {"fresh_only": 2, "always": 3}


def test_attention_weights_are_observed_under_eager_attention_only():
    model = load("tiny-llama").model
    attn = model.config._attn_implementation
    got = capture(model, ids(), "attn.weights")
    assert sorted(got) == list(range(model.config.num_hidden_layers)) and model.config._attn_implementation == attn
    torch.testing.assert_close(got[0].sum(-1), torch.ones(got[0].shape[:-1]))  # rows of probabilities [B, H, T]
    with pytest.raises(ValueError, match="observe-only"):
        with hooks.attach(model, hooks.Hook("attn.weights", lambda l, w: w * 0)):
            hooks.forward_hidden(model, ids())
    assert hooks.hook_count(model) == 0


def test_bad_points_and_layers_are_refused():
    model = load("tiny-llama").model
    with pytest.raises(ValueError, match="unknown hook point 'mlp.in'"):
        hooks.Hook("mlp.in", lambda l, t: None)
    with pytest.raises(ValueError, match=r"layers \[7\] out of range"):
        with hooks.attach(model, hooks.Hook("resid.out", lambda l, t: None), hooks.Hook("mlp.tap", lambda l, t: None, [0, 7])):
            pass
    assert hooks.hook_count(model) == 0


def test_residual_points_need_only_the_decoder_layers():
    from transformers import AutoModelForCausalLM, OPTConfig

    model = AutoModelForCausalLM.from_config(OPTConfig(vocab_size=64, hidden_size=16, ffn_dim=32, num_hidden_layers=2,
                                                       num_attention_heads=2, word_embed_proj_dim=16,
                                                       max_position_embeddings=32))
    got = capture(model, ids(vocab=64), "resid.out")
    assert sorted(got) == [0, 1] and got[1].shape == (2, 10, 16)
    with pytest.raises(hooks.UnsupportedArchitectureError, match="opt"):
        capture(model, ids(vocab=64), "mlp.tap")
    assert hooks.hook_count(model) == 0


def test_finite_check_accumulates_in_float32():
    # SmolLM2's per-layer |sum u| at 8 x 128 tokens is about 3.3e4: beyond float16's 65504 once summed
    # in float16, so a half-precision run used to raise a false NonFiniteActivationError
    u = torch.full((8, 128, 64), 8.0, dtype=torch.float16)
    assert not torch.isfinite(u.sum())  # the old check's own dtype overflows
    hooks.check_finite(u, "a float16 tap")  # finite values: no error
    u[3, 5, 7] = float("nan")
    with pytest.raises(hooks.NonFiniteActivationError, match="a float16 tap"):
        hooks.check_finite(u, "a float16 tap")
    u[3, 5, 7] = float("inf")
    with pytest.raises(hooks.NonFiniteActivationError):
        hooks.check_finite(u, "a float16 tap")
