"""Controls against forgetting (L2-SP, gradual unfreezing, re-initialising the top layers), their
validation, and the forgetting meter at the end of a run. Tiny models, a few steps each."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import NEGATIVE, NEUTRAL, POSITIVE, tiny_recipe
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    TrainerCallback,
)

from hf_adapt.cli import main
from hf_adapt.config import AdaptConfig, OptimConfig, config_from_dict, load_recipe
from hf_adapt.controls import (
    GradualUnfreezing,
    L2SPPenalty,
    apply_controls,
    check_fsdp_controls,
    measure_run_forgetting,
    reinit_top_layers,
)
from hf_adapt.engine import run_recipe
from hf_adapt.errors import HfAdaptError
from hf_adapt.forgetting import load_encoder, sts_spearman
from hf_adapt.modeling import encoder_layout
from hf_adapt.optim import build_optimizer
from hf_adapt.strategies import apply_strategy


def load_tiny(model_dir: Path) -> torch.nn.Module:
    return AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2).train()


def unit_params(model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    """The parameters of each gradual-unfreezing unit of a 2-layer model, plus the head."""
    layout = encoder_layout(model)
    units = {f"layer{i}": list(layer.parameters()) for i, layer in enumerate(layout.layers)}
    units["embeddings"] = [p for m in layout.embeddings for p in m.parameters()]
    units["head"] = [p for m in layout.head for p in m.parameters()]
    return units


def snapshot(model: torch.nn.Module) -> dict[str, list[torch.Tensor]]:
    return {name: [p.detach().clone() for p in params] for name, params in unit_params(model).items()}


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


class RecordUnits(TrainerCallback):
    """Snapshots every unit's weights at the start and after every optimizer step, and the optimizer."""

    def __init__(self) -> None:
        self.after_step: dict[int, dict[str, list[torch.Tensor]]] = {}
        self.optimizer = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.after_step[0] = snapshot(model)
        self.optimizer = optimizer
        self.all_params = list(model.parameters())
        self.layer1_ids = {id(p) for p in encoder_layout(model).layers[1].parameters()}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.after_step[state.global_step] = snapshot(model)


def run(recipe: dict, callbacks: list[TrainerCallback] | None = None):
    return run_recipe(config_from_dict(recipe), callbacks=callbacks)


# ---------------------------------------------------------------------------------------------
# L2-SP


def test_l2sp_is_zero_at_start_and_measures_encoder_distance_only(tiny_bert):
    model = load_tiny(tiny_bert)
    penalty = L2SPPenalty(model, alpha=0.5)
    assert penalty(model).item() == 0.0
    layout = encoder_layout(model)
    query = layout.layers[0].attention.self.query.weight
    with torch.no_grad():
        query.add_(0.1)
        for p in layout.head[0].parameters():  # the head has no pretrained value: never penalised
            p.add_(5.0)
    expected = 0.5 * 0.5 * 0.1**2 * query.numel()
    assert penalty(model).item() == pytest.approx(expected, rel=1e-4)


def test_l2sp_gradient_pulls_towards_the_start_and_evaluation_loss_leaves_it_out(tiny_bert):
    model = load_tiny(tiny_bert)
    penalty = L2SPPenalty(model, alpha=3.0)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    penalty(model).backward()
    for name, param in model.named_parameters():
        if name.startswith(("bert.embeddings.", "bert.encoder.")):
            torch.testing.assert_close(param.grad, 3.0 * (param.detach() - start[name]))
        else:  # head and pooler: no pretrained value, no pull
            assert param.grad is None
    assert penalty(model.eval()).item() == 0.0


def test_l2sp_skips_reinitialised_and_frozen_layers(tiny_bert):
    model = apply_strategy(load_tiny(tiny_bert), AdaptConfig(strategy="partial", freeze_layers=1))
    penalty = L2SPPenalty(model, alpha=1.0, skip_top_layers=1)
    with torch.no_grad():
        for layer in encoder_layout(model).layers:  # layer 0 frozen, layer 1 re-initialised
            for p in layer.parameters():
                p.add_(1.0)
    assert penalty(model).item() == 0.0
    with torch.no_grad():
        encoder_layout(model).embeddings[0].word_embeddings.weight.add_(1.0)
    assert penalty(model).item() > 0


