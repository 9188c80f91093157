"""Edits of massive activations, as context managers that register hooks and always remove them.

* :func:`edit_sites` — at decoder-layer outputs, set the MA sites (positions × dims) to zero, to their
  mean over a calibration slice (:func:`site_means`), or clip them to a multiple of the median |h|.
* :func:`norm_weight_mean` / :func:`remove_mlp` — the two factors of the ME-layer factorial ablation:
  the pre-MLP norm's weight replaced by its mean; the MLP's contribution to the residual removed at
  the MA token(s).
* :func:`rigidity` — the ME_Layer authors' rigidity reduction: after a layer's input norm, scale the
  largest ``mask_rate · d_model`` dims of the MA token's normed hidden state by ``alpha``.

Edits act only on forward passes that start at position 0 (no key/value cache yet): the cached
continuation pass of multiple-choice scoring never re-edits its own first token, while the cache it
reads was computed under the edit.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import hooks
from .massive import TOKEN_CLASSES
from .options import MA_INTERVENTIONS



def _fresh_pass_tracker(model: nn.Module, state: dict):
    """Pre-hook on the decoder stack: ``state["fresh"]`` is True while a pass without a cache runs."""
    def hook(_m, _args, kwargs):
        past = kwargs.get("past_key_values")
        state["fresh"] = past is None or past.get_seq_length() == 0
    return model.base_model.register_forward_pre_hook(hook, with_kwargs=True)


@contextmanager
def _edit_outputs(model: nn.Module, edits: list[tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]]
                  ) -> Iterator[None]:
    """Replace each module's output ``out`` (or ``out[0]``) by ``fn(out)`` during passes without a cache;
    every hook, the fresh-pass tracker included, is removed on exit."""
    state = {"fresh": True}

    def editor(fn):
        def hook(_m, _args, output):
            if not state["fresh"]:
                return None
            if isinstance(output, tuple):
                return (fn(output[0]),) + tuple(output[1:])
            return fn(output)
        return hook

    with hooks._hooks(lambda: [_fresh_pass_tracker(model, state)]
                      + [module.register_forward_hook(editor(fn)) for module, fn in edits]):
        yield


def check_alpha(alpha: float) -> float:
    """A rigidity factor, which must lie in [0, 1]."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"rigidity alpha must lie in [0, 1], got {alpha}")
    return float(alpha)


def _check_sites(positions: Sequence[int], dims: Sequence[int]) -> tuple[list[int], list[int]]:
    positions, dims = [int(p) for p in positions], [int(d) for d in dims]
    if not positions or not dims:
        raise ValueError("no MA sites to edit: positions and dims must be non-empty")
    return positions, dims


def _median_abs(h: torch.Tensor) -> torch.Tensor:
    """Median |h| of each sequence of h [B, T, d] -> [B] (interpolated, as in :func:`massive.scan`)."""
    return torch.quantile(h.float().abs().reshape(h.shape[0], -1), 0.5, dim=1)


@contextmanager
def edit_sites(model: nn.Module, layers: Sequence[int], positions: Sequence[int], dims: Sequence[int],
               mode: str, values: np.ndarray | None = None, clip_multiple: float = 10.0) -> Iterator[None]:
    """Edit ``h[l][:, positions, dims]`` at the output of every layer in ``layers``.

    ``mode``: ``zero``; ``mean`` (``values`` float [len(layers), len(dims)], e.g. :func:`site_means`);
    ``clip`` (to ``± clip_multiple × median |h[l]|`` of the sequence). ``none`` edits nothing.
    """
    if mode == "none":
        yield
        return
    if mode not in MA_INTERVENTIONS:
        raise ValueError(f"unknown intervention {mode!r}; choose one of {('none',) + MA_INTERVENTIONS}")
    positions, dims = _check_sites(positions, dims)
    layers = [int(l) for l in layers]
    if mode == "mean":
        values = np.asarray(values, dtype=float)
        if values.shape != (len(layers), len(dims)):
            raise ValueError(f"mean values must be [layers, dims] = {(len(layers), len(dims))}, got {values.shape}")
    if mode == "clip" and not clip_multiple > 0:
        raise ValueError(f"clip_multiple must be > 0, got {clip_multiple}")
    arch = hooks.architecture(model)
    p_idx, d_idx = torch.tensor(positions)[:, None], torch.tensor(dims)[None, :]

    def editor(i: int):
        def fn(h: torch.Tensor) -> torch.Tensor:
            h = h.clone()
            site = h[:, p_idx, d_idx]  # [B, P, D]
            if mode == "zero":
                new = torch.zeros_like(site)
            elif mode == "mean":
                new = torch.as_tensor(values[i], dtype=h.dtype, device=h.device).expand_as(site)
            else:
                c = (clip_multiple * _median_abs(h)).to(h.dtype)[:, None, None]
                new = torch.maximum(torch.minimum(site, c), -c)
            h[:, p_idx, d_idx] = new
            return h
        return fn

    with _edit_outputs(model, [(arch.layers[l], editor(i)) for i, l in enumerate(layers)]):
        yield


