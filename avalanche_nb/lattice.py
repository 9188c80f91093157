"""The event lattice: standardised MLP activations thresholded into spikes per (token, layer) site.

Method (DESIGN.md §4):

* calibration: ``mu[l, i]``, ``sigma[l, i]`` of the tapped tensor ``u`` per layer and neuron, at
  g = 1 over the valid sites of a calibration slice; ``z = (u - mu) / (sigma + 1e-6)``;
* spike definitions: ``pos`` is ``z > tau[l]``, ``abs`` is ``|z| > tau[l]``;
* lattice ``A[n, t, l]`` = number of spiking neurons at site (n, t, l); occupancy ``X = A > 0``;
* thresholds: ``rate_matched`` (per layer, to a target neuron firing rate) or ``fixed``.

Thresholds are exact, not binned: one forward pass keeps every ``(site, z)`` with ``|z|`` above a
per-run floor (a sparse set, a few values per site), from which any ``tau >= floor`` is counted
exactly. If a threshold would fall below the floor the pass is redone with a lower floor, so the
achieved rate differs from its target only through ties.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .hooks import Hook, NonFiniteActivationError, architecture, attach, check_finite, forward_hidden, gain
from .models import input_device
from .options import SPIKE_DEFS, TARGET_PROFILES

EPS = 1e-6


class FloorTooHighError(RuntimeError):
    """A threshold falls below the sparse floor, so exact counting needs a lower floor."""


def valid_mask(n_sequences: int, window: int, exclude_first_token: bool) -> np.ndarray:
    """bool [N, T]: sites that enter the lattice (with ``exclude_first_token``, all but the first token, the
    attention sink)."""
    valid = np.ones((n_sequences, window), dtype=bool)
    if exclude_first_token:
        valid[:, 0] = False
    return valid


def scale_seed_rates(rates: Sequence[float], d_ff: int, rate_reference_d_ff: int | None) -> list[float]:
    """Scale per-neuron rates given for a ``rate_reference_d_ff``-wide MLP so spikes per site match at
    ``d_ff`` (``None``: the rates as given)."""
    factor = 1.0 if rate_reference_d_ff is None else rate_reference_d_ff / d_ff
    scaled = [float(r) * factor for r in rates]
    for r, s in zip(rates, scaled):
        if not 0.0 < s < 1.0:
            raise ValueError(f"target rate {r} (scaled to d_ff={d_ff}: {s:.3g}) must lie in (0, 1)")
    return scaled


def _batches(tokens: np.ndarray, valid: np.ndarray, batch_size: int, desc: str, progress: bool):
    n = len(tokens)
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress, leave=False):
        stop = min(start + batch_size, n)
        yield start, torch.tensor(tokens[start:stop]), torch.tensor(valid[start:stop])


# --------------------------------------------------------------------------- calibration


@dataclass
class Calibration:
    """Per-(layer, neuron) mean and standard deviation of the tap at g = 1."""

    mu: np.ndarray  # float64 [L, d_ff]
    sigma: np.ndarray  # float64 [L, d_ff], population standard deviation
    n_sites: int  # valid sites averaged over

    @property
    def n_layers(self) -> int:
        return self.mu.shape[0]

    @property
    def d_ff(self) -> int:
        return self.mu.shape[1]


class _BatchMask:
    """The current batch's valid mask bool [B, T], copied once per batch to each device a layer runs on
    (a model split across devices by a device map); on the mask's own device it is used as it is."""

    def __init__(self):
        self._on: dict[torch.device, torch.Tensor] = {}
        self._flat: np.ndarray | None = None

    def set(self, valid: torch.Tensor) -> None:
        """A new batch's mask (dropping the previous batch's copies)."""
        self._on = {valid.device: valid}
        self._flat = None

    def flat(self) -> np.ndarray:
        """bool [B * T]: the mask as a numpy array (made once per batch)."""
        if self._flat is None:
            self._flat = np.ascontiguousarray(next(iter(self._on.values())).cpu().numpy().reshape(-1))
        return self._flat

    def on(self, device: torch.device) -> torch.Tensor:
        """bool [B, T]: the mask on ``device``."""
        if device not in self._on:
            self._on[device] = next(iter(self._on.values())).to(device)
        return self._on[device]


