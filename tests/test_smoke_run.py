"""End to end: the real embedded SmolLM2 on a tiny slice (params/smoke.yaml), phases 00–02.

Checks the artifact contract, that manifests verify, that the avalanche table is reproduced by an
independent labelling, and (nbval) that re-executing the archived notebooks reproduces their checked
outputs exactly.
"""

import json
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from avalanche_nb import cli, provenance

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return cli.run(ROOT / "params" / "smoke.yaml", out=out, run_id="smoke")


def test_every_phase_finished_and_verifies(run_dir):
    assert [p.name for p in sorted(run_dir.iterdir()) if p.is_dir()] == list(cli.PHASES)
    assert cli.verify(run_dir) == []
    for phase in cli.PHASES:
        m = provenance.read_manifest(run_dir / phase)
        assert f"{phase}.ipynb" in m["artifacts"] and m["params"]["n_sequences"] == 4
    assert "00_data_and_model/slices.json" in provenance.read_manifest(run_dir / "01_event_lattice")["inputs"]


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


NEIGHBOURS = {
    "von_neumann": [(1, 0), (-1, 0), (0, 1), (0, -1)],
    "moore": [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0)],
    "causal": [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1)],
}


def flood_fill_table(counts, valid, adjacency):
    """Independent labelling: breadth-first flood fill per sequence, in raster order."""
    rows = []
    X = (counts > 0) & valid[:, :, None]
    for n in range(X.shape[0]):
        seen = np.zeros(X.shape[1:], bool)
        for t, l in zip(*np.nonzero(X[n])):
            if seen[t, l]:
                continue
            seen[t, l] = True
            queue, sites = deque([(t, l)]), []
            while queue:
                a, b = queue.popleft()
                sites.append((a, b))
                for da, db in NEIGHBOURS[adjacency]:
                    c, d = a + da, b + db
                    if 0 <= c < X.shape[1] and 0 <= d < X.shape[2] and X[n, c, d] and not seen[c, d]:
                        seen[c, d] = True
                        queue.append((c, d))
            ts, ls = np.array(sites).T
            rows.append((n, int(counts[n, ts, ls].sum()), len(sites), ts.max() - ts.min() + 1,
                         ls.max() - ls.min() + 1, ts.min(), ls.min()))
    return sorted(rows)


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


def test_nbval_reproduces_the_checked_outputs(run_dir, tmp_path):
    notebooks = [str(run_dir / phase / f"{phase}.ipynb") for phase in cli.PHASES]
    env = os.environ | {provenance.SCRATCH_ENV: str(tmp_path / "scratch")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider",
         "-o", "addopts=", "-q", *notebooks],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout
