"""Phase 08's measurements (:mod:`avalanche_nb.ma_lattice`): hand-computed shares and N2 moments, the planted
massive activation of ``tiny_models`` tracked across gains, edited lattices against a direct recomputation,
and bad inputs."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as st

from avalanche_nb import avalanches as av
from avalanche_nb import hooks, massive, multistep, nulls, pipeline
from avalanche_nb import interventions as iv
from avalanche_nb import lattice as lat
from avalanche_nb import ma_lattice as ml
from avalanche_nb import params as P
from tiny_models import PLANT_DIM, PLANT_LAYER, layer_outputs, planted_llama, tokens

PLANTED = {"found": True, "me_layer": PLANT_LAYER, "ma_pos": 0, "ma_dims": [PLANT_DIM]}


def params(**kw):
    return P.validate(P.defaults() | {"progress": False, "null_draws": 20, "bootstrap_draws": 50, "batch_size": 4,
                                       "ma_top_k": 4, "target_rates": [0.05], "rate_reference_d_ff": None,
                                       "target_profile": "uniform", "z_floor": 1.0, "window": 12,
                                       "gains": [0.0, 0.5, 1.0, 2.0]} | kw)


@pytest.fixture(scope="module")
def planted():
    return planted_llama()


# --------------------------------------------------------------------------- 1. the gain moves the planted MA


def test_the_planted_ma_is_found_and_tracked_at_every_gain(planted):
    probe = tokens(4, T=12, seed=5)
    profile, summary = ml.gain_tables(planted, probe, PLANTED, params())
    assert sorted(set(profile.scope)) == ["all", "me_layer"] and len(profile) == 2 * 4 * 3
    at = summary.set_index(["scope", "g"])
    for scope in ("all", "me_layer"):
        one = at.loc[(scope, 1.0), "ma_me"]
        for g in (0.5, 1.0, 2.0):
            row = at.loc[(scope, g)]
            assert row.me_layer_sun == PLANT_LAYER and row.ma_pos == 0 and row.ma_dims == str(PLANT_DIM)
            assert row.seq_found == 1.0 and row.seq_me_layer == PLANT_LAYER
            # the magnitude at the site, straight from the layer outputs under the same gain
            with hooks.gain(planted, g, "mlp", None if scope == "all" else [PLANT_LAYER]):
                h = layer_outputs(planted, probe)
            direct = h[PLANT_LAYER][:, 0, PLANT_DIM].abs().double().numpy()
            assert row.ma_me == pytest.approx(direct.mean(), rel=1e-6)
            assert row.ma_me_lo <= row.ma_me <= row.ma_me_hi
            assert row.ma_me / one == pytest.approx(g, rel=0.01)  # the planted MLP makes it: it scales with g
            last = h[max(h)][:, 0, PLANT_DIM].abs().double().numpy()
            assert row.ma_last == pytest.approx(last.mean(), rel=1e-6)
        # no MLP output, no MA: no layer meets the criterion at g = 0
        row = at.loc[(scope, 0.0)]
        assert pd.isna(row.me_layer_sun) and row.seq_found == 0.0 and np.isnan(row.seq_me_layer)
    assert str(summary.me_layer_sun.dtype) == "Int64"


def test_first_layer_per_sequence_reads_each_sequence():
    top = np.zeros((4, 3, 1))  # embeddings + 3 layers, 3 sequences
    median = np.ones((4, 3))
    top[2, 0], top[1, 1], top[3, 1] = 5000.0, 5000.0, 5000.0  # seq 0 from layer 1, seq 1 from layer 0, seq 2 none
    s = SimpleNamespace(top_abs=top, ratio=top[..., 0] / median)
    np.testing.assert_array_equal(ml.first_layer_per_sequence(s, "sun", 100.0), [1.0, 0.0, np.nan])


# --------------------------------------------------------------------------- 2. shares against N2


def test_shift_null_share_equals_the_hand_computation():
    counts = np.zeros((1, 4, 1), int)
    counts[0, :, 0] = [3, 1, 0, 0]
    mask = np.zeros((1, 4, 1), bool)
    mask[0, 0] = True
    r = ml.shift_null_share(counts, np.ones((1, 4), bool), mask)
    # shifts 1, 2, 3 bring c[3], c[2], c[1] = 0, 0, 1 to token 0: mean 1/3, variance 2/9, of a total of 4
    assert r["observed"] == 0.75
    assert r["null_mean"] == pytest.approx(1 / 12)
    assert r["null_sd"] == pytest.approx(np.sqrt(2 / 9) / 4)
    assert r["z"] == pytest.approx(8 / np.sqrt(2))


def test_shift_null_share_equals_the_mean_of_n2_draws():
    rng = np.random.default_rng(1)
    X = rng.random((3, 9, 4)) < 0.3
    valid = np.ones((3, 9), bool)
    valid[:, 0] = False
    valid[2, 5:] = False  # sequences of different lengths
    X &= valid[:, :, None]
    mask = np.zeros_like(X)
    mask[:, 1] = True
    mask[1, :, 2] = True
    exact = ml.shift_null_share(X.astype(int), valid, mask)
    D = nulls.draws(X, valid, "n2", 4000, seed=0)
    shares = D[:, mask].sum(1) / X.sum()
    se = shares.std() / np.sqrt(len(shares))
    assert abs(shares.mean() - exact["null_mean"]) < 4 * se
    assert shares.std() == pytest.approx(exact["null_sd"], rel=0.06)


def test_start_sites_are_each_avalanches_first_site():
    X = np.zeros((2, 8, 4), bool)
    X[0, 2, 1] = X[0, 3, 1] = X[0, 3, 0] = True  # one avalanche: its bounding-box corner (2, 0) is not a site
    X[0, 5, 3] = True
    X[1, 0, 2] = X[1, 1, 2] = True
    n, t, l = ml.start_sites(X, "von_neumann")
    assert list(zip(n, t, l)) == [(0, 2, 1), (0, 5, 3), (1, 0, 2)]
    table = av.avalanche_table(X.astype(int), adjacency="von_neumann")
    assert list(zip(table.t0, table.l0))[0] == (2, 0)  # what the start site is not


def test_start_shares_against_a_loop_over_the_draws():
    rng = np.random.default_rng(2)
    X = rng.random((2, 10, 3)) < 0.25
    valid = np.ones((2, 10), bool)
    masks = {"token1": np.zeros_like(X), "layer0": np.zeros_like(X)}
    masks["token1"][:, 1] = True
    masks["layer0"][..., 0] = True
    got = ml.start_shares(X, valid, masks, adjacency="moore", null_draws=30, seed=3, chunk=7)
    draws = nulls.draws(X, valid, "n2", 30, seed=3)
    for k, m in masks.items():
        values = []
        for D in draws:
            n, t, l = ml.start_sites(D, "moore")
            values.append(m[n, t, l].mean())
        n, t, l = ml.start_sites(X, "moore")
        assert got[k]["observed"] == m[n, t, l].mean()
        assert got[k]["null_mean"] == pytest.approx(np.mean(values))
        assert got[k]["null_sd"] == pytest.approx(np.std(values, ddof=1))
        assert got[k]["z"] == pytest.approx((got[k]["observed"] - np.mean(values)) / np.std(values, ddof=1))
        assert (got[k]["null_lo"], got[k]["null_hi"]) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])))


def test_share_table_rows_and_the_me_layer_share_is_fixed_by_the_rates():
    rng = np.random.default_rng(4)
    counts = rng.integers(0, 3, (3, 8, 4)) * (rng.random((3, 8, 4)) < 0.4)
    valid = np.ones((3, 8), bool)
    outlier = rng.random((3, 8, 4)) * 10
    outlier[1, 5, 2] = 1000.0
    masks = ml.site_masks(outlier, ma_pos=0, me_layer=2, secondary_ratio=5.0)
    table = ml.share_table(counts, valid, masks, adjacency="von_neumann", null_draws=10, seed=0)
    assert list(zip(table.site, table.measure)) == [(s, m) for s in ml.SITES for m in ml.MEASURES]
    assert dict(zip(table.site, table.n_sites)) == {"ma_token": 12, "me_layer": 24, "secondary": 1}
    me = table[(table.site == "me_layer") & (table.measure != "starts")]
    # N2 keeps every (sequence, layer) row's count: a whole layer's share cannot move
    np.testing.assert_allclose(me.observed, me.null_mean)
    assert (me.null_sd == 0).all() and me.z.isna().all()
    spikes = table[(table.site == "ma_token") & (table.measure == "spikes")].iloc[0]
    assert spikes.observed == counts[:, 0].sum() / counts.sum()


def test_site_masks_flag_secondary_outliers_relative_to_the_layer():
    outlier = np.ones((2, 5, 2))
    outlier[:, 0] = 1e4  # the MA token: never secondary
    outlier[0, 3, 1] = 4.0
    outlier[1, 2, 0] = 6.0
    m = ml.site_masks(outlier, ma_pos=0, me_layer=1, secondary_ratio=5.0)
    assert m["ma_token"][:, 0].all() and m["ma_token"].sum() == 4
    assert m["me_layer"][..., 1].all() and m["me_layer"].sum() == 10
    assert np.argwhere(m["secondary"]).tolist() == [[1, 2, 0]]  # 6 > 5 x median 1; 4 is not
    valid = np.ones((2, 5), bool)
    valid[1, 2] = False  # an invalid site is in no set and not in the median
    m = ml.site_masks(outlier, ma_pos=0, me_layer=1, secondary_ratio=5.0, valid=valid)
    assert not m["secondary"].any() and not m["me_layer"][1, 2].any()
    with pytest.raises(ValueError, match="ME layer 2"):
        ml.site_masks(outlier, ma_pos=0, me_layer=2, secondary_ratio=5.0)


def test_site_outlier_ratios_equal_the_layer_outputs(planted):
    toks = tokens(3, T=12, seed=6)
    r = ml.site_outlier_ratios(planted, toks, batch_size=2)
    h = layer_outputs(planted, toks)
    for l, x in h.items():
        a = x.abs().double().numpy()
        expected = a.max(-1) / np.median(a.reshape(len(a), -1), axis=1)[:, None]
        np.testing.assert_allclose(r[..., l], expected, rtol=1e-5)
    assert r[:, 0, PLANT_LAYER].min() > 1000  # the planted site stands out


# --------------------------------------------------------------------------- outlier ratio vs spikes


def test_position_buckets_and_their_labels():
    b = ml.position_buckets(100, [1, 4, 16, 64])
    assert b[[0, 1, 3, 4, 15, 16, 63, 64, 99]].tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert ml.bucket_labels([1, 4, 16, 64], 100) == ["0", "1-3", "4-15", "16-63", "64+"]
    with pytest.raises(ValueError, match="increasing"):
        ml.position_buckets(10, [4, 1])


def test_stratified_spearman_equals_scipy_within_strata():
    rng = np.random.default_rng(5)
    sizes = [8, 20, 60]  # unequal strata: the pooled rho must not be decided by the largest alone
    strata = np.repeat(np.arange(3), sizes) * 0.5  # labels need not be integers
    x = rng.random(len(strata))
    y = np.round(x * 3 + rng.random(len(strata)), 0) * (strata > 0) + x * (strata == 0)  # ties in y
    groups = np.tile(np.arange(8), 11)
    pooled, per = ml.stratified_spearman(x, y, strata, groups, bootstrap_draws=100, seed=0)
    rhos = [st.spearmanr(x[strata == s], y[strata == s]).statistic for s in (0, 0.5, 1.0)]
    np.testing.assert_allclose(per.rho, rhos)
    assert per.n.tolist() == sizes and per.stratum.tolist() == [0, 0.5, 1.0]
    assert rhos[0] == pytest.approx(1.0)
    assert pooled["rho"] == pytest.approx(np.dot(sizes, rhos) / sum(sizes))  # each stratum weighted by its size
    assert pooled["lo"] <= pooled["rho"] <= pooled["hi"] and pooled["n"] == 88
    # one stratum: plain Spearman; shifting a stratum's x changes the plain rho but not the stratified one
    one, _ = ml.stratified_spearman(x, y, np.zeros(88, int), groups, bootstrap_draws=10, seed=0)
    assert one["rho"] == pytest.approx(st.spearmanr(x, y).statistic)
    shifted, _ = ml.stratified_spearman(x + 10 * strata, y, strata, groups, bootstrap_draws=10, seed=0)
    assert shifted["rho"] == pytest.approx(pooled["rho"])
    # a constant stratum has no rho and is left out of the pool
    flat = y.copy()
    flat[strata == 0] = 1.0
    pooled_flat, per_flat = ml.stratified_spearman(x, flat, strata, groups, bootstrap_draws=10, seed=0)
    assert np.isnan(per_flat.rho[0]) and pooled_flat["rho"] == pytest.approx(np.dot(sizes[1:], rhos[1:]) / 80)


# --------------------------------------------------------------------------- 3. an edit that removes the MA


def full_tap(model, toks):
    got = {}
    with hooks.attach(model, hooks.Hook("mlp.tap", lambda l, u: got.__setitem__(l, u.float().clone()))):
        hooks.forward_hidden(model, torch.from_numpy(toks))
    return torch.stack([got[l] for l in sorted(got)], 2)  # [N, T, L, d_ff]


def brute_lattices(model, toks, valid, ref):
    """(rate-matched to ref's targets, at ref's fixed thresholds) pos lattices from the full tap, by definition."""
    cal = ref.calibration
    mu, scale = torch.tensor(cal.mu, dtype=torch.float32), torch.tensor(cal.sigma, dtype=torch.float32) + lat.EPS
    z = ((full_tap(model, toks) - mu) / scale).numpy()
    z[~valid] = -np.inf
    L, D = cal.n_layers, cal.d_ff
    matched, fixed = np.zeros(z.shape[:3], int), np.zeros(z.shape[:3], int)
    for l in range(L):
        v = np.sort(z[..., l, :][valid].ravel())[::-1]
        m = int(round(ref.targets[0][l] * valid.sum() * D))
        matched[..., l] = (z[..., l, :] > v[m]).sum(-1)
        fixed[..., l] = (z[..., l, :] > ref.fixed[(0, "pos")][l]).sum(-1)
    return matched, fixed


def test_edits_change_the_lattice_exactly_as_a_direct_recomputation(planted):
    toks, calib = tokens(6, T=12, seed=7), tokens(4, T=12, seed=8)
    p = params(ma_interventions=["zero", "mean"])
    ref = pipeline.build_reference(planted, calib, toks, p, progress=False)
    valid = pipeline.valid_mask(toks, p)
    rows, sizes = ml.edit_tables(planted, toks, valid, ref, p, PLANTED, calib)
    assert list(rows.intervention) == ["none", "zero", "mean"] and set(sizes.intervention) == set(rows.intervention)
    sites = {"layers": [1, 2], "positions": [0], "dims": [PLANT_DIM]}
    means = iv.site_means(planted, calib, **sites, batch_size=4)
    lattices = {}
    for mode in ("none", "zero", "mean"):
        with iv.edit_sites(planted, **sites, mode=mode, ma_clip_multiple=10.0, values=means):
            lattices[mode] = brute_lattices(planted, toks, valid, ref)
    by = rows.set_index("intervention")
    D = ref.calibration.d_ff
    for mode, (matched, fixed) in lattices.items():
        b = av.branching(av.occupancy(matched, valid))
        assert by.b_tot[mode] == pytest.approx(b["b_tot"])
        assert by.rate_fixed[mode] == pytest.approx((fixed.sum((0, 1)) / (valid.sum() * D)).mean())
        assert by.n_avalanches[mode] == len(av.avalanche_table(matched, valid, adjacency=p["adjacencies"][0]))
        assert by.d_b_tot[mode] == pytest.approx(b["b_tot"] - by.b_tot["none"])
        assert by.rate_ratio[mode] == pytest.approx(fixed.sum() / lattices["none"][1].sum())
    # zeroing the planted MA changes the downstream lattice; the none row compares with itself
    assert not np.array_equal(lattices["zero"][1], lattices["none"][1])
    assert by.d_b_tot["none"] == 0 and by.d_b_tot_lo["none"] == 0 and by.rate_ratio["none"] == 1.0


def test_paired_changes_and_the_size_test():
    rng = np.random.default_rng(6)
    valid = np.ones((5, 10), bool)
    base = rng.integers(0, 3, (5, 10, 4)) * (rng.random((5, 10, 4)) < 0.4)
    more = base * 2
    assert ml.paired_rate_ratio(more, base, bootstrap_draws=50, seed=0) == pytest.approx(
        {"rate_ratio": 2.0, "rate_ratio_lo": 2.0, "rate_ratio_hi": 2.0})
    same = ml.paired_b_tot_change(more, base, valid, bootstrap_draws=50, seed=0)  # same occupancy
    assert same == {"d_b_tot": 0.0, "d_b_tot_lo": 0.0, "d_b_tot_hi": 0.0}
    # a different lattice: the point estimate from av.branching, the interval from resampling whole sequences
    other = rng.integers(0, 3, (5, 10, 4)) * (rng.random((5, 10, 4)) < 0.6)
    r = ml.paired_b_tot_change(other, base, valid, bootstrap_draws=300, seed=3)
    b = lambda c: av.branching(c > 0)["b_tot"]
    assert r["d_b_tot"] == pytest.approx(b(other) - b(base))
    from avalanche_nb.stats import bootstrap_weights
    boot = [b(other[np.repeat(np.arange(5), w)]) - b(base[np.repeat(np.arange(5), w)])
            for w in bootstrap_weights(5, 300, 3)]
    assert (r["d_b_tot_lo"], r["d_b_tot_hi"]) == pytest.approx(tuple(np.nanpercentile(boot, [2.5, 97.5])))
    r = ml.size_test(np.array([1, 2, 3]), np.array([1, 2, 3, 10]))
    assert r == {"ks": 0.25, "mean_size": 2.0}  # the largest CDF gap: at 3, 1 vs 3/4


# --------------------------------------------------------------------------- 4. the ME layer in the lattice


def test_layer_change_equals_per_layer_ratios():
    rng = np.random.default_rng(7)
    valid = np.ones((6, 20), bool)
    counts = rng.integers(0, 3, (6, 20, 4)) * (rng.random((6, 20, 4)) < 0.3 + 0.1 * np.arange(4))
    t = ml.layer_change(counts, valid, 10, 2, bootstrap_draws=40, seed=0).set_index(["stat", "transition"])
    X = counts > 0
    b = av.branching(X)
    assert t.loc[("b_time", "into"), "before"] == pytest.approx(b["b_time_per_layer"][1])
    assert t.loc[("b_depth", "into"), "before"] == pytest.approx(b["b_depth_per_layer"][1])
    assert t.loc[("b_depth", "into"), "after"] == pytest.approx(b["b_depth_per_layer"][2])
    assert np.isnan(t.loc[("b_depth", "out"), "after"])  # layer 3 is the last: no layer above it
    rate = counts.sum((0, 1)) / (valid.sum() * 10)
    assert t.loc[("rate", "into"), "change"] == pytest.approx(rate[2] - rate[1])
    mr = [multistep.mr_branching(counts[:, :, l])["mr_m"] for l in (1, 2)]
    assert t.loc[("mr_m", "into"), "change"] == pytest.approx(mr[1] - mr[0])
    r = t.loc[("b_time", "into")]
    assert r.lo <= r.change <= r.hi
    steps = np.abs(np.diff(b["b_time_per_layer"]))  # the change's rank among every adjacent-layer change
    assert r.n_steps == 3 and r["rank"] == 1 + (steps > abs(r.change) + 1e-12).sum()
    first = ml.layer_change(counts, valid, 10, 0, bootstrap_draws=5, seed=0)
    assert first[first.transition == "into"][["before", "change", "lo"]].isna().all().all()


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs_are_named():
    assert "no record" in massive.unusable(None)
    assert "no ME layer" in massive.unusable({"found": False, "reason": "ratio 12 at most"})
    assert "no MA dim" in massive.unusable({"found": True, "ma_dims": []})
    assert "could not load it: offline" in massive.unusable(PLANTED, "offline")
    assert massive.unusable(PLANTED) is None
    lm = SimpleNamespace(name="m", model=None, tokenizer=None)
    with pytest.raises(ValueError, match="m: no ME layer"):
        ml.analyse(lm, params(), {"found": False}, {})
    counts, valid = np.ones((1, 4, 2), int), np.ones((1, 4), bool)
    with pytest.raises(ValueError, match="disagree"):
        ml.shift_null_share(counts, valid, np.ones((1, 4, 3), bool))
    valid[0, 0] = False
    with pytest.raises(ValueError, match="invalid sites"):
        ml.shift_null_share(counts, valid, np.ones((1, 4, 2), bool))
    with pytest.raises(P.ParamsError, match="position_buckets"):
        params(position_buckets=[4, 2])
    with pytest.raises(P.ParamsError, match="secondary_outlier_ratio"):
        params(secondary_outlier_ratio=0)
