"""Classification and regression metrics that work offline.

`evaluate.load("accuracy")` downloads the metric script from the Hugging Face Hub, so it fails
on an air-gapped machine or with `HF_HUB_OFFLINE=1`. hf_adapt ships its own metric modules in
`hf_adapt/metric_modules/<name>/<name>.py` and loads them by path, which `evaluate` resolves
locally without touching the network. Regression metrics come from scipy and scikit-learn.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from hf_adapt.errors import HfAdaptError

if TYPE_CHECKING:
    import evaluate
    from transformers import EvalPrediction

METRIC_NAMES = ("accuracy", "macro_f1", "mcc")
"""The single-label metrics a recipe can select as its best-checkpoint metric (all: higher is better)."""
TASK_METRICS = {"single_label": METRIC_NAMES, "multi_label": ("macro_f1", "micro_f1", "samples_f1", "subset_accuracy"),
                "regression": ("pearson", "spearman", "mse", "mae")}
"""Each task's metrics; the first is what `train.metric_for_best: auto` selects."""
LOWER_IS_BETTER = ("mse", "mae", "loss")

_MODULES_DIR = Path(__file__).parent / "metric_modules"
_MODULE_NAMES = ("accuracy", "f1", "matthews_correlation")


@functools.cache
def load_metric(name: str) -> evaluate.EvaluationModule:
    """Load one of hf_adapt's bundled `evaluate` metric modules, without network access.

    The module is loaded once per process and cached, since `Trainer` evaluates many times.

    Args:
        name (`str`):
            One of `"accuracy"`, `"f1"` or `"matthews_correlation"`.

    Returns:
        `evaluate.EvaluationModule`: the metric, ready for `.compute(predictions=..., references=...)`.

    Raises:
        `HfAdaptError`: if `name` is not a bundled metric.
    """
    if name not in _MODULE_NAMES:
        raise HfAdaptError(f"Unknown metric {name!r}; the bundled metrics are: {', '.join(_MODULE_NAMES)}.")
    # Imported here, not at the top: `import evaluate` pulls in transformers.pipelines (~6 s on a
    # 2-core CPU), which `predict` never needs.
    import evaluate

    # keep_in_memory: without it every compute() writes an Arrow cache file under
    # ~/.cache/huggingface/evaluate and takes a file lock, for a few hundred integers.
    return evaluate.load(str(_MODULES_DIR / name), keep_in_memory=True)


def compute_classification_metrics(
    predictions: ArrayLike, references: ArrayLike, id2label: Mapping[int, str]
) -> dict[str, float]:
    """Score single-label predictions: accuracy, macro F1, MCC and the F1 of every class.

    `macro_f1` averages over the classes that occur in `references` or `predictions` (the
    scikit-learn default), so a class missing from a small evaluation split does not drag it
    down. Its own `f1_<label>` entry still appears, as 0.0, so every run logs the same keys.

    Args:
        predictions (`ArrayLike`):
            Predicted class ids, shape `(n,)`.
        references (`ArrayLike`):
            Reference class ids, shape `(n,)`.
        id2label (`Mapping[int, str]`):
            Class id to label name, e.g. `model.config.id2label`.

    Returns:
        `dict[str, float]`: `accuracy`, `macro_f1`, `mcc` and `f1_<label>` per label, as plain
        Python floats.
    """
    f1 = load_metric("f1")
    scores = {
        "accuracy": load_metric("accuracy").compute(predictions=predictions, references=references)["accuracy"],
        "macro_f1": f1.compute(predictions=predictions, references=references, average="macro")["f1"],
        "mcc": load_metric("matthews_correlation").compute(predictions=predictions, references=references)[
            "matthews_correlation"
        ],
    }
    label_ids = sorted(id2label)
    # zero_division=0.0: a class absent from both predictions and references has no defined
    # F1; report 0.0 quietly rather than warn on every evaluation of a small split.
    per_class = f1.compute(
        predictions=predictions, references=references, average=None, labels=label_ids, zero_division=0.0
    )["f1"]
    scores.update({f"f1_{id2label[i]}": score for i, score in zip(label_ids, per_class)})
    return {key: float(value) for key, value in scores.items()}


