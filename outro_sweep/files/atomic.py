"""The one way the project writes a file that someone may read at any moment: a temporary
file in the same folder, flushed and fsync'ed, renamed over the final name with
``os.replace``, then the folder fsync'ed. A reader (or a SIGKILL, or a power cut) sees the
old file or the new one, never a part; at worst a stray ``.<name>.<8 hex>.tmp`` is left (the
random part makes the name unique per process and per write, so concurrent writers of one
file never share a temporary). A write that fails (a full or read-only disk) removes its
temporary and raises an ``OSError`` naming the final path.

Used for prediction shards and predictions.jsonl, metrics.json, trained LSG gates, the DONE/FAILED markers,
each job's status.json and the sweep's plan.json and skipped.json.

Credentials never reach a file (``outro_sweep.files.masking``): a JSON payload is masked here,
as data, before it is serialised. Text is written as given: masking serialised text could
turn a number into ``***`` and break the file, so a writer of serialised data (config.yaml,
prediction shards, predictions.jsonl) masks the data with ``mask`` before serialising it.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

from outro_sweep.files.masking import mask

TMP_SUFFIX = ".tmp"


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where the filesystem refuses)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as err:
        _discard(temporary)
        if isinstance(err, OSError):  # name the file meant, not its temporary (a failed write() names none)
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    fsync_dir(path.parent)


def _discard(temporary: Path) -> None:
    """Remove a temporary file that will never be renamed (also on a full or read-only disk)."""
    try:
        temporary.unlink(missing_ok=True)
    except OSError:
        pass


def write_lines_atomic(path: Path, lines: Iterable[str]) -> None:
    """``lines`` (each without its newline), one per line."""
    write_text_atomic(path, "".join(line + "\n" for line in lines))


def write_json_atomic(path: Path, payload) -> None:
    """Indented, keys sorted, one trailing newline; credentials masked."""
    write_text_atomic(path, json.dumps(mask(payload), indent=2, sort_keys=True) + "\n")
