"""Frozen-prefix caching: compute what the frozen bottom of a model outputs once, train the rest.

With `adapt.strategy: partial`, the frozen embeddings and lowest k encoder layers give every
training example the same output in every epoch (dropout aside), so recomputing them each epoch
is wasted work. `train_with_cache` computes them once, before training, and trains on the
stored result:

- **freeze_embeddings + freeze_layers=k**: the hidden states entering layer k (real tokens
  only, no padding) are stored per training example; every step then runs only layers k.. and
  the head on them, through `Trainer` as usual (checkpoints, evaluation, early stopping).
- **freeze_encoder**: the encoder's last hidden state of the first token, all that the heads of
  the supported families read, is stored per training and validation example; the head trains
  on those features through `Trainer` like any other recipe, and the evaluations during training
  read the validation features too, so an epoch costs only the head's arithmetic.

The cache is exact: it is computed in eval mode, so the frozen part runs without dropout (as it
does at inference), and the cached path runs the model's own forward code, with the embeddings
returning the stored states and the encoder's layer list cut to the layers above them. Before
training, a check compares the cached path's logits with the full model's on a few examples
(in eval mode); if they differ, or the family cannot be cut this way, training falls back to
the normal path and says why. Evaluation and saving always use the full model.

The first epoch pays for the cache (one forward pass of the frozen part, in large
length-sorted batches), every later epoch skips it. A cache larger than `MEMORY_LIMIT_BYTES`
goes to a memory-mapped file in the run's work directory, removed when training ends.
"""

from __future__ import annotations

import inspect
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_utils import TrainOutput

from hf_adapt.config import RecipeConfig
from hf_adapt.data import column_array
from hf_adapt.errors import say
from hf_adapt.modeling import encoder_layout, layer_container, unwrap

EXAMPLE_INDEX = "example_index"  # train-set column naming each row's place in the cache
MEMORY_LIMIT_BYTES = 2 * 1024**3  # a larger cache is memory-mapped from a file in the work directory
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


# ---------------------------------------------------------------------------------------------
# When to cache


def plan_cache(model: nn.Module, config: RecipeConfig, tokenizer: Any) -> tuple[int, str | None]:
    """How many encoder layers to cache (0 = none) and, when none, why (None: nothing to say).

    Decided from the recipe, not from `requires_grad`: gradual unfreezing freezes trainable
    layers for a while, and those must not be cached.
    """
    a, t = config.adapt, config.train
    if config.data.streaming and a.strategy == "partial" and t.cache_frozen:
        return 0, "data.streaming: the training rows are read once, as a stream, so there is nothing to cache"
    if a.strategy != "partial" or not t.cache_frozen:
        return 0, None
    from accelerate.utils import get_int_from_env

    if get_int_from_env(["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"], 1) > 1:
        # The cached forward bypasses the DDP wrapper (no gradient sync); every rank would drift apart.
        return 0, "multi-process training (the cache runs on one process only)"
    layout = encoder_layout(model)
    if a.freeze_encoder:
        layers = layout.num_layers
    elif not a.freeze_embeddings:
        return 0, "the embeddings train (set adapt.freeze_embeddings: true to cache the frozen layers)"
    elif a.freeze_layers == 0:
        return 0, "only the embeddings are frozen: too little to be worth caching"
    else:
        layers = a.freeze_layers
    prefix = layout.embeddings + layout.layers[:layers]
    if any(p.requires_grad for m in prefix for p in m.parameters()):
        return 0, "part of the frozen prefix is trainable"
    if getattr(tokenizer, "padding_side", "right") != "right":
        return 0, f"the tokenizer pads on the {tokenizer.padding_side}; the cache assumes right padding"
    return layers, None


# ---------------------------------------------------------------------------------------------
# Running a model without its bottom (or only its bottom)


class _StoredStates(nn.Module):
    """Stands in for the embeddings: returns the states it is given, whatever the inputs."""

    def __init__(self, states: torch.Tensor):
        super().__init__()
        self.states = states

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.states


