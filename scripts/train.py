"""Launch a recipe with Accelerate (one or more processes, CPU or GPUs).

    accelerate launch scripts/train.py RECIPE.yaml [section.key=value ...] [--overwrite] [--resume]
    python scripts/train.py RECIPE.yaml ...        # the same run in this one process

The arguments, error messages and exit codes are those of `hf-adapt train` (this script hands
them to it unchanged). Every process trains; only the main process writes the output directory,
the model card and any push.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hf_adapt import cli


def main(argv: Sequence[str] | None = None) -> int:
    """Run `hf-adapt train` with `argv` (default: this script's command-line arguments)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return cli.main(["train", *args])


if __name__ == "__main__":
    sys.exit(main())
