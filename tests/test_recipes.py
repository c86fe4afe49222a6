"""End-to-end recipe runs on tiny models of every family: train a few steps, save, reload with plain
transformers (and peft for adapters), and predict exactly what the trained model in memory
predicts; weights that should be frozen did not move, trainable ones did. Plus the training
options: seeding, early stopping, class weights, step-wise evaluation, checkpoints, TensorBoard.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    FAMILIES,
    logits_of,
    part_of,
    snapshot_weights,
    tiny_recipe,
    write_sentiment_csvs,
)
from sklearn.utils.class_weight import compute_class_weight
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    TrainerCallback,
    pipeline,
)

from hf_adapt.config import config_from_dict
from hf_adapt.data import load_task_data, tokenize_splits
from hf_adapt.engine import kept_evaluation, run_recipe
from hf_adapt.modeling import load_model, load_tokenizer, load_trained
from hf_adapt.schedule import plan_training
from hf_adapt.trainer import balanced_class_weights, build_trainer

TEXTS = ["good movie", "the plot was awful and boring", "a really great film", "dull", "it is quite nice and sad"]
# adapt sections of the recipes, by test id
RECIPE_ADAPT = {
    "full": {"strategy": "full"},
    "partial": {"strategy": "partial", "freeze_embeddings": True, "freeze_layers": 1},
    "features": {"strategy": "partial", "freeze_encoder": True},
    "lora": {"strategy": "lora", "lora_r": 4},
}
# which parts must stay exactly as they were (LoRA: every original weight)
# features: layer2 is the frozen mean-pooling layer added on top (hf_adapt.pooling)
FROZEN = {"full": set(), "partial": {"embeddings", "layer0"}, "features": {"embeddings", "layer0", "layer1", "layer2"}}


class CaptureModel(TrainerCallback):
    """Keeps the trained model object and its weights when training begins and ends."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.model = model
        self.before = snapshot_weights(model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.after = snapshot_weights(model)
        self.log_history = list(state.log_history)


def train(recipe: dict) -> tuple:
    """Run a recipe dict through the shared engine, capturing the trained model."""
    capture = CaptureModel()
    return run_recipe(config_from_dict(recipe), callbacks=[capture]), capture


@pytest.fixture(scope="module")
def small_csvs(tmp_path_factory) -> dict[str, Path]:
    return write_sentiment_csvs(tmp_path_factory.mktemp("data"), rows=48)


# ---------------------------------------------------------------------------------------------
# Every recipe x every family


@pytest.mark.integration
@pytest.mark.parametrize("recipe", RECIPE_ADAPT)
@pytest.mark.parametrize("family", FAMILIES)
def test_recipe_trains_saves_and_reloads_identically(tiny_models, small_csvs, tmp_path, family, recipe):
    output = tmp_path / "out"
    result, capture = train(tiny_recipe(tiny_models[family], small_csvs, output, adapt=RECIPE_ADAPT[recipe]))
    tokenizer = AutoTokenizer.from_pretrained(output)
    expected = logits_of(capture.model, tokenizer, TEXTS)

    # the output: a complete plain transformers model, and nothing left beside it
    for name in ("config.json", "model.safetensors", "tokenizer.json", "labels.json", "recipe.yaml",
                 "metrics.json", "README.md"):
        assert (output / name).is_file(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no work or staging directory left
    assert result.output_dir == str(output.resolve())
    assert set(result.metrics) == {"validation", "test"}

    reloaded = AutoModelForSequenceClassification.from_pretrained(output)
    assert reloaded.config.id2label == {0: "negative", 1: "positive"}
    torch.testing.assert_close(logits_of(reloaded, tokenizer, TEXTS), expected, rtol=1e-5, atol=1e-5)

    base_prefix = reloaded.base_model_prefix
    changed = {name: not torch.equal(capture.before[name], capture.after[name]) for name in capture.before}
    if recipe == "lora":
        adapter_model, adapter_tokenizer = load_trained(output / "adapter")
        torch.testing.assert_close(logits_of(adapter_model, adapter_tokenizer, TEXTS), expected, rtol=1e-5, atol=1e-5)
        for name, moved in changed.items():  # base weights (and the original head copy) never move
            assert moved == ("lora_" in name or ".modules_to_save." in name), name
        assert any("lora_A" in n for n in changed) and any("lora_B" in n for n in changed)
    else:
        for name, moved in changed.items():
            assert moved == (part_of(name, base_prefix, reloaded.config.num_hidden_layers) not in FROZEN[recipe]), name


@pytest.mark.integration
def test_saved_model_works_in_a_transformers_pipeline(tiny_bert, small_csvs, tmp_path):
    output = tmp_path / "out"
    _, capture = train(tiny_recipe(tiny_bert, small_csvs, output))
    probabilities = logits_of(capture.model, AutoTokenizer.from_pretrained(output), TEXTS).softmax(-1)

    classifier = pipeline("text-classification", model=str(output), device="cpu")
    predictions = classifier(TEXTS)

    for row, prediction in zip(probabilities, predictions):
        assert prediction["label"] == ("negative", "positive")[int(row.argmax())]
        assert prediction["score"] == pytest.approx(float(row.max()), abs=1e-5)


@pytest.mark.integration
def test_lora_without_merging_saves_the_adapter_alone(tiny_models, small_csvs, tmp_path):
    output = tmp_path / "out"
    _, capture = train(tiny_recipe(tiny_models["roberta"], small_csvs, output,
                                   adapt={"strategy": "lora", "lora_r": 4, "merge_lora": False}))

    assert (output / "adapter_config.json").is_file() and (output / "adapter_model.safetensors").is_file()
    assert not (output / "model.safetensors").exists() and not (output / "adapter").exists()
    assert (output / "adapter_model.safetensors").stat().st_size < (tiny_models["roberta"] / "model.safetensors").stat().st_size
    model, tokenizer = load_trained(output)
    torch.testing.assert_close(logits_of(model, tokenizer, TEXTS), logits_of(capture.model, tokenizer, TEXTS), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Training options


@pytest.mark.integration
def test_identical_seeded_runs_give_identical_results(tiny_bert, small_csvs, tmp_path):
    results = [train(tiny_recipe(tiny_bert, small_csvs, tmp_path / name))[0] for name in ("a", "b")]

    assert results[0].metrics == results[1].metrics
    assert results[0].train["train_loss"] == results[1].train["train_loss"]
    first = AutoModelForSequenceClassification.from_pretrained(tmp_path / "a").state_dict()
    second = AutoModelForSequenceClassification.from_pretrained(tmp_path / "b").state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.integration
def test_early_stopping_ends_training_when_the_metric_stalls(tiny_bert, small_csvs, tmp_path, monkeypatch):
    import transformers.trainer_callback

    warned = []
    monkeypatch.setattr(transformers.trainer_callback.logger, "warning", warned.append)
    # An LR far too small to change any prediction: accuracy never improves after the first evaluation.
    result, capture = train(tiny_recipe(tiny_bert, small_csvs, tmp_path / "out",
                                        optim={"learning_rate": 1e-12},
                                        train={"epochs": 5, "eval_strategy": "steps", "eval_steps": 1,
                                               "early_stopping_patience": 2}))

    evaluated = [entry["step"] for entry in capture.log_history if "eval_accuracy" in entry]
    assert evaluated == [1, 2, 3]  # best at step 1, then two evaluations without gain
    assert result.train["steps"] == 3  # of 5 epochs x 3 steps
    # The scoring after training (calibration, validation, test) is no early-stopping evaluation.
    assert not [message for message in warned if "did not find" in message]


def test_balanced_class_weights_match_sklearn_and_weight_the_loss(tiny_bert, tmp_path):
    data = write_sentiment_csvs(tmp_path / "data", rows=48, three_classes=True)
    rows = (tmp_path / "data" / "train.csv").read_text().splitlines()
    # drop most 'neutral' rows: three classes, imbalanced
    kept = [rows[0]] + [r for i, r in enumerate(rows[1:]) if not r.endswith(",neutral") or i % 5 == 0]
    (tmp_path / "data" / "train.csv").write_text("\n".join(kept) + "\n")
    config = config_from_dict(tiny_recipe(tiny_bert, data, tmp_path / "out", train={"class_weights": "balanced"}))
    task = load_task_data(config.data, seed=0)
    encoded = tokenize_splits(task.splits, load_tokenizer(config.model), task.label_map, 32)
    config, _ = plan_training(config, len(encoded["train"]), len(encoded["validation"]))
    model = load_model(config.model, task.label_map)

    trainer = build_trainer(config, model, load_tokenizer(config.model), encoded, task.label_map, tmp_path / "work")

    labels = np.array(encoded["train"]["labels"])
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    assert len(set(np.bincount(labels))) == 2  # really imbalanced
    torch.testing.assert_close(trainer.class_weights, torch.tensor(expected, dtype=torch.float32))
    torch.testing.assert_close(balanced_class_weights(encoded["train"], task.label_map), trainer.class_weights)
    batch = next(iter(trainer.get_train_dataloader()))
    batch = {k: v.to(trainer.args.device) for k, v in batch.items()}
    loss, outputs = trainer.compute_loss(model.to(trainer.args.device), dict(batch), return_outputs=True)
    weight = trainer.class_weights.to(trainer.args.device)
    weighted = torch.nn.functional.cross_entropy(outputs.logits, batch["labels"], weight=weight)
    plain = torch.nn.functional.cross_entropy(outputs.logits, batch["labels"])
    torch.testing.assert_close(loss, weighted)
    assert not torch.isclose(loss, plain)


@pytest.mark.parametrize("multiple", [8, 5, None])
def test_batches_are_padded_to_the_configured_multiple(tiny_bert, small_csvs, tmp_path, multiple):
    config = config_from_dict(tiny_recipe(tiny_bert, small_csvs, tmp_path / "out",
                                          train={"pad_to_multiple_of": multiple}))
    task = load_task_data(config.data, seed=0)
    tokenizer = load_tokenizer(config.model)
    encoded = tokenize_splits(task.splits, tokenizer, task.label_map, 32)
    config, _ = plan_training(config, len(encoded["train"]), len(encoded["validation"]))
    trainer = build_trainer(config, load_model(config.model, task.label_map), tokenizer, encoded, task.label_map,
                            tmp_path / "work")

    for loader in (trainer.get_train_dataloader(), trainer.get_eval_dataloader()):
        for batch in loader:
            width, longest = batch["input_ids"].shape[1], int(batch["attention_mask"].sum(1).max())
            if multiple is None:
                assert width == longest
            else:
                assert width % multiple == 0 and longest <= width < longest + multiple


@pytest.mark.integration
def test_step_evaluation_and_kept_checkpoints(tiny_bert, small_csvs, tmp_path):
    output = tmp_path / "out"
    result, capture = train(tiny_recipe(tiny_bert, small_csvs, output,
                                        train={"epochs": 2, "eval_strategy": "steps", "eval_steps": 2,
                                               "keep_checkpoints": True, "save_total_limit": 1}))

    assert [e["step"] for e in capture.log_history if "eval_accuracy" in e] == [2, 4, 6]
    work = tmp_path / ".out.work"
    checkpoints = sorted(p.name for p in work.glob("checkpoint-*"))
    assert checkpoints and set(checkpoints) <= {"checkpoint-2", "checkpoint-4", "checkpoint-6"}
    assert f"checkpoint-{result.train['best_checkpoint_step']}" in checkpoints  # the best one is kept
    assert (output / "model.safetensors").is_file()


@pytest.mark.integration
def test_tensorboard_is_opt_in_and_writes_event_files_into_the_output(tiny_bert, small_csvs, tmp_path):
    train(tiny_recipe(tiny_bert, small_csvs, tmp_path / "tb", train={"tensorboard": True}))
    train(tiny_recipe(tiny_bert, small_csvs, tmp_path / "plain"))

    events = list((tmp_path / "tb" / "runs").rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
    assert not (tmp_path / "plain" / "runs").exists()


class CaptureTraining(TrainerCallback):
    """The dropout rates while training, and the flash-attention switch in each forward pass."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.device, self.flash = args.device.type, {"train": set(), "eval": set()}

        def record(module, inputs):  # the global switch, which governs the CPU kernels too
            self.flash["train" if module.training else "eval"].add(torch.backends.cuda.flash_sdp_enabled())

        model.register_forward_pre_hook(record)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.dropout = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}


@pytest.mark.integration
@pytest.mark.parametrize("dropout", [0.0, 0.3, None])
def test_model_dropout_applies_while_training_and_the_saved_config_keeps_the_checkpoints(
        tiny_bert, small_csvs, tmp_path, dropout):
    capture = CaptureTraining()
    recipe = tiny_recipe(tiny_bert, small_csvs, tmp_path / "out", model={"dropout": dropout},
                         adapt={"strategy": "lora", "lora_r": 4})
    run_recipe(config_from_dict(recipe), callbacks=[capture])

    original = AutoModelForSequenceClassification.from_pretrained(tiny_bert).config.hidden_dropout_prob
    assert original == 0.1
    assert capture.dropout == ({original} if dropout is None else {dropout})
    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out").config
    assert saved.hidden_dropout_prob == saved.attention_probs_dropout_prob == original
    # CPU training steps use the math attention kernel (trainer.training_attention); evaluation keeps flash.
    assert capture.flash == {"train": {capture.device != "cpu"}, "eval": {True}}
    assert torch.backends.cuda.flash_sdp_enabled()


def test_a_tie_on_the_metric_goes_to_the_lower_loss_then_the_later_evaluation(tiny_bert, small_csvs, tmp_path):
    """On a small validation set accuracy ties at 1.0 from the first epoch on: the earliest tie was kept."""
    config = config_from_dict(tiny_recipe(tiny_bert, small_csvs, tmp_path / "out", train={"keep": "best"}))
    task = load_task_data(config.data, seed=0)
    tokenizer = load_tokenizer(config.model)
    encoded = tokenize_splits(task.splits, tokenizer, task.label_map, 32)
    config, _ = plan_training(config, len(encoded["train"]), len(encoded["validation"]))
    trainer = build_trainer(config, load_model(config.model, task.label_map), tokenizer, encoded, task.label_map,
                            tmp_path / "work")
    kept = []
    for step, (accuracy, loss) in enumerate([(1.0, 0.9), (1.0, 0.5), (0.9, 0.1), (1.0, 0.5), (1.0, 0.7)], start=1):
        trainer.state.global_step = step
        trainer.state.log_history.append({"step": step, "epoch": step / 2, "eval_accuracy": accuracy,
                                          "eval_loss": loss})
        if trainer._determine_best_metric({"eval_accuracy": accuracy, "eval_loss": loss}, None):
            kept.append(step)
    assert kept == [1, 2, 4]  # 2: same accuracy, lower loss; 3: lower accuracy; 4: a full tie, later; 5: higher loss
    assert trainer.state.best_global_step == 4 and trainer.state.best_metric == 1.0

    summary = kept_evaluation(trainer)
    assert summary == {"step": 4, "epoch": 2.0, "metric": "accuracy", "value": 1.0, "loss": 0.5,
                       "why": "validation accuracy 1.0000 tied with 3 other evaluation(s); the lowest validation "
                              "loss (0.5000), then the latest, wins"}
    trainer.best_loss = None  # after a resume: the best evaluation's loss comes back from the log
    assert trainer.best_evaluation() == (1.0, -0.5)
