"""Security defaults: weights load from safetensors only (a pickle is never opened), model code from
a repo runs only with `trust_remote_code: true`, a token in the environment never reaches a file
or the console, and predict keeps memory bounded on untrusted input (truncation, batches).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import logits_of, tiny_recipe, write_sentiment_csvs

from hf_adapt.cli import main
from hf_adapt.config import ModelConfig
from hf_adapt.data import LabelMap
from hf_adapt.errors import HfAdaptError
from hf_adapt.inference import (
    predict,
    prediction_rows,
    tokenize_bounded,
    write_predictions,
)
from hf_adapt.modeling import load_model, load_trained

FAKE_TOKEN = "hf_FAKEtoken0123456789abcdefSECRET"
LABELS = LabelMap(("negative", "positive"))


class Trap:
    """Unpickling this creates `marker`: the proof that a pickle was opened."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def copy_model(source: Path, target: Path, *, skip: tuple[str, ...] = ()) -> Path:
    target.mkdir()
    for path in source.iterdir():
        if path.name not in skip:
            (target / path.name).write_bytes(path.read_bytes())
    return target


# ---------------------------------------------------------------------------------------------
# Weights: safetensors only


def test_pickle_only_model_is_refused_unopened(tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture) -> None:
    folder = copy_model(tiny_bert, tmp_path / "bin", skip=("model.safetensors",))
    torch.save({"weights": Trap(tmp_path / "PWNED")}, folder / "pytorch_model.bin")
    for load in (lambda: load_model(ModelConfig(name_or_path=str(folder)), LABELS), lambda: load_trained(folder)):
        with pytest.raises(HfAdaptError, match=r"only pickle weights \(pytorch_model.bin\), which hf_adapt never"):
            load()
    texts = tmp_path / "texts.txt"
    texts.write_text("good film\n", encoding="utf-8")
    assert main(["predict", "--model", str(folder), "--input", str(texts)]) == 2
    assert "only pickle weights" in capsys.readouterr().err
    assert not (tmp_path / "PWNED").exists()


def test_safetensors_win_over_a_pickle_beside_them(tmp_path: Path, tiny_bert: Path) -> None:
    folder = copy_model(tiny_bert, tmp_path / "both")
    torch.save({"weights": Trap(tmp_path / "PWNED")}, folder / "pytorch_model.bin")
    model = load_model(ModelConfig(name_or_path=str(folder)), LABELS)
    assert model.config.num_labels == 2
    model, _ = load_trained(folder)
    assert not (tmp_path / "PWNED").exists()


# ---------------------------------------------------------------------------------------------
# Remote code: off unless the recipe turns it on

CUSTOM_CODE = '''
from pathlib import Path
Path(__file__).with_name("RAN").touch()  # the proof that this file was executed
from transformers import BertConfig, BertForSequenceClassification

class CustomConfig(BertConfig):
    model_type = "custombert"

class CustomModel(BertForSequenceClassification):
    config_class = CustomConfig
'''


def custom_code_model(tmp_path: Path, tiny_bert: Path, model_type: str) -> Path:
    folder = copy_model(tiny_bert, tmp_path / f"custom-{model_type}")
    (folder / "custom.py").write_text(CUSTOM_CODE, encoding="utf-8")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type=model_type, auto_map={"AutoConfig": "custom.CustomConfig",
                                                   "AutoModelForSequenceClassification": "custom.CustomModel"})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def modules_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """transformers copies trusted remote code into its modules cache: keep that inside tmp_path."""
    import transformers.dynamic_module_utils as dynamic

    cache = tmp_path / "modules"
    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(cache))
    return cache


def test_remote_code_needs_trust_remote_code(tmp_path: Path, tiny_bert: Path, modules_cache: Path) -> None:
    unknown = custom_code_model(tmp_path, tiny_bert, "custombert")  # only its own code can load it
    with pytest.raises(HfAdaptError, match="needs its own Python code to load; set model.trust_remote_code: true"):
        load_model(ModelConfig(name_or_path=str(unknown)), LABELS)
    assert not list(tmp_path.rglob("RAN"))

    known = custom_code_model(tmp_path, tiny_bert, "bert")  # auto_map ignored: the built-in BERT loads
    model = load_model(ModelConfig(name_or_path=str(known)), LABELS)
    assert type(model).__name__ == "BertForSequenceClassification"
    assert not list(tmp_path.rglob("RAN"))

    # The switch really is the gate: turned on, the repo's code runs.
    model = load_model(ModelConfig(name_or_path=str(unknown), trust_remote_code=True), LABELS)
    assert type(model).__name__ == "CustomModel"
    assert list(tmp_path.rglob("RAN"))


def test_trust_remote_code_is_off_by_default() -> None:
    assert ModelConfig().trust_remote_code is False


# ---------------------------------------------------------------------------------------------
# Tokens: never printed, logged or written


