"""Does `torch.compile` speed up fine-tuning on this machine? Eager vs inductor, same steps.

hf_adapt offers no compile option because on the CPU it was measured on it did not help
(docs/reports/sst2_experiments.md). This script is how to check again on your hardware:

    python scripts/benchmarks/bench_compile.py --data ../shared/data/sst2/train.csv

Each mode runs in its own process (fresh compile caches, its own peak memory): the default
model, bf16 autocast where the machine multiplies bf16 natively, AdamW, length-grouped batches
of 32 padded to a multiple of 8 (as the full recipe trains), `torch.compile(dynamic=True)` so
that the few batch shapes share one graph. It prints the time of the first steps (where
compilation happens), the steady ms/step after them, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

WARMUP_STEPS = 20


def run_mode(mode: str, model: str, data: str, steps: int) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hf_adapt.hardware import native_bf16
    from hf_adapt.modeling import resolve_model_path
    from stepprofile import grouped_batches

    path = resolve_model_path(model)
    data_batches, labels = grouped_batches(AutoTokenizer.from_pretrained(path), data, steps)
    torch.manual_seed(0)
    net = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net.to(device).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    forward = torch.compile(net, dynamic=True) if mode == "compile" else net
    dtype = torch.bfloat16 if native_bf16() else torch.float32

    def step(batch: dict) -> None:
        with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
            loss = forward(**{k: v.to(device) for k, v in batch.items()}).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    began = time.perf_counter()
    for batch in data_batches[:WARMUP_STEPS]:
        step(batch)
    first = time.perf_counter() - began
    began = time.perf_counter()
    for batch in data_batches[WARMUP_STEPS:]:
        step(batch)
    steady = (time.perf_counter() - began) / (len(data_batches) - WARMUP_STEPS)
    return {"mode": mode, "first_steps_s": round(first, 2), "steady_ms_per_step": round(steady * 1000, 1),
            "precision": str(dtype).removeprefix("torch.")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a CSV with text and label columns")
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--steps", type=int, default=80, help=f"training steps per mode ({WARMUP_STEPS} warm-up)")
    parser.add_argument("--mode", choices=["eager", "compile"], help=argparse.SUPPRESS)  # one child process
    args = parser.parse_args()
    if args.steps <= WARMUP_STEPS:
        parser.error(f"--steps must be > {WARMUP_STEPS} (the warm-up steps), got {args.steps}")
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.model, args.data, args.steps)))
        return 0
    results = {}
    for mode in ("eager", "compile"):
        child = subprocess.run([sys.executable, __file__, "--mode", mode, "--data", args.data, "--model", args.model,
                                "--steps", str(args.steps)], capture_output=True, text=True)
        if child.returncode != 0:
            print(child.stderr.strip().splitlines()[-1] if child.stderr.strip() else f"{mode} failed", file=sys.stderr)
            return 1
        results[mode] = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"{mode:>8}: first {WARMUP_STEPS} steps {results[mode]['first_steps_s']:.1f} s, then "
              f"{results[mode]['steady_ms_per_step']:.0f} ms/step ({results[mode]['precision']})")
    eager, compiled = results["eager"], results["compile"]
    print(f"compile / eager: steady step time {compiled['steady_ms_per_step'] / eager['steady_ms_per_step']:.2f}x, "
          f"first steps {compiled['first_steps_s'] / eager['first_steps_s']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
