"""Update strategies: which weights train. `apply_strategy` is the only step where recipes differ.

- full: every weight trains.
- partial: freeze the embeddings and/or the lowest k encoder layers, or the whole encoder
  (head only: feature extraction; the head reads mean-pooled token states by default,
  hf_adapt.pooling).
- lora: peft LoRA on the attention projections; the head is fully trained and saved with the
  adapter (`modules_to_save`), never LoRA-adapted.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from torch import nn

from hf_adapt.config import AdaptConfig
from hf_adapt.errors import HfAdaptError
from hf_adapt.modeling import count_parameters, encoder_layout, lora_targets
from hf_adapt.pooling import append_mean_pooling_layer, keep_pooling_frozen, resolve_pooling


@dataclass
class TrainableSummary:
    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / max(self.total, 1)

    def __str__(self) -> str:
        return f"trainable params: {self.trainable:,} / {self.total:,} ({self.percent:.2f}%)"


def apply_strategy(model: nn.Module, config: AdaptConfig) -> nn.Module:
    """Set `requires_grad` (or wrap with LoRA) according to the recipe; returns the model to train.
    `config.pooling: auto` here is mean for a frozen encoder, else cls (the engine resolves it with
    the body and the data first, `pooling.resolve_pooling`)."""
    if config.strategy == "full":
        return trainable_with_pooling(model, config)
    if config.strategy == "partial":
        return apply_partial(model, config)
    if config.strategy == "lora":
        return apply_lora(model, config)
    raise HfAdaptError(f"adapt.strategy must be full, partial or lora, got {config.strategy!r}")


def trainable_with_pooling(model: nn.Module, config: AdaptConfig) -> nn.Module:
    """Every weight trainable, but for the mean-pooling layer on top: added when `config.pooling`
    resolves to mean, kept frozen whenever the model has one (it must stay an average)."""
    if resolve_pooling(config) == "mean":
        append_mean_pooling_layer(model)
    model.requires_grad_(True)
    keep_pooling_frozen(model)
    return model


def apply_partial(model: nn.Module, config: AdaptConfig) -> nn.Module:
    layout = encoder_layout(model)
    if config.freeze_layers > layout.num_layers:
        raise HfAdaptError(f"adapt.freeze_layers is {config.freeze_layers} but the model has "
                           f"{layout.num_layers} encoder layers; use at most {layout.num_layers} "
                           f"(or adapt.freeze_encoder: true)")
    layout = encoder_layout(trainable_with_pooling(model, config))  # with the pooling layer, if one was added
    frozen: list[nn.Module] = []
    if config.freeze_encoder:
        frozen = layout.embeddings + layout.layers + layout.above
    else:
        if config.freeze_embeddings:
            frozen += layout.embeddings
        frozen += layout.layers[: config.freeze_layers]
        if config.freeze_layers == layout.num_layers:  # every layer: what sits above them too (ModernBERT)
            frozen += layout.above
    for module in frozen:
        module.requires_grad_(False)
    return model


def apply_lora(model: nn.Module, config: AdaptConfig) -> nn.Module:
    from peft import LoraConfig, TaskType, get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    layout = encoder_layout(model)
    targets = config.lora_target_modules or lora_targets(model)
    check_lora_targets(model, targets, layout.head_names)
    lora_config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        # The head is new for the task: train it fully and save it with the adapter.
        modules_to_save=layout.head_names,
    )
    with warnings.catch_warnings():  # peft asks for transformers' deprecated is_gradient_checkpointing
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = get_peft_model(model, lora_config)
    # peft casts each LoRA layer's input to the adapter's dtype. Our weights are all fp32, so that
    # is a no-op in fp32 and, under bf16 autocast, a full-width fp32 copy of the activations that
    # autocast casts straight back: time and memory for nothing (docs/recipes.md, "LoRA").
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False
    return model


def check_lora_targets(model: nn.Module, targets: list[str], head_names: list[str]) -> None:
    """Every target must name a Linear in the encoder; none may be (inside) the head.

    A target matches as peft matches it: a module whose full name is the target or ends with
    "." + target (`value`, `intermediate.dense`, `encoder.layer.0.attention.self.query`).
    """
    linear_names = {name for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    matched = {t: {n for n in linear_names if n == t or n.endswith("." + t)} for t in targets}
    missing = [t for t in targets if not matched[t]]
    if missing:
        available = ", ".join(sorted({name.rsplit(".", 1)[-1] for name in linear_names}))
        raise HfAdaptError(f"adapt.lora_target_modules {missing} not found in the model; "
                           f"Linear modules it has: {available}")
    head_linear = {name for name in linear_names
                   if any(name == h or name.startswith(h + ".") or f".{h}." in f".{name}." for h in head_names)}
    in_head = [t for t in targets if matched[t] <= head_linear]
    if in_head:
        raise HfAdaptError(f"adapt.lora_target_modules {in_head} are in the classifier head, which is trained "
                           f"fully; target encoder modules such as {', '.join(lora_targets(model))}")


def trainable_summary(model: nn.Module) -> TrainableSummary:
    trainable, total = count_parameters(model)
    return TrainableSummary(trainable=trainable, total=total)
