"""The one run that every recipe makes, around `transformers.Trainer`, read top to bottom in
`run_recipe`:

    load data → tokenizer → model → strategy → controls → trainer (+ optimizer) → train
    → evaluate → save → card → push

Recipes differ only in the strategy step and their presets (`hf_adapt.config.PRESETS`). Each step
is one library call; who owns what:

    hf_adapt.data        files → task and label map → tokenized splits
    hf_adapt.modeling    model and tokenizer loading; each architecture family's layout
    hf_adapt.strategies  full / partial / LoRA
    hf_adapt.controls    L2-SP, gradual unfreezing, re-initialised layers, the forgetting meter
    hf_adapt.trainer     Trainer with hf_adapt's loss and attention kernel; its arguments
    hf_adapt.optim       the optimizer's parameter groups (layer-wise LR decay)
    hf_adapt.caching     training on the cached output of a frozen prefix
    hf_adapt.interrupts  Ctrl-C / SIGTERM: checkpoint and stop
    hf_adapt.outputs     the output directory: lock, checkpoints, atomic save, recovery
    hf_adapt.cards       the model card;  hf_adapt.hub  the push
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, set_seed

from hf_adapt import cards
from hf_adapt.caching import train_with_cache
from hf_adapt.config import duration_seconds, RecipeConfig
from hf_adapt.controls import (
    apply_controls,
    check_fsdp_controls,
    check_probe_labels,
    measure_run_forgetting,
    reinit_top_layers,
)
from hf_adapt.data import (
    column_array,
    column_mean,
    DOCUMENT,
    LabelMap,
    load_task_data,
    target_range,
    TargetScale,
    TaskData,
    tokenize_splits,
    Windows,
)
from hf_adapt.errors import HfAdaptError, say
from hf_adapt.hardware import hardware_summary, set_cpu_threads, wait_for_everyone
from hf_adapt.head_init import fit_probe_head, resolve_head_init
from hf_adapt.interrupts import StopOnInterrupt, TimeBudget
from hf_adapt.metrics import fit_temperature, pool_windows, sigmoid, tune_thresholds
from hf_adapt.modeling import (check_max_length, load_model, load_tokenizer, rescale_output, sentence_pooling,
                               set_dropout, unwrap)
from hf_adapt.optim import build_optimizer
from hf_adapt.outputs import (
    FingerprintCheckpoints,
    RunResult,
    claim_output,
    find_resume_checkpoint,
    publishing,
    run_fingerprint,
    save_run,
)
from hf_adapt.pooling import FEW_PER_LABEL, pooling_of, resolve_pooling
from hf_adapt.schedule import plan_training
from hf_adapt.streaming import load_stream_task
from hf_adapt.strategies import apply_strategy, trainable_summary
from hf_adapt.trainer import build_trainer

__all__ = ["RunResult", "build_model", "run_recipe"]


def run_recipe(config: RecipeConfig, *, callbacks: list[TrainerCallback] | None = None) -> RunResult:
    """Train, evaluate and save one model as the recipe says; returns the run's results."""
    started = time.perf_counter()
    main_process = int(os.environ.get("RANK", "0")) == 0
    with claim_output(config, main_process=main_process) as paths:  # locked; checked; recovered
        set_cpu_threads(config.train.threads)
        set_seed(config.train.seed)
        raw_task = task = (load_stream_task(config.data, seed=config.train.seed, rank=int(os.environ.get("RANK", "0")),
                                            world_size=int(os.environ.get("WORLD_SIZE", "1")))
                           if config.data.streaming else load_task_data(config.data, seed=config.train.seed))
        scale = TargetScale.from_recipe(config.data, task)  # data.target_scaling: standard
        if scale is not None:  # trained on standardised targets; raw_task keeps the targets as given
            task = TaskData(scale.scaled(task.splits), task.label_map, task.sources)
        check_probe_labels(config, task.label_map.labels)
        fingerprint = run_fingerprint(config, task.label_map.labels)  # what a checkpoint of this run depends on
        tokenizer = load_tokenizer(config.model)
        windows = Windows.from_recipe(config.data, config.model.max_length, task.label_map.task)  # long_text: chunk
        encoded = tokenize_splits(task.splits, tokenizer, task.label_map, config.model.max_length, windows)
        if windows is not None:
            say(f"long_text chunk: {len(task.splits['train']):,} training texts -> {len(encoded['train']):,} windows "
                f"of {windows.length} tokens ({windows.stride} shared with the one before); a text's prediction "
                f"pools its windows' logits ({windows.pooling})")
        # The schedule settings the recipe leaves unset, planned from the data; recipe.yaml keeps them unset
        rows = task.rows("train") if task.stream else len(encoded["train"])  # windows, when chunked
        planned, plan = plan_training(config, rows, len(encoded["validation"]), int(os.environ.get("WORLD_SIZE", "1")),
                                      validation_length=validation_length(encoded, streamed=task.stream))
        say(plan.line)
        model = build_model(config, task.label_map, target_mean=task.target_mean, train_rows=rows)  # strategy applied
        summary = trainable_summary(model)
        say(f"{config.adapt.strategy}: {summary}")
        head = start_head(config, model, encoded, tokenizer, task, rows)  # before L2-SP notes the start
        controls = apply_controls(model, config.adapt)  # L2-SP, gradual unfreezing

        interrupt = StopOnInterrupt()
        budget = TimeBudget(duration_seconds(config.train.time_budget)) if config.train.time_budget else None
        trainer = build_trainer(
            planned, model, tokenizer, encoded, task.label_map, paths.work_dir,
            optimizer=lambda m: build_optimizer(m, config.optim, include_frozen=controls.include_frozen),
            loss_terms=controls.loss_terms,
            callbacks=[*(callbacks or []), *controls.callbacks, interrupt, FingerprintCheckpoints(fingerprint),
                       *([budget] if budget else [])],
            windows=windows)
        check_distributed(trainer, config)
        setup_s = time.perf_counter() - started
        with interrupt.catch_signals():  # a frozen prefix is computed once, when the recipe freezes one
            train_output = train_with_cache(trainer, planned, encoded, paths.work_dir,
                                            resume_from_checkpoint=find_resume_checkpoint(config, paths.work_dir,
                                                                                          fingerprint))
        interrupt.raise_if_stopped(trainer.state, paths.work_dir)
        train_s = time.perf_counter() - started - setup_s
        # Training is over: the scoring passes below are not early-stopping evaluations (the callback
        # would warn on each that it cannot find the metric under their own key prefix).
        trainer.remove_callback(EarlyStoppingCallback)
        if scale is not None:  # the head predicts the target's own units from here on, as evaluated and saved
            rescale_output(trainer.model, scale.mean, scale.std)
            encoded.update(scale.unscaled({k: v for k, v in encoded.items() if k != "train"}))
            say(f"target scaling: trained on (target - {scale.mean:.4g}) / {scale.std:.4g}; the head is rescaled, "
                f"so the saved model predicts in the target's units")
        fitted = fit_on_validation(trainer, encoded, task.label_map, windows, calibrate=config.train.calibrate)
        if windows is not None:  # where predict and eval find how to window and pool
            windows.save(unwrap(trainer.model).config)
        metrics = evaluate_splits(trainer, encoded)

        result = RunResult(
            output_dir=str(paths.output_dir), strategy=config.adapt.strategy, base_model=config.model.name_or_path,
            labels=list(task.label_map.labels), task=task.label_map.task, metrics=metrics,
            params={"trainable": summary.trainable, "total": summary.total},
            timings={"setup_s": round(setup_s, 2), "train_s": round(train_s, 2),
                     "eval_s": round(time.perf_counter() - started - setup_s - train_s, 2)},
            train=train_summary(trainer, train_output),
            data=data_summary(raw_task, encoded if windows is not None else None),
            hardware=hardware_summary(trainer))
        result.extra.update(fitted)  # temperature, multi-label thresholds
        if head is not None:
            result.extra["head_init"] = head
        result.train["planned"] = plan.summary
        if budget is not None:
            result.train["time_budget"] = budget.summary
            if "stopped_at_step" in budget.summary:
                say(f"time budget {config.train.time_budget}: stopped at step {budget.summary['stopped_at_step']} of "
                    f"{budget.summary['recipe_steps']} ({budget.summary['why']})")
        if scale is not None:
            result.extra["target_scaling"] = {"mean": round(scale.mean, 6), "std": round(scale.std, 6)}
        if windows is not None:
            result.extra["windows"] = {"length": windows.length, "stride": windows.stride, "pooling": windows.pooling}
        state_dict = gather_state_dict(trainer)  # a collective under FSDP: every rank takes part
        if trainer.is_world_process_zero():
            if config.forgetting.probe:
                forgetting_started = time.perf_counter()
                result.extra["forgetting"] = measure_run_forgetting(config, trainer.model, tokenizer, state_dict)
                result.timings["forgetting_s"] = round(time.perf_counter() - forgetting_started, 2)
            result.timings["total_s"] = round(time.perf_counter() - started, 2)
            with publishing(paths, keep_checkpoints=config.train.keep_checkpoints) as staging:
                save_run(staging, trainer, config, task.label_map, result, paths.work_dir, state_dict)
                cards.write_model_card(staging, repo_id=config.hub.repo_id if config.hub.push else None)
            if config.hub.push:
                push_result(config, paths.output_dir)
        wait_for_everyone()
    return result


