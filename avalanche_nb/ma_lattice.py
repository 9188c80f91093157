"""The event lattice read at the massive-activation sites: one forward pass's cascades and its MAs
together (DESIGN.md §4 and §5; phase 08).

* :func:`gain_scan`, :func:`gain_summary`: how the MLP gain moves the MAs, per gain the residual
  profile, the ME layer by both criteria and the MA magnitude at its own site, with CIs over sequences;
* :func:`site_outlier_ratios`, :func:`site_masks`: the sites to look at (the MA token, the ME layer,
  secondary outliers: sites on other tokens whose ``max |h| / median |h|`` stands out from the layer's);
* :func:`shift_null_share`, :func:`start_shares`: the share of spikes, spiking sites and avalanche
  starts at those sites against N2 (each (sequence, layer) row circularly shifted over its valid
  tokens: rates and runs kept, positions moved). Spike and site shares are additive over rows, so
  their N2 mean and sd are computed exactly by enumerating every row's offsets; avalanche starts are
  not, so they use N2 draws (:func:`nulls.draws`);
* :func:`stratified_spearman`: a site's outlier ratio vs its spike count within (layer, position)
  strata, with a CI from resampling sequences;
* :func:`paired_b_tot_change`, :func:`paired_rate_ratio`, :func:`size_test`: one lattice against another of
  the same sequences (an MA edit vs the unedited model), paired bootstrap over sequences;
* :func:`layer_change`: the per-layer rate, b_time, b_depth and MR branching on either side of a layer.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats as st

from . import avalanches as av
from . import hooks, massive, multistep, nulls
from .models import input_device
from .options import MA_CRITERIA
from .provenance import clocked
from .stats import bootstrap_weights

#: the site sets of :func:`site_masks`, in table order
SITES = ("ma_token", "me_layer", "secondary")
#: what a share counts: spikes (neurons), spiking sites, avalanche starts (first site in (token, layer) order)
MEASURES = ("spikes", "sites", "starts")


# --------------------------------------------------------------------------- 1. the gain and the MAs


@torch.no_grad()
def gain_scan(model, probe: np.ndarray, g: float, *, layers: Sequence[int] | None, ma_pos: int,
              ma_dims: Sequence[int], ma_top_k: int, batch_size: int) -> tuple[massive.Scan, np.ndarray]:
    """The residual profile (:func:`massive.scan`) of ``probe`` int [N, T] with every MLP's output × ``g``
    (``layers``: only those MLPs), and in the same pass ``max_d |h[l][n, ma_pos, d]|`` over the MA dims
    ``ma_dims`` of the unscaled model: float64 [L, N], the MA's magnitude at its own site."""
    L = len(hooks.decoder_layers(model))
    site: dict[int, list[np.ndarray]] = {l: [] for l in range(L)}
    dims = torch.as_tensor(list(ma_dims))

    def tap(layer: int, h: torch.Tensor) -> None:
        site[layer].append(h[:, ma_pos, dims.to(h.device)].abs().amax(-1).double().cpu().numpy())

    with hooks.gain(model, g, "mlp", layers), hooks.attach(model, hooks.Hook("resid.out", tap)):
        s = massive.scan(model, probe, ma_top_k=ma_top_k, batch_size=batch_size, progress=False)
    return s, np.stack([np.concatenate(site[l]) for l in range(L)])


def first_layer_per_sequence(s: massive.Scan, ma_criterion: str, ma_relaxed_ratio: float) -> np.ndarray:
    """float [N]: per probe sequence, the first decoder layer whose top-1 |h| and ratio meet the criterion
    (NaN where none does)."""
    hit = massive.meets(s.top_abs[1:, :, 0], s.ratio[1:], ma_criterion, ma_relaxed_ratio)  # [L, N]
    return np.where(hit.any(0), hit.argmax(0), np.nan).astype(float)


