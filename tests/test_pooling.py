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


def test_mean_pooling_needs_a_frozen_encoder(tiny_bert, sentiment_csvs, tmp_path):
    with pytest.raises(HfAdaptError, match="adapt.pooling: mean needs adapt.freeze_encoder"):
        config_from_dict(tiny_recipe(tiny_bert, sentiment_csvs, tmp_path / "out", adapt={"pooling": "mean"}))
