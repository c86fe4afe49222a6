"""Settings planned from the data (hf_adapt.schedule): what a recipe leaves unset follows from the
training rows, the validation rows and the strategy; explicit values win; the run says and records
what it planned."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_recipe, write_sentiment_csvs

from hf_adapt.config import config_from_dict, load_config
from hf_adapt.engine import run_recipe
from hf_adapt.errors import HfAdaptError
from hf_adapt.schedule import plan_training
from hf_adapt.trainer import build_training_arguments


def minimal(*overrides: str):
    """A user's minimal recipe: model, data file, strategy; everything else default."""
    return load_config(None, ["data.train_file=train.csv", *overrides])


def test_a_20_row_set_gets_small_batches_enough_updates_and_keeps_its_last_weights():
    config, plan = plan_training(minimal(), rows=20, validation_rows=3)
    t = config.train
    assert t.batch_size == 4  # 20 rows: 5 batches of 4, the fewest below 16 batches an epoch
    assert t.epochs == 40  # 5 updates an epoch, 200 updates for full fine-tuning
    assert t.keep == "last"  # 3 validation rows cannot pick a best epoch
    assert t.early_stopping_patience == 0
    assert t.eval_strategy == "steps" and t.eval_steps == 10  # 20 cheap evaluations: the curve
    assert config.optim.warmup == 0.1
    assert "planned for 20 training rows (full): batch 4, 40 epochs (200 updates)" in plan.line
    assert "too few to pick a best" in plan.line
    lora, _ = plan_training(minimal("adapt.strategy=lora"), rows=20, validation_rows=3)
    assert lora.train.epochs == 60  # LoRA's zero-initialised update gets 300


def test_a_2000_row_set_gets_its_updates_from_more_passes_not_smaller_batches():
    # 63 updates an epoch at batch 32: 4 epochs for 200. Batch 16 for 2 epochs (250 updates) would take
    # 0.56x the time but lost 0.5 point of test accuracy on 2,000 SST-2 rows (3 seeds; docs/benchmark.md)
    config, plan = plan_training(minimal(), rows=2_000, validation_rows=801)
    assert (config.train.batch_size, config.train.epochs) == (32, 4)
    assert "batch 32, 4 epochs (252 updates)" in plan.line


def test_a_20000_row_set_evaluates_within_epochs_and_stops_early():
    config, plan = plan_training(minimal(), rows=20_000, validation_rows=872)
    t = config.train
    assert (t.batch_size, t.epochs) == (32, 2)  # 625 updates an epoch: 2 epochs, the fewest planned
    assert t.eval_strategy == "steps" and t.eval_steps == 63  # 20 evaluations (the most), ~15% of the training time
    assert t.keep == "best" and t.early_stopping_patience == 5  # a quarter of its 20 evaluations
    assert "early stopping after 5 evaluations without gain" in plan.line
    fewer, _ = plan_training(minimal("train.eval_steps=157"), rows=20_000, validation_rows=872)
    assert fewer.train.early_stopping_patience == 3  # 8 evaluations: a quarter is 2, at least 3
    huge, _ = plan_training(minimal(), rows=1_000_000, validation_rows=5_000)
    assert huge.train.epochs == 1 and huge.optim.warmup == 1_000  # 10% would be 3,125 warm-up steps
    assert huge.train.eval_steps == 31_250 // 20 + 1  # at most 20 evaluations in all


def test_evaluations_are_counted_in_tokens_not_rows():
    # 5,000 rows, 2 epochs of batch 32 (314 updates), 872 validation rows: 5 evaluations when a validation
    # row is as long as a training row; SST-2's are ~2x as long, which makes 2: one each epoch
    same, _ = plan_training(minimal(), rows=5_000, validation_rows=872)
    assert (same.train.eval_strategy, same.train.eval_steps) == ("steps", 63)
    longer, plan = plan_training(minimal(), rows=5_000, validation_rows=872, validation_length=2.0)
    assert longer.train.eval_strategy == "epoch"
    assert "evaluation every epoch (2 in all; validation rows 2.0x as long as training rows)" in plan.line
    shorter, _ = plan_training(minimal(), rows=5_000, validation_rows=872, validation_length=0.5)
    assert shorter.train.eval_steps == 32  # 10 evaluations


