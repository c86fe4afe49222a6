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

from hf_adapt.config import DataConfig, missing_file
from hf_adapt.errors import first_line, HfAdaptError, verbose

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
    """Checked raw splits (columns `text`, optional `text_pair`, `label` as strings, optional `group`)
    and their labels."""

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
    if missing_file(path):
        raise HfAdaptError(missing_file(path))
    if path.stat().st_size == 0:
        raise HfAdaptError(f"{path}: the file is empty; it needs a header and at least one row")
    kwargs: dict[str, Any] = {"sep": "\t"} if path.suffix.lower() == ".tsv" else {}
    # datasets logs a parse failure itself before raising it; we report it once, in one line.
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    bars = datasets.utils.are_progress_bars_disabled() or verbose()
    if not bars:
        datasets.utils.disable_progress_bars()  # "Generating train split": noise before a one-line error
    try:
        # keep_in_memory + a private cache dir: small files, and no cache files beside the user's data
        dataset = datasets.load_dataset(fmt, data_files=str(path), split="train", keep_in_memory=True, **kwargs)
    except Exception as err:  # datasets wraps pandas/pyarrow parse errors in many types
        raise HfAdaptError(_read_error(path, fmt, err)) from None
    finally:
        datasets.logging.set_verbosity(verbosity)
        if not bars:
            datasets.utils.enable_progress_bars()
    if len(dataset) == 0:
        raise HfAdaptError(f"{path}: no rows; it needs at least one row of data")
    return dataset


def _read_error(path: Path, fmt: str, err: Exception) -> str:
    """Name the real cause, which `datasets` hides behind "An error occurred while generating the dataset"."""
    causes = [err]
    while causes[-1].__cause__ or causes[-1].__context__:
        causes.append(causes[-1].__cause__ or causes[-1].__context__)
    if any(isinstance(c, UnicodeDecodeError) for c in causes):
        return f"{path}: not UTF-8 text; save the file as UTF-8 (e.g. from a spreadsheet: CSV UTF-8)"
    if "corresponds to no data" in str(err):  # a header and no rows
        return f"{path}: no rows; it needs at least one row of data"
    cause = causes[1] if len(causes) > 1 else err
    return f"{path}: could not be read as {fmt.upper()} ({first_line(cause)}); fix the file's syntax"


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
    carved = math.ceil(fraction * len(train))
    if len(train) - carved < 2:
        raise HfAdaptError(f"data.validation_fraction {fraction:g} of {len(train)} training rows leaves "
                           f"{len(train) - carved} to train on; lower it (0.1-0.2 is usual) or give data.validation_file")
    parts = train.train_test_split(test_size=carved, seed=seed, shuffle=True)
    return {**raw, "train": parts["train"], "validation": parts["test"]}


def _normalise(dataset: Dataset, split: str, source: str, config: DataConfig) -> Dataset:
    """Check the columns and values, and rename them to text / text_pair / label (string labels),
    plus `group` when `data.group_column` is set."""
    keys = {"data.text_column": config.text_column, "data.label_column": config.label_column,
            "data.text_pair_column": config.text_pair_column, "data.group_column": config.group_column}
    missing = [(key, column) for key, column in keys.items() if column is not None and column not in dataset.column_names]
    if missing:  # every missing column at once, not one run per mistake
        names = " and ".join(f"'{column}'" for _, column in missing)
        raise HfAdaptError(f"{source}: no column{'s' if len(missing) > 1 else ''} {names} (found: {', '.join(dataset.column_names)}); set "
                           f"{' and '.join(key for key, _ in missing)}{_separator_hint(dataset.column_names)}")
    text_columns = [config.text_column] + ([config.text_pair_column] if config.text_pair_column else [])
    for column in text_columns:
        _check_texts(dataset[column], source, column)
    labels = [label_to_str(v) for v in dataset[config.label_column]]
    for row, label in enumerate(labels):
        if label is None:
            raise HfAdaptError(f"{source}: empty or NaN label in column '{config.label_column}' at data row {row + 1}; "
                               f"label every row or drop it")
    columns = {"text": [str(t) for t in dataset[config.text_column]], "label": labels}
    if config.text_pair_column:
        columns["text_pair"] = [str(t) for t in dataset[config.text_pair_column]]
    if config.group_column:
        columns["group"] = _read_groups(dataset[config.group_column], source, config.group_column)
    return Dataset.from_dict(columns)