def _mean_ci(x: np.ndarray, draws: int, seed: int) -> tuple[float, float, float]:
    """(mean, lo, hi) of ``x`` [n] with its percentile bootstrap interval over the n units; NaNs left out
    (all NaN: NaNs)."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if not len(x):
        return np.nan, np.nan, np.nan
    means = bootstrap_weights(len(x), draws, seed) @ x / len(x)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(x.mean()), float(lo), float(hi)


def gain_summary(s: massive.Scan, site: np.ndarray, *, me_layer: int, ma_criterion: str, ma_relaxed_ratio: float,
                 bootstrap_draws: int, seed: int) -> dict[str, Any]:
    """One gain's answer to "where is the MA now": from a :func:`gain_scan` ``(s, site)``.

    ``me_layer_<criterion>``: the first layer whose mean top-1 and ratio meet each criterion (None: no
    layer), and under ``ma_criterion`` the MA position and dims there (:func:`massive.me_layer`);
    ``seq_me_layer`` (mean, lo, hi over the sequences where one exists) and ``seq_found`` (their share);
    at the g = 1 ME layer ``me_layer`` and at the last layer: the MA site's magnitude ``ma_me`` /
    ``ma_last`` and the top-1/median ratio ``ratio_me``, each with a bootstrap CI over sequences.
    """
    me = massive.me_layer(s, ma_criterion, ma_relaxed_ratio)
    per_seq = first_layer_per_sequence(s, ma_criterion, ma_relaxed_ratio)
    row: dict[str, Any] = {f"me_layer_{c}": me["first_layer"][c] for c in MA_CRITERIA}
    row |= {"ma_pos": me["ma_pos"], "ma_dims": ",".join(str(d) for d in me["ma_dims"]),
            "seq_found": float(np.isfinite(per_seq).mean())}
    values = {"seq_me_layer": per_seq, "ma_me": site[me_layer], "ma_last": site[-1],
              "ratio_me": s.ratio[me_layer + 1], "top1_me": s.top_abs[me_layer + 1, :, 0]}
    for i, (key, x) in enumerate(values.items()):
        row[key], row[f"{key}_lo"], row[f"{key}_hi"] = _mean_ci(x, bootstrap_draws, seed + i)
    return row


def gain_profile(s: massive.Scan, **keys: Any) -> pd.DataFrame:
    """Per decoder layer of a scan: mean top-1 and median |h|, the ratio's mean and SEM, with ``keys``."""
    n = s.median.shape[1]
    ratio = s.ratio[1:]
    return pd.DataFrame({**keys, "layer": np.arange(s.n_layers), "top1": s.top_abs[1:, :, 0].mean(1),
                         "median": s.median[1:].mean(1), "ratio": ratio.mean(1),
                         "ratio_sem": ratio.std(1, ddof=1) / np.sqrt(n) if n > 1 else np.nan})


# --------------------------------------------------------------------------- 2. MA sites on the lattice


@torch.no_grad()
def site_outlier_ratios(model, tokens: np.ndarray, *, batch_size: int) -> np.ndarray:
    """float64 [N, T, L]: per site, ``max_d |h[l][n, t, d]|`` over the sequence's median ``|h[l]|`` (over
    its T × d entries, as :func:`massive.scan`), from one forward pass of ``tokens`` int [N, T]."""
    tokens = np.asarray(tokens)
    N, T = tokens.shape
    L = len(hooks.decoder_layers(model))
    out = np.zeros((N, T, L))
    state: dict[str, slice] = {}

    def tap(layer: int, h: torch.Tensor) -> None:
        hooks.check_finite(h, f"layer {layer}'s output")
        a = h.detach().float().abs()
        median = massive.sequence_median(a.reshape(a.shape[0], -1))
        out[state["batch"], :, layer] = (a.amax(-1) / median[:, None]).double().cpu().numpy()

    device = input_device(model)
    with hooks.attach(model, hooks.Hook("resid.out", tap)):
        for s0 in range(0, N, batch_size):
            state["batch"] = slice(s0, min(N, s0 + batch_size))
            model.base_model(input_ids=torch.as_tensor(np.array(tokens[state["batch"]]), device=device), use_cache=False)
    return out


