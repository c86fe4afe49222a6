"""Mean pooling for a frozen encoder, built from a standard encoder layer so the saved model stays a
plain transformers checkpoint (`pipeline("text-classification")` loads it, no custom code).

Why: the heads of BERT-style classifiers read the first token's final state. For a frozen
encoder that is a poor summary of the sentence: sentence encoders such as all-MiniLM-L6-v2 are
trained with mean pooling, and even for BERT the average of the token states beats [CLS]
(Reimers & Gurevych 2019); docs/recipes.md ("Feature extraction") has the measurement.

How: one more layer on top of the encoder, a copy of its top layer with weights set so that the
first token's output is the (layer-normalised) mean of the real tokens' states:

- query and key projections (and DeBERTa's positional ones) are zero, so every attention score
  is 0 and each head attends uniformly to the unmasked tokens: its output is the mean of the
  values;
- the value projection is the identity, so that mean is the mean of the token states `m`;
- the attention output projection is `SCALE` * identity, and its LayerNorm (weight 1, bias 0)
  sees `SCALE * m + h_0`, where `h_0` is the token's own state (the residual): the result is
  LayerNorm(m) up to `h_0 / SCALE`;
- the feed-forward block is zero (activation(0) = 0 for GELU and ReLU), so the last LayerNorm
  returns its already-normalised input.

The layer is frozen (it must stay an average); the head on top trains as usual.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from hf_adapt.config import AdaptConfig
from hf_adapt.errors import HfAdaptError
from hf_adapt.modeling import encoder_layout, layer_container, unwrap

# SCALE bounds the first token's own share of the pooled state to about 1/SCALE; larger values
# would overflow fp16 (max 65504) for token states with entries near 100.
SCALE = 1000.0
# Module names inside one encoder layer, per family (BERT/RoBERTa/ELECTRA, DistilBERT, DeBERTa-v2).
VALUE_PROJECTIONS = ("attention.self.value", "attention.v_lin", "attention.self.value_proj")
ATTENTION_OUTPUTS = ("attention.output.dense", "attention.out_lin")


# Up to this many training rows per label, `adapt.pooling: auto` reads a mean-pooled sentence encoder's mean.
FEW_PER_LABEL = 64


def resolve_pooling(adapt: AdaptConfig, body_pooling: str | None = None, rows_per_label: float | None = None) -> str:
    """`adapt.pooling` as applied. `auto` is mean for a frozen encoder; for full and partial
    fine-tuning it is mean too when the body is a sentence encoder trained with mean pooling
    (`body_pooling`, `modeling.sentence_pooling`) and training has at most FEW_PER_LABEL rows per
    label (few-shot; measured at 8, 16 and 64 per label, not above): a head on the first token would
    start from a state the body was never trained to summarise a sentence in, and a few examples
    cannot retrain it (SST-2, 3 seeds: test accuracy 0.649 -> 0.710 at 16 per label, 0.769 -> 0.784
    at 64; docs/benchmark.md "Few-shot, against SetFit"). Else cls. LoRA reads cls: it would adapt
    the pooling layer too."""
    if adapt.pooling != "auto":
        return adapt.pooling
    if adapt.strategy == "partial" and adapt.freeze_encoder:
        return "mean"
    few = rows_per_label is not None and rows_per_label <= FEW_PER_LABEL
    return "mean" if adapt.strategy != "lora" and body_pooling == "mean" and few else "cls"


def pooling_of(model: nn.Module) -> str:
    """What `model`'s head reads: mean (the pooling layer on top, or ModernBERT's own mean) or cls."""
    model = unwrap(model)
    own = getattr(model.config, "classifier_pooling", None)
    if own is not None:
        return own
    return "mean" if has_pooling_layer(model) else "cls"


def append_mean_pooling_layer(model: nn.Module) -> nn.Module | None:
    """Add the mean-pooling layer on top of `model`'s encoder (in place; returns the new layer).
    ModernBERT's head has mean pooling of its own (`config.classifier_pooling: mean`): set, no layer.

    `config.num_hidden_layers` grows by one, so a saved model reloads with the layer in place. A
    model whose top layer already is one (trained with it, now continued) is left as it is.
    """
    model = unwrap(model)
    if getattr(model.config, "classifier_pooling", None) is not None:  # ModernBERT pools itself: no layer needed
        model.config.classifier_pooling = "mean"
        return None
    layout = encoder_layout(model)
    if is_mean_pooling_layer(layout.layers[-1]):  # a model trained this way, continued: pooled already
        return layout.layers[-1]
    layer = copy.deepcopy(layout.layers[-1])
    scales = _pooling_scales(layer)
    if scales is None:
        raise HfAdaptError(f"adapt.pooling: mean is not available for {type(model).__name__} (its layers have no "
                           f"separate value and attention-output projections); use adapt.pooling: cls")
    with torch.no_grad():
        for linear, scale in scales.values():
            linear.weight.copy_(_scaled_identity(linear, scale))
            if linear.bias is not None:
                linear.bias.zero_()
        for norm in (m for m in layer.modules() if isinstance(m, nn.LayerNorm)):
            norm.weight.fill_(1.0)
            norm.bias.zero_()
    layer.requires_grad_(False)
    parent, attr = layer_container(layout)
    getattr(parent, attr).append(layer)
    model.config.num_hidden_layers += 1
    return layer


def pooling_layer(model: nn.Module) -> nn.Module | None:
    """The mean-pooling layer on top of `model`'s encoder (`append_mean_pooling_layer`), or None."""
    layers = encoder_layout(unwrap(model)).layers
    return layers[-1] if layers and is_mean_pooling_layer(layers[-1]) else None


def has_pooling_layer(model: nn.Module) -> bool:
    return pooling_layer(model) is not None


def keep_pooling_frozen(model: nn.Module) -> None:
    """Freeze the mean-pooling layer on top of `model`'s encoder, if it has one: it must stay an average."""
    layer = pooling_layer(model)
    if layer is not None:
        layer.requires_grad_(False)


def is_mean_pooling_layer(layer: nn.Module) -> bool:
    """Whether `layer` is what `append_mean_pooling_layer` builds (identity values, SCALE output, zero FFN)."""
    scales = _pooling_scales(layer)
    return scales is not None and all(torch.equal(linear.weight.detach().cpu(), _scaled_identity(linear, scale))
                                      for linear, scale in scales.values())


def _pooling_scales(layer: nn.Module) -> dict[str, tuple[nn.Linear, float]] | None:
    """Every Linear of `layer` with the multiple of the identity its weight takes in the pooling
    layer (value 1, attention output SCALE, all others 0); None without exactly one of each of the
    first two."""
    linears = {name: m for name, m in layer.named_modules() if isinstance(m, nn.Linear)}
    if sum(n in VALUE_PROJECTIONS for n in linears) != 1 or sum(n in ATTENTION_OUTPUTS for n in linears) != 1:
        return None
    return {name: (linear, 1.0 if name in VALUE_PROJECTIONS else SCALE if name in ATTENTION_OUTPUTS else 0.0)
            for name, linear in linears.items()}


def _scaled_identity(linear: nn.Linear, scale: float) -> torch.Tensor:
    return torch.eye(*linear.weight.shape, dtype=linear.weight.dtype) * scale
