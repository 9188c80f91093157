"""Models dispatched by a device map (accelerate): the lattice's reductions, the MA edits, the gain hooks
and scoring give what they give on the same model undispatched, and ``load_model(device_map=...)`` loads
a usable model.

CPU only has one real device, so the split is forced by offloading: the modules mapped to ``"disk"``
hold ``meta`` weights between passes and accelerate's AlignDevicesHook loads them for each pass. On
tiny-llama the input embeddings are offloaded too, so ``next(model.parameters())`` is on ``meta``: code
that builds its tensors on one global device taken from the model (instead of :func:`input_device` or
the device of the activation a hook sees) fails here. A second test splits the model between the CPU
and a GPU where one is present.
"""

import numpy as np
import pytest
import torch
from accelerate import dispatch_model

from avalanche_nb import hooks, interventions as iv, lattice as lat, massive, scoring
from avalanche_nb import params as P
from avalanche_nb.models import input_device, load_model
from tiny_models import load, tokens

MODELS = ("tiny-llama", "tiny-gemma3")
#: modules offloaded to disk per model: tiny-gemma3 ties its LM head to the embeddings, so those stay
OFFLOADED = {"tiny-llama": {"model.embed_tokens", "model.layers.1"}, "tiny-gemma3": {"model.layers.1"}}
CUDA = torch.cuda.is_available()


def device_map(model, devices: dict[str, str | int], default: str | int = "cpu") -> dict[str, str | int]:
    """{module: device} over the model's top modules and each decoder layer: ``devices`` where named,
    else ``default``."""
    names = [f"model.{n}" for n, _ in model.model.named_children() if n != "layers"]
    names += [f"model.layers.{i}" for i in range(len(model.model.layers))] + ["lm_head"]
    return {n: devices.get(n, default) for n in names}


def tiny(name: str, seed: int) -> torch.nn.Module:
    """A tiny model whose norm weights are random too (initialised constant, a mean-weight edit would be
    a no-op)."""
    model = load(name, seed).model
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, w in model.named_parameters():
            if "norm" in pname:
                w.add_(torch.randn(w.shape, generator=gen) * 0.3)
    return model


def offloaded(name: str, seed: int, folder) -> torch.nn.Module:
    """:func:`tiny` ``name`` dispatched on the CPU with the modules of :data:`OFFLOADED` on disk."""
    model = tiny(name, seed)
    dmap = device_map(model, dict.fromkeys(OFFLOADED[name], "disk"))
    return dispatch_model(model, dmap, offload_dir=str(folder), skip_keys=list(model._skip_keys_device_placement))


@pytest.fixture(params=MODELS)
def pair(request, tmp_path):
    """(the plain model, the same weights dispatched with offloaded modules, its name)."""
    name = request.param
    return tiny(name, 1), offloaded(name, 1, tmp_path / "offload"), name


def toks(n=4, T=12, seed=0) -> np.ndarray:
    return tokens(n, T, seed)


def logits(model, ids: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.as_tensor(ids, device=input_device(model))).logits.cpu()


def test_the_split_is_real(pair):
    plain, split, name = pair
    layer = split.model.layers[1]
    assert layer.mlp.down_proj.weight.device.type == "meta"  # offloaded: loaded only during a pass
    assert getattr(layer.mlp.down_proj, "_hf_hook", None) is not None
    assert input_device(split) == torch.device("cpu")  # the embeddings' execution device, even when offloaded
    if name == "tiny-llama":
        assert next(split.parameters()).device.type == "meta"
    ids = toks()
    assert torch.equal(logits(split, ids), logits(plain, ids))


@pytest.mark.parametrize("compiled_on_cpu", [True, False])  # the CPU path, and the torch path other devices take
def test_lattice_reductions_are_identical(pair, compiled_on_cpu, monkeypatch):
    monkeypatch.setattr(lat._EventReducer, "COMPILED_ON_CPU", compiled_on_cpu)
    plain, split, _ = pair
    calib_tokens, ids = toks(6, seed=1), toks()
    valid = lat.valid_mask(*ids.shape, exclude_first_token=True)
    valid[2, 4:7] = False
    cals = [lat.calibrate(m, calib_tokens, lat.valid_mask(*calib_tokens.shape, True), batch_size=4, progress=False)
            for m in (plain, split)]
    np.testing.assert_array_equal(cals[0].mu, cals[1].mu)
    np.testing.assert_array_equal(cals[0].sigma, cals[1].sigma)
    kw = dict(target_profile="baseline_profile", z_floor=1.0, reference_tau=2.5, batch_size=2, progress=False, g=1.3)
    a, b = (lat.rate_matched_lattice(m, ids, valid, cals[0], 0.02, **kw) for m in (plain, split))
    for d in lat.SPIKE_DEFS:
        np.testing.assert_array_equal(a.counts[d], b.counts[d])
        np.testing.assert_array_equal(a.thresholds[d].tau, b.thresholds[d].tau)
    for d in lat.SPIKE_DEFS:
        np.testing.assert_array_equal(a.reference_rates[d], b.reference_rates[d])
    assert hooks.hook_count(split) == 0


