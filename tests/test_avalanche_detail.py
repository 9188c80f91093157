"""One sequence's avalanches by hand, one avalanche's detail on the hand-made stack, and its export."""

import json

import numpy as np
import pandas as pd
import pytest

from avalanche_nb import avalanche_detail
from hand_stack import T, hand_lattice


def test_sequence_avalanches_by_hand():
    valid = np.ones(T, bool)
    labels, table = avalanche_detail.sequence_avalanches(hand_lattice(), valid, "von_neumann")
    assert table.id.tolist() == [1, 2, 3]  # raster order (token, layer) of each first site
    assert table[["size", "n_sites", "t0", "t1", "l0", "l1"]].values.tolist() == [
        [6, 3, 1, 2, 0, 1], [1, 1, 4, 4, 2, 2], [2, 1, 5, 5, 1, 1]]
    assert labels[2, 1] == 1 and labels[4, 2] == 2 and labels[5, 1] == 3 and (labels > 0).sum() == 5
    _, moore = avalanche_detail.sequence_avalanches(hand_lattice(), valid, "moore")
    assert moore[["size", "n_sites", "t_span", "l_span"]].values.tolist() == [[6, 3, 2, 2], [3, 2, 2, 2]]


def test_avalanche_detail_and_export(stack, tmp_path):
    d = avalanche_detail.avalanche_detail(stack, 1, 0, 1, spike_def="pos", mode="rate_matched", adjacency="von_neumann")
    assert (d["size"], d["n_sites"], d["t_span"], d["l_span"], d["layers"]) == (6, 3, 2, 2, [0, 1])
    assert d["tokens"] == ["t01", "t02"]
    assert d["sites"][["token", "layer", "spikes_pos", "spikes_abs"]].values.tolist() == [
        [1, 0, 2, 3], [2, 0, 1, 2], [2, 1, 3, 4]]
    js, csv = avalanche_detail.export_avalanche(d, tmp_path / "out")
    assert js.name == "avalanche_g1_pos_rate_matched_von_neumann_seq0_id1.json"
    saved = json.loads(js.read_text())
    assert saved["size"] == 6 and len(saved["sites"]) == 3 and saved["source"] == "hand-made"
    assert pd.read_csv(csv).spikes_abs.tolist() == [3, 2, 4]
    with pytest.raises(ValueError, match="avalanches 1..3"):
        avalanche_detail.avalanche_detail(stack, 1, 0, 4)
