"""Figures exported beside the notebook: CSV with the figure's data, SVG and PNG when Chromium runs."""

import shutil
import time

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from avalanche_nb import figure_export, plots


@pytest.fixture
def exporting(tmp_path, monkeypatch):
    """plots.show exporting into tmp_path (a phase folder) with its per-process state put back afterwards,
    figures recorded instead of displayed, and no browser unless a test starts one."""
    shown = []
    monkeypatch.setattr(go.Figure, "show", lambda fig, *a, **k: shown.append(fig))
    monkeypatch.setattr(figure_export, "_folder", None)
    monkeypatch.setattr(figure_export, "_browser", None)
    monkeypatch.setattr(figure_export, "_no_images", "images off in this test")
    figure_export.export_to(tmp_path)
    return tmp_path, shown


def _error_bar_figure():
    rows = pd.DataFrame({"spike_def": ["pos"] * 3, "g": [0.8, 1.0, 1.2], "gamma": [1.5, 1.6, 1.7],
                         "gamma_lo": [1.4, 1.4, 1.4], "gamma_hi": [1.9, 1.9, 1.9], "gamma_pred": [1.5, 1.55, 1.6]})
    return plots.crackling(rows)


def test_show_displays_and_writes_a_line_figures_data_with_its_error_bars(exporting):
    out, shown = exporting
    fig = _error_bar_figure()
    assert plots.show(fig, "crackling") is None and shown == [fig]
    assert sorted(p.name for p in (out / figure_export.FIGURES).iterdir()) == ["crackling.csv"]
    table = pd.read_csv(out / figure_export.FIGURES / "crackling.csv")
    assert list(table.columns) == ["trace", "x", "y", "error_y_minus", "error_y_plus"]
    assert table.trace.tolist() == ["pos: gamma"] * 3 + ["pos: (alpha_D − 1)/(alpha_S − 1)"] * 3
    np.testing.assert_allclose(table.x, [0.8, 1.0, 1.2] * 2)
    np.testing.assert_allclose(table.y, [1.5, 1.6, 1.7, 1.5, 1.55, 1.6])
    np.testing.assert_allclose(table.error_y_minus[:3], [0.1, 0.2, 0.3])  # gamma - gamma_lo
    np.testing.assert_allclose(table.error_y_plus[:3], [0.4, 0.3, 0.2])  # gamma_hi - gamma
    assert table.error_y_plus[3:].isna().all()  # the prediction has no error bars


