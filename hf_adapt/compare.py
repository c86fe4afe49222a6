"""Compare update strategies (or whole recipes) on the same data and seed, in one report.

    hf-adapt compare recipes/minilm_sst2_compare.yaml --strategies features,partial,lora,full,scratch \\
        --report runs/sst2_compare --probe ../shared/data/stsb/validation.csv
    hf-adapt compare recipes/minilm_sst2_full.yaml \\
        --strategies full,controlled=recipes/minilm_sst2_full_controlled.yaml --report runs/controls

Each variant is the recipe with its update strategy swapped (the strategies below), or another
recipe given as `NAME=PATH.yaml`; command-line overrides apply to every variant. A variant runs in
its own process, so its peak memory is its own. Into the report directory go `variants/NAME.yaml`
(the exact recipe: `hf-adapt train variants/NAME.yaml` reruns it), `NAME/` (the trained output),
and report.md, report.json and report.png: test metrics, training time, trainable parameters,
peak memory and retention on the probe, with a short reading of the result.

Strategies (a strategy other than the recipe's own starts from that strategy's defaults: its
`adapt` settings and learning rate; everything else is the recipe's):

    features  partial with the whole encoder frozen: only the head trains
    partial   embeddings and the lower half of the encoder layers frozen
    lora      LoRA adapters on the attention projections, head fully trained
    full      every weight trains
    scratch   full, from random weights of the same architecture (the "retrain" baseline)
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_adapt.config import (
    PRESETS,
    AdaptConfig,
    RecipeConfig,
    config_from_dict,
    load_recipe,
)
from hf_adapt.errors import HfAdaptError, say
from hf_adapt.reports import (
    check_report_dir,
    fmt,
    human_count,
    markdown_table,
    new_figure,
    safe_name,
    train_report_run,
    write_report,
)
from hf_adapt.schedule import recipe_kind

STRATEGY_VARIANTS = ("features", "partial", "lora", "full", "scratch")
# Keys that differ between variants by construction, not by choice: left out of "what differs".
OWN_KEYS = ("train.output_dir", "train.overwrite", "train.resume")


@dataclass
class Variant:
    """One arm of the comparison: its name, where it came from, and its full recipe."""

    name: str
    origin: str  # "strategy lora" or "recipe PATH"
    config: RecipeConfig


# ---------------------------------------------------------------------------------------------
# Building the variants


def variant_kind(config: RecipeConfig) -> str:
    """Which of STRATEGY_VARIANTS a recipe is (`partial` with a frozen encoder is `features`)."""
    kind = recipe_kind(config)
    return "scratch" if kind == "full" and config.model.from_scratch else kind


def strategy_settings(kind: str, base: RecipeConfig) -> tuple[dict[str, Any], float]:
    """The `adapt` section and learning rate a strategy variant starts from: its preset, with the
    `partial` variant freezing the lower half of the encoder layers besides the embeddings."""
    if kind == "scratch" and variant_kind(base) == "full":
        return {"strategy": "full"}, base.optim.learning_rate  # the full recipe, from random weights
    preset = PRESETS["full" if kind == "scratch" else kind]
    adapt = dict(preset["adapt"])
    if kind == "partial":
        adapt["freeze_layers"] = lower_half(base)
    return adapt, preset["optim"]["learning_rate"]


def _default_dropout(kind: str) -> float | None:
    """`model.dropout` as the strategy's preset sets it (LoRA: 0), else the checkpoint's (None)."""
    return PRESETS.get(kind, {}).get("model", {}).get("dropout")


def lower_half(config: RecipeConfig) -> int:
    """The `partial` variant's frozen layers: the lower half of the recipe's encoder."""
    return num_encoder_layers(config) // 2


def num_encoder_layers(config: RecipeConfig) -> int:
    """The encoder depth of the recipe's model, from its config.json (no weights loaded)."""
    from transformers import AutoConfig

    from hf_adapt.modeling import resolve_model_path

    source = config.model.init_from or resolve_model_path(config.model.name_or_path)
    layers = getattr(AutoConfig.from_pretrained(source, revision=config.model.revision), "num_hidden_layers", None)
    if not layers:
        raise HfAdaptError(f"{source}: its config names no num_hidden_layers, so the 'partial' variant cannot "
                           f"freeze the lower half; give a partial recipe as partial=PATH.yaml instead")
    return int(layers)


