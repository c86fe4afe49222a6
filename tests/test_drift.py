"""Drift: `model.init_from` continues from an earlier hf_adapt run on new data, with the same
labels (every weight carries over) or a changed label set (encoder kept, fresh output layer),
and reports retention on the old data beside accuracy on the new."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_recipe, write_sentiment_csvs
from safetensors.torch import load_file
from transformers import TrainerCallback

from hf_adapt.config import config_from_dict
from hf_adapt.engine import run_recipe
from hf_adapt.errors import HfAdaptError
from hf_adapt.modeling import encoder_layout, load_trained

PROBE_TEXTS = ["good movie", "the plot was awful", "quite dull and boring", "a superb story"]


class StartingPoint(TrainerCallback):
    """Records the model's weights and logits on PROBE_TEXTS before the first training step."""

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        self.state_dict = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        self.encoder = {k: v.detach().cpu().clone() for k, v in encoder_layout(model).base.state_dict().items()}
        self.logits = logits(model, processing_class)
        self.labels = dict(model.config.id2label)


def logits(model: torch.nn.Module, tokenizer) -> torch.Tensor:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        batch = tokenizer(PROBE_TEXTS, padding=True, return_tensors="pt").to(next(model.parameters()).device)
        out = model(**batch).logits.cpu()  # a run on a GPU leaves the model there
    model.train(was_training)
    return out


@pytest.fixture(scope="module")
def old_data(tmp_path_factory) -> dict[str, Path]:
    return write_sentiment_csvs(tmp_path_factory.mktemp("old_data"))


@pytest.fixture(scope="module")
def run_a(tiny_models, old_data, tmp_path_factory) -> Path:
    """Run A: the 'old' model, trained on labels {negative, positive} (shared: no test changes it)."""
    output = tmp_path_factory.mktemp("run_a") / "run_a"
    return Path(run_recipe(config_from_dict(tiny_recipe(tiny_models["bert"], old_data, output))).output_dir)


def relabel(paths: dict[str, Path], mapping: dict[str, str], directory: Path) -> dict[str, Path]:
    """Copies of the CSVs with labels renamed through `mapping`."""
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, path in paths.items():
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        out[split] = directory / path.name
        with out[split].open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows({"text": r["text"], "label": mapping.get(r["label"], r["label"])} for r in rows)
    return out


@pytest.mark.integration
def test_same_labels_continue_from_every_weight_of_the_earlier_run(run_a, tiny_bert, tmp_path):
    new_data = write_sentiment_csvs(tmp_path / "new", seed=1)
    start = StartingPoint()
    recipe = tiny_recipe(tiny_bert, new_data, tmp_path / "run_b", model={"init_from": str(run_a)})
    result = run_recipe(config_from_dict(recipe), callbacks=[start])
    saved_a = load_file(run_a / "model.safetensors")
    assert set(saved_a) <= set(start.state_dict)
    assert all(torch.equal(start.state_dict[k], v) for k, v in saved_a.items())
    model_a, tokenizer_a = load_trained(run_a)
    assert torch.allclose(start.logits, logits(model_a, tokenizer_a), atol=1e-6)  # B starts predicting as A
    assert result.labels == ["negative", "positive"]
    assert json.loads((Path(result.output_dir) / "metrics.json").read_text())["base_model"] == str(tiny_bert)


@pytest.mark.integration
def test_a_new_label_resizes_the_head_and_keeps_the_encoder(run_a, tiny_bert, tmp_path, capsys):
    new_data = write_sentiment_csvs(tmp_path / "new", seed=1, three_classes=True)
    start = StartingPoint()
    recipe = tiny_recipe(tiny_bert, new_data, tmp_path / "run_b", model={"init_from": str(run_a)})
    result = run_recipe(config_from_dict(recipe), callbacks=[start])
    assert ("labels changed from [negative, positive] to [negative, neutral, positive]; keeping the encoder"
            in capsys.readouterr().err)
    model_a, _ = load_trained(run_a)
    encoder_a = encoder_layout(model_a).base.state_dict()
    assert all(torch.equal(start.encoder[k], v) for k, v in encoder_a.items())
    assert start.logits.shape == (len(PROBE_TEXTS), 3)
    assert start.labels == {0: "negative", 1: "neutral", 2: "positive"}
    model_b, _ = load_trained(result.output_dir)  # the resized model saves and reloads with plain transformers
    assert model_b.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    assert model_b.classifier.out_features == 3


