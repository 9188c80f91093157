"""Tiny test models for the unit tests: any registry model in float32 on the CPU, and a tiny-llama with
a planted massive activation (shared by the tests of ``massive``, ``interventions`` and ``ma_experiments``)."""

import numpy as np
import torch

from avalanche_nb import hooks, massive, models


def load(name: str, seed: int = 0):
    """A test model in float32 on the CPU (a ``tiny-*`` one initialised with ``seed``)."""
    return models.load_model(name, dtype="float32", device="cpu", seed=seed, device_map=None)


PLANT_LAYER, PLANT_DIM, MARK = 1, 5, 0  # the MA appears at layer 1's output, dim 5, token 0


def planted_llama():
    """tiny-llama whose token 0 (id 1) gets a huge dim PLANT_DIM from layer PLANT_LAYER's MLP on.

    Residual dim MARK is non-zero only at token 0 (its embedding is the only one with it, and no block
    writes to it); one MLP unit of layer PLANT_LAYER reads it and writes 100 × its square into dim PLANT_DIM.
    """
    model = load("tiny-llama", seed=3).model
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


def scan(model, toks, ma_top_k, batch_size=8, sinks=False):
    return massive.scan(model, toks, ma_top_k=ma_top_k, batch_size=batch_size, progress=False, sinks=sinks)


def layer_outputs(model, toks):
    out = {}
    keep = hooks.Hook("resid.out", lambda l, h: out.__setitem__(l, h.detach().clone()))
    with hooks.attach(model, keep), torch.no_grad():
        model.base_model(input_ids=torch.as_tensor(toks), use_cache=False)
    return out
