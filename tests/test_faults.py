"""Surviving interruption: a run killed with SIGKILL resumes with `--resume` to the result of an
uninterrupted run; Ctrl-C saves a checkpoint and exits with 130; a failing final save leaves the
previous output untouched and nothing half-written beside it.

The kill tests start `hf-adapt train` in a subprocess and send it real signals once the first
checkpoint is on disk, as a user (or a scheduler) would; the reference run and the resumed runs
finish in this process, with the same single thread, so their arithmetic is the same.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import snapshot_files as snapshot
from conftest import tiny_recipe, write_sentiment_csvs
from transformers import TrainerCallback

from hf_adapt import cards, engine, outputs
from hf_adapt.cli import main
from hf_adapt.outputs import last_complete_checkpoint
from hf_adapt.recipes import full

HF_ADAPT = [sys.executable, "-m", "hf_adapt.cli"]
# One thread per process: the reference and the resumed run must do the same float arithmetic.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}


def write_recipe(tmp: Path, model_dir: Path, data: dict[str, Path], name: str) -> Path:
    """36 optimizer steps (60 rows, batches of 5, 3 epochs) with an evaluation and a checkpoint every
    6: long enough to be killed in the middle; the checkpoints are kept, so the weights at the last
    step can be compared too, not only the best ones that are published."""
    recipe = tiny_recipe(model_dir, data, tmp / name,
                         train={"epochs": 3, "batch_size": 5, "eval_strategy": "steps", "eval_steps": 6,
                                "logging_steps": 6, "keep_checkpoints": True, "save_total_limit": 10})
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def start(recipe: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*HF_ADAPT, "train", str(recipe), *extra], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run(recipe: Path, *extra: str) -> None:
    """Finish a run in this process (no start-up cost) with the one thread the subprocesses use."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", str(recipe), *extra]) == 0
    finally:
        torch.set_num_threads(threads)


def wait_for_checkpoint(process: subprocess.Popen, work_dir: Path, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = last_complete_checkpoint(work_dir)
        if last is not None:
            return last
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.02)
    process.kill()
    pytest.fail(f"no checkpoint appeared in {work_dir} within {timeout} s")


def final_state(output_dir: Path) -> tuple[dict, dict, list]:
    """(metrics, weights digest, evaluation history) of a finished run."""
    metrics = json.loads((output_dir / "metrics.json").read_text())["metrics"]
    weights = hashlib.sha256((output_dir / "model.safetensors").read_bytes()).hexdigest()
    work_dir = output_dir.parent / f".{output_dir.name}.work"
    last = Path(last_complete_checkpoint(work_dir))
    state = json.loads((last / "trainer_state.json").read_text())
    last_weights = hashlib.sha256((last / "model.safetensors").read_bytes()).hexdigest()
    evals = [{k: v for k, v in entry.items() if k.startswith("eval_") and "runtime" not in k and "per_second" not in k}
             for entry in state["log_history"] if "eval_loss" in entry]
    return metrics, {"published": weights, "last_step": state["global_step"], "last_step_weights": last_weights}, evals


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path]) -> dict:
    """The data, and the uninterrupted reference run every interrupted run must reproduce."""
    tmp = tmp_path_factory.mktemp("faults")
    data = write_sentiment_csvs(tmp / "data", rows=60)
    reference = write_recipe(tmp, tiny_models["bert"], data, "reference")
    run(reference)
    return {"tmp": tmp, "data": data, "model": tiny_models["bert"], "reference": final_state(tmp / "reference")}


def interrupt_after_first_checkpoint(setup: dict, name: str,
                                     sig: int) -> tuple[Path, Path, Path, subprocess.Popen, str]:
    """Start run `name` in a subprocess and send it `sig` once its first checkpoint is complete:
    (recipe, output dir, work dir, the process, the first checkpoint's path)."""
    tmp = setup["tmp"]
    recipe = write_recipe(tmp, setup["model"], setup["data"], name)
    output_dir, work_dir = tmp / name, tmp / f".{name}.work"
    process = start(recipe)
    first = wait_for_checkpoint(process, work_dir)
    process.send_signal(sig)
    return recipe, output_dir, work_dir, process, first


