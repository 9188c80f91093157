"""Language-model scoring under a gain: perplexity of token windows and ARC multiple choice.

Both run the decoder stack once per batch (:func:`hooks.forward_hidden`) and apply the LM head only
where a prediction is scored: on Gemma-3 the head is a 640 × 262k matmul per position, so scoring
only the continuation tokens of a multiple-choice question saves most of the work. The head
includes the model's final logit soft-capping when its config has one.

Conventions (those of lm-evaluation-harness, so numbers compare):

* ARC prompt ``"Question: {question}\\nAnswer:"``, continuation ``" {choice}"``; a choice's score is
  the summed log-likelihood of its continuation tokens given the prompt (BOS first where the
  tokenizer adds one);
* ``acc`` takes the argmax of that sum; ``acc_norm`` divides it by the choice text's length in
  characters first (the harness's ``len(doc_to_choice)``: the leading space is its target
  delimiter, not part of the choice, so it is not counted);
* perplexity is ``exp`` of the mean next-token negative log-likelihood over every predicted
  position of the windows (all positions but the first, which is only ever an input).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import hooks
from .progress import track
from .data import ArcQuestion, default_add_bos
from .models import input_device

ARC_PROMPT = "Question: {question}\nAnswer:"
ARC_BOOTSTRAP = 1000  # resamples of the questions behind each ARC accuracy's 95% CI


def head_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """LM-head logits [..., V] for final hidden states [..., d_model], soft-capped as the model does."""
    logits = model.get_output_embeddings()(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _token_logprobs(model: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """log p(target) for rows of hidden [P, d] and targets [P]; the head runs ``chunk`` rows at a time."""
    out = []
    for h, t in zip(hidden.split(chunk), targets.split(chunk)):
        logp = torch.log_softmax(head_logits(model, h), -1)  # on the LM head's device (a device map may move it)
        out.append(logp.gather(-1, t[:, None].to(logp.device))[:, 0])
    return torch.cat(out) if out else hidden.new_zeros(0)


@torch.no_grad()
def window_nll(model: nn.Module, tokens: np.ndarray, score_batch_size: int, g: float = 1.0, where: str = "mlp",
               layers: Sequence[int] | None = None) -> np.ndarray:
    """Next-token negative log-likelihood (nats) float64 [N, T-1]: entry t scores token t+1 given tokens <= t.

    ``tokens`` int [N, T] are full windows (no padding), ``score_batch_size`` per forward pass; the gain
    ``g`` acts as in :func:`hooks.gain`.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError(f"tokens must be [N, T] with T >= 2, got shape {tokens.shape}")
    device = input_device(model)
    out = np.empty((tokens.shape[0], tokens.shape[1] - 1))
    with hooks.gain(model, g, where, layers):
        for s in range(0, len(tokens), score_batch_size):
            ids = torch.as_tensor(np.array(tokens[s:s + score_batch_size]), device=device)
            hidden = hooks.forward_hidden(model, ids)[:, :-1]
            lp = _token_logprobs(model, hidden.reshape(-1, hidden.shape[-1]), ids[:, 1:].reshape(-1))
            hooks.check_finite(lp, "the window log-likelihoods (NaN/inf logits at this gain)")
            out[s:s + len(ids)] = -lp.reshape(len(ids), -1).double().cpu().numpy()
    return out


def perplexity(nll: np.ndarray) -> float:
    """exp of the mean next-token NLL over every scored position."""
    nll = np.asarray(nll, dtype=float)
    if nll.size == 0:
        raise ValueError("no scored tokens: perplexity is undefined")
    return float(np.exp(nll.mean()))


# --------------------------------------------------------------------------------------------------
# log-likelihood of continuations


@dataclass(frozen=True)
class Prompt:
    """A context and the continuations to score after it (token ids; none of them empty)."""

    context: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]


def _check_prompts(prompts: Sequence[Prompt]) -> None:
    for i, p in enumerate(prompts):
        if not p.context or not p.continuations or not all(p.continuations):
            raise ValueError(f"prompt {i}: the context and every continuation must be non-empty")


