"""Rigidity reduction on math tasks and after fine-tuning: configurations, edits, paired tests by hand."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from avalanche_nb import hooks, oe_tasks, params, scoring
from avalanche_nb import interventions as iv
from avalanche_nb import rigidity_tasks as rt


@pytest.fixture(scope="module")
def lm(wide_tiny_llama, smol_tokenizer):
    return SimpleNamespace(model=wide_tiny_llama, tokenizer=smol_tokenizer)


def p_(**kw):
    return dict(params.defaults()) | {"progress": False, "math_limit": 3, "math_controls": 1, "rigidity_alphas": [0.0],
                                      "rigidity_mask_rates": [0.1], "bootstrap_draws": 200, "score_batch_size": 4,
                                      "finetune_steps": 2, "finetune_batch_size": 2, "finetune_window": 24,
                                      "finetune_lr": 1e-2, "finetune_lora_rank": 2} | kw


ME = {"me_layer": 1, "ma_pos": 0}
TASKS = ("gsm8k/gold_bpb_5shot", "basic_skills_arithmetic/rc_5shot")


def tasks(limit=3):
    both = rt.load_tasks(TASKS, limit, seed=0)
    return {n: t[0] for n, t in both.items()}, {n: t[1] for n, t in both.items()}


def test_task_table_scores_each_configuration_as_the_edited_model(lm):
    scored, _ = tasks()
    table = rt.task_table(lm, p_(), ME, scored)
    # no edit, the ME layer (1) and one control (layer 0), three documents of each task
    assert sorted(table.applied.unique()) == [-1, 0, 1] and len(table) == 3 * 2 * 3
    assert table.groupby(["applied", "task"]).size().eq(3).all()
    assert (table.at_me_layer == (table.applied == 1)).all() and (table.setting == "pretrained").all()
    for applied in (-1, 1):
        ctx = iv.rigidity_reduction(lm.model, applied, [0], 0.0, 0.1) if applied >= 0 else hooks.attach(lm.model)
        with ctx:
            want = oe_tasks.score(lm.model, lm.tokenizer, scored[TASKS[0]], score_batch_size=1)
        got = table[(table.applied == applied) & (table.task == TASKS[0])]
        np.testing.assert_allclose(got.value, want.bpb, rtol=1e-6)
    edited, none = (table[table.applied == a].value.to_numpy()[:3] for a in (1, -1))
    assert np.abs(edited - none).max() > 1e-7  # the edit acts (weakly, on a random model)
    assert hooks.hook_count(lm.model) == 0


def test_edited_scores_equal_full_forwards_also_for_a_document_outside_the_few_shot_block(lm):
    """basic_skills' document 902 starts with other shots: without BOS (SmolLM2) no prefix is shared by all."""
    rc = oe_tasks.load_task("basic_skills_arithmetic/rc_5shot")
    scored, _ = oe_tasks.split(rc, 3, seed=0)
    odd = next(d for d in rc.docs if d.doc_id == 902)
    assert odd.context[:12] != scored.docs[0].context[:12]
    task = oe_tasks.Task(rc.name, rc.metric, scored.docs + (odd,), rc.primary)
    prompts = oe_tasks.prompts(lm.tokenizer, task)
    with iv.rigidity_reduction(lm.model, 1, [0], 0.0, 0.25):
        got = scoring.shared_prefix_loglik(lm.model, prompts, score_batch_size=4, min_prefix=1)
        want = []
        for p in prompts:
            for c in p.continuations:
                ids = torch.tensor([list(p.context) + list(c)])
                with torch.no_grad():
                    lp = torch.log_softmax(lm.model(ids).logits.double(), -1)[0]
                want.append(sum(float(lp[len(p.context) - 1 + k, t]) for k, t in enumerate(c)))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    table = rt.task_table(lm, p_(rigidity_mask_rates=[0.25]), ME, {task.name: task})
    assert len(table) == 4 * 3 and hooks.hook_count(lm.model) == 0


