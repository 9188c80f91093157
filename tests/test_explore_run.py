"""The explorer on the smoke run (real SmolLM2): its curves are phase 03's numbers, its token labels
the tokenizer's, its exports stay out of the phase folders; a live stack is deterministic, cached, and
rate-matched as phase 03's is."""

import numpy as np
import pandas as pd
import pytest

from avalanche_nb import phases, runner
from avalanche_nb import gain_stack as gs
from avalanche_nb import live_stack
from avalanche_nb import widgets
from avalanche_nb.data import token_strings

pytestmark = pytest.mark.slow
COLUMNS = ["rate_mean", "b_tot", "delta_b_tot_n1", "z_tot_n1", "chi_perc", "chi_fano", "n_avalanches"]


def test_curves_equal_the_sweep_table(run_dir):
    stack = gs.from_run(run_dir)
    sweep = pd.read_parquet(run_dir / "03_gain_sweep" / "sweep.parquet")
    assert stack.adjacency == "von_neumann" and stack.null_draws == 10 and stack.shape == (3, 4, 48, 30)
    for d, m in gs.KEYS:
        rows = sweep[(sweep.ablation == "all") & (sweep.spike_def == d) & (sweep.threshold_mode == m)].sort_values("g")
        sig = gs.curves(stack, d, m)
        np.testing.assert_allclose(sig.g, rows.g)
        for col in COLUMNS:  # same lattices, nulls, seed and draws: the same numbers
            np.testing.assert_allclose(sig[col], rows[col], rtol=1e-12, err_msg=f"{d} {m} {col}")


def test_the_first_token_lattice_of_phase_08(run_dir):
    stack = widgets.explore(run_dir=run_dir, lattice="first_token").scrubber.stack
    standard = gs.from_run(run_dir)
    assert stack.valid.all() and not standard.valid[:, 0].any()  # the first token is in, and only there
    np.testing.assert_array_equal(stack.tokens, standard.tokens)
    np.testing.assert_array_equal(stack.g, standard.g)
    g1 = stack.gain_index(1.0)
    # at g = 1 each layer holds its target number of spikes over the lattice's own (larger) set of sites
    rates = gs.layer_rates(stack.lattice("pos", "rate_matched", g1), stack.valid, stack.d_ff)
    assert np.abs(rates - stack.target_rate).max() <= 1.0 / (stack.valid.sum() * stack.d_ff) + 1e-12
    with pytest.raises(ValueError, match="unknown lattice"):
        gs.from_run(run_dir, "first")


def test_token_labels_are_the_tokenizer_s(run_dir, smol):
    stack = gs.from_run(run_dir)
    for n in range(stack.shape[1]):
        assert stack.token_text[n].tolist() == token_strings(smol.tokenizer, stack.tokens[n])


def test_exports_stay_out_of_the_phase_folders(run_dir):
    ex = widgets.explore(run_dir=run_dir)
    js, csv = ex.inspector.export()
    assert js.parent == run_dir / gs.EXPORT_FOLDER and csv.exists()
    assert runner.verify(run_dir) == []  # every phase's artifacts still hash as recorded


def test_live_stack_is_rate_matched_deterministic_and_cached(monkeypatch):
    kw = dict(n_sequences=2, n_calibration=2, window=24, gains=[0.9, 1.0, 1.1], progress=False)
    fresh = live_stack.compute("smollm2-135m-instruct", cache=False, **kw)
    first = live_stack.compute("smollm2-135m-instruct", **kw)  # computes (or reads) the cache
    monkeypatch.setattr("avalanche_nb.models.load_model", lambda *a, **k: pytest.fail("the cache was not used"))
    cached = live_stack.compute("smollm2-135m-instruct", **kw)
    G, N, T, L = fresh.shape
    assert (G, N, T, L) == (3, 2, 24, 30)
    for k in gs.KEYS:
        np.testing.assert_array_equal(fresh.counts[k], first.counts[k])
        np.testing.assert_array_equal(fresh.counts[k], cached.counts[k])
    for d in ("pos", "abs"):
        # at g = 1 the fixed thresholds are the rate-matched ones
        np.testing.assert_array_equal(fresh.counts[(d, "fixed")][1], fresh.counts[(d, "rate_matched")][1])
        sites = fresh.valid.sum() * fresh.d_ff
        for gi in range(G):  # rate-matched: every layer on its g = 1 target, up to rounding to whole spikes
            rate = gs.layer_rates(fresh.counts[(d, "rate_matched")][gi], fresh.valid, fresh.d_ff)
            np.testing.assert_allclose(rate, fresh.target_rate, rtol=0, atol=0.5 / sites + 1e-12)
        fixed = [fresh.counts[(d, "fixed")][gi].sum() for gi in range(G)]
        assert fixed[0] < fixed[1] < fixed[2]  # fixed thresholds: more spikes at a larger gain
    assert fresh.token_text.shape == (2, 24) and fresh.export_dir.parent.name == "explore"
