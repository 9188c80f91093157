"""Massive activations (MAs) in the residual stream: per-layer profiles, the emergence (ME) layer,
propagation, and the token classes their effects are grouped by.

Conventions (DESIGN.md §5):

* ``h[l]`` is decoder layer ``l``'s output [B, T, d_model]; layer ``-1`` is the input of layer 0
  (the embeddings, scaled as the model scales them), so a jump at layer 0 is measurable.
* Per layer and probe sequence: the ``k`` largest ``|h|`` with token position and feature dim, the
  median ``|h|`` over all T × d entries (interpolated median), and ``ratio = top1 / median``.
* Criteria for a massive scalar ``a``: ``sun`` (Sun et al.): ``|a| > 100`` and ``|a| / median >= 1000``;
  ``relaxed`` (seed 003, small models): ``|a| / median >= relaxed_ratio`` with no absolute floor.
  A layer meets a criterion when its *mean* top-1 and mean ratio over the probe sequences do.
* ME layer: the first layer meeting the criterion (``None`` when none does: "none found", never an
  arbitrary layer), reported with the layer of the largest jump in mean log ratio.
"""

from __future__ import annotations

import string
import unicodedata
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import hooks
from .options import MA_CRITERIA

SUN_ABS, SUN_RATIO = 100.0, 1000.0
TOKEN_CLASSES = ("first", "punctuation", "function", "content")

# A fixed English function-word list (articles, pronouns, prepositions, conjunctions, auxiliaries,
# determiners, common particles); lower case, matched after stripping the tokenizer's space marker.
STOP_WORDS = frozenset("""
a an the this that these those some any each every no all both either neither much many more most few
fewer less least several such what which who whom whose whichever whatever whoever
i me my mine myself you your yours yourself yourselves he him his himself she her hers herself it its
itself we us our ours ourselves they them their theirs themselves one ones
of in on at by for with about against between into through during before after above below to from
up down out off over under again further than via per upon within without onto toward towards among
across along around behind beside besides beyond near since until unto despite throughout
and or but nor so yet if then else because although though while whereas unless whether as
is am are was were be been being have has had having do does did doing will would shall should
can could may might must ought
not there here when where why how also just only very too again ever never once
""".split())

_SPACE_MARKERS = "Ġ▁ \t\n·⏎Ċ"


class NoMassiveActivationError(ValueError):
    """No layer meets the MA criterion, so there is no ME layer to intervene at."""


