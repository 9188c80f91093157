"""The phase registry: unique artifact names, reads of earlier phases only, lookup by number."""

import pytest

from avalanche_nb import phases


def test_the_registry_is_consistent():
    names = [a.name for p in phases.PHASES for a in p.writes]
    assert len(names) == len(set(names))  # an artifact name says which phase wrote it
    for p in phases.PHASES:
        for r in p.reads:
            assert phases.names().index(phases.producer(r).name) < phases.names().index(p.name)
    assert phases.get("03").name == "03_gain_sweep"
    with pytest.raises(KeyError, match="unknown phase"):
        phases.get("99")
