"""`accelerate launch` with two CPU processes (DDP over gloo) for the full, partial and LoRA recipes
(and full with gradual unfreezing), and for two other task shapes: multi-label texts read in
windows (`data.long_text: chunk`, documents pooled from windows that the two ranks evaluate in
turn) and a regression on sentence pairs.

One launch of `scripts/accelerate/cpu_2proc.yaml` runs `scripts/train.py` four times in the same
two processes (so the ~10 s of start-up is paid once). A launcher written by this test adds a
callback that records each rank's weights after every training step; the library itself
carries no test hook. For each recipe the test checks:

- one output directory with one card, written once (no staging or work directories left);
- both ranks hold identical weights after every step (and at the end), and every step moved them;
- the evaluation metrics gathered over the ranks equal a single-process evaluation of the saved
  model on the same split: the splits have 25 rows, so two ranks with batches of 4 need padding
  samples, and a sample counted twice (or dropped) would change every metric.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import REPO, tiny_recipe, write_sentiment_csvs
from test_multilabel import multilabel_data
from test_tasks import regression_csvs

from hf_adapt.inference import evaluate_file

STRATEGIES = {
    "full": {"adapt": {"strategy": "full"}},
    "partial": {"adapt": {"strategy": "partial", "freeze_embeddings": True, "freeze_layers": 1}},
    "lora": {"adapt": {"strategy": "lora", "lora_r": 4}, "optim": {"learning_rate": 5e-3}},
    # Layers unfrozen mid-run were frozen when DDP wrapped the model: their gradients must still be synced.
    "gradual": {"adapt": {"strategy": "full", "gradual_unfreeze": 3}},
    # Windows of 6 tokens, 1 shared: the 25 validation texts become more windows than texts.
    "multilabel_chunked": {"data": {"label_column": "labels", "long_text": "chunk", "chunk_stride": 1},
                           "model": {"max_length": 6}},
    "regression_pairs": {"data": {"label_column": "score", "text_column": "sentence1",
                                  "text_pair_column": "sentence2"}},
    # data.streaming: each process reads its own half of the training stream (50 rows: 6 batches of 8 each)
    "streaming": {"data": {"streaming": True}, "train": {"max_steps": 6}},
}
# How evaluate_file reads each variant's labelled files (the sentiment columns otherwise).
COLUMNS = {"multilabel_chunked": {"label_column": "labels"},
           "regression_pairs": {"text_column": "sentence1", "text_pair_column": "sentence2", "label_column": "score"}}

LAUNCHER = textwrap.dedent('''
    """Run scripts/train.py once per recipe; record every rank's weights after every training step."""
    import hashlib, json, runpy, sys
    from pathlib import Path

    from transformers import TrainerCallback

    import hf_adapt.engine as engine
    from hf_adapt.modeling import unwrap

    train_py, record_dir, *recipes = sys.argv[1:]


    def digest(model):
        h = hashlib.sha256()
        for name, tensor in sorted(unwrap(model).state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()


    class RecordWeights(TrainerCallback):
        def __init__(self, name):
            self.name, self.record = name, {}

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.record.update(begin=digest(model), world_size=args.world_size, device=str(args.device), steps=[])

        def on_step_end(self, args, state, control, model=None, **kwargs):
            # Every step, not only the end: the best checkpoint, reloaded from disk at the end,
            # would make the ranks agree even if their replicas had drifted apart.
            self.record["steps"].append(digest(model))

        def on_train_end(self, args, state, control, model=None, **kwargs):
            self.record.update(end=digest(model))
            path = Path(record_dir) / f"{self.name}.rank{args.process_index}.json"
            path.write_text(json.dumps(self.record))


    build_trainer = engine.build_trainer
    main = runpy.run_path(train_py)["main"]
    for recipe in recipes:
        def with_recorder(*args, _name=Path(recipe).stem, **kwargs):
            trainer = build_trainer(*args, **kwargs)
            trainer.add_callback(RecordWeights(_name))
            return trainer

        engine.build_trainer = with_recorder
        code = main([recipe])
        if code:
            sys.exit(code)
''')


def write_noisy_split(path: Path, flip: tuple[int, ...] = (0, 3, 7, 12)) -> None:
    """Flip a few labels, so even a perfect model scores strictly between 0 and 1 and every
    duplicated or dropped sample would show in the metrics."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for i in flip:
        rows[i]["label"] = "negative" if rows[i]["label"] == "positive" else "positive"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path]) -> dict:
    tmp = tmp_path_factory.mktemp("distributed")
    data = write_sentiment_csvs(tmp / "data", rows=100)  # validation and test: 25 rows each
    write_noisy_split(data["validation"])
    write_noisy_split(data["test"], flip=(1, 2, 20))
    every_data = {"multilabel_chunked": multilabel_data(tmp / "multilabel", rows=75),
                  "regression_pairs": regression_csvs(tmp / "regression", pairs=True, rows=100)}
    recipes = []
    for name, sections in STRATEGIES.items():
        recipe = tiny_recipe(tiny_models["bert"], every_data.get(name, data), tmp / "out" / name,
                             train={"epochs": 3, "batch_size": 8, "eval_batch_size": 4},
                             optim={"learning_rate": 3e-3, "warmup": 0.0})
        for section, values in sections.items():
            recipe.setdefault(section, {}).update(values)
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
        recipes.append(str(path))
    launcher = tmp / "launcher.py"
    launcher.write_text(LAUNCHER, encoding="utf-8")
    records = tmp / "records"
    records.mkdir()
    # ACCELERATE_USE_CPU: as the config's header says, on a machine with GPUs too (else both ranks take GPU 0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "ACCELERATE_USE_CPU": "true"}
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, "-m", "accelerate.commands.launch",
               "--config_file", str(REPO / "scripts" / "accelerate" / "cpu_2proc.yaml"),
               str(launcher), str(REPO / "scripts" / "train.py"), str(records), *recipes]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp)
    assert done.returncode == 0, done.stderr[-4000:]
    return {"tmp": tmp, "data": data, "every_data": every_data, "records": records, "stdout": done.stdout}


@pytest.mark.integration
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_two_processes_write_once_and_agree(launched: dict, strategy: str) -> None:
    output_dir = launched["tmp"] / "out" / strategy
    ranks = [json.loads((launched["records"] / f"{strategy}.rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert all(r["device"].startswith("cpu") for r in ranks)
    assert ranks[0]["steps"] == ranks[1]["steps"]  # DDP kept the replicas identical after every step
    assert ranks[0]["end"] == ranks[1]["end"]
    assert len(set(ranks[0]["steps"])) == len(ranks[0]["steps"]) > 1 and ranks[0]["begin"] not in ranks[0]["steps"]

    saved = json.loads((output_dir / "metrics.json").read_text())
    assert saved["hardware"]["num_processes"] == 2
    assert (output_dir / "README.md").is_file() and (output_dir / "model.safetensors").is_file()
    assert sorted(p.name for p in output_dir.parent.iterdir() if p.name.startswith(".")) == []  # no work/staging dirs


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_gathered_metrics_equal_single_process_evaluation(launched: dict, strategy: str) -> None:
    run = json.loads((launched["tmp"] / "out" / strategy / "metrics.json").read_text())
    saved = run["metrics"]
    if strategy == "multilabel_chunked":  # more windows than texts, pooled back into the 25 texts
        assert run["data"]["windows"]["validation"] > run["data"]["rows"]["validation"] == 25
    for split in ("validation", "test"):
        data = launched["every_data"].get(strategy, launched["data"])
        single = evaluate_file(launched["tmp"] / "out" / strategy, data[split], **COLUMNS.get(strategy, {}))
        gathered = {key: value for key, value in saved[split].items() if key != "loss"}
        # counts agree exactly (a row is 1/25 = 0.04); the calibration errors read the logits, whose float
        # sums differ between two processes and one in the last digits
        assert gathered.keys() == single.keys() and gathered == pytest.approx(single, abs=1e-5), split
        if strategy not in COLUMNS:
            assert 0.0 < single["accuracy"] < 1.0
            assert abs(single["accuracy"] * 25 - round(single["accuracy"] * 25)) < 1e-9  # counted over exactly 25 rows
