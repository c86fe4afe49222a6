"""`AdaptTrainer`: transformers' `Trainer` with hf_adapt's optimizer, loss and attention kernel, and
the `TrainingArguments` a recipe maps to."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import (
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    PreTrainedModel,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from hf_adapt.caching import EXAMPLE_INDEX, FrozenPrefixCache
from hf_adapt.config import RecipeConfig
from hf_adapt.data import column_array, DOCUMENT, LabelMap, Windows
from hf_adapt.errors import HfAdaptError
from hf_adapt.hardware import resolve_mixed_precision
from hf_adapt.metrics import best_metric, build_compute_metrics, LOWER_IS_BETTER, Temperature, Thresholds, WindowsOf
from hf_adapt.optim import build_optimizer
from hf_adapt.schedule import PLANNED_KEYS

OptimizerBuilder = Callable[[torch.nn.Module], torch.optim.Optimizer]
LossTerm = Callable[[torch.nn.Module], torch.Tensor]


class AdaptTrainer(Trainer):
    """`Trainer` whose optimizer comes from a builder (`hf_adapt.optim.build_optimizer`: one place for
    every parameter group) and whose loss can carry class weights and penalty terms (e.g. L2-SP).

    The builder is called when Trainer asks for its optimizer, i.e. after Accelerate has wrapped the
    model (FSDP needs the wrapped parameters), which is why it is a builder and not an optimizer.
    """

    loss_is_scaled_for_ga = False  # our loss is a per-batch mean: let Trainer divide it for accumulation

    def __init__(self, *args: Any, recipe: RecipeConfig, optimizer_builder: OptimizerBuilder,
                 class_weights: torch.Tensor | None = None, loss_terms: Sequence[LossTerm] = (),
                 task: str = "single_label", thresholds: Thresholds | None = None,
                 windows: WindowsOf | None = None, temperature: Temperature | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.windows = windows  # chunked texts: each evaluation scores texts, pooling their windows
        self.recipe = recipe
        self.task = task  # hf_adapt.data.LabelMap.task: single_label (cross-entropy), multi_label (BCE), regression (MSE)
        self.thresholds = thresholds  # multi-label decision thresholds, shared with compute_metrics
        self.temperature = temperature  # classifiers: fitted on validation after training, shared with it too
        self.optimizer_builder = optimizer_builder
        self.class_weights = class_weights
        self.loss_terms = list(loss_terms)
        self.prefix_cache: FrozenPrefixCache | None = None  # set by train_with_cache while training on it

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            self.optimizer = self.optimizer_builder(self.model if model is None else model)
        return self.optimizer

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """Trainer's FLOPs estimate (6 x tokens x weights), for its `total_flos` log, with the weights
        counted once: Trainer counts every parameter again at every step (2-3 ms of a head-only step)."""
        if getattr(self, "_weights", None) is None:
            self._weights = getattr(self.model, "num_parameters", lambda **_: 0)(exclude_embeddings=True)
        ids = inputs.get(getattr(self.model, "main_input_name", "input_ids"))
        return 6 * ids.numel() * self._weights if ids is not None else 0

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        # Only the training steps: evaluation and the frozen-prefix cache run forward alone, where the
        # flash kernel is fast and keeps no attention matrices.
        with training_attention(self.args.device):
            loss = super().training_step(model, inputs, *args, **kwargs)
        if not torch.isfinite(loss).all():  # Trainer would log the NaN away (logging_nan_inf_filter) and go on
            raise HfAdaptError(f"the training loss became {loss.item()} at step {self.state.global_step + 1}: the run "
                               f"diverged; lower optim.learning_rate (it is {self.recipe.optim.learning_rate:g}) or "
                               f"check the data")
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        index = inputs.pop(EXAMPLE_INDEX, None)
        split = "train" if model.training else "validation"  # evaluation reads the cache only where it covers it
        if self.prefix_cache is not None and index is not None and self.prefix_cache.covers(split):
            outputs = self.prefix_cache.forward(model, inputs, index, split)
        else:
            outputs = model(**inputs)
        # The losses transformers' own heads compute for each problem_type, plus hf_adapt's weights.
        weight = None if self.class_weights is None else self.class_weights.to(outputs.logits.device)
        if self.task == "regression":
            loss = F.mse_loss(outputs.logits.float().squeeze(-1), labels.float())
        elif self.task == "multi_label":  # sigmoid + BCE per label; class weights are each label's pos_weight
            loss = F.binary_cross_entropy_with_logits(outputs.logits.float(), labels.float(), pos_weight=weight)
        else:
            loss = F.cross_entropy(outputs.logits.float(), labels, weight=weight)
        for term in self.loss_terms:
            loss = loss + term(model)
        return (loss, outputs) if return_outputs else loss

    @contextmanager
    def _scoring_texts(self, dataset: Any) -> Iterator[None]:
        """While evaluating a chunked split, compute_metrics pools each text's windows (`WindowsOf`)."""
        chunked = self.windows is not None and DOCUMENT in getattr(dataset, "column_names", ())
        if chunked:
            self.windows.documents = column_array(dataset, DOCUMENT)
        try:
            yield
        finally:
            if chunked:
                self.windows.documents = None

    def evaluate(self, eval_dataset: Any = None, *args: Any, **kwargs: Any) -> dict[str, float]:
        with self._scoring_texts(self.eval_dataset if eval_dataset is None else eval_dataset):
            return super().evaluate(eval_dataset, *args, **kwargs)

    def predict(self, test_dataset: Any, *args: Any, **kwargs: Any) -> Any:
        with self._scoring_texts(test_dataset):
            return super().predict(test_dataset, *args, **kwargs)

    def _get_dataloader(self, dataset: Any, description: str, batch_size: int,
                        sampler_fn: Callable[[Any], torch.utils.data.Sampler | None] | None = None,
                        *args: Any, **kwargs: Any) -> torch.utils.data.DataLoader:
        # Trainer builds the sampler from the dataset after dropping the columns the model does not
        # take, `length` among them, so neither sampler below would find it, and Trainer's would read
        # every row to measure it (10 million rows: ~10 minutes and ~500 MB). Same rows, same order.
        if sampler_fn is not None:
            sampler_fn = _with_all_columns(sampler_fn, dataset)
        return super()._get_dataloader(dataset, description, batch_size, sampler_fn, *args, **kwargs)

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler | None:
        # Trainer's length-grouped sampler reads the lengths as a Python list (10 million rows: ~1 GB of
        # Python ints); this one keeps them in numpy and yields the same order.
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if isinstance(dataset, torch.utils.data.IterableDataset):  # a stream (data.streaming): read in its own order
            return None
        if self.args.train_sampling_strategy == "group_by_length" and "length" in getattr(dataset, "column_names", ()):
            return LengthGroupedSampler(column_array(dataset, "length"),
                                        self.args.train_batch_size * self.args.gradient_accumulation_steps)
        return super()._get_train_sampler(train_dataset)

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        # A stream split among processes (data.streaming under accelerate launch): every process already
        # reads its own part, which Accelerate would split again, or read on one process and send out.
        # Batches are moved to the device by Trainer itself; gradients are synchronised by the DDP model.
        if isinstance(self.train_dataset, torch.utils.data.IterableDataset) and self.args.world_size > 1:
            return torch.utils.data.DataLoader(
                self.train_dataset, batch_size=self._train_batch_size,
                collate_fn=self._get_collator_with_removed_columns(self.data_collator, description="training"),
                num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory)
        return super().get_train_dataloader()

    def _get_eval_sampler(self, eval_dataset: Any) -> torch.utils.data.Sampler | None:
        # A chunked split is scored in its own order, where `document` names each window's text (Trainer
        # would otherwise group evaluation rows by length too; the column itself is gone by now, as the
        # model takes no such input). Several processes: Accelerate shards it in order and gathers it
        # back in order.
        if self.windows is not None and self.windows.documents is not None:
            return torch.utils.data.SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None
        if self.args.train_sampling_strategy == "group_by_length" and "length" in getattr(
                eval_dataset, "column_names", ()):  # evaluation batches of like lengths too, in Trainer's order
            return LengthGroupedSampler(column_array(eval_dataset, "length"), self.args.eval_batch_size,
                                        generator=torch.Generator().manual_seed(
                                            self.args.seed if self.args.data_seed is None else self.args.data_seed))
        return super()._get_eval_sampler(eval_dataset)

    def _determine_best_metric(self, metrics: dict[str, float], trial: Any) -> bool:
        """The best evaluation by `train.metric_for_best`, a tie going to the lower validation loss and
        then to the later evaluation. (Trainer keeps the earliest of equal scores: on a small validation
        set, where accuracy ties at 1.0 from the first epoch on, that kept a barely trained model.)"""
        if self.args.metric_for_best_model is None:
            return False
        name = self.args.metric_for_best_model
        value, loss = metrics[f"eval_{name}"], metrics.get("eval_loss", math.inf)
        candidate = (value if self.args.greater_is_better else -value, -loss)
        best = self.best_evaluation()
        if best is not None and candidate < best:
            return False
        self.state.best_metric = value
        self.state.best_global_step = self.state.global_step
        self.best_loss = loss
        return True

    def best_evaluation(self) -> tuple[float, float] | None:
        """(metric, -loss) of the best evaluation so far, signed so that larger is better; after a
        resume, rebuilt from the evaluations in the restored state."""
        if self.state.best_metric is None or self.state.best_global_step is None:
            return None
        if getattr(self, "best_loss", None) is None:
            losses = [e.get("eval_loss") for e in self.state.log_history
                      if e.get("step") == self.state.best_global_step and "eval_loss" in e]
            self.best_loss = losses[-1] if losses else math.inf
        metric = self.state.best_metric if self.args.greater_is_better else -self.state.best_metric
        return metric, -self.best_loss

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if EXAMPLE_INDEX not in self._signature_columns:  # the frozen-prefix cache's row index
            self._signature_columns.append(EXAMPLE_INDEX)


