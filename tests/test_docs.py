"""The generated references: docs/PARAMS.md and docs/ARTIFACTS.md equal what the code generates."""

from pathlib import Path

from avalanche_nb import docs

ROOT = Path(__file__).resolve().parent.parent


def test_the_generated_references_are_current():
    """docs/PARAMS.md and docs/ARTIFACTS.md are generated from the code: `python -m avalanche_nb.docs`."""
    assert (ROOT / "docs" / "PARAMS.md").read_text() == docs.params_markdown()
    assert (ROOT / "docs" / "ARTIFACTS.md").read_text() == docs.artifacts_markdown()
