"""What the machine offers a run: CPU threads, native bf16, the process group; and its description
for metrics.json and the card."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch


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


def resolve_mixed_precision(setting: str) -> str:
    """`train.mixed_precision` as Trainer takes it: `auto` is bf16 where `native_bf16()`, else fp32
    ("no"). Master weights, optimizer state and the saved model stay fp32 either way."""
    if setting != "auto":
        return setting
    return "bf16" if native_bf16() else "no"


def native_bf16() -> bool:
    """Whether this machine multiplies bf16 natively: a CUDA GPU that supports it, or a CPU with
    AMX (Intel Sapphire Rapids and later). Other CPUs emulate bf16 or gain little from it, so they
    train in fp32 (docs/recipes.md, "Precision")."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private API, hence the guard
    return bool(amx is not None and amx())


def hardware_summary(trainer: Any) -> dict[str, Any]:
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
