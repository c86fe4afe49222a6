"""Long texts (`data.long_text: chunk`): the windows a text is cut into, the pooling of their
logits, and chunked runs end to end (every task, every recipe), whose documents' predictions in
training's evaluation, `eval`, `predict` and by hand with plain transformers are the same."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NEGATIVE, NEUTRAL, POSITIVE, make_tokenizer, tiny_recipe, write_yaml
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_adapt.cli import main
from hf_adapt.config import config_from_dict, DataConfig
from hf_adapt.data import Windows
from hf_adapt.engine import run_recipe
from hf_adapt.inference import predict_logits
from hf_adapt.metrics import pool_windows
from hf_adapt.modeling import load_trained

# ---------------------------------------------------------------------------------------------
# Windows and pooling


def test_windows_cover_the_whole_text_sharing_stride_tokens(tmp_path):
    tokenizer = make_tokenizer(tmp_path / "tok")
    words = [NEUTRAL[i % len(NEUTRAL)] for i in range(50)]  # one token each
    windows = Windows(length=12, stride=3, pooling="mean")
    encoded, rows = windows.encode(tokenizer, [" ".join(words), "good film"])
    ids = [ids[1:-1] for ids in encoded["input_ids"]]  # less [CLS] and [SEP]
    assert all(len(window) <= 10 for window in ids)
    first = [i for i, row in enumerate(rows) if row == 0]
    assert rows == [0] * len(first) + [1]  # the windows of each text, in order
    assert all(ids[i][-3:] == ids[i + 1][:3] for i in first[:-1])  # 3 tokens shared with the window before
    whole = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]
    assert ids[0] + [t for i in first[1:] for t in ids[i][3:]] == whole  # nothing lost, nothing repeated
    assert len(first) == 1 + -(-(50 - 10) // 7)


def test_the_default_stride_is_a_quarter_of_the_window_and_pooling_fits_the_task():
    chunk = DataConfig(long_text="chunk")
    assert Windows.from_recipe(chunk, 128, "single_label") == Windows(128, 32, "mean")
    assert Windows.from_recipe(chunk, 128, "multi_label") == Windows(128, 32, "max")
    assert Windows.from_recipe(DataConfig(long_text="chunk", chunk_stride=0, chunk_pooling="max"), 64,
                               "regression") == Windows(64, 0, "max")
    assert Windows.from_recipe(DataConfig(), 128, "single_label") is None


def test_pool_windows_takes_the_mean_or_max_of_each_texts_windows():
    logits = np.array([[1.0, 0.0], [3.0, -2.0], [0.5, 0.5], [-1.0, 4.0], [2.0, 2.0]])
    documents = [0, 0, 1, 2, 2]
    mean, first = pool_windows(logits, documents, "mean")
    assert mean.tolist() == [[2.0, -1.0], [0.5, 0.5], [0.5, 3.0]] and first.tolist() == [0, 2, 3]
    assert pool_windows(logits, documents, "max")[0].tolist() == [[3.0, 0.0], [0.5, 0.5], [2.0, 4.0]]


# ---------------------------------------------------------------------------------------------
# Chunked runs end to end


def long_review_csvs(directory: Path, rows: int = 64, filler: int = 20, seed: int = 0) -> dict[str, Path]:
    """Sentiment CSVs whose words of sentiment come after `filler` neutral words: past the first 16
    tokens, where only a model that reads the whole text finds them."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, count in (("train", rows), ("validation", rows // 4), ("test", rows // 4)):
        paths[split] = directory / f"{split}.csv"
        with paths[split].open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            for i in range(count):
                label, words = ("positive", POSITIVE) if i % 2 else ("negative", NEGATIVE)
                text = [rng.choice(NEUTRAL) for _ in range(filler)] + [rng.choice(words) for _ in range(3)]
                writer.writerow([" ".join(text), label])
    return paths


