"""Frozen-prefix caching: exact on every family, the same training as without it, and a whole
model saved at the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import FAMILIES, make_tokenizer, tiny_config, tiny_recipe
from datasets import Dataset
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_adapt import caching
from hf_adapt.caching import FrozenPrefixCache, StateStore
from hf_adapt.config import config_from_dict
from hf_adapt.engine import run_recipe
from hf_adapt.errors import HfAdaptError
from hf_adapt.inference import evaluate_file
from hf_adapt.pooling import append_mean_pooling_layer

TEXTS = ["good movie", "the plot was very bad and boring and dull", "nice",
         "it is the worst film and the story is ugly really", "superb"]


def encoded_texts(tokenizer) -> Dataset:
    encoded = tokenizer(TEXTS)
    encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
    encoded["labels"] = [i % 2 for i in range(len(TEXTS))]
    return Dataset.from_dict(dict(encoded))


def frozen_model(directory: Path):
    model = AutoModelForSequenceClassification.from_pretrained(directory)
    return model.requires_grad_(False), AutoTokenizer.from_pretrained(directory)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def no_dropout_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT without dropout: cached and uncached training must then agree step for step."""
    directory = tmp_path_factory.mktemp("bert_no_dropout")
    torch.manual_seed(0)
    config = tiny_config(num_hidden_layers=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(directory)
    make_tokenizer(directory).save_pretrained(directory)
    return directory


def partial(model_dir: Path, data: dict, out: Path, layers: int = 2, **train) -> dict:
    return tiny_recipe(model_dir, data, out, adapt={"strategy": "partial", "freeze_embeddings": True,
                                                    "freeze_layers": layers},
                       train={"epochs": 2, **train})


def saved_weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


# ---------------------------------------------------------------------------------------------
# The cached forward pass


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_cached_forward_matches_the_full_model(tiny_models, family):
    model, tokenizer = frozen_model(tiny_models[family])
    dataset = encoded_texts(tokenizer)
    cache = FrozenPrefixCache(model, 1, tokenizer)
    cache.build(model, dataset)
    assert cache.check(model, dataset) is None
    # stored without padding: one row per real token
    assert cache.stores["train"].data.shape == (sum(dataset["length"]), model.config.hidden_size)


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "electra"])
def test_cached_features_match_the_full_model(tiny_models, family):
    model, tokenizer = frozen_model(tiny_models[family])
    dataset = encoded_texts(tokenizer)
    cache = FrozenPrefixCache(model, 2, tokenizer)  # all layers: the head's first-token features
    assert cache.features
    cache.build(model, dataset)
    assert cache.stores["train"].data.shape == (len(TEXTS), model.config.hidden_size)
    assert cache.check(model, dataset) is None


def test_check_catches_wrong_states_and_uncuttable_families(tiny_models):
    model, tokenizer = frozen_model(tiny_models["bert"])
    dataset = encoded_texts(tokenizer)
    cache = FrozenPrefixCache(model, 1, tokenizer)
    cache.build(model, dataset)
    cache.stores["train"].data += 0.01
    assert "differ" in cache.check(model, dataset)
    # DeBERTa-v2's encoder cannot run with no layers at all: the features path is refused.
    model, tokenizer = frozen_model(tiny_models["deberta-v2"])
    cache = FrozenPrefixCache(model, 2, tokenizer)
    cache.build(model, encoded_texts(tokenizer))
    assert cache.check(model, encoded_texts(tokenizer)) is not None


def test_model_is_whole_after_a_cached_forward(tiny_models):
    model, tokenizer = frozen_model(tiny_models["electra"])
    names = [n for n, _ in model.named_parameters()]
    dataset = encoded_texts(tokenizer)
    cache = FrozenPrefixCache(model, 1, tokenizer)
    cache.build(model, dataset)
    batch = tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    cache.forward(model, dict(batch), [0, 1])
    assert [n for n, _ in model.named_parameters()] == names