def site_masks(outlier: np.ndarray, *, ma_pos: int, me_layer: int, secondary_ratio: float,
               valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """bool [N, T, L] per site set of :data:`SITES`: every layer of the MA token ``ma_pos``; every token
    at the ME layer; the sites of other tokens whose outlier ratio (``outlier`` [N, T, L],
    :func:`site_outlier_ratios`) exceeds ``secondary_ratio`` × that layer's median over those tokens'
    sites. Only sites of ``valid`` bool [N, T] (None: all) count, in the median and in the sets.

    Why relative to the layer's typical site rather than a fixed ratio: the typical token's largest |h|
    is 40 × the median entry in SmolLM2 but 300 × in Gemma-3 (whose ordinary tokens carry large
    feature dims), so one fixed ratio would flag no site in one model and every site in the other.
    """
    N, T, L = outlier.shape
    if not 0 <= ma_pos < T or not 0 <= me_layer < L:
        raise ValueError(f"MA position {ma_pos} / ME layer {me_layer} outside a lattice of {T} tokens, {L} layers")
    ok = np.ones((N, T), bool) if valid is None else np.asarray(valid, bool)
    token = np.zeros((N, T, L), bool)
    token[:, ma_pos] = True
    layer = np.zeros((N, T, L), bool)
    layer[..., me_layer] = True
    others = ok.copy()
    others[:, ma_pos] = False
    typical = np.median(outlier[others], axis=0) if others.any() else np.full(L, np.inf)  # [L]
    sites = ok[:, :, None]
    return {"ma_token": token & sites, "me_layer": layer & sites,
            "secondary": (outlier > secondary_ratio * typical) & ~token & sites}


def _z(observed: float, mean: float, sd: float) -> float:
    return (observed - mean) / sd if sd > 0 else np.nan


def shift_null_share(counts: np.ndarray, valid: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """The share of ``counts`` int [N, T, L] (zero at invalid sites of ``valid`` bool [N, T]) at the sites
    ``mask`` bool [N, T, L], and its exact mean and sd under N2.

    N2 shifts each (n, l) row, compressed to the m_n valid tokens of sequence n, circularly by an
    independent offset uniform on 1 .. m_n - 1 (none when m_n <= 1), so the total is unchanged and the
    count at ``mask`` is a sum of independent rows: its mean and variance are the sums of each row's
    mean and variance over its m_n - 1 offsets, enumerated. Returns observed, null_mean, null_sd, z
    (NaN when nothing is counted or the null has no spread).
    """
    counts, mask = np.asarray(counts), np.asarray(mask, bool)
    if counts.shape != mask.shape or counts.shape[:2] != np.shape(valid):
        raise ValueError(f"counts {counts.shape}, mask {mask.shape} and valid {np.shape(valid)} disagree")
    if (counts[~np.asarray(valid, bool)] != 0).any():
        raise ValueError("counts must be empty at invalid sites")
    total = float(counts.sum())
    if total == 0:
        return {"observed": np.nan, "null_mean": np.nan, "null_sd": np.nan, "z": np.nan}
    mean = var = 0.0
    for n in range(counts.shape[0]):
        idx = np.flatnonzero(valid[n])
        c, M = counts[n, idx].T.astype(np.float64), mask[n, idx].T  # [L, m]
        m = len(idx)
        if m <= 1:
            mean += float((c * M).sum())
            continue
        j, s = np.arange(m), np.arange(1, m)
        moved = c[:, (j[None, :] - s[:, None]) % m]  # [L, m - 1, m]: the row after shifting by s
        per_offset = (moved * M[:, None, :]).sum(-1)  # [L, m - 1]
        mean += float(per_offset.mean(1).sum())
        var += float(per_offset.var(1).sum())
    observed = float(counts[mask].sum()) / total
    return {"observed": observed, "null_mean": mean / total, "null_sd": np.sqrt(var) / total,
            "z": _z(observed, mean / total, np.sqrt(var) / total)}


def start_sites(X: np.ndarray, adjacency: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, t, l) int [K]: each avalanche's first site in raster (sequence, token, layer) order, i.e. its
    earliest token and there its lowest layer. ``np.nonzero`` lists sites in raster order, so the first
    occurrence of each label is that site whatever order the labels are numbered in (only the order of
    the output follows the labels)."""
    labels, _ = av.label_avalanches(X, adjacency)
    n, t, l = np.nonzero(labels)
    _, first = np.unique(labels[n, t, l], return_index=True)
    return n[first], t[first], l[first]


def _start_share(X: np.ndarray, masks: Mapping[str, np.ndarray], adjacency: str) -> dict[str, float]:
    n, t, l = start_sites(X, adjacency)
    return {k: float(m[n, t, l].mean()) if len(n) else np.nan for k, m in masks.items()}


def start_shares(X: np.ndarray, valid: np.ndarray, masks: Mapping[str, np.ndarray], *, adjacency: str,
                 null_draws: int, seed: int, chunk: int = 16) -> dict[str, dict[str, float]]:
    """Per site set of ``masks``: the share of avalanches of occupancy ``X`` bool [N, T, L] (components
    under ``adjacency``) whose first site lies in it, against ``null_draws`` N2 draws of ``X``
    (:func:`nulls.draws`, ``seed``; the masks stay put): observed, null_mean, null_sd, null_lo, null_hi
    (2.5 / 97.5 percentiles), z."""
    observed = _start_share(X, masks, adjacency)
    values: dict[str, list[float]] = {k: [] for k in masks}
    for start in range(0, null_draws, chunk):
        for D in nulls.draws(X, valid, "n2", min(chunk, null_draws - start), seed=seed, start=start):
            for k, v in _start_share(D, masks, adjacency).items():
                values[k].append(v)
    out = {}
    for k, v in values.items():
        v = np.asarray(v)
        v = v[np.isfinite(v)]
        mean, sd = (float(v.mean()), float(v.std(ddof=1))) if len(v) > 1 else (np.nan, np.nan)
        lo, hi = np.percentile(v, [2.5, 97.5]) if len(v) else (np.nan, np.nan)
        out[k] = {"observed": observed[k], "null_mean": mean, "null_sd": sd, "null_lo": float(lo),
                  "null_hi": float(hi), "z": _z(observed[k], mean, sd)}
    return out


def share_table(counts: np.ndarray, valid: np.ndarray, masks: Mapping[str, np.ndarray], *, adjacency: str,
                null_draws: int, seed: int) -> pd.DataFrame:
    """One row per (site set, measure of :data:`MEASURES`): ``n_sites`` in the set, the observed share,
    the N2 mean, sd, interval (exact moments for spikes and sites: no interval) and z, and ``null``
    (``n2_exact`` / ``n2_draws``)."""
    X = av.occupancy(counts, valid)
    starts = start_shares(X, valid, masks, adjacency=adjacency, null_draws=null_draws, seed=seed)
    rows = []
    for k, m in masks.items():
        for measure, data in (("spikes", counts), ("sites", X.astype(np.int64))):
            r = shift_null_share(data, valid, m)
            rows.append({"site": k, "measure": measure, **r, "null_lo": np.nan, "null_hi": np.nan, "null": "n2_exact"})
        rows.append({"site": k, "measure": "starts", **starts[k], "null": "n2_draws"})
    df = pd.DataFrame(rows)
    df["n_sites"] = df.site.map({k: int((m & valid[..., None]).sum()) for k, m in masks.items()})
    return df[["site", "measure", "n_sites", "observed", "null_mean", "null_sd", "null_lo", "null_hi", "z", "null"]]


# --------------------------------------------------------------------------- outlier ratio vs spikes


def position_buckets(T: int, edges: Sequence[int]) -> np.ndarray:
    """int [T]: the bucket of each token position for increasing bucket ``edges`` (``[1, 4]``: 0 | 1-3 | 4+)."""
    edges = np.asarray(edges, int)
    if (np.diff(edges) <= 0).any() or (edges < 1).any():
        raise ValueError(f"position bucket edges must be increasing and >= 1, got {edges.tolist()}")
    return np.searchsorted(edges, np.arange(T), side="right")


def bucket_labels(edges: Sequence[int], T: int) -> list[str]:
    """Readable names of the position buckets of ``edges`` for windows of ``T`` tokens ("0", "1-3", "64+")."""
    starts = [0, *edges]
    ends = [*edges, T]
    return [str(a) if b - a == 1 else f"{a}+" if b >= T else f"{a}-{b - 1}" for a, b in zip(starts, ends)]


def _centred_ranks(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Average ranks of ``x`` within each stratum (``k``: stratum index 0..K-1 per element), minus the
    stratum's mean rank."""
    key = k * (len(x) + 1.0) + st.rankdata(x)  # global ranks 1..n of x (ties shared), kept apart per stratum
    r = st.rankdata(key)
    return r - (np.bincount(k, r) / np.bincount(k))[k]


def _per_stratum(x: np.ndarray, y: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, Spearman rho) per stratum index (NaN where either variable is constant)."""
    rx, ry = _centred_ranks(x, k), _centred_ranks(y, k)
    xy, xx, yy = (np.bincount(k, v) for v in (rx * ry, rx * rx, ry * ry))
    den = np.sqrt(xx * yy)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.bincount(k), np.where(den > 0, xy / den, np.nan)


def _pooled(n: np.ndarray, rho: np.ndarray) -> float:
    ok = np.isfinite(rho)
    return float((n[ok] * rho[ok]).sum() / n[ok].sum()) if ok.any() else np.nan


def stratified_spearman(x: np.ndarray, y: np.ndarray, strata: np.ndarray, groups: np.ndarray, *,
                        bootstrap_draws: int, seed: int) -> tuple[dict[str, float], pd.DataFrame]:
    """Spearman's rho of ``x`` and ``y`` (float [S] each, e.g. a site's outlier ratio and its spikes) within
    each of ``strata`` [S] (ties get average ranks), and pooled as the mean of the strata's rhos weighted by
    their sizes (strata where a variable is constant left out). The pooled rho's 95% interval resamples
    ``groups`` [S] (the sequences) with replacement.

    Why weights n and not the pooled centred ranks: centred ranks grow with the stratum, so correlating
    them pooled weights a stratum by about n³ and one large stratum (the late positions) would decide it.

    Returns ``({"rho", "lo", "hi", "n"}, per-stratum table: stratum, n, rho)``.
    """
    x, y, strata, groups = (np.asarray(a) for a in (x, y, strata, groups))
    values, k = np.unique(strata, return_inverse=True)
    n, rho = _per_stratum(x, y, k)
    units, unit = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(unit == u) for u in range(len(units))]
    boot = []
    for w in bootstrap_weights(len(units), bootstrap_draws, seed):
        idx = np.concatenate([np.tile(members[i], c) for i, c in enumerate(w) if c])
        kk = k[idx]
        present, kk = np.unique(kk, return_inverse=True)
        boot.append(_pooled(*_per_stratum(x[idx], y[idx], kk)))
    lo, hi = np.nanpercentile(boot, [2.5, 97.5]) if np.isfinite(boot).any() else (np.nan, np.nan)
    return ({"rho": _pooled(n, rho), "lo": float(lo), "hi": float(hi), "n": int(len(x))},
            pd.DataFrame({"stratum": values, "n": n, "rho": rho}))


# --------------------------------------------------------------------------- 3. lattices under edits


def _branching_parts(X: np.ndarray) -> dict[str, np.ndarray]:
    """Per sequence of ``X`` bool [N, T, L]: the numerators and denominators of b_time and b_depth, float [N]."""
    X = X.astype(bool)
    return {"time_num": (X[:, :-1] & X[:, 1:]).sum((1, 2)), "time_den": X[:, :-1].sum((1, 2)),
            "depth_num": (X[..., :-1] & X[..., 1:]).sum((1, 2)), "depth_den": X[..., :-1].sum((1, 2))}


def _b_tot(parts: dict[str, np.ndarray], W: np.ndarray) -> np.ndarray:
    """b_tot of each resample (weights ``W`` int [B, N]); NaN where a denominator is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (W @ parts["time_num"]) / (W @ parts["time_den"]) + (W @ parts["depth_num"]) / (W @ parts["depth_den"])


def paired_b_tot_change(counts: np.ndarray, base: np.ndarray, valid: np.ndarray, *, bootstrap_draws: int,
                        seed: int) -> dict[str, float]:
    """``d_b_tot`` = b_tot(``counts``) - b_tot(``base``) (int [N, T, L] each, the same sequences, e.g. an MA
    edit vs none) with the 95% interval of a paired bootstrap over sequences (one resample serves both)."""
    W = bootstrap_weights(len(counts), bootstrap_draws, seed)
    pa, pb = _branching_parts(av.occupancy(counts, valid)), _branching_parts(av.occupancy(base, valid))
    one = np.ones((1, len(counts)), int)
    return {"d_b_tot": float(_b_tot(pa, one)[0] - _b_tot(pb, one)[0]),
            **_interval(_b_tot(pa, W) - _b_tot(pb, W), "d_b_tot")}


def paired_rate_ratio(counts: np.ndarray, base: np.ndarray, *, bootstrap_draws: int, seed: int) -> dict[str, float]:
    """``rate_ratio`` = spikes(``counts``) / spikes(``base``) (the same sequences and sites), with the 95%
    interval of a paired bootstrap over sequences."""
    W = bootstrap_weights(len(counts), bootstrap_draws, seed)
    sa, sb = counts.sum((1, 2)).astype(float), base.sum((1, 2)).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"rate_ratio": float(sa.sum() / sb.sum()) if sb.sum() else np.nan,
                **_interval((W @ sa) / (W @ sb), "rate_ratio")}


