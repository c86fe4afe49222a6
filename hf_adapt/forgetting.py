"""The forgetting meter: how much of what a pretrained encoder knew survives fine-tuning.

Two measurements, both between a BASE model (before) and an ADAPTED model (after):

- **Representation drift**: linear CKA (Kornblith et al., 2019, "Similarity of Neural Network
  Representations Revisited") between the two encoders' mean-pooled sentence vectors at every
  layer (the embedding output, then each encoder layer). 1.0 means the layer is unchanged up to
  rotation and scale.
- **Retention on a probe** (a CSV whose header picks the kind):
  `sentence1,sentence2,score` is an STS probe (Spearman between the cosine of mean-pooled
  embeddings and the gold score); `text,label` is a labelled probe (accuracy of two
  sequence-classification models, mapped through each model's `config.id2label`).

Example:

```python
>>> report = measure_forgetting("base-model-dir", "runs/sst2-full", "data/stsb/validation.csv")
>>> report.retention, report.layer_cka[-1]
```
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from hf_adapt.errors import HfAdaptError
from hf_adapt.inference import length_sorted_batches, predict_label_ids
from hf_adapt.modeling import load_trained
from hf_adapt.probes import detect_probe_kind, read_labelled_examples, read_sts_pairs

MAX_CKA_TEXTS = 1_000  # CKA needs many more texts than hidden units; 1,000 is stable and quick

ModelSpec = str | Path | tuple[PreTrainedModel, PreTrainedTokenizerBase]


# --------------------------------------------------------------------------------------------
# Representation similarity
# --------------------------------------------------------------------------------------------


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Centered linear CKA between two representations of the same examples.

    CKA(X, Y) = ||Yᵀ X||²_F / (||Xᵀ X||_F · ||Yᵀ Y||_F) on column-centred X, Y. It is 1.0 for
    representations equal up to an orthogonal transform and isotropic scaling, and falls
    towards 0 as they diverge.

    Args:
        x (`np.ndarray` of shape `(n_examples, dim_x)`): first representation.
        y (`np.ndarray` of shape `(n_examples, dim_y)`): second representation, same rows.

    Returns:
        `float`: CKA in [0, 1]; NaN when either representation is constant across examples
        (CKA is undefined there).

    Raises:
        `ValueError`: if the inputs are not 2-D or have different numbers of rows.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka needs two 2-D arrays with the same rows, got {x.shape} and {y.shape}")
    x = _center_and_normalise(x)
    y = _center_and_normalise(y)
    if x is None or y is None:
        return float("nan")
    cross = np.linalg.norm(y.T @ x) ** 2
    cka = cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))
    # Cauchy-Schwarz bounds CKA by 1; clipping only removes float round-off like 1 + 2e-16.
    return float(min(cka, 1.0))


def _center_and_normalise(x: np.ndarray) -> np.ndarray | None:
    """Centre columns, then scale to unit Frobenius norm (None if the rows are all equal)."""
    raw_norm = np.linalg.norm(x)
    x = x - x.mean(axis=0, keepdims=True)
    norm = np.linalg.norm(x)
    # Relative test: centring a constant matrix leaves round-off noise, not an exact zero.
    if norm <= 1e-12 * max(raw_norm, 1e-300):
        return None
    # CKA is scale-invariant; unit norm keeps the fourth powers of large activations in range.
    return x / norm


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_encoder(path_or_model: ModelSpec) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the encoder of a model for measurement, in eval mode without gradients.

    Args:
        path_or_model (`str`, `Path` or `tuple(PreTrainedModel, PreTrainedTokenizerBase)`):
            anything `hf_adapt.modeling.load_trained` loads (a model folder or Hub id, a fine-tuned
            classifier, whose head is dropped, or a peft adapter folder, merged into its base), or
            an already-loaded `(model, tokenizer)` pair: passed through, a task model being
            unwrapped to its encoder (`model.base_model`) and switched to eval mode (call
            `.train()` to resume training); its `requires_grad` flags are left alone.

    Returns:
        `tuple(PreTrainedModel, PreTrainedTokenizerBase)`: the encoder and its tokenizer.

    Raises:
        `HfAdaptError`: if the path does not exist, cannot be loaded, or lacks encoder weights.
    """
    if isinstance(path_or_model, tuple):
        model, tokenizer = path_or_model
        return model.base_model.eval(), tokenizer
    model, tokenizer = load_trained(path_or_model, head=False)
    return model.requires_grad_(False), tokenizer  # measured, never trained


