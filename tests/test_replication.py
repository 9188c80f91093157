"""Replication helpers: per-model failure, family relation, curves from phase tables."""

import numpy as np
import pandas as pd
import pytest

from avalanche_nb import replication


def test_a_model_that_cannot_load_offline_fails_with_its_name(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(replication.ReplicationModelError, match="'no-org/no-such-model'.*cannot be used offline"):
        replication.load("no-org/no-such-model", "float32", "cpu", 0, None)
    with pytest.raises(replication.ReplicationModelError, match="no tokenizer"):
        replication.load("tiny-llama", "float32", "cpu", 0, None)


def test_family_relation():
    assert replication.family_relation(["llama", "gemma3_text"]) == "cross-family"
    assert replication.family_relation(["llama", "llama"]) == "same family"
    assert replication.family_relation(["gemma3", "gemma3_text"]) == "same family"
    assert replication.family_relation(["qwen2", "llama"]) == "cross-family"  # same hook layout, other family


def test_curves_take_rate_matched_pos_rows_and_fixed_rates():
    rows = []
    for g in (0.9, 1.0, 1.1):
        for d in ("pos", "abs"):
            for mode in ("fixed", "rate_matched"):
                rows.append(dict(ablation="all", g=g, target_rate=1e-4, spike_def=d, threshold_mode=mode,
                                 rate_mean=g if mode == "fixed" else 1.0, b_tot=10 * g + (d == "abs"),
                                 delta_b_tot_n1=g, z_tot_n1=2 * g, chi_perc=3 * g))
    sweep = pd.DataFrame(rows + [dict(rows[0], ablation="late", b_tot=-1.0)])
    ppl = pd.DataFrame({"g": [0.9, 1.0, 1.1], "perplexity": [5.0, 4.0, 6.0]})
    arc = pd.DataFrame({"subset": ["all"] * 3 + ["ARC-Easy"] * 3, "g": [0.9, 1.0, 1.1] * 2,
                        "acc": [0.3, 0.4, 0.5, 0.9, 0.9, 0.9], "acc_norm": [0.1, 0.2, 0.3, 0.9, 0.9, 0.9]})
    c = replication.curves("m", sweep, ppl, arc, 1.1)
    assert list(c.columns) == list(replication.CURVE_COLUMNS)
    np.testing.assert_allclose(c.rate_fixed, [0.9, 1.0, 1.1])
    np.testing.assert_allclose(c.b_tot, [9.0, 10.0, 11.0])
    np.testing.assert_allclose(c.perplexity_b, [5.0, 4.0, 6.0])
    np.testing.assert_allclose(c.arc_acc, [0.3, 0.4, 0.5])
    assert c.is_gstar.tolist() == [False, False, True]
