"""CircularEval (MMBench): a multiple-choice question counts as right only if it is answered
right under every rotation of its options.

A cell with ``benchmark.circular=true`` asks each mc question k times (k options, rotations
0..k-1, ``outro_sweep.benchmarks.base.rotated``); each record carries ``rotation`` and
``question_id`` (the benchmark's id; ``id`` is unique per record). Records of a plain cell
carry neither: a missing ``rotation`` reads as 0 and a missing ``question_id`` as ``id``, so
every function here also takes a plain cell's records.

A model that always answers "A" is right at rotation 0 exactly on the questions whose target
is A, and wrong on some other rotation of each of them: its plain accuracy is the share of
target A, its circular accuracy 0. A shift in letter bias moves plain accuracy, not circular.
"""

from __future__ import annotations

import hashlib

from outro_sweep.scoring.stats import accuracy_summary


def rotation_of(record: dict) -> int:
    return int(record.get("rotation", 0))


def question_id_of(record: dict) -> str:
    return str(record.get("question_id", record["id"]))


def is_circular(records: list[dict]) -> bool:
    """Whether the records come from a circular cell (they carry ``rotation``)."""
    return any("rotation" in r for r in records)


def plain_records(records: list[dict]) -> list[dict]:
    """The rotation-0 records: each question as the benchmark orders its options (every record
    of a plain cell). Plain accuracy, letter statistics and the plain paired comparison use these."""
    return [r for r in records if rotation_of(r) == 0]


def _by_question(records: list[dict]) -> dict[str, list[dict]]:
    """question_id -> its records in rotation order; questions in their first record's order."""
    grouped: dict[str, list[dict]] = {}
    for record in sorted(records, key=lambda r: r.get("index", 0)):
        grouped.setdefault(question_id_of(record), []).append(record)
    return {qid: sorted(group, key=rotation_of) for qid, group in grouped.items()}


def circular_outcomes(records: list[dict]) -> dict[str, bool]:
    """question_id -> whether every rotation of the question was answered right."""
    return {qid: all(bool(r["correct"]) for r in group) for qid, group in _by_question(records).items()}


def question_records(records: list[dict]) -> list[dict]:
    """One record per question, for pairing two circular cells (``report.paired.compare_paired``):
    ``id`` = question_id, ``correct`` = circular correctness, ``index`` = its first record's,
    ``prompt_hash`` = a hash of every rotation's prompt_hash in rotation order (two cells pair a
    question only where all its prompts agree), and the rotation-0 record's categories."""
    merged = []
    for qid, group in _by_question(records).items():
        hashes = "|".join(f"{rotation_of(r)}:{r.get('prompt_hash')}" for r in group)
        first = group[0]
        merged.append({
            "index": first.get("index", 0),
            "id": qid,
            "prompt_hash": hashlib.sha256(hashes.encode()).hexdigest()[:16],
            "correct": all(bool(r["correct"]) for r in group),
            "category": first.get("category", ""),
            "categories": first.get("categories", {}),
        })
    return merged


def circular_summary(records: list[dict]) -> dict:
    """metrics.json's ``circular`` block: circular accuracy with its Wilson interval over the
    questions (``n``, ``correct``), and ``rotations``, the records asked (every rotation of
    every question: what a complete cell's shards hold)."""
    return {**accuracy_summary(list(circular_outcomes(records).values())), "rotations": len(records)}