def load_classifier(path_or_model: ModelSpec) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a sequence-classification model (head included), in eval mode without gradients.

    Args:
        path_or_model (`str`, `Path` or `tuple(PreTrainedModel, PreTrainedTokenizerBase)`):
            anything `hf_adapt.modeling.load_trained` loads with its head, or a loaded
            `(model, tokenizer)` pair.

    Raises:
        `HfAdaptError`: if the model has no trained classification head.
    """
    if isinstance(path_or_model, tuple):
        model, tokenizer = path_or_model
        if model.base_model is model:
            raise HfAdaptError(
                f"{type(model).__name__} has no classification head; a labelled probe needs "
                "sequence-classification models for BASE and ADAPTED"
            )
        return model.eval(), tokenizer
    model, tokenizer = load_trained(path_or_model, head=True)
    return model.requires_grad_(False), tokenizer


# --------------------------------------------------------------------------------------------
# Embedding and prediction
# --------------------------------------------------------------------------------------------


def _mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average token vectors over real tokens only (padding has weight 0)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def embed_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    max_length: int = 128,
    all_layers: bool = False,
) -> np.ndarray | list[np.ndarray]:
    """Mean-pooled (attention-mask weighted) sentence embeddings.

    Args:
        model (`PreTrainedModel`): an encoder, or a task model (its `base_model` is used).
        tokenizer (`PreTrainedTokenizerBase`): the model's tokenizer.
        texts (`Sequence[str]`): the texts, in the order the rows of the result follow.
        batch_size (`int`, *optional*, defaults to 64): texts per forward pass.
        max_length (`int`, *optional*, defaults to 128): longer texts are truncated (in tokens).
        all_layers (`bool`, *optional*, defaults to `False`): return one array per layer
            (embedding output first, then each encoder layer) instead of the last layer only.

    Returns:
        `np.ndarray` of shape `(len(texts), hidden_size)`, float32; or a `list` of such arrays,
        one per layer, when `all_layers=True`.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("embed_texts needs at least one text")
    encoder = model.base_model.eval()
    layers_out: list[np.ndarray] = []
    for indices, batch in length_sorted_batches(encoder, tokenizer, texts, batch_size=batch_size,
                                                max_length=max_length):
        with torch.inference_mode():
            output = encoder(**batch, output_hidden_states=all_layers)
        hidden_states = output.hidden_states if all_layers else (output.last_hidden_state,)
        if not layers_out:
            layers_out = [np.empty((len(texts), h.shape[-1]), dtype=np.float32) for h in hidden_states]
        for store, hidden in zip(layers_out, hidden_states):
            # Writing rows back at their indices restores the caller's order.
            store[indices] = _mean_pool(hidden, batch["attention_mask"]).float().cpu().numpy()
    return layers_out if all_layers else layers_out[0]


