"""Group-wise adaptation: one global model, then one specialised model (or LoRA adapter) per group.

    hf-adapt groupwise recipes/minilm_amazon_groupwise.yaml --report runs/amazon_groupwise

The recipe names the group column (`data.group_column`) and, in its `groupwise` section, the
groups, a per-group training subset and the stage-2 epochs and learning rate. Into the report
directory go:

    data/all, data/GROUP    the exact rows of every run (JSONL): train and validation; test.jsonl
                            holds the rows of the report's test matrix
    global/                 stage 1: trained on every group
    pretrained-GROUP/       per group, from the pretrained model (no sharing between groups)
    global-GROUP/           per group, from the stage-1 model (global → per group); with LoRA a
                            fresh adapter over the merged stage-1 model, saved alone
    report.md/json/png      every model's accuracy on every group's test split

Both per-group variants use the same data, seed and stage-2 hyperparameters, so they differ only
in where they start.
"""

from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, concatenate_datasets

from hf_adapt.config import RecipeConfig, config_from_dict, load_recipe
from hf_adapt.data import TaskData, load_task_data, split_by_group
from hf_adapt.errors import HfAdaptError, say
from hf_adapt.reports import (
    check_report_dir,
    fmt,
    markdown_table,
    new_figure,
    safe_name,
    train_report_run,
    write_report,
)

KINDS = ("global", "pretrained", "global_to_group")
KIND_TITLES = {"global": "global", "pretrained": "per-group from pretrained", "global_to_group": "global → per-group"}


@dataclass
class GroupRun:
    """One model of the experiment: which kind, for which group, and its recipe."""

    name: str  # directory name: global, pretrained-GROUP, global-GROUP
    kind: str  # one of KINDS
    group: str | None  # None for the global model
    config: RecipeConfig


# ---------------------------------------------------------------------------------------------
# Planning: the data files and the recipe of every run


def plan_stage1(config: RecipeConfig, report_dir: Path, *, overwrite: bool = False) -> GroupRun:
    """The global run: every group's training rows, into DIR/global."""
    return GroupRun("global", "global", None, stage_config(config, report_dir / "data" / "all",
                                                           (report_dir / "global").resolve(), stage=1,
                                                           overwrite=overwrite))


def plan_stage2(config: RecipeConfig, report_dir: Path, groups: list[str], stage1: GroupRun, *,
                overwrite: bool = False) -> list[GroupRun]:
    """Per group: from the pretrained model, then from the (finished) stage-1 model."""
    global_dir = Path(stage1.config.train.output_dir)
    runs = []
    for group in groups:
        data_dir = report_dir / "data" / safe_name(group)
        for kind, prefix, start in (("pretrained", "pretrained", None), ("global_to_group", "global", global_dir)):
            name = f"{prefix}-{safe_name(group)}"
            run_config = stage_config(config, data_dir, report_dir / name, stage=2, start_from=start,
                                      overwrite=overwrite)
            runs.append(GroupRun(name, kind, group, run_config))
    return runs


def stage_config(config: RecipeConfig, data_dir: Path, output_dir: Path, *, stage: int,
                 start_from: Path | None = None, overwrite: bool = False) -> RecipeConfig:
    """The recipe of one run: `config` trained on the files in `data_dir`, into `output_dir`.

    Args:
        stage (`int`): 1 (every group) or 2 (one group: `groupwise.stage2_*` apply).
        start_from (`Path`, *optional*): a stage-1 output directory to start from instead of the
            pretrained model, head included (`model.init_from`; with LoRA it is the base model of
            the new adapter).
    """
    raw = config.to_dict()
    # No test file: the report's matrix tests every model on every group once; a run's own test
    # pass would repeat part of that work (which dominates the cost on CPU).
    raw["data"].update(train_file=str(data_dir / "train.jsonl"), validation_file=str(data_dir / "validation.jsonl"),
                       test_file=None, dataset=None, dataset_config=None, text_column="text", label_column="label",
                       text_pair_column=None, group_column=None, max_train_samples=None, max_eval_samples=None)
    raw["groupwise"] = {}  # each run is a plain run
    raw["hub"]["push"] = False  # every run would push to the same repo
    raw["train"].update(output_dir=str(output_dir), overwrite=overwrite)
    g = config.groupwise
    if stage == 2:
        raw["train"]["epochs"] = g.stage2_epochs or raw["train"]["epochs"]
        raw["optim"]["learning_rate"] = g.stage2_learning_rate or raw["optim"]["learning_rate"]
    if config.adapt.strategy == "lora":
        # Stage 1 is saved merged, so that stage 2 can put a fresh adapter on it as its base model;
        # stage 2 saves that adapter alone (the shared stage-1 base is not copied per group).
        raw["adapt"]["merge_lora"] = stage == 1
        if start_from is not None:
            raw["model"]["name_or_path"] = str(start_from)
    elif start_from is not None:
        raw["model"]["init_from"] = str(start_from)  # every weight, the head included, starts from stage 1
    return config_from_dict(raw, source=f"{config.source} [{output_dir.name}]")


