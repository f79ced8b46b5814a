"""Durable prediction shards: one file per finished batch per process, never half written.

A cell's predictions live in ``<cell_dir>/shards/`` as files named

    <first index:08d>-<last index:08d>-r<rank>-<8 hex>.jsonl

(first/last = the smallest and largest question index in the batch, rank = the process that
wrote it, 8 hex = a random id, so two processes or two attempts never collide). A shard is
written by ``outro_sweep.files.atomic``: a SIGKILL or power cut at any instant leaves either
the whole shard or none of it (plus, at worst, a stray ``.tmp`` file that readers ignore).

Line 1 of a shard is its header, ``{"_shard": {...}}``: the rank, the record count, the
sha256 of the record lines (every byte after the header line), the seconds spent in ``predict_step`` for the batch and what the batch added to the attached
interventions' running sums (``diagnostic_sums``, ``{group: {key: float}}``); a batch that
generated also carries its generate timing (``timing``: prefill/decode seconds and tokens,
``outro_sweep.predict.decode_timer``) and the ``machine`` it was measured on (device, torch
threads, batch size). So timing, speed and the cell's diagnostics sum over shards exactly:
across the processes of a multi-process cell and across resumed attempts. Every further line
is one raw prediction record (no scoring fields), ``json.dumps(record, sort_keys=True)``.

A shard that is not whole (truncated, not JSON, a count or checksum that does not match: a
shard edited after it was written, even into valid JSON) is set aside as
``<name>.corrupt``, named in the log, and its questions count as not yet predicted, so the
cell predicts them again. A shard whose header has no checksum (written before shards
carried one) is trusted when it parses: the atomic write already guarantees it is whole,
and predicting such cells again would discard results nothing suggests are wrong.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from outro_sweep.files.atomic import TMP_SUFFIX, write_lines_atomic
from outro_sweep.interventions.stack import add_sums
from outro_sweep.predict.speed import add_timing

log = logging.getLogger(__name__)

SHARD_NAME = re.compile(r"^(\d{8,})-(\d{8,})-r(\d+)-([0-9a-f]{8})\.jsonl$")
HEADER_KEY = "_shard"
CORRUPT_SUFFIX = ".corrupt"  # a shard set aside: kept for inspection, never read again


class ShardConflictError(RuntimeError):
    """Two shards hold different records for the same question index."""


def shard_name(first: int, last: int, rank: int) -> str:
    return f"{first:08d}-{last:08d}-r{rank}-{uuid.uuid4().hex[:8]}.jsonl"


def dumps(record: dict) -> str:
    """The one serialisation of a record, used by shards and by the merged predictions.jsonl."""
    return json.dumps(record, sort_keys=True)


def write_shard(shard_dir: Path, records: list[dict], rank: int, seconds: float = 0.0,
                diagnostic_sums: dict | None = None, timing: dict | None = None, machine: dict | None = None) -> Path:
    """One finished batch -> one durable shard file; returns its path. ``records`` must be
    JSON-ready (already redacted) and carry distinct ``index`` values."""
    if not records:
        raise ValueError("a shard needs at least one record")
    shard_dir = Path(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    indices = [int(r["index"]) for r in records]
    lines = [dumps(r) for r in records]
    header = {HEADER_KEY: {"rank": rank, "count": len(records), "sha256": _checksum(lines), "seconds": seconds,
                           "diagnostic_sums": diagnostic_sums or {}}}
    if timing:
        header[HEADER_KEY].update(timing=timing, machine=machine or {})
    path = shard_dir / shard_name(min(indices), max(indices), rank)
    write_lines_atomic(path, [dumps(header), *lines])
    return path


def _checksum(lines: list[str]) -> str:
    """sha256 of the record lines as the file holds them (each with its newline)."""
    return hashlib.sha256("".join(line + "\n" for line in lines).encode("utf-8")).hexdigest()


@dataclass
class Shard:
    path: Path
    records: list[dict]
    lines: list[str]  # the records' serialised lines, as written
    header: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float | None:
        """Seconds in ``predict_step`` for this batch; None where the header carries none."""
        value = self.header.get("seconds")
        return None if value is None else float(value)

    @property
    def diagnostic_sums(self) -> dict:
        return self.header.get("diagnostic_sums", {})

    @property
    def timing(self) -> dict:
        """The batch's generate timing (decode_timer.TIMING_KEYS); {} where nothing was generated."""
        return self.header.get("timing", {})


@dataclass
class ShardSet:
    """Everything a shard folder holds: whole shards, and the names of unreadable ones."""

    shards: list[Shard]
    corrupt: list[str]
    records: list[dict]  # deduplicated by index, sorted by index
    lines: dict[int, str]  # index -> its record's serialised line

    @property
    def indices(self) -> set[int]:
        return set(self.lines)

    @property
    def names(self) -> set[str]:
        return {shard.path.name for shard in self.shards}