def test_l2sp_under_lora_penalises_the_merged_update(tiny_bert):
    model = apply_strategy(load_tiny(tiny_bert), AdaptConfig(strategy="lora", lora_r=4, lora_dropout=0.0))
    penalty = L2SPPenalty(model, alpha=2.0)
    assert penalty(model).item() == 0.0  # B starts at zero: the merged weight equals w0
    torch.manual_seed(0)
    lora_layers = [m for m in model.modules() if hasattr(m, "lora_B") and "default" in m.lora_B]
    with torch.no_grad():
        for module in lora_layers:
            module.lora_B["default"].weight.normal_()
    expected = 0.5 * 2.0 * sum(m.get_delta_weight("default").pow(2).sum().item() for m in lora_layers)
    assert penalty(model).item() == pytest.approx(expected, rel=1e-4)


def encoder_distance(output_dir: Path, start_dir: Path) -> float:
    trained, start = load_tiny(output_dir), load_tiny(start_dir)
    pairs = zip(encoder_layout(trained).base.parameters(), encoder_layout(start).base.parameters())
    return sum((a - b).pow(2).sum().item() for a, b in pairs)


@pytest.mark.integration
def test_l2sp_pulls_the_encoder_back_towards_its_pretrained_weights(tiny_bert, sentiment_csvs, tmp_path):
    fast = {"learning_rate": 1e-2, "weight_decay": 0.0}
    plain = run(tiny_recipe(tiny_bert, sentiment_csvs, tmp_path / "plain", optim=fast))
    pulled = run(tiny_recipe(tiny_bert, sentiment_csvs, tmp_path / "l2sp", optim=fast, adapt={"l2sp": 100.0}))
    moved = encoder_distance(Path(plain.output_dir), tiny_bert)
    held = encoder_distance(Path(pulled.output_dir), tiny_bert)
    assert moved > 0 and held < 0.25 * moved


# ---------------------------------------------------------------------------------------------
# Gradual unfreezing


UNFREEZE_AT = {"layer1": 2, "layer0": 4, "embeddings": 6}  # every 2 steps, top layer first


@pytest.mark.integration
def test_gradual_unfreezing_trains_each_layer_only_after_it_unfreezes(tiny_bert, sentiment_csvs, tmp_path):
    recorder = RecordUnits()
    recipe = tiny_recipe(tiny_bert, sentiment_csvs, tmp_path / "out", adapt={"gradual_unfreeze": 2},
                         optim={"layer_decay": 0.5}, train={"max_steps": 8, "eval_strategy": "no"})
    run(recipe, callbacks=[recorder])
    steps = recorder.after_step
    assert sorted(steps) == list(range(9))
    assert not same(steps[1]["head"], steps[0]["head"])  # the head trains from the first step
    for unit, at in UNFREEZE_AT.items():
        for step in range(1, at + 1):
            assert same(steps[step][unit], steps[0][unit]), f"{unit} moved at step {step}, before unfreezing"
        assert not same(steps[at + 1][unit], steps[at][unit]), f"{unit} did not train at step {at + 1}"
    # The optimizer held every parameter from the start, with the layer-decayed rates.
    held = {id(p) for group in recorder.optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in recorder.all_params} <= held
    layer1_lrs = [g["initial_lr"] for g in recorder.optimizer.param_groups
                  if any(id(p) in recorder.layer1_ids for p in g["params"])]
    assert layer1_lrs and all(lr == pytest.approx(1e-3 * 0.5) for lr in layer1_lrs)


@pytest.mark.integration
def test_gradual_unfreezing_by_epochs(tiny_bert, sentiment_csvs, tmp_path):
    recorder = RecordUnits()  # 96 rows / batch 16 = 6 steps per epoch
    recipe = tiny_recipe(tiny_bert, sentiment_csvs, tmp_path / "out", adapt={"gradual_unfreeze": 1,
                         "gradual_unfreeze_unit": "epochs"}, train={"epochs": 2, "eval_strategy": "no"})
    run(recipe, callbacks=[recorder])
    steps = recorder.after_step
    assert same(steps[6]["layer1"], steps[0]["layer1"])
    assert not same(steps[7]["layer1"], steps[6]["layer1"])
    assert same(steps[12]["layer0"], steps[0]["layer0"])  # the second unit waits for epoch 3


