"""`hf-adapt export OUTPUT_DIR --format onnx [--quantize int8]`: the trained classifier as an ONNX
graph for onnxruntime, checked against the PyTorch model before it is written, and loaded back by
`hf-adapt predict --backend onnx`.

The graph comes from torch's own exporter (`torch.onnx.export(..., dynamo=True)`, batch and
sequence length dynamic) and int8 weights from onnxruntime's `quantize_dynamic`: optimum's ONNX
exporter (optimum-onnx 0.1) requires transformers < 4.58, and this project runs transformers 5.
A LoRA output is exported merged (`load_trained` merges the adapter).

The export folder (default `OUTPUT_DIR/onnx`, or `OUTPUT_DIR/onnx-int8`) holds `model.onnx`, the
model's `config.json` (labels, thresholds, temperature, windows), tokenizer and `recipe.yaml` (its
columns), and `parity.json`:
the largest logit difference and the label agreement with the PyTorch model on the run's own
validation texts. An export that misses the agreement it must reach is not written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from hf_adapt.data import LabelMap
from hf_adapt.errors import HfAdaptError, first_line, say, verbose
from hf_adapt.inference import (
    Text,
    calibrated,
    is_blank,
    label_sets,
    label_thresholds,
    open_texts,
    predict_logits,
    saved_data_columns,
)
from hf_adapt.modeling import load_trained, max_input_tokens

GRAPH = "model.onnx"
PARITY = "parity.json"
# What an export must reach to be written: the share of texts given the PyTorch model's label
# (single-label) or label set (multi-label); for regression, the correlation of the numbers.
# int8 at 0.98: on SST-2 an int8 export that changed no test accuracy still moved 1.6% of the labels,
# all of them predictions the PyTorch model itself made with little margin (docs/benchmark.md).
MIN_AGREEMENT = {"fp32": 1.0, "int8": 0.98}
MIN_CORRELATION = {"fp32": 0.999, "int8": 0.99}
# A text whose two likeliest labels (or a label and its threshold) are this close in probability is
# a near tie: any numeric change may flip it (an int8 export flipped a 0.461/0.460 one), so the
# gate counts agreement on the other texts; parity.json reports both.
TIE_MARGIN = 0.02
MAX_FP32_DIFFERENCE = 1e-3  # largest |logit difference| an fp32 export may show (it is ~1e-6 in practice)
PARITY_ROWS = 2000  # validation texts compared, at most


@dataclass
class Parity:
    """How the export's outputs compare with the PyTorch model's on `rows` texts from `source`."""

    precision: str
    source: str
    rows: int
    max_logit_difference: float
    measure: str  # what `agreement` is: label agreement, label-set agreement, or (regression) correlation
    agreement: float  # over all texts
    near_ties: int  # texts the PyTorch model itself nearly could not decide (TIE_MARGIN)
    agreement_beyond_ties: float  # over the other texts: what the export must reach
    required_agreement: float
    passed: bool

    def line(self) -> str:
        verdict = "passed" if self.passed else f"FAILED (needs {self.required_agreement:g} beyond near ties" + (
            f" and max |logit difference| <= {MAX_FP32_DIFFERENCE:g})" if self.precision == "fp32" else ")")
        plural = "" if self.near_ties == 1 else "s"
        ties = f" ({self.agreement_beyond_ties:.4f} beyond {self.near_ties} near tie{plural})" if self.near_ties else ""
        return (f"parity on {self.rows} texts of {self.source}: max |logit difference| "
                f"{self.max_logit_difference:.2e}, {self.measure} {self.agreement:.4f}{ties}: {verdict}")


def require_onnx() -> None:
    """A one-line error, not an ImportError, where the onnx extra is not installed."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise HfAdaptError(f"ONNX export and the onnx backend need {', '.join(missing)}: pip install 'hf-adapt[onnx]'")


class OnnxClassifier:
    """An exported classifier as hf_adapt's predictor sees a model: its `config` and `device`, called
    with a tokenized batch, returning `.logits` (onnxruntime on the CPU)."""

    device = torch.device("cpu")

    def __init__(self, graph: Path, config: Any):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its initializer notes are not for users
        self.session = onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.config = config

    def __call__(self, **batch: torch.Tensor) -> SimpleNamespace:
        ids = batch["input_ids"]
        feeds = {name: batch.get(name, torch.zeros_like(ids)).cpu().numpy().astype(np.int64) for name in self.inputs}
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(["logits"], feeds)[0]))


def load_exported(folder: str | Path) -> tuple[OnnxClassifier, Any]:
    """`(model, tokenizer)` of an export folder, or of the one export inside an hf_adapt output
    directory (`onnx` or `onnx-int8`), for `predict`."""
    from transformers import AutoConfig, AutoTokenizer

    require_onnx()
    graph_folder = exported_folder(Path(folder))
    config = AutoConfig.from_pretrained(graph_folder)
    return OnnxClassifier(graph_folder / GRAPH, config), AutoTokenizer.from_pretrained(graph_folder)


