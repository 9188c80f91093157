"""Gain sweep mechanics on a tiny model: grids, ablations, both threshold modes, defined empty rows."""

import numpy as np
import pytest

from avalanche_nb import lattice as lat
from avalanche_nb import params as P
from avalanche_nb import pipeline, sweep
from avalanche_nb.models import load_model


def test_gain_grid_checks():
    np.testing.assert_array_equal(sweep.check_gains([1.5, 1.0, 0.5]), [0.5, 1.0, 1.5])
    with pytest.raises(ValueError, match="empty"):
        sweep.check_gains([])
    with pytest.raises(ValueError, match="must include 1.0"):
        sweep.check_gains([0.5, 0.9, 1.1])
    with pytest.raises(ValueError, match=">= 0"):
        sweep.check_gains([-0.5, 1.0])
    with pytest.raises(ValueError, match="repeats"):
        sweep.check_gains([1.0, 1.0])


def test_ablation_bands_cover_the_layers_in_thirds():
    assert sweep.ablation_target("all", 30) == ("mlp", None)
    assert sweep.ablation_target("attn", 30) == ("attn", None)
    bands = [sweep.ablation_target(b, 30)[1] for b in ("early", "mid", "late")]
    assert bands == [list(range(0, 10)), list(range(10, 20)), list(range(20, 30))]
    assert sum(len(b) for b in (sweep.ablation_target(x, 31)[1] for x in ("early", "mid", "late"))) == 31
    with pytest.raises(ValueError, match="unknown ablation"):
        sweep.ablation_target("middle", 30)


def test_shuffle_keeps_masked_positions_and_the_token_multiset():
    tokens = np.arange(20).reshape(2, 10)
    valid = lat.valid_mask(2, 10, exclude_first_token=True)
    s = sweep.shuffle_tokens(tokens, valid, seed=0)
    assert (s[:, 0] == tokens[:, 0]).all()
    for n in range(2):
        assert sorted(s[n]) == sorted(tokens[n]) and not np.array_equal(s[n], tokens[n])


@pytest.fixture(scope="module")
def tiny_sweep():
    model = load_model("tiny-llama", dtype="float32", device="cpu", seed=0, device_map=None).model
    rng = np.random.default_rng(0)
    tokens, calib_tokens = rng.integers(3, 128, (6, 16)), rng.integers(3, 128, (6, 16))
    valid = lat.valid_mask(6, 16, exclude_first_token=True)
    p = P.validate({"target_rates": [0.02], "rate_reference_d_ff": None, "target_profile": "uniform",
                    "progress": False})
    ref = pipeline.build_reference(model, calib_tokens, tokens, p, progress=False)
    base = ref.lattices[0]
    gains = [0.0, 1.0, 8.0]  # tiny random MLPs add little to the residual: large gains to see it
    out = list(sweep.gain_lattices(model, tokens, valid, ref, gains, p))
    return base, out


def test_g1_of_the_sweep_equals_the_base_lattice(tiny_sweep):
    base, out = tiny_sweep
    g1 = out[1]
    assert g1.g == 1.0
    for d in lat.SPIKE_DEFS:
        np.testing.assert_array_equal(g1.counts[(0, d, "rate_matched")], base.counts[d])
        np.testing.assert_array_equal(g1.counts[(0, d, "fixed")], base.counts[d])


def test_rate_moves_under_fixed_and_stays_on_target_under_rate_matching(tiny_sweep):
    base, out = tiny_sweep
    for d in lat.SPIKE_DEFS:
        fixed_rates = [gl.thresholds[(0, d, "fixed")].rate.mean() for gl in out]
        assert len(set(np.round(fixed_rates, 12))) == 3  # the rate moves with g
        for gl in out:
            th = gl.thresholds[(0, d, "rate_matched")]
            denom = 6 * 15 * 64  # valid sites x d_ff
            assert np.abs(th.rate - base.target_rate).max() <= 1.0 / denom + 1e-12


def test_empty_lattice_gives_a_defined_row():
    counts = np.zeros((4, 12, 5), np.int32)
    valid = lat.valid_mask(4, 12, exclude_first_token=True)
    row, table = sweep.lattice_row(counts, valid, P.validate({"null_draws": 5, "gof_draws": 5, "bootstrap_draws": 10}),
                                   gof=True)
    assert row["n_avalanches"] == 0 and len(table) == 0
    for key in ("b_tot", "chi_perc", "chi_fano", "alpha", "gamma", "delta_b_tot_n1", "p_value", "mr_m"):
        assert np.isnan(row[key]), key


def test_row_statistics_equal_their_reference_paths(monkeypatch):
    """``lattice_row`` and ``layer_rows`` give the same numbers, bit for bit, with every fast path swapped for
    its reference: n3's per-trade loop, null ratios from expanded draws, powerlaw's whole xmin scan and
    mrestimator for the MR estimates."""
    from avalanche_nb import multistep, nulls, tails

    rng = np.random.default_rng(5)
    valid = lat.valid_mask(6, 48, exclude_first_token=True)
    counts = (rng.poisson(1.5, (6, 48, 9)) * (rng.random((6, 48, 9)) < 0.45)).astype(np.int32) * valid[:, :, None]
    th = lat.Thresholds("pos", rng.uniform(4, 8, 9), rng.uniform(1e-4, 1e-3, 9), rng.uniform(1e-4, 1e-3, 9))
    p = P.validate({"null_draws": 12, "gof_draws": 10, "bootstrap_draws": 20})

    def rows():
        row, table = sweep.lattice_row(counts, valid, p, gof=True)
        return row, table, sweep.layer_rows(counts, valid, th, per_layer_mr=True)

    fast = rows()
    monkeypatch.setattr(nulls, "_n3", nulls._n3_reference)
    monkeypatch.setattr(nulls, "_branching_compressed", lambda C, lay, T: nulls.branching_batch(nulls._expand(C, lay, T)))
    monkeypatch.setattr(tails, "fit_power_law", lambda sizes, compare=True, **kw: tails._fit_with_powerlaw(sizes, **kw))
    monkeypatch.setattr(multistep, "mr_branching", multistep.mr_branching_mrestimator)
    monkeypatch.setattr(multistep, "mr_branching_many",
                        lambda series, **kw: [multistep.mr_branching_mrestimator(s, **kw) for s in series])
    ref = rows()
    assert list(fast[0]) == list(ref[0])
    for k, v in ref[0].items():
        assert type(fast[0][k]) is type(v) and (fast[0][k] == v or (np.isnan(v) and np.isnan(fast[0][k]))), k
    assert np.isfinite(fast[0]["alpha"]) and np.isfinite(fast[0]["mr_m"]) and np.isfinite(fast[0]["z_tot_n3"])
    assert fast[1].equals(ref[1]) and fast[2].equals(ref[2]) and fast[2]["mr_m"].notna().all()