def _with_all_columns(sampler_fn: Callable[[Any], Any], dataset: Any) -> Callable[[Any], Any]:
    """`sampler_fn` given `dataset` as it was before Trainer removed columns from it (same rows)."""
    return lambda _trimmed: sampler_fn(dataset)


class LengthGroupedSampler(torch.utils.data.Sampler):
    """transformers' `LengthGroupedSampler` (random mega-batches of 50 batches, each sorted by length,
    the longest batch first) with the lengths in a numpy array instead of Python lists; for the same
    torch random state it yields the same order (`tests/test_data_scale.py` compares them)."""

    def __init__(self, lengths: np.ndarray, batch_size: int, generator: torch.Generator | None = None) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.generator = generator

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        return (int(i) for i in length_grouped_order(self.lengths, self.batch_size, self.generator))


def length_grouped_order(lengths: np.ndarray, batch_size: int, generator: torch.Generator | None = None) -> np.ndarray:
    """The order of `transformers.trainer_pt_utils.get_length_grouped_indices`, computed in numpy."""
    rows = len(lengths)
    size = max(min(rows // (batch_size * 4), 50), 1) * batch_size  # a mega-batch
    order = torch.randperm(rows, generator=generator).numpy()
    for start in range(0, rows, size):  # each mega-batch longest first; ties keep their random order
        chunk = order[start:start + size]
        order[start:start + size] = chunk[np.argsort(-lengths[chunk], kind="stable")]
    if rows:  # the longest row of all first, so running out of memory happens at once
        longest = int(np.argmax(lengths[order[::size]])) * size
        order[0], order[longest] = order[longest], order[0]
    return order


class ProgressToStderr(ProgressCallback):
    """Trainer's progress bars, with its log lines (losses, evaluations) on stderr as JSON with numbers
    as numbers: stdout carries only the run's result."""

    def on_log(self, args: TrainingArguments, state: Any, control: Any, logs: dict | None = None, **kwargs: Any):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            line = {k: round(v, 4) if isinstance(v, float) else v for k, v in logs.items() if k != "total_flos"}
            self.training_bar.write(json.dumps(line), file=sys.stderr)


@contextmanager
def training_attention(device: torch.device) -> Iterator[None]:
    """On the CPU, train with PyTorch's plain ("math") attention kernel, never its flash kernel
    (`AdaptTrainer.training_step`): the CPU flash kernel's backward pass is slow, and with attention
    dropout on, scaled_dot_product_attention takes the math kernel anyway. Measured in
    docs/recipes.md ("Dropout and the attention kernel")."""
    if device.type != "cpu":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        yield


def build_trainer(config: RecipeConfig, model: PreTrainedModel, tokenizer: Any, encoded: Any,
                  label_map: LabelMap, work_dir: Path, *, callbacks: Sequence[TrainerCallback] = (),
                  optimizer: OptimizerBuilder | None = None, loss_terms: Sequence[LossTerm] = (),
                  windows: Windows | None = None) -> AdaptTrainer:
    """The recipe's Trainer, checkpointing into `work_dir` (cleared first unless resuming).

    Args:
        optimizer (*optional*): builds the optimizer from the (wrapped) model; default
            `build_optimizer(model, config.optim)`.
        loss_terms (*optional*): penalties added to the loss (L2-SP).
        windows (*optional*): data.long_text: chunk; evaluations then score texts, pooling their windows.
    """
    args = build_training_arguments(config, work_dir, label_map.task)
    if not config.train.resume:  # what is there is an old run's (--overwrite) or holds no checkpoint
        with args.main_process_first(desc="clearing the old work directory"):  # one rank deletes, the rest wait
            if args.process_index == 0 and work_dir.exists():
                shutil.rmtree(work_dir)
    callbacks = list(callbacks)
    thresholds = Thresholds()  # multi-label: tuned per evaluation until evaluate_splits fixes them
    windows_of = WindowsOf(windows.pooling) if windows is not None else None
    temperature = Temperature()  # fitted on validation after training (train.calibrate)
    if config.train.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(config.train.early_stopping_patience))
    trainer = AdaptTrainer(
        model=model,
        args=args,
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=config.train.pad_to_multiple_of),
        compute_metrics=build_compute_metrics(label_map.id2label, label_map.task, thresholds, windows_of, temperature),
        callbacks=callbacks,
        recipe=config,
        optimizer_builder=optimizer or (lambda m: build_optimizer(m, config.optim)),
        class_weights=balanced_class_weights(encoded["train"], label_map) if config.train.class_weights == "balanced" else None,
        loss_terms=loss_terms,
        task=label_map.task,
        thresholds=thresholds,
        windows=windows_of,
        temperature=temperature,
    )
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(ProgressToStderr)
    return trainer


