"""The life cycle of a run's output directory: claimed, checked, staged, published, recovered.

A training run owns `train.output_dir` from its first step to its last:

- a lock file beside it (`.NAME.lock`, holding the run's PID) keeps a second run out;
- checkpoints go to a hidden work directory beside it (`.NAME.work/`), kept until the end;
- the final save is written to `.NAME.tmp-PID/`, then renamed into place: an older output is moved
  to `.NAME.old-PID/` first and removed after, so the output only ever appears complete;
- a run killed in the middle of that swap is finished or rolled back by the next run into the same
  directory, which also removes what a killed save left behind.

What goes into an output: the model (a plain transformers checkpoint; for LoRA also the adapter),
its tokenizer, the label map, the resolved `recipe.yaml`, `metrics.json` (`RunResult`) and the
model card (`hf_adapt.cards`).

`--overwrite` replaces only a directory that an earlier hf_adapt run wrote (it holds that run's
`metrics.json` and `recipe.yaml`), and no output may be, contain or sit inside one of the run's
inputs (data files, the base model's folder, `model.init_from`).
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

import hf_adapt
from hf_adapt.config import PRESETS, RecipeConfig
from hf_adapt.data import LabelMap
from hf_adapt.errors import HfAdaptError, say, shown
from hf_adapt.modeling import unwrap

try:
    import fcntl
except ImportError:  # Windows: runs are not locked against each other there
    fcntl = None  # type: ignore[assignment]

# A full disk, a read-only or forbidden folder: the errors of writing that the user can mend.
WRITE_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}

# Files that every hf_adapt output holds and that mark a directory as one (RunResult, recipe header).
OUTPUT_MARKERS = ("metrics.json", "recipe.yaml")


@dataclass
class RunResult:
    """What a recipe's `run(config)` returns (and what `metrics.json` in the output holds)."""

    output_dir: str
    strategy: str
    base_model: str
    labels: list[str]
    metrics: dict[str, dict[str, float]]  # split ("validation", "test") -> metric -> value
    params: dict[str, int]  # trainable, total
    timings: dict[str, float]  # setup_s (data, model), train_s (training only), eval_s, total_s
    train: dict[str, Any]  # epochs, steps, train_loss, samples_per_second, best_checkpoint_metric
    data: dict[str, Any]  # sources and row counts per split
    hardware: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. forgetting results
    task: str = "single_label"  # or "regression": `labels` is then the name of the number predicted
    hf_adapt_version: str = hf_adapt.__version__

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, directory: Path) -> None:
        (directory / "metrics.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class RunPaths:
    """Where one run writes: the output directory and its hidden siblings."""

    output_dir: Path
    work_dir: Path  # checkpoints while training
    lock_file: Path  # held for the whole run

    @classmethod
    def of(cls, output_dir: str | Path) -> "RunPaths":
        output_dir = Path(output_dir).resolve()
        hidden = output_dir.parent / f".{output_dir.name}"
        return cls(output_dir, Path(f"{hidden}.work"), Path(f"{hidden}.lock"))

    def staging(self, pid: int | None = None) -> Path:
        return self.output_dir.parent / f".{self.output_dir.name}.tmp-{os.getpid() if pid is None else pid}"

    def backup(self, pid: int | None = None) -> Path:
        return self.output_dir.parent / f".{self.output_dir.name}.old-{os.getpid() if pid is None else pid}"


def is_hf_adapt_output(directory: Path) -> bool:
    """Whether `directory` was written by an hf_adapt run (its metrics.json names an hf_adapt version)."""
    if not all((directory / name).is_file() for name in OUTPUT_MARKERS):
        return False
    try:
        metrics = json.loads((directory / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(metrics, dict) and "hf_adapt_version" in metrics


# ---------------------------------------------------------------------------------------------
# Claiming the output for a run


@contextmanager
def claim_output(config: RecipeConfig, *, main_process: bool = True) -> Iterator[RunPaths]:
    """Hold `train.output_dir` for the duration of a run: lock it, finish or roll back what a killed
    run left, and check that the run may write there. Only the main process of a multi-process
    launch locks and recovers; every process checks.

    Raises:
        HfAdaptError: another run holds the output, the output is or overlaps an input, or it is not
            a directory that this run may replace.
    """
    paths = RunPaths.of(config.train.output_dir)
    check_apart_from_inputs(config, paths.output_dir)
    if not main_process:
        check_output_state(config, paths, announce=False)
        yield paths
        return
    created = _make_parents(paths.output_dir.parent)
    try:
        with _exclusive_lock(paths.lock_file, paths.output_dir):
            recover_interrupted_publish(paths)
            check_output_state(config, paths)
            had_checkpoints = last_complete_checkpoint(paths.work_dir) is not None
            try:
                yield paths
            except (HfAdaptError, OSError) as err:  # a failed run leaves no checkpoints of its own behind
                if isinstance(err, OSError) and err.errno not in WRITE_ERRORS:
                    raise
                if not had_checkpoints:
                    shutil.rmtree(paths.work_dir, ignore_errors=True)
                if isinstance(err, OSError):
                    raise HfAdaptError(f"cannot write {err.filename or paths.output_dir}: {err.strerror}; nothing was "
                                       f"published and {paths.output_dir} is as it was: free some space or choose "
                                       f"another train.output_dir") from None
                raise
    finally:
        for directory in created:  # only the folders this run made, and only while still empty
            try:
                directory.rmdir()
            except OSError:
                break


def check_apart_from_inputs(config: RecipeConfig, output_dir: Path) -> None:
    """Refuse an output directory that is, contains or sits inside one of the run's inputs: the
    final swap replaces the whole directory."""
    for key, value in run_inputs(config):
        path = Path(value).resolve()
        if path == output_dir:
            relation = "is"
        elif output_dir in path.parents:
            relation = "contains"
        elif path in output_dir.parents:
            relation = "sits inside"
        else:
            continue
        raise HfAdaptError(f"train.output_dir {output_dir} {relation} {key} {path}; a run replaces its whole output "
                           f"directory, so give it one of its own, apart from the data and the models it reads")


def run_inputs(config: RecipeConfig) -> list[tuple[str, str]]:
    """(key, local path) of every file or folder a run reads."""
    m, d = config.model, config.data
    candidates = [("data.train_file", d.train_file), ("data.validation_file", d.validation_file),
                  ("data.test_file", d.test_file), ("forgetting.probe", config.forgetting.probe),
                  ("model.init_from", m.init_from)]
    if Path(m.name_or_path).exists():  # a Hub id is no local input
        candidates.append(("model.name_or_path", m.name_or_path))
    return [(key, value) for key, value in candidates if value]


def check_output_state(config: RecipeConfig, paths: RunPaths, *, announce: bool = True) -> None:
    """Refuse to write into what is there, unless `--overwrite` (an earlier hf_adapt output only) or
    `--resume` (checkpoints of this output's unfinished run) says to."""
    output_dir, work_dir, t = paths.output_dir, paths.work_dir, config.train
    if output_dir.exists() and not output_dir.is_dir():
        raise HfAdaptError(f"train.output_dir {output_dir} is a file; choose a directory path")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        if not t.overwrite:
            raise HfAdaptError(f"train.output_dir {output_dir} already exists and is not empty; choose another "
                               f"directory or pass --overwrite to replace it when the new run succeeds")
        if not is_hf_adapt_output(output_dir):
            raise HfAdaptError(f"train.output_dir {output_dir} is not the output of an earlier hf_adapt run (no "
                               f"{' + '.join(OUTPUT_MARKERS)} from one), and --overwrite replaces only those; "
                               f"choose a new or empty directory")
    checkpoint = last_complete_checkpoint(work_dir)
    if t.resume and checkpoint is None:
        raise HfAdaptError(f"--resume: no checkpoint found in {work_dir}; run without --resume to start afresh")
    if checkpoint is not None and not t.resume and not t.overwrite:
        raise HfAdaptError(f"{work_dir} holds checkpoints of an unfinished run into {output_dir}; pass --resume "
                           f"to continue it or --overwrite to start again")
    if announce and checkpoint is None and work_dir.exists() and not t.overwrite:  # engine.build_trainer clears it
        say(f"starting afresh: {work_dir} holds no complete checkpoint (the run before died before "
              f"its first)")


def find_resume_checkpoint(config: RecipeConfig, work_dir: Path, fingerprint: dict[str, Any]) -> str | None:
    """The checkpoint `--resume` continues from (None without `--resume`), once its fingerprint shows
    it was made by this recipe on this data.

    Raises:
        HfAdaptError: no checkpoint, or one made with other settings, data, labels or model.
    """
    if not config.train.resume:
        return None
    last = last_complete_checkpoint(work_dir)
    if last is None:
        raise HfAdaptError(f"--resume: no checkpoint found in {work_dir}; run without --resume to start afresh")
    saved = Path(last) / FINGERPRINT_FILE
    if not saved.is_file():
        say(f"{last} has no {FINGERPRINT_FILE} (an older hf_adapt made it): cannot check that it was "
              f"made with this recipe and data")
    else:
        changes = fingerprint_changes(json.loads(saved.read_text(encoding="utf-8")), fingerprint)
        if changes:
            raise HfAdaptError(f"--resume: the checkpoints in {work_dir} were made with other settings or data: "
                               f"{'; '.join(changes)}; resume with what they were made with, or start again with "
                               f"--overwrite (drops them)")
    say(f"resuming from {last}")
    return last


# ---------------------------------------------------------------------------------------------
# What a checkpoint depends on

FINGERPRINT_FILE = "hf_adapt_fingerprint.json"
# Keys that change how a run is logged, evaluated at the end, saved or shared, not what it trains.
HARMLESS_KEYS = ("train.logging_steps", "train.tensorboard", "train.overwrite", "train.resume",
                 "train.keep_checkpoints", "train.save_total_limit", "train.eval_batch_size", "train.threads",
                 "train.output_dir", "data.test_file", "hub.", "forgetting.", "groupwise.")


def run_fingerprint(config: RecipeConfig, labels: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """What a checkpoint depends on: the resolved recipe (less `HARMLESS_KEYS`), the label set, and
    the content of the data files and local model weights it read (size and a sampled hash)."""
    settings = {key: value for key, value in _flatten(config.to_dict()).items()
                if not key.startswith(HARMLESS_KEYS)}
    files = {}
    for key, value in run_inputs(config):
        if key == "data.test_file":
            continue
        path = Path(value)
        for file in ([path] if path.is_file() else sorted(path.glob("*.safetensors")) if path.is_dir() else []):
            files[f"{key} {file}"] = _content_digest(file)
    return {"settings": settings, "labels": list(labels), "files": files}


def fingerprint_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """One phrase per difference between two fingerprints."""
    changes = []
    before, after = saved.get("settings", {}), current["settings"]
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            changes.append(f"{key} {shown(before.get(key), 60)} → {shown(after.get(key), 60)}")
    if saved.get("labels") != current["labels"]:
        changes.append(f"labels [{', '.join(saved.get('labels', []))}] → [{', '.join(current['labels'])}]")
    for name in sorted(set(saved.get("files", {})) | set(current["files"])):
        if saved.get("files", {}).get(name) != current["files"].get(name):
            changes.append(f"{name} changed" if name in current["files"] and name in saved.get("files", {})
                           else f"{name} {'added' if name in current['files'] else 'no longer read'}")
    return changes


def _flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _content_digest(path: Path, block: int = 1 << 20) -> str:
    """Size and a hash of the first, middle and last MiB: cheap for a file of gigabytes, and it sees
    rows added, removed or edited at either end (a touched file with the same bytes is unchanged)."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        for offset in sorted({0, max(0, size // 2 - block // 2), max(0, size - block)}):
            handle.seek(offset)
            digest.update(handle.read(block))
    return f"{size}:{digest.hexdigest()[:16]}"


class FingerprintCheckpoints(TrainerCallback):
    """A Trainer callback that writes the run's fingerprint into every checkpoint it saves, so that
    `--resume` can tell whether the checkpoint was made by the same recipe and data."""

    def __init__(self, fingerprint: dict[str, Any]):
        self.fingerprint = fingerprint

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and checkpoint.is_dir():
            (checkpoint / FINGERPRINT_FILE).write_text(json.dumps(self.fingerprint, indent=1) + "\n", encoding="utf-8")


def last_complete_checkpoint(work_dir: Path) -> str | None:
    """The newest `checkpoint-N` that was fully written: Trainer writes `trainer_state.json` last, so a
    run killed while saving leaves a newer checkpoint without it, which must not be resumed from."""
    if not work_dir.is_dir():
        return None
    complete = [c for c in work_dir.glob("checkpoint-*") if c.name.split("-")[-1].isdigit()
                and (c / "trainer_state.json").is_file()]
    return str(max(complete, key=lambda c: int(c.name.split("-")[-1]))) if complete else None


def _make_parents(directory: Path) -> list[Path]:
    """mkdir -p, returning the folders it created (deepest first)."""
    created = []
    for folder in [directory, *directory.parents]:
        if folder.exists():
            break
        created.append(folder)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HfAdaptError(f"cannot create {directory} for train.output_dir: {err.strerror}; choose a writable "
                           f"location") from None
    return created


@contextmanager
def _exclusive_lock(lock_file: Path, output_dir: Path) -> Iterator[None]:
    """An advisory lock (flock) held for a run; the OS drops it when the process dies, so a killed run
    never leaves a stale lock. The file holds the PID, which a refused run names."""
    if fcntl is None:
        yield
        return
    while True:
        try:
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise HfAdaptError(f"cannot write beside train.output_dir {output_dir}: {lock_file}: {err.strerror}; "
                               f"choose a writable location") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise HfAdaptError(f"train.output_dir {output_dir} is in use by another hf-adapt run (PID {holder}); wait "
                               f"for it to finish, or write this run to another directory") from None
        try:  # the holder before us may have removed the file between our open and our lock: retry
            same = os.stat(lock_file).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        lock_file.unlink(missing_ok=True)  # while still holding the lock: see the retry above
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Writing the output


@contextmanager
def publishing(paths: RunPaths, *, keep_checkpoints: bool = False) -> Iterator[Path]:
    """A fresh staging directory to write the output into; when the block ends it is published in
    one rename (`publish`) and, unless `keep_checkpoints`, the work directory is removed. An error,
    Ctrl-C or SIGTERM in the block removes the staging directory and leaves the output as it was."""
    staging = paths.staging()
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        with signals_raise():
            yield staging
            share_like_the_rest(staging)
            publish(paths)
    except SaveInterrupted as err:
        if not staging.exists():  # the signal came as the swap ended: the new output stands
            raise SaveInterrupted(f"{err} just after saving: the model is in {paths.output_dir}") from None
        shutil.rmtree(staging, ignore_errors=True)
        raise SaveInterrupted(f"{err} while saving: nothing was published and {paths.output_dir} is as it was; "
                              f"the checkpoints are in {paths.work_dir}: run the same command with --resume to "
                              f"save again") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not keep_checkpoints:
        shutil.rmtree(paths.work_dir, ignore_errors=True)
    say(f"saved to {paths.output_dir}")


def share_like_the_rest(directory: Path) -> None:
    """Give every file the permissions a new file gets here (0644 under the usual umask): the weights
    are written through a private temporary file (0600), which others could not read."""
    umask = os.umask(0)
    os.umask(umask)
    for path in directory.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o666 & ~umask)


def save_run(directory: Path, trainer: Any, config: RecipeConfig, label_map: LabelMap, result: RunResult,
             work_dir: Path, state_dict: dict[str, Any] | None = None) -> None:
    """Everything of a finished run but its card: model files, label map, recipe, logs, metrics."""
    save_model_files(trainer, config, directory, state_dict)
    label_map.save(directory)
    (directory / "recipe.yaml").write_text(recipe_header(config) + config.to_yaml(), encoding="utf-8")
    if (work_dir / "runs").is_dir():  # TensorBoard logs
        shutil.copytree(work_dir / "runs", directory / "runs")
    result.save(directory)


def save_model_files(trainer: Any, config: RecipeConfig, directory: Path,
                     state_dict: dict[str, Any] | None = None) -> None:
    """A plain transformers model (+ tokenizer); for LoRA also the adapter, or the adapter alone."""
    model = trainer.model
    tokenizer = trainer.processing_class
    if config.adapt.strategy != "lora":
        unwrap(model).save_pretrained(directory, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(directory)
        return
    adapter_dir = directory / "adapter" if config.adapt.merge_lora else directory
    model.save_pretrained(adapter_dir, safe_serialization=True)
    # Continuing from an earlier run, the adapter's base weights are that run's.
    _set_adapter_base(adapter_dir, str(Path(config.model.init_from).resolve()) if config.model.init_from
                      else config.model.name_or_path)
    # config.json beside the adapter carries the label map, so the head can be rebuilt.
    unwrap(model).config.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    if config.adapt.merge_lora:
        merged = model.merge_and_unload()
        merged.save_pretrained(directory, safe_serialization=True)
        tokenizer.save_pretrained(directory)
        trainer.model = merged


def _set_adapter_base(adapter_dir: Path, base_model: str) -> None:
    """Record the Hub id (not the local embedded path) as the adapter's base model."""
    path = adapter_dir / "adapter_config.json"
    data = json.loads(path.read_text())
    data["base_model_name_or_path"] = base_model
    path.write_text(json.dumps(data, indent=2) + "\n")


def recipe_header(config: RecipeConfig) -> str:
    """The saved recipe's header: how to re-run it, and which of its values the strategy's preset set
    (switching `adapt.strategy`, drop those lines to get the other preset's)."""
    resolved = config.to_dict()
    from_preset = [f"{section}.{key}" for section, values in PRESETS[config.adapt.strategy].items()
                   for key, value in values.items() if key != "strategy" and resolved[section].get(key) == value]
    return (f"# Resolved recipe of this run (from {config.source}). Re-run with:\n"
            f"#   hf-adapt train recipe.yaml train.output_dir=NEW_DIR\n"
            + (f"# From the {config.adapt.strategy} preset: {', '.join(from_preset)} (to switch adapt.strategy, "
               f"delete them and the new strategy's preset applies)\n" if from_preset else ""))


# ---------------------------------------------------------------------------------------------
# Publishing the final save, and recovering from a publish that was cut short

_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)$")


def publish(paths: RunPaths) -> None:
    """Rename the finished staging directory into place; an old output is replaced only now. The two
    renames of a replacement run with SIGINT/SIGTERM held back, so a signal cannot split them
    (a SIGKILL can: `recover_interrupted_publish` repairs that on the next start)."""
    try:
        with _signals_held():  # a signal held back here is raised as the block ends, after the swap
            if paths.output_dir.exists():
                os.replace(paths.output_dir, paths.backup())
            os.replace(paths.staging(), paths.output_dir)
    finally:
        shutil.rmtree(paths.backup(), ignore_errors=True)


def recover_interrupted_publish(paths: RunPaths) -> None:
    """Finish or roll back what a run killed while saving left beside the output (call with the lock
    held, so no live run owns these): a complete new output waiting to be renamed in is renamed in;
    an old output moved aside with nothing to replace it is moved back; half-written saves are removed."""
    output_dir = paths.output_dir
    leftovers: dict[str, dict[int, Path]] = {"tmp": {}, "old": {}}
    for path in output_dir.parent.glob(f".{glob.escape(output_dir.name)}.*-*"):
        match = _LEFTOVER.match(path.name)
        if match and match["name"] == output_dir.name and path.is_dir():
            leftovers[match["kind"]][int(match["pid"])] = path
    for pid, backup in sorted(leftovers["old"].items()):
        staged = leftovers["tmp"].pop(pid, None)
        if output_dir.exists():  # the swap had finished; only the old copy's removal was cut short
            shutil.rmtree(backup, ignore_errors=True)
            if staged is not None:
                shutil.rmtree(staged, ignore_errors=True)
            say(f"removed {backup.name}, the old output a finished run (PID {pid}) had not yet deleted")
        elif staged is not None:  # killed between the two renames: the new output was complete
            os.replace(staged, output_dir)
            shutil.rmtree(backup, ignore_errors=True)
            say(f"finished the interrupted save of run PID {pid}: its new output is now in {output_dir}")
        else:
            os.replace(backup, output_dir)
            say(f"restored {output_dir} from {backup.name} (run PID {pid} was killed while replacing it)")
    for pid, staged in sorted(leftovers["tmp"].items()):
        shutil.rmtree(staged, ignore_errors=True)
        say(f"removed {staged.name}, the half-written output of run PID {pid}, killed while saving")


@contextmanager
def signals_raise() -> Iterator[None]:
    """While saving: SIGINT or SIGTERM raises `SaveInterrupted`, so the save's own cleanup runs
    instead of the process dying with its temporary files in place."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise SaveInterrupted(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class SaveInterrupted(KeyboardInterrupt):
    """The final save stopped on Ctrl-C or SIGTERM (the CLI exits with 130)."""


@contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends, then reach the handler that was in place. A
    Python-level deferral: masking the signal would not do, as the kernel hands a process's signal to
    any thread that does not mask it (torch's and the tokenizer's threads), and Python then runs the
    handler in the main thread at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in pending[:1]:
            signal.raise_signal(signum)
