"""Massive activations (MAs) in the residual stream: per-layer profiles, the emergence (ME) layer and
propagation.

Conventions (DESIGN.md §5):

* ``h[l]`` is decoder layer ``l``'s output [B, T, d_model]; layer ``-1`` is the input of layer 0
  (the embeddings, scaled as the model scales them), so a jump at layer 0 is measurable.
* Per layer and probe sequence: the ``ma_top_k`` largest ``|h|`` with token position and feature dim, the
  median ``|h|`` over all T × d entries (interpolated median), and ``ratio = top1 / median``.
* Criteria for a massive scalar ``a``: ``sun`` (Sun et al.): ``|a| > 100`` and ``|a| / median >= 1000``;
  ``relaxed`` (seed 003, small models): ``|a| / median >= ma_relaxed_ratio`` with no absolute floor.
  A layer meets a criterion when its *mean* top-1 and mean ratio over the probe sequences do.
* ME layer: the first layer meeting the criterion (``None`` when none does: "none found", never an
  arbitrary layer), reported with the layer of the largest jump in mean log ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import hooks
from .models import input_device
from .options import MA_CRITERIA

SUN_ABS, SUN_RATIO = 100.0, 1000.0


@dataclass
class Scan:
    """Per-layer reductions of one forward pass over a probe slice (layer index ``i`` is layer ``i - 1``).

    Attributes
    ----------
    top_abs, top_val : float64 [L + 1, N, k]
        ``|h|`` and signed ``h`` of the ``k`` (``ma_top_k``) largest-magnitude entries, largest first.
    pos, dim : int64 [L + 1, N, k]
        Their token position and feature dim.
    median : float64 [L + 1, N]
        Median ``|h|`` over the sequence's T × d entries.
    cos_prev : float64 [L, N, T]
        ``cos(h[l-1][t], h[l][t])`` for l = 0..L-1 (``h[-1]`` the embeddings).
    sink : float64 [L, N, H] or None
        Attention mass on the first token, averaged over query positions 1..T-1 (eager attention).
    """

    top_abs: np.ndarray
    top_val: np.ndarray
    pos: np.ndarray
    dim: np.ndarray
    median: np.ndarray
    cos_prev: np.ndarray
    sink: np.ndarray | None = None

    @property
    def n_layers(self) -> int:
        return self.median.shape[0] - 1

    @property
    def layers(self) -> np.ndarray:
        """Layer labels ``-1 .. L-1`` of the first axis."""
        return np.arange(-1, self.n_layers)

    @property
    def ratio(self) -> np.ndarray:
        """top-1 |h| / median |h|, float64 [L + 1, N]."""
        return self.top_abs[..., 0] / self.median


def sequence_median(a: torch.Tensor) -> torch.Tensor:
    """The median of each row of ``a`` [B, n] (interpolated, as numpy's; torch.quantile refuses rows over
    2**24 entries, where the lower median of ``torch.median`` is taken instead)."""
    return torch.quantile(a, 0.5, dim=1) if a.shape[1] <= 16_000_000 else a.median(1).values


def _reduce(h: torch.Tensor, k: int) -> tuple[np.ndarray, ...]:
    """top-k |h| (values, signed values, positions, dims) and the median |h| of each sequence of h [B, T, d]."""
    B, T, d = h.shape
    flat = h.detach().float().reshape(B, T * d)
    a = flat.abs()
    vals, idx = a.topk(k, dim=1)
    signed = flat.gather(1, idx)
    median = sequence_median(a)
    return (vals.double().cpu().numpy(), signed.double().cpu().numpy(), (idx // d).cpu().numpy(),
            (idx % d).cpu().numpy(), median.double().cpu().numpy())


@torch.no_grad()
def scan(model: nn.Module, tokens: np.ndarray, *, ma_top_k: int, batch_size: int, progress: bool,
         sinks: bool = False) -> Scan:
    """Profile the residual stream of ``model`` on ``tokens`` int [N, T] (full windows, no padding).

    Only the reductions of :class:`Scan` are kept (never the full hidden states): ``ma_top_k``
    entries per layer and sequence, ``batch_size`` sequences per forward pass. ``sinks=True`` runs
    the pass with eager attention and also records the attention-sink mass per layer and head.
    Any edits attached around the call (:mod:`avalanche_nb.interventions`) act on this pass.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[0] < 1:
        raise ValueError(f"tokens must be [N, T] with N >= 1, got shape {tokens.shape}")
    N, T = tokens.shape
    if T < ma_top_k:
        raise ValueError(f"the probe windows have {T} tokens, fewer than ma_top_k={ma_top_k}: lengthen `window` "
                         f"or lower `ma_top_k`")
    if T < 2:
        raise ValueError("the probe windows need at least 2 tokens")
    L = len(hooks.decoder_layers(model))  # a profile needs only the decoder layers
    shape = (L + 1, N, ma_top_k)
    out = Scan(np.zeros(shape), np.zeros(shape), np.zeros(shape, np.int64), np.zeros(shape, np.int64),
               np.zeros((L + 1, N)), np.zeros((L, N, T)))
    state: dict = {}

    def record(i: int, h: torch.Tensor) -> None:
        """Row ``i`` of the scan: the embeddings (0) or layer ``i - 1``'s output."""
        hooks.check_finite(h, "the embeddings" if i == 0 else f"layer {i - 1}'s output")
        s = state["batch"]
        for arr, v in zip((out.top_abs, out.top_val, out.pos, out.dim, out.median), _reduce(h, ma_top_k)):
            arr[i, s] = v
        if i > 0:
            prev = state["prev"].to(h.device)  # the layer before may run on another device (a device map)
            out.cos_prev[i - 1, s] = F.cosine_similarity(prev.float(), h.float(), dim=-1).double().cpu().numpy()
        state["prev"] = h.detach()

    def sink(layer: int, w: torch.Tensor) -> None:
        """Attention mass on token 0 of weights w [B, H, T, T], mean over queries 1..T-1."""
        if out.sink is None:
            out.sink = np.zeros((L, N, w.shape[1]))
        out.sink[layer, state["batch"]] = w[:, :, 1:, 0].float().mean(-1).double().cpu().numpy()

    taps = [hooks.Hook("resid.in", lambda _layer, h: record(0, h), layers=[0]),
            hooks.Hook("resid.out", lambda layer, h: record(layer + 1, h))]
    if sinks:
        taps.append(hooks.Hook("attn.weights", sink))
    device = input_device(model)
    batches = range(0, N, batch_size)
    if progress:
        from tqdm.auto import tqdm
        batches = tqdm(batches, desc="scan", leave=False)
    with hooks.attach(model, *taps):
        for s0 in batches:
            state["batch"] = slice(s0, min(N, s0 + batch_size))
            model.base_model(input_ids=torch.as_tensor(np.array(tokens[state["batch"]]), device=device), use_cache=False)
    return out