def check_classification(config: RecipeConfig) -> None:
    """The report compares accuracies: refuse a regression or multi-label task before any variant trains."""
    from hf_adapt.data import load_file, task_of

    d = config.data
    task = d.task
    if task == "auto" and d.train_file:
        train = load_file(d.train_file)
        if d.label_columns or d.label_column in train.column_names:
            task = task_of(train, d.train_file, d)
    if task in ("regression", "multi_label"):
        raise HfAdaptError(f"{config.source}: hf-adapt compare compares accuracies, so it needs a single-label "
                           f"task, and data.task is {task}; train the variants with hf-adapt train")


def build_variants(recipe: str | Path, overrides: list[str], specs: list[str], report_dir: Path, *,
                   probe: str | None = None, probe_max_rows: int | None = None,
                   overwrite: bool = False) -> tuple[RecipeConfig, list[Variant]]:
    """The base recipe (overrides and probe applied) and one validated recipe per variant spec."""
    base = load_recipe(recipe, overrides)
    check_classification(base)
    base = _with(base, {}, probe, probe_max_rows, source=base.source)
    variants, seen = [], set()
    for spec in specs:
        name, sep, path = spec.partition("=")
        name = name.strip()
        if name in seen or name != safe_name(name):
            raise HfAdaptError(f"--strategies: variant name {name!r} is repeated or not a plain name "
                               f"(letters, digits, '_', '-', '.')")
        seen.add(name)
        run_dir = str((report_dir / name).resolve())
        if sep:
            other = load_recipe(path.strip(), overrides)
            config = _with(other, {"train": {"output_dir": run_dir, "overwrite": overwrite}}, probe, probe_max_rows,
                           source=f"{path.strip()} [{name}]")
            variants.append(Variant(name, f"recipe {path.strip()}", config))
        elif name in STRATEGY_VARIANTS:
            changes: dict[str, dict[str, Any]] = {"train": {"output_dir": run_dir, "overwrite": overwrite}}
            if name != variant_kind(base):
                adapt, learning_rate = strategy_settings(name, base)
                changes.update(adapt={**dataclasses.asdict(AdaptConfig()), **adapt},
                               optim={"learning_rate": learning_rate},
                               model={"from_scratch": name == "scratch",
                                      "init_from": None if name == "scratch" else base.model.init_from,
                                      "dropout": _default_dropout(name)})
            config = _with(base, changes, None, None, source=f"{base.source} [{name}]")
            variants.append(Variant(name, f"strategy {name}", config))
        else:
            raise HfAdaptError(f"--strategies: unknown variant {spec!r}; use {', '.join(STRATEGY_VARIANTS)} or "
                               f"NAME=PATH.yaml")
    return base, variants


def _with(config: RecipeConfig, changes: dict[str, dict[str, Any]], probe: str | None, probe_max_rows: int | None,
          *, source: str) -> RecipeConfig:
    """`config` with section values replaced (and the probe set), validated again."""
    raw = config.to_dict()
    for section, values in changes.items():
        raw[section].update(values)
    if probe is not None:
        raw["forgetting"].update(probe=probe, max_rows=probe_max_rows)
    raw["hub"]["push"] = False  # variants are measurements, not releases
    return config_from_dict(raw, source=source)


def differences(base: RecipeConfig, config: RecipeConfig) -> list[str]:
    """`section.key: base → variant` for every setting where a variant departs from the base recipe."""
    flat_base, flat = _flatten(base.to_dict()), _flatten(config.to_dict())
    return [f"{key}: {flat_base.get(key)!r} → {flat[key]!r}" for key in flat
            if key not in OWN_KEYS and flat[key] != flat_base.get(key)]


def _flatten(raw: dict[str, Any]) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, values in raw.items() for key, value in values.items()}


# ---------------------------------------------------------------------------------------------
# Running: one process per variant, so that its peak memory is its own


def run_variant(variant: Variant, report_dir: Path, *, reuse: bool) -> dict[str, Any]:
    """Train one variant in a child process (or reuse its finished run); metrics.json + process stats."""
    return train_report_run(variant.config, report_dir / "variants" / f"{variant.name}.yaml",
                            f"variant '{variant.name}' of hf-adapt compare ({variant.origin})", reuse=reuse)