def load_groups(config: RecipeConfig) -> tuple[TaskData, dict[str, TaskData]]:
    """(stage-1 data: every group, the selected groups' data), the per-group subsets applied."""
    if not config.data.group_column:
        raise HfAdaptError(f"{config.source}: hf-adapt groupwise needs data.group_column, the column naming "
                           f"each row's group")
    if config.data.text_pair_column:
        raise HfAdaptError(f"{config.source}: hf-adapt groupwise does not support text pairs yet "
                           f"(data.text_pair_column is set)")
    g, seed = config.groupwise, config.train.seed
    if config.data.streaming:
        raise HfAdaptError("hf-adapt groupwise splits the training rows by group, which a stream cannot; set "
                           "data.streaming: false")
    task = load_task_data(config.data, seed=seed)
    if task.label_map.task != "single_label":
        raise HfAdaptError(f"{config.source}: hf-adapt groupwise compares accuracies, so it needs a classification "
                           f"task, and data.task resolved to {task.label_map.task}")
    every = split_by_group(task, max_train_per_group=g.max_train_per_group, seed=seed)
    selected = every
    if g.groups:
        selected = split_by_group(task, g.groups, max_train_per_group=g.max_train_per_group, seed=seed)
    train = concatenate_datasets([data.splits["train"] for data in every.values()])
    everything = TaskData(DatasetDict({**task.splits, "train": train}), task.label_map, task.sources)
    return everything, selected


def write_data(task: TaskData, directory: Path) -> None:
    """Write the splits as JSONL (exact strings: no CSV 'NA'-as-missing surprises)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, split in task.splits.items():
        split.to_json(directory / f"{name}.jsonl", lines=True, force_ascii=False)


# ---------------------------------------------------------------------------------------------
# Running and evaluating


def run_groupwise(config: RecipeConfig, report_dir: str | Path, *, overwrite: bool = False,
                  reuse: bool = False) -> dict[str, Any]:
    """Train the global and per-group models, evaluate all on every group, write the report.

    Args:
        config (`RecipeConfig`): a recipe with `data.group_column` (and optionally `groupwise`).
        report_dir (`str` or `Path`): where the runs, the data subsets and the report go.
        overwrite (`bool`, defaults to `False`): replace runs already in `report_dir`.
        reuse (`bool`, defaults to `False`): keep finished runs of the same recipe (an interrupted
            report resumes where it stopped).

    Returns:
        `dict`: what `report.json` holds.
    """
    report_dir = Path(report_dir)
    check_report_dir(report_dir, overwrite=overwrite, reuse=reuse)
    everything, selected = load_groups(config)
    write_data(everything, report_dir / "data" / "all")
    for group, data in selected.items():
        write_data(data, report_dir / "data" / safe_name(group))
    stage1 = plan_stage1(config, report_dir, overwrite=overwrite)
    results = {stage1.name: train_run(stage1, report_dir, reuse=reuse)}
    # Planned only now: `model.init_from` must name a finished run when the recipe is validated.
    stage2 = plan_stage2(config, report_dir, list(selected), stage1, overwrite=overwrite)
    for run in stage2:
        results[run.name] = train_run(run, report_dir, reuse=reuse)
    eval_split = "test" if "test" in everything.splits else "validation"
    matrix = evaluate_matrix({run.name: Path(run.config.train.output_dir) for run in (stage1, *stage2)},
                             {group: data.splits[eval_split] for group, data in selected.items()},
                             max_length=config.model.max_length, batch_size=config.train.eval_batch_size)
    data = build_report_data(config, stage1, stage2, results, matrix, selected, eval_split)
    paths = write_report(report_dir, render_markdown(data), data, render_figure(data))
    say(f"groupwise report: {paths['report.md']}")
    return data


def train_run(run: GroupRun, report_dir: Path, *, reuse: bool) -> dict[str, Any]:
    """Train one run in a child process (or reuse its finished output); metrics.json + process stats."""
    return train_report_run(run.config, report_dir / "recipes" / f"{run.name}.yaml",
                            f"run '{run.name}' of hf-adapt groupwise ({KIND_TITLES[run.kind]})", reuse=reuse)


def evaluate_matrix(model_dirs: dict[str, Path], groups: dict[str, Dataset], *, max_length: int,
                    batch_size: int) -> dict[str, dict[str, dict[str, float]]]:
    """model -> group -> metrics: every model on every group's split (one pass per model)."""
    from hf_adapt.inference import predict_label_ids
    from hf_adapt.metrics import compute_classification_metrics
    from hf_adapt.modeling import load_trained

    texts = [text for split in groups.values() for text in split["text"]]
    matrix: dict[str, dict[str, dict[str, float]]] = {}
    for name, directory in model_dirs.items():
        say(f"groupwise: evaluating {name} on {len(groups)} groups ({len(texts)} rows)")
        model, tokenizer = load_trained(directory)
        ids, _ = predict_label_ids(model, tokenizer, texts, batch_size=batch_size, max_length=max_length)
        label2id = {label: i for i, label in model.config.id2label.items()}
        matrix[name], start = {}, 0
        for group, split in groups.items():
            references = [label2id[label] for label in split["label"]]
            predictions = ids[start:start + len(split)].numpy()
            matrix[name][group] = compute_classification_metrics(predictions, references, model.config.id2label)
            start += len(split)
    return matrix


