"""Massive activations: profile, ME layer, interventions, attention sinks, token classes (tiny models)."""

import numpy as np
import pandas as pd
import pytest
import torch

from avalanche_nb import hooks, interventions as iv, ma_experiments as mx, massive, scoring
from avalanche_nb import params as P
from avalanche_nb.models import load_model

PLANT_LAYER, PLANT_DIM, MARK = 1, 5, 0  # the MA appears at layer 1's output, dim 5, token 0


def planted_llama():
    """tiny-llama whose token 0 (id 1) gets a huge dim PLANT_DIM from layer PLANT_LAYER's MLP on.

    Residual dim MARK is non-zero only at token 0 (its embedding is the only one with it, and no block
    writes to it); one MLP unit of layer PLANT_LAYER reads it and writes 100 × its square into dim PLANT_DIM.
    """
    model = load_model("tiny-llama", seed=3).model
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[:, MARK] = 0.0
        emb[1, MARK] = 10.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[MARK] = 0.0
            layer.mlp.down_proj.weight[MARK] = 0.0
        mlp = model.model.layers[PLANT_LAYER].mlp
        mlp.gate_proj.weight[0] = 0.0
        mlp.up_proj.weight[0] = 0.0
        mlp.gate_proj.weight[0, MARK] = 2.0
        mlp.up_proj.weight[0, MARK] = 2.0
        mlp.down_proj.weight[:, 0] = 0.0
        mlp.down_proj.weight[PLANT_DIM, 0] = 100.0
    return model


def tokens(n=3, T=12, seed=0):
    t = np.random.default_rng(seed).integers(3, 120, (n, T))
    t[:, 0] = 1
    return t


def layer_outputs(model, toks):
    out = {}
    with hooks.residual_tap(model, lambda l, h: out.__setitem__(l, h.detach().clone())), torch.no_grad():
        model.base_model(input_ids=torch.as_tensor(toks), use_cache=False)
    return out


def test_profile_finds_the_planted_dim_token_and_layer():
    model = planted_llama()
    s = massive.scan(model, tokens(), k=4)
    me = massive.me_layer(s, "sun")
    assert me["found"] and me["me_layer"] == PLANT_LAYER and me["jump_layer"] == PLANT_LAYER
    assert me["ma_pos"] == 0 and me["ma_dims"] == [PLANT_DIM]
    prof = massive.profile_table(s)
    assert list(prof.layer) == [-1, 0, 1, 2]
    assert prof.set_index("layer").loc[PLANT_LAYER, "top1_dim"] == PLANT_DIM
    assert not prof.set_index("layer").loc[0, "sun"] and prof.set_index("layer").loc[PLANT_LAYER:, "sun"].all()


def test_scan_equals_a_numpy_scan_of_the_hidden_states():
    model = planted_llama()
    toks = tokens()
    s = massive.scan(model, toks, k=3, batch_size=2)
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


def test_zeroing_changes_exactly_the_planted_scalar():
    model = planted_llama()
    toks = tokens()
    before = layer_outputs(model, toks)[PLANT_LAYER]
    assert before[:, 0, PLANT_DIM].abs().min() > 1000
    with iv.edit_sites(model, [PLANT_LAYER], [0], [PLANT_DIM], "zero"):
        after = layer_outputs(model, toks)[PLANT_LAYER]
    diff = (after != before).nonzero().tolist()
    assert diff == [[b, 0, PLANT_DIM] for b in range(len(toks))]
    assert (after[:, 0, PLANT_DIM] == 0).all()
    assert hooks.hook_count(model) == 0


def test_mean_and_clip_write_the_expected_values():
    model = planted_llama()
    toks, calib = tokens(), tokens(4, seed=1)
    means = iv.site_means(model, calib, [1, 2], [0], [PLANT_DIM])
    want = [float(layer_outputs(model, calib)[l][:, 0, PLANT_DIM].double().mean()) for l in (1, 2)]
    np.testing.assert_allclose(means[:, 0], want, rtol=1e-6)
    with iv.edit_sites(model, [1], [0], [PLANT_DIM], "mean", means[:1]):
        got = layer_outputs(model, toks)[1]
    np.testing.assert_allclose(got[:, 0, PLANT_DIM].numpy(), means[0, 0], rtol=1e-6)
    before = layer_outputs(model, toks)[1]
    with iv.edit_sites(model, [1], [0], [PLANT_DIM], "clip", clip_multiple=3.0):
        got = layer_outputs(model, toks)[1]
    cap = 3.0 * np.median(before.abs().numpy().reshape(len(toks), -1), axis=1)
    np.testing.assert_allclose(got[:, 0, PLANT_DIM].numpy(), np.sign(before[:, 0, PLANT_DIM].numpy()) * cap, rtol=1e-5)


