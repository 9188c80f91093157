"""Slices are deterministic, hashed, disjoint by offset, packed with separators and BOS by rule; ARC is complete.

The tokenizer is a real byte-level BPE trained in memory on a few sentences (offline, milliseconds):
byte-level, so every document encodes losslessly and decoding a document's tokens gives it back.
"""

import json

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from avalanche_nb import data

SENTENCES = [
    "The cell cycle is regulated by proteins that control division.",
    "Wikipedia passages describe history, science and sport in plain prose.",
    "A man is sitting on a roof and starts pulling up the shingles.",
] * 20


def bpe_tokenizer(bos: str | None = "<bos>", eos: str | None = "<eos>", pad: str | None = "<pad>",
                  prefix_bos: bool = True):
    """Byte-level BPE (about 400 ids) wrapped as a transformers fast tokenizer.

    ``prefix_bos``: the tokenizer adds BOS itself on encoding (as Gemma's does; SmolLM2's does not).
    """
    specials = ["<pad>", "<bos>", "<eos>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES, trainer)
    if prefix_bos and bos is not None:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad)


class CountingTokenizer:
    """Delegates to a tokenizer and counts the texts it encodes."""

    def __init__(self, inner):
        self.inner, self.texts = inner, 0

    def __call__(self, text, **kwargs):
        self.texts += 1 if isinstance(text, str) else len(text)
        return self.inner(text, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def tok():
    return bpe_tokenizer()


def decode(tok, ids) -> str:
    return tok.decode([int(i) for i in ids])


# ---- slices -----------------------------------------------------------------------------------------


def test_same_params_same_tokens_and_hash(tok):
    a = data.build_slice(tok, "boolq", 3, 64, seed=1)
    b = data.build_slice(tok, "boolq", 3, 64, seed=1)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.doc_index, b.doc_index)
    assert a.sha256 == b.sha256 and len(a.sha256) == 64
    # a tokenizer rebuilt from scratch has the same identity
    assert data.build_slice(bpe_tokenizer(), "boolq", 3, 64, seed=1).sha256 == a.sha256
    c = data.build_slice(tok, "boolq", 3, 64, seed=2)
    assert not np.array_equal(a.tokens, c.tokens) and a.sha256 != c.sha256


def test_shapes_dtypes_and_metadata(tok):
    s = data.build_slice(tok, "sciq", 5, 32, seed=3, offset=2)
    assert s.tokens.shape == s.doc_index.shape == (5, 32)
    assert s.tokens.dtype == s.doc_index.dtype == np.int64
    assert (s.tokens >= 0).all() and (s.tokens < len(tok)).all()
    assert not s.tokens.flags.writeable and not s.doc_index.flags.writeable
    d = s.to_dict()
    assert {"source": "sciq", "seed": 3, "n_sequences": 5, "window": 32, "offset": 2, "bos_prefixed": True,
            "sha256": s.sha256}.items() <= d.items()
    assert d["tokenizer"].startswith(f"vocab={len(tok.get_vocab())}:") and d["n_documents"] >= 1
    json.dumps(d)
    # the metadata enters the hash: the same windows reached two ways hash differently
    whole = data.build_slice(tok, "sciq", 7, 32, seed=3)
    assert np.array_equal(whole.tokens[2:], s.tokens) and whole.sha256 != s.sha256


def test_offsets_continue_one_stream(tok):
    whole = data.build_slice(tok, "sciq", 6, 32, seed=0, offset=0)
    for o in (1, 2, 4):
        tail = data.build_slice(tok, "sciq", 6 - o, 32, seed=0, offset=o)
        assert np.array_equal(whole.tokens[o:], tail.tokens)  # window k of offset 0 == window k-o of offset o
        assert np.array_equal(whole.doc_index[o:], tail.doc_index)
    calib = data.build_slice(tok, "sciq", 2, 32, seed=0, offset=0)
    lattice = data.build_slice(tok, "sciq", 4, 32, seed=0, offset=2)
    assert np.array_equal(np.concatenate([calib.tokens, lattice.tokens]), whole.tokens)
    # without BOS the windows tile the stream exactly
    plain = data.build_slice(tok, "sciq", 3, 32, seed=0, add_bos=False)
    assert np.array_equal(plain.tokens.ravel()[31:62], whole.tokens[1, 1:])