@torch.no_grad()
def continuation_loglik(model: nn.Module, prompts: Sequence[Prompt], *, score_batch_size: int, progress: bool,
                        g: float = 1.0, where: str = "mlp", layers: Sequence[int] | None = None) -> np.ndarray:
    """Summed log-likelihood (nats) float64 [R] of every continuation given its prompt's context,
    prompt by prompt, continuation by continuation, at gain ``g`` (as in :func:`hooks.gain`).

    Each context runs once (``score_batch_size`` prompts per pass, right-padded, masked); its key/value
    cache is then repeated for the prompt's continuations, which run in a second pass with positions
    continuing after their own context (on SmolLM2, CPU: ≈ 1.9× faster than scoring full sequences).
    A batch that the model's sliding-window (or chunked) attention could make inexact this way is
    scored as full sequences instead (:func:`_cache_is_exact`), so every value equals a one-sequence
    forward of context + continuation.
    """
    _check_prompts(prompts)
    device = input_device(model)
    window = attention_window(model.config)
    order = np.argsort([len(p.context) + sum(map(len, p.continuations)) for p in prompts], kind="stable")[::-1]
    starts = np.cumsum([0] + [len(p.continuations) for p in prompts])
    out = np.empty(starts[-1])
    batches = range(0, len(order), score_batch_size)
    if progress:
        from tqdm.auto import tqdm
        batches = tqdm(batches, desc=f"scoring g={g:g}", leave=False)
    with hooks.gain(model, g, where, layers):
        for s in batches:
            chunk = [prompts[i] for i in order[s:s + score_batch_size]]
            lp = _batch_loglik(model, chunk, device, window)
            hooks.check_finite(torch.cat(lp), "the continuation log-likelihoods (NaN/inf logits at this gain)")
            for i, values in zip(order[s:s + score_batch_size], _split(lp, chunk)):
                out[starts[i]:starts[i + 1]] = values
    return out


def attention_window(config) -> int | None:
    """Smallest sliding window or attention chunk (tokens) among ``config``'s layers: in a sequence of
    at most this many tokens every layer attends to the whole prefix. ``None``: every layer always does.

    Families spell this differently: Gemma-2/3 give ``layer_types`` (sliding and full layers mixed)
    and ``sliding_window``; Mistral ``sliding_window`` (``None``: off); Qwen2/3 a ``sliding_window``
    that only counts with ``use_sliding_window``; Llama-4 ``attention_chunk_size``. A layer type not
    known to attend to the full prefix counts as window 0, so that scoring never relies on it.
    """
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    sliding = getattr(cfg, "sliding_window", None)
    if getattr(cfg, "use_sliding_window", True) is False:  # Qwen2/3 (older transformers keep the size)
        sliding = None
    chunk = getattr(cfg, "attention_chunk_size", None)
    types = getattr(cfg, "layer_types", None)
    if types is None:  # one kind for every layer, as transformers' cache infers it
        windows = [w for w in (sliding, chunk) if w is not None]
    else:
        windows = []
        for t in set(types):
            if t == "full_attention":
                continue
            w = sliding if "sliding" in t else chunk if "chunk" in t else None
            windows.append(int(w) if w is not None else 0)
    return min(int(w) for w in windows) if windows else None


def _cache_is_exact(n_ctx: Sequence[int], n_inputs: int, window: int | None) -> bool:
    """Whether the cached continuation pass of :func:`_batch_loglik` is exact for contexts of ``n_ctx``
    tokens, right-padded to C = max(n_ctx), followed by ``n_inputs`` continuation inputs.

    transformers applies a sliding window in cache-index space (query index − key index < window) and
    keeps only the last window − 1 keys of a sliding layer's cache; right padding puts a row's
    continuation C − n indices after its last context token, so a short context would lose real
    tokens that are inside its window by position. Exact when (a) no layer has a window, (b) no row
    is padded (indices are positions: ordinary chunked prefill), or (c) C + n_inputs <= window, so no
    key is ever outside a query's window or evicted from the cache.
    """
    return window is None or len(set(n_ctx)) == 1 or max(n_ctx) + n_inputs <= window


