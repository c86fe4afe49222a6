"""Controls against forgetting: L2-SP, gradual unfreezing and re-initialising the top layers.

All three compose with layer-wise LR decay (`optim.layer_decay`) and with every recipe:

- **L2-SP** (Li et al., 2018, "Explicit Inductive Bias for Transfer Learning with Convolutional
  Networks"): a loss term `alpha / 2 * ||w - w0||^2` over the encoder weights that train, pulling
  them back towards their starting (pretrained) values. The head has no pretrained value and
  is not penalised. Under LoRA the pretrained weights never move; what moves the *merged* weight
  is the update `scale * B @ A`, so L2-SP penalises `||scale * B @ A||^2`: the same quantity,
  the distance of the merged weight from w0 (zero at the start, since B starts at zero).
- **Gradual unfreezing** (Howard & Ruder, 2018, ULMFiT): the head trains alone first; every N
  steps (or epochs) one more encoder layer, from the top down, starts training, and the
  embeddings last. Only what the strategy left trainable is ever unfrozen: layers that
  `partial` froze stay frozen, and under LoRA the units are the LoRA matrices of each layer.
  The optimizer must already hold the frozen parameters (`include_frozen=True`), or a layer
  unfrozen later would never train.
- **Re-initialising the top k layers** (Zhang et al., 2021, "Revisiting Few-sample BERT
  Fine-tuning"): the top layers are the most task-specific to pretraining, and a fresh start
  there can help small datasets. Re-initialised layers are not penalised by L2-SP (their
  starting values are random, not knowledge).

`apply_controls(model, adapt)` builds what the engine passes to `AdaptTrainer`; at the end of a
run `measure_run_forgetting` fills `metrics.json` with the forgetting meter's report when the
recipe names a probe (`forgetting.probe`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from transformers import TrainerCallback

from hf_adapt.config import AdaptConfig, RecipeConfig
from hf_adapt.errors import HfAdaptError, say
from hf_adapt.modeling import encoder_layout, resolve_model_path, unwrap


@dataclass
class Controls:
    """What `AdaptTrainer` needs to apply the recipe's controls."""

    loss_terms: list[Callable[[nn.Module], torch.Tensor]] = field(default_factory=list)
    callbacks: list[TrainerCallback] = field(default_factory=list)
    include_frozen: bool = False  # gradual unfreezing: frozen parameters go in the optimizer too


def apply_controls(model: nn.Module, config: AdaptConfig) -> Controls:
    """Build the L2-SP term and the gradual-unfreezing callback the recipe asks for.

    Call it after `apply_strategy` (it needs to know what trains) and before the trainer is built
    (gradual unfreezing freezes the encoder now, so the head trains alone from the first step).

    Args:
        model (`nn.Module`): the model after `reinit_top_layers` and `apply_strategy`.
        config (`AdaptConfig`): `l2sp`, `gradual_unfreeze`, `gradual_unfreeze_unit`,
            `reinit_top_layers`.

    Returns:
        [`Controls`]
    """
    check_reinit_fits(model, config)
    controls = Controls()
    # L2-SP first: it records the weights that train before gradual unfreezing freezes them.
    if config.l2sp > 0:
        controls.loss_terms.append(L2SPPenalty(model, config.l2sp, skip_top_layers=config.reinit_top_layers))
    if config.gradual_unfreeze > 0:
        controls.callbacks.append(GradualUnfreezing(model, config.gradual_unfreeze, config.gradual_unfreeze_unit))
        controls.include_frozen = True
    return controls


# ---------------------------------------------------------------------------------------------
# L2-SP