class PrefixCut:
    """Runs a model's own forward code on part of its encoder layers, by swapping modules in place
    for the duration of one forward call (the model is whole again before backward or saving).

    Args:
        model (`nn.Module`): a sequence classifier of a family `encoder_layout` knows.
        layers (`int`): k, the number of bottom layers that form the frozen prefix.
    """

    def __init__(self, model: nn.Module, layers: int):
        layout = encoder_layout(model)
        self.base = layout.base
        self.layers = layers
        self.parent, self.attr = layer_container(layout)
        self.all_layers = getattr(self.parent, self.attr)
        self.bottom = nn.ModuleList(layout.layers[:layers])
        self.top = nn.ModuleList(layout.layers[layers:])
        # Embedding modules applied in sequence to the embedding output (ELECTRA's projection)
        # become identities; those inside the encoder (DeBERTa's relative positions) stay.
        self.slots = [name for name, child in self.base.named_children() if any(child is m for m in layout.embeddings)]
        if "embeddings" not in self.slots:
            raise ValueError(f"{type(self.base).__name__} has no 'embeddings' module to stand in for")
        self.prefix_params = [p for m in layout.embeddings + layout.layers[:layers] for p in m.parameters()]

    @contextmanager
    def bottom_only(self) -> Iterator[None]:
        with self._swapped({}, self.bottom):
            yield

    @contextmanager
    def top_only(self, states: torch.Tensor) -> Iterator[None]:
        swaps = {name: nn.Identity() for name in self.slots}
        swaps["embeddings"] = _StoredStates(states)
        with self._swapped(swaps, self.top):
            yield

    @contextmanager
    def _swapped(self, modules: dict[str, nn.Module], layers: nn.ModuleList) -> Iterator[None]:
        saved = {name: getattr(self.base, name) for name in modules}
        try:
            for name, module in modules.items():
                setattr(self.base, name, module)
            setattr(self.parent, self.attr, layers)
            yield
        finally:
            for name, module in saved.items():
                setattr(self.base, name, module)
            setattr(self.parent, self.attr, self.all_layers)

    def prefix_trains(self) -> bool:
        return any(p.requires_grad for p in self.prefix_params)


# ---------------------------------------------------------------------------------------------
# The stored states


class StateStore:
    """Per-example hidden states, `[length_i, hidden]`, stored back to back without padding.

    Args:
        lengths (`list[int]`): rows stored per example.
        hidden_size (`int`): width of a row.
        path (`Path`, *optional*): a file to memory-map the store from; default in memory.
    """

    def __init__(self, lengths: list[int], hidden_size: int, path: Path | None = None):
        self.offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        shape = (int(self.offsets[-1]), hidden_size)
        self.path = path
        if path is None:
            self.data = torch.empty(shape, dtype=torch.float32)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.data = torch.from_numpy(np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape))

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()

    def put(self, index: int, states: torch.Tensor) -> None:
        start, end = self.offsets[index], self.offsets[index + 1]
        self.data[start:end] = states[: end - start]

    def gather(self, indices: list[int], width: int) -> torch.Tensor:
        """`[len(indices), width, hidden]`, zero after each example's own rows (right padding)."""
        out = torch.zeros(len(indices), width, self.data.shape[1])
        for row, index in enumerate(indices):
            start, end = self.offsets[index], self.offsets[index + 1]
            count = min(end - start, width)
            out[row, :count] = self.data[start:start + count]
        return out

    def close(self) -> None:
        self.data = torch.empty(0, 0)
        if self.path is not None:
            self.path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# The cache: build, check, and the forward pass that training uses


