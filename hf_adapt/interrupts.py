"""Stopping a run cleanly: Ctrl-C or SIGTERM saves a checkpoint of the current step and stops.

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
from typing import Any, Iterator

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
