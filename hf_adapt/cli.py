"""`hf-adapt`: one command line for training, evaluation, prediction and the tools around them.

    hf-adapt train RECIPE.yaml [section.key=value ...] [--overwrite] [--resume]
    hf-adapt eval --model DIR --data FILE
    hf-adapt predict --model DIR [--input FILE|-] [--output FILE|-] [--backend torch|onnx]
    hf-adapt export DIR [--quantize int8]
    hf-adapt tune RECIPE.yaml --budget 20m [--strategies full,lora,partial] [--storage URL]

Problems with the user's input end with one line on stderr and exit status 2 (a traceback only
with `--debug`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hf_adapt.errors import HfAdaptError

# Every command's parser is defined here; a command imports its implementation (torch, transformers:
# seconds of start-up) only when it runs, so `--help` and a mistyped path answer at once.


def run_cli_of(module: str) -> Callable[[argparse.Namespace], int]:
    """A command that imports `module` (and what it needs) only when it runs, then calls its `run_cli`."""
    return lambda args: importlib.import_module(module).run_cli(args)


def add_train(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="Train a classifier from a YAML recipe.",
                                   description="Train, evaluate and save a classifier as a recipe says.")
    parser.add_argument("recipe", help="Recipe YAML (the hf_adapt repository's recipes/ folder has examples).")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="Override recipe values, e.g. optim.layer_decay=0.8 train.epochs=1")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing output directory on success.")
    parser.add_argument("--resume", action="store_true", help="Resume the unfinished run from its last checkpoint.")
    parser.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from hf_adapt.config import check_data_files, load_recipe

    overrides = list(args.overrides)
    if args.overwrite:
        overrides.append("train.overwrite=true")
    if args.resume:
        overrides.append("train.resume=true")
    config = load_recipe(args.recipe, overrides)
    check_data_files(config.data)  # before torch is imported: a mistyped path answers at once
    from hf_adapt.recipes import RECIPES

    result = RECIPES[config.adapt.strategy].run(config)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under `accelerate launch` every process returns the result; one summary is enough
    print(json.dumps({"output_dir": result.output_dir, "metrics": result.metrics, "params": result.params,
                      "timings": result.timings}, indent=2))
    return 0


MAX_LENGTH_HELP = ("Tokens read of each text (default 256); a model trained with data.long_text: chunk reads whole "
                   "texts in windows of the length it was trained on, or of this many tokens if given.")


def add_eval(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="Evaluate a trained model on a labelled file.")
    parser.add_argument("--model", required=True, help="hf_adapt output directory (or local hub ORG/NAME).")
    parser.add_argument("--data", required=True, help="Labelled CSV/JSON(L)/Parquet file.")
    add_column_arguments(parser, label=True)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, help=MAX_LENGTH_HELP)
    parser.add_argument("--json", metavar="OUT", help="Also write the metrics to this JSON file.")
    add_model_arguments(parser)
    parser.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from hf_adapt.inference import check_output_file, evaluate_file

    check_positive(args, "batch_size", "max_length")
    if args.json:
        check_output_file(args.json, "--json", args.data)
    model_dir = resolve_model(args.model, args.local_root)
    metrics = evaluate_file(model_dir, args.data, **model_columns(model_dir, args), batch_size=args.batch_size,
                            max_length=args.max_length, device=resolve_device(args.device))
    text = json.dumps(metrics, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


def add_predict(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="Predict labels for texts (a file or stdin).")
    parser.add_argument("--model", required=True, help="hf_adapt output directory (or local hub ORG/NAME).")
    parser.add_argument("--input", default="-", help="CSV/JSON(L)/Parquet (its --text-column), .txt, or - for stdin.")
    parser.add_argument("--output", default="-", help="Output .jsonl or .csv; - (default) prints JSON lines.")
    add_column_arguments(parser, label=False)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, help=MAX_LENGTH_HELP)
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                        help="torch (default): the saved model; onnx: its export (`hf-adapt export`; --model is the "
                             "export folder or the output directory holding one), on the CPU through onnxruntime")
    add_model_arguments(parser)
    parser.set_defaults(func=run_predict)


def add_column_arguments(parser: argparse.ArgumentParser, *, label: bool) -> None:
    parser.add_argument("--text-column", help="Column of the texts; default the model's own data.text_column "
                                              "(from its recipe.yaml), else 'text'.")
    parser.add_argument("--text-pair-column", help="Column of the second texts, for a model trained on pairs; "
                                                   "default the model's own data.text_pair_column.")
    if label:
        parser.add_argument("--label-column", help="Column of the labels; default the model's own data.label_column, "
                                                   "else 'label'.")


def model_columns(model_dir: str, args: argparse.Namespace) -> dict[str, Any]:
    """The columns to read: the flags given, else those the model was trained on (its saved
    recipe.yaml), else `text` and `label`."""
    from hf_adapt.inference import saved_data_columns

    saved = saved_data_columns(model_dir)
    columns = {"text_column": args.text_column or saved.get("text_column") or "text",
               "text_pair_column": args.text_pair_column or saved.get("text_pair_column")}
    if hasattr(args, "label_column"):  # eval: where the labels are, and how a multi-label row holds them
        columns["label_column"] = args.label_column or saved.get("label_column") or "label"
        columns["label_separator"] = saved.get("label_separator")
        columns["label_columns"] = saved.get("label_columns")
    return columns


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Where `--model` is looked for and where it runs (eval and predict)."""
    parser.add_argument("--local-root", metavar="DIR",
                        help="Local hub folder that `hf-adapt push --local-root DIR` wrote; --model ORG/NAME is looked "
                             "for there (default: the HF cache, where `hf-adapt push` writes by default).")
    parser.add_argument("--device", default="auto",
                        help="auto (default: the GPU when torch sees one, else the CPU), cpu, cuda, cuda:1, ...")


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HfAdaptError(f"--device {name!r} is not a device; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HfAdaptError(f"--device {name}: torch sees no CUDA GPU here; use --device cpu (or auto)")
    return name


def run_predict(args: argparse.Namespace) -> int:
    from hf_adapt.inference import (
        check_output_file,
        open_texts,
        prediction_rows,
        write_predictions,
    )
    from hf_adapt.modeling import load_trained

    check_positive(args, "batch_size", "max_length")
    check_output_file(args.output, "--output", args.input)
    model_dir = resolve_model(args.model, args.local_root)
    chunks = open_texts(args.input, **model_columns(model_dir, args))
    if args.backend == "onnx":
        if args.device not in ("auto", "cpu"):
            raise HfAdaptError(f"--backend onnx runs on the CPU; leave out --device {args.device}")
        from hf_adapt.export import load_exported

        model, tokenizer = load_exported(model_dir)
    else:
        model, tokenizer = load_trained(model_dir, device=resolve_device(args.device))
    write_predictions(prediction_rows(model, tokenizer, chunks, batch_size=args.batch_size,
                                      max_length=args.max_length), args.output)
    return 0


def resolve_model(reference: str, local_root: str | None = None) -> str:
    """A directory as is; an ORG/NAME pushed to the local hub (`--local-root`, default the HF cache)
    resolves to its snapshot."""
    from hf_adapt.hub import resolve_model_reference

    return resolve_model_reference(reference, local_root)


def check_positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise HfAdaptError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")


def add_export(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="Export a trained model to ONNX (optionally int8), checked against PyTorch.",
        description="Writes OUTPUT_DIR/onnx (or onnx-int8): model.onnx, config, tokenizer and parity.json, the "
                    "largest logit difference and label agreement with the PyTorch model on the run's validation "
                    "texts. An export short of the agreement (100%% fp32, 98%% int8, near ties aside) is not written.")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="output directory of a finished run")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="export format (onnx)")
    parser.add_argument("--quantize", choices=("int8",), help="int8 weights (onnxruntime dynamic quantization)")
    parser.add_argument("--destination", metavar="DIR", help="export folder (default OUTPUT_DIR/onnx or onnx-int8)")
    parser.add_argument("--parity-file", metavar="FILE",
                        help="texts to check the export on (default the run's validation file, else its test file)")
    parser.add_argument("--parity-rows", type=int, default=2000, metavar="N", help="texts compared, at most (2000)")
    parser.add_argument("--min-agreement", type=float, metavar="F",
                        help="label agreement the export must reach, near ties aside (default 1.0 fp32, 0.98 int8; "
                             "regression: the correlation, 0.999 and 0.99)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export folder")
    parser.set_defaults(func=run_cli_of("hf_adapt.export"))


