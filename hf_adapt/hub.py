"""Push a training output directory to the Hub, or to a local hub folder that reads like the HF cache.

`push(output_dir, "ORG/NAME")` picks the files a model repo needs with an allow-list (safetensors
weights, configs, tokenizer files, labels, recipe, metrics, model card) and leaves everything else
home: Trainer checkpoints, optimizer and RNG state, TensorBoard logs, pickles, `.env` and tokens.

Two destinations:

- `to="hub"`: a commit through `huggingface_hub.HfApi` on `HF_ENDPOINT` (default huggingface.co),
  authenticated with the usual `HF_TOKEN` or `hf auth login` token.
- `to="local"` (the default, needs no network): the files are written into a folder laid out exactly
  like the huggingface_hub cache (`models--ORG--NAME/{blobs,snapshots,refs,trees}`), by default the
  user's own cache. With `HF_HUB_OFFLINE=1`, `from_pretrained("ORG/NAME")` and
  `pipeline(..., model="ORG/NAME")` then load it as if it had been downloaded.

Pushes are side effects of a whole run, so under `accelerate launch` only the main process pushes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from hf_adapt.config import revision_problem
from hf_adapt.errors import HfAdaptError, first_line, shown
from hf_adapt.modeling import resolve_model_path

logger = logging.getLogger(__name__)

# A pushed repo holds only files whose name matches one of these. Only the top level of the output
# directory and its `adapter/` folder are read, so `checkpoint-*/`, `runs/` and `.huggingface/`
# are never even listed.
ALLOWED_FILES = (
    "*.safetensors", "*.safetensors.index.json",  # weights: safetensors only, never pickles
    "config.json", "generation_config.json", "adapter_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "spm.model", "sentencepiece.bpe.model", "tokenizer.model",
    "labels.json", "recipe.yaml", "metrics.json", "README.md",
)
# Refused even if a future allow-list entry matched them: secrets, training state and pickles.
FORBIDDEN_FILES = (
    ".env", ".env.*", "token", "*.token",
    "optimizer.pt", "scheduler.pt", "rng_state*.pth", "trainer_state.json", "training_args.bin",
    "*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle",
)
ADAPTER_DIR = "adapter"
FULL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Stored like Git LFS files: blob named by sha256 (as the Hub's ETag for LFS files), else by git sha1.
LFS_SUFFIXES = (".safetensors",)


@dataclass
class PushResult:
    """What a push did.

    Args:
        repo_id (`str`): `ORG/NAME`.
        destination (`str`): the repo URL (`to="hub"`) or the snapshot folder (`to="local"`).
        revision (`str`): the commit that now holds the files (the branch points at it).
        files (`list[str]`): the pushed paths, relative to the repo root.
    """

    repo_id: str
    destination: str
    revision: str
    files: list[str] = field(default_factory=list)


def push(
    output_dir: str | os.PathLike,
    repo_id: str,
    *,
    to: str = "local",
    what: str = "auto",
    private: bool = False,
    revision: str | None = None,
    local_root: str | os.PathLike | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> PushResult | None:
    """Push a training output directory to the Hub or to a local hub folder.

    Args:
        output_dir (`str` or `os.PathLike`): a directory written by `hf-adapt train`.
        repo_id (`str`): `ORG/NAME`.
        to (`str`, defaults to `"local"`): `"local"` (a cache-layout folder, no network) or `"hub"`
            (`HF_ENDPOINT`, default huggingface.co).
        what (`str`, defaults to `"auto"`): `"auto"` pushes the output as it is (with its `adapter/`
            folder if any); `"model"` the full (merged) model only; `"adapter"` the LoRA adapter only
            (`adapter/`, or the top level when the run was not merged).
        private (`bool`, defaults to `False`): create the Hub repo private (`to="hub"` only).
        revision (`str`, *optional*): branch to push to, created if missing; default `main`.
        local_root (`str`, *optional*): root of the local hub; default huggingface_hub's `HF_HUB_CACHE`.
        token (`str`, *optional*): Hub token; default `HF_TOKEN` or the `hf auth login` token.
        commit_message (`str`, *optional*): message of the Hub commit.

    Returns:
        [`PushResult`], or `None` on a non-main process of a distributed launch (nothing is pushed).
    """
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return None
    _check_repo_id(repo_id)
    if to not in ("local", "hub"):
        raise HfAdaptError(f"push: to must be 'local' or 'hub', got {to!r}")
    if revision is not None and revision_problem(revision):
        raise HfAdaptError(f"push: --revision {shown(revision)}: {revision_problem(revision)}")
    files = select_files(output_dir, what)
    with tempfile.TemporaryDirectory(prefix="hf_adapt_cards_") as workdir:
        files = _cards_naming_repo(files, Path(output_dir), repo_id, Path(workdir))
        if to == "hub":
            message = commit_message or f"Upload {what if what != 'auto' else 'model'} trained with hf-adapt"
            return _push_to_hub(files, repo_id, revision=revision, private=private, token=token, message=message)
        return _push_to_local_hub(files, repo_id, revision=revision or "main", root=local_root)


def _cards_naming_repo(files: dict[str, Path], output_dir: Path, repo_id: str, workdir: Path) -> dict[str, Path]:
    """Re-render the pushed cards so their loading snippets name the repo; every number in them
    still comes from the run's metrics.json. The output directory itself is never modified."""
    metrics = output_dir / "metrics.json"
    if not metrics.is_file() or not (output_dir / "recipe.yaml").is_file():
        return files
    if "hf_adapt_version" not in json.loads(metrics.read_text(encoding="utf-8")):
        return files  # not written by hf_adapt's engine: push the card as it is
    from hf_adapt.cards import CardData, render_card

    renamed = dict(files)
    for repo_path, local in files.items():
        if Path(repo_path).name != "README.md":
            continue
        kind = "adapter" if (local.parent / "adapter_config.json").is_file() else "model"
        target = workdir / repo_path.replace("/", "__")
        render_card(CardData.from_output_dir(output_dir, repo_id=repo_id, kind=kind)).save(target)
        renamed[repo_path] = target
    return renamed