def run_compare(recipe: str | Path, specs: list[str], report_dir: str | Path, *, overrides: list[str] | None = None,
                probe: str | None = None, probe_max_rows: int | None = None, overwrite: bool = False,
                reuse: bool = False) -> dict[str, Any]:
    """Run every variant and write report.md, report.json and report.png into `report_dir`.

    Args:
        recipe (`str` or `Path`): the base recipe YAML.
        specs (`list[str]`): variants: names from `STRATEGY_VARIANTS`, or `NAME=PATH.yaml`.
        report_dir (`str` or `Path`): where the variants' recipes, runs and the report go.
        overrides (`list[str]`, *optional*): `section.key=value`, applied to every variant.
        probe (`str`, *optional*): an STS probe CSV measured at the end of every run (retention).
        probe_max_rows (`int`, *optional*): use only the first N probe rows.
        overwrite (`bool`, defaults to `False`): replace runs already in `report_dir`.
        reuse (`bool`, defaults to `False`): keep finished runs of the same recipe.

    Returns:
        `dict`: what `report.json` holds.
    """
    report_dir = Path(report_dir)
    if not specs:
        raise HfAdaptError("--strategies names no variant; e.g. --strategies features,partial,lora,full,scratch")
    check_report_dir(report_dir, overwrite=overwrite, reuse=reuse)
    base, variants = build_variants(recipe, overrides or [], specs, report_dir, probe=probe,
                                    probe_max_rows=probe_max_rows, overwrite=overwrite)
    results = {v.name: run_variant(v, report_dir, reuse=reuse) for v in variants}
    data = build_report_data(base, variants, results)
    paths = write_report(report_dir, render_markdown(data), data, render_figure(data))
    say(f"compare report: {paths['report.md']}")
    return data


# ---------------------------------------------------------------------------------------------
# The report


def build_report_data(base: RecipeConfig, variants: list[Variant], results: dict[str, Any]) -> dict[str, Any]:
    rows = {}
    for v in variants:
        result, forgetting = results[v.name], results[v.name].get("extra", {}).get("forgetting")
        rows[v.name] = {
            "origin": v.origin,
            "strategy": v.config.adapt.strategy,
            "output_dir": v.config.train.output_dir,
            "metrics": result["metrics"],
            "train_s": result["timings"]["train_s"],
            "params": result["params"],
            "process": result.get("process", {}),
            "forgetting": None if not forgetting else {k: forgetting.get(k) for k in
                                                       ("probe", "metric", "before", "after", "retention", "delta",
                                                        "num_probe_texts")},
            "differences": differences(base, v.config),
            "seed": v.config.train.seed,
            "data": dataclasses.asdict(v.config.data),
        }
    split = "test" if all("test" in r["metrics"] for r in rows.values()) else "validation"
    reference = "full" if "full" in rows else next(iter(rows))
    data = {"recipe": base.source, "base_model": base.model.name_or_path, "split": split, "reference": reference,
            "seed": base.train.seed, "train_rows": results[reference]["data"]["rows"].get("train"),
            "selection": "final" if base.train.eval_strategy == "no" else "best", "variants": rows}
    data["reading"] = build_reading(data)
    return data


def build_reading(data: dict[str, Any]) -> list[str]:
    """Plain-language sentences from the numbers, each variant against the reference."""
    rows, split, ref_name = data["variants"], data["split"], data["reference"]
    acc = {n: r["metrics"][split]["accuracy"] for n, r in rows.items()}
    best, fastest = max(acc, key=acc.get), min(rows, key=lambda n: rows[n]["train_s"])
    lines = [f"Best {split} accuracy: **{best}** ({acc[best]:.3f}). Fastest to train: **{fastest}** "
             f"({rows[fastest]['train_s']:.0f} s, {_points(acc[fastest] - acc[best])} from the best)."]
    ref = rows[ref_name]
    for name, row in rows.items():
        if name == ref_name:
            continue
        sentence = (f"**{name}** reached {acc[name] / acc[ref_name]:.1%} of {ref_name}'s {split} accuracy "
                    f"({acc[name]:.3f} vs {acc[ref_name]:.3f}, {_points(acc[name] - acc[ref_name])}")
        if split == "test" and "validation" in row["metrics"] and "validation" in ref["metrics"]:
            val = row["metrics"]["validation"]["accuracy"] - ref["metrics"]["validation"]["accuracy"]
            sentence += f"; validation {_points(val)}"
        sentence += (f") with {_share(row['params']['trainable'] / ref['params']['trainable'])} of its trainable "
                     f"parameters in {row['train_s'] / ref['train_s']:.2f}× the training time")
        memory, ref_memory = row["process"].get("peak_rss_mib"), ref["process"].get("peak_rss_mib")
        if memory and ref_memory:
            sentence += f" and {memory / ref_memory:.2f}× the peak memory"
        if row["forgetting"] and ref["forgetting"]:
            f, rf = row["forgetting"], ref["forgetting"]
            sentence += (f"; it kept {f['retention']:.0%} of the probe's {f['metric']} ({f['after']:.3f}, "
                         f"{f['after'] - rf['after']:+.3f} vs {ref_name})")
        lines.append(sentence + ".")
    probed = {n: r["forgetting"] for n, r in rows.items() if r["forgetting"]}
    if probed:
        first = next(iter(probed.values()))
        order = sorted(probed, key=lambda n: -(probed[n]["after"] or 0))
        lines.append(f"Probe {_short_path(first['probe'])} ({first['metric']}), {first['before']:.3f} before "
                     f"fine-tuning; after: " + ", ".join(f"{n} {probed[n]['after']:.3f}" for n in order) + ".")
    odd = [n for n, r in rows.items() if r["seed"] != data["seed"] or r["data"] != rows[ref_name]["data"]]
    if odd:
        lines.append(f"Caution: {', '.join(odd)} used other data or another seed than {ref_name}; see below.")
    return lines


