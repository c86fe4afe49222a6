"""Where a one-line `hf-adapt predict` spends its start-up: importing torch and transformers (the
floor of any transformers program), hf_adapt's own imports on top, and loading the model
(issue 18; numbers in its closing note). Run each measurement in a fresh process:

    python scripts/benchmarks/startup.py outputs/quickstart
"""

from __future__ import annotations

import sys
import time

started = time.perf_counter()
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel  # noqa: E402, F401

libraries = time.perf_counter()
import hf_adapt.cli  # noqa: E402, F401
import hf_adapt.inference  # noqa: E402, F401

ours = time.perf_counter()
from hf_adapt.modeling import load_trained  # noqa: E402

load_trained(sys.argv[1])
loaded = time.perf_counter()
print(f"torch + transformers import {libraries - started:.2f} s; hf_adapt's own imports on top {ours - libraries:.2f} s; "
      f"model + tokenizer load {loaded - ours:.2f} s; loaded datasets: {'datasets' in sys.modules}, "
      f"evaluate: {'evaluate' in sys.modules}")