def build_model(config: RecipeConfig, label_map: LabelMap, *, target_mean: float | None = None,
                train_rows: int | None = None) -> torch.nn.Module:
    """The model a recipe trains: loaded, checked, its dropout set, the update strategy applied (the
    head reading the mean of the token states or the first token's, `resolve_pooling`)."""
    model = load_model(config.model, label_map, init_from_scratch=config.model.from_scratch, target_mean=target_mean)
    check_max_length(config.model, model)
    set_dropout(model, config.model.dropout)  # before LoRA, whose own dropout is adapt.lora_dropout
    per_label = None if train_rows is None else train_rows / max(len(label_map.labels), 1)
    pooling = resolve_pooling(config.adapt, sentence_pooling(config.model), per_label)
    if pooling == "mean" and config.adapt.pooling == "auto" and not config.adapt.freeze_encoder:
        say(f"pooling auto: the head reads the mean of the token states, as {config.model.name_or_path} was trained "
            f"to embed sentences ({per_label:,.0f} training rows per label <= {FEW_PER_LABEL}: few-shot; "
            f"adapt.pooling: cls to read the first token)")
    return apply_strategy(reinit_top_layers(model, config.adapt.reinit_top_layers),
                          dataclasses.replace(config.adapt, pooling=pooling))


def start_head(config: RecipeConfig, model: torch.nn.Module, encoded: Any, tokenizer: Any, task: TaskData,
               train_rows: int) -> dict[str, Any] | None:
    """The output layer fitted as a linear probe on the pretrained features when `adapt.head_init`
    resolves to probe (`head_init.resolve_head_init`); what the card records, or None (a random head)."""
    labels = len(task.label_map.labels)
    per_label = None if task.stream else train_rows / max(labels, 1)  # a stream's rows are not read ahead
    if resolve_head_init(config.adapt, task.label_map.task, labels, per_label) != "probe":
        return None
    head = fit_probe_head(model, encoded["train"], tokenizer)
    why = ("adapt.head_init: probe" if config.adapt.head_init == "probe" else
           f"head_init auto ({labels} labels, {per_label:,.0f} training rows per label <= {FEW_PER_LABEL}: few-shot)")
    say(f"{why}: the output layer starts as a logistic regression on the pretrained features of {head['rows']:,} "
        f"training rows (their accuracy {head['train_accuracy']:.3f}), then fine-tunes (LP-FT; adapt.head_init: "
        f"random for a random start)")
    return head


