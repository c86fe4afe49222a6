"""Data of any size (issue 16): checks done in Arrow batches that still name the first bad row,
the cache that lets a second run skip reading and tokenizing, tokenizing in several processes, and
the length-grouped sampler that keeps its lengths in numpy. The figures at 1M-10M rows come from
scripts/benchmarks/data_scale.py."""

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tokenizer
from transformers.trainer_pt_utils import get_length_grouped_indices

from hf_adapt import data as data_module
from hf_adapt.config import DataConfig
from hf_adapt.data import BATCH_ROWS, load_task_data, tokenize_splits
from hf_adapt.errors import HfAdaptError
from hf_adapt.trainer import length_grouped_order

ROWS = 2 * BATCH_ROWS + 500  # three batches: a problem in the last one is found there


def write_rows(path: Path, rows: int, *, change: dict[int, dict] | None = None, header=("text", "label")) -> Path:
    """`rows` rows of text and label; `change[row]` replaces columns of one data row (0-based)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(header))
        writer.writeheader()
        for i in range(rows):
            row = {"text": f"the film number {i} was {'good' if i % 2 else 'bad'}", "label": "pos" if i % 2 else "neg",
                   "score": str(i % 5 + 0.5), "group": f"g{i % 3}"}
            row.update((change or {}).get(i, {}))
            writer.writerow({key: row[key] for key in header})
    return path


@pytest.mark.parametrize("column, value, config, expect", [
    ("text", " ", {}, "empty or NaN text in column 'text' at data row {row}"),
    ("label", "", {}, "empty or NaN label in column 'label' at data row {row}"),
    ("score", "inf", {"label_column": "score", "task": "regression"},
     "'inf' in column 'score' at data row {row} is not a number"),
    ("group", "", {"group_column": "group"}, "empty or NaN group in column 'group' at data row {row}"),
])
def test_a_bad_value_deep_in_a_large_file_is_named_by_its_row(tmp_path, column, value, config, expect):
    bad = 2 * BATCH_ROWS + 123  # in the third batch; the file's row 20,124
    path = write_rows(tmp_path / "train.csv", ROWS, change={bad: {column: value}},
                      header=("text", "label", "score", "group"))

    with pytest.raises(HfAdaptError, match=expect.format(row=bad + 1)):
        load_task_data(DataConfig(train_file=str(path), **config))

    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.csv"]  # nothing written beside the data


def test_the_file_row_is_named_when_validation_is_carved_from_it(tmp_path):
    # checked before the carve: the row is the file's, not a position in the carved training split
    path = write_rows(tmp_path / "train.csv", 40, change={37: {"label": " "}})
    with pytest.raises(HfAdaptError, match="at data row 38;"):
        load_task_data(DataConfig(train_file=str(path)))


def test_a_second_run_reuses_the_cached_arrow_files_and_a_changed_file_is_read_again(tmp_path):
    path = write_rows(tmp_path / "train.csv", 300)
    tokenizer = make_tokenizer(tmp_path / "tok")
    config = DataConfig(train_file=str(path))

    def run():
        task = load_task_data(config)
        encoded = tokenize_splits(task.splits, tokenizer, task.label_map, max_length=16)
        return task, encoded

    task, encoded = run()
    cache = Path(os.environ["HF_ADAPT_CACHE"])
    files = [f["filename"] for f in encoded["train"].cache_files]
    assert files and all(Path(f).is_relative_to(cache) for f in files)  # in the cache, not beside the data
    written = {f: os.stat(f).st_mtime_ns for f in files}

    again_task, again = run()
    assert [f["filename"] for f in again["train"].cache_files] == files
    assert {f: os.stat(f).st_mtime_ns for f in files} == written  # found again, not tokenized again
    assert again["train"][:] == encoded["train"][:] and again_task.label_map == task.label_map

    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 10**9))  # the user edits the file
    write_rows(path, 300, change={0: {"label": "mixed"}})
    changed, _ = run()
    assert "mixed" in changed.label_map.labels
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok", "train.csv"]


def test_several_tokenizing_processes_give_the_same_rows_as_one(tmp_path, monkeypatch):
    path = write_rows(tmp_path / "train.csv", 400)
    tokenizer = make_tokenizer(tmp_path / "tok")
    task = load_task_data(DataConfig(train_file=str(path)))
    single = tokenize_splits(task.splits, tokenizer, task.label_map, max_length=16)

    monkeypatch.setattr(data_module, "tokenizing_processes", lambda rows: 2)
    several = tokenize_splits(task.splits, tokenizer, task.label_map, max_length=12)  # a new fingerprint

    shorter = [ids[:11] + ids[-1:] if len(ids) > 12 else ids for ids in single["train"]["input_ids"][:]]
    assert several["train"]["input_ids"][:] == shorter
    assert several["train"]["labels"][:] == single["train"]["labels"][:]
    assert set(several["train"].column_names) == {"input_ids", "labels", "length"}  # no masks stored


@pytest.mark.parametrize("rows, batch", [(1, 4), (37, 4), (1000, 8), (5003, 32)])
def test_the_numpy_length_grouped_order_is_transformers_order(rows, batch):
    lengths = np.random.default_rng(rows).integers(1, 60, size=rows)
    for seed in (0, 1):
        ours = length_grouped_order(lengths, batch, torch.Generator().manual_seed(seed))
        theirs = get_length_grouped_indices(lengths.tolist(), batch, generator=torch.Generator().manual_seed(seed))
        assert ours.tolist() == theirs


def test_training_and_evaluation_batches_come_from_the_numpy_sampler(tmp_path, tiny_bert, sentiment_csvs, monkeypatch):
    """Trainer drops the `length` column before it builds a sampler; without the stored lengths its
    own sampler reads every row to measure them (10 million rows: minutes and ~500 MB)."""
    from conftest import tiny_recipe
    from transformers import trainer_pt_utils

    from hf_adapt import trainer as trainer_module
    from hf_adapt.config import config_from_dict
    from hf_adapt.recipes import full

    def refuse(*args, **kwargs):
        raise AssertionError("Trainer's LengthGroupedSampler measured the rows itself")

    built = []

    class Recording(trainer_module.LengthGroupedSampler):
        def __init__(self, lengths, *args, **kwargs):
            built.append(len(lengths))
            super().__init__(lengths, *args, **kwargs)

    monkeypatch.setattr(trainer_pt_utils.LengthGroupedSampler, "__init__", refuse)
    monkeypatch.setattr(trainer_module, "LengthGroupedSampler", Recording)
    full.run(config_from_dict(tiny_recipe(tiny_bert, sentiment_csvs, tmp_path / "out")))
    rows = {split: sum(1 for _ in path.open()) - 1 for split, path in sentiment_csvs.items()}
    assert rows["train"] in built and rows["validation"] in built and rows["test"] in built
