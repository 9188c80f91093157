"""End to end: the real embedded models on a tiny slice (params/smoke.yaml), every phase.

Checks the artifact contracts (every artifact against its schema in the phase registry), that
manifests verify, that numbers are reproduced by independent computations (labelling, nulls, ARC
scoring, perplexity, hidden-state scans, refits), that computing every phase again gives identical
artifacts, that every figure shown is exported beside its notebook, that the executed
notebooks render cleanly and stay small, and (nbval) that re-executing them reproduces their checked
outputs exactly.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from avalanche_nb import artifacts, figure_export, gain_stack, phases, provenance, runner
from flood_fill import NEIGHBOURS, flood_fill_table

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_every_phase_finished_and_verifies(run_dir):
    folders = [p.name for p in sorted(run_dir.iterdir()) if p.is_dir()]
    # the explorer may export; logs/ holds the kernels' output
    assert [f for f in folders if f not in (gain_stack.EXPORT_FOLDER, runner.LOGS)] == list(phases.names())
    assert runner.verify(run_dir) == []
    for phase in phases.names():
        m = provenance.read_manifest(run_dir / phase)
        assert f"{phase}.ipynb" in m["artifacts"] and m["params"]["n_sequences"] == 4
    assert "00_data_and_model/slices.npz" in provenance.read_manifest(run_dir / "01_event_lattice")["inputs"]


def test_lattice_contract(run_dir):
    z = np.load(run_dir / "01_event_lattice" / "lattice.npz")
    N, T, L = 4, 48, 30
    assert z["tokens"].shape == (N, T) and z["tokens"].dtype.kind == "i"
    assert z["valid"].shape == (N, T) and z["valid"].dtype == bool
    assert not z["valid"][:, 0].any() and z["valid"][:, 1:].all()
    for d in ("pos", "abs"):
        counts = z[f"counts_{d}"]
        assert counts.shape == (N, T, L) and counts.dtype.kind == "i"
        assert (counts[~z["valid"]] == 0).all()
        assert z[f"tau_{d}"].shape == (L,) and z[f"rate_{d}"].shape == (L,)
        # the achieved rate is the spike count over valid sites x d_ff, and on target up to rounding
        rate = counts.sum((0, 1)) / (z["valid"].sum() * 1536)
        np.testing.assert_allclose(z[f"rate_{d}"], rate)
        np.testing.assert_allclose(rate, z["target_rate"], atol=1.0 / (z["valid"].sum() * 1536))
    slices = json.loads((run_dir / "00_data_and_model" / "slices.json").read_text())
    assert slices["a_lattice"]["n_sequences"] == N


def test_avalanche_table_matches_an_independent_labelling(run_dir):
    z = np.load(run_dir / "01_event_lattice" / "lattice.npz")
    table = pd.read_parquet(run_dir / "02_avalanches" / "avalanches.parquet")
    assert list(table.columns) == ["seq", "spike_def", "adjacency", "size", "n_sites", "t_span", "l_span", "t0", "l0"]
    for d in ("pos", "abs"):
        for adj in NEIGHBOURS:
            got = table[(table.spike_def == d) & (table.adjacency == adj)]
            got = sorted(map(tuple, got[["seq", "size", "n_sites", "t_span", "l_span", "t0", "l0"]].to_numpy().tolist()))
            assert got == flood_fill_table(z[f"counts_{d}"], z["valid"], adj), (d, adj)


def test_summary_contract(run_dir):
    summary = json.loads((run_dir / "02_avalanches" / "summary.json").read_text())
    table = pd.read_parquet(run_dir / "02_avalanches" / "avalanches.parquet")
    for d in ("pos", "abs"):
        for adj in NEIGHBOURS:
            s = summary[d][adj]
            for key in ("rate_per_layer", "b_time", "b_depth", "b_diag", "b_tot", "chi_fano", "chi_perc", "n_avalanches"):
                assert key in s, (d, adj, key)
            assert s["n_avalanches"] == ((table.spike_def == d) & (table.adjacency == adj)).sum()
            assert s["b_tot"] == pytest.approx(s["b_time"] + s["b_depth"])


@pytest.fixture(scope="module")
def rerun(smoke, tmp_path_factory):
    """nbval's re-execution of every executed notebook of the run (started phase by phase while the run
    went on, ``smoke_rerun``) and of the explorer on it: the subprocesses' results and the scratch
    folder the re-executed phases wrote their artifacts to."""
    import papermill

    run_dir, phase_reruns = smoke
    # the explorer is not a phase: executed here on the smoke run, then checked like the phases
    explore = tmp_path_factory.mktemp("explore") / "explore.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks" / "explore.ipynb"), str(explore), kernel_name=runner.KERNEL,
                               parameters={"run_dir": str(run_dir)}, progress_bar=False)
    results = {"explore": phase_reruns.nbval(explore), **phase_reruns.wait()}
    return results, phase_reruns.scratch


def test_nbval_reproduces_the_checked_outputs(rerun):
    results, _ = rerun
    assert list(results) == ["explore", *phases.names()]
    for name, proc in results.items():
        assert proc.returncode == 0, name + ":\n" + proc.stdout[-6000:] + proc.stderr[-2000:]
        assert " passed" in proc.stdout and " failed" not in proc.stdout, name


def test_a_second_run_of_the_same_params_is_identical_artifact_for_artifact(run_dir, rerun):
    """Every phase computed again (nbval's re-execution, on the same inputs, into scratch folders):
    every declared artifact and facts.json have the bytes the run's manifest hashed. The notebooks and
    their exported figures are views (an SVG may carry random element ids) and are not compared. Each
    phase reading the same hashed inputs, phase-by-phase identity is the whole run's identity."""
    _, scratch = rerun
    for phase in phases.names():
        hashed = provenance.read_manifest(run_dir / phase)["artifacts"]
        compared = [x.name for x in phases.get(phase).writes] + [provenance.FACTS]
        again = {n: provenance.sha256_file(scratch / phase / n) if (scratch / phase / n).exists() else None
                 for n in compared}
        assert again == {n: hashed.get(n) for n in compared}, phase
        assert all(again[x.name] for x in phases.get(phase).writes), phase


SWEEP_COLUMNS = ["ablation", "g", "target_rate", "spike_def", "threshold_mode", "rate_mean", "rate_max_rel_err",
                 "b_time", "b_depth", "b_diag", "b_tot"] + [
    f"{null}_b_{d}_{s}" for d in ("time", "depth", "diag", "tot") for null in ("n1", "n2", "n3") for s in ("mean", "lo", "hi")
] + [f"{p}_{d}_{null}" for d in ("time", "depth", "diag", "tot") for null in ("n1", "n2", "n3") for p in ("delta_b", "z")] + [
    "chi_fano", "chi_perc", "n_avalanches", "gamma", "gamma_lo", "gamma_hi", "gamma_pred", "alpha", "xmin", "ks",
    "p_value", "lr_lognormal", "p_lognormal", "lr_exponential", "p_exponential", "mr_m"]


def test_sweep_table_contract(run_dir):
    sweep = pd.read_parquet(run_dir / "03_gain_sweep" / "sweep.parquet")
    missing = [c for c in SWEEP_COLUMNS if c not in sweep.columns]
    assert not missing, missing
    assert set(sweep.ablation) == {"all", "late", "attn", "shuffled"}
    assert len(sweep) == 4 * 3 * 1 * 2 * 2  # ablations x gains x targets x spike defs x modes
    profile = pd.read_parquet(run_dir / "03_gain_sweep" / "layer_profile.parquet")
    for c in ("ablation", "g", "target_rate", "spike_def", "threshold_mode", "layer", "rate", "tau", "b_time", "b_depth"):
        assert c in profile.columns
    z = np.load(run_dir / "03_gain_sweep" / "sweep_lattices.npz")
    assert z["g"].tolist() == [0.8, 1.0, 1.2] and int(z["d_ff"]) == 1536 and z["target_rate"].shape == (30,)
    for key in ("counts_pos", "counts_abs", "fixed_counts_pos", "fixed_counts_abs"):
        assert z[key].shape == (3, 4, 48, 30) and z[key].dtype.kind == "i", key
    assert z["token_text"].shape == (4, 48) and z["token_text"].dtype.kind == "U"


def test_rate_moves_under_fixed_and_is_pinned_under_rate_matching(run_dir):
    sweep = pd.read_parquet(run_dir / "03_gain_sweep" / "sweep.parquet")
    main = sweep[sweep.ablation == "all"]
    for d in ("pos", "abs"):
        fixed = main[(main.spike_def == d) & (main.threshold_mode == "fixed")].sort_values("g")
        assert fixed.rate_mean.iloc[0] < fixed.rate_mean.iloc[1] < fixed.rate_mean.iloc[2]
        rm = main[(main.spike_def == d) & (main.threshold_mode == "rate_matched")]
        assert (rm.rate_max_rel_err < 0.01).all()  # per layer exactly: below, against layer_profile
    profile = pd.read_parquet(run_dir / "03_gain_sweep" / "layer_profile.parquet")
    lattice = np.load(run_dir / "01_event_lattice" / "lattice.npz")
    for d in ("pos", "abs"):
        rm = profile[(profile.ablation == "all") & (profile.spike_def == d) & (profile.threshold_mode == "rate_matched")]
        for g, sel in rm.groupby("g"):
            # on target up to rounding the spike count to an integer: half a spike in 188 sites x 1536 neurons
            np.testing.assert_allclose(sel.sort_values("layer").rate, lattice["target_rate"],
                                       rtol=0, atol=0.5 / (188 * 1536) + 1e-12)


def _null_means(X, valid, null, k, rng):
    """Independent per-row loop: N1 permutes, N2 rolls the valid positions of every (sequence, layer) row."""
    N, T, L = X.shape
    out = {"time": [], "depth": []}
    pos = np.flatnonzero(valid[0])
    for _ in range(k):
        Y = np.zeros_like(X)
        for n in range(N):
            for l in range(L):
                row = X[n, pos, l]
                Y[n, pos, l] = rng.permutation(row) if null == "n1" else np.roll(row, rng.integers(1, len(pos)))
        Yi = Y.astype(int)
        out["time"].append((Yi[:, :-1] * Yi[:, 1:]).sum() / Yi[:, :-1].sum())
        out["depth"].append((Yi[:, :, :-1] * Yi[:, :, 1:]).sum() / Yi[:, :, :-1].sum())
    return {d: (np.mean(v), np.std(v, ddof=1)) for d, v in out.items()}


def test_delta_b_is_reproduced_from_the_sweep_lattices(run_dir):
    """delta-b under N1 and N2, recomputed from sweep_lattices.npz, agrees within the nulls' sampling error."""
    sweep = pd.read_parquet(run_dir / "03_gain_sweep" / "sweep.parquet")
    params = provenance.read_manifest(run_dir / "03_gain_sweep")["params"]
    z = np.load(run_dir / "03_gain_sweep" / "sweep_lattices.npz")
    rng = np.random.default_rng(123)
    for gi, g in enumerate(z["g"]):
        X = (z["counts_pos"][gi] > 0) & z["valid"][:, :, None]
        Xi = X.astype(int)
        observed = {"time": (Xi[:, :-1] * Xi[:, 1:]).sum() / Xi[:, :-1].sum(),
                    "depth": (Xi[:, :, :-1] * Xi[:, :, 1:]).sum() / Xi[:, :, :-1].sum()}
        row = sweep[(sweep.ablation == "all") & np.isclose(sweep.g, g) & (sweep.spike_def == "pos")
                    & (sweep.threshold_mode == "rate_matched")].iloc[0]
        for null in ("n1", "n2"):
            means = _null_means(X, z["valid"], null, 200, rng)
            for d in ("time", "depth"):
                mean, sd = means[d]
                assert row[f"b_{d}"] == pytest.approx(observed[d])
                # both null means are Monte Carlo estimates: 200 and null_draws draws
                se = sd * np.sqrt(1 / 200 + 1 / params["null_draws"])
                assert abs(row[f"delta_b_{d}_{null}"] - (observed[d] - mean)) <= 4 * se + 1e-9, (g, null, d)


def test_gstar_contract_and_a_only_evidence(run_dir):
    from avalanche_nb import gstar

    g = json.loads((run_dir / "04_gstar" / "gstar.json").read_text())
    assert g["rule"] == "chi_perc_max" and set(g["picks"]) == set(gstar.RULES)
    assert g["gstar"] == g["picks"]["chi_perc_max"] and 0.6 - 1e-9 <= g["gstar"] <= 1.4 + 1e-9  # smoke gstar_limits
    ev = pd.DataFrame(g["evidence"])
    assert gstar.picks(ev) == g["picks"]  # the picks follow from the recorded evidence alone
    assert gstar.at_edge(ev, g["picks"]) == g["at_edge"]
    # the grid, then every added gain one step (0.2) further out on the side of an edge pick
    assert g["grid"] == [0.8, 1.0, 1.2] and sorted(ev.g) == sorted(g["grid"] + g["added_gains"])
    assert all(x < 0.8 for x in g["added_gains"]) or all(x > 1.2 for x in g["added_gains"])
    assert g["outcome"] == ("limit" if g["at_edge"]["chi_perc_max"] else "interior")
    sweep = pd.read_parquet(run_dir / "03_gain_sweep" / "sweep.parquet")
    main = sweep[(sweep.ablation == "all") & (sweep.spike_def == "pos") & (sweep.threshold_mode == "rate_matched")]
    on_grid = ev[ev.g.isin(g["grid"])].sort_values("g")
    np.testing.assert_allclose(on_grid.chi_perc, main.sort_values("g").chi_perc)
    # written before anything of Dataset B or ARC
    out = run_dir / "04_gstar"
    assert (out / "gstar.json").stat().st_mtime <= min((out / f).stat().st_mtime for f in
                                                        ("transfer.parquet", "arc.parquet"))


def test_transfer_perplexity_matches_a_direct_computation(run_dir, smol):
    import torch
    import torch.nn.functional as F

    from avalanche_nb.data import build_slice

    tr = pd.read_parquet(run_dir / "04_gstar" / "transfer.parquet")
    g_star = json.loads((run_dir / "04_gstar" / "gstar.json").read_text())["gstar"]
    assert tr.g.tolist() == sorted({0.8, 1.0, 1.2, g_star}) and tr.is_gstar.sum() == 1
    assert tr.loc[tr.g == 1.0, "b_b_tot"].notna().all() and tr.loc[tr.is_gstar, "b_b_tot"].notna().all()
    tokens = torch.tensor(build_slice(smol.tokenizer, "sciq", 2, 48, seed=0).tokens)
    with torch.no_grad():
        logits = smol.model(tokens).logits[:, :-1]
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
    assert tr.loc[tr.g == 1.0, "perplexity"].item() == pytest.approx(float(torch.exp(nll)), rel=1e-4)


def test_arc_rows_match_an_independent_scorer(run_dir, smol):
    """Each choice re-scored alone with a plain full forward and the HF logits (no batching, no cache)."""
    import torch

    from avalanche_nb.data import ARC_SUBSETS, default_add_bos, load_arc

    arc = pd.read_parquet(run_dir / "04_gstar" / "arc.parquet")
    for c in ("subset", "id", "g", "pred", "pred_norm", "answer", "correct", "correct_norm"):
        assert c in arc.columns
    g_star = json.loads((run_dir / "04_gstar" / "gstar.json").read_text())["gstar"]
    sizes = arc.groupby("g").size()
    assert sizes.index.tolist() == sorted({0.8, 1.0, 1.2, g_star}) and (sizes == 12).all()
    questions = {(q.subset, q.id): q for q in load_arc(ARC_SUBSETS, limit=6, seed=0)}
    # acc_norm is lm-evaluation-harness's rule at every gain: the choice text's length, no delimiter
    for row in arc.itertuples():
        q = questions[(row.subset, row.id)]
        assert row.pred_norm == int(np.argmax(np.asarray(row.loglik) / [len(c) for c in q.choices]))
        assert row.correct_norm == (row.pred_norm == q.answer)
    tok = smol.tokenizer
    for row in arc[arc.g == 1.0].itertuples():
        q = questions[(row.subset, row.id)]
        prompt = f"Question: {q.question}\nAnswer:"
        prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        ctx = [tok.bos_token_id] * default_add_bos(tok) + prompt_ids
        ll = []
        for choice in q.choices:
            cont = tok(prompt + " " + choice, add_special_tokens=False)["input_ids"][len(prompt_ids):]
            ids = torch.tensor([ctx + cont])
            with torch.no_grad():
                lp = torch.log_softmax(smol.model(ids).logits[0].float(), -1)
            ll.append(sum(float(lp[len(ctx) - 1 + k, t]) for k, t in enumerate(cont)))
        np.testing.assert_allclose(row.loglik, ll, atol=2e-3)
        assert row.pred == int(np.argmax(ll)) and row.answer == q.answer
        assert row.pred_norm == int(np.argmax(np.array(ll) / [len(c) for c in q.choices]))


def test_replication_contract(run_dir):
    rep = json.loads((run_dir / "05_replication" / "replication.json").read_text())
    assert rep["models"] == ["smollm2-135m-instruct", "gemma3-270m"] and rep["failures"] == {}
    assert rep["relation"] == "cross-family"
    curves = pd.read_parquet(run_dir / "05_replication" / "replication.parquet")
    picks = {m: g for m, g in zip(rep["models"], [rep["side_by_side"][m]["g*"] for m in rep["models"]])}
    assert curves.groupby("model").size().to_dict() == {m: 3 + (g not in (0.8, 1.0, 1.2)) for m, g in picks.items()}
    assert curves.groupby("model").is_gstar.sum().tolist() == [1, 1]
    assert curves[["b_tot", "perplexity_b", "arc_acc"]].notna().all().all()
    main = curves[curves.model == "smollm2-135m-instruct"].reset_index(drop=True)
    tr = pd.read_parquet(run_dir / "04_gstar" / "transfer.parquet")
    np.testing.assert_allclose(main.perplexity_b, tr.perplexity)  # reused from 04, not recomputed


def test_massive_contract_and_independent_scan(run_dir, smol):
    """06: both models analysed; SmolLM2's ME layer, MA token and dim re-derived from HF's hidden states."""
    import torch

    from avalanche_nb.data import build_slice

    out = run_dir / "06_massive"
    me = json.loads((out / "me_layer.json").read_text())
    assert set(me["models"]) == {"smollm2-135m-instruct", "gemma3-270m"} and me["failures"] == {}
    m = me["models"]["smollm2-135m-instruct"]
    probe = build_slice(smol.tokenizer, "boolq", 3, 48, seed=0)
    assert m["probe_sha256"] == probe.sha256
    with torch.no_grad():
        hs = smol.model(torch.as_tensor(np.array(probe.tokens)), output_hidden_states=True).hidden_states[1:-1]
    top = np.array([[float(h[i].abs().max()) for i in range(3)] for h in hs])
    med = np.array([[float(h[i].abs().median()) for i in range(3)] for h in hs])  # lower median: close enough here
    sun = (top.mean(1) > 100) & ((top / med).mean(1) >= 1000)
    assert m["found"] and m["me_layer"] == int(np.argmax(sun))
    h = hs[m["me_layer"]].abs()
    flat = h.reshape(3, -1).argmax(1)
    assert set((flat // h.shape[2]).tolist()) == {m["ma_pos"]} and int(flat[0] % h.shape[2]) in m["ma_dims"]
    prof = pd.read_parquet(out / "profile.parquet")
    assert prof.groupby("model").size().to_dict() == {"smollm2-135m-instruct": 31, "gemma3-270m": 19}
    inter = pd.read_parquet(out / "interventions.parquet")
    assert set(inter.intervention) == {"none", "zero", "mean", "clip"}
    ppl = inter.groupby(["model", "intervention"]).perplexity_ratio.first()
    assert ppl["smollm2-135m-instruct", "none"] == 1.0 and ppl["smollm2-135m-instruct", "zero"] > 10
    tr = pd.read_parquet(run_dir / "04_gstar" / "transfer.parquet")  # same B slice, same model, g = 1
    smol_none = inter[(inter.model == "smollm2-135m-instruct") & (inter.intervention == "none")].perplexity.iloc[0]
    assert smol_none == pytest.approx(tr.loc[tr.g == 1.0, "perplexity"].item(), rel=1e-6)
    for name in ("propagation", "token_class", "attention_sink", "factorial", "rigidity"):
        df = pd.read_parquet(out / f"{name}.parquet")
        assert set(df.model) == {"smollm2-135m-instruct", "gemma3-270m"}, name
    rig = pd.read_parquet(out / "rigidity.parquet")
    assert rig.arc_acc.notna().all() and {-1, m["me_layer"]} <= set(rig.applied)


def test_training_dynamics_contract_and_refit(run_dir):
    """07: every trained model has per-layer fits; refitting a row from trajectories.parquet gives its R²."""
    from avalanche_nb import emergence as em

    out = run_dir / "07_training_dynamics"
    traj = pd.read_parquet(out / "trajectories.parquet")
    assert {"model", "layer", "step", "stat", "mean", "cv_pct", "sem_pct", "ci_lo", "ci_hi"} <= set(traj.columns)
    ratio = traj[traj.stat == "ratio"]
    assert ratio.groupby("model").layer.nunique().to_dict() == {"1x32x2x2": 1, "2x32x2x2": 2}
    assert sorted(ratio.step.unique()) == [0, 1, 2, 4, 8, 16]
    fits = pd.read_parquet(out / "fits.parquet")
    ma5 = fits[fits.fit == "ma5"]
    assert len(ma5) == 3 and {"r2", "aic", "t_peak", "trajectory_class", "chosen"} <= set(fits.columns)
    for row in fits[fits.ok].itertuples():
        g = ratio[(ratio.model == row.model) & (ratio.layer == row.layer)].sort_values("step")
        refit = em.fit(g.step.to_numpy(float), g["mean"].to_numpy(float), row.fit)
        assert refit.r2 == pytest.approx(row.r2, rel=1e-9, abs=1e-12)
    assert (pd.read_parquet(out / "predictors.parquet").conclusive == False).all()  # noqa: E712 - 3 rows


def test_every_artifact_matches_its_schema(run_dir):
    for phase in phases.PHASES:
        for a in phase.writes:
            artifacts.validate(a.name, artifacts.read(run_dir, a.name))


def test_every_figure_a_phase_shows_is_exported_beside_its_notebook(run_dir):
    """figures/<name>.csv for each figure the executed notebook shows (names unique per notebook), with
    .svg and .png where Chromium runs; all hashed into the manifest. 00 shows no figure."""
    import nbformat

    from avalanche_nb import system

    images = system.browser() is not None
    for phase in phases.names():
        nb = nbformat.read(run_dir / phase / f"{phase}.ipynb", as_version=4)
        n_shown = sum("application/vnd.plotly.v1+json" in o.get("data", {})
                      for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
        folder = run_dir / phase / figure_export.FIGURES
        if phase == "00_data_and_model":
            assert n_shown == 0 and not folder.exists()
            continue
        csvs = sorted(folder.glob("*.csv"))
        assert n_shown >= 1 and len(csvs) == n_shown, (phase, n_shown, [c.name for c in csvs])
        for csv in csvs:
            cols = list(pd.read_csv(csv).columns)  # tidy (x, y, ...) or a heatmap's matrix ("layer \\ head", ...)
            assert {"x", "y"} <= set(cols) or any(" \\ " in c for c in cols[:2]), (csv, cols)
            for ext in (".svg", ".png"):
                assert csv.with_suffix(ext).is_file() == images, (csv, ext)
        hashed = provenance.read_manifest(run_dir / phase)["artifacts"]
        assert {str(f.relative_to(run_dir / phase)) for f in folder.iterdir()} <= set(hashed), phase


def test_the_executed_notebooks_render_cleanly_and_stay_small(run_dir, tmp_path):
    """Rendered to HTML as a reader sees them: no leaked paths or numpy reprs, no empty code cells,
    and each notebook under 1 MB (plotly.js is loaded from the run folder, not embedded)."""
    import nbformat
    from nbconvert import HTMLExporter

    assert (run_dir / "plotly.min.js").stat().st_size > 1_000_000
    for phase in phases.names():
        path = run_dir / phase / f"{phase}.ipynb"
        assert path.stat().st_size < 1_000_000, (phase, path.stat().st_size)
        nb = nbformat.read(path, as_version=4)
        assert all(c.source.strip() for c in nb.cells if c.cell_type == "code"), f"{phase}: an empty code cell"
        html, _ = HTMLExporter().from_notebook_node(nb)
        for leak in ("PosixPath(", "np.str_(", ".partial/"):
            assert leak not in html, (phase, leak)
        assert "Traceback" not in html, phase


def test_a_campaign_headline_row_is_the_runs_own_artifacts(run_dir):
    """campaign.parquet's row of a cell (:func:`campaign.headline`) against the run's artifacts read directly."""
    from avalanche_nb import campaign

    row = campaign.headline(run_dir)
    info = json.loads((run_dir / "00_data_and_model" / "model.json").read_text())
    assert (row["num_layers"], row["n_parameters"]) == (info["num_layers"], info["n_parameters"])
    sweep = pd.read_parquet(run_dir / "03_gain_sweep" / "sweep.parquet")
    g1 = sweep[(sweep.ablation == "all") & (sweep.spike_def == "pos") & (sweep.threshold_mode == "rate_matched")
               & (sweep.g == 1.0) & (sweep.target_rate == sweep.target_rate.iloc[0])]
    assert len(g1) == 1
    for col in ("z_tot_n1", "z_tot_n2", "z_tot_n3", "delta_b_tot_n1"):
        assert row[f"{col}_g1"] == pytest.approx(g1[col].iloc[0], nan_ok=True)
    assert row["fit_class"] == campaign.fit_class(g1.iloc[0])
    gs = json.loads((run_dir / "04_gstar" / "gstar.json").read_text())
    assert row["gstar"] == gs["gstar"] and row["gstar_outcome"] == gs["outcome"]
    assert {r: row[f"gstar_{r}"] for r in gs["picks"]} == gs["picks"]
    assert {r: row[f"at_edge_{r}"] for r in gs["at_edge"]} == gs["at_edge"]
    arc = json.loads((run_dir / "04_gstar" / "arc_summary.json").read_text())
    rows = arc["full" if arc["full"] else "grid"]
    easy1 = next(r for r in rows if r["subset"] == "ARC-Easy" and r["g"] == 1.0)
    assert (row["arc_easy_acc_g1"], row["arc_easy_acc_lo_g1"], row["arc_easy_acc_hi_g1"]) == (
        easy1["acc"], easy1["acc_lo"], easy1["acc_hi"])
    tr = pd.read_parquet(run_dir / "04_gstar" / "transfer.parquet").set_index("g")
    assert row["ppl_b_ratio_gstar"] == pytest.approx(tr.perplexity[gs["gstar"]] / tr.perplexity[1.0])
    me = json.loads((run_dir / "06_massive" / "me_layer.json").read_text())["models"]["smollm2-135m-instruct"]
    assert row["me_layer"] == me["me_layer"]
    prof = pd.read_parquet(run_dir / "06_massive" / "profile.parquet")
    ratio = prof[(prof.model == "smollm2-135m-instruct") & (prof.layer == me["me_layer"])].ratio.iloc[0]
    assert row["ma_ratio"] == ratio
    found = json.loads((run_dir / "06_massive" / "findings.json").read_text())["smollm2-135m-instruct"]
    assert row["ma_zero_ppl_ratio"] == pytest.approx(found["perplexity_ratio"]["zero"])
    assert row["ma_mean_ppl_ratio"] == pytest.approx(found["perplexity_ratio"]["mean"])
