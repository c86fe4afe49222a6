"""Tests for hf_adapt.hub: pushes go through the real huggingface_hub client, over real HTTP, to a
loopback Hub (tests/hub_server.py), or into a local hub folder that transformers loads offline.

Endpoint: `push` reads `HF_ENDPOINT` when it is called and hands it to `HfApi(endpoint=...)`, so the
tests only set the environment variable; huggingface_hub's import-time copy is left alone.
Xet: with `hf_xet` installed the 2.4 client uploads through Xet without asking the server, so the
`hub` fixture sets `constants.HF_HUB_DISABLE_XET` (what `HF_HUB_DISABLE_XET=1` does at import) to
take the plain LFS path that the loopback Hub speaks.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import logits_of, tiny_config
from hub_server import HubServer  # tests/hub_server.py: pytest puts tests/ on sys.path
from huggingface_hub import constants, snapshot_download
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (
    AutoModelForSequenceClassification,
    BertForSequenceClassification,
    BertTokenizerFast,
)

from hf_adapt.errors import HfAdaptError
from hf_adapt.cli import build_parser
from hf_adapt.hub import push, resolve_model_reference, select_files

TOKEN = "hf_test_token"
LABELS = ["weather", "set_alarm", "play_music"]
TEXTS = ["w1 w2 w3 w4", "w10 w20 w30", "w5"]
# What a training run leaves behind that must never reach a repo.
JUNK = {
    ".env": b"HF_TOKEN=hf_secret_do_not_push\n",
    "token": b"hf_secret_do_not_push",
    "optimizer.pt": b"pickle", "scheduler.pt": b"pickle", "training_args.bin": b"pickle",
    "checkpoint-1/model.safetensors": b"x", "checkpoint-1/config.json": b"{}",
    "checkpoint-1/optimizer.pt": b"x", "checkpoint-1/rng_state.pth": b"x", "checkpoint-1/trainer_state.json": b"{}",
    "runs/events.out.tfevents.1": b"x",
    ".huggingface/token": b"hf_secret_do_not_push",
}
MODEL_FILES = {"README.md", "config.json", "labels.json", "metrics.json", "model.safetensors", "recipe.yaml",
               "tokenizer.json", "tokenizer_config.json", "vocab.txt"}
ADAPTER_FILES = {"README.md", "adapter_config.json", "adapter_model.safetensors", "tokenizer.json",
                 "tokenizer_config.json"}  # transformers 5 saves no vocab.txt next to tokenizer.json


# --- tiny training outputs, built once ---


def tiny_tokenizer(folder: Path) -> BertTokenizerFast:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(94)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5 ignores `vocab_file=` (its vocabulary would be the special tokens alone): the dict.
    return BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)})


def tiny_model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = tiny_config(vocab_size=99, max_position_embeddings=512, id2label=dict(enumerate(LABELS)),
                         label2id={label: i for i, label in enumerate(LABELS)})
    return BertForSequenceClassification(config).eval()


def write_run_files(out: Path) -> None:
    (out / "labels.json").write_text(json.dumps(LABELS))
    (out / "recipe.yaml").write_text("model:\n  name_or_path: tiny\n")
    (out / "metrics.json").write_text(json.dumps({"eval_accuracy": 0.5}))
    (out / "README.md").write_text("---\nlibrary_name: transformers\n---\n# tiny\n")
    for rel, data in JUNK.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """A full fine-tuning output directory, and the logits its model gives on TEXTS."""
    out = tmp_path_factory.mktemp("full_run")
    tokenizer = tiny_tokenizer(out)
    model = tiny_model()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_run_files(out)
    return out, logits_of(model, tokenizer, TEXTS)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A merged LoRA output (merged model on top, adapter in adapter/), its base model and logits."""
    base_dir = tmp_path_factory.mktemp("base")
    out = tmp_path_factory.mktemp("lora_run")
    tokenizer = tiny_tokenizer(out)
    tiny_model().save_pretrained(base_dir)
    model = get_peft_model(tiny_model(), LoraConfig(task_type="SEQ_CLS", target_modules=["query", "value"]))
    torch.manual_seed(1)
    with torch.no_grad():  # as if trained: LoRA B starts at zero, and the head must move too
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.5)
    model.eval()
    logits = logits_of(model, tokenizer, TEXTS)
    model.save_pretrained(out / "adapter")
    tokenizer.save_pretrained(out / "adapter")
    (out / "adapter" / "README.md").write_text("# tiny adapter\n")
    model.merge_and_unload().save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_run_files(out)
    return out, base_dir, logits


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- isolation ---