class FrozenPrefixCache:
    """What the frozen prefix outputs for every example of a dataset, and the forward pass on it.

    Args:
        model (`nn.Module`): the model being trained.
        layers (`int`): k, the frozen layers above the (frozen) embeddings. `k == num_layers`
            stores only the first token's final state (the features the head reads).
        tokenizer: pads batches (right padding).
        directory (`Path`, *optional*): where a cache too large for memory is memory-mapped.
    """

    def __init__(self, model: nn.Module, layers: int, tokenizer: Any, directory: Path | None = None):
        self.cut = PrefixCut(unwrap(model), layers)
        self.features = layers == len(self.cut.all_layers)
        self.tokenizer = tokenizer
        self.directory = directory
        self.stores: dict[str, StateStore] = {}
        self.warned_stale = False
        self.cached_steps = 0  # training forward passes that ran on the cache

    # building -----------------------------------------------------------------------------

    @torch.no_grad()
    def build(self, model: nn.Module, dataset: Any, split: str = "train", batch_size: int = 128) -> StateStore:
        """Run the frozen prefix once over `dataset` (eval mode, length-sorted batches) and store it."""
        model = unwrap(model)
        lengths = (column_array(dataset, "length").tolist() if "length" in dataset.column_names
                   else [len(x) for x in dataset["input_ids"][:]])
        stored = [1 if self.features else n for n in lengths]
        hidden = model.config.hidden_size
        path = None
        if sum(stored) * hidden * 4 > MEMORY_LIMIT_BYTES and self.directory is not None:
            path = self.directory / f"frozen_prefix_{split}.npy"
        store = StateStore(stored, hidden, path)
        columns = [c for c in MODEL_INPUTS if c in dataset.column_names and c in _accepted(self.cut.base)]
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            order = sorted(range(len(lengths)), key=lengths.__getitem__)
            for start in range(0, len(order), batch_size):
                index = order[start:start + batch_size]
                batch = self.tokenizer.pad(dataset.select_columns(columns)[index], padding=True, return_tensors="pt")
                with self.cut.bottom_only():
                    states = self.cut.base(**{k: v.to(device) for k, v in batch.items()}).last_hidden_state
                states = states.float().cpu()
                for row, i in enumerate(index):
                    store.put(i, states[row])
        finally:
            model.train(was_training)
        self.stores[split] = store
        return store

    # checking -----------------------------------------------------------------------------

    @torch.no_grad()
    def check(self, model: nn.Module, dataset: Any, split: str = "train", examples: int = 4) -> str | None:
        """Compare the cached path with the full model on a few examples of different lengths (so
        the batch has padding), in eval mode: the logits, and the encoder's final states at the real
        tokens (a stricter test: random heads squash differences). Return why they differ, or None."""
        sizes = column_array(dataset, "length") if "length" in dataset.column_names else np.diff(self.stores[split].offsets)
        order = np.argsort(sizes, kind="stable")
        index = sorted({int(i) for i in (*order[:examples // 2], *order[-(examples - examples // 2):])})
        columns = [c for c in MODEL_INPUTS if c in dataset.column_names and c in _accepted(unwrap(model))]
        batch = self.tokenizer.pad(dataset.select_columns(columns)[index], padding=True, return_tensors="pt")
        device = next(model.parameters()).device
        inputs = {k: v.to(device) for k, v in batch.items()}
        was_training = model.training
        model.eval()
        try:
            pairs = [(model(**inputs).logits, self._forward_cached(
                model, self.feature_inputs(index, device) if self.features else inputs, index, split).logits)]
            if not self.features:
                base_inputs = {k: v for k, v in inputs.items() if k in _accepted(self.cut.base)}
                real = inputs["attention_mask"].bool()
                full = self.cut.base(**base_inputs).last_hidden_state
                states = self.stores[split].gather(index, real.shape[1]).to(device)
                with self.cut.top_only(states):
                    cached = self.cut.base(**base_inputs).last_hidden_state
                pairs.append((full[real], cached[real]))
        except Exception as err:  # a family whose forward cannot run on a cut encoder
            return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        finally:
            model.train(was_training)
        for full, cached in pairs:
            difference = (full.float() - cached.float()).abs().max().item()
            if difference > 1e-4 * max(1.0, full.abs().max().item()):
                return f"the cached path's outputs differ from the full model's by {difference:.2e}"
        return None

    # training -----------------------------------------------------------------------------

    def forward(self, model: nn.Module, inputs: dict[str, torch.Tensor], index: list[int] | torch.Tensor,
                split: str = "train") -> Any:
        """The model's forward pass on cached states: only the layers above the cache and the head run
        (cached features: the head alone, on one stored row per example)."""
        if self.cut.prefix_trains() and not self.features:  # someone unfroze the prefix: the cache is stale
            if not self.warned_stale:
                say("frozen-prefix cache off: a cached layer started training")
                self.warned_stale = True
            return model(**inputs)
        self.cached_steps += model.training
        if self.features:
            inputs = self.feature_inputs(index.tolist() if isinstance(index, torch.Tensor) else index,
                                         inputs["input_ids"].device)
        return self._forward_cached(model, inputs, index, split)

    def covers(self, split: str) -> bool:
        """Whether this split's states are cached (training, and for features validation too)."""
        return split in self.stores

    def _forward_cached(self, model: nn.Module, inputs: dict[str, torch.Tensor], index: list[int] | torch.Tensor,
                        split: str) -> Any:
        if isinstance(index, torch.Tensor):
            index = index.tolist()
        states = self.stores[split].gather(index, inputs["input_ids"].shape[1])
        states = states.to(device=inputs["input_ids"].device)
        with self.cut.top_only(states):
            return model(**inputs)

    def feature_inputs(self, index: list[int], device: torch.device) -> dict[str, torch.Tensor]:
        """Model inputs for cached first-token features: one (dummy) token per example."""
        ones = torch.ones(len(index), 1, dtype=torch.long, device=device)
        return {"input_ids": ones, "attention_mask": ones}

    def describe(self) -> dict[str, Any]:
        store = self.stores.get("train")
        return {
            "layers": self.cut.layers,
            "features": self.features,
            "examples": 0 if store is None else len(store.offsets) - 1,
            "megabytes": 0.0 if store is None else round(sum(s.nbytes for s in self.stores.values()) / 2**20, 1),
            "on_disk": any(s.path is not None for s in self.stores.values()),
            "cached_steps": self.cached_steps,
        }

    def close(self) -> None:
        for store in self.stores.values():
            store.close()
        self.stores.clear()


def _accepted(module: nn.Module) -> set[str]:
    return set(inspect.signature(module.forward).parameters)


# ---------------------------------------------------------------------------------------------
# The engine's entry point


class TrainingClock(TrainerCallback):
    """Seconds spent training, evaluations and checkpoints excluded: per epoch, and at each
    evaluation with its validation loss and metric (the run's time-to-accuracy curve).

    The clock runs from one optimizer step's end to the next (data loading included); an
    evaluation or a checkpoint restarts it when it ends, so neither counts.
    """

    def __init__(self) -> None:
        self.seconds: list[float] = []  # per epoch
        self.curve: list[dict[str, Any]] = []
        self.trained = 0.0
        self._mark = 0.0
        self._epoch_began = 0.0

    def _restart(self, *args: Any, **kwargs: Any) -> None:
        self._mark = time.perf_counter()

    on_train_begin = on_save = _restart

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.trained += now - self._mark
        self._mark = now

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._epoch_began = self.trained

    def on_epoch_end(self, args, state, control, **kwargs):
        self.seconds.append(round(self.trained - self._epoch_began, 3))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        name = args.metric_for_best_model
        point = {"step": int(state.global_step), "epoch": round(float(state.epoch or 0), 3),
                 "train_s": round(self.trained, 2)}
        for key in ("loss", name):
            if key and metrics and f"eval_{key}" in metrics:
                point[key] = metrics[f"eval_{key}"]
        self.curve.append(point)
        self._restart()


def train_with_cache(trainer: Any, config: RecipeConfig, encoded: Any, work_dir: Path | None = None,
                     *, resume_from_checkpoint: str | None = None) -> TrainOutput:
    """`trainer.train()`, with the frozen prefix cached when the recipe allows it.

    Returns Trainer's `TrainOutput`; its `metrics` also hold `epoch_seconds` (the first epoch's
    includes building the cache), `curve` (each evaluation's training seconds, step and
    validation figures: `TrainingClock`) and `frozen_cache` (what was cached, or why nothing was).
    """
    timer = TrainingClock()
    trainer.add_callback(timer)
    started = time.perf_counter()
    cache, reason = prepare_cache(trainer, config, encoded, work_dir)
    built_s = time.perf_counter() - started
    eval_dataset = trainer.eval_dataset
    try:
        if cache is not None:  # rows carry their index into the cache; AdaptTrainer.compute_loss reads it
            trainer.train_dataset = with_example_index(trainer.train_dataset)
            if cache.covers("validation") and eval_dataset is not None:
                trainer.eval_dataset = with_example_index(eval_dataset)
            trainer.prefix_cache = cache
        output = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    finally:
        trainer.prefix_cache = None
        trainer.eval_dataset = eval_dataset
        trainer.remove_callback(timer)
        summary = {"off": reason or "nothing is frozen"} if cache is None else {**cache.describe(),
                                                                               "build_s": round(built_s, 2)}
        if cache is not None:
            cache.close()
    output.metrics["epoch_seconds"] = [round(s + (built_s if i == 0 else 0.0), 3) for i, s in enumerate(timer.seconds)]
    output.metrics["curve"] = [{**point, "train_s": round(point["train_s"] + built_s, 2)} for point in timer.curve]
    output.metrics["frozen_cache"] = summary
    return output


def with_example_index(dataset: Any) -> Any:
    return dataset.add_column(EXAMPLE_INDEX, list(range(len(dataset))))


def prepare_cache(trainer: Any, config: RecipeConfig, encoded: Any,
                  work_dir: Path | None) -> tuple[FrozenPrefixCache | None, str | None]:
    """Build and check the cache the recipe allows; (None, why not) when there is none."""
    layers, reason = plan_cache(trainer.model, config, trainer.processing_class)
    if layers and (getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False)):
        layers, reason = 0, "FSDP/DeepSpeed wrap the layers that the cache would cut away"
    cache = None
    if layers:
        cache, reason = _build_checked(trainer, layers, encoded, work_dir)
    if reason:
        say(f"frozen-prefix cache off: {reason}")
    return cache, reason


def _build_checked(trainer: Any, layers: int, encoded: Any,
                   work_dir: Path | None) -> tuple[FrozenPrefixCache | None, str | None]:
    try:
        cache = FrozenPrefixCache(trainer.model, layers, trainer.processing_class, work_dir)
    except ValueError as err:
        return None, str(err)
    batch_size = trainer.args.per_device_eval_batch_size
    cache.build(trainer.model, encoded["train"], "train", batch_size)
    problem = cache.check(trainer.model, encoded["train"], "train")
    if problem is None and cache.features and "validation" in encoded:
        cache.build(trainer.model, encoded["validation"], "validation", batch_size)
    if problem is not None:
        cache.close()
        return None, problem
    info = cache.describe()
    where = "on disk" if info["on_disk"] else "in memory"
    what = "encoder features" if cache.features else f"embeddings + {layers} frozen layer(s)"
    say(f"cached the frozen {what} of {info['examples']} examples ({info['megabytes']} MB {where})")
    return cache, None