def layer_drift(base: ModelSpec, adapted: ModelSpec, texts: Sequence[str], **kwargs: Any) -> list[float]:
    """Linear CKA between two encoders at every layer, on mean-pooled sentence vectors.

    Args:
        base (`str`, `Path` or `tuple`): the model before adaptation (anything `load_encoder` takes).
        adapted (`str`, `Path` or `tuple`): the model after adaptation.
        texts (`Sequence[str]`): probe texts; use many more texts than the hidden size, as CKA on
            few examples is biased towards 1.
        **kwargs: `batch_size` and `max_length`, passed to `embed_texts`.

    Returns:
        `list[float]`: one CKA per layer, index 0 being the embedding output; 1.0 = unchanged.

    Raises:
        `HfAdaptError`: if the two encoders have different numbers of layers.
    """
    base_layers = embed_texts(*load_encoder(base), texts, all_layers=True, **kwargs)
    adapted_layers = embed_texts(*load_encoder(adapted), texts, all_layers=True, **kwargs)
    if len(base_layers) != len(adapted_layers):
        raise HfAdaptError(
            f"BASE has {len(base_layers) - 1} layers and ADAPTED {len(adapted_layers) - 1}; layer "
            "drift compares a model with its own fine-tuned copy, so pass models of the same architecture"
        )
    return [linear_cka(x, y) for x, y in zip(base_layers, adapted_layers)]


# --------------------------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------------------------


def sts_spearman(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs_csv: str | Path,
    max_rows: int | None = None,
    *,
    batch_size: int = 64,
    max_length: int = 128,
) -> float:
    """Spearman correlation between embedding cosine similarity and gold STS scores.

    Both sentences are embedded by mean pooling over the last hidden state (as
    sentence-transformers does; its extra L2 normalisation does not change a cosine).

    Args:
        model (`PreTrainedModel`): an encoder (or a task model, whose encoder is used).
        tokenizer (`PreTrainedTokenizerBase`): its tokenizer.
        pairs_csv (`str` or `Path`): CSV with columns `sentence1,sentence2,score`.
        max_rows (`int`, *optional*): use only the first `max_rows` pairs.
        batch_size (`int`, *optional*, defaults to 64): texts per forward pass.
        max_length (`int`, *optional*, defaults to 128): truncation length in tokens.

    Returns:
        `float`: Spearman's rho (NaN if the similarities or the scores are constant).
    """
    first, second, scores = read_sts_pairs(pairs_csv, max_rows)
    # One call for both columns lets length-sorting pack them into fewer, tighter batches.
    embeddings = embed_texts(model, tokenizer, first + second, batch_size=batch_size, max_length=max_length)
    a = embeddings[: len(first)].astype(np.float64)
    b = embeddings[len(first) :].astype(np.float64)
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    cosine = (a * b).sum(axis=1) / norms
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on constant input; NaN already says it
        return float(spearmanr(cosine, scores).statistic)


def labelled_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    labelled_csv: str | Path,
    max_rows: int | None = None,
    *,
    batch_size: int = 64,
    max_length: int = 128,
) -> float:
    """Accuracy of a sequence-classification model on a `text,label` CSV.

    Label strings are mapped to class ids through `model.config.id2label`.

    Raises:
        `HfAdaptError`: if a label of the probe is not one of the model's labels.
    """
    texts, labels = read_labelled_examples(labelled_csv, max_rows)
    label_to_id = {name: int(i) for i, name in model.config.id2label.items()}
    unknown = sorted(set(labels) - set(label_to_id))
    if unknown:
        raise HfAdaptError(
            f"{labelled_csv}: label {unknown[0]!r} is unknown to model {model.config.name_or_path or type(model).__name__} "
            f"(its id2label has {', '.join(map(repr, label_to_id))}); use a probe with the model's labels"
        )
    predicted, _ = predict_label_ids(model, tokenizer, texts, batch_size=batch_size, max_length=max_length)
    gold = np.array([label_to_id[label] for label in labels])
    return float((predicted.numpy() == gold).mean())


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


