"""Task types (`data.task`): how `auto` decides, the stratified validation carve, regression metrics,
and regression (single texts and pairs) end to end through every recipe and family, the CLI's
eval and predict, the card and `transformers.pipeline()`."""

from __future__ import annotations

import csv
import json
import random
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import FAMILIES, NEGATIVE, NEUTRAL, POSITIVE, logits_of, tiny_recipe, write_sentiment_csvs, write_yaml
from scipy.stats import pearsonr, spearmanr
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from hf_adapt.cli import main
from hf_adapt.config import config_from_dict, DataConfig
from hf_adapt.data import load_task_data, resolve_task, stratified_sample
from hf_adapt.engine import run_recipe
from hf_adapt.errors import HfAdaptError
from hf_adapt.metrics import best_metric, compute_regression_metrics
from hf_adapt.schedule import plan_training
from hf_adapt.trainer import build_training_arguments

# ---------------------------------------------------------------------------------------------
# data.task: auto


@pytest.mark.parametrize(("values", "task", "why"), [
    (["positive", "negative", "positive"], "single_label", "holds label names"),
    ([0, 1, 1, 0], "single_label", "holds 2 distinct whole numbers, read as class ids"),
    ([1.0, 3.0, 2.0], "single_label", "holds 3 distinct whole numbers"),  # a CSV column with a NaN: floats
    ([0.5, 3.8, 2.0, 4.2], "regression", "holds numbers that are not whole (e.g. 0.5): a number to predict"),
])
def test_auto_decides_the_task_from_the_labels_and_says_why(values, task, why, capsys):
    assert resolve_task(values, "train.csv", "label") == task
    assert f"task: {task} (column 'label' {why}" in capsys.readouterr().err


def test_an_explicit_task_is_taken_as_given_and_says_nothing(capsys):
    assert resolve_task([0, 1, 2, 3], "train.csv", "stars", "regression") == "regression"
    assert resolve_task([0.5, 1.5], "train.csv", "stars", "single_label") == "single_label"
    assert capsys.readouterr().err == ""


def test_auto_refuses_many_whole_numbers_as_ambiguous():
    with pytest.raises(HfAdaptError, match="holds 51 distinct whole numbers: class ids or a number to predict"):
        resolve_task(list(range(51)), "train.csv", "label")


# ---------------------------------------------------------------------------------------------
# The stratified validation carve


def test_the_carve_keeps_every_label_on_both_sides_and_its_share():
    labels = ["common"] * 90 + ["rare"] * 2 + ["rarer"] * 1 + ["mid"] * 20
    held = stratified_sample(labels, 0.1, seed=0)
    validation = [labels[i] for i in held]
    training = [labels[i] for i in range(len(labels)) if i not in held]
    assert validation.count("common") == 9 and validation.count("mid") == 2
    assert validation.count("rare") == 1 and training.count("rare") == 1  # one each side: never vanishes
    assert "rarer" not in validation and training.count("rarer") == 1  # a label's only row stays in training
    assert held == stratified_sample(labels, 0.1, seed=0) != stratified_sample(labels, 0.1, seed=1)


def test_load_task_data_carves_a_stratified_validation(tmp_path):
    rows = [("text %d" % i, "rare" if i % 25 == 0 else "common") for i in range(100)]  # 4 rare rows
    path = tmp_path / "train.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([("text", "label"), *rows])
    task = load_task_data(DataConfig(train_file=str(path), validation_fraction=0.1), seed=3)
    assert task.splits["validation"]["label"].count("rare") == 1  # a plain 10% shuffle often drew none
    # 10% of the 96 common rows (10) and, rounded up to one, of the 4 rare ones
    assert len(task.splits["validation"]) == 11 and len(task.splits["train"]) == 89


# ---------------------------------------------------------------------------------------------
# Regression metrics and the metric that picks the kept weights


def test_regression_metrics_are_scipy_and_sklearn_figures():
    rng = np.random.default_rng(0)
    references = rng.uniform(0, 5, 50)
    predictions = references + rng.normal(0, 0.7, 50)
    scores = compute_regression_metrics(predictions, references)
    assert scores["pearson"] == pytest.approx(pearsonr(predictions, references).statistic)
    assert scores["spearman"] == pytest.approx(spearmanr(predictions, references).statistic)
    assert scores["mse"] == pytest.approx(np.mean((predictions - references) ** 2))
    assert scores["mae"] == pytest.approx(np.mean(np.abs(predictions - references)))
    constant = compute_regression_metrics(np.full(5, 2.0), references[:5])  # no correlation: 0, not NaN
    assert constant["pearson"] == constant["spearman"] == 0.0


