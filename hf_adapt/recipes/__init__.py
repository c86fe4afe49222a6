"""Recipe modules: `full`, `partial`, `lora`. Each has `DEFAULTS` and `run(config) -> RunResult`.

They share one engine (`hf_adapt.engine.run_recipe`) and differ only in the update strategy and
its defaults, e.g.::

    from hf_adapt.config import load_config
    from hf_adapt.recipes import lora

    result = lora.run(load_config("recipes/minilm_sst2_lora.yaml"))
    print(result.metrics["validation"]["accuracy"], result.output_dir)
"""

from hf_adapt.recipes import full, lora, partial

RECIPES = {"full": full, "partial": partial, "lora": lora}

__all__ = ["RECIPES", "full", "lora", "partial"]