def _read_one(path: Path) -> Shard:
    """Parse one shard; ValueError when it is not whole (bad JSON, bad header, short, a
    checksum that does not match)."""
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        raise ValueError("does not end with a newline (truncated)")
    lines = text[:-1].split("\n")  # exactly the bytes written, so the checksum covers every one
    header = {}
    first = json.loads(lines[0])
    if isinstance(first, dict) and HEADER_KEY in first:
        header, lines = first[HEADER_KEY], lines[1:]
        if not isinstance(header, dict):
            raise ValueError("its header is not an object")
    records = [json.loads(line) for line in lines]
    if not all(isinstance(r, dict) and isinstance(r.get("index"), int) for r in records):
        raise ValueError("holds a line that is not a record with an integer 'index'")
    if header and header.get("count") != len(records):
        raise ValueError(f"header says {header.get('count')} records, file holds {len(records)}")
    if header.get("sha256") is not None and header["sha256"] != _checksum(lines):
        raise ValueError("its records do not match the checksum in its header (changed after it was written)")
    if not records:
        raise ValueError("holds no records")
    return Shard(path, records, lines, header)


def read_shard_set(shard_dir: Path) -> ShardSet:
    """Read every whole shard of ``shard_dir`` (missing folder: nothing). Temporary files are
    ignored; a shard that cannot be parsed or fails its checksum is reported by name (log
    warning, ``corrupt``) and set aside (``set_aside``), so its questions count as not yet
    predicted. Records are deduplicated by
    ``index``: identical duplicates (e.g. a batch predicted twice) keep one; a duplicate index
    with a different record raises ``ShardConflictError`` naming both files."""
    shard_dir = Path(shard_dir)
    shards, corrupt = [], []
    if shard_dir.is_dir():
        for path in sorted(shard_dir.iterdir()):
            if not SHARD_NAME.match(path.name) or not path.is_file():
                continue  # temporary files (".<name>.<id>.tmp") and anything else
            try:
                shards.append(_read_one(path))
            except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
                corrupt.append(path.name)
                log.warning("prediction shard %s is unreadable and is set aside (%s); its questions will be "
                            "predicted again", path, err)
                set_aside(path)
    by_index: dict[int, tuple[dict, str, Path]] = {}
    for shard in shards:
        for record, line in zip(shard.records, shard.lines):
            index = record["index"]
            seen = by_index.get(index)
            if seen is None:
                by_index[index] = (record, line, shard.path)
            elif seen[0] != record:
                raise ShardConflictError(
                    f"question index {index} has two different predictions: {seen[2].name} and {shard.path.name} "
                    f"in {shard_dir} (the cell's shards mix two runs that disagree; remove one of them)"
                )
    ordered = sorted(by_index)
    return ShardSet(shards, corrupt, [by_index[i][0] for i in ordered], {i: by_index[i][1] for i in ordered})


def set_aside(path: Path) -> None:
    """Rename a bad shard to ``<name>.corrupt`` (readers skip it from then on). Safe beside
    running writers: shards are only ever renamed into place whole. Where the folder cannot
    be written the shard stays, and is skipped again by the next reader."""
    try:
        path.rename(path.with_name(path.name + CORRUPT_SUFFIX))
    except OSError as err:
        log.warning("prediction shard %s not set aside: %s", path, err.strerror or err)


def read_shards(shard_dir: Path) -> list[dict]:
    """All records of ``shard_dir``'s shards, deduplicated by index, sorted by index."""
    return read_shard_set(shard_dir).records


def timing(shards: list[Shard]) -> tuple[float, int]:
    """(seconds, samples) over the shards whose header carries timing, in name order: what
    was measured and how many samples it covers (every attempt and process that wrote one)."""
    timed = [shard for shard in sorted(shards, key=lambda s: s.path.name) if shard.seconds is not None]
    return sum(shard.seconds for shard in timed), sum(len(shard.records) for shard in timed)


def diagnostic_sums(shards: list[Shard]) -> dict[str, dict[str, float]]:
    """The interventions' running sums over the whole cell: every shard's ``diagnostic_sums``,
    added key-wise in name order."""
    total: dict[str, dict[str, float]] = {}
    for shard in sorted(shards, key=lambda s: s.path.name):
        add_sums(total, shard.diagnostic_sums)
    return total


def generate_timing(shards: list[Shard]) -> tuple[dict[str, float], list[dict]]:
    """(the cell's summed generate timing, the machine of every timed shard), over every
    shard in name order: every attempt and process that generated."""
    total: dict[str, float] = {}
    machines = []
    for shard in sorted(shards, key=lambda s: s.path.name):
        if shard.timing:
            add_timing(total, shard.timing)
            machines.append(shard.header.get("machine", {}))
    return total, machines


def check_complete(shard_set: ShardSet, expected: int, where: Path) -> None:
    """Exactly one record per question index 0..expected-1, else a RuntimeError naming the
    missing and the unexpected indices."""
    have = shard_set.indices
    missing = sorted(set(range(expected)) - have)
    extra = sorted(have - set(range(expected)))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing indices {_span(missing)}")
        if extra:
            parts.append(f"unexpected indices {_span(extra)}")
        raise RuntimeError(f"{where} does not hold one prediction per question 0..{expected - 1}: "
                           + "; ".join(parts))


def _span(indices: list[int], limit: int = 20) -> str:
    shown = ", ".join(map(str, indices[:limit]))
    return f"[{shown}{', ...' if len(indices) > limit else ''}] ({len(indices)})"


def remove_stale_temporaries(shard_dir: Path) -> int:
    """Delete temporary files left by killed writers. Call only when no process of the cell
    is writing (after the final barrier)."""
    removed = 0
    if Path(shard_dir).is_dir():
        for path in Path(shard_dir).iterdir():
            if path.name.startswith(".") and path.name.endswith(TMP_SUFFIX):
                path.unlink(missing_ok=True)
                removed += 1
    return removed