RESUME_POINTS = 0.25  # keep: last: a checkpoint every quarter of the run (Trainer reads < 1 as a share of the steps)


def build_training_arguments(config: RecipeConfig, work_dir: Path, task: str = "single_label") -> TrainingArguments:
    t, o = config.train, config.optim
    unplanned = [key for key in PLANNED_KEYS if getattr(getattr(config, key.split(".")[0]), key.split(".")[1]) is None
                 and not (key == "train.epochs" and t.max_steps > 0)]  # train.max_steps sets the length instead
    if unplanned:
        raise HfAdaptError(f"{', '.join(unplanned)} not set: plan them from the data first "
                           f"(hf_adapt.schedule.plan_training), as hf_adapt.engine.run_recipe does")
    evaluating = t.eval_strategy != "no"
    selecting = evaluating and t.keep != "last"  # keep: best = the best evaluation's weights are loaded at the end
    metric = best_metric(t.metric_for_best, task)
    precision = resolve_mixed_precision(t.mixed_precision)
    return TrainingArguments(
        output_dir=str(work_dir),
        num_train_epochs=t.epochs if t.epochs is not None else 1.0,  # None: train.max_steps rules
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
        # Checkpoints hold the weights an evaluation may have to restore (keep: best) and the points a
        # run resumes from; with keep: last only the latter, so four over the run, not one an evaluation.
        save_strategy=t.eval_strategy if selecting else "steps" if evaluating else "epoch",
        save_steps=t.eval_steps if selecting else RESUME_POINTS,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=selecting,
        metric_for_best_model=metric if evaluating else None,  # also names the metric of the time-to-accuracy curve
        greater_is_better=metric not in LOWER_IS_BETTER if evaluating else None,
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
    """Inverse-frequency weights, n / (k * count_c), as scikit-learn's `class_weight='balanced'`;
    multi-label: each label's `pos_weight`, its negative rows over its positive ones."""
    if label_map.task == "multi_label":
        positives = torch.tensor(np.asarray(train["labels"][:], dtype=np.float32)).sum(0)
        return (len(train) - positives) / positives.clamp(min=1)
    counts = torch.bincount(torch.from_numpy(column_array(train, "labels")), minlength=len(label_map.labels)).float()
    return counts.sum() / (len(counts) * counts.clamp(min=1))
