"""The explorer headless: a hand-made gain stack, the widgets' callbacks driven directly (slider,
toggles, a click on a heatmap cell, the avalanche list, the export button), and the figures' data
and text checked against values worked out by hand."""

import json

import numpy as np
import pandas as pd
import plotly.callbacks
import pytest

from avalanche_nb import gain_stack as gs
from avalanche_nb import params as P
from avalanche_nb import plots, widgets
from flood_fill import flood_fill_table

G, N, T, L, D_FF = 3, 2, 8, 3, 10
GAINS = [0.8, 1.0, 1.2]


def _hand_lattice() -> np.ndarray:
    """Sequence 0 at g = 1 (pos, rate_matched), [T, L]: avalanche A = (1,0)=2, (2,0)=1, (2,1)=3 and two
    sites (4,2)=1, (5,1)=2 that touch only diagonally (one avalanche under moore, two otherwise)."""
    a = np.zeros((T, L), np.int32)
    a[1, 0], a[2, 0], a[2, 1] = 2, 1, 3
    a[4, 2], a[5, 1] = 1, 2
    return a


@pytest.fixture
def stack(tmp_path):
    rng = np.random.default_rng(0)
    valid = np.ones((N, T), bool)
    valid[:, 0] = False
    counts = {}
    for i, key in enumerate(gs.KEYS):
        c = (rng.random((G, N, T, L)) < 0.3 + 0.1 * np.arange(G)[:, None, None, None]).astype(np.int32)
        c *= rng.integers(1, 4, c.shape).astype(np.int32)
        c[:, ~valid] = 0
        counts[key] = c
    counts[("pos", "rate_matched")][1, 0] = _hand_lattice()
    counts[("abs", "rate_matched")][1, 0] = _hand_lattice() + 1 * (_hand_lattice() > 0)  # abs: one more spike
    counts[("abs", "rate_matched")][1, 0, 6, 0] = 4  # and one site pos does not have
    text = np.array([[f"t{n}{t}" for t in range(T)] for n in range(N)])
    return gs.GainStack(GAINS, counts, valid, rng.integers(0, 50, (N, T)), text, np.full(L, 0.05), D_FF,
                        null_draws=20, source="hand-made", export_dir=tmp_path / "exports")


def _b_tot(counts, valid):
    """b_time + b_depth of the occupancy, straight from the definition."""
    X = ((counts > 0) & valid[:, :, None]).astype(int)
    return (X[:, :-1] * X[:, 1:]).sum() / X[:, :-1].sum() + (X[:, :, :-1] * X[:, :, 1:]).sum() / X[:, :, :-1].sum()


# --------------------------------------------------------------------------- the stack


def test_npz_round_trip_and_the_contract(stack):
    z = stack.to_npz_dict()
    assert {"counts_pos", "counts_abs", "fixed_counts_pos", "fixed_counts_abs", "g", "valid", "tokens", "token_text",
            "target_rate", "d_ff"} == set(z)
    back = gs.GainStack.from_npz_dict(z)
    for k in gs.KEYS:
        np.testing.assert_array_equal(back.counts[k], stack.counts[k])
    assert back.token_text.tolist() == stack.token_text.tolist() and back.d_ff == D_FF
    del z["fixed_counts_abs"]
    with pytest.raises(ValueError, match="fixed_counts_abs.*predates the explorer"):
        gs.GainStack.from_npz_dict(z)


def test_bad_stacks_are_refused(stack):
    with pytest.raises(ValueError, match="no valid site"):
        gs.GainStack(GAINS, stack.counts, np.zeros((N, T), bool), stack.tokens, stack.token_text, stack.target_rate, 1)
    with pytest.raises(ValueError, match="shape"):
        gs.GainStack(GAINS[:2], stack.counts, stack.valid, stack.tokens, stack.token_text, stack.target_rate, 1)
    with pytest.raises(ValueError, match="not on the stack's grid"):
        stack.gain_index(0.9)
    with pytest.raises(ValueError, match="unknown threshold mode"):
        gs.signatures(stack, "pos", "matched")


def test_signatures_against_the_definitions(stack):
    sig = gs.signatures(stack, "pos", "fixed", "moore")
    assert sig.g.tolist() == GAINS
    for gi in range(G):
        counts = stack.counts[("pos", "fixed")][gi]
        rate = counts.sum((0, 1)) / (stack.valid.sum() * D_FF)
        assert sig.rate_mean[gi] == pytest.approx(rate.mean())
        assert sig.b_tot[gi] == pytest.approx(_b_tot(counts, stack.valid))
        assert sig.n_avalanches[gi] == len(flood_fill_table(counts, stack.valid, "moore"))
    assert gs.signatures(stack, "pos", "fixed", "moore") is sig  # cached