def by_hand(model_dir: Path, text: str, length: int, stride: int, pooling: str) -> np.ndarray:
    """A text's pooled logits with plain transformers: the tokenizer's own overflowing windows."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = tokenizer(text, truncation=True, max_length=length, stride=stride, return_overflowing_tokens=True,
                      padding=True, return_tensors="pt")
    batch.pop("overflow_to_sample_mapping")
    with torch.no_grad():
        logits = model(**batch).logits
    return (logits.max(0).values if pooling == "max" else logits.mean(0)).numpy()


@pytest.mark.integration
def test_chunking_reads_what_truncation_cannot_and_predict_eval_pool_as_training(tiny_bert, tmp_path, capsys):
    data = long_review_csvs(tmp_path / "data")
    accuracy = {}
    for long_text in ("truncate", "chunk"):
        recipe = tiny_recipe(tiny_bert, data, tmp_path / long_text, train={"epochs": 10, "batch_size": 8},
                             optim={"learning_rate": 3e-3})
        recipe["model"]["max_length"] = 16
        recipe["data"].update(long_text=long_text, chunk_stride=4)
        assert main(["train", str(write_yaml(tmp_path / f"{long_text}.yaml", recipe))]) == 0
        saved = json.loads((tmp_path / long_text / "metrics.json").read_text())
        accuracy[long_text] = saved["metrics"]["test"]["accuracy"]
    err = capsys.readouterr().err
    assert "long_text chunk: 64 training texts -> " in err and "windows of 16 tokens (4 shared" in err
    # The sentiment sits past the first 16 tokens: truncation guesses, the windows find it
    assert accuracy["truncate"] <= 0.625 and accuracy["chunk"] >= 0.8, accuracy

    output = tmp_path / "chunk"
    config = json.loads((output / "config.json").read_text())
    assert config["long_text_windows"] == {"length": 16, "stride": 4, "pooling": "mean"}
    assert saved["data"]["rows"]["test"] == 16 and saved["data"]["windows"]["test"] > 16

    # eval scores documents as training's evaluation did
    assert main(["eval", "--model", str(output), "--data", str(data["test"])]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["accuracy"] == saved["metrics"]["test"]["accuracy"]
    assert evaluated["macro_f1"] == pytest.approx(saved["metrics"]["test"]["macro_f1"])

    # predict: a document's prediction is the pooled prediction of its windows
    assert main(["predict", "--model", str(output), "--input", str(data["test"])]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    with data["test"].open() as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    assert [row["text"] for row in rows] == texts
    for row in rows[:4]:  # (the scores are calibrated: softmax of logits / the fitted temperature)
        pooled = by_hand(output, row["text"], 16, 4, "mean")
        probs = (torch.tensor(pooled) / config["calibration_temperature"]).softmax(-1)
        assert row["label"] == config["id2label"][str(int(probs.argmax()))]
        assert row["score"] == pytest.approx(float(probs.max()), abs=1e-5)

    card = (output / "README.md").read_text()
    assert "windows of 16 tokens (4 shared with the window before)" in card and "stride=4" in card


@pytest.mark.integration
@pytest.mark.parametrize(("task", "strategy"), [("single_label", "full"), ("multi_label", "full"),
                                                ("regression", "full"), ("single_label", "partial"),
                                                ("multi_label", "lora")])
def test_every_task_and_recipe_trains_on_windows(tiny_bert, tmp_path, task, strategy, one_thread):
    data = long_review_csvs(tmp_path / "data", rows=24, filler=20)
    if task != "single_label":  # the same texts, relabelled: labels split on ';', or a number
        for path in data.values():
            with path.open() as handle:
                rows = list(csv.DictReader(handle))
            with path.open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["text", "label"])
                for row in rows:
                    good = row["label"] == "positive"
                    label = ("good;long" if good else "long") if task == "multi_label" else (4.5 if good else 0.5)
                    writer.writerow([row["text"], label])
    recipe = tiny_recipe(tiny_bert, data, tmp_path / "out", train={"max_steps": 2},
                         adapt={"strategy": strategy, **({"freeze_layers": 1} if strategy == "partial" else {})})
    recipe["model"]["max_length"] = 16
    recipe["data"].update(long_text="chunk", task=task, label_separator=";" if task == "multi_label" else None)
    result = run_recipe(config_from_dict(recipe))

    pooling = "max" if task == "multi_label" else "mean"
    assert result.extra["windows"] == {"length": 16, "stride": 4, "pooling": pooling}
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["long_text_windows"]["pooling"] == pooling
    assert result.data["rows"]["test"] == 6 < result.data["windows"]["test"]
    first = {"single_label": "accuracy", "multi_label": "macro_f1", "regression": "pearson"}[task]
    assert first in result.metrics["test"]
    with data["test"].open() as handle:
        text = next(csv.DictReader(handle))["text"]
    model, tokenizer = load_trained(tmp_path / "out")  # a document's logits: its windows', pooled
    assert predict_logits(model, tokenizer, [text])[0].numpy() == pytest.approx(
        by_hand(tmp_path / "out", text, 16, 4, pooling), abs=1e-5)