def test_show_writes_a_heatmap_as_a_matrix_with_row_and_column_labels(exporting):
    out, _ = exporting
    sink = pd.DataFrame({"layer": [0, 0, 0, 1, 1, 1], "head": [0, 1, 2] * 2, "sink": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]})
    plots.show(plots.layer_head_heatmap(sink, "sink", "t"), "sink_m")
    table = pd.read_csv(out / figure_export.FIGURES / "sink_m.csv")
    assert list(table.columns) == ["layer \\ head", "0", "1", "2"]
    assert table["layer \\ head"].tolist() == [0, 1]
    np.testing.assert_allclose(table[["0", "1", "2"]], [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    # a lattice: tokens along x, layers along y, empty sites blank
    plots.show(plots.lattice_heatmap(np.array([[0, 2], [1, 0], [0, 0]]), ["a", "b", "c"]), "lattice_seq0")
    lattice = pd.read_csv(out / figure_export.FIGURES / "lattice_seq0.csv")
    assert list(lattice.columns) == ["layer \\ token", "0", "1", "2"]
    np.testing.assert_allclose(lattice[["0", "1", "2"]], [[np.nan, 1, np.nan], [2, np.nan, np.nan]])


def test_several_panels_and_heatmaps_are_named_by_their_subplot_titles(exporting):
    out, _ = exporting
    ev = pd.DataFrame({"g": [0.8, 1.0]} | {c: [1.0, 2.0] for c in ("abs_b_tot_minus_1", "chi_perc", "z_tot_n1")}
                      | {f"{c}_se": [0.1, 0.2] for c in ("abs_b_tot_minus_1", "chi_perc", "z_tot_n1")})
    plots.show(plots.gstar_evidence(ev, {"r": 1.0}, "r"), "gstar_evidence")
    table = pd.read_csv(out / figure_export.FIGURES / "gstar_evidence.csv")
    assert list(table.columns) == ["trace", "panel", "x", "y", "error_y_minus", "error_y_plus"]
    assert table.panel.unique().tolist() == ["|b_tot − 1|", "chi_perc", "delta-b z (N1)"]
    sink = pd.DataFrame([{"intervention": i, "layer": l, "head": h, "sink": 0.5 + (i == "zero") * 0.1 * h}
                         for i in ("none", "zero", "mean") for l in range(2) for h in range(2)])
    plots.show(plots.sink_changes(sink, ["zero", "mean"], "m"), "sink_changes_m")
    table = pd.read_csv(out / figure_export.FIGURES / "sink_changes_m.csv")
    assert list(table.columns) == ["trace", "layer \\ head", "0", "1"]
    assert [t.split(" (")[0] for t in table.trace] == ["zero", "zero", "mean", "mean"]
    np.testing.assert_allclose(table[["0", "1"]], [[0, 0.1], [0, 0.1], [0, 0], [0, 0]], atol=1e-12)


def test_names_become_file_names_and_show_outside_a_phase_only_displays(exporting, tmp_path):
    out, shown = exporting
    assert figure_export.slug("profile_HuggingFaceTB/SmolLM2-360M") == "profile_huggingfacetb_smollm2-360m"
    assert figure_export.slug("trajectory_1x32x2x2") == "trajectory_1x32x2x2"
    with pytest.raises(ValueError):
        figure_export.slug("/")
    plots.show(_error_bar_figure(), "profile_Org/Model")
    assert (out / figure_export.FIGURES / "profile_org_model.csv").is_file()
    figure_export.export_to(None)
    plots.show(_error_bar_figure(), "elsewhere")
    assert len(shown) == 2 and not list(tmp_path.rglob("elsewhere.*"))


def test_svg_ids_are_renamed_in_order_with_their_references():
    svg = ('<svg><defs id="defs-3fa9c1"><clipPath id="clip3fa9c1xy"/></defs><g clip-path="url(#clip3fa9c1xy)" '
           'data-id="kept" style="fill: #fff;"><use href="#defs-3fa9c1"/></g></svg>')
    assert figure_export.stable_svg_ids(svg) == ('<svg><defs id="f0"><clipPath id="f1"/></defs><g clip-path="url(#f1)" '
                                         'data-id="kept" style="fill: #fff;"><use href="#f0"/></g></svg>')


class ChromeNotFoundError(Exception):
    """Stands in for kaleido's, which is recognised by its name."""


def test_without_chromium_only_the_csv_is_written_and_that_is_said_once(exporting, monkeypatch, capsys):
    out, _ = exporting
    monkeypatch.setattr(figure_export, "_no_images", None)

    def no_chromium():
        raise ChromeNotFoundError("no browser")

    monkeypatch.setattr(figure_export, "_Browser", no_chromium)
    plots.show(_error_bar_figure(), "first")
    plots.show(_error_bar_figure(), "second")
    assert sorted(p.name for p in (out / figure_export.FIGURES).iterdir()) == ["first.csv", "second.csv"]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "Chromium was not found" in lines[0] and "apt-get install chromium" in lines[0]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Chromium (apt-get install chromium)")
def test_with_chromium_show_writes_svg_and_png_from_one_browser(exporting, monkeypatch, capsys):
    out, _ = exporting
    monkeypatch.setattr(figure_export, "_no_images", None)
    t0 = time.perf_counter()
    plots.show(_error_bar_figure(), "crackling")
    started = figure_export._browser
    t1 = time.perf_counter()
    plots.show(plots.lattice_heatmap(np.array([[0, 2], [1, 0]]), ["a", "b"]), "lattice_seq0")
    t2 = time.perf_counter()
    try:
        assert started is not None and figure_export._browser is started  # one browser for every figure
        for stem in ("crackling", "lattice_seq0"):
            assert (out / figure_export.FIGURES / f"{stem}.svg").read_text().lstrip().startswith("<svg")
            assert (out / figure_export.FIGURES / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert (out / figure_export.FIGURES / f"{stem}.csv").is_file()
        assert capsys.readouterr().out == ""
        print(f"first figure (browser start included) {t1 - t0:.1f} s, next {t2 - t1:.1f} s")
        # plotly.js draws random ids; the exported SVG names them in order, so the same figure, same bytes
        plots.show(_error_bar_figure(), "crackling_again")
        for ext in (".svg", ".png"):
            assert (out / figure_export.FIGURES / f"crackling{ext}").read_bytes() == \
                (out / figure_export.FIGURES / f"crackling_again{ext}").read_bytes()
    finally:
        started.close()
