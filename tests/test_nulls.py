"""Null models of the event lattice: exact marginals, uniform draws, branching ratios and delta-b."""

import itertools
import math
import warnings
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from avalanche_nb import avalanches as av
from avalanche_nb import nulls

# Deterministic examples (seeded from the test's hash) and no example database written into the repo.
PROPERTY = settings(max_examples=50, deadline=None, derandomize=True, database=None)
P_MIN = 1e-3  # chi-square p-value below which a draw distribution is declared non-uniform


# ----------------------------------------------------------------------------- lattices and helpers


def mask(kind: str, n: int, t: int, rng: np.random.Generator) -> np.ndarray:
    """valid bool [n, t]: all tokens, all but the first, ragged right padding (lengths 0..t, first token
    sometimes invalid too), or an iid random mask."""
    if kind == "all":
        return np.ones((n, t), bool)
    if kind == "first":
        valid = np.ones((n, t), bool)
        valid[:, 0] = False
        return valid
    if kind == "ragged":
        valid = np.arange(t) < rng.integers(0, t + 1, n)[:, None]
        valid[:, 0] &= rng.random() < 0.5
        return valid
    return rng.random((n, t)) < 0.7


@st.composite
def lattices(draw, max_n: int = 3, max_t: int = 12, max_l: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(X bool [N, T, L], valid bool [N, T]) with a random mask and density; X empty at invalid sites."""
    n, t, l = draw(st.integers(1, max_n)), draw(st.integers(1, max_t)), draw(st.integers(1, max_l))
    kind = draw(st.sampled_from(["all", "first", "ragged", "random"]))
    p = draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    valid = mask(kind, n, t, rng)
    return (rng.random((n, t, l)) < p) & valid[:, :, None], valid


seeds = st.integers(0, 2**32 - 1)


def compressed_rows(X: np.ndarray, valid: np.ndarray):
    """Yield (n, l, row) with row = X[n, valid tokens of n, l] (bool [m_n])."""
    for n in range(X.shape[0]):
        for l in range(X.shape[2]):
            yield n, l, X[n, valid[n], l]


def cyclic_runs(row: np.ndarray) -> tuple[list[int], list[int]]:
    """Sorted lengths of the cyclic runs of 1s and of 0s of a bool row, the row read as a ring."""
    row = [bool(v) for v in row]
    if len(set(row)) <= 1:  # a constant row is one run round the whole ring (or no row at all)
        return ([len(row)], []) if row and row[0] else ([], [len(row)] if row else [])
    start = next(i for i in range(len(row)) if row[i] != row[i - 1])  # a run boundary: start reading there
    ring = row[start:] + row[:start]
    runs: dict[bool, list[int]] = {True: [], False: []}
    for value, group in itertools.groupby(ring):
        runs[value].append(len(list(group)))
    return sorted(runs[True]), sorted(runs[False])


def rotation(before: np.ndarray, after: np.ndarray) -> list[int]:
    """All s in [0, m) with after == roll(before, s) ([0] for two empty rows)."""
    return [s for s in range(max(1, len(before))) if np.array_equal(np.roll(before, s), after)]


def branching_ref(X: np.ndarray) -> dict[str, float]:
    b = av.branching(X)
    return {d: b[f"b_{d}"] for d in nulls.NULL_DIRECTIONS}


def same(a, b) -> bool:
    """Equality of nested dicts of floats with NaN == NaN."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    return a == b or (math.isnan(a) and math.isnan(b))


def assert_uniform(counts: Counter, support: list) -> None:
    """Every element of ``support`` was drawn, nothing else was, and the counts pass a chi-square test."""
    assert set(counts) == set(support), f"drew {set(counts) ^ set(support)} outside / missing from the support"
    p = stats.chisquare([counts[s] for s in support]).pvalue
    assert p > P_MIN, f"non-uniform draws (chi-square p = {p:.2g}): {sorted(counts.values())}"


# ----------------------------------------------------------------------------- marginals (properties)


@PROPERTY
@given(lattices(), st.sampled_from(nulls.NULLS), seeds)
def test_every_null_keeps_row_counts_and_valid_sites(lattice, null, seed):
    X, valid = lattice
    before = X.copy()
    draws = nulls.draws(X, valid, null, 3, seed=seed)
    assert draws.shape == (3,) + X.shape and draws.dtype == bool
    assert (draws.sum(2) == X.sum(1)).all()  # every (sequence, layer) count, in every draw
    assert not (draws & ~valid[None, :, :, None]).any()  # never an event at an invalid site
    assert np.array_equal(X, before)  # the input is left alone


@PROPERTY
@given(lattices(), seeds)
def test_n2_is_a_nontrivial_rotation_keeping_cyclic_runs(lattice, seed):
    X, valid = lattice
    draws = nulls.draws(X, valid, "n2", 3, seed=seed)
    for draw in draws:
        for (_, _, row), (_, _, new) in zip(compressed_rows(X, valid), compressed_rows(draw, valid)):
            assert cyclic_runs(new) == cyclic_runs(row)
            shifts = rotation(row, new)
            assert shifts and (len(row) <= 1 or set(shifts) != {0})  # some shift in [1, m - 1] maps row to new


@PROPERTY
@given(lattices(), seeds, st.sampled_from([None, 0, 1, 7]))
def test_n3_keeps_row_and_column_counts(lattice, seed, trades):
    X, valid = lattice
    draws = nulls.draws(X, valid, "n3", 3, seed=seed, trades=trades)
    assert (draws.sum(2) == X.sum(1)).all()  # per sequence: events per layer
    assert (draws.sum(3) == X.sum(2)).all()  # per sequence: events per token
    assert not (draws & ~valid[None, :, :, None]).any()


def test_helpers_cyclic_runs_and_rotation():
    assert cyclic_runs(np.array([1, 0, 0, 1, 1], bool)) == ([3], [2])  # the 1 at 0 joins the 1s at 3-4
    assert cyclic_runs(np.array([1, 0, 0, 1, 1, 0], bool)) == ([1, 2], [1, 2])
    assert cyclic_runs(np.ones(3, bool)) == ([3], []) and cyclic_runs(np.zeros(2, bool)) == ([], [2])
    assert cyclic_runs(np.array([], bool)) == ([], [])
    assert rotation(np.array([1, 1, 0]), np.array([0, 1, 1])) == [1]
    assert rotation(np.array([1, 0, 1, 0]), np.array([0, 1, 0, 1])) == [1, 3]


# ----------------------------------------------------------------------------- uniform draws


def ragged_pair(t: int, m0: int, m1: int, l: int) -> tuple[np.ndarray, np.ndarray]:
    """Empty X [2, t, l] and a mask where sequence 0 has tokens 1..m0 valid, sequence 1 tokens 1..m1
    (first token invalid; m0 != m1 makes the layout padded)."""
    valid = np.zeros((2, t), bool)
    valid[0, 1:m0 + 1] = True
    valid[1, 1:m1 + 1] = True
    return np.zeros((2, t, l), bool), valid


def subsets(m: int, c: int) -> list[tuple[int, ...]]:
    return [tuple(int(j in s) for j in range(m)) for s in itertools.combinations(range(m), c)]


@pytest.mark.parametrize("padded", [False, True])
def test_n1_draws_each_subset_equally_often(padded):
    X, valid = ragged_pair(8, 4, 6 if padded else 4, 2)
    X[0, [1, 2], 0] = True  # m = 4, 2 events: 6 subsets
    X[1, [1, 3, 4], 1] = True  # m = 6 (padded) or 4, 3 events: 20 or 4 subsets
    draws = nulls.draws(X, valid, "n1", 6000, seed=1)
    for n, l, c in [(0, 0, 2), (1, 1, 3)]:
        m = int(valid[n].sum())
        assert_uniform(Counter(tuple(map(int, d[n, valid[n], l])) for d in draws), subsets(m, c))


def coarse_keys(monkeypatch, redraws: Counter | None = None) -> None:
    """Make the 16-bit keys coarse (0, 1 or 2), so most rows tie at their boundary and are redrawn (n3's pooled
    keys too); with ``redraws``, count each draw's 32-bit redraw calls there and make its first one coarse too."""
    real, real_pool, real16 = nulls._random_bits, nulls._pool_keys16, nulls._random_bits16
    monkeypatch.setattr(nulls, "_pool_keys16", lambda pool, shape: real_pool(pool, shape) % 3)  # n3's trades
    monkeypatch.setattr(nulls, "_random_bits16", lambda rngs, shape: real16(rngs, shape) % 3)  # n1, unpadded

    def coarse(rngs, shape, bits):
        keys = real(rngs, shape, bits)
        if bits == 16:
            return keys % 3
        assert len(rngs) == 1  # redraws come one draw at a time, from that draw's own generator
        if redraws is None:
            return keys
        redraws[id(rngs[0])] += 1
        return keys % 3 if redraws[id(rngs[0])] == 1 else keys

    monkeypatch.setattr(nulls, "_random_bits", coarse)


def test_n1_stays_uniform_when_random_keys_tie(monkeypatch):
    """Coarse keys tie at most boundaries, so most rows go through the 32-bit redraw loop, several
    rounds; the choice must stay exactly uniform."""
    redraws = Counter()
    coarse_keys(monkeypatch, redraws)
    X, valid = ragged_pair(8, 4, 6, 1)
    X[0, [2, 4], 0] = True
    X[1, [1, 2, 5], 0] = True
    draws = nulls.draws(X, valid, "n1", 4000, seed=2)
    assert len(redraws) > 2500 and sum(n >= 2 for n in redraws.values()) > 1000  # most draws redrew, many twice
    assert_uniform(Counter(tuple(map(int, d[0, valid[0], 0])) for d in draws), subsets(4, 2))
    assert_uniform(Counter(tuple(map(int, d[1, valid[1], 0])) for d in draws), subsets(6, 3))


def test_n2_draws_each_shift_equally_often():
    X, valid = ragged_pair(9, 5, 7, 1)
    rows = {0: [1, 1, 0, 1, 0], 1: [1, 0, 0, 1, 1, 0, 1]}  # aperiodic: their m rotations are all distinct
    for n, row in rows.items():
        X[n, valid[n], 0] = row
        assert len({tuple(np.roll(row, s)) for s in range(len(row))}) == len(row)
    draws = nulls.draws(X, valid, "n2", 4000, seed=3)
    for n, row in rows.items():
        shifts = Counter(rotation(np.array(row, bool), d[n, valid[n], 0])[0] for d in draws)
        assert_uniform(shifts, list(range(1, len(row))))


def same_margins(A: np.ndarray) -> list[tuple[int, ...]]:
    """Every bool matrix with the row and column sums of ``A`` [L, m], flattened (brute force)."""
    rows, cols = A.sum(1), A.sum(0)
    out = []
    for bits in itertools.product([0, 1], repeat=A.size):
        B = np.array(bits).reshape(A.shape)
        if (B.sum(1) == rows).all() and (B.sum(0) == cols).all():
            out.append(bits)
    return out


def test_n3_reaches_every_equivalent_matrix_equally_often():
    A = np.array([[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], bool)  # rows (2, 1, 1), columns (1, 1, 1, 1)
    support = same_margins(A)
    assert len(support) == 12  # 6 column pairs for row 0, then 2 ways to place the other two
    X, valid = ragged_pair(7, 4, 5, 3)  # padded layout: sequence 1 has a fifth token
    X[0, valid[0]] = A.T
    X[1, 1:4, 0] = True
    draws = nulls.draws(X, valid, "n3", 6000, seed=4)  # default trades
    assert_uniform(Counter(tuple(map(int, d[0, valid[0]].T.ravel())) for d in draws), support)


# ----------------------------------------------------------------------------- branching ratios


@PROPERTY
@given(lattices(), st.sampled_from(nulls.NULLS), seeds)
def test_branching_batch_equals_branching_on_every_draw(lattice, null, seed):
    X, valid = lattice
    draws = nulls.draws(X, valid, null, 4, seed=seed)
    batch = nulls.branching_batch(np.concatenate([X[None], draws]))
    for i, Xi in enumerate([X, *draws]):
        ref = branching_ref(Xi)
        assert all(same(float(batch[d][i]), ref[d]) for d in nulls.NULL_DIRECTIONS), (i, ref, batch)


@pytest.mark.parametrize("shape, sites", [
    ((2, 5, 4), []),  # empty: every denominator 0
    ((2, 1, 4), [(0, 0, 1)]),  # one token: no time (or diagonal) pair
    ((2, 5, 1), [(1, 2, 0)]),  # one layer: no depth pair
    ((1, 4, 3), [(0, 3, 0), (0, 1, 2)]),  # events only on the last token / layer
    ((2, 0, 3), []),  # no tokens at all
])
def test_branching_batch_nan_denominators(shape, sites):
    X = np.zeros(shape, bool)
    for site in sites:
        X[site] = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = nulls.branching_batch(X[None])
    ref = branching_ref(X)
    assert any(math.isnan(v) for v in ref.values())
    assert all(same(float(batch[d][0]), ref[d]) for d in nulls.NULL_DIRECTIONS)


# ----------------------------------------------------------------------------- delta-b and z


def iid(shape: tuple[int, int, int], p: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    valid = np.ones(shape[:2], bool)
    valid[:, 0] = False
    return (rng.random(shape) < p) & valid[:, :, None], valid


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_delta_b_is_null_on_an_iid_lattice(seed):
    """Independent sites: the observed lattice is itself a draw of every null (given its marginals), so z
    is ~ N(0, 1) (checked over 300 seeds: mean |.| < 0.05, sd 0.93-1.07, |z| > 3 in ~0.3%). Seed 0 is
    left out: its n1 b_time z = -3.2 was the most extreme of those 300, a chance event, not a bias."""
    X, valid = iid((8, 64, 12), 0.2, seed)
    result = nulls.null_branching(X, valid, null_draws=100, seed=seed)
    for null in nulls.NULLS:
        for d in nulls.NULL_DIRECTIONS:
            s = result[null][d]
            assert s["sd"] > 0 and abs(s["z"]) < 3, (null, d, s)
            assert math.isclose(s["delta"], result["observed"][d] - s["mean"])
            assert s["lo"] <= s["mean"] <= s["hi"]


def planted_runs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Runs of 4 consecutive tokens in one layer, started iid at rate 0.05 (first token invalid)."""
    rng = np.random.default_rng(seed)
    n, t, l = 8, 64, 12
    starts = rng.random((n, t, l)) < 0.05
    X = np.zeros((n, t + 3, l), bool)
    for dt in range(4):
        X[:, dt:dt + t] |= starts
    valid = np.ones((n, t), bool)
    valid[:, 0] = False
    return X[:, :t] & valid[:, :, None], valid


def test_n1_detects_planted_temporal_runs():
    X, valid = planted_runs(0)
    result = nulls.null_branching(X, valid, null_draws=100, seed=0)
    s = result["n1"]["time"]
    assert result["observed"]["time"] > s["hi"] and s["delta"] > 0.4 and s["z"] > 10, s
    # n2 shifts whole rows, so it keeps the runs: at most a boundary effect left
    assert abs(result["n2"]["time"]["delta"]) < 0.1 * s["delta"], result["n2"]["time"]


# ----------------------------------------------------------------------------- seeding


def test_same_seed_same_result_and_nulls_do_not_share_draws():
    X, valid = iid((3, 20, 5), 0.3, 7)
    full = nulls.null_branching(X, valid, null_draws=20, seed=11)
    assert same(full, nulls.null_branching(X, valid, null_draws=20, seed=11))
    for null in nulls.NULLS:
        alone = nulls.null_branching(X, valid, nulls=(null,), null_draws=20, seed=11)
        assert alone.keys() == {"observed", null}
        assert same(alone[null], full[null])
    other = nulls.null_branching(X, valid, null_draws=20, seed=12)
    assert all(not same(other[null], full[null]) for null in nulls.NULLS)


K = 40  # draws in the batching tests; batch sizes 1, 7, 17 and K


@pytest.mark.parametrize("coarse", [False, True])
def test_a_draw_does_not_depend_on_how_draws_are_batched(coarse, monkeypatch):
    """Draw j is the same lattice made alone, in batches of 7 or 17, or with all K (coarse keys: most rows
    of every draw also go through the redraw loop, several draws at once)."""
    if coarse:
        coarse_keys(monkeypatch)
    X, valid = iid((3, 20, 5), 0.3, 9)
    valid[1, 15:] = False  # a padded layout
    X &= valid[:, :, None]
    for null in nulls.NULLS:
        opts = {"trades": 4} if null == "n3" else {}
        whole = nulls.draws(X, valid, null, K, seed=3, **opts)
        assert len({d.tobytes() for d in whole}) == K  # K different draws
        for size in (1, 7, 17):
            parts = [nulls.draws(X, valid, null, min(size, K - i), seed=3, start=i, **opts) for i in range(0, K, size)]
            assert np.array_equal(np.concatenate(parts), whole), (null, size)


def test_null_branching_does_not_depend_on_the_chunk_size():
    X, valid = iid((3, 20, 5), 0.3, 8)
    ref = nulls.null_branching(X, valid, null_draws=K, seed=1, chunk=K, trades=4)
    assert all(math.isfinite(ref[null][d]["mean"]) for null in nulls.NULLS for d in nulls.NULL_DIRECTIONS)
    for chunk in (1, 7, 17, None):
        assert same(nulls.null_branching(X, valid, null_draws=K, seed=1, chunk=chunk, trades=4), ref), chunk


# ----------------------------------------------------------------------------- fast paths against their references


def random_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(X, valid) of a random size, mask kind (shared or not, contiguous or not) and density."""
    n, t, l = int(rng.integers(1, 5)), int(rng.integers(1, 20)), int(rng.integers(1, 7))
    valid = mask(["all", "first", "ragged", "random"][int(rng.integers(4))], n, t, rng)
    return (rng.random((n, t, l)) < rng.uniform(0, 1)) & valid[:, :, None], valid


@pytest.mark.parametrize("coarse, pool_bytes", [(False, None), (False, 8), (True, None), (True, 8)])
def test_n3_equals_the_per_trade_reference(coarse, pool_bytes, monkeypatch):
    """``_n3`` (random numbers pooled ahead, keys sorted as uint16, rearranged trades) gives the same draws,
    bit for bit, as ``_n3_reference`` (``_trade`` per trade, numbers drawn per trade): coarse keys send most
    rows through the 32-bit redraws, and an 8-byte pool refills at every trade (redraws past its end)."""
    if coarse:
        coarse_keys(monkeypatch)
    if pool_bytes is not None:
        monkeypatch.setattr(nulls, "_POOL_BYTES", pool_bytes)
    rng = np.random.default_rng(20 + 2 * coarse + (pool_bytes is not None))
    for _ in range(30):
        X, valid = random_case(rng)
        k, trades, seed = int(rng.integers(1, 9)), int(rng.integers(0, 40)), int(rng.integers(0, 2**32))
        C = nulls._compress(X, nulls._layout(valid))
        fast = nulls._n3(C, nulls._draw_rngs("n3", 0, k, seed), trades)
        ref = nulls._n3_reference(C, nulls._draw_rngs("n3", 0, k, seed), trades)
        assert np.array_equal(fast, ref), (X.shape, k, trades, seed)


def test_n3_equals_the_reference_at_the_sweep_size():
    X, valid = iid((16, 128, 30), 0.4, 21)  # the default lattice: 307 trades, ~3 tied rows per trade
    C = nulls._compress(X, nulls._layout(valid))
    fast = nulls._n3(C, nulls._draw_rngs("n3", 0, 8, 5), nulls.default_trades(30))
    assert np.array_equal(fast, nulls._n3_reference(C, nulls._draw_rngs("n3", 0, 8, 5), nulls.default_trades(30)))


def test_packed_subset_equals_random_subset():
    """One step of both, from the same streams: the same subset (packed rows, uint16 sort with clamped
    forbidden keys vs 17-bit keys), including rows with nothing to pick, nothing allowed, everything
    allowed, and coarse keys (0xFFFF boundaries, ties)."""
    rng = np.random.default_rng(22)
    for k, N, M in [(3, 4, 5), (5, 2, 130), (2, 7, 2), (4, 3, 64), (6, 5, 63)]:
        for coarse in (False, True):
            allowed = rng.random((k * N, M)) < rng.uniform(0, 1, (k * N, 1))
            allowed[0] = False
            allowed[-1] = True
            n_allowed = allowed.sum(1)
            n_pick = rng.integers(0, n_allowed + 1)
            seed = int(rng.integers(0, 2**32))
            Mp = 64 * (M // 64 + 1)
            padded = np.zeros((k * N, Mp), bool)
            padded[:, :M] = allowed
            pool = nulls._RawPool(nulls._draw_rngs("n3", 0, k, seed), -(-N * M // 4), 3)
            if coarse:  # keys 0xFFFE / 0xFFFF: boundaries at 0xFFFF, and ties
                real = pool.take
                pool.take = lambda: np.bitwise_or(real(), np.uint64(0xFFFEFFFEFFFEFFFE))
            fast = nulls._unpack(nulls._packed_subset(n_pick, n_allowed, nulls._pack(padded), pool,
                                                      nulls._TradeWork(k, N, M, Mp)))
            rngs = nulls._draw_rngs("n3", 0, k, seed)
            if coarse:
                rngs = [CoarseRaw(r) for r in rngs]
            ref = nulls._random_subset(n_pick.reshape(k, N), M, allowed.reshape(k, N, M), rngs)
            assert np.array_equal(fast[:, :M], ref.reshape(k * N, M)) and not fast[:, M:].any()
            assert (fast.sum(1) == n_pick).all() and not (fast[:, :M] & ~allowed).any()


class CoarseRaw:
    """A generator whose first raw outputs (the 16-bit keys of one step) have every key 0xFFFE or 0xFFFF."""

    def __init__(self, rng: np.random.Generator):
        self.bit_generator, self.first = self, True
        self._bitgen = rng.bit_generator

    def random_raw(self, n: int) -> np.ndarray:
        out = self._bitgen.random_raw(n)
        if self.first:
            self.first = False
            return np.bitwise_or(out, np.uint64(0xFFFEFFFEFFFEFFFE))
        return out


@pytest.mark.parametrize("coarse", [False, True])
def test_random_subset_all_equals_random_subset(coarse, monkeypatch):
    """n1's path for unpadded rows (uint16 keys) picks the same subsets as ``_random_subset`` with nothing
    forbidden (coarse keys: most rows through the 32-bit redraws)."""
    if coarse:
        coarse_keys(monkeypatch)
    rng = np.random.default_rng(24)
    for k, R, M in [(3, 5, 7), (6, 40, 127), (2, 3, 1), (4, 9, 300)]:
        n_pick = rng.integers(0, M + 1, (k, R))
        seed = int(rng.integers(0, 2**32))
        fast = nulls._random_subset_all(n_pick, M, nulls._draw_rngs("n1", 0, k, seed))
        ref = nulls._random_subset(n_pick, M, None, nulls._draw_rngs("n1", 0, k, seed))
        assert np.array_equal(fast, ref) and (fast.sum(2) == n_pick).all()


def test_raw_pool_hands_out_each_stream_in_order():
    """However ``take`` and ``take_one`` interleave, draw d gets its generator's raw outputs in order."""
    rngs = nulls._draw_rngs("n3", 0, 3, 7)
    pool = nulls._RawPool(rngs, 5, 2)
    got = [[], [], []]
    rng = np.random.default_rng(0)
    for _ in range(40):
        if rng.random() < 0.5:
            for d, row in enumerate(pool.take()):
                got[d].extend(row.tolist())
        else:
            d = int(rng.integers(3))
            got[d].extend(pool.take_one(d, int(rng.integers(1, 14))).tolist())
    for d, values in enumerate(got):
        expected = nulls._draw_rngs("n3", 0, 3, 7)[d].bit_generator.random_raw(len(values))
        assert values == expected.tolist()


@PROPERTY
@given(lattices(), st.sampled_from(nulls.NULLS), seeds)
def test_branching_of_compressed_draws_equals_branching_batch_of_draws(lattice, null, seed):
    """``null_branching`` reads the ratios off the compressed draws (a shared contiguous mask) or expands
    them first (any other): the same numbers as ``branching_batch(draws(...))``."""
    X, valid = lattice
    C, lay = nulls._compressed_draws(X, valid, null, 3, seed, 0, None)
    fast = nulls._branching_compressed(C, lay, X.shape[1])
    ref = nulls.branching_batch(nulls.draws(X, valid, null, 3, seed=seed))
    assert fast.keys() == ref.keys()
    assert all(np.array_equal(fast[d], ref[d], equal_nan=True) for d in ref)


def test_null_branching_reads_the_real_masks_off_the_compressed_draws():
    X, valid = iid((3, 20, 5), 0.3, 23)
    assert isinstance(nulls._layout(valid).shared, slice)  # the sweep's mask: the fast reading
    X[:, -1] = False
    valid[:, -1] = False  # the run no longer reaches the last token
    for v in (valid, np.ones_like(valid)):
        Xv = X & v[:, :, None]
        out = nulls.null_branching(Xv, v, null_draws=6, seed=3, trades=5)
        for null in nulls.NULLS:
            b = nulls.branching_batch(nulls.draws(Xv, v, null, 6, seed=3, **({"trades": 5} if null == "n3" else {})))
            assert same(out[null], {d: nulls._summary(out["observed"][d], b[d]) for d in nulls.NULL_DIRECTIONS})


# ----------------------------------------------------------------------------- bad and degenerate input


@pytest.mark.parametrize("call, message", [
    (lambda X, v: nulls.null_branching(X, v, nulls=("n4",), null_draws=2, seed=0), "unknown null 'n4'"),
    (lambda X, v: nulls.draws(X, v, "shuffle", 2, seed=0), "unknown null 'shuffle'"),
    (lambda X, v: nulls.null_branching(X, v, null_draws=0, seed=0), "null_draws must be a positive integer"),
    (lambda X, v: nulls.draws(X, v, "n1", True, seed=0), "k must be a positive integer"),
    (lambda X, v: nulls.draws(X, v, "n1", 2, seed=0, start=-1), "start must be a non-negative integer"),
    (lambda X, v: nulls.draws(X, v, "n1", 2, seed=-1), "seed must be a non-negative integer"),
    (lambda X, v: nulls.null_branching(X, v, null_draws=2, seed=None), "seed must be a non-negative integer"),
    (lambda X, v: nulls.null_branching(X, v, null_draws=2, seed=0, chunk=0), "chunk must be a positive integer"),
    (lambda X, v: nulls.null_branching(X[0], v, null_draws=2, seed=0), r"3-D \[N, T, L\]"),
    (lambda X, v: nulls.null_branching(X, v[:, 1:], null_draws=2, seed=0), "valid has shape"),
    (lambda X, v: nulls.null_branching(X, v[0], null_draws=2, seed=0), "valid has shape"),
    (lambda X, v: nulls.draws(X, v, "n1", 2, seed=0, trades=3), "option of n3 only"),
    (lambda X, v: nulls.draws(X, v, "n3", 2, seed=0, trades=-1), "trades must be"),
    (lambda X, v: nulls.branching_batch(X), r"4-D \[K, N, T, L\]"),
])
def test_bad_input_raises_a_clear_value_error(call, message):
    X, valid = iid((2, 6, 3), 0.5, 0)
    with pytest.raises(ValueError, match=message):
        call(X, valid)


def test_draws_and_seed_have_no_default():
    X, valid = iid((2, 6, 3), 0.5, 0)
    with pytest.raises(TypeError, match="null_draws"):
        nulls.null_branching(X, valid, seed=0)
    with pytest.raises(TypeError, match="seed"):
        nulls.null_branching(X, valid, null_draws=2)
    with pytest.raises(TypeError, match="seed"):
        nulls.draws(X, valid, "n1", 2)


def test_events_at_invalid_sites_are_rejected():
    X, valid = iid((2, 6, 3), 0.5, 0)
    X[1, 0, 2] = True  # token 0 is invalid
    with pytest.raises(ValueError, match="events at invalid token sites"):
        nulls.null_branching(X, valid, null_draws=2, seed=0)
    with pytest.raises(ValueError, match="events at invalid token sites"):
        nulls.draws(X, valid, "n2", 2, seed=0)


@pytest.mark.parametrize("shape, valid", [
    ((2, 6, 3), None),  # no events
    ((2, 6, 3), np.zeros((2, 6), bool)),  # no valid token at all
    ((3, 6, 3), np.array([[0, 1, 1, 0, 0, 0], [0] * 6, [1] * 6], bool)),  # ragged, one sequence without tokens
    ((2, 1, 3), None),  # one token
])
def test_empty_lattice_gives_nan_without_warnings(shape, valid):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = nulls.null_branching(np.zeros(shape, bool), valid, null_draws=5, seed=0)
    assert all(math.isnan(v) for v in result["observed"].values())
    assert all(math.isnan(v) for null in nulls.NULLS for s in result[null].values() for v in s.values())


def test_degenerate_rows_are_left_as_they_are():
    """One valid token (n2 has no shift to make) and one layer (n3 has no row to trade with)."""
    valid = np.zeros((1, 4), bool)
    valid[0, 2] = True
    X = np.zeros((1, 4, 2), bool)
    X[0, 2, 1] = True
    assert (nulls.draws(X, valid, "n2", 3, seed=0) == X).all()
    X1 = np.zeros((1, 5, 1), bool)
    X1[0, [1, 2], 0] = True
    assert (nulls.draws(X1, None, "n3", 3, seed=0) == X1).all()


# ----------------------------------------------------------------------------- flat_rows


def test_flat_rows_columns_and_values():
    X, valid = iid((2, 10, 4), 0.4, 3)
    result = nulls.null_branching(X, valid, nulls=("n1", "n3"), null_draws=8, seed=0)
    row = nulls.flat_rows(result)
    expected = [name for d in nulls.NULL_DIRECTIONS for null in nulls.NULLS for name in (
        f"{null}_b_{d}_mean", f"{null}_b_{d}_lo", f"{null}_b_{d}_hi", f"delta_b_{d}_{null}", f"z_{d}_{null}")]
    assert list(row) == expected and len(row) == 60
    assert all(isinstance(v, float) for v in row.values())
    for null in ("n1", "n3"):
        for d in nulls.NULL_DIRECTIONS:
            s = result[null][d]
            assert (row[f"{null}_b_{d}_mean"], row[f"{null}_b_{d}_lo"], row[f"{null}_b_{d}_hi"],
                    row[f"delta_b_{d}_{null}"], row[f"z_{d}_{null}"]) == (s["mean"], s["lo"], s["hi"], s["delta"], s["z"])
    assert all(math.isnan(v) for name, v in row.items() if "n2" in name)  # a null the result does not hold