@pytest.mark.integration
def test_gradual_unfreezing_never_unfreezes_what_partial_froze(tiny_bert, sentiment_csvs, tmp_path):
    recorder = RecordUnits()
    recipe = tiny_recipe(tiny_bert, sentiment_csvs, tmp_path / "out",
                         adapt={"strategy": "partial", "freeze_layers": 1, "freeze_embeddings": True,
                                "gradual_unfreeze": 1}, train={"max_steps": 5, "eval_strategy": "no"})
    run(recipe, callbacks=[recorder])
    steps = recorder.after_step
    assert same(steps[1]["layer1"], steps[0]["layer1"]) and not same(steps[2]["layer1"], steps[1]["layer1"])
    assert same(steps[5]["layer0"], steps[0]["layer0"]) and same(steps[5]["embeddings"], steps[0]["embeddings"])


@pytest.mark.integration
def test_gradual_unfreezing_under_lora_unfreezes_lora_matrices_only(tiny_bert, sentiment_csvs, tmp_path):
    seen: dict[int, dict[str, torch.Tensor]] = {}

    class RecordLora(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.model = model
            seen[0] = self.lora_b()

        def lora_b(self):
            return {n: p.detach().clone() for n, p in self.model.named_parameters() if "lora_B" in n or "query.base" in n}

        def on_step_end(self, args, state, control, **kwargs):
            seen[state.global_step] = self.lora_b()

    recipe = tiny_recipe(tiny_bert, sentiment_csvs, tmp_path / "out", adapt={"strategy": "lora", "gradual_unfreeze": 2},
                         train={"max_steps": 5, "eval_strategy": "no"})
    run(recipe, callbacks=[RecordLora()])
    layer1_b = [n for n in seen[0] if "layer.1." in n and "lora_B" in n]
    layer0_b = [n for n in seen[0] if "layer.0." in n and "lora_B" in n]
    base = [n for n in seen[0] if "query.base" in n]
    assert layer1_b and layer0_b and base
    assert all(torch.equal(seen[2][n], seen[0][n]) for n in layer1_b)
    assert all(not torch.equal(seen[3][n], seen[2][n]) for n in layer1_b)
    assert all(torch.equal(seen[4][n], seen[0][n]) for n in layer0_b)
    assert all(not torch.equal(seen[5][n], seen[4][n]) for n in layer0_b)
    assert all(torch.equal(seen[5][n], seen[0][n]) for n in base)  # pretrained weights never train


@pytest.mark.parametrize("mask_grads", [False, True])
def test_gradual_unfreezing_schedule_in_both_modes(tiny_bert, mask_grads):
    """`mask_grads` is the multi-process (DDP) mode: requires_grad stays on, gradients are dropped."""
    torch.manual_seed(0)
    model = load_tiny(tiny_bert)
    callback = GradualUnfreezing(model, every=1, mask_grads=mask_grads)
    assert all(p.requires_grad == mask_grads for p in encoder_layout(model).layers[1].parameters())
    optimizer = build_optimizer(model, OptimConfig(learning_rate=1e-2, weight_decay=0.1), include_frozen=True)
    batch = {"input_ids": torch.randint(5, 30, (4, 6)), "labels": torch.tensor([0, 1, 0, 1])}
    history = [snapshot(model)]
    for step in range(3):
        state = SimpleNamespace(global_step=step, epoch=0.0)
        callback.on_step_begin(None, state, None)
        model(**batch).loss.backward()
        callback.on_pre_optimizer_step(None, state, None)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        history.append(snapshot(model))
    assert same(history[1]["layer1"], history[0]["layer1"]) and not same(history[2]["layer1"], history[1]["layer1"])
    assert same(history[2]["layer0"], history[0]["layer0"]) and not same(history[3]["layer0"], history[2]["layer0"])
    assert same(history[3]["embeddings"], history[0]["embeddings"])  # its turn is step 4
    callback.on_train_end(None, None, None)
    assert all(p.requires_grad for p in model.parameters())


def test_gradual_unfreezing_refuses_an_encoder_with_nothing_to_train(tiny_bert):
    model = load_tiny(tiny_bert)
    for module in encoder_layout(model).embeddings + encoder_layout(model).layers:
        module.requires_grad_(False)
    with pytest.raises(HfAdaptError, match="nothing in the encoder trains"):
        GradualUnfreezing(model, every=1)


# ---------------------------------------------------------------------------------------------
# Re-initialising the top layers


def test_reinit_top_layers_redraws_only_the_top_layers(tiny_bert):
    model = load_tiny(tiny_bert)
    before = snapshot(model)
    torch.manual_seed(1)
    reinit_top_layers(model, 1)
    after = snapshot(model)
    assert same(after["layer0"], before["layer0"]) and same(after["embeddings"], before["embeddings"])
    assert same(after["head"], before["head"])
    top = encoder_layout(model).layers[1]
    assert not torch.equal(top.attention.self.query.weight, before["layer1"][0])
    assert torch.all(top.attention.self.query.bias == 0)
    assert torch.all(top.output.LayerNorm.weight == 1) and torch.all(top.output.LayerNorm.bias == 0)
    assert top.attention.self.query.weight.std().item() == pytest.approx(model.config.initializer_range, rel=0.2)


def test_reinit_top_layers_rejects_more_layers_than_the_model_has(tiny_bert):
    with pytest.raises(HfAdaptError, match="reinit_top_layers is 3 but the model has 2"):
        reinit_top_layers(load_tiny(tiny_bert), 3)


def test_reinit_must_not_overlap_layers_partial_freezes(tiny_bert):
    config = AdaptConfig(strategy="partial", freeze_layers=2, reinit_top_layers=1)
    model = apply_strategy(reinit_top_layers(load_tiny(tiny_bert), 1), config)
    with pytest.raises(HfAdaptError, match="would stay frozen at random values"):
        apply_controls(model, config)


# ---------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize("sections, message", [
    ({"adapt": {"l2sp": -1.0}}, "adapt.l2sp must be >= 0, got -1.0"),
    ({"adapt": {"gradual_unfreeze": -2}}, "adapt.gradual_unfreeze must be >= 0"),
    ({"adapt": {"gradual_unfreeze": 1, "gradual_unfreeze_unit": "batches"}}, "gradual_unfreeze_unit must be steps or epochs"),
    ({"adapt": {"strategy": "lora", "reinit_top_layers": 1}}, "reinit_top_layers does not fit strategy 'lora'"),
    ({"adapt": {"strategy": "partial", "freeze_encoder": True, "l2sp": 0.1}}, "adapt.l2sp act on encoder weights"),
    ({"forgetting": {"probe": "missing.csv"}}, "forgetting.probe: probe file missing.csv does not exist"),
    ({"forgetting": {"max_rows": 0}}, "forgetting.max_rows must be > 0"),
    ({"model": {"init_from": "no/such/run"}}, "model.init_from no/such/run is not an hf_adapt output directory"),
])
def test_invalid_controls_are_named_at_load_time(tiny_bert, sentiment_csvs, tmp_path, sections, message):
    recipe = tiny_recipe(tiny_bert, sentiment_csvs, tmp_path / "out", **sections)
    with pytest.raises(HfAdaptError, match=message.replace("(", r"\(").replace(".", r"\.")):
        config_from_dict(recipe)


