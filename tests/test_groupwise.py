"""Group-wise adaptation: the group column through the data checks, and `hf-adapt groupwise` on a
tiny model (one model or LoRA adapter per group, every model evaluated on every group)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_recipe, write_sentiment_csvs
from safetensors.torch import load_file

from hf_adapt.cli import main
from hf_adapt.config import DataConfig, config_from_dict
from hf_adapt.data import load_task_data, split_by_group
from hf_adapt.errors import HfAdaptError
from hf_adapt.groupwise import run_groupwise

GROUPS = ("alpha", "beta")
RUNS = ("global", "pretrained-alpha", "global-alpha", "pretrained-beta", "global-beta")


def write_grouped_csvs(directory: Path) -> dict[str, Path]:
    """The sentiment CSVs plus a `domain` column; each domain gets both labels in every split."""
    paths = write_sentiment_csvs(directory)
    for path in paths.values():
        header, *rows = list(csv.reader(path.open(encoding="utf-8")))
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow([*header, "domain"])
            writer.writerows([*row, GROUPS[(i // 2) % 2]] for i, row in enumerate(rows))
    return paths


@pytest.fixture
def grouped_csvs(tmp_path: Path) -> dict[str, Path]:
    return write_grouped_csvs(tmp_path / "data")


def grouped_recipe(model: Path, data: dict[str, Path], tmp_path: Path, strategy: str = "full",
                   **groupwise: float) -> dict:
    recipe = tiny_recipe(model, data, tmp_path / "unused", adapt={"strategy": strategy},
                         groupwise={"max_train_per_group": 30, "stage2_epochs": 2, **groupwise})
    recipe["data"]["group_column"] = "domain"
    return recipe


def test_group_column_is_kept_and_split_by_group(grouped_csvs):
    config = DataConfig(train_file=str(grouped_csvs["train"]), validation_file=str(grouped_csvs["validation"]),
                        test_file=str(grouped_csvs["test"]), group_column="domain")
    task = load_task_data(config, seed=0)
    assert task.splits["train"].column_names == ["text", "label", "group"]
    by_group = split_by_group(task, max_train_per_group=20, seed=0)
    assert list(by_group) == list(GROUPS)
    for group, data in by_group.items():
        assert len(data.splits["train"]) == 20
        assert set(data.splits["test"]["group"]) == {group}
        assert data.label_map == task.label_map
    assert sum(len(d.splits["test"]) for d in by_group.values()) == len(task.splits["test"])


def test_group_problems_are_named(grouped_csvs):
    files = dict(train_file=str(grouped_csvs["train"]), validation_file=str(grouped_csvs["validation"]))
    with pytest.raises(HfAdaptError, match="no column 'site'.*data.group_column"):
        load_task_data(DataConfig(**files, group_column="site"))
    task = load_task_data(DataConfig(**files, group_column="domain"))
    with pytest.raises(HfAdaptError, match=r"groupwise.groups \['gamma'\] do not occur.*alpha, beta"):
        split_by_group(task, ["alpha", "gamma"])


def test_groupwise_section_needs_the_group_column(tiny_bert, grouped_csvs, tmp_path):
    recipe = grouped_recipe(tiny_bert, grouped_csvs, tmp_path)
    recipe["data"]["group_column"] = None
    recipe["groupwise"]["stage2_epochs"] = 0
    with pytest.raises(HfAdaptError) as err:
        config_from_dict(recipe)
    assert "groupwise section needs data.group_column" in str(err.value)
    assert "groupwise.stage2_epochs must be > 0" in str(err.value)


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.integration
def test_groupwise_trains_one_model_per_group_and_reports_every_group(tiny_bert, grouped_csvs, tmp_path):
    report = tmp_path / "report"
    # A vanishing stage-2 learning rate leaves each stage-2 model where it started: that shows where.
    recipe = grouped_recipe(tiny_bert, grouped_csvs, tmp_path, stage2_learning_rate=1e-9)
    data = run_groupwise(config_from_dict(recipe), report)

    for name in RUNS:
        assert (report / name / "model.safetensors").is_file(), name
    assert data["groups"] == list(GROUPS)
    assert set(data["accuracy"]) == set(RUNS)
    assert all(set(row) == set(GROUPS) for row in data["accuracy"].values())
    assert set(data["summary"]) == set(GROUPS)
    markdown = (report / "report.md").read_text()
    assert "| alpha |" in markdown and "| beta |" in markdown and "## Reading" in markdown
    assert json.loads((report / "report.json").read_text())["groups"] == list(GROUPS)
    assert (report / "report.png").read_bytes()[:4] == b"\x89PNG"
    # Each run trained in its own process, from a recipe saved beside the report.
    for name in RUNS:
        assert data["models"][name]["peak_rss_mib"] > 100
        assert config_from_dict(yaml.safe_load((report / "recipes" / f"{name}.yaml").read_text())).train.output_dir \
            == str(report / name)

    # Stage 2 trains on its group only, with the stage-2 epochs; global → group starts from stage 1.
    metrics = json.loads((report / "global-alpha" / "metrics.json").read_text())
    assert metrics["data"]["rows"]["train"] == 30 and metrics["train"]["epochs"] == 2
    assert json.loads((report / "global" / "metrics.json").read_text())["data"]["rows"]["train"] == 60
    stage2_recipe = yaml.safe_load((report / "global-alpha" / "recipe.yaml").read_text())
    assert stage2_recipe["model"]["init_from"] == str((report / "global").resolve())
    assert yaml.safe_load((report / "pretrained-alpha" / "recipe.yaml").read_text())["model"]["init_from"] is None
    stage1, pretrained = _weights(report / "global"), _weights(tiny_bert)
    assert _max_difference(stage1, pretrained) > 1e-3  # stage 1 trained
    for group in GROUPS:
        assert _max_difference(_weights(report / f"global-{group}"), stage1) < 1e-6
        assert _max_difference(_weights(report / f"pretrained-{group}"), pretrained) < 1e-6

    # --reuse: the finished runs are kept as they are, the report is written again.
    before = {name: (report / name / "model.safetensors").stat().st_mtime_ns for name in RUNS}
    (report / "report.md").unlink()
    run_groupwise(config_from_dict(recipe), report, reuse=True)
    assert {name: (report / name / "model.safetensors").stat().st_mtime_ns for name in RUNS} == before
    assert (report / "report.md").is_file()


@pytest.mark.integration
def test_groupwise_lora_trains_one_adapter_per_group_over_the_global_model(tiny_bert, grouped_csvs, tmp_path):
    report = tmp_path / "report"
    recipe = grouped_recipe(tiny_bert, grouped_csvs, tmp_path, "lora", stage2_epochs=1, groups=["alpha"])
    data = run_groupwise(config_from_dict(recipe), report)

    assert (report / "global" / "model.safetensors").is_file()  # stage 1: merged, the base of stage 2
    for group in ("alpha",):
        for prefix, base in (("global", str((report / "global").resolve())), ("pretrained", str(tiny_bert))):
            run = report / f"{prefix}-{group}"
            assert (run / "adapter_model.safetensors").is_file() and not (run / "model.safetensors").exists()
            assert json.loads((run / "adapter_config.json").read_text())["base_model_name_or_path"] == base
    assert set(data["accuracy"]) == {"global", "pretrained-alpha", "global-alpha"}


def test_groupwise_cli_refuses_a_non_empty_report_dir(tiny_bert, grouped_csvs, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(grouped_recipe(tiny_bert, grouped_csvs, tmp_path)))
    report = tmp_path / "report"
    report.mkdir()
    (report / "notes.txt").write_text("mine")
    assert main(["groupwise", str(recipe), "--report", str(report)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert sorted(p.name for p in report.iterdir()) == ["notes.txt"]
