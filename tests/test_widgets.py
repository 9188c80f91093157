"""The explorer headless: the hand-made gain stack of ``hand_stack``, the widgets' callbacks driven
directly (slider, toggles, a click on a heatmap cell, the avalanche list, the export button), and the
figures' data and text checked against values worked out by hand."""

import numpy as np
import plotly.callbacks
import pytest

from avalanche_nb import gain_stack as gs
from avalanche_nb import avalanche_detail
from avalanche_nb import plots, widgets
from hand_stack import D_FF, T, b_tot, hand_lattice


@pytest.fixture
def ex(stack):
    return widgets.Explorer(stack)


def test_opens_at_g1_on_the_largest_avalanche(ex, stack):
    s = ex.scrubber
    assert s.g == 1.0 and s.heatmap.layout.title.text == "sequence 0 · g = 1 · pos, rate_matched, von_neumann · 3 avalanches"
    labels, _ = avalanche_detail.sequence_avalanches(hand_lattice(), stack.valid[0], "von_neumann")
    np.testing.assert_array_equal(np.array(s.heatmap.data[0].z, float), plots.lattice_z(hand_lattice(), stack.valid[0], labels))
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
    labels, table = avalanche_detail.sequence_avalanches(counts[0], stack.valid[0], "von_neumann")
    np.testing.assert_array_equal(np.array(heat.data[0].z, float), plots.lattice_z(counts[0], stack.valid[0], labels))
    assert heat.layout.title.text.startswith("sequence 0 · g = 1.2 ·")
    assert heat.layout.title.text.endswith(f"· {len(table)} avalanches")
    np.testing.assert_allclose(rates.data[0].y, counts.sum((0, 1)) / (stack.valid.sum() * D_FF))
    sig = gs.curves(stack, "pos", "rate_matched")
    for i, col in enumerate(("b_tot", "delta_b_tot_n1", "chi_perc")):
        assert list(curves.data[3 + i].x) == [1.2] and curves.data[3 + i].y[0] == pytest.approx(sig[col][2])
        assert list(curves.data[i].y) == curve_y[i]  # the curves themselves do not move with g
    assert ex.inspector.detail["g"] == 1.2 and ex.inspector.detail["size"] == table["size"].max()


def test_spike_definition_mode_adjacency_and_sequence_controls(ex, stack):
    s = ex.scrubber
    s.spike_def.value = "abs"
    np.testing.assert_allclose(s.curves.data[0].y, [b_tot(c, stack.valid) for c in stack.counts[("abs", "rate_matched")]])
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
