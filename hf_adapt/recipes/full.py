"""Full fine-tuning: every weight trains."""

from __future__ import annotations

from pathlib import Path

from hf_adapt.config import PRESETS, RecipeConfig, as_config
from hf_adapt.engine import RunResult, run_recipe

DEFAULTS = PRESETS["full"]  # under the YAML: a recipe file or `key=value` overrides win


def run(config: RecipeConfig | str | Path) -> RunResult:
    """Train with every weight updated. `config` is a `RecipeConfig` or a recipe YAML path."""
    return run_recipe(as_config(config, "full"))
