"""Stopping a run cleanly: Ctrl-C or SIGTERM saves a checkpoint of the current step and stops; a time
budget (`TimeBudget`) or an outside judge (`ReportEvaluations`) stop it at an evaluation.

`StopOnInterrupt` is a Trainer callback; `hf-adapt train --resume` continues from the checkpoint
as if the run had never stopped (`tests/test_faults.py` checks the weights come out bit for bit).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from transformers import (
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)


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
            # At an epoch's end, Trainer's epoch-end evaluation comes first; on_epoch_end saves after it
            # (even where the checkpoint interval falls on this step: a save now would miss that evaluation).
            control.should_save = not _at_epoch_end(state)

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


class TimeBudget(TrainerCallback):
    """`train.time_budget`: training ends within a wall-clock budget, evaluated and saved.

    After `PLAN_AFTER` steps the seconds per step are known: if the recipe's steps would not fit,
    the learning-rate schedule is shortened to the steps that do (it still warms up and decays to
    its end, only sooner) and training stops at that step. Each evaluation's cost (with its
    checkpoint), once measured, re-plans the rest (one more, at the end, is reserved). Should training run over all
    the same, it stops at the budget. Either way the stop is Trainer's own: an evaluation and a
    checkpoint, the best checkpoint kept as usual, and a complete output.

    Under `accelerate launch` the ranks agree on the stop (a max-reduce over a CPU group, as for
    `StopOnInterrupt`).
    """

    PLAN_AFTER = 5  # steps timed before the first plan (the first step, start-up, aside)

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.summary: dict[str, Any] = {"budget_s": budget_s}
        self.group: Any = None
        self._started = self._step_ended = 0.0
        self._first_step_s = 0.0
        self._evaluations: list[float] = []
        self._schedules: list[Any] = []
        self._total = 0
        self._planned: int | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self._started = time.perf_counter()
        self._total = self.summary["recipe_steps"] = state.max_steps
        scheduler = kwargs.get("lr_scheduler")
        self._schedules = list(getattr(scheduler, "lr_lambdas", []))
        if args.world_size > 1 and dist.is_initialized():
            self.group = dist.new_group(backend="gloo")

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self._step_ended = time.perf_counter()
        elapsed = self._step_ended - self._started
        if state.global_step == 1:
            self._first_step_s = elapsed
        if state.global_step == self.PLAN_AFTER:
            self._plan(args, state, kwargs.get("lr_scheduler"))
        over = elapsed >= self.budget_s
        planned_end = self._planned is not None and state.global_step >= self._planned
        if self._agreed(over or planned_end) and state.global_step < self._total:
            control.should_training_stop = True
            control.should_evaluate = args.eval_strategy != "no"
            control.should_save = True
            self.summary.update(stopped_at_step=state.global_step, why="the planned steps were done" if
                                planned_end and not over else "the budget ran out")

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        if "stopped_at_step" in self.summary:  # evaluated and saved at the step it stopped: not twice
            control.should_evaluate = control.should_save = False

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        """An evaluation and its checkpoint are done: their cost, measured, re-plans the rest."""
        if self._step_ended:
            self._evaluations.append(time.perf_counter() - self._step_ended)
            if state.global_step >= self.PLAN_AFTER and not control.should_training_stop:
                self._plan(args, state, kwargs.get("lr_scheduler"))

    def _plan(self, args: TrainingArguments, state: TrainerState, scheduler: Any) -> None:
        """The steps that fit in what is left of the budget; the schedule shortened to end there."""
        step = state.global_step
        elapsed = time.perf_counter() - self._started
        spent_on_steps = elapsed - sum(self._evaluations) - self._first_step_s
        step_s = spent_on_steps / max(step - 1, 1)  # the first step (start-up) aside
        evaluation_s = sum(self._evaluations) / len(self._evaluations) if self._evaluations else 0.0
        per_step = 1.0 / args.eval_steps if args.eval_strategy == "steps" and args.eval_steps else (
            args.num_train_epochs / self._total if args.eval_strategy == "epoch" else 0.0)
        left = self.budget_s - elapsed - evaluation_s  # the last evaluation, reserved
        fits = step + max(int(left / (step_s + evaluation_s * per_step)), 0)
        planned = max(min(fits, self._total), step)
        self.summary.update(step_s=round(step_s, 4), planned_steps=planned)
        if planned >= self._total:
            return
        self._planned = planned
        if scheduler is not None and self._schedules:
            scheduler.lr_lambdas = [_shortened(schedule, planned, self._total) for schedule in self._schedules]

    def _agreed(self, stop: bool) -> bool:
        if self.group is not None:
            flag = torch.tensor([float(stop)])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
            stop = bool(flag.item())
        return stop


def _shortened(schedule: Any, steps: int, total: int) -> Any:
    """A transformers schedule (a `partial` of its lr lambda) ending at `steps` instead of `total`,
    its warm-up shortened in proportion; any other schedule unchanged."""
    from functools import partial

    keywords = getattr(schedule, "keywords", None)
    if not isinstance(schedule, partial) or not keywords or "num_training_steps" not in keywords:
        return schedule
    changed = {"num_training_steps": steps}
    if "num_warmup_steps" in keywords:
        changed["num_warmup_steps"] = round(keywords["num_warmup_steps"] * steps / max(total, 1))
    return partial(schedule.func, *schedule.args, **{**keywords, **changed})


class ReportEvaluations(TrainerCallback):
    """Hands every evaluation's figure to someone outside the run, who may stop it there.

    `report(value, epoch)` gets the metric that picks the kept weights (`train.metric_for_best`)
    after each evaluation during training; when it returns True, training stops gracefully, as
    Trainer stops (the best weights kept, the output complete). A hyperparameter search's pruner
    (`hf_adapt.tune`) is such a someone. `stopped_at_epoch` says where it stopped, or is None.
    """

    def __init__(self, report: Callable[[float, float], bool]) -> None:
        self.report = report
        self.stopped_at_epoch: float | None = None

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    metrics: dict[str, float] | None = None, **kwargs: Any):
        value = (metrics or {}).get(f"eval_{args.metric_for_best_model}")
        if value is None:  # no metric evaluation (train.eval_strategy: no, or another split's)
            return
        stop = self.report(float(value), float(state.epoch or 0.0))
        if stop and not control.should_training_stop:  # the last evaluation ends the run anyway: no stop there
            control.should_training_stop = True
            self.stopped_at_epoch = float(state.epoch or 0.0)
