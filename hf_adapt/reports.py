"""Report directories: several runs of one experiment, and one Markdown + JSON + PNG report on them.

`hf-adapt groupwise` and `hf-adapt compare` both train a handful of runs into subdirectories of a
report directory and then write `report.md`, `report.json` and `report.png` beside them. This
module holds what they share: their common command-line arguments, refusing (or reusing) existing
runs, the child process each run trains in (so its peak memory is its own: one rule for measuring
it), Markdown tables, and writing the report files atomically, so a report directory never holds
a half-written report.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from hf_adapt.config import RecipeConfig
from hf_adapt.errors import HfAdaptError, say

# Keys that say how to run, not what is trained: a finished run differing only there is reusable.
RUN_CONTROL_KEYS = (("train", "overwrite"), ("train", "resume"))


def add_report_arguments(parser: argparse.ArgumentParser, *, recipe_help: str, overrides_help: str) -> None:
    """The arguments of every report command: the recipe, its overrides and the report directory."""
    parser.add_argument("recipe", help=recipe_help)
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help=overrides_help)
    parser.add_argument("--report", required=True, metavar="DIR", help="Directory for the runs and the report.")
    parser.add_argument("--overwrite", action="store_true", help="Replace runs already in DIR.")
    parser.add_argument("--reuse", action="store_true",
                        help="Keep finished runs of the same recipe in DIR; continue interrupted ones from their "
                             "last checkpoint.")


def check_report_dir(directory: Path, *, overwrite: bool, reuse: bool) -> None:
    """Refuse a non-empty report directory unless its runs may be replaced or reused."""
    if directory.exists() and not directory.is_dir():
        raise HfAdaptError(f"--report {directory} is a file; give a directory")
    if directory.is_dir() and any(directory.iterdir()) and not (overwrite or reuse):
        raise HfAdaptError(f"--report {directory} already exists and is not empty; choose another directory, "
                           f"pass --reuse to keep its finished runs of the same recipes, or --overwrite")


def finished_run(config: RecipeConfig, *, reuse: bool) -> dict[str, Any] | None:
    """The `metrics.json` of a finished run of this very recipe in `train.output_dir`, if reusable.

    Returns `None` when the run must be trained. With `reuse`, a finished run whose `recipe.yaml`
    differs from `config` is an error (rather than silently reporting on other settings).
    """
    output_dir = Path(config.train.output_dir)
    metrics, recipe = output_dir / "metrics.json", output_dir / "recipe.yaml"
    if not (reuse and metrics.is_file() and recipe.is_file()):
        return None
    if _comparable(yaml.safe_load(recipe.read_text(encoding="utf-8"))) != _comparable(config.to_dict()):
        if config.train.overwrite:
            return None
        raise HfAdaptError(f"{output_dir} holds a run of a different recipe than this one; pass --overwrite "
                           f"to retrain it, or choose another --report directory")
    say(f"reusing the finished run in {output_dir}")
    return json.loads(metrics.read_text(encoding="utf-8"))


def resume_if_interrupted(config: RecipeConfig, *, reuse: bool) -> RecipeConfig:
    """With `reuse`, a run that was interrupted after a complete checkpoint continues from it."""
    from hf_adapt.outputs import RunPaths, last_complete_checkpoint

    work_dir = RunPaths.of(config.train.output_dir).work_dir
    if not reuse or config.train.overwrite or last_complete_checkpoint(work_dir) is None:
        return config
    return dataclasses.replace(config, train=dataclasses.replace(config.train, resume=True))


# ---------------------------------------------------------------------------------------------
# One run, one process


def train_report_run(config: RecipeConfig, recipe_path: Path, origin: str, *, reuse: bool) -> dict[str, Any]:
    """Train one run of a report in its own process, or reuse its finished run: the run's
    `metrics.json`, with the process's figures (`run_child`) under `"process"`.

    Args:
        config (`RecipeConfig`): the run's recipe; it is saved to `recipe_path` first.
        origin (`str`): what the run is, for the recipe's header and the messages.
        reuse (`bool`): keep a finished run of the same recipe; continue an interrupted one.
    """
    stats_path = recipe_path.with_suffix(".process.json")
    finished = finished_run(config, reuse=reuse)
    if finished is not None:
        stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
        return {**finished, "process": stats}
    write_run_recipe(recipe_path, config, origin)
    say(f"training {origin}")
    resume = resume_if_interrupted(config, reuse=reuse).train.resume
    stats = train_in_child(recipe_path, ["train.resume=true"] if resume else [])
    if stats["returncode"] != 0:
        raise HfAdaptError(f"{origin} failed (exit status {stats['returncode']}; its output is above); its recipe "
                           f"is {recipe_path}")
    stats_path.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    metrics = Path(config.train.output_dir) / "metrics.json"
    return {**json.loads(metrics.read_text(encoding="utf-8")), "process": stats}


def write_run_recipe(path: Path, config: RecipeConfig, origin: str) -> Path:
    """Save a run's exact recipe (re-runnable with `hf-adapt train`) before it trains."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {origin}. Re-run with:\n#   hf-adapt train {path} train.output_dir=NEW_DIR\n"
                    + config.to_yaml(), encoding="utf-8")
    return path


