"""Tests for the `hf-adapt` command line (train, eval, predict) and scripts/train.py, in-process
through `hf_adapt.cli.main`, plus one run of the real console script."""

import csv
import io
import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import logits_of, make_tokenizer, REPO, tiny_config, tiny_recipe, write_sentiment_csvs, write_yaml
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from hf_adapt.cli import main
from hf_adapt.config import config_from_dict
from hf_adapt.engine import run_recipe

HF_ADAPT = Path(sys.executable).parent / "hf-adapt"
TEXTS = ["good movie", "the plot was awful", "a really great film", "dull and boring"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return write_sentiment_csvs(tmp_path_factory.mktemp("data"), rows=48)


@pytest.fixture(scope="module")
def trained(tiny_models, data, tmp_path_factory) -> Path:
    """One trained tiny model directory, shared by the eval and predict tests."""
    output = tmp_path_factory.mktemp("trained") / "model"
    run_recipe(config_from_dict(tiny_recipe(tiny_models["bert"], data, output, train={"epochs": 2})))
    return output


def expected_labels(model_dir: Path, texts: list[str]) -> list[str]:
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        ids = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.argmax(-1)
    return [model.config.id2label[int(i)] for i in ids]


def last_json(stdout: str) -> dict:
    """The summary `hf-adapt train` prints last: an indented JSON object starting on a line of its own."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")
    return json.loads("\n".join(lines[start:]))


# ---------------------------------------------------------------------------------------------
# train


@pytest.mark.integration
def test_a_run_records_its_time_to_accuracy_curve_in_metrics_and_card(tiny_bert, data, tmp_path, monkeypatch):
    import time

    from hf_adapt.trainer import AdaptTrainer

    evaluate = AdaptTrainer.evaluate
    monkeypatch.setattr(AdaptTrainer, "evaluate", lambda self, *a, **k: time.sleep(1.5) or evaluate(self, *a, **k))
    output = tmp_path / "out"
    recipe = tiny_recipe(tiny_bert, data, output, train={"max_steps": 6, "eval_strategy": "steps", "eval_steps": 2,
                                                          "metric_for_best": "accuracy"})

    run_recipe(config_from_dict(recipe))

    saved = json.loads((output / "metrics.json").read_text())
    curve = saved["train"]["curve"]
    assert [p["step"] for p in curve] == [2, 4, 6]
    assert all({"epoch", "train_s", "loss", "accuracy"} <= p.keys() for p in curve)
    seconds = [p["train_s"] for p in curve]
    assert 0 < seconds[0] < seconds[1] < seconds[2]
    assert saved["timings"]["train_s"] - seconds[2] >= 4.5  # the three 1.5 s evaluations are not counted
    row = next(line for line in (output / "README.md").read_text().splitlines()
               if line.startswith("| validation by training time |"))
    assert row.count(" s: ") == 3 and f"{seconds[2]:.0f} s: {curve[2]['accuracy']:.4f}" in row


@pytest.mark.integration
def test_train_writes_the_output_and_prints_its_metrics(tiny_bert, data, tmp_path, capsys):
    recipe = write_yaml(tmp_path / "recipe.yaml", tiny_recipe(tiny_bert, data, tmp_path / "ignored"))
    output = tmp_path / "out"

    code = main(["train", str(recipe), f"train.output_dir={output}", "train.max_steps=2", "train.keep=best"])

    assert code == 0
    printed = last_json(capsys.readouterr().out)
    assert printed["output_dir"] == str(output.resolve())
    assert set(printed["metrics"]) == {"validation", "test"}
    saved = json.loads((output / "metrics.json").read_text())
    assert saved["metrics"] == printed["metrics"] and saved["train"]["steps"] == 2
    resolved = yaml.safe_load((output / "recipe.yaml").read_text())
    assert resolved["train"]["output_dir"] == str(output) and resolved["train"]["max_steps"] == 2
    # The card names the data files and the evaluation whose weights were kept, and links nowhere dead.
    card = (output / "README.md").read_text()
    data_dir = data["train"].parent.name
    assert f"on `train.csv` (validation `validation.csv`, test `test.csv`) in `{data_dir}/`." in card
    kept = saved["train"]["kept"]
    assert kept["step"] == 2 and f"| weights kept | epoch {kept['epoch']} (step 2): {kept['why']} |" in card
    assert "pypi.org" not in card


def test_a_bad_recipe_exits_2_with_one_line(tiny_bert, data, tmp_path, capsys):
    recipe = write_yaml(tmp_path / "recipe.yaml", tiny_recipe(tiny_bert, data, tmp_path / "out",
                                                                optim={"learning_rte": 1e-3}))

    code = main(["train", str(recipe)])

    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hf-adapt: error: ")
    assert str(recipe) in err and "did you mean 'optim.learning_rate'?" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_output_dir_is_refused_when_not_empty_and_replaced_with_overwrite(tiny_bert, data, tmp_path, capsys):
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    recipe = write_yaml(tmp_path / "recipe.yaml", tiny_recipe(tiny_bert, data, output, train={"max_steps": 1}))

    assert main(["train", str(recipe)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert main(["train", str(recipe), "--overwrite"]) == 2  # not an hf_adapt output: never replaced
    assert "is not the output of an earlier hf_adapt run" in capsys.readouterr().err
    assert (output / "notes.txt").read_text() == "mine"

    (output / "notes.txt").unlink()
    assert main(["train", str(recipe)]) == 0  # an empty directory is used as it is
    first = (output / "metrics.json").read_text()
    assert main(["train", str(recipe)]) == 2
    assert main(["train", str(recipe), "train.max_steps=2", "--overwrite"]) == 0  # an earlier run's output is
    assert (output / "metrics.json").read_text() != first


def test_resume_without_a_checkpoint_says_so(tiny_bert, data, tmp_path, capsys):
    recipe = write_yaml(tmp_path / "recipe.yaml", tiny_recipe(tiny_bert, data, tmp_path / "out"))

    code = main(["train", str(recipe), "--resume"])

    assert code == 2
    err = capsys.readouterr().err
    assert "--resume: no checkpoint found in" in err and "run without --resume" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_train_script_takes_the_same_arguments_and_exit_codes(tiny_bert, data, tmp_path, capsys):
    script = runpy.run_path(str(REPO / "scripts" / "train.py"), run_name="train_script")
    recipe = write_yaml(tmp_path / "recipe.yaml", tiny_recipe(tiny_bert, data, tmp_path / "out"))

    assert script["main"]([str(recipe), "train.max_steps=1"]) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert script["main"]([str(recipe), "train.max_steps=1"]) == 2  # exists: refused, as hf-adapt train
    assert "already exists" in capsys.readouterr().err
    assert script["main"]([str(recipe), "train.max_steps=1", "--overwrite"]) == 0


# ---------------------------------------------------------------------------------------------
# eval and predict


@pytest.mark.integration
def test_eval_prints_and_writes_the_metrics_of_a_labelled_file(trained, data, tmp_path, capsys):
    out = tmp_path / "eval.json"

    code = main(["eval", "--model", str(trained), "--data", str(data["test"]), "--json", str(out)])

    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert {"accuracy", "macro_f1", "mcc", "f1_negative", "f1_positive"} <= set(printed)
    # the same number the training run reported for its test split
    assert printed["accuracy"] == pytest.approx(json.loads((trained / "metrics.json").read_text())
                                                ["metrics"]["test"]["accuracy"])


def test_predict_a_csv_file_into_jsonl_and_csv(trained, data, tmp_path):
    texts = [row["text"] for row in csv.DictReader(data["test"].open())]

    assert main(["predict", "--model", str(trained), "--input", str(data["test"]),
                 "--output", str(tmp_path / "p.jsonl")]) == 0
    assert main(["predict", "--model", str(trained), "--input", str(data["test"]),
                 "--output", str(tmp_path / "p.csv")]) == 0

    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == texts  # input order
    assert [r["label"] for r in rows] == expected_labels(trained, texts)
    model = AutoModelForSequenceClassification.from_pretrained(trained)  # scores: softmax of logits / temperature
    probabilities = (logits_of(model, AutoTokenizer.from_pretrained(trained), texts)
                     / model.config.calibration_temperature).softmax(-1).max(-1).values
    assert [r["score"] for r in rows] == pytest.approx(probabilities.tolist(), abs=2e-6)
    with (tmp_path / "p.csv").open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [(r["text"], r["label"]) for r in table] == [(r["text"], r["label"]) for r in rows]
    assert list(table[0]) == ["text", "label", "score"]


def test_predict_reads_stdin_and_prints_json_lines(trained, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("good movie\n\nthe plot was awful\n"))

    assert main(["predict", "--model", str(trained)]) == 0

    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["good movie", "", "the plot was awful"]  # one row per input line
    assert rows[1] == {"text": "", "label": None, "score": None}  # a blank line: an empty prediction
    assert [rows[0]["label"], rows[2]["label"]] == expected_labels(trained, ["good movie", "the plot was awful"])


def test_predict_and_eval_run_on_the_device_asked_for(trained, data, monkeypatch, capsys):
    import hf_adapt.modeling as modeling

    devices = []
    load = modeling.load_trained
    monkeypatch.setattr(modeling, "load_trained", lambda d, device="cpu": devices.append(device) or load(d, device=device))
    monkeypatch.setattr("hf_adapt.inference.load_trained", modeling.load_trained)
    monkeypatch.setattr(sys, "stdin", io.StringIO("good movie\n"))

    assert main(["predict", "--model", str(trained), "--device", "cpu"]) == 0
    assert main(["eval", "--model", str(trained), "--data", str(data["test"])]) == 0  # auto

    assert devices == ["cpu", "cuda" if torch.cuda.is_available() else "cpu"]
    capsys.readouterr()
    assert main(["predict", "--model", str(trained), "--device", "gpu0"]) == 2
    assert "--device 'gpu0' is not a device; use auto, cpu or cuda[:N]" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["eval", "--model", str(trained), "--data", str(data["test"]), "--device", "cuda"]) == 2
        assert "torch sees no CUDA GPU here; use --device cpu (or auto)" in capsys.readouterr().err


@pytest.mark.integration
def test_console_script_predicts_from_stdin(trained):
    completed = subprocess.run([str(HF_ADAPT), "predict", "--model", str(trained)], input="\n".join(TEXTS) + "\n",
                               capture_output=True, text=True, timeout=300, check=False)

    assert completed.returncode == 0, completed.stderr
    rows = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [r["label"] for r in rows] == expected_labels(trained, TEXTS)


def test_predict_from_stdin_imports_neither_datasets_nor_evaluate(trained):
    """Start-up of a one-line predict: torch and transformers are the floor; `datasets` (~1 s) and
    `evaluate` (which pulls in transformers.pipelines) are only for files with labels and for metrics."""
    code = (f"import sys; from hf_adapt.cli import main\n"
            f"code = main(['predict', '--model', {str(trained)!r}])\n"
            f"print([m for m in ('datasets', 'evaluate') if m in sys.modules], code)")
    done = subprocess.run([sys.executable, "-c", code], input="\n".join(TEXTS) + "\n", capture_output=True, text=True,
                          timeout=300)
    assert done.stdout.strip().splitlines()[-1] == "[] 0", done.stderr[-2000:]


@pytest.mark.integration
@pytest.mark.parametrize("stdin", ["binary", "closed"])
def test_predict_on_unreadable_stdin_says_so_in_one_line(trained, stdin):
    if stdin == "binary":
        command, feed = [str(HF_ADAPT), "predict", "--model", str(trained)], b"good\n\xff\xfe\x00 bad\n"
    else:
        command, feed = ["bash", "-c", f"'{HF_ADAPT}' predict --model '{trained}' <&-"], None
    done = subprocess.run(command, input=feed, capture_output=True, timeout=300, check=False)
    err = done.stderr.decode()
    assert done.returncode == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == {
        "binary": "hf-adapt: error: stdin: line 2 is not UTF-8 text; give UTF-8 text, one text per line",
        "closed": "hf-adapt: error: predict: stdin is closed; pipe texts in or give --input FILE"}[stdin]


def test_eval_normalises_labels_as_training_does(trained, data, tmp_path, capsys):
    """Training strips the labels' surrounding spaces; eval reads the same file the same way."""
    spaced = tmp_path / "spaced.csv"
    rows = list(csv.reader(data["test"].open(encoding="utf-8")))
    with spaced.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([rows[0], *[[text, f"  {label} "] for text, label in rows[1:]]])
    assert main(["eval", "--model", str(trained), "--data", str(spaced)]) == 0
    spaced_metrics = json.loads(capsys.readouterr().out)
    assert main(["eval", "--model", str(trained), "--data", str(data["test"])]) == 0
    assert spaced_metrics == json.loads(capsys.readouterr().out)


@pytest.mark.integration
def test_the_package_imports_from_a_folder_holding_a_clone_named_hf_adapt(tmp_path):
    """From the folder above a clone named `hf_adapt/`, that folder must not shadow the package (its
    recipes/ of YAML files once stood in for `hf_adapt.recipes`)."""
    shutil.copytree(REPO / "recipes", tmp_path / "hf_adapt" / "recipes")
    done = subprocess.run([sys.executable, "-c", "from hf_adapt.recipes import lora; import hf_adapt; "
                                                  "print(hf_adapt.__file__)"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(REPO / "hf_adapt" / "__init__.py")


@pytest.mark.integration
def test_eval_and_predict_read_the_columns_the_model_was_trained_on(tiny_bert, data, tmp_path, capsys):
    renamed = {}
    for split, path in data.items():  # the same rows under the user's own column names
        rows = list(csv.reader(path.open(encoding="utf-8")))
        renamed[split] = tmp_path / f"{split}.csv"
        with renamed[split].open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([["sentence", "sentiment"], *rows[1:]])
    recipe_dict = tiny_recipe(tiny_bert, renamed, tmp_path / "out", train={"max_steps": 2})
    recipe_dict["data"].update(text_column="sentence", label_column="sentiment")
    recipe = write_yaml(tmp_path / "r.yaml", recipe_dict)
    assert main(["train", str(recipe)]) == 0
    capsys.readouterr()

    assert main(["eval", "--model", str(tmp_path / "out"), "--data", str(renamed["test"])]) == 0  # no column flags
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]["test"]
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(saved["accuracy"])
    assert main(["predict", "--model", str(tmp_path / "out"), "--input", str(renamed["test"])]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["text"] for r in rows] == [row[0] for row in list(csv.reader(renamed["test"].open()))[1:]]
    assert main(["eval", "--model", str(tmp_path / "out"), "--data", str(renamed["test"]),
                 "--text-column", "text"]) == 2  # a flag still wins over the saved recipe
    assert "no column 'text'" in capsys.readouterr().err


HEAVY = ("torch", "transformers", "datasets", "peft")


@pytest.mark.parametrize("argv", [["--help"], *[[c, "--help"] for c in ("train", "eval", "predict", "push",
                                                                         "forgetting", "compare", "groupwise")],
                                  ["train", "no-such-recipe.yaml"],
                                  ["train", str(REPO / "recipes" / "quickstart_intents.yaml"), "data.train_file=x.csv"]])
def test_help_and_a_mistyped_path_answer_without_importing_torch(argv, tmp_path):
    """Start-up: torch and transformers take seconds to import; help and path typos need neither."""
    code = (f"import sys; from hf_adapt.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stderr[-2000:]


@pytest.mark.integration
@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_stdout_holds_only_the_result_and_stderr_no_library_noise(data, tmp_path, strategy):
    encoder = tmp_path / "encoder"  # a pretrained encoder without a classification head, as MiniLM
    AutoModel.from_config(tiny_config()).save_pretrained(encoder)
    make_tokenizer(encoder).save_pretrained(encoder)
    recipe = write_yaml(tmp_path / "r.yaml", tiny_recipe(encoder, data, tmp_path / "out", adapt={"strategy": strategy},
                                                         train={"max_steps": 2, "eval_strategy": "steps",
                                                                "eval_steps": 1}))
    done = subprocess.run([str(HF_ADAPT), "train", str(recipe)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert set(json.loads(done.stdout)) == {"output_dir", "metrics", "params", "timings"}  # `| jq` works
    for noise in ("LOAD REPORT", "Warning", "Generating train split", "Loading weights"):
        assert noise not in done.stderr
    assert "[hf_adapt] new, randomly initialised for the task, as expected: classifier.bias, classifier.weight" \
        in done.stderr
    logged = [json.loads(line[line.index("{"):]) for line in done.stderr.splitlines() if '"eval_accuracy"' in line]
    assert len(logged) == 2 and all(isinstance(entry["eval_accuracy"], float) for entry in logged)
    verbose = subprocess.run([str(HF_ADAPT), "--verbose", "train", str(recipe), "--overwrite"], capture_output=True,
                             text=True, timeout=300)
    assert verbose.returncode == 0 and "MISSING" in verbose.stderr  # transformers' own load report
