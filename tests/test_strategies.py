"""Tests for hf_adapt.strategies: which weights train under full, partial and LoRA, for every
architecture family, checked by `requires_grad` and by a few real optimizer steps (frozen weights
must not move; trainable ones must).

Expected parts are worked out from parameter names here (layer index, base-model prefix, head),
independently of `modeling.encoder_layout`.
"""

import re

import pytest
import torch
import torch.nn.functional as F
from conftest import FAMILIES, snapshot_weights
from conftest import part_of as conftest_part_of
from transformers import AutoModelForSequenceClassification

from hf_adapt.config import AdaptConfig, OptimConfig
from hf_adapt.errors import HfAdaptError
from hf_adapt.optim import build_optimizer
from hf_adapt.strategies import apply_strategy, check_lora_targets, trainable_summary

NUM_LAYERS = 2


def load(model_dir) -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=3, ignore_mismatched_sizes=True)


def part_of(model: torch.nn.Module, name: str) -> str:
    """'layer0', 'layer1', 'embeddings' or 'head' for a parameter name."""
    return conftest_part_of(name, unwrapped_prefix(model), model.config.num_hidden_layers)


def unwrapped_prefix(model: torch.nn.Module) -> str:
    return getattr(model, "get_base_model", lambda: model)().base_model_prefix


def trainable_parts(model: torch.nn.Module) -> dict[str, set[bool]]:
    """part -> the set of requires_grad values of its parameters (LoRA matrices left out)."""
    parts: dict[str, set[bool]] = {}
    for name, param in model.named_parameters():
        if "lora_" not in name:
            parts.setdefault(part_of(model, name), set()).add(param.requires_grad)
    return parts


def train_steps(model: torch.nn.Module, steps: int = 3) -> None:
    """A few AdamW steps (with weight decay) on random token ids, through our optimizer builder."""
    optimizer = build_optimizer(model, OptimConfig(learning_rate=1e-2, weight_decay=0.1))
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        input_ids = torch.randint(5, 30, (4, 6), generator=generator)
        labels = torch.randint(0, 3, (4,), generator=generator)
        logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits
        F.cross_entropy(logits, labels).backward()
        optimizer.step()
        optimizer.zero_grad()


def moved(before: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, bool]:
    return {name: not torch.equal(before[name], p.detach()) for name, p in model.named_parameters()}


# ---------------------------------------------------------------------------------------------
# Which parameters train


@pytest.mark.parametrize("family", FAMILIES)
def test_full_trains_everything(tiny_models, family):
    model = load(tiny_models[family])
    model.requires_grad_(False)

    model = apply_strategy(model, AdaptConfig(strategy="full"))

    assert all(p.requires_grad for p in model.parameters())
    summary = trainable_summary(model)
    assert summary.trainable == summary.total and summary.percent == 100.0


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("adapt, frozen", [
    ({"freeze_embeddings": True}, {"embeddings"}),
    ({"freeze_layers": 1}, {"layer0"}),
    ({"freeze_embeddings": True, "freeze_layers": 1}, {"embeddings", "layer0"}),
    ({"freeze_embeddings": True, "freeze_layers": 2}, {"embeddings", "layer0", "layer1"}),
    ({"freeze_encoder": True}, {"embeddings", "layer0", "layer1", "layer2"}),  # layer2: mean pooling on top
    ({"freeze_encoder": True, "pooling": "cls"}, {"embeddings", "layer0", "layer1"}),
])
def test_partial_freezes_exactly_the_named_parts(tiny_models, family, adapt, frozen):
    model = apply_strategy(load(tiny_models[family]), AdaptConfig(strategy="partial", **adapt))
    if family == "modernbert":  # its head pools the mean itself: no pooling layer on top
        frozen = frozen - {"layer2"}

    parts = trainable_parts(model)

    assert set(parts) == {"embeddings", "layer0", "layer1", "head"} | frozen
    assert parts == {part: {part not in frozen} for part in parts}  # each part wholly frozen or trainable


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_trains_the_adapters_and_the_head_only(tiny_models, family):
    model = apply_strategy(load(tiny_models[family]), AdaptConfig(strategy="lora", lora_r=4))

    trainable = [n for n, p in model.named_parameters() if p.requires_grad]

    lora = [n for n in trainable if "lora_" in n]
    # lora_A and lora_B on five Linear modules per layer: query, value, attention output, feed-forward in/out
    # (ModernBERT: four, its query, key and value being one Linear)
    assert len(lora) == 2 * (4 if family == "modernbert" else 5) * NUM_LAYERS
    assert not any(key in n for n in lora for key in (".key.", ".k_lin.", ".key_proj."))
    assert all(part_of(model, n).startswith("layer") for n in lora)
    head = [n for n in trainable if "lora_" not in n]
    assert head and all(".modules_to_save." in n and part_of(model, n) == "head" for n in head)
    # every weight of the original model stays frozen, the original head copy included
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n
                   and ".modules_to_save." not in n)
    summary = trainable_summary(model)
    assert summary.trainable == sum(p.numel() for n, p in model.named_parameters() if n in set(trainable))
    assert 0 < summary.percent < 100


def test_partial_with_more_frozen_layers_than_the_model_has_names_the_count(tiny_bert):
    with pytest.raises(HfAdaptError, match="adapt.freeze_layers is 5 but the model has 2 encoder layers; "
                                           r"use at most 2 \(or adapt.freeze_encoder: true\)"):
        apply_strategy(load(tiny_bert), AdaptConfig(strategy="partial", freeze_layers=5))