def compute_regression_metrics(predictions: ArrayLike, references: ArrayLike) -> dict[str, float]:
    """Score predicted numbers: Pearson and Spearman correlation, mean squared and absolute error.
    A constant prediction has no correlation: scipy's NaN is reported as 0.0."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    predictions, references = np.asarray(predictions, dtype=float), np.asarray(references, dtype=float)
    constant = np.ptp(predictions) == 0 or np.ptp(references) == 0
    return {
        "pearson": 0.0 if constant else float(pearsonr(predictions, references).statistic),
        "spearman": 0.0 if constant else float(spearmanr(predictions, references).statistic),
        "mse": float(mean_squared_error(references, predictions)),
        "mae": float(mean_absolute_error(references, predictions)),
    }


THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)  # the decision thresholds a multi-label run tries


@dataclass
class Thresholds:
    """A multi-label model's per-label decision thresholds. While `values` is None (during training)
    each evaluation tunes its own on the rows it scores; once set (tuned on validation after
    training), every evaluation applies them."""

    values: np.ndarray | None = None


@dataclass
class WindowsOf:
    """data.long_text: chunk — the text (`documents`) of each window of the split being evaluated,
    set by the trainer before each evaluation (None: rows are whole texts), and how a text's window
    logits pool; compute_metrics then scores texts, not windows."""

    pooling: str = "mean"
    documents: np.ndarray | None = None


def pool_windows(logits: ArrayLike, documents: ArrayLike, pooling: str) -> tuple[np.ndarray, np.ndarray]:
    """Each text's logits pooled over its windows (`"mean"` or `"max"`), texts in the order of their
    ids; returns `(pooled [texts, k], the index of each text's first window)` (for its labels)."""
    logits, documents = np.asarray(logits, dtype=np.float64), np.asarray(documents)
    ids, first, which = np.unique(documents, return_index=True, return_inverse=True)
    which = which.reshape(-1)
    if pooling == "max":
        pooled = np.full((len(ids), *logits.shape[1:]), -np.inf)
        np.maximum.at(pooled, which, logits)
    else:
        pooled = np.zeros((len(ids), *logits.shape[1:]))
        np.add.at(pooled, which, logits)
        pooled /= np.bincount(which, minlength=len(ids)).reshape(-1, *[1] * (logits.ndim - 1))
    return pooled, first


@dataclass
class Temperature:
    """Temperature scaling (Guo et al., 2017): scores are softmax (or sigmoid) of logits / `value`,
    `value` fitted on validation after training (None until then, and without calibration)."""

    value: float | None = None


ECE_BINS = 15  # equal-width confidence bins, as Guo et al.


def expected_calibration_error(logits: ArrayLike, references: ArrayLike, task: str,
                               temperature: float = 1.0) -> float:
    """How far the scores of `logits / temperature` are from the frequencies they claim: the
    confidence-weighted gap |accuracy - confidence| over `ECE_BINS` bins. Single-label: the top
    class's probability against whether it was right; multi-label: every (text, label) score
    against whether the label applies."""
    logits = np.asarray(logits, dtype=np.float64) / temperature
    references = np.asarray(references)
    if task == "multi_label":
        confidence = sigmoid(logits).reshape(-1)
        correct = (references >= 0.5).reshape(-1).astype(np.float64)
    else:
        probs = softmax(logits)
        confidence = probs.max(-1)
        correct = (probs.argmax(-1) == references).astype(np.float64)
    bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
    counts = np.bincount(bins, minlength=ECE_BINS)
    gaps = np.abs(np.bincount(bins, correct, ECE_BINS) - np.bincount(bins, confidence, ECE_BINS))
    return float(gaps.sum() / max(counts.sum(), 1))


def fit_temperature(logits: ArrayLike, references: ArrayLike, task: str) -> float:
    """The temperature in [0.05, 20] that minimises the negative log-likelihood of `references`
    (cross-entropy; binary cross-entropy per label for multi-label) under softmax/sigmoid of
    logits / T. One number, so no prediction changes, only how sure the scores say it is.
    Written here (a bounded 1-D search with scipy) as no maintained library fits it for logits."""
    from scipy.optimize import minimize_scalar

    logits, references = np.asarray(logits, dtype=np.float64), np.asarray(references)

    def loss(log_t: float) -> float:
        scaled = logits / np.exp(log_t)
        if task == "multi_label":
            targets = (references >= 0.5).astype(np.float64)
            return float(np.mean(np.logaddexp(0.0, scaled) - targets * scaled))
        shifted = scaled - scaled.max(-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        return float(-np.mean(log_probs[np.arange(len(references)), references.astype(int)]))

    found = minimize_scalar(loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded",
                            options={"xatol": 1e-4})
    return float(np.exp(found.x))


def softmax(logits: ArrayLike) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def sigmoid(logits: ArrayLike) -> np.ndarray:
    """Multi-label scores from logits (float64, so the thresholds compare exact values)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def tune_thresholds(probs: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Per label, the threshold of `THRESHOLD_GRID` with the best F1 on these rows (a tie: the one
    nearest 0.5); 0.5 for a label without a positive row, whose F1 no threshold can lift."""
    from sklearn.metrics import f1_score

    references = np.asarray(references) >= 0.5
    thresholds = np.full(probs.shape[1], 0.5)
    by_distance = sorted(THRESHOLD_GRID, key=lambda t: (abs(t - 0.5), t))
    for label in range(probs.shape[1]):
        if references[:, label].any():
            scores = [f1_score(references[:, label], probs[:, label] >= t, zero_division=0.0) for t in by_distance]
            thresholds[label] = by_distance[int(np.argmax(scores))]  # argmax keeps the first, nearest 0.5
    return thresholds


def compute_multilabel_metrics(probs: ArrayLike, references: ArrayLike, id2label: Mapping[int, str],
                               thresholds: ArrayLike) -> dict[str, float]:
    """Score multi-label probabilities at `thresholds` (one per label) and at 0.5: macro-, micro- and
    samples-averaged F1, subset accuracy (every label right), and each label's precision, recall and
    F1. Keys at 0.5 end in `_at_0.5`."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    probs, references = np.asarray(probs), np.asarray(references) >= 0.5
    scores: dict[str, float] = {}
    for suffix, cut in (("", np.asarray(thresholds)), ("_at_0.5", 0.5)):
        predicted = probs >= cut
        for average in ("macro", "micro", "samples"):
            scores[f"{average}_f1{suffix}"] = f1_score(references, predicted, average=average, zero_division=0.0)
        scores[f"subset_accuracy{suffix}"] = accuracy_score(references, predicted)
        per_label = precision_recall_fscore_support(references, predicted, average=None, zero_division=0.0)
        for i in sorted(id2label):
            for name, values in zip(("precision", "recall", "f1"), per_label[:3]):
                scores[f"{name}_{id2label[i]}{suffix}"] = values[i]
    return {key: float(value) for key, value in scores.items()}


def score_logits(logits: ArrayLike, references: ArrayLike, id2label: Mapping[int, str], task: str, *,
                 thresholds: ArrayLike | None = None, temperature: float | None = None) -> dict[str, float]:
    """The metrics of one evaluation from its logits, for training's evaluations and `hf-adapt eval`
    alike: the task's metrics, and for a classifier the expected calibration error of the raw scores
    (`ece`) and, with a fitted `temperature`, of the calibrated ones (`ece_calibrated`), whose
    scores the multi-label `thresholds` then cut (tuned on these rows while None)."""
    if task == "regression":
        return compute_regression_metrics(np.asarray(logits).reshape(-1), references)
    calibration = {"ece": expected_calibration_error(logits, references, task)}
    if temperature is not None:
        calibration["ece_calibrated"] = expected_calibration_error(logits, references, task, temperature)
        logits = np.asarray(logits, dtype=np.float64) / temperature  # the scores predict gives
    if task == "multi_label":
        probs = sigmoid(logits)
        cut = thresholds if thresholds is not None else tune_thresholds(probs, references)
        return {**compute_multilabel_metrics(probs, references, id2label, cut), **calibration}
    predictions = np.argmax(logits, axis=-1)
    return {**compute_classification_metrics(predictions, references, id2label), **calibration}


def best_metric(name: str, task: str) -> str:
    """`train.metric_for_best` for `task`: `auto` resolved, a metric of another task refused."""
    if name == "auto":
        return TASK_METRICS[task][0]
    if name != "loss" and name not in TASK_METRICS[task]:
        raise HfAdaptError(f"train.metric_for_best {name!r} does not score a {task} task; use "
                           f"{', '.join(TASK_METRICS[task])}, loss or auto")
    return name


def build_compute_metrics(id2label: Mapping[int, str], task: str = "single_label",
                          thresholds: Thresholds | None = None,
                          windows: WindowsOf | None = None,
                          temperature: Temperature | None = None) -> Callable[[EvalPrediction], dict[str, float]]:
    """Build the `compute_metrics` function for `transformers.Trainer`.

    Args:
        id2label (`Mapping[int, str]`):
            Class id to label name, e.g. `model.config.id2label`.
        task (`str`, defaults to `"single_label"`):
            `"regression"` scores the one output as a number (`compute_regression_metrics`);
            `"multi_label"` the sigmoid of every output (`compute_multilabel_metrics`).
        thresholds (`Thresholds`, *optional*):
            multi-label: the decision thresholds to apply, or to tune on each evaluation while unset.
        windows (`WindowsOf`, *optional*):
            chunked texts: while its `documents` is set, each text's windows are pooled first.
        temperature (`Temperature`, *optional*):
            classifiers: once fitted, scores are of logits / temperature, and the expected calibration
            error is reported before (`ece`) and after (`ece_calibrated`) it.

    Returns:
        `Callable[[EvalPrediction], dict[str, float]]`: takes the logits and labels of an
        evaluation pass and returns `compute_classification_metrics` of the argmax predictions.
    """

    def compute_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
        logits = eval_prediction.predictions
        # Models asked for hidden states or attentions return a tuple; the logits come first.
        if isinstance(logits, tuple):
            logits = logits[0]
        references = eval_prediction.label_ids
        if windows is not None and windows.documents is not None:
            logits, first = pool_windows(logits, windows.documents, windows.pooling)
            references = np.asarray(references)[first]
        return score_logits(logits, references, id2label, task,
                            thresholds=thresholds.values if thresholds is not None else None,
                            temperature=temperature.value if temperature is not None else None)

    return compute_metrics
