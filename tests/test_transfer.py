"""The held-out transfer tables on hand-made sweep rows: the evaluated gains, the headline table (B's
perplexity at every gain, B's and A's signatures at g = 1 and g* only) and its readable form.

Computing the rows themselves (``evaluate``) needs the model's sweep: covered end to end by
test_smoke_run.py."""

import numpy as np
import pandas as pd

from avalanche_nb import transfer


def test_evaluated_gains_are_the_grid_and_gstar_sorted_without_repeats():
    assert transfer.evaluated_gains([1.5, 0.5, 1.0], 1.0) == [0.5, 1.0, 1.5]
    assert transfer.evaluated_gains([0.5, 1, 1.5], 2) == [0.5, 1.0, 1.5, 2.0]
    assert transfer.evaluated_gains([1.0, 1.5], 0.3) == [0.3, 1.0, 1.5]


def sweep_rows(sign: float) -> pd.DataFrame:
    """Sweep rows at g = 0.8, 1, 1.2 whose headline rows (ablation all, pos, rate_matched, the first
    target rate) carry ``sign · (10 i + g)`` in the i-th headline column; every other row carries 999."""
    main = dict(ablation="all", spike_def="pos", threshold_mode="rate_matched", target_rate=1e-3)
    rows = [main | {"g": g} | {c: sign * (10 * i + g) for i, c in enumerate(transfer.HEADLINE)} for g in (0.8, 1.0, 1.2)]
    for other in ({"ablation": "early"}, {"spike_def": "abs"}, {"threshold_mode": "fixed"}, {"target_rate": 1e-2}):
        rows += [main | other | {"g": g} | {c: 999.0 for c in transfer.HEADLINE} for g in (1.0, 1.2)]
    return pd.DataFrame(rows)


def test_headline_and_signature_table_by_hand():
    ppl = pd.DataFrame({"g": [0.8, 1.0, 1.2, 1.5], "nll_mean": [2.0, 1.0, 1.5, 3.0],
                        "perplexity": np.exp([2.0, 1.0, 1.5, 3.0]), "n_tokens": 30})
    table = transfer.headline(ppl, sweep_rows(1.0), sweep_rows(-1.0), gstar=1.2)
    assert list(table.columns) == (["g", "nll_mean", "perplexity", "n_tokens", "is_gstar"]
                                   + [f"b_{c}" for c in transfer.HEADLINE] + [f"a_{c}" for c in transfer.HEADLINE])
    pd.testing.assert_frame_equal(table[ppl.columns], ppl)
    assert table.is_gstar.tolist() == [False, False, True, False]
    # chi_perc is headline column 6: B at g = 1 is 61, at g* = 1.2 it is 61.2; A the negatives
    np.testing.assert_allclose(table.b_chi_perc, [np.nan, 61.0, 61.2, np.nan])
    np.testing.assert_allclose(table.a_chi_perc, [np.nan, -61.0, -61.2, np.nan])
    np.testing.assert_allclose(table.b_rate_mean, [np.nan, 1.0, 1.2, np.nan])

    sig = transfer.signature_table(table, 1.2)
    assert list(sig.columns) == ["B, g = 1", "A, g = 1", "B, g* = 1.2", "A, g* = 1.2"]
    assert list(sig.index) == list(transfer.HEADLINE)
    assert sig.loc["b_tot"].tolist() == [11.0, -11.0, 11.2, -11.2]
    assert sig.loc["n_avalanches"].tolist() == [81.0, -81.0, 81.2, -81.2]