def exported_folder(folder: Path) -> Path:
    if (folder / GRAPH).is_file():
        return folder
    found = [folder / name for name in ("onnx", "onnx-int8") if (folder / name / GRAPH).is_file()]
    if len(found) == 1:
        return found[0]
    if found:
        raise HfAdaptError(f"--model {folder} holds two exports ({found[0].name}, {found[1].name}); give the one to "
                           f"use, e.g. --model {found[1]}")
    raise HfAdaptError(f"--backend onnx: no {GRAPH} in {folder} (nor in its onnx/ or onnx-int8/); run "
                       f"`hf-adapt export {folder} --format onnx` first")


def export(output_dir: str | Path, *, quantize: str | None = None, destination: str | Path | None = None,
           parity_file: str | None = None, parity_rows: int = PARITY_ROWS, min_agreement: float | None = None,
           overwrite: bool = False) -> Parity:
    """Export the model of `output_dir` to ONNX (int8 weights with `quantize="int8"`), check it
    against the PyTorch model on validation texts, and write the folder only if it passes.

    Raises:
        HfAdaptError: no model there, the destination exists (without `overwrite`), no texts for
            the parity check, or the export fails it (nothing is written then).
    """
    require_onnx()
    source = Path(output_dir)
    precision = quantize or "fp32"
    target = Path(destination) if destination else source / ("onnx" if quantize is None else f"onnx-{quantize}")
    if target.exists() and not overwrite:
        raise HfAdaptError(f"export: {target} exists; remove it, give --overwrite, or another --destination")
    if target.exists() and not ((target / GRAPH).is_file() and (target / PARITY).is_file()):
        raise HfAdaptError(f"export: {target} exists and is not an export (no {GRAPH} and {PARITY}); --overwrite "
                           f"replaces only an earlier export: give another --destination")
    model, tokenizer = load_trained(source)
    texts, where = parity_texts(source, parity_file, parity_rows)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        say(f"exporting {source} to ONNX ({precision})")
        write_graph(model, tokenizer, work / GRAPH, quantize=quantize)
        model.config.save_pretrained(work)
        tokenizer.save_pretrained(work)
        if (source / "recipe.yaml").is_file():  # predict reads the model's columns from it
            shutil.copy2(source / "recipe.yaml", work / "recipe.yaml")
        parity = compare(model, OnnxClassifier(work / GRAPH, model.config), tokenizer, texts, where, precision,
                         min_agreement)
        say(parity.line())
        if not parity.passed:
            advice = ("try the fp32 export (no --quantize), or accept less with --min-agreement" if quantize else
                      "the exporter changed what the model computes: please report it with the model's family")
            raise HfAdaptError(f"export: {parity.line()}; nothing written; {advice}")
        (work / PARITY).write_text(json.dumps(asdict(parity), indent=2) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"wrote {target} (predict with: hf-adapt predict --model {target} --backend onnx)")
    return parity


def write_graph(model: Any, tokenizer: Any, path: Path, *, quantize: str | None) -> None:
    """The ONNX graph of `model` (inputs: the tokenizer's, batch and sequence dynamic; output:
    `logits`) at `path`, its weights int8 with `quantize`."""
    import contextlib
    import io
    import logging
    import warnings

    example = tokenizer(["an example", "a longer example text"], padding=True, return_tensors="pt")
    names = list(example.keys())
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    sequence = torch.export.Dim("sequence", min=1, max=max_input_tokens(model.config) or 1 << 16)
    float_graph = path if quantize is None else path.with_name("float.onnx")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO() if not verbose() else None):
            if not verbose():  # its progress lines and notes on operators of libraries not installed
                warnings.simplefilter("ignore")
                logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            program = torch.onnx.export(model.float(), (), kwargs=dict(example), input_names=names,
                                        output_names=["logits"], dynamo=True, verbose=False,
                                        dynamic_shapes={k: {0: batch, 1: sequence} for k in names})
        program.save(str(float_graph))
    except Exception as err:  # the exporter's errors are long; its first line names the operator
        raise HfAdaptError(f"export: torch.onnx could not export {type(model).__name__}: {first_line(err)}") from err
    if quantize is not None:
        quantize_int8(float_graph, path, getattr(model.config, "intermediate_size", None))
        float_graph.unlink()


