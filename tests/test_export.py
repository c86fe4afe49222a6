"""Tests for `hf-adapt export` (ONNX through torch.onnx and onnxruntime) and `predict --backend onnx`:
the parity check written beside the export, the refusal of an export that fails it, and the same
predictions as the PyTorch model for each task shape and a merged LoRA adapter."""

import io
import json
import sys
from pathlib import Path

import pytest
from conftest import tiny_recipe, write_sentiment_csvs
from test_multilabel import multilabel_data, multilabel_recipe
from test_tasks import regression_csvs, regression_recipe

from hf_adapt.cli import main
from hf_adapt.config import config_from_dict
from hf_adapt.engine import run_recipe

TEXTS = "good movie\nthe plot was awful\na really great film\ndull and boring\n"


@pytest.fixture(scope="module")
def trained(tiny_models, tmp_path_factory) -> Path:
    data = write_sentiment_csvs(tmp_path_factory.mktemp("data"), rows=48)
    output = tmp_path_factory.mktemp("trained") / "model"
    run_recipe(config_from_dict(tiny_recipe(tiny_models["bert"], data, output, train={"epochs": 2})))
    return output


def predictions(model: Path, monkeypatch, capsys, *flags: str, texts: str = TEXTS) -> list[dict]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(texts))
    assert main(["predict", "--model", str(model), *flags]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def assert_same_predictions(onnx_rows: list[dict], torch_rows: list[dict]) -> None:
    for got, want in zip(onnx_rows, torch_rows, strict=True):
        assert got.keys() == want.keys()
        assert got.get("label") == want.get("label") and got.get("labels") == want.get("labels")
        for key in ("score", "value"):
            if key in want:
                assert got[key] == pytest.approx(want[key], abs=1e-4)


@pytest.mark.integration
def test_an_export_is_checked_written_and_predicts_as_pytorch_does(trained, monkeypatch, capsys):
    assert main(["export", str(trained)]) == 0

    printed = json.loads(capsys.readouterr().out)
    folder = trained / "onnx"
    assert {p.name for p in folder.iterdir()} >= {"model.onnx", "config.json", "parity.json", "recipe.yaml"}
    parity = json.loads((folder / "parity.json").read_text())
    assert parity == printed and parity["passed"] and parity["precision"] == "fp32"
    assert parity["rows"] == 12 and parity["source"].endswith("validation.csv")  # the run's own validation texts
    assert parity["agreement"] == 1.0 and parity["max_logit_difference"] < 1e-3
    torch_rows = predictions(trained, monkeypatch, capsys)
    # Both the output directory (its one export) and the export folder itself are accepted.
    assert_same_predictions(predictions(trained, monkeypatch, capsys, "--backend", "onnx"), torch_rows)
    assert_same_predictions(predictions(folder, monkeypatch, capsys, "--backend", "onnx"), torch_rows)

    # int8 weights: written beside it, checked the same way; the output directory now holds two.
    assert main(["export", str(trained), "--quantize", "int8"]) == 0
    assert json.loads((trained / "onnx-int8" / "parity.json").read_text())["precision"] == "int8"
    assert (trained / "onnx-int8" / "model.onnx").stat().st_size < (folder / "model.onnx").stat().st_size
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", io.StringIO(TEXTS))
    assert main(["predict", "--model", str(trained), "--backend", "onnx"]) == 2
    assert "holds two exports (onnx, onnx-int8)" in capsys.readouterr().err

    # An existing export is never replaced unasked.
    before = (folder / "model.onnx").stat().st_mtime_ns
    assert main(["export", str(trained)]) == 2
    assert "onnx exists; remove it, give --overwrite" in capsys.readouterr().err
    assert (folder / "model.onnx").stat().st_mtime_ns == before


@pytest.mark.integration
def test_an_export_that_fails_its_parity_check_is_not_written(trained, tmp_path, monkeypatch, capsys):
    from hf_adapt import export

    real_call = export.OnnxClassifier.__call__

    def drifted(self, **batch):  # a broken export: its logits lean to the first class
        out = real_call(self, **batch)
        out.logits[:, 0] += 100.0
        return out

    monkeypatch.setattr(export.OnnxClassifier, "__call__", drifted)
    destination = tmp_path / "exports" / "sentiment"

    assert main(["export", str(trained), "--destination", str(destination)]) == 2

    err = capsys.readouterr().err
    assert "FAILED (needs 1 beyond near ties and max |logit difference| <= 0.001); nothing written" in err
    assert list(destination.parent.iterdir()) == []  # no export, no half-written temporary folder

    # --overwrite replaces an earlier export only, never another folder (here: the model itself).
    assert main(["export", str(trained), "--destination", str(trained), "--overwrite"]) == 2
    assert "is not an export (no model.onnx and parity.json)" in capsys.readouterr().err
    assert (trained / "model.safetensors").is_file()


def test_an_export_needs_texts_to_check_on(trained, tmp_path, capsys):
    copy = tmp_path / "moved"
    copy.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (copy / name).write_bytes((trained / name).read_bytes())  # no recipe.yaml: no validation file known

    assert main(["export", str(copy)]) == 2

    assert "give --parity-file FILE" in capsys.readouterr().err
    assert sorted(p.name for p in copy.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json",
                                                      "tokenizer_config.json"]


@pytest.mark.integration
@pytest.mark.parametrize("shape", ["lora", "multi_label", "regression_pairs"])
def test_exports_of_each_task_shape_and_of_lora_predict_as_pytorch_does(shape, tiny_bert, tmp_path, monkeypatch, capsys):
    output = tmp_path / "out"
    texts = TEXTS
    if shape == "lora":
        recipe = tiny_recipe(tiny_bert, write_sentiment_csvs(tmp_path / "data", rows=48), output,
                             adapt={"strategy": "lora"})
    elif shape == "multi_label":
        recipe = multilabel_recipe(tiny_bert, multilabel_data(tmp_path / "data", rows=64), output, "jsonl")
    else:
        recipe = regression_recipe(tiny_bert, regression_csvs(tmp_path / "data", pairs=True, rows=48), output, pairs=True)
    run_recipe(config_from_dict(recipe))

    assert main(["export", str(output)]) == 0
    assert json.loads(capsys.readouterr().out)["passed"]

    if shape == "regression_pairs":  # pairs come from a file with both columns
        source = recipe["data"]["test_file"]
        torch_rows = predictions(output, monkeypatch, capsys, "--input", source)
        onnx_rows = predictions(output, monkeypatch, capsys, "--input", source, "--backend", "onnx")
    else:
        torch_rows = predictions(output, monkeypatch, capsys, texts=texts)
        onnx_rows = predictions(output, monkeypatch, capsys, "--backend", "onnx", texts=texts)
    assert_same_predictions(onnx_rows, torch_rows)


def test_agreement_sets_near_ties_aside_for_each_task():
    from types import SimpleNamespace

    import torch

    from hf_adapt.export import agreement_of

    config = SimpleNamespace(id2label={0: "a", 1: "b"}, label_thresholds={"a": 0.5, "b": 0.3})
    # Single label: the first text is a near tie (0.5025 vs 0.4975) and flips; the second agrees.
    reference, candidate = torch.tensor([[0.01, 0.0], [5.0, 0.0]]), torch.tensor([[0.0, 0.01], [4.0, 0.0]])
    assert agreement_of("single_label", reference, candidate, config) == ("label agreement", 0.5, 1, 1.0)
    # Multi-label, at each label's threshold: a flip far from its threshold counts.
    reference, candidate = torch.tensor([[3.0, -3.0], [0.5, -3.0]]), torch.tensor([[3.0, -3.0], [-1.0, -3.0]])
    assert agreement_of("multi_label", reference, candidate, config) == ("label-set agreement", 0.5, 0, 0.5)
    measure, value, ties, beyond = agreement_of("regression", torch.tensor([[1.0], [2.0], [3.0]]),
                                                torch.tensor([[1.1], [2.0], [2.9]]), config)
    assert measure == "correlation" and ties == 0 and value == beyond == pytest.approx(0.99, abs=0.01)
