"""Phase 09's tables on the planted model: probe targets from a hand tokenizer, the probe grid and its
controls, and the paired tests of generation metrics."""

import numpy as np
import pandas as pd
import pytest

from avalanche_nb import ma_use as mu
from avalanche_nb import params as P
from tiny_models import PLANT_DIM, PLANT_LAYER, planted_llama

PLANTED = {"found": True, "me_layer": PLANT_LAYER, "ma_pos": 0, "ma_dims": [PLANT_DIM]}


class Tok:
    """Token t reads "." when t % 5 == 0, " the" when t % 5 == 1, else " w<t>"."""

    def decode(self, ids):
        t = int(ids[0])
        return "." if t % 5 == 0 else " the" if t % 5 == 1 else f" w{t}"


def test_probe_targets_from_the_token_text():
    toks = np.array([[5, 6, 11, 7], [1, 10, 2, 3]])
    t = mu.targets(Tok(), toks, [1, 2])
    assert t["token_class"].tolist() == [["punctuation", "function", "function", "content"],
                                         ["function", "punctuation", "content", "content"]]  # position 0 too
    assert t["sentence_boundary"].tolist() == [[1, 0, 0, 0], [0, 1, 0, 0]]
    assert t["position_bucket"].tolist() == [[0, 1, 2, 2]] * 2
    assert t["next_class"][0].tolist() == ["function", "function", "content", ""]


def test_the_probe_grid_on_the_planted_model():
    p = P.validate(P.defaults() | {"probe_max_tokens": 120, "probe_folds": 3, "batch_size": 8})
    toks = np.random.default_rng(9).integers(3, 120, (40, 8))  # first tokens vary, so their classes do
    table = mu.probe_tables(type("LM", (), {"model": planted_llama(), "tokenizer": Tok()})(), p, PLANTED, toks)
    assert set(table.layer) == {PLANT_LAYER, 2} and set(table.probe) == {"linear", "mlp"}
    assert set(table.features) == {"ma_dims", "state"}
    # the MA token always sits at position 0: its position bucket does not vary and is not probed
    assert set(table[table.group == "ma"].target) == {"token_class", "sentence_boundary", "next_class"}
    assert set(table[table.group == "ordinary"].target) == set(mu.TARGETS)
    assert (table[table.group == "ma"].n == 40).all() and (table[table.group == "ordinary"].n <= 120).all()
    np.testing.assert_allclose(table.selectivity, table.acc - table.control_acc)
    assert ((table.lo <= table.acc) & (table.acc <= table.hi)).all()


def test_paired_tests_pair_each_edit_with_none_by_prompt():
    rows = []
    for mode, shift in (("none", 0.0), ("zero", 1.0)):
        for i in range(4):
            rows.append({"kind": "b", "decoding": "greedy", "intervention": mode, "prompt": i,
                         **{m: float(i) + shift * (i + 1) for m in mu.METRICS}})
    p = P.validate(P.defaults() | {"bootstrap_draws": 50})
    tests = mu.paired_tests(pd.DataFrame(rows).sample(frac=1, random_state=0), p)  # order must not matter
    assert len(tests) == len(mu.METRICS) and set(tests.intervention) == {"zero"}
    r = tests.iloc[0]
    assert r["diff"] == pytest.approx(2.5) and r.none == pytest.approx(1.5) and r.edited == pytest.approx(4.0) and r.n == 4