@pytest.mark.integration
def test_sigkill_then_resume_matches_uninterrupted_run(setup: dict, capsys: pytest.CaptureFixture) -> None:
    tmp = setup["tmp"]
    recipe, output_dir, _, process, first = interrupt_after_first_checkpoint(setup, "killed", signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert not output_dir.exists()  # killed before the end: no output, not a half-written one
    assert not list(tmp.glob(".killed.tmp-*"))

    assert main(["train", str(recipe)]) == 2  # a restart without --resume is refused ...
    assert "pass --resume to continue it" in capsys.readouterr().err  # ... and says what to do

    run(recipe, "--resume")
    assert "resuming from" in capsys.readouterr().err
    assert 6 <= int(first.rsplit("-", 1)[-1]) < 36
    metrics, weights, evals = final_state(output_dir)
    ref_metrics, ref_weights, ref_evals = setup["reference"]
    assert metrics == ref_metrics
    assert evals == ref_evals  # every evaluation along the way, not only the last
    assert weights == ref_weights  # byte-identical weights: published (best) and at the last step
    assert weights["last_step"] == 36


@pytest.mark.integration
def test_ctrl_c_saves_checkpoint_exits_130_and_resumes(setup: dict) -> None:
    recipe, output_dir, work_dir, process, first = interrupt_after_first_checkpoint(setup, "interrupted",
                                                                                   signal.SIGINT)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 130, stderr[-3000:]
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith("hf-adapt: interrupted: training stopped at step")
    assert "--resume" in last_line and "Traceback" not in stderr
    step = int(last_line.split("at step ")[1].split(";")[0])
    # The checkpoint is the step it stopped at, fully written, and nothing was published.
    assert last_complete_checkpoint(work_dir) == str(work_dir / f"checkpoint-{step}")
    assert step >= int(first.rsplit("-", 1)[-1])
    assert not output_dir.exists()

    run(recipe, "--resume")
    assert final_state(output_dir) == setup["reference"]


class SignalAtStep(TrainerCallback):
    """Sends this process SIGINT at the end of one step, as a Ctrl-C landing exactly there would."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.integration
@pytest.mark.parametrize("step", [5, 12], ids=["mid-epoch", "last-step-of-epoch"])
def test_ctrl_c_at_any_step_resumes_to_the_uninterrupted_result(tmp_path: Path, tiny_bert: Path, step: int,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluations (and so the best checkpoint) must not change: mid-epoch, the checkpoint is saved
    without an extra evaluation; at an epoch's last step, after the epoch's own evaluation."""
    data = write_sentiment_csvs(tmp_path / "data", rows=60)  # 12 steps per epoch
    recipes = {}
    for name in ("reference", "stopped"):
        recipe = tiny_recipe(tiny_bert, data, tmp_path / name,
                             train={"epochs": 2, "batch_size": 5, "keep_checkpoints": True})
        recipes[name] = tmp_path / f"{name}.yaml"
        recipes[name].write_text(yaml.safe_dump(recipe), encoding="utf-8")
    run(recipes["reference"])

    original = engine.run_recipe
    monkeypatch.setattr(full, "run_recipe", lambda config: original(config, callbacks=[SignalAtStep(step)]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", str(recipes["stopped"])]) == 130
    finally:
        torch.set_num_threads(threads)
    monkeypatch.undo()
    work_dir = tmp_path / ".stopped.work"
    assert last_complete_checkpoint(work_dir) == str(work_dir / f"checkpoint-{step}")
    state = json.loads((work_dir / f"checkpoint-{step}" / "trainer_state.json").read_text())
    assert sum("eval_loss" in entry for entry in state["log_history"]) == (1 if step == 12 else 0)

    run(recipes["stopped"], "--resume")
    assert final_state(tmp_path / "stopped") == final_state(tmp_path / "reference")


def test_resume_skips_a_checkpoint_left_half_written(tmp_path: Path) -> None:
    work_dir = tmp_path / ".run.work"
    for step, complete in ((10, True), (20, True), (30, False)):  # killed while writing checkpoint-30
        folder = work_dir / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"")
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert last_complete_checkpoint(work_dir) == str(work_dir / "checkpoint-20")
    assert last_complete_checkpoint(tmp_path / ".missing.work") is None


@pytest.mark.integration
def test_failed_final_save_leaves_previous_output_untouched(tmp_path: Path, tiny_bert: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_sentiment_csvs(tmp_path / "data", rows=24)
    output_dir = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tiny_bert, data, output_dir)), encoding="utf-8")
    assert main(["train", str(recipe)]) == 0
    before = snapshot(output_dir)
    assert "model.safetensors" in before and "README.md" in before

    def crash(*args, **kwargs):
        raise RuntimeError("disk full while writing the card")

    monkeypatch.setattr(cards, "write_model_card", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        main(["train", str(recipe), "optim.learning_rate=0.01", "--overwrite"])
    assert snapshot(output_dir) == before  # the good model still stands, byte for byte
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".run."))
    assert leftovers == [".run.work"]  # no staging or backup dirs; only the checkpoints, for --resume

    monkeypatch.undo()
    assert main(["train", str(recipe), "optim.learning_rate=0.01", "--overwrite", "--resume"]) == 0
    after = snapshot(output_dir)
    assert after["model.safetensors"] != before["model.safetensors"]  # now replaced, by the new run
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".run.")) == []


