"""Edits of massive activations, as context managers that attach hooks and always remove them.

* :func:`edit_sites` — at decoder-layer outputs (``resid.out``), set the MA sites (positions × dims)
  to zero, to their mean over a calibration slice (:func:`site_means`), or clip them to a multiple of
  the median |h|.
* :func:`norm_weight_mean` / :func:`remove_mlp` — the two factors of the ME-layer factorial ablation:
  the pre-MLP norm's weight replaced by its mean; the MLP's contribution to the residual removed at
  the MA token(s).
* :func:`rigidity_reduction` — the ME_Layer authors' method: after a layer's input norm, scale the
  largest ``mask_rate · d_model`` dims of the MA token's normed hidden state by ``alpha``.

Edits act only on forward passes that start at position 0 (no key/value cache yet: ``fresh_only``
hooks): the cached continuation pass of multiple-choice scoring never re-edits its own first token,
while the cache it reads was computed under the edit.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from . import hooks
from .models import input_device
from .options import MA_INTERVENTIONS


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


def _layer_rows(layers: Sequence[int]) -> dict[int, int]:
    """Each layer's row in per-layer arrays (its index in ``layers``); a layer may appear once."""
    row = {int(l): i for i, l in enumerate(layers)}
    if len(row) != len(layers):
        raise ValueError(f"layers {list(layers)} repeat a layer")
    return row


def _median_abs(h: torch.Tensor) -> torch.Tensor:
    """Median |h| of each sequence of h [B, T, d] -> [B] (interpolated, as in :func:`massive.scan`)."""
    return torch.quantile(h.float().abs().reshape(h.shape[0], -1), 0.5, dim=1)