class _MomentReducer:
    def __init__(self, n_layers: int, d_ff: int):
        self.sum = torch.zeros(n_layers, d_ff, dtype=torch.float64)
        self.sumsq = torch.zeros(n_layers, d_ff, dtype=torch.float64)
        self.mask = _BatchMask()

    def __call__(self, layer: int, u: torch.Tensor) -> None:
        check_finite(u, f"the MLP tap of layer {layer}")
        x = u[self.mask.on(u.device)].to(torch.float64)  # [sites, d_ff]
        self.sum[layer] += x.sum(0).cpu()
        self.sumsq[layer] += (x * x).sum(0).cpu()


@torch.no_grad()
def calibrate(model: torch.nn.Module, tokens: np.ndarray, valid: np.ndarray, *, batch_size: int,
              progress: bool) -> Calibration:
    """Mean and std of the MLP tap per (layer, neuron) over the valid sites (``valid`` bool [N, T]) of
    ``tokens`` int [N, T], at g = 1, ``batch_size`` sequences per forward pass."""
    arch = architecture(model)
    n_sites = int(valid.sum())
    if n_sites == 0:
        raise ValueError("calibration slice has no valid sites")
    red = _MomentReducer(arch.n_layers, arch.d_ff)
    device = input_device(model)
    with attach(model, Hook("mlp.tap", red)):
        for _, ids, ok in _batches(tokens, valid, batch_size, "calibrate", progress):
            red.mask.set(ok.to(device))
            forward_hidden(model, ids.to(device))
    mu = red.sum / n_sites
    var = (red.sumsq / n_sites - mu * mu).clamp_min(0.0)
    return Calibration(mu.numpy(), var.sqrt().numpy(), n_sites)


# --------------------------------------------------------------------------- sparse events


@dataclass
class EventSet:
    """Every standardised value with ``|z| > floor`` at the valid sites of one forward pass.

    ``site[l]`` holds flat site indices ``n * T + t`` (int64) and ``z[l]`` the values (float32) of layer
    ``l``; ``ref_count_*`` count spikes at ``reference_tau`` per layer (for ``baseline_profile``).
    """

    shape: tuple[int, int, int]  # (N, T, L)
    d_ff: int
    valid: np.ndarray  # bool [N, T]
    floor: float
    site: list[np.ndarray]
    z: list[np.ndarray]
    reference_tau: float | None
    ref_count_pos: np.ndarray | None  # int64 [L]
    ref_count_abs: np.ndarray | None  # int64 [L]

    @property
    def n_valid_sites(self) -> int:
        return int(self.valid.sum())

    @property
    def n_layers(self) -> int:
        return self.shape[2]

    def values(self, layer: int, spike_def: str) -> tuple[np.ndarray, np.ndarray]:
        """(site, v) of layer ``layer`` with ``v = z`` (``pos``) or ``|z|`` (``abs``), all ``v > floor``."""
        _check_spike_def(spike_def)
        z, site = self.z[layer], self.site[layer]
        if spike_def == "abs":
            return site, np.abs(z)
        keep = z > self.floor
        return site[keep], z[keep]

    def reference_rates(self, spike_def: str) -> np.ndarray:
        """float [L]: neuron firing rate per layer at ``reference_tau``."""
        if self.reference_tau is None:
            raise ValueError("this EventSet was collected without reference_tau: no reference rates")
        count = self.ref_count_pos if spike_def == "pos" else self.ref_count_abs
        return count / float(self.n_valid_sites * self.d_ff)


def _check_spike_def(spike_def: str) -> None:
    if spike_def not in SPIKE_DEFS:
        raise ValueError(f"unknown spike definition {spike_def!r}; use one of {SPIKE_DEFS}")


@dataclass
class _LayerStats:
    """One layer's per-neuron statistics, float32 [d_ff] each, on the device the layer runs on."""

    mu: torch.Tensor
    scale: torch.Tensor  # sigma + EPS
    lo: torch.Tensor | None  # floor bounds (None when every value is kept)
    hi: torch.Tensor | None
    ref_lo: torch.Tensor | None  # reference_tau bounds (None without reference_tau)
    ref_hi: torch.Tensor | None


