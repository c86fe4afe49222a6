"""Benchmark hf_adapt's recipes against the plain Trainer / peft / scikit-learn way (time to accuracy).

The numbers in docs/benchmark.md come from (2 CPU cores, one flock-held run):

    python scripts/bench.py --data ../shared/data/sst2 --train-rows 5000 \
        --output-dir bench/sst2 --lock /tmp/hf_adapt_cpu.lock

Same as `hf-adapt bench ...`; see `hf_adapt/bench.py` for what each variant is.
"""

import sys

from hf_adapt.bench import main

if __name__ == "__main__":
    sys.exit(main())
