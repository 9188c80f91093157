"""Progress reporting: records under the runner, nothing when disabled, readable lines."""

import json

from avalanche_nb import progress


def test_track_reports_each_item_with_an_eta_to_the_runners_file(tmp_path, monkeypatch):
    path = tmp_path / "progress"
    monkeypatch.setenv(progress.ENV, str(path))
    assert list(progress.track([3, 1, 2], "sweep all", unit="gain")) == [3, 1, 2]
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["done"] for r in recs] == [0, 1, 2, 3] and all(r["total"] == 3 for r in recs)
    assert recs[-1]["eta"] == 0 and recs[1]["eta"] >= 0
    assert progress.describe(recs[0]) == "sweep all: 0/3 gains"
    assert progress.describe({"step": "x", "done": 1, "total": 4, "unit": "step", "elapsed": 75.0, "eta": 225.0}) \
        == "x: 1/4 steps, 1 min 15 s so far, about 3 min 45 s left"


def test_disabled_progress_writes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "progress"
    monkeypatch.setenv(progress.ENV, str(path))
    monkeypatch.setattr(progress, "ENABLED", False)
    assert list(progress.track(range(3), "quiet")) == [0, 1, 2] and not path.exists()
