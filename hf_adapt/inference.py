"""Batched inference with a trained model: `predict` (texts in, labels out) and `evaluate_file`.

Texts are sorted by length and batched, so each batch pads only to its own longest text; the
results are returned in input order. Inputs are truncated to `max_length` tokens and processed
`batch_size` at a time, so memory stays bounded whatever the input.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from hf_adapt.data import LabelMap, load_file
from hf_adapt.errors import HfAdaptError
from hf_adapt.metrics import compute_classification_metrics
from hf_adapt.modeling import load_trained, max_input_tokens


@dataclass
class Prediction:
    label: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": round(self.score, 6)}


@torch.inference_mode()
def predict_label_ids(model: Any, tokenizer: Any, texts: list[str], *, batch_size: int = 64,
                      max_length: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(label ids, probabilities [n, num_labels]) for `texts`, in input order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    # Never past the position embeddings: a long untrusted text would crash the model, not be truncated.
    max_length = min(max_length, max_input_tokens(model.config) or max_length)
    probs = torch.empty(len(texts), model.config.num_labels)
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        batch = tokenizer([texts[i] for i in index], truncation=True, max_length=max_length,
                          padding=True, return_tensors="pt").to(device)
        probs[index] = model(**batch).logits.float().softmax(-1).cpu()
    return probs.argmax(-1), probs


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
    labels = [str(v) for v in dataset[label_column]]
    unknown = sorted(set(labels) - set(label_map.labels))
    if unknown:
        raise HfAdaptError(f"{data_file}: labels {unknown[:5]} are unknown to the model "
                           f"(it knows: {', '.join(label_map.labels)})")
    texts = [str(t) for t in dataset[text_column]]
    ids, _ = predict_label_ids(model, tokenizer, texts, batch_size=batch_size, max_length=max_length)
    references = [label_map.label2id[label] for label in labels]
    return compute_classification_metrics(ids.numpy(), references, label_map.id2label)


# ---------------------------------------------------------------------------------------------
# Reading texts and writing predictions for the CLI


def read_texts(source: str, text_column: str = "text") -> list[str]:
    """Texts from a CSV/JSON(L)/Parquet file (its `text_column`), a .txt file, or '-' (stdin lines)."""
    if source == "-":
        return _non_empty_lines(sys.stdin)
    path = Path(source)
    if path.suffix.lower() == ".txt":
        if not path.is_file():
            raise HfAdaptError(f"input file {path} not found")
        with path.open(encoding="utf-8") as handle:
            return _non_empty_lines(handle)
    dataset = load_file(path)
    if text_column not in dataset.column_names:
        raise HfAdaptError(f"{path}: no column '{text_column}' (found: {', '.join(dataset.column_names)}); "
                           f"pass --text-column")
    return ["" if t is None else str(t) for t in dataset[text_column]]


def write_predictions(texts: list[str], predictions: list[Prediction], destination: str) -> None:
    """JSON lines to stdout ('-') or a .jsonl file; CSV for a .csv file."""
    rows = ({"text": t, **p.to_dict()} for t, p in zip(texts, predictions))
    if destination == "-":
        _write_jsonl(rows, sys.stdout)
        return
    path = Path(destination)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        if path.suffix.lower() == ".csv":
            writer = csv.DictWriter(handle, fieldnames=["text", "label", "score"])
            writer.writeheader()
            writer.writerows(rows)
        else:
            _write_jsonl(rows, handle)


def _write_jsonl(rows: Iterable[dict[str, Any]], handle: TextIO) -> None:
    for row in rows:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _non_empty_lines(handle: Iterable[str]) -> list[str]:
    return [line.rstrip("\n") for line in handle if line.strip()]
