"""Batched inference with a trained model: `predict` (texts in, labels out) and `evaluate_file`.

Texts are sorted by length and batched, so each batch pads only to its own longest text; the
results are returned in input order. Inputs are truncated to `max_length` tokens and processed
`batch_size` at a time, and the CLI reads and writes them a chunk at a time, so memory stays
bounded whatever the input: a text is cut to a character bound before it is tokenized, as fast
tokenizers split the whole text before they truncate (one 50 MB line would take gigabytes).
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ContextManager, TextIO

import torch

from hf_adapt.data import LabelMap, label_to_str, load_file
from hf_adapt.errors import HfAdaptError
from hf_adapt.metrics import compute_classification_metrics
from hf_adapt.modeling import load_trained, max_input_tokens


@dataclass
class Prediction:
    label: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": round(self.score, 6)}


def length_sorted_batches(model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 64,
                          max_length: int = 256) -> Iterator[tuple[list[int], Any]]:
    """The one batching of texts for a forward pass (predict, eval, forgetting, the reports):
    `(indices, tokenized batch on the model's device)`, shortest texts first, so each batch pads
    only to its own longest text; `indices` put each row's result back in input order. Texts are
    truncated to `max_length` tokens, never past the model's position embeddings."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    # Never past the position embeddings: a long untrusted text would crash the model, not be truncated.
    max_length = min(max_length, max_input_tokens(model.config) or max_length)
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        yield index, tokenize_bounded(tokenizer, [texts[i] for i in index], max_length).to(device)


@torch.inference_mode()
def predict_label_ids(model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 64,
                      max_length: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(label ids, probabilities [n, num_labels]) for `texts`, in input order."""
    probs = torch.empty(len(texts), model.config.num_labels)
    for index, batch in length_sorted_batches(model, tokenizer, texts, batch_size=batch_size, max_length=max_length):
        probs[index] = model(**batch).logits.float().softmax(-1).cpu()
    return probs.argmax(-1), probs


CHARS_PER_TOKEN = 16  # the first cut; a text whose cut yields fewer than max_length tokens is cut longer


def tokenize_bounded(tokenizer: Any, texts: list[str], max_length: int) -> Any:
    """`tokenizer(texts, truncation=True, max_length=...)`, padded, without tokenizing more of a long
    text than its first `max_length` tokens need: each text is cut to `CHARS_PER_TOKEN * max_length`
    characters, and cut twice as long again while the cut left it short of `max_length` tokens, so
    the result is the same as tokenizing the whole text."""
    limit = CHARS_PER_TOKEN * max_length
    cut = [text[:limit] for text in texts]
    while True:
        batch = tokenizer(cut, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        lengths = batch["attention_mask"].sum(-1).tolist()
        short = [i for i, text in enumerate(texts) if len(cut[i]) < len(text) and lengths[i] < max_length]
        if not short:
            return batch
        limit *= 2
        for i in short:
            cut[i] = texts[i][:limit]


def predict(model: Any, tokenizer: Any, texts: list[str], **kwargs: Any) -> list[Prediction]:
    """Predict the label (and its probability) of each text."""
    ids, probs = predict_label_ids(model, tokenizer, texts, **kwargs)
    id2label = model.config.id2label
    return [Prediction(id2label[int(i)], float(probs[n, i])) for n, i in enumerate(ids)]


def evaluate_file(model_dir: str | Path, data_file: str | Path, *, text_column: str = "text",
                  label_column: str = "label", batch_size: int = 64, max_length: int = 256,
                  device: str = "cpu") -> dict[str, float]:
    """Metrics (accuracy, macro-F1, MCC, per-class F1) of a saved model on a labelled file."""
    model, tokenizer = load_trained(model_dir, device=device)
    dataset = load_file(data_file)
    for column in (text_column, label_column):
        if column not in dataset.column_names:
            raise HfAdaptError(f"{data_file}: no column '{column}' (found: {', '.join(dataset.column_names)}); "
                               f"pass --text-column/--label-column")
    label_map = LabelMap.from_model_config(model.config)
    labels = [label_to_str(v) for v in dataset[label_column]]
    if None in labels:
        raise HfAdaptError(f"{data_file}: empty or NaN label in column '{label_column}' at data row "
                           f"{labels.index(None) + 1}; fill it in or drop the row")
    unknown = sorted(set(labels) - set(label_map.labels))
    if unknown:
        raise HfAdaptError(f"{data_file}: labels {unknown[:5]} are unknown to the model "
                           f"(it knows: {', '.join(label_map.labels)})")
    texts = [str(t) for t in dataset[text_column]]
    ids, _ = predict_label_ids(model, tokenizer, texts, batch_size=batch_size, max_length=max_length)
    references = [label_map.label2id[label] for label in labels]
    return compute_classification_metrics(ids.numpy(), references, label_map.id2label)


# ---------------------------------------------------------------------------------------------
# Reading texts and writing predictions for the CLI, a chunk at a time

CHUNK_ROWS = 4096  # texts read, predicted and written at a time


def open_texts(source: str, text_column: str = "text", *, chunk_rows: int = CHUNK_ROWS) -> Iterator[list[str]]:
    """Chunks of texts from a CSV/JSON(L)/Parquet file (its `text_column`), a .txt file (one text per
    line), or '-' (stdin lines). The source is checked now; it is read as the chunks are taken. Blank
    lines are kept (their prediction is empty), so output rows line up with input lines."""
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
    if text_column not in dataset.column_names:
        raise HfAdaptError(f"{path}: no column '{text_column}' (found: {', '.join(dataset.column_names)}); "
                           f"pass --text-column")
    return (["" if t is None else str(t) for t in batch[text_column]]
            for batch in dataset.select_columns([text_column]).iter(batch_size=chunk_rows))


def read_texts(source: str, text_column: str = "text") -> list[str]:
    """Every text of `open_texts`, as one list."""
    return list(itertools.chain.from_iterable(open_texts(source, text_column)))


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


def prediction_rows(model: Any, tokenizer: Any, chunks: Iterable[list[str]], **kwargs: Any) -> Iterator[dict[str, Any]]:
    """`{"text", "label", "score"}` for every text of every chunk, predicted a chunk at a time; a
    blank text gets an empty prediction (label and score null), so rows keep their input's order."""
    for texts in chunks:
        filled = [i for i, text in enumerate(texts) if text.strip()]
        predictions = dict(zip(filled, predict(model, tokenizer, [texts[i] for i in filled], **kwargs)))
        for i, text in enumerate(texts):
            yield {"text": text, **(predictions[i].to_dict() if i in predictions else {"label": None, "score": None})}