def add_push(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "push",
        help="Push an output directory to the Hub or to a local hub folder.",
        description="Push the model (or LoRA adapter) of a training run. Checkpoints, optimizer state, "
        "logs, pickles and secrets are never pushed. --to local (default) writes a folder laid out like "
        "the HF cache, loadable offline as ORG/NAME; --to hub pushes to HF_ENDPOINT with HF_TOKEN.",
    )
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="output directory of a finished run")
    parser.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="repository to push to")
    parser.add_argument("--private", action="store_true", help="create the Hub repo private")
    parser.add_argument("--revision", metavar="R", help="branch to push to, created if missing (default main)")
    parser.add_argument("--to", choices=("local", "hub"), default="local", help="destination (default local)")
    parser.add_argument("--what", choices=("auto", "model", "adapter"), default="auto",
                        help="auto: the output as it is; model: the full model; adapter: the LoRA adapter")
    parser.add_argument("--local-root", metavar="DIR", help="root of the local hub (default: the HF cache)")
    parser.set_defaults(func=run_cli_of("hf_adapt.hub"))


def add_forgetting(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "forgetting",
        help="Measure what fine-tuning changed: probe retention, per-layer CKA drift.",
        description="Compare BASE (before) and ADAPTED (after) on a probe CSV: sentence1,sentence2,score "
        "(STS Spearman) or text,label (classification accuracy), plus linear CKA per layer.",
    )
    parser.add_argument("base", metavar="BASE", help="model before adaptation: directory or Hub id")
    parser.add_argument("adapted", metavar="ADAPTED",
                        help="model after adaptation: directory, adapter directory or Hub id")
    parser.add_argument("--probe", required=True, metavar="FILE", help="probe CSV (sts or labelled, from its header)")
    parser.add_argument("--max-rows", type=int, default=None, metavar="N", help="use only the first N probe rows")
    parser.add_argument("--json", default=None, metavar="OUT.json", help="also write the report as JSON")
    parser.set_defaults(func=run_cli_of("hf_adapt.forgetting"))