@pytest.fixture(autouse=True)
def no_credentials(monkeypatch, tmp_path):
    """No token from the developer's environment or login, and no writes to their HF cache."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no_login" / "token"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "user_cache"))
    # The loopback test hub is the one server these tests reach; a developer's or CI's
    # HF_HUB_OFFLINE=1 (read by huggingface_hub at import) would refuse even that.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def hub(monkeypatch):
    with HubServer(tokens=(TOKEN,)) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        yield server


def download(hub: HubServer, repo_id: str, cache: Path, revision: str | None = None) -> Path:
    return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, endpoint=hub.url, token=TOKEN))


# --- to a Hub ---


def test_full_model_round_trips_through_the_hub_with_weights_over_lfs(hub, full_run, tmp_path, monkeypatch):
    out, expected = full_run

    result = push(out, "org/tiny", to="hub", token=TOKEN)

    assert result.destination == f"{hub.url}/org/tiny"
    assert set(result.files) == MODEL_FILES
    assert set(hub.files("org/tiny")) == MODEL_FILES | {".gitattributes"}  # no junk, no checkpoint-1/
    assert hub.lfs_files("org/tiny") == {"model.safetensors"}
    assert len(hub.requests_matching("PUT", r"^/lfs-upload/")) == 1  # the weights went through LFS
    assert result.revision == hub.repos["org/tiny"].branches["main"]

    # Downloads pick Xet from the server's headers: with none, plain HTTP even with Xet enabled.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    local = download(hub, "org/tiny", tmp_path / "cache")
    assert not hub.requests_matching("GET", r"/xet-")
    assert hub.requests_matching("GET", r"^/org/tiny/resolve/[0-9a-f]{40}/model.safetensors$")
    assert {p.name for p in local.iterdir()} == MODEL_FILES | {".gitattributes"}
    assert (local / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    reloaded = AutoModelForSequenceClassification.from_pretrained(local).eval()
    assert reloaded.config.id2label == dict(enumerate(LABELS))
    torch.testing.assert_close(logits_of(reloaded, BertTokenizerFast.from_pretrained(local), TEXTS), expected)


def test_lora_adapter_round_trips_to_a_new_branch_of_a_private_repo(hub, lora_run, tmp_path):
    out, base_dir, expected = lora_run

    result = push(out, "org/tiny-lora", to="hub", what="adapter", private=True, revision="lora", token=TOKEN)

    assert set(result.files) == ADAPTER_FILES
    assert result.destination == f"{hub.url}/org/tiny-lora/tree/lora"
    repo = hub.repos["org/tiny-lora"]
    assert repo.private and set(repo.branches) == {"main", "lora"}
    assert set(hub.files("org/tiny-lora", "main")) == {".gitattributes"}
    assert hub.lfs_files("org/tiny-lora", "lora") == {"adapter_model.safetensors"}

    local = download(hub, "org/tiny-lora", tmp_path / "cache", revision="lora")
    base = AutoModelForSequenceClassification.from_pretrained(base_dir)
    reloaded = PeftModel.from_pretrained(base, local).eval()
    torch.testing.assert_close(logits_of(reloaded, BertTokenizerFast.from_pretrained(local), TEXTS), expected)


def test_push_without_a_valid_token_fails_in_one_line_and_leaves_the_output_alone(hub, full_run):
    out, _ = full_run
    before = tree_bytes(out)

    with pytest.raises(HfAdaptError) as missing:
        push(out, "org/tiny", to="hub")
    with pytest.raises(HfAdaptError) as wrong:
        push(out, "org/tiny", to="hub", token="hf_wrong_secret")

    for err in (missing, wrong):
        message = str(err.value)
        assert "\n" not in message
        assert message.startswith(f"push to {hub.url}/org/tiny failed: 401 Unauthorized")
        assert "HF_TOKEN" in message
    assert "hf_wrong_secret" not in str(wrong.value)
    assert "org/tiny" not in hub.repos
    assert tree_bytes(out) == before


@pytest.mark.skipif(importlib.util.find_spec("hf_xet") is None, reason="without hf_xet the client always uses LFS")
def test_xet_upload_to_a_hub_without_xet_says_how_to_fall_back(hub, full_run, monkeypatch):
    # The 2.4 client picks Xet by itself when hf_xet is installed; the server cannot turn it down.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)

    with pytest.raises(HfAdaptError, match="HF_HUB_DISABLE_XET=1") as err:
        push(full_run[0], "org/tiny", to="hub", token=TOKEN)

    assert "\n" not in str(err.value)
    assert hub.requests_matching("GET", r"/xet-write-token/")
    assert not hub.requests_matching("PUT", r"^/lfs-upload/")


# --- to a local hub folder ---

OFFLINE_LOAD = textwrap.dedent("""
    import json, sys, torch
    from huggingface_hub import snapshot_download
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    texts, base_dir = json.loads(sys.argv[1]), sys.argv[2]
    tokenizer = AutoTokenizer.from_pretrained("org/tiny")
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    model = AutoModelForSequenceClassification.from_pretrained("org/tiny").eval()
    base = AutoModelForSequenceClassification.from_pretrained(base_dir)
    lora = PeftModel.from_pretrained(base, "org/tiny-lora").eval()
    with torch.no_grad():
        result = {"logits": model(**inputs).logits.tolist(), "lora_logits": lora(**inputs).logits.tolist()}
    result["pipeline"] = [p["label"] for p in pipeline("text-classification", model="org/tiny")(texts)]
    result["snapshot"] = snapshot_download("org/tiny", local_files_only=True)
    print(json.dumps(result))
