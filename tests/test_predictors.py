"""Emergence-parameter regressions on architecture features: too few rows, no fits, a planted relation."""

import numpy as np
import pandas as pd

from avalanche_nb import predictors


def test_predictors_say_when_rows_are_too_few_and_find_a_planted_relation():
    rng = np.random.default_rng(0)
    n = 40
    rows = pd.DataFrame({"layer": rng.integers(0, 8, n), "layers": 8, "width": rng.choice([64, 128, 256], n),
                         "heads": 4, "mlp_ratio": 4.0})
    rows["p_K"] = 3.0 * np.log(rows.width) + rng.normal(0, 0.05, n)
    few = predictors.predict(rows.head(4), ["p_K"], seed=0)
    assert not few.conclusive.any() and "too few" in few.note.iloc[0]
    # every fit failed (a trajectory too short for ma5): no parameter column at all, still an answer
    none = predictors.predict(rows.drop(columns="p_K").head(0), ["p_K", "p_lambda"], seed=0)
    assert none.n_rows.tolist() == [0, 0] and not none.conclusive.any()
    res = predictors.predict(rows, ["p_K"], seed=0).set_index("regressor")
    assert res.loc["ridge", "cv_r2"] > 0.95
    imp = res.loc["ridge", [f"imp_{f}" for f in predictors.FEATURES]]
    assert imp.idxmax() in ("imp_log_hidden", "imp_width_per_depth", "imp_heads_per_hidden")
