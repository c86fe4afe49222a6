"""Where a recipe's training step spends its time, and the most its matrix multiplies allow.

    python scripts/benchmarks/bench_step.py --data ../shared/data/sst2/train.csv
    python scripts/benchmarks/bench_step.py --data ../shared/data/sst2/train.csv --recipe recipes/minilm_sst2_lora.yaml

Runs the recipe's step (its model, dropout, strategy, optimizer with layer-wise LR decay, batch
size, padding, precision, gradient clipping and attention kernel) on length-grouped batches of `--data`, on the CPU:
warm-up steps, then the same steps timed phase by phase, then again under `torch.profiler`,
whose operator times are summed into categories. It prints the achieved training GFLOP/s on
real tokens (the benchmark's formula, `bench.FLOPS_FORMULA`) and the ceiling set by the
matmuls alone: FLOPs / time inside matmul kernels, what the step would reach if every other
operator took no time. Both are given as a share of the matmul peak measured here in the same
precision (docs/reports/sst2_experiments.md, "Where a step's time goes").
"""

from __future__ import annotations

import argparse
import json
import sys

import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a CSV with text and label columns")
    parser.add_argument("--recipe", default="recipes/minilm_sst2_full.yaml", help="a full or lora recipe")
    parser.add_argument("--steps", type=int, default=40, help="steps measured (each twice: timed, then profiled)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (oneDNN builds its kernels)")
    parser.add_argument("--peak-size", type=int, default=2048, help="matrix size of the matmul-peak measurement")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, e.g. train.batch_size=64")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0:
        parser.error(f"--steps must be >= 1 and --warmup >= 0, got {args.steps} and {args.warmup}")

    from bench import flop_passes, measure_matmul_peak, model_shape, training_flops
    from hf_adapt.config import load_recipe
    from hf_adapt.data import LabelMap
    from hf_adapt.engine import build_model
    from hf_adapt.hardware import resolve_mixed_precision
    from hf_adapt.trainer import training_attention
    from hf_adapt.errors import HfAdaptError
    from hf_adapt.modeling import load_tokenizer
    from hf_adapt.optim import build_optimizer
    from stepprofile import grouped_batches, profile_steps

    try:
        config = load_recipe(args.recipe, args.overrides)
    except HfAdaptError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if config.adapt.strategy not in ("full", "lora"):
        print(f"error: --recipe {args.recipe}: adapt.strategy {config.adapt.strategy!r}; this script profiles "
              f"full and lora steps (partial trains from a cache, a different loop)", file=sys.stderr)
        return 2
    try:
        batches, labels = grouped_batches(load_tokenizer(config.model), args.data, args.warmup + args.steps,
                                          config.train.batch_size, config.model.max_length,
                                          config.train.pad_to_multiple_of)
        torch.manual_seed(config.train.seed)
        model = build_model(config, LabelMap(tuple(labels)))  # as `hf-adapt train` builds it
    except HfAdaptError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    precision = resolve_mixed_precision(config.train.mixed_precision)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    with training_attention(torch.device("cpu")):  # as the recipe trains
        profile = profile_steps(model, build_optimizer(model, config.optim), batches, warmup=args.warmup,
                                dtype=dtype, max_grad_norm=config.optim.max_grad_norm)

    shape = model_shape(config.model.name_or_path)
    tokens = {"real": profile.real_tokens_per_step, "squares": profile.squares_per_step}
    flops = training_flops(shape, tokens, flop_passes(f"hf_adapt_{config.adapt.strategy}", 1, shape))
    peak = measure_matmul_peak(args.peak_size, dtype=str(dtype).removeprefix("torch."))
    matmul_ms = profile.ms_per_step["matmul"]
    achieved, ceiling = flops / profile.wall_ms_per_step / 1e6, flops / matmul_ms / 1e6
    profiled_ms = sum(profile.ms_per_step.values())

    print(f"{args.recipe} ({config.adapt.strategy}, {precision}), batch {config.train.batch_size}, "
          f"{profile.real_tokens_per_step:.0f} real tokens per step, {torch.get_num_threads()} threads")
    print(f"phases, ms per step ({profile.steps} steps, no profiler): " +
          ", ".join(f"{k} {v:.1f}" for k, v in profile.phase_ms_per_step.items()) +
          f"; total {profile.wall_ms_per_step:.1f}")
    print(f"operators, ms per step (profiled, {profiled_ms:.1f} in all): " +
          ", ".join(f"{k} {v:.1f} ({100 * v / profiled_ms:.0f}%)" for k, v in profile.ms_per_step.items()))
    print("largest operators, ms per step: " + ", ".join(f"{k} {v:.1f}" for k, v in profile.top_ops[:8]))
    print(f"matmul peak here: {peak:.0f} GFLOP/s ({precision})")
    print(f"achieved: {flops / 1e9:.1f} GFLOP per step in {profile.wall_ms_per_step:.1f} ms = {achieved:.0f} GFLOP/s "
          f"({100 * achieved / peak:.0f}% of the peak)")
    print(f"ceiling, matmuls alone: {matmul_ms:.1f} ms per step = {ceiling:.0f} GFLOP/s "
          f"({100 * ceiling / peak:.0f}% of the peak)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"recipe": args.recipe, "overrides": args.overrides, "precision": precision,
                       "batch_size": config.train.batch_size, "threads": torch.get_num_threads(),
                       "steps": profile.steps, "real_tokens_per_step": profile.real_tokens_per_step,
                       "phase_ms_per_step": profile.phase_ms_per_step, "operator_ms_per_step": profile.ms_per_step,
                       "top_ops": profile.top_ops, "gflop_per_step": flops / 1e9, "peak_gflops": peak,
                       "achieved_gflops": achieved, "matmul_ceiling_gflops": ceiling}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
