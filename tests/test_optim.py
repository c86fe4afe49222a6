"""Tests for hf_adapt.optim: layer-wise LR decay groups for every architecture family.

Expected depths are worked out here from the parameter *names* (`...layer.3...`, the base model
prefix, the head), independently of `modeling.parameter_depths`, so a wrong layout is caught.
"""

import re

import pytest
import torch
from conftest import FAMILIES, tiny_recipe
from transformers import AutoModelForSequenceClassification, TrainerCallback

from hf_adapt.config import AdaptConfig, OptimConfig, config_from_dict
from hf_adapt.engine import run_recipe
from hf_adapt.optim import build_optimizer, build_param_groups
from hf_adapt.strategies import apply_strategy

LR, DECAY = 1e-3, 0.8
NUM_LAYERS = 2  # the tiny models in conftest


def load(model_dir) -> torch.nn.Module:
    return AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)


def expected_depth(model: torch.nn.Module, name: str) -> int:
    """Head 0, encoder layer i at depth L - i, everything else in the base model (embeddings,
    DeBERTa's rel_embeddings, ELECTRA's embeddings_project) at L + 1."""
    name = name.removeprefix("base_model.model.")  # peft
    layer = re.search(r"\.layers?\.(\d+)\.", name)
    if layer:
        return NUM_LAYERS - int(layer.group(1))
    if ".final_norm." in name:  # ModernBERT's LayerNorm above the layers: with the top layer
        return 1
    in_base = name.startswith(model.base_model_prefix + ".") and ".pooler." not in name
    return NUM_LAYERS + 1 if in_base else 0


def lr_by_name(groups: list[dict]) -> dict[str, float]:
    return {name: group["lr"] for group in groups for name in group["param_names"]}


@pytest.mark.parametrize("family", FAMILIES)
def test_group_learning_rates_are_lr_times_decay_to_the_depth(tiny_models, family):
    model = load(tiny_models[family])

    groups = build_param_groups(model, OptimConfig(learning_rate=LR, layer_decay=DECAY))

    names = [name for group in groups for name in group["param_names"]]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())  # each parameter exactly once
    lrs = lr_by_name(groups)
    for name, lr in lrs.items():
        assert lr == LR * DECAY ** expected_depth(model, name), name  # exact, not approximate
    depths = {expected_depth(model, name) for name in lrs}
    assert depths == {0, 1, 2, 3}  # head, top layer, bottom layer, embeddings
    assert {g["lr"] for g in groups} == {LR, LR * DECAY, LR * DECAY**2, LR * DECAY**3}


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_the_mean_pooling_layer_is_not_counted_as_a_layer(tiny_models, family):
    from hf_adapt.pooling import append_mean_pooling_layer

    model = load(tiny_models[family])
    plain = lr_by_name(build_param_groups(model, OptimConfig(learning_rate=LR, layer_decay=DECAY)))
    append_mean_pooling_layer(model)

    pooled = lr_by_name(build_param_groups(model, OptimConfig(learning_rate=LR, layer_decay=DECAY)))

    assert {name: pooled[name] for name in plain} == plain  # every weight at the rate it had without the layer
    assert set(pooled) == set(plain)  # the pooling layer is frozen: in no group


@pytest.mark.parametrize("family, name, depth", [
    ("bert", "bert.pooler.dense.weight", 0),
    ("bert", "classifier.weight", 0),
    ("bert", "bert.encoder.layer.1.attention.self.query.weight", 1),
    ("bert", "bert.encoder.layer.0.output.dense.weight", 2),
    ("bert", "bert.embeddings.word_embeddings.weight", 3),
    ("roberta", "classifier.out_proj.weight", 0),
    ("roberta", "roberta.embeddings.position_embeddings.weight", 3),
    ("distilbert", "pre_classifier.weight", 0),
    ("distilbert", "distilbert.transformer.layer.1.ffn.lin1.weight", 1),
    ("deberta-v2", "pooler.dense.weight", 0),
    ("deberta-v2", "deberta.encoder.rel_embeddings.weight", 3),
    ("deberta-v2", "deberta.encoder.layer.0.attention.self.query_proj.weight", 2),
    ("electra", "classifier.dense.weight", 0),
    ("electra", "electra.embeddings_project.weight", 3),
    ("electra", "electra.embeddings.word_embeddings.weight", 3),
])
def test_named_parameters_sit_at_their_depth(tiny_models, family, name, depth):
    lrs = lr_by_name(build_param_groups(load(tiny_models[family]), OptimConfig(learning_rate=LR, layer_decay=DECAY)))

    assert lrs[name] == LR * DECAY**depth


