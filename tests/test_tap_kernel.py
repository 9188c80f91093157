"""tap_kernel.FloorEvents against the numpy steps it replaces (clamp, compare, nonzero, exact z test)."""

import numpy as np
import pytest

from avalanche_nb.tap_kernel import FloorEvents


def numpy_events(u, lo, hi, mu, scale, floor, valid):
    outside = ~((u >= lo) & (u <= hi))  # NaN compares False: outside
    s, f = np.nonzero(outside)
    z = (u[s, f] - mu[f]) / scale[f]
    keep = (np.abs(z) > np.float32(floor)) & valid[s]
    return s[keep], z[keep], bool(np.isfinite(u[s, f]).all())


@pytest.mark.parametrize("d_ff", [1536, 37, 8, 3])  # a multiple of 8, and tails of the word scan
@pytest.mark.parametrize("floor", [2.5, 0.1, 0.0])
def test_floor_events_equal_the_numpy_steps(d_ff, floor):
    rng = np.random.default_rng(d_ff)
    S = 64
    mu = rng.normal(0, 0.3, d_ff).astype(np.float32)
    scale = rng.uniform(0.5, 2, d_ff).astype(np.float32)
    u = (rng.standard_normal((S, d_ff)) * scale * 1.3 + mu).astype(np.float32)
    loose = floor - 1e-3
    lo, hi = (mu - loose * scale, mu + loose * scale) if loose > 0 else (np.full(d_ff, np.inf, np.float32),
                                                                          np.full(d_ff, -np.inf, np.float32))
    # values on the float32 edge of the exact test: |z| == float32(floor) is not kept
    u[3, : min(d_ff, 4)] = (mu + np.float32(floor) * scale)[: min(d_ff, 4)]
    valid = rng.random(S) > 0.2
    site, z, finite = FloorEvents()(u, lo, hi, mu, scale, floor, valid)
    want_site, want_z, want_finite = numpy_events(u, lo, hi, mu, scale, floor, valid)
    assert finite and want_finite
    assert len(site) > 0
    np.testing.assert_array_equal(site, want_site)
    np.testing.assert_array_equal(z.view(np.uint32), want_z.view(np.uint32))  # bit-identical


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("row_valid", [True, False])  # found also on a row that does not enter the lattice
def test_floor_events_report_non_finite_values(bad, row_valid):
    d_ff, S = 13, 5
    mu, scale = np.zeros(d_ff, np.float32), np.ones(d_ff, np.float32)
    u = np.zeros((S, d_ff), np.float32)
    u[2, 11] = bad  # in the tail after the last full 8-byte word
    valid = np.ones(S, bool)
    valid[2] = row_valid
    _, _, finite = FloorEvents()(u, mu - 3, mu + 3, mu, scale, 3.0, valid)
    assert not finite
    u[2, 11] = 0
    u[4, 1] = bad  # in a full word
    assert not FloorEvents()(u, mu - 3, mu + 3, mu, scale, 3.0, valid)[2]


def test_floor_events_reuse_scratch_across_calls_and_shapes():
    k = FloorEvents()
    ones = np.ones(16, np.float32)
    a = k(np.full((2, 16), 5, np.float32), -ones, ones, 0 * ones, ones, 2.0, np.ones(2, bool))
    b = k(np.full((3, 16), -5, np.float32), -ones, ones, 0 * ones, ones, 2.0, np.ones(3, bool))
    assert len(a[0]) == 32 and (a[1] == 5).all()  # the first result is a copy, not a view of the scratch
    assert len(b[0]) == 48 and (b[1] == -5).all()
    with pytest.raises(TypeError, match="float32"):
        k(np.zeros((2, 16)), -ones, ones, 0 * ones, ones, 2.0, np.ones(2, bool))


@pytest.mark.parametrize("kept", [1 / 16, 1.0])
def test_floor_events_grow_their_buffers_when_a_call_keeps_more_than_they_hold(kept):
    rng = np.random.default_rng(1)
    u = rng.standard_normal((40, 24)).astype(np.float32)
    zero, one = np.zeros(24, np.float32), np.ones(24, np.float32)
    k = FloorEvents(kept)
    everything = k(u, np.full(24, np.inf, np.float32), np.full(24, -np.inf, np.float32), zero, one, -np.inf,
                   np.ones(40, bool))
    np.testing.assert_array_equal(everything[1], u.ravel())
    np.testing.assert_array_equal(everything[0], np.repeat(np.arange(40), 24))
    few = k(u, zero - 2, one * 2, zero, one, 2.0, np.ones(40, bool))
    np.testing.assert_array_equal(few[1], u[np.abs(u) > 2])


def test_a_nan_bound_puts_every_value_of_its_neuron_outside():
    # as torch.clamp, whose NaN result never equals u: an inf there is found, not skipped
    u = np.zeros((4, 10), np.float32)
    u[1, 5] = np.inf
    lo, hi, mu, scale = np.full(10, -3, np.float32), np.full(10, 3, np.float32), np.zeros(10, np.float32), np.ones(10, np.float32)
    lo[5] = np.nan
    assert not FloorEvents()(u, lo, hi, mu, scale, 3.0, np.ones(4, bool))[2]


def test_strided_input_and_mismatched_shapes():
    rng = np.random.default_rng(2)
    wide = rng.standard_normal((12, 40)).astype(np.float32) * 3
    u = wide[:, ::2]  # not contiguous
    zero, one = np.zeros(20, np.float32), np.ones(20, np.float32)
    site, z, _ = FloorEvents()(u, zero - 2, one * 2, zero, one, 2.0, np.ones(12, bool))
    want = np.abs(u) > 2
    np.testing.assert_array_equal(z, u[want])
    np.testing.assert_array_equal(site, np.nonzero(want)[0])
    with pytest.raises(TypeError, match="valid must be bool"):
        FloorEvents()(u, zero - 2, one * 2, zero, one, 2.0, np.ones(11, bool))
    with pytest.raises(TypeError, match="mu must be float32"):
        FloorEvents()(u, zero - 2, one * 2, zero[:19], one, 2.0, np.ones(12, bool))