def _short_path(path: str) -> str:
    """'../shared/data/stsb/validation.csv' -> 'stsb/validation.csv'."""
    return "/".join(Path(path).parts[-2:])


def _points(delta: float) -> str:
    return f"{100 * delta:+.1f} points"


def _share(ratio: float) -> str:
    """A ratio as a percentage with two significant digits: 0.0123 -> '1.2%', 0.4396 -> '44%', 1.0 -> '100%'."""
    return f"{100 * ratio:.2g}%" if 100 * ratio < 99.5 else f"{100 * ratio:.0f}%"


def render_markdown(data: dict[str, Any]) -> str:
    split, rows = data["split"], data["variants"]
    headers = ["variant", "strategy", f"{split} acc", f"{split} macro-F1", "val acc", "train s",
               "trainable params", "peak RSS MiB", "probe after", "retention"]
    has_cuda = any(r["process"].get("cuda_peak_mib") for r in rows.values())
    if has_cuda:
        headers.insert(8, "peak CUDA MiB")
    table = []
    for name, r in rows.items():
        m, f, p = r["metrics"], r["forgetting"] or {}, r["params"]
        cells = [name, r["strategy"], fmt(m[split]["accuracy"]), fmt(m[split]["macro_f1"]),
                 fmt(m.get("validation", {}).get("accuracy")), fmt(r["train_s"], ".0f"),
                 f"{human_count(p['trainable'])} ({_share(p['trainable'] / p['total'])})",
                 fmt(r["process"].get("peak_rss_mib"), ".0f"), fmt(f.get("after")),
                 fmt(f.get("retention"), ".1%")]
        if has_cuda:
            cells.insert(8, fmt(r["process"].get("cuda_peak_mib"), ".0f"))
        table.append(cells)
    diffs = [[name, "; ".join(f"`{d}`" for d in r["differences"]) or "(the base recipe)"] for name, r in rows.items()]
    probe = next((r["forgetting"] for r in rows.values() if r["forgetting"]), None)
    weights = "the best checkpoint by validation" if data["selection"] == "best" else "the final weights"
    notes = [f"- Data: {data['train_rows']:,} training rows, seed {data['seed']}; metrics on the {split} split, of "
             f"{weights}.",
             "- train s: wall time of the run up to the end of training (loading data and model included); the "
             "variants run one after another, and on a shared machine the time varies with its load.",
             "- peak RSS: the highest resident memory of the variant's own process (CPU RAM: Python, torch, model, "
             "optimizer state, activations, data; it includes the probe measurement at the end)."
             + (" peak CUDA: `torch.cuda.max_memory_allocated`." if has_cuda else "")]
    if probe:
        size = f" ({probe['num_probe_texts']:,} rows)" if probe.get("num_probe_texts") else ""
        notes.append(f"- probe: {probe['probe']}{size}, {probe['metric']} of the encoder before fine-tuning "
                     f"{probe['before']:.3f}; retention = after / before.")
    return "\n\n".join([
        "# Strategy comparison",
        f"Base recipe `{data['recipe']}`, model `{data['base_model']}`; reference: **{data['reference']}**.",
        markdown_table(headers, table, numeric=set(range(2, len(headers)))),
        "## Reading",
        "\n".join(f"- {line}" for line in data["reading"]),
        "![comparison](report.png)",
        "## What each variant changes",
        markdown_table(["variant", "settings that differ from the base recipe"], diffs, numeric=set()),
        "## Notes",
        "\n".join(notes),
    ])