# ---------------------------------------------------------------------------------------------
# The report


def build_report_data(config: RecipeConfig, stage1: GroupRun, stage2: list[GroupRun], results: dict[str, Any],
                      matrix: dict[str, dict[str, dict[str, float]]], groups: dict[str, TaskData],
                      eval_split: str) -> dict[str, Any]:
    """Everything report.json holds: the models, the accuracy matrix, the per-group summary, costs."""
    models = {run.name: {"kind": run.kind, "group": run.group, "output_dir": run.config.train.output_dir,
                         "train_s": results[run.name]["timings"]["train_s"],
                         # rows x epochs: a cost that, unlike seconds, does not depend on the machine's load
                         "train_examples": round(results[run.name]["data"]["rows"]["train"]
                                                 * results[run.name]["train"]["epochs"]),
                         "trainable_params": results[run.name]["params"]["trainable"],
                         "peak_rss_mib": results[run.name].get("process", {}).get("peak_rss_mib")}
              for run in (stage1, *stage2)}
    accuracy = {name: {group: m["accuracy"] for group, m in row.items()} for name, row in matrix.items()}
    summary = {}
    for group in groups:
        by_kind = {"global": accuracy[stage1.name][group]}
        by_kind.update({run.kind: accuracy[run.name][group] for run in stage2 if run.group == group})
        summary[group] = {**by_kind, "best": max(KINDS, key=lambda k: by_kind[k])}
    cost = {kind: round(sum(m["train_s"] for m in models.values() if m["kind"] == kind), 2) for kind in KINDS}
    examples = {kind: sum(m["train_examples"] for m in models.values() if m["kind"] == kind) for kind in KINDS}
    data = {
        "recipe": config.source,
        "strategy": config.adapt.strategy,
        "base_model": config.model.name_or_path,
        "eval_split": eval_split,
        "groups": list(groups),
        "rows": {split: {g: len(d.splits[split]) for g, d in groups.items()} for split in ("train", eval_split)},
        "settings": {"seed": config.train.seed, "stage1_epochs": config.train.epochs,
                     "stage2_epochs": config.groupwise.stage2_epochs or config.train.epochs,
                     "learning_rate": config.optim.learning_rate,
                     "stage2_learning_rate": config.groupwise.stage2_learning_rate or config.optim.learning_rate,
                     "max_train_per_group": config.groupwise.max_train_per_group,
                     "max_length": config.model.max_length,
                     "stage1_train_rows": results[stage1.name]["data"]["rows"]["train"]},
        "models": models,
        "accuracy": accuracy,
        "macro_f1": {name: {group: m["macro_f1"] for group, m in row.items()} for name, row in matrix.items()},
        "summary": summary,
        "train_seconds": cost,
        "train_examples": examples,
    }
    data["other_groups"] = other_group_accuracy(data)
    data["reading"] = build_reading(data)
    return data


