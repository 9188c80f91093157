"""Marginal-preserving null models of the event lattice and delta-b residuals (DESIGN §4).

Input is the occupancy ``X`` bool [N, T, L] (sequence n, token t, layer l) and ``valid`` bool [N, T],
the token sites that enter the lattice (invalid sites must be empty). Each null keeps marginals
exactly and is drawn per sequence, many draws at once, vectorised over rows and draws:

``n1``  permute each (sequence, layer) row over its valid tokens: keeps every (n, l) count.
``n2``  circularly shift each (n, l) row, taken as the compressed sequence of its m_n valid tokens,
        by an independent offset uniform in [1, m_n - 1] (no shift when m_n <= 1): keeps every row
        count and each row's cyclic run-length multiset.
``n3``  curveball trades (Strona et al. 2014) on each sequence's matrix [L layers, m_n valid tokens]:
        keeps every row count (per layer) and every column count (per token).

Seeding: draw j of null ``NULLS[i]`` for a seed takes every random number it uses from its own
generator, ``SeedSequence(seed, spawn_key=(i, j))``, in an order fixed by that draw alone. So a draw is
the same lattice whether it is made alone or with any other draws (the chunking of ``null_branching``
changes nothing), and a null's draws never depend on which other nulls are asked for. ``draws`` is
the one way to get them.

``null_branching`` compares the observed co-occupancy branching ratios (``avalanches.branching``)
with their null distributions: delta-b = observed - null mean, the null's 95% interval and
z = delta-b / null sd.

Internally a sequence's valid tokens are compressed into slots j < m_n of a [.., L, M] array
(M = max_n m_n, rows contiguous along tokens); slots j >= m_n are padding and always empty.

Speed without new numbers: n3's trades run on rows packed as bits, with each draw's random numbers
generated ahead (``_RawPool``) and its keys sorted as 16 bits (``_packed_trade``), and ``null_branching``
reads the ratios off the compressed draws (``_branching_compressed``); ``_n3_reference`` and
``branching_batch(draws(...))`` are the plain versions the tests hold them to, bit for bit.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .options import NULL_DIRECTIONS, NULLS

from .avalanches import check_lattice, check_valid, ratios  # the same checks and 0-safe ratios as `branching`

STATS: tuple[str, ...] = ("mean", "lo", "hi", "sd", "delta", "z")

CHUNK_ENV = "AVALANCHE_NB_NULL_CHUNK_MB"  # working-memory budget of one chunk of draws, in MB (default 256)
_BYTES_PER_SITE = 16  # draws (1 B) + sort keys and sorted copy (2 x 4 B) + bool temporaries, rounded up
_SENTINEL = np.uint32(0xFFFFFFFF)  # sort key of a slot that may not be picked (ties with it are redrawn)


# ----------------------------------------------------------------------------- validation and layout


def _check_lattice(X: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``X`` as bool [N, T, L] and ``valid`` as bool [N, T] (all True when None), checked."""
    X = check_lattice(X, "occupancy X").astype(bool, copy=False)
    valid = check_valid(valid, X)
    if valid is None:
        valid = np.ones(X.shape[:2], bool)
    if (X & ~valid[:, :, None]).any():
        raise ValueError("X has events at invalid token sites; mask them first (e.g. avalanches.occupancy)")
    return X, valid


def _check_null(null: str) -> None:
    if null not in NULLS:
        raise ValueError(f"unknown null {null!r}; valid names: {', '.join(NULLS)}")