def test_event_statistics_on_their_own_device_are_views():
    """A run on one device copies no statistics: each layer's rows are views of the reducer's tensors."""
    cal = lat.Calibration(np.arange(6.0).reshape(2, 3), np.ones((2, 3)), 10)
    red = lat._EventReducer(cal, 1.0, 2.5, window=4, device="cpu")
    st = red.stats(1, torch.device("cpu"))
    assert st.mu.data_ptr() == red.mu[1].data_ptr() and st.lo.data_ptr() == red.lo[1].data_ptr()
    assert red.stats(1, torch.device("cpu")) is st  # cached
    mask = lat._BatchMask()
    valid = torch.ones(2, 4, dtype=torch.bool)
    mask.set(valid)
    assert mask.on(torch.device("cpu")) is valid


@pytest.mark.parametrize("mode", ["zero", "mean", "clip"])
def test_ma_edits_change_the_logits_identically(pair, mode):
    plain, split, _ = pair
    ids, calib = toks(), toks(3, seed=2)
    site = dict(layers=[0, 1, 2], positions=[0, 3], dims=[1, 5, 7])
    means = [iv.site_means(m, calib, batch_size=2, **site) for m in (plain, split)]
    np.testing.assert_array_equal(means[0], means[1])
    out = []
    for m in (plain, split):
        with iv.edit_sites(m, mode=mode, ma_clip_multiple=2.0, values=means[0] if mode == "mean" else None, **site):
            out.append(logits(m, ids))
    assert torch.equal(out[0], out[1])
    assert not torch.equal(out[0], logits(plain, ids))  # the edit did something
    assert hooks.hook_count(split) == 0


def test_layer_edits_on_an_offloaded_layer_are_identical(pair):
    """The factorial factors and rigidity reduction at layer 1, whose weights are offloaded in the split model."""
    plain, split, _ = pair
    ids = toks()
    edits = (lambda m: iv.norm_weight_mean(m, 1), lambda m: iv.norm_weight_mean(m, 1, "attn"),
             lambda m: iv.remove_mlp(m, 1, [0, 2]), lambda m: iv.rigidity_reduction(m, 1, [0], 0.0, 0.25))
    for edit in edits:
        out = []
        for m in (plain, split):
            with edit(m):
                out.append(logits(m, ids))
        assert torch.equal(out[0], out[1])
        assert not torch.equal(out[0], logits(plain, ids))
    assert torch.equal(logits(split, ids), logits(plain, ids))  # every edit undone


@pytest.mark.parametrize("where,layers", [("mlp", None), ("attn", None), ("mlp", [1, 2])])
def test_gain_hooks_give_identical_logits(pair, where, layers):
    plain, split, _ = pair
    ids = toks()
    out = []
    for m in (plain, split):
        with hooks.gain(m, 1.7, where, layers):
            out.append(logits(m, ids))
    assert torch.equal(out[0], out[1])
    nll = [scoring.window_nll(m, ids, 2, g=1.7, where=where, layers=layers) for m in (plain, split)]
    np.testing.assert_array_equal(nll[0], nll[1])


