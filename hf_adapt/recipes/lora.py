"""LoRA (peft): low-rank updates on the attention projections; the head trains fully."""

from __future__ import annotations

from pathlib import Path

from hf_adapt.config import RecipeConfig, as_config
from hf_adapt.engine import RunResult, run_recipe

# LoRA updates few weights from a zero start: it needs a ~10x higher LR than full fine-tuning.
DEFAULTS = {"adapt": {"strategy": "lora"}, "optim": {"learning_rate": 1e-3}}


def run(config: RecipeConfig | str | Path) -> RunResult:
    """Train a LoRA adapter and the head. `config` is a `RecipeConfig` or a recipe YAML path."""
    return run_recipe(as_config(config, DEFAULTS))
