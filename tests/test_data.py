"""Tests for hf_adapt.data: file formats, label maps, seeded validation carving and subsets, pairs,
and tokenization without padding."""

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
from conftest import make_tokenizer

from hf_adapt.config import DataConfig
from hf_adapt.data import LabelMap, load_task_data, tokenize_splits


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def sentiment_rows(count: int, labels=("negative", "positive")) -> list[dict]:
    return [{"text": f"text number {i}", "label": labels[i % len(labels)]} for i in range(count)]


# ---------------------------------------------------------------------------------------------
# Labels


def test_string_labels_give_a_sorted_label_map_whatever_the_row_order(tmp_path):
    rows = sentiment_rows(30, labels=("weather", "alarm", "music"))
    forward = write_csv(tmp_path / "forward.csv", rows)
    backward = write_csv(tmp_path / "backward.csv", rows[::-1])

    first = load_task_data(DataConfig(train_file=str(forward)))
    second = load_task_data(DataConfig(train_file=str(backward)))

    assert first.label_map.labels == ("alarm", "music", "weather")
    assert second.label_map == first.label_map
    assert first.label_map.label2id == {"alarm": 0, "music": 1, "weather": 2}
    assert first.label_map.id2label == {0: "alarm", 1: "music", 2: "weather"}


def test_integer_labels_become_strings_in_numeric_order(tmp_path):
    rows = [{"text": f"t {i}", "label": label} for i, label in enumerate([10, 2, 9, 2, 10, 9] * 3)]
    path = write_csv(tmp_path / "train.csv", rows)

    task = load_task_data(DataConfig(train_file=str(path), validation_fraction=0.2))

    assert task.label_map.labels == ("2", "9", "10")  # not '10' < '2' < '9'
    assert set(task.splits["train"]["label"]) <= {"2", "9", "10"}


def test_label_map_round_trips_through_a_model_config(tmp_path):
    label_map = LabelMap(("negative", "neutral", "positive"))

    model_config = SimpleNamespace(id2label={2: "positive", 0: "negative", 1: "neutral"})

    label_map.save(tmp_path)
    saved = json.loads((tmp_path / "labels.json").read_text())
    assert saved == {"task": "single_label", "labels": ["negative", "neutral", "positive"],
                     "label2id": {"negative": 0, "neutral": 1, "positive": 2}}
    assert LabelMap.from_model_config(model_config) == label_map


def test_custom_column_names_are_renamed(tmp_path):
    rows = [{"review": f"review {i}", "stars": ["low", "high"][i % 2], "id": i} for i in range(20)]
    path = write_csv(tmp_path / "train.csv", rows)

    task = load_task_data(DataConfig(train_file=str(path), text_column="review", label_column="stars"))

    assert task.splits["train"].column_names == ["text", "label"]
    assert task.label_map.labels == ("high", "low")


# ---------------------------------------------------------------------------------------------
# Splits


def test_validation_is_carved_from_train_reproducibly_with_the_seed(tmp_path):
    path = write_csv(tmp_path / "train.csv", sentiment_rows(100))
    config = DataConfig(train_file=str(path), validation_fraction=0.2)

    first = load_task_data(config, seed=1)
    again = load_task_data(config, seed=1)
    other_seed = load_task_data(config, seed=2)

    assert len(first.splits["validation"]) == 20 and len(first.splits["train"]) == 80
    assert first.splits["validation"]["text"] == again.splits["validation"]["text"]
    assert first.splits["train"]["text"] == again.splits["train"]["text"]
    assert set(first.splits["validation"]["text"]) != set(other_seed.splits["validation"]["text"])
    assert not set(first.splits["validation"]["text"]) & set(first.splits["train"]["text"])
    assert "20% carved out, stratified by label, seed 1" in first.sources["validation"]
    assert "test" not in first.splits


def test_given_validation_and_test_files_are_used_as_they_are(tmp_path):
    train = write_csv(tmp_path / "train.csv", sentiment_rows(40))
    validation = write_csv(tmp_path / "validation.csv", sentiment_rows(6))
    test = write_csv(tmp_path / "test.csv", sentiment_rows(8))

    task = load_task_data(DataConfig(train_file=str(train), validation_file=str(validation), test_file=str(test)))

    assert {name: len(split) for name, split in task.splits.items()} == {"train": 40, "validation": 6, "test": 8}
    assert task.splits["validation"]["text"] == [f"text number {i}" for i in range(6)]  # file order kept
    assert task.sources == {"train": str(train), "validation": str(validation), "test": str(test)}


