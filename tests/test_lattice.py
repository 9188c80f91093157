"""Calibration, exact thresholds and lattice counts against brute-force recomputation."""

import numpy as np
import pytest
import torch

from avalanche_nb import hooks
from avalanche_nb import lattice as lat
from avalanche_nb.models import load_model


def synthetic_events(rng, N=6, T=20, L=4, d_ff=50, floor=-np.inf, scale=None):
    """An EventSet holding *every* value of continuous random scores (no ties)."""
    scale = np.linspace(1.0, 2.0, L) if scale is None else scale
    z = rng.standard_normal((N, T, L, d_ff)).astype(np.float32) * scale[None, None, :, None]
    valid = lat.valid_mask(N, T, exclude_first_token=True)
    sites, values = [], []
    for l in range(L):
        zl = z[:, :, l, :]
        keep = (np.abs(zl) > floor) & valid[:, :, None]
        n, t, _ = np.nonzero(keep)
        sites.append(n * T + t)
        values.append(zl[keep])
    ref_pos = np.array([((z[:, :, l] > 2.5) & valid[:, :, None]).sum() for l in range(L)])
    ref_abs = np.array([((np.abs(z[:, :, l]) > 2.5) & valid[:, :, None]).sum() for l in range(L)])
    ev = lat.EventSet((N, T, L), d_ff, valid, floor, sites, values, 2.5, ref_pos, ref_abs)
    return ev, z, valid


@pytest.mark.parametrize("spike_def", lat.SPIKE_DEFS)
def test_rate_matched_thresholds_hit_each_layers_target(spike_def):
    rng = np.random.default_rng(0)
    ev, z, valid = synthetic_events(rng)
    target = np.array([0.01, 0.02, 0.05, 0.003])
    th = lat.rate_matched_thresholds(ev, target, spike_def)
    denom = valid.sum() * 50  # 6 * 19 valid sites * 50 neurons = 5700
    # continuous scores have no ties: the count is exactly round(target * 5700)
    expected = np.round(target * denom) / denom
    np.testing.assert_array_equal(th.rate, expected)
    # and the thresholds really produce those rates when applied to the full scores
    for l in range(4):
        v = z[:, :, l][valid]
        v = np.abs(v) if spike_def == "abs" else v
        assert (v > th.tau[l]).sum() == round(target[l] * denom)
    assert np.abs(th.rel_err).max() <= 0.5 / (0.003 * denom)  # rounding to an integer count only


def test_baseline_profile_is_proportional_to_reference_rates():
    rng = np.random.default_rng(1)
    ev, z, valid = synthetic_events(rng)
    ref = ev.reference_rates("pos")
    target = lat.target_rates(ev, 0.01, "baseline_profile")
    assert target.mean() == pytest.approx(0.01)
    np.testing.assert_allclose(target / target.sum(), ref / ref.sum())
    np.testing.assert_array_equal(lat.target_rates(ev, 0.01, "uniform"), np.full(4, 0.01))


def test_ties_are_the_only_rate_error():
    # 10 valid sites (N=1, T=11, first masked) x d_ff=4 = 40 values, all equal to 5 except 10 of 7
    N, T, L, d_ff = 1, 11, 1, 4
    valid = lat.valid_mask(N, T, exclude_first_token=True)
    site = np.repeat(np.arange(1, 11), 4)
    z = np.full(40, 5.0, np.float32)
    z[:10] = 7.0
    ev = lat.EventSet((N, T, L), d_ff, valid, 0.0, [site], [z], 2.5, np.array([40]), np.array([40]))
    # target 0.25 -> 10 spikes: exactly the ten 7s, tau = 5
    th = lat.rate_matched_thresholds(ev, np.array([0.25]), "pos")
    assert th.tau[0] == 5.0 and th.rate[0] == 0.25
    # target 0.5 -> 20 spikes, but the 11th..40th values tie at 5: only the ten 7s can spike
    th = lat.rate_matched_thresholds(ev, np.array([0.5]), "pos")
    assert th.rate[0] == 0.25 and th.rel_err[0] == -0.5


def test_floor_too_high_is_detected():
    rng = np.random.default_rng(2)
    ev, _, _ = synthetic_events(rng, floor=2.0)
    with pytest.raises(lat.FloorTooHighError):
        lat.rate_matched_thresholds(ev, np.full(4, 0.2), "abs")  # 20% of |z| are not all above 2
    with pytest.raises(lat.FloorTooHighError):
        lat.fixed_thresholds(ev, np.full(4, 1.0), "pos")