# --------------------------------------------------------------------------------------------------
# profile and ME layer


def thresholds(ma_criterion: str, ma_relaxed_ratio: float) -> tuple[float, float]:
    """(|a| floor, ratio floor) of an MA criterion: sun (100, 1000) or relaxed (0, ma_relaxed_ratio)."""
    if ma_criterion not in MA_CRITERIA:
        raise ValueError(f"unknown MA criterion {ma_criterion!r}; choose one of {MA_CRITERIA}")
    return (SUN_ABS, SUN_RATIO) if ma_criterion == "sun" else (0.0, float(ma_relaxed_ratio))


def meets(top1: np.ndarray, ratio: np.ndarray, ma_criterion: str, ma_relaxed_ratio: float) -> np.ndarray:
    """bool, elementwise: a top-1 |h| and its top-1/median ratio meet the criterion."""
    abs_min, ratio_min = thresholds(ma_criterion, ma_relaxed_ratio)
    return (np.asarray(top1) > abs_min) & (np.asarray(ratio) >= ratio_min)


def layer_flags(s: Scan, ma_criterion: str, ma_relaxed_ratio: float) -> np.ndarray:
    """bool [L + 1]: the layer's mean top-1 and mean ratio over the probe sequences meet the criterion."""
    return meets(s.top_abs[..., 0].mean(1), s.ratio.mean(1), ma_criterion, ma_relaxed_ratio)


def modal(x: np.ndarray) -> int:
    """The most frequent value of an int array (the smallest among ties)."""
    vals, counts = np.unique(x, return_counts=True)
    return int(vals[np.argmax(counts)])