class _SiteIndex:
    """Index tensors of MA sites, positions [P, 1] and dims [1, D], made once per device they are used on."""

    def __init__(self, positions: Sequence[int], dims: Sequence[int]):
        self._on = {torch.device("cpu"): (torch.tensor(positions)[:, None], torch.tensor(dims)[None, :])}

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions, dims) on ``device``, copied there on first use."""
        if device not in self._on:
            self._on[device] = tuple(t.to(device) for t in self._on[torch.device("cpu")])
        return self._on[device]


@contextmanager
def edit_sites(model: nn.Module, *, layers: Sequence[int], positions: Sequence[int], dims: Sequence[int],
               mode: str, ma_clip_multiple: float, values: np.ndarray | None = None) -> Iterator[None]:
    """Edit ``h[l][:, positions, dims]`` at the output of every layer ``l`` in ``layers``.

    ``mode`` (one of ``ma_interventions``): ``zero``; ``mean`` (``values`` float [len(layers), len(dims)],
    e.g. :func:`site_means`); ``clip`` (to ``± ma_clip_multiple × median |h[l]|`` of the sequence).
    ``none`` edits nothing.
    """
    if mode == "none":
        yield
        return
    if mode not in MA_INTERVENTIONS:
        raise ValueError(f"unknown intervention {mode!r}; choose one of {('none',) + MA_INTERVENTIONS}")
    positions, dims = _check_sites(positions, dims)
    row = _layer_rows(layers)
    if mode == "mean":
        values = np.asarray(values, dtype=float)
        if values.shape != (len(row), len(dims)):
            raise ValueError(f"mean values must be [layers, dims] = {(len(row), len(dims))}, got {values.shape}")
    if mode == "clip" and not ma_clip_multiple > 0:
        raise ValueError(f"ma_clip_multiple must be > 0, got {ma_clip_multiple}")
    index = _SiteIndex(positions, dims)

    def edit(layer: int, h: torch.Tensor) -> torch.Tensor:
        h = h.clone()
        p_idx, d_idx = index.on(h.device)  # where this layer runs (a device map may split the model)
        site = h[:, p_idx, d_idx]  # [B, P, D]
        if mode == "zero":
            new = torch.zeros_like(site)
        elif mode == "mean":
            new = torch.as_tensor(values[row[layer]], dtype=h.dtype, device=h.device).expand_as(site)
        else:
            c = (ma_clip_multiple * _median_abs(h)).to(h.dtype)[:, None, None]
            new = torch.maximum(torch.minimum(site, c), -c)
        h[:, p_idx, d_idx] = new
        return h

    with hooks.attach(model, hooks.Hook("resid.out", edit, layers=list(row), fresh_only=True)):
        yield


@torch.no_grad()
def site_means(model: nn.Module, tokens: np.ndarray, *, layers: Sequence[int], positions: Sequence[int],
               dims: Sequence[int], batch_size: int) -> np.ndarray:
    """Mean of ``h[l][:, positions, dims]`` over the windows ``tokens`` [N, T] and the positions, with
    ``batch_size`` windows per forward pass: float64 [len(layers), len(dims)]."""
    positions, dims = _check_sites(positions, dims)
    row = _layer_rows(layers)
    sums = np.zeros((len(row), len(dims)))

    def tap(layer: int, h: torch.Tensor) -> None:
        sums[row[layer]] += h[:, positions][:, :, dims].double().sum((0, 1)).cpu().numpy()

    device = input_device(model)
    with hooks.attach(model, hooks.Hook("resid.out", tap, layers=list(row))):
        for s in range(0, len(tokens), batch_size):
            model.base_model(input_ids=torch.as_tensor(np.array(tokens[s:s + batch_size]), device=device), use_cache=False)
    return sums / (len(tokens) * len(positions))


@contextmanager
def norm_weight_mean(model: nn.Module, layer: int, which: str = "mlp") -> Iterator[None]:
    """Replace the weight of ``layer``'s pre-MLP (``which="mlp"``) or pre-attention norm by its mean.

    A weight swap, not a hook: every pass inside the block, cached or not, uses the mean weight.
    Gemma's RMSNorm scales by ``1 + weight``, so the mean of the weight is the mean of the scale there too.
    """
    arch = hooks.architecture(model)
    norm = (arch.mlp_norm if which == "mlp" else arch.attn_norm)[layer]
    weight = getattr(norm, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 1:
        raise hooks.UnsupportedArchitectureError(f"{arch.model_type}: layer {layer}'s {which} norm has no weight vector")
    offload = _offload_hook(norm)
    if offload is not None:  # the weight is on "meta" between passes; accelerate loads it for each pass
        with _fill_each_pass(norm, float(offload.weights_map["weight"].float().mean())):
            yield
        return
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.fill_(float(saved.float().mean()))
        yield
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def _offload_hook(module: nn.Module):
    """accelerate's hook that loads ``module``'s offloaded (CPU / disk) weights for each forward pass, or
    None when its weights stay resident on a device."""
    hook = getattr(module, "_hf_hook", None)
    for h in getattr(hook, "hooks", None) or [hook]:  # a SequentialHook chains several
        if getattr(h, "offload", False) and getattr(h, "weights_map", None) is not None:
            return h
    return None


@contextmanager
def _fill_each_pass(module: nn.Module, value: float) -> Iterator[None]:
    """Fill ``module.weight`` with ``value`` in every forward pass of an offloaded module.

    accelerate's hook loads a fresh copy of the offloaded weight before the module's own forward
    (``_old_forward``) and drops it after, so the fill goes between the two and the stored weight is
    never touched.
    """
    original = module._old_forward

    def forward(*args, **kwargs):
        with torch.no_grad():
            module.weight.fill_(value)
        return original(*args, **kwargs)

    module._old_forward = forward
    try:
        yield
    finally:
        module._old_forward = original


@contextmanager
def remove_mlp(model: nn.Module, layer: int, positions: Sequence[int]) -> Iterator[None]:
    """Zero ``layer``'s MLP contribution to the residual stream (``mlp.out``, after Gemma's post-norm)
    at ``positions``."""
    positions = [int(p) for p in positions]

    def zero(_layer: int, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[:, positions] = 0
        return out

    with hooks.attach(model, hooks.Hook("mlp.out", zero, layers=[layer], fresh_only=True)):
        yield


def rigidity_k(mask_rate: float, d_model: int) -> int:
    """Dims scaled by :func:`rigidity_reduction`: ``int(mask_rate · d_model)`` (the authors' rounding), at least 1."""
    if not 0 < mask_rate <= 1:
        raise ValueError(f"mask_rate must lie in (0, 1], got {mask_rate}")
    k = int(mask_rate * d_model)
    if k < 1:
        raise ValueError(f"mask_rate {mask_rate} selects no dim of d_model={d_model} (int(mask_rate·d) = 0)")
    return k


def check_rigidity_grid(alphas: Sequence[float], mask_rates: Sequence[float], d_model: int) -> None:
    """Fail before any work on an alpha outside [0, 1] or a mask rate that selects no dim."""
    for a in alphas:
        check_alpha(a)
    for r in mask_rates:
        rigidity_k(r, d_model)


@contextmanager
def rigidity_reduction(model: nn.Module, layer: int, positions: Sequence[int], alpha: float, mask_rate: float
                       ) -> Iterator[None]:
    """Rigidity reduction at ``layer``: after its input norm (``attn.norm``), multiply the ``rigidity_k``
    largest-|x| dims of each MA token's normed hidden state by ``alpha`` in [0, 1] (0 zeroes them, as
    the authors' code).

    The dims are chosen per sequence (the authors average |x| over the batch, mixing sequences).
    """
    alpha = check_alpha(alpha)
    k = rigidity_k(mask_rate, model.config.hidden_size)
    positions = [int(p) for p in positions]

    def scale(_layer: int, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        for p in positions:
            idx = x[:, p].abs().topk(k, dim=-1).indices
            factor = torch.ones_like(x[:, p]).scatter_(1, idx, alpha)
            x[:, p] = x[:, p] * factor
        return x

    with hooks.attach(model, hooks.Hook("attn.norm", scale, layers=[layer], fresh_only=True)):
        yield
