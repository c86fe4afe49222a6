"""The one train → evaluate → save path that every recipe runs, around `transformers.Trainer`.

    load data → build model → apply the update strategy → build optimizer → train/evaluate
    → save (atomically) → card → push

Recipes differ only in the strategy step and their defaults. The output directory's life cycle
(its lock, the hidden work directory of checkpoints, the atomic final save) is `hf_adapt.outputs`.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from transformers import (
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    PreTrainedModel,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
    set_seed,
)

import hf_adapt
from hf_adapt.caching import EXAMPLE_INDEX, FrozenPrefixCache, train_with_cache
from hf_adapt.config import RecipeConfig
from hf_adapt.controls import (Controls, apply_controls, check_fsdp_controls, check_probe_labels,
                               measure_run_forgetting, reinit_top_layers)
from hf_adapt.data import LabelMap, TaskData, load_task_data, tokenize_splits
from hf_adapt.errors import HfAdaptError
from hf_adapt.metrics import build_compute_metrics
from hf_adapt.modeling import check_max_length, load_model, load_tokenizer, set_dropout, unwrap
from hf_adapt.optim import build_optimizer
from hf_adapt.outputs import RunPaths, SaveInterrupted, claim_output, last_complete_checkpoint, publish, signals_raise
from hf_adapt.pooling import resolve_pooling
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
    timings: dict[str, float]  # setup_s (data, model), train_s (training only), eval_s, total_s
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
        self.prefix_cache: FrozenPrefixCache | None = None  # set by train_with_cache while training on it

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            target = self.model if model is None else model
            self.optimizer = build_optimizer(target, self.recipe.optim, include_frozen=self.include_frozen)
        return self.optimizer

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        # Only the training steps: evaluation and the frozen-prefix cache run forward alone, where the
        # flash kernel is fast and keeps no attention matrices (math there cost the frozen-encoder
        # benchmark variant 110 MB of peak: 1,251 vs 1,142 MB).
        with training_attention(self.args.device):
            return super().training_step(model, inputs, *args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        index = inputs.pop(EXAMPLE_INDEX, None)
        if self.prefix_cache is not None and index is not None and model.training:
            outputs = self.prefix_cache.forward(model, inputs, index)
        else:
            outputs = model(**inputs)
        weight = None if self.class_weights is None else self.class_weights.to(outputs.logits.device)
        loss = F.cross_entropy(outputs.logits.float(), labels, weight=weight)
        for term in self.loss_terms:
            loss = loss + term(model)
        return (loss, outputs) if return_outputs else loss

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if EXAMPLE_INDEX not in self._signature_columns:  # the frozen-prefix cache's row index
            self._signature_columns.append(EXAMPLE_INDEX)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C or SIGTERM after saving a checkpoint (the CLI exits with 130)."""


class StopOnInterrupt(TrainerCallback):
    """Ctrl-C (SIGINT) or SIGTERM: finish the current step, save a checkpoint, stop training.

    The checkpoint is the one Trainer would have written at that step, so `--resume` continues
    the run as if it had never stopped. Under `accelerate launch` every rank gets the signal (the
    launcher forwards it), perhaps at different steps: the ranks agree on the step with a
    max-reduce of the flag over a CPU (gloo) group, which never waits on the GPU. A second Ctrl-C,
    more than a second after the first, stops at once without saving.
    """

    def __init__(self) -> None:
        self.requested_at: float | None = None
        self.stopped = False
        self.saved_step: int | None = None
        self.group: Any = None

    @contextmanager
    def catch_signals(self) -> Iterator[None]:
        """Install the handler around `trainer.train()` (only the main thread may set handlers)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.requested_at is None:
            self.requested_at = now
            # os.write, not print: a handler can run in the middle of another print.
            os.write(2, f"\n[hf_adapt] {signal.Signals(signum).name}: saving a checkpoint after this step, then "
                        f"stopping (Ctrl-C again to abort without saving)\n".encode())
        elif signum == signal.SIGINT and now - self.requested_at > 1.0:  # not the launcher's forwarded copy
            raise KeyboardInterrupt

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        if args.world_size > 1 and dist.is_initialized():
            self.group = dist.new_group(backend="gloo")

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        if self._requested_on_any_rank():
            self.stopped = control.should_training_stop = True
            # At an epoch's end, Trainer's epoch-end evaluation comes first; on_epoch_end saves after it.
            control.should_save = control.should_save or not _at_epoch_end(state)

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        if not self.stopped:
            return
        if _at_epoch_end(state):
            control.should_save = self.saved_step != state.global_step
        else:  # stopped mid-epoch: already saved; an evaluation here would change the resumed run
            control.should_evaluate = control.should_save = False

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self.saved_step = state.global_step

    def _requested_on_any_rank(self) -> bool:
        requested = self.requested_at is not None
        if self.group is not None:
            flag = torch.tensor([float(requested)])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
            requested = bool(flag.item())
        return requested

    def raise_if_stopped(self, state: TrainerState, work_dir: Path) -> None:
        if self.stopped:
            raise TrainingInterrupted(f"training stopped at step {state.global_step}; its checkpoint is in "
                                      f"{work_dir}; run the same command again with --resume to continue")


def _at_epoch_end(state: TrainerState) -> bool:
    return state.epoch is not None and abs(state.epoch - round(state.epoch)) < 1e-9


# ---------------------------------------------------------------------------------------------
# The run


def run_recipe(config: RecipeConfig, *, callbacks: list[TrainerCallback] | None = None) -> RunResult:
    """Train, evaluate and save one model as the recipe says; returns the run's results."""
    started = time.perf_counter()
    with claim_output(config, main_process=int(os.environ.get("RANK", "0")) == 0) as paths:
        return _run(config, paths, started, callbacks or [])