# ---------------------------------------------------------------------------------------------
# The output directory: one run at a time, saves that a signal cannot half-do, and recovery from
# what a killed save left behind.


@pytest.mark.integration
def test_a_second_run_into_a_busy_output_is_refused(setup: dict, capsys: pytest.CaptureFixture) -> None:
    tmp = setup["tmp"]
    recipe = write_recipe(tmp, setup["model"], setup["data"], "busy")
    process = start(recipe)
    first = wait_for_checkpoint(process, tmp / ".busy.work")
    try:
        for extra in ([], ["--overwrite"], ["--resume"]):
            assert main(["train", str(recipe), *extra]) == 2
            message = capsys.readouterr().err.strip().splitlines()[-1]
            assert message == (f"hf-adapt: error: train.output_dir {tmp / 'busy'} is in use by another hf-adapt run "
                               f"(PID {process.pid}); wait for it to finish, or write this run to another directory")
            assert Path(first).is_dir()  # the running run's checkpoints survived the refused --overwrite
    finally:
        _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    assert (tmp / "busy" / "model.safetensors").is_file() and not (tmp / ".busy.lock").exists()


def trained_output(tmp_path: Path, tiny_bert: Path, name: str = "run", **train: object) -> tuple[Path, Path]:
    """(recipe, output dir) of a finished tiny run."""
    data = write_sentiment_csvs(tmp_path / "data", rows=24)
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tiny_bert, data, tmp_path / name, train=train)), encoding="utf-8")
    assert main(["train", str(recipe)]) == 0
    return recipe, tmp_path / name


def hidden_siblings(output_dir: Path) -> list[str]:
    return sorted(p.name for p in output_dir.parent.iterdir() if p.name.startswith(f".{output_dir.name}."))