def test_count_lattice_matches_brute_force():
    rng = np.random.default_rng(3)
    ev, z, valid = synthetic_events(rng, floor=1.0)
    tau = np.array([1.5, 2.0, 2.5, 3.0])
    for d in lat.SPIKE_DEFS:
        counts = lat.count_lattice(ev, tau, d)
        v = np.abs(z) if d == "abs" else z
        brute = (v > tau[None, None, :, None]).sum(-1) * valid[:, :, None]
        np.testing.assert_array_equal(counts, brute)


def test_bad_targets():
    rng = np.random.default_rng(4)
    ev, _, _ = synthetic_events(rng)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"\(0, 1\)"):
            lat.target_rates(ev, bad, "baseline_profile")
    with pytest.raises(ValueError, match="spike definition"):
        lat.rate_matched_thresholds(ev, np.full(4, 0.01), "neg")
    with pytest.raises(ValueError, match="profile"):
        lat.target_rates(ev, 0.01, "flat")
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        lat.scale_seed_rates([1e-3], d_ff=10, rate_reference_d_ff=18944)  # 1e-3 * 18944 / 10 > 1


# --------------------------------------------------------------------------- on a real (tiny) model


@pytest.fixture(scope="module")
def tiny():
    lm = load_model("tiny-llama", dtype="float32", device="cpu", seed=0, device_map=None)
    g = np.random.default_rng(0)
    tokens = g.integers(3, 128, size=(5, 12))
    calib_tokens = g.integers(3, 128, size=(4, 12))
    return lm.model, tokens, calib_tokens


def full_tap(model, tokens, dtype=torch.float64):
    got = {}
    with hooks.attach(model, hooks.Hook("mlp.tap", lambda l, u: got.__setitem__(l, u.to(dtype).clone()))):
        hooks.forward_hidden(model, torch.from_numpy(tokens))
    return torch.stack([got[l] for l in sorted(got)], 2).numpy()  # [N, T, L, d_ff]


