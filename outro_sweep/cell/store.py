"""Where a cell's results live, and whether it is done: ``<output_dir>/cells/<identity>/``.

    config.yaml        the resolved config (credentials masked)
    shards/            one durable, checksummed file per finished batch (resume reads them)
    predictions.jsonl  all records, merged by sample index, written once all are in
    metrics.json       written once all samples are in
    DONE               written last: the cell is complete (JSON: identity, time, accuracy, and
                       the sha256 of predictions.jsonl and metrics.json)
    FAILED             the last attempt raised (JSON: error, traceback tail, log file)
    LOCK               held (``fcntl.flock``) by the process running the cell; names its host and pid
    wandb/             the cell's W&B run (run id = identity)

The folder is keyed by identity, not by sweep, so every sweep and every re-run that contains
the same cell shares it; each Hydra job folder links to it as ``cell``.

A DONE marker cannot lie: whoever reads it (``state()``: the sweeper, the job, the report,
rescore) checks the digests it names. A marker that is unreadable (empty, not JSON, a folder),
that names no digests (written by an older version), or whose files are missing or changed
makes the cell "partial" again, with one warning naming the cell and the file; the next run
merges the cell again from its shards (no model is loaded when they are complete).

The lock: rank 0 of the process(es) running a cell holds an exclusive ``flock`` on ``LOCK``
from before it looks at the cell's state until after DONE, so two runs of one cell (two
sweeps, a rerun beside orphans) never write it at once: the second is refused in one line
naming the holder. ``flock`` excludes processes on one host, and processes on different nodes
where the shared filesystem supports it (NFSv4, Lustre mounted with ``flock``, GPFS); on a
filesystem without lock support (Lustre with ``noflock``, some NFSv3 set-ups) the lock either
fails with an error or excludes nothing, and two nodes of a SLURM array could then run one cell
at once. The kernel drops the lock when its process dies, even by SIGKILL.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from outro_sweep.errors import RunError
from outro_sweep.files.atomic import write_json_atomic

log = logging.getLogger(__name__)

STATES = ("new", "partial", "failed", "done")
RESULT_FILES = ("predictions.jsonl", "metrics.json")  # the files DONE names by digest
# A lock held for less than this is a look (the sweeper's ``holder()``), not a run: wait it out.
LOCK_GRACE_S = 2.0
# How long a process of a multi-process cell other than rank 0 waits for its rank 0 to take the
# cell's lock (rank 0 first runs the cell's model-free checks: seconds).
RANK_WAIT_S = 300.0
_WARNED: set[tuple[str, str]] = set()  # (cell folder, problem): each warned once per process


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class CellBusy(RunError):
    """Another process holds the cell's lock: the cell is running elsewhere."""