def profile_table(s: Scan, ma_relaxed_ratio: float) -> pd.DataFrame:
    """One row per layer (-1 = embeddings): top-1/2/3 and median |h| (mean, std over sequences), the
    ratio's mean, std, SEM and log10 mean, both criteria's flags, and the modal top-1 position and dim."""
    n = s.median.shape[1]
    ratio = s.ratio
    rows = {
        "layer": s.layers,
        **{f"top{r + 1}": s.top_abs[..., r].mean(1) for r in range(min(3, s.top_abs.shape[2]))},
        "top1_std": s.top_abs[..., 0].std(1), "median": s.median.mean(1), "median_std": s.median.std(1),
        "ratio": ratio.mean(1), "ratio_std": ratio.std(1),
        "ratio_sem": ratio.std(1, ddof=1) / np.sqrt(n) if n > 1 else np.full(len(ratio), np.nan),
        "log10_ratio": np.log10(ratio).mean(1),
        "sun": layer_flags(s, "sun", ma_relaxed_ratio), "relaxed": layer_flags(s, "relaxed", ma_relaxed_ratio),
        "top1_pos": [modal(p) for p in s.pos[..., 0]], "top1_dim": [modal(d) for d in s.dim[..., 0]],
        "top1_pos_share": [float(np.mean(p == modal(p))) for p in s.pos[..., 0]],
    }
    return pd.DataFrame(rows)


def topk_table(s: Scan, token_text: Sequence[Sequence[str]]) -> pd.DataFrame:
    """Every top-k entry: layer, seq, rank, value, abs, pos, dim, token (text), median, ratio."""
    Lp, N, k = s.top_abs.shape
    layer, seq, rank = np.meshgrid(s.layers, np.arange(N), np.arange(k), indexing="ij")
    pos = s.pos.ravel()
    return pd.DataFrame({
        "layer": layer.ravel(), "seq": seq.ravel(), "rank": rank.ravel(), "value": s.top_val.ravel(),
        "abs": s.top_abs.ravel(), "pos": pos, "dim": s.dim.ravel(),
        "token": [token_text[q][p] for q, p in zip(seq.ravel(), pos)],
        "median": np.repeat(s.median.ravel(), k), "ratio": (s.top_abs / s.median[..., None]).ravel()})


def me_layer(s: Scan, ma_criterion: str, ma_relaxed_ratio: float) -> dict:
    """The ME layer and the MA sites it creates, under criterion ``ma_criterion``.

    Returns a dict: ``criterion``, ``relaxed_ratio``, ``found``, ``me_layer`` (first layer meeting the criterion, or None),
    ``first_layer`` for both criteria, ``jump_layer`` (largest rise of mean log10 ratio from the layer
    before, embeddings included), ``ma_pos`` (modal top-1 position at the ME layer) with its share of
    sequences, and ``ma_dims``: the dims whose entry at ``ma_pos`` meets the criterion among the top-k
    in at least half of the sequences at some layer >= the ME layer, most frequent first.
    """
    abs_min, ratio_min = thresholds(ma_criterion, ma_relaxed_ratio)
    log_ratio = np.log10(s.ratio).mean(1)
    jump = int(np.argmax(np.diff(log_ratio)))  # diff index i is layer i (from layer i - 1)
    firsts = {}
    for c in MA_CRITERIA:
        hit = np.flatnonzero(layer_flags(s, c, ma_relaxed_ratio)[1:])  # decoder layers only
        firsts[c] = int(hit[0]) if hit.size else None
    out = {"criterion": ma_criterion, "relaxed_ratio": ma_relaxed_ratio, "first_layer": firsts, "jump_layer": jump,
           "jump_log10": float(np.diff(log_ratio)[jump]), "me_layer": firsts[ma_criterion],
           "found": firsts[ma_criterion] is not None}
    if not out["found"]:
        out.update(ma_pos=None, ma_pos_share=None, ma_dims=[], reason=(
            f"no decoder layer meets the {ma_criterion} criterion (mean top-1 > {abs_min:g} and ratio >= {ratio_min:g}); "
            f"largest mean ratio {float(s.ratio.mean(1)[1:].max()):.3g} at layer {int(np.argmax(s.ratio.mean(1)[1:]))}"))
        return out
    i = firsts[ma_criterion] + 1
    pos = modal(s.pos[i, :, 0])
    massive = (s.pos == pos) & (s.top_abs > abs_min) & (s.top_abs >= ratio_min * s.median[..., None])  # [L+1, N, k]
    n = s.median.shape[1]
    counts: dict[int, int] = {}
    for layer in range(i, s.median.shape[0]):
        for d in np.unique(s.dim[layer][massive[layer]]):
            share = int(np.sum(np.any(massive[layer] & (s.dim[layer] == d), axis=1)))
            counts[int(d)] = max(counts.get(int(d), 0), share)
    dims = sorted((d for d, c in counts.items() if 2 * c >= n), key=lambda d: (-counts[d], d))
    out.update(ma_pos=pos, ma_pos_share=float(np.mean(s.pos[i, :, 0] == pos)), ma_dims=dims)
    return out


