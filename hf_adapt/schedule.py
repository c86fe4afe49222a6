"""The schedule a run gets from its data: the training settings a recipe leaves unset (null) are
planned from the number of training and validation rows and the strategy, so that 30 labelled
examples get enough optimizer updates and 300,000 rows stop when validation stops improving.
Explicit values always win; the run prints what it planned and why in one line, and metrics.json
and the card record it (`train.planned`).

The rules, each with its reason (measurements in docs/recipes.md, "Settings planned from the data"):

- **Batch size** (`train.batch_size`): the largest of 32, 16, 8, 4 that still gives 16 batches an
  epoch; a tiny set learns from more, smaller steps. Not smaller to save passes: 2,000 SST-2 rows
  in 2 epochs of batch 16 (250 updates) took 0.56x the time of 4 epochs of 32 and lost 0.5 point
  of test accuracy; 500 rows in 2 epochs of 4 lost 1.5 (3 seeds, the full preset; docs/benchmark.md,
  "Time to accuracy").
- **Epochs** (`train.epochs`): enough for `MIN_UPDATES[strategy]` optimizer updates, at least 2
  (at most 100); one pass over `ONE_EPOCH_ROWS` rows or more, which is more than these models need.
  Not 3, the classic BERT recipe: on 5,000 SST-2 rows the full recipe kept test accuracy 0.857
  after 2 epochs as after 3, in two thirds of the time (docs/benchmark.md, "Time to accuracy").
- **Evaluations** (`train.eval_strategy`, `train.eval_steps`): as many as cost about `EVAL_SHARE`
  of the training time (an evaluation token costs ~1/3 of a training token: forward only), at most
  20 in all, at least one (at the end); every epoch when that fits, else every N steps. Counted in
  tokens, not rows: SST-2's validation sentences average ~2x the tokens of its training phrases,
  and evaluations counted by rows took a quarter of the training time, not 15%.
- **Which weights are kept** (`train.keep`): the best evaluation's when validation has at least
  `MIN_SELECTION_ROWS` rows; below that a "best" evaluation is noise (3 carved rows decide by
  chance), so the last weights are kept.
- **Early stopping** (`train.early_stopping_patience`): after a quarter of the planned
  evaluations (at least 3) without gain, when the best is kept and there are at least 6
  evaluations; else off. Not a fixed 3: on all 20,000 SST-2 rows (20 evaluations, 0.1 epoch
  apart) validation wobbles while the learning rate is high, and 3 stopped the run at 0.8 epoch
  (test 0.878, below a plain Trainer's 0.886); with 5, this rule, it ran its 2 epochs to test
  0.888 (docs/benchmark.md, "Time to accuracy").
- **Warm-up** (`optim.warmup`): 10% of the updates, at most 1,000 steps.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from hf_adapt.config import RecipeConfig

__all__ = ["Plan", "PLANNED_KEYS", "plan_training"]

BATCH_SIZES = (32, 16, 8, 4)  # largest first
MIN_BATCHES_PER_EPOCH = 16
# Optimizer updates a tiny set gets at least. LoRA's zero-initialised update and a head on frozen
# features (lr 1e-3 / 2e-3) take more, cheaper, steps than full fine-tuning.
MIN_UPDATES = {"full": 200, "partial": 200, "lora": 300, "features": 300}
MIN_EPOCHS, MAX_PLANNED_EPOCHS = 2, 100
ONE_EPOCH_ROWS = 200_000
EVAL_SHARE = 0.15  # of the training time spent on validation: buys the chance to stop early
FORWARD_SHARE = 1 / 3  # an evaluation row costs about a third of a training row (no backward pass)
MAX_EVALS = 20  # a curve of 20 points says enough; each evaluation also writes a checkpoint
MIN_SELECTION_ROWS = 100
PATIENCE, PATIENCE_SHARE, MIN_EVALS_FOR_STOPPING = 3, 0.25, 6  # at least 3, else a quarter of the evaluations
WARMUP_RATIO, MAX_WARMUP_STEPS = 0.1, 1_000


@dataclass(frozen=True)
class Plan:
    """What was planned: `chosen` maps each planned key (`train.epochs`, ...) to its value; `line`
    is the sentence the run prints."""

    rows: int
    validation_rows: int
    chosen: dict[str, Any]
    explicit: list[str]
    line: str

    @property
    def summary(self) -> dict[str, Any]:
        return {"rows": self.rows, "validation_rows": self.validation_rows, "chosen": self.chosen,
                "explicit": self.explicit, "why": self.line}


def recipe_kind(config: RecipeConfig) -> str:
    """full | partial | lora | features (the partial recipe with the whole encoder frozen)."""
    a = config.adapt
    return "features" if a.strategy == "partial" and a.freeze_encoder else a.strategy


def plan_training(config: RecipeConfig, rows: int, validation_rows: int, world_size: int = 1, *,
                  validation_length: float = 1.0) -> tuple[RecipeConfig, Plan]:
    """The recipe with every unset (null) schedule setting planned from the data, and the plan.

    Args:
        rows (`int`): training rows (windows, for `data.long_text: chunk`).
        validation_rows (`int`): rows each evaluation scores.
        world_size (`int`, defaults to 1): processes that share each step's batch.
        validation_length (`float`, defaults to 1): a validation row's mean tokens over a training
            row's, so that evaluations are counted in tokens.
    """
    t, kind = config.train, recipe_kind(config)
    chosen: dict[str, Any] = {}
    batch = t.batch_size
    if batch is None:
        batch = next((b for b in BATCH_SIZES if rows / (b * world_size) >= MIN_BATCHES_PER_EPOCH), BATCH_SIZES[-1])
        chosen["train.batch_size"] = batch
    updates_per_epoch = max(1, math.ceil(rows / (batch * world_size * t.gradient_accumulation_steps)))
    epochs = t.epochs
    if epochs is None and t.max_steps <= 0:
        epochs = 1 if rows >= ONE_EPOCH_ROWS else min(MAX_PLANNED_EPOCHS, max(
            MIN_EPOCHS, math.ceil(MIN_UPDATES[kind] / updates_per_epoch)))
        chosen["train.epochs"] = epochs
    updates = t.max_steps if t.max_steps > 0 else math.ceil((epochs or 1) * updates_per_epoch)
    epochs_run = updates / updates_per_epoch

    eval_strategy, eval_steps = t.eval_strategy, t.eval_steps
    if eval_strategy is None and eval_steps is not None:  # an interval without a strategy means steps
        eval_strategy = chosen["train.eval_strategy"] = "steps"
    if eval_strategy is None:
        eval_strategy, eval_steps = _evaluations(updates, epochs_run, batch * world_size,
                                                 validation_rows * validation_length)
        chosen["train.eval_strategy"] = eval_strategy
        if eval_steps is not None:
            chosen["train.eval_steps"] = eval_steps
    evaluations = (0 if eval_strategy == "no" else math.ceil(epochs_run) if eval_strategy == "epoch"
                   else math.ceil(updates / (eval_steps or updates)))
    keep = t.keep
    if keep is None:
        keep = "best" if validation_rows >= MIN_SELECTION_ROWS and evaluations > 1 else "last"
        chosen["train.keep"] = keep
    if t.early_stopping_patience is None:
        patience = (max(PATIENCE, math.ceil(PATIENCE_SHARE * evaluations))
                    if keep == "best" and evaluations >= MIN_EVALS_FOR_STOPPING else 0)
        chosen["train.early_stopping_patience"] = patience
    if config.optim.warmup is None:
        warmup = WARMUP_RATIO if WARMUP_RATIO * updates <= MAX_WARMUP_STEPS else MAX_WARMUP_STEPS
        chosen["optim.warmup"] = warmup

    planned = _with(config, chosen)
    explicit = [key if key != "train.epochs" or t.epochs is not None else "train.max_steps"
                for key in PLANNED_KEYS if key not in chosen]  # train.max_steps sets the length, not epochs
    plan = Plan(rows, validation_rows, chosen, explicit,
                _describe(planned, kind, rows, validation_rows, updates, evaluations, chosen, explicit,
                          validation_length))
    return planned, plan


PLANNED_KEYS = ("train.batch_size", "train.epochs", "train.eval_strategy", "train.keep",
                "train.early_stopping_patience", "optim.warmup")


def _evaluations(updates: int, epochs: float, batch: int, validation_size: float) -> tuple[str, int | None]:
    """(eval_strategy, eval_steps): evaluations costing about EVAL_SHARE of training, at most
    MAX_EVALS, at least one (at the end). `validation_size`: an evaluation's rows, in training rows'
    worth of tokens."""
    affordable = EVAL_SHARE * updates * batch / (FORWARD_SHARE * max(validation_size, 1))
    wanted = max(1, min(math.floor(affordable), MAX_EVALS))
    if wanted >= math.ceil(epochs) and wanted < 2 * epochs:  # about one an epoch: at each epoch's end
        return "epoch", None
    return "steps", max(1, math.ceil(updates / wanted))


def _with(config: RecipeConfig, chosen: dict[str, Any]) -> RecipeConfig:
    sections: dict[str, dict[str, Any]] = {}
    for key, value in chosen.items():
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = value
    return dataclasses.replace(config, **{
        section: dataclasses.replace(getattr(config, section), **values) for section, values in sections.items()})


def _describe(config: RecipeConfig, kind: str, rows: int, validation_rows: int, updates: int, evaluations: int,
              chosen: dict[str, Any], explicit: list[str], validation_length: float = 1.0) -> str:
    t = config.train
    every = ("no evaluation" if t.eval_strategy == "no" else "evaluation every epoch" if t.eval_strategy == "epoch"
             else f"evaluation every {t.eval_steps} steps")
    count = f"{evaluations} in all"
    if "train.eval_strategy" in chosen and abs(validation_length - 1) >= 0.1:  # counted in tokens: say why
        count += f"; validation rows {validation_length:.1f}x as long as training rows"
    stop = (f"early stopping after {t.early_stopping_patience} evaluations without gain"
            if t.early_stopping_patience else "no early stopping")
    keep = ("keep the best evaluation's weights" if t.keep == "best" else "keep the last weights" + (
        "" if "train.keep" not in chosen else f" (validation {validation_rows:,} rows < {MIN_SELECTION_ROWS}: too few "
        "to pick a best)" if validation_rows < MIN_SELECTION_ROWS else " (one evaluation)"))
    length = f"{t.max_steps} steps" if t.max_steps > 0 else f"{t.epochs:g} epoch{'s' if t.epochs != 1 else ''}"
    warmup = config.optim.warmup
    parts = (f"batch {t.batch_size}, {length} ({updates:,} updates), {every} ({count}), {keep}, "
             f"{stop}, warm-up {f'{warmup:.0%} of the updates' if warmup < 1 else f'{warmup:g} steps'}")
    if not chosen:
        return f"schedule as the recipe sets it: {parts}"
    given = f"; set by the recipe: {', '.join(explicit)}" if explicit else ""
    return f"planned for {rows:,} training rows ({kind}): {parts}{given}"