def size_test(sizes: np.ndarray, base: np.ndarray) -> dict[str, float]:
    """The two-sample Kolmogorov-Smirnov distance ``ks`` between two avalanche size samples, and the mean
    size. Descriptive only: avalanches of one sequence are not independent and both samples come from
    the same sequences, so KS's p-value would not hold; the paired bootstraps carry the inference."""
    sizes, base = np.asarray(sizes, float), np.asarray(base, float)
    if not len(sizes) or not len(base):
        return {"ks": np.nan, "mean_size": float(sizes.mean()) if len(sizes) else np.nan}
    return {"ks": float(st.ks_2samp(sizes, base).statistic), "mean_size": float(sizes.mean())}


# --------------------------------------------------------------------------- 4. the ME layer in the lattice


def _per_layer_parts(X: np.ndarray, counts: np.ndarray, valid: np.ndarray, d_ff: int) -> dict[str, tuple]:
    """Per sequence and layer: (numerator, denominator) float [N, L] of the rate, b_time and b_depth."""
    X = X.astype(bool)
    L = X.shape[2]
    depth_num = np.zeros(X.shape[::2])
    depth_den = np.zeros(X.shape[::2])
    depth_num[:, :-1] = (X[..., :-1] & X[..., 1:]).sum(1)
    depth_den[:, :-1] = X[..., :-1].sum(1)
    return {"rate": (counts.sum(1).astype(float), np.repeat(valid.sum(1)[:, None] * float(d_ff), L, 1)),
            "b_time": ((X[:, :-1] & X[:, 1:]).sum(1).astype(float), X[:, :-1].sum(1).astype(float)),
            "b_depth": (depth_num, depth_den)}