def test_sequence_avalanches_by_hand():
    valid = np.ones(T, bool)
    labels, table = gs.sequence_avalanches(_hand_lattice(), valid, "von_neumann")
    assert table.id.tolist() == [1, 2, 3]  # raster order (token, layer) of each first site
    assert table[["size", "n_sites", "t0", "t1", "l0", "l1"]].values.tolist() == [
        [6, 3, 1, 2, 0, 1], [1, 1, 4, 4, 2, 2], [2, 1, 5, 5, 1, 1]]
    assert labels[2, 1] == 1 and labels[4, 2] == 2 and labels[5, 1] == 3 and (labels > 0).sum() == 5
    _, moore = gs.sequence_avalanches(_hand_lattice(), valid, "moore")
    assert moore[["size", "n_sites", "t_span", "l_span"]].values.tolist() == [[6, 3, 2, 2], [3, 2, 2, 2]]


def test_avalanche_detail_and_export(stack, tmp_path):
    d = gs.avalanche_detail(stack, 1, 0, 1, "pos", "rate_matched", "von_neumann")
    assert (d["size"], d["n_sites"], d["t_span"], d["l_span"], d["layers"]) == (6, 3, 2, 2, [0, 1])
    assert d["tokens"] == ["t01", "t02"]
    assert d["sites"][["token", "layer", "spikes_pos", "spikes_abs"]].values.tolist() == [
        [1, 0, 2, 3], [2, 0, 1, 2], [2, 1, 3, 4]]
    js, csv = gs.export_avalanche(d, tmp_path / "out")
    assert js.name == "avalanche_g1_pos_rate_matched_von_neumann_seq0_id1.json"
    saved = json.loads(js.read_text())
    assert saved["size"] == 6 and len(saved["sites"]) == 3 and saved["source"] == "hand-made"
    assert pd.read_csv(csv).spikes_abs.tolist() == [3, 2, 4]
    with pytest.raises(ValueError, match="avalanches 1..3"):
        gs.avalanche_detail(stack, 1, 0, 4)


def test_live_params_fail_on_a_mistyped_key():
    with pytest.raises(P.ParamsError, match="n_sequence.*did you mean 'n_sequences'"):
        gs.live_params("smollm2-135m-instruct", n_sequence=2)
    assert gs.live_params("tiny-llama")["n_sequences"] == gs.LIVE_DEFAULTS["n_sequences"]


def test_live_cache_key_follows_params_and_code(monkeypatch):
    p = gs.live_params("smollm2-135m-instruct")
    key = gs.cache_key(p)
    assert gs.cache_key(dict(p)) == key and gs.cache_key(p | {"window": 32}) != key
    assert gs.cache_key(p | {"adjacencies": ["moore"], "null_draws": 5}) == key  # not lattice inputs
    real = gs.provenance.sha256_file
    monkeypatch.setattr(gs.provenance, "sha256_file", lambda path: "edited" if path.name == "lattice.py" else real(path))
    assert gs.cache_key(p) != key


