"""`data.streaming: true`: train from a stream of the training file instead of an Arrow copy of it.

The file is read as datasets' `IterableDataset`: nothing is copied to the cache and memory does not
grow with the file. Before training, one pass reads the stream through the same checks as a file
read whole (`hf_adapt.data.row_converter`: the first bad row is named) and finds the task, the
label set and the row count (a classifier's head needs every label before its first step). During
training the stream is read again: each process keeps its own part (datasets'
`split_dataset_by_node`: whole files when there are enough of them, else every n-th row, so no row is
tokenized twice), checks and converts it, shuffles it through a buffer of `SHUFFLE_ROWS` rows (the
seed and the epoch fix the order), and tokenizes it as it goes. Validation and test are read whole,
as without streaming.

A stream has no length: `train.max_steps` sets the run's length. A resumed run continues at the
exact row where the checkpoint was made: Trainer reads past the batches already trained (they are
read and tokenized again, not trained), in the same order, because the shuffle is seeded. datasets'
own `state_dict` would skip that re-reading but drops the shuffle buffer on resume (rows lost), so
it is not used.
"""

from __future__ import annotations

from typing import Any

from hf_adapt.config import DataConfig
from hf_adapt.data import (
    BATCH_ROWS,
    check_columns,
    check_known_labels,
    label_key,
    label_map_of,
    load_file,
    normalise,
    resolve_task,
    row_converter,
    StreamScan,
    TaskData,
    unique_values,
)
from hf_adapt.errors import HfAdaptError, say

SHUFFLE_ROWS = 10_000  # rows in the shuffle buffer of a training stream


def load_stream_task(config: DataConfig, seed: int = 42, *, rank: int = 0, world_size: int = 1) -> TaskData:
    """The training file as a checked, converted and shuffled stream (this process's part of it),
    validation and test read whole, and the label map; see the module's docstring."""
    if not config.train_file:
        raise HfAdaptError("data.streaming: true reads data.train_file as a stream; give the file (a Hub dataset "
                           "is read whole)")
    source = config.train_file
    stream = load_file(source, streaming=True)
    columns = _column_names(stream, source)
    check_columns(_Columns(columns), source, config)
    task = _stream_task(stream, source, config)
    scan = scan_stream(stream, source, config, task)
    label_map = label_map_of(scan.pop("labels"), source, label_key(config), task)
    from datasets import DatasetDict
    from datasets.distributed import split_dataset_by_node

    part = split_dataset_by_node(stream, rank=rank, world_size=world_size) if world_size > 1 else stream
    # Two ways around datasets 5.2 with streams: shuffled before the conversion (shuffling the output of
    # an Arrow-formatted map loses the buffer's last rows: all of them when the stream is shorter than
    # the buffer), and no remove_columns (it also removes output columns of the same name, text and label)
    features = _converted_features(config, task)
    train = (part.shuffle(seed=seed, buffer_size=SHUFFLE_ROWS)
             .with_format("arrow")
             .map(row_converter(source, config, task), batched=True, batch_size=BATCH_ROWS, with_indices=True)
             .with_format(None)
             .select_columns(list(features))
             .cast(features))
    splits, sources = DatasetDict({"train": train}), {"train": f"{source} (streamed)"}
    for name, path in (("validation", config.validation_file), ("test", config.test_file)):
        if path:
            splits[name], sources[name] = normalise(load_file(path), str(path), config, task), str(path)
            if task != "regression":
                check_known_labels(splits[name], label_map, str(path), label_key(config))
    say(f"streaming {source}: {scan['rows']:,} rows checked; training reads them as a stream, shuffled "
        f"{SHUFFLE_ROWS:,} rows at a time" + (f", process {rank} of {world_size} its own part" if world_size > 1 else ""))
    return TaskData(splits=splits, label_map=label_map, sources=sources, stream=StreamScan(**scan))


def scan_stream(stream: Any, source: str, config: DataConfig, task: str) -> dict[str, Any]:
    """One pass over the stream: every row checked (an error names the first bad row), counted, and
    its labels collected; for regression the targets' mean and range."""
    import pyarrow.compute as pc

    convert = row_converter(source, config, task)
    rows, labels, total = 0, set(), 0.0
    low = high = None
    for batch in stream.with_format("arrow").iter(batch_size=BATCH_ROWS):
        converted = convert(batch, list(range(rows, rows + batch.num_rows)))
        label = converted.column("label")
        if task == "regression":
            total += pc.sum(label).as_py()
            extremes = pc.min_max(label).as_py()
            low = extremes["min"] if low is None else min(low, extremes["min"])
            high = extremes["max"] if high is None else max(high, extremes["max"])
        else:
            labels.update(unique_values(label))
        rows += batch.num_rows
    if rows == 0:
        raise HfAdaptError(f"{source}: no rows; it needs at least one row of data")
    if task == "regression":
        if low == high:
            raise HfAdaptError(f"{source}: every row's '{config.label_column}' is {low:g}; a regression needs "
                               f"targets that vary")
        return {"rows": rows, "labels": set(), "target_mean": total / rows, "target_range": (low, high)}
    return {"rows": rows, "labels": labels}


def _stream_task(stream: Any, source: str, config: DataConfig) -> str:
    """The task as `hf_adapt.data.task_of` decides it, from the label column's distinct values."""
    if config.label_columns or config.label_separator is not None:
        return "multi_label"
    if config.task in ("regression", "multi_label"):
        return config.task
    import pyarrow as pa

    seen: set[Any] = set()
    lists = False
    for batch in stream.select_columns([config.label_column]).with_format("arrow").iter(batch_size=BATCH_ROWS * 10):
        values = batch.column(0)
        lists = lists or pa.types.is_list(values.type) or pa.types.is_large_list(values.type)
        seen.update(unique_values(values))
    values = [list(seen)] if lists else list(seen)
    return resolve_task(values, source, config.label_column, config.task)


def _column_names(stream: Any, source: str) -> list[str]:
    """The stream's columns, from its first rows (a CSV's header)."""
    try:
        first = next(iter(stream.with_format("arrow").iter(batch_size=1)))
    except StopIteration:
        raise HfAdaptError(f"{source}: no rows; it needs at least one row of data") from None
    return list(first.column_names)


class _Columns:
    """What `check_columns` reads of a dataset: its column names."""

    def __init__(self, names: list[str]) -> None:
        self.column_names = names


def _converted_features(config: DataConfig, task: str) -> Any:
    """The columns `row_converter` gives, so that later steps know them before the stream is read."""
    from datasets import Features, List, Value

    label = {"single_label": Value("string"), "multi_label": List(Value("string")),
             "regression": Value("float64")}[task]
    features = {"text": Value("string"), "label": label}
    if config.text_pair_column:
        features["text_pair"] = Value("string")
    if config.group_column:
        features["group"] = Value("string")
    return Features(features)