class L2SPPenalty:
    """`alpha / 2 * sum ||w - w0||^2` over the encoder weights that train (a `loss_terms` entry).

    The starting weights are copied (detached) when the penalty is built, so it is exactly zero
    before the first update. Weights frozen at call time (by the strategy or by gradual
    unfreezing) are skipped: they equal w0 anyway. Under LoRA the term is `||scale * B @ A||^2`
    per adapted module (see the module docstring), computed as `sum((BᵀB) * (AAᵀ))` in rank space.

    Args:
        model (`nn.Module`): the model after `apply_strategy`.
        alpha (`float`): the coefficient (`adapt.l2sp`).
        skip_top_layers (`int`, *optional*, defaults to 0): leave the top k layers out (they were
            re-initialised: their starting values are not pretrained knowledge).
    """

    def __init__(self, model: nn.Module, alpha: float, *, skip_top_layers: int = 0):
        self.alpha = alpha
        self.lora_modules = _lora_modules(model)
        self.pairs: list[tuple[nn.Parameter, torch.Tensor]] = []
        if not self.lora_modules:
            layout = encoder_layout(model)
            modules = layout.embeddings + layout.layers[: layout.num_layers - skip_top_layers]
            self.pairs = [(p, p.detach().clone()) for m in modules for p in m.parameters() if p.requires_grad]

    def __call__(self, model: nn.Module) -> torch.Tensor:
        # The parameters recorded at build time are the ones a DDP wrapper trains too, so the
        # `model` argument (maybe wrapped) only tells the device and the mode.
        total = torch.zeros((), device=next(model.parameters()).device)
        if not model.training:  # evaluation reports the task loss alone
            return total
        for index, (param, start) in enumerate(self.pairs):
            if start.device != param.device:  # the Trainer moved the model after we copied it
                self.pairs[index] = (param, start.to(param.device))
        training = [(p, s) for p, s in self.pairs if p.requires_grad]
        if training:
            total = total + _SquaredDistance.apply([s for _, s in training], *[p for p, _ in training])
        for module in self.lora_modules:
            total = total + _lora_delta_sq_norm(module)
        return 0.5 * self.alpha * total


class _SquaredDistance(torch.autograd.Function):
    """`sum_i ||p_i - s_i||^2` with a hand-written backward, `2 (p_i - s_i)`.

    Autograd through sub/pow/sum would write and re-read several temporaries the size of every
    weight; this is one pass forward and one back (on MiniLM, a third of the time).
    """

    @staticmethod
    def forward(ctx, starts: list[torch.Tensor], *params: torch.Tensor) -> torch.Tensor:
        diffs = torch._foreach_sub(params, starts)
        ctx.diffs = diffs
        # dot, not norm: torch's fp32 norm of a 10M-element tensor is off by ~1e-3 (relative).
        with torch.autocast(device_type=diffs[0].device.type, enabled=False):
            return torch.stack([torch.dot(d.reshape(-1), d.reshape(-1)) for d in diffs]).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        diffs, ctx.diffs = ctx.diffs, None
        return (None, *torch._foreach_mul(diffs, 2 * grad))


def _lora_modules(model: nn.Module) -> list[nn.Module]:
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return []
    return [m for m in model.modules() if isinstance(m, LoraLayer) and len(m.lora_A) > 0]


def _lora_delta_sq_norm(module: nn.Module) -> torch.Tensor:
    """`||scale * B @ A||_F^2` of a LoRA Linear, summed over its active adapters, in r x r space."""
    total = torch.zeros((), device=next(module.parameters()).device)
    for name in module.active_adapters:
        if name not in module.lora_A:
            continue
        a, b = module.lora_A[name].weight, module.lora_B[name].weight  # (r, in), (out, r)
        if not (a.requires_grad or b.requires_grad):
            continue
        if a.ndim != 2 or b.ndim != 2:
            raise HfAdaptError(f"adapt.l2sp supports LoRA on Linear modules only, got {type(module).__name__}")
        # ||B A||^2 = trace(Aᵀ Bᵀ B A) = sum((BᵀB) ⊙ (AAᵀ)): two r x r matrices, never out x in.
        total = total + module.scaling[name] ** 2 * ((b.float().T @ b.float()) * (a.float() @ a.float().T)).sum()
    return total


# ---------------------------------------------------------------------------------------------
# Gradual unfreezing