def unusable(me: dict | None, failure: str | None = None) -> str | None:
    """Why a later phase cannot use a model's phase-06 record ``me`` (an entry of ``me_layer.json``'s
    ``models``; ``failure``: its entry in ``failures``), or None when its MA sites can be edited."""
    if failure is not None:
        return f"phase 06 could not load it: {failure}"
    if me is None:
        return "phase 06 has no record of it"
    if not me.get("found"):
        return f"no ME layer in phase 06: {me.get('reason', 'none found')}"
    if not me.get("ma_dims"):
        return "phase 06 found an ME layer but no MA dim recurring in half the probe sequences"
    return None


def propagation(s: Scan, ma_pos: int) -> pd.DataFrame:
    """Cosine similarity of each token's hidden state between successive layers, MA token vs the others.

    Rows: layer (0..L-1, similarity to the layer before), group (``ma`` / ``ordinary``), mean and std
    over sequences of the per-sequence value (ordinary: mean over every other position).
    """
    ma = s.cos_prev[:, :, ma_pos]
    ordinary = np.delete(s.cos_prev, ma_pos, axis=2).mean(2)
    rows = []
    for group, v in (("ma", ma), ("ordinary", ordinary)):
        for layer in range(s.cos_prev.shape[0]):
            rows.append({"layer": layer, "group": group, "cos": float(v[layer].mean()), "cos_std": float(v[layer].std())})
    return pd.DataFrame(rows)


@torch.no_grad()
def independent_scan(model: nn.Module, tokens: np.ndarray, ma_criterion: str, ma_relaxed_ratio: float) -> dict:
    """The ME layer, MA position and top-1 dim found without :func:`scan`: a cross-check of it.

    Reads HF's own ``output_hidden_states`` (no hooks of ours) for ``tokens`` int [N, T] in one forward
    pass and reduces them with numpy (exact max and median of |h| in float64). HF returns the last
    decoder layer's output after the final norm, so only layers 0 .. L-2 are scanned: it agrees with
    :func:`me_layer` when that finds no ME layer or one below L-1.

    Returns ``{"me_layer": None}`` when no scanned layer meets the criterion, else ``me_layer``,
    ``ma_pos`` (modal top-1 position at the ME layer) and ``top1_dim`` (modal top-1 dim there;
    :func:`me_layer` lists it among ``ma_dims``). Memory: float64 [L-1, N, T, d_model] on the host.
    """
    if model.config.num_hidden_layers < 2:
        raise ValueError("an independent scan needs at least 2 decoder layers (HF's last one is post-norm)")
    ids = torch.as_tensor(np.array(tokens), device=input_device(model))
    hs = model.base_model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
    # hidden_states[l + 1] is layer l's output, except the last, which HF returns after the final norm
    a = np.stack([h.abs().double().cpu().numpy() for h in hs[1:-1]])  # [L-1, N, T, d]
    flat = a.reshape(a.shape[0], a.shape[1], -1)
    top, med = flat.max(2), np.median(flat, axis=2)
    hit = meets(top.mean(1), (top / med).mean(1), ma_criterion, ma_relaxed_ratio)
    if not hit.any():
        return {"me_layer": None}
    me_l = int(np.argmax(hit))
    pos, dim = np.divmod(flat[me_l].argmax(1), a.shape[3])
    return {"me_layer": me_l, "ma_pos": int(np.bincount(pos).argmax()), "top1_dim": int(np.bincount(dim).argmax())}


def around_me_layer(profile: pd.DataFrame, me_info: dict, width: int = 2) -> pd.DataFrame:
    """The rows of a profile table (column ``model``, ``layer``) within ``width`` layers of each model's ME
    layer (the embeddings and the first layers when a model has none)."""
    keep = []
    for name, sel in profile.groupby("model", sort=False):
        me = (me_info.get(name) or {}).get("me_layer")
        centre = me if me is not None else -1
        keep.append(sel[(sel.layer >= centre - width) & (sel.layer <= centre + width)])
    return pd.concat(keep) if keep else profile.head(0)
