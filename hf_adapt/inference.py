"""Batched inference with a trained model: `predict` (texts in, labels or numbers out) and
`evaluate_file`. An input is a text, or a `(text, text_pair)` tuple for a model trained on pairs.

Texts are sorted by length and batched, so each batch pads only to its own longest text; the
results are returned in input order. Inputs are truncated to `max_length` tokens and processed
`batch_size` at a time, and the CLI reads and writes them a chunk at a time, so memory stays
bounded whatever the input: a text is cut to a character bound before it is tokenized, as fast
tokenizers split the whole text before they truncate (one 50 MB line would take gigabytes).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ContextManager, TextIO

import numpy as np
import torch

from hf_adapt.config import DataConfig
from hf_adapt.data import LabelMap, load_file, read_task_labels, Windows
from hf_adapt.errors import HfAdaptError
from hf_adapt.metrics import pool_windows, score_logits
from hf_adapt.modeling import load_trained, max_input_tokens


Text = str | tuple[str, str]  # a text, or a (text, text_pair) pair


@dataclass
class Prediction:
    """A class and its probability; for a regression model `label` is None and `score` the number;
    for a multi-label model `labels` (those at or above their thresholds) and every label's `scores`."""

    label: str | None
    score: float
    labels: list[str] | None = None
    scores: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.labels is not None:
            return {"labels": self.labels, "scores": {k: round(v, 6) for k, v in (self.scores or {}).items()}}
        if self.label is None:
            return {"value": round(self.score, 6)}
        return {"label": self.label, "score": round(self.score, 6)}


