"""Massive activations in use (phase 09): what editing them does to generated text, and what probes read
from them, per model with the MA sites of phase 06.

* :func:`generation_tables`: continuations of Dataset B prompts and of context-transition prompts (a
  Dataset A passage, then an unrelated Dataset B passage), greedy and seeded sampling, with no edit and
  each of 06's MA edits; per continuation :func:`generation.continuation_metrics`, its NLL under the
  unedited model, and for transition prompts the teacher-forced loss on the second passage; paired
  tests of each edit against none across prompts;
* :func:`probe_tables`: linear and MLP probes (:mod:`probes`) of the MA token and of ordinary tokens, on
  the MA dims' values and on the full state at the ME layer and the last layer, for token class,
  sentence boundary, position bucket and next-token class, each with the majority baseline and the
  Hewitt & Liang control task (selectivity).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from . import generation as gen
from . import hooks, probes
from .models import input_device
from .token_classes import token_class

#: continuation metrics, in table order
METRICS = ("distinct1", "distinct2", "longest_repeat", "sentence_end_rate", "eos", "length", "cont_nll", "second_nll")
#: probe targets
TARGETS = ("token_class", "sentence_boundary", "position_bucket", "next_class")
#: decodings of :func:`generation_tables`
DECODINGS = ("greedy", "sampled")


def _sites(me: Mapping[str, Any], n_layers: int) -> dict[str, list[int]]:
    return {"layers": list(range(me["me_layer"], n_layers)), "positions": [me["ma_pos"]], "dims": list(me["ma_dims"])}


def prompts(tokenizer, p: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The prompts of :func:`generation_tables`: ``b`` int [n, P] (``gen_prompts`` Dataset B windows of
    ``gen_prompt_tokens``) and ``transition`` int [n, 2P] (a Dataset A window, then a Dataset B window
    other than the ``b`` prompts')."""
    from .data import build_slice

    n, P = p["gen_prompts"], p["gen_prompt_tokens"]
    b = build_slice(tokenizer, p["dataset_b"], 2 * n, P, seed=p["seed"]).tokens
    a = build_slice(tokenizer, p["dataset_a"], n, P, seed=p["seed"]).tokens
    return {"b": b[:n], "transition": np.concatenate([a, b[n:]], axis=1)}


def generation_tables(lm, p: Mapping[str, Any], me: Mapping[str, Any], calibration_tokens: np.ndarray
                      ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Question 1 for one model: (one row per (kind, decoding, intervention, prompt) with :data:`METRICS`;
    one paired test per (kind, decoding, edit, metric) against none; example continuations as text).

    Edits are 06's (``ma_interventions`` at the MA sites from the ME layer on; ``mean`` writes the means
    over ``calibration_tokens``). ``cont_nll``: the continuation's mean NLL (nats per token, before EOS)
    under the unedited model; ``second_nll``: for transition prompts, the mean NLL of the second passage's
    tokens given the first passage, under the edit (NaN for Dataset B prompts).
    """
    from . import interventions as iv

    model, tok = lm.model, lm.tokenizer
    L = len(hooks.decoder_layers(model))
    sites = _sites(me, L)
    if me["ma_pos"] >= p["gen_prompt_tokens"]:
        raise ValueError(f"the MA token {me['ma_pos']} lies beyond the {p['gen_prompt_tokens']}-token prompts")
    means = (iv.site_means(model, calibration_tokens, **sites, batch_size=p["batch_size"])
             if "mean" in p["ma_interventions"] else None)
    eos = tok.eos_token_id
    decode = lambda t: tok.decode([int(t)])
    P = p["gen_prompt_tokens"]
    from .progress import track

    rows, examples = [], {}
    jobs = [(kind, pr, mode) for kind, pr in prompts(tok, p).items() for mode in ("none", *p["ma_interventions"])]
    for kind, pr, mode in track(jobs, "generation under MA edits", unit="setting") if p["progress"] else jobs:
        with iv.edit_sites(model, **sites, mode=mode, ma_clip_multiple=p["ma_clip_multiple"], values=means):
            second = (gen.continuation_nll(model, pr[:, :P], pr[:, P:], p["score_batch_size"]).mean(1)
                      if kind == "transition" else np.full(len(pr), np.nan))
            conts = {d: gen.generate(model, pr, p["gen_tokens"], sample=d == "sampled", seed=p["seed"],
                                     temperature=p["gen_temperature"]) for d in DECODINGS}
        for d, cont in conts.items():
            nll = gen.continuation_nll(model, pr, cont, p["score_batch_size"])  # unedited: outside the edit
            for i, c in enumerate(cont):
                kept, _ = gen.cut_at_eos(c, eos)
                m = gen.continuation_metrics(c, decode, eos)
                rows.append({"kind": kind, "decoding": d, "intervention": mode, "prompt": i, **m,
                             "cont_nll": float(nll[i, :len(kept)].mean()) if kept else np.nan,
                             "second_nll": float(second[i])})
            for i in range(min(2, len(pr))):
                ex = examples.setdefault(f"{kind}/{i}", {"prompt": tok.decode(pr[i].tolist())})
                ex[f"{d}/{mode}"] = tok.decode(gen.cut_at_eos(cont[i], eos)[0])
    table = pd.DataFrame(rows)
    return table, paired_tests(table, p), examples


def paired_tests(table: pd.DataFrame, p: Mapping[str, Any]) -> pd.DataFrame:
    """Each edit against none on the same prompts, per (kind, decoding, metric): :func:`generation.paired_difference`."""
    tests = []
    for (kind, d), sel in table.groupby(["kind", "decoding"], sort=False):
        base = sel[sel.intervention == "none"].set_index("prompt")
        for mode in [m for m in sel.intervention.unique() if m != "none"]:
            ed = sel[sel.intervention == mode].set_index("prompt").loc[base.index]
            for metric in METRICS:
                r = gen.paired_difference(ed[metric].to_numpy(), base[metric].to_numpy(),
                                          bootstrap_draws=p["bootstrap_draws"], seed=p["seed"])
                tests.append({"kind": kind, "decoding": d, "intervention": mode, "metric": metric,
                              "none": float(base[metric].mean()), "edited": float(ed[metric].mean()), **r})
    return pd.DataFrame(tests)


# --------------------------------------------------------------------------- probes


@torch.no_grad()
def layer_states(model, tokens: np.ndarray, layers: list[int], batch_size: int) -> dict[int, np.ndarray]:
    """float32 [N, T, d] per layer of ``layers``: the decoder layer's output (the residual stream)."""
    got: dict[int, list[np.ndarray]] = {l: [] for l in layers}
    tap = hooks.Hook("resid.out", lambda l, h: got[l].append(h.detach().float().cpu().numpy()), layers=layers)
    device = input_device(model)
    with hooks.attach(model, tap):
        for s in range(0, len(tokens), batch_size):
            model.base_model(input_ids=torch.as_tensor(np.array(tokens[s:s + batch_size]), device=device),
                             use_cache=False)
    return {l: np.concatenate(v) for l, v in got.items()}


