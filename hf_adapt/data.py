"""Data: files or a Hub dataset -> checked splits -> a stable label map -> tokenized splits.

Everything a user can get wrong in their data (a missing file or column, empty texts, labels
that training never saw, a single class) is caught here, before any model is loaded or any
output written, and reported as one `HfAdaptError` line naming the file, column and row.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, DatasetDict

from hf_adapt.config import DataConfig
from hf_adapt.errors import HfAdaptError, first_line

FILE_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class LabelMap:
    """The label set, fixed by the training data: ids follow sorted label order, so reruns agree."""

    labels: tuple[str, ...]

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def save(self, directory: Path) -> None:
        payload = {"labels": list(self.labels), "label2id": self.label2id}
        (directory / "labels.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_model_config(cls, config: Any) -> "LabelMap":
        return cls(tuple(config.id2label[i] for i in sorted(config.id2label)))


@dataclass
class TaskData:
    """Checked raw splits (columns `text`, optional `text_pair`, `label` as strings) and their labels."""

    splits: DatasetDict
    label_map: LabelMap
    sources: dict[str, str]


# ---------------------------------------------------------------------------------------------
# Loading


def load_task_data(config: DataConfig, seed: int = 42) -> TaskData:
    """Load, check and normalise the train/validation/test splits a recipe names.

    Returns splits with the user's columns renamed to `text` (+ `text_pair`) and `label` (as
    strings), a validation split carved from train with `seed` when none is given, and the label
    map built from the training labels.
    """
    raw, sources = _load_raw_splits(config)
    if "validation" not in raw:
        raw = _carve_validation(raw, config.validation_fraction, seed)
        sources["validation"] = f"{sources['train']} ({config.validation_fraction:.0%} carved out, seed {seed})"
    splits = DatasetDict({name: _normalise(raw[name], name, sources[name], config) for name in SPLITS if name in raw})
    if config.max_train_samples and len(splits["train"]) > config.max_train_samples:
        splits["train"] = splits["train"].shuffle(seed=seed).select(range(config.max_train_samples))
    for name in ("validation", "test"):
        if config.max_eval_samples and name in splits and len(splits[name]) > config.max_eval_samples:
            splits[name] = splits[name].shuffle(seed=seed).select(range(config.max_eval_samples))
    label_map = _build_label_map(splits["train"], sources["train"], config.label_column)
    for name in ("validation", "test"):
        if name in splits:
            _check_known_labels(splits[name], label_map, sources[name], config.label_column)
    return TaskData(splits=splits, label_map=label_map, sources=sources)


def _load_raw_splits(config: DataConfig) -> tuple[dict[str, Dataset], dict[str, str]]:
    if config.dataset:
        return _load_hub_dataset(config)
    files = {"train": config.train_file, "validation": config.validation_file, "test": config.test_file}
    raw = {name: load_file(path) for name, path in files.items() if path}
    return raw, {name: str(path) for name, path in files.items() if path}


def load_file(path: str | Path) -> Dataset:
    """Read one CSV/TSV/JSON(L)/Parquet file into a `Dataset`, with a one-line error on failure."""
    path = Path(path)
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise HfAdaptError(f"{path}: unsupported file type '{path.suffix}'; use .csv, .tsv, .json, .jsonl or .parquet")
    if not path.is_file():
        raise HfAdaptError(f"data file {path} not found: check the path in the recipe (paths are relative to "
                           f"the directory you run from)")
    if path.stat().st_size == 0:
        raise HfAdaptError(f"{path}: the file is empty; it needs a header and at least one row")
    kwargs: dict[str, Any] = {"sep": "\t"} if path.suffix.lower() == ".tsv" else {}
    try:
        # keep_in_memory + a private cache dir: small files, and no cache files beside the user's data
        dataset = datasets.load_dataset(fmt, data_files=str(path), split="train", keep_in_memory=True, **kwargs)
    except Exception as err:  # datasets wraps pandas/pyarrow parse errors in many types
        raise HfAdaptError(f"{path}: could not be read as {fmt.upper()}: {first_line(err)}") from None
    if len(dataset) == 0:
        raise HfAdaptError(f"{path}: no rows; it needs at least one row of data")
    return dataset


def _load_hub_dataset(config: DataConfig) -> tuple[dict[str, Dataset], dict[str, str]]:
    try:
        loaded = datasets.load_dataset(config.dataset, config.dataset_config)
    except Exception as err:
        raise HfAdaptError(f"data.dataset {config.dataset!r} could not be loaded: {first_line(err)}") from None
    aliases = {"train": ("train",), "validation": ("validation", "valid", "dev"), "test": ("test",)}
    raw, sources = {}, {}
    for name, candidates in aliases.items():
        for candidate in candidates:
            if candidate in loaded:
                raw[name], sources[name] = loaded[candidate], f"{config.dataset}[{candidate}]"
                break
    if "train" not in raw:
        raise HfAdaptError(f"data.dataset {config.dataset!r} has no 'train' split (found: {', '.join(loaded)})")
    return raw, sources


def _carve_validation(raw: dict[str, Dataset], fraction: float, seed: int) -> dict[str, Dataset]:
    train = raw["train"]
    if len(train) < 4:
        raise HfAdaptError(f"training data has {len(train)} rows: too few to carve a validation split; "
                           f"give data.validation_file")
    parts = train.train_test_split(test_size=fraction, seed=seed, shuffle=True)
    return {**raw, "train": parts["train"], "validation": parts["test"]}


def _normalise(dataset: Dataset, split: str, source: str, config: DataConfig) -> Dataset:
    """Check the columns and values, and rename them to text / text_pair / label (string labels)."""
    wanted = [config.text_column, config.label_column] + ([config.text_pair_column] if config.text_pair_column else [])
    for column in wanted:
        if column not in dataset.column_names:
            key = ("data.text_column" if column == config.text_column else
                   "data.label_column" if column == config.label_column else "data.text_pair_column")
            raise HfAdaptError(f"{source}: no column '{column}' (found: {', '.join(dataset.column_names)}); "
                               f"set {key}")
    text_columns = [config.text_column] + ([config.text_pair_column] if config.text_pair_column else [])
    for column in text_columns:
        _check_texts(dataset[column], source, column)
    labels = [_label_to_str(v) for v in dataset[config.label_column]]
    for row, label in enumerate(labels):
        if label is None:
            raise HfAdaptError(f"{source}: empty or NaN label in column '{config.label_column}' at data row {row + 1}; "
                               f"label every row or drop it")
    columns = {"text": [str(t) for t in dataset[config.text_column]], "label": labels}
    if config.text_pair_column:
        columns["text_pair"] = [str(t) for t in dataset[config.text_pair_column]]
    return Dataset.from_dict(columns)


def _check_texts(values: list[Any], source: str, column: str) -> None:
    for row, value in enumerate(values):
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        if missing or not str(value).strip():
            raise HfAdaptError(f"{source}: empty or NaN text in column '{column}' at data row {row + 1}; "
                               f"fill it or drop the row")


def _label_to_str(value: Any) -> str | None:
    """Labels are kept as strings; integer labels (also 1.0 from a column with NaN) become '1'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _build_label_map(train: Dataset, source: str, column: str) -> LabelMap:
    labels = set(train["label"])
    if len(labels) < 2:
        raise HfAdaptError(f"{source}: training data has a single class ({next(iter(labels))!r}) in column "
                           f"'{column}'; a classifier needs at least two labels")
    # Integer-like labels sort numerically (so '10' comes after '9'); others alphabetically.
    key = (lambda s: (0, int(s), "")) if all(_is_int(s) for s in labels) else (lambda s: (1, 0, s))
    return LabelMap(tuple(sorted(labels, key=key)))


