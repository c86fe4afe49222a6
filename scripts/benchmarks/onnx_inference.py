"""Exported inference against PyTorch: throughput, label agreement and accuracy on one labelled file.

    python scripts/benchmarks/onnx_inference.py MODEL_DIR TEST_FILE [--rows N] [--text-column text]

MODEL_DIR is an hf_adapt output directory. The script exports it twice into a temporary folder
(`hf_adapt.export.export`: fp32, and int8 weights; parity checked on TEST_FILE's texts), then times
the same texts through:

- `pipeline("text-classification")` as users call it (one text at a time, its default) and with
  `batch_size=64`;
- hf_adapt's PyTorch predictor (length-sorted batches of 64, `hf-adapt predict --backend torch`);
- onnxruntime on the fp32 and the int8 export (the same predictor, `--backend onnx`).

Each timing is the best of `--repeats` passes after one warm-up pass. It prints a Markdown table
(texts/s, the ratio to the pipeline's default, label agreement with PyTorch, accuracy on the
file's labels) with the CPU and its precision, and writes it as JSON with `--json`.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def best_time(run, repeats: int) -> tuple[float, object]:
    """(the fastest of `repeats` passes after a warm-up pass, the last pass's result)."""
    result = run()  # warm-up: first-call allocations and onnxruntime's graph optimisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("test_file")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--rows", type=int, default=1000, help="texts timed and compared (default 1000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    import pandas as pd
    from transformers import pipeline

    from hf_adapt.export import export, load_exported
    from hf_adapt.inference import predict_logits
    from hf_adapt.modeling import load_trained

    frame = pd.read_csv(args.test_file).head(args.rows)
    texts = [str(t) for t in frame[args.text_column]]
    model, tokenizer = load_trained(args.model_dir)
    gold = torch.tensor([model.config.label2id[str(label)] for label in frame[args.label_column]])
    rows = []

    def record(name: str, seconds: float, labels: torch.Tensor, reference: torch.Tensor) -> None:
        rows.append({"backend": name, "texts_per_s": len(texts) / seconds, "seconds": seconds,
                     "agreement": float((labels == reference).float().mean()),
                     "accuracy": float((labels == gold).float().mean())})

    def ids(outputs: list[dict]) -> torch.Tensor:
        return torch.tensor([model.config.label2id[o["label"]] for o in outputs])

    reference = predict_logits(model, tokenizer, texts).argmax(-1)
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")
    for name, kwargs in (("pipeline() default (one text at a time)", {}), ("pipeline(batch_size=64)", {"batch_size": 64})):
        seconds, outputs = best_time(lambda: classify(texts, **kwargs), args.repeats)
        record(name, seconds, ids(outputs), reference)
    seconds, _ = best_time(lambda: predict_logits(model, tokenizer, texts), args.repeats)
    record("hf_adapt torch (predict --backend torch)", seconds, reference, reference)
    with tempfile.TemporaryDirectory() as work:
        for quantize in (None, "int8"):
            folder = Path(work) / (quantize or "fp32")
            export(args.model_dir, quantize=quantize, destination=folder, parity_file=args.test_file)
            onnx_model, onnx_tokenizer = load_exported(folder)
            seconds, logits = best_time(lambda: predict_logits(onnx_model, onnx_tokenizer, texts), args.repeats)
            record(f"onnx {quantize or 'fp32'} (predict --backend onnx)", seconds, logits.argmax(-1), reference)

    baseline = rows[0]["texts_per_s"]
    print(f"\n{len(texts)} texts of {args.test_file}; model {args.model_dir}; {cpu_name()}, "
          f"{torch.get_num_threads()} threads; PyTorch in fp32; best of {args.repeats} after a warm-up\n")
    print("| backend | texts/s | × pipeline() default | label agreement with torch | accuracy |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['backend']} | {row['texts_per_s']:.1f} | {row['texts_per_s'] / baseline:.2f} | "
              f"{row['agreement']:.4f} | {row['accuracy']:.4f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_name(), "texts": len(texts), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
