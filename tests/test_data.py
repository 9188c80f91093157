"""Slices are deterministic, hashed, disjoint by offset, BOS-prefixed as the tokenizer expects."""

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from avalanche_nb import data


def byte_tokenizer(add_bos: bool) -> PreTrainedTokenizerFast:
    """An offline character-level tokenizer: ids 0-3 special, then one id per byte value."""
    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3} | {chr(b): b + 4 for b in range(256)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer(add_bos=False)


def test_same_params_same_tokens_and_hash(tok):
    a = data.build_slice(tok, "boolq", 3, 64, seed=1)
    b = data.build_slice(tok, "boolq", 3, 64, seed=1)
    assert np.array_equal(a.tokens, b.tokens) and a.sha256 == b.sha256
    assert a.tokens.shape == (3, 64) and a.tokens.dtype == np.int64
    c = data.build_slice(tok, "boolq", 3, 64, seed=2)
    assert not np.array_equal(a.tokens, c.tokens) and a.sha256 != c.sha256


def test_offsets_continue_one_stream(tok):
    whole = data.build_slice(tok, "sciq", 5, 32, seed=0, offset=0)
    tail = data.build_slice(tok, "sciq", 3, 32, seed=0, offset=2)
    assert np.array_equal(whole.tokens[2:], tail.tokens)
    calib = data.build_slice(tok, "sciq", 2, 32, seed=0, offset=0)
    assert np.array_equal(calib.tokens, whole.tokens[:2])  # calibration and lattice slices are disjoint windows


def test_documents_are_joined_with_eos_and_tracked(tok):
    s = data.build_slice(tok, "boolq", 4, 256, seed=0)
    flat_tokens, flat_docs = s.tokens.ravel(), s.doc_index.ravel()
    assert (flat_tokens[flat_docs == -1] == tok.eos_token_id).all()
    assert (flat_docs == -1).sum() >= 1  # 1024 characters span more than one passage
    # document ranks only grow along the stream, and the text between separators is that document
    ranks = flat_docs[flat_docs >= 0]
    assert (np.diff(ranks) >= 0).all()
    docs = data.load_documents("boolq")
    order = np.random.default_rng(0).permutation(len(docs))
    first = "".join(chr(i - 4) for i in flat_tokens[flat_docs == 0])
    assert first == docs[order[0]][: len(first)]


def test_bos_follows_the_tokenizer():
    with_bos = byte_tokenizer(add_bos=True)
    s = data.build_slice(with_bos, "boolq", 2, 16)
    assert s.bos_prefixed and (s.tokens[:, 0] == 1).all() and (s.doc_index[:, 0] == -1).all()
    assert (s.tokens[:, 1:] != 1).all()
    plain = data.build_slice(byte_tokenizer(add_bos=False), "boolq", 2, 16)
    assert not plain.bos_prefixed and (plain.tokens[:, 0] != 1).all()
    forced = data.build_slice(byte_tokenizer(add_bos=False), "boolq", 2, 16, add_bos=True)
    assert (forced.tokens[:, 0] == 1).all()
    # the body after BOS is the same stream cut one shorter
    assert np.array_equal(forced.tokens[0, 1:], plain.tokens.ravel()[:15])


def test_documents_are_deduplicated_and_clean():
    for source in data.SOURCES:
        docs = data.load_documents(source)
        assert len(docs) > 100 and len(set(docs)) == len(docs)
        assert all(d and d == d.strip() for d in docs)
        assert list(docs) == sorted(docs)
    # BoolQ validation repeats passages across its 3270 questions
    assert len(data.load_documents("boolq")) < 3270


def test_arc_keeps_every_question_and_maps_answers():
    qs = data.load_arc()
    by_subset = {s: [q for q in qs if q.subset == s] for s in data.ARC_SUBSETS}
    assert len(by_subset["ARC-Easy"]) == 570 and len(by_subset["ARC-Challenge"]) == 299
    assert all(0 <= q.answer < len(q.choices) == len(q.labels) for q in qs)
    counts = {len(q.choices) for q in qs}
    assert 3 in counts and 5 in counts  # non-4-choice questions are kept
    numeric = [q for q in qs if q.labels[0] == "1"]
    assert numeric and all(q.labels[q.answer] in "12345" for q in numeric)
    sub = data.load_arc(("ARC-Easy",), limit=10, seed=3)
    assert len(sub) == 10 and data.arc_hash(sub) == data.arc_hash(data.load_arc(("ARC-Easy",), limit=10, seed=3))


def test_errors(tok):
    with pytest.raises(ValueError, match="unknown text source 'wiki'.*boolq"):
        data.build_slice(tok, "wiki", 2, 16)
    with pytest.raises(ValueError, match="n_sequences"):
        data.build_slice(tok, "boolq", 0, 16)
    with pytest.raises(ValueError, match="window"):
        data.build_slice(tok, "boolq", 2, 1)
    with pytest.raises(ValueError, match=r"holds \d+ windows .* requested"):
        data.build_slice(tok, "sciq", 10**6, 64)
    with pytest.raises(ValueError, match="ARC subset"):
        data.load_arc(("ARC-Hard",))
