"""The one train → evaluate → save path that every recipe runs, around `transformers.Trainer`.

    load data → build model → apply the update strategy → build optimizer → train/evaluate
    → save (atomically) → card → push

Recipes differ only in the strategy step and their defaults. Intermediate checkpoints live in a
hidden work directory beside the output (`.NAME.work/`), so the output directory only ever
appears complete: the final save is written to a temporary directory and renamed into place.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from transformers import (
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    PreTrainedModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

import hf_adapt
from hf_adapt.config import RecipeConfig
from hf_adapt.data import LabelMap, TaskData, load_task_data, tokenize_splits
from hf_adapt.errors import HfAdaptError
from hf_adapt.metrics import build_compute_metrics
from hf_adapt.modeling import load_model, load_tokenizer, unwrap
from hf_adapt.optim import build_optimizer
from hf_adapt.strategies import apply_strategy, trainable_summary


@dataclass
class RunResult:
    """What a recipe's `run(config)` returns (and what `metrics.json` in the output holds)."""

    output_dir: str
    strategy: str
    base_model: str
    labels: list[str]
    metrics: dict[str, dict[str, float]]  # split ("validation", "test") -> metric -> value
    params: dict[str, int]  # trainable, total
    timings: dict[str, float]  # train_s, eval_s, total_s
    train: dict[str, Any]  # epochs, steps, train_loss, samples_per_second, best_checkpoint_metric
    data: dict[str, Any]  # sources and row counts per split
    hardware: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. forgetting results
    hf_adapt_version: str = hf_adapt.__version__

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, directory: Path) -> None:
        (directory / "metrics.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


class AdaptTrainer(Trainer):
    """`Trainer` whose optimizer comes from `build_optimizer` and whose loss can carry class weights
    and extra penalty terms (e.g. L2-SP)."""

    loss_is_scaled_for_ga = False  # our loss is a per-batch mean: let Trainer divide it for accumulation

    def __init__(self, *args: Any, recipe: RecipeConfig, class_weights: torch.Tensor | None = None,
                 loss_terms: list[Callable[[torch.nn.Module], torch.Tensor]] | None = None,
                 include_frozen: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.recipe = recipe
        self.class_weights = class_weights
        self.loss_terms = loss_terms or []
        self.include_frozen = include_frozen

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            target = self.model if model is None else model
            self.optimizer = build_optimizer(target, self.recipe.optim, include_frozen=self.include_frozen)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        weight = None if self.class_weights is None else self.class_weights.to(outputs.logits.device)
        loss = F.cross_entropy(outputs.logits.float(), labels, weight=weight)
        for term in self.loss_terms:
            loss = loss + term(model)
        return (loss, outputs) if return_outputs else loss


# ---------------------------------------------------------------------------------------------
# The run


def run_recipe(config: RecipeConfig, *, callbacks: list[TrainerCallback] | None = None) -> RunResult:
    """Train, evaluate and save one model as the recipe says; returns the run's results."""
    started = time.perf_counter()
    output_dir, work_dir = check_output_dir(config)
    set_seed(config.train.seed)
    task = load_task_data(config.data, seed=config.train.seed)
    tokenizer = load_tokenizer(config.model)
    encoded = tokenize_splits(task.splits, tokenizer, task.label_map, config.model.max_length)
    model = apply_strategy(load_model(config.model, task.label_map), config.adapt)
    summary = trainable_summary(model)
    print(f"[hf_adapt] {config.adapt.strategy}: {summary}")

    trainer = build_trainer(config, model, tokenizer, encoded, task.label_map, work_dir, callbacks or [])
    train_output = trainer.train(resume_from_checkpoint=find_resume_checkpoint(config, work_dir))
    train_s = time.perf_counter() - started
    metrics = evaluate_splits(trainer, encoded)
    eval_s = time.perf_counter() - started - train_s

    result = RunResult(
        output_dir=str(output_dir),
        strategy=config.adapt.strategy,
        base_model=config.model.name_or_path,
        labels=list(task.label_map.labels),
        metrics=metrics,
        params={"trainable": summary.trainable, "total": summary.total},
        timings={"train_s": round(train_s, 2), "eval_s": round(eval_s, 2)},
        train=train_summary(trainer, train_output),
        data={"sources": task.sources, "rows": {k: len(v) for k, v in task.splits.items()}},
        hardware=hardware_summary(trainer),
    )
    if trainer.is_world_process_zero():
        save_outputs(trainer, config, task.label_map, result, output_dir, work_dir, started)
    trainer.accelerator.wait_for_everyone()
    return result


def check_output_dir(config: RecipeConfig) -> tuple[Path, Path]:
    """Refuse a non-empty output directory unless overwriting; return (output_dir, work_dir)."""
    output_dir = Path(config.train.output_dir).resolve()
    work_dir = output_dir.parent / f".{output_dir.name}.work"
    if output_dir.exists() and not output_dir.is_dir():
        raise HfAdaptError(f"train.output_dir {output_dir} is a file; choose a directory path")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not config.train.overwrite:
        raise HfAdaptError(f"train.output_dir {output_dir} already exists and is not empty; choose another "
                           f"directory or pass --overwrite to replace it when the new run succeeds")
    if work_dir.exists() and not config.train.resume and not config.train.overwrite:
        raise HfAdaptError(f"{work_dir} holds checkpoints of an unfinished run into {output_dir}; pass --resume "
                           f"to continue it or --overwrite to start again")
    return output_dir, work_dir


def find_resume_checkpoint(config: RecipeConfig, work_dir: Path) -> str | None:
    if not config.train.resume:
        return None
    last = get_last_checkpoint(str(work_dir)) if work_dir.is_dir() else None
    if last is None:
        raise HfAdaptError(f"--resume: no checkpoint found in {work_dir}; run without --resume to start afresh")
    print(f"[hf_adapt] resuming from {last}")
    return last


def build_trainer(config: RecipeConfig, model: PreTrainedModel, tokenizer: Any, encoded: Any,
                  label_map: LabelMap, work_dir: Path, callbacks: list[TrainerCallback]) -> AdaptTrainer:
    if config.train.overwrite and work_dir.exists() and not config.train.resume:
        shutil.rmtree(work_dir)
    args = build_training_arguments(config, work_dir)
    if config.train.early_stopping_patience:
        callbacks = [*callbacks, EarlyStoppingCallback(config.train.early_stopping_patience)]
    return AdaptTrainer(
        model=model,
        args=args,
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=build_compute_metrics(label_map.id2label),
        callbacks=callbacks,
        recipe=config,
        class_weights=balanced_class_weights(encoded["train"], label_map) if config.train.class_weights == "balanced" else None,
    )


def build_training_arguments(config: RecipeConfig, work_dir: Path) -> TrainingArguments:
    t, o = config.train, config.optim
    evaluating = t.eval_strategy != "no"
    return TrainingArguments(
        output_dir=str(work_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=o.learning_rate,
        weight_decay=o.weight_decay,
        warmup_steps=o.warmup,
        lr_scheduler_type=o.scheduler,
        max_grad_norm=o.max_grad_norm,
        eval_strategy=t.eval_strategy,
        eval_steps=t.eval_steps,
        save_strategy=t.eval_strategy if evaluating else "epoch",
        save_steps=t.eval_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=evaluating,
        metric_for_best_model=t.metric_for_best if evaluating else None,
        greater_is_better=t.metric_for_best != "loss" if evaluating else None,
        logging_steps=t.logging_steps,
        report_to=["tensorboard"] if t.tensorboard else [],
        seed=t.seed,
        data_seed=t.seed,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        bf16=t.mixed_precision == "bf16",
        fp16=t.mixed_precision == "fp16",
        remove_unused_columns=True,
        save_only_model=False,
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=False,
    )


def balanced_class_weights(train: Any, label_map: LabelMap) -> torch.Tensor:
    """Inverse-frequency weights, n / (k * count_c), as scikit-learn's `class_weight='balanced'`."""
    counts = torch.bincount(torch.tensor(train["labels"]), minlength=len(label_map.labels)).float()
    return counts.sum() / (len(counts) * counts.clamp(min=1))


def evaluate_splits(trainer: Trainer, encoded: Any) -> dict[str, dict[str, float]]:
    """Evaluate the (best) model on validation and, if given, test; strip Trainer's key prefixes."""
    results = {}
    for split in ("validation", "test"):
        if split not in encoded:
            continue
        raw = trainer.evaluate(encoded[split], metric_key_prefix=split)
        results[split] = {key[len(split) + 1:]: float(value) for key, value in raw.items()
                          if key.startswith(split + "_") and key.split("_", 1)[1] not in ("runtime", "samples_per_second",
                                                                                          "steps_per_second", "epoch")}
    return results


def train_summary(trainer: Trainer, output: Any) -> dict[str, Any]:
    state = trainer.state
    return {
        "epochs": round(float(state.epoch or 0), 3),
        "steps": int(state.global_step),
        "train_loss": round(float(output.training_loss), 5),
        "samples_per_second": round(float(output.metrics.get("train_samples_per_second", 0.0)), 2),
        "best_metric": state.best_metric,
        "best_checkpoint_step": _checkpoint_step(state.best_model_checkpoint),
    }


def hardware_summary(trainer: Trainer) -> dict[str, Any]:
    device = trainer.args.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "device": device.type,
        "device_name": name,
        "num_processes": trainer.accelerator.num_processes,
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def _checkpoint_step(path: str | None) -> int | None:
    return int(path.rsplit("-", 1)[-1]) if path else None


# ---------------------------------------------------------------------------------------------
# Saving: everything goes to a temporary sibling directory, then one rename publishes it.


def save_outputs(trainer: Trainer, config: RecipeConfig, label_map: LabelMap, result: RunResult,
                 output_dir: Path, work_dir: Path, started: float) -> None:
    staging = output_dir.parent / f".{output_dir.name}.tmp-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        save_model_files(trainer, config, staging)
        label_map.save(staging)
        (staging / "recipe.yaml").write_text(recipe_header(config) + config.to_yaml(), encoding="utf-8")
        if (work_dir / "runs").is_dir():
            shutil.copytree(work_dir / "runs", staging / "runs")
        result.timings["total_s"] = round(time.perf_counter() - started, 2)
        result.save(staging)
        from hf_adapt.cards import write_model_card

        write_model_card(staging)
        publish(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not config.train.keep_checkpoints:
        shutil.rmtree(work_dir, ignore_errors=True)
    print(f"[hf_adapt] saved to {output_dir}")


def save_model_files(trainer: Trainer, config: RecipeConfig, directory: Path) -> None:
    """A plain transformers model (+ tokenizer); for LoRA also the adapter, or the adapter alone."""
    model = trainer.model
    tokenizer = trainer.processing_class
    if config.adapt.strategy != "lora":
        unwrap(model).save_pretrained(directory, safe_serialization=True)
        tokenizer.save_pretrained(directory)
        return
    adapter_dir = directory / "adapter" if config.adapt.merge_lora else directory
    model.save_pretrained(adapter_dir, safe_serialization=True)
    _set_adapter_base(adapter_dir, config.model.name_or_path)
    # config.json beside the adapter carries the label map, so the head can be rebuilt.
    unwrap(model).config.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    if config.adapt.merge_lora:
        merged = model.merge_and_unload()
        merged.save_pretrained(directory, safe_serialization=True)
        tokenizer.save_pretrained(directory)
        trainer.model = merged


def _set_adapter_base(adapter_dir: Path, base_model: str) -> None:
    """Record the Hub id (not the local embedded path) as the adapter's base model."""
    path = adapter_dir / "adapter_config.json"
    data = json.loads(path.read_text())
    data["base_model_name_or_path"] = base_model
    path.write_text(json.dumps(data, indent=2) + "\n")


def recipe_header(config: RecipeConfig) -> str:
    return (f"# Resolved recipe of this run (from {config.source}). Re-run with:\n"
            f"#   hf-adapt train recipe.yaml train.output_dir=NEW_DIR\n")


def publish(staging: Path, output_dir: Path) -> None:
    """Rename the finished staging directory into place; an old output is replaced only now."""
    if output_dir.exists():
        backup = output_dir.parent / f".{output_dir.name}.old-{os.getpid()}"
        os.replace(output_dir, backup)
        os.replace(staging, output_dir)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(staging, output_dir)
