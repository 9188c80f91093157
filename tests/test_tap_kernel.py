"""tap_kernel.FloorTest against the numpy steps it replaces (clamp, compare, nonzero, exact z test), on
the calling thread and on torch's OpenMP team."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from avalanche_nb import tap_kernel
from avalanche_nb.tap_kernel import FloorTest

THREADS = [1, 2, 3]  # 3: more threads than this machine's cores, and blocks of unequal length


def numpy_events(u, lo, hi, mu, scale, floor, valid):
    outside = ~((u >= lo) & (u <= hi))  # NaN compares False: outside
    s, f = np.nonzero(outside)
    z = (u[s, f] - mu[f]) / scale[f]
    keep = (np.abs(z) > np.float32(floor)) & valid[s]
    return s[keep], z[keep], bool(np.isfinite(u[s, f]).all())


def bounds(mu, scale, floor):
    loose = floor - 1e-3
    if loose > 0:
        return mu - loose * scale, mu + loose * scale
    return np.full_like(mu, np.inf), np.full_like(mu, -np.inf)  # every value tested


def one_layer(lo, hi, mu, scale, floor, kept=1 / 16):
    return FloorTest(lo[None], hi[None], mu[None], scale[None], floor, kept)


def test_torch_team_is_found_with_torch_s_own_libgomp():
    if not sys.platform.startswith("linux") or "OpenMP" not in torch.__config__.parallel_info():
        pytest.skip("torch's team is used with GNU OpenMP on Linux only")
    team = tap_kernel.torch_team()
    assert team is not None and team.thread_num and team.num_threads


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("d_ff", [1536, 37, 8, 3])  # a multiple of 8, and tails of the word scan
@pytest.mark.parametrize("floor", [2.5, 0.1, 0.0])
def test_floor_test_equals_the_numpy_steps(d_ff, floor, threads):
    rng = np.random.default_rng(d_ff)
    S = 65  # odd: the blocks differ in length
    mu = rng.normal(0, 0.3, d_ff).astype(np.float32)
    scale = rng.uniform(0.5, 2, d_ff).astype(np.float32)
    u = (rng.standard_normal((S, d_ff)) * scale * 1.3 + mu).astype(np.float32)
    lo, hi = bounds(mu, scale, floor)
    # values on the float32 edge of the exact test: |z| == float32(floor) is not kept
    u[3, : min(d_ff, 4)] = (mu + np.float32(floor) * scale)[: min(d_ff, 4)]
    valid = rng.random(S) > 0.2
    site, z, finite = one_layer(lo, hi, mu, scale, floor)(0, u, valid, site0=1000, threads=threads)
    want_site, want_z, want_finite = numpy_events(u, lo, hi, mu, scale, floor, valid)
    assert finite and want_finite
    assert len(site) > 0
    np.testing.assert_array_equal(site, want_site + 1000)
    np.testing.assert_array_equal(z.view(np.uint32), want_z.view(np.uint32))  # bit-identical


@pytest.mark.parametrize("threads", THREADS)
def test_each_layer_is_tested_against_its_own_statistics(threads):
    rng = np.random.default_rng(7)
    L, S, F = 3, 20, 16
    mu = rng.normal(0, 1, (L, F)).astype(np.float32)
    scale = rng.uniform(0.5, 2, (L, F)).astype(np.float32)
    lo, hi = bounds(mu, scale, 1.0)
    test = FloorTest(lo, hi, mu, scale, 1.0)
    valid = np.ones(S, bool)
    for l in (2, 0, 1):
        u = (rng.standard_normal((S, F)) * 2).astype(np.float32)
        site, z, _ = test(l, u, valid, threads=threads)
        want_site, want_z, _ = numpy_events(u, lo[l], hi[l], mu[l], scale[l], 1.0, valid)
        np.testing.assert_array_equal(site, want_site)
        np.testing.assert_array_equal(z, want_z)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("row_valid", [True, False])  # found also on a row that does not enter the lattice
def test_floor_test_reports_non_finite_values(bad, row_valid, threads):
    d_ff, S = 13, 5
    mu, scale = np.zeros(d_ff, np.float32), np.ones(d_ff, np.float32)
    test = one_layer(mu - 3, mu + 3, mu, scale, 3.0)
    u = np.zeros((S, d_ff), np.float32)
    u[2, 11] = bad  # in the tail after the last full 8-byte word
    valid = np.ones(S, bool)
    valid[2] = row_valid
    assert not test(0, u, valid, threads=threads)[2]
    u[2, 11] = 0
    u[4, 1] = bad  # in a full word, in the last block
    assert not test(0, u, valid, threads=threads)[2]
    u[4, 1] = 0
    assert test(0, u, valid, threads=threads)[2]


@pytest.mark.parametrize("threads", THREADS)
def test_results_are_copies_and_the_scratch_is_reused_across_shapes(threads):
    ones = np.ones(16, np.float32)
    test = one_layer(-ones, ones, 0 * ones, ones, 2.0)
    a = test(0, np.full((2, 16), 5, np.float32), np.ones(2, bool), threads=threads)
    b = test(0, np.full((3, 16), -5, np.float32), np.ones(3, bool), threads=threads)
    c = test(0, np.full((1, 16), 5, np.float32), np.ones(1, bool), threads=threads)  # fewer rows than threads
    assert len(a[0]) == 32 and (a[1] == 5).all()  # the first result is a copy, not a view of the scratch
    assert len(b[0]) == 48 and (b[1] == -5).all()
    np.testing.assert_array_equal(c[0], np.zeros(16))
    empty = test(0, np.zeros((0, 16), np.float32), np.ones(0, bool), threads=threads)
    assert len(empty[0]) == 0 and empty[2]


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("kept", [1 / 16, 1.0])
def test_buffers_grow_when_a_call_keeps_more_than_they_hold(kept, threads):
    rng = np.random.default_rng(1)
    u = rng.standard_normal((40, 24)).astype(np.float32)
    zero, one = np.zeros(24, np.float32), np.ones(24, np.float32)
    everything = one_layer(np.full(24, np.inf, np.float32), np.full(24, -np.inf, np.float32), zero, one, -np.inf,
                           kept)(0, u, np.ones(40, bool), threads=threads)
    np.testing.assert_array_equal(everything[1], u.ravel())
    np.testing.assert_array_equal(everything[0], np.repeat(np.arange(40), 24))
    test = one_layer(zero - 2, one * 2, zero, one, 2.0, kept)
    few = test(0, u, np.ones(40, bool), threads=threads)
    np.testing.assert_array_equal(few[1], u[np.abs(u) > 2])
    u[30:] = 9  # only the last block overflows its room
    lopsided = test(0, u, np.ones(40, bool), threads=threads)
    np.testing.assert_array_equal(lopsided[1], u[np.abs(u) > 2])


def test_a_nan_bound_puts_every_value_of_its_neuron_outside():
    # as torch.clamp, whose NaN result never equals u: an inf there is found, not skipped
    u = np.zeros((4, 10), np.float32)
    u[1, 5] = np.inf
    lo, hi = np.full(10, -3, np.float32), np.full(10, 3, np.float32)
    mu, scale = np.zeros(10, np.float32), np.ones(10, np.float32)
    lo[5] = np.nan
    assert not one_layer(lo, hi, mu, scale, 3.0)(0, u, np.ones(4, bool))[2]


def test_bad_shapes_and_layouts_are_refused_before_raw_memory_is_read():
    zero, one = np.zeros(20, np.float32), np.ones(20, np.float32)
    test = one_layer(zero - 2, one * 2, zero, one, 2.0)
    u = np.zeros((12, 20), np.float32)
    with pytest.raises(TypeError, match="C-contiguous float32"):
        test(0, np.zeros((12, 40), np.float32)[:, ::2], np.ones(12, bool))  # not contiguous
    with pytest.raises(TypeError, match="valid bool"):
        test(0, u, np.ones(11, bool))
    with pytest.raises(TypeError, match="float32"):
        test(0, u.astype(np.float64), np.ones(12, bool))
    with pytest.raises(TypeError, match=r"\[S, 20\]"):
        test(0, np.zeros((12, 19), np.float32), np.ones(12, bool))
    with pytest.raises(IndexError, match="layer -1 out of range"):
        test(-1, u, np.ones(12, bool))  # would read another layer's statistics
    with pytest.raises(TypeError, match=r"lo must be float32 \[L, F\] like mu \(1, 19\)"):
        FloorTest(zero[None], zero[None], zero[None, :19], one[None], 2.0)


def test_the_compiled_code_is_cached_for_the_next_process(tmp_path):
    # a phase is a fresh kernel process: it must load the machine code, not compile it again
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "NUMBA_DEBUG_CACHE": "1"}
    code = ("import torch, numpy as np; from avalanche_nb.tap_kernel import FloorTest; "
            "o = np.ones((1, 8), np.float32); FloorTest(-o, o, 0 * o, o, 2.0)(0, o, np.ones(1, bool), threads=2)")
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            for _ in range(2)]
    assert "index saved" in runs[0].stdout + runs[0].stderr or "data loaded" in runs[0].stdout + runs[0].stderr
    second = runs[1].stdout + runs[1].stderr
    assert "data loaded" in second and "data saved" not in second


def test_a_team_smaller_than_the_blocks_still_does_every_block():
    # OpenMP may grant fewer threads than asked (here OMP_THREAD_LIMIT=1): thread 0 then takes them all
    code = ("import torch, numpy as np; from avalanche_nb.tap_kernel import FloorTest; "
            "rng = np.random.default_rng(0); u = rng.standard_normal((9, 24)).astype(np.float32); "
            "o = np.ones((1, 24), np.float32); t = FloorTest(-o, o, 0 * o, o, 1.0); "
            "s, z, _ = t(0, u, np.ones(9, bool), threads=3); "
            "assert np.array_equal(z, u[np.abs(u) > 1]), 'events differ'; print('ok', len(z))")
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr[-2000:]


def test_a_team_that_cannot_be_opened_leaves_the_test_on_the_calling_thread(monkeypatch):
    def unopenable(path):
        raise OSError(f"{path}: cannot open shared object file")
    monkeypatch.setattr(tap_kernel.ctypes, "CDLL", unopenable)
    monkeypatch.setattr(tap_kernel, "_TEAM", {})
    assert tap_kernel.torch_team() is None
    ones = np.ones(16, np.float32)
    site, z, finite = one_layer(-ones, ones, 0 * ones, ones, 2.0)(0, np.full((4, 16), 5, np.float32), np.ones(4, bool),
                                                                 threads=2)
    assert len(site) == 64 and finite