def _run(config: RecipeConfig, paths: RunPaths, started: float, callbacks: list[TrainerCallback]) -> RunResult:
    set_cpu_threads(config.train.threads)
    set_seed(config.train.seed)
    task = load_task_data(config.data, seed=config.train.seed)
    check_probe_labels(config, task.label_map.labels)
    tokenizer = load_tokenizer(config.model)
    encoded = tokenize_splits(task.splits, tokenizer, task.label_map, config.model.max_length)
    model = build_model(config, task.label_map)
    summary = trainable_summary(model)
    print(f"[hf_adapt] {config.adapt.strategy}: {summary}")
    controls = apply_controls(model, config.adapt)  # L2-SP, gradual unfreezing

    interrupt = StopOnInterrupt()
    trainer = build_trainer(config, model, tokenizer, encoded, task.label_map, paths.work_dir,
                            [*callbacks, *controls.callbacks, interrupt], controls=controls)
    if trainer.is_fsdp_enabled and config.adapt.strategy == "lora":
        raise HfAdaptError("adapt.strategy 'lora' is not supported under FSDP; launch it with DDP "
                           "(`accelerate launch --multi_gpu`): LoRA's frozen encoder fits on every GPU")
    check_fsdp_controls(config.adapt, fsdp=trainer.is_fsdp_enabled)
    setup_s = time.perf_counter() - started
    with interrupt.catch_signals():  # the frozen prefix is computed once when the recipe freezes one
        train_output = train_with_cache(trainer, config, encoded, paths.work_dir,
                                        resume_from_checkpoint=find_resume_checkpoint(config, paths.work_dir))
    interrupt.raise_if_stopped(trainer.state, paths.work_dir)
    train_s = time.perf_counter() - started - setup_s
    metrics = evaluate_splits(trainer, encoded)
    eval_s = time.perf_counter() - started - setup_s - train_s

    result = RunResult(
        output_dir=str(paths.output_dir),
        strategy=config.adapt.strategy,
        base_model=config.model.name_or_path,
        labels=list(task.label_map.labels),
        metrics=metrics,
        params={"trainable": summary.trainable, "total": summary.total},
        timings={"setup_s": round(setup_s, 2), "train_s": round(train_s, 2), "eval_s": round(eval_s, 2)},
        train=train_summary(trainer, train_output),
        data={"sources": task.sources, "rows": {k: len(v) for k, v in task.splits.items()}},
        hardware=hardware_summary(trainer),
    )
    state_dict = gather_state_dict(trainer)  # a collective under FSDP: every rank takes part
    if trainer.is_world_process_zero():
        if config.forgetting.probe:
            forgetting_started = time.perf_counter()
            result.extra["forgetting"] = measure_run_forgetting(config, trainer.model, tokenizer, state_dict)
            result.timings["forgetting_s"] = round(time.perf_counter() - forgetting_started, 2)
        save_outputs(trainer, config, task.label_map, result, paths, started, state_dict)
        if config.hub.push:
            push_result(config, paths.output_dir)
    wait_for_everyone()
    return result


def build_model(config: RecipeConfig, label_map: LabelMap) -> torch.nn.Module:
    """The model a recipe trains: loaded, checked, its dropout set, the update strategy applied."""
    model = load_model(config.model, label_map, init_from_scratch=config.model.from_scratch)
    check_max_length(config.model, model)
    set_dropout(model, config.model.dropout)  # before LoRA, whose own dropout is adapt.lora_dropout
    return apply_strategy(reinit_top_layers(model, config.adapt.reinit_top_layers), config.adapt)


