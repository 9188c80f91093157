"""The live gain stack's params and cache key (computing a stack loads the real model: see
test_explore_run.py)."""

import pytest

from avalanche_nb import live_stack
from avalanche_nb import params as P


def test_live_params_fail_on_a_mistyped_key():
    with pytest.raises(P.ParamsError, match="n_sequence.*did you mean 'n_sequences'"):
        live_stack.live_params("smollm2-135m-instruct", n_sequence=2)
    assert live_stack.live_params("tiny-llama")["n_sequences"] == live_stack.LIVE_DEFAULTS["n_sequences"]


def test_live_cache_key_follows_params_and_code(monkeypatch):
    p = live_stack.live_params("smollm2-135m-instruct")
    key = live_stack.cache_key(p)
    assert live_stack.cache_key(dict(p)) == key and live_stack.cache_key(dict(p) | {"window": 32}) != key
    assert live_stack.cache_key(dict(p) | {"adjacencies": ["moore"], "null_draws": 5}) == key  # not lattice inputs
    real = live_stack.provenance.sha256_file
    monkeypatch.setattr(live_stack.provenance, "sha256_file", lambda path: "edited" if path.name == "lattice.py" else real(path))
    assert live_stack.cache_key(p) != key
