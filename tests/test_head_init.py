"""The head started as a linear probe (`adapt.head_init`, hf_adapt.head_init): when `auto` picks it, that
the output layer then predicts as the fitted logistic regression, and the run records it."""

import csv

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from conftest import tiny_recipe, write_sentiment_csvs
from hf_adapt.config import AdaptConfig, config_from_dict
from hf_adapt.errors import HfAdaptError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("adapt, task, labels, per_label, expected", [
    ({"strategy": "full"}, "single_label", 3, 8, "probe"),  # few-shot, several labels: LP-FT
    ({"strategy": "full"}, "single_label", 28, 64, "probe"),
    ({"strategy": "full"}, "single_label", 2, 8, "random"),  # binary: measured to cost accuracy
    ({"strategy": "full"}, "single_label", 3, 65, "random"),  # not few-shot
    ({"strategy": "full"}, "single_label", 3, None, "random"),  # streamed: rows not known ahead
    ({"strategy": "full"}, "multi_label", 28, 8, "random"),
    ({"strategy": "lora"}, "single_label", 3, 8, "random"),  # measured under full only
    ({"strategy": "partial", "freeze_encoder": True}, "single_label", 3, 8, "random"),
    ({"strategy": "full", "head_init": "random"}, "single_label", 3, 8, "random"),  # an explicit value wins
    ({"strategy": "lora", "head_init": "probe"}, "single_label", 2, 10_000, "probe"),
])
def test_auto_head_init_follows_the_task_and_the_rows_per_label(adapt, task, labels, per_label, expected):
    from hf_adapt.head_init import resolve_head_init

    assert resolve_head_init(AdaptConfig(**adapt), task, labels, per_label) == expected


def test_a_probe_needs_single_label_classification():
    from hf_adapt.head_init import resolve_head_init

    with pytest.raises(HfAdaptError, match="head_init: probe .* this task is regression"):
        resolve_head_init(AdaptConfig(head_init="probe"), "regression", 1, 8)


def test_bad_head_init_values_are_refused(tiny_bert, sentiment_csvs, tmp_path):
    with pytest.raises(HfAdaptError, match="adapt.head_init must be auto, random or probe, got 'linear'"):
        config_from_dict(tiny_recipe(tiny_bert, sentiment_csvs, tmp_path / "out", adapt={"head_init": "linear"}))
    with pytest.raises(HfAdaptError, match="head_init: probe reads every training row .* data.streaming"):
        recipe = tiny_recipe(tiny_bert, sentiment_csvs, tmp_path / "out", adapt={"head_init": "probe"},
                             train={"max_steps": 4})
        recipe["data"]["streaming"] = True
        config_from_dict(recipe)


@pytest.mark.parametrize("three_classes", [False, True])
def test_the_probed_head_predicts_as_the_fitted_regression(tiny_bert, tmp_path, three_classes):
    """The output layer after `fit_probe_head` gives the logistic regression's labels on its own
    training rows (binary: its one score split across the two logits)."""
    from datasets import Dataset
    from sklearn.linear_model import LogisticRegression

    from hf_adapt.head_init import fit_probe_head, read_head_inputs

    paths = write_sentiment_csvs(tmp_path, rows=24, three_classes=three_classes)
    with paths["train"].open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    names = sorted({row["label"] for row in rows})
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=len(names),
                                                               ignore_mismatched_sizes=True)
    encoded = tokenizer([row["text"] for row in rows], truncation=True, max_length=32)
    train = Dataset.from_dict({**encoded, "labels": [names.index(row["label"]) for row in rows]})

    head = fit_probe_head(model, train, tokenizer)

    features, labels = read_head_inputs(model, train, tokenizer)
    probe = LogisticRegression(C=1.0, max_iter=1000).fit(features, labels)
    model.eval()
    with torch.no_grad():
        logits = model(**tokenizer.pad({k: encoded[k] for k in ("input_ids", "attention_mask")},
                                       return_tensors="pt")).logits
    assert logits.argmax(-1).tolist() == probe.predict(features).tolist()
    assert head == {"method": "probe", "c": 1.0, "rows": 24, "train_accuracy": round(probe.score(features, labels), 4)}


@pytest.mark.integration
def test_few_shot_runs_with_several_labels_start_from_a_probe(tiny_bert, tmp_path):
    """8 rows per label, 3 labels, full: `auto` fits the probe, the card says so and the model reloads;
    `random` keeps the model's own head, and the binary data's run does not probe."""
    from transformers import pipeline

    from hf_adapt.engine import run_recipe

    three = write_sentiment_csvs(tmp_path / "three", rows=24, three_classes=True)
    result = run_recipe(config_from_dict(tiny_recipe(tiny_bert, three, tmp_path / "probe", train={"epochs": 2})))
    assert result.extra["head_init"]["method"] == "probe" and result.extra["head_init"]["rows"] == 24
    assert "started as a logistic regression" in (tmp_path / "probe" / "README.md").read_text()
    assert pipeline("text-classification", model=str(tmp_path / "probe"))("a good film")[0]["label"] in (
        "negative", "neutral", "positive")
    kept = run_recipe(config_from_dict(tiny_recipe(tiny_bert, three, tmp_path / "random", train={"epochs": 2},
                                                   adapt={"head_init": "random"})))
    assert "head_init" not in kept.extra
    two = write_sentiment_csvs(tmp_path / "two", rows=16)
    binary = run_recipe(config_from_dict(tiny_recipe(tiny_bert, two, tmp_path / "binary", train={"epochs": 2})))
    assert "head_init" not in binary.extra