def test_a_model_without_massive_activations_reports_none_found():
    s = massive.scan(load_model("tiny-llama").model, tokens(), k=4)
    me = massive.me_layer(s, "sun")
    assert not me["found"] and me["me_layer"] is None and me["ma_dims"] == []
    assert "no decoder layer meets the sun criterion" in me["reason"]


def test_bad_inputs_are_refused():
    model = load_model("tiny-llama").model
    with pytest.raises(ValueError, match="fewer than top_k"):
        massive.scan(model, tokens(T=4), k=10)
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
        with iv.rigidity(model, 0, [0], 1.5, 0.1):
            pass
    with pytest.raises(ValueError, match="selects no dim"):
        iv.rigidity_k(0.01, 32)
    with pytest.raises(P.ParamsError, match="rigidity_alphas"):
        P.validate({"rigidity_alphas": [0.0, -0.5]})
    with pytest.raises(ValueError, match="unknown intervention"):
        with iv.edit_sites(model, [0], [0], [1], "halve"):
            pass
    with pytest.raises(ValueError, match="unknown MA criterion"):
        massive.layer_flags(massive.scan(model, tokens(), k=2), "loose")


def test_nan_activations_stop_the_scan():
    model = load_model("tiny-llama").model
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="layer 1"):
        massive.scan(model, tokens(), k=2)


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
    s = massive.scan(model, toks, k=2, sinks=True)
    for layer in range(3):
        np.testing.assert_allclose(s.sink[layer], manual_sink_mass(model, toks, layer), rtol=1e-4, atol=1e-6)
    assert model.config._attn_implementation != "eager"  # restored


def test_token_classes_of_a_fixed_sentence():
    words = ["<s>", "ĠThe", "Ġcat", ",", "Ġand", "Ġtwo", "Ġdogs", "Ġwere", "▁there", "Ċ", "!)", "ĠParis"]
    got = [massive.token_class(w, first=i == 0) for i, w in enumerate(words)]
    assert got == ["first", "function", "content", "punctuation", "function", "content", "content", "function",
                   "function", "punctuation", "punctuation", "content"]

    class Tok:
        def decode(self, ids):
            return words[ids[0]]

    classes = massive.token_classes(Tok(), np.array([[0, 1, 2, 3], [2, 3, 4, 11]]))
    assert classes.tolist() == [["first", "function", "content", "punctuation"], ["first", "punctuation", "function", "content"]]


def test_loss_change_by_class_by_hand():
    before = np.array([[1.0, 2.0, 3.0]])
    after = np.array([[2.0, 2.0, 6.0]])
    classes = np.array([["first", "function", "content", "punctuation"]])
    t = iv.loss_change_by_class(before, after, classes).set_index(["class_by", "token_class"])
    assert t.loc[("input", "first"), "delta"] == 1.0 and t.loc[("input", "content"), "delta"] == 3.0
    assert t.loc[("target", "function"), "delta"] == 1.0 and t.loc[("target", "punctuation"), "after"] == 6.0
    assert ("target", "first") not in t.index and t.n.sum() == 6


def test_factorial_factors_edit_only_what_they_name():
    model = load_model("tiny-gemma3", seed=1).model  # Gemma: the pre-MLP norm is pre_feedforward_layernorm
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
    with iv.rigidity(model, layer, [0], alpha, rate):
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
    for ctx in (lambda: iv.edit_sites(model, [1, 2], [0], [PLANT_DIM], "zero"),
                lambda: iv.rigidity(model, 1, [0], 0.0, 0.1)):
        with ctx():
            got = scoring.continuation_loglik(model, prompts, batch_size=2)
            want = []
            for p in prompts:
                for c in p.continuations:
                    ids = torch.tensor([list(p.context) + list(c)])
                    with torch.no_grad():
                        lp = torch.log_softmax(model(ids).logits.float(), -1)[0]
                    want.append(sum(float(lp[len(p.context) - 1 + i, t]) for i, t in enumerate(c)))
        np.testing.assert_allclose(got, want, atol=1e-4)
        plain = scoring.continuation_loglik(model, prompts, batch_size=2)
        assert not np.allclose(plain, got)


