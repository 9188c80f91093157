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
"""

from __future__ import annotations

import math
import os
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


# ----------------------------------------------------------------------------- the null models


def _n1(C: np.ndarray, lay: _Layout, rngs: list[np.random.Generator]) -> np.ndarray:
    """Row permutations: bool [k, N, L, M] from the compressed rows ``C`` bool [N, L, M], k = len(rngs)."""
    k, (N, L, M) = len(rngs), C.shape
    counts = np.broadcast_to(C.sum(2).reshape(N * L), (k, N * L))
    allowed = np.broadcast_to(lay.slot[None, :, None, :], (k, N, L, M)).reshape(k, N * L, M) if lay.padded else None
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
    """
    N, L, M = C.shape
    R = np.broadcast_to(C, (len(rngs), N, L, M)).copy()
    if L >= 2 and M >= 2 and trades > 0:
        for ia, ib in zip(*_row_pairs(rngs, trades, N, L)):
            _trade(R, ia, ib, rngs)
    return R


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
    rngs = _draw_rngs(null, start, k, seed)
    lay = _layout(valid)
    C = _compress(X, lay)
    if null == "n3":
        trades = default_trades(X.shape[2]) if trades is None else _check_count(trades, "trades", minimum=0)
        out = _n3(C, rngs, trades)
    else:
        out = (_n1 if null == "n1" else _n2)(C, lay, rngs)
    return _expand(out, lay, X.shape[1])


def _count(Xs: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return Xs.sum(axes, dtype=np.int64)


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
    step = _chunk_size(K, X.size, chunk)
    observed = {d: float(v[0]) for d, v in branching_batch(X[None]).items()}
    result: dict = {"observed": observed}
    for null in nulls:
        opts = {"trades": trades} if null == "n3" else {}
        parts = [branching_batch(draws(X, valid, null, min(step, K - i), seed=seed, start=i, **opts))
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