@dataclass
class ForgettingReport:
    """How much a probe's score and the encoder's representations changed with adaptation.

    Args:
        probe (`str`): the probe file.
        probe_kind (`str`): `"sts"` or `"labelled"`.
        metric (`str`): `"spearman"` (STS) or `"accuracy"` (labelled).
        before (`float`): the metric for BASE.
        after (`float`): the metric for ADAPTED.
        retention (`float`): `after / before` (NaN when `before` is 0).
        delta (`float`): `after - before`.
        layer_cka (`list[float]`): linear CKA per layer, index 0 = embedding output.
        num_probe_texts (`int`): probe rows evaluated (pairs or examples); CKA uses the first
            `min(num_probe_texts, 1000)` texts (`sentence1` for STS).
    """

    probe: str
    probe_kind: str
    metric: str
    before: float
    after: float
    retention: float
    delta: float
    layer_cka: list[float]
    num_probe_texts: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; NaN becomes `None`, since JSON has no NaN."""
        return {key: _json_safe(value) for key, value in asdict(self).items()}


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def measure_forgetting(
    base: ModelSpec,
    adapted: ModelSpec,
    probe: str | Path,
    *,
    max_rows: int | None = None,
    batch_size: int = 64,
) -> ForgettingReport:
    """Measure retention on a probe and per-layer representation drift from BASE to ADAPTED.

    Args:
        base (`str`, `Path` or `tuple`): the model before adaptation. For a labelled probe it
            must be a sequence-classification model (its accuracy is the "before").
        adapted (`str`, `Path` or `tuple`): the model after adaptation (a path, a peft adapter
            directory, or a loaded `(model, tokenizer)` pair).
        probe (`str` or `Path`): an STS CSV (`sentence1,sentence2,score`) or a labelled CSV
            (`text,label`); the header decides which.
        max_rows (`int`, *optional*): use only the first `max_rows` probe rows.
        batch_size (`int`, *optional*, defaults to 64): texts per forward pass.

    Returns:
        [`ForgettingReport`]
    """
    kind = detect_probe_kind(probe)
    if kind == "sts":
        base_pair, adapted_pair = load_encoder(base), load_encoder(adapted)
        score, metric = sts_spearman, "spearman"
        texts = read_sts_pairs(probe, max_rows)[0]
    else:
        base_pair, adapted_pair = load_classifier(base), load_classifier(adapted)
        score, metric = labelled_accuracy, "accuracy"
        texts = read_labelled_examples(probe, max_rows)[0]
    before = score(*base_pair, probe, max_rows, batch_size=batch_size)
    after = score(*adapted_pair, probe, max_rows, batch_size=batch_size)
    return ForgettingReport(
        probe=str(probe),
        probe_kind=kind,
        metric=metric,
        before=before,
        after=after,
        retention=after / before if before else float("nan"),
        delta=after - before,
        layer_cka=layer_drift(base_pair, adapted_pair, texts[:MAX_CKA_TEXTS], batch_size=batch_size),
        num_probe_texts=len(texts),
    )


# --------------------------------------------------------------------------------------------
# Command line: hf-adapt forgetting BASE ADAPTED --probe FILE
# --------------------------------------------------------------------------------------------


def render_report(report: ForgettingReport) -> str:
    """A readable table: the probe metric before/after, then CKA per layer."""
    lines = [
        f"Probe: {report.probe} ({report.probe_kind}, {report.num_probe_texts} rows)",
        "",
        f"{'metric':<10} {'before':>8} {'after':>8} {'retention':>10} {'delta':>8}",
        f"{report.metric:<10} {report.before:>8.4f} {report.after:>8.4f} "
        f"{report.retention:>10.1%} {report.delta:>+8.4f}",
        "",
        f"Representation drift (linear CKA with BASE, 1.0 = unchanged; "
        f"{min(report.num_probe_texts, MAX_CKA_TEXTS)} texts)",
        f"{'layer':<10} {'CKA':>8}",
    ]
    for index, cka in enumerate(report.layer_cka):
        lines.append(f"{'embeddings' if index == 0 else index:<10} {cka:>8.4f}")
    return "\n".join(lines)


def run_cli(args: argparse.Namespace) -> int:
    """Run the `forgetting` subcommand: print the table, optionally write JSON; return 0."""
    report = measure_forgetting(args.base, args.adapted, args.probe, max_rows=args.max_rows)
    print(render_report(report))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
        print(f"\nWrote {out}")
    return 0
