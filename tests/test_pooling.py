"""Tests for hf_adapt.pooling: the frozen mean-pooling layer, for every architecture family."""

import pytest
import torch
from conftest import FAMILIES, logits_of, tiny_recipe
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from hf_adapt.config import config_from_dict
from hf_adapt.engine import run_recipe
from hf_adapt.errors import HfAdaptError
from hf_adapt.modeling import encoder_layout
from hf_adapt.pooling import append_mean_pooling_layer, is_mean_pooling_layer

pytestmark = pytest.mark.usefixtures("one_thread")
TEXTS = ["good", "a very good and quite long film indeed", "bad movie"]  # padded batch


def load(model_dir) -> torch.nn.Module:
    return AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2).eval()


def expected_pooled(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """LayerNorm (no affine) of the mean of the real tokens' states, written out independently."""
    mask = attention_mask.unsqueeze(-1).float()
    mean = (hidden * mask).sum(1) / mask.sum(1)
    centred = mean - mean.mean(-1, keepdim=True)
    return centred / centred.pow(2).mean(-1, keepdim=True).add(1e-12).sqrt()


@pytest.mark.parametrize("family", FAMILIES)
def test_first_token_output_is_the_mean_of_the_states_below(tiny_models, family):
    model = load(tiny_models[family])
    layers = encoder_layout(model).num_layers
    if family == "modernbert":  # its head pools by itself: the config says mean, no layer is added
        assert append_mean_pooling_layer(model) is None and model.config.classifier_pooling == "mean"
        assert encoder_layout(model).num_layers == layers
        return
    append_mean_pooling_layer(model)
    assert encoder_layout(model).num_layers == model.config.num_hidden_layers == layers + 1
    batch = AutoTokenizer.from_pretrained(tiny_models[family])(TEXTS, padding=True, return_tensors="pt")
    if family == "distilbert":  # takes no token types
        batch.pop("token_type_ids", None)
    with torch.no_grad():
        hidden = model.base_model(**batch, output_hidden_states=True).hidden_states
    pooled, below = hidden[-1][:, 0], hidden[-2]
    torch.testing.assert_close(pooled, expected_pooled(below, batch["attention_mask"]), atol=2e-2, rtol=0)
    assert batch["attention_mask"].sum(1).unique().numel() == len(TEXTS)  # the padding really varied


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_saved_model_reloads_with_the_layer(tiny_models, family, tmp_path):
    model = load(tiny_models[family])
    append_mean_pooling_layer(model)
    model.save_pretrained(tmp_path)
    reloaded = load(tmp_path)
    assert is_mean_pooling_layer(encoder_layout(reloaded).layers[-1])
    assert not is_mean_pooling_layer(encoder_layout(reloaded).layers[-2])
    append_mean_pooling_layer(reloaded)  # continuing from it adds no second one
    assert reloaded.config.num_hidden_layers == model.config.num_hidden_layers
    inputs = {"input_ids": torch.tensor([[2, 5, 6, 7, 3]])}
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, model(**inputs).logits)


@pytest.mark.integration
@pytest.mark.parametrize("pooling, layers", [("auto", 3), ("cls", 2)])
def test_frozen_encoder_trains_the_head_on_mean_pooled_features(tiny_bert, sentiment_csvs, tmp_path, pooling, layers):
    config = config_from_dict(tiny_recipe(tiny_bert, sentiment_csvs, tmp_path / "out", train={"epochs": 2},
                                          adapt={"strategy": "partial", "freeze_encoder": True, "pooling": pooling}))
    result = run_recipe(config)
    assert result.train["frozen_cache"]["features"]
    assert result.train["pooling"] == ("mean" if pooling == "auto" else "cls")
    card = (tmp_path / "out" / "README.md").read_text()
    assert ("mean of the token states" in card) == (pooling == "auto")
    saved = load(tmp_path / "out")
    assert saved.config.num_hidden_layers == layers
    assert is_mean_pooling_layer(encoder_layout(saved).layers[-1]) == (pooling == "auto")  # untouched by training
    classify = pipeline("text-classification", model=str(tmp_path / "out"))
    probabilities = logits_of(saved, AutoTokenizer.from_pretrained(tmp_path / "out"), ["a good film"]).softmax(-1)[0]
    best = int(probabilities.argmax())
    assert classify("a good film")[0] == {"label": saved.config.id2label[best],
                                          "score": pytest.approx(float(probabilities[best]), abs=1e-5)}