def _separator_hint(columns: list[str]) -> str:
    """One column whose name holds a tab or ';': the file is not comma-separated."""
    if len(columns) == 1:
        for name, sep in (("a tab", "\t"), ("';'", ";")):
            if sep in columns[0]:
                return f", or, as the file separates columns with {name}, save it comma-separated" + (
                    " (or name it .tsv)" if sep == "\t" else "")
    return ""


def _read_groups(values: list[Any], source: str, column: str) -> list[str]:
    """Group names as strings (like labels: 3.0 -> '3'); an empty group is an error."""
    groups = [label_to_str(v) for v in values]
    for row, group in enumerate(groups):
        if group is None:
            raise HfAdaptError(f"{source}: empty or NaN group in column '{column}' at data row {row + 1}; "
                               f"name every row's group or drop the row")
    return groups  # type: ignore[return-value]


def _check_texts(values: list[Any], source: str, column: str) -> None:
    for row, value in enumerate(values):
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        if missing or not str(value).strip():
            raise HfAdaptError(f"{source}: empty or NaN text in column '{column}' at data row {row + 1}; "
                               f"fill it or drop the row")


def label_to_str(value: Any) -> str | None:
    """The one normalisation of a label, for training and evaluation alike: labels are kept as
    strings without surrounding spaces; integer labels (also 1.0 from a column with NaN) become
    '1'; an empty or missing label is None."""
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
# Groups (`data.group_column`)


def list_groups(task: TaskData) -> list[str]:
    """The groups that occur in the training split, sorted."""
    if "group" not in task.splits["train"].column_names:
        raise HfAdaptError("the data has no group column: set data.group_column to the column naming each row's group")
    return sorted(set(task.splits["train"]["group"]))


def split_by_group(task: TaskData, groups: list[str] | None = None, *, max_train_per_group: int | None = None,
                   seed: int = 42) -> dict[str, TaskData]:
    """One `TaskData` per group: every split filtered to the group's rows, the label map shared.

    Args:
        task (`TaskData`): data loaded with `data.group_column` set.
        groups (`list[str]`, *optional*): the groups to keep; default every group in train.
        max_train_per_group (`int`, *optional*): keep a seeded random subset of each group's train rows.
        seed (`int`, defaults to 42): seed of that subset.

    Raises:
        HfAdaptError: an unknown group, a group missing from a split, or a group whose training rows
            lack a label (its model could not predict that label, so groups would not be comparable).
    """
    known = list_groups(task)
    unknown = [g for g in groups or [] if g not in known]
    if unknown:
        raise HfAdaptError(f"groupwise.groups {unknown} do not occur in {task.sources['train']} "
                           f"(groups there: {', '.join(known)})")
    by_group = {}
    for group in groups or known:
        splits = DatasetDict({name: split.filter(lambda g: g == group, input_columns="group", keep_in_memory=True)
                              for name, split in task.splits.items()})
        if max_train_per_group and len(splits["train"]) > max_train_per_group:
            splits["train"] = splits["train"].shuffle(seed=seed).select(range(max_train_per_group))
        _check_group(splits, group, task)
        sources = {name: f"{source} [group {group}]" for name, source in task.sources.items()}
        by_group[group] = TaskData(splits=splits, label_map=task.label_map, sources=sources)
    return by_group


def _check_group(splits: DatasetDict, group: str, task: TaskData) -> None:
    for name, split in splits.items():
        if len(split) == 0:
            raise HfAdaptError(f"{task.sources[name]}: no rows of group {group!r}; every group needs rows in "
                               f"every split (or leave it out of groupwise.groups)")
    missing = sorted(set(task.label_map.labels) - set(splits["train"]["label"]))
    if missing:
        raise HfAdaptError(f"{task.sources['train']}: group {group!r} has no training rows labelled "
                           f"{', '.join(map(repr, missing))}; every group needs every label (or leave it out of "
                           f"groupwise.groups)")


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