@pytest.mark.integration
def test_sigterm_during_the_final_save_leaves_the_old_output_and_no_temporaries(
        tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    recipe, output_dir = trained_output(tmp_path, tiny_bert)
    before = snapshot(output_dir)
    real_card = cards.write_model_card

    def terminated_while_writing(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` from a scheduler, mid-save
        real_card(*args, **kwargs)

    monkeypatch.setattr(cards, "write_model_card", terminated_while_writing)
    capsys.readouterr()
    assert main(["train", str(recipe), "optim.learning_rate=0.01", "--overwrite"]) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (f"hf-adapt: interrupted: SIGTERM while saving: nothing was published and {output_dir} is as it "
                    f"was; the checkpoints are in {tmp_path / '.run.work'}: run the same command with --resume to "
                    f"save again")
    assert snapshot(output_dir) == before
    assert hidden_siblings(output_dir) == [".run.work"]  # no .run.tmp-PID, no lock

    monkeypatch.undo()
    assert main(["train", str(recipe), "optim.learning_rate=0.01", "--overwrite", "--resume"]) == 0
    assert snapshot(output_dir)["model.safetensors"] != before["model.safetensors"]
    assert hidden_siblings(output_dir) == []


@pytest.mark.integration
def test_a_signal_cannot_split_the_swap_of_old_and_new_output(tmp_path: Path, tiny_bert: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    recipe, output_dir = trained_output(tmp_path, tiny_bert)
    before = snapshot(output_dir)
    real_replace = os.replace
    calls = []

    def replace(source, destination):
        if Path(destination).parent == tmp_path:  # publish's renames (others write files inside folders)
            calls.append(Path(destination).name)
        if Path(destination).name.startswith(".run.old-"):  # between the two: old output aside, new not in
            os.kill(os.getpid(), signal.SIGTERM)
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace)
    assert main(["train", str(recipe), "optim.learning_rate=0.01", "--overwrite"]) == 130
    assert calls == [f".run.old-{os.getpid()}", "run"]  # both renames ran before the signal was handled
    assert capsys.readouterr().err.strip().endswith(f"SIGTERM just after saving: the model is in {output_dir}")
    assert snapshot(output_dir)["model.safetensors"] != before["model.safetensors"]
    assert hidden_siblings(output_dir) == [".run.work"]


@pytest.mark.integration
@pytest.mark.parametrize("killed", ["between-renames", "before-any-rename", "before-removing-old"])
def test_a_save_killed_midway_is_finished_or_rolled_back_on_the_next_start(
        tmp_path: Path, tiny_bert: Path, killed: str, capsys: pytest.CaptureFixture) -> None:
    """SIGKILL cannot be caught: lay out what it leaves at each point of a replacing save, then start
    the next run into the same directory."""
    recipe, output_dir = trained_output(tmp_path, tiny_bert)
    _, newer = trained_output(tmp_path, tiny_bert, "newer", epochs=2)
    old, new = snapshot(output_dir), snapshot(newer)
    pid = 999_999
    staged, backup = tmp_path / f".run.tmp-{pid}", tmp_path / f".run.old-{pid}"
    if killed == "between-renames":
        os.replace(output_dir, backup)
        os.replace(newer, staged)
        expected, line = new, f"[hf_adapt] finished the interrupted save of run PID {pid}: its new output is now in"
    elif killed == "before-any-rename":  # still writing the staging directory
        staged.mkdir()
        (staged / "model.safetensors").write_bytes(b"half")
        expected, line = old, f"[hf_adapt] removed .run.tmp-{pid}, the half-written output of run PID {pid}"
    else:
        os.replace(newer, backup)  # the swap is done; the old copy was being deleted
        expected, line = old, f"[hf_adapt] removed .run.old-{pid}, the old output a finished run (PID {pid})"
    capsys.readouterr()

    assert main(["train", str(recipe)]) == 2  # a start without --overwrite recovers, then refuses as usual
    _, err = capsys.readouterr()
    assert line in err
    assert "already exists and is not empty" in err
    assert snapshot(output_dir) == expected
    assert hidden_siblings(output_dir) == []

    assert main(["train", str(recipe), "--overwrite"]) == 0  # and the output is replaceable again
    assert hidden_siblings(output_dir) == []


@pytest.mark.integration
def test_a_rolled_back_swap_restores_the_old_output(tmp_path: Path, tiny_bert: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    recipe, output_dir = trained_output(tmp_path, tiny_bert)
    old = snapshot(output_dir)
    os.replace(output_dir, tmp_path / ".run.old-77")  # killed after moving the old output aside, staging lost
    capsys.readouterr()
    assert main(["train", str(recipe)]) == 2
    assert f"[hf_adapt] restored {output_dir} from .run.old-77" in capsys.readouterr().err
    assert snapshot(output_dir) == old and hidden_siblings(output_dir) == []


@pytest.mark.integration
def test_a_run_that_died_before_its_first_checkpoint_does_not_block_the_next(
        tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture) -> None:
    data = write_sentiment_csvs(tmp_path / "data", rows=24)
    recipe = tmp_path / "run.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tiny_bert, data, tmp_path / "run")), encoding="utf-8")
    (tmp_path / ".run.work" / "runs").mkdir(parents=True)  # what a crash in the first epoch leaves
    (tmp_path / ".run.work" / "checkpoint-3").mkdir()  # ... with a checkpoint it never finished writing

    assert main(["train", str(recipe), "--resume"]) == 2
    assert "run without --resume to start afresh" in capsys.readouterr().err
    assert main(["train", str(recipe)]) == 0  # the way out that the message names works
    assert f"[hf_adapt] starting afresh: {tmp_path / '.run.work'} holds no complete checkpoint" in capsys.readouterr().err
    assert (tmp_path / "run" / "model.safetensors").is_file() and hidden_siblings(tmp_path / "run") == []


# ---------------------------------------------------------------------------------------------
# --resume only continues what the checkpoints were made with


def stopped_run(tmp_path: Path, model: Path, **train: object) -> tuple[Path, dict[str, Path]]:
    """A finished tiny run whose output is then removed, leaving its checkpoints: the state a run
    killed after its last checkpoint leaves. Returns (recipe, data)."""
    data = write_sentiment_csvs(tmp_path / "data", rows=24)
    recipe = tmp_path / "run.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(model, data, tmp_path / "run", train={
        "max_steps": 2, "eval_strategy": "steps", "eval_steps": 1, "keep_checkpoints": True, **train})))
    assert main(["train", str(recipe)]) == 0
    shutil.rmtree(tmp_path / "run")
    return recipe, data


def add_neutral_rows(path: Path) -> list[str]:
    with path.open("a", encoding="utf-8") as handle:
        handle.write("the plot was a film,neutral\nit is a story,neutral\n")
    return []


CHANGED = {  # what changed since the checkpoints -> (overrides or an edit, a piece of the message)
    "learning rate": (lambda t, d, m: ["optim.learning_rate=0.005"], "optim.learning_rate 0.001 → 0.005"),
    "batch size": (lambda t, d, m: ["train.batch_size=8"], "train.batch_size 16 → 8"),
    "strategy": (lambda t, d, m: ["adapt.strategy=lora"], "adapt.strategy 'full' → 'lora'"),
    "model": (lambda t, d, m: [f"model.name_or_path={m['roberta']}"], "model.name_or_path"),
    "another training file": (lambda t, d, m: [f"data.train_file={d['validation']}"], "data.train_file"),
    "training file edited": (lambda t, d, m: add_neutral_rows(d["train"]) or [],
                             "labels [negative, positive] → [negative, neutral, positive]"),
    "validation rows": (lambda t, d, m: (d["validation"].write_text(d["validation"].read_text() + "bad,negative\n")
                                         and []), "data.validation_file {data}/validation.csv changed"),
}


@pytest.mark.integration
@pytest.mark.parametrize("change", CHANGED)
def test_resume_after_a_change_is_refused_naming_it(tmp_path: Path, tiny_models: dict[str, Path], change: str,
                                                    capsys: pytest.CaptureFixture) -> None:
    recipe, data = stopped_run(tmp_path, tiny_models["bert"])
    make_change, expected = CHANGED[change]
    overrides = make_change(tmp_path, data, tiny_models)
    capsys.readouterr()

    assert main(["train", str(recipe), *overrides, "--resume"]) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith(f"hf-adapt: error: --resume: the checkpoints in {tmp_path / '.run.work'} were made "
                              f"with other settings or data: ")
    assert expected.format(data=tmp_path / "data") in message
    assert message.endswith("resume with what they were made with, or start again with --overwrite (drops them)")
    assert not (tmp_path / "run").exists() and last_complete_checkpoint(tmp_path / ".run.work")  # all kept


@pytest.mark.integration
def test_resume_ignores_what_does_not_change_the_training(tmp_path: Path, tiny_bert: Path) -> None:
    recipe, _ = stopped_run(tmp_path, tiny_bert)
    assert main(["train", str(recipe), "train.logging_steps=1", "hub.private=true", "--resume"]) == 0
    assert (tmp_path / "run" / "model.safetensors").is_file()


# ---------------------------------------------------------------------------------------------
# Writing fails: a full disk, a folder the run may not write to


@pytest.mark.integration
def test_a_full_disk_while_saving_says_which_path_and_leaves_nothing(tmp_path: Path, tiny_bert: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture) -> None:
    data = write_sentiment_csvs(tmp_path / "data", rows=24)
    recipe = tmp_path / "run.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tiny_bert, data, tmp_path / "run")))
    full = tmp_path / ".run.tmp-1" / "model.safetensors"

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(full))

    monkeypatch.setattr(outputs, "save_model_files", no_space)
    assert main(["train", str(recipe)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"hf-adapt: error: cannot write {full}: No space left on device; nothing was published and "
        f"{tmp_path / 'run'} is as it was: free some space or choose another train.output_dir")
    assert not (tmp_path / "run").exists() and hidden_siblings(tmp_path / "run") == []


def test_an_output_folder_the_run_may_not_write_is_named(tmp_path: Path, tiny_bert: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    data = write_sentiment_csvs(tmp_path / "data", rows=24)
    recipe = tmp_path / "run.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tiny_bert, data, tmp_path / "locked" / "run")))
    (tmp_path / "locked").mkdir()
    real_open = os.open

    def read_only(path, *args, **kwargs):  # as a read-only parent folder would (root ignores chmod)
        if str(path).startswith(str(tmp_path / "locked")):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    assert main(["train", str(recipe)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"hf-adapt: error: cannot write beside train.output_dir {tmp_path / 'locked' / 'run'}: "
        f"{tmp_path / 'locked' / '.run.lock'}: Permission denied; choose a writable location")
    assert list((tmp_path / "locked").iterdir()) == []


def test_every_output_file_is_readable_like_any_new_file(tmp_path: Path, tiny_bert: Path) -> None:
    _, output_dir = trained_output(tmp_path, tiny_bert)
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in output_dir.iterdir() if p.is_file()}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes  # model.safetensors was 0600