def test_bos_prefix_rule():
    tok = bpe_tokenizer()
    bos, eos = tok.bos_token_id, tok.eos_token_id
    s = data.build_slice(tok, "boolq", 3, 16, seed=0)  # default: the tokenizer has a BOS
    assert s.bos_prefixed and (s.tokens[:, 0] == bos).all() and (s.doc_index[:, 0] == -1).all()
    assert (s.tokens[:, 1:] != bos).all()
    off = data.build_slice(tok, "boolq", 3, 16, add_bos=False, seed=0)
    assert not off.bos_prefixed and (off.tokens != bos).all()
    assert np.array_equal(s.tokens[:, 1:].ravel(), off.tokens.ravel()[:45])  # the same stream, cut one shorter
    assert s.sha256 != off.sha256

    no_bos = bpe_tokenizer(bos=None)
    assert not data.default_add_bos(no_bos)
    assert not data.build_slice(no_bos, "boolq", 2, 16, seed=0).bos_prefixed
    with pytest.raises(ValueError, match="no BOS"):
        data.build_slice(no_bos, "boolq", 2, 16, add_bos=True, seed=0)
    # a named BOS the tokenizer never adds (SmolLM2's <|im_start|>) is not prefixed
    named_only = bpe_tokenizer(prefix_bos=False)
    assert named_only.bos_token_id is not None and not data.default_add_bos(named_only)
    assert not data.build_slice(named_only, "boolq", 2, 16, seed=0).bos_prefixed
    assert data.build_slice(named_only, "boolq", 2, 16, add_bos=True, seed=0).bos_prefixed
    assert bos != eos


def test_documents_are_separated_and_tracked(tok):
    seed = 5
    s = data.build_slice(tok, "boolq", 8, 256, seed=seed, add_bos=False)
    ids, rank = s.tokens.ravel(), s.doc_index.ravel()
    sep = rank == -1
    assert sep.sum() >= 2  # 2048 tokens span several passages
    assert (ids[sep] == tok.eos_token_id).all() and (ids[~sep] != tok.eos_token_id).all()
    # ranks start at 0, and each separator moves to the next document
    assert rank[0] == 0
    changes = np.flatnonzero(np.diff(rank) != 0)
    seg = rank[~sep]
    assert set(np.diff(seg)) <= {0, 1} and seg[-1] == sep.sum()
    assert all(rank[i + 1] == -1 or rank[i] == -1 for i in changes)
    # the tokens of every document decode to that document of the seeded order
    docs = data.load_documents("boolq")
    order = np.random.default_rng(seed).permutation(len(docs))
    for r in range(seg[-1]):  # complete documents (the last one is cut by the window end)
        assert decode(tok, ids[rank == r]) == docs[order[r]]
    assert docs[order[seg[-1]]].startswith(decode(tok, ids[rank == seg[-1]]))
    assert s.to_dict()["n_documents"] == seg[-1] + 1


def test_without_eos_documents_are_joined_by_blank_lines():
    tok = bpe_tokenizer(eos=None)
    sep = data.separator_ids(tok)
    assert decode(tok, sep) == "\n\n"
    s = data.build_slice(tok, "boolq", 2, 512, add_bos=False, seed=0)
    text = decode(tok, s.tokens.ravel())
    docs = data.load_documents("boolq")
    order = np.random.default_rng(0).permutation(len(docs))
    assert text.startswith(docs[order[0]] + "\n\n" + docs[order[1]][:20])
    assert (s.doc_index == -1).sum() % len(sep) == 0


def test_tokenizes_only_the_documents_it_needs(tok):
    counting = CountingTokenizer(tok)
    data.build_slice(counting, "hellaswag", 2, 64, seed=0)
    assert 0 < counting.texts <= 200 < len(data.load_documents("hellaswag"))


# ---- documents ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", list(data.SOURCES))
def test_documents_are_clean_unique_and_ordered(source):
    docs = data.load_documents(source)
    assert isinstance(docs, list) and len(docs) > 100
    assert all(isinstance(d, str) and d and d == d.strip() for d in docs)
    assert len(set(docs)) == len(docs) and docs == sorted(docs)
    assert data.load_documents(source) == docs
    docs.clear()  # callers get a copy
    assert data.load_documents(source)


def test_boolq_passages_are_deduplicated():
    passages = data._load(data.SOURCES["boolq"].folder)["passage"]
    docs = data.load_documents("boolq")
    assert len(passages) == 3270 and len(docs) == len(set(passages)) < len(passages)
    assert set(docs) == {p.strip() for p in passages}


# ---- ARC ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def arc():
    return data.load_arc(data.ARC_SUBSETS, seed=0)


