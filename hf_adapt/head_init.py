"""How the classifier's output layer starts: random (the model's own initialisation) or a linear probe.

`probe` is LP-FT (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features"): before the first
step, the output layer becomes a logistic regression (scikit-learn, L2, C=1) fitted on what that layer
reads for each training row under the pretrained encoder; fine-tuning then starts from a head that
already separates the labels, so the first updates do not push the encoder's features around to fit a
random head. This is SetFit's head (logistic regression on the sentence embeddings), put at the start of
fine-tuning instead of at its end.

`auto` uses it where it was measured to help: single-label few-shot data (at most
`pooling.FEW_PER_LABEL` rows per label) with more than two labels, under the `full` strategy. On the
intents (3 seeds) it lifted test accuracy from 0.928 to 0.950 at 8 per label and from 0.950 to 0.972 at
16, above SetFit's 0.944, and single-label GoEmotions (28 labels, 8 per label) from 0.210 to 0.213; on
binary data it cost accuracy (SST-2 at 64 per label 0.783 -> 0.766): a head that already fits the few
examples leaves the encoder little gradient to adapt with (docs/benchmark.md, "Few-shot").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from hf_adapt.caching import MODEL_INPUTS
from hf_adapt.config import AdaptConfig
from hf_adapt.data import column_array
from hf_adapt.errors import HfAdaptError
from hf_adapt.modeling import output_layer, unwrap
from hf_adapt.pooling import FEW_PER_LABEL

PROBE_C = 1.0  # scikit-learn's default L2 strength; C=0.01 (a smaller head) was measured too and helped less
PROBE_BATCH = 32  # rows per forward pass while the features are read


def resolve_head_init(adapt: AdaptConfig, task: str, labels: int, rows_per_label: float | None) -> str:
    """`adapt.head_init` as applied: `auto` is `probe` for single-label data with more than two labels and
    at most FEW_PER_LABEL training rows per label under the full strategy, else `random`."""
    if adapt.head_init != "auto":
        if adapt.head_init == "probe" and task != "single_label":
            raise HfAdaptError(f"adapt.head_init: probe fits a logistic regression, so it needs single-label "
                               f"classification; this task is {task}: use adapt.head_init: random")
        return adapt.head_init
    few = rows_per_label is not None and rows_per_label <= FEW_PER_LABEL
    return "probe" if adapt.strategy == "full" and task == "single_label" and labels > 2 and few else "random"


def fit_probe_head(model: nn.Module, train: Any, tokenizer: Any, *, c: float = PROBE_C) -> dict[str, Any]:
    """Set the output layer of `model` to a logistic regression fitted on the features it reads for the
    tokenized training rows `train` (a map-style dataset with input_ids, attention_mask and labels).
    Deterministic, so every process of a distributed run sets the same head. Returns what the card records."""
    from sklearn.linear_model import LogisticRegression

    features, labels = read_head_inputs(model, train, tokenizer)
    probe = LogisticRegression(C=c, max_iter=1000).fit(features, labels)
    layer = getattr(*output_layer(unwrap(model)))
    weight = np.zeros((layer.out_features, features.shape[1]), dtype=np.float64)
    bias = np.zeros(layer.out_features, dtype=np.float64)
    if len(probe.classes_) == 2:  # one score for the second class: split across the two logits
        weight[probe.classes_] = np.concatenate([-probe.coef_ / 2, probe.coef_ / 2])
        bias[probe.classes_] = [-probe.intercept_[0] / 2, probe.intercept_[0] / 2]
    else:  # labels absent from the training rows keep a zero row: they are never the argmax's first choice
        weight[probe.classes_], bias[probe.classes_] = probe.coef_, probe.intercept_
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.copy_(torch.as_tensor(bias, dtype=layer.bias.dtype))
    return {"method": "probe", "c": c, "rows": len(labels),
            "train_accuracy": round(float(probe.score(features, labels)), 4)}


def read_head_inputs(model: nn.Module, train: Any, tokenizer: Any) -> tuple[np.ndarray, np.ndarray]:
    """What the output layer reads for every training row (dropout off), and the rows' labels."""
    layer = getattr(*output_layer(unwrap(model)))
    device = next(model.parameters()).device
    seen: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].float().cpu()))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(train), PROBE_BATCH):
                rows = train[start:start + PROBE_BATCH]
                batch = tokenizer.pad({k: rows[k] for k in MODEL_INPUTS if k in rows}, return_tensors="pt")
                model(**{k: v.to(device) for k, v in batch.items()})
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(seen).numpy(), column_array(train, "labels")
