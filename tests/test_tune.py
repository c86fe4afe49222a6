"""`hf-adapt tune`: an Optuna search over a recipe on a tiny model. Trials are scored on validation
only and the pruner stops them at an evaluation; the best becomes a normal output directory (test
scored once) with a report beside it; a second run continues the study, re-running a trial killed
mid-way once and no completed one; two worker processes share one SQLite study; bad input is
refused in one line with nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import tiny_recipe, write_sentiment_csvs, write_yaml
from transformers import pipeline

from hf_adapt import inference, tune
from hf_adapt.cli import main
from hf_adapt.config import load_recipe

HF_ADAPT = Path(sys.executable).parent / "hf-adapt"


@pytest.fixture(scope="module")
def recipe(tiny_models, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tune")
    data = write_sentiment_csvs(root / "data")
    return write_yaml(root / "tiny.yaml", tiny_recipe(tiny_models["bert"], data, root / "out",
                                                      train={"threads": 1}))


def load_study(output: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{output / 'study.db'}")


def distinct_params(trials: list[optuna.trial.FrozenTrial]) -> bool:
    return len({json.dumps(t.params, sort_keys=True) for t in trials}) == len(trials)


class PruneAllButTheFirst(optuna.pruners.BasePruner):
    """Every trial but trial 0 is pruned at its first evaluation."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number > 0


