"""`hf-adapt tune`: a hyperparameter search within a time budget (Optuna), whose best trial becomes a
normal output directory, with a report beside it.

    hf-adapt tune recipes/minilm_sst2_full.yaml --budget 20m
    hf-adapt tune recipes/minilm_sst2_full.yaml --budget 1h --strategies full,lora,partial
    hf-adapt tune RECIPE.yaml --budget 2h --storage postgresql://user@host/optuna   # on each machine

Each trial is one `hf_adapt.engine.run_recipe` of the recipe with the sampled values set
explicitly (learning rate, layer decay, epochs, warm-up, batch size and, per strategy, the frozen
depth or LoRA's rank, alpha and targets; `SearchSpace`), scored on the validation split only: the
trials never see the test file. Optuna's TPE sampler proposes the values, and a median pruner,
fed by every evaluation (`hf_adapt.interrupts.ReportEvaluations`), stops a trial that trails the
completed ones at the same epoch. The recipe's own values run first, so the search starts from
the default it is meant to beat. Each trial trains within what is left of the budget
(`train.time_budget`), and no trial starts that could not use half of a typical trial's time.

The study lives in an Optuna storage, SQLite in the output directory by default, so running the
same command again continues it: completed trials are kept and never re-run, and a trial cut short
is marked FAIL and its values queued once to run first. A Ctrl-C queues them at once; a trial
left RUNNING by a SIGKILL is found by Optuna's heartbeat (no beat for `GRACE_S` seconds) at the
next trial's start. With `--storage postgresql://…` or `mysql://…` (or one SQLite file) several
processes or machines work on one study. What the output directory holds:

    tune.json             which study it belongs to (its name and storage)
    study.db              the study (the default SQLite storage)
    trials/trial-N/       the trials' outputs; only the best complete trial's is kept
    best/                 the chosen trial as a normal output directory: model, tokenizer, recipe.yaml
                          with the chosen values, metrics.json with the test split (scored once,
                          here) and a card that says it came from a search
    tune_report.md/.json/.png   every trial, validation by time, parameter importances

Heavy modules (the engine: torch, transformers) are imported where a trial runs, so that bad input
answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import math
import os
import shutil
import socket
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import optuna
import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from hf_adapt.compare import strategy_settings, variant_kind
from hf_adapt.config import (
    AdaptConfig,
    PRESETS,
    RecipeConfig,
    check_data_files,
    config_from_dict,
    duration_seconds,
    load_recipe,
)
from hf_adapt.errors import HfAdaptError, first_line, say, shown, verbose
from hf_adapt.metrics import LOWER_IS_BETTER
from hf_adapt.reports import fmt, markdown_table, new_figure, write_report

try:
    import fcntl
except ImportError:  # Windows: workers finishing at once are not serialised there
    fcntl = None  # type: ignore[assignment]

TUNE_STRATEGIES = ("full", "partial", "lora", "features")  # features: partial with the whole encoder frozen
# Optuna's heartbeat: a running trial writes one every HEARTBEAT_S; one silent for GRACE_S is taken
# for dead (a SIGKILL, a lost machine), failed and queued once to run again. The grace period is
# long enough that a busy machine's late beat is not taken for death.
HEARTBEAT_S, GRACE_S = 30, 120
N_STARTUP_TRIALS = 5  # random draws (the recipe's own values among them) before TPE models the rest
PRUNE_AFTER = 2  # complete trials before the median pruner compares
FINAL_RESERVE_S, FINAL_RESERVE_SHARE = 60.0, 0.05  # of the budget, kept for the test score and the report
MIN_TRIAL_S = 20.0  # no trial starts with less time than this (or half a typical trial's) left
# The ranges searched, and why (docs/recipes.md, "A budgeted search").
LR_SPAN = (1 / 5, 3.0)  # × the strategy's own learning rate: its preset was chosen on SST-2, not on your data
LAYER_DECAY = (0.6, 1.0)  # 0.6**7 ≈ 0.03: the embeddings almost frozen; 1.0: plain AdamW
WARMUP = (0.0, 0.2)  # a ratio of the steps
LORA_RANKS, LORA_ALPHA_OVER_R = (4, 8, 16, 32), (1, 2, 4)  # alpha = r × this: the update's scale alpha/r
# The attention's input projections per family: LoRA's "attention" targets (peft's usual default).
ATTENTION_INPUTS = {"query", "value", "q_lin", "v_lin", "query_proj", "value_proj", "q", "v", "in_proj", "Wqkv"}
SETTINGS_ATTR = "hf_adapt"  # the study's user attribute: what it was started with
with warnings.catch_warnings():  # "experimental" since Optuna 2.8, and Optuna's own way to retry a trial
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    RETRY = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
WORKER = f"{socket.gethostname()}:{os.getpid()}"


# ---------------------------------------------------------------------------------------------
# What is searched


@dataclass(frozen=True)
class SearchSpace:
    """The parameters a study searches, per strategy, as Optuna distributions. With several
    strategies a `strategy` parameter picks one, and the strategy's own parameters are named
    `STRATEGY.NAME` (their ranges differ); epochs, warm-up and batch size are shared."""

    strategies: tuple[str, ...]
    distributions: dict[str, dict[str, BaseDistribution]]  # strategy -> parameter -> distribution
    lora_targets: dict[str, list[str] | None] = field(default_factory=dict)  # lora_targets choice -> modules

    def sample(self, trial: optuna.Trial) -> tuple[str, dict[str, Any]]:
        """The strategy and the recipe values (`section.key` -> value) of one trial."""
        kind = (trial.suggest_categorical("strategy", list(self.strategies)) if len(self.strategies) > 1
                else self.strategies[0])
        params = {name: suggest(trial, name, dist) for name, dist in self.distributions[kind].items()}
        return kind, self.recipe_values(params)

    def recipe_values(self, params: dict[str, Any]) -> dict[str, Any]:
        """The recipe keys a trial's parameters set."""
        short = {name.rpartition(".")[2]: value for name, value in params.items() if name != "strategy"}
        keys = {"learning_rate": "optim.learning_rate", "layer_decay": "optim.layer_decay", "warmup": "optim.warmup",
                "epochs": "train.epochs", "batch_size": "train.batch_size", "freeze_layers": "adapt.freeze_layers",
                "lora_r": "adapt.lora_r"}
        values = {keys[name]: value for name, value in short.items() if name in keys}
        if "lora_alpha_over_r" in short:
            values["adapt.lora_alpha"] = short["lora_r"] * short["lora_alpha_over_r"]
        if "lora_targets" in short:
            values["adapt.lora_target_modules"] = self.lora_targets[short["lora_targets"]]
        return values

    def describe(self) -> dict[str, str]:
        """Each parameter's range in words ("float 2e-05..0.0003, log"), for the report and the settings check."""
        described = {"strategy": f"one of {list(self.strategies)}"} if len(self.strategies) > 1 else {}
        for distributions in self.distributions.values():
            described.update({name: describe(dist) for name, dist in distributions.items()})
        return described


def suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, log=dist.log)


def describe(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return f"one of {list(dist.choices)}"
    kind = "int" if isinstance(dist, IntDistribution) else "float"
    return f"{kind} {dist.low:g}..{dist.high:g}" + (", log" if dist.log else "")


def build_space(base: RecipeConfig, strategies: tuple[str, ...]) -> SearchSpace:
    """The search space around the recipe: learning rates from a fifth to 3× each strategy's own,
    epochs from a third to 5/3 of the recipe's (3 when it leaves them to be planned), batch sizes
    half, once and twice its own (32 when unset)."""
    model_type, layers = encoder_shape(base) if {"partial", "lora"} & set(strategies) else (None, 0)
    shared: dict[str, BaseDistribution] = {}
    if base.train.max_steps <= 0:  # max_steps wins over epochs: then the length is the recipe's
        epochs = base.train.epochs or 3
        shared["epochs"] = IntDistribution(max(1, round(epochs / 3)), max(2, round(epochs * 5 / 3)))
    shared["warmup"] = FloatDistribution(*WARMUP)
    batch = base.train.batch_size or 32
    shared["batch_size"] = CategoricalDistribution(sorted({max(1, batch // 2), batch, batch * 2}))
    prefix = (lambda kind, name: f"{kind}.{name}") if len(strategies) > 1 else (lambda kind, name: name)
    distributions, targets = {}, {}
    for kind in strategies:
        learning_rate = float(strategy_recipe(base, kind)["optim"]["learning_rate"])
        own: dict[str, BaseDistribution] = {"learning_rate": FloatDistribution(
            float(f"{learning_rate * LR_SPAN[0]:.3g}"), float(f"{learning_rate * LR_SPAN[1]:.3g}"), log=True)}
        if kind in ("full", "partial"):
            own["layer_decay"] = FloatDistribution(*LAYER_DECAY)
        if kind == "partial":
            own["freeze_layers"] = IntDistribution(0, max(layers - 1, 0))  # the embeddings frozen besides
        if kind == "lora":
            own["lora_r"] = CategoricalDistribution(LORA_RANKS)
            own["lora_alpha_over_r"] = CategoricalDistribution(LORA_ALPHA_OVER_R)
            targets = lora_target_choices(base, model_type)
            if len(targets) > 1:
                own["lora_targets"] = CategoricalDistribution(list(targets))
        distributions[kind] = {**{prefix(kind, n): d for n, d in own.items()}, **shared}
    return SearchSpace(strategies, distributions, targets)


def encoder_shape(config: RecipeConfig) -> tuple[str, int]:
    """The recipe model's `model_type` and encoder depth, from its config.json (no weights loaded)."""
    from transformers import AutoConfig

    from hf_adapt.modeling import resolve_model_path

    source = config.model.init_from or resolve_model_path(config.model.name_or_path)
    try:
        model_config = AutoConfig.from_pretrained(source, revision=config.model.revision)
    except (OSError, ValueError) as err:
        raise HfAdaptError(f"model.name_or_path {config.model.name_or_path}: cannot read its config.json "
                           f"({first_line(err)}); give a local model folder or a Hub id") from None
    return model_config.model_type, int(getattr(model_config, "num_hidden_layers", 0) or 0)


def lora_target_choices(base: RecipeConfig, model_type: str | None) -> dict[str, list[str] | None]:
    """LoRA's target choices: `default` (the recipe's, else the family's every Linear but the key)
    and, where the family names them, `attention` (the query and value projections)."""
    from hf_adapt.modeling import LORA_TARGETS

    own = base.adapt.lora_target_modules if variant_kind(base) == "lora" else None
    attention = [name for name in LORA_TARGETS.get(model_type or "", []) if name in ATTENTION_INPUTS]
    choices: dict[str, list[str] | None] = {"default": own}
    if attention and attention != own:
        choices["attention"] = attention
    return choices


def baseline_params(base: RecipeConfig, space: SearchSpace) -> dict[str, Any] | None:
    """The recipe's own values as a trial's parameters (those outside the space, or left to be
    planned, are sampled), or None when the recipe's strategy is not searched."""
    kind = variant_kind(base)
    if kind not in space.strategies:
        return None
    o, t, a = base.optim, base.train, base.adapt
    own = {"learning_rate": o.learning_rate, "layer_decay": o.layer_decay, "warmup": o.warmup,
           "epochs": t.epochs, "batch_size": t.batch_size, "freeze_layers": a.freeze_layers, "lora_r": a.lora_r,
           "lora_alpha_over_r": a.lora_alpha / a.lora_r, "lora_targets": "default"}
    params: dict[str, Any] = {"strategy": kind} if len(space.strategies) > 1 else {}
    for name, dist in space.distributions[kind].items():
        value = own[name.rpartition(".")[2]]
        if within(dist, value):  # as the distribution holds it: 3.0 epochs -> 3, alpha/r 2.0 -> the choice 2
            params[name] = (int(value) if isinstance(dist, IntDistribution) else
                            next(c for c in dist.choices if c == value) if isinstance(dist, CategoricalDistribution)
                            else value)
    return params


def within(dist: BaseDistribution, value: Any) -> bool:
    if value is None:
        return False
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    if isinstance(dist, IntDistribution) and float(value) != int(value):
        return False
    return dist.low <= value <= dist.high


def strategy_recipe(base: RecipeConfig, kind: str) -> dict[str, Any]:
    """The recipe as plain data, moved to another strategy the way `hf-adapt compare` moves it (that
    strategy's preset `adapt` section, learning rate and dropout; LoRA without layer decay, as its
    adapters are new weights at every depth); the recipe's own strategy keeps its own settings."""
    raw = base.to_dict()
    if kind == variant_kind(base):
        return raw
    adapt, learning_rate = strategy_settings(kind, base)
    raw["adapt"] = {**asdict(AdaptConfig()), **adapt}
    raw["optim"]["learning_rate"] = learning_rate
    raw["model"].update(dropout=PRESETS.get(kind, {}).get("model", {}).get("dropout"), from_scratch=False)
    if kind == "lora":
        raw["optim"]["layer_decay"] = 1.0
    return raw


def trial_config(base: RecipeConfig, kind: str, values: dict[str, Any], output_dir: Path, time_cap_s: float,
                 number: int) -> RecipeConfig:
    """A trial's recipe: the strategy's, with the sampled values, no test file, trained within `time_cap_s`."""
    raw = strategy_recipe(base, kind)
    for key, value in values.items():
        section, name = key.split(".")
        raw[section][name] = value
    own_cap = duration_seconds(base.train.time_budget) if base.train.time_budget else None
    cap = min(time_cap_s, own_cap) if own_cap else time_cap_s
    raw["train"].update(output_dir=str(output_dir), overwrite=False, resume=False, time_budget=f"{max(cap, 1):.0f}s")
    raw["data"]["test_file"] = None  # selection on validation only: the test split is scored once, at the end
    raw["hub"]["push"] = False
    return config_from_dict(raw, source=f"{base.source} [tune trial {number}]")


# ---------------------------------------------------------------------------------------------
# The study: storage, settings, resumption


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage with heartbeats, or a one-line error naming the URL (password hidden)."""
    import sqlalchemy

    dialect = url.partition(":")[0].partition("+")[0]
    connect = {"sqlite": {"timeout": 60}, "postgresql": {"connect_timeout": 10}, "mysql": {"connect_timeout": 10}}
    engine_kwargs: dict[str, Any] = {"connect_args": connect.get(dialect, {})}
    if dialect != "sqlite":
        engine_kwargs["pool_pre_ping"] = True  # a connection idle through a long trial may have been dropped
    try:
        for attempt in range(3):
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S,
                                                  grace_period=GRACE_S, heartbeat_stale_trial_callback=RETRY)
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as err:
                # Workers starting together race to create the tables; the loser finds them made on a retry.
                if attempt == 2 or not isinstance(err, sqlalchemy.exc.IntegrityError) and "already exists" not in str(err):
                    raise
                time.sleep(0.5 + attempt)
    except ImportError as err:
        missing = first_line(err.__cause__ or err)
        raise HfAdaptError(f"--storage {shown_url(url)}: its database driver is not installed ({missing}); install "
                           f"it (postgresql: pip install \"psycopg[binary]\"; mysql: pip install pymysql and write "
                           f"mysql+pymysql://…)") from None
    except sqlalchemy.exc.SQLAlchemyError as err:
        raise HfAdaptError(f"--storage {shown_url(url)}: cannot open it ({first_line(err)}); check the URL, that the "
                           f"server runs and the folder exists, and the credentials") from None


def shown_url(url: str) -> str:
    """A storage URL as messages and reports show it: its password hidden."""
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return shown(url)


def study_settings(base: RecipeConfig, space: SearchSpace) -> dict[str, Any]:
    """What a study is defined by, kept in its storage: the recipe and the data it reads (a
    checkpoint's fingerprint, `hf_adapt.outputs.run_fingerprint`), the space and the metric."""
    from hf_adapt.outputs import run_fingerprint

    settings = {"fingerprint": run_fingerprint(base, []), "space": space.describe(),
                "metric": base.train.metric_for_best}
    return json.loads(json.dumps(settings))  # as the storage gives it back


def open_study(storage: optuna.storages.RDBStorage, name: str, base: RecipeConfig, space: SearchSpace,
               storage_shown: str) -> optuna.Study:
    """Create the study, or load it to continue; a study of other settings is refused."""
    # constant_liar: a worker's running trials count as bad, so parallel workers do not propose the same point
    sampler = optuna.samplers.TPESampler(n_startup_trials=N_STARTUP_TRIALS, multivariate=True, group=True,
                                         constant_liar=True, seed=session_seed(base.train.seed))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=PRUNE_AFTER)
    settings = study_settings(base, space)
    direction = "minimize" if base.train.metric_for_best in LOWER_IS_BETTER else "maximize"
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction=direction, sampler=sampler,
                                    pruner=pruner)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        check_same_study(study, settings, name, storage_shown)
        say(f"continuing study {name!r} ({len(study.trials)} trials so far) in {storage_shown}")
        return study
    study.set_user_attr(SETTINGS_ATTR, settings)
    baseline = baseline_params(base, space)
    if baseline is not None:  # the search starts from the default it is meant to beat
        study.enqueue_trial(baseline, user_attrs={"baseline": True})
    say(f"new study {name!r} in {storage_shown}")
    return study


def session_seed(seed: int) -> int:
    """The sampler's seed: the recipe's, mixed with this worker and moment, so that two workers, or a
    resumed run, never replay the same random draws (that would run trials twice)."""
    return (seed * 1_000_003 + os.getpid() * 7919 + time.time_ns() // 1_000) % 2**32


def check_same_study(study: optuna.Study, settings: dict[str, Any], name: str, storage_shown: str) -> None:
    from hf_adapt.outputs import fingerprint_changes

    saved = study.user_attrs.get(SETTINGS_ATTR)
    if saved is None:  # another worker is creating it this very moment
        return
    changes = fingerprint_changes(saved["fingerprint"], settings["fingerprint"])
    changes += [f"{key} {shown(saved.get(key), 80)} → {shown(settings[key], 80)}" for key in ("space", "metric")
                if saved.get(key) != settings[key]]
    if changes:
        more = f" (and {len(changes) - 4} more)" if len(changes) > 4 else ""
        raise HfAdaptError(f"study {name!r} in {storage_shown} was started with other settings: "
                           f"{'; '.join(changes[:4])}{more}; continue it with those, or start another study "
                           f"(--study-name, or another --output-dir)")


def check_no_orphans(storage: optuna.storages.RDBStorage, name: str, output: Path) -> None:
    """A new study must not start beside the trials of one no longer in the storage (a deleted
    study.db): their trial numbers would clash, and they are somebody's results."""
    if name in optuna.study.get_all_study_names(storage):
        return
    leftovers = [output / d for d in ("trials", "best") if (output / d).is_dir() and any((output / d).iterdir())]
    if leftovers:
        raise HfAdaptError(f"--output-dir {output} holds {' and '.join(p.name + '/' for p in leftovers)} of a study "
                           f"{name!r} that is no longer in its storage; move them away, or choose another directory")


def check_output_dir(output: Path, name: str, storage_shown: str) -> None:
    """Refuse an output directory that holds anything but this study's files (as `train` refuses a
    non-empty one); it may belong to the same study, being resumed or shared by workers."""
    if output.exists() and not output.is_dir():
        raise HfAdaptError(f"--output-dir {output} is a file; give a directory")
    if not (output.is_dir() and any(output.iterdir())):
        return
    marker = output / "tune.json"
    if not marker.is_file():
        raise HfAdaptError(f"--output-dir {output} already exists, is not empty and holds no hf-adapt tune study (no "
                           f"tune.json); choose another directory")
    saved = json.loads(marker.read_text(encoding="utf-8"))
    if (saved.get("study_name"), saved.get("storage")) != (name, storage_shown):
        raise HfAdaptError(f"--output-dir {output} belongs to study {saved.get('study_name')!r} in "
                           f"{saved.get('storage')}; pass --study-name {saved.get('study_name')} and that --storage to "
                           f"continue it, or choose another directory")


# ---------------------------------------------------------------------------------------------
# Trials


@dataclass
class Clock:
    """This run's budget: what is left for trials, after a reserve for the test score and the report."""

    budget_s: float
    started: float = field(default_factory=time.monotonic)
    durations: list[float] = field(default_factory=list)  # of this run's trials, wall-clock
    overheads: list[float] = field(default_factory=list)  # of each, what was not training (loading, evaluating)

    @property
    def reserve_s(self) -> float:
        return min(FINAL_RESERVE_S, FINAL_RESERVE_SHARE * self.budget_s)

    def left_s(self) -> float:
        return self.budget_s - self.reserve_s - (time.monotonic() - self.started)

    def training_cap_s(self) -> float:
        """The next trial's training time (`train.time_budget`): what is left, less its loading and evaluating."""
        return max(self.left_s() - (statistics.mean(self.overheads) if self.overheads else 0.0), 1.0)

    def another_fits(self) -> bool:
        """Whether a trial may start: it would get at least half a typical trial's time (and MIN_TRIAL_S)."""
        typical = statistics.median(self.durations) if self.durations else 0.0
        return self.left_s() >= max(MIN_TRIAL_S, typical / 2)


class TrialReporter:
    """What a trial tells the study after each evaluation: the value (for the pruner, at the epoch in
    hundredths, so that epoch-end evaluations of trials line up) and the curve (for the report)."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial, self.started = trial, time.time()
        self.curve: list[list[float]] = []
        self.steps: set[int] = set()
        self.pruned_value: float | None = None

    def __call__(self, value: float, epoch: float) -> bool:
        self.curve.append([round(time.time() - self.started, 2), round(epoch, 3), value])
        self.trial.set_user_attr("curve", self.curve)
        step = round(epoch * 100)
        if step in self.steps:  # reported there already (a stop's evaluation at an epoch's end)
            return False
        self.steps.add(step)
        self.trial.report(value, step)
        if self.trial.should_prune():
            self.pruned_value = value
            return True
        return False


@dataclass
class Search:
    """The objective Optuna calls per trial, and what it does after each one."""

    base: RecipeConfig
    space: SearchSpace
    trials_dir: Path
    clock: Clock
    ran: list[int] = field(default_factory=list)  # trial numbers this run started

    def __call__(self, trial: optuna.Trial) -> float:
        from hf_adapt.engine import run_recipe
        from hf_adapt.interrupts import ReportEvaluations
        from hf_adapt.metrics import best_metric

        self.ran.append(trial.number)
        kind, values = self.space.sample(trial)
        try:
            output_dir = self.trials_dir / f"trial-{trial.number}"
            config = trial_config(self.base, kind, values, output_dir, self.clock.training_cap_s(), trial.number)
            for key, value in {"strategy": kind, "values": values, "worker": WORKER, "output_dir": str(output_dir),
                               "curve": []}.items():
                trial.set_user_attr(key, value)
            say(f"tune trial {trial.number} ({kind}): {values_line(values)}; training within "
                f"{config.train.time_budget}")
            reporter = TrialReporter(trial)
            stopper = ReportEvaluations(reporter)
            result = run_recipe(config, callbacks=[stopper])
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the trial fails; its values run first next time
            RETRY(trial.study, next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number))
            raise
        seconds = time.time() - reporter.started
        self.clock.durations.append(seconds)
        self.clock.overheads.append(max(seconds - result.timings["train_s"], 0.0))
        metric = best_metric(self.base.train.metric_for_best, result.task)
        trial.set_user_attr("summary", {
            "metric": metric, "validation": result.metrics["validation"], "seconds": round(seconds, 1),
            "train_s": result.timings["train_s"], "epochs": result.train["epochs"], "steps": result.train["steps"],
            "time_budget": result.train.get("time_budget")})
        if stopper.stopped_at_epoch is not None:
            raise optuna.TrialPruned(f"at epoch {stopper.stopped_at_epoch:g}: validation {metric} "
                                     f"{reporter.pruned_value:.4f} trails the median of the complete trials there")
        if cut_short(result.train.get("time_budget")):  # it did not train as its values say: not a result of them
            raise optuna.TrialPruned(f"cut short by the budget at step {result.train['steps']}: validation {metric} "
                                     f"{result.metrics['validation'][metric]:.4f}")
        return result.metrics["validation"][metric]

    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """One line on the trial; spent outputs removed; the search stopped when no trial fits any more."""
        say(trial_line(study, trial))
        remove_spent_outputs(study, self.trials_dir)
        if not self.clock.another_fits():
            say(f"tune: {max(self.clock.left_s(), 0):.0f} s of the budget left, too little for another trial")
            study.stop()


def cut_short(budget: dict[str, Any] | None) -> bool:
    """Whether the trial's time cap (`train.time_budget`) shortened its schedule or stopped it."""
    if not budget:
        return False
    planned, recipe = budget.get("planned_steps"), budget.get("recipe_steps")
    return bool(budget.get("stopped_at_step")) or (planned is not None and recipe is not None and planned < recipe)


def values_line(values: dict[str, Any]) -> str:
    return ", ".join(f"{key.split('.')[1]} {fmt(value, '.3g') if isinstance(value, float) else value}"
                     for key, value in values.items())


def trial_line(study: optuna.Study, trial: FrozenTrial) -> str:
    """`tune trial 3 complete: validation accuracy 0.8612 in 182 s (best: 0.8704, trial 1)` and the like."""
    summary = trial.user_attrs.get("summary", {})
    if trial.state == TrialState.FAIL:
        return f"tune trial {trial.number} failed (its error is above)"
    line = f"tune trial {trial.number} {trial.state.name.lower()}"
    if trial.state == TrialState.PRUNED:
        epoch = max(trial.intermediate_values, default=0) / 100
        line += f" at epoch {epoch:g}"
    line += f": validation {summary.get('metric', 'metric')} {fmt(trial.value, '.4f')} in {summary.get('seconds', 0):.0f} s"
    best = best_trial(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), study.direction)
    if best is not None:
        line += f" (best: {best.value:.4f}, trial {best.number})"
    return line


def best_trial(complete: list[FrozenTrial], direction: optuna.study.StudyDirection) -> FrozenTrial | None:
    """The best complete trial by validation (the first of equals), or None."""
    if not complete:
        return None
    pick = min if direction == optuna.study.StudyDirection.MINIMIZE else max
    return pick(sorted(complete, key=lambda t: t.number), key=lambda t: t.value)


def remove_spent_outputs(study: optuna.Study, trials_dir: Path) -> None:
    """Keep the disk bounded: every finished trial's files under `trials_dir` go, but the best one's."""
    trials = study.get_trials(deepcopy=False)
    best = best_trial([t for t in trials if t.state == TrialState.COMPLETE], study.direction)
    for trial in trials:
        if trial.state in (TrialState.RUNNING, TrialState.WAITING) or (best and trial.number == best.number):
            continue
        name = f"trial-{trial.number}"
        for path in [trials_dir / name, *trials_dir.glob(f".{name}.*")]:  # the output, its work dir and lock
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# The end: the best trial as an output directory, and the report


@contextlib.contextmanager
def finishing(output: Path) -> Iterator[None]:
    """Workers that end together write the best output and the report one after the other."""
    if fcntl is None:
        yield
        return
    with open(output / ".tune.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def finish(study: optuna.Study, base: RecipeConfig, output: Path, command: str, storage_shown: str,
           space: SearchSpace) -> dict[str, Any]:
    """Save the best complete trial as `OUTPUT/best` (test scored once) and write the report."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)  # a trial killed long enough ago is failed (and queued) now
    trials = study.get_trials(deepcopy=False)
    best = best_trial([t for t in trials if t.state == TrialState.COMPLETE], study.direction)
    search = search_summary(study, trials, best, base, command, storage_shown, space)
    with finishing(output):
        saved = save_best(best, base, output, search) if best is not None else None
        data = report_data(study, trials, best, search, saved)
        paths = write_report(output, render_markdown(data), data, render_figure(data), stem="tune_report")
    remove_spent_outputs(study, output / "trials")
    say(f"tune report: {paths['tune_report.md']}")
    return {**data, "report": str(paths["tune_report.md"])}


def search_summary(study: optuna.Study, trials: list[FrozenTrial], best: FrozenTrial | None, base: RecipeConfig,
                   command: str, storage_shown: str, space: SearchSpace) -> dict[str, Any]:
    """What the best output's card and metrics.json say about the search it came from."""
    counts = {state: sum(t.state.name.lower() == state for t in trials)
              for state in ("complete", "pruned", "fail", "running", "waiting")}
    baseline = next((t for t in trials if t.user_attrs.get("baseline") and t.state == TrialState.COMPLETE), None)
    sessions = sorted((v for k, v in study.user_attrs.items() if k.startswith("run ")), key=lambda s: s["started"])
    return {
        "study": study.study_name, "storage": storage_shown, "command": command, "recipe": base.source,
        "sampler": f"TPE (multivariate; the first {N_STARTUP_TRIALS} trials random, the recipe's own values first)",
        "pruner": f"median (a trial trailing the median of the complete ones at the same epoch stops, from "
                  f"{PRUNE_AFTER} complete trials on)",
        "metric": best.user_attrs["summary"]["metric"] if best else base.train.metric_for_best,
        "direction": study.direction.name.lower(), "strategies": list(space.strategies), "space": space.describe(),
        "counts": counts, "budgets": [s["budget"] for s in sessions], "runs": len(sessions),
        "trial": best.number if best else None, "value": best.value if best else None,
        "strategy": best.user_attrs.get("strategy") if best else None,
        "chosen": best.user_attrs.get("values") if best else None,
        "baseline": {"trial": baseline.number, "value": baseline.value, "values": baseline.user_attrs.get("values")}
        if baseline else None,
    }


def save_best(best: FrozenTrial, base: RecipeConfig, output: Path, search: dict[str, Any]) -> Path | None:
    """The best trial's output, copied to `OUTPUT/best` with its test split scored once (kept when the
    chosen trial is the one already there), its recipe, metrics and card saying it came from a search."""
    from hf_adapt import cards
    from hf_adapt.outputs import RunPaths, publishing, recover_interrupted_publish

    source = Path(best.user_attrs["output_dir"])
    if not (source / "metrics.json").is_file():
        say(f"the best trial ({best.number}) ran on {best.user_attrs.get('worker', 'another worker')}, whose "
            f"output {source} is not here; run `hf-adapt tune … --n-trials 0` there to save it")
        return None
    target = output / "best"
    paths = RunPaths.of(target)
    recover_interrupted_publish(paths)  # a worker killed while publishing `best`
    test = earlier_test_score(target, best.number, search["study"])
    with publishing(paths) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True, copy_function=link_weights)
        run = json.loads((staging / "metrics.json").read_text(encoding="utf-8"))
        if base.data.test_file:
            test = test or score_test(staging, base)
            run["metrics"]["test"] = test["metrics"]
            run["data"]["rows"]["test"], run["data"]["sources"]["test"] = test["rows"], str(base.data.test_file)
        run["output_dir"] = str(target)
        run["extra"]["search"] = search
        (staging / "metrics.json").write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
        write_best_recipe(staging, base, search)
        cards.write_model_card(staging)
    return target


def link_weights(source: str, destination: str) -> None:
    """Weights are hard-linked (never rewritten in place, so `best/` costs no second copy), the rest copied."""
    if source.endswith(".safetensors"):
        with contextlib.suppress(OSError):
            os.link(source, destination)
            return
    shutil.copy2(source, destination)


def earlier_test_score(target: Path, number: int, study_name: str) -> dict[str, Any] | None:
    """The test score `best/` holds already, when it is this study's same trial: the test split is scored once."""
    try:
        run = json.loads((target / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    search = run.get("extra", {}).get("search") or {}
    if (search.get("study"), search.get("trial")) != (study_name, number) or "test" not in run["metrics"]:
        return None
    return {"metrics": run["metrics"]["test"], "rows": run["data"]["rows"].get("test")}


def score_test(model_dir: Path, base: RecipeConfig) -> dict[str, Any]:
    """The chosen model on the recipe's test file, through `hf-adapt eval`'s path."""
    import torch

    from hf_adapt.data import load_file
    from hf_adapt.inference import evaluate_file

    d = base.data
    say(f"scoring the chosen model on the test split ({d.test_file}), once")
    metrics = evaluate_file(model_dir, d.test_file, text_column=d.text_column, label_column=d.label_column,
                            text_pair_column=d.text_pair_column, label_separator=d.label_separator,
                            label_columns=d.label_columns, batch_size=base.train.eval_batch_size,
                            max_length=None if d.long_text == "chunk" else base.model.max_length,
                            device="cuda" if torch.cuda.is_available() else "cpu")
    return {"metrics": metrics, "rows": len(load_file(d.test_file))}


def write_best_recipe(directory: Path, base: RecipeConfig, search: dict[str, Any]) -> None:
    """recipe.yaml of the chosen trial, its test file back in: `hf-adapt train` reruns it."""
    recipe = yaml.safe_load((directory / "recipe.yaml").read_text(encoding="utf-8"))
    recipe["data"]["test_file"] = base.data.test_file
    recipe["train"]["output_dir"] = str(directory.parent / "best")
    header = (f"# Trial {search['trial']} of `{search['command']}` (study {search['study']}): the best of "
              f"{search['counts']['complete']} complete trials by validation {search['metric']}.\n"
              f"# The recipe's values with the search's chosen ones. Re-run with:\n"
              f"#   hf-adapt train recipe.yaml train.output_dir=NEW_DIR\n")
    (directory / "recipe.yaml").write_text(header + yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")


def importances(study: optuna.Study, complete: int, seed: int) -> tuple[dict[str, float] | None, str | None]:
    """Optuna's parameter importances (fANOVA) over the complete trials, or why there are none."""
    if complete < 2:
        return None, f"needs 2 or more complete trials; this study has {complete}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed))
    except (ValueError, RuntimeError) as err:
        return None, f"Optuna could not compute them ({first_line(err).rstrip('.')})"
    return {name: round(float(value), 4) for name, value in found.items()}, None


def trial_row(trial: FrozenTrial) -> dict[str, Any]:
    summary = trial.user_attrs.get("summary", {})
    return {"number": trial.number, "state": trial.state.name.lower(), "strategy": trial.user_attrs.get("strategy"),
            "values": trial.user_attrs.get("values", {}), "params": trial.params, "value": trial.value,
            "validation": summary.get("validation"), "seconds": summary.get("seconds"),
            "started": trial.datetime_start.isoformat() if trial.datetime_start else None,
            "worker": trial.user_attrs.get("worker"), "curve": trial.user_attrs.get("curve", []),
            "baseline": bool(trial.user_attrs.get("baseline")), "retry_of": trial.system_attrs.get("failed_trial")}


def report_data(study: optuna.Study, trials: list[FrozenTrial], best: FrozenTrial | None, search: dict[str, Any],
                saved: Path | None) -> dict[str, Any]:
    found, why_not = importances(study, search["counts"]["complete"], seed=0)
    test = None
    if saved is not None:
        test = json.loads((saved / "metrics.json").read_text(encoding="utf-8"))["metrics"].get("test")
    return {**search, "trials": [trial_row(t) for t in trials], "importances": found, "importances_note": why_not,
            "best_output": str(saved) if saved else None, "test": test,
            "validation": best.user_attrs["summary"]["validation"] if best else None}


def render_markdown(data: dict[str, Any]) -> str:
    metric, counts = data["metric"], data["counts"]
    lines = [f"# Hyperparameter search: {data['recipe']}", "",
             f"`{data['command']}`: study `{data['study']}` in `{data['storage']}`, {len(data['trials'])} trials "
             f"({counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed"
             + (f", {counts['running']} running" if counts["running"] else "")
             + (f", {counts['waiting']} queued" if counts["waiting"] else "")
             + f") over {data['runs']} run(s) of the command (budgets: {', '.join(data['budgets'])}). Selection on "
               f"validation {metric} only; the test split is scored once, on the chosen model.", ""]
    if data["trial"] is None:
        lines += ["No trial completed: no model was chosen. Run the same command again (with a larger `--budget`) to "
                  "continue the study.", ""]
    else:
        test = data["test"] or {}
        lines += [f"**Chosen: trial {data['trial']}** ({data['strategy']}): validation {metric} "
                  f"{data['value']:.4f}" + (f", test {metric} {test[metric]:.4f}" if metric in test else "")
                  + (f" → `{data['best_output']}`" if data["best_output"] else "") + "."]
        baseline = data["baseline"]
        if baseline:
            lines += [f"The recipe's own values (trial {baseline['trial']}): validation {metric} "
                      f"{baseline['value']:.4f} ({data['value'] - baseline['value']:+.4f} for the chosen)."]
        rows = [[key, fmt(value, ".3g"), fmt((baseline or {}).get("values", {}).get(key), ".3g")]
                for key, value in (data["chosen"] or {}).items()]
        lines += ["", markdown_table(["setting", "chosen", "recipe's trial"], rows), ""]
    keys = list(dict.fromkeys(k for t in data["trials"] for k in t["values"]))
    rows = [[t["number"], t["state"] + (" (recipe)" if t["baseline"] else "")
             + (f" (retry of {t['retry_of']})" if t["retry_of"] is not None else ""), t["strategy"] or "–",
             *[fmt(t["values"].get(k), ".3g") for k in keys], fmt(t["value"], ".4f"),
             fmt(t["seconds"] / 60 if t["seconds"] else None, ".1f")] for t in data["trials"]]
    lines += ["## Trials", "", markdown_table(["trial", "state", "strategy", *[k.split(".")[1] for k in keys],
                                               f"validation {metric}", "minutes"], rows,
                                              numeric={0, *range(3, 5 + len(keys))}), ""]
    lines += ["## Parameter importances", ""]
    if data["importances"]:
        lines += [f"Optuna's fANOVA over the {counts['complete']} complete trials (share of the variance of "
                  f"validation {metric}):", "",
                  markdown_table(["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in data["importances"].items()])]
    else:
        lines += [f"None: {data['importances_note']}."]
    lines += ["", "![validation by time, per trial; parameter importances](tune_report.png)", "",
              "## How it searched", "", f"- sampler: {data['sampler']}", f"- pruner: {data['pruner']}",
              *[f"- `{name}`: {space}" for name, space in data["space"].items()]]
    return "\n".join(lines)


def render_figure(data: dict[str, Any]) -> Any:
    """Validation by elapsed time, one line per trial (the chosen one bold); the importances beside."""
    fig, (curves, bars) = new_figure(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    starts = [datetime.fromisoformat(t["started"]) for t in data["trials"] if t["started"]]
    origin = min(starts) if starts else None
    styles = {"complete": "-", "pruned": "--", "fail": ":", "running": ":", "waiting": ":"}
    for t in data["trials"]:
        if not t["curve"] or origin is None:
            continue
        offset = (datetime.fromisoformat(t["started"]) - origin).total_seconds()
        chosen = t["number"] == data["trial"]
        minutes, values = [(offset + c[0]) / 60 for c in t["curve"]], [c[2] for c in t["curve"]]
        curves.plot(minutes, values, styles[t["state"]], marker="o", markersize=3, linewidth=2.5 if chosen else 1,
                    color="C3" if chosen else None, label=f"trial {t['number']} (chosen)" if chosen else None)
        curves.annotate(str(t["number"]), (minutes[-1], values[-1]), fontsize=7, xytext=(3, 0),
                        textcoords="offset points")
    curves.set_xlabel("minutes since the first trial started")
    curves.set_ylabel(f"validation {data['metric']}")
    curves.set_title("each trial's evaluations (dashed: pruned)")
    if data["trial"] is not None:
        curves.legend(loc="lower right")
    if data["importances"]:
        names = list(data["importances"])[::-1]
        bars.barh(names, [data["importances"][n] for n in names])
        bars.set_title("parameter importance (fANOVA)")
    else:
        bars.axis("off")
        bars.text(0.5, 0.5, f"no parameter importances:\n{data['importances_note']}", ha="center", va="center",
                  wrap=True)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# The command


def parse_strategies(text: str | None, base: RecipeConfig) -> tuple[str, ...]:
    """`--strategies full,lora`: known names, each once; default the recipe's own."""
    if text is None:
        kind = variant_kind(base)
        if kind not in TUNE_STRATEGIES:
            raise HfAdaptError(f"{base.source}: hf-adapt tune searches {', '.join(TUNE_STRATEGIES)}, and this recipe "
                               f"is {kind}; pass --strategies")
        return (kind,)
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in TUNE_STRATEGIES:
            close = difflib.get_close_matches(name, TUNE_STRATEGIES, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise HfAdaptError(f"--strategies: unknown strategy {name!r}{hint}; use {', '.join(TUNE_STRATEGIES)}, "
                               f"comma-separated")
    if not names or len(set(names)) != len(names):
        raise HfAdaptError(f"--strategies must name each strategy once, got {shown(text)}; e.g. full,lora,partial")
    return tuple(names)


def parse_budget(text: str) -> float:
    seconds = duration_seconds(text)
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise HfAdaptError(f"--budget must be a duration above zero, such as 20m, 90s or 1h30m (or seconds), got "
                           f"{shown(text)}")
    return seconds


def run_tune(recipe: str, budget: str, *, overrides: list[str] | None = None, strategies: str | None = None,
             output_dir: str | None = None, storage: str | None = None, study_name: str | None = None,
             n_trials: int | None = None, command: str | None = None) -> dict[str, Any]:
    """Search the recipe's hyperparameters within `budget`, continuing the study if it exists; save
    the best trial as `OUTPUT/best` and write `OUTPUT/tune_report.*`.

    Args:
        recipe (`str`): the recipe YAML.
        budget (`str`): this run's wall-clock budget, as `20m`, `90s` or `1h30m`.
        overrides (`list[str]`, *optional*): `section.key=value` applied to the recipe.
        strategies (`str`, *optional*): comma-separated among full, partial, lora, features;
            default the recipe's own.
        output_dir (`str`, *optional*): default the recipe's `train.output_dir` + `_tune`.
        storage (`str`, *optional*): an Optuna storage URL; default SQLite in the output directory.
        study_name (`str`, *optional*): default the recipe file's name.
        n_trials (`int`, *optional*): at most this many trials in this run (0: only save and report).
        command (`str`, *optional*): the command line, for the card and the report.

    Returns:
        `dict`: what `tune_report.json` holds.
    """
    budget_s = parse_budget(budget)
    if n_trials is not None and n_trials < 0:
        raise HfAdaptError(f"--n-trials must be >= 0 (0: only save the best trial and report), got {n_trials}")
    base = load_recipe(recipe, overrides or [])
    check_data_files(base.data)
    if base.data.dataset:
        raise HfAdaptError(f"data.dataset {base.data.dataset}: hf-adapt tune keeps the test split out of the trials, "
                           f"which it can do for data files; save the splits as files and name them in data.*_file")
    kinds = parse_strategies(strategies, base)
    output = Path(output_dir or f"{base.train.output_dir.rstrip('/')}_tune").resolve()
    name = study_name or Path(recipe).stem
    url = storage or f"sqlite:///{output / 'study.db'}"
    storage_shown = shown_url(url)
    check_output_dir(output, name, storage_shown)
    space = build_space(base, kinds)
    if not verbose():
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    created = [p for p in (output, *output.parents) if not p.exists()]
    output.mkdir(parents=True, exist_ok=True)
    marker = output / "tune.json"
    marked = not marker.is_file()
    if marked:  # before the storage: a worker starting beside this one finds the folder claimed for the study
        staged = output / f".tune.json.tmp-{os.getpid()}"
        staged.write_text(json.dumps({"study_name": name, "storage": storage_shown}, indent=2) + "\n", encoding="utf-8")
        os.replace(staged, marker)
    try:
        opened = open_storage(url)
        check_no_orphans(opened, name, output)
        study = open_study(opened, name, base, space, storage_shown)
    except BaseException:  # nothing left behind: the marker and the folders this run made, if still empty
        if marked:  # (a study.db stays: a worker starting at the same moment may be using it)
            marker.unlink(missing_ok=True)
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    command = command or f"hf-adapt tune {recipe} --budget {budget}"
    if storage is not None:
        command = command.replace(storage, storage_shown)  # never a password in a card or a report
    search = Search(base, space, output / "trials", Clock(budget_s))
    run_key = f"run {WORKER} {datetime.now().isoformat(timespec='seconds')}"
    study.set_user_attr(run_key, {"budget": budget, "started": datetime.now().isoformat(timespec="seconds")})
    remove_spent_outputs(study, search.trials_dir)
    import torch

    try:
        study.optimize(search, n_trials=n_trials, timeout=max(search.clock.left_s(), 1.0),
                       callbacks=[search.after_trial], gc_after_trial=True,
                       catch=(torch.cuda.OutOfMemoryError,))  # a batch too large for the GPU fails one trial only
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"the study is kept in {storage_shown}; the trial cut short runs first when the "
                                f"same command runs again") from None
    study.set_user_attr(run_key, {"budget": budget, "started": study.user_attrs[run_key]["started"],
                                  "trials": search.ran})
    data = finish(study, base, output, command, storage_shown, space)
    if data["trial"] is None:
        raise HfAdaptError(f"no trial completed within --budget {budget} ({data['counts']['pruned']} pruned, "
                           f"{data['counts']['fail']} failed); the report is in {output}; run the same command again, "
                           f"or with a larger --budget, to continue the study")
    say(f"tune: chose trial {data['trial']} ({data['strategy']}; {values_line(data['chosen'])}): validation "
        f"{data['metric']} {data['value']:.4f}" + (f", test {data['metric']} {data['test'][data['metric']]:.4f}"
                                                  if data["test"] and data["metric"] in data["test"] else ""))
    return data


def run_cli(args: argparse.Namespace) -> int:
    options = [("--strategies", args.strategies), ("--output-dir", args.output_dir), ("--storage", args.storage),
               ("--study-name", args.study_name), ("--n-trials", args.n_trials)]
    command = " ".join(["hf-adapt tune", args.recipe, *args.overrides, "--budget", args.budget,
                        *[f"{flag} {value}" for flag, value in options if value is not None]])
    data = run_tune(args.recipe, args.budget, overrides=list(args.overrides), strategies=args.strategies,
                    output_dir=args.output_dir, storage=args.storage, study_name=args.study_name,
                    n_trials=args.n_trials, command=command)
    print(json.dumps({"output_dir": data["best_output"], "report": data["report"], "study": data["study"],
                      "trials": data["counts"], "trial": data["trial"], "chosen": data["chosen"],
                      "validation": data["validation"], "test": data["test"]}, indent=2))
    return 0
