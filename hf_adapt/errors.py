"""The one exception type users see, and the one way hf_adapt talks to them while it works.

Anything raised as `HfAdaptError` is a problem with the user's input (a file, a column, a
config value). The CLI prints its message as a single line and exits with status 2, without a
traceback unless `--debug` is given; every other exception is a bug and keeps its traceback.
"""

import os
import sys


class HfAdaptError(Exception):
    """A user-facing error: the message names what is wrong, where, and what to do."""

    exit_code = 2


def shown(value: object, limit: int = 200) -> str:
    """`repr(value)` for an error message, cut to `limit` characters: a value echoed back must not
    turn a one-line error into megabytes (a YAML alias bomb, a pasted file)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def first_line(err: BaseException) -> str:
    """The first line of a library exception, to quote inside a one-line `HfAdaptError`."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def verbose() -> bool:
    """`hf-adapt --verbose` (or HF_ADAPT_VERBOSE=1): let the libraries' own reports and bars through."""
    return os.environ.get("HF_ADAPT_VERBOSE") == "1"


def say(message: str) -> None:
    """One line for the user, on stderr: stdout carries only a command's result (the run's JSON
    summary, the predictions), so that it can be piped into `jq` or a file."""
    print(f"[hf_adapt] {message}", file=sys.stderr, flush=True)