def select_files(output_dir: str | os.PathLike, what: str = "auto") -> dict[str, Path]:
    """The files `push` would send, as `{path in repo: local file}`; see `push` for `what`."""
    if what not in ("auto", "model", "adapter"):
        raise HfAdaptError(f"push: what must be 'auto', 'model' or 'adapter', got {what!r}")
    root = Path(output_dir)
    if not root.is_dir():
        raise HfAdaptError(f"push: output directory {root} does not exist: pass the train.output_dir of a finished run")
    top_is_model = any((root / name).is_file() for name in FULL_WEIGHTS)
    top_is_adapter = (root / ADAPTER_WEIGHTS).is_file()
    adapter_dir = root / ADAPTER_DIR
    if what == "adapter":
        if (adapter_dir / ADAPTER_WEIGHTS).is_file():
            files = _allowed_files(adapter_dir)
        elif top_is_adapter:
            files = _allowed_files(root)
        else:
            raise HfAdaptError(f"push: {root} holds no LoRA adapter (no {ADAPTER_DIR}/{ADAPTER_WEIGHTS}): "
                               "push what='model', or train with adapt.strategy lora")
    elif not (top_is_model or (what == "auto" and top_is_adapter)):
        raise HfAdaptError(_no_model_message(root, top_is_adapter))
    else:
        files = _allowed_files(root)
        if what == "auto" and (adapter_dir / ADAPTER_WEIGHTS).is_file():
            files.update(_allowed_files(adapter_dir, prefix=f"{ADAPTER_DIR}/"))
    _check_loadable(root, files)
    return files


def resolve_model_reference(ref: str, local_root: str | os.PathLike | None = None) -> str:
    """Where `hf-adapt predict --model REF` should load from.

    An existing directory is returned as is; a repo id found in the local hub (with weights) gives
    its `main` snapshot folder; anything else comes back unchanged for transformers to fetch.
    """
    if Path(ref).is_dir():
        return ref
    from huggingface_hub.file_download import repo_folder_name
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(ref)
    except HFValidationError:
        return ref
    storage = Path(_local_root(local_root)) / repo_folder_name(repo_id=ref, repo_type="model")
    ref_file = storage / "refs" / "main"
    if ref_file.is_file():
        snapshot = storage / "snapshots" / ref_file.read_text().strip()
        if any((snapshot / name).is_file() for name in (*FULL_WEIGHTS, ADAPTER_WEIGHTS)):
            return str(snapshot)
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE and ref.count("/") == 1 and not Path(resolve_model_path(ref)).is_dir():
        raise HfAdaptError(f"model {ref}: no such folder, and not in the local hub at {_local_root(local_root)} "
                           f"(HF_HUB_OFFLINE=1 keeps the Hub out); give the model's folder, or the --local-root that "
                           f"`hf-adapt push` wrote it to")
    return ref


# --- file selection ---


def _is_allowed(name: str) -> bool:
    allowed = any(fnmatchcase(name, p) for p in ALLOWED_FILES)
    return allowed and not any(fnmatchcase(name.lower(), p) for p in FORBIDDEN_FILES)