class GradualUnfreezing(TrainerCallback):
    """ULMFiT-style gradual unfreezing: head first, then one more layer from the top every N.

    The encoder's trainable parameters are split into units: each encoder layer, top first,
    then the embeddings. All units are frozen when the callback is built; before training step
    `k * every` (or the first step of epoch `k * every`) unit k-1 starts training. Only the
    parameters that were trainable when the callback was built are touched, so whatever the
    strategy froze stays frozen. Resuming from a checkpoint restores the right stage.

    Under multi-process training (DDP) a parameter frozen when the model is wrapped is never
    synchronised, so there the units keep `requires_grad=True` and their gradients are dropped
    before each optimizer step instead (`mask_grads`): the same schedule, but without the saved
    backward compute, and the gradient-clipping norm also counts the still-frozen layers.

    Args:
        model (`nn.Module`): the model after `apply_strategy`.
        every (`int`): N, steps or epochs between two unfreezings (`adapt.gradual_unfreeze`).
        unit (`str`, *optional*, defaults to `"steps"`): `"steps"` or `"epochs"`.
        mask_grads (`bool`, *optional*): drop gradients instead of setting `requires_grad`;
            default: when more than one process trains.
    """

    def __init__(self, model: nn.Module, every: int, unit: str = "steps", *, mask_grads: bool | None = None):
        if every <= 0 or unit not in ("steps", "epochs"):
            raise ValueError(f"GradualUnfreezing needs every > 0 and unit steps|epochs, got {every}, {unit!r}")
        layout = encoder_layout(model)
        named = [(f"layer {i}", layout.layers[i]) for i in reversed(range(layout.num_layers))]
        named[0] = (named[0][0], nn.ModuleList([layout.layers[-1], *layout.above]))  # ModernBERT's final norm
        named.append(("embeddings", nn.ModuleList(layout.embeddings)))
        self.units = [(name, [p for p in module.parameters() if p.requires_grad]) for name, module in named]
        self.units = [(name, params) for name, params in self.units if params]
        if not self.units:
            raise HfAdaptError("adapt.gradual_unfreeze: nothing in the encoder trains under this strategy, so "
                               "there is nothing to unfreeze; set adapt.gradual_unfreeze: 0")
        self.every, self.unit = every, unit
        self.num_unfrozen = 0
        if mask_grads is None:
            # The launcher's environment, not PartialState(): built here, before TrainingArguments, it
            # reports one process for a multi-process CPU (gloo) run and would let the replicas drift.
            from accelerate.utils import get_int_from_env

            mask_grads = get_int_from_env(["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"], 1) > 1
        self.mask_grads = mask_grads
        if not mask_grads:
            for _, params in self.units:
                for param in params:
                    param.requires_grad_(False)

    def stage(self, global_step: int, epoch: float | None) -> int:
        """How many units train at this point of training."""
        done = global_step if self.unit == "steps" else math.floor((epoch or 0.0) + 1e-6)
        return min(len(self.units), done // self.every)

    def on_train_begin(self, args, state, control, **kwargs):
        planned = state.max_steps if self.unit == "steps" else state.num_train_epochs
        if planned < self.every * len(self.units):
            say(f"gradual unfreezing: {planned} {self.unit} unfreeze only "
                  f"{self.stage(planned, planned)} of {len(self.units)} encoder units (every {self.every} {self.unit})")

    def on_step_begin(self, args, state, control, **kwargs):
        target = self.stage(state.global_step, state.epoch)
        while self.num_unfrozen < target:
            name, params = self.units[self.num_unfrozen]
            if not self.mask_grads:
                for param in params:
                    param.requires_grad_(True)
            self.num_unfrozen += 1
            say(f"gradual unfreezing: {name} trains from step {state.global_step + 1}")

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.mask_grads:
            for _, params in self.units[self.num_unfrozen:]:
                for param in params:
                    param.grad = None  # AdamW skips a parameter without a gradient (no weight decay either)

    def on_train_end(self, args, state, control, **kwargs):
        # Leave the model as the strategy made it, whatever stage a short run ended in.
        for _, params in self.units:
            for param in params:
                param.requires_grad_(True)


# ---------------------------------------------------------------------------------------------
# Re-initialising the top layers


@torch.no_grad()
def reinit_top_layers(model: nn.Module, k: int) -> nn.Module:
    """Re-initialise the top `k` encoder layers with the model's own initialiser; returns `model`.

    Args:
        model (`nn.Module`): a transformers classifier, before `apply_strategy`.
        k (`int`): how many layers, from the top; 0 does nothing.

    Raises:
        HfAdaptError: if `k` exceeds the number of encoder layers.
    """
    if k <= 0:
        return model
    layout = encoder_layout(model)
    if k > layout.num_layers:
        raise HfAdaptError(f"adapt.reinit_top_layers is {k} but the model has {layout.num_layers} encoder layers; "
                           f"use at most {layout.num_layers}")
    pretrained = unwrap(model)
    for layer in layout.layers[-k:]:
        for module in layer.modules():
            # transformers 5 skips tensors flagged as loaded; clear the flag so they are re-drawn.
            module._is_hf_initialized = False
            for param in module.parameters(recurse=False):
                param._is_hf_initialized = False
            pretrained._init_weights(module)
    return model


def check_fsdp_controls(config: AdaptConfig, *, fsdp: bool) -> None:
    """FSDP replaces the parameters L2-SP and gradual unfreezing hold by its own sharded ones."""
    used = [k for k in ("l2sp", "gradual_unfreeze") if getattr(config, k)]
    if fsdp and used:
        raise HfAdaptError(f"adapt.{', adapt.'.join(used)} are not supported under FSDP (it replaces the parameters "
                           f"they act on); launch with DDP (`accelerate launch --multi_gpu`) or on one device")


def check_reinit_fits(model: nn.Module, config: AdaptConfig) -> None:
    """Re-initialised layers must train: refuse overlap with layers `partial` freezes."""
    if config.reinit_top_layers <= 0 or config.strategy != "partial":
        return
    num_layers = encoder_layout(model).num_layers
    if config.freeze_layers + config.reinit_top_layers > num_layers:
        raise HfAdaptError(f"adapt.reinit_top_layers ({config.reinit_top_layers}) + adapt.freeze_layers "
                           f"({config.freeze_layers}) exceed the model's {num_layers} layers: a re-initialised layer "
                           f"would stay frozen at random values; lower one of them")


# ---------------------------------------------------------------------------------------------
# Measuring forgetting at the end of a run


def forgetting_base(config: RecipeConfig) -> str:
    """The "before" model: the `model.init_from` run when continuing, else the pretrained model."""
    return config.model.init_from or resolve_model_path(config.model.name_or_path)


def check_probe_labels(config: RecipeConfig, labels: tuple[str, ...]) -> None:
    """Before training: a labelled probe's labels must be known to the old and the new model.

    Raises:
        HfAdaptError: naming the probe, the unknown label and both label sets.
    """
    probe = config.forgetting.probe
    if probe is None:
        return
    from hf_adapt.modeling import read_model_labels
    from hf_adapt.probes import detect_probe_kind, read_labelled_examples

    if detect_probe_kind(probe) != "labelled":
        return
    probe_labels = sorted(set(read_labelled_examples(probe, config.forgetting.max_rows)[1]))
    models = [("the new data", labels)]
    if config.model.init_from:  # validation insists on it for a labelled probe
        models.insert(0, ("model.init_from", read_model_labels(config.model.init_from)))
    for who, known in models:
        unknown = [label for label in probe_labels if label not in known]
        if unknown:
            raise HfAdaptError(f"forgetting.probe {probe}: label {unknown[0]!r} is not among the labels of {who} "
                               f"({', '.join(known)}); use a probe with labels both models know, or an STS probe")


def measure_run_forgetting(config: RecipeConfig, model: nn.Module, tokenizer: Any,
                           state_dict: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Run the forgetting meter between the run's starting model and the trained `model`.

    Args:
        config (`RecipeConfig`): `forgetting.probe`, `forgetting.max_rows`, and the starting model.
        model (`nn.Module`): the trained model (peft/DDP wrappers are fine).
        tokenizer: its tokenizer.
        state_dict (`dict`, *optional*): the full weights gathered from FSDP shards; the meter
            then runs on an unsharded copy built from them (a sharded model cannot run on one rank).

    Returns:
        `dict`: `ForgettingReport.to_dict()` plus `base` (the "before" model).
    """
    from transformers import AutoModelForSequenceClassification

    from hf_adapt.forgetting import measure_forgetting

    adapted = unwrap(model)
    if state_dict is not None:
        adapted = AutoModelForSequenceClassification.from_config(adapted.config)
        adapted.load_state_dict(state_dict)
    base = forgetting_base(config)
    report = measure_forgetting(base, (adapted, tokenizer), config.forgetting.probe,
                                max_rows=config.forgetting.max_rows)
    say(f"forgetting on {Path(report.probe).name}: {report.metric} {report.before:.4f} -> "
          f"{report.after:.4f} (retention {report.retention:.1%}); top-layer CKA {report.layer_cka[-1]:.3f}")
    return {**report.to_dict(), "base": str(base)}
