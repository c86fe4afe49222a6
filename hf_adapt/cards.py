"""Model cards: card data from a run's own files, rendered from a Jinja template in `model_cards/`.

Every number in a card comes from `metrics.json` and `recipe.yaml` in the output directory;
nothing is typed by hand. The card is rendered through `huggingface_hub.ModelCard`, so its YAML
metadata (including `model-index`) is what the Hub reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

# model_cards/ sits at the repo root (a source checkout or editable install) and is installed as
# hf_adapt/model_cards/ in a wheel (see pyproject.toml).
TEMPLATE_DIR = next(p for p in (Path(__file__).resolve().parent / "model_cards",
                                Path(__file__).resolve().parent.parent / "model_cards") if p.is_dir())
DEFAULT_TEMPLATE = "classifier.md.j2"
METRIC_NAMES = ("accuracy", "macro_f1", "mcc", "loss")
METRIC_TYPES = {"accuracy": "accuracy", "macro_f1": "f1", "mcc": "matthews_correlation", "loss": "loss"}


def build_card_data(run: dict[str, Any], recipe: dict[str, Any], repo_id: str | None = None) -> ModelCardData:
    """YAML metadata of the card, with a `model-index` entry for every split and metric."""
    name = repo_id or Path(run["output_dir"]).name
    dataset = run["data"]["sources"].get("train", "")
    results = [
        EvalResult(task_type="text-classification", dataset_type=dataset, dataset_name=dataset,
                   dataset_split=split, metric_type=METRIC_TYPES[metric], metric_name=metric,
                   metric_value=values[metric])
        for split, values in run["metrics"].items() for metric in METRIC_NAMES if metric in values
    ]
    is_adapter = recipe["adapt"]["strategy"] == "lora" and not recipe["adapt"]["merge_lora"]
    return ModelCardData(
        base_model=run["base_model"],
        library_name="peft" if is_adapter else "transformers",
        pipeline_tag="text-classification",
        tags=["hf_adapt", run["strategy"], "text-classification"],
        metrics=[METRIC_TYPES[m] for m in METRIC_NAMES if m != "loss"],
        model_name=name,
        eval_results=results or None,
    )


def render_card(directory: str | Path, *, repo_id: str | None = None, template: str = DEFAULT_TEMPLATE) -> ModelCard:
    """Render the card of an output directory from its metrics.json and recipe.yaml."""
    directory = Path(directory)
    run = json.loads((directory / "metrics.json").read_text(encoding="utf-8"))
    recipe_text = (directory / "recipe.yaml").read_text(encoding="utf-8")
    recipe = yaml.safe_load(recipe_text)
    labels = run["labels"]
    return ModelCard.from_template(
        build_card_data(run, recipe, repo_id),
        template_path=str(TEMPLATE_DIR / template),
        model_name=repo_id or Path(run["output_dir"]).name,
        repo_id=repo_id,
        base_model=run["base_model"],
        base_model_url=_model_url(run["base_model"]),
        strategy=run["strategy"],
        labels=labels,
        metric_names=[m for m in METRIC_NAMES if any(m in v for v in run["metrics"].values())],
        results=run["metrics"],
        per_class={split: {label: values.get(f"f1_{label}", 0.0) for label in labels}
                   for split, values in run["metrics"].items()},
        params=_Attrs(run["params"]),
        timings=_Attrs(run["timings"]),
        hardware=_Attrs(run["hardware"]),
        train=_Attrs(run["train"]),
        data=_Attrs(run["data"]),
        recipe_yaml="\n".join(line for line in recipe_text.splitlines() if not line.startswith("#")) + "\n",
        max_length=recipe["model"]["max_length"],
    )


def write_model_card(directory: str | Path, *, repo_id: str | None = None) -> Path:
    path = Path(directory) / "README.md"
    render_card(directory, repo_id=repo_id).save(path)
    return path


def _model_url(base_model: str) -> str:
    return base_model if Path(base_model).exists() else f"https://huggingface.co/{base_model}"


class _Attrs(dict):
    """A dict whose keys read as attributes in the template (`params.trainable`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None
