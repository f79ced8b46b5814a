"""Reading a benchmark's annotation text files: UTF-8 or a one-line error, never a traceback.

A NUL byte is refused too: Python's csv module reads it as an ordinary character, so a
corrupted file would become questions with garbage in them instead of an error.
"""

from __future__ import annotations

import io
from pathlib import Path

from outro_sweep.errors import ConfigError


def read_text(path: Path, root: Path, expected: str) -> str:
    """The file's text; a ConfigError naming ``benchmark.data_dir`` and ``expected`` (what valid
    files hold) for bytes that are not UTF-8 text."""
    data = path.read_bytes()
    where = f"benchmark.data_dir={str(root)!r}: {path.name}"
    nul = data.find(b"\x00")
    if nul >= 0:
        raise ConfigError(f"{where} holds a NUL byte at offset {nul}: valid values are UTF-8 text files ({expected})")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{where} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}): "
                          f"valid values are UTF-8 text files ({expected})") from None


def open_text(path: Path, root: Path, expected: str) -> io.StringIO:
    """``read_text`` as a file object for the csv module (newlines kept as in the file)."""
    return io.StringIO(read_text(path, root, expected), newline="")