def test_the_kept_weights_follow_the_tasks_metric_and_its_direction(tiny_bert, tmp_path):
    assert best_metric("auto", "single_label") == "accuracy" and best_metric("auto", "regression") == "pearson"
    with pytest.raises(HfAdaptError, match="'macro_f1' does not score a regression task"):
        best_metric("macro_f1", "regression")
    with pytest.raises(HfAdaptError, match="'mse' does not score a single_label task"):
        best_metric("mse", "single_label")
    data = {"train": tmp_path / "t.csv", "validation": tmp_path / "v.csv", "test": tmp_path / "v.csv"}
    for name, greater in (("auto", True), ("mae", False), ("loss", False)):
        config = config_from_dict(tiny_recipe(tiny_bert, data, tmp_path / "out", train={"metric_for_best": name}))
        config, _ = plan_training(config, 64, 32)
        args = build_training_arguments(config, tmp_path / "work", "regression")
        assert args.metric_for_best_model == ("pearson" if name == "auto" else name)
        assert args.greater_is_better is greater


# ---------------------------------------------------------------------------------------------
# Regression end to end


def regression_csvs(directory: Path, *, pairs: bool, rows: int = 64, seed: int = 0) -> dict[str, Path]:
    """train/validation/test CSVs whose `score` (0-5, in quarter steps) grows with the positive words
    and falls with the negative ones; with `pairs`, across two text columns (STS-B's layout)."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)

    def text(good: int, bad: int) -> str:
        words = [rng.choice(POSITIVE) for _ in range(good)] + [rng.choice(NEGATIVE) for _ in range(bad)]
        words += [rng.choice(NEUTRAL) for _ in range(rng.randint(1, 3))]
        rng.shuffle(words)
        return " ".join(words)

    paths = {}
    for split, count in (("train", rows), ("validation", rows // 4), ("test", rows // 4)):
        path = paths[split] = directory / f"{split}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["sentence1", "sentence2", "score"] if pairs else ["text", "score"])
            for _ in range(count):
                good, bad = rng.randint(0, 3), rng.randint(0, 3)
                score = min(max(2.5 + 0.75 * (good - bad) + rng.choice((-0.25, 0.0, 0.25)), 0.0), 5.0)
                first = text(good, bad)
                writer.writerow([*(text(rng.randint(0, 1), rng.randint(0, 1)), first)[: 1 + pairs][::-1], f"{score:.2f}"]
                                if pairs else [first, f"{score:.2f}"])
    return paths


def regression_recipe(model: Path, data: dict[str, Path], output: Path, *, pairs: bool, **sections: dict) -> dict:
    columns = {"text_column": "sentence1", "text_pair_column": "sentence2"} if pairs else {}
    recipe = tiny_recipe(model, data, output, **sections)
    recipe["data"].update(label_column="score", **columns)
    return recipe


ADAPT = {"full": {}, "partial": {"freeze_embeddings": True, "freeze_layers": 1}, "lora": {}}


@pytest.mark.integration
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("strategy", ADAPT)
def test_regression_trains_through_every_recipe_and_family(tiny_models, family, strategy, tmp_path, one_thread):
    data = regression_csvs(tmp_path / "data", pairs=False, rows=32)
    recipe = regression_recipe(tiny_models[family], data, tmp_path / "out", pairs=False,
                               adapt={"strategy": strategy, **ADAPT[strategy]}, train={"max_steps": 2})
    result = run_recipe(config_from_dict(recipe))

    assert result.task == "regression" and result.labels == ["score"]
    assert set(result.metrics["test"]) >= {"pearson", "spearman", "mse", "mae", "loss"}
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "score"}
    assert json.loads((tmp_path / "out" / "labels.json").read_text())["task"] == "regression"


@pytest.mark.integration
def test_regression_on_pairs_round_trips_through_eval_predict_card_and_pipeline(tiny_bert, tmp_path, capsys):
    data = regression_csvs(tmp_path / "data", pairs=True, rows=96)
    output = tmp_path / "out"
    recipe = write_yaml(tmp_path / "recipe.yaml", regression_recipe(tiny_bert, data, output, pairs=True,
                                                                  train={"epochs": 8}, optim={"learning_rate": 3e-3}))
    assert main(["train", str(recipe)]) == 0
    err = capsys.readouterr().err
    assert "task: regression (column 'score' holds numbers that are not whole" in err
    saved = json.loads((output / "metrics.json").read_text())
    # It learnt the words' sign, not just the mean (0.87 here; -0.21 before the head started at the mean)
    assert saved["metrics"]["test"]["pearson"] > 0.6
    assert saved["data"]["target_range"][0] >= 0.0 and saved["data"]["target_range"][1] <= 5.0

    # eval reads the pair columns from the saved recipe and scores as training did
    assert main(["eval", "--model", str(output), "--data", str(data["test"])]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["pearson"] == pytest.approx(saved["metrics"]["test"]["pearson"], abs=1e-4)
    assert evaluated["mse"] == pytest.approx(saved["metrics"]["test"]["mse"], rel=1e-3)

    # predict writes the number, which is the model's one logit; pipeline() gives the same number
    predictions = tmp_path / "predictions.jsonl"
    assert main(["predict", "--model", str(output), "--input", str(data["test"]), "--output", str(predictions)]) == 0
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    with data["test"].open() as handle:
        pairs = [(row["sentence1"], row["sentence2"]) for row in csv.DictReader(handle)]
    assert [(r["text"], r["text_pair"]) for r in rows] == pairs and set(rows[0]) == {"text", "text_pair", "value"}
    model = AutoModelForSequenceClassification.from_pretrained(output)
    tokenizer = AutoTokenizer.from_pretrained(output)
    batch = tokenizer([p[0] for p in pairs[:4]], [p[1] for p in pairs[:4]], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model.eval()(**batch).logits[:, 0]
    assert [r["value"] for r in rows[:4]] == pytest.approx(logits.tolist(), abs=1e-4)
    scorer = pipeline("text-classification", model=str(output), tokenizer=str(output))
    piped = scorer({"text": pairs[0][0], "text_pair": pairs[0][1]})
    piped = piped[0] if isinstance(piped, list) else piped
    assert piped["label"] == "score" and piped["score"] == pytest.approx(rows[0]["value"], abs=1e-4)

    card = (output / "README.md").read_text()
    low, high = saved["data"]["target_range"]
    assert "A regression model" in card and f"ranges from {low:g} to {high:g}" in card
    assert "pearsonr" in card and "Per-class F1" not in card
    assert '{"text": "first text", "text_pair": "second text"}' in card


@pytest.mark.integration
@pytest.mark.parametrize("strategy", ["full", "lora"])  # LoRA: the head is peft's trained copy (modules_to_save)
def test_target_scaling_trains_standardised_and_saves_a_model_in_the_targets_units(strategy, tiny_bert, tmp_path,
                                                                                    capsys):
    data = regression_csvs(tmp_path / "data", pairs=False, rows=64)
    output = tmp_path / "out"
    recipe = regression_recipe(tiny_bert, data, output, pairs=False, train={"epochs": 4},
                               optim={"learning_rate": 3e-3}, adapt={"strategy": strategy})
    recipe["data"]["target_scaling"] = "standard"
    assert main(["train", str(write_yaml(tmp_path / "recipe.yaml", recipe))]) == 0
    assert "target scaling: trained on (target - " in capsys.readouterr().err

    saved = json.loads((output / "metrics.json").read_text())
    with data["train"].open() as handle:
        targets = [float(row["score"]) for row in csv.DictReader(handle)]
    scale = saved["extra"]["target_scaling"]
    assert scale["mean"] == pytest.approx(statistics.fmean(targets), abs=1e-5)
    assert scale["std"] == pytest.approx(statistics.pstdev(targets), abs=1e-5)
    assert saved["data"]["target_range"] == [min(targets), max(targets)]  # the card names the real range
    # The run's test figures and a later eval of the saved model agree: both in the target's units.
    assert main(["eval", "--model", str(output), "--data", str(data["test"])]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["mse"] == pytest.approx(saved["metrics"]["test"]["mse"], rel=1e-3)
    assert evaluated["mae"] == pytest.approx(saved["metrics"]["test"]["mae"], rel=1e-3)
    assert saved["metrics"]["test"]["pearson"] > 0.3  # it learnt the words, not only the mean
    predictions = tmp_path / "predictions.jsonl"
    assert main(["predict", "--model", str(output), "--input", str(data["test"]), "--output", str(predictions)]) == 0
    values = [json.loads(line)["value"] for line in predictions.read_text().splitlines()]
    assert abs(statistics.fmean(values) - scale["mean"]) < 0.5 * scale["std"]  # not around 0, the scaled mean
    assert f"trained on (target − {scale['mean']:g}) / {scale['std']:g}" in (output / "README.md").read_text()


def test_target_scaling_is_for_a_fresh_regression_head(tiny_bert, tmp_path):
    recipe = regression_recipe(tiny_bert, regression_csvs(tmp_path, pairs=False, rows=8), tmp_path / "out", pairs=False)
    recipe["data"].update(task="single_label", target_scaling="standard")
    with pytest.raises(HfAdaptError, match="data.target_scaling scales a regression target, and data.task is "
                                           "single_label; set data.target_scaling: none"):
        config_from_dict(recipe)
    recipe["data"].update(task="regression", target_scaling="minmax")
    with pytest.raises(HfAdaptError, match="data.target_scaling must be one of none, standard, got 'minmax'"):
        config_from_dict(recipe)
    # auto finds classes in these labels: decided from the data, refused at run time, before any training
    recipe = tiny_recipe(tiny_bert, write_sentiment_csvs(tmp_path / "sentiment", rows=16), tmp_path / "out")
    recipe["data"]["target_scaling"] = "standard"
    with pytest.raises(HfAdaptError, match="data.target_scaling scales a regression target, and the labels make "
                                           "this a single_label task"):
        run_recipe(config_from_dict(recipe))
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_regression_of_single_texts_predicts_from_a_text_file(tiny_bert, tmp_path, capsys):
    data = regression_csvs(tmp_path / "data", pairs=False, rows=32)
    output = tmp_path / "out"
    recipe = regression_recipe(tiny_bert, data, output, pairs=False, train={"max_steps": 2})
    recipe["data"]["task"] = "regression"
    recipe = write_yaml(tmp_path / "recipe.yaml", recipe)
    assert main(["train", str(recipe)]) == 0
    capsys.readouterr()
    texts = tmp_path / "texts.txt"
    texts.write_text("good great movie\n\nbad awful plot\n")
    assert main(["predict", "--model", str(output), "--input", str(texts)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    model, tokenizer = (AutoModelForSequenceClassification.from_pretrained(output),
                        AutoTokenizer.from_pretrained(output))
    expected = logits_of(model, tokenizer, ["good great movie", "bad awful plot"])[:, 0].tolist()
    assert rows[1] == {"text": "", "value": None}  # a blank line keeps its place
    assert [rows[0]["value"], rows[2]["value"]] == pytest.approx(expected, abs=1e-4)
    assert yaml.safe_load((output / "recipe.yaml").read_text())["data"]["task"] == "regression"


@pytest.mark.integration
def test_the_stsb_recipe_reads_its_pairs_as_a_regression(shared_data, capsys):
    from conftest import REPO

    from hf_adapt.config import load_recipe

    config = load_recipe(REPO / "recipes" / "minilm_stsb_regression.yaml",
                         [f"data.train_file={shared_data / 'stsb' / 'train.csv'}",
                          f"data.test_file={shared_data / 'stsb' / 'validation.csv'}", "data.task=auto"])
    task = load_task_data(config.data, seed=config.train.seed)
    assert "task: regression (column 'score' holds numbers that are not whole" in capsys.readouterr().err
    assert task.label_map.labels == ("score",) and task.label_map.problem_type == "regression"
    rows = {name: len(split) for name, split in task.splits.items()}
    assert rows == {"train": 5749 - 575, "validation": 575, "test": 1500}
    assert task.splits["train"].column_names == ["text", "label", "text_pair"]
    assert 0.0 <= min(task.splits["test"]["label"]) and max(task.splits["test"]["label"]) <= 5.0
