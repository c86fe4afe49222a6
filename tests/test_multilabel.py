"""Multi-label (`data.task: multi_label`): the three ways labels come (JSON lists, a separated string,
0/1 columns), the stratified carve, tuned thresholds and the metrics, and runs end to end through
every recipe and family, the CLI's eval and predict, the card and `transformers.pipeline()`."""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAMILIES, NEGATIVE, POSITIVE, tiny_recipe, write_yaml
from sklearn.metrics import f1_score
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from hf_adapt.cli import main
from hf_adapt.config import config_from_dict, DataConfig
from hf_adapt.data import load_task_data, rarest_labels, resolve_task
from hf_adapt.engine import run_recipe
from hf_adapt.errors import HfAdaptError
from hf_adapt.metrics import compute_multilabel_metrics, tune_thresholds
from hf_adapt.trainer import balanced_class_weights

LABELS = ("film", "good", "bad")  # film: a word about films; good / bad: a positive / negative word


def tagged_rows(count: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """Texts whose labels can be read off their words: any number of the three, also none."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        labels = sorted(label for label in LABELS if rng.random() < 0.4)
        words = [rng.choice(["the", "a", "it", "was", "is", "very", "quite"]) for _ in range(rng.randint(1, 3))]
        words += ["movie" if rng.random() < 0.5 else "film"] if "film" in labels else []
        words += [rng.choice(POSITIVE)] if "good" in labels else []
        words += [rng.choice(NEGATIVE)] if "bad" in labels else []
        rng.shuffle(words)
        rows.append((" ".join(words), labels))
    return rows


def write_split(path: Path, rows: list[tuple[str, list[str]]], form: str) -> Path:
    """One split in a given form: 'jsonl' (a list per row), 'separated' ('a;b'), 'columns' (0/1 columns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if form == "jsonl":
        path.write_text("".join(json.dumps({"text": t, "labels": labels}) + "\n" for t, labels in rows))
        return path
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        if form == "separated":
            writer.writerows([("text", "labels"), *((t, ";".join(labels)) for t, labels in rows)])
        else:
            writer.writerows([("text", *LABELS), *((t, *(int(l in labels) for l in LABELS)) for t, labels in rows)])
    return path


FORMS = {"jsonl": {"label_column": "labels"}, "separated": {"label_column": "labels", "label_separator": ";"},
         "columns": {"label_columns": list(LABELS)}}


def multilabel_recipe(model: Path, data: dict[str, Path], output: Path, form: str, **sections: dict) -> dict:
    recipe = tiny_recipe(model, data, output, **sections)
    recipe["data"].update(FORMS[form])
    return recipe


def multilabel_data(directory: Path, form: str = "jsonl", rows: int = 96) -> dict[str, Path]:
    suffix = ".jsonl" if form == "jsonl" else ".csv"
    return {split: write_split(directory / f"{split}{suffix}", tagged_rows(count, seed), form)
            for split, count, seed in (("train", rows, 0), ("validation", rows // 3, 1), ("test", rows // 3, 2))}


# ---------------------------------------------------------------------------------------------
# Reading the labels


@pytest.mark.parametrize("form", FORMS)
def test_the_three_label_forms_read_the_same_labels(form, tmp_path, capsys):
    data = multilabel_data(tmp_path / form, form, rows=40)
    config = DataConfig(train_file=str(data["train"]), validation_file=str(data["validation"]), **FORMS[form])
    task = load_task_data(config)
    assert "task: multi_label (" in capsys.readouterr().err
    assert task.label_map.task == "multi_label" and task.label_map.labels == ("bad", "film", "good")
    assert task.splits["train"]["label"] == [labels for _, labels in tagged_rows(40, 0)]  # empty lists kept
    assert task.label_map.problem_type == "multi_label_classification"


def test_lists_in_a_single_label_or_regression_run_name_the_task_to_set():
    for task in ("single_label", "regression"):
        with pytest.raises(HfAdaptError, match=f"holds lists \\(several labels per text\\), and data.task is {task}; "
                                               f"set data.task: multi_label"):
            resolve_task([["a"], ["b"]], "train.jsonl", "labels", task)


def test_the_carve_stratifies_by_each_rows_rarest_label(tmp_path):
    rows = [(f"text {i}", ["common"] + (["rare"] if i % 20 == 0 else [])) for i in range(100)]  # 5 rare rows
    data = {"train": write_split(tmp_path / "train.jsonl", rows, "jsonl")}
    task = load_task_data(DataConfig(train_file=str(data["train"]), label_column="labels"), seed=0)
    rare = [labels for labels in task.splits["validation"]["label"] if "rare" in labels]
    assert len(rare) == 1 and "stratified by each row's rarest label" in task.sources["validation"]
    assert rarest_labels([["a", "b"], ["a"], []]) == ["b", "a", ""]


# ---------------------------------------------------------------------------------------------
# Thresholds and metrics


def test_thresholds_are_tuned_per_label_on_validation():
    references = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]])
    probs = np.array([[0.35, 0.9, 0.1], [0.32, 0.2, 0.2], [0.1, 0.8, 0.1], [0.05, 0.1, 0.3]])
    thresholds = tune_thresholds(probs, references)
    assert thresholds[0] == pytest.approx(0.3)  # the highest that still takes both low-scored positives
    assert thresholds[1] > 0.2 and thresholds[2] == 0.5  # label 2 has no positive row: left at 0.5
    scores = compute_multilabel_metrics(probs, references, {0: "a", 1: "b", 2: "c"}, thresholds)
    predicted = probs >= thresholds
    assert scores["macro_f1"] == pytest.approx(f1_score(references, predicted, average="macro", zero_division=0))
    assert scores["samples_f1"] == pytest.approx(f1_score(references, predicted, average="samples", zero_division=0))
    assert scores["f1_a"] == 1.0 and scores["f1_a_at_0.5"] == 0.0 and scores["recall_a_at_0.5"] == 0.0
    assert scores["subset_accuracy"] == pytest.approx(np.mean((predicted == references).all(1)))


def test_balanced_weights_are_each_labels_negatives_over_positives():
    train = {"labels": [[1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]}
    from hf_adapt.data import LabelMap

    weights = balanced_class_weights(_Rows(train), LabelMap(("a", "b"), "multi_label"))
    assert weights.tolist() == pytest.approx([1 / 3, 3.0])


class _Rows(dict):
    def __len__(self) -> int:
        return len(self["labels"])


# ---------------------------------------------------------------------------------------------
# End to end

ADAPT = {"full": {}, "partial": {"freeze_embeddings": True, "freeze_layers": 1}, "lora": {}}


@pytest.mark.integration
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("strategy", ADAPT)
def test_multilabel_trains_through_every_recipe_and_family(tiny_models, family, strategy, tmp_path, one_thread):
    data = multilabel_data(tmp_path / "data", rows=32)
    recipe = multilabel_recipe(tiny_models[family], data, tmp_path / "out", "jsonl",
                               adapt={"strategy": strategy, **ADAPT[strategy]}, train={"max_steps": 2})
    result = run_recipe(config_from_dict(recipe))
    assert result.task == "multi_label" and result.labels == ["bad", "film", "good"]
    assert set(result.metrics["test"]) >= {"macro_f1", "micro_f1", "samples_f1", "subset_accuracy",
                                           "macro_f1_at_0.5", "precision_film", "recall_good_at_0.5"}
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert set(config["label_thresholds"]) == {"bad", "film", "good"}


@pytest.mark.integration
def test_multilabel_round_trips_through_eval_predict_card_and_pipeline(tiny_bert, tmp_path, capsys):
    data = multilabel_data(tmp_path / "data", "separated", rows=120)
    output = tmp_path / "out"
    recipe = multilabel_recipe(tiny_bert, data, output, "separated", train={"epochs": 8},
                               optim={"learning_rate": 3e-3, "warmup": 0.0})
    assert main(["train", str(write_yaml(tmp_path / "recipe.yaml", recipe))]) == 0
    assert "decision thresholds tuned on validation: bad " in capsys.readouterr().err
    saved = json.loads((output / "metrics.json").read_text())
    assert saved["metrics"]["test"]["macro_f1"] > 0.6  # the words give the labels away
    config = json.loads((output / "config.json").read_text())
    thresholds, temperature = config["label_thresholds"], config["calibration_temperature"]
    assert saved["extra"]["thresholds"] == thresholds and saved["extra"]["temperature"] == temperature

    # eval reads the labels as training did (the saved recipe's separator) and applies the thresholds
    assert main(["eval", "--model", str(output), "--data", str(data["test"])]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    for key in ("macro_f1", "micro_f1", "samples_f1", "subset_accuracy", "macro_f1_at_0.5", "f1_film"):
        assert evaluated[key] == pytest.approx(saved["metrics"]["test"][key], abs=1e-6), key

    # predict: each label whose calibrated score (sigmoid of logit / temperature) reaches its threshold,
    # and every label's score
    texts = [text for text, _ in tagged_rows(40, 2)]
    (tmp_path / "texts.txt").write_text("\n".join(texts[:6]) + "\n")
    assert main(["predict", "--model", str(output), "--input", str(tmp_path / "texts.txt")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    model = AutoModelForSequenceClassification.from_pretrained(output).eval()
    tokenizer = AutoTokenizer.from_pretrained(output)
    with torch.no_grad():
        probs = (model(**tokenizer(texts[:6], padding=True, return_tensors="pt")).logits / temperature).sigmoid()
    names = [model.config.id2label[i] for i in range(3)]
    for row, p in zip(rows, probs):
        assert row["scores"] == pytest.approx(dict(zip(names, p.tolist())), abs=1e-5)
        assert row["labels"] == [n for n, s in zip(names, p.tolist()) if s >= thresholds[n]]
    classifier = pipeline("text-classification", model=str(output), tokenizer=str(output))
    # the card's way: pipeline's raw logits, divided by the temperature, through the sigmoid
    logits = classifier(texts[0], top_k=None, function_to_apply="none")
    piped = {s["label"]: 1 / (1 + math.exp(-s["score"] / temperature)) for s in logits}
    assert piped == pytest.approx(rows[0]["scores"], abs=1e-5)
    assert [n for n in names if piped[n] >= thresholds[n]] == rows[0]["labels"]

    card = (output / "README.md").read_text()
    assert "A multi-label text classifier over 3 labels" in card
    assert "| threshold | " + " | ".join(f"{thresholds[n]:.2f}" for n in names) + " |" in card
    assert "label_thresholds" in card and 'top_k=None, function_to_apply="none"' in card
    assert "calibration_temperature" in card and "### Calibration" in card