def add_compare(subparsers: argparse._SubParsersAction) -> None:
    from hf_adapt.reports import add_report_arguments

    parser = subparsers.add_parser(
        "compare", help="Run several strategies (or recipes) on the same data and seed; write a report.",
        description="Each variant is the recipe with its strategy swapped (features, partial, lora, full, scratch) "
                    "or another recipe given as NAME=PATH.yaml. Writes DIR/report.md, report.json and report.png.")
    add_report_arguments(parser, recipe_help="Base recipe YAML (e.g. the repository's recipes/minilm_sst2_compare.yaml).",
                         overrides_help="Override recipe values for every variant, e.g. data.max_train_samples=2000")
    parser.add_argument("--strategies", default="features,partial,lora,full,scratch", metavar="LIST",
                        help="Comma-separated variants: features, partial, lora, full, scratch or NAME=PATH.yaml "
                             "(default: all five strategies).")
    parser.add_argument("--probe", metavar="FILE", help="STS probe CSV (sentence1,sentence2,score) for retention.")
    parser.add_argument("--probe-max-rows", type=int, metavar="N", help="Use only the first N probe rows.")
    parser.set_defaults(func=run_cli_of("hf_adapt.compare"))


def add_groupwise(subparsers: argparse._SubParsersAction) -> None:
    from hf_adapt.reports import add_report_arguments

    parser = subparsers.add_parser(
        "groupwise", help="Train a global model and one model per group; report every model on every group.",
        description="Stage 1 trains on every group of data.group_column; stage 2 fine-tunes one model per group "
                    "from the pretrained model and from the stage-1 model. Writes DIR/report.md, report.json and "
                    "report.png.")
    add_report_arguments(parser, recipe_help="Recipe YAML with data.group_column (e.g. the repository's "
                                             "recipes/minilm_amazon_groupwise.yaml).",
                         overrides_help="Override recipe values, e.g. groupwise.stage2_epochs=1 train.epochs=2")
    parser.set_defaults(func=run_cli_of("hf_adapt.groupwise"))


