"""Partial fine-tuning: freeze the embeddings (the default), the lowest `adapt.freeze_layers`
encoder layers, or the whole encoder.

With `adapt.freeze_encoder: true` only the head trains (feature extraction).
"""

from __future__ import annotations

from pathlib import Path

from hf_adapt.config import PRESETS, RecipeConfig, as_config
from hf_adapt.engine import RunResult, run_recipe

DEFAULTS = PRESETS["partial"]  # under the YAML: a recipe file or `key=value` overrides win


def run(config: RecipeConfig | str | Path) -> RunResult:
    """Train with the frozen parts the recipe names. `config` is a `RecipeConfig` or a YAML path."""
    return run_recipe(as_config(config, "partial"))
