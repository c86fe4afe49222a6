"""Model cards: a typed `CardData` filled from a run's own files, rendered from `model_cards/`.

Every number in a card comes from `metrics.json` and `recipe.yaml` in the output directory;
nothing is typed by hand. The card goes through `huggingface_hub.ModelCard` /
`ModelCardData`, so its YAML metadata (including the `model-index` with every evaluation
result) is what the Hub reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hf_adapt.metrics import TASK_METRICS
from hf_adapt.modeling import resolve_model_path

# model_cards/ sits at the repo root (a source checkout or editable install) and is installed as
# hf_adapt/model_cards/ in a wheel (see pyproject.toml).
TEMPLATE_DIR = next(p for p in (Path(__file__).resolve().parent / "model_cards",
                                Path(__file__).resolve().parent.parent / "model_cards") if p.is_dir())
TEMPLATE = "classifier.md.j2"  # one template: model and adapter cards differ only in how to load
# Our metric name -> the Hub's metric type id (used by model-index and the leaderboards).
METRIC_TYPES = {"accuracy": "accuracy", "macro_f1": "f1", "micro_f1": "f1", "samples_f1": "f1",
                "subset_accuracy": "accuracy", "mcc": "matthews_correlation", "pearson": "pearsonr",
                "spearman": "spearmanr", "mse": "mse", "mae": "mae", "loss": "loss"}


CURVE_ROWS = 12  # evaluations a card lists at most (metrics.json keeps them all)


@dataclass
class CardData:
    """Everything a card says, from one run. Build it with `CardData.from_output_dir`."""

    name: str
    base_model: str
    strategy: str
    labels: list[str]
    metrics: dict[str, dict[str, float]]
    params: dict[str, int]
    timings: dict[str, float]
    hardware: dict[str, Any]
    train: dict[str, Any]
    data: dict[str, Any]
    recipe: dict[str, Any]
    recipe_yaml: str
    extra: dict[str, Any] = field(default_factory=dict)
    license: str | None = None
    repo_id: str | None = None
    kind: str = "model"  # "model": a plain transformers model; "adapter": a peft LoRA adapter
    task: str = "single_label"  # or "regression" (hf_adapt.data.LabelMap.task)

    @classmethod
    def from_output_dir(cls, directory: str | Path, *, repo_id: str | None = None,
                        kind: str | None = None) -> "CardData":
        directory = Path(directory)
        run = json.loads((directory / "metrics.json").read_text(encoding="utf-8"))
        recipe_text = (directory / "recipe.yaml").read_text(encoding="utf-8")
        if kind is None:
            kind = "adapter" if (directory / "adapter_config.json").is_file() else "model"
        return cls(
            name=repo_id or Path(run["output_dir"]).name,
            base_model=run["base_model"], strategy=run["strategy"], labels=run["labels"],
            metrics=run["metrics"], params=run["params"], timings=run["timings"], hardware=run["hardware"],
            train=run["train"], data=run["data"], extra=run.get("extra", {}),
            recipe=yaml.safe_load(recipe_text),
            recipe_yaml="\n".join(line for line in recipe_text.splitlines() if not line.startswith("#")) + "\n",
            license=base_model_license(run["base_model"]), repo_id=repo_id, kind=kind,
            task=run.get("task", "single_label"),
        )

    @property
    def settings(self) -> dict[str, Any]:
        """The recipe as the run trained it: recipe.yaml with the schedule settings it left unset
        filled in as planned from the data (hf_adapt.schedule)."""
        settings = {section: dict(values) if isinstance(values, dict) else values
                    for section, values in self.recipe.items()}
        for key, value in ((self.train.get("planned") or {}).get("chosen") or {}).items():
            section, name = key.split(".")
            settings[section][name] = value
        return settings

    @property
    def curve(self) -> list[dict[str, Any]]:
        """The time-to-accuracy curve for the card: every evaluation, or 12 evenly spread (the last
        always among them) when there were more."""
        points = self.train.get("curve") or []
        if len(points) <= CURVE_ROWS:
            return points
        step = (len(points) - 1) / (CURVE_ROWS - 1)
        return [points[round(i * step)] for i in range(CURVE_ROWS)]

    @property
    def curve_metric(self) -> str:
        """The metric the curve's evaluations scored (the one that picks the kept weights), or loss."""
        names = {key for point in self.train.get("curve") or [] for key in point} - {"step", "epoch", "train_s", "loss"}
        return next(iter(sorted(names)), "loss")

    @property
    def dataset_name(self) -> str:
        """A Hub dataset id when the run used one, else the name of the data file's folder."""
        recipe_data = self.recipe["data"]
        if recipe_data.get("dataset"):
            return recipe_data["dataset"]
        return Path(recipe_data["train_file"]).resolve().parent.name

    @property
    def data_description(self) -> str:
        """The data the run read, as the card's text names it: the Hub dataset, or the files (with
        their folder), e.g. `train.csv` (validation `validation.csv`) in `mydata/`."""
        recipe_data = self.recipe["data"]
        if recipe_data.get("dataset"):
            return f"`{recipe_data['dataset']}`"
        train = Path(recipe_data["train_file"])
        others = [f"{split} `{Path(recipe_data[key]).name}`" for split, key in
                  (("validation", "validation_file"), ("test", "test_file")) if recipe_data.get(key)]
        return (f"`{train.name}`" + (f" ({', '.join(others)})" if others else "")
                + f" in `{train.resolve().parent.name}/`")

    def to_model_card_data(self) -> ModelCardData:
        results = [
            EvalResult(task_type="text-classification", task_name="Text Classification",
                       dataset_type=self.dataset_name, dataset_name=self.dataset_name, dataset_split=split,
                       metric_type=METRIC_TYPES[metric], metric_name=metric, metric_value=round(value, 4))
            for split, values in self.metrics.items() for metric, value in values.items() if metric in METRIC_TYPES
        ]
        return ModelCardData(
            base_model=self.base_model,
            library_name="peft" if self.kind == "adapter" else "transformers",
            pipeline_tag="text-classification",
            datasets=[self.recipe["data"]["dataset"]] if self.recipe["data"].get("dataset") else None,
            metrics=list(dict.fromkeys(METRIC_TYPES[m] for m in TASK_METRICS[self.task])),
            tags=["hf_adapt", "text-classification", self.strategy] + (["lora"] if self.strategy == "lora" else []),
            license=self.license,
            model_name=self.name,
            eval_results=results or None,
        )