def test_explicit_values_win_and_are_named():
    config, plan = plan_training(minimal("train.epochs=2", "train.batch_size=8", "train.eval_strategy=epoch",
                                         "optim.warmup=0"), rows=20, validation_rows=3)
    assert (config.train.epochs, config.train.batch_size, config.train.eval_strategy, config.optim.warmup) == (
        2, 8, "epoch", 0)
    assert set(plan.chosen) == {"train.keep", "train.early_stopping_patience"}
    assert "set by the recipe: train.batch_size, train.epochs, train.eval_strategy, optim.warmup" in plan.line
    steps, _ = plan_training(minimal("train.eval_steps=7"), rows=20_000, validation_rows=872)
    assert (steps.train.eval_strategy, steps.train.eval_steps) == ("steps", 7)  # an interval means steps
    bounded, _ = plan_training(minimal("train.max_steps=50"), rows=20_000, validation_rows=872)
    assert bounded.train.epochs is None and bounded.train.max_steps == 50


def test_trainer_arguments_need_a_planned_recipe(tmp_path):
    with pytest.raises(HfAdaptError, match="train.batch_size, train.epochs, .* not set: plan them"):
        build_training_arguments(minimal(), tmp_path)


def test_a_run_says_records_and_cards_what_it_planned(tiny_bert, tmp_path, capsys):
    data = write_sentiment_csvs(tmp_path / "data", rows=24)  # 24 training rows, 8 validation
    recipe = tiny_recipe(tiny_bert, data, tmp_path / "out")
    del recipe["train"]["epochs"], recipe["train"]["batch_size"], recipe["optim"]["warmup"]

    result = run_recipe(config_from_dict(recipe))

    assert "[hf_adapt] planned for 24 training rows (full): batch 4, 34 epochs (204 updates)" in capsys.readouterr().err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    planned = metrics["train"]["planned"]
    assert planned["chosen"]["train.batch_size"] == 4 and planned["chosen"]["train.keep"] == "last"
    assert metrics["train"]["steps"] == 204 and result.train["kept"] is None  # the last weights, not a "best"
    assert metrics["train"]["curve"][-1]["step"] == 204  # the final weights were evaluated
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| settings planned from the data | planned for 24 training rows" in card
    assert "batch size 4" in card and "`train.keep: last`" in card
    saved = (tmp_path / "out" / "recipe.yaml").read_text()
    assert "batch_size: null" in saved  # the recipe as written: rerun on other data, it plans again


def test_max_steps_without_epochs_trains_that_many_steps(tiny_bert, tmp_path, capsys):
    # `train.max_steps` sets the run's length: no epochs are planned, and the run is not refused for them
    data = write_sentiment_csvs(tmp_path / "data", rows=24)
    recipe = tiny_recipe(tiny_bert, data, tmp_path / "out", train={"max_steps": 3})
    del recipe["train"]["epochs"]

    result = run_recipe(config_from_dict(recipe))

    assert result.train["steps"] == 3
    assert "set by the recipe: train.batch_size, train.max_steps" in capsys.readouterr().err


def test_a_run_counts_its_evaluations_in_the_tokens_of_its_validation_rows(tiny_bert, tmp_path, capsys):
    data = write_sentiment_csvs(tmp_path / "data", rows=24)
    lines = data["validation"].read_text(encoding="utf-8").splitlines()
    longer = [lines[0], *(f"{text} {text} {text},{label}" for text, label in (line.rsplit(",", 1) for line in lines[1:]))]
    data["validation"].write_text("\n".join(longer) + "\n", encoding="utf-8")  # each text three times over
    recipe = tiny_recipe(tiny_bert, data, tmp_path / "out", train={"max_steps": 2})
    del recipe["train"]["epochs"]

    run_recipe(config_from_dict(recipe))

    said = capsys.readouterr().err
    assert "x as long as training rows" in said
    assert float(said.split("validation rows ")[1].split("x as long")[0]) > 2  # [CLS] and [SEP] are not repeated