def test_residual_scan_is_identical(pair):
    plain, split, _ = pair
    a, b = (massive.scan(m, toks(), ma_top_k=3, batch_size=2, progress=False) for m in (plain, split))
    for field in ("top_abs", "top_val", "pos", "dim", "median", "cos_prev"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


@pytest.mark.parametrize("strategy", P.DEVICE_MAPS)
def test_load_model_with_a_device_map(strategy):
    plain = load_model("tiny-gemma3", dtype="float32", device="cpu", seed=4, device_map=None)
    lm = load_model("tiny-gemma3", dtype="float32", device="not-a-device", seed=4, device_map=strategy)  # ignored
    assert lm.info["device_map"] and not lm.model.training
    assert input_device(lm.model).type == ("cuda" if CUDA else "cpu")
    ids = toks()
    exact = dict(rtol=1e-4, atol=1e-5) if CUDA else dict(rtol=0, atol=0)  # the GPU rounds differently
    torch.testing.assert_close(logits(lm.model, ids), logits(plain.model, ids), **exact)


def test_load_model_from_a_folder_with_an_offloading_device_map(tmp_path):
    """A ``save_pretrained`` folder goes through ``from_pretrained(device_map=...)``, disk offload included."""
    from tokenizers import Tokenizer, models as tm
    from transformers import PreTrainedTokenizerFast

    plain = load("tiny-llama", seed=2)
    plain.model.save_pretrained(tmp_path / "m")
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(tm.WordLevel({"<unk>": 0}, unk_token="<unk>"))
                            ).save_pretrained(tmp_path / "m")
    dmap = device_map(plain.model, dict.fromkeys(OFFLOADED["tiny-llama"], "disk"))
    lm = load_model(str(tmp_path / "m"), dtype="float32", device="cpu", seed=0, device_map=dmap)
    assert lm.model.model.embed_tokens.weight.device.type == "meta"
    assert input_device(lm.model) == torch.device("cpu")
    ids = toks()
    assert torch.equal(logits(lm.model, ids), logits(plain.model, ids))


def test_input_device_of_a_model_on_one_device():
    assert input_device(load("tiny-gpt2").model) == torch.device("cpu")


def test_device_map_param():
    assert P.validate({})["device_map"] is None
    assert P.validate({"device_map": "balanced_low_0"})["device_map"] == "balanced_low_0"
    for bad in ("cuda", "cpu", "Auto"):
        with pytest.raises(P.ParamsError, match=r"'device_map'.*must be one of \['auto', 'balanced'"):
            P.validate({"device_map": bad})
    with pytest.raises(P.ParamsError, match="'device_map' must be str"):
        P.validate({"device_map": 0})


@pytest.mark.skipif(not CUDA, reason="needs a GPU: the CPU / GPU split")
def test_a_cpu_gpu_split_matches_the_cpu(tmp_path):
    """Layer 1 and the LM head on the GPU, the rest on the CPU (main device CPU, so the CPU modules run
    there): hooks see activations on two devices. Matmuls round differently on the GPU: close, not equal."""
    plain, split = tiny("tiny-llama", 1), tiny("tiny-llama", 1)
    dmap = device_map(split, {"model.layers.1": 0, "lm_head": 0})
    split = dispatch_model(split, dmap, main_device="cpu", skip_keys=list(split._skip_keys_device_placement))
    assert split.model.layers[1].mlp.down_proj.weight.device.type == "cuda"
    ids, calib = toks(), toks(6, seed=1)
    close = dict(rtol=1e-4, atol=1e-5)
    cals = [lat.calibrate(m, calib, lat.valid_mask(*calib.shape, True), batch_size=4, progress=False)
            for m in (plain, split)]
    np.testing.assert_allclose(cals[0].mu, cals[1].mu, **close)
    valid = lat.valid_mask(*ids.shape, True)
    ev = [lat.collect_events(m, ids, valid, cals[0], z_floor=-np.inf, reference_tau=2.5, batch_size=2, progress=False)
          for m in (plain, split)]
    for l in range(3):
        np.testing.assert_array_equal(ev[0].site[l], ev[1].site[l])
        np.testing.assert_allclose(ev[0].z[l], ev[1].z[l], **close)
    site = dict(layers=[0, 1, 2], positions=[0, 3], dims=[1, 5, 7])
    for edit in (lambda m: iv.edit_sites(m, mode="zero", ma_clip_multiple=2.0, **site), lambda m: hooks.gain(m, 1.7)):
        out = []
        for m in (plain, split):
            with edit(m):
                out.append(logits(m, ids))
        torch.testing.assert_close(out[0], out[1], **close)
    np.testing.assert_allclose(scoring.window_nll(plain, ids, 2), scoring.window_nll(split, ids, 2), **close)
    a, b = (massive.scan(m, ids, ma_top_k=3, batch_size=2, progress=False) for m in (plain, split))
    np.testing.assert_allclose(a.cos_prev, b.cos_prev, **close)