def _check_known_labels(dataset: Dataset, label_map: LabelMap, source: str, column: str) -> None:
    unseen = sorted(set(dataset["label"]) - set(label_map.labels))
    if unseen:
        shown = ", ".join(repr(u) for u in unseen[:5]) + (" ..." if len(unseen) > 5 else "")
        raise HfAdaptError(f"{source}: label(s) {shown} in column '{column}' never occur in the training data "
                           f"(known: {', '.join(label_map.labels)}); fix the labels or add training examples")


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False



# ---------------------------------------------------------------------------------------------
# Tokenization


def tokenize_splits(splits: DatasetDict, tokenizer: Any, label_map: LabelMap, max_length: int) -> DatasetDict:
    """Tokenize without padding (the collator pads each batch to its own longest row).

    Keeps a `length` column so length-grouped batching needs no second pass over the data.
    """
    label2id = label_map.label2id

    def encode(batch: dict[str, list]) -> dict[str, list]:
        pair = batch.get("text_pair")
        encoded = tokenizer(batch["text"], pair, truncation=True, max_length=max_length)
        encoded["labels"] = [label2id[label] for label in batch["label"]]
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    return splits.map(encode, batched=True, remove_columns=splits["train"].column_names,
                      desc="Tokenizing", keep_in_memory=True)