def run_child(command: list[str], *, log_path: Path | None = None,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `command` to its end: its exit status, wall time and peak RSS in MiB, this child's own
    (wait4; RUSAGE_CHILDREN would give the largest of all children so far). Its output goes to
    `log_path`, or to this process's."""
    started = time.perf_counter()
    log = log_path.open("w") if log_path else None
    try:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT if log else None, env=env)
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
    finally:
        if log is not None:
            log.close()
    to_bytes = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {"returncode": os.waitstatus_to_exitcode(status), "wall_s": round(time.perf_counter() - started, 2),
            "peak_rss_mib": round(usage.ru_maxrss * to_bytes / 2**20, 1)}


def train_in_child(recipe_path: Path, overrides: list[str]) -> dict[str, Any]:
    """Train one recipe file in its own process (`python -m hf_adapt.reports`): `run_child`'s
    figures, plus the peak CUDA memory on a GPU."""
    cuda_path = recipe_path.with_suffix(".cuda.json")
    stats = run_child([sys.executable, "-m", "hf_adapt.reports", str(recipe_path), str(cuda_path), *overrides])
    cuda = json.loads(cuda_path.read_text()) if cuda_path.is_file() else {}
    cuda_path.unlink(missing_ok=True)
    return {**stats, **cuda}


def child_main(recipe_path: str, cuda_path: str, *overrides: str) -> int:
    """The child process: train one recipe; on a GPU, also record its peak CUDA memory."""
    import torch

    from hf_adapt.config import load_recipe
    from hf_adapt.recipes import RECIPES

    try:
        config = load_recipe(recipe_path, list(overrides))
        RECIPES[config.adapt.strategy].run(config)
    except HfAdaptError as err:
        print(f"hf-adapt: error: {err}", file=sys.stderr)
        return err.exit_code
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**20
        Path(cuda_path).write_text(json.dumps({"cuda_peak_mib": round(peak, 1)}) + "\n", encoding="utf-8")
    return 0


def _comparable(recipe: dict[str, Any]) -> dict[str, Any]:
    recipe = yaml.safe_load(yaml.safe_dump(recipe))  # same types as a recipe.yaml read back
    for section, key in RUN_CONTROL_KEYS:
        recipe.get(section, {}).pop(key, None)
    return recipe


def safe_name(name: str) -> str:
    """A directory-safe form of a group or variant name ('Home & Kitchen' -> 'Home_Kitchen')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "unnamed"


# ---------------------------------------------------------------------------------------------
# Rendering


def fmt(value: Any, spec: str = ".3f") -> str:
    """A table cell: numbers with `spec`, missing values (None, NaN) as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)


def markdown_table(headers: list[str], rows: list[list[Any]], *, numeric: set[int] | None = None) -> str:
    """A GitHub Markdown table; columns listed in `numeric` (indices) are right-aligned."""
    numeric = numeric if numeric is not None else set(range(1, len(headers)))
    rule = ["---:" if i in numeric else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def human_count(n: int) -> str:
    """22,713,218 -> '22.7M'; 1,538 -> '1.5k'."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.1f}{suffix}"
    return str(n)


def new_figure(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """`plt.subplots` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def write_report(directory: Path, markdown: str, data: dict[str, Any], figure: Any, *,
                 stem: str = "report") -> dict[str, Path]:
    """Write STEM.md, STEM.json and STEM.png (`report.*` by default) into `directory`, each by an
    atomic rename; returns their paths by file name."""
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    names = [f"{stem}{suffix}" for suffix in (".md", ".json", ".png")]
    paths = {name: directory / name for name in names}
    staged = {name: directory / f".{name}.tmp-{os.getpid()}" for name in names}
    try:
        staged[names[0]].write_text(markdown.rstrip() + "\n", encoding="utf-8")
        staged[names[1]].write_text(json.dumps(_json_ready(data), indent=2) + "\n", encoding="utf-8")
        figure.savefig(staged[names[2]], dpi=120, bbox_inches="tight", format="png")
        for name in names:
            os.replace(staged[name], paths[name])
    finally:
        plt.close(figure)
        for path in staged.values():
            path.unlink(missing_ok=True)
    return paths


def _json_ready(value: Any) -> Any:
    """NaN -> None (JSON has no NaN), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


if __name__ == "__main__":  # the child process of `train_in_child`
    sys.exit(child_main(*sys.argv[1:]))