def test_stale_cache_falls_back_to_the_full_model(tiny_models, capsys):
    model, tokenizer = frozen_model(tiny_models["bert"])
    dataset = encoded_texts(tokenizer)
    cache = FrozenPrefixCache(model, 1, tokenizer)
    cache.build(model, dataset)
    cache.stores["train"].data.zero_()  # a cached forward would now give different logits
    model.eval()
    batch = dict(tokenizer(TEXTS[:2], padding=True, return_tensors="pt"))
    model.bert.encoder.layer[0].requires_grad_(True)  # e.g. a callback unfreezes a cached layer
    assert torch.equal(cache.forward(model, batch, [0, 1]).logits, model(**batch).logits)
    assert "a cached layer started training" in capsys.readouterr().err


def test_state_store_memory_maps_to_a_file_and_removes_it(tmp_path):
    store = StateStore([2, 3], 4, tmp_path / "cache.npy")
    store.put(1, torch.arange(12.0).view(3, 4))
    gathered = store.gather([1, 0], width=3)
    assert torch.equal(gathered[0], torch.arange(12.0).view(3, 4))
    assert (tmp_path / "cache.npy").is_file()
    store.close()
    assert not (tmp_path / "cache.npy").exists()


# ---------------------------------------------------------------------------------------------
# Training with the cache


@pytest.mark.integration
def test_cached_training_equals_uncached_training(no_dropout_bert, sentiment_csvs, tmp_path):
    cached = run_recipe(config_from_dict(partial(no_dropout_bert, sentiment_csvs, tmp_path / "cached")))
    plain = run_recipe(config_from_dict(partial(no_dropout_bert, sentiment_csvs, tmp_path / "plain",
                                                cache_frozen=False)))
    assert cached.train["frozen_cache"]["layers"] == 2 and not cached.train["frozen_cache"]["on_disk"]
    assert cached.train["frozen_cache"]["cached_steps"] == cached.train["steps"] == 12  # every step: 2 x 96/16
    assert "off" in plain.train["frozen_cache"]
    assert len(cached.train["epoch_seconds"]) == 2
    before = saved_weights(no_dropout_bert)
    after_cached, after_plain = saved_weights(tmp_path / "cached"), saved_weights(tmp_path / "plain")
    for name, value in after_cached.items():
        torch.testing.assert_close(value, after_plain[name], atol=2e-5, rtol=1e-4, msg=name)
        frozen = "embeddings" in name or ".layer.0." in name or ".layer.1." in name
        if frozen:
            assert torch.equal(value, before[name]), f"{name} is frozen but moved"
    assert not torch.equal(after_cached["bert.encoder.layer.2.attention.self.query.weight"],
                           before["bert.encoder.layer.2.attention.self.query.weight"])
    assert cached.train["train_loss"] == pytest.approx(plain.train["train_loss"], abs=1e-5)
    assert cached.metrics["test"]["accuracy"] == plain.metrics["test"]["accuracy"]
    # the saved (whole) model reloads and scores what the run reported
    reloaded = evaluate_file(tmp_path / "cached", sentiment_csvs["test"], max_length=32)
    assert reloaded["accuracy"] == pytest.approx(cached.metrics["test"]["accuracy"])


@pytest.mark.integration
def test_large_cache_goes_to_disk_with_the_same_result(no_dropout_bert, sentiment_csvs, tmp_path, monkeypatch):
    monkeypatch.setattr(caching, "MEMORY_LIMIT_BYTES", 0)
    on_disk = run_recipe(config_from_dict(partial(no_dropout_bert, sentiment_csvs, tmp_path / "disk",
                                                  keep_checkpoints=True, epochs=1)))
    assert on_disk.train["frozen_cache"]["on_disk"]
    assert not list((tmp_path / ".disk.work").glob("frozen_prefix_*"))  # removed when training ended
    monkeypatch.setattr(caching, "MEMORY_LIMIT_BYTES", 2**40)
    in_memory = run_recipe(config_from_dict(partial(no_dropout_bert, sentiment_csvs, tmp_path / "mem", epochs=1)))
    assert not in_memory.train["frozen_cache"]["on_disk"]
    for name, value in saved_weights(tmp_path / "disk").items():
        assert torch.equal(value, saved_weights(tmp_path / "mem")[name]), name