def wait_for_everyone() -> None:
    """Every rank meets here. Not accelerate's `wait_for_everyone`: it passes the local rank as a
    CUDA device id even to CPU processes, which fails on a machine with fewer GPUs than processes
    (ACCELERATE_USE_CPU=true with scripts/accelerate/cpu_2proc.yaml on a one-GPU machine)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    if torch.distributed.get_backend() == "nccl":
        torch.distributed.barrier(device_ids=[torch.cuda.current_device()])
    else:
        torch.distributed.barrier()


def set_cpu_threads(threads: int | None) -> None:
    """torch's intra-op threads: `train.threads`, or by default the cores shared out among the
    processes of a multi-process CPU launch (each would otherwise take every core and they would
    fight over them). A single process keeps torch's default, one thread per core."""
    if threads is None:
        processes = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
        if processes <= 1 or torch.cuda.is_available():
            return
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, cores // processes)
    torch.set_num_threads(threads)


@contextmanager
def training_attention(device: torch.device) -> Iterator[None]:
    """On the CPU, train with PyTorch's plain ("math") attention kernel, never its flash kernel
    (`AdaptTrainer.training_step`).

    With attention dropout on, scaled_dot_product_attention uses the math kernel anyway (the CPU
    flash kernel has no dropout). Without it (`model.dropout: 0`, LoRA's default) it picked flash,
    whose backward pass took 87 of the 180 ms of a MiniLM LoRA step on SST-2 batches (2 cores);
    with the math kernel the step took 104 ms (scripts/bench_step.py, docs/benchmark.md).
    """
    if device.type != "cpu":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        yield


def resolve_mixed_precision(setting: str) -> str:
    """`train.mixed_precision` as Trainer takes it: `auto` is bf16 where `native_bf16()`, else fp32
    ("no"). Master weights, optimizer state and the saved model stay fp32 either way."""
    if setting != "auto":
        return setting
    return "bf16" if native_bf16() else "no"


def native_bf16() -> bool:
    """Whether this machine multiplies bf16 natively: a CUDA GPU that supports it, or a CPU with
    AMX (Intel Sapphire Rapids and later), where bf16 matmuls run at 4x the fp32 rate and bf16
    autocast trained the SST-2 full recipe 1.5x faster at the same accuracy (docs/benchmark.md).
    Other CPUs emulate bf16 or gain at most 2x, unmeasured here, so they stay fp32."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private API, hence the guard
    return bool(amx is not None and amx())


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
        print(f"[hf_adapt] pushed {len(pushed.files)} files to {pushed.destination}")


def find_resume_checkpoint(config: RecipeConfig, work_dir: Path) -> str | None:
    if not config.train.resume:
        return None
    last = last_complete_checkpoint(work_dir)
    if last is None:
        raise HfAdaptError(f"--resume: no checkpoint found in {work_dir}; run without --resume to start afresh")
    print(f"[hf_adapt] resuming from {last}")
    return last


def build_trainer(config: RecipeConfig, model: PreTrainedModel, tokenizer: Any, encoded: Any,
                  label_map: LabelMap, work_dir: Path, callbacks: list[TrainerCallback],
                  controls: Controls | None = None) -> AdaptTrainer:
    controls = controls or Controls()
    args = build_training_arguments(config, work_dir)
    if not config.train.resume:  # what is there is an old run's (--overwrite) or holds no checkpoint
        with args.main_process_first(desc="clearing the old work directory"):  # one rank deletes, the rest wait
            if args.process_index == 0 and work_dir.exists():
                shutil.rmtree(work_dir)
    if config.train.early_stopping_patience:
        callbacks = [*callbacks, EarlyStoppingCallback(config.train.early_stopping_patience)]
    return AdaptTrainer(
        model=model,
        args=args,
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=config.train.pad_to_multiple_of),
        compute_metrics=build_compute_metrics(label_map.id2label),
        callbacks=callbacks,
        recipe=config,
        class_weights=balanced_class_weights(encoded["train"], label_map) if config.train.class_weights == "balanced" else None,
        loss_terms=controls.loss_terms,
        include_frozen=controls.include_frozen,
    )


def build_training_arguments(config: RecipeConfig, work_dir: Path) -> TrainingArguments:
    t, o = config.train, config.optim
    evaluating = t.eval_strategy != "no"
    precision = resolve_mixed_precision(t.mixed_precision)
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
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        remove_unused_columns=True,
        save_only_model=False,
        dataloader_pin_memory=torch.cuda.is_available(),
        # `accelerate launch --multi_gpu`/`torchrun` on a machine without GPUs: DDP over gloo. Without
        # this every process would silently train its own copy, each seeing all the data. bf16 without
        # a GPU also needs it: Trainer otherwise refuses bf16 as "not supported" instead of autocasting on CPU.
        use_cpu=not torch.cuda.is_available() and (int(os.environ.get("WORLD_SIZE", "1")) > 1
                                                   or precision == "bf16"),
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
        "pooling": resolve_pooling(trainer.recipe.adapt),  # what the head reads: cls or mean (hf_adapt.pooling)
        "steps": int(state.global_step),
        "train_loss": round(float(output.training_loss), 5),
        "samples_per_second": round(float(output.metrics.get("train_samples_per_second", 0.0)), 2),
        "best_metric": state.best_metric,
        "best_checkpoint_step": _checkpoint_step(state.best_model_checkpoint),
        "epoch_seconds": output.metrics.get("epoch_seconds", []),  # from train_with_cache
        "frozen_cache": output.metrics.get("frozen_cache"),
    }


def hardware_summary(trainer: Trainer) -> dict[str, Any]:
    device = trainer.args.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {
        "device": device.type,
        "device_name": name,
        "num_processes": trainer.accelerator.num_processes,
        "cpu_threads": torch.get_num_threads(),
        "mixed_precision": "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "no",
        "torch": torch.__version__,
    }


def cpu_name() -> str:
    """The CPU model as the OS reports it (platform.processor() is empty on most Linux systems)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _checkpoint_step(path: str | None) -> int | None:
    return int(path.rsplit("-", 1)[-1]) if path else None