@dataclass
class Scan:
    """Per-layer reductions of one forward pass over a probe slice (layer index ``i`` is layer ``i - 1``).

    Attributes
    ----------
    top_abs, top_val : float64 [L + 1, N, k]
        ``|h|`` and signed ``h`` of the ``k`` largest-magnitude entries, largest first.
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


def _reduce(h: torch.Tensor, k: int) -> tuple[np.ndarray, ...]:
    """top-k |h| (values, signed values, positions, dims) and the median |h| of each sequence of h [B, T, d]."""
    B, T, d = h.shape
    flat = h.detach().float().reshape(B, T * d)
    a = flat.abs()
    vals, idx = a.topk(k, dim=1)
    signed = flat.gather(1, idx)
    median = torch.quantile(a, 0.5, dim=1) if a.shape[1] <= 16_000_000 else a.median(1).values
    return (vals.double().cpu().numpy(), signed.double().cpu().numpy(), (idx // d).cpu().numpy(),
            (idx % d).cpu().numpy(), median.double().cpu().numpy())


@torch.no_grad()
def scan(model: nn.Module, tokens: np.ndarray, k: int = 10, batch_size: int = 8, sinks: bool = False,
         progress: bool = False) -> Scan:
    """Profile the residual stream of ``model`` on ``tokens`` int [N, T] (full windows, no padding).

    Only the reductions of :class:`Scan` are kept (never the full hidden states). ``sinks=True``
    runs the pass with eager attention and also records the attention-sink mass per layer and head.
    Any edit hooks active around the call (:mod:`avalanche_nb.interventions`) act on this pass.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[0] < 1:
        raise ValueError(f"tokens must be [N, T] with N >= 1, got shape {tokens.shape}")
    N, T = tokens.shape
    layers = hooks.decoder_layers(model)  # a profile needs only the decoder layers
    attn = hooks.architecture(model).attn if sinks else None
    if T < k:
        raise ValueError(f"the probe windows have {T} tokens, fewer than top_k={k}: lengthen `window` or lower `ma_top_k`")
    if T < 2:
        raise ValueError("the probe windows need at least 2 tokens")
    L = len(layers)
    shape = (L + 1, N, k)
    out = Scan(np.zeros(shape), np.zeros(shape), np.zeros(shape, np.int64), np.zeros(shape, np.int64),
               np.zeros((L + 1, N)), np.zeros((L, N, T)))
    heads: list = [None] * L
    state: dict = {}

    def record(i: int, h: torch.Tensor) -> None:
        hooks.check_finite(h, "the embeddings" if i == 0 else f"layer {i - 1}'s output")
        s = state["batch"]
        for arr, v in zip((out.top_abs, out.top_val, out.pos, out.dim, out.median), _reduce(h, k)):
            arr[i, s] = v
        if i > 0:
            out.cos_prev[i - 1, s] = F.cosine_similarity(state["prev"].float(), h.float(), dim=-1).double().cpu().numpy()
        state["prev"] = h.detach()

    def embed_hook(_m, args, kwargs):
        record(0, args[0] if args else kwargs["hidden_states"])

    def layer_hook(i):
        def hook(_m, _args, output):
            record(i + 1, output[0] if isinstance(output, tuple) else output)
        return hook

    def sink_hook(l):
        def hook(_m, _args, output):
            w = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if w is None:
                raise hooks.UnsupportedArchitectureError(
                    f"{model.config.model_type}: the attention module returned no weights; attention sinks need eager attention")
            heads[l] = w[:, :, 1:, 0].float().mean(-1).double().cpu().numpy()  # [B, H]
            if out.sink is None:
                out.sink = np.zeros((L, N, w.shape[1]))
            out.sink[l, state["batch"]] = heads[l]
        return hook

    def make():
        hs = [layers[0].register_forward_pre_hook(embed_hook, with_kwargs=True)]
        hs += [layer.register_forward_hook(layer_hook(i)) for i, layer in enumerate(layers)]
        if sinks:
            hs += [m.register_forward_hook(sink_hook(l)) for l, m in enumerate(attn)]
        return hs

    device = next(model.parameters()).device
    batches = range(0, N, batch_size)
    if progress:
        from tqdm.auto import tqdm
        batches = tqdm(batches, desc="scan", leave=False)
    with eager_attention(model) if sinks else nullcontext(), hooks._hooks(make):
        for s0 in batches:
            state["batch"] = slice(s0, min(N, s0 + batch_size))
            model.base_model(input_ids=torch.as_tensor(np.array(tokens[state["batch"]]), device=device), use_cache=False)
    return out


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` with eager attention (which returns its weights) inside the block, then restore."""
    previous = model.config._attn_implementation
    if previous != "eager":
        model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        if previous != "eager":
            model.set_attn_implementation(previous)


# --------------------------------------------------------------------------------------------------
# profile and ME layer


def thresholds(kind: str, relaxed_ratio: float = 100.0) -> tuple[float, float]:
    """(|a| floor, ratio floor) of an MA criterion: sun (100, 1000) or relaxed (0, relaxed_ratio)."""
    if kind not in MA_CRITERIA:
        raise ValueError(f"unknown MA criterion {kind!r}; choose one of {MA_CRITERIA}")
    return (SUN_ABS, SUN_RATIO) if kind == "sun" else (0.0, float(relaxed_ratio))


def meets(top1: np.ndarray, ratio: np.ndarray, kind: str, relaxed_ratio: float = 100.0) -> np.ndarray:
    """bool, elementwise: a top-1 |h| and its top-1/median ratio meet the criterion."""
    abs_min, ratio_min = thresholds(kind, relaxed_ratio)
    return (np.asarray(top1) > abs_min) & (np.asarray(ratio) >= ratio_min)


def layer_flags(s: Scan, kind: str, relaxed_ratio: float = 100.0) -> np.ndarray:
    """bool [L + 1]: the layer's mean top-1 and mean ratio over the probe sequences meet the criterion."""
    return meets(s.top_abs[..., 0].mean(1), s.ratio.mean(1), kind, relaxed_ratio)


def modal(x: np.ndarray) -> int:
    """The most frequent value of an int array (the smallest among ties)."""
    vals, counts = np.unique(x, return_counts=True)
    return int(vals[np.argmax(counts)])


def profile_table(s: Scan, relaxed_ratio: float = 100.0) -> pd.DataFrame:
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
        "sun": layer_flags(s, "sun"), "relaxed": layer_flags(s, "relaxed", relaxed_ratio),
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


def me_layer(s: Scan, kind: str = "sun", relaxed_ratio: float = 100.0) -> dict:
    """The ME layer and the MA sites it creates.

    Returns a dict: ``criterion``, ``found``, ``me_layer`` (first layer meeting the criterion, or None),
    ``first_layer`` for both criteria, ``jump_layer`` (largest rise of mean log10 ratio from the layer
    before, embeddings included), ``ma_pos`` (modal top-1 position at the ME layer) with its share of
    sequences, and ``ma_dims``: the dims whose entry at ``ma_pos`` meets the criterion among the top-k
    in at least half of the sequences at some layer >= the ME layer, most frequent first.
    """
    abs_min, ratio_min = thresholds(kind, relaxed_ratio)
    log_ratio = np.log10(s.ratio).mean(1)
    jump = int(np.argmax(np.diff(log_ratio)))  # diff index i is layer i (from layer i - 1)
    firsts = {}
    for c in MA_CRITERIA:
        hit = np.flatnonzero(layer_flags(s, c, relaxed_ratio)[1:])  # decoder layers only
        firsts[c] = int(hit[0]) if hit.size else None
    out = {"criterion": kind, "relaxed_ratio": relaxed_ratio, "first_layer": firsts, "jump_layer": jump,
           "jump_log10": float(np.diff(log_ratio)[jump]), "me_layer": firsts[kind], "found": firsts[kind] is not None}
    if not out["found"]:
        out.update(ma_pos=None, ma_pos_share=None, ma_dims=[], reason=(
            f"no decoder layer meets the {kind} criterion (mean top-1 > {abs_min:g} and ratio >= {ratio_min:g}); "
            f"largest mean ratio {float(s.ratio.mean(1)[1:].max()):.3g} at layer {int(np.argmax(s.ratio.mean(1)[1:]))}"))
        return out
    i = firsts[kind] + 1
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


# --------------------------------------------------------------------------------------------------
# token classes


def _bare(token: str) -> str:
    return token.strip(_SPACE_MARKERS)


def token_class(token: str, first: bool = False) -> str:
    """``first`` (position 0 / BOS), ``punctuation`` (only punctuation, symbols or whitespace),
    ``function`` (in :data:`STOP_WORDS`, case-insensitive) or ``content``."""
    if first:
        return "first"
    bare = _bare(token)
    if all(unicodedata.category(c)[0] in "PSZC" or c in string.whitespace for c in bare):
        return "punctuation"  # an empty token (pure whitespace) counts here too
    return "function" if bare.lower() in STOP_WORDS else "content"


def token_classes(tokenizer, tokens: np.ndarray) -> np.ndarray:
    """Class of every token of ``tokens`` int [N, T] as str [N, T]; position 0 is ``first``."""
    tokens = np.asarray(tokens)
    vocab = {int(t): token_class(tokenizer.decode([int(t)])) for t in np.unique(tokens)}
    out = np.vectorize(vocab.__getitem__, otypes=[object])(tokens)
    out[:, 0] = "first"
    return out.astype(str)
