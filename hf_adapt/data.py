"""Data: files or a Hub dataset -> checked splits -> the task and its label map -> tokenized splits.

Everything a user can get wrong in their data (a missing file or column, empty texts, labels
that training never saw, a single class, a number that is not one) is caught here, before any
model is loaded or any output written, and reported as one `HfAdaptError` line naming the file,
column and row.

The task (`data.task`) is `single_label` (one class per text), `multi_label` (a set of labels per
text: JSON lists, `data.label_separator` strings or 0/1 `data.label_columns`) or `regression` (one
number per text or pair); `auto` decides from the training labels and says why (`task_of`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, TYPE_CHECKING

import numpy as np

from hf_adapt.config import DataConfig, missing_file
from hf_adapt.errors import first_line, HfAdaptError, say, shown, verbose

if TYPE_CHECKING:  # `datasets` is imported where it is used: `predict` of a .txt or stdin never needs it (~1 s)
    from datasets import Dataset, DatasetDict

FILE_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
SPLITS = ("train", "validation", "test")
MAX_CLASSES_FROM_NUMBERS = 50  # more distinct whole numbers than this are rarely class ids
BATCH_ROWS = 10_000  # rows checked and converted at a time: memory stays flat however large the file
SCAN_ROWS = 200_000  # rows of one column read at a time for distinct values and sums
LARGE_FILE_BYTES = 64 * 1024**2  # from this size reading a file shows a progress bar
PROBLEM_TYPES = {"single_label": "single_label_classification", "multi_label": "multi_label_classification",
                 "regression": "regression"}  # data.task -> transformers' config.problem_type


@dataclass(frozen=True)
class LabelMap:
    """The label set, fixed by the training data: ids follow sorted label order, so reruns agree.
    For `task="regression"` the one "label" is the name of the number predicted (the label column);
    for `task="multi_label"` every label is one independent yes/no output."""

    labels: tuple[str, ...]
    task: str = "single_label"

    @property
    def problem_type(self) -> str:
        """transformers' `config.problem_type`: which loss, and what `pipeline()` applies to the logits."""
        return PROBLEM_TYPES[self.task]

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def save(self, directory: Path) -> None:
        payload = {"task": self.task, "labels": list(self.labels), "label2id": self.label2id}
        (directory / "labels.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_model_config(cls, config: Any) -> "LabelMap":
        tasks = {problem: task for task, problem in PROBLEM_TYPES.items()}
        task = tasks.get(getattr(config, "problem_type", None) or "", "single_label")
        return cls(tuple(config.id2label[i] for i in sorted(config.id2label)), task)

    def multi_hot(self, labels: list[str]) -> list[float]:
        """A multi-label row's labels as the 0/1 vector the model is trained on."""
        ids = self.label2id
        vector = [0.0] * len(self.labels)
        for label in labels:
            vector[ids[label]] = 1.0
        return vector


DOCUMENT = "document"
"""The column of a chunked split naming each window's text (its row in the split)."""


@dataclass(frozen=True)
class Windows:
    """`data.long_text: chunk`: a text is read as overlapping windows of `length` tokens, `stride`
    of them shared with the window before; each window trains with its text's labels, and a text's
    prediction pools its windows' logits (`pooling`: mean or max). Saved in the model's config.json
    (`long_text_windows`), where predict and eval find it."""

    length: int
    stride: int
    pooling: str

    CONFIG_KEY = "long_text_windows"

    @classmethod
    def from_recipe(cls, data: DataConfig, max_length: int, task: str) -> "Windows | None":
        if data.long_text != "chunk":
            return None
        pooling = data.chunk_pooling if data.chunk_pooling != "auto" else ("max" if task == "multi_label" else "mean")
        return cls(max_length, max_length // 4 if data.chunk_stride is None else data.chunk_stride, pooling)

    @classmethod
    def from_model_config(cls, config: Any) -> "Windows | None":
        saved = getattr(config, cls.CONFIG_KEY, None)
        return cls(int(saved["length"]), int(saved["stride"]), str(saved["pooling"])) if saved else None

    def save(self, config: Any) -> None:
        setattr(config, self.CONFIG_KEY, {"length": self.length, "stride": self.stride, "pooling": self.pooling})

    def encode(self, tokenizer: Any, texts: list[str]) -> tuple[Any, list[int]]:
        """Tokenize `texts` into windows: `(encoding, rows)`, `rows[i]` being the text of window i.
        The one windowing of training, predict and eval (the tokenizer's own overflow with a stride)."""
        specials = tokenizer.num_special_tokens_to_add(pair=False)
        if self.stride >= self.length - specials:
            raise HfAdaptError(f"data.chunk_stride {self.stride} leaves no new tokens in a window of model.max_length "
                               f"{self.length} ({specials} of them the tokenizer's special tokens); set "
                               f"data.chunk_stride below {self.length - specials}")
        encoded = tokenizer(texts, truncation=True, max_length=self.length, stride=self.stride,
                            return_overflowing_tokens=True)
        return encoded, list(encoded.pop("overflow_to_sample_mapping"))


@dataclass
class TaskData:
    """Checked raw splits (columns `text`, optional `text_pair`, `label`: a string, or a float for
    regression; optional `group`) and their labels."""

    splits: DatasetDict
    label_map: LabelMap
    sources: dict[str, str]
    stream: StreamScan | None = None  # data.streaming: what the pass before training found in the stream

    @property
    def target_mean(self) -> float | None:
        """The mean training target of a regression task (where a fresh head starts); else None."""
        if self.label_map.task != "regression":
            return None
        return self.stream.target_mean if self.stream else float(column_array(self.splits["train"], "label").mean())

    def rows(self, split: str) -> int:
        """Rows of a split (of the training stream: as counted by the pass before training)."""
        return self.stream.rows if split == "train" and self.stream else len(self.splits[split])


@dataclass(frozen=True)
class StreamScan:
    """The training stream as one checking pass found it (`hf_adapt.streaming.scan_stream`)."""

    rows: int
    target_mean: float | None = None
    target_range: tuple[float, float] | None = None


@dataclass(frozen=True)
class TargetScale:
    """`data.target_scaling: standard`: a regression trains on (target - mean) / std of its training
    targets, then its head is rescaled (`hf_adapt.modeling.rescale_output`) so that the saved model
    predicts in the target's own units."""

    mean: float
    std: float

    @classmethod
    def from_recipe(cls, config: DataConfig, task: TaskData) -> "TargetScale | None":
        if config.target_scaling == "none":
            return None
        if task.label_map.task != "regression":
            raise HfAdaptError(f"data.target_scaling scales a regression target, and the labels make this a "
                               f"{task.label_map.task} task; set data.target_scaling: none")
        targets = column_array(task.splits["train"], "label").astype(np.float64)
        std = float(targets.std())
        if std == 0.0:
            raise HfAdaptError(f"data.target_scaling: standard divides by the training targets' spread, and every "
                               f"training target is {targets[0]:g}; set data.target_scaling: none")
        return cls(float(targets.mean()), std)

    def scaled(self, splits: Any) -> Any:
        """Raw `splits` with every `label` standardised."""
        return self._mapped(splits, "label", lambda y: (y - self.mean) / self.std)

    def unscaled(self, encoded: Any) -> Any:
        """Tokenized splits with every `labels` back in the target's units."""
        return self._mapped(encoded, "labels", lambda y: y * self.std + self.mean)

    @staticmethod
    def _mapped(splits: Any, column: str, change: Any) -> Any:
        return type(splits)({name: split.map(lambda batch: {column: [change(y) for y in batch[column]]},
                                             batched=True)
                             for name, split in splits.items()})


# ---------------------------------------------------------------------------------------------
# Arrow columns, read a batch at a time


def cache_dir() -> str | None:
    """Where the Arrow copies of data files and the tokenized splits are kept, so that a second run on
    the same file skips reading and tokenizing it: `HF_ADAPT_CACHE`, else (None) the datasets cache
    (`HF_DATASETS_CACHE`, by default ~/.cache/huggingface/datasets). Never beside the user's data."""
    return os.environ.get("HF_ADAPT_CACHE") or None


def _column_batches(dataset: Dataset, column: str) -> Iterator[Any]:
    """One column as Arrow arrays of `SCAN_ROWS` rows: memory stays flat, whatever the rows."""
    for batch in dataset.with_format("arrow").select_columns([column]).iter(batch_size=SCAN_ROWS):
        yield batch.column(0)


def is_list_column(dataset: Dataset, column: str) -> bool:
    import pyarrow as pa

    kind = dataset.data.schema.field(column).type
    return pa.types.is_list(kind) or pa.types.is_large_list(kind)


def distinct_values(dataset: Dataset, column: str) -> list[Any]:
    """The distinct values of a column (of a list column: of its lists' items), in no order."""
    seen: set[Any] = set()
    unhashable: list[Any] = []
    for values in _column_batches(dataset, column):
        for value in unique_values(values):
            (unhashable.append if isinstance(value, (list, dict)) else seen.add)(value)
    return [*seen, *unhashable]


def unique_values(values: Any) -> list[Any]:
    """The distinct values of one Arrow array (of a list array: of its lists' items); a JSON column of
    mixed values (datasets' Json type), which Arrow cannot compare, as all its values, parsed."""
    import pyarrow as pa
    import pyarrow.compute as pc

    lists = pa.types.is_list(values.type) or pa.types.is_large_list(values.type)
    try:
        return pc.unique(pc.list_flatten(values) if lists else values).to_pylist()
    except pa.ArrowNotImplementedError:
        return python_values(values)


def python_values(values: Any) -> list[Any]:
    """An Arrow array as Python values, as datasets shows them: a JSON column (a JSON file whose column
    mixes lists and strings, say) parsed."""
    import pyarrow as pa

    python = values.to_pylist()
    if isinstance(values.type, pa.JsonType):
        return [None if value is None else json.loads(value) for value in python]
    return python


def column_array(dataset: Dataset, column: str) -> np.ndarray:
    """A scalar column as one numpy array (strings as objects), without a Python list of its values."""
    parts = [values.to_numpy() for values in _column_batches(dataset, column)]
    return np.concatenate(parts) if parts else np.asarray([])


def column_mean(dataset: Dataset, column: str) -> float:
    """The mean of a numeric column, read a batch at a time (0 for no rows)."""
    import pyarrow.compute as pc

    total = count = 0
    for values in _column_batches(dataset, column):
        total += pc.sum(values).as_py() or 0
        count += len(values)
    return total / count if count else 0.0


def target_range(dataset: Dataset, column: str = "label") -> tuple[float, float]:
    """The smallest and largest value of a numeric column."""
    import pyarrow.compute as pc

    ranges = [pc.min_max(values).as_py() for values in _column_batches(dataset, column)]
    return min(r["min"] for r in ranges), max(r["max"] for r in ranges)


# ---------------------------------------------------------------------------------------------
# Loading


def load_task_data(config: DataConfig, seed: int = 42) -> TaskData:
    """Load, check and normalise the train/validation/test splits a recipe names.

    Returns splits with the user's columns renamed to `text` (+ `text_pair`) and `label` (strings,
    or floats for regression), a validation split carved from train with `seed` when none is given
    (stratified by label), and the task's label map built from the training labels.

    The splits are memory-mapped Arrow files in the cache (`cache_dir`), read and written
    `BATCH_ROWS` at a time, so memory does not grow with the data, and a second run on the same
    files reuses the first one's work.
    """
    raw, sources = _load_raw_splits(config)
    check_columns(raw["train"], sources["train"], config)
    task = task_of(raw["train"], sources["train"], config)
    from datasets import DatasetDict

    # checked on the rows as the files hold them, so an error names the file's own row
    splits = DatasetDict({name: normalise(raw[name], sources[name], config, task) for name in SPLITS if name in raw})
    if "validation" not in splits:
        strata = None
        if task == "single_label":
            strata = label_codes(splits["train"])
        elif task == "multi_label":  # each row by its rarest label
            strata = rarest_labels(splits["train"]["label"][:])
        splits.update(_carve_validation(splits, config.validation_fraction, seed, strata=strata))
        stratified = {"single_label": ", stratified by label", "multi_label": ", stratified by each row's rarest label"}
        sources["validation"] = (f"{sources['train']} ({config.validation_fraction:.0%} carved out"
                                 f"{stratified.get(task, '')}, seed {seed})")
        splits = DatasetDict({name: splits[name] for name in SPLITS if name in splits})
    limits = {"train": config.max_train_samples, "validation": config.max_eval_samples, "test": config.max_eval_samples}
    for name, limit in limits.items():
        if limit and name in splits and len(splits[name]) > limit:  # a seeded sample, in file order
            chosen = np.zeros(len(splits[name]), dtype=bool)
            chosen[np.random.default_rng(seed).permutation(len(splits[name]))[:limit]] = True
            splits[name] = rows_where(splits[name], chosen)
    label_map = _build_label_map(splits["train"], sources["train"], label_key(config), task)
    for name in ("validation", "test"):
        if name in splits and task != "regression":
            check_known_labels(splits[name], label_map, sources[name], label_key(config))
    return TaskData(splits=splits, label_map=label_map, sources=sources)


def label_key(config: DataConfig) -> str:
    """How messages name where the labels are: the label column, or the 0/1 label columns."""
    return ", ".join(config.label_columns) if config.label_columns else config.label_column


def task_of(train: Dataset, source: str, config: DataConfig) -> str:
    """The run's task: multi-label when the recipe names a label separator or 0/1 label columns,
    else `resolve_task` of the label column."""
    if config.label_columns or config.label_separator is not None:
        if config.task == "auto":
            how = (f"data.label_columns: {len(config.label_columns)} 0/1 columns" if config.label_columns else
                   f"data.label_separator {config.label_separator!r}")
            say(f"task: multi_label ({how})")
        return "multi_label"
    values = distinct_values(train, config.label_column)
    if is_list_column(train, config.label_column):  # a column of lists (JSON): resolve_task reads lists as multi-label
        values = [values]
    return resolve_task(values, source, config.label_column, config.task)


def resolve_task(values: list[Any], source: str, column: str, requested: str = "auto") -> str:
    """The task of a label column: `requested` when it is not `auto` (checked against the values),
    else decided from the values (all of them, or only the distinct ones: the decision is the same),
    and said in one line with the reason.

    Lists of labels are multi-label; label names (strings) are classes; numbers that are not all
    whole are a regression target; whole numbers are class ids when there are at most
    `MAX_CLASSES_FROM_NUMBERS` distinct values, and ambiguous (an error naming `data.task`) with more.
    """
    present = [v for v in values if isinstance(v, (list, tuple)) or label_to_str(v) is not None]
    lists = any(isinstance(v, (list, tuple)) for v in present)
    if lists and requested in ("single_label", "regression"):
        raise HfAdaptError(f"{source}: column '{column}' holds lists (several labels per text), and data.task "
                           f"is {requested}; set data.task: multi_label (or auto)")
    if requested in ("regression", "multi_label"):
        return requested
    if lists:  # auto
        say(f"task: multi_label (column '{column}' holds lists of labels; data.task sets it)")
        return "multi_label"
    numbers = [v for v in present if isinstance(v, (int, float)) and not isinstance(v, bool)]
    numeric = bool(present) and len(numbers) == len(present)
    distinct = len(set(present))
    whole = numeric and all(float(v).is_integer() for v in numbers)
    if requested == "single_label":
        if numeric and distinct > MAX_CLASSES_FROM_NUMBERS:
            raise HfAdaptError(f"{source}: column '{column}' holds {distinct} distinct numbers, which looks like a "
                               f"number to predict, not classes; set data.task: regression (or name the classes)")
        return requested
    if not numeric:
        why = "holds label names"
        task = "single_label"
    elif not whole:
        example = next(v for v in numbers if not float(v).is_integer())
        why, task = f"holds numbers that are not whole (e.g. {example:g}): a number to predict", "regression"
    elif distinct <= MAX_CLASSES_FROM_NUMBERS:
        why, task = f"holds {distinct} distinct whole numbers, read as class ids", "single_label"
    else:
        raise HfAdaptError(f"{source}: column '{column}' holds {distinct} distinct whole numbers: class ids or a "
                           f"number to predict? set data.task: single_label or data.task: regression")
    say(f"task: {task} (column '{column}' {why}; data.task sets it)")
    return task


def _load_raw_splits(config: DataConfig) -> tuple[dict[str, Dataset], dict[str, str]]:
    if config.dataset:
        return _load_hub_dataset(config)
    files = {"train": config.train_file, "validation": config.validation_file, "test": config.test_file}
    raw = {name: load_file(path) for name, path in files.items() if path}
    return raw, {name: str(path) for name, path in files.items() if path}


def load_file(path: str | Path, *, streaming: bool = False) -> Dataset:
    """Read one CSV/TSV/JSON(L)/Parquet file into a `Dataset` (with `streaming`: an `IterableDataset`,
    read as it is iterated), with a one-line error on failure."""
    path = Path(path)
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise HfAdaptError(f"{path}: unsupported file type '{path.suffix}'; use .csv, .tsv, .json, .jsonl or .parquet")
    if missing_file(path):
        raise HfAdaptError(missing_file(path))
    if path.stat().st_size == 0:
        raise HfAdaptError(f"{path}: the file is empty; it needs a header and at least one row")
    import datasets

    kwargs: dict[str, Any] = {"sep": "\t"} if path.suffix.lower() == ".tsv" else {}
    # datasets logs a parse failure itself before raising it; we report it once, in one line.
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    bars = datasets.utils.are_progress_bars_disabled() or verbose() or path.stat().st_size > LARGE_FILE_BYTES
    if not bars:
        datasets.utils.disable_progress_bars()  # "Generating train split": noise before a one-line error
    try:
        # an Arrow copy in the cache (never beside the user's data), memory-mapped: a file of any size,
        # read once (the copy is reused while the file is unchanged)
        dataset = datasets.load_dataset(fmt, data_files=str(path), split="train", cache_dir=cache_dir(),
                                        streaming=streaming, **kwargs)
    except Exception as err:  # datasets wraps pandas/pyarrow parse errors in many types
        raise HfAdaptError(_read_error(path, fmt, err)) from None
    finally:
        datasets.logging.set_verbosity(verbosity)
        if not bars:
            datasets.utils.enable_progress_bars()
    if not streaming and len(dataset) == 0:
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
    if "Failed to parse string" in str(cause):  # a large file is typed from its first rows
        return (f"{path}: could not be read as {fmt.upper()} ({first_line(cause)}): a column holds numbers in its "
                f"first rows and text further down; fix or drop that row")
    return f"{path}: could not be read as {fmt.upper()} ({first_line(cause)}); fix the file's syntax"


def _load_hub_dataset(config: DataConfig) -> tuple[dict[str, Dataset], dict[str, str]]:
    import datasets

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


def _carve_validation(raw: dict[str, Dataset], fraction: float, seed: int,
                      strata: Any = None) -> dict[str, Dataset]:
    """Move a seeded `fraction` of train to validation; stratified by each row's `strata` when given."""
    train = raw["train"]
    if len(train) < 4:
        raise HfAdaptError(f"training data has {len(train)} rows: too few to carve a validation split; "
                           f"give data.validation_file")
    carved = math.ceil(fraction * len(train))
    if len(train) - carved < 2:
        raise HfAdaptError(f"data.validation_fraction {fraction:g} of {len(train)} training rows leaves "
                           f"{len(train) - carved} to train on; lower it (0.1-0.2 is usual) or give data.validation_file")
    if strata is None:
        held = np.random.default_rng(seed).permutation(len(train))[:carved]
    else:
        held = np.asarray(stratified_sample(strata, fraction, seed), dtype=np.int64)
    validation = np.zeros(len(train), dtype=bool)
    validation[held] = True
    return {**raw, "train": rows_where(train, ~validation), "validation": rows_where(train, validation)}


def rows_where(dataset: Dataset, keep: np.ndarray) -> Dataset:
    """The rows of `dataset` where `keep` is true, in file order, as their own Arrow file (cached).

    One pass through the file in order, not `Dataset.select`: a selection is read later by Arrow's
    `take`, whose every call costs time in proportion to the whole file (quadratic in the rows)."""
    import pyarrow as pa

    def pick(batch: Any, rows: list[int]) -> Any:
        return batch.filter(pa.array(keep[rows[0]:rows[0] + len(rows)])) if rows else batch

    return dataset.with_format("arrow").map(pick, batched=True, batch_size=SCAN_ROWS, with_indices=True,
                                            desc="Splitting").with_format(None)


def stratified_sample(labels: Any, fraction: float, seed: int) -> list[int]:
    """Row indices of a seeded sample holding `fraction` of each label's rows (rounded), at least one
    of every label with two or more rows, and never a label's last row (training must see it).

    Written here because `Dataset.train_test_split(stratify_by_column=...)` needs a ClassLabel column
    and, like scikit-learn's `train_test_split`, refuses a label with one row and lets a rare label
    round away to nothing; this sample keeps every label that can be kept on both sides.

    `labels`: every row's label, or `(names, codes)`: the sorted label names and each row's index
    into them (`label_codes`, for millions of rows).
    """
    rng = np.random.default_rng(seed)
    names, codes = labels if isinstance(labels, tuple) else _label_codes(labels)
    held: list[int] = []
    for code in range(len(names)):  # labels in sorted order, each label's rows in order
        rows = np.flatnonzero(codes == code)
        take = min(max(round(fraction * len(rows)), 1), len(rows) - 1)
        held.extend(rng.permutation(rows)[:take].tolist())
    return sorted(held)


def label_codes(dataset: Dataset, column: str = "label") -> tuple[np.ndarray, np.ndarray]:
    """`(names, codes)` of a string column: its distinct values sorted, and each row's index into them
    (int32, computed in Arrow: 4 bytes a row, no Python string per row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = pa.array(sorted(distinct_values(dataset, column)), pa.string())
    parts = [pc.index_in(values, value_set=names).to_numpy() for values in _column_batches(dataset, column)]
    return np.asarray(names.to_pylist(), dtype=object), np.concatenate(parts).astype(np.int32)


def _label_codes(labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """`(names, codes)`: each distinct label as `label_to_str` names it, and every row's index into them."""
    import pandas as pd  # a dependency of datasets

    codes, values = pd.factorize(np.asarray(labels, dtype=object), use_na_sentinel=False)  # in C, for millions of rows
    names = np.asarray([str(label_to_str(v)) for v in values], dtype=object)
    merged, inverse = np.unique(names, return_inverse=True)  # sorted; ' a' and 'a' are one label
    return merged, inverse.reshape(-1)[codes]


def rarest_labels(rows: list[list[str]]) -> list[str]:
    """Each multi-label row's rarest label in `rows` ('' for a row without labels): the stratum by
    which a validation carve keeps every label's share."""
    counts: dict[str, int] = {}
    for labels in rows:
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
    return [min(labels, key=lambda label: (counts[label], label)) if labels else "" for labels in rows]


def check_columns(dataset: Dataset, source: str, config: DataConfig) -> None:
    keys = {"data.text_column": config.text_column, "data.label_column": config.label_column,
            "data.text_pair_column": config.text_pair_column, "data.group_column": config.group_column}
    if config.label_columns:
        del keys["data.label_column"]
        keys.update({f"data.label_columns[{i}]": column for i, column in enumerate(config.label_columns)})
    missing = [(key, column) for key, column in keys.items() if column is not None and column not in dataset.column_names]
    if missing:  # every missing column at once, not one run per mistake
        names = " and ".join(f"'{column}'" for _, column in missing)
        raise HfAdaptError(f"{source}: no column{'s' if len(missing) > 1 else ''} {names} (found: {', '.join(dataset.column_names)}); set "
                           f"{' and '.join(key for key, _ in missing)}{_separator_hint(dataset.column_names)}")


def normalise(dataset: Dataset, source: str, config: DataConfig, task: str) -> Dataset:
    """Check the columns and values, and rename them to text / text_pair / label (string labels, or
    floats for regression), plus `group` when `data.group_column` is set.

    One pass over the file's Arrow batches (`BATCH_ROWS` rows each, converted with `pyarrow.compute`);
    a batch with a problem is read again row by row, so the error names the first bad row. The result
    is an Arrow file in the cache, reused by the next run on the same file.
    """
    check_columns(dataset, source, config)
    return dataset.with_format("arrow").map(
        row_converter(source, config, task), batched=True, batch_size=BATCH_ROWS, with_indices=True,
        remove_columns=dataset.column_names, desc=f"Checking {Path(source).name}").with_format(None)


def row_converter(source: str, config: DataConfig, task: str) -> Any:
    """`convert(batch, rows)`: one Arrow batch of a file's rows (`rows`: their indices in the file)
    checked and turned into the columns text / label (/ text_pair / group)."""

    def convert(batch: Any, rows: list[int]) -> Any:
        import pyarrow as pa

        first = rows[0] if rows else 0  # the batch's first row in the file (the file is read in order)
        columns = {"text": _arrow_texts(batch.column(config.text_column), source, config.text_column, first),
                   "label": _arrow_labels(batch, source, config, task, first)}
        if config.text_pair_column:
            columns["text_pair"] = _arrow_texts(batch.column(config.text_pair_column), source,
                                                config.text_pair_column, first)
        if config.group_column:
            columns["group"] = _arrow_groups(batch.column(config.group_column), source, config.group_column, first)
        return pa.table(columns)

    return convert


def _arrow_texts(values: Any, source: str, column: str, first: int) -> Any:
    """A batch's texts as an Arrow string array (numbers read as text too); an empty one is an error."""
    import pyarrow as pa

    if _trimmed_names(values) is not None:
        return values
    python = python_values(values)
    _check_texts(python, source, column, first)  # names the first blank row
    return pa.array([str(v) for v in python], pa.string())


def _trimmed_names(values: Any) -> Any:
    """A string array with its surrounding spaces trimmed, or None when it is not strings or holds a
    blank or missing value (the Python readers then name the row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return None
    names = pc.utf8_trim_whitespace(values)
    return None if pc.any(pc.or_kleene(pc.is_null(names), pc.equal(names, ""))).as_py() else names


def _arrow_labels(batch: Any, source: str, config: DataConfig, task: str, first: int) -> Any:
    """A batch's labels as the task reads them (`read_task_labels`): in Arrow for the usual column
    types (label names or whole numbers; numbers for regression), else, and to name a bad row, in Python."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = None if config.label_columns else batch.column(config.label_column)
    if task == "single_label" and values is not None:
        names = _trimmed_names(values)
        if names is not None:
            return names
        if pa.types.is_integer(values.type) and values.null_count == 0:
            return pc.cast(values, pa.string())
    if task == "regression" and values is not None and (pa.types.is_integer(values.type) or
                                                          pa.types.is_floating(values.type)):
        numbers = pc.cast(values, pa.float64())
        if numbers.null_count == 0 and pc.all(pc.is_finite(numbers)).as_py():
            return numbers
    columns = {name: python_values(batch.column(name)) for name in batch.column_names}
    labels = read_task_labels(columns, source, config, task, first_row=first)
    kind = {"single_label": pa.string(), "regression": pa.float64(), "multi_label": pa.list_(pa.string())}[task]
    return pa.array(labels, kind)


def _arrow_groups(values: Any, source: str, column: str, first: int) -> Any:
    """A batch's group names as strings (like labels: 3.0 -> '3'); an empty group is an error."""
    import pyarrow as pa

    names = _trimmed_names(values)
    if names is not None:
        return names
    return pa.array(_read_groups(python_values(values), source, column, first), pa.string())


def read_task_labels(columns: Any, source: str, config: DataConfig, task: str, *, first_row: int = 0) -> list[Any]:
    """The labels of every row as the task reads them: `read_labels` of the label column, or, with
    `data.label_columns`, the names of each row's columns that hold 1.

    `columns` maps column names to their values (a `Dataset` or a batch); errors count rows from
    `first_row` (where the batch starts in its file)."""
    if not config.label_columns:
        return read_labels(columns[config.label_column][:], source, config.label_column, task,
                           config.label_separator, first_row=first_row)
    rows: list[list[str]] = []
    for column in config.label_columns:
        for row, value in enumerate(columns[column][:]):
            if row == len(rows):
                rows.append([])
            flag = label_to_str(value)
            if flag not in ("0", "1", "True", "False", "true", "false"):
                raise HfAdaptError(f"{source}: {shown(value)} in label column '{column}' at data row "
                                   f"{first_row + row + 1} is not 0 or 1; data.label_columns must each hold 0/1 "
                                   f"(1: the row has that label)")
            if flag in ("1", "True", "true"):
                rows[row].append(column)
    return [sorted(labels) for labels in rows]


def read_labels(values: list[Any], source: str, column: str, task: str, separator: str | None = None, *,
                first_row: int = 0) -> list[str] | list[float] | list[list[str]]:
    """A label column's values as the task reads them, training and evaluation alike: strings
    (`label_to_str`) for classes, floats for regression, sorted lists of strings for multi-label
    (from JSON lists, or strings split on `separator`; there a row may have no label); a missing or
    unreadable one is an error naming its row (counted from `first_row`)."""
    if task == "multi_label":
        return [_label_list(v, source, column, row, separator) for row, v in enumerate(values, start=first_row)]
    labels = [label_to_str(v) for v in values] if task == "single_label" else [_number(v) for v in values]
    for row, label in enumerate(labels, start=first_row):
        if label is None:
            raise HfAdaptError(f"{source}: empty or NaN label in column '{column}' at data row {row + 1}; "
                               f"label every row or drop it")
        if isinstance(label, str) and task == "regression":
            raise HfAdaptError(f"{source}: {label!r} in column '{column}' at data row {row + 1} is not a number, and "
                               f"data.task is regression; fix the value or drop the row")
    return labels  # type: ignore[return-value]


def _label_list(value: Any, source: str, column: str, row: int, separator: str | None) -> list[str]:
    """One multi-label row's labels, sorted and without repeats; none for an empty or missing value."""
    if isinstance(value, (list, tuple)):
        labels = [label_to_str(v) for v in value if not isinstance(v, (list, tuple, dict))]
        if len(labels) != len(value):
            raise HfAdaptError(f"{source}: column '{column}' at data row {row + 1} holds a nested list; give a flat "
                               f"list of label names")
        return sorted({label for label in labels if label is not None})
    text = label_to_str(value)
    if text is None:
        return []
    if separator is None:
        raise HfAdaptError(f"{source}: column '{column}' at data row {row + 1} holds {shown(value)}, not a list of "
                           f"labels; write every row's labels as a list (JSON), or set data.label_separator to split "
                           f"a string such as 'joy;love'")
    return sorted({part.strip() for part in text.split(separator) if part.strip()})


def _number(value: Any) -> float | str | None:
    """A regression target as a float; None when missing, the text itself when it is no finite number."""
    text = label_to_str(value)
    if text is None or isinstance(value, bool):
        return None if text is None else text
    try:
        number = float(value) if isinstance(value, (int, float)) else float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def _separator_hint(columns: list[str]) -> str:
    """One column whose name holds a tab or ';': the file is not comma-separated."""
    if len(columns) == 1:
        for name, sep in (("a tab", "\t"), ("';'", ";")):
            if sep in columns[0]:
                return f", or, as the file separates columns with {name}, save it comma-separated" + (
                    " (or name it .tsv)" if sep == "\t" else "")
    return ""


def _read_groups(values: list[Any], source: str, column: str, first_row: int = 0) -> list[str]:
    """Group names as strings (like labels: 3.0 -> '3'); an empty group is an error."""
    groups = [label_to_str(v) for v in values]
    for row, group in enumerate(groups, start=first_row):
        if group is None:
            raise HfAdaptError(f"{source}: empty or NaN group in column '{column}' at data row {row + 1}; "
                               f"name every row's group or drop the row")
    return groups  # type: ignore[return-value]


def _check_texts(values: list[Any], source: str, column: str, first_row: int = 0) -> None:
    for row, value in enumerate(values, start=first_row):
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


def _build_label_map(train: Dataset, source: str, column: str, task: str = "single_label") -> LabelMap:
    if task == "regression":
        low, high = target_range(train)
        if low == high:
            raise HfAdaptError(f"{source}: every row's '{column}' is {low:g}; a regression needs targets that vary")
        return LabelMap((column,), task)
    return label_map_of(set(distinct_values(train, "label")), source, column, task)


def label_map_of(labels: set[str], source: str, column: str, task: str) -> LabelMap:
    """The label map of a classifier's training labels (for regression: of the target column)."""
    if task == "regression":
        return LabelMap((column,), task)
    if task == "multi_label" and len(labels) < 2:
        raise HfAdaptError(f"{source}: the training rows name {len(labels)} label(s) in '{column}'; multi-label "
                           f"needs at least two")
    if len(labels) < 2:
        raise HfAdaptError(f"{source}: training data has a single class ({next(iter(labels))!r}) in column "
                           f"'{column}'; a classifier needs at least two labels")
    # Integer-like labels sort numerically (so '10' comes after '9'); others alphabetically.
    key = (lambda s: (0, int(s), "")) if all(_is_int(s) for s in labels) else (lambda s: (1, 0, s))
    return LabelMap(tuple(sorted(labels, key=key)), task)


def check_known_labels(dataset: Dataset, label_map: LabelMap, source: str, column: str) -> None:
    unseen = sorted(set(distinct_values(dataset, "label")) - set(label_map.labels))
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
    from datasets import DatasetDict

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
    if missing and task.label_map.task == "single_label":
        raise HfAdaptError(f"{task.sources['train']}: group {group!r} has no training rows labelled "
                           f"{', '.join(map(repr, missing))}; every group needs every label (or leave it out of "
                           f"groupwise.groups)")


# ---------------------------------------------------------------------------------------------
# Tokenization


def tokenize_splits(splits: DatasetDict, tokenizer: Any, label_map: LabelMap, max_length: int,
                    windows: Windows | None = None) -> DatasetDict:
    """Tokenize without padding (the collator pads each batch to its own longest row).

    Keeps a `length` column so length-grouped batching needs no second pass over the data. With
    `windows` (data.long_text: chunk) a row is one window of a text, labelled as its text, and the
    `document` column names that text's row in the split. Only the token ids are stored (and the
    token types of text pairs): the collator makes the attention mask as it pads.

    A large split is tokenized by one process per CPU core; the result is an Arrow file in the cache
    (`cache_dir`), found again by its fingerprint (the split, the tokenizer, these arguments), so a
    second run on the same data skips tokenizing.
    """
    import datasets
    from datasets import DatasetDict

    label2id = label_map.label2id
    # token types only for text pairs, and only where the model has them (not RoBERTa, ModernBERT, ...)
    types = "text_pair" in splits["train"].column_names and "token_type_ids" in tokenizer.model_input_names

    def encode(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        if windows is None:
            encoded = tokenizer(batch["text"], batch.get("text_pair"), truncation=True, max_length=max_length,
                                return_attention_mask=False, return_token_type_ids=types)
            rows = list(range(len(batch["text"])))
        else:
            encoded, rows = windows.encode(tokenizer, batch["text"])
            encoded = {key: encoded[key] for key in ("input_ids", *(["token_type_ids"] if types else []))}
            encoded[DOCUMENT] = [indices[row] for row in rows]
        labels = [batch["label"][row] for row in rows]
        if label_map.task == "regression":
            encoded["labels"] = labels
        elif label_map.task == "multi_label":
            encoded["labels"] = [label_map.multi_hot(row_labels) for row_labels in labels]
        else:
            encoded["labels"] = [label2id[label] for label in labels]
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return dict(encoded)

    features = _encoded_features(label_map.task, types=types, windows=windows is not None)

    def tokenized(name: str, split: Any) -> Any:
        if not isinstance(split, datasets.Dataset):  # a stream (data.streaming): tokenized as it is read
            return split.map(encode, batched=True, with_indices=True, remove_columns=list(split.column_names),
                             features=features)
        return split.map(encode, batched=True, with_indices=True, remove_columns=split.column_names,
                         features=features, num_proc=tokenizing_processes(len(split)), desc=f"Tokenizing {name}")

    return DatasetDict({name: tokenized(name, split) for name, split in splits.items()})


TOKENIZING_ROWS_PER_PROCESS = 20_000  # below this a second process costs more than it saves


def tokenizing_processes(rows: int) -> int | None:
    """Processes to tokenize `rows` with: one per CPU core this process may use, for large splits."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    processes = min(cores, rows // TOKENIZING_ROWS_PER_PROCESS)
    return processes if processes > 1 else None


def _encoded_features(task: str, *, types: bool, windows: bool) -> Any:
    """The tokenized columns' Arrow types: int32 ids and lengths, half the bytes of Python's int64."""
    from datasets import Features, List, Value

    labels = {"single_label": Value("int64"), "multi_label": List(Value("float32")),
              "regression": Value("float64")}[task]
    features = {"input_ids": List(Value("int32"))}
    if types:
        features["token_type_ids"] = List(Value("int8"))
    if windows:
        features[DOCUMENT] = Value("int64")
    return Features({**features, "labels": labels, "length": Value("int32")})