def add_tune(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tune", help="Search a recipe's hyperparameters within a time budget (Optuna); save the best model.",
        description="Each trial trains the recipe with sampled values (learning rate, layer decay, epochs, warm-up, "
                    "batch size; per strategy the frozen depth or LoRA's rank, alpha and targets), scored on "
                    "validation only; a TPE sampler proposes, a median pruner stops trailing trials. The study lives "
                    "in an Optuna storage: running the same command again continues it. Writes OUTPUT/best (the "
                    "chosen trial, its test split scored once) and OUTPUT/tune_report.md, .json and .png.")
    parser.add_argument("recipe", help="Recipe YAML (e.g. the repository's recipes/minilm_sst2_full.yaml).")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="Override recipe values for every trial, e.g. data.max_train_samples=2000")
    parser.add_argument("--budget", required=True, metavar="DURATION",
                        help="Wall-clock time for this run: 20m, 90s, 1h30m or seconds (a rerun gets its own).")
    parser.add_argument("--strategies", metavar="LIST",
                        help="Comma-separated: full, partial, lora, features (default: the recipe's own).")
    parser.add_argument("--output-dir", metavar="DIR", help="Default: the recipe's train.output_dir + '_tune'.")
    parser.add_argument("--storage", metavar="URL",
                        help="Optuna storage (default sqlite:///OUTPUT/study.db); postgresql://... or mysql://... "
                             "for workers on several machines.")
    parser.add_argument("--study-name", metavar="NAME", help="Default: the recipe file's name.")
    parser.add_argument("--n-trials", type=int, metavar="N",
                        help="At most N trials in this run (0: only save the best trial so far and report).")
    parser.set_defaults(func=run_cli_of("hf_adapt.tune"))


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (argparse only: no command's implementation is imported)."""
    parser = argparse.ArgumentParser(prog="hf-adapt", description="Adapt pretrained encoders to text classification.")
    parser.add_argument("--debug", action="store_true", help="Show full tracebacks for input errors (any position).")
    parser.add_argument("--verbose", action="store_true",
                        help="Let the libraries' own load reports, warnings and progress bars through (any position).")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_train, add_eval, add_predict, add_export, add_push, add_forgetting, add_compare, add_groupwise,
                add_tune):
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere, not only before the command
    if "--verbose" in argv:
        os.environ["HF_ADAPT_VERBOSE"] = "1"
    argv = [a for a in argv if a not in ("--debug", "--verbose")]
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HfAdaptError as err:
        if debug:
            traceback.print_exc()
        close_progress_bars()
        print(f"hf-adapt: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt as err:  # a training run stopped by Ctrl-C says where its checkpoint is
        close_progress_bars()
        print(f"hf-adapt: interrupted{': ' + str(err) if str(err) else ''}", file=sys.stderr)
        return 130


def close_progress_bars() -> None:
    """End the progress bars an error cut short, so the error starts a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", [])):
        bar.close()


if __name__ == "__main__":
    sys.exit(main())
