"""Settings planned from the data against the old fixed defaults, on a user's minimal recipe.

    python scripts/benchmarks/planned_settings.py ../shared/data/sst2 --sizes 16pc,64pc,5000 \\
        --seeds 3 --strategies full --output-dir runs/planned

A minimal recipe names the model (the embedded all-MiniLM-L6-v2), the data files and the strategy;
everything else is default. "planned" leaves the schedule to `hf_adapt.schedule`; "fixed" sets the
defaults every recipe had before it (3 epochs, batch 32, an evaluation each epoch, the best one
kept, warm-up 10%). Sizes: `Kpc` = a seeded sample of K training rows per class, whose validation
is carved from the sample (10%, as a user with only those examples gets); `N` = N seeded rows, or
`all`, validated on the dataset's validation.csv. Every run is scored on test.csv. Prints a
Markdown table (mean over seeds, and each seed) and writes results.json into --output-dir.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from hf_adapt.config import load_config
from hf_adapt.engine import run_recipe

FIXED = ["train.epochs=3", "train.batch_size=32", "train.eval_strategy=epoch", "train.keep=best",
         "train.early_stopping_patience=0", "optim.warmup=0.1"]
STRATEGIES = {"full": ["adapt.strategy=full"], "lora": ["adapt.strategy=lora"],
              "features": ["adapt.strategy=partial", "adapt.freeze_encoder=true"]}


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def sample(rows: list[dict[str, str]], size: str, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    if size.endswith("pc"):
        by_label = defaultdict(list)
        for row in rows:
            by_label[row["label"]].append(row)
        picked = [row for label in sorted(by_label) for row in rng.sample(by_label[label], int(size[:-2]))]
    else:
        picked = rows if size == "all" else rng.sample(rows, min(int(size), len(rows)))
    return rng.sample(picked, len(picked))  # shuffled


def write_csv(rows: list[dict[str, str]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_one(data: Path, size: str, seed: int, strategy: str, schedule: str, out: Path) -> dict:
    name = f"{data.name}-{size}-s{seed}-{strategy}-{schedule}"
    train = write_csv(sample(read_rows(data / "train.csv"), size, seed), out / "data" / name / "train.csv")
    files = [f"data.train_file={train}", f"data.test_file={data / 'test.csv'}", "data.label_column=label"]
    if not size.endswith("pc"):
        files.append(f"data.validation_file={data / 'validation.csv'}")
    overrides = [*files, *STRATEGIES[strategy], *(FIXED if schedule == "fixed" else []),
                 f"train.output_dir={out / 'models' / name}", "train.overwrite=true", f"train.seed={seed}"]
    result = run_recipe(load_config(None, overrides))
    return {"dataset": data.name, "size": size, "seed": seed, "strategy": strategy, "schedule": schedule,
            "test_accuracy": result.metrics["test"]["accuracy"], "train_s": result.timings["train_s"],
            "steps": result.train["steps"], "epochs": result.train["epochs"],
            "planned": (result.train.get("planned") or {}).get("why"), "cpu": result.hardware.get("device_name"),
            "precision": result.hardware.get("mixed_precision")}


def render(results: list[dict]) -> str:
    groups = defaultdict(list)
    for r in results:
        groups[(r["dataset"], r["size"], r["strategy"], r["schedule"])].append(r)
    lines = ["| dataset | size | strategy | schedule | test acc (mean) | per seed | train s (mean) | steps |",
             "|---|---|---|---|---:|---|---:|---:|"]
    for (dataset, size, strategy, schedule), rs in groups.items():
        lines.append(f"| {dataset} | {size} | {strategy} | {schedule} | "
                     f"{statistics.mean(r['test_accuracy'] for r in rs):.3f} | "
                     f"{' / '.join(f'{r['test_accuracy']:.3f}' for r in rs)} | "
                     f"{statistics.mean(r['train_s'] for r in rs):.0f} | {rs[0]['steps']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="Folder with train/validation/test.csv (text,label).")
    parser.add_argument("--sizes", default="8pc,16pc,64pc", help="Kpc (per class), N rows or all; comma-separated.")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--strategies", default="full", help=f"Comma-separated: {', '.join(STRATEGIES)}.")
    parser.add_argument("--schedules", default="fixed,planned")
    parser.add_argument("--output-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    results = []
    for size in args.sizes.split(","):
        for seed in range(args.seeds if size != "all" else 1):
            for strategy in args.strategies.split(","):
                for schedule in args.schedules.split(","):
                    results.append(run_one(args.data, size, seed, strategy, schedule, args.output_dir))
                    print(json.dumps(results[-1]), file=sys.stderr, flush=True)
                    (args.output_dir / "results.json").write_text(json.dumps(results, indent=1))
    print(f"CPU: {results[0]['cpu']}, precision {results[0]['precision']}\n")
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