def test_arc_keeps_every_question(arc):
    by = {s: [q for q in arc if q.subset == s] for s in data.ARC_SUBSETS}
    assert len(by["ARC-Easy"]) == 570 and len(by["ARC-Challenge"]) == 299
    assert len({(q.subset, q.id) for q in arc}) == len(arc)
    for q in arc:
        assert len(q.labels) == len(q.choices) and 0 <= q.answer < len(q.choices)
        assert q.answer_label == q.labels[q.answer]
    counts = {n: sum(len(q.choices) == n for q in arc) for n in (3, 4, 5)}
    assert counts[3] > 0 and counts[5] > 0 and sum(counts.values()) == len(arc)  # non-4 questions are kept


def test_arc_answers_map_from_the_raw_key(arc):
    raw = {}
    for subset in data.ARC_SUBSETS:
        for row in data._load(f"ai2_arc/{subset}/validation"):
            raw[subset, row["id"]] = row["answerKey"]
    assert all(q.labels[q.answer] == raw[q.subset, q.id] for q in arc)
    numeric = [q for q in arc if q.labels[0] == "1"]
    assert numeric and {q.answer_label for q in numeric} <= set("12345")


def test_arc_bad_answer_key_raises():
    row = {"id": "x1", "question": "?", "answerKey": "E", "choices": {"label": ["A", "B", "C"], "text": ["a", "b", "c"]}}
    with pytest.raises(ValueError, match="answer key 'E' is not among its labels"):
        data._arc_question("ARC-Easy", row)
    ok = data._arc_question("ARC-Easy", row | {"answerKey": " c"})
    assert ok.answer == 2


def test_arc_limit_is_a_seeded_subset(arc):
    sub = data.load_arc(data.ARC_SUBSETS, limit=10, seed=3)
    assert [q.subset for q in sub] == ["ARC-Easy"] * 10 + ["ARC-Challenge"] * 10
    assert data.arc_hash(sub) == data.arc_hash(data.load_arc(data.ARC_SUBSETS, limit=10, seed=3))
    assert data.arc_hash(sub) != data.arc_hash(data.load_arc(data.ARC_SUBSETS, limit=10, seed=4))
    easy = data.load_arc("ARC-Easy", limit=10, seed=3)
    assert easy == sub[:10]  # per subset, whatever else is requested
    ids = [q.id for q in easy]
    full_ids = [q.id for q in arc if q.subset == "ARC-Easy"]
    assert ids == [i for i in full_ids if i in ids]  # dataset order kept
    assert data.arc_hash(data.load_arc(data.ARC_SUBSETS, limit=10**6, seed=0)) == data.arc_hash(arc)


# ---- errors ---------------------------------------------------------------------------------------------


def test_errors(tok):
    with pytest.raises(ValueError, match="unknown text source 'wiki'.*boolq, sciq, hellaswag"):
        data.build_slice(tok, "wiki", 2, 16, seed=0)
    with pytest.raises(ValueError, match="unknown text source"):
        data.load_documents("wiki")
    with pytest.raises(ValueError, match="n_sequences must be >= 1"):
        data.build_slice(tok, "boolq", 0, 16, seed=0)
    with pytest.raises(ValueError, match="window must be >= 2"):
        data.build_slice(tok, "boolq", 2, 1, seed=0)
    with pytest.raises(ValueError, match="offset must be >= 0"):
        data.build_slice(tok, "boolq", 2, 16, offset=-1, seed=0)
    with pytest.raises(TypeError, match="window must be an int"):
        data.build_slice(tok, "boolq", 2, 16.0, seed=0)
    with pytest.raises(ValueError, match=r"not enough text: sciq gives (\d+) windows of 64 tokens.*1000000 requested"):
        data.build_slice(tok, "sciq", 10**6, 64, seed=0)
    with pytest.raises(ValueError, match="unknown ARC subset 'ARC-Hard'.*ARC-Easy, ARC-Challenge"):
        data.load_arc(("ARC-Hard",), seed=0)


def test_available_windows_are_reported_exactly(tok):
    with pytest.raises(ValueError, match=r"gives (\d+) windows") as err:
        data.build_slice(tok, "sciq", 10**6, 512, seed=0)
    available = int(err.value.args[0].split(" gives ")[1].split()[0])
    s = data.build_slice(tok, "sciq", 2, 512, offset=available - 2, seed=0)  # the last two windows exist
    assert s.tokens.shape == (2, 512)
    with pytest.raises(ValueError, match=f"gives {available} windows"):
        data.build_slice(tok, "sciq", 1, 512, offset=available, seed=9)  # the same for every seed
