"""The shared figures carry the numbers they claim to show, and plots.show exports each one into the
phase folder: its data as CSV, and SVG + PNG where Chromium runs."""

import numpy as np
import pandas as pd
from scipy.special import zeta

from avalanche_nb import plots


def test_ccdf_is_the_empirical_survival_function_and_the_fit_is_anchored_at_xmin():
    x = np.array([1, 1, 2, 3, 3, 3, 10])
    fig = plots.ccdf({"a": x}, "t", "size", fits={"a": (2.5, 3.0)})
    emp, fit = fig.data
    np.testing.assert_array_equal(emp.x, [1, 2, 3, 10])
    np.testing.assert_allclose(emp.y, [1.0, 5 / 7, 4 / 7, 1 / 7])  # P(X >= x)
    assert fit.x[0] == 3 and fit.x[-1] == 10
    np.testing.assert_allclose(fit.y[0], 4 / 7)  # the fit starts at the empirical tail mass
    np.testing.assert_allclose(fit.y[-1], 4 / 7 * zeta(2.5, 10) / zeta(2.5, 3))


def test_ccdf_skips_empty_samples_and_missing_fits():
    fig = plots.ccdf({"empty": np.array([]), "b": np.array([1, 2])}, "t", "x", fits={"b": (np.nan, np.nan)})
    assert len(fig.data) == 1


def test_null_bands_draw_each_nulls_interval():
    rows = pd.DataFrame({"g": [0.9, 1.0], "b_tot": [1.0, 1.1]})
    for null in ("n1", "n2", "n3"):
        rows[f"{null}_b_tot_lo"], rows[f"{null}_b_tot_hi"], rows[f"{null}_b_tot_mean"] = [0.1, 0.2], [0.3, 0.4], [0.2, 0.3]
    fig = plots.null_bands(rows, "tot", "t")
    band = fig.data[0]
    np.testing.assert_allclose(band.y, [0.3, 0.4, 0.2, 0.1])  # hi forward, lo backward
    np.testing.assert_allclose(fig.data[-1].y, [1.0, 1.1])


def test_lattice_hover_shows_token_text_not_numpy_reprs():
    counts = np.array([[0, 2], [1, 0]])
    text = np.array(["·during", "⏎"])  # numpy strings, as a GainStack's token_text holds them
    hover = plots.lattice_hover(counts, text, labels=np.array([[0, 1], [2, 0]]))
    assert hover[1][0] == "t=0 '·during'<br>layer 1<br>spikes 2<br>avalanche 1"
    assert not any("np.str_" in cell for row in hover for cell in row)


# -- plots.show: displayed, and exported into the phase folder's figures/ ------------------------------