def test_lora_custom_targets(tiny_bert):
    model = apply_strategy(load(tiny_bert), AdaptConfig(strategy="lora", lora_r=2,
                                                        lora_target_modules=["query", "key", "value"]))

    targeted = {re.search(r"\.(\w+)\.lora_A\.", n).group(1) for n, _ in model.named_parameters() if "lora_A" in n}

    assert targeted == {"query", "key", "value"}


def test_lora_layers_leave_dtypes_to_autocast(tiny_bert):
    """peft's cast of each LoRA input to fp32 is switched off: under bf16 autocast it only copied
    the activations; the outputs are the same with and without it."""
    model = apply_strategy(load(tiny_bert), AdaptConfig(strategy="lora", lora_r=2,
                                                        lora_target_modules=["query", "value", "dense"]))
    lora_layers = [m for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")]
    for module in model.modules():  # the adapters start at zero: give them weights that count
        if hasattr(module, "lora_B"):
            torch.nn.init.normal_(module.lora_B["default"].weight)
    vocab = model.get_base_model().config.vocab_size
    inputs = {"input_ids": torch.randint(5, vocab, (3, 9)), "attention_mask": torch.ones(3, 9, dtype=torch.long)}

    assert lora_layers and not any(m.cast_input_dtype_enabled for m in lora_layers)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        uncast = model(**inputs).logits
        for m in lora_layers:
            m.cast_input_dtype_enabled = True
        cast = model(**inputs).logits
    torch.testing.assert_close(uncast, cast, rtol=0.02, atol=0.02)


def test_lora_target_errors_name_the_choices(tiny_bert):
    model = load(tiny_bert)
    with pytest.raises(HfAdaptError, match=r"adapt.lora_target_modules \['q_proj'\] not found in the model; "
                                           "Linear modules it has: .*query"):
        check_lora_targets(model, ["q_proj"], ["classifier"])
    with pytest.raises(HfAdaptError, match=r"\['classifier'\] are in the classifier head"):
        check_lora_targets(model, ["classifier"], ["classifier"])
    # peft's matching: a full name or a dotted suffix of one, never a part of a word
    check_lora_targets(model, ["query", "intermediate.dense", "attention.output.dense"], ["bert.pooler", "classifier"])
    with pytest.raises(HfAdaptError, match=r"\['ermediate.dense'\] not found"):
        check_lora_targets(model, ["ermediate.dense"], ["bert.pooler", "classifier"])
    with pytest.raises(HfAdaptError, match=r"\['pooler.dense'\] are in the classifier head"):
        check_lora_targets(model, ["pooler.dense"], ["bert.pooler", "classifier"])


# ---------------------------------------------------------------------------------------------
# What moves when it trains


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("adapt, frozen", [
    ({"strategy": "full"}, set()),
    ({"strategy": "partial", "freeze_embeddings": True, "freeze_layers": 1}, {"embeddings", "layer0"}),
    ({"strategy": "partial", "freeze_encoder": True}, {"embeddings", "layer0", "layer1", "layer2"}),
])
def test_training_moves_trainable_weights_and_never_frozen_ones(tiny_models, family, adapt, frozen):
    model = apply_strategy(load(tiny_models[family]), AdaptConfig(**adapt))
    before = snapshot_weights(model)

    train_steps(model)

    for name, changed in moved(before, model).items():
        assert changed == (part_of(model, name) not in frozen), name


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_training_leaves_base_weights_and_moves_adapters_and_head(tiny_models, family):
    model = apply_strategy(load(tiny_models[family]), AdaptConfig(strategy="lora", lora_r=4, lora_dropout=0.0))
    before = snapshot_weights(model)

    train_steps(model)

    for name, changed in moved(before, model).items():
        trains = "lora_" in name or ".modules_to_save." in name
        assert changed == trains, name


def test_xlm_roberta_takes_the_roberta_path(tiny_models, tmp_path):
    """XLM-RoBERTa is RoBERTa's architecture under its own model_type: the same layout, LoRA targets
    and depth rule, and a recipe trains it end to end."""
    from conftest import make_tokenizer, tiny_recipe, write_sentiment_csvs
    from transformers import XLMRobertaConfig

    from hf_adapt.config import config_from_dict
    from hf_adapt.engine import run_recipe
    from hf_adapt.modeling import encoder_layout, parameter_depths

    roberta = AutoModelForSequenceClassification.from_pretrained(tiny_models["roberta"]).config.to_dict()
    config = XLMRobertaConfig(**{k: v for k, v in roberta.items() if k not in ("model_type", "architectures")})
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / "xlmr")
    make_tokenizer(tmp_path / "xlmr", "roberta").save_pretrained(tmp_path / "xlmr")
    model = load(tmp_path / "xlmr")
    assert model.config.model_type == "xlm-roberta" and encoder_layout(model).num_layers == NUM_LAYERS
    depths = parameter_depths(model)
    assert {depths[id(p)] for n, p in model.named_parameters() if ".layer.0." in n} == {NUM_LAYERS}
    lora = apply_strategy(load(tmp_path / "xlmr"), AdaptConfig(strategy="lora", lora_r=2))
    assert len([n for n, p in lora.named_parameters() if "lora_" in n]) == 2 * 5 * NUM_LAYERS

    data = write_sentiment_csvs(tmp_path / "data", rows=16)
    result = run_recipe(config_from_dict(tiny_recipe(tmp_path / "xlmr", data, tmp_path / "out",
                                                     adapt={"strategy": "lora"}, train={"max_steps": 1})))
    assert "accuracy" in result.metrics["test"]
