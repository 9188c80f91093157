"""The MLP tap's floor test as one compiled pass over a layer's activations (CPU).

:class:`FloorTest` does for one layer what clamp, compare, nonzero, gather and the exact z test do as
five numpy/torch passes: per row, a vectorised bound test writes a byte mask, the mask is scanned eight
bytes at a time, and only the values outside the bounds (about 1.5% at the default floor) are
standardised and tested exactly. On one layer's [512, 1536] tensor one thread takes about a third of
the time of the numpy steps it replaces (docs/PROFILE.md).

It runs on torch's own OpenMP thread team, entered through libgomp's ``GOMP_parallel`` (what
``#pragma omp parallel`` compiles to and what torch's ops call): thread ``t`` of ``n`` takes the
``t``-th of ``n`` contiguous blocks of rows, about the part of ``u`` torch's thread ``t`` has just
written (torch splits an elementwise op into ``n`` contiguous chunks), and the thread that finishes
last joins the blocks' events in row order, so they are the same events as one thread's.

Why torch's team and not a pool of our own: between two ops torch's workers spin, waiting for work;
a pass on the calling thread alone leaves them spinning and, once it outlasts their spin, asleep, and
the next op of the forward pass waits for them to wake; a second pool competes with them for the
cores (measured in a forward pass, docs/PROFILE.md). For the same reason one call does all of a
layer's work (bounds, events, joining, the checks), with the per-layer arguments prepared once:
between ops Python runs slowly beside the spinning workers. Where torch's runtime is not GNU OpenMP
from torch's own folder (Linux wheels), or with one thread, the same compiled function runs on the
calling thread.

numba compiles when this module is first imported and caches the machine code beside this file
(``cache=True``; where that folder is read-only, numba's user-wide cache, or the folder named by
``NUMBA_CACHE_DIR``), so a fresh kernel process pays the compilation (a few seconds) once per
machine, not per phase.
"""

from __future__ import annotations

import ctypes
import operator
import os
import sys

import numba
import numpy as np
from llvmlite import ir
from numba import cfunc, njit, types
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic


if sys.byteorder != "little":  # the word scan reads the mask's bytes in little-endian order
    raise ImportError("avalanche_nb.tap_kernel assumes a little-endian machine")

# error_model="numpy": a division by zero gives inf as numpy's does (scale is sigma + 1e-6, so not here)
_OPTS = dict(cache=True, nogil=True, boundscheck=False, error_model="numpy")


@njit(**_OPTS)
def _rows(u, lo, hi, mu, scale, floor, valid, row_mask, site, z, r0, r1, k0, cap, site0):  # pragma: no cover
    """Events of rows ``r0 .. r1-1`` into ``site[k0:cap]`` (row + ``site0``), ``z[k0:cap]``; returns
    (how many, all finite), how many = -1 when that room is too small."""
    F = u.shape[1]
    W = F // 8
    words = row_mask[: W * 8].view(np.uint64)
    k = k0
    finite = True
    for s in range(r0, r1):
        row = u[s]
        for f in range(F):  # vectorises: no branch, one byte per value
            x = row[f]
            # NaN (in x or in a bound) is never inside, as NaN never equals torch.clamp's result
            row_mask[f] = 1 - ((x >= lo[f]) & (x <= hi[f]))
        ok = valid[s]
        for w in range(W + 1):
            if w < W:
                word = words[w]
            else:  # the tail when d_ff is not a multiple of 8, one byte at a time
                word = np.uint64(0)
                for b in range(F - W * 8):
                    word |= np.uint64(row_mask[W * 8 + b]) << np.uint64(8 * b)
            while word:  # each byte is 0 or 1, so the lowest set bit names the next hit
                if k == cap:
                    return -1, finite
                f = w * 8 + (trailing_zeros(word) >> 3)
                word &= word - np.uint64(1)
                v = row[f]
                finite &= np.isfinite(v)
                zz = (v - mu[f]) / scale[f]  # float32, as the numpy and torch paths compute it
                site[k] = s + site0
                z[k] = zz
                k += ok & (abs(zz) > floor)  # written always, kept by advancing k: no branch
    return k - k0, finite