def other_group_accuracy(data: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per specialised model: mean accuracy on the groups it was not trained on, and the global
    model's mean on those same groups (to see what specialising cost elsewhere)."""
    out = {}
    for name, model in data["models"].items():
        others = [g for g in data["groups"] if g != model["group"]]
        if model["group"] is None or not others:
            continue
        out[name] = {"mean_other": statistics.fmean(data["accuracy"][name][g] for g in others),
                     "global_on_same": statistics.fmean(data["accuracy"]["global"][g] for g in others)}
    return out


def build_reading(data: dict[str, Any]) -> list[str]:
    """Plain-language sentences from the numbers: who wins per group, by how much, at what cost."""
    lines = []
    for group, row in data["summary"].items():
        top = row[row["best"]]
        winners = [k for k in KINDS if top - row[k] < 5e-4]  # equal accuracy on the same rows: a tie
        rest = ", ".join(f"{_points(top - row[k])} over {KIND_TITLES[k]}" for k in KINDS if k not in winners)
        verdict = (f"{KIND_TITLES[winners[0]]} is best" if len(winners) == 1 else
                   " and ".join(KIND_TITLES[k] for k in winners) + " tie for best")
        lines.append(f"**{group}**: {verdict} ({top:.3f})" + (f", {rest}." if rest else "."))
    means = {k: statistics.fmean(row[k] for row in data["summary"].values()) for k in KINDS}
    lines.append("Averaged over the groups: " + ", ".join(f"{KIND_TITLES[k]} {means[k]:.3f}" for k in KINDS) + ".")
    rows = statistics.fmean(data["rows"][data["eval_split"]].values())
    error = math.sqrt(means["global"] * (1 - means["global"]) / rows)
    lines.append(f"With about {rows:.0f} {data['eval_split']} rows per group, one standard error of an accuracy is "
                 f"about {100 * error:.1f} points, so per-group gaps of a few points are within noise; the averages "
                 f"over groups are steadier.")
    for kind in ("pretrained", "global_to_group"):
        rows = [v for name, v in data["other_groups"].items() if data["models"][name]["kind"] == kind]
        if rows:
            mine = statistics.fmean(r["mean_other"] for r in rows)
            ref = statistics.fmean(r["global_on_same"] for r in rows)
            lines.append(f"On the groups they were not specialised for, {KIND_TITLES[kind]} models score "
                         f"{mine:.3f} on average, {_points(mine - ref)} vs the global model on the same groups.")
    s, n = data["train_seconds"], data["train_examples"]
    lines.append(f"Training cost in examples processed (rows × epochs) and seconds: global {n['global']:,} "
                 f"({s['global']:.0f} s); the per-group models from pretrained {n['pretrained']:,} in all "
                 f"({s['pretrained']:.0f} s); global → per-group {n['global_to_group']:,} "
                 f"({s['global_to_group']:.0f} s) on top of the global model, so "
                 f"{n['global'] + n['global_to_group']:,} for both stages.")
    return lines


def _points(delta: float) -> str:
    """An accuracy difference in percentage points, signed."""
    return f"{100 * delta:+.1f} points"


def _epochs(n: float | None) -> str:
    if n is None:  # train.epochs unset: each run planned its own (hf_adapt.schedule; its metrics.json says)
        return "the epochs planned from each run's rows"
    return f"{n:g} epoch" + ("" if n == 1 else "s")


def render_markdown(data: dict[str, Any]) -> str:
    groups, split = data["groups"], data["eval_split"]
    s = data["settings"]
    per_group = [[g, data["rows"][split][g], fmt(row["global"]), fmt(row["pretrained"]),
                  fmt(row["global_to_group"]), KIND_TITLES[row["best"]]] for g, row in data["summary"].items()]
    matrix_rows = []
    for name, model in data["models"].items():
        cells = [f"**{fmt(data['accuracy'][name][g])}**" if g == model["group"] else fmt(data["accuracy"][name][g])
                 for g in groups]
        other = data["other_groups"].get(name, {}).get("mean_other")
        matrix_rows.append([name, *cells, fmt(other), f"{model['train_examples']:,}", fmt(model["train_s"], ".0f"),
                            fmt(model.get("peak_rss_mib"), ".0f")])
    return "\n\n".join([
        "# Group-wise adaptation report",
        f"Recipe `{data['recipe']}` ({data['strategy']}, base `{data['base_model']}`), seed {s['seed']}, "
        f"max_length {s['max_length']}. Stage 1: {_epochs(s['stage1_epochs'])} at lr {s['learning_rate']:g} on "
        f"every group; stage 2: {_epochs(s['stage2_epochs'])} at lr {s['stage2_learning_rate']:g} per group "
        f"({s['max_train_per_group'] or 'all'} training rows per group). Accuracy on the {split} split of each group.",
        f"## Per group ({split} accuracy)",
        markdown_table(["group", f"{split} rows", KIND_TITLES["global"], KIND_TITLES["pretrained"],
                        KIND_TITLES["global_to_group"], "best"], per_group, numeric={1, 2, 3, 4}),
        "## Reading",
        "\n".join(f"- {line}" for line in data["reading"]),
        f"## Every model on every group ({split} accuracy; bold = the model's own group)",
        markdown_table(["model", *groups, "mean on other groups", "train examples", "train s", "peak RSS MiB"],
                       matrix_rows),
        "![group-wise accuracy](report.png)",
        "## Notes",
        f"- Rows per group: train {', '.join(f'{g} {n}' for g, n in data['rows']['train'].items())}; "
        f"stage 1 trains on all of them ({s['stage1_train_rows']:,} rows).\n"
        "- train s: wall time of a run up to the end of training (loading data and model included); on a "
        "shared machine it varies with the load, so compare it only roughly. peak RSS MiB: the run's own process "
        "(each run trains in one), as `hf-adapt compare` measures it.\n"
        f"- Each run's exact recipe is in `recipes/` (`hf-adapt train recipes/NAME.yaml` reruns it).\n"
        f"- Each run's files are in its directory beside this report; `data/` holds the exact rows.",
    ])


def render_figure(data: dict[str, Any]) -> Any:
    """Left: per-group accuracy of the three approaches. Right: every model on every group."""
    import numpy as np

    groups, names = data["groups"], list(data["models"])
    fig, (bars, heat) = new_figure(1, 2, figsize=(14, 5.2), gridspec_kw={"width_ratios": [1, 1.15]})
    colors = {"global": "#9e9e9e", "pretrained": "#8ab6e6", "global_to_group": "#1f5fa8"}
    x, width = np.arange(len(groups)), 0.26
    for i, kind in enumerate(KINDS):
        values = [data["summary"][g][kind] for g in groups]
        drawn = bars.bar(x + (i - 1) * width, values, width, label=KIND_TITLES[kind], color=colors[kind])
        bars.bar_label(drawn, labels=[f"{v:.2f}" for v in values], fontsize=7, padding=2)
    low = min(data["summary"][g][k] for g in groups for k in KINDS)
    bars.set(xticks=x, xticklabels=groups, ylim=(max(0.0, low - 0.08), 1.0), ylabel=f"{data['eval_split']} accuracy",
             title="Per group: which starting point wins")
    bars.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3, frameon=False, fontsize=9)
    values = np.array([[data["accuracy"][n][g] for g in groups] for n in names])
    image = heat.imshow(values, cmap="viridis", aspect="auto", vmin=values.min(), vmax=values.max())
    for r, name in enumerate(names):
        for c, group in enumerate(groups):
            own = data["models"][name]["group"] == group
            heat.text(c, r, f"{values[r, c]:.3f}", ha="center", va="center", fontsize=8,
                      fontweight="bold" if own else "normal",
                      color="black" if values[r, c] > values.min() + 0.6 * np.ptp(values) else "white")
    heat.set(xticks=range(len(groups)), xticklabels=groups, yticks=range(len(names)), yticklabels=names,
             xlabel="evaluated on", title="Every model on every group (bold: own group)")
    fig.colorbar(image, ax=heat, fraction=0.04)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Command line


def run_cli(args: argparse.Namespace) -> int:
    config = load_recipe(args.recipe, list(args.overrides))
    run_groupwise(config, args.report, overwrite=args.overwrite, reuse=args.reuse)
    return 0