@pytest.mark.integration
def test_token_never_reaches_files_or_console(tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch,
                                               capfd: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", FAKE_TOKEN)
    data = write_sentiment_csvs(tmp_path / "data", rows=24)
    recipe = tiny_recipe(tiny_bert, data, tmp_path / "run",
                         train={"keep_checkpoints": True, "tensorboard": False},
                         hub={"push": True, "repo_id": "me/tiny", "to": "local", "local_root": str(tmp_path / "hub")})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert main(["train", str(path)]) == 0
    # A push to an unreachable Hub fails with a message, which must not quote the token either.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert main(["push", str(tmp_path / "run"), "--repo-id", "me/tiny", "--to", "hub"]) == 2

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.name for p in written}
    assert {"recipe.yaml", "metrics.json", "README.md", "config.json",  # the output
            "training_args.bin", "trainer_state.json"} <= names  # the kept checkpoints
    leaks = [str(p) for p in written if FAKE_TOKEN.encode() in p.read_bytes()]
    assert leaks == []  # outputs, checkpoints (training_args.bin included) and the local hub
    out, err = capfd.readouterr()
    assert FAKE_TOKEN not in out + err
    saved = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert not [f"{section}.{key}" for section, values in saved.items() for key in values if "token" in key]


# ---------------------------------------------------------------------------------------------
# Predict on untrusted input: bounded work per batch


def test_predict_truncates_and_batches_huge_input(tmp_path: Path, tiny_bert: Path) -> None:
    model, tokenizer = load_trained(tiny_bert)
    shapes: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)),
                                    with_kwargs=True)
    texts = ["good " * 20_000, "bad", "good film " * 5_000, "fine"]  # 100k characters first
    predictions = predict(model, tokenizer, texts, batch_size=2, max_length=32)
    assert all(batch <= 2 and length <= 32 for batch, length in shapes)
    # The same labels and scores as the whole texts truncated by the tokenizer and classified at once.
    probabilities = logits_of(model, tokenizer, texts, max_length=32).softmax(-1)
    assert [p.label for p in predictions] == [model.config.id2label[int(i)] for i in probabilities.argmax(-1)]
    assert [p.score for p in predictions] == pytest.approx(probabilities.max(-1).values.tolist(), abs=1e-5)

    # A max_length beyond the model's 64 positions is capped, not a crash on the first long text.
    shapes.clear()
    predict(model, tokenizer, texts, batch_size=64, max_length=100_000)
    assert max(length for _, length in shapes) == 64


def test_predict_cli_handles_a_100k_character_line(tmp_path: Path, tiny_bert: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "texts.txt"
    source.write_text("good " * 20_000 + "\nbad film\n", encoding="utf-8")
    assert main(["predict", "--model", str(tiny_bert), "--input", str(source)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and len(rows[0]["text"]) == 100_000


def test_bounded_tokenization_equals_tokenizing_the_whole_text(tiny_bert: Path) -> None:
    _, tokenizer = load_trained(tiny_bert)
    texts = ["good " * 20_000, " " * 5_000 + "bad film", "fine", "x" * 3_000 + " good", "\n" * 40_000 + "awful plot"]
    bounded = tokenize_bounded(tokenizer, texts, 16)
    whole = tokenizer(texts, truncation=True, max_length=16, padding=True, return_tensors="pt")
    assert torch.equal(bounded["input_ids"], whole["input_ids"])
    assert torch.equal(bounded["attention_mask"], whole["attention_mask"])


def test_predict_writes_each_chunk_as_it_goes(tiny_bert: Path, tmp_path: Path) -> None:
    model, tokenizer = load_trained(tiny_bert)

    def chunks():
        yield ["good film", "bad"]
        yield ["fine"]
        raise HfAdaptError("the input broke after two chunks")

    rows = prediction_rows(model, tokenizer, chunks(), batch_size=8, max_length=16)
    assert [row["text"] for row in itertools.islice(rows, 3)] == ["good film", "bad", "fine"]
    with pytest.raises(HfAdaptError, match="after two chunks"):
        next(rows)
    previous = tmp_path / "p.jsonl"
    previous.write_text("kept\n")
    with pytest.raises(HfAdaptError):  # a failed run leaves the older file and no half-written one
        write_predictions(prediction_rows(model, tokenizer, chunks(), max_length=16), str(previous))
    assert previous.read_text() == "kept\n" and [p.name for p in tmp_path.iterdir()] == ["p.jsonl"]


@pytest.mark.integration
def test_predict_on_one_50_mb_line_stays_under_1_gb(tmp_path: Path, tiny_bert: Path) -> None:
    source = tmp_path / "big.txt"
    with source.open("w", encoding="utf-8") as handle:
        for _ in range(50):
            handle.write("good film and a great plot " * 38_837)  # ~1 MB each, no newline: one 50 MB text
        handle.write("\nbad film\n")
    output = tmp_path / "p.jsonl"
    peak = subprocess.run(
        [sys.executable, "-c", "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
                               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
         sys.executable, "-m", "hf_adapt.cli", "predict", "--model", str(tiny_bert), "--input", str(source),
         "--output", str(output)], capture_output=True, text=True, timeout=600)
    assert peak.returncode == 0, peak.stderr[-2000:]
    peak_mb = int(peak.stdout.split()[-1]) / 1024
    assert peak_mb < 1024, f"peak RSS {peak_mb:.0f} MB"
    with output.open(encoding="utf-8") as handle:
        labels = [json.loads(line)["label"] for line in handle]
    assert len(labels) == 2