class CellStore:
    def __init__(self, output_dir: str | os.PathLike, identity: str) -> None:
        self.identity = identity
        # Absolute: the folder is named in status.json, skipped.json and console lines, which are
        # read from other working directories (the report, a SLURM job, another shell).
        self.dir = Path(os.path.abspath(output_dir)) / "cells" / identity

    # paths ---------------------------------------------------------------------------------
    @property
    def shards(self) -> Path:
        return self.dir / "shards"

    @property
    def predictions(self) -> Path:
        return self.dir / "predictions.jsonl"

    @property
    def metrics(self) -> Path:
        return self.dir / "metrics.json"

    @property
    def done_marker(self) -> Path:
        return self.dir / "DONE"

    @property
    def failed_marker(self) -> Path:
        return self.dir / "FAILED"

    @property
    def lock_file(self) -> Path:
        return self.dir / "LOCK"

    # state ---------------------------------------------------------------------------------
    def done_problem(self) -> str | None:
        """Why the DONE marker cannot be trusted (None: there is none, or it holds). Never raises."""
        marker = self.done_marker
        if not (marker.exists() or marker.is_symlink()):
            return None
        try:
            info = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:  # a folder, empty, not JSON, not UTF-8
            return f"its DONE marker is unreadable ({type(err).__name__})"
        digests = info.get("sha256") if isinstance(info, dict) else None
        if not isinstance(digests, dict):
            return "its DONE marker names no digests of its results"
        for name in RESULT_FILES:
            path = self.dir / name
            try:
                if sha256_file(path) != digests.get(name):
                    return f"{name} differs from the digest in its DONE marker"
            except FileNotFoundError:
                return f"{name} is missing"
            except OSError as err:
                return f"{name} is unreadable ({err.strerror or type(err).__name__})"
        return None

    def state(self) -> str:
        """done (a DONE marker whose digests hold) > failed > partial (some shards, or a DONE
        that does not hold) > new. Warns once per process about a DONE that does not hold."""
        problem = self.done_problem()
        if problem is None and self.done_marker.is_file():
            return "done"
        if problem is not None:
            self._warn(problem)
        if self.failed_marker.is_file():
            return "failed"
        if problem is not None or self._shard_count():
            return "partial"
        return "new"

    def _warn(self, problem: str) -> None:
        if (str(self.dir), problem) not in _WARNED:
            _WARNED.add((str(self.dir), problem))
            # On stderr, not through logging: the sweeper plans before any job's logging exists.
            print(f"warning: cell {self.identity}: {problem}: not done, it will be merged again from its shards "
                  f"({self.dir})", file=sys.stderr, flush=True)

    def _shard_count(self) -> int:
        try:
            return sum(1 for _ in self.shards.glob("*.jsonl")) if self.shards.is_dir() else 0
        except OSError:
            return 0

    def _read_marker(self, path: Path) -> dict:
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            return info if isinstance(info, dict) else {}
        except (OSError, ValueError):
            return {}

    def describe(self) -> str:
        """The state in a few words (for skip and dry-run lines); never raises."""
        state = self.state()
        if state == "done":
            info = self._read_marker(self.done_marker)
            accuracy = info.get("accuracy")
            shown = f"{accuracy:.4f}" if isinstance(accuracy, (int, float)) else "?"
            return f"done (accuracy {shown}, n={info.get('n')})"
        if state == "failed":
            return f"failed ({self._read_marker(self.failed_marker).get('error', 'FAILED marker unreadable')})"
        if state == "partial":
            problem = self.done_problem()
            why = f"; {problem}" if problem else ""
            return f"partial ({self._shard_count()} prediction shards{why})"
        return "new"

    # the lock ------------------------------------------------------------------------------
    def holder(self) -> dict | None:
        """Who holds the cell's lock now (``{"host", "pid", "started"}``), or None if nobody
        does. Takes the lock for an instant when it is free (a starting run waits that out:
        ``LOCK_GRACE_S``)."""
        if not self.lock_file.is_file():
            return None
        try:
            fd = os.open(self.lock_file, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return self._read_marker(self.lock_file) or {"host": "?", "pid": "?"}
        except OSError:
            return None
        finally:
            os.close(fd)  # also drops a shared lock just taken
        return None

    def wait_for_launch(self, launch: str | None, timeout_s: float = RANK_WAIT_S) -> None:
        """For the processes of a multi-process cell other than rank 0, which hold no lock:
        return once rank 0 of the same launch (``launch``: ``predict.distributed.launch_id``)
        holds the cell's lock; ``CellBusy`` when another launch holds it, since then rank 0 of
        this one is refused and never reaches the process group this process would wait in."""
        deadline = time.monotonic() + timeout_s
        while True:
            holder = self.holder()
            if holder is not None and "started" in holder:  # (else its holder is writing it)
                if holder.get("launch") == launch:
                    return
                raise CellBusy(self.busy_line(holder))
            if time.monotonic() >= deadline:
                raise RunError(f"cell {self.identity}: rank 0 of this launch ({launch}) did not take the cell's "
                               f"lock within {timeout_s:.0f} s ({self.lock_file}); see rank 0's log")
            time.sleep(0.2)

    @contextmanager
    def lock(self, launch: str | None = None):
        """Hold the cell's lock for the ``with`` block (creates the folder); ``CellBusy`` (one
        line: host, pid, start) when another process holds it past ``LOCK_GRACE_S``.
        ``launch``: the launch this process belongs to (``wait_for_launch``), recorded in LOCK."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + LOCK_GRACE_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise CellBusy(self.busy_line(self._read_marker(self.lock_file))) from None
                    time.sleep(0.1)
            holder = {"host": socket.gethostname(), "pid": os.getpid(), "launch": launch,
                      "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
            yield holder
        finally:
            os.close(fd)  # releases the lock

    def busy_line(self, holder: dict) -> str:
        return (f"cell {self.identity} is running: locked by host {holder.get('host', '?')} pid "
                f"{holder.get('pid', '?')} since {holder.get('started', '?')} ({self.lock_file}); not run here")

    # transitions ---------------------------------------------------------------------------
    def prepare(self, force: bool) -> None:
        """Create the folder; drop a DONE marker that does not hold (it is rewritten when the
        cell completes); ``force`` discards every earlier result of this cell first."""
        names = ("shards", *RESULT_FILES, "DONE", "FAILED") if force else ("DONE",)
        if force or self.done_problem() is not None:
            for name in names:
                path = self.dir / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path.exists() or path.is_symlink():
                    path.unlink()
        self.dir.mkdir(parents=True, exist_ok=True)

    def link_from(self, job_dir: Path) -> None:
        """``<job_dir>/cell`` -> this folder (relative, so the outputs tree can move)."""
        link = job_dir / "cell"
        target = os.path.relpath(self.dir, job_dir)
        if link.is_symlink() or link.exists():
            if link.is_symlink() and os.readlink(link) == target:
                return
            link.unlink()
        link.symlink_to(target, target_is_directory=True)

    def mark_done(self, metrics: dict) -> None:
        """DONE, naming the digests of the result files as they are on disk now: call last."""
        self.failed_marker.unlink(missing_ok=True)
        write_json_atomic(self.done_marker, {
            "identity": self.identity, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": socket.gethostname(), "accuracy": metrics.get("accuracy"), "n": metrics.get("n"),
            "sha256": {name: sha256_file(self.dir / name) for name in RESULT_FILES},
        })

    def mark_failed(self, error: BaseException, log_file: Path | None) -> None:
        """FAILED, best effort: where it cannot be written (disk full, read-only) nothing is
        left behind and the original error stays the one reported."""
        tail = "".join(traceback.format_exception(type(error), error, error.__traceback__)[-3:])
        try:
            write_json_atomic(self.failed_marker, {
                "identity": self.identity, "failed": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "host": socket.gethostname(), "error": one_line(error), "traceback_tail": tail,
                "log": None if log_file is None else str(log_file),
            })
        except OSError as err:
            log.warning("cell %s: FAILED marker not written (%s)", self.identity, disk_fault_line(err) or err)


def one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")


DISK_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
               errno.EROFS: "the filesystem is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied"}


def disk_fault_line(err: BaseException) -> str | None:
    """One line for a storage error that no retry inside the cell can fix (full, read-only,
    not writable), naming the path; None for any other error."""
    if not isinstance(err, OSError) or err.errno not in DISK_ERRNOS:
        return None
    where = err.filename or "the cell's output folder"
    return (f"cannot write {where}: {DISK_ERRNOS[err.errno]} ({errno.errorcode[err.errno]}); "
            "finished shards are kept, run again once it is writable")