def targets(tokenizer, tokens: np.ndarray, edges) -> dict[str, np.ndarray]:
    """Per token of ``tokens`` int [N, T]: ``token_class`` (its own class, position ignored),
    ``sentence_boundary`` (its text ends with . ! ? or holds a newline), ``position_bucket`` (buckets of
    ``edges``, :func:`ma_lattice.position_buckets`) and ``next_class`` (the next token's class; "" at the
    last position)."""
    from .ma_lattice import position_buckets

    tokens = np.asarray(tokens)
    text = {int(t): tokenizer.decode([int(t)]) for t in np.unique(tokens)}
    cls = np.vectorize(lambda t: token_class(text[int(t)]), otypes=[object])(tokens).astype(str)
    boundary = np.vectorize(lambda t: text[int(t)].strip().endswith(gen.SENTENCE_ENDS) or "\n" in text[int(t)],
                            otypes=[bool])(tokens)
    nxt = np.full(tokens.shape, "", dtype=object)
    nxt[:, :-1] = cls[:, 1:]
    return {"token_class": cls, "sentence_boundary": boundary.astype(int),
            "position_bucket": np.broadcast_to(position_buckets(tokens.shape[1], edges), tokens.shape),
            "next_class": nxt.astype(str)}


def probe_tables(lm, p: Mapping[str, Any], me: Mapping[str, Any], tokens: np.ndarray) -> pd.DataFrame:
    """Question 2 for one model on the windows ``tokens`` int [N, T]: per (layer = the ME layer and the last,
    group = ma (the MA token of every window) / ordinary (up to ``probe_max_tokens`` other tokens, seeded),
    features = ma_dims / state, target of :data:`TARGETS`, probe = linear / mlp) the cross-validated
    accuracy with its Wilson interval, the majority baseline, the control task's accuracy and the
    selectivity (accuracy - control). A target constant within a group (the MA token's position) is left out."""
    model, tok = lm.model, lm.tokenizer
    L = len(hooks.decoder_layers(model))
    layers = sorted({me["me_layer"], L - 1})
    states = layer_states(model, tokens, layers, p["batch_size"])
    tg = targets(tok, tokens, p["position_buckets"])
    N, T = tokens.shape
    ma = np.zeros((N, T), bool)
    ma[:, me["ma_pos"]] = True
    rng = np.random.default_rng(p["seed"])
    others = np.flatnonzero(~ma.ravel())
    others = np.sort(rng.choice(others, size=min(len(others), p["probe_max_tokens"]), replace=False))
    groups = {"ma": np.flatnonzero(ma.ravel()), "ordinary": others}
    types = tokens.ravel()
    rows = []
    for layer in layers:
        h = states[layer].reshape(N * T, -1)
        for group, idx in groups.items():
            feats = {"ma_dims": h[idx][:, list(me["ma_dims"])], "state": h[idx]}
            for target in TARGETS:
                y = tg[target].ravel()[idx]
                keep = y != "" if y.dtype.kind in "US" else np.ones(len(y), bool)
                if len(np.unique(y[keep])) < 2:
                    continue
                control = probes.control_labels(types[idx][keep], y[keep], p["seed"])
                for fname, X in feats.items():
                    for kind in probes.PROBES:
                        r = probes.probe_accuracy(X[keep], y[keep], kind, folds=p["probe_folds"], seed=p["seed"])
                        c = probes.probe_accuracy(X[keep], control, kind, folds=p["probe_folds"], seed=p["seed"])
                        rows.append({"layer": layer, "group": group, "features": fname, "target": target,
                                     "probe": kind, **{k: r[k] for k in ("acc", "lo", "hi", "majority", "n",
                                                                         "classes")},
                                     "control_acc": c["acc"], "selectivity": r["acc"] - c["acc"]})
    return pd.DataFrame(rows)