def _allowed_files(folder: Path, prefix: str = "") -> dict[str, Path]:
    # No recursion: everything a repo needs sits at the top of the folder.
    files = {prefix + p.name: p for p in sorted(folder.iterdir()) if p.is_file() and _is_allowed(p.name)}
    for name, path in files.items():  # a link could publish any file the user can read
        if path.is_symlink() and folder.resolve() not in path.resolve().parents:
            raise HfAdaptError(f"push: {path} is a link to {path.resolve()}, outside {folder}; push publishes only "
                               f"files inside the output directory: replace the link with a copy of the file")
    left_out = sorted(p.name for p in folder.iterdir() if prefix + p.name not in files)
    logger.debug("push: not pushing from %s: %s", folder, ", ".join(left_out) or "nothing")
    return files


def _no_model_message(root: Path, top_is_adapter: bool) -> str:
    if top_is_adapter:
        return (f"push: {root} holds an unmerged LoRA adapter, not a full model: "
                "push what='adapter', or retrain with merging enabled")
    pickles = sorted(p.name for p in root.glob("*.bin"))
    if pickles:
        return (f"push: {root} holds only pickled weights ({', '.join(pickles)}), which are never pushed: "
                "re-save the model with safetensors (save_pretrained(..., safe_serialization=True))")
    return (f"push: {root} holds no model (no model.safetensors or {ADAPTER_WEIGHTS}): "
            "pass the output directory of a finished hf-adapt train run")


def _check_loadable(root: Path, files: dict[str, Path]) -> None:
    """Weights without their config would push a repo nobody can load."""
    for prefix in ("", f"{ADAPTER_DIR}/"):
        if any(prefix + w in files for w in FULL_WEIGHTS) and prefix + "config.json" not in files:
            raise HfAdaptError(f"push: {root / prefix}config.json is missing next to the model weights: "
                               "re-save the model with save_pretrained")
        if prefix + ADAPTER_WEIGHTS in files and prefix + "adapter_config.json" not in files:
            raise HfAdaptError(f"push: {root / prefix}adapter_config.json is missing next to the adapter weights: "
                               "re-save the adapter with save_pretrained")


def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HfAdaptError(f"push: bad repo id {repo_id!r}: {first_line(err)}") from None
    if repo_id.count("/") != 1:
        raise HfAdaptError(f"push: repo id must look like ORG/NAME (an owner, a slash, a name), got {repo_id!r}")


# --- to the Hub ---


def hub_endpoint() -> str:
    """The Hub to push to: `HF_ENDPOINT` as set now, else huggingface_hub's own default.

    huggingface_hub copies `HF_ENDPOINT` into `constants.ENDPOINT` once, at import. Reading the
    variable at call time (and passing it to `HfApi` explicitly) means a value set after that
    import, by a notebook or a test, is honoured too; we never write either of them.
    """
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _push_to_hub(files: dict[str, Path], repo_id: str, *, revision: str | None, private: bool,
                 token: str | None, message: str) -> PushResult:
    import httpx2
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    from hf_adapt import __version__

    endpoint = hub_endpoint()
    url = f"{endpoint}/{repo_id}" + (f"/tree/{revision}" if revision and revision != "main" else "")
    token = token or get_token()
    # token=False, not None, when there is none: HfApi would otherwise look it up again.
    api = HfApi(endpoint=endpoint, token=token or False, library_name="hf_adapt", library_version=__version__)
    operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(src)) for path, src in files.items()]
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.create_commit(repo_id, operations=operations, commit_message=message, revision=revision)
    # HTTP errors (HfHubHTTPError is an OSError), transport errors, hf_xet's ConnectionError, the LFS
    # upload wrapper (RuntimeError) and the client's checks of README metadata and server answers (ValueError).
    except (OSError, httpx2.HTTPError, RuntimeError, ValueError) as err:
        raise HfAdaptError(f"push to {url} failed: {_describe_push_error(err, token)}") from err
    return PushResult(repo_id=repo_id, destination=url, revision=commit.oid, files=sorted(files))


def _describe_push_error(err: BaseException, token: str | None) -> str:
    """One line: the server's status and message when there is one, never the token."""
    from huggingface_hub.errors import HfHubHTTPError

    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, HfHubHTTPError):
        cause = cause.__cause__
    if cause is not None:
        response = cause.response
        server = (cause.server_message or "").strip().split("\n")[0]
        text = f"{response.status_code} {response.reason_phrase}" + (f": {server}" if server else "")
        if response.status_code in (401, 403):
            text += " (check HF_TOKEN or run `hf auth login` with a token that can write to this repo)"
    else:
        text = f"{type(err).__name__}: {first_line(err)}"
    if "xet" in text.lower():
        text += " (if this endpoint has no Xet storage, set HF_HUB_DISABLE_XET=1 to upload over plain LFS)"
    return text.replace(token, "***") if token else text


# --- to a local hub folder ---