def test_calibration_equals_manual_moments(tiny):
    model, _, calib_tokens = tiny
    valid = lat.valid_mask(*calib_tokens.shape, exclude_first_token=True)
    cal = lat.calibrate(model, calib_tokens, valid, batch_size=3, progress=False)
    u = full_tap(model, calib_tokens)[valid]  # [sites, L, d_ff], first token excluded
    np.testing.assert_allclose(cal.mu, u.mean(0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(cal.sigma, u.std(0), rtol=1e-5, atol=1e-9)
    assert cal.n_sites == 4 * 11


def test_rate_matched_lattice_equals_brute_force(tiny):
    model, tokens, calib_tokens = tiny
    cal = lat.calibrate(model, calib_tokens, lat.valid_mask(*calib_tokens.shape, exclude_first_token=True),
                        batch_size=8, progress=False)
    valid = lat.valid_mask(*tokens.shape, exclude_first_token=True)
    # a floor far above the needed thresholds forces the automatic retry with lower floors
    result = lat.rate_matched_lattice(model, tokens, valid, cal, rate=0.05, target_profile="uniform", z_floor=50.0,
                                      reference_tau=2.5, batch_size=2, progress=False)
    assert result.floor < 50.0
    # z in float32 exactly as defined: (u - mu) / (sigma + 1e-6)
    mu, scale = torch.tensor(cal.mu, dtype=torch.float32), torch.tensor(cal.sigma, dtype=torch.float32) + lat.EPS
    z = ((torch.from_numpy(full_tap(model, tokens, torch.float32)) - mu) / scale).numpy()
    denom = valid.sum() * cal.d_ff
    for d in lat.SPIKE_DEFS:
        v = np.abs(z) if d == "abs" else z
        tau = result.thresholds[d].tau
        brute = (v > tau[None, None, :, None]).sum(-1) * valid[:, :, None]
        np.testing.assert_array_equal(result.counts[d], brute)
        rate = brute.sum((0, 1)) / denom
        np.testing.assert_allclose(result.thresholds[d].rate, rate)
        assert np.abs(rate - 0.05).max() <= 1.0 / denom + 1e-12


def test_nan_activations_fail_closed(tiny):
    model, tokens, calib_tokens = tiny
    layer = hooks.decoder_layers(model)[1]
    saved = layer.mlp.up_proj.weight.data.clone()
    layer.mlp.up_proj.weight.data[0, 0] = float("nan")
    try:
        with pytest.raises(hooks.NonFiniteActivationError, match="layer 1"):
            lat.calibrate(model, calib_tokens, lat.valid_mask(*calib_tokens.shape, exclude_first_token=True),
                          batch_size=8, progress=False)
    finally:
        layer.mlp.up_proj.weight.data.copy_(saved)
    assert hooks.hook_count(model) == 0


def test_empty_calibration_slice_fails(tiny):
    model, _, calib_tokens = tiny
    with pytest.raises(ValueError, match="no valid sites"):
        lat.calibrate(model, calib_tokens, np.zeros(calib_tokens.shape, bool), batch_size=8, progress=False)


def brute_force_events(model, tokens, valid, cal, floor, g=1.0):
    """(site, z) per layer: every |z| > floor at the valid sites, z in float32 as defined, flat row-major order."""
    mu, scale = torch.tensor(cal.mu, dtype=torch.float32), torch.tensor(cal.sigma, dtype=torch.float32) + lat.EPS
    with hooks.gain(model, g):
        u = torch.from_numpy(full_tap(model, tokens, torch.float32))  # [N, T, L, d_ff]
    z = ((u - mu) / scale).numpy()
    N, T, L, _ = z.shape
    out = []
    for l in range(L):
        keep = (np.abs(z[:, :, l]) > floor) & valid[:, :, None]
        n, t, _ = np.nonzero(keep)
        out.append((n * T + t, z[:, :, l][keep]))
    return out


@pytest.mark.parametrize("compiled_on_cpu", [True, False])  # the CPU path, and the torch path other devices take
@pytest.mark.parametrize("floor", [1.0, 2.5, 1e-3, 0.0, -np.inf])
@pytest.mark.parametrize("g", [0.5, 1.5])
def test_events_equal_brute_force(tiny, floor, g, compiled_on_cpu, monkeypatch):
    monkeypatch.setattr(lat._EventReducer, "COMPILED_ON_CPU", compiled_on_cpu)
    model, tokens, calib_tokens = tiny
    cal = lat.calibrate(model, calib_tokens, lat.valid_mask(*calib_tokens.shape, exclude_first_token=True),
                        batch_size=8, progress=False)
    valid = lat.valid_mask(*tokens.shape, exclude_first_token=True)
    valid[2, 4:7] = False  # a ragged mask as well
    ev = lat.collect_events(model, tokens, valid, cal, z_floor=floor, reference_tau=2.5, batch_size=2, progress=False,
                            g=g)
    for l, (site, z) in enumerate(brute_force_events(model, tokens, valid, cal, floor, g)):
        np.testing.assert_array_equal(ev.site[l], site)
        np.testing.assert_array_equal(ev.z[l].view(np.uint32), z.view(np.uint32))  # bit-identical
    # reference counts at reference_tau against brute force (floor -inf holds every value)
    if floor == -np.inf:
        ref_pos = [(ev.z[l] > 2.5).sum() for l in range(ev.n_layers)]
        ref_abs = [(np.abs(ev.z[l]) > 2.5).sum() for l in range(ev.n_layers)]
        np.testing.assert_array_equal(ev.ref_count_pos, ref_pos)
        np.testing.assert_array_equal(ev.ref_count_abs, ref_abs)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("floor", [4.0, 0.0])
@pytest.mark.parametrize("site", [(1, 5, 3), (0, 0, 7)])  # a valid site, and the excluded first token
@pytest.mark.parametrize("compiled_on_cpu", [True, False])
def test_non_finite_taps_fail_closed_in_collect_events(tiny, bad, floor, site, compiled_on_cpu, monkeypatch):
    monkeypatch.setattr(lat._EventReducer, "COMPILED_ON_CPU", compiled_on_cpu)
    model, tokens, calib_tokens = tiny
    cal = lat.calibrate(model, calib_tokens, lat.valid_mask(*calib_tokens.shape, exclude_first_token=True),
                        batch_size=8, progress=False)
    valid = lat.valid_mask(*tokens.shape, exclude_first_token=True)

    def poison(layer, u):
        u = u.clone()
        u[site] = bad
        return u

    with hooks.attach(model, hooks.Hook("mlp.tap", poison, layers=[1])):
        with pytest.raises(hooks.NonFiniteActivationError, match="layer 1"):
            lat.collect_events(model, tokens, valid, cal, z_floor=floor, reference_tau=None, batch_size=2,
                               progress=False)
    assert hooks.hook_count(model) == 0