def test_find_run_names_the_runs_there(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no run 'b'.*\['a'\]"):
        gs.find_run("b", tmp_path)
    with pytest.raises(FileNotFoundError, match="no finished 03_gain_sweep"):
        gs.from_run(tmp_path / "a")


# --------------------------------------------------------------------------- the widgets


@pytest.fixture
def ex(stack):
    return widgets.Explorer(stack)


def test_opens_at_g1_on_the_largest_avalanche(ex, stack):
    s = ex.scrubber
    assert s.g == 1.0 and s.heatmap.layout.title.text == "sequence 0 · g = 1 · pos, rate_matched, von_neumann · 3 avalanches"
    labels, _ = gs.sequence_avalanches(_hand_lattice(), stack.valid[0], "von_neumann")
    np.testing.assert_array_equal(np.array(s.heatmap.data[0].z, float), plots.lattice_z(_hand_lattice(), stack.valid[0], labels))
    assert ex.inspector.detail["avalanche"] == 1
    assert [v for _, v in ex.inspector.choice.options] == [1, 3, 2]  # by size: 6, 2, 1
    assert list(s.heatmap.data[1].x) == [1, 2, 2] and list(s.heatmap.data[1].y) == [0, 0, 1]


def test_slider_updates_every_figure_in_place(ex, stack):
    s = ex.scrubber
    heat, rates, curves, children = s.heatmap, s.rates, s.curves, ex.widget.children
    curve_y = [list(curves.data[i].y) for i in range(3)]
    s.gain.value = 2  # g = 1.2
    assert s.heatmap is heat and s.rates is rates and s.curves is curves and ex.widget.children == children
    counts = stack.counts[("pos", "rate_matched")][2]
    labels, table = gs.sequence_avalanches(counts[0], stack.valid[0], "von_neumann")
    np.testing.assert_array_equal(np.array(heat.data[0].z, float), plots.lattice_z(counts[0], stack.valid[0], labels))
    assert heat.layout.title.text.startswith("sequence 0 · g = 1.2 ·")
    assert heat.layout.title.text.endswith(f"· {len(table)} avalanches")
    np.testing.assert_allclose(rates.data[0].y, counts.sum((0, 1)) / (stack.valid.sum() * D_FF))
    sig = gs.signatures(stack, "pos", "rate_matched")
    for i, col in enumerate(("b_tot", "delta_b_tot_n1", "chi_perc")):
        assert list(curves.data[3 + i].x) == [1.2] and curves.data[3 + i].y[0] == pytest.approx(sig[col][2])
        assert list(curves.data[i].y) == curve_y[i]  # the curves themselves do not move with g
    assert ex.inspector.detail["g"] == 1.2 and ex.inspector.detail["size"] == table["size"].max()


def test_spike_definition_mode_adjacency_and_sequence_controls(ex, stack):
    s = ex.scrubber
    s.spike_def.value = "abs"
    np.testing.assert_allclose(s.curves.data[0].y, [_b_tot(c, stack.valid) for c in stack.counts[("abs", "rate_matched")]])
    assert (s.heatmap.data[0].z[0][6] > 0) and "4 avalanches" in s.heatmap.layout.title.text  # site (6, 0) is abs-only
    s.spike_def.value = "pos"
    s.adjacency.value = "moore"
    assert s.heatmap.layout.title.text.endswith("moore · 2 avalanches")
    s.mode.value = "fixed"
    np.testing.assert_allclose(s.rates.data[0].y, stack.counts[("pos", "fixed")][1].sum((0, 1)) / (stack.valid.sum() * D_FF))
    s.sequence.value = 1
    assert list(s.heatmap.layout.xaxis.ticktext) == [f"t1{t}" for t in range(T)]
    assert s.heatmap.layout.title.text.startswith("sequence 1 · g = 1 · pos, fixed, moore")


def test_click_selects_the_avalanche_under_the_cell(ex):
    s, insp = ex.scrubber, ex.inspector
    click = lambda t, l: s.heatmap.data[0]._dispatch_on_click(plotly.callbacks.Points([0], [t], [l], "lattice", 0), None)
    click(5, 1)
    assert insp.detail["avalanche"] == 3 and insp.choice.value == 3
    assert "size <b>2</b> spikes" in insp.summary.value
    assert insp.tokens.value.count('class="aval-hit"') == 1 and 'title="t=5: 2 spikes"' in insp.tokens.value
    assert list(s.heatmap.data[1].x) == [5] and list(s.heatmap.data[1].y) == [1]
    click(3, 0)  # an empty cell: the selection stays
    assert insp.detail["avalanche"] == 3
    insp.choice.value = 1
    assert insp.detail["size"] == 6 and insp.tokens.value.count('class="aval-hit"') == 2


def test_export_button_writes_the_selection(ex, stack):
    ex.inspector.export_button.click()
    files = sorted(p.name for p in stack.export_dir.iterdir())
    assert files == ["avalanche_g1_pos_rate_matched_von_neumann_seq0_id1.csv",
                     "avalanche_g1_pos_rate_matched_von_neumann_seq0_id1.json"]
    assert "exported" in ex.inspector.export_status.value


def test_an_empty_lattice_shows_no_avalanche(stack):
    for k in gs.KEYS:
        stack.counts[k][0, 0] = 0
    ex = widgets.Explorer(stack, g=0.8)
    assert ex.inspector.detail is None and "no avalanche" in ex.inspector.summary.value
    assert ex.inspector.export() is None


def test_explore_needs_exactly_one_source(stack):
    with pytest.raises(ValueError, match="exactly one of run_id, run_dir or model"):
        widgets.explore()
    with pytest.raises(ValueError, match="exactly one"):
        widgets.explore("r", model="m")
    with pytest.raises(ValueError, match="live model only"):
        widgets.explore("r", n_sequences=2)
    with pytest.raises(ValueError, match="out of range"):
        widgets.Explorer(stack, seq=5)
    with pytest.raises(ValueError, match="unknown adjacency"):
        widgets.Explorer(stack, adjacency="hex")