def render_figure(data: dict[str, Any]) -> Any:
    """Accuracy vs training time (bubble area = trainable parameters), peak memory, and the probe
    score after fine-tuning (when a probe was measured); one colour per variant in every panel."""
    import math

    import matplotlib
    from matplotlib.lines import Line2D

    rows, split = data["variants"], data["split"]
    names = list(rows)
    colors = {n: matplotlib.colormaps["tab10"](i % 10) for i, n in enumerate(names)}
    probed = [rows[n]["forgetting"] for n in names]
    panels = 3 if any(probed) else 2
    fig, axes = new_figure(1, panels, figsize=(5.2 * panels + 2, 5),
                           gridspec_kw={"width_ratios": [1.5] + [1] * (panels - 1)})
    scatter, memory = axes[0], axes[1]
    biggest = max(r["params"]["trainable"] for r in rows.values())
    for n in names:
        r = rows[n]
        size = 60 + 1500 * math.sqrt(r["params"]["trainable"] / biggest)
        scatter.scatter(r["train_s"], r["metrics"][split]["accuracy"], s=size, color=colors[n], alpha=0.55,
                        edgecolors="black", linewidths=0.6, zorder=3)
        scatter.annotate(n, (r["train_s"], r["metrics"][split]["accuracy"]), xytext=(9, 6), textcoords="offset points",
                         fontsize=8, zorder=4)
    times = [r["train_s"] for r in rows.values()]
    if max(times) / max(min(times), 1e-9) > 8:
        scatter.set_xscale("log")
    accs = [r["metrics"][split]["accuracy"] for r in rows.values()]
    pad = max(0.02, 0.15 * (max(accs) - min(accs)))
    scatter.set(xlabel="training time (s)", ylabel=f"{split} accuracy", ylim=(min(accs) - pad, max(accs) + pad),
                title="Accuracy vs training time\n(bubble area ∝ trainable parameters)")
    scatter.margins(x=0.15)
    scatter.grid(alpha=0.3)
    _bars(memory, names, [rows[n]["process"].get("peak_rss_mib") for n in names], colors, ".0f",
          "peak RSS of the run (MiB)", "Peak memory (CPU RAM)")
    if panels == 3:
        probe, first = axes[2], next(f for f in probed if f)
        # "before" goes in the title: a label on the dashed line would collide with a bar's value there
        _bars(probe, names, [f["after"] if f else None for f in probed], colors, ".3f",
              f"{first['metric']} after fine-tuning",
              f"Retention on {_short_path(first['probe'])}\n(dashed: before fine-tuning, {first['before']:.3f})")
        probe.axhline(first["before"], color="black", linestyle="--", linewidth=1)
        probe.set_ylim(min(0.0, *(f["after"] for f in probed if f)), max(1.0, first["before"] * 1.1))
    handles = [Line2D([], [], marker="o", linestyle="", markersize=9, color=colors[n], alpha=0.7,
                      label=f"{n} ({human_count(rows[n]['params']['trainable'])} trainable)") for n in names]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(names), 6), frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def _bars(ax: Any, names: list[str], values: list[float | None], colors: dict[str, Any], spec: str,
          ylabel: str, title: str) -> None:
    """Bars per variant, labelled with `spec`-formatted values (a missing value: an en dash)."""
    heights = [v or 0.0 for v in values]
    drawn = ax.bar(names, heights, color=[colors[n] for n in names], alpha=0.8)
    ax.bar_label(drawn, labels=[fmt(v, spec) for v in values], fontsize=8, padding=2)
    ax.set(ylabel=ylabel, title=title)
    ax.tick_params(axis="x", labelrotation=30)
    ax.margins(y=0.12)


# ---------------------------------------------------------------------------------------------
# Command line


def run_cli(args: argparse.Namespace) -> int:
    specs = [s.strip() for s in args.strategies.split(",") if s.strip()]
    run_compare(args.recipe, specs, args.report, overrides=list(args.overrides), probe=args.probe,
                probe_max_rows=args.probe_max_rows, overwrite=args.overwrite, reuse=args.reuse)
    return 0