def test_mean_pooling_is_refused_with_lora(tiny_bert, sentiment_csvs, tmp_path):
    with pytest.raises(HfAdaptError, match="adapt.pooling: mean is for strategies full and partial"):
        config_from_dict(tiny_recipe(tiny_bert, sentiment_csvs, tmp_path / "out",
                                     adapt={"strategy": "lora", "pooling": "mean"}))


@pytest.mark.parametrize("adapt, body, per_label, expected", [
    ({"strategy": "full"}, "mean", 16, "mean"),  # few-shot on a mean-pooled sentence encoder
    ({"strategy": "full"}, "mean", 64, "mean"),  # 64 per label: +1.5 points on SST-2 (3 seeds)
    ({"strategy": "full"}, "mean", 65, "cls"),  # more data: the model's own head, not measured with mean
    ({"strategy": "full"}, None, 16, "cls"),  # not a sentence encoder
    ({"strategy": "full"}, "cls", 16, "cls"),  # a sentence encoder that pools the first token
    ({"strategy": "full"}, "mean", None, "cls"),
    ({"strategy": "lora"}, "mean", 16, "cls"),  # LoRA would adapt the pooling layer
    ({"strategy": "partial", "freeze_layers": 2}, "mean", 8, "mean"),
    ({"strategy": "partial", "freeze_encoder": True}, None, 10_000, "mean"),  # features: always
    ({"strategy": "full", "pooling": "cls"}, "mean", 8, "cls"),  # an explicit value wins
    ({"strategy": "full", "pooling": "mean"}, None, 10_000, "mean"),
])
def test_auto_pooling_follows_the_body_and_the_rows_per_label(adapt, body, per_label, expected):
    from hf_adapt.config import AdaptConfig
    from hf_adapt.pooling import resolve_pooling

    assert resolve_pooling(AdaptConfig(**adapt), body, per_label) == expected


def test_sentence_pooling_reads_the_sentence_transformers_config(tiny_bert, tmp_path):
    import json
    import shutil

    from hf_adapt.config import ModelConfig
    from hf_adapt.modeling import sentence_pooling

    assert sentence_pooling(ModelConfig(name_or_path=str(tiny_bert))) is None  # a plain transformers folder
    body = shutil.copytree(tiny_bert, tmp_path / "body")
    (body / "1_Pooling").mkdir()
    (body / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}))
    assert sentence_pooling(ModelConfig(name_or_path=str(body))) == "mean"
    assert sentence_pooling(ModelConfig(name_or_path=str(body), from_scratch=True)) is None
    assert sentence_pooling(ModelConfig(name_or_path="sentence-transformers/all-MiniLM-L6-v2")) == "mean"  # embedded


@pytest.mark.integration
def test_few_shot_full_fine_tuning_of_a_sentence_encoder_reads_the_mean(tiny_bert, tmp_path):
    """`adapt.pooling: auto` on a mean-pooled sentence encoder with 8 rows per label: the pooling
    layer is added, stays frozen (still an average after training), is saved and reloads."""
    import json
    import shutil

    from conftest import write_sentiment_csvs

    body = shutil.copytree(tiny_bert, tmp_path / "body")
    (body / "1_Pooling").mkdir()
    (body / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    data = write_sentiment_csvs(tmp_path / "data", rows=16)
    config = config_from_dict(tiny_recipe(body, data, tmp_path / "out", train={"epochs": 3}))
    result = run_recipe(config)
    assert result.train["pooling"] == "mean"
    saved = load(tmp_path / "out")
    layers = encoder_layout(saved).layers
    assert saved.config.num_hidden_layers == 3 and is_mean_pooling_layer(layers[-1])
    start = load(body)
    assert not torch.equal(encoder_layout(start).layers[0].attention.self.query.weight,
                           layers[0].attention.self.query.weight)  # the encoder below it trained
    assert "pooling: auto" in (tmp_path / "out" / "recipe.yaml").read_text()  # the recipe as written
    assert pipeline("text-classification", model=str(tmp_path / "out"))("a good film")[0]["label"] in (
        "negative", "positive")
