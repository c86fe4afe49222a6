"""Partial fine-tuning: freeze the embeddings and/or the lowest k layers, or the whole encoder.

With `adapt.freeze_encoder: true` only the head trains (feature extraction).
"""

from __future__ import annotations

from pathlib import Path

from hf_adapt.config import RecipeConfig, as_config
from hf_adapt.engine import RunResult, run_recipe

# Freezing the embeddings and the lower half keeps most of the accuracy at a fraction of the
# backward cost; fewer weights move, so a higher LR than full fine-tuning suits it.
DEFAULTS = {"adapt": {"strategy": "partial", "freeze_embeddings": True}, "optim": {"learning_rate": 1e-4}}


def run(config: RecipeConfig | str | Path) -> RunResult:
    """Train with the frozen parts the recipe names. `config` is a `RecipeConfig` or a YAML path."""
    return run_recipe(as_config(config, DEFAULTS))