def test_a_labelled_probe_needs_init_from(tiny_bert, sentiment_csvs, tmp_path):
    recipe = tiny_recipe(tiny_bert, sentiment_csvs, tmp_path / "out", forgetting={"probe": str(sentiment_csvs["test"])})
    with pytest.raises(HfAdaptError, match="labelled.*needs model.init_from"):
        config_from_dict(recipe)


# ---------------------------------------------------------------------------------------------
# The forgetting meter at the end of a run


def write_sts_csv(path: Path, rows: int = 40, seed: int = 0) -> Path:
    rng = random.Random(seed)
    words = POSITIVE + NEGATIVE + NEUTRAL
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sentence1", "sentence2", "score"])
        for _ in range(rows):
            first = [rng.choice(words) for _ in range(5)]
            second = first[: rng.randint(0, 5)] + [rng.choice(words) for _ in range(rng.randint(0, 3))]
            writer.writerow([" ".join(first), " ".join(second) or "the", round(5 * len(set(first) & set(second)) / 5, 2)])
    return path


@pytest.mark.integration
def test_a_recipe_probe_is_measured_at_the_end_of_the_run(tiny_bert, sentiment_csvs, tmp_path):
    probe = write_sts_csv(tmp_path / "sts.csv")
    recipe = tiny_recipe(tiny_bert, sentiment_csvs, tmp_path / "out", forgetting={"probe": str(probe), "max_rows": 30})
    result = run(recipe)
    saved = json.loads((Path(result.output_dir) / "metrics.json").read_text())["extra"]["forgetting"]
    assert saved["probe_kind"] == "sts" and saved["num_probe_texts"] == 30 and saved["base"] == str(tiny_bert)
    assert saved["before"] == pytest.approx(sts_spearman(*load_encoder(tiny_bert), probe, 30), abs=1e-6)
    assert saved["after"] == pytest.approx(sts_spearman(*load_encoder(result.output_dir), probe, 30), abs=1e-6)
    assert len(saved["layer_cka"]) == 3 and saved["layer_cka"][-1] < 1.0  # embeddings + 2 layers; it trained
    assert "forgetting_s" in result.timings