def base_model_license(base_model: str) -> str | None:
    """The base model's license from its own card, when it is available locally."""
    card_path = Path(resolve_model_path(base_model)) / "README.md"
    if not card_path.is_file():
        return None
    try:
        return ModelCard.load(card_path).data.to_dict().get("license")
    except Exception:  # a malformed third-party card must not break ours
        return None


def render_card(card: CardData) -> ModelCard:
    """Render a card from the template in model_cards/."""
    return ModelCard.from_template(
        card.to_model_card_data(),
        template_path=str(TEMPLATE_DIR / TEMPLATE),
        card=card,
        model_ref=card.repo_id or "PATH/TO/THIS/FOLDER",
        base_model_url=card.base_model if Path(card.base_model).exists() else f"https://huggingface.co/{card.base_model}",
        metric_names=[m for m in (*TASK_METRICS[card.task], *(f"{m}_at_0.5" for m in TASK_METRICS[card.task]), "loss")
                      if any(m in v for v in card.metrics.values())],
        per_class={split: {label: values.get(f"f1_{label}") for label in card.labels}
                   for split, values in card.metrics.items()},
        forgetting=card.extra.get("forgetting"),
        adapt=card.settings["adapt"], optim=card.settings["optim"], train_cfg=card.settings["train"],
        model_cfg=card.recipe["model"], pair=bool(card.recipe["data"].get("text_pair_column")),
    )


def write_model_card(directory: str | Path, *, repo_id: str | None = None) -> Path:
    """Write README.md into an output directory (and into its `adapter/` folder, if any)."""
    directory = Path(directory)
    card = CardData.from_output_dir(directory, repo_id=repo_id)
    path = directory / "README.md"
    render_card(card).save(path)
    adapter_dir = directory / "adapter"
    if (adapter_dir / "adapter_config.json").is_file():
        adapter_card = CardData.from_output_dir(directory, repo_id=repo_id, kind="adapter")
        render_card(adapter_card).save(adapter_dir / "README.md")
    return path