def _pointer_at(dtype):
    """An intrinsic turning an address (int64) into a pointer to ``dtype``, for ``numba.carray``."""
    @intrinsic
    def at(typingctx, address):
        sig = types.CPointer(dtype)(types.int64)

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(signature.return_type))
        return sig, codegen
    return at


_f32_at, _i64_at, _u8_at, _bool_at = (_pointer_at(t) for t in (types.float32, types.int64, types.uint8, types.boolean))


@intrinsic
def _call_int(typingctx, address):
    """Call the C function ``int f(void)`` at ``address`` (omp_get_thread_num, omp_get_num_threads)."""
    sig = types.int64(types.int64)

    def codegen(context, builder, signature, args):
        fn = ir.FunctionType(ir.IntType(32), [])
        return builder.sext(builder.call(builder.inttoptr(args[0], fn.as_pointer()), []), ir.IntType(64))
    return sig, codegen


@intrinsic
def _fetch_add(typingctx, pointer, index, value):
    """Atomically add ``value`` to ``pointer[index]`` (int64); returns the value before. Sequentially
    consistent: what a thread wrote before its add is seen by the thread that adds after it."""
    sig = types.int64(types.CPointer(types.int64), types.int64, types.int64)

    def codegen(context, builder, signature, args):
        return builder.atomic_rmw("add", builder.gep(args[0], [args[1]]), args[2], "seq_cst")
    return sig, codegen


# One call's argument block, int64 [_N_ARGS]: sizes, addresses of arrays and functions, and results.
(_S, _F, _BLOCKS, _ROOM, _U, _STATS, _VALID, _ROW_MASK, _SITE, _Z, _COUNTS, _FINITE, _FLOOR, _SITE0,
 _THREAD_NUM, _NUM_THREADS, _DONE, _TOTAL, _ALL_FINITE) = range(19)
_N_ARGS = 19


