"""Cell metrics, computed from the prediction records (the cell's source of truth)."""

from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from pathlib import Path

from outro_sweep.cell.redaction import redact
from outro_sweep.scoring.stats import accuracy_summary


def read_predictions(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    return sorted(records, key=lambda r: r["index"])


def video_summary(records: list[dict]) -> dict:
    """What only video records carry: errors, the score mean (WUPS where the benchmark uses
    it), per-kind and per-(category name, value) breakdowns, and how clips were obtained."""
    by_kind = defaultdict(list)
    by_category = defaultdict(lambda: defaultdict(list))
    for record in records:
        by_kind[record["kind"]].append(bool(record["correct"]))
        for name, value in record["categories"].items():
            by_category[name][value].append(bool(record["correct"]))
    scores = [float(r["score"]) for r in records]
    cache = Counter(r["video_cache"] or "failed" for r in records)
    return {
        "errors": sum(1 for r in records if r["error"] is not None),
        "score_mean": sum(scores) / len(scores) if scores else math.nan,
        "per_kind": {kind: accuracy_summary(values) for kind, values in sorted(by_kind.items())},
        "by_category": {
            name: {value: accuracy_summary(v) for value, v in sorted(values.items())}
            for name, values in sorted(by_category.items())
        },
        # Per question: "hit" = frames loaded from the frame cache, "decoded" = decoded now.
        "video_cache": {"hit": cache["hit"], "decoded": cache["decoded"], "failed": cache["failed"]},
    }


def summarise(records: list[dict], seconds: float, diagnostics: dict) -> dict:
    """Accuracy over every question (a question whose video failed counts as wrong)."""
    overall = accuracy_summary([bool(r["correct"]) for r in records])
    by_category = defaultdict(list)
    for record in records:
        by_category[record["category"]].append(bool(record["correct"]))
    summary = {
        **overall,
        "invalid": sum(1 for r in records if not r["valid"]),
        "seconds_per_sample": seconds / max(1, len(records)),
        "per_category": {name: accuracy_summary(values) for name, values in sorted(by_category.items())},
        "diagnostics": diagnostics,  # {intervention group: its cell-level summary}
    }
    if records and "kind" in records[0]:
        summary.update(video_summary(records))
    return summary


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write then rename, so a reader never sees a half-written file."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)


def write_jsonl_atomic(path: Path, records: list[dict]) -> None:
    """Replace a predictions file whole (one JSON line per record), never half-written."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(redact(record), sort_keys=True) + "\n" for record in records)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
