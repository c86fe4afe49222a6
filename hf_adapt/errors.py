"""The one exception type users see.

Anything raised as `HfAdaptError` is a problem with the user's input (a file, a column, a
config value). The CLI prints its message as a single line and exits with status 2, without a
traceback unless `--debug` is given; every other exception is a bug and keeps its traceback.
"""


class HfAdaptError(Exception):
    """A user-facing error: the message names what is wrong, where, and what to do."""

    exit_code = 2


def first_line(err: BaseException) -> str:
    """The first line of a library exception, to quote inside a one-line `HfAdaptError`."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