@cfunc(types.void(types.CPointer(types.int64)), **_OPTS)
def _floor_test(args):  # pragma: no cover - compiled, run by every thread of the team
    a = numba.carray(args, (_N_ARGS,))
    S, F, n, room = a[_S], a[_F], a[_BLOCKS], a[_ROOM]
    u = numba.carray(_f32_at(a[_U]), (S, F))
    stats = numba.carray(_f32_at(a[_STATS]), (4, F))  # lo, hi, mu, scale
    valid = numba.carray(_bool_at(a[_VALID]), (S,))
    row_mask = numba.carray(_u8_at(a[_ROW_MASK]), (n, (F + 7) // 8 * 8))  # rows 8-byte aligned
    site, z = numba.carray(_i64_at(a[_SITE]), (n * room,)), numba.carray(_f32_at(a[_Z]), (n * room,))
    counts, finite = numba.carray(_i64_at(a[_COUNTS]), (n,)), numba.carray(_bool_at(a[_FINITE]), (n,))
    floor = numba.carray(_f32_at(a[_FLOOR]), (1,))[0]
    # thread t takes blocks t, t + team, ...: every block is done whatever team size OpenMP grants
    t, team = (0, 1) if a[_THREAD_NUM] == 0 else (_call_int(a[_THREAD_NUM]), _call_int(a[_NUM_THREADS]))
    mine = 0
    for b in range(t, n, team):
        counts[b], finite[b] = _rows(u, stats[0], stats[1], stats[2], stats[3], floor, valid, row_mask[b], site, z,
                                     S * b // n, S * (b + 1) // n, b * room, (b + 1) * room, a[_SITE0])
        mine += 1
    before = _fetch_add(args, _DONE, mine)
    if before < n and before + mine == n:  # this thread did the last block: it joins them in row order
        total = 0
        all_finite = True
        for b in range(n):
            all_finite &= finite[b]
            if counts[b] < 0:
                total = -1
                break
            for i in range(counts[b]):  # forward, and the destination never lies after the source
                site[total + i] = site[b * room + i]
                z[total + i] = z[b * room + i]
            total += counts[b]
        a[_TOTAL] = total
        a[_ALL_FINITE] = all_finite


class _TorchTeam:
    """torch's OpenMP runtime (GNU libgomp): ``GOMP_parallel`` runs a C function on its thread team."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.parallel = lib.GOMP_parallel
        self.parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        self.parallel.restype = None
        self.thread_num = ctypes.cast(lib.omp_get_thread_num, ctypes.c_void_p).value
        self.num_threads = ctypes.cast(lib.omp_get_num_threads, ctypes.c_void_p).value

    @classmethod
    def find(cls) -> "_TorchTeam | None":
        """The libgomp torch loaded from its own folder (Linux wheels), else None."""
        torch = sys.modules.get("torch")
        if torch is None or not sys.platform.startswith("linux"):
            return None
        folder = os.path.join(os.path.dirname(os.path.realpath(torch.__file__)), "lib") + os.sep
        try:
            with open("/proc/self/maps") as maps:
                paths = {line.split(maxsplit=5)[-1].strip() for line in maps if "libgomp" in line}
        except OSError:
            return None
        ours = sorted(p for p in paths if os.path.realpath(p).startswith(folder)
                      and os.path.basename(p).startswith("libgomp"))
        try:
            return cls(ctypes.CDLL(ours[0])) if ours else None  # dlopen of a loaded library: that same one
        except (OSError, AttributeError):  # e.g. torch reinstalled under a running process: "(deleted)"
            return None


# Looked up once per process. As with torch's own ops, a child forked after the team ran must not
# use it (GNU OpenMP is not fork-safe): such a child runs torch, and this test, with one thread.
_TEAM: dict[int, _TorchTeam | None] = {}
_ON_THIS_THREAD = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_floor_test.address)


def torch_team() -> _TorchTeam | None:
    """torch's OpenMP team, or None where the test runs on the calling thread (see the module doc)."""
    pid = os.getpid()
    if pid not in _TEAM:
        _TEAM.clear()
        _TEAM[pid] = _TorchTeam.find()
    return _TEAM[pid]


class FloorTest:
    """The floor test of every layer of a pass: per-neuron statistics bound once, then one call per
    layer and batch. Not thread-safe: one caller at a time (the scratch buffers are shared).

    ``lo``, ``hi``, ``mu``, ``scale``: float32 [L, F]; a value ``u[s, f]`` of layer ``l`` is tested
    exactly when it lies outside ``[lo[l, f], hi[l, f]]`` (or is NaN; ``lo = +inf, hi = -inf`` tests
    every value): kept if ``|z| > floor`` with ``z = (u - mu) / scale`` in float32. The output buffers
    start at ``kept`` of a call's values (at the default floor about 1.5% are kept; 1.0 when every
    value is) and double whenever a call keeps more.
    """

    def __init__(self, lo: np.ndarray, hi: np.ndarray, mu: np.ndarray, scale: np.ndarray, floor: float,
                 kept: float = 1 / 16) -> None:
        if not 0 < kept <= 1:
            raise ValueError(f"kept must be in (0, 1], got {kept}")
        shape = np.shape(mu)
        for name, x in (("lo", lo), ("hi", hi), ("mu", mu), ("scale", scale)):
            if np.shape(x) != shape or len(shape) != 2 or np.asarray(x).dtype != np.float32:
                raise TypeError(f"FloorTest: {name} must be float32 [L, F] like mu {shape}, got "
                                f"{np.asarray(x).dtype} {np.shape(x)}")
        self.n_layers, self.d_ff = shape
        self.kept = kept
        self._stats = np.ascontiguousarray(np.stack([lo, hi, mu, scale], axis=1))  # [L, 4, F]
        self._floor = np.array([floor], np.float32)
        self._args = np.zeros((self.n_layers, _N_ARGS), np.int64)
        self._args[:, _F] = self.d_ff
        self._args[:, _STATS] = self._stats.ctypes.data + np.arange(self.n_layers) * self._stats[0].nbytes
        self._args[:, _FLOOR] = self._floor.ctypes.data
        self._layer_args = list(self._args)  # row views: a call writes only its own layer's block
        self._team = torch_team()
        self._blocks = 0
        self._site = np.empty(0, np.int64)
        self._grow(1, 0)

    def __call__(self, layer: int, u: np.ndarray, valid: np.ndarray, *, site0: int = 0, threads: int = 1
                 ) -> tuple[np.ndarray, np.ndarray, bool]:
        """Events of layer ``layer`` in ``u`` float32 [S, F] (sites × neurons; C-contiguous), rows
        counted from ``site0``, ``valid`` bool [S] (the rows whose events are kept).

        Returns ``site`` int64 [K] (``site0`` + row), ``z`` float32 [K] ordered by (site, neuron), and
        whether every value outside the bounds was finite (a non-finite value is always outside, on
        any row). ``threads``: how many of torch's OpenMP threads share the rows (the events are the
        same for any number).
        """
        if not 0 <= layer < self.n_layers:
            raise IndexError(f"FloorTest: layer {layer} out of range for {self.n_layers} layers")
        S = len(u)
        flags = u.flags
        if (u.dtype != np.float32 or u.shape != (S, self.d_ff) or not flags.c_contiguous or not flags.aligned
                or valid.dtype != np.bool_ or valid.shape != (S,) or not valid.flags.c_contiguous):
            raise TypeError(f"FloorTest: u must be C-contiguous float32 [S, {self.d_ff}] and valid bool [S], "
                            f"got {u.dtype} {u.shape} and {valid.dtype} {valid.shape}")
        team = self._team if threads > 1 and S > 1 else None
        n = min(threads, S) if team is not None else 1
        most = -(-S // n) * self.d_ff  # the most one block can keep: all of its values
        first = n * min(max(int(most * self.kept), self.d_ff), most)
        if self._blocks != n or self._site.size < first:
            self._grow(n, first)
        a = self._layer_args[layer]
        a[_S], a[_U], a[_VALID], a[_SITE0] = S, u.ctypes.data, valid.ctypes.data, operator.index(site0)
        a[_THREAD_NUM], a[_NUM_THREADS] = (team.thread_num, team.num_threads) if team is not None else (0, 0)
        while True:
            a[_DONE] = 0
            if team is None:
                _ON_THIS_THREAD(a.ctypes.data)
            else:
                team.parallel(_floor_test.address, a.ctypes.data, n, 0)
            k = int(a[_TOTAL])
            if k >= 0:
                return self._site[:k].copy(), self._z[:k].copy(), bool(a[_ALL_FINITE])
            self._grow(n, min(2 * self._site.size, n * most))

    def _grow(self, blocks: int, size: int) -> None:
        """Scratch for ``blocks`` blocks of ``size // blocks`` events each (and each block's row mask)."""
        if blocks != self._blocks:
            self._blocks = blocks
            self._row = np.empty((blocks, (self.d_ff + 7) // 8 * 8), np.uint8)  # rows read as uint64 words
            self._counts, self._finite = np.empty(blocks, np.int64), np.empty(blocks, np.bool_)
        size = max(size, self._site.size)
        self._site, self._z = np.empty(size, np.int64), np.empty(size, np.float32)
        self._args[:, _BLOCKS], self._args[:, _ROOM] = blocks, size // blocks
        for col, x in ((_ROW_MASK, self._row), (_SITE, self._site), (_Z, self._z), (_COUNTS, self._counts),
                       (_FINITE, self._finite)):
            self._args[:, col] = x.ctypes.data