@pytest.mark.integration
def test_renamed_labels_of_the_same_count_get_a_fresh_output_layer(run_a, tiny_bert, old_data, tmp_path, capsys):
    renamed = relabel(old_data, {"negative": "bad", "positive": "good"}, tmp_path / "renamed")
    start = StartingPoint()
    recipe = tiny_recipe(tiny_bert, renamed, tmp_path / "run_b", model={"init_from": str(run_a)})
    run_recipe(config_from_dict(recipe), callbacks=[start])
    assert "labels changed from [negative, positive] to [bad, good]" in capsys.readouterr().err
    saved_a = load_file(run_a / "model.safetensors")
    assert not torch.equal(start.state_dict["classifier.weight"], saved_a["classifier.weight"])
    assert torch.all(start.state_dict["classifier.bias"] == 0)
    assert torch.equal(start.state_dict["bert.encoder.layer.1.output.dense.weight"],
                       saved_a["bert.encoder.layer.1.output.dense.weight"])


@pytest.mark.integration
def test_continuing_from_a_lora_adapter_run_starts_from_its_merged_weights(tiny_bert, sentiment_csvs, tmp_path):
    adapter_run = run_recipe(config_from_dict(tiny_recipe(
        tiny_bert, sentiment_csvs, tmp_path / "run_a", adapt={"strategy": "lora", "merge_lora": False},
        optim={"learning_rate": 1e-2})))
    start = StartingPoint()
    recipe = tiny_recipe(tiny_bert, write_sentiment_csvs(tmp_path / "new", seed=1), tmp_path / "run_b",
                         model={"init_from": adapter_run.output_dir})
    run_recipe(config_from_dict(recipe), callbacks=[start])
    model_a, tokenizer_a = load_trained(adapter_run.output_dir)
    assert torch.allclose(start.logits, logits(model_a, tokenizer_a), atol=1e-5)


@pytest.mark.integration
def test_old_data_retention_is_reported_beside_new_data_accuracy(run_a, tiny_bert, old_data, tmp_path):
    new_data = write_sentiment_csvs(tmp_path / "new", seed=1)
    recipe = tiny_recipe(tiny_bert, new_data, tmp_path / "run_b", model={"init_from": str(run_a)},
                         forgetting={"probe": str(old_data["validation"])})
    result = run_recipe(config_from_dict(recipe))
    saved = json.loads((Path(result.output_dir) / "metrics.json").read_text())
    forgetting = saved["extra"]["forgetting"]
    assert forgetting["probe_kind"] == "labelled" and forgetting["metric"] == "accuracy"
    assert forgetting["base"] == str(run_a)
    # "before" is run A on its own validation file: the accuracy A reported for it.
    accuracy_a = json.loads((run_a / "metrics.json").read_text())["metrics"]["validation"]["accuracy"]
    assert forgetting["before"] == pytest.approx(accuracy_a)
    assert forgetting["retention"] == pytest.approx(forgetting["after"] / forgetting["before"])
    assert "accuracy" in saved["metrics"]["validation"]


def test_a_probe_with_labels_the_new_model_lacks_fails_before_training(run_a, tiny_bert, old_data, tmp_path):
    renamed = relabel(old_data, {"negative": "bad", "positive": "good"}, tmp_path / "renamed")
    output = tmp_path / "run_b"
    recipe = tiny_recipe(tiny_bert, renamed, output, model={"init_from": str(run_a)},
                         forgetting={"probe": str(old_data["validation"])})
    with pytest.raises(HfAdaptError, match="label 'negative' is not among the labels of the new data"):
        run_recipe(config_from_dict(recipe))
    assert not output.exists() and not (tmp_path / ".run_b.work").exists()


def test_init_from_a_run_of_another_base_model_is_refused(run_a, tiny_models, old_data, tmp_path):
    recipe = tiny_recipe(tiny_models["roberta"], old_data, tmp_path / "run_b", model={"init_from": str(run_a)})
    with pytest.raises(HfAdaptError, match="was fine-tuned from .* but model.name_or_path is"):
        config_from_dict(recipe)


def test_init_from_with_an_unmerged_lora_output_is_refused(run_a, tiny_bert, old_data, tmp_path):
    recipe = tiny_recipe(tiny_bert, old_data, tmp_path / "run_b", model={"init_from": str(run_a)},
                         adapt={"strategy": "lora", "merge_lora": False})
    with pytest.raises(HfAdaptError, match="needs adapt.merge_lora: true"):
        config_from_dict(recipe)
