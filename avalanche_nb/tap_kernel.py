"""The MLP tap's floor test as one compiled pass over a layer's activations (CPU).

:class:`FloorEvents` does for one layer what clamp, compare, nonzero, gather and the exact z test do
as five numpy/torch passes: per row, a vectorised bound test writes a byte mask, the mask is scanned eight
bytes at a time, and only the values outside the bounds (about 1.5% at the default floor) are
standardised and tested exactly. It runs on the hook's thread, so it is single-threaded; on one layer's
[512, 1536] tensor it takes about a third of the time of the numpy steps it replaces (docs/PROFILE.md).

numba compiles it on first use and caches the machine code beside this file (``cache=True``; where that
folder is read-only, numba's user-wide cache, or the folder named by ``NUMBA_CACHE_DIR``), so a fresh
kernel process pays the compilation (about a second) once per machine, not per phase.
"""

from __future__ import annotations

import sys

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import trailing_zeros


if sys.byteorder != "little":  # the word scan reads the mask's bytes in little-endian order
    raise ImportError("avalanche_nb.tap_kernel assumes a little-endian machine")


# error_model="numpy": a division by zero gives inf as numpy's does (scale is sigma + 1e-6, so not here)
@njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def _floor_events(u, lo, hi, mu, scale, floor, valid, row_mask, site, z):  # pragma: no cover - compiled
    """Fills ``site``, ``z`` and returns (count, all finite); count -1 when they are too short."""
    S, F = u.shape
    W = F // 8
    cap = site.size
    words = row_mask[: W * 8].view(np.uint64)
    k = 0
    finite = True
    for s in range(S):
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
                site[k] = s
                z[k] = zz
                k += ok & (abs(zz) > floor)  # written always, kept by advancing k: no branch
    return k, finite


class FloorEvents:
    """The compiled floor test with its scratch, reused across calls (by one thread at a time: the
    buffers are shared). The output buffers start at ``kept`` of the values of ``u`` (at the default
    floor about 1.5% are kept; 1.0 when every value is) and double whenever a call keeps more."""

    def __init__(self, kept: float = 1 / 16) -> None:
        if not 0 < kept <= 1:
            raise ValueError(f"kept must be in (0, 1], got {kept}")
        self.kept = kept
        self._row = self._site = self._z = np.empty(0)

    def __call__(self, u: np.ndarray, lo: np.ndarray, hi: np.ndarray, mu: np.ndarray, scale: np.ndarray,
                 floor: float, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """Events of one layer.

        u: float32 [S, F] (sites × neurons); lo, hi, mu, scale: float32 [F]; valid: bool [S].
        Returns ``site`` int64 [K] (row of ``u``), ``z`` float32 [K] with ``z = (u - mu) / scale`` for
        every value outside ``[lo, hi]`` (or NaN) whose ``|z| > floor`` in float32 on a valid row,
        ordered by (site, neuron); and whether every value outside the bounds was finite (a non-finite
        value is always outside). ``lo = +inf, hi = -inf`` tests every value exactly.
        """
        if u.dtype != np.float32 or u.ndim != 2:
            raise TypeError(f"FloorEvents needs float32 [sites, d_ff], got {u.dtype} {u.shape}")
        S, F = u.shape
        for name, a in (("lo", lo), ("hi", hi), ("mu", mu), ("scale", scale), ("valid", valid)):
            want = (S, np.bool_) if name == "valid" else (F, np.float32)
            if a.shape != want[:1] or a.dtype != want[1]:  # the kernel indexes without bounds checks
                raise TypeError(f"FloorEvents: {name} must be {np.dtype(want[1])} [{want[0]}], got {a.dtype} {a.shape}")
        u = np.ascontiguousarray(u)
        if self._row.size != F:
            self._row = np.empty(F, np.uint8)
        first = max(int(u.size * self.kept), F)
        if self._site.size < first:
            self._grow(first)
        while True:
            k, finite = _floor_events(u, lo, hi, mu, scale, np.float32(floor), valid, self._row, self._site, self._z)
            if k >= 0:
                return self._site[:k].copy(), self._z[:k].copy(), bool(finite)
            self._grow(min(2 * self._site.size, u.size))

    def _grow(self, n: int) -> None:
        self._site, self._z = np.empty(n, np.int64), np.empty(n, np.float32)