def length_sorted_batches(model: Any, tokenizer: Any, texts: Sequence[Text], *, batch_size: int = 64,
                          max_length: int = 256) -> Iterator[tuple[list[int], Any]]:
    """The one batching of texts for a forward pass (predict, eval, forgetting, the reports):
    `(indices, tokenized batch on the model's device)`, shortest texts first, so each batch pads
    only to its own longest text; `indices` put each row's result back in input order. Texts are
    truncated to `max_length` tokens, never past the model's position embeddings."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]) if isinstance(texts[i], str) else sum(map(len, texts[i])))
    # Never past the position embeddings: a long untrusted text would crash the model, not be truncated.
    max_length = min(max_length, max_input_tokens(model.config) or max_length)
    device = model.device
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        yield index, tokenize_bounded(tokenizer, [texts[i] for i in index], max_length).to(device)


DEFAULT_MAX_LENGTH = 256  # tokens read of a text, unless the caller or a chunked model says otherwise
MAX_DOCUMENT_CHARS = 1_000_000  # a chunked model reads this much of a text (~200,000 words; memory stays bounded)


@torch.inference_mode()
def predict_logits(model: Any, tokenizer: Any, texts: Sequence[Text], *, batch_size: int = 64,
                   max_length: int | None = None) -> torch.Tensor:
    """The logits [n, num_labels] of `texts`, in input order (fp32, on the CPU). A text is cut to
    `max_length` tokens (default 256); a model trained with `data.long_text: chunk` reads all of it
    as windows of `max_length` tokens (default: the length it was trained on) and pools their logits."""
    windows = Windows.from_model_config(model.config)
    if windows is not None:
        return _pooled_window_logits(model, tokenizer, texts, windows, batch_size=batch_size, max_length=max_length)
    logits = torch.empty(len(texts), model.config.num_labels)
    for index, batch in length_sorted_batches(model, tokenizer, texts, batch_size=batch_size,
                                              max_length=max_length or DEFAULT_MAX_LENGTH):
        logits[index] = model(**batch).logits.float().cpu()
    return logits


def _pooled_window_logits(model: Any, tokenizer: Any, texts: Sequence[Text], windows: Windows, *, batch_size: int,
                          max_length: int | None) -> torch.Tensor:
    """Each text's windows (`Windows.encode`, as in training), length-sorted into batches, their logits
    pooled per text (`pool_windows`, as in training's evaluation)."""
    if any(not isinstance(text, str) for text in texts):
        raise HfAdaptError("this model reads long texts as windows of one text (data.long_text: chunk); it takes no "
                           "text pairs: leave out --text-pair-column")
    length = min(windows.length, max_length or windows.length, max_input_tokens(model.config) or windows.length)
    if length != windows.length:  # a shorter window than trained on (--max-length): a quarter of it shared
        windows = Windows(length, length // 4, windows.pooling)
    encoded, rows = windows.encode(tokenizer, [text[:MAX_DOCUMENT_CHARS] for text in texts])
    features = [{key: encoded[key][i] for key in encoded.keys()} for i in range(len(rows))]
    window_logits = torch.empty(len(rows), model.config.num_labels)
    order = sorted(range(len(rows)), key=lambda i: len(features[i]["input_ids"]))
    device = model.device
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        batch = tokenizer.pad([features[i] for i in index], return_tensors="pt").to(device)
        window_logits[index] = model(**batch).logits.float().cpu()
    pooled, _ = pool_windows(window_logits.numpy(), rows, windows.pooling)
    return torch.from_numpy(pooled).float()


def predict_label_ids(model: Any, tokenizer: Any, texts: Sequence[Text], **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(label ids, probabilities [n, num_labels]) of a classifier for `texts`, in input order; the
    probabilities are calibrated where the model saved a temperature."""
    probs = calibrated(predict_logits(model, tokenizer, texts, **kwargs), model.config).softmax(-1)
    return probs.argmax(-1), probs


def calibration_temperature(config: Any) -> float | None:
    """The temperature a classifier's scores divide its logits by (fitted on validation), or None."""
    saved = getattr(config, "calibration_temperature", None)
    return float(saved) if saved else None


def calibrated(logits: torch.Tensor, config: Any) -> torch.Tensor:
    """Logits divided by the model's saved temperature (as they are where none is saved)."""
    return logits / (calibration_temperature(config) or 1.0)


CHARS_PER_TOKEN = 16  # the first cut; a text whose cut yields fewer than max_length tokens is cut longer


def tokenize_bounded(tokenizer: Any, texts: Sequence[Text], max_length: int) -> Any:
    """`tokenizer(texts, truncation=True, max_length=...)`, padded, without tokenizing more of a long
    text than its first `max_length` tokens need: each text is cut to `CHARS_PER_TOKEN * max_length`
    characters, and cut twice as long again while the cut left it short of `max_length` tokens, so
    the result is the same as tokenizing the whole text. Pairs are cut part by part."""
    parts = [[t] if isinstance(t, str) else list(t) for t in texts]
    limit = CHARS_PER_TOKEN * max_length
    cut = [[part[:limit] for part in row] for row in parts]
    while True:
        columns = list(zip(*cut))
        batch = tokenizer(list(columns[0]), list(columns[1]) if len(columns) > 1 else None, truncation=True,
                          max_length=max_length, padding=True, return_tensors="pt")
        lengths = batch["attention_mask"].sum(-1).tolist()
        short = [i for i, row in enumerate(parts) if lengths[i] < max_length
                 and any(len(c) < len(p) for c, p in zip(cut[i], row))]
        if not short:
            return batch
        limit *= 2
        for i in short:
            cut[i] = [part[:limit] for part in parts[i]]


def predict(model: Any, tokenizer: Any, texts: Sequence[Text], **kwargs: Any) -> list[Prediction]:
    """Predict the label (and its probability) of each text; a regression model's number."""
    task = LabelMap.from_model_config(model.config).task
    if task == "regression":
        return [Prediction(None, float(v)) for v in predict_logits(model, tokenizer, texts, **kwargs)[:, 0]]
    if task == "multi_label":
        names = [model.config.id2label[i] for i in sorted(model.config.id2label)]
        probs, chosen = label_sets(predict_logits(model, tokenizer, texts, **kwargs), model.config)
        return [Prediction(None, 0.0, labels=[n for n, on in zip(names, row) if on],
                           scores=dict(zip(names, scores.tolist()))) for scores, row in zip(probs, chosen)]
    ids, probs = predict_label_ids(model, tokenizer, texts, **kwargs)
    id2label = model.config.id2label
    return [Prediction(id2label[int(i)], float(probs[n, i])) for n, i in enumerate(ids)]


def label_sets(logits: torch.Tensor, config: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A multi-label model's (calibrated scores, labels on at their thresholds) for `logits`."""
    probs = calibrated(logits, config).sigmoid()
    return probs, probs >= torch.tensor(label_thresholds(config))


def label_thresholds(config: Any) -> list[float]:
    """A multi-label model's decision threshold per label id, from its config (0.5 where none is saved)."""
    saved = getattr(config, "label_thresholds", None) or {}
    return [float(saved.get(config.id2label[i], 0.5)) for i in sorted(config.id2label)]


def evaluate_file(model_dir: str | Path, data_file: str | Path, *, text_column: str = "text",
                  label_column: str = "label", text_pair_column: str | None = None,
                  label_separator: str | None = None, label_columns: list[str] | None = None,
                  batch_size: int = 64, max_length: int | None = None, device: str = "cpu") -> dict[str, float]:
    """Metrics of a saved model on a labelled file: accuracy, macro-F1, MCC and per-class F1 for a
    classifier; Pearson, Spearman, MSE and MAE for a regression model; for a multi-label model the
    F1s, subset accuracy and per-label precision/recall/F1 at its saved thresholds and at 0.5."""
    model, tokenizer = load_trained(model_dir, device=device)
    dataset = load_file(data_file)
    columns = [("--text-column", text_column), ("--text-pair-column", text_pair_column)]
    columns += [("--label-column", c) for c in label_columns or [label_column]]  # 0/1 columns: the model's own
    for flag, column in columns:
        if column is not None and column not in dataset.column_names:
            raise HfAdaptError(f"{data_file}: no column '{column}' (found: {', '.join(dataset.column_names)}); "
                               f"pass {flag}")
    label_map = LabelMap.from_model_config(model.config)
    spec = DataConfig(label_column=label_column, label_separator=label_separator, label_columns=label_columns)
    labels = read_task_labels(dataset, str(data_file), spec, label_map.task)
    texts = read_inputs(dataset, text_column, text_pair_column)
    if label_map.task != "regression":
        named = {label for row in labels for label in row} if label_map.task == "multi_label" else set(labels)
        unknown = sorted(named - set(label_map.labels))
        if unknown:
            raise HfAdaptError(f"{data_file}: labels {unknown[:5]} are unknown to the model "
                               f"(it knows: {', '.join(label_map.labels)})")
    if label_map.task == "multi_label":
        references = [label_map.multi_hot(row) for row in labels]
    elif label_map.task == "single_label":
        references = [label_map.label2id[label] for label in labels]
    else:
        references = labels
    logits = predict_logits(model, tokenizer, texts, batch_size=batch_size, max_length=max_length)
    return score_logits(logits.numpy(), np.asarray(references), label_map.id2label, label_map.task,
                        thresholds=label_thresholds(model.config) if label_map.task == "multi_label" else None,
                        temperature=calibration_temperature(model.config))


def saved_recipe(model_dir: str | Path) -> dict[str, Any]:
    """The resolved recipe a model was trained with (its output directory's recipe.yaml, as plain
    data), or {} where there is none."""
    import yaml

    recipe = Path(model_dir) / "recipe.yaml"
    if not recipe.is_file():
        return {}
    return yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}


def saved_data_columns(model_dir: str | Path) -> dict[str, Any]:
    """The `data` section of the recipe a model was trained with (columns, files, label format),
    or {} where there is none."""
    return saved_recipe(model_dir).get("data") or {}


def read_inputs(batch: Any, text_column: str, text_pair_column: str | None = None) -> list[Text]:
    """The texts (or text pairs) of a dataset or batch; a missing value reads as ''."""
    # `[:]`: a Dataset's column read at once (iterating datasets 5's lazy Column reads it row by row)
    texts = ["" if t is None else str(t) for t in batch[text_column][:]]
    if text_pair_column is None:
        return texts
    return list(zip(texts, ["" if t is None else str(t) for t in batch[text_pair_column][:]]))


# ---------------------------------------------------------------------------------------------
# Reading texts and writing predictions for the CLI, a chunk at a time

CHUNK_ROWS = 4096  # texts read, predicted and written at a time


def open_texts(source: str, text_column: str = "text", text_pair_column: str | None = None, *,
               chunk_rows: int = CHUNK_ROWS) -> Iterator[list[Text]]:
    """Chunks of texts from a CSV/JSON(L)/Parquet file (its `text_column`, and `text_pair_column`
    for pairs), a .txt file (one text per line), or '-' (stdin lines). The source is checked now; it
    is read as the chunks are taken. Blank lines are kept (their prediction is empty), so output rows
    line up with input lines."""
    if text_pair_column is not None and (source == "-" or Path(source).suffix.lower() == ".txt"):
        raise HfAdaptError(f"predict: the model reads text pairs, so {'stdin' if source == '-' else source} "
                           f"cannot hold them; give a CSV/JSON(L)/Parquet file with columns '{text_column}' and "
                           f"'{text_pair_column}'")
    if source == "-":
        if sys.stdin is None or sys.stdin.closed:
            raise HfAdaptError("predict: stdin is closed; pipe texts in or give --input FILE")
        return _line_chunks(contextlib.nullcontext(getattr(sys.stdin, "buffer", sys.stdin)), "stdin", chunk_rows)
    path = Path(source)
    if path.suffix.lower() == ".txt":
        if not path.is_file():
            raise HfAdaptError(f"input file {path} not found")
        return _line_chunks(path.open("rb"), str(path), chunk_rows)
    dataset = load_file(path)
    columns = [c for c in (text_column, text_pair_column) if c is not None]
    for column, flag in zip(columns, ("--text-column", "--text-pair-column")):
        if column not in dataset.column_names:
            raise HfAdaptError(f"{path}: no column '{column}' (found: {', '.join(dataset.column_names)}); "
                               f"pass {flag}")
    return (read_inputs(batch, text_column, text_pair_column)
            for batch in dataset.select_columns(columns).iter(batch_size=chunk_rows))


def _line_chunks(opened: ContextManager[IO], name: str, chunk_rows: int) -> Iterator[list[str]]:
    """The lines of a binary (or text) handle, decoded as UTF-8 one by one (a bad byte is named by
    its line)."""
    with opened as handle:
        chunk: list[str] = []
        try:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = (raw.decode("utf-8") if isinstance(raw, bytes) else raw).rstrip("\r\n")
                except UnicodeDecodeError:
                    raise HfAdaptError(f"{name}: line {number} is not UTF-8 text; give UTF-8 text, one text per "
                                       f"line") from None
                chunk.append(line)
                if len(chunk) == chunk_rows:
                    yield chunk
                    chunk = []
        except OSError as err:  # e.g. stdin closed by the shell (`<&-`)
            raise HfAdaptError(f"predict: cannot read {name}: {err.strerror}; pipe texts in or give --input FILE")
        if chunk:
            yield chunk


def check_output_file(destination: str, flag: str, *inputs: str) -> None:
    """Before any work: refuse an output file that is one of the inputs, a directory, or lies under a file."""
    if destination == "-":
        return
    path = Path(destination).resolve()
    for source in inputs:
        if source != "-" and Path(source).exists() and path == Path(source).resolve():
            raise HfAdaptError(f"{flag} {destination} is the input file; write to another file (the input is "
                               f"never overwritten)")
    if path.is_dir():
        raise HfAdaptError(f"{flag} {destination} is a directory; give a file path (.jsonl or .csv)")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise HfAdaptError(f"{flag} {destination}: {parent} is a file, not a directory; give a file path")


def write_predictions(rows: Iterable[dict[str, Any]], destination: str) -> int:
    """JSON lines to stdout ('-') or a .jsonl file; CSV for a .csv file. A file is written under a
    temporary name and renamed into place at the end, so a failed run leaves no half-written file.
    Returns the number of rows written."""
    if destination == "-":
        return _write_rows(rows, sys.stdout, csv_format=False)
    path = Path(destination)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        with temporary.open("w", encoding="utf-8", newline="") as handle:
            count = _write_rows(rows, handle, csv_format=path.suffix.lower() == ".csv")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return count


def _write_rows(rows: Iterable[dict[str, Any]], handle: TextIO, *, csv_format: bool) -> int:
    writer = None
    count = 0
    for row in rows:
        if csv_format:
            if writer is None:
                writer = csv.DictWriter(handle, fieldnames=list(row))
                writer.writeheader()
            writer.writerow(row)
        else:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        count += 1
    return count


def prediction_rows(model: Any, tokenizer: Any, chunks: Iterable[list[Text]], **kwargs: Any) -> Iterator[dict[str, Any]]:
    """`{"text", "label", "score"}` (`{"text", "value"}` from a regression model, `{"text", "labels",
    "scores"}` from a multi-label one; `text_pair` too for pairs) for every text of every chunk, predicted a chunk at a time; a blank text gets an empty
    prediction (nulls), so rows keep their input's order."""
    task = LabelMap.from_model_config(model.config).task
    example = {"regression": Prediction(None, 0.0), "multi_label": Prediction(None, 0.0, [], {})}
    empty = {key: None for key in example.get(task, Prediction("", 0.0)).to_dict()}
    for texts in chunks:
        filled = [i for i, text in enumerate(texts) if not is_blank(text)]
        predictions = dict(zip(filled, predict(model, tokenizer, [texts[i] for i in filled], **kwargs)))
        for i, text in enumerate(texts):
            given = {"text": text} if isinstance(text, str) else {"text": text[0], "text_pair": text[1]}
            yield {**given, **(predictions[i].to_dict() if i in predictions else empty)}


def is_blank(text: Text) -> bool:
    """A text (or either text of a pair) that is empty or whitespace: nothing to predict."""
    return not all(part.strip() for part in ((text,) if isinstance(text, str) else text))
