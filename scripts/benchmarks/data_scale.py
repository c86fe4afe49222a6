"""What data costs as it grows (issue 16): start-up (load + check + tokenize) and peak memory of
`hf-adapt train` with `train.max_steps=5`, on synthetic 3-class CSVs of 20-word texts.

    python scripts/benchmarks/data_scale.py --rows 10000,1000000 --output-dir runs/data_scale

For each size it writes `synthetic_N.csv` once (kept for later runs), then, each in a fresh process:
- `startup`: `load_task_data` + `tokenize_splits` twice in a row on a cold cache (the second run
  reuses the first's cached Arrow files), with each phase's seconds and the process's peak RSS;
- `train`: `hf-adapt train` on the embedded MiniLM, full strategy, 5 optimizer steps, validation
  capped at 1,000 rows, no test file: wall seconds, and the main process's peak resident and
  anonymous memory (polled) and its tokenizing workers' anonymous memory together;
- `stream`: the same with `data.streaming=true` (validation: 1,000 rows of their own file).
The cache lives in OUTPUT_DIR/cache (`HF_ADAPT_CACHE`), emptied before each phase.
Prints one table; name the CPU beside it (the script prints `lscpu`'s model name).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

WORDS = ("good bad fine great awful movie film plot actor scene music story slow fast funny sad long short "
         "bright dark warm cold happy angry quiet loud simple clever dull sharp soft hard fresh stale").split()
LABELS = ("positive", "negative", "neutral")


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    """`rows` rows of 20 random words and one of three labels; written to a temporary name, then renamed."""
    rng = random.Random(seed)
    partial = path.with_suffix(".partial")
    with partial.open("w", encoding="utf-8") as f:
        f.write("text,label\n")
        for _ in range(rows):
            f.write(" ".join(rng.choices(WORDS, k=20)) + "," + rng.choice(LABELS) + "\n")
    partial.rename(path)


def recipe_file(directory: Path) -> Path:
    """A user's minimal recipe: the embedded default model, full fine-tuning, everything else default."""
    path = directory / "recipe.yaml"
    path.write_text("adapt:\n  strategy: full\n")
    return path


def startup(csv: Path) -> dict:
    """In this process: load + check + tokenize, twice (cold cache, then warm)."""
    from hf_adapt.config import load_recipe
    from hf_adapt.data import load_task_data, tokenize_splits
    from hf_adapt.modeling import load_tokenizer

    config = load_recipe(recipe_file(csv.parent), [f"data.train_file={csv}"])
    tokenizer = load_tokenizer(config.model)
    result = {}
    for run in ("first", "second"):
        started = time.perf_counter()
        task = load_task_data(config.data)
        loaded = time.perf_counter()
        encoded = tokenize_splits(task.splits, tokenizer, task.label_map, config.model.max_length)
        done = time.perf_counter()
        result[run] = {"load_check_s": round(loaded - started, 1), "tokenize_s": round(done - loaded, 1),
                       "total_s": round(done - started, 1), "train_rows": len(encoded["train"])}
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    result["children_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    return result


def train(csv: Path, output: Path, *extra: str) -> dict:
    """`hf-adapt train` for 5 steps, its memory read from /proc every 0.2 s: resident (VmRSS, which
    counts the pages of memory-mapped Arrow files it has read, clean page cache the kernel can drop)
    and anonymous (RssAnon: the memory the process itself holds), for the main process and for the
    tokenizing workers together."""
    command = ["hf-adapt", "train", str(recipe_file(csv.parent)), f"data.train_file={csv}", "train.max_steps=5",
               "data.max_eval_samples=1000", f"train.output_dir={output}", *extra, "--overwrite"]
    started = time.perf_counter()
    log = output.parent / f"{csv.stem}.{'stream' if extra else 'train'}.log"  # a pipe would fill and block the run
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("w"), text=True)
    peaks = {"rss_mb": 0, "anon_mb": 0, "workers_anon_mb": 0}
    while process.poll() is None:
        main_memory = _memory(process.pid)
        workers = [_memory(child) for child in _children(process.pid)]
        peaks["rss_mb"] = max(peaks["rss_mb"], main_memory["VmRSS"])
        peaks["anon_mb"] = max(peaks["anon_mb"], main_memory["RssAnon"])
        peaks["workers_anon_mb"] = max(peaks["workers_anon_mb"], sum(w["RssAnon"] for w in workers))
        time.sleep(0.2)
    wall = time.perf_counter() - started
    if process.returncode:
        raise SystemExit(f"hf-adapt train failed on {csv}:\n{log.read_text()[-2000:]}")
    return {"wall_s": round(wall, 1), **peaks}


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and RssAnon of a process in MB (0 once it has gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {"VmRSS": 0, "RssAnon": 0}
    values = {line.split(":")[0]: line.split()[1] for line in lines if line.startswith(("VmRSS", "RssAnon"))}
    return {key: int(values.get(key, 0)) // 1024 for key in ("VmRSS", "RssAnon")}


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                for c in (task / "children").read_text().split()]
    except OSError:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="10000,100000,1000000", help="comma-separated sizes")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/data_scale"))
    parser.add_argument("--phases", default="startup,train", help="comma-separated: startup, train, stream")
    parser.add_argument("--phase", help=argparse.SUPPRESS)  # internal: run one phase in this process
    parser.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:  # one measurement, in a fresh process
        if args.phase == "stream":  # the training file as a stream; validation from a small file of its own
            validation = args.output_dir / "synthetic_validation.csv"
            if not validation.exists():
                write_csv(validation, 1000, seed=1)
            outcome = train(args.csv, args.output_dir / "run", "data.streaming=true", f"data.validation_file={validation}")
        else:
            outcome = startup(args.csv) if args.phase == "startup" else train(args.csv, args.output_dir / "run")
        print(json.dumps(outcome))
        return
    args.output_dir.mkdir(parents=True, exist_ok=True)
    cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"], capture_output=True, text=True).stdout
    print(f"CPU: {cpu.strip()} ({os.cpu_count()} cores)")
    rows_done = []
    for rows in [int(float(r)) for r in args.rows.split(",")]:
        csv = args.output_dir / f"synthetic_{rows}.csv"
        if not csv.exists():
            write_csv(csv, rows)
        cache = args.output_dir / "cache"
        env = {**os.environ, "HF_ADAPT_CACHE": str(cache)}
        measured = {"rows": rows}
        for phase in args.phases.split(","):
            shutil.rmtree(cache, ignore_errors=True)  # each phase starts cold: reads and tokenizes the file
            out = subprocess.run([sys.executable, __file__, "--phase", phase, "--csv", str(csv), "--output-dir",
                                  str(args.output_dir)], env=env, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{phase} on {rows:,} rows failed:\n{out.stderr[-3000:]}")
            measured[phase] = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps({"rows": rows, phase: measured[phase]}), flush=True)
        rows_done.append(measured)
    (args.output_dir / "data_scale.json").write_text(json.dumps(rows_done, indent=2) + "\n")


if __name__ == "__main__":
    main()