def _check_count(value: int, name: str, minimum: int = 1) -> int:
    """``value`` as an int, checked to be an integer >= ``minimum`` (0 or 1; a bool is no count)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{name} must be a {kind} integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class _Layout:
    """Where the compressed slots of each sequence live in the [N, T] token grid.

    ``pos``    int [N, M], token of slot j of sequence n (slots j >= m_n point at distinct invalid tokens);
    ``m``      int [N], valid tokens per sequence;
    ``slot``   bool [N, M], j < m_n;
    ``shared`` the common valid tokens (a slice when contiguous) when all sequences share one mask, else None.
    """

    pos: np.ndarray
    m: np.ndarray
    slot: np.ndarray
    shared: slice | np.ndarray | None

    @property
    def padded(self) -> bool:
        return bool((self.m < self.pos.shape[1]).any())


def _layout(valid: np.ndarray) -> _Layout:
    m = valid.sum(1)
    M = int(m.max()) if m.size else 0
    pos = np.argsort(~valid, axis=1, kind="stable")[:, :M]  # valid tokens first, in order
    slot = np.arange(M) < m[:, None]
    shared = None
    if len(valid) and (valid == valid[0]).all():
        idx = np.flatnonzero(valid[0])
        contiguous = len(idx) > 0 and idx[-1] - idx[0] + 1 == len(idx)
        shared = slice(int(idx[0]), int(idx[-1]) + 1) if contiguous else idx
    return _Layout(pos, m, slot, shared)


def _compress(X: np.ndarray, lay: _Layout) -> np.ndarray:
    """Rows of ``X`` bool [N, T, L] over their valid slots: bool [N, L, M] (padding empty)."""
    if lay.shared is not None:
        C = X[:, lay.shared, :]
    else:
        C = X[np.arange(len(X))[:, None], lay.pos] & lay.slot[:, :, None]
    return np.ascontiguousarray(C.transpose(0, 2, 1))


def _expand(C: np.ndarray, lay: _Layout, T: int) -> np.ndarray:
    """Inverse of ``_compress`` for a batch: bool [k, N, L, M] -> bool [k, N, T, L] (invalid sites empty)."""
    k, N, L, _ = C.shape
    out = np.zeros((k, N, T, L), bool)
    if lay.shared is not None:
        out[:, :, lay.shared, :] = C.transpose(0, 1, 3, 2)
    else:  # padding slots are empty and point at distinct invalid tokens: writing them is harmless
        out[:, np.arange(N)[:, None], lay.pos, :] = C.transpose(0, 1, 3, 2)
    return out


# ----------------------------------------------------------------------------- random streams and exact subsets


def _draw_rngs(null: str, start: int, k: int, seed: int) -> list[np.random.Generator]:
    """The generators of draws ``start .. start + k - 1`` of ``null``: draw j of ``NULLS[i]`` owns
    ``SeedSequence(seed, spawn_key=(i, j))``, i.e. ``SeedSequence(seed).spawn(len(NULLS))[i].spawn(j + 1)[j]``."""
    i = NULLS.index(null)
    return [np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i, j))) for j in range(start, start + k)]


def _random_bits(rngs: list[np.random.Generator], shape: tuple[int, ...], bits: int) -> np.ndarray:
    """uint32 [len(rngs), *shape], iid uniform on [0, 2**bits) (``bits`` 16 or 32): block d cut from one
    call for whole raw 64-bit outputs of ``rngs[d]``'s PCG64 (4 or 2 values per raw output, ~3x cheaper
    than ``Generator.integers``)."""
    n, per_raw = math.prod(shape), 64 // bits
    raw = np.empty((len(rngs), -(-n // per_raw)), np.uint64)
    for row, rng in zip(raw, rngs):
        row[...] = rng.bit_generator.random_raw(raw.shape[1])
    return raw.view(np.uint16 if bits == 16 else np.uint32)[:, :n].astype(np.uint32).reshape(len(rngs), *shape)


def _random_bits16(rngs: list[np.random.Generator], shape: tuple[int, ...]) -> np.ndarray:
    """``_random_bits(rngs, shape, 16)`` as uint16 (the same numbers, without the widening copy)."""
    n = math.prod(shape)
    raw = np.empty((len(rngs), -(-n // 4)), np.uint64)
    for row, rng in zip(raw, rngs):
        row[...] = rng.bit_generator.random_raw(raw.shape[1])
    return raw.view(np.uint16)[:, :n].reshape(len(rngs), *shape)


def _pick_smallest(keys: np.ndarray, n_pick: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mark the ``n_pick[r]`` smallest ``keys[r]`` (uint32 [R, M]): bool [R, M], and the rows whose
    boundary is tied (the n-th and (n+1)-th smallest keys equal), where the mark is not exact."""
    R, M = keys.shape
    flat = np.sort(keys, axis=1).ravel()
    i = np.arange(0, R * M, M) + np.clip(n_pick - 1, 0, M - 1)  # flat index of the n-th smallest
    edge, after = flat[i], flat[np.minimum(i + 1, np.arange(M - 1, R * M, M))]
    tied = (n_pick > 0) & (n_pick < M) & (edge == after)
    chosen = keys <= edge[:, None]
    chosen[n_pick == 0] = False
    return chosen, tied


def _forbid(keys: np.ndarray, allowed: np.ndarray | None, bits: int) -> np.ndarray:
    """``keys`` uint32 (iid uniform on [0, 2**bits)), in place, made larger than every allowed key where
    ``allowed`` (bool, same shape) is False: 16-bit keys get ``2**16 + key``, which never ties with an
    allowed one (a shift and an or: several times cheaper than a masked write); 32-bit get ``_SENTINEL``."""
    if allowed is None:
        return keys
    if bits == 16:
        keys |= np.logical_not(allowed).astype(np.uint32) << 16
    else:
        np.putmask(keys, np.logical_not(allowed), _SENTINEL)
    return keys


