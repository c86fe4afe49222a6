"""Shared fixtures: tiny random models of every supported family, saved as model folders, and
small CSV datasets, so recipes run end to end in seconds and offline.

Integration tests (marked `integration`) use the real MiniLM and ../shared/data. They skip with
a reason when the data is absent (a user's clone), and fail instead when HF_ADAPT_REQUIRE_DATA=1
(set by .ci/run), so CI can never pass by skipping them.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
import re
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertTokenizerFast,
    DebertaV2Config,
    DistilBertConfig,
    ElectraConfig,
    ModernBertConfig,
    RobertaConfig,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the Arrow copies of the tests' data files and their tokenized splits: a folder of this session's own
os.environ.setdefault("HF_ADAPT_CACHE", tempfile.mkdtemp(prefix="hf_adapt_test_cache_"))
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "scripts" / "benchmarks"  # benchmark scripts, not part of the package
SHARED_DATA = Path(os.environ.get("HF_ADAPT_DATA_DIR", REPO.parent / "shared" / "data"))

POSITIVE = ["good", "great", "fine", "lovely", "superb", "nice", "happy", "best"]
NEGATIVE = ["bad", "awful", "poor", "sad", "worst", "boring", "ugly", "dull"]
NEUTRAL = ["the", "a", "movie", "film", "was", "is", "plot", "very", "really", "quite", "it", "this", "and", "story"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIAL + POSITIVE + NEGATIVE + NEUTRAL

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)
FAMILIES = {
    "bert": lambda: BertConfig(vocab_size=len(VOCAB), **TINY),
    "roberta": lambda: RobertaConfig(vocab_size=len(VOCAB), pad_token_id=0, bos_token_id=2, eos_token_id=3,
                                     type_vocab_size=1, **{**TINY, "max_position_embeddings": 70}),
    "distilbert": lambda: DistilBertConfig(vocab_size=len(VOCAB), dim=32, n_layers=2, n_heads=4, hidden_dim=37,
                                           max_position_embeddings=64, pad_token_id=0),
    "deberta-v2": lambda: DebertaV2Config(vocab_size=len(VOCAB), relative_attention=True, position_buckets=8,
                                          pos_att_type=["p2c", "c2p"], type_vocab_size=0, pad_token_id=0, **TINY),
    "electra": lambda: ElectraConfig(vocab_size=len(VOCAB), embedding_size=16, **TINY),
    # no token type ids; its own layer names (Wqkv, Wi, Wo) and a final LayerNorm above the layers
    "modernbert": lambda: ModernBertConfig(vocab_size=len(VOCAB), pad_token_id=0, cls_token_id=2, sep_token_id=3,
                                           bos_token_id=2, eos_token_id=3, global_attn_every_n_layers=1, **TINY),
}


def part_of(name: str, base_prefix: str, num_layers: int) -> str:
    """'layer0', 'layer1', ..., 'embeddings' or 'head', from a parameter name alone (ModernBERT's
    final LayerNorm, above the layers, goes with the top layer)."""
    name = name.removeprefix("base_model.model.")  # peft
    layer = re.search(r"\.layers?\.(\d+)\.", name)
    if layer:
        return f"layer{layer.group(1)}"
    if ".final_norm." in name:
        return f"layer{num_layers - 1}"
    return "embeddings" if name.startswith(base_prefix + ".") and ".pooler." not in name else "head"


def make_tokenizer(directory: Path, family: str = "bert") -> BertTokenizerFast:
    """A WordPiece tokenizer over VOCAB (every family can read its ids; DistilBERT and RoBERTa
    take no token_type_ids)."""
    directory.mkdir(parents=True, exist_ok=True)
    # transformers 5 ignores `vocab_file=` here (every word would become [UNK]): pass the dict.
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(VOCAB)}, do_lower_case=True)
    if family in ("distilbert", "roberta", "deberta-v2", "modernbert"):
        tokenizer.model_input_names = ["input_ids", "attention_mask"]
    return tokenizer


def save_tiny_model(directory: Path, family: str = "bert", seed: int = 0) -> Path:
    """Save a tiny random pretrained-style model + tokenizer folder (safetensors) and return it."""
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(FAMILIES[family]())
    model.save_pretrained(directory, safe_serialization=True)
    make_tokenizer(directory, family).save_pretrained(directory)
    return directory


def write_sentiment_csvs(directory: Path, rows: int = 96, seed: int = 0, three_classes: bool = False) -> dict[str, Path]:
    """train/validation/test CSVs whose label is learnable from the words (text,label columns)."""
    rng = random.Random(seed)
    words = {"positive": POSITIVE, "negative": NEGATIVE}
    if three_classes:
        words["neutral"] = NEUTRAL[:6]
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, count in (("train", rows), ("validation", max(rows // 4, 8)), ("test", max(rows // 4, 8))):
        path = directory / f"{split}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            for i in range(count):
                label = list(words)[i % len(words)]
                text = " ".join(rng.choice(NEUTRAL) for _ in range(rng.randint(1, 4)))
                text += " " + " ".join(rng.choice(words[label]) for _ in range(rng.randint(1, 3)))
                writer.writerow([text, label])
        paths[split] = path
    return paths


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch):
    """One torch thread here and in subprocesses: on a shared, busy CPU, OpenMP threads that wait
    for each other at every small op make tiny models many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One saved tiny model folder per architecture family (built once per session)."""
    root = tmp_path_factory.mktemp("tiny_models")
    return {family: save_tiny_model(root / family, family) for family in FAMILIES}


@pytest.fixture
def tiny_bert(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["bert"]


@pytest.fixture
def sentiment_csvs(tmp_path: Path) -> dict[str, Path]:
    return write_sentiment_csvs(tmp_path / "data")


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or a skip (a user's clone) / failure (CI, HF_ADAPT_REQUIRE_DATA=1) without it."""
    if not (SHARED_DATA / "sst2" / "train.csv").is_file():
        message = f"real data not found at {SHARED_DATA} (set HF_ADAPT_DATA_DIR or place ../shared/data)"
        if os.environ.get("HF_ADAPT_REQUIRE_DATA") == "1":
            pytest.fail(message + "; HF_ADAPT_REQUIRE_DATA=1 demands it")
        pytest.skip(message)
    return SHARED_DATA