def test_control_layers():
    assert mx.control_layers(10, 4, 3) == [4, 0, 5, 9]
    assert mx.control_layers(4, 0, None) == [0, 1, 2, 3]
    assert mx.control_layers(4, 2, 0) == [2]


def test_experiments_on_the_planted_model():
    model = planted_llama()
    probe, calib, b = tokens(), tokens(4, seed=1), tokens(2, T=10, seed=2)
    me = massive.me_layer(massive.scan(model, probe, k=4))

    class Tok:
        def decode(self, ids):
            return " x" if ids[0] % 3 else "."

    inter, classes, sinks = mx.interventions(model, Tok(), me, probe, calib, b, k=4)
    ppl = inter.groupby("intervention").perplexity.first()
    assert ppl["none"] == pytest.approx(scoring.perplexity(scoring.window_nll(model, b)))
    z = inter[inter.intervention == "zero"].set_index("layer")
    assert (z.loc[PLANT_LAYER:, "ratio"] < 1000).all()  # zeroed from the ME layer on
    assert set(sinks.intervention) == {"none", "zero", "mean", "clip"} and len(sinks) == 4 * 3 * 4
    fact = mx.factorial(model, me, probe, b, k=4)
    f = mx.findings(me, inter, fact, pd.DataFrame({"applied": [-1], "layer": [0], "alpha": [1.0], "mask_rate": [0.0],
                                                   "perplexity": [1.0], "arc_acc": [np.nan], "arc_p": [np.nan], "sink": [0.1],
                                                   "top1": [1.0], "ratio": [1.0]}))
    # the planted MA is made by the MLP: removing it at the ME layer stops the MA, the norm's mean does not
    assert f["ma_persists_in_factorial"] == {"norm=as_is, mlp=as_is": True, "norm=as_is, mlp=removed": False,
                                             "norm=mean, mlp=as_is": True, "norm=mean, mlp=removed": False}
    assert f["perplexity_ratio"]["none"] == 1.0


def test_rigidity_persistence_includes_the_edited_layer():
    # the rigidity edit acts on the applied layer's input: an MA still present in that layer's own output
    # persists (the factorial counts the ME layer's output the same way)
    me = {"criterion": "sun", "relaxed_ratio": 100.0, "me_layer": 1}
    base = dict(perplexity=1.0, arc_acc=np.nan, arc_p=np.nan, sink=0.1)
    rows = [dict(applied=-1, layer=l, alpha=1.0, mask_rate=0.0, top1=500.0, ratio=5000.0, **base) for l in range(3)]
    rows += [dict(applied=1, layer=l, alpha=0.0, mask_rate=0.01, top1=[500.0, 500.0, 1.0][l],
                  ratio=[5000.0, 5000.0, 1.0][l], **base) for l in range(3)]
    empty = pd.DataFrame({"intervention": ["none"], "perplexity_ratio": [1.0]})
    fact = pd.DataFrame(columns=["norm", "mlp", "layer", "top1", "ratio"])
    f = mx.findings(me, empty, fact, pd.DataFrame(rows))
    assert f["rigidity"][0]["applied"] == 1 and f["rigidity"][0]["ma_persists"] is True


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2", "tiny-gemma3", "tiny-gpt-neox", "tiny-gpt2"])
def test_scan_and_sinks_run_on_every_supported_family(name):
    model = load_model(name).model
    s = massive.scan(model, tokens(2, T=8), k=3, sinks=True)
    assert s.sink.shape == (3, 2, 4) and ((s.sink > 0) & (s.sink <= 1 + 1e-6)).all()
    assert np.isfinite(s.ratio).all() and hooks.hook_count(model) == 0