def _random_subset(n_pick: np.ndarray, M: int, allowed: np.ndarray | None,
                   rngs: list[np.random.Generator]) -> np.ndarray:
    """A uniformly random ``n_pick[d, r]``-subset of the allowed slots of row r of draw d: bool [k, R, M].

    ``n_pick`` int [k, R] (at most the allowed count of its row), ``allowed`` bool [k, R, M] or None (all),
    ``rngs`` the k draws' generators. Each row takes the slots of its ``n_pick`` smallest iid random keys
    (16-bit: cheap); the rows whose choice is ambiguous (a tie at the boundary, ~ M / 2**16 of them) are
    redrawn with fresh 32-bit keys until none is left. Draw d's keys all come from ``rngs[d]``, its tied
    rows in row order, so they never depend on the other draws. Both steps are invariant under permuting
    a row's allowed slots, so every subset of the right size is exactly equally likely.
    """
    k, R = n_pick.shape
    if M == 0:  # no sequence has a valid token: nothing to pick (and no boundary key to look up)
        return np.zeros((k, R, 0), bool)
    n_pick = n_pick.reshape(k * R)
    allowed = None if allowed is None else allowed.reshape(k * R, M)
    chosen, tied = _pick_smallest(_forbid(_random_bits(rngs, (R, M), 16).reshape(k * R, M), allowed, 16), n_pick)
    while tied.any():
        rows = np.flatnonzero(tied)
        owners, counts = np.unique(rows // R, return_counts=True)  # rows are draw-major: in order per draw
        keys = np.concatenate([_random_bits([rngs[d]], (c, M), 32)[0] for d, c in zip(owners, counts)])
        sub = None if allowed is None else allowed[rows]
        chosen[rows], tied_rows = _pick_smallest(_forbid(keys, sub, 32), n_pick[rows])
        tied = np.zeros_like(tied)
        tied[rows] = tied_rows
    return chosen.reshape(k, R, M)


def _random_subset_all(n_pick: np.ndarray, M: int, rngs: list[np.random.Generator]) -> np.ndarray:
    """``_random_subset(n_pick, M, None, rngs)`` (every slot allowed), the same subsets: with nothing to
    forbid, the 16-bit keys sort as uint16, the same order and boundary as their uint32 copies."""
    k, R = n_pick.shape
    if M == 0:
        return np.zeros((k, R, 0), bool)
    n_pick = n_pick.reshape(k * R)
    chosen, tied = _pick_smallest(_random_bits16(rngs, (R, M)).reshape(k * R, M), n_pick)
    rows = np.flatnonzero(tied)
    while rows.size:  # as in _random_subset
        owners, counts = np.unique(rows // R, return_counts=True)  # rows are draw-major: in order per draw
        keys = np.concatenate([_random_bits([rngs[d]], (c, M), 32)[0] for d, c in zip(owners, counts)])
        chosen[rows], tied_rows = _pick_smallest(keys, n_pick[rows])
        rows = rows[tied_rows]
    return chosen.reshape(k, R, M)


# ----------------------------------------------------------------------------- the null models


def _n1(C: np.ndarray, lay: _Layout, rngs: list[np.random.Generator]) -> np.ndarray:
    """Row permutations: bool [k, N, L, M] from the compressed rows ``C`` bool [N, L, M], k = len(rngs)."""
    k, (N, L, M) = len(rngs), C.shape
    counts = np.broadcast_to(C.sum(2).reshape(N * L), (k, N * L))
    if not lay.padded:  # every slot of every row is a token
        return _random_subset_all(counts, M, rngs).reshape(k, N, L, M)
    allowed = np.broadcast_to(lay.slot[None, :, None, :], (k, N, L, M)).reshape(k, N * L, M)
    return _random_subset(counts, M, allowed, rngs).reshape(k, N, L, M)


def _n2(C: np.ndarray, lay: _Layout, rngs: list[np.random.Generator]) -> np.ndarray:
    """Cyclic shifts of the compressed rows: bool [k, N, L, M], slot j = row[(j - s) mod m_n]."""
    N, L, M = C.shape
    m = np.maximum(lay.m, 1)[:, None]  # [N, 1]; an empty sequence has only padding
    doubled = np.take_along_axis(C, (np.arange(2 * M) % m)[:, None, :], 2)  # [N, L, 2M], slot i = row[i mod m_n]
    windows = sliding_window_view(doubled, M, axis=2)  # [N, L, M + 1, M], window w = row[(w + j) mod m_n]
    high = np.maximum(m, 2)  # offsets s in [1, high - 1] = [1, m_n - 1]
    s = np.stack([rng.integers(1, high, size=(N, L)) for rng in rngs])  # [k, N, L]
    w = np.where(lay.m[None, :, None] > 1, m[None] - s, 0)
    out = windows[np.arange(N)[None, :, None], np.arange(L)[None, None, :], w]
    return out & lay.slot[None, :, None, :] if lay.padded else out


def default_trades(L: int) -> int:
    """Default number of curveball trades per matrix with ``L`` rows: ``ceil(3 L ln L)``, 0 if L < 2.

    See ``_n3`` for the mixing check behind it (``python bench/nulls_bench.py`` reruns it).
    """
    return 0 if L < 2 else math.ceil(3 * L * math.log(L))


def _row_pairs(rngs: list[np.random.Generator], trades: int, N: int, L: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows each curveball trade pairs up in every matrix of ``R`` bool [k, N, L, M] (k = len(rngs)).

    Returns (ia, ib), int [trades, k * N]: for trade t, the flat indices into ``R.reshape(-1, M)`` of rows
    a != b of each matrix, the ordered pair uniform over its L (L - 1) values. Draw d's pairs for all its
    trades come from one call on ``rngs[d]``, before any of its trades' keys.
    """
    p = np.stack([rng.integers(L * (L - 1), size=(trades, N), dtype=np.int32) for rng in rngs], axis=1)
    a, b = np.divmod(p.reshape(trades, -1), L - 1)
    b += b >= a
    first = np.arange(0, len(rngs) * N * L, L, dtype=np.int32)  # row 0 of each matrix
    return first + a, first + b


def _trade(R: np.ndarray, ia: np.ndarray, ib: np.ndarray, rngs: list[np.random.Generator]) -> None:
    """One curveball trade in each matrix of ``R`` bool [k, N, L, M], in place, between the rows ``ia`` and
    ``ib`` (int [k * N], from ``_row_pairs``), draw d's random keys from ``rngs[d]``.

    Per matrix, the columns where exactly one of rows a, b is 1 are pooled and handed back at random,
    row a getting as many as it had.
    """
    k, N, _, M = R.shape
    rows = R.reshape(-1, M)  # whole-row gathers and scatters: cheaper than 2-D fancy indexing
    ra, rb = rows[ia], rows[ib]
    both, diff = ra & rb, ra ^ rb
    to_a = _random_subset(_row_counts(ra & diff).reshape(k, N), M, diff.reshape(k, N, M), rngs).reshape(k * N, M)
    rows[ia] = both | to_a
    rows[ib] = both | (diff & ~to_a)


def _row_counts(x: np.ndarray) -> np.ndarray:
    """Number of True per row of ``x`` bool [R, M], as int64 (summed in uint16 when rows are short)."""
    if x.shape[1] < 2**16:
        return np.add.reduce(x.view(np.uint8), axis=1, dtype=np.uint16).astype(np.int64)
    return x.sum(1)


def _n3(C: np.ndarray, rngs: list[np.random.Generator], trades: int) -> np.ndarray:
    """Curveball draws: bool [k, N, L, M], keeping each sequence's row (layer) and column (token) counts.

    All k x N matrices trade at once, ``trades`` steps (``default_trades(L)`` = ceil(3 L ln L) by default,
    e.g. 307 for L = 30). Padding columns are empty in every row, so they never trade.

    Mixing check (``python bench/nulls_bench.py``, lattice 16 x 128 x 30 with planted blocks of 4 tokens
    x 3 layers at a layer-dependent rate, 200 chains started from the observed matrices): the null means
    settle (stay within 3 Monte-Carlo SE of their long-run values, pooled over 5-20 L ln L trades) after
    about 1 L ln L trades for b_diag, 1.5 for b_depth, 2 for b_time and 2.5 for the slowest, the fraction
    of events still at their starting site; the default 3 L ln L is just past all four (a margin of
    ~1.2x on the slowest, ~1.5x on b_time): enough, with little to spare. Each trade leaves a given row alone
    with probability 1 - 2/L, so a row is untouched after tau trades with probability ~exp(-2 tau / L):
    exp(-6 ln L) = L**-6 at the default, i.e. every row of every matrix has traded many times.

    The trades run through ``_packed_trade`` (rows as bits, each draw's random numbers generated ahead in
    blocks, keys sorted as 16 bits): the same draws, bit for bit, as the plain loop ``_n3_reference``.
    """
    N, L, M = C.shape
    k = len(rngs)
    if L < 2 or M < 2 or trades == 0:
        return np.broadcast_to(C, (k, N, L, M)).copy()
    if sys.byteorder != "little":  # the packed rows read bytes as little-endian words
        return _n3_reference(C, rngs, trades)
    ia, ib = _row_pairs(rngs, trades, N, L)
    Mp = 64 * (M // 64 + 1)  # slots of a packed row: M, then at least one padding slot, never allowed
    padded = np.zeros((N, L, Mp), bool)
    padded[..., :M] = C
    rows = np.broadcast_to(_pack(padded), (k, N, L, Mp // 64)).reshape(k * N * L, Mp // 64).copy()
    counts = np.broadcast_to(C.sum(2, dtype=np.int64), (k, N, L)).reshape(-1)  # constant under trades
    per_trade = -(-N * M // 4)  # raw outputs of one trade's 16-bit keys, per draw
    pool = _RawPool(rngs, per_trade, max(1, min(trades, _POOL_BYTES // (8 * k * per_trade))))
    work = _TradeWork(k, N, M, Mp)
    ca, cb = counts[ia], counts[ib]  # [trades, k * N]: the rows' counts, gathered for all trades at once
    for t in range(trades):
        _packed_trade(rows, ia[t], ib[t], ca[t], cb[t], pool, work)
    out = np.unpackbits(rows.view(np.uint8), axis=-1, bitorder="little").reshape(k, N, L, Mp)[..., :M]
    return np.ascontiguousarray(out).view(bool)


def _n3_reference(C: np.ndarray, rngs: list[np.random.Generator], trades: int) -> np.ndarray:
    """``_n3`` as a plain loop of ``_trade`` (random numbers drawn per trade and draw): the reference the
    tests hold ``_n3`` to, bit for bit."""
    N, L, M = C.shape
    R = np.broadcast_to(C, (len(rngs), N, L, M)).copy()
    if L >= 2 and M >= 2 and trades > 0:
        for ia, ib in zip(*_row_pairs(rngs, trades, N, L)):
            _trade(R, ia, ib, rngs)
    return R


_POOL_BYTES = 4 * 2**20  # random numbers generated ahead for the curveball trades, all draws together


class _RawPool:
    """Each draw's raw PCG64 outputs (``bit_generator.random_raw``), generated ahead, a block at a time.

    Draw d's values come out in exactly the order its generator would give them, whoever asks:
    ``take()`` hands out the next ``n`` of every draw at once (one trade's keys; every draw's row of the
    buffer is at the same cursor), ``take_one(d, m)`` the next ``m`` of draw d alone (a tie's redraw: its
    row shifts left by m and is topped up from its generator, so the cursors stay common). Nothing else
    may draw from these generators while the pool is in use (``random_raw`` ignores the Generator's
    buffered 32-bit half that ``_row_pairs``' integers may leave, so drawing those first is fine).
    """

    def __init__(self, rngs: list[np.random.Generator], n: int, takes: int):
        self.bitgens = [rng.bit_generator for rng in rngs]
        self.n, self.size = n, n * takes
        self.buf = np.empty((len(rngs), self.size), np.uint64)
        self.pos = self.size  # empty: the first take fills it

    def take(self) -> np.ndarray:
        """uint64 [k, n]: the next ``n`` raw outputs of every draw (a view into the buffer, consumed)."""
        if self.pos == self.size:
            for row, bitgen in zip(self.buf, self.bitgens):
                row[...] = bitgen.random_raw(self.size)
            self.pos = 0
        out = self.buf[:, self.pos:self.pos + self.n]
        self.pos += self.n
        return out

    def take_one(self, d: int, m: int) -> np.ndarray:
        """uint64 [m]: the next ``m`` raw outputs of draw ``d`` alone (a copy)."""
        row, bitgen, avail = self.buf[d], self.bitgens[d], self.size - self.pos
        if m <= avail:
            out = row[self.pos:self.pos + m].copy()
            row[self.pos:self.size - m] = row[self.pos + m:].copy()
            row[self.size - m:] = bitgen.random_raw(m)
        else:
            out = np.concatenate([row[self.pos:], bitgen.random_raw(m - avail)])
            row[self.pos:] = bitgen.random_raw(avail)
        return out


def _pool_keys16(pool: _RawPool, shape: tuple[int, ...]) -> np.ndarray:
    """uint16 [k, *shape]: the next iid 16-bit keys of every draw, as ``_random_bits(rngs, shape, 16)``
    cuts them (4 per raw output, the last one's unused ones dropped); a writable view into the pool."""
    n = math.prod(shape)
    return pool.take().view(np.uint16)[:, :n].reshape(-1, *shape)


def _pool_keys32(pool: _RawPool, d: int, shape: tuple[int, ...]) -> np.ndarray:
    """uint32 [*shape]: draw ``d``'s next 32-bit keys, as ``_random_bits([rng_d], shape, 32)[0]`` cuts them."""
    n = math.prod(shape)
    return pool.take_one(d, -(-n // 2)).view(np.uint32)[:n].reshape(shape)


_PACK = np.uint64(0x0102040810204080)  # 8 bytes of 0 / 1 times this: byte i -> bit 56 + i (no carries)
# the key masks of a packed byte, one 16-byte item each: slot i of the byte gets 0 where bit i is set
# (allowed) and 0xFFFF where it is clear (a forbidden or padding slot)
_BYTE_MASKS = np.where((np.arange(256)[:, None] >> np.arange(8)) & 1, 0, 0xFFFF).astype(np.uint16).view(
    np.dtype((np.void, 16))).reshape(256)


def _pack(B: np.ndarray) -> np.ndarray:
    """bool [..., Mp] (Mp a multiple of 64) -> uint64 [..., Mp // 64], slot j at bit j % 64 of word j // 64
    (``np.packbits(B, axis=-1, bitorder="little")`` read as words)."""
    return ((B.view(np.uint64) * _PACK) >> np.uint64(56)).astype(np.uint8).view(np.uint64)


def _unpack(P: np.ndarray) -> np.ndarray:
    """Inverse of ``_pack``: uint64 [R, W] -> bool [R, 64 W]."""
    return np.unpackbits(P.view(np.uint8), axis=-1, bitorder="little").view(bool)


class _TradeWork:
    """The buffers of one curveball chain's trades: the keys of a trade, uint16 [k * N, Mp] (the padding
    slots' keys 0xFFFF, never written), each row's first flat index in them, and the packed rows' item
    type (one opaque item per row, for whole-row takes and scatters)."""

    def __init__(self, k: int, N: int, M: int, Mp: int):
        self.k, self.N, self.M, self.Mp = k, N, M, Mp
        self.keys = np.full((k * N, Mp), 0xFFFF, np.uint16)
        self.base = np.arange(k * N) * Mp
        self.row_item = np.dtype((np.void, Mp // 8))


def _row_items(P: np.ndarray, work: _TradeWork) -> np.ndarray:
    """``P`` uint64 [R, W] (C-contiguous) as a 1-D array of R opaque row items (a view)."""
    return P.view(work.row_item).reshape(-1)


def _popcount_rows(P: np.ndarray) -> np.ndarray:
    """int64 [R]: the set bits of each packed row of ``P`` uint64 [R, W]."""
    n = np.bitwise_count(P[:, 0]).astype(np.int64)
    for w in range(1, P.shape[1]):
        n += np.bitwise_count(P[:, w])
    return n


def _packed_trade(rows: np.ndarray, ia: np.ndarray, ib: np.ndarray, ca: np.ndarray, cb: np.ndarray,
                  pool: _RawPool, work: _TradeWork) -> None:
    """``_trade`` on the packed rows ``rows`` uint64 [k * N * L, W] of ``R`` (``_pack``, in place): the same
    trade from the same random numbers, with the arithmetic rearranged. The rows' counts ``ca``, ``cb``
    (int [k * N]) are known (a trade keeps them), the rows' bits are handled as words and whole rows as
    opaque items (a packed row is 16 bytes instead of 127: the chains stay in cache), the subset is
    ``_packed_subset``'s."""
    items = _row_items(rows, work)  # 1-D takes and scatters of whole rows: several times cheaper than 2-D
    ra = np.take(items, ia).view(np.uint64).reshape(ia.size, -1)
    rb = np.take(items, ib).view(np.uint64).reshape(ib.size, -1)
    both, diff = ra & rb, ra ^ rb
    n_both = _popcount_rows(both)
    n_pick = ca - n_both  # |a & ~b|: a's share of the pooled columns
    to_a = _packed_subset(n_pick, n_pick + cb - n_both, diff, pool, work)
    items[ia] = _row_items(both | to_a, work)
    items[ib] = _row_items(both | (diff ^ to_a), work)  # to_a lies in diff: diff ^ to_a = diff & ~to_a


def _packed_subset(n_pick: np.ndarray, n_allowed: np.ndarray, allowed: np.ndarray, pool: _RawPool,
                   work: _TradeWork) -> np.ndarray:
    """``_random_subset(n_pick.reshape(k, N), M, allowed_bool.reshape(k, N, M), rngs)`` for the pool's draws,
    packed: uint64 [k * N, W], the same subset from the same random numbers.

    ``allowed`` uint64 [k * N, W] (packed), ``n_allowed`` int [k * N] its counts (>= ``n_pick``).
    ``_random_subset`` sorts 17-bit keys (a forbidden slot's key ``2**16 + key``, above every allowed one);
    here a forbidden key (and a padding slot's) is clamped to ``0xFFFF`` so that rows sort as uint16. The
    ``n``-th smallest key (``n <= n_allowed``) is the same either way, and so is the (n + 1)-th when
    ``n < n_allowed``; at ``n == n_allowed`` the 17-bit boundary never ties, so a tie needs
    ``n < n_allowed`` here. The chosen slots are the allowed ones with a key <= the n-th smallest (none
    when n = 0) in both; a clamped key passes that test only when the n-th smallest is 0xFFFF itself,
    so only those rows are masked. Tied rows are redrawn with 32-bit keys as ``_random_subset`` does it,
    from each draw's next numbers in the pool.
    """
    k, N, M, Mp = work.k, work.N, work.M, work.Mp
    keys = work.keys  # [k * N, Mp], padding slots 0xFFFF for good
    masks = np.take(_BYTE_MASKS, allowed.view(np.uint8)).view(np.uint16).reshape(k, N, Mp)  # 0 where allowed
    np.bitwise_or(_pool_keys16(pool, (N, M)), masks[..., :M], out=keys.reshape(k, N, Mp)[..., :M])
    flat = np.sort(keys, axis=-1).reshape(-1)
    i = work.base + np.maximum(n_pick - 1, 0)  # flat index of the n-th smallest (n <= M)
    edge = flat[i]
    tied = (n_pick > 0) & (n_pick < n_allowed) & (edge == flat[i + 1])  # i + 1 is at most a padding slot
    chosen = keys <= edge[:, None]
    chosen[n_pick == 0] = False
    top = np.flatnonzero(edge == 0xFFFF)  # clamped keys pass the test: keep the allowed slots only
    if top.size:
        chosen[top] &= _unpack(allowed[top])
    rows = np.flatnonzero(tied)
    while rows.size:  # as in _random_subset
        owners = [(d, len(list(g))) for d, g in itertools.groupby((rows // N).tolist())]  # draw-major rows
        keys32 = np.concatenate([_pool_keys32(pool, d, (c, M)) for d, c in owners])
        sub = _unpack(allowed[rows])[:, :M]
        chosen[rows, :M], tied_rows = _pick_smallest(_forbid(keys32, sub, 32), n_pick[rows])
        rows = rows[tied_rows]
    return _pack(chosen)


# ----------------------------------------------------------------------------- public API


def draws(X: np.ndarray, valid: np.ndarray | None, null: str, k: int, *, seed: int, start: int = 0,
          trades: int | None = None) -> np.ndarray:
    """Draws ``start, ..., start + k - 1`` of ``null`` for ``seed``, of the occupancy ``X`` with ``valid``.

    Each draw is a function of (``X``, ``valid``, ``null``, ``seed``, its index, ``trades``) alone: the same
    lattice whether it is made alone or with any other draws, e.g. ``draws(..., k, seed=s, start=i)``
    equals ``draws(..., i + k, seed=s)[i:]``. ``null_branching`` and ``gstar.sequence_parts`` both get
    their draws here.

    Parameters
    ----------
    X : bool [N, T, L]; empty at invalid sites.
    valid : bool [N, T], the token sites in the lattice (None: all).
    null : one of ``NULLS``.
    k : number of draws (>= 1).
    seed : non-negative int. Draw j of ``NULLS[i]`` takes all its random numbers from the generator of
        ``SeedSequence(seed, spawn_key=(i, j))`` (= ``SeedSequence(seed).spawn(len(NULLS))[i].spawn(j + 1)[j]``).
    start : index of the first draw (>= 0).
    trades : curveball trades per matrix, ``n3`` only (>= 0; default ``default_trades(L)``).

    Returns
    -------
    bool [k, N, T, L], draw ``start + i`` at index i; invalid sites are empty in every draw.
    """
    _check_null(null)
    k = _check_count(k, "k")
    start = _check_count(start, "start", minimum=0)
    seed = _check_count(seed, "seed", minimum=0)  # None would seed from the OS: irreproducible
    X, valid = _check_lattice(X, valid)
    if trades is not None and null != "n3":
        raise ValueError(f"trades is an option of n3 only, not of {null!r}")
    out, lay = _compressed_draws(X, valid, null, k, seed, start, trades)
    return _expand(out, lay, X.shape[1])


def _compressed_draws(X: np.ndarray, valid: np.ndarray, null: str, k: int, seed: int, start: int,
                      trades: int | None) -> tuple[np.ndarray, _Layout]:
    """``draws``' draws before they are expanded: bool [k, N, L, M] over the compressed slots, and the layout
    (arguments checked by the caller)."""
    rngs = _draw_rngs(null, start, k, seed)
    lay = _layout(valid)
    C = _compress(X, lay)
    if null == "n3":
        trades = default_trades(X.shape[2]) if trades is None else _check_count(trades, "trades", minimum=0)
        return _n3(C, rngs, trades), lay
    return (_n1 if null == "n1" else _n2)(C, lay, rngs), lay


def _count(Xs: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return Xs.sum(axes, dtype=np.int64)


def _count_draws(x: np.ndarray) -> np.ndarray:
    """int64 [K]: the number of True in each ``x[i]`` of ``x`` bool [K, ...] (``np.count_nonzero`` per draw,
    several times faster than a summed bool over many axes; the same integers)."""
    return np.array([np.count_nonzero(d) for d in x], dtype=np.int64).reshape(len(x))


def _branching_compressed(C: np.ndarray, lay: _Layout, T: int) -> dict[str, np.ndarray]:
    """``branching_batch(_expand(C, lay, T))`` of draws ``C`` bool [K, N, L, M], the same numbers: read off
    the compressed slots directly when every sequence shares one contiguous run of valid tokens (the
    sweep's lattices: all tokens but the first), where adjacent slots are adjacent tokens, the tokens
    outside the run are empty and the last token is in the run iff it ends at ``T``."""
    if not isinstance(lay.shared, slice):
        return branching_batch(_expand(C, lay, T))
    ends = lay.shared.stop == T  # the run holds token T - 1: its last slot is the lattice's last token
    total = _count_draws(C)
    last_l = _count_draws(C[:, :, -1:, :])
    last_t = _count_draws(C[..., -1:]) if ends else np.zeros_like(total)
    corner = _count_draws(C[:, :, -1:, -1:]) if ends else np.zeros_like(total)
    nums = {
        "time": _count_draws(C[..., :-1] & C[..., 1:]),
        "depth": _count_draws(C[:, :, :-1, :] & C[:, :, 1:, :]),
        "diag": _count_draws(C[:, :, :-1, :-1] & C[:, :, 1:, 1:]),
    }
    dens = {"time": total - last_t, "depth": total - last_l, "diag": total - last_t - last_l + corner}
    out = {d: ratios(nums[d], dens[d]) for d in ("time", "depth", "diag")}
    out["tot"] = out["time"] + out["depth"]
    return out


def branching_batch(Xs: np.ndarray) -> dict[str, np.ndarray]:
    """Pooled co-occupancy branching ratios of each draw of ``Xs`` bool [K, N, T, L].

    Returns ``{"time", "depth", "diag", "tot"}``: float [K], equal to ``avalanches.branching`` of
    ``Xs[i]`` (``b_time``, ``b_depth``, ``b_diag``, ``b_tot``) for every i; NaN where a denominator is 0.
    """
    Xs = np.asarray(Xs)
    if Xs.ndim != 4:
        raise ValueError(f"Xs must be 4-D [K, N, T, L], got shape {Xs.shape}")
    Xs = Xs.astype(bool, copy=False)
    sites = (1, 2, 3)
    total = _count(Xs, sites)
    # the last token / layer as slices, so an empty token or layer axis counts 0 instead of raising
    last_t, last_l, corner = (_count(Xs[:, :, -1:, :], sites), _count(Xs[..., -1:], sites),
                              _count(Xs[:, :, -1:, -1:], sites))
    nums = {
        "time": _count(Xs[:, :, :-1] & Xs[:, :, 1:], sites),
        "depth": _count(Xs[..., :-1] & Xs[..., 1:], sites),
        "diag": _count(Xs[:, :, :-1, :-1] & Xs[:, :, 1:, 1:], sites),
    }
    dens = {"time": total - last_t, "depth": total - last_l, "diag": total - last_t - last_l + corner}
    out = {d: ratios(nums[d], dens[d]) for d in ("time", "depth", "diag")}
    out["tot"] = out["time"] + out["depth"]
    return out


def _chunk_size(k: int, sites: int, chunk: int | None) -> int:
    if chunk is not None:
        return _check_count(chunk, "chunk")
    # the results never depend on the chunk (every draw has its own stream): the budget only bounds memory
    budget = float(os.environ.get(CHUNK_ENV, 256)) * 2**20
    return max(1, min(k, int(budget) // max(1, _BYTES_PER_SITE * sites)))


def _summary(observed: float, values: np.ndarray) -> dict[str, float]:
    """Null summary of ``values`` float [K] (NaN draws ignored) against ``observed``."""
    v = values[np.isfinite(values)]
    mean = float(v.mean()) if len(v) else math.nan
    lo, hi = (float(q) for q in np.percentile(v, [2.5, 97.5])) if len(v) else (math.nan, math.nan)
    sd = float(v.std(ddof=1)) if len(v) > 1 else math.nan
    delta = observed - mean
    z = delta / sd if sd > 0 else math.nan  # NaN sd compares False too
    return {"mean": mean, "lo": lo, "hi": hi, "sd": sd, "delta": delta, "z": z}


def null_branching(X: np.ndarray, valid: np.ndarray | None, nulls: tuple[str, ...] = NULLS, *, null_draws: int,
                   seed: int, chunk: int | None = None, trades: int | None = None) -> dict:
    """Observed branching ratios of ``X`` bool [N, T, L] (``valid`` bool [N, T]) against null models.

    Parameters
    ----------
    nulls : names from ``NULLS``.
    null_draws : draws per null (>= 1): draws 0 .. null_draws - 1 of ``draws``.
    seed : the draws' seed (see ``draws``); each null's draws depend only on (seed, trades), never on
        ``chunk`` or on which other nulls are asked for.
    chunk : draws generated at once, a memory bound only; default: as many as keep a chunk's working
        memory (about ``_BYTES_PER_SITE`` bytes per site and draw, the draws themselves 1 byte) under
        ``$AVALANCHE_NB_NULL_CHUNK_MB`` (default 256 MB).
    trades : curveball trades of ``n3`` (default ``default_trades(L)``).

    Returns
    -------
    ``{"observed": {dir: float}, null: {dir: {"mean", "lo", "hi", "sd", "delta", "z"}}}`` for dir in
    ``NULL_DIRECTIONS``: the null mean, 2.5th / 97.5th percentiles, sd (ddof=1), delta = observed - mean and
    z = delta / sd (NaN when sd is 0 or undefined). Draws whose ratio is NaN (empty denominator) are
    left out of the summaries.
    """
    X, valid = _check_lattice(X, valid)
    for null in nulls:
        _check_null(null)
    K = _check_count(null_draws, "null_draws")
    seed = _check_count(seed, "seed", minimum=0)  # None would seed from the OS: irreproducible
    step = _chunk_size(K, X.size, chunk)
    observed = {d: float(v[0]) for d, v in branching_batch(X[None]).items()}
    result: dict = {"observed": observed}
    for null in nulls:
        opt = trades if null == "n3" else None
        # as branching_batch(draws(...)) per chunk, without expanding the draws to [k, N, T, L]
        parts = [_branching_compressed(*_compressed_draws(X, valid, null, min(step, K - i), seed, i, opt), X.shape[1])
                 for i in range(0, K, step)]
        result[null] = {d: _summary(observed[d], np.concatenate([p[d] for p in parts])) for d in NULL_DIRECTIONS}
    return result


def flat_rows(result: dict) -> dict[str, float]:
    """Flatten a ``null_branching`` result to the gain-sweep table's columns.

    For dir in ``NULL_DIRECTIONS`` and null in ``NULLS``: ``{null}_b_{dir}_mean``, ``{null}_b_{dir}_lo``,
    ``{null}_b_{dir}_hi``, ``delta_b_{dir}_{null}``, ``z_{dir}_{null}`` (60 columns, in that order);
    NaN for a null the result does not hold.
    """
    empty = {s: math.nan for s in STATS}
    row: dict[str, float] = {}
    for d in NULL_DIRECTIONS:
        for null in NULLS:
            s = result.get(null, {}).get(d, empty)
            row[f"{null}_b_{d}_mean"] = float(s["mean"])
            row[f"{null}_b_{d}_lo"] = float(s["lo"])
            row[f"{null}_b_{d}_hi"] = float(s["hi"])
            row[f"delta_b_{d}_{null}"] = float(s["delta"])
            row[f"z_{d}_{null}"] = float(s["z"])
    return row
