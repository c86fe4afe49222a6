"""`train.time_budget`: the duration format, the shortened learning-rate schedule, and a run that
stops within its budget with a complete output."""

import json

import pytest
import torch
from conftest import tiny_recipe, write_sentiment_csvs
from transformers import get_linear_schedule_with_warmup

from hf_adapt.config import config_from_dict, duration_seconds
from hf_adapt.engine import run_recipe
from hf_adapt.errors import HfAdaptError
from hf_adapt.interrupts import _shortened


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("10m", 600), ("1h30m", 5400), ("5m30s", 330),
                                                ("600", 600), ("1.5h", 5400), ("ten minutes", None), ("", None)])
def test_durations_read_as_people_write_them(text, seconds):
    assert duration_seconds(text) == seconds


def test_an_unreadable_budget_is_named(tiny_bert, tmp_path):
    recipe = tiny_recipe(tiny_bert, write_sentiment_csvs(tmp_path, rows=16), tmp_path / "out",
                         train={"time_budget": "ten minutes"})
    with pytest.raises(HfAdaptError, match="train.time_budget must be a duration such as 90s, 10m or 1h30m"):
        config_from_dict(recipe)


def test_a_shortened_schedule_warms_up_and_decays_to_its_new_end():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=10, num_training_steps=100)
    shortened = _shortened(scheduler.lr_lambdas[0], 40, 100)
    assert [shortened(s) for s in (0, 2, 4, 22, 40)] == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0])
    assert _shortened(lambda step: 1.0, 40, 100)(7) == 1.0  # a schedule it cannot read stays as it is


@pytest.mark.integration
def test_a_run_over_its_budget_stops_evaluated_and_saved(tiny_bert, tmp_path, capsys):
    output = tmp_path / "out"
    recipe = tiny_recipe(tiny_bert, write_sentiment_csvs(tmp_path / "data", rows=64), output,
                         train={"epochs": 500, "batch_size": 4, "time_budget": "8s"})
    run_recipe(config_from_dict(recipe))

    saved = json.loads((output / "metrics.json").read_text())
    budget = saved["train"]["time_budget"]
    assert budget["recipe_steps"] == 500 * -(-saved["data"]["rows"]["train"] // 4)
    assert budget["stopped_at_step"] < budget["recipe_steps"]
    assert budget["planned_steps"] < budget["recipe_steps"] and budget["step_s"] > 0
    assert saved["train"]["steps"] == budget["stopped_at_step"]
    assert saved["timings"]["train_s"] < 8 + 30  # stopped near the budget, not after 6,000 steps
    # Evaluated at the stop (the curve's last point) and saved as a complete output with its card.
    assert saved["train"]["curve"][-1]["step"] == budget["stopped_at_step"]
    assert (output / "model.safetensors").is_file() and set(saved["metrics"]) == {"validation", "test"}
    card = (output / "README.md").read_text()
    assert f"stopped at step {budget['stopped_at_step']} of the recipe's {budget['recipe_steps']}" in card
    assert "time budget 8s: stopped at step" in capsys.readouterr().err
