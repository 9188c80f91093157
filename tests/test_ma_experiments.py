"""The massive-activation experiments: control layers, the intervention, factorial and rigidity tables
on the planted model, and the findings drawn from them."""

import numpy as np
import pandas as pd
import pytest

from avalanche_nb import ma_experiments as mx, massive, scoring
from tiny_models import PLANT_LAYER, planted_llama, scan, tokens


def test_control_layers():
    assert mx.control_layers(10, 4, 3) == [4, 0, 5, 9]
    assert mx.control_layers(4, 0, None) == [0, 1, 2, 3]
    assert mx.control_layers(4, 2, 0) == [2]


def test_experiments_on_the_planted_model():
    model = planted_llama()
    probe, calib, b = tokens(), tokens(4, seed=1), tokens(2, T=10, seed=2)
    me = massive.me_layer(scan(model, probe, 4), "sun", 100.0)

    class Tok:
        def decode(self, ids):
            return " x" if ids[0] % 3 else "."

    inter, classes, sinks = mx.intervention_tables(model, Tok(), me, probe, calib, b,
                                                   ma_interventions=("zero", "mean", "clip"), ma_clip_multiple=10.0,
                                                   ma_top_k=4, score_batch_size=8)
    ppl = inter.groupby("intervention").perplexity.first()
    assert ppl["none"] == pytest.approx(scoring.perplexity(scoring.window_nll(model, b, score_batch_size=8)))
    assert set(classes.intervention) == {"none", "zero", "mean", "clip"}
    z = inter[inter.intervention == "zero"].set_index("layer")
    assert (z.loc[PLANT_LAYER:, "ratio"] < 1000).all()  # zeroed from the ME layer on
    assert set(sinks.intervention) == {"none", "zero", "mean", "clip"} and len(sinks) == 4 * 3 * 4
    fact = mx.factorial_table(model, me, probe, b, ma_top_k=4, score_batch_size=8)
    rig = mx.rigidity_table(model, Tok(), me, probe, b, [], layers=[PLANT_LAYER], rigidity_alphas=[0.0],
                            rigidity_mask_rates=[0.1], ma_top_k=4, score_batch_size=8, progress=False)
    assert list(rig.applied) == [-1] * 3 + [PLANT_LAYER] * 3 and rig.arc_acc.isna().all()
    f = mx.findings(me, inter, fact, rig)
    # the planted MA is made by the MLP: removing it at the ME layer stops the MA, the norm's mean does not
    assert f["ma_persists_in_factorial"] == {"norm=as_is, mlp=as_is": True, "norm=as_is, mlp=removed": False,
                                             "norm=mean, mlp=as_is": True, "norm=mean, mlp=removed": False}
    # nor does scaling the normed input of attention: the MLP reads the residual stream, which keeps the mark
    assert [r["ma_persists"] for r in f["rigidity"]] == [True]
    assert f["perplexity_ratio"]["none"] == 1.0


def test_rigidity_persistence_includes_the_edited_layer():
    # the rigidity edit acts on the applied layer's input: an MA still present in that layer's own output
    # persists (the factorial counts the ME layer's output the same way)
    me = {"criterion": "sun", "relaxed_ratio": 100.0, "me_layer": 1}
    base = dict(perplexity=1.0, arc_acc=np.nan, arc_p=np.nan, sink=0.1)
    rows = [dict(applied=-1, layer=l, alpha=1.0, mask_rate=0.0, top1=500.0, ratio=5000.0, **base) for l in range(3)]
    rows += [dict(applied=1, layer=l, alpha=0.0, mask_rate=0.01, top1=[500.0, 500.0, 1.0][l],
                  ratio=[5000.0, 5000.0, 1.0][l], **base) for l in range(3)]
    empty = pd.DataFrame({"intervention": ["none"], "perplexity_ratio": [1.0]})
    fact = pd.DataFrame(columns=["norm", "mlp", "layer", "top1", "ratio"])
    f = mx.findings(me, empty, fact, pd.DataFrame(rows))
    assert f["rigidity"][0]["applied"] == 1 and f["rigidity"][0]["ma_persists"] is True
