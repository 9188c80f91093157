"""The gain stack on the hand-made stack of ``hand_stack``: the npz contract, refusals, the signature
curves against their definitions, and finding a run."""

import numpy as np
import pytest

from avalanche_nb import gain_stack as gs
from flood_fill import flood_fill_table
from hand_stack import D_FF, GAINS, META, G, N, T, b_tot


def test_npz_round_trip_and_the_contract(stack):
    z = stack.to_npz_dict()
    assert {"counts_pos", "counts_abs", "fixed_counts_pos", "fixed_counts_abs", "g", "valid", "tokens", "token_text",
            "target_rate", "d_ff"} == set(z)
    back = gs.GainStack.from_npz_dict(z, **META)
    for k in gs.KEYS:
        np.testing.assert_array_equal(back.counts[k], stack.counts[k])
    assert back.token_text.tolist() == stack.token_text.tolist() and back.d_ff == D_FF
    del z["fixed_counts_abs"]
    with pytest.raises(ValueError, match="fixed_counts_abs.*predates the explorer"):
        gs.GainStack.from_npz_dict(z, **META)


def test_bad_stacks_are_refused(stack):
    with pytest.raises(ValueError, match="no valid site"):
        gs.GainStack(GAINS, stack.counts, np.zeros((N, T), bool), stack.tokens, stack.token_text, stack.target_rate, 1,
                     **META)
    with pytest.raises(ValueError, match="shape"):
        gs.GainStack(GAINS[:2], stack.counts, stack.valid, stack.tokens, stack.token_text, stack.target_rate, 1,
                     **META)
    with pytest.raises(ValueError, match="not on the stack's grid"):
        stack.gain_index(0.9)
    with pytest.raises(ValueError, match="unknown threshold mode"):
        gs.curves(stack, "pos", "matched")


def test_signatures_against_the_definitions(stack):
    sig = gs.curves(stack, "pos", "fixed", "moore")
    assert sig.g.tolist() == GAINS
    for gi in range(G):
        counts = stack.counts[("pos", "fixed")][gi]
        rate = counts.sum((0, 1)) / (stack.valid.sum() * D_FF)
        assert sig.rate_mean[gi] == pytest.approx(rate.mean())
        assert sig.b_tot[gi] == pytest.approx(b_tot(counts, stack.valid))
        assert sig.n_avalanches[gi] == len(flood_fill_table(counts, stack.valid, "moore"))
    assert gs.curves(stack, "pos", "fixed", "moore") is sig  # cached


def test_find_run_names_the_runs_there(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no run 'b'.*\['a'\]"):
        gs.find_run("b", tmp_path)
    with pytest.raises(FileNotFoundError, match="no finished 03_gain_sweep"):
        gs.from_run(tmp_path / "a")