@torch.no_grad()
def site_means(model: nn.Module, tokens: np.ndarray, layers: Sequence[int], positions: Sequence[int],
               dims: Sequence[int], batch_size: int = 8) -> np.ndarray:
    """Mean of ``h[l][:, positions, dims]`` over the windows ``tokens`` [N, T] and the positions:
    float64 [len(layers), len(dims)]."""
    positions, dims = _check_sites(positions, dims)
    layers = [int(l) for l in layers]
    sums = np.zeros((len(layers), len(dims)))
    row = {l: i for i, l in enumerate(layers)}

    def tap(layer: int, h: torch.Tensor) -> None:
        if layer in row:
            sums[row[layer]] += h[:, positions][:, :, dims].double().sum((0, 1)).cpu().numpy()

    device = next(model.parameters()).device
    with hooks.residual_tap(model, tap):
        for s in range(0, len(tokens), batch_size):
            model.base_model(input_ids=torch.as_tensor(np.array(tokens[s:s + batch_size]), device=device), use_cache=False)
    return sums / (len(tokens) * len(positions))


@contextmanager
def norm_weight_mean(model: nn.Module, layer: int, which: str = "mlp") -> Iterator[None]:
    """Replace the weight of ``layer``'s pre-MLP (``which="mlp"``) or pre-attention norm by its mean.

    Gemma's RMSNorm scales by ``1 + weight``, so the mean of the weight is the mean of the scale there too.
    """
    arch = hooks.architecture(model)
    norm = (arch.mlp_norm if which == "mlp" else arch.attn_norm)[layer]
    weight = getattr(norm, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 1:
        raise hooks.UnsupportedArchitectureError(f"{arch.model_type}: layer {layer}'s {which} norm has no weight vector")
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.fill_(float(saved.float().mean()))
        yield
    finally:
        with torch.no_grad():
            weight.copy_(saved)


@contextmanager
def remove_mlp(model: nn.Module, layer: int, positions: Sequence[int]) -> Iterator[None]:
    """Zero ``layer``'s MLP contribution to the residual stream (after Gemma's post-norm) at ``positions``."""
    arch = hooks.architecture(model)
    positions = [int(p) for p in positions]

    def fn(out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[:, positions] = 0
        return out

    with _edit_outputs(model, [(arch.mlp_out[layer], fn)]):
        yield


def rigidity_k(mask_rate: float, d_model: int) -> int:
    """Dims scaled by :func:`rigidity`: ``int(mask_rate · d_model)`` (the authors' rounding), at least 1."""
    if not 0 < mask_rate <= 1:
        raise ValueError(f"mask_rate must lie in (0, 1], got {mask_rate}")
    k = int(mask_rate * d_model)
    if k < 1:
        raise ValueError(f"mask_rate {mask_rate} selects no dim of d_model={d_model} (int(mask_rate·d) = 0)")
    return k


@contextmanager
def rigidity(model: nn.Module, layer: int, positions: Sequence[int], alpha: float, mask_rate: float) -> Iterator[None]:
    """Rigidity reduction at ``layer``: after its input norm, multiply the ``rigidity_k`` largest-|x| dims
    of each MA token's normed hidden state by ``alpha`` in [0, 1] (0 zeroes them, as the authors' code).

    The dims are chosen per sequence (the authors average |x| over the batch, mixing sequences).
    """
    alpha = check_alpha(alpha)
    arch = hooks.architecture(model)
    k = rigidity_k(mask_rate, model.config.hidden_size)
    positions = [int(p) for p in positions]

    def fn(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        for p in positions:
            idx = x[:, p].abs().topk(k, dim=-1).indices
            scale = torch.ones_like(x[:, p]).scatter_(1, idx, alpha)
            x[:, p] = x[:, p] * scale
        return x

    with _edit_outputs(model, [(arch.attn_norm[layer], fn)]):
        yield


def loss_change_by_class(nll_before: np.ndarray, nll_after: np.ndarray, classes: np.ndarray) -> pd.DataFrame:
    """Mean next-token loss before/after an edit, grouped by token class.

    ``nll_*`` float [N, T-1] (entry t scores token t+1), ``classes`` str [N, T]. Each scored position is
    grouped twice: by its input token (``class_by="input"``, position t, so ``first`` is the prediction
    made at the first token) and by its target (``class_by="target"``, position t+1).
    Rows: class_by, token_class, n, before, after, delta (mean after − before) and delta_se.
    """
    nll_before, nll_after = np.asarray(nll_before, float), np.asarray(nll_after, float)
    if nll_before.shape != nll_after.shape or classes.shape != (nll_before.shape[0], nll_before.shape[1] + 1):
        raise ValueError(f"shapes disagree: nll {nll_before.shape} / {nll_after.shape}, classes {classes.shape}")
    delta = nll_after - nll_before
    rows = []
    for by, cls in (("input", classes[:, :-1]), ("target", classes[:, 1:])):
        for c in TOKEN_CLASSES:
            m = cls == c
            n = int(m.sum())
            if n == 0:
                continue
            se = float(delta[m].std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
            rows.append({"class_by": by, "token_class": c, "n": n, "before": float(nll_before[m].mean()),
                         "after": float(nll_after[m].mean()), "delta": float(delta[m].mean()), "delta_se": se})
    return pd.DataFrame(rows)