""")


@pytest.mark.integration
def test_local_hub_loads_offline_in_a_fresh_process(full_run, lora_run, tmp_path):
    (out, expected), (lora_out, base_dir, lora_expected) = full_run, lora_run
    root = tmp_path / "local_hub"

    result = push(out, "org/tiny", local_root=root)
    push(lora_out, "org/tiny-lora", what="adapter", local_root=root)

    storage = root / "models--org--tiny"
    assert (storage / "refs" / "main").read_text() == result.revision
    assert result.destination == str(storage / "snapshots" / result.revision)
    weights = Path(result.destination) / "model.safetensors"
    assert weights.is_symlink() and weights.resolve().parent == (storage / "blobs").resolve()
    assert len(weights.resolve().name) == 64  # LFS-style blob: named by its sha256, as the Hub's ETag
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(root), "HF_ENDPOINT": "http://127.0.0.1:9"}
    env.pop("HF_HOME", None)
    proc = subprocess.run([sys.executable, "-c", OFFLINE_LOAD, json.dumps(TEXTS), str(base_dir)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    torch.testing.assert_close(torch.tensor(loaded["logits"]), expected)
    torch.testing.assert_close(torch.tensor(loaded["lora_logits"]), lora_expected)
    assert loaded["pipeline"] == [LABELS[i] for i in expected.argmax(-1).tolist()]
    assert loaded["snapshot"] == result.destination


def test_local_hub_is_laid_out_like_a_hub_download(hub, full_run, tmp_path):
    out = full_run[0]
    push(out, "org/tiny", to="hub", token=TOKEN)
    downloaded = download(hub, "org/tiny", tmp_path / "cache")

    pushed = Path(push(out, "org/tiny", local_root=tmp_path / "local_hub").destination)

    for name in MODEL_FILES:  # same blob names (ETags), same relative symlinks
        assert os.readlink(pushed / name) == os.readlink(downloaded / name)

    def tree(snapshot: Path) -> dict:
        listing = json.loads((snapshot.parents[1] / "trees" / f"{snapshot.name}.json").read_text())
        return {path: entry for path, entry in listing["files"].items() if path != ".gitattributes"}

    assert tree(pushed) == tree(downloaded)


def test_repushing_moves_main_to_a_new_snapshot(full_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(full_run[0], out)
    root = tmp_path / "local_hub"
    first = push(out, "org/tiny", local_root=root)
    assert push(out, "org/tiny", local_root=root).revision == first.revision  # same files, same commit

    (out / "metrics.json").write_text(json.dumps({"eval_accuracy": 0.9}))
    second = push(out, "org/tiny", local_root=root)

    assert second.revision != first.revision
    assert (root / "models--org--tiny" / "refs" / "main").read_text() == second.revision
    assert Path(first.destination).is_dir()  # old snapshots stay, as in the real cache
    assert json.loads((Path(second.destination) / "metrics.json").read_text()) == {"eval_accuracy": 0.9}
    assert resolve_model_reference("org/tiny", local_root=root) == second.destination


def test_push_defaults_to_the_user_hf_cache(full_run):
    result = push(full_run[0], "org/tiny")

    assert result.destination.startswith(str(Path(constants.HF_HUB_CACHE) / "models--org--tiny" / "snapshots"))
    assert resolve_model_reference("org/tiny") == result.destination


def test_resolve_model_reference_falls_through_for_anything_else(full_run, tmp_path):
    assert resolve_model_reference(str(full_run[0]), local_root=tmp_path) == str(full_run[0])
    assert resolve_model_reference("org/not-pushed", local_root=tmp_path) == "org/not-pushed"
    assert resolve_model_reference("not a repo id!", local_root=tmp_path) == "not a repo id!"


# --- file selection and refusals ---


def test_auto_pushes_the_output_as_it_is_and_never_the_junk(lora_run):
    out = lora_run[0]

    assert set(select_files(out, "auto")) == MODEL_FILES | {f"adapter/{f}" for f in ADAPTER_FILES}
    assert set(select_files(out, "model")) == MODEL_FILES
    assert set(select_files(out, "adapter")) == ADAPTER_FILES


def test_unmerged_adapter_output_pushes_as_an_adapter(lora_run, tmp_path):
    out = tmp_path / "unmerged"
    shutil.copytree(lora_run[0] / "adapter", out)

    assert set(select_files(out, "auto")) == set(select_files(out, "adapter")) == ADAPTER_FILES
    with pytest.raises(HfAdaptError, match="unmerged LoRA adapter.*what='adapter'"):
        select_files(out, "model")


def _only_pickles(folder: Path) -> Path:
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    (folder / "config.json").write_text("{}")
    return folder


@pytest.mark.parametrize(
    "make_dir, repo_id, options, match",
    [
        (lambda d: d, "org/tiny", {}, "holds no model"),
        (lambda d: d / "missing", "org/tiny", {}, "does not exist"),
        (_only_pickles, "org/tiny", {}, "never pushed.*safetensors"),
        (None, "org/tiny", {"what": "adapter"}, "holds no LoRA adapter"),
        (None, "org/tiny", {"what": "everything"}, "what must be"),
        (None, "org/tiny", {"to": "s3"}, "to must be"),
        (None, "org/tiny", {"revision": "../../escape"}, "--revision .*may start with"),
        (None, "org/tiny", {"revision": "."}, "--revision .*may start with"),
        (None, "tiny", {}, "ORG/NAME"),
        (None, "org/tiny/extra", {}, "bad repo id"),
        (None, "org/ti--ny", {}, "bad repo id"),
    ],
)
def test_push_refuses_bad_inputs_in_one_line(make_dir, repo_id, options, match, full_run, tmp_path):
    output_dir = make_dir(tmp_path) if make_dir else full_run[0]

    with pytest.raises(HfAdaptError, match=match) as err:
        push(output_dir, repo_id, local_root=tmp_path / "local_hub", **options)

    assert "\n" not in str(err.value)
    assert not (tmp_path / "local_hub").exists()


def test_push_does_nothing_off_the_main_process(full_run, tmp_path, monkeypatch):
    import accelerate

    class OtherRank:
        is_main_process = False

    monkeypatch.setattr(accelerate, "PartialState", OtherRank)

    assert push(full_run[0], "org/tiny", local_root=tmp_path / "local_hub") is None
    assert not (tmp_path / "local_hub").exists()


def test_cli_push_prints_where_it_went(full_run, tmp_path, capsys):
    args = build_parser().parse_args(["push", str(full_run[0]), "--repo-id", "org/tiny", "--local-root", str(tmp_path)])

    assert args.func(args) == 0

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"pushed {len(MODEL_FILES)} files of org/tiny to {tmp_path}")
    assert lines[1].startswith(f"load it with: hf-adapt predict --model org/tiny --local-root {tmp_path.resolve()}")


@pytest.mark.integration
def test_recipe_with_hub_push_trains_then_pushes_a_card_naming_the_repo(tiny_bert, sentiment_csvs, tmp_path):
    """`hub.push: true` pushes at the end of training; the pushed card names the repo and its
    model-index equals the run's metrics.json."""
    from conftest import tiny_recipe
    from huggingface_hub import ModelCard

    from hf_adapt.config import config_from_dict
    from hf_adapt.recipes import full

    root = tmp_path / "hub"
    recipe = tiny_recipe(tiny_bert, sentiment_csvs, tmp_path / "out",
                         hub={"push": True, "repo_id": "org/pushed", "to": "local", "local_root": str(root)})
    result = full.run(config_from_dict(recipe))
    snapshot = Path(resolve_model_reference("org/pushed", local_root=root))
    card = ModelCard.load(snapshot / "README.md")
    assert 'model="org/pushed"' in card.text
    index = {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    for split, values in result.metrics.items():
        for metric in ("accuracy", "macro_f1", "mcc"):
            assert index[(split, metric)] == pytest.approx(values[metric], abs=5e-5)
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == (snapshot / "model.safetensors").read_bytes()


def test_push_says_how_to_load_and_predict_finds_the_model_in_that_local_hub(full_run, tmp_path, capsys,
                                                                           monkeypatch):
    """The newcomer's round trip: push to a local hub folder, then load ORG/NAME from it."""
    from hf_adapt.cli import main

    out, expected = full_run
    root = (tmp_path / "my_hub").resolve()
    assert main(["push", str(out), "--repo-id", "org/roundtrip", "--local-root", str(root)]) == 0
    hint = capsys.readouterr().out.strip().splitlines()[-1]
    assert hint == (f"load it with: hf-adapt predict --model org/roundtrip --local-root {root}   or, in Python, "
                    f"with HF_HUB_OFFLINE=1 HF_HUB_CACHE={root} set: pipeline('text-classification', "
                    f"model='org/roundtrip')")

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    assert main(["predict", "--model", "org/roundtrip", "--local-root", str(root), "--input", str(texts)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [row["label"] for row in rows] == [LABELS[i] for i in expected.argmax(-1).tolist()]

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(["predict", "--model", "org/roundtrip", "--input", str(texts)]) == 2  # not in the default root
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "hf-adapt: error: model org/roundtrip: no such folder, and not in the local hub at ")