@pytest.mark.integration
def test_trainable_embeddings_are_not_cached(tiny_bert, sentiment_csvs, tmp_path, capsys):
    recipe = tiny_recipe(tiny_bert, sentiment_csvs, tmp_path / "out",
                         adapt={"strategy": "partial", "freeze_layers": 1})
    result = run_recipe(config_from_dict(recipe))
    assert "the embeddings train" in result.train["frozen_cache"]["off"]
    assert "frozen-prefix cache off: the embeddings train" in capsys.readouterr().err


@pytest.mark.integration
def test_frozen_encoder_trains_the_head_on_cached_features(tiny_bert, sentiment_csvs, tmp_path):
    recipe = tiny_recipe(tiny_bert, sentiment_csvs, tmp_path / "out", adapt={"strategy": "partial",
                         "freeze_encoder": True}, optim={"learning_rate": 1e-2, "warmup": 0.0},
                         train={"epochs": 5, "batch_size": 8, "keep": "best"})
    result = run_recipe(config_from_dict(recipe))
    assert result.train["frozen_cache"]["features"] and result.train["epochs"] == 5
    assert result.train["steps"] == result.train["frozen_cache"]["cached_steps"] == 5 * 12  # 96 rows / 8
    assert len(result.train["epoch_seconds"]) == 5
    before, after = saved_weights(tiny_bert), saved_weights(tmp_path / "out")
    untrained = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    pooling_layer = append_mean_pooling_layer(untrained).state_dict()
    for name, value in after.items():
        if name.startswith("bert.encoder.layer.2."):  # the mean-pooling layer added on top, frozen too
            assert torch.equal(value, pooling_layer[name.removeprefix("bert.encoder.layer.2.")]), name
        elif name.startswith("bert.") and not name.startswith("bert.pooler"):
            assert torch.equal(value, before[name]), f"{name} is in the frozen encoder but moved"
    assert not torch.equal(after["classifier.weight"], before["classifier.weight"])
    assert not torch.equal(after["bert.pooler.dense.weight"], before["bert.pooler.dense.weight"])
    # the best epoch's head was kept; the full model scores the same on validation as the features did
    recorded = json.loads((tmp_path / "out" / "metrics.json").read_text())["train"]["best_metric"]
    assert result.metrics["validation"]["accuracy"] == pytest.approx(recorded)
    reloaded = evaluate_file(tmp_path / "out", sentiment_csvs["test"], max_length=32)
    assert reloaded["accuracy"] == pytest.approx(result.metrics["test"]["accuracy"])


@pytest.mark.integration
def test_frozen_encoder_falls_back_where_features_cannot_be_cut(tiny_models, sentiment_csvs, tmp_path, capsys):
    recipe = tiny_recipe(tiny_models["deberta-v2"], sentiment_csvs, tmp_path / "out",
                         adapt={"strategy": "partial", "freeze_encoder": True})
    result = run_recipe(config_from_dict(recipe))
    assert "off" in result.train["frozen_cache"]
    assert "frozen-prefix cache off" in capsys.readouterr().err
    assert result.train["steps"] == 6  # the normal Trainer path ran: 96 rows / 16


def test_threads_must_be_positive(tiny_bert, sentiment_csvs, tmp_path):
    with pytest.raises(HfAdaptError, match="train.threads must be > 0"):
        config_from_dict(tiny_recipe(tiny_bert, sentiment_csvs, tmp_path / "out", train={"threads": 0}))
