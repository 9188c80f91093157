"""Text generation under edits of the massive activations, and what a continuation looks like (seed 004:
"attention anchors that help maintain coherent text generation across context transitions").

* :func:`generate`: greedy or seeded sampling with a key/value cache, whatever edits are attached (the
  MA edits of :mod:`interventions` act on the first, cache-free pass, which computes the MA token;
  later tokens read its edited keys and values from the cache);
* :func:`continuation_metrics`: per continuation, cut at its first EOS: distinct-1/2, the longest
  repeated n-gram, the rate of sentence ends and whether EOS came;
* :func:`continuation_nll`: a continuation's per-token NLL under a model (the unedited one, to score what
  an edit made it write);
* :func:`paired_difference`: edit - none per prompt, its mean with a bootstrap CI and Wilcoxon's p.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from scipy import stats as st

from .models import input_device
from .stats import bootstrap_weights

#: what ends a sentence in a decoded token (after stripping whitespace)
SENTENCE_ENDS = (".", "!", "?")


@torch.no_grad()
def generate(model, prompts: np.ndarray, n_tokens: int, *, sample: bool, seed: int, temperature: float = 1.0
             ) -> np.ndarray:
    """``n_tokens`` new tokens after each prompt of ``prompts`` int [B, P] (one batch, no padding):
    greedy (``sample=False``) or sampled from softmax(logits / ``temperature``) with a
    ``torch.Generator`` seeded by ``seed`` (the same seed, the same tokens on CPU). Returns int64 [B, n_tokens];
    generation does not stop at EOS (:func:`continuation_metrics` cuts there)."""
    prompts = np.asarray(prompts)
    if prompts.ndim != 2 or prompts.shape[1] < 1:
        raise ValueError(f"prompts must be [B, P] with P >= 1, got shape {prompts.shape}")
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be >= 1, got {n_tokens}")
    if sample and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    device = input_device(model)
    rng = torch.Generator(device=device).manual_seed(int(seed))
    # logits of the last position only: the whole prompt's would cost a vocabulary-wide matmul per token
    out = model(input_ids=torch.as_tensor(np.array(prompts), device=device), use_cache=True, logits_to_keep=1)
    new = []
    for _ in range(n_tokens):
        logits = out.logits[:, -1].float()
        if sample:
            nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=rng)[:, 0]
        else:
            nxt = logits.argmax(-1)
        new.append(nxt)
        out = model(input_ids=nxt[:, None], past_key_values=out.past_key_values, use_cache=True, logits_to_keep=1)
    return torch.stack(new, 1).cpu().numpy().astype(np.int64)


def cut_at_eos(tokens: Sequence[int], eos_id: int | None) -> tuple[list[int], bool]:
    """The tokens before the first ``eos_id`` and whether it came."""
    tokens = [int(t) for t in tokens]
    if eos_id is not None and eos_id in tokens:
        return tokens[:tokens.index(eos_id)], True
    return tokens, False


def distinct_n(tokens: Sequence[int], n: int) -> float:
    """Distinct n-grams / n-grams of one sequence (NaN when it has none)."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else np.nan


def longest_repeat(tokens: Sequence[int]) -> int:
    """The length of the longest n-gram that occurs at least twice (overlaps allowed); 0 when no token repeats."""
    tokens = list(tokens)
    best = 0
    for n in range(1, len(tokens)):
        grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
        if len(set(grams)) == len(grams):
            break  # no n-gram repeats, so no longer one can
        best = n
    return best


def continuation_metrics(tokens: Sequence[int], decode: Callable[[int], str], eos_id: int | None) -> dict[str, float]:
    """One continuation's ``distinct1``, ``distinct2``, ``longest_repeat`` (tokens), ``sentence_end_rate``
    (share of its tokens whose text ends a sentence) and ``eos`` (1 when EOS came), all before the first EOS."""
    kept, eos = cut_at_eos(tokens, eos_id)
    ends = [decode(t).strip().endswith(SENTENCE_ENDS) for t in kept]
    return {"distinct1": distinct_n(kept, 1), "distinct2": distinct_n(kept, 2), "longest_repeat": float(longest_repeat(kept)),
            "sentence_end_rate": float(np.mean(ends)) if ends else np.nan, "eos": float(eos), "length": float(len(kept))}


@torch.no_grad()
def continuation_nll(model, prompts: np.ndarray, continuations: np.ndarray, score_batch_size: int) -> np.ndarray:
    """float64 [B, M]: the NLL (nats) of each continuation token given its prompt and the tokens before it,
    under ``model`` as it is (with whatever edits are attached), ``score_batch_size`` sequences per pass.
    Only the M positions that predict the continuation get logits (a vocabulary-wide matmul each)."""
    full = np.concatenate([np.asarray(prompts), np.asarray(continuations)], axis=1)
    M = np.shape(continuations)[1]
    device = input_device(model)
    out = np.empty((len(full), M))
    for s in range(0, len(full), score_batch_size):
        ids = torch.as_tensor(full[s:s + score_batch_size], device=device)
        logits = model(input_ids=ids, use_cache=False, logits_to_keep=M + 1).logits[:, :-1].double()
        logp = torch.log_softmax(logits, -1)
        out[s:s + len(ids)] = -logp.gather(-1, ids[:, -M:, None].to(logp.device))[..., 0].cpu().numpy()
    return out


def paired_difference(values: np.ndarray, base: np.ndarray, *, bootstrap_draws: int, seed: int) -> dict[str, float]:
    """Per-prompt ``values - base`` (float [n] each, NaN pairs dropped): the mean, its percentile bootstrap
    95% interval over prompts, Wilcoxon's signed-rank p (1 when every difference is 0) and ``n``."""
    d = np.asarray(values, float) - np.asarray(base, float)
    d = d[np.isfinite(d)]
    if not len(d):
        return {"diff": np.nan, "lo": np.nan, "hi": np.nan, "p": np.nan, "n": 0}
    means = bootstrap_weights(len(d), bootstrap_draws, seed) @ d / len(d)
    lo, hi = np.quantile(means, [0.025, 0.975])
    p = float(st.wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
    return {"diff": float(d.mean()), "lo": float(lo), "hi": float(hi), "p": p, "n": int(len(d))}