def validation_length(encoded: Any, *, streamed: bool) -> float:
    """A validation row's mean tokens over a training row's (1 when training streams: its rows are not
    read ahead), so that the plan counts evaluations in tokens."""
    if streamed:
        return 1.0
    return column_mean(encoded["validation"], "length") / max(column_mean(encoded["train"], "length"), 1.0)


def check_distributed(trainer: Trainer, config: RecipeConfig) -> None:
    """What FSDP cannot do: LoRA, and the controls that hold references to parameters."""
    if trainer.is_fsdp_enabled and config.adapt.strategy == "lora":
        raise HfAdaptError("adapt.strategy 'lora' is not supported under FSDP; launch it with DDP "
                           "(`accelerate launch --multi_gpu`): LoRA's frozen encoder fits on every GPU")
    check_fsdp_controls(config.adapt, fsdp=trainer.is_fsdp_enabled)


def fit_on_validation(trainer: Trainer, encoded: Any, label_map: LabelMap, windows: Windows | None = None, *,
                      calibrate: bool = True) -> dict[str, Any]:
    """What is fitted on the validation split with the kept weights, fixed for every later evaluation
    and saved in the model's config, where `predict` finds it: a classifier's temperature
    (`calibration_temperature`, with `calibrate`), then each multi-label label's decision threshold
    on the calibrated scores (`label_thresholds`). Returns them as `{"temperature", "thresholds"}`."""
    if label_map.task == "regression" or not (calibrate or label_map.task == "multi_label"):
        return {}
    output = trainer.predict(encoded["validation"], metric_key_prefix="fitting")
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    references = output.label_ids
    if windows is not None:  # fitted for texts, whose scores pool their windows'
        logits, first = pool_windows(logits, column_array(encoded["validation"], DOCUMENT), windows.pooling)
        references = references[first]
    config, fitted = unwrap(trainer.model).config, {}
    if calibrate:
        temperature = round(fit_temperature(logits, references, label_map.task), 4)
        trainer.temperature.value = config.calibration_temperature = fitted["temperature"] = temperature
        say(f"calibrated on validation: temperature {temperature:g} (scores are of logits / {temperature:g})")
        logits = logits / temperature
    if label_map.task == "multi_label":
        values = tune_thresholds(sigmoid(logits), references)
        trainer.thresholds.values = values
        fitted["thresholds"] = {label: round(float(t), 2) for label, t in zip(label_map.labels, values)}
        config.label_thresholds = fitted["thresholds"]
        say("decision thresholds tuned on validation: "
            + ", ".join(f"{k} {v:g}" for k, v in fitted["thresholds"].items()))
    return fitted


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