def quantize_int8(source: Path, destination: Path, intermediate_size: int | None) -> None:
    """int8 weights (onnxruntime's dynamic quantization) for every matrix product but the
    feed-forward blocks' output projections: these read GELU activations with outliers that an
    int8 activation range per tensor loses (Bondarenko et al. 2021): on the quick-start model's 120
    validation and test texts, quantizing them too moved 2 labels, keeping them fp32 one, a
    0.461/0.460 near tie (docs/recipes.md, "Exported inference")."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False)
    rows = {tensor.name: tensor.dims[0] for tensor in graph.graph.initializer if len(tensor.dims) == 2}
    keep_float = [node.name for node in graph.graph.node
                  if node.op_type == "MatMul" and rows.get(node.input[1]) == intermediate_size]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process: the symbolic shape inference fails on these graphs
    try:
        quantize_dynamic(str(source), str(destination), weight_type=QuantType.QInt8, nodes_to_exclude=keep_float)
    finally:
        root.setLevel(level)


def parity_texts(output_dir: Path, parity_file: str | None, rows: int) -> tuple[list[Text], str]:
    """Up to `rows` texts to compare on: `parity_file`, else the run's validation (or test) file."""
    columns = saved_data_columns(output_dir)
    candidates = [parity_file] if parity_file else [columns.get("validation_file"), columns.get("test_file")]
    source = next((c for c in candidates if c and (parity_file or Path(c).exists())), None)
    if source is None:
        raise HfAdaptError(f"export: {output_dir}'s recipe names no validation or test file that exists here; give "
                           f"--parity-file FILE with texts like those the model will see")
    texts: list[Text] = []
    for chunk in open_texts(source, columns.get("text_column") or "text", columns.get("text_pair_column")):
        texts.extend(t for t in chunk if not is_blank(t))
        if len(texts) >= rows:
            break
    if not texts:
        raise HfAdaptError(f"export: {source} holds no texts to check the export on; give --parity-file FILE")
    return texts[:rows], source


def compare(model: Any, exported: OnnxClassifier, tokenizer: Any, texts: list[Text], source: str,
            precision: str, min_agreement: float | None = None) -> Parity:
    """The export's logits against the model's on `texts`, through the same predictor; it passes at
    `min_agreement` (default MIN_AGREEMENT, MIN_CORRELATION for regression, of its precision)."""
    reference = predict_logits(model, tokenizer, texts)
    candidate = predict_logits(exported, tokenizer, texts)
    difference = float((reference - candidate).abs().max())
    task = LabelMap.from_model_config(model.config).task
    required = min_agreement if min_agreement is not None else (
        MIN_CORRELATION if task == "regression" else MIN_AGREEMENT)[precision]
    measure, agreement, near_ties, beyond = agreement_of(task, reference, candidate, model.config)
    passed = beyond >= required and (precision != "fp32" or difference <= MAX_FP32_DIFFERENCE)
    return Parity(precision, source, len(texts), difference, measure, agreement, near_ties, beyond, required, passed)


def agreement_of(task: str, reference: torch.Tensor, candidate: torch.Tensor,
                 config: Any) -> tuple[str, float, int, float]:
    """(what is measured, its value over all texts, the near ties, its value over the other texts)."""
    if task == "regression":
        numbers = reference[:, 0].numpy(), candidate[:, 0].numpy()
        correlation = float(np.corrcoef(*numbers)[0, 1]) if len(reference) > 1 else 1.0
        return "correlation", correlation, 0, correlation
    if task == "multi_label":
        (probs, chosen), (_, exported) = label_sets(reference, config), label_sets(candidate, config)
        measure, agree = "label-set agreement", (chosen == exported).all(-1)
        decided = ((probs - torch.tensor(label_thresholds(config))).abs() >= TIE_MARGIN).all(-1)
    else:
        measure, agree = "label agreement", reference.argmax(-1) == candidate.argmax(-1)
        top = calibrated(reference, config).softmax(-1).topk(2, dim=-1).values
        decided = top[:, 0] - top[:, 1] >= TIE_MARGIN
    beyond = float(agree[decided].float().mean()) if decided.any() else 1.0
    return measure, float(agree.float().mean()), int((~decided).sum()), beyond


def run_cli(args: argparse.Namespace) -> int:
    """Run `hf-adapt export`; stdout gets the parity figures as one JSON line."""
    if args.parity_rows <= 0:
        raise HfAdaptError(f"--parity-rows must be > 0, got {args.parity_rows}")
    if args.min_agreement is not None and not 0 < args.min_agreement <= 1:
        raise HfAdaptError(f"--min-agreement must be in (0, 1], got {args.min_agreement}")
    parity = export(args.output_dir, quantize=args.quantize, destination=args.destination,
                    parity_file=args.parity_file, parity_rows=args.parity_rows, min_agreement=args.min_agreement,
                    overwrite=args.overwrite)
    print(json.dumps(asdict(parity)))
    return 0