# ---------------------------------------------------------------------------------------------
# Saving: everything goes to a temporary sibling directory, then one rename publishes it.


def gather_state_dict(trainer: Trainer) -> dict[str, torch.Tensor] | None:
    """FSDP shards the weights across ranks: gather the full state dict (as `Trainer.save_model`
    does) for the main process to save. Elsewhere every rank holds the whole model: None."""
    return trainer.accelerator.get_state_dict(trainer.model) if trainer.is_fsdp_enabled else None


def save_outputs(trainer: Trainer, config: RecipeConfig, label_map: LabelMap, result: RunResult,
                 paths: RunPaths, started: float, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Write the model, label map, recipe, metrics and card to a staging directory, then publish it.
    Ctrl-C or SIGTERM while saving removes the staging directory and leaves the output as it was."""
    staging = paths.staging()
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        with signals_raise():
            save_model_files(trainer, config, staging, state_dict)
            label_map.save(staging)
            (staging / "recipe.yaml").write_text(recipe_header(config) + config.to_yaml(), encoding="utf-8")
            if (paths.work_dir / "runs").is_dir():
                shutil.copytree(paths.work_dir / "runs", staging / "runs")
            result.timings["total_s"] = round(time.perf_counter() - started, 2)
            result.save(staging)
            from hf_adapt.cards import write_model_card

            write_model_card(staging, repo_id=config.hub.repo_id if config.hub.push else None)
            publish(paths)
    except SaveInterrupted as err:
        if not staging.exists():  # the signal came as the swap ended: the new output stands
            raise SaveInterrupted(f"{err} just after saving: the model is in {paths.output_dir}") from None
        shutil.rmtree(staging, ignore_errors=True)
        raise SaveInterrupted(f"{err} while saving: nothing was published and {paths.output_dir} is as it was; "
                              f"the checkpoints are in {paths.work_dir}: run the same command with --resume to "
                              f"save again") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not config.train.keep_checkpoints:
        shutil.rmtree(paths.work_dir, ignore_errors=True)
    print(f"[hf_adapt] saved to {paths.output_dir}")


def save_model_files(trainer: Trainer, config: RecipeConfig, directory: Path,
                     state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """A plain transformers model (+ tokenizer); for LoRA also the adapter, or the adapter alone."""
    model = trainer.model
    tokenizer = trainer.processing_class
    if config.adapt.strategy != "lora":
        unwrap(model).save_pretrained(directory, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(directory)
        return
    adapter_dir = directory / "adapter" if config.adapt.merge_lora else directory
    model.save_pretrained(adapter_dir, safe_serialization=True)
    # Continuing from an earlier run, the adapter's base weights are that run's.
    _set_adapter_base(adapter_dir, str(Path(config.model.init_from).resolve()) if config.model.init_from
                      else config.model.name_or_path)
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