def test_forgetting_subcommand_is_registered(tiny_bert, tmp_path, capsys):
    probe = write_sts_csv(tmp_path / "sts.csv")
    assert main(["forgetting", str(tiny_bert), str(tiny_bert), "--probe", str(probe), "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["retention"] == pytest.approx(1.0) and all(c == pytest.approx(1.0) for c in report["layer_cka"])


def test_the_meter_runs_on_weights_gathered_from_fsdp_shards(tiny_bert, sentiment_csvs, tmp_path):
    probe = write_sts_csv(tmp_path / "sts.csv")
    config = config_from_dict(tiny_recipe(tiny_bert, sentiment_csvs, tmp_path / "out", forgetting={"probe": str(probe)}))
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    trained = load_tiny(tiny_bert)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in encoder_layout(trained).layers[1].parameters():
            p.add_(torch.randn_like(p))
    direct = measure_run_forgetting(config, trained, tokenizer)
    # Stand-in for a sharded model: an untrained one, with the trained weights gathered beside it.
    gathered = measure_run_forgetting(config, load_tiny(tiny_bert), tokenizer, trained.state_dict())
    assert gathered["after"] == pytest.approx(direct["after"]) and direct["after"] != pytest.approx(direct["before"])
    assert gathered["layer_cka"] == pytest.approx(direct["layer_cka"])


def test_l2sp_and_gradual_unfreezing_are_refused_under_fsdp():
    check_fsdp_controls(AdaptConfig(l2sp=0.1), fsdp=False)
    check_fsdp_controls(AdaptConfig(reinit_top_layers=1), fsdp=True)
    with pytest.raises(HfAdaptError, match="adapt.l2sp, adapt.gradual_unfreeze are not supported under FSDP"):
        check_fsdp_controls(AdaptConfig(l2sp=0.1, gradual_unfreeze=2), fsdp=True)


def test_the_controlled_recipe_loads_with_its_controls_and_probe(shared_data, monkeypatch):
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)  # the recipe's data paths are relative to the repository root
    path, plain_path = repo / "recipes" / "minilm_sst2_full_controlled.yaml", repo / "recipes" / "minilm_sst2_full.yaml"
    assert "#   hf-adapt train recipes/minilm_sst2_full_controlled.yaml\n" in path.read_text(encoding="utf-8")
    # The same data as the plain recipe, as shipped (so the two compare directly) ...
    shipped, plain_shipped = (yaml.safe_load(p.read_text(encoding="utf-8")) for p in (path, plain_path))
    assert shipped["data"] == plain_shipped["data"]
    assert shipped["forgetting"]["probe"] == "../shared/data/stsb/validation.csv"
    # ... and wherever the data is (HF_ADAPT_DATA_DIR on a user's machine), it loads and validates.
    sst2 = shared_data / "sst2"
    data = [f"data.train_file={sst2 / 'train.csv'}", f"data.validation_file={sst2 / 'validation.csv'}",
            f"data.test_file={sst2 / 'test.csv'}"]
    config = load_recipe(path, [*data, f"forgetting.probe={shared_data / 'stsb' / 'validation.csv'}"])
    plain = load_recipe(plain_path, data)
    assert (config.adapt.strategy, config.optim.learning_rate, config.optim.layer_decay) == ("full", 1.5e-4, 0.75)
    assert config.optim.layer_decay < plain.optim.layer_decay  # the control: a steeper decay than the plain recipe
    assert config.data.max_train_samples == plain.data.max_train_samples
    assert config.train.output_dir.startswith("outputs/")