def _split(lp: list[torch.Tensor], chunk: Sequence[Prompt]) -> list[np.ndarray]:
    """Per prompt, the summed log-probs of its continuations from per-row token log-probs."""
    sums = np.array([float(x.double().sum()) for x in lp])
    bounds = np.cumsum([0] + [len(p.continuations) for p in chunk])
    return [sums[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _batch_loglik(model: nn.Module, chunk: Sequence[Prompt], device, window: int | None) -> list[torch.Tensor]:
    """Token log-probs [len(continuation)] of every continuation of the prompts in ``chunk``.

    ``window``: :func:`attention_window` of the model; decides between the cached passes and one
    pass over full sequences (:func:`_cache_is_exact`).
    """
    n_ctx = [len(p.context) for p in chunk]
    owner = [b for b, p in enumerate(chunk) for _ in p.continuations]
    conts = [c for p in chunk for c in p.continuations]
    M = max(len(c) for c in conts) - 1  # a continuation's last token is never an input to a scored prediction
    if _cache_is_exact(n_ctx, M, window):
        hidden = _cached_hidden(model, chunk, n_ctx, owner, conts, M, device)  # [R, M + 1, d]
        start = [0] * len(conts)
    else:
        hidden = _full_hidden(model, chunk, owner, conts, device)  # [R, max(n_ctx) + M, d]
        start = [n_ctx[b] - 1 for b in owner]
    # column start[r] + k of row r holds the hidden state that predicts token k of continuation r
    rows = torch.tensor([r for r, c in enumerate(conts) for _ in c])
    cols = torch.tensor([start[r] + k for r, c in enumerate(conts) for k in range(len(c))])
    targets = torch.tensor([t for c in conts for t in c], device=device)
    lp = _token_logprobs(model, hidden[rows, cols], targets).cpu()
    return list(lp.split([len(c) for c in conts]))


def _cached_hidden(model: nn.Module, chunk: Sequence[Prompt], n_ctx: list[int], owner: list[int],
                   conts: list[tuple[int, ...]], M: int, device) -> torch.Tensor:
    """Final hidden states [R, M + 1, d]: column k of row r predicts token k of continuation r.

    The contexts run once, right-padded; the cache is repeated per continuation (``owner``: its
    prompt's row) and the continuation inputs run after it with positions continuing their context's.
    """
    C = max(n_ctx)
    ids = torch.zeros((len(chunk), C), dtype=torch.long)
    mask = torch.zeros((len(chunk), C), dtype=torch.long)
    for b, p in enumerate(chunk):
        ids[b, :n_ctx[b]] = torch.tensor(p.context)
        mask[b, :n_ctx[b]] = 1
    ctx = model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=True)
    # the context's last hidden state predicts each continuation's first token
    first = ctx.last_hidden_state[torch.tensor(owner), torch.tensor([n_ctx[b] - 1 for b in owner])]
    if M == 0:
        return first[:, None]
    cache = ctx.past_key_values
    cache.reorder_cache(torch.tensor(owner, device=device))
    cont_ids = torch.zeros((len(conts), M), dtype=torch.long)
    cont_mask = torch.zeros((len(conts), M), dtype=torch.long)
    for r, c in enumerate(conts):
        cont_ids[r, :len(c) - 1] = torch.tensor(c[:-1])
        cont_mask[r, :len(c) - 1] = 1
    positions = torch.tensor([n_ctx[b] for b in owner])[:, None] + torch.arange(M)[None]
    rest = model.base_model(input_ids=cont_ids.to(device), attention_mask=torch.cat([mask[owner], cont_mask], 1).to(device),
                            position_ids=positions.to(device), past_key_values=cache, use_cache=True).last_hidden_state
    return torch.cat([first[:, None], rest], 1)


def _full_hidden(model: nn.Module, chunk: Sequence[Prompt], owner: list[int], conts: list[tuple[int, ...]],
                 device) -> torch.Tensor:
    """Final hidden states [R, L, d] of context + continuation inputs, one row per continuation,
    right-padded to L and masked, in one pass without a cache.

    Right padding leaves every real token at its own index, so positions, causal and sliding masks
    are those of the unpadded sequence. The pass is "fresh" (no cache), so the edits of
    :mod:`interventions` act on it, at the same sequence positions as in an unpadded forward.
    """
    seqs = [list(chunk[b].context) + list(c[:-1]) for b, c in zip(owner, conts)]
    L = max(map(len, seqs))
    ids = torch.zeros((len(seqs), L), dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for r, x in enumerate(seqs):
        ids[r, :len(x)] = torch.tensor(x)
        mask[r, :len(x)] = 1
    positions = torch.arange(L)[None].expand(len(seqs), L)
    return model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                            use_cache=False).last_hidden_state


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix every sequence of ``seqs`` starts with."""
    n = min(map(len, seqs))
    first = seqs[0]
    for s in seqs[1:]:
        n = next((i for i in range(n) if s[i] != first[i]), n)
    return n


#: a prompt's first tokens, which name its few-shot group in :func:`shared_prefix_loglik`
PREFIX_KEY = 8


@torch.no_grad()
def shared_prefix_loglik(model: nn.Module, prompts: Sequence[Prompt], *, score_batch_size: int, min_prefix: int = 1
                         ) -> np.ndarray:
    """As :func:`continuation_loglik` (g = 1), with the common token prefix (a few-shot block) of each group
    of contexts run once: float64 [R] summed log-likelihoods (nats) of every continuation, in prompt order.

    Prompts are grouped by their first :data:`PREFIX_KEY` tokens (a task whose documents mostly share one
    few-shot block but not all, as basic_skills' document 902, keeps the shared pass for the others). Per
    group the prefix runs as a fresh pass (edits of :mod:`interventions` act on it); each batch of
    ``score_batch_size`` distinct inputs (the rest of a context and a continuation's inputs; the choices
    of one token share one) then runs after a copy of the prefix's key/value cache, right-padded, positions
    continuing the prefix's. That pass is not fresh, so an edit must sit inside the prefix: a group whose
    prefix is shorter than ``min_prefix`` tokens (e.g. the MA token's position + 1), and every prompt that
    shares its first tokens with no other, is scored by :func:`continuation_loglik`, whose context pass is
    fresh. The prefix itself is never padded, so it is exact also under sliding-window attention (ordinary
    chunked prefill, see :func:`_cache_is_exact`). At least one context token of every prompt stays outside
    the prefix: it predicts the continuation's first token.
    """
    _check_prompts(prompts)
    starts = np.cumsum([0] + [len(p.continuations) for p in prompts])
    out = np.empty(starts[-1])
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(tuple(p.context[:PREFIX_KEY]), []).append(i)
    rest = []
    for members in groups.values():
        group = [prompts[i] for i in members]
        P = min(_common_prefix([p.context for p in group]), min(len(p.context) for p in group) - 1)
        if len(group) < 2 or P < max(min_prefix, 1):
            rest += members
            continue
        values = _prefix_group_loglik(model, group, P, score_batch_size)
        for i, v in zip(members, np.split(values, np.cumsum([len(p.continuations) for p in group])[:-1])):
            out[starts[i]:starts[i + 1]] = v
    if rest:
        values = continuation_loglik(model, [prompts[i] for i in rest], score_batch_size=score_batch_size, progress=False)
        for i, v in zip(rest, np.split(values, np.cumsum([len(prompts[i].continuations) for i in rest])[:-1])):
            out[starts[i]:starts[i + 1]] = v
    return out


def _prefix_group_loglik(model: nn.Module, prompts: Sequence[Prompt], P: int, score_batch_size: int) -> np.ndarray:
    """:func:`shared_prefix_loglik` of prompts whose contexts share their first ``P`` tokens."""
    import copy

    device = input_device(model)
    cache = model.base_model(input_ids=torch.tensor([prompts[0].context[:P]], device=device), use_cache=True
                             ).past_key_values
    # one row per distinct input (rest of the context + continuation inputs): the single-token choices
    # of a multiple-choice question all read the context's last state
    conts = [(list(p.context[P:]), c) for p in prompts for c in p.continuations]
    inputs = {}
    for ctx, c in conts:
        inputs.setdefault(tuple(ctx + list(c[:-1])), len(inputs))
    rows = list(inputs)
    hidden_rows: list[torch.Tensor] = []
    for s in range(0, len(rows), score_batch_size):
        batch = rows[s:s + score_batch_size]
        S = max(map(len, batch))
        ids = torch.zeros((len(batch), S), dtype=torch.long)
        mask = torch.zeros((len(batch), P + S), dtype=torch.long)
        mask[:, :P] = 1
        for r, x in enumerate(batch):
            ids[r, :len(x)] = torch.tensor(x)
            mask[r, P:P + len(x)] = 1
        past = copy.deepcopy(cache)
        past.reorder_cache(torch.zeros(len(batch), dtype=torch.long, device=device))
        hidden = model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device),
                                  position_ids=(P + torch.arange(S))[None].expand(len(batch), S).to(device),
                                  past_key_values=past, use_cache=True).last_hidden_state
        hidden_rows += [hidden[r, :len(x)] for r, x in enumerate(batch)]
    out = np.empty(len(conts))
    for s in range(0, len(conts), score_batch_size):
        chunk = conts[s:s + score_batch_size]
        # state len(ctx) - 1 + k of a continuation's row predicts its token k
        states = torch.cat([hidden_rows[inputs[tuple(ctx + list(c[:-1]))]][len(ctx) - 1:] for ctx, c in chunk])
        targets = torch.tensor([t for _, c in chunk for t in c], device=device)
        lp = _token_logprobs(model, states, targets).cpu()
        hooks.check_finite(lp, "the continuation log-likelihoods (NaN/inf logits)")
        out[s:s + len(chunk)] = [float(x.double().sum()) for x in lp.split([len(c) for _, c in chunk])]
    return out


# --------------------------------------------------------------------------------------------------
# ARC multiple choice


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_prompt(tokenizer, context: str, continuations: Sequence[str], bos: bool | None = None) -> Prompt:
    """A :class:`Prompt` of ``context`` (BOS first where the tokenizer adds one itself, or as ``bos`` says)
    and its ``continuations``.

    A continuation's tokens are those of ``context + continuation`` after the context's own tokens, so
    a merge across the boundary cannot drop a character; when the context's tokens are not a prefix of
    the joint encoding the continuation is encoded on its own.
    """
    bos = default_add_bos(tokenizer) if bos is None else bos
    ctx = _encode(tokenizer, context)
    conts = []
    for text in continuations:
        joint = _encode(tokenizer, context + text)
        ok = joint[:len(ctx)] == ctx and len(joint) > len(ctx)
        conts.append(tuple(joint[len(ctx):] if ok else _encode(tokenizer, text)))
    return Prompt(tuple(([int(tokenizer.bos_token_id)] if bos else []) + ctx), tuple(conts))


def arc_prompts(tokenizer, questions: Sequence[ArcQuestion]) -> tuple[list[Prompt], np.ndarray]:
    """One :func:`encode_prompt` per question (the question prompt, then each choice after a space) and
    the choice texts' lengths in characters int [R] (R = all choices of all questions, in order):
    ``acc_norm``'s divisors, which as in lm-evaluation-harness leave out the continuation's leading space.
    """
    bos = default_add_bos(tokenizer)
    prompts = [encode_prompt(tokenizer, ARC_PROMPT.format(question=q.question), [" " + c for c in q.choices], bos)
               for q in questions]
    # the harness's len(doc_to_choice): the space is its target delimiter
    chars = [len(c) for q in questions for c in q.choices]
    return prompts, np.asarray(chars)


def choose(loglik: Sequence[float], n_chars: Sequence[int]) -> tuple[int, int]:
    """(pred, pred_norm): argmax of the summed log-likelihoods, and of them per character.

    Ties go to the first choice (numpy's argmax), as in lm-evaluation-harness.
    """
    ll = np.asarray(loglik, dtype=float)
    n = np.asarray(n_chars, dtype=float)
    if ll.size < 2 or ll.shape != n.shape or (n <= 0).any():
        raise ValueError("need >= 2 choices, one positive character length each")
    return int(np.argmax(ll)), int(np.argmax(ll / n))


def score_arc(model: nn.Module, tokenizer, questions: Sequence[ArcQuestion], *, score_batch_size: int,
              progress: bool, g: float = 1.0, where: str = "mlp", layers: Sequence[int] | None = None,
              prompts: tuple | None = None) -> pd.DataFrame:
    """One row per question at gain ``g``: subset, id, g, pred, pred_norm, answer, correct, correct_norm,
    n_choices and the per-choice log-likelihoods ``loglik`` (list, nats); ``score_batch_size`` questions
    per forward pass.

    ``prompts``: the output of :func:`arc_prompts` for these questions, to tokenize once per sweep.
    """
    if not questions:
        raise ValueError("no ARC questions to score")
    prompts, chars = prompts if prompts is not None else arc_prompts(tokenizer, questions)
    ll = continuation_loglik(model, prompts, score_batch_size=score_batch_size, progress=progress, g=g, where=where,
                             layers=layers)
    starts = np.cumsum([0] + [len(q.choices) for q in questions])
    rows = []
    for qi, q in enumerate(questions):
        sel = slice(starts[qi], starts[qi + 1])
        pred, pred_norm = choose(ll[sel], chars[sel])
        rows.append({"subset": q.subset, "id": q.id, "g": float(g), "pred": pred, "pred_norm": pred_norm,
                     "answer": q.answer, "correct": pred == q.answer, "correct_norm": pred_norm == q.answer,
                     "n_choices": len(q.choices), "loglik": ll[sel].tolist()})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# ARC over a gain grid


def arc_sweep(model: nn.Module, tokenizer, questions: Sequence[ArcQuestion], grid: Sequence[ArcQuestion],
              gains: Sequence[float], *, score_batch_size: int, progress: bool, full_at: Sequence[float] = (),
              log=print) -> tuple[pd.DataFrame, dict[float, float]]:
    """ARC rows (:func:`score_arc`, plus ``in_grid`` and ``full_pass``) at every gain: the ``grid`` questions at each g,
    every question of ``questions`` at the gains in ``full_at``; ``score_batch_size`` questions per forward pass.

    ``grid`` must be a subset of ``questions`` (same subset and id). Returns the rows and the wall
    seconds of each full pass.
    """
    import time

    key = {(q.subset, q.id) for q in grid}
    if not key <= {(q.subset, q.id) for q in questions}:
        raise ValueError("the ARC grid questions must be a subset of the full question set")
    prompts_all = arc_prompts(tokenizer, questions)
    prompts_grid = arc_prompts(tokenizer, grid)
    full = {float(g) for g in full_at}
    frames, seconds = [], {}
    for g in track(gains, "ARC", unit="gain"):
        t0 = time.perf_counter()
        is_full = any(np.isclose(float(g), f) for f in full)
        qs, pr = (questions, prompts_all) if is_full else (grid, prompts_grid)
        df = score_arc(model, tokenizer, qs, score_batch_size=score_batch_size, progress=progress, g=g, prompts=pr)
        df["in_grid"] = [(s, i) in key for s, i in zip(df.subset, df.id)]
        df["full_pass"] = is_full
        frames.append(df)
        dt = time.perf_counter() - t0
        if is_full:
            seconds[float(g)] = dt
        if log:
            log(f"ARC g={g:.2f}: {len(qs)} questions in {dt:.0f} s, acc {df.correct.mean():.3f}")
    return pd.concat(frames, ignore_index=True), seconds


def _acc_rows(df: pd.DataFrame, boot: int, seed: int) -> list[dict]:
    from .stats import bootstrap_mean_ci

    rows = []
    for (subset, g), sel in [((s, g), x) for (s, g), x in df.groupby(["subset", "g"])] + \
            [(("all", g), x) for g, x in df.groupby("g")]:
        acc, lo, hi = bootstrap_mean_ci(sel.correct.to_numpy(float), boot, seed)
        accn, lon, hin = bootstrap_mean_ci(sel.correct_norm.to_numpy(float), boot, seed)
        rows.append({"subset": subset, "g": float(g), "n": len(sel), "acc": acc, "acc_lo": lo, "acc_hi": hi,
                     "acc_norm": accn, "acc_norm_lo": lon, "acc_norm_hi": hin,
                     "chance": float((1 / sel.n_choices).mean())})
    return rows


def arc_summary(arc: pd.DataFrame, gstar: float, *, boot: int, seed: int) -> dict:
    """Accuracies with percentile bootstrap 95% CIs (``boot`` resamples of the questions, seeded) per
    (subset, g) and McNemar g* vs g = 1.

    ``grid``: over the questions scored at every g (comparable across g); ``full``: over every
    question, at the gains where all were scored. McNemar pairs each question at g = 1 and g* on the
    largest set scored at both (``mcnemar_set``: "full" or "grid"), per subset and pooled.
    """
    from .stats import mcnemar

    def at(g, frame):
        return frame[np.isclose(frame.g, g)]

    grid = arc[arc.in_grid]
    full = arc[arc.full_pass]
    full_gains = sorted(float(g) for g in full.g.unique())
    both_full = all(any(np.isclose(g, f) for f in full_gains) for g in (1.0, gstar))
    paired = full if both_full else grid
    tests = {}
    for subset in sorted(set(arc.subset)) + ["all"]:
        sel = paired if subset == "all" else paired[paired.subset == subset]
        a, b = at(1.0, sel).sort_values(["subset", "id"]), at(gstar, sel).sort_values(["subset", "id"])
        if len(a) != len(b) or not (a.id.to_numpy() == b.id.to_numpy()).all():
            raise ValueError(f"ARC {subset}: g = 1 and g* were not scored on the same questions")
        tests[subset] = {"acc": mcnemar(a.correct, b.correct), "acc_norm": mcnemar(a.correct_norm, b.correct_norm),
                         "n": len(a)}
    return {"gstar": float(gstar), "grid": _acc_rows(grid, boot, seed), "full": _acc_rows(full, boot, seed),
            "full_gains": full_gains, "mcnemar_set": "full" if both_full else "grid", "mcnemar": tests}


def evaluate_arc(model: nn.Module, tokenizer, gains: Sequence[float], gstar: float, p, *, full: bool,
                 log=None) -> tuple[pd.DataFrame, dict]:
    """ARC at every evaluated gain and g*: the seeded grid questions (``arc_grid_limit`` per subset of
    ``arc_subsets``) at each of ``gains``, with ``full`` every question at g = 1 and g* too; returns the
    rows (:func:`arc_sweep`) and :func:`arc_summary` (bootstrap CIs, McNemar g* vs g = 1)."""
    from .data import load_arc

    questions = load_arc(p["arc_subsets"], seed=p["seed"])
    grid = load_arc(p["arc_subsets"], limit=p["arc_grid_limit"], seed=p["seed"])
    arc, _ = arc_sweep(model, tokenizer, questions if full else grid, grid, gains,
                       score_batch_size=p["score_batch_size"], progress=p["progress"],
                       full_at=sorted({1.0, gstar}) if full else (), log=log)
    summary = arc_summary(arc, gstar, boot=ARC_BOOTSTRAP, seed=p["seed"])
    return arc, summary | {"n_questions": len(questions), "n_grid_questions": len(grid), "prompt": ARC_PROMPT}
