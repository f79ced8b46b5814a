"""The console and log boundary of a process: every line it prints or logs is masked
(``outro_sweep.files.masking``), whoever prints it (this package, Hydra, Lightning, W&B,
Python's traceback printer).

``install()`` wraps ``sys.stdout`` and ``sys.stderr`` and sets a log record factory, so a
record is masked when it is created: every handler sees the masked message and traceback,
including handlers added later (Hydra's job log file, W&B's debug.log). Called at the start
of the CLI and of every job (a submitit child process runs the job in a fresh interpreter).
"""

from __future__ import annotations

import logging
import sys
import threading

from outro_sweep.files.masking import mask_text

_LINE_ENDS = ("\n", "\r")


class MaskingStream:
    """A text stream that masks what it forwards. Text is held until a line ends (or a flush),
    so a credential written in pieces is still masked whole. Threads (W&B's, Lightning's) may
    write at once: the held text is guarded by a lock."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            end = max(self._pending.rfind(c) for c in _LINE_ENDS)
            if end >= 0:
                self.stream.write(mask_text(self._pending[: end + 1]))
                self._pending = self._pending[end + 1 :]
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self.stream.write(mask_text(self._pending))
                self._pending = ""
        self.stream.flush()

    def __getattr__(self, name):  # encoding, fileno, isatty, buffer, ...: the wrapped stream's
        return getattr(self.stream, name)


def masking_record_factory(make_record):
    """A log record factory that masks the message, traceback and stack of ``make_record``'s
    records (the arguments are merged into the message, which is then masked)."""

    def make(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the format: the handler reports it, masked
            message = f"{record.msg} {record.args}"
        record.msg, record.args = mask_text(message), ()
        if record.exc_info:
            record.exc_text = mask_text(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return record

    make.masks = True
    return make


def install() -> None:
    """Mask this process's console and log records from now on (idempotent)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, MaskingStream):
            setattr(sys, name, MaskingStream(stream))
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "masks", False):
        logging.setLogRecordFactory(masking_record_factory(factory))
