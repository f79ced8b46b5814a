"""The one exception type a user should ever see for bad input."""

import sys
from contextlib import contextmanager


class ConfigError(ValueError):
    """Bad user input, reported as one line that names the key and its valid values.

    Raised before the model loads wherever the check does not need the model; the entry
    point prints it as ``error: <message>`` and exits with status 2.
    """


class RunError(RuntimeError):
    """A cell that cannot run here and now, though its input is fine: another process holds it,
    or its folder is full or read-only. Reported as one line naming the path (no traceback),
    with a non-zero exit; the cell's finished shards are kept for the next run."""


def one_line_error(err: BaseException) -> str:
    """The first line of an error's message (its type where it has none), for status files."""
    return str(err).splitlines()[0] if str(err) else type(err).__name__


@contextmanager
def exit_on_config_error():
    """For a command's entry point: a ConfigError inside becomes its one line on stderr and exit
    code 2, the way every ``python -m outro_sweep...`` command reports bad input."""
    try:
        yield
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