def tiny_config(vocab_size: int = len(VOCAB), **overrides) -> BertConfig:
    """A tiny BERT config (STYLE.md's test model) for models built in-process."""
    return BertConfig(vocab_size=vocab_size, **{**TINY, **overrides})


def snapshot_files(root: Path) -> dict[str, str]:
    """Every file (its sha256) and folder ("dir") under `root`: equal snapshots = nothing changed."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def snapshot_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter, by name."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def logits_of(model: torch.nn.Module, tokenizer, texts: list[str], max_length: int = 32) -> torch.Tensor:
    """The model's logits for `texts` (eval mode, no gradients), on the CPU."""
    model.eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        return model(**batch.to(next(model.parameters()).device)).logits.cpu()


def write_yaml(path: Path, data: dict | str) -> Path:
    """A recipe (or any YAML) file; a string is written as it is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def tiny_recipe(model_dir: Path, data: dict[str, Path], output_dir: Path, **sections: dict) -> dict:
    """A nested recipe dict for a few fast steps on a tiny model (merge `sections` over it)."""
    recipe = {
        "model": {"name_or_path": str(model_dir), "max_length": 32},
        "data": {"train_file": str(data["train"]), "validation_file": str(data["validation"]),
                 "test_file": str(data["test"])},
        "optim": {"learning_rate": 1e-3, "warmup": 0.0},
        # fp32 on every machine (`auto` would be bf16 on a CPU with AMX): tests that compare two runs,
        # or a run with its reload, expect the same numbers everywhere. test_precision covers auto/bf16.
        "train": {"output_dir": str(output_dir), "epochs": 1, "batch_size": 16, "logging_steps": 5,
                  "seed": 0, "mixed_precision": "no"},
    }
    for section, values in sections.items():
        recipe.setdefault(section, {}).update(values)
    return recipe
