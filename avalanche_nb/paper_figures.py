"""The paper's figures: vector PDFs drawn with matplotlib from the same artifacts (hence the same data)
as the notebooks' plotly figures, with axis labels and units, and confidence bands where the notebooks
have them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import artifacts
from .results import Results

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
NULL_NAMES = {"n1": "N1 permutation", "n2": "N2 circular shift", "n3": "N3 curveball"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
                         "figure.dpi": 100, "pdf.fonttype": 42, "axes.spines.top": False,
                         "axes.spines.right": False})
    return plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    # no timestamp: the same run, the same file; a tight box keeps legends placed beside the axes
    fig.savefig(path, format="pdf", bbox_inches="tight", metadata={"CreationDate": None})
    import matplotlib.pyplot as plt

    plt.close(fig)


def _mark(ax, g: float, label: str) -> None:
    ax.axvline(g, color="grey", linestyle=":", linewidth=1)
    ax.annotate(label, (g, 1), xycoords=("data", "axes fraction"), ha="center", va="bottom", fontsize=7)


# --------------------------------------------------------------------------- 01-02


def lattice(run: Path, path: Path) -> None:
    from . import avalanches as av

    plt = _plt()
    z = artifacts.read(run, "lattice.npz")
    counts, valid = z["counts_pos"][0], z["valid"][0]
    labels, _ = av.label_avalanches(av.occupancy(counts[None], valid[None]), "von_neumann")
    lab = labels[0].T.astype(float)
    shown = np.where(lab > 0, (lab * 0.618034) % 1.0, np.nan)
    fig, ax = plt.subplots(figsize=(6.5, 2.6))
    ax.imshow(shown, aspect="auto", origin="lower", cmap="turbo", interpolation="nearest", vmin=0, vmax=1)
    ax.set_xlabel("token position")
    ax.set_ylabel("layer")
    ax.set_title("one sequence's lattice at g = 1 (pos spikes, rate-matched): each colour one avalanche")
    _save(fig, path)


def sizes(run: Path, path: Path) -> None:
    plt = _plt()
    sizes = artifacts.read(run, "sweep_avalanches.parquet")
    sweep = artifacts.read(run, "sweep.parquet")
    rate = sweep.target_rate.iloc[0]
    key = (sizes.ablation == "all") & (sizes.threshold_mode == "rate_matched") & (sizes.spike_def == "pos") \
        & (sizes.target_rate == rate)
    gains = sorted(sizes[key].g.unique())
    fig, ax = plt.subplots(figsize=(3.3, 2.6))
    for colour, g in zip(COLOURS, sorted({gains[0], 1.0, gains[-1]})):
        x = np.sort(sizes[key & np.isclose(sizes.g, g)]["size"].to_numpy())
        if not len(x):
            continue
        u, first = np.unique(x, return_index=True)
        ax.loglog(u, 1 - first / len(x), "o", ms=2.5, color=colour, label=f"g = {g:g}")
        row = sweep[(sweep.ablation == "all") & (sweep.threshold_mode == "rate_matched") & (sweep.spike_def == "pos")
                    & (sweep.target_rate == rate) & np.isclose(sweep.g, g)].iloc[0]
        if np.isfinite(row.alpha) and np.isfinite(row.xmin):
            from scipy.special import zeta

            xs = np.unique(np.geomspace(row.xmin, u.max(), 50).round())
            anchor = (x >= row.xmin).mean()
            ax.loglog(xs, anchor * zeta(row.alpha, xs) / zeta(row.alpha, row.xmin), "-", color=colour, lw=1)
    ax.set_xlabel("avalanche size (spikes)")
    ax.set_ylabel("P(size ≥ x)")
    ax.set_title("size CCDF, discrete power-law fits above xmin")
    ax.legend(frameon=False)
    _save(fig, path)


# --------------------------------------------------------------------------- 03


def _main(run: Path):
    s = artifacts.read(run, "sweep.parquet")
    return s[(s.ablation == "all") & (s.target_rate == s.target_rate.iloc[0])].sort_values("g")


def rate_vs_gain(run: Path, path: Path) -> None:
    plt = _plt()
    sel = _main(run)
    fig, ax = plt.subplots(figsize=(3.3, 2.6))
    for colour, d in zip(COLOURS, ("pos", "abs")):
        for mode, style in (("fixed", "-o"), ("rate_matched", "--s")):
            r = sel[(sel.spike_def == d) & (sel.threshold_mode == mode)]
            ax.plot(r.g, r.rate_mean * 1e4, style, color=colour, ms=3, label=f"{d}, {mode.replace('_', '-')}")
    ax.set_xlabel("MLP gain g")
    ax.set_ylabel(r"rate ($10^{-4}$ spikes per neuron-site)")
    ax.legend(frameon=False)
    _save(fig, path)


def delta_b(run: Path, path: Path) -> None:
    plt = _plt()
    r = _main(run)
    r = r[(r.spike_def == "pos") & (r.threshold_mode == "rate_matched")]
    fig, ax = plt.subplots(figsize=(3.3, 2.6))
    for colour, (null, name) in zip(COLOURS, NULL_NAMES.items()):
        mean = r[f"{null}_b_tot_mean"].to_numpy()
        ax.fill_between(r.g, r[f"{null}_b_tot_lo"] - mean, r[f"{null}_b_tot_hi"] - mean, color=colour, alpha=0.15, lw=0)
        ax.plot(r.g, r[f"delta_b_tot_{null}"], "-o", color=colour, ms=3, label=name)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("MLP gain g")
    ax.set_ylabel(r"$\Delta b_\mathrm{tot}$ = observed − null mean")
    ax.set_title("pos, rate-matched; bands: null 95% intervals")
    ax.legend(frameon=False)
    _save(fig, path)


# --------------------------------------------------------------------------- 04


def gstar_evidence(run: Path, path: Path) -> None:
    plt = _plt()
    gs = artifacts.read(run, "gstar.json")
    import pandas as pd

    ev = pd.DataFrame(gs["evidence"]).sort_values("g")
    fig, axes = plt.subplots(1, 3, figsize=(6.8, 2.3))
    for ax, (col, label) in zip(axes, (("chi_perc", r"$\chi_\mathrm{perc}$ (sites)"), ("z_tot_n1", "z of $b_\\mathrm{tot}$ vs N1"),
                                       ("abs_b_tot_minus_1", r"$|b_\mathrm{tot} - 1|$"))):
        ax.errorbar(ev.g, ev[col], yerr=ev[f"{col}_se"], fmt="-o", ms=3, capsize=2, color=COLOURS[0])
        for g in gs["added_gains"]:
            ax.axvspan(g - 0.02, g + 0.02, color="#ddd", lw=0)
        _mark(ax, gs["gstar"], "g*")
        ax.set_xlabel("MLP gain g")
        ax.set_ylabel(label)
    fig.suptitle(f"Dataset A, rule {gs['rule']}: g* = {gs['gstar']:g} ({gs['outcome']}); shaded: gains added beyond "
                 "the grid; bars: ±1 bootstrap SE", fontsize=7)
    _save(fig, path)


def transfer(run: Path, path: Path) -> None:
    plt = _plt()
    import pandas as pd

    tr = artifacts.read(run, "transfer.parquet")
    summ = artifacts.read(run, "arc_summary.json")
    g_star = summ["gstar"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(6.8, 2.5))
    a.plot(tr.g, tr.perplexity, "-o", ms=3, color=COLOURS[0])
    a.set_yscale("log")
    a.set_xlabel("MLP gain g")
    a.set_ylabel("Dataset B perplexity (log scale)")
    _mark(a, g_star, "g*")
    acc = pd.DataFrame(summ["grid"])
    for colour, (subset, sel) in zip(COLOURS, acc.groupby("subset", sort=False)):
        sel = sel.sort_values("g")
        b.errorbar(sel.g, sel.acc, yerr=[sel.acc - sel.acc_lo, sel.acc_hi - sel.acc], fmt="-o", ms=3, capsize=2,
                   color=colour, label=f"{subset}")
        b.plot(sel.g, sel.chance, ":", color=colour, lw=1)
    _mark(b, g_star, "g*")
    b.set_xlabel("MLP gain g")
    b.set_ylabel("ARC accuracy (grid questions, 95% CI)")
    b.legend(frameon=False)
    _save(fig, path)


# --------------------------------------------------------------------------- 05-07


def replication(run: Path, path: Path) -> None:
    plt = _plt()
    curves = artifacts.read(run, "replication.parquet")
    panels = (("b_tot", r"$b_\mathrm{tot}$ (rate-matched)"), ("z_tot_n1", "z of $b_\\mathrm{tot}$ vs N1"),
              ("chi_perc", r"$\chi_\mathrm{perc}$ (sites)"), ("perplexity_b", "Dataset B perplexity"))
    fig, axes = plt.subplots(1, 4, figsize=(6.8, 2.1))
    for colour, (model, sel) in zip(COLOURS, curves.groupby("model", sort=False)):
        for ax, (col, label) in zip(axes, panels):
            ax.plot(sel.g, sel[col], "-o", ms=2.5, color=colour, label=model)
            star = sel[sel.is_gstar]
            ax.plot(star.g, star[col], "*", ms=8, color=colour)
            ax.set_xlabel("MLP gain g")
            ax.set_ylabel(label)
    axes[0].legend(frameon=False, fontsize=6)
    _save(fig, path)


def ma_profile(run: Path, path: Path) -> None:
    plt = _plt()
    prof = artifacts.read(run, "profile.parquet")
    me = artifacts.read(run, "me_layer.json")["models"]
    models = list(dict.fromkeys(prof.model))
    fig, axes = plt.subplots(1, len(models), figsize=(3.4 * len(models), 2.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        sel = prof[prof.model == model].sort_values("layer")
        ax.semilogy(sel.layer, sel.top1, "-o", ms=2.5, color=COLOURS[1], label="top-1 |h|")
        ax.semilogy(sel.layer, sel["median"], "--", color=COLOURS[0], label="median |h|")
        if me.get(model, {}).get("found"):
            ax.axvline(me[model]["me_layer"], color="grey", ls=":", lw=1)
        ax.set_title(model)
        ax.set_xlabel("layer output (−1: embeddings)")
        ax.set_ylabel("|h| (activation units, log)")
    axes[0][0].legend(frameon=False)
    _save(fig, path)


def interventions(run: Path, path: Path) -> None:
    plt = _plt()
    inter = artifacts.read(run, "interventions.parquet")
    ratios = inter.groupby(["model", "intervention"], sort=False).perplexity_ratio.first().unstack()
    ratios = ratios[[c for c in ("zero", "mean", "clip") if c in ratios.columns]]
    fig, ax = plt.subplots(figsize=(3.3, 2.5))
    x = np.arange(len(ratios.index))
    width = 0.8 / max(1, len(ratios.columns))
    for i, (col, colour) in enumerate(zip(ratios.columns, COLOURS)):
        ax.bar(x + i * width, ratios[col], width, color=colour, label=col)
    ax.set_yscale("log")
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_xticks(x + width * (len(ratios.columns) - 1) / 2, ratios.index, fontsize=6)
    ax.set_ylabel("Dataset B perplexity / unedited (log)")
    ax.legend(frameon=False)
    _save(fig, path)


def training(run: Path, path: Path) -> None:
    plt = _plt()
    from .emergence import curve

    traj = artifacts.read(run, "trajectories.parquet")
    fits = artifacts.read(run, "fits.parquet")
    ratio = traj[traj.stat == "ratio"]
    models = list(dict.fromkeys(ratio.model))
    fig, axes = plt.subplots(1, len(models), figsize=(3.4 * len(models), 2.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        sel = ratio[ratio.model == model]
        for colour, (layer, g) in zip(COLOURS * 4, sel.groupby("layer")):
            g = g.sort_values("step")
            ax.errorbar(g.step, g["mean"], yerr=[g["mean"] - g.ci_lo, g.ci_hi - g["mean"]], fmt="o", ms=2.5,
                        color=colour, capsize=1.5, label=f"layer {layer}")
            row = fits[(fits.model == model) & (fits.layer == layer) & (fits.fit == "ma5")]
            if len(row) and bool(row.ok.iloc[0]):
                t = np.linspace(0, g.step.max(), 200)
                ax.plot(t, curve(row.iloc[0].to_dict(), t), "-", color=colour, lw=1)
        ax.set_title(model)
        ax.set_xlabel("training step")
        ax.set_ylabel("top-1 / median |h| (95% CI)")
    # beside the last panel, so the legend never covers a trajectory
    axes[0][-1].legend(frameon=False, fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)


def cascades(run: Path, path: Path) -> None:
    plt = _plt()
    gain = artifacts.read(run, "gain_ma.parquet")
    shares = artifacts.read(run, "site_shares.parquet")
    models = list(dict.fromkeys(gain.model))
    fig, axes = plt.subplots(2, max(1, len(models)), figsize=(3.3 * max(1, len(models)), 5.0), squeeze=False)
    for i, model in enumerate(models):
        ax = axes[0][i]
        for j, (scope, sel) in enumerate(gain[gain.model == model].groupby("scope", sort=False)):
            label = "gain on every MLP" if scope == "all" else "gain on the ME layer's MLP"
            ax.errorbar(sel.g, sel.ma_me, yerr=[sel.ma_me - sel.ma_me_lo, sel.ma_me_hi - sel.ma_me], marker="o",
                        ms=3, capsize=2, color=COLOURS[j], label=label)
        ax.set_yscale("log")
        ax.set_title(model)
        ax.set_xlabel("gain g")
        ax.set_ylabel("MA at its site, ME layer (|h|, 95% CI)")
        ax.legend(frameon=False)
        ax = axes[1][i]
        sel = shares[shares.model == model]
        x = np.arange(len(sel))
        ax.bar(x - 0.2, sel.observed, 0.4, color=COLOURS[0], label="observed")
        ax.bar(x + 0.2, sel.null_mean, 0.4, yerr=1.96 * sel.null_sd.fillna(0), capsize=2, color="lightgrey",
               label="N2 expectation (±1.96 sd)")
        ax.set_xticks(x, [f"{s} {m}" for s, m in zip(sel.site, sel.measure)], rotation=60, ha="right", fontsize=6)
        ax.set_ylabel("share")
    # beside the last panel, so the legend never covers a bar
    axes[1][-1].legend(frameon=False, fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)


WRITERS = {"02_avalanches": {"lattice": lattice}, "03_gain_sweep": {"sizes": sizes, "rate_vs_gain": rate_vs_gain,
                                                                   "delta_b": delta_b},
           "04_gstar": {"gstar_evidence": gstar_evidence, "transfer": transfer},
           "05_replication": {"replication": replication},
           "06_massive": {"ma_profile": ma_profile, "interventions": interventions},
           "07_training_dynamics": {"training": training}, "08_cascades_and_mas": {"cascades": cascades}}


def write_all(run: Path, res: Results, out: Path) -> list[str]:
    """Every figure of the finished phases into ``out`` as ``<name>.pdf``; returns their names."""
    written = []
    for phase in res.phases:
        for name, fn in WRITERS.get(phase, {}).items():
            fn(run, out / f"{name}.pdf")
            written.append(name)
    return written
