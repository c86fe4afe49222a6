"""LoRA (peft): low-rank updates on the encoder's linear layers; the head trains fully."""

from __future__ import annotations

from pathlib import Path

from hf_adapt.config import PRESETS, RecipeConfig, as_config
from hf_adapt.engine import RunResult, run_recipe

DEFAULTS = PRESETS["lora"]  # under the YAML: a recipe file or `key=value` overrides win


def run(config: RecipeConfig | str | Path) -> RunResult:
    """Train a LoRA adapter and the head. `config` is a `RecipeConfig` or a recipe YAML path."""
    return run_recipe(as_config(config, "lora"))
