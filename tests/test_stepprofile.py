"""scripts/benchmarks/bench_step.py and stepprofile.py on a tiny model: the figures add up. Not a timing test."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
from conftest import BENCHMARKS

from hf_adapt.config import ModelConfig
from hf_adapt.modeling import load_tokenizer

sys.path.insert(0, str(BENCHMARKS))
from stepprofile import CATEGORIES, categorise, grouped_batches  # noqa: E402  (scripts/benchmarks/)

pytestmark = pytest.mark.usefixtures("one_thread")
SCRIPT = BENCHMARKS / "bench_step.py"
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def run_script(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *argv])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    return exit_info.value.code


def test_operators_are_summed_into_categories():
    own = {"aten::mm": 3.0, "aten::addmm": 2.0, "aten::bernoulli_": 1.5, "aten::_fused_adamw_": 4.0,
           "aten::copy_": 0.5, "aten::layer_norm": 0.25}
    totals = categorise(own)
    assert totals["matmul"] == 5.0 and totals["dropout masks"] == 1.5 and totals["optimizer"] == 4.0
    assert totals["dtype casts"] == 0.5 and totals["other"] == 0.25 and totals["zero fills"] == 0.0
    assert set(totals) == {*CATEGORIES, "other"}


def test_batches_are_grouped_by_length_and_padded(tiny_bert, sentiment_csvs):
    tokenizer = load_tokenizer(ModelConfig(name_or_path=str(tiny_bert)))
    batches, labels = grouped_batches(tokenizer, str(sentiment_csvs["train"]), steps=4, batch_size=8,
                                      pad_to_multiple_of=8)
    assert labels == ["negative", "positive"] and len(batches) == 4
    for batch in batches:
        assert batch["input_ids"].shape[1] % 8 == 0 and batch["labels"].shape == (8,)


@pytest.mark.integration
@pytest.mark.parametrize("recipe", ["minilm_sst2_full.yaml", "minilm_sst2_lora.yaml"])
def test_script_profiles_a_recipe_step(monkeypatch, tiny_bert, sentiment_csvs, tmp_path, capsys, recipe):
    out = tmp_path / "step.json"
    code = run_script(monkeypatch, "--data", str(sentiment_csvs["train"]), "--recipe", str(RECIPES / recipe),
                      "--steps", "3", "--warmup", "1", "--peak-size", "64", "--json", str(out),
                      f"model.name_or_path={tiny_bert}", "train.batch_size=8", "train.mixed_precision=no")
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["phase_ms_per_step"]) == {"forward", "backward", "clip", "optimizer", "zero_grad"}
    assert all(ms > 0 for ms in result["phase_ms_per_step"].values())
    operators = result["operator_ms_per_step"]
    assert operators["matmul"] > 0 and operators["optimizer"] > 0
    # The ceiling counts only the time inside matmuls, so it is above what the whole step achieves.
    assert result["matmul_ceiling_gflops"] > result["achieved_gflops"] > 0
    assert result["real_tokens_per_step"] > 8  # 8 rows of at least [CLS] word [SEP]
    assert "ceiling, matmuls alone" in capsys.readouterr().out


def test_script_refuses_a_partial_recipe(monkeypatch, tiny_bert, sentiment_csvs, capsys):
    code = run_script(monkeypatch, "--data", str(sentiment_csvs["train"]), "--recipe",
                      str(RECIPES / "minilm_sst2_partial.yaml"), f"model.name_or_path={tiny_bert}")
    assert code == 2
    assert "adapt.strategy 'partial'" in capsys.readouterr().err