def test_max_train_samples_takes_a_seeded_subset(tmp_path):
    train = write_csv(tmp_path / "train.csv", sentiment_rows(50))
    validation = write_csv(tmp_path / "validation.csv", sentiment_rows(30))
    config = DataConfig(train_file=str(train), validation_file=str(validation), max_train_samples=12,
                        max_eval_samples=10)

    first = load_task_data(config, seed=3)
    again = load_task_data(config, seed=3)
    other = load_task_data(config, seed=4)

    assert len(first.splits["train"]) == 12 and len(first.splits["validation"]) == 10
    assert first.splits["train"]["text"] == again.splits["train"]["text"]
    assert first.splits["train"]["text"] != other.splits["train"]["text"]
    assert set(first.splits["train"]["text"]) <= {r["text"] for r in sentiment_rows(50)}
    assert first.splits["train"]["text"] != [f"text number {i}" for i in range(12)]  # shuffled, not the head
    # a cap above the row count keeps every row
    whole = load_task_data(DataConfig(train_file=str(train), validation_file=str(validation), max_train_samples=500))
    assert len(whole.splits["train"]) == 50


# ---------------------------------------------------------------------------------------------
# File formats


def test_jsonl_and_parquet_load_like_csv(tmp_path):
    rows = [{"text": f"sentence {i}", "label": ["no", "yes"][i % 2]} for i in range(20)]
    csv_path = write_csv(tmp_path / "train.csv", rows)
    jsonl_path = tmp_path / "train.jsonl"
    jsonl_path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    parquet_path = tmp_path / "train.parquet"
    pd.DataFrame(rows).to_parquet(parquet_path)
    tsv_path = tmp_path / "train.tsv"
    tsv_path.write_text("text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in rows), encoding="utf-8")

    loaded = {path.suffix: load_task_data(DataConfig(train_file=str(path), validation_file=str(path)))
              for path in (csv_path, jsonl_path, parquet_path, tsv_path)}

    reference = loaded[".csv"].splits["train"].to_dict()
    for suffix, task in loaded.items():
        assert task.splits["train"].to_dict() == reference, suffix
        assert task.label_map.labels == ("no", "yes")


def test_integer_labels_stored_as_floats_read_as_integers(tmp_path):
    # pandas stores an int column that had a NaN as float; labels must still read '1', not '1.0'.
    path = tmp_path / "train.parquet"
    pd.DataFrame({"text": [f"t {i}" for i in range(8)], "label": [0.0, 1.0] * 4}).to_parquet(path)

    task = load_task_data(DataConfig(train_file=str(path), validation_file=str(path)))

    assert task.label_map.labels == ("0", "1")


# ---------------------------------------------------------------------------------------------
# Text pairs and tokenization


def test_text_pair_column_is_kept_and_tokenized_as_a_pair(tmp_path):
    rows = [{"premise": f"the movie {i}", "hypothesis": "it was good", "label": ["no", "yes"][i % 2]}
            for i in range(10)]
    path = write_csv(tmp_path / "train.csv", rows)
    task = load_task_data(DataConfig(train_file=str(path), validation_file=str(path), text_column="premise",
                                     text_pair_column="hypothesis"))
    tokenizer = make_tokenizer(tmp_path / "tok")

    encoded = tokenize_splits(task.splits, tokenizer, task.label_map, max_length=32)

    assert task.splits["train"].column_names == ["text", "label", "text_pair"]
    assert task.splits["train"][0]["text_pair"] == "it was good"
    row = encoded["train"][0]
    sep = tokenizer.sep_token_id
    assert row["input_ids"].count(sep) == 2  # [CLS] premise [SEP] hypothesis [SEP]
    assert row["input_ids"] == tokenizer("the movie 0", "it was good")["input_ids"]
    assert set(row["token_type_ids"]) == {0, 1}


def test_tokenize_splits_does_not_pad_and_records_lengths_and_label_ids(tmp_path):
    rows = [{"text": " ".join(["good"] * (i + 1)), "label": ["bad", "good"][i % 2]} for i in range(12)]
    path = write_csv(tmp_path / "train.csv", rows)
    task = load_task_data(DataConfig(train_file=str(path), validation_file=str(path)))
    tokenizer = make_tokenizer(tmp_path / "tok")

    encoded = tokenize_splits(task.splits, tokenizer, task.label_map, max_length=8)

    train = encoded["train"]
    assert "text" not in train.column_names and "label" not in train.column_names
    assert [len(ids) for ids in train["input_ids"]] == train["length"]
    assert train["length"][:3] == [3, 4, 5]  # [CLS] good.. [SEP], each row only as long as it is
    assert max(train["length"]) == 8  # truncated at max_length
    assert train["labels"] == [task.label_map.label2id[r["label"]] for r in rows]