def layer_change(counts: np.ndarray, valid: np.ndarray, d_ff: int, layer: int, *, bootstrap_draws: int,
                 seed: int) -> pd.DataFrame:
    """Whether ``layer`` stands out in the lattice ``counts`` int [N, T, L]: for the rate (spikes per valid
    site and neuron), b_time, b_depth and the MR branching ``mr_m`` of the layer's token series, the
    change ``into`` it (from ``layer - 1``) and ``out`` of it (to ``layer + 1``), with the 95% interval of a
    bootstrap over sequences (NaN where the neighbour does not exist or the ratio is undefined).

    Rows: stat, transition, layer_from, layer_to, before, after, change, lo, hi, and ``rank`` of the change's
    size among the ``n_steps`` changes between any two adjacent layers of that statistic (1: the largest).
    """
    N, T, L = counts.shape
    X = av.occupancy(counts, valid)
    parts = _per_layer_parts(X, counts, valid, d_ff)
    W = bootstrap_weights(N, bootstrap_draws, seed)
    cols = valid.all(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        profiles = {stat: num.sum(0) / den.sum(0) for stat, (num, den) in parts.items()}
    profiles["mr_m"] = np.array([r["mr_m"] for r in multistep.mr_branching_many([counts[:, cols, l] for l in range(L)])])
    rows = []
    for transition, (a, b) in (("into", (layer - 1, layer)), ("out", (layer, layer + 1))):
        keys = {"transition": transition, "layer_from": a, "layer_to": b}
        if a < 0 or b >= L:
            for stat in ("rate", "b_time", "b_depth", "mr_m"):
                rows.append({"stat": stat, **keys, "before": np.nan, "after": np.nan, "change": np.nan,
                             "lo": np.nan, "hi": np.nan, **_step_rank(profiles[stat], np.nan)})
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            for stat, (num, den) in parts.items():
                va, vb = num[:, a].sum() / den[:, a].sum(), num[:, b].sum() / den[:, b].sum()
                boot = (W @ num[:, b]) / (W @ den[:, b]) - (W @ num[:, a]) / (W @ den[:, a])
                rows.append({"stat": stat, **keys, "before": va, "after": vb, "change": vb - va,
                             **_interval(boot), **_step_rank(profiles[stat], vb - va)})
        series = [counts[:, cols, a], counts[:, cols, b]]
        va, vb = (r["mr_m"] for r in multistep.mr_branching_many(series))
        resampled = [s[np.repeat(np.arange(N), w)] for w in W for s in series]
        fits = [r["mr_m"] for r in multistep.mr_branching_many(resampled)]
        boot = np.asarray(fits[1::2]) - np.asarray(fits[0::2])
        rows.append({"stat": "mr_m", **keys, "before": va, "after": vb, "change": vb - va, **_interval(boot),
                     **_step_rank(profiles["mr_m"], vb - va)})
    return pd.DataFrame(rows)


def _step_rank(profile: np.ndarray, change: float) -> dict[str, float]:
    """Where a change between adjacent layers stands among all of a per-layer ``profile``'s: ``rank`` (1: the
    largest in size; NaN when the change is undefined) of the ``n_steps`` defined steps."""
    steps = np.abs(np.diff(np.asarray(profile, float)))
    steps = steps[np.isfinite(steps)]
    rank = float((steps > abs(change) + 1e-12).sum() + 1) if np.isfinite(change) and len(steps) else np.nan
    return {"rank": rank, "n_steps": int(len(steps))}


def _interval(boot: np.ndarray, prefix: str = "") -> dict[str, float]:
    """The 2.5 / 97.5 percentiles of bootstrap values (NaNs left out) as ``{prefix}_lo``, ``{prefix}_hi``."""
    boot = np.asarray(boot, float)
    lo, hi = np.nanpercentile(boot, [2.5, 97.5]) if np.isfinite(boot).any() else (np.nan, np.nan)
    p = f"{prefix}_" if prefix else ""
    return {f"{p}lo": float(lo), f"{p}hi": float(hi)}


# --------------------------------------------------------------------------- one model, every question

#: the tables :func:`analyse` returns per model (phase 08's parquet artifacts, without the suffix)
TABLES = ("gain_ma_profile", "gain_ma", "site_shares", "outlier_spikes", "edit_lattices", "edit_sizes",
          "lattice_layers", "me_layer_change")
#: the lattices of phase 08: the params' lattice (``standard``), and the one that keeps the first token
LATTICES = ("standard", "first_token")
#: columns of a :func:`sweep.lattice_row` that the edit table keeps
EDIT_ROW = ("b_time", "b_depth", "b_tot", *(f"{k}_tot_{n}" for k in ("delta_b", "z") for n in ("n1", "n2", "n3")),
            "chi_perc", "n_avalanches", "alpha")


def gain_tables(model, probe: np.ndarray, me: dict, p: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Question 1 for every gain of ``p["gains"]``, with the gain on every MLP (``scope = all``) and on the
    ME layer's MLP alone (``me_layer``): (per-layer profiles, one :func:`gain_summary` row per (scope, g)).
    ``me``: the g = 1 MA sites (:func:`massive.me_layer`)."""
    from .progress import track

    gains = sorted(float(g) for g in p["gains"])
    jobs = [(scope, g) for scope in ("all", "me_layer") for g in gains]
    profiles, rows, at_one = [], [], None
    for scope, g in track(jobs, "gain vs massive activations", unit="scan") if p["progress"] else jobs:
        if g == 1.0 and at_one is not None:  # a gain of 1 registers nothing: both scopes are one pass
            s, site = at_one
        else:
            s, site = gain_scan(model, probe, g, layers=None if scope == "all" else [me["me_layer"]],
                                ma_pos=me["ma_pos"], ma_dims=me["ma_dims"], ma_top_k=p["ma_top_k"],
                                batch_size=p["batch_size"])
            at_one = (s, site) if g == 1.0 else at_one
        profiles.append(gain_profile(s, scope=scope, g=g))
        rows.append({"scope": scope, "g": g} | gain_summary(
            s, site, me_layer=me["me_layer"], ma_criterion=p["ma_criterion"], ma_relaxed_ratio=p["ma_relaxed_ratio"],
            bootstrap_draws=p["bootstrap_draws"], seed=p["seed"]))
    summary = pd.DataFrame(rows)
    for c in [f"me_layer_{c}" for c in MA_CRITERIA] + ["ma_pos"]:
        summary[c] = pd.array(summary[c].tolist(), dtype="Int64")
    return pd.concat(profiles, ignore_index=True), summary


def _layer_table(counts: np.ndarray, valid: np.ndarray, th, lattice: str) -> pd.DataFrame:
    from .sweep import layer_rows

    return layer_rows(counts, valid, th, per_layer_mr=True)[["layer", "rate", "b_time", "b_depth", "mr_m"]].assign(
        lattice=lattice)


def references(lm, p: Mapping[str, Any]) -> dict[str, Any]:
    """The two g = 1 lattices of phase 08 on Dataset A's lattice slice, on one calibration (phase 01's:
    :func:`pipeline.build_reference` at the first target rate): ``standard`` (the params' sites) and
    ``first_token`` (every site: the first token kept, scored with the calibration that excludes it when
    ``exclude_first_token``, and rate-matched over its own sites by the same logic).

    Returns ``tokens`` int [N, T], ``first`` (the params at the first target rate) and per lattice name
    ``(valid bool [N, T], Reference)``."""
    from . import pipeline

    first = dict(p) | {"target_rates": list(p["target_rates"][:1])}
    sl = pipeline.build_slices(lm.tokenizer, p, ("a_calibration", "a_lattice"))
    tokens, calib = sl["a_lattice"].tokens, sl["a_calibration"].tokens
    valid = pipeline.valid_mask(tokens, p)
    ref = pipeline.build_reference(lm.model, calib, tokens, first, progress=False)
    valid_ft = np.ones_like(valid)
    ref_ft = pipeline.build_reference(lm.model, calib, tokens, first, progress=False, valid=valid_ft,
                                      calibration=ref.calibration)
    return {"tokens": tokens, "first": first, "standard": (valid, ref), "first_token": (valid_ft, ref_ft)}


def first_token_stack(lm, p: Mapping[str, Any], refs: dict[str, Any]) -> dict[str, np.ndarray]:
    """The explorer's view of the first-token lattice (:func:`references`): its lattices at every gain of
    ``p["gains"]`` under both spike definitions and threshold modes, as a ``sweep_lattices.npz`` dict."""
    from . import sweep
    from .data import token_strings
    from .gain_stack import KEYS, GainStack
    from .progress import track

    tokens, (valid, ref) = refs["tokens"], refs["first_token"]
    gains = sweep.check_gains(p["gains"])
    counts = {k: np.zeros((len(gains),) + valid.shape + (ref.calibration.n_layers,), np.int32) for k in KEYS}
    steps = track(gains, "first-token lattices", unit="gain") if p["progress"] else gains
    for gi, gl in enumerate(sweep.gain_lattices(lm.model, tokens, valid, ref, steps, refs["first"])):
        for d, m in KEYS:
            counts[(d, m)][gi] = gl.counts[(0, d, m)]
    text = np.array([token_strings(lm.tokenizer, row) for row in tokens], dtype=str)
    return GainStack(gains, counts, valid, np.asarray(tokens), text, ref.targets[0], ref.calibration.d_ff,
                     adjacency=p["adjacencies"][0], null_draws=p["null_draws"], seed=p["seed"]).to_npz_dict()


def site_tables(model, tokens: np.ndarray, counts: np.ndarray, valid: np.ndarray, me: Mapping[str, Any],
                p: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, np.ndarray]]:
    """Question 2 on the lattice ``counts`` int [N, T, L] of ``tokens`` (``valid`` bool [N, T]): the
    :func:`share_table` of the :func:`site_masks` (outlier ratios from one pass of ``model``), and the
    outlier-spike table: the pooled stratified Spearman rho (row layer = bucket = -1, with its interval)
    then one row per (layer, position bucket). Returns (shares, outlier table, masks)."""
    outlier = site_outlier_ratios(model, tokens, batch_size=p["batch_size"])
    masks = site_masks(outlier, ma_pos=me["ma_pos"], me_layer=me["me_layer"],
                       secondary_ratio=p["secondary_outlier_ratio"], valid=valid)
    shares = share_table(counts, valid, masks, adjacency=p["adjacencies"][0], null_draws=p["null_draws"],
                         seed=p["seed"])
    N, T, L = counts.shape
    n_buckets = len(p["position_buckets"]) + 1
    strata = np.arange(L)[None, None, :] * n_buckets + position_buckets(T, p["position_buckets"])[None, :, None]
    keep = np.broadcast_to(valid[:, :, None], counts.shape)
    pooled, per = stratified_spearman(outlier[keep], counts[keep], np.broadcast_to(strata, counts.shape)[keep],
                                      np.broadcast_to(np.arange(N)[:, None, None], counts.shape)[keep],
                                      bootstrap_draws=p["bootstrap_draws"], seed=p["seed"])
    per = per.assign(layer=per.stratum // n_buckets, bucket=per.stratum % n_buckets, lo=np.nan, hi=np.nan)
    head = pd.DataFrame([{"layer": -1, "bucket": -1, "n": pooled["n"], "rho": pooled["rho"], "lo": pooled["lo"],
                          "hi": pooled["hi"]}])
    return shares, pd.concat([head, per[["layer", "bucket", "n", "rho", "lo", "hi"]]], ignore_index=True), masks


def edit_tables(model, tokens: np.ndarray, valid: np.ndarray, ref, p: Mapping[str, Any], me: Mapping[str, Any],
                calibration_tokens: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Question 3: the g = 1 lattice of ``tokens`` (``valid``) against :class:`pipeline.Reference` ``ref``
    (its first target rate) with no edit and under each of ``p["ma_interventions"]`` at the MA sites ``me``
    from the ME layer on (``mean``: the means over ``calibration_tokens``). Per edit, the pos lattice at the
    unedited fixed thresholds gives the rate (``rate_fixed``, ``rate_ratio`` vs none) and the one
    rate-matched to the unedited targets the structure (:func:`sweep.lattice_row` without the tail GOF,
    ``d_b_tot`` vs none, the sizes' KS test). Returns (one row per edit, every avalanche's sizes)."""
    from . import interventions as iv
    from . import sweep

    L = ref.calibration.n_layers
    sites = {"layers": list(range(me["me_layer"], L)), "positions": [me["ma_pos"]], "dims": list(me["ma_dims"])}
    first = dict(p) | {"target_rates": list(p["target_rates"][:1])}
    means = (iv.site_means(model, calibration_tokens, **sites, batch_size=p["batch_size"])
             if "mean" in p["ma_interventions"] else None)
    rows, sizes, base = [], [], {}
    for mode in ("none", *p["ma_interventions"]):
        with iv.edit_sites(model, **sites, mode=mode, ma_clip_multiple=p["ma_clip_multiple"], values=means):
            gl = next(sweep.gain_lattices(model, tokens, valid, ref.first(), [1.0], first))
        matched, fixed = gl.counts[(0, "pos", "rate_matched")], gl.counts[(0, "pos", "fixed")]
        stats_row, table = sweep.lattice_row(matched, valid, p, gof=False)
        if mode == "none":
            base = {"matched": matched, "fixed": fixed, "sizes": table["size"].to_numpy()}
        row = {"intervention": mode, "rate_fixed": float(gl.thresholds[(0, "pos", "fixed")].rate.mean()),
               "rate_matched": float(gl.thresholds[(0, "pos", "rate_matched")].rate.mean())}
        row |= {k: stats_row[k] for k in EDIT_ROW}
        row |= size_test(table["size"].to_numpy(), base["sizes"])
        row |= paired_b_tot_change(matched, base["matched"], valid, bootstrap_draws=p["bootstrap_draws"], seed=p["seed"])
        row |= paired_rate_ratio(fixed, base["fixed"], bootstrap_draws=p["bootstrap_draws"], seed=p["seed"])
        rows.append(row)
        sizes.append(table[["size", "n_sites", "t_span", "l_span"]].assign(intervention=mode))
    return pd.DataFrame(rows), pd.concat(sizes, ignore_index=True)


def analyse(lm, p: Mapping[str, Any], me: dict, refs: dict[str, Any], *, seconds: dict[str, float] | None = None,
            log=None) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Questions 1-4 of phase 08 for one loaded model ``lm`` whose MA sites ``me`` (phase 06's record:
    ``me_layer``, ``ma_pos``, ``ma_dims``) were found, on its :func:`references` ``refs``: (tables keyed by
    :data:`TABLES`, without the model column; a record of what was measured).

    1 scans the MA probe of phase 06 at every gain; 2 reads the ``first_token`` lattice (the MA token of
    both embedded models is the first); 3 recomputes the ``standard`` lattice under each MA edit of
    ``ma_interventions`` (from the ME layer on; ``mean`` writes the means over phase 06's MA calibration
    windows), thresholds rate-matched to the unedited targets and fixed at the unedited ones; 4 reads both
    lattices around the ME layer. ``seconds`` collects each step's wall time; ``log(message)`` after each.
    """
    from . import pipeline

    reason = massive.unusable(me)
    if reason:
        raise ValueError(f"{lm.name}: {reason}")
    clock = seconds if seconds is not None else {}
    say = log or (lambda _msg: None)
    model = lm.model
    sl = pipeline.build_slices(lm.tokenizer, p, ("ma_probe", "ma_calibration"))
    tokens = refs["tokens"]
    (valid, ref), (valid_ft, ref_ft) = refs["standard"], refs["first_token"]
    L = ref.calibration.n_layers
    me_l = me["me_layer"]
    tables: dict[str, pd.DataFrame] = {}

    # 1. the gain and the MAs
    tables["gain_ma_profile"], tables["gain_ma"] = clocked(clock, "gain scans", gain_tables, model,
                                                          sl["ma_probe"].tokens, me, p)
    say("question 1 (gain vs MAs) done")
    base_std, base_ft = ref.lattices[0], ref_ft.lattices[0]
    counts_ft = base_ft.counts["pos"]

    # 2. where avalanches sit relative to the MA sites
    tables["site_shares"], tables["outlier_spikes"], masks = clocked(clock, "site shares", site_tables, model, tokens,
                                                                    counts_ft, valid_ft, me, p)
    say("question 2 (avalanches at MA sites) done")

    # 3. the lattice under the MA edits of phase 06
    tables["edit_lattices"], tables["edit_sizes"] = clocked(clock, "edited lattices", edit_tables, model, tokens,
                                                           valid, ref, p, me, sl["ma_calibration"].tokens)
    say("question 3 (lattice under MA edits) done")

    # 4. the ME layer in the lattice
    d_ff = ref.calibration.d_ff
    lattices = {"standard": (base_std.counts["pos"], valid, base_std.thresholds["pos"]),
                "first_token": (counts_ft, valid_ft, base_ft.thresholds["pos"])}
    tables["lattice_layers"] = pd.concat([_layer_table(c, v, th, k) for k, (c, v, th) in lattices.items()],
                                         ignore_index=True)
    tables["me_layer_change"] = pd.concat(
        [clocked(clock, "ME layer change", layer_change, c, v, d_ff, me_l, bootstrap_draws=p["bootstrap_draws"],
                seed=p["seed"]).assign(lattice=k) for k, (c, v, _) in lattices.items()], ignore_index=True)
    say("question 4 (ME layer in the lattice) done")
    pooled = tables["outlier_spikes"].iloc[0]
    record = {"me_layer": me_l, "ma_pos": me["ma_pos"], "ma_dims": list(me["ma_dims"]), "d_ff": d_ff,
              "n_layers": L, "secondary_sites": int(masks["secondary"].sum()),
              "outlier_spearman": {k: float(pooled[k]) for k in ("rho", "lo", "hi")} | {"n": int(pooled["n"])}}
    return tables, record
