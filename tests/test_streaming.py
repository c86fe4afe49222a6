"""`data.streaming: true` (issue 16): a training file read as a stream, checked before the first
step, split among processes without overlap, and resumed after an interruption at the exact row
where its checkpoint was made (the same weights as an uninterrupted run)."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_recipe, write_sentiment_csvs
from test_faults import SignalAtStep

from hf_adapt import engine
from hf_adapt.cli import main
from hf_adapt.config import config_from_dict
from hf_adapt.data import BATCH_ROWS
from hf_adapt.engine import run_recipe
from hf_adapt.errors import HfAdaptError
from hf_adapt.recipes import full
from hf_adapt.streaming import load_stream_task


def streaming_recipe(model: Path, data: dict[str, Path], output: Path, **train: object) -> dict:
    recipe = tiny_recipe(model, data, output, train={"max_steps": 8, "batch_size": 4, **train})
    recipe["data"]["streaming"] = True
    del recipe["train"]["epochs"]
    return recipe


def test_a_streamed_run_trains_its_steps_and_saves_a_normal_output(tiny_bert, tmp_path, capsys):
    data = write_sentiment_csvs(tmp_path / "data", rows=60)
    result = run_recipe(config_from_dict(streaming_recipe(tiny_bert, data, tmp_path / "out")))

    assert result.train["steps"] == 8
    assert "60 rows checked; training reads them as a stream" in capsys.readouterr().err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["data"]["rows"] == {"train": 60, "validation": 15, "test": 15}
    assert metrics["data"]["sources"]["train"].endswith("(streamed)")
    assert set(metrics["metrics"]["test"]) >= {"accuracy", "macro_f1"}
    assert (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.parametrize("override, expect", [
    ({"train": {"max_steps": -1}}, "data.streaming: true trains from a stream of unknown length; set train.max_steps"),
    ({"data": {"validation_file": None}}, "which cannot be carved; give data.validation_file"),
    ({"train": {"class_weights": "balanced"}}, "does not support train.class_weights: balanced"),
])
def test_what_a_stream_cannot_do_is_refused_before_anything_runs(tiny_bert, tmp_path, override, expect):
    data = write_sentiment_csvs(tmp_path / "data", rows=20)
    recipe = streaming_recipe(tiny_bert, data, tmp_path / "out")
    for section, values in override.items():
        recipe[section].update(values)
    with pytest.raises(HfAdaptError, match=expect):
        config_from_dict(recipe)


def test_a_bad_row_deep_in_the_stream_is_named_before_training(tiny_bert, tmp_path):
    data = write_sentiment_csvs(tmp_path / "data", rows=20)
    path = tmp_path / "data" / "big.csv"
    bad = 2 * BATCH_ROWS + 7
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i in range(bad + 50):
            writer.writerow([f"good film {i}", "" if i == bad else ("positive" if i % 2 else "negative")])
    recipe = streaming_recipe(tiny_bert, {**data, "train": path}, tmp_path / "out")
    with pytest.raises(HfAdaptError, match=f"empty or NaN label in column 'label' at data row {bad + 1};"):
        run_recipe(config_from_dict(recipe))
    assert not (tmp_path / "out").exists()


def test_each_process_reads_its_own_part_of_the_stream(tiny_bert, tmp_path):
    data = write_sentiment_csvs(tmp_path / "data", rows=40)
    config = config_from_dict(streaming_recipe(tiny_bert, data, tmp_path / "out")).data
    parts = [[row["text"] for row in load_stream_task(config, rank=rank, world_size=2).splits["train"]]
             for rank in (0, 1)]
    with data["train"].open() as handle:
        everything = [row["text"] for row in csv.DictReader(handle)]
    assert len(parts[0]) == len(parts[1]) == 20 and not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(everything)


@pytest.mark.integration
def test_an_interrupted_streamed_run_resumes_to_the_uninterrupted_weights(tiny_bert, tmp_path, monkeypatch):
    data = write_sentiment_csvs(tmp_path / "data", rows=60)  # 15 batches: the 8 steps stay in the first pass
    recipes = {}
    for name in ("reference", "stopped"):
        recipes[name] = tmp_path / f"{name}.yaml"
        recipes[name].write_text(yaml.safe_dump(streaming_recipe(tiny_bert, data, tmp_path / name,
                                                                 keep_checkpoints=True)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", str(recipes["reference"])]) == 0
        original = engine.run_recipe
        monkeypatch.setattr(full, "run_recipe", lambda config: original(config, callbacks=[SignalAtStep(5)]))
        assert main(["train", str(recipes["stopped"])]) == 130
        monkeypatch.undo()
        assert main(["train", str(recipes["stopped"]), "--resume"]) == 0
    finally:
        torch.set_num_threads(threads)

    def weights(name: str) -> str:
        return hashlib.sha256((tmp_path / name / "model.safetensors").read_bytes()).hexdigest()

    assert weights("stopped") == weights("reference")  # steps 6-8 trained on the rows the reference did
    metrics = {name: json.loads((tmp_path / name / "metrics.json").read_text())["metrics"] for name in recipes}
    assert metrics["stopped"] == metrics["reference"]
