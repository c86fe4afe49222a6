"""Where a training step's time goes, and the throughput ceiling its matrix multiplies set.

`profile_steps` runs training steps as a recipe runs them (autocast, backward, gradient
clipping, AdamW, zero_grad) under `torch.profiler` and sums each operator's own time into a few
categories. The matmul category alone bounds the throughput: even with every other operator
free, a step cannot take less than its matmuls do, so `FLOPs / matmul seconds` is the most that
this model, at these batch shapes, with these kernels, can reach. `bench_step.py` beside it is the
command line around it (docs/reports/sst2_experiments.md, "Where a step's time goes").
"""

from __future__ import annotations

import csv
import random
import time
from dataclasses import dataclass, field
from typing import Any

import torch

# Operator names (as the profiler reports them) per category; anything else is "other".
CATEGORIES = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation",
               "aten::mkldnn_linear", "aten::_scaled_dot_product_flash_attention_for_cpu",
               "aten::_scaled_dot_product_flash_attention_for_cpu_backward"),
    "dropout masks": ("aten::bernoulli_", "aten::uniform_"),
    "dtype casts": ("aten::copy_", "aten::_to_copy"),
    "optimizer": ("aten::_fused_adamw_", "aten::_fused_adam_"),
    "zero fills": ("aten::fill_", "aten::zero_"),
}
PHASES = ("forward", "backward", "clip", "optimizer", "zero_grad")


@dataclass
class StepProfile:
    steps: int
    phase_ms_per_step: dict[str, float]  # forward, backward, ... timed without the profiler
    ms_per_step: dict[str, float]  # operator category -> own time per step, under the profiler
    real_tokens_per_step: float
    squares_per_step: float  # sum over rows of (real tokens)^2, for attention FLOPs
    top_ops: list[tuple[str, float]] = field(default_factory=list)  # (operator, ms per step), largest first

    @property
    def wall_ms_per_step(self) -> float:
        return sum(self.phase_ms_per_step.values())


def grouped_batches(tokenizer: Any, data: str, steps: int, batch_size: int = 32, max_length: int = 64,
                    pad_to_multiple_of: int | None = 8, seed: int = 0) -> tuple[list[dict], list[str]]:
    """`steps` batches of the first rows of the CSV `data` (text,label), grouped by length as
    the recipes' sampler groups them, padded to a multiple of 8, in shuffled order; and the
    label names (sorted: label ids are their positions)."""
    with open(data, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))[: batch_size * steps]
    names = sorted({r["label"] for r in rows})
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["text"]))
    out = []
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        batch = tokenizer([rows[i]["text"] for i in index], padding=True, pad_to_multiple_of=pad_to_multiple_of,
                          truncation=True, max_length=max_length, return_tensors="pt")
        batch["labels"] = torch.tensor([names.index(rows[i]["label"]) for i in index])
        out.append(batch)
    random.Random(seed).shuffle(out)
    return out, names


def profile_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: list[dict], *,
                  warmup: int, dtype: torch.dtype = torch.float32, max_grad_norm: float = 1.0) -> StepProfile:
    """Train on `batches`: `warmup` untimed steps, the rest timed phase by phase, then the same
    ones again under the profiler. CPU only: the profiler's CPU times say nothing of GPU kernels."""
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise ValueError(f"profile_steps measures CPU training; the model is on {device}")
    model.train()

    phases = dict.fromkeys(PHASES, 0.0)

    def step(batch: dict) -> None:
        marks = [time.perf_counter()]

        def mark() -> None:
            marks.append(time.perf_counter())

        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        mark()
        loss.backward()
        mark()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        mark()
        optimizer.step()
        mark()
        optimizer.zero_grad(set_to_none=True)
        mark()
        for phase, (start, end) in zip(PHASES, zip(marks, marks[1:])):
            phases[phase] += (end - start) * 1000

    for batch in batches[:warmup]:
        step(batch)
    measured = batches[warmup:]
    if not measured:
        raise ValueError(f"{len(batches)} batches leave none to measure after {warmup} warm-up steps")
    phases.update(dict.fromkeys(PHASES, 0.0))
    for batch in measured:
        step(batch)
    phase_ms = {phase: total / len(measured) for phase, total in phases.items()}
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for batch in measured:
            step(batch)
    own = {e.key: e.self_cpu_time_total / 1000 / len(measured) for e in prof.key_averages()}
    masks = [b["attention_mask"].sum(dim=1).double() for b in measured]
    return StepProfile(
        steps=len(measured),
        phase_ms_per_step=phase_ms,
        ms_per_step=categorise(own),
        real_tokens_per_step=float(sum(m.sum() for m in masks)) / len(measured),
        squares_per_step=float(sum((m**2).sum() for m in masks)) / len(measured),
        top_ops=sorted(own.items(), key=lambda kv: -kv[1])[:12],
    )


def categorise(own_ms: dict[str, float]) -> dict[str, float]:
    """Sum operators' own times into `CATEGORIES` (plus "other")."""
    category_of = {op: name for name, ops in CATEGORIES.items() for op in ops}
    totals = {name: 0.0 for name in (*CATEGORIES, "other")}
    for op, ms in own_ms.items():
        totals[category_of.get(op, "other")] += ms
    return totals
