"""Bad input is refused with one line that names the problem and what to do, exit status 2, no
traceback (unless --debug), and nothing written.

Every case is one row of `CASES`: an id, a function that lays out the bad input in a fresh
directory and returns the `hf-adapt` arguments, and a piece of the expected message (`{root}`
stands for that directory, so the message is checked to name the file). Each row runs through
`hf_adapt.cli.main` in-process; a few also run through the real console script in a subprocess.
The closing note lists these rows with the line each prints (`pytest -s -k test_bad_input -rA`
shows them).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from conftest import snapshot_files as snapshot
from conftest import tiny_recipe, write_sentiment_csvs

from hf_adapt.cli import main

HF_ADAPT = Path(sys.executable).parent / "hf-adapt"


class Workspace:
    """A fresh directory with good data and a good tiny model; cases spoil one thing each."""

    def __init__(self, root: Path, model: Path):
        self.root, self.model = root, model
        self.data = write_sentiment_csvs(root / "data", rows=24)
        self.output_dir = root / "out"

    def file(self, name: str, content: str | bytes) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return str(path)

    def recipe(self, **sections: dict) -> str:
        recipe = tiny_recipe(self.model, self.data, self.output_dir)
        for section, values in sections.items():
            recipe.setdefault(section, {}).update(values)
        return self.file("recipe.yaml", yaml.safe_dump(recipe))

    def train(self, *extra: str, **sections: dict) -> list[str]:
        return ["train", self.recipe(**sections), *extra]

    def train_on(self, key: str, name: str, content: str | bytes) -> list[str]:
        """`train` with `data.KEY` naming a file NAME that holds `content`."""
        return self.train(data={key: self.file(name, content)})

    def after(self, _: object) -> "Workspace":
        """Chain a setup step into a case's one-liner: `w.after(w.file(...)).train()`."""
        return self

    def linked_output(self, name: str, link: str, target: str) -> str:
        """A copy of the tiny model as an output folder whose file `link` links to `target`."""
        folder = Path(self.model_folder(name))
        (folder / link).unlink(missing_ok=True)
        (folder / link).symlink_to(target)
        return str(folder)

    def hold_lock(self, pid: int = 4242) -> "Workspace":
        """Lock the output as a running hf-adapt run with this PID would (the lock is per open file)."""
        self.lock = os.open(self.root / ".out.lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(self.lock, f"{pid}\n".encode())
        return self

    def model_folder(self, name: str, *, weights: str = "safetensors", config: dict | None = None,
                     tokenizer: bool = True) -> str:
        """A copy of the tiny model: `weights` 'pickle' swaps model.safetensors for a booby-trapped
        pytorch_model.bin (loading it would create PWNED), 'truncated' cuts it in half, 'garbage'
        replaces it with text; `config` entries go into config.json; `tokenizer=False` leaves the
        tokenizer files out."""
        folder = self.root / name
        folder.mkdir()
        for path in self.model.iterdir():
            if path.name.startswith("tokenizer") and not tokenizer:
                continue
            if weights == "safetensors" or path.name != "model.safetensors":
                (folder / path.name).write_bytes(path.read_bytes())
        if weights == "pickle":
            torch.save({"weights": Trap(str(self.root / "PWNED"))}, folder / "pytorch_model.bin")
        if weights == "truncated":
            data = (self.model / "model.safetensors").read_bytes()
            (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
        if weights == "garbage":
            (folder / "model.safetensors").write_text("not weights at all\n" * 10)
        if config:
            data = json.loads((folder / "config.json").read_text())
            (folder / "config.json").write_text(json.dumps({**data, **config}))
        return str(folder)


class Trap:
    """Unpickling this runs code: the reason hf_adapt never unpickles weights."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@dataclass
class Bad:
    id: str
    argv: Callable[[Workspace], list[str]]
    expect: str  # a piece of the message; {root} is the case's directory, {model} the good model


TEXTS = "text,label\ngood film,positive\nbad film,negative\n"
BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))
BOMB_IN_A_VALUE = ("model:\n  name_or_path: &a [x, x, x, x, x, x]\n  max_length: &b [*a, *a, *a, *a, *a, *a]\n"
                   "  revision: &c [*b, *b, *b, *b, *b, *b]\n  init_from: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n")
STS = "sentence1,sentence2,score\na good film,a great film,4.5\nbad,a fine plot,1.0\nthe film,the movie,5.0\n"
LATIN1 = "text,label\ncafé bon,positive\nbad,negative\n".encode("latin-1")
CUSTOM_CODE = {"architectures": ["CustomModel"], "model_type": "custombert",
               "auto_map": {"AutoConfig": "custom.CustomConfig",
                            "AutoModelForSequenceClassification": "custom.CustomModel"}}
UNSEEN = "label(s) 'neutral' in column 'label' never occur in the training data (known: negative, positive)"

CASES = [
    # --- data files
    Bad("train-file-missing", lambda w: w.train(data={"train_file": f"{w.root}/missing.csv"}),
        "data file {root}/missing.csv not found: check the path"),
    Bad("validation-file-missing", lambda w: w.train(data={"validation_file": f"{w.root}/val.csv"}),
        "data file {root}/val.csv not found"),
    Bad("empty-file", lambda w: w.train_on("train_file", "empty.csv", ""), "{root}/empty.csv: the file is empty"),
    Bad("header-only", lambda w: w.train_on("train_file", "header.csv", "text,label\n"), "{root}/header.csv: no rows"),
    Bad("not-utf8", lambda w: w.train_on("train_file", "latin1.csv", LATIN1),
        "{root}/latin1.csv: not UTF-8 text; save the file as UTF-8"),
    Bad("csv-unclosed-quote", lambda w: w.train_on("train_file", "quote.csv", 'text,label\n"good,positive\nbad,neg\n'),
        "{root}/quote.csv: could not be read as CSV (Error tokenizing data"),
    Bad("csv-extra-fields", lambda w: w.train_on("train_file", "ragged.csv", TEXTS + "meh,negative,oops,again\n"),
        "{root}/ragged.csv: could not be read as CSV (Error tokenizing data. C error: Expected 2 fields in line 4, "
        "saw 4)"),
    Bad("csv-tab-separated", lambda w: w.train_on("train_file", "tabs.csv", TEXTS.replace(",", "\t")),
        "{root}/tabs.csv: no columns 'text' and 'label' (found: text\tlabel); set data.text_column and "
        "data.label_column, or, as the file separates "
        "columns with a tab, save it comma-separated (or name it .tsv)"),
    # The task (data.task) and its labels
    Bad("regression-not-a-number", lambda w: w.train(data={"train_file": w.file("r.csv", "text,label\ngood,1.5\nbad,high\nok,2.5\nmeh,0.5\n"),
                                                           "task": "regression"}),
        "{root}/r.csv: 'high' in column 'label' at data row 2 is not a number, and data.task is regression; fix the "
        "value or drop the row"),
    Bad("regression-not-a-number-in-validation", lambda w: w.train(
        data={"task": "regression", "train_file": w.file("r.csv", "text,label\ngood,1.5\nbad,0.5\nok,2.5\n"),
              "validation_file": w.file("v.csv", "text,label\ngood,1.5\nbad,lots\n")}),
        "{root}/v.csv: 'lots' in column 'label' at data row 2 is not a number, and data.task is regression"),
    Bad("regression-constant-target", lambda w: w.train(data={"train_file": w.file("c.csv", "text,label\na,2.5\nb,2.5\nc,2.5\n"),
                                                              "validation_file": w.file("cv.csv", "text,label\na,2.5\n"),
                                                              "test_file": None, "task": "regression"}),
        "{root}/c.csv: every row's 'label' is 2.5; a regression needs targets that vary"),
    Bad("auto-many-whole-numbers", lambda w: w.train_on("train_file", "ids.csv", "text,label\n" + "".join(
        f"text {i},{i}\n" for i in range(60))),
        "{root}/ids.csv: column 'label' holds 60 distinct whole numbers: class ids or a number to predict? set "
        "data.task: single_label or data.task: regression"),
    Bad("single-label-many-numbers", lambda w: w.train(data={"task": "single_label", "train_file": w.file(
        "n.csv", "text,label\n" + "".join(f"text {i},{i / 7:.3f}\n" for i in range(60)))}),
        "{root}/n.csv: column 'label' holds 60 distinct numbers, which looks like a number to predict, not classes; "
        "set data.task: regression (or name the classes)"),
    Bad("label-lists-single-label", lambda w: w.train(data={"task": "single_label", "train_file": w.file(
        "multi.jsonl", "".join(json.dumps({"text": f"text {i}", "label": ["joy", "love"][: 1 + i % 2]}) + "\n"
                               for i in range(8)))}),
        "{root}/multi.jsonl: column 'label' holds lists (several labels per text), and data.task is single_label; "
        "set data.task: multi_label (or auto)"),
    Bad("label-list-not-a-list", lambda w: w.train_on("train_file", "mixed.jsonl",
                                                      '{"text": "a", "label": ["joy"]}\n{"text": "b", "label": "joy"}\n'
                                                      '{"text": "c", "label": ["love"]}\n{"text": "d", "label": []}\n'),
        "{root}/mixed.jsonl: column 'label' at data row 2 holds 'joy', not a list of labels; write every row's labels "
        "as a list (JSON), or set data.label_separator to split a string such as 'joy;love'"),
    Bad("label-columns-not-0-1", lambda w: w.train(data={"label_columns": ["joy", "love"], "validation_file": None,
                                                         "test_file": None, "train_file": w.file(
        "cols.csv", "text,joy,love\na,1,0\nb,0,1\nc,yes,1\nd,1,1\n")}),
        "{root}/cols.csv: 'yes' in label column 'joy' at data row 3 is not 0 or 1; data.label_columns must each hold "
        "0/1 (1: the row has that label)"),
    Bad("label-columns-missing", lambda w: w.train(data={"label_columns": ["joy", "fear"], "train_file": w.file(
        "cols2.csv", "text,joy,love\na,1,0\nb,0,1\n")}),
        "{root}/cols2.csv: no column 'fear' (found: text, joy, love); set data.label_columns[1]"),
    # data.long_text: chunk (max_length 32 in the tiny recipe; its tokenizer adds 2 special tokens)
    Bad("chunk-stride-not-below-max-length", lambda w: w.train(data={"long_text": "chunk", "chunk_stride": 32}),
        "data.chunk_stride must be in 0..31 (fewer tokens than a window, model.max_length 32), got 32; lower it"),
    Bad("chunk-stride-leaves-no-new-tokens", lambda w: w.train(data={"long_text": "chunk", "chunk_stride": 30}),
        "data.chunk_stride 30 leaves no new tokens in a window of model.max_length 32 (2 of them the tokenizer's "
        "special tokens); set data.chunk_stride below 30"),
    Bad("chunk-with-pairs", lambda w: w.train(data={"long_text": "chunk", "text_pair_column": "label2"}),
        "data.long_text: chunk cuts one text into windows, and data.text_pair_column gives pairs"),
    Bad("long-text-unknown", lambda w: w.train(data={"long_text": "slide"}),
        "data.long_text must be one of truncate, chunk, got 'slide'"),
    Bad("label-columns-single-label", lambda w: w.train(data={"label_columns": ["joy", "love"], "task": "single_label"}),
        "data.label_separator and data.label_columns give several labels per text, and data.task is 'single_label'; "
        "set data.task: multi_label"),
    Bad("label-separator-and-columns", lambda w: w.train(data={"label_columns": ["joy", "love"], "label_separator": ";"}),
        "data.label_separator splits one label column, data.label_columns names several: give one of them"),
    Bad("task-unknown", lambda w: w.train(data={"task": "multilabel"}),
        "data.task must be one of auto, single_label, multi_label, regression, got 'multilabel'"),
    Bad("metric-of-another-task", lambda w: w.train(data={"train_file": w.file("f.csv", "text,label\na,0.5\nb,1.5\nc,2.5\nd,3.5\n"),
                                                          "validation_file": w.file("fv.csv", "text,label\na,0.5\nb,1.5\n"),
                                                          "test_file": None},
                                                    train={"metric_for_best": "accuracy"}),
        "train.metric_for_best 'accuracy' does not score a regression task; use pearson, spearman, mse, mae, loss or "
        "auto"),
    Bad("json-malformed", lambda w: w.train_on("train_file", "bad.json", '[{"text": "good", "label": '),
        "{root}/bad.json: could not be read as JSON"),
    Bad("jsonl-malformed-line", lambda w: w.train_on("train_file", "bad.jsonl",
                                                     '{"text": "good", "label": "positive"}\n{"text": bad}\n'),
        "{root}/bad.jsonl: could not be read as JSON (JSON parse error"),
    Bad("unsupported-format", lambda w: w.train_on("train_file", "train.xlsx", "x"),
        "{root}/train.xlsx: unsupported file type '.xlsx'; use .csv, .tsv, .json, .jsonl or .parquet"),
    # --- columns and values
    Bad("text-column-missing", lambda w: w.train(data={"text_column": "sentence"}),
        "{root}/data/train.csv: no column 'sentence' (found: text, label); set data.text_column"),
    Bad("label-column-missing", lambda w: w.train(data={"label_column": "sentiment"}),
        "no column 'sentiment' (found: text, label); set data.label_column"),
    Bad("text-and-label-columns-missing", lambda w: w.train(data={"text_column": "review", "label_column": "stars"}),
        "{root}/data/train.csv: no columns 'review' and 'stars' (found: text, label); set data.text_column and "
        "data.label_column"),
    Bad("empty-text", lambda w: w.train_on("train_file", "t.csv", TEXTS + '"   ",negative\n'),
        "{root}/t.csv: empty or NaN text in column 'text' at data row 3"),
    Bad("nan-text", lambda w: w.train_on("train_file", "t.csv", TEXTS + ",negative\n"),
        "{root}/t.csv: empty or NaN text in column 'text' at data row 3"),
    # --- labels
    Bad("nan-label", lambda w: w.train_on("train_file", "t.csv", TEXTS + "fine film,\n"),
        "{root}/t.csv: empty or NaN label in column 'label' at data row 3"),
    Bad("unseen-label-validation", lambda w: w.train_on("validation_file", "v.csv", TEXTS + "so so,neutral\n"),
        "{root}/v.csv: " + UNSEEN),
    Bad("unseen-label-test", lambda w: w.train_on("test_file", "t.csv", TEXTS + "so so,neutral\n"),
        "{root}/t.csv: " + UNSEEN),
    Bad("single-class", lambda w: w.train_on("train_file", "t.csv", "text,label\ngood,positive\nfine,positive\n"),
        "{root}/t.csv: training data has a single class ('positive')"),
    # --- the recipe YAML and overrides
    Bad("recipe-missing", lambda w: ["train", f"{w.root}/nope.yaml"], "recipe file {root}/nope.yaml not found"),
    Bad("yaml-syntax", lambda w: ["train", w.file("r.yaml", "model:\n  name_or_path: [oops\ntrain: {}\n")],
        "{root}/r.yaml: invalid YAML at line 3, column 6: expected ',' or ']', but got ':'; fix the syntax"),
    Bad("yaml-not-a-mapping", lambda w: ["train", w.file("r.yaml", "- model\n- data\n")],
        "{root}/r.yaml: a recipe must be a mapping of sections"),
    Bad("unknown-key", lambda w: w.train(optim={"learnin_rate": 1e-3}),
        "{root}/recipe.yaml: unknown key 'optim.learnin_rate' (did you mean 'optim.learning_rate'?)"),
    Bad("unknown-section", lambda w: w.train(trainer={"epochs": 1}),
        "{root}/recipe.yaml: unknown section 'trainer' (did you mean 'train'?)"),
    Bad("unknown-override-key", lambda w: w.train("train.epoch=2"),
        "unknown key 'train.epoch' (did you mean 'train.epochs'?)"),
    Bad("override-syntax", lambda w: w.train("optim.learning_rate"),
        "override 'optim.learning_rate' must look like section.key=value"),
    Bad("wrong-type", lambda w: w.train(train={"epochs": "three"}), "train.epochs must be a finite number or null, got 'three'"),
    Bad("wrong-type-bool", lambda w: w.train(train={"group_by_length": "sometimes"}),
        "train.group_by_length must be true/false, got 'sometimes'"),
    Bad("pad-multiple-zero", lambda w: w.train(train={"pad_to_multiple_of": 0}),
        "train.pad_to_multiple_of must be > 0 or null, got 0"),
    Bad("lr-zero", lambda w: w.train(optim={"learning_rate": 0}), "optim.learning_rate must be > 0, got 0.0"),
    Bad("lr-negative", lambda w: w.train("optim.learning_rate=-1e-5"), "optim.learning_rate must be > 0, got -1e-05"),
    Bad("decay-above-one", lambda w: w.train(optim={"layer_decay": 1.5}),
        "optim.layer_decay must be in (0, 1], got 1.5"),
    Bad("decay-zero", lambda w: w.train(optim={"layer_decay": 0}), "optim.layer_decay must be in (0, 1], got 0.0"),
    Bad("several-errors-at-once", lambda w: w.train(optim={"learning_rate": -1, "layer_decay": 2}),
        "optim.learning_rate must be > 0, got -1.0; optim.layer_decay must be in (0, 1], got 2.0"),
    Bad("unknown-strategy", lambda w: w.train(adapt={"strategy": "qlora"}),
        "adapt.strategy must be one of full, partial, lora, got 'qlora'"),
    Bad("lora-option-in-full-recipe", lambda w: w.train(adapt={"lora_r": 16}),
        "adapt.lora_r apply to strategy 'lora' only, but adapt.strategy is 'full'"),
    Bad("freeze-more-layers-than-model", lambda w: w.train(adapt={"strategy": "partial", "freeze_layers": 5}),
        "adapt.freeze_layers is 5 but the model has 2 encoder layers; use at most 2"),
    Bad("max-length-beyond-model", lambda w: w.train(model={"max_length": 4096}),
        "model.max_length is 4096 but {model} accepts at most 64 tokens; set model.max_length to 64 or less"),
    # --- model paths and model code
    Bad("model-folder-missing", lambda w: w.train(model={"name_or_path": f"{w.root}/no-model"}),
        "model.name_or_path '{root}/no-model': no such folder; give a local model folder or a Hub id"),
    Bad("pickle-weights-only", lambda w: w.train(model={"name_or_path": w.model_folder("bin", weights="pickle")}),
        "model.name_or_path {root}/bin: only pickle weights (pytorch_model.bin), which hf_adapt never loads"),
    Bad("remote-code-not-trusted",
        lambda w: w.train(model={"name_or_path": w.model_folder("custom", config=CUSTOM_CODE)}),
        "needs its own Python code to load; set model.trust_remote_code: true only if you have read and trust "
        "that code"),
    # --- LoRA targets
    Bad("lora-target-absent",
        lambda w: w.train(adapt={"strategy": "lora", "lora_target_modules": ["q_proj", "v_proj"]}),
        "adapt.lora_target_modules ['q_proj', 'v_proj'] not found in the model; Linear modules it has: "),
    Bad("lora-target-in-head", lambda w: w.train(adapt={"strategy": "lora", "lora_target_modules": ["classifier"]}),
        "adapt.lora_target_modules ['classifier'] are in the classifier head, which is trained fully"),
    # --- output directories
    Bad("output-dir-not-empty", lambda w: w.after(w.file("out/keep.txt", "precious")).train(),
        "train.output_dir {root}/out already exists and is not empty; choose another directory or pass --overwrite"),
    Bad("output-dir-is-a-file", lambda w: w.train(train={"output_dir": w.file("out.txt", "x")}),
        "train.output_dir {root}/out.txt is a file"),
    Bad("unfinished-run-without-resume",
        lambda w: w.after(w.file(".out.work/checkpoint-3/trainer_state.json", "{}")).train(),
        "{root}/.out.work holds checkpoints of an unfinished run into {root}/out; pass --resume"),
    Bad("resume-without-checkpoint", lambda w: w.train("--resume"),
        "--resume: no checkpoint found in {root}/.out.work; run without --resume to start afresh"),
    # --- --overwrite replaces only an earlier hf_adapt output, never the user's folders or inputs
    Bad("overwrite-user-folder",
        lambda w: w.after(w.file("out/notes.md", "mine")).after(w.file("out/.git/HEAD", "ref")).train("--overwrite"),
        "train.output_dir {root}/out is not the output of an earlier hf_adapt run (no metrics.json + recipe.yaml "
        "from one), and --overwrite replaces only those; choose a new or empty directory"),
    Bad("overwrite-folder-with-foreign-metrics",
        lambda w: w.after(w.file("out/metrics.json", "{}")).after(w.file("out/recipe.yaml", "a: 1")).train(
            "--overwrite"), "{root}/out is not the output of an earlier hf_adapt run"),
    Bad("overwrite-data-folder", lambda w: w.train("--overwrite", train={"output_dir": str(w.root / "data")}),
        "train.output_dir {root}/data contains data.train_file {root}/data/train.csv; a run replaces its whole "
        "output directory, so give it one of its own"),
    Bad("overwrite-working-directory", lambda w: w.train("--overwrite", train={"output_dir": str(w.root)}),
        "train.output_dir {root} contains data.train_file {root}/data/train.csv"),
    Bad("output-is-the-base-model", lambda w: w.train("--overwrite", train={"output_dir": str(w.model)}),
        "train.output_dir {model} is model.name_or_path {model}"),
    Bad("output-inside-the-base-model", lambda w: w.train(train={"output_dir": str(w.model / "run")}),
        "train.output_dir {model}/run sits inside model.name_or_path {model}"),
    Bad("output-is-init-from",
        lambda w: w.train("--overwrite", model={"init_from": w.model_folder("prev")},
                          train={"output_dir": str(w.root / "prev")}),
        "train.output_dir {root}/prev is model.init_from {root}/prev"),
    Bad("output-is-the-probe", lambda w: w.train(forgetting={"probe": w.file("probe/stsb.csv", STS)},
                                                 train={"output_dir": str(w.root / "probe")}),
        "train.output_dir {root}/probe contains forgetting.probe {root}/probe/stsb.csv"),
    # --- one run per output directory at a time
    Bad("output-in-use", lambda w: w.hold_lock(4242).train(),
        "train.output_dir {root}/out is in use by another hf-adapt run (PID 4242); wait for it to finish, or write "
        "this run to another directory"),
    Bad("output-in-use-overwrite", lambda w: w.hold_lock(4243).train("--overwrite"),
        "train.output_dir {root}/out is in use by another hf-adapt run (PID 4243)"),
    # --- recipe values that crashed (issue 17): each a one-line refusal now
    Bad("seed-too-large", lambda w: w.train("train.seed=4294967296"),
        "train.seed must be in 0..4294967295 (numpy's range), got 4294967296"),
    Bad("seed-negative", lambda w: w.train(train={"seed": -1}), "train.seed must be in 0..4294967295"),
    Bad("epochs-infinite", lambda w: w.train("train.epochs=.inf"), "train.epochs must be a finite number or null, got inf"),
    Bad("warmup-infinite", lambda w: w.train(optim={"warmup": float("inf")}),
        "optim.warmup must be a finite number or null, got inf"),
    Bad("scheduler-unknown", lambda w: w.train(optim={"scheduler": "cosine_annealing"}),
        "optim.scheduler must be one of linear, cosine, cosine_with_restarts, polynomial, constant, "
        "constant_with_warmup, inverse_sqrt, got 'cosine_annealing'"),
    Bad("max-length-absurd", lambda w: w.train("model.max_length=1e30"),
        "model.max_length must be in 1..1,000,000 (tokens), got 1000000000000000019884624838656"),
    Bad("epochs-absurd", lambda w: w.train("train.epochs=1e9"),
        "train.epochs must be at most 1,000 (a schedule that long runs for months), got 1e+09"),
    Bad("max-steps-absurd", lambda w: w.train("train.max_steps=1e12"),
        "train.max_steps must be at most 100,000,000, got 1,000,000,000,000"),
    Bad("text-column-is-label-column", lambda w: w.train(data={"text_column": "label"}),
        "data.text_column and data.label_column are both 'label': the model would read its answer"),
    Bad("pair-column-is-text-column", lambda w: w.train(data={"text_pair_column": "text"}),
        "data.text_column and data.text_pair_column are both 'text'"),
    Bad("validation-fraction-leaves-nothing",
        lambda w: w.train(data={"validation_file": None, "validation_fraction": 0.99}),
        "data.validation_fraction 0.99 of 24 training rows leaves 0 to train on; lower it"),
    Bad("learning-rate-diverges", lambda w: w.train(optim={"learning_rate": 1e30}, train={"epochs": 2}),
        "the training loss became nan at step 2: the run diverged; lower optim.learning_rate (it is 1e+30)"),
    # --- the recipe file itself
    Bad("yaml-duplicate-section",
        lambda w: ["train", w.file("r.yaml", yaml.safe_dump(tiny_recipe(w.model, w.data, w.output_dir))
                                   + "train:\n  epochs: 2\n")],
        "{root}/r.yaml: invalid YAML at line 18, column 1: duplicate key 'train' (first at line 11); YAML would "
        "keep only the last one: merge the two"),
    Bad("yaml-duplicate-key", lambda w: ["train", w.file("r.yaml", "optim:\n  warmup: 0\n  warmup: 0.1\n")],
        "{root}/r.yaml: invalid YAML at line 3, column 3: duplicate key 'warmup' (first at line 2)"),
    Bad("yaml-billion-laughs", lambda w: ["train", w.file("r.yaml", BILLION_LAUGHS)],
        "{root}/r.yaml: invalid YAML at line 4, column 16: more than 20 aliases (*name); write the values out"),
    Bad("yaml-bomb-in-a-value", lambda w: ["train", w.file("r.yaml", BOMB_IN_A_VALUE)],
        "{root}/r.yaml: invalid YAML at line 5, column 47: more than 20 aliases"),
    Bad("override-with-aliases", lambda w: w.train("data.text_column=[&a [x, x], *a, *a, *a, *a, *a, *a, *a, *a, "
                                                  "*a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a]"),
        "override 'data.text_column=[&a [x, x], *a"),
    Bad("huge-value-echoed-short", lambda w: w.train(data={"text_column": ["x" * 50] * 20000}),
        "data.text_column must be a string, got ['xxxxx"),
    # --- model folders
    Bad("model-without-tokenizer-files",
        lambda w: w.train(model={"name_or_path": w.model_folder("notok", tokenizer=False)}),
        "model.name_or_path {root}/notok: its tokenizer knows only its 5 special tokens and reads 'the movie was good "
        "and the plot was fine' as unknown tokens only; the folder lacks its tokenizer files"),
    Bad("predict-model-without-tokenizer-files",
        lambda w: ["predict", "--model", w.model_folder("notok", tokenizer=False), "--input", str(w.data["test"])],
        "model {root}/notok: its tokenizer knows only its 5 special tokens"),
    Bad("weights-truncated", lambda w: w.train(model={"name_or_path": w.model_folder("cut", weights="truncated")}),
        "{root}/cut/model.safetensors: damaged weights (Error while deserializing header"),
    Bad("weights-garbage",
        lambda w: ["predict", "--model", w.model_folder("junk", weights="garbage"), "--input", str(w.data["test"])],
        "{root}/junk/model.safetensors: damaged weights"),
    # --- push
    Bad("push-link-out-of-the-output",
        lambda w: ["push", w.linked_output("out", "vocab.txt", w.file("secret.txt", "password")), "--repo-id", "me/m",
                   "--local-root", str(w.root / "hub")],
        "push: {root}/out/vocab.txt is a link to {root}/secret.txt, outside {root}/out; push publishes only files "
        "inside the output directory"),
    Bad("push-revision-dot", lambda w: ["push", str(w.model), "--repo-id", "me/m", "--revision", ".",
                                        "--local-root", str(w.root / "hub")],
        "push: --revision '.': no part of a branch name may start with '.'"),
    Bad("push-revision-refs", lambda w: ["push", str(w.model), "--repo-id", "me/m", "--revision", "a/../b",
                                         "--local-root", str(w.root / "hub")],
        "push: --revision 'a/../b': no part of a branch name may start with '.'"),
    Bad("hub-revision-in-recipe", lambda w: w.train(hub={"push": True, "repo_id": "me/m", "revision": "x.lock"}),
        "hub.revision 'x.lock': no part of a branch name may start with '.', end with '.lock'"),
    Bad("eval-label-empty", lambda w: ["eval", "--model", str(w.model), "--data", w.file("e.csv", TEXTS + "meh,\n")],
        "{root}/e.csv: empty or NaN label in column 'label' at data row 3; label every row or drop it"),
    # --- hub settings
    Bad("hub-push-without-repo", lambda w: w.train(hub={"push": True}), "hub.push is true but hub.repo_id is not set"),
    Bad("hub-repo-id-malformed", lambda w: w.train(hub={"push": True, "repo_id": "just-a-name"}),
        "hub.repo_id must look like ORG/NAME, got 'just-a-name'"),
    Bad("hub-to-invalid", lambda w: w.train(hub={"to": "s3"}), "hub.to must be local or hub, got 's3'"),
    Bad("push-dir-without-model", lambda w: ["push", str(w.root / "data"), "--repo-id", "me/model"],
        "push: {root}/data holds no model"),
    # --- predict and eval
    Bad("predict-batch-size-zero", lambda w: ["predict", "--model", str(w.model), "--batch-size", "0"],
        "--batch-size must be > 0, got 0"),
    Bad("predict-model-missing", lambda w: ["predict", "--model", f"{w.root}/nothing", "--input", str(w.data["test"])],
        "model directory {root}/nothing not found"),
    Bad("predict-output-is-the-input",
        lambda w: ["predict", "--model", str(w.model), "--input", str(w.data["test"]), "--output", str(w.data["test"])],
        "--output {root}/data/test.csv is the input file; write to another file (the input is never overwritten)"),
    Bad("predict-output-is-the-input-by-another-path",
        lambda w: ["predict", "--model", str(w.model), "--input", str(w.data["test"]),
                   "--output", f"{w.root}/data/../data/test.csv"], "--output {root}/data/../data/test.csv is the input file"),
    Bad("predict-output-is-a-directory",
        lambda w: ["predict", "--model", str(w.model), "--input", str(w.data["test"]), "--output", str(w.root / "data")],
        "--output {root}/data is a directory; give a file path (.jsonl or .csv)"),
    Bad("predict-output-under-a-file",
        lambda w: ["predict", "--model", str(w.model), "--input", str(w.data["test"]),
                   "--output", f"{w.data['test']}/p.jsonl"],
        "--output {root}/data/test.csv/p.jsonl: {root}/data/test.csv is a file, not a directory; give a file path"),
    Bad("predict-txt-not-utf8",
        lambda w: ["predict", "--model", str(w.model), "--input", w.file("in.txt", "good\ncaf\xe9 bad\n".encode("latin-1")),
                   "--output", str(w.root / "p.jsonl")],
        "{root}/in.txt: line 2 is not UTF-8 text; give UTF-8 text, one text per line"),
    Bad("eval-json-under-a-file",
        lambda w: ["eval", "--model", str(w.model), "--data", str(w.data["test"]), "--json", f"{w.data['test']}/m.json"],
        "--json {root}/data/test.csv/m.json: {root}/data/test.csv is a file, not a directory"),
    Bad("eval-labels-unknown-to-model", lambda w: ["eval", "--model", str(w.model), "--data", str(w.data["test"])],
        "{root}/data/test.csv: labels ['negative', 'positive'] are unknown to the model"),
]


@pytest.fixture
def workspace(tmp_path: Path, tiny_bert: Path) -> Workspace:
    model = tmp_path / "bert"  # a copy outside the workspace (messages name it as {model})
    model.mkdir()
    for path in tiny_bert.iterdir():
        (model / path.name).write_bytes(path.read_bytes())
    (tmp_path / "w").mkdir()
    return Workspace(tmp_path / "w", model)


def test_every_case_is_unique_and_names_the_place() -> None:
    assert len({case.id for case in CASES}) == len(CASES)
    # Every expected message names where the problem is: the file ({root}, {model}), a key or a flag.
    vague = [case.id for case in CASES if not ("{root}" in case.expect or "{model}" in case.expect
                                               or re.search(r"\b[a-z_]+\.[a-z_]+\b|--[a-z]", case.expect))]
    assert vague == []


@pytest.mark.integration
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Bad, workspace: Workspace, capsys: pytest.CaptureFixture) -> None:
    argv = case.argv(workspace)
    before = snapshot(workspace.root)
    capsys.readouterr()

    code = main(argv)

    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("hf-adapt:")]
    assert code == 2, err[-2000:]
    assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1]  # one line, and the last
    assert errors[0].startswith("hf-adapt: error: ")
    assert case.expect.format(root=workspace.root, model=workspace.model) in errors[0], errors[0]
    assert "Traceback" not in err
    assert snapshot(workspace.root) == before  # nothing written: no output, staging or work dir
    assert not (workspace.root / "PWNED").exists()  # no pickle was ever opened
    print(f"{case.id}: {errors[0]}")


@pytest.mark.integration
@pytest.mark.parametrize("case_id", ["unknown-key", "lora-target-absent"])  # found at load time / after model load
def test_console_script_prints_one_line_and_exits_2(case_id: str, workspace: Workspace) -> None:
    case = next(c for c in CASES if c.id == case_id)
    argv = case.argv(workspace)
    before = snapshot(workspace.root)
    done = subprocess.run([str(HF_ADAPT), *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("hf-adapt: error: ")
    assert case.expect.format(root=workspace.root, model=workspace.model) in last
    assert snapshot(workspace.root) == before


@pytest.mark.integration
def test_debug_shows_the_traceback(workspace: Workspace) -> None:
    argv = next(c for c in CASES if c.id == "train-file-missing").argv(workspace)
    done = subprocess.run([str(HF_ADAPT), *argv, "--debug"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback (most recent call last)" in done.stderr and "HfAdaptError" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("hf-adapt: error: data file ")