def _local_root(local_root: str | os.PathLike | None) -> str:
    from huggingface_hub import constants

    return str(local_root) if local_root is not None else constants.HF_HUB_CACHE


def _push_to_local_hub(files: dict[str, Path], repo_id: str, *, revision: str,
                       root: str | os.PathLike | None) -> PushResult:
    """Write the files the way `snapshot_download` would have cached them.

    Layout (see huggingface_hub.file_download): `blobs/<etag>` holds each content once, named by
    its sha256 for LFS files and its git blob sha1 otherwise (the ETags the Hub serves);
    `snapshots/<commit>/<path>` are relative symlinks to the blobs (copies where symlinks are not
    allowed); `refs/<revision>` holds the commit; `trees/<commit>.json` the listing that lets
    `snapshot_download(local_files_only=True)` check the snapshot is complete. The commit is a fake
    but deterministic sha1 of the paths and blob names, so pushing the same files twice is a no-op
    and pushing new ones moves the ref to a new snapshot.
    """
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    storage = Path(_local_root(root)) / repo_folder_name(repo_id=repo_id, repo_type="model")
    tree = {path: _blob_entry(src, lfs=path.endswith(LFS_SUFFIXES)) for path, src in files.items()}
    commit = hashlib.sha1("".join(f"{p}\0{tree[p]['etag']}\n" for p in sorted(tree)).encode()).hexdigest()
    snapshot = storage / "snapshots" / commit
    try:
        for path, src in files.items():
            blob = storage / "blobs" / tree[path]["etag"]
            if not blob.is_file():
                _write_atomic(blob, src.read_bytes())
            _link(blob, snapshot / path, copy=constants.HF_HUB_DISABLE_SYMLINKS)
        listing = {p: {k: v for k, v in entry.items() if k != "etag"} for p, entry in sorted(tree.items())}
        _write_atomic(storage / "trees" / f"{commit}.json",
                      json.dumps({"format_version": 1, "files": listing}, indent=1).encode())
        _write_atomic(storage / "refs" / revision, commit.encode())  # no newline, as huggingface_hub writes it
    except OSError as err:
        raise HfAdaptError(f"push to local hub {storage} failed: {first_line(err)}: "
                           "check that the folder is writable, or pass --local-root") from err
    return PushResult(repo_id=repo_id, destination=str(snapshot), revision=commit, files=sorted(files))


def _blob_entry(src: Path, *, lfs: bool) -> dict:
    """The blob name (etag) and the tree-cache fields of one file."""
    data = src.read_bytes()  # one file at a time: encoder weights fit in memory, as in save_pretrained
    git_sha1 = _git_blob_sha1(data)
    if not lfs:
        return {"etag": git_sha1, "size": len(data), "blob_id": git_sha1}
    sha256 = hashlib.sha256(data).hexdigest()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
    return {"etag": sha256, "size": len(data), "blob_id": _git_blob_sha1(pointer),
            "lfs_sha256": sha256, "lfs_size": len(data)}


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    # Readers (a concurrent from_pretrained) never see a half-written blob or ref.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _link(blob: Path, pointer: Path, *, copy: bool) -> None:
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.is_symlink() or pointer.exists():
        pointer.unlink()
    if not copy:
        try:
            os.symlink(os.path.relpath(blob, pointer.parent), pointer)
            return
        except OSError:  # Windows without developer mode: copies, like huggingface_hub falls back to
            pass
    shutil.copyfile(blob, pointer)


# --- CLI ---


def run_cli(args: argparse.Namespace) -> int:
    """Run `hf-adapt push`; says where the files went and how to load them from there."""
    result = push(args.output_dir, args.repo_id, to=args.to, what=args.what, private=args.private,
                  revision=args.revision, local_root=args.local_root)
    if result is not None:
        print(f"pushed {len(result.files)} files of {result.repo_id} to {result.destination} "
              f"(commit {result.revision[:12]})")
        print(how_to_load(result.repo_id, to=args.to, local_root=args.local_root))
    return 0


def how_to_load(repo_id: str, *, to: str = "local", local_root: str | os.PathLike | None = None) -> str:
    """The commands that load a pushed model back (printed after every push)."""
    if to == "hub":
        return (f"load it with: hf-adapt predict --model {repo_id}   or, in Python, "
                f"pipeline('text-classification', model='{repo_id}')")
    root = Path(_local_root(local_root)).resolve()
    default = Path(_local_root(None)).resolve()
    env = "HF_HUB_OFFLINE=1" + ("" if root == default else f" HF_HUB_CACHE={root}")
    flag = "" if root == default else f" --local-root {root}"
    return (f"load it with: hf-adapt predict --model {repo_id}{flag}   or, in Python, with {env} set: "
            f"pipeline('text-classification', model='{repo_id}')")