def test_an_ma_token_past_a_context_is_refused(lm):
    scored, _ = tasks()
    with pytest.raises(ValueError, match="past a context"):
        rt.task_table(lm, p_(), {"me_layer": 1, "ma_pos": 5000}, scored)


def test_finetune_table_trains_three_copies_and_checks_memory_first(lm, monkeypatch):
    scored, held = tasks()
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    table, losses = rt.finetune_table(lm, p_(), ME, scored, held)
    assert rt.finetune_layers(3, 1, 1) == [-1, 1, 0]
    assert sorted(table.applied.unique()) == [-1, 0, 1] and (table.setting == "finetuned").all()
    assert losses.groupby("applied").step.apply(list).map(lambda s: s == [1, 2]).all()
    assert all(torch.equal(v, lm.model.state_dict()[k]) for k, v in before.items())
    monkeypatch.setattr("avalanche_nb.training.free_memory", lambda device: 1000)
    with pytest.raises(MemoryError, match="GiB"):
        rt.finetune_table(lm, p_(), ME, scored, held)


def test_finetune_texts_are_the_held_out_bpb_documents():
    _, held = tasks()
    texts = rt.finetune_texts(held)
    gsm = held[TASKS[0]]
    assert len(texts) == len(gsm.docs) and texts[0] == gsm.docs[0].context + gsm.docs[0].continuations[0]


def test_task_tests_by_hand():
    rng = np.random.default_rng(0)
    n = 12
    base = rng.normal(1.0, 0.1, n)
    rows = []
    d_ = np.arange(n)
    # the ME layer (2) lowers every document's bpb by a distinct amount; control layer 5 raises it a little
    for applied, shift in ((-1, 0 * d_), (2, -0.05 - 1e-4 * d_), (5, 1e-3 * d_)):
        rows += [{"setting": "pretrained", "task": "t/bpb", "metric": "bpb", "applied": applied, "at_me_layer": applied == 2,
                  "alpha": 0.0 if applied >= 0 else 1.0, "mask_rate": 0.01 if applied >= 0 else 0.0, "doc_id": d,
                  "value": base[d] + shift[d]} for d in range(n)]
    acc = [1, 0, 1, 0, 0, 1, 0, 0, 0, 1, 1, 0]
    flip = [1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1]
    for applied, v in ((-1, acc), (2, flip)):
        rows += [{"setting": "pretrained", "task": "t/mc", "metric": "correct", "applied": applied,
                  "at_me_layer": applied == 2, "alpha": 0.0 if applied >= 0 else 1.0,
                  "mask_rate": 0.01 if applied >= 0 else 0.0, "doc_id": d, "value": float(x)} for d, x in enumerate(v)]
    t = rt.task_tests(pd.DataFrame(rows), {"bootstrap_draws": 500, "seed": 0})
    me = t[(t.task == "t/bpb") & (t.applied == 2) & (t.against == -1)].iloc[0]
    assert me["diff"] == pytest.approx(-0.05 - 1e-4 * d_.mean()) and me.hi < 0 and me.better and not me.worse
    assert me.p == pytest.approx(2 * 0.5 ** 12)  # Wilcoxon exact: every difference negative, no ties
    vs = t[(t.task == "t/bpb") & (t.applied == 2) & (t.against == 5)].iloc[0]
    assert vs["diff"] == pytest.approx(-0.05 - 1.1e-3 * d_.mean()) and vs.better
    ctl = t[(t.task == "t/bpb") & (t.applied == 5)]
    assert list(ctl.against) == [-1] and not ctl.better.iloc[0]  # controls are compared with none only
    mc = t[(t.task == "t/mc") & (t.against == -1)].iloc[0]
    assert mc["diff"] == pytest.approx((sum(flip) - sum(acc)) / n)
    # McNemar: 6 docs right only when edited, 0 the other way: exact p = 2 * 0.5^6
    assert mc.p == pytest.approx(2 * 0.5 ** 6) and mc.better