class _EventReducer:
    """Keeps ``(site, z)`` for ``|z| > floor`` and counts spikes at ``reference_tau`` (if given).

    The floor test runs on ``u`` against per-neuron bounds ``[mu - w, mu + w]``, ``w = (floor - margin) ·
    scale``, so no full ``z`` tensor is built; the few kept values are then standardised and filtered
    exactly in z-space (the margin only lets rounding-borderline values through to that exact test).

    NaN and ±inf are never inside the bounds, so every non-finite value of ``u`` is among the kept
    ones and the finite check runs on those few values instead of on all of ``u``. On CPU the bound
    test, the gather and the exact test are one compiled pass on torch's own threads (``tap_kernel``,
    docs/PROFILE.md); elsewhere torch clamps, compares and gathers, with the events left on the device
    until the pass ends.

    The statistics live on ``device`` (where the inputs go); a layer that runs elsewhere (a model split
    by a device map) gets its rows copied to its own device once, on its first batch.
    """

    MARGIN = 1e-3
    COMPILED_ON_CPU = True  # the tests switch it off to run the torch path on CPU as well

    def __init__(self, calib: Calibration, floor: float, reference_tau: float | None, window: int, device):
        self.mu = torch.as_tensor(calib.mu, dtype=torch.float32, device=device)
        self.scale = torch.as_tensor(calib.sigma, dtype=torch.float32, device=device) + EPS
        loose = floor - self.MARGIN
        self.keep_all = not loose > 0  # a floor at or below the margin (or -inf): every value is tested exactly
        self.lo = self.hi = self.ref_lo = self.ref_hi = None
        if not self.keep_all:
            self.hi, self.lo = self.mu + loose * self.scale, self.mu - loose * self.scale
        if reference_tau is not None:
            self.ref_hi = self.mu + reference_tau * self.scale
            self.ref_lo = self.mu - reference_tau * self.scale
        self.floor, self.ref, self.window = floor, reference_tau, window
        self._test = None  # tap_kernel.FloorTest, made on the first CPU layer (numba imports then)
        self._stats: dict[tuple[int, torch.device], _LayerStats] = {}
        L = calib.n_layers
        self.site: list[list[torch.Tensor | np.ndarray]] = [[] for _ in range(L)]  # numpy on the compiled path
        self.z: list[list[torch.Tensor | np.ndarray]] = [[] for _ in range(L)]
        self.ref_pos: list[torch.Tensor | int] = [0] * L  # spikes at reference_tau, on each layer's device
        self.ref_abs: list[torch.Tensor | int] = [0] * L
        self.start = 0
        self.mask = _BatchMask()  # valid sites of the current batch
        self._scratch: tuple[torch.Tensor, torch.Tensor] | None = None

    def stats(self, layer: int, device: torch.device) -> _LayerStats:
        """``layer``'s rows on ``device``: views on the reducer's own device, else copies made once."""
        key = (layer, device)
        if key not in self._stats:
            row = lambda t: None if t is None else t[layer].to(device)  # a view (no copy) on self.device
            self._stats[key] = _LayerStats(row(self.mu), row(self.scale), row(self.lo), row(self.hi),
                                           row(self.ref_lo), row(self.ref_hi))
        return self._stats[key]

    def _compiled(self, u: torch.Tensor) -> bool:
        return u.is_cpu and self.COMPILED_ON_CPU

    def ref_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """int64 [L] each: spikes at ``reference_tau`` per layer, ``pos`` and ``abs``."""
        return tuple(np.array([int(c) for c in counts], dtype=np.int64) for counts in (self.ref_pos, self.ref_abs))

    def _outside(self, st: _LayerStats, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``clamp(u, lo, hi)`` and ``clamp(u, lo, hi) != u`` (bool) of one layer, into scratch tensors
        reused across layers and batches (per device)."""
        if self._scratch is None or self._scratch[0].shape != u.shape or self._scratch[0].device != u.device:
            self._scratch = torch.empty_like(u), torch.empty(u.shape, dtype=torch.bool, device=u.device)
        clamped, outside = self._scratch
        torch.clamp(u, st.lo, st.hi, out=clamped)
        torch.ne(u, clamped, out=outside)
        return clamped, outside

    def __call__(self, layer: int, u: torch.Tensor) -> None:
        u = u.detach().float()  # the tensor itself when it is float32 already
        if self.ref is not None:  # only the g = 1 pass that shapes baseline_profile pays for this
            st, valid = self.stats(layer, u.device), self.mask.on(u.device)
            above = (u > st.ref_hi).sum(-1)[valid].sum()
            below = (u < st.ref_lo).sum(-1)[valid].sum()
            self.ref_pos[layer] = self.ref_pos[layer] + above
            self.ref_abs[layer] = self.ref_abs[layer] + above + below
        if self._compiled(u):
            site, z = self._events_compiled(layer, u)
        else:
            site, z = self._events_torch(layer, self.stats(layer, u.device), u, self.mask.on(u.device))
        self.site[layer].append(site)
        self.z[layer].append(z)

    def _floor_test(self):
        """The compiled test of every layer (numpy statistics on the CPU), made on first use."""
        if self._test is None:
            from .tap_kernel import FloorTest  # numba's import and cache load only where the tap runs

            cpu = lambda t: t.cpu().numpy()
            lo, hi = ((np.full(self.mu.shape, np.inf, np.float32), np.full(self.mu.shape, -np.inf, np.float32))
                      if self.keep_all else (cpu(self.lo), cpu(self.hi)))  # +inf..-inf: every value tested
            self._test = FloorTest(lo, hi, cpu(self.mu), cpu(self.scale), self.floor,
                                   kept=1.0 if self.keep_all else 1 / 16)
        return self._test

    def _events_compiled(self, layer: int, u: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        test = self._floor_test()
        site, z, finite = test(layer, u.contiguous().view(-1, test.d_ff).numpy(), self.mask.flat(),
                               site0=self.start * self.window, threads=torch.get_num_threads())
        if not finite:
            raise NonFiniteActivationError(f"non-finite values (NaN/inf) in the MLP tap of layer {layer}")
        return site, z

    def _events_torch(self, layer: int, st: _LayerStats, u: torch.Tensor, valid: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        flat = u.reshape(-1)
        if self.keep_all:
            idx = torch.arange(flat.numel(), device=u.device)
        else:
            idx = self._outside(st, u)[1].view(-1).nonzero().squeeze(1)
        v = flat[idx]
        check_finite(v, f"the MLP tap of layer {layer}")  # every non-finite value of u is in v
        site = torch.div(idx, u.shape[-1], rounding_mode="floor")  # b * T + t within the batch
        i = idx - site * u.shape[-1]
        z = (v - st.mu[i]) / st.scale[i]  # float32, exactly as defined
        keep = (z.abs() > self.floor) & valid.reshape(-1)[site]
        return site[keep] + self.start * self.window, z[keep]


@torch.no_grad()
def collect_events(model: torch.nn.Module, tokens: np.ndarray, valid: np.ndarray, calib: Calibration, *,
                   z_floor: float, reference_tau: float | None, batch_size: int, progress: bool, g: float = 1.0,
                   gain_where: str = "mlp", gain_layers: Sequence[int] | None = None) -> EventSet:
    """One forward pass over ``tokens`` [N, T] at gain ``g`` (``batch_size`` sequences at a time),
    keeping every ``|z| > z_floor``.

    With ``reference_tau`` the pass also counts spikes at that threshold per layer (for
    ``baseline_profile`` targets); with ``None`` those counts are left empty.
    """
    n, window = tokens.shape
    if valid.shape != tokens.shape:
        raise ValueError(f"valid {valid.shape} and tokens {tokens.shape} differ in shape")
    device = input_device(model)
    arch = architecture(model)
    if arch.d_ff != calib.d_ff or arch.n_layers != calib.n_layers:
        raise ValueError("calibration was computed for a different model shape")
    red = _EventReducer(calib, z_floor, reference_tau, window, device)
    with gain(model, g, gain_where, gain_layers), attach(model, Hook("mlp.tap", red)):
        for start, ids, ok in _batches(tokens, valid, batch_size, f"events g={g:g}", progress):
            red.start = start
            red.mask.set(ok.to(device))
            forward_hidden(model, ids.to(device))
    def cat(parts: list, dtype) -> np.ndarray:
        if not parts:
            return np.zeros(0, dtype)
        if isinstance(parts[0], np.ndarray):  # the compiled path's
            return np.concatenate(parts).astype(dtype, copy=False)
        return torch.cat(parts).cpu().numpy().astype(dtype, copy=False)

    ref_pos, ref_abs = red.ref_counts() if reference_tau is not None else (None, None)
    return EventSet(
        shape=(n, window, calib.n_layers), d_ff=calib.d_ff, valid=valid.copy(), floor=float(z_floor),
        site=[cat(p, np.int64) for p in red.site], z=[cat(p, np.float32) for p in red.z],
        reference_tau=reference_tau, ref_count_pos=ref_pos, ref_count_abs=ref_abs)


# --------------------------------------------------------------------------- thresholds


@dataclass
class Thresholds:
    """Per-layer thresholds and what they achieve on one EventSet."""

    spike_def: str
    tau: np.ndarray  # float [L]
    rate: np.ndarray  # float [L], achieved neuron firing rate
    target: np.ndarray | None = None  # float [L] (rate-matched only)

    @property
    def rel_err(self) -> np.ndarray:
        """(achieved - target) / target per layer; NaN for fixed thresholds."""
        if self.target is None:
            return np.full_like(self.rate, np.nan)
        return (self.rate - self.target) / self.target


def target_rates(events: EventSet, rate: float, target_profile: str) -> np.ndarray:
    """float [L] per-layer targets with mean ``rate``.

    ``uniform``: ``rate`` in every layer. ``baseline_profile`` (seed): proportional to each layer's
    ``pos`` rate at ``reference_tau`` at g = 1, scaled so the mean is ``rate``. One profile serves
    both spike definitions so their lattices are comparable.
    """
    if not 0.0 < rate < 1.0:
        raise ValueError(f"target rate {rate} must lie in (0, 1)")
    L = events.n_layers
    if target_profile == "uniform":
        return np.full(L, rate)
    if target_profile != "baseline_profile":
        raise ValueError(f"unknown target profile {target_profile!r}; use one of {TARGET_PROFILES}")
    ref = events.reference_rates("pos")
    if ref.sum() == 0:
        raise ValueError(f"no spikes at reference_tau={events.reference_tau}: baseline_profile is undefined")
    targets = rate * ref / ref.mean()
    if targets.max() >= 1.0:
        raise ValueError(f"baseline_profile gives a target >= 1 in layer {int(targets.argmax())}")
    return targets


def rate_matched_thresholds(events: EventSet, target: np.ndarray, spike_def: str) -> Thresholds:
    """Per layer, the threshold whose spike count is ``round(target[l] * valid_sites * d_ff)``.

    ``tau[l]`` is the (M+1)-th largest value, so ``count(v > tau) = M`` exactly unless values tie.
    Raises FloorTooHighError if the sparse set holds fewer than M values.
    """
    _check_spike_def(spike_def)
    target = np.asarray(target, dtype=float)
    if target.shape != (events.n_layers,):
        raise ValueError(f"target has shape {target.shape}, expected ({events.n_layers},)")
    if not ((target > 0) & (target < 1)).all():
        raise ValueError("every target rate must lie in (0, 1)")
    denom = events.n_valid_sites * events.d_ff
    tau = np.empty(events.n_layers)
    count = np.empty(events.n_layers, dtype=np.int64)
    for l in range(events.n_layers):
        _, v = events.values(l, spike_def)
        m = int(round(target[l] * denom))
        if m > len(v):
            raise FloorTooHighError(f"layer {l}: {m} spikes needed, only {len(v)} values above floor {events.floor}")
        tau[l] = events.floor if m == len(v) else -np.partition(-v, m)[m]
        count[l] = int((v > tau[l]).sum())
    return Thresholds(spike_def, tau, count / denom, target.copy())


def fixed_thresholds(events: EventSet, tau: np.ndarray, spike_def: str) -> Thresholds:
    """The achieved rates of given thresholds ``tau`` [L] (e.g. the g = 1 rate-matched ones)."""
    tau = np.asarray(tau, dtype=float)
    if (tau < events.floor).any():
        raise FloorTooHighError(f"a fixed threshold {tau.min():.3g} lies below the floor {events.floor}")
    denom = events.n_valid_sites * events.d_ff
    count = np.array([(events.values(l, spike_def)[1] > tau[l]).sum() for l in range(events.n_layers)])
    return Thresholds(spike_def, tau.copy(), count / denom, None)


def count_lattice(events: EventSet, tau: np.ndarray, spike_def: str) -> np.ndarray:
    """int32 [N, T, L]: spiking neurons per site for thresholds ``tau`` [L]."""
    n, window, L = events.shape
    counts = np.zeros((n * window, L), dtype=np.int32)
    for l in range(L):
        site, v = events.values(l, spike_def)
        counts[:, l] = np.bincount(site[v > tau[l]], minlength=n * window)
    return counts.reshape(n, window, L)


# --------------------------------------------------------------------------- one lattice end to end


@dataclass
class Lattice:
    """Rate-matched lattices of one forward pass (both spike definitions)."""

    tokens: np.ndarray  # int [N, T]
    valid: np.ndarray  # bool [N, T]
    target_rate: np.ndarray  # float [L]
    counts: dict[str, np.ndarray] = field(default_factory=dict)  # spike_def -> int32 [N, T, L]
    thresholds: dict[str, Thresholds] = field(default_factory=dict)
    floor: float = 0.0
    reference_rates: dict[str, np.ndarray] = field(default_factory=dict)

    def to_npz_dict(self) -> dict[str, np.ndarray]:
        """The ``lattice.npz`` artifact contract."""
        out = {"tokens": self.tokens.astype(np.int64), "valid": self.valid, "target_rate": self.target_rate}
        for d in SPIKE_DEFS:
            out[f"counts_{d}"] = self.counts[d]
            out[f"tau_{d}"] = self.thresholds[d].tau
            out[f"rate_{d}"] = self.thresholds[d].rate
        return out


def next_floor(floor: float) -> float:
    """The floor to retry with when a threshold fell below ``floor`` (halving, then keep everything)."""
    return floor / 2 if floor > 0.5 else -np.inf


def rate_matched_lattice(model: torch.nn.Module, tokens: np.ndarray, valid: np.ndarray, calib: Calibration,
                         rate: float, *, target_profile: str, z_floor: float, reference_tau: float, batch_size: int,
                         progress: bool, g: float = 1.0, target: np.ndarray | None = None, **gain_kw) -> Lattice:
    """Events at gain ``g``, rate-matched per layer (to ``target`` float [L] if given, else to the mean
    ``rate`` spread by ``target_profile``, whose ``baseline_profile`` reads the rates at ``reference_tau``).

    The floor starts at ``z_floor`` and drops (the pass is redone) until every threshold lies above it
    (exactness).
    """
    needs_profile = target is None and target_profile == "baseline_profile"
    floor = z_floor
    while True:
        events = collect_events(model, tokens, valid, calib, z_floor=floor,
                                reference_tau=reference_tau if needs_profile else None, batch_size=batch_size,
                                progress=progress, g=g, **gain_kw)
        tgt = target_rates(events, rate, target_profile) if target is None else np.asarray(target, float)
        try:
            ths = {d: rate_matched_thresholds(events, tgt, d) for d in SPIKE_DEFS}
            break
        except FloorTooHighError:
            floor = next_floor(floor)
    refs = {d: events.reference_rates(d) for d in SPIKE_DEFS} if needs_profile else {}
    return Lattice(tokens, valid, tgt, {d: count_lattice(events, ths[d].tau, d) for d in SPIKE_DEFS}, ths,
                   events.floor, refs)