def test_three_trials_save_the_best_with_one_test_score_and_a_report(recipe, tmp_path, capsys, monkeypatch):
    scored = []
    evaluate_file = inference.evaluate_file
    monkeypatch.setattr(inference, "evaluate_file", lambda *a, **k: scored.append(a[0]) or evaluate_file(*a, **k))
    monkeypatch.setattr(tune.optuna.pruners, "MedianPruner", lambda **kwargs: PruneAllButTheFirst())
    output = tmp_path / "tune"
    # 8 steps, evaluated every 2: a pruned trial stops at step 2, whatever batch size was drawn
    assert main(["tune", str(recipe), "train.max_steps=8", "train.eval_strategy=steps", "train.eval_steps=2",
                 "--budget", "10m", "--n-trials", "3", "--output-dir", str(output)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trials"] == {"complete": 1, "pruned": 2, "fail": 0, "running": 0, "waiting": 0}
    trials = load_study(output).trials
    assert trials[0].user_attrs["baseline"] and trials[0].user_attrs["values"] == {
        "optim.learning_rate": 1e-3, "optim.layer_decay": 0.9, "optim.warmup": 0.0, "train.batch_size": 16}
    for pruned in trials[1:]:  # stopped gracefully at their first evaluation, reported to the pruner there
        assert pruned.state.name == "PRUNED" and pruned.user_attrs["summary"]["steps"] == 2
        assert len(pruned.intermediate_values) == 1 and len(pruned.user_attrs["curve"]) == 1
    best = output / "best"
    assert summary["output_dir"] == str(best) and summary["trial"] == 0
    assert len(scored) == 1  # the test file, scored once, on the chosen model
    assert sorted(p.name for p in (output / "trials").iterdir()) == ["trial-0"]  # only the best trial's output stays
    kept = json.loads((output / "trials" / "trial-0" / "metrics.json").read_text())
    assert set(kept["metrics"]) == {"validation"} and kept["data"]["sources"].get("test") is None  # never saw test
    metrics = json.loads((best / "metrics.json").read_text())
    assert set(metrics["metrics"]) == {"validation", "test"} and metrics["data"]["rows"]["test"] == 24
    assert metrics["metrics"]["test"] == summary["test"]
    search = metrics["extra"]["search"]
    assert (search["trial"], search["counts"]["complete"], search["counts"]["pruned"]) == (0, 1, 2)
    assert search["budgets"] == ["10m"] and search["chosen"] == trials[0].user_attrs["values"]
    saved_recipe = yaml.safe_load((best / "recipe.yaml").read_text())
    assert saved_recipe["data"]["test_file"] == load_recipe(recipe).data.test_file
    assert saved_recipe["optim"]["learning_rate"] == 1e-3 and saved_recipe["train"]["max_steps"] == 8
    card = (best / "README.md").read_text()
    assert "## Hyperparameter search" in card and "This model came from a search: it is trial 0" in card
    assert "1 complete\ntrials (2 pruned, 0 failed)" in card and "with budgets 10m" in card
    assert pipeline("text-classification", model=str(best))("a good film")[0]["label"] in ("positive", "negative")
    report = json.loads((output / "tune_report.json").read_text())
    assert [t["state"] for t in report["trials"]] == ["complete", "pruned", "pruned"]
    assert report["importances"] is None and "needs 2 or more complete trials" in report["importances_note"]
    assert "**Chosen: trial 0**" in (output / "tune_report.md").read_text()
    assert (output / "tune_report.png").read_bytes()[:4] == b"\x89PNG"


def test_a_second_run_continues_the_study_and_reruns_a_killed_trial_once(recipe, tmp_path, capsys, monkeypatch):
    output = tmp_path / "tune"
    command = ["tune", str(recipe), "--budget", "10m", "--n-trials", "2", "--output-dir", str(output)]
    assert main(command) == 0
    capsys.readouterr()
    # A third trial, as a SIGKILL leaves it: RUNNING, its values drawn, its last heartbeat long past.
    storage = optuna.storages.RDBStorage(f"sqlite:///{output / 'study.db'}")
    study = optuna.load_study(study_name="tiny", storage=storage)
    killed = study.ask()
    tune.build_space(load_recipe(recipe), ("full",)).sample(killed)
    storage.record_heartbeat(killed._trial_id)
    monkeypatch.setattr(tune, "HEARTBEAT_S", 1)
    monkeypatch.setattr(tune, "GRACE_S", 1)
    time.sleep(2.1)  # SQLite's clock counts whole seconds
    assert main(command) == 0
    trials = load_study(output).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    retry = trials[3]  # the killed trial's values, run first, once
    assert retry.params == trials[2].params and retry.system_attrs["failed_trial"] == 2
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert distinct_params(complete)  # no completed trial ran twice
    report = json.loads((output / "tune_report.json").read_text())
    assert report["runs"] == 2 and report["budgets"] == ["10m", "10m"] and len(report["trials"]) == 5
    assert report["importances"] or report["importances_note"]
    assert json.loads(capsys.readouterr().out)["trials"] == {"complete": 4, "pruned": 0, "fail": 1, "running": 0,
                                                              "waiting": 0}


@pytest.mark.integration
def test_a_trial_the_budget_cut_short_is_not_a_result_of_its_values():
    """A trial whose time cap shortened its schedule trained less than its values say: pruned, not complete."""
    assert tune.cut_short({"budget_s": 60, "recipe_steps": 300, "stopped_at_step": 120})
    assert tune.cut_short({"budget_s": 60, "recipe_steps": 300, "planned_steps": 200})
    assert not tune.cut_short({"budget_s": 600, "recipe_steps": 300, "planned_steps": 300})
    assert not tune.cut_short(None)


def test_two_worker_processes_share_one_sqlite_study(recipe, tmp_path):
    output = tmp_path / "tune"
    command = [str(HF_ADAPT), "tune", str(recipe), "--budget", "10m", "--n-trials", "2", "--output-dir", str(output)]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [worker.communicate(timeout=300) for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], [err[-2000:] for _, err in results]
    trials = load_study(output).trials
    assert len(trials) == 4 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both worked on the one study
    assert sum(bool(t.user_attrs.get("baseline")) for t in trials) == 1 and distinct_params(trials)
    assert (output / "best" / "model.safetensors").is_file()
    assert len(json.loads((output / "tune_report.json").read_text())["trials"]) == 4


def test_the_search_space_per_strategy_builds_valid_trial_recipes(recipe, tmp_path):
    base = load_recipe(recipe)
    space = tune.build_space(base, ("full", "lora", "partial", "features"))
    assert space.describe()["lora.learning_rate"] == "float 0.0002..0.003, log"  # around LoRA's preset 1e-3
    assert space.describe()["partial.freeze_layers"] == "int 0..1" and space.describe()["epochs"] == "int 1..2"
    fixed = {"epochs": 2, "warmup": 0.1, "batch_size": 32}
    lora = optuna.trial.FixedTrial({"strategy": "lora", "lora.learning_rate": 2e-3, "lora.lora_r": 8,
                                    "lora.lora_alpha_over_r": 4, "lora.lora_targets": "attention", **fixed})
    kind, values = space.sample(lora)
    config = tune.trial_config(base, kind, values, tmp_path / "trial-7", 90.0, 7)
    a = config.adapt
    assert (a.strategy, a.lora_r, a.lora_alpha, a.lora_target_modules) == ("lora", 8, 32, ["query", "value"])
    assert config.optim.layer_decay == 1.0 and config.model.dropout == 0.0  # LoRA's preset, not the recipe's
    assert config.data.test_file is None and config.train.time_budget == "90s" and config.train.batch_size == 32
    partial = optuna.trial.FixedTrial({"strategy": "partial", "partial.learning_rate": 1e-4,
                                       "partial.layer_decay": 0.8, "partial.freeze_layers": 1, **fixed})
    config = tune.trial_config(base, *space.sample(partial), tmp_path / "trial-8", 90.0, 8)
    assert (config.adapt.freeze_embeddings, config.adapt.freeze_layers, config.optim.layer_decay) == (True, 1, 0.8)
    features = optuna.trial.FixedTrial({"strategy": "features", "features.learning_rate": 1e-3, **fixed})
    config = tune.trial_config(base, *space.sample(features), tmp_path / "trial-9", 90.0, 9)
    assert config.adapt.freeze_encoder and config.train.epochs == 2
    assert tune.baseline_params(base, space) == {"strategy": "full", "full.learning_rate": 1e-3,
                                                 "full.layer_decay": 0.9, "epochs": 1, "warmup": 0.0,
                                                 "batch_size": 16}


@pytest.mark.parametrize(("flags", "message"), [
    (["--budget", "0"], "--budget must be a duration above zero, such as 20m, 90s or 1h30m (or seconds), got '0'"),
    (["--budget=-5m"], "--budget must be a duration above zero"),
    (["--budget", "soon"], "got 'soon'"),
    (["--budget", "1m", "--strategies", "full,lorra"], "unknown strategy 'lorra' (did you mean 'lora'?)"),
    (["--budget", "1m", "--storage", "postgresql://nobody:secret@127.0.0.1:1/x"],
     "--storage postgresql://nobody:***@127.0.0.1:1/x: "),
    (["--budget", "1m", "--storage", "sqlite:////no/such/folder/study.db"],
     "--storage sqlite:////no/such/folder/study.db: cannot open it"),
])
def test_bad_input_ends_in_one_line_with_nothing_written(recipe, tmp_path, capsys, flags, message):
    output = tmp_path / "new" / "tune"
    assert main(["tune", str(recipe), "--output-dir", str(output), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("hf-adapt: error: ") and "secret" not in err
    assert not (tmp_path / "new").exists()


def test_a_folder_of_something_else_is_refused_and_left_as_it_was(recipe, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["tune", str(recipe), "--budget", "1m", "--output-dir", str(mine)]) == 2
    assert "holds no hf-adapt tune study" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_help_and_bad_input_answer_without_importing_torch(recipe, tmp_path):
    for argv in (["tune", "--help"], ["tune", str(recipe), "--budget", "0"]):
        code = (f"import sys; from hf_adapt.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
                f"print([m for m in ('torch', 'transformers') if m in sys.modules])")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert done.stdout.strip().splitlines()[-1] == "[]", done.stderr[-2000:]
