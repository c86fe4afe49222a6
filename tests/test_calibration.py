"""Calibration (`train.calibrate`): temperature scaling fitted on validation, the expected
calibration error before and after it, and the temperature applied by predict and eval, stated in
the card, and readable by plain transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_recipe, write_sentiment_csvs, write_yaml
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_adapt.cli import main
from hf_adapt.metrics import expected_calibration_error, fit_temperature, sigmoid, softmax


def overconfident(task: str, rows: int = 4000, temperature: float = 3.0, seed: int = 0):
    """Logits `temperature` times too large for labels drawn from their true probabilities."""
    rng = np.random.default_rng(seed)
    true = rng.normal(0.0, 1.5, size=(rows, 4))
    if task == "multi_label":
        labels = (rng.random((rows, 4)) < sigmoid(true)).astype(float)
    else:
        probs = softmax(true)
        labels = np.array([rng.choice(4, p=p) for p in probs])
    return true * temperature, labels


@pytest.mark.parametrize("task", ["single_label", "multi_label"])
def test_the_fitted_temperature_undoes_overconfidence_and_lowers_the_ece(task):
    logits, labels = overconfident(task)
    temperature = fit_temperature(logits, labels, task)
    assert temperature == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(logits, labels, task)
    after = expected_calibration_error(logits, labels, task, temperature)
    assert before > 0.1 and after < 0.03, (before, after)
    # calibrated already: the temperature stays near 1
    assert fit_temperature(logits / 3.0, labels, task) == pytest.approx(1.0, rel=0.1)


def test_ece_is_the_weighted_gap_between_confidence_and_accuracy():
    # two rows at confidence ~0.73 (bin 10), one right: gap |0.5 - 0.731|; one row at 0.5 (bin 7), right: 0.5
    logits = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    labels = np.array([0, 1, 0])
    confidence = 1 / (1 + np.exp(-1.0))
    expected = (2 * abs(0.5 - confidence) + abs(1.0 - 0.5)) / 3
    assert expected_calibration_error(logits, labels, "single_label") == pytest.approx(expected)


@pytest.mark.integration
def test_a_calibrated_run_round_trips_through_eval_predict_card_and_plain_transformers(tiny_bert, tmp_path, capsys):
    data = write_sentiment_csvs(tmp_path / "data", rows=96)
    output = tmp_path / "out"
    recipe = tiny_recipe(tiny_bert, data, output, train={"epochs": 6}, optim={"learning_rate": 3e-3})
    assert main(["train", str(write_yaml(tmp_path / "r.yaml", recipe))]) == 0
    assert "calibrated on validation: temperature " in capsys.readouterr().err
    saved = json.loads((output / "metrics.json").read_text())
    temperature = json.loads((output / "config.json").read_text())["calibration_temperature"]
    assert saved["extra"]["temperature"] == temperature and temperature != 1.0
    for split in ("validation", "test"):
        assert {"ece", "ece_calibrated"} <= set(saved["metrics"][split])
    assert saved["metrics"]["validation"]["ece_calibrated"] <= saved["metrics"]["validation"]["ece"] + 1e-9

    assert main(["eval", "--model", str(output), "--data", str(data["test"])]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    for key in ("accuracy", "ece", "ece_calibrated"):
        assert evaluated[key] == pytest.approx(saved["metrics"]["test"][key], abs=1e-6), key

    texts = ["good great film", "the plot was awful"]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    assert main(["predict", "--model", str(output), "--input", str(tmp_path / "texts.txt")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    model = AutoModelForSequenceClassification.from_pretrained(output).eval()  # plain transformers loads it
    tokenizer = AutoTokenizer.from_pretrained(output)
    with torch.no_grad():
        probs = (model(**tokenizer(texts, padding=True, return_tensors="pt")).logits / temperature).softmax(-1)
    assert [r["score"] for r in rows] == pytest.approx(probs.max(-1).values.tolist(), abs=1e-5)

    card = (output / "README.md").read_text()
    assert "### Calibration" in card and f"logits / **{temperature:g}**" in card
    assert f"| test | {saved['metrics']['test']['ece']:.4f} | {saved['metrics']['test']['ece_calibrated']:.4f} |" \
        in card


@pytest.mark.integration
def test_calibrate_false_keeps_the_raw_scores(tiny_bert, tmp_path, capsys):
    data = write_sentiment_csvs(tmp_path / "data", rows=32)
    output = tmp_path / "out"
    recipe = tiny_recipe(tiny_bert, data, output, train={"max_steps": 2, "calibrate": False})
    assert main(["train", str(write_yaml(tmp_path / "r.yaml", recipe))]) == 0
    saved = json.loads((output / "metrics.json").read_text())
    assert "temperature" not in saved["extra"] and "ece_calibrated" not in saved["metrics"]["test"]
    assert "ece" in saved["metrics"]["test"]  # still measured
    assert "calibration_temperature" not in json.loads((output / "config.json").read_text())
    assert "### Calibration" not in (output / "README.md").read_text()
