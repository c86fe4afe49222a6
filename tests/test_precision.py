"""Tests for `train.mixed_precision`: what `auto` picks, and a bf16 run on CPU end to end.

(conftest's `tiny_recipe` pins `mixed_precision: no`; these tests set it themselves.)
"""

import json

import pytest
from conftest import tiny_recipe
from safetensors.torch import load_file

import hf_adapt.hardware as hardware
from hf_adapt.config import config_from_dict
from hf_adapt.engine import run_recipe
from hf_adapt.hardware import resolve_mixed_precision
from hf_adapt.inference import evaluate_file

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "no")])
def test_auto_follows_the_hardware(monkeypatch, native, expected):
    monkeypatch.setattr(hardware, "native_bf16", lambda: native)
    assert resolve_mixed_precision("auto") == expected
    for explicit in ("no", "bf16", "fp16"):  # an explicit choice is never second-guessed
        assert resolve_mixed_precision(explicit) == explicit


def test_native_bf16_is_false_without_gpu_or_amx(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert hardware.native_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert hardware.native_bf16() is True
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)  # an older torch
    assert hardware.native_bf16() is False


@pytest.mark.integration
@pytest.mark.parametrize("strategy", ["full", "partial"])
def test_auto_bf16_trains_on_cpu_and_saves_fp32(monkeypatch, tiny_bert, sentiment_csvs, tmp_path, strategy):
    """Where `auto` means bf16 (here forced: CPU bf16 autocast runs on any x86 CPU, emulated
    without AMX), training autocasts, the saved weights stay fp32 and reload to the same scores."""
    monkeypatch.setattr(hardware, "native_bf16", lambda: True)
    adapt = {"strategy": strategy, **({"freeze_embeddings": True, "freeze_layers": 1} if strategy == "partial" else {})}
    config = config_from_dict(tiny_recipe(tiny_bert, sentiment_csvs, tmp_path / "out", adapt=adapt,
                                          train={"epochs": 2, "mixed_precision": "auto"}))
    result = run_recipe(config)
    assert result.hardware["mixed_precision"] == "bf16"
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["hardware"]["mixed_precision"] == "bf16"
    weights = load_file(tmp_path / "out" / "model.safetensors")
    assert {str(w.dtype) for w in weights.values()} == {"torch.float32"}
    assert result.train["train_loss"] == result.train["train_loss"]  # not NaN
    if strategy == "partial":  # the frozen-prefix cache (fp32) passed its check against the bf16 model
        assert result.train["frozen_cache"]["layers"] == 1, result.train["frozen_cache"]
    # The run evaluated under autocast; a plain fp32 reload may flip a borderline example at most.
    reloaded = evaluate_file(tmp_path / "out", sentiment_csvs["test"], max_length=32)
    assert reloaded["accuracy"] == pytest.approx(result.metrics["test"]["accuracy"], abs=1 / 24 + 1e-9)


@pytest.mark.integration
def test_auto_without_native_bf16_trains_in_fp32(monkeypatch, tiny_bert, sentiment_csvs, tmp_path):
    monkeypatch.setattr(hardware, "native_bf16", lambda: False)
    config = config_from_dict(tiny_recipe(tiny_bert, sentiment_csvs, tmp_path / "out",
                                          train={"mixed_precision": "auto"}))
    assert run_recipe(config).hardware["mixed_precision"] == "no"
