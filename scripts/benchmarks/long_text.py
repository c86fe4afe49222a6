"""Long reviews: `data.long_text: chunk` against `truncate` at the same `model.max_length`, on
amazon_multidomain (recipes/minilm_amazon_long_text.yaml; docs/benchmark.md). Each of the four runs
is `hf-adapt train` with overrides; the table gives test accuracy, windows and seconds of training.

    python scripts/benchmarks/long_text.py [MAX_LENGTH ...]     # default: 128 256
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RECIPE = "recipes/minilm_amazon_long_text.yaml"


def main(lengths: list[int]) -> None:
    rows = []
    for max_length in lengths:
        for long_text in ("truncate", "chunk"):
            output = Path(f"runs/long_text/{long_text}_{max_length}")
            subprocess.run(["hf-adapt", "train", RECIPE, f"model.max_length={max_length}",
                            f"data.long_text={long_text}", f"data.chunk_stride={max_length // 4}",
                            f"train.output_dir={output}", "--overwrite"], check=True, stdout=subprocess.DEVNULL)
            saved = json.loads((output / "metrics.json").read_text())
            rows.append((max_length, long_text, saved["metrics"]["test"]["accuracy"],
                         saved["metrics"]["validation"]["accuracy"], saved["data"].get("windows", saved["data"]["rows"]),
                         saved["timings"]["train_s"], saved["timings"]["eval_s"], saved["hardware"]))
    print("| max_length | long_text | test accuracy | validation accuracy | train rows (windows) | train s | eval s |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for max_length, long_text, test, validation, counts, train_s, eval_s, _ in rows:
        print(f"| {max_length} | {long_text} | {test:.3f} | {validation:.3f} | {counts['train']:,} | {train_s:.0f} | "
              f"{eval_s:.0f} |")
    print("hardware:", json.dumps(rows[-1][-1]))


if __name__ == "__main__":
    main([int(n) for n in sys.argv[1:]] or [128, 256])