@pytest.mark.parametrize("family", FAMILIES)
def test_no_weight_decay_on_biases_and_layer_norms(tiny_models, family):
    model = load(tiny_models[family])
    shapes = {name: p.ndim for name, p in model.named_parameters()}

    groups = build_param_groups(model, OptimConfig(weight_decay=0.05))

    for group in groups:
        for name in group["param_names"]:
            expected = 0.0 if shapes[name] < 2 else 0.05
            assert group["weight_decay"] == expected, name
            if name.endswith("bias") or "layernorm" in name.lower().replace("_", ""):
                assert group["weight_decay"] == 0.0, name
    assert {g["weight_decay"] for g in groups} == {0.0, 0.05}


def test_head_learning_rate_sets_the_head_only(tiny_bert):
    model = load(tiny_bert)

    lrs = lr_by_name(build_param_groups(model, OptimConfig(learning_rate=LR, layer_decay=DECAY,
                                                             head_learning_rate=5e-2)))

    for name, lr in lrs.items():
        depth = expected_depth(model, name)
        assert lr == (5e-2 if depth == 0 else LR * DECAY**depth), name
    assert lrs["classifier.weight"] == lrs["bert.pooler.dense.weight"] == 5e-2


@pytest.mark.parametrize("family", FAMILIES)
def test_decay_one_gives_every_group_the_same_lr(tiny_models, family):
    groups = build_param_groups(load(tiny_models[family]), OptimConfig(learning_rate=LR, layer_decay=1.0))

    assert {g["lr"] for g in groups} == {LR}


def test_frozen_parameters_are_left_out_unless_include_frozen(tiny_bert):
    model = apply_strategy(load(tiny_bert), AdaptConfig(strategy="partial", freeze_embeddings=True, freeze_layers=1))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("bert.embeddings.", "bert.encoder.layer.0.")) for n in frozen)

    default = lr_by_name(build_param_groups(model, OptimConfig(learning_rate=LR, layer_decay=DECAY)))
    every = lr_by_name(build_param_groups(model, OptimConfig(learning_rate=LR, layer_decay=DECAY), include_frozen=True))

    assert set(default) == {n for n, _ in model.named_parameters()} - frozen
    assert set(every) == {n for n, _ in model.named_parameters()}
    for name in frozen:  # frozen parameters wait in the group of their depth, for gradual unfreezing
        assert every[name] == LR * DECAY ** expected_depth(model, name)


def test_lora_groups_follow_the_depth_of_the_wrapped_layers(tiny_bert):
    model = apply_strategy(load(tiny_bert), AdaptConfig(strategy="lora", lora_r=2))

    lrs = lr_by_name(build_param_groups(model, OptimConfig(learning_rate=LR, layer_decay=DECAY)))

    assert set(lrs) == {n for n, p in model.named_parameters() if p.requires_grad}
    lora = [n for n in lrs if "lora_" in n]
    assert len(lora) == 2 * 5 * NUM_LAYERS  # A and B on the five default targets of each layer
    for name in lora:
        assert lrs[name] == LR * DECAY ** expected_depth(model, name), name
    head = [n for n in lrs if "modules_to_save" in n]
    assert head and all(lrs[n] == LR for n in head)


def test_build_optimizer_is_adamw_over_the_groups(tiny_bert):
    model = load(tiny_bert)
    config = OptimConfig(learning_rate=LR, layer_decay=DECAY)

    optimizer = build_optimizer(model, config)

    assert isinstance(optimizer, torch.optim.AdamW)
    expected = build_param_groups(model, config)
    assert [(g["lr"], g["weight_decay"], g["param_names"]) for g in optimizer.param_groups] == \
           [(g["lr"], g["weight_decay"], g["param_names"]) for g in expected]


class RecordLearningRates(TrainerCallback):
    """The optimizer's group learning rates (and depths) after each training step."""

    def __init__(self):
        self.steps: list[list[tuple[int, float]]] = []

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        self.steps.append([(g["depth"], g["lr"]) for g in optimizer.param_groups])


@pytest.mark.integration
def test_scheduler_keeps_the_layer_ratios_while_training(tiny_bert, sentiment_csvs, tmp_path):
    record = RecordLearningRates()
    config = config_from_dict(tiny_recipe(
        tiny_bert, sentiment_csvs, tmp_path / "out",
        optim={"learning_rate": LR, "layer_decay": 0.5, "warmup": 2, "scheduler": "linear"},
        train={"max_steps": 3, "eval_strategy": "no"},
    ))

    run_recipe(config, callbacks=[record])

    assert len(record.steps) == 3
    head_lrs = []
    for groups in record.steps:
        head = next(lr for depth, lr in groups if depth == 0)
        head_lrs.append(head)
        for depth, lr in groups:
            assert lr == pytest.approx(head * 0.5**depth, rel=1e-9)
    # the schedule did act (warm-up to step 2, then linear decay), so the ratios were really tested
    assert head_lrs[0] == pytest.approx(LR / 2) and head_lrs[1] == pytest.approx(LR)
    assert head_lrs[2] < head_lrs[1]