def kept_evaluation(trainer: Trainer) -> dict[str, Any] | None:
    """Which evaluation's weights the run kept, and why (None: the final weights are kept, as
    `train.keep: last` or no evaluation during training says)."""
    state, name = trainer.state, trainer.args.metric_for_best_model
    if not trainer.args.load_best_model_at_end:  # train.keep: last
        return None
    evaluations = [e for e in state.log_history if f"eval_{name}" in e]
    best = next((e for e in reversed(evaluations) if e["step"] == state.best_global_step), None)
    if name is None or best is None:
        return None
    value = best[f"eval_{name}"]
    tied = [e for e in evaluations if e[f"eval_{name}"] == value and e is not best]
    why = (f"best validation {name} ({value:.4f})" if not tied else
           f"validation {name} {value:.4f} tied with {len(tied)} other evaluation(s); the lowest validation loss "
           f"({best.get('eval_loss', float('nan')):.4f}), then the latest, wins")
    return {"step": best["step"], "epoch": round(float(best["epoch"]), 2), "metric": name, "value": value,
            "loss": best.get("eval_loss"), "why": why}


def train_summary(trainer: Trainer, output: Any) -> dict[str, Any]:
    state = trainer.state
    kept = kept_evaluation(trainer)
    if kept is not None:
        say(f"kept the weights of epoch {kept['epoch']:g} (step {kept['step']}): {kept['why']}")
    return {
        "epochs": round(float(state.epoch or 0), 3),
        "pooling": pooling_of(trainer.model),  # what the head reads: cls or mean (hf_adapt.pooling)
        "steps": int(state.global_step),
        "train_loss": round(float(output.training_loss), 5),
        "samples_per_second": round(float(output.metrics.get("train_samples_per_second", 0.0)), 2),
        "best_metric": state.best_metric,
        "best_checkpoint_step": _checkpoint_step(state.best_model_checkpoint),
        "kept": kept,  # which evaluation's weights were kept, and why
        "epoch_seconds": output.metrics.get("epoch_seconds", []),  # from train_with_cache
        "curve": output.metrics.get("curve", []),  # time to accuracy: each evaluation's training seconds and figures
        "frozen_cache": output.metrics.get("frozen_cache"),
    }


def data_summary(task: TaskData, windows: Any = None) -> dict[str, Any]:
    """The data a run read: sources and rows per split; for regression, the training targets' range;
    for chunked texts, the windows per split (`windows`: the tokenized splits)."""
    summary: dict[str, Any] = {"sources": task.sources, "rows": {k: task.rows(k) for k in task.splits}}
    if windows is not None:
        summary["windows"] = {k: len(v) for k, v in windows.items()}
    if task.label_map.task == "regression":
        summary["target_range"] = list(task.stream.target_range if task.stream else target_range(task.splits["train"]))
    return summary


def _checkpoint_step(path: str | None) -> int | None:
    return int(path.rsplit("-", 1)[-1]) if path else None


def gather_state_dict(trainer: Trainer) -> dict[str, torch.Tensor] | None:
    """FSDP shards the weights across ranks: gather the full state dict (as `Trainer.save_model`
    does) for the main process to save. Elsewhere every rank holds the whole model: None."""
    return trainer.accelerator.get_state_dict(trainer.model) if trainer.is_fsdp_enabled else None


def push_result(config: RecipeConfig, output_dir: Path) -> None:
    """`hub.push: true`: push the saved output; a failed push leaves it in place and says so."""
    from hf_adapt.hub import push

    h = config.hub
    try:
        pushed = push(output_dir, h.repo_id, to=h.to, what=h.what, private=h.private, revision=h.revision,
                      local_root=h.local_root)
    except HfAdaptError as err:
        raise HfAdaptError(f"{err} (the trained model is saved in {output_dir}; retry with "
                           f"`hf-adapt push {output_dir} --repo-id {h.repo_id}`)") from None
    if pushed is not None:
        from hf_adapt.hub import how_to_load

        say(f"pushed {len(pushed.files)} files to {pushed.destination}; "
              f"{how_to_load(h.repo_id, to=h.to, local_root=h.local_root)}")
