"""Cell metrics, computed from the scored prediction records (the cell's source of truth)."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

from outro_sweep.scoring.letter_stats import CI_CONTAINS_CHANCE, LETTER_BIAS, POSITION_BIAS, letter_stats
from outro_sweep.scoring.stats import accuracy_summary


def read_predictions(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    return sorted(records, key=lambda r: r["index"])


def summarise(records: list[dict], seconds: float, timed_samples: int, diagnostics: dict) -> dict:
    """Accuracy over every question (a question whose clip failed counts as wrong), broken
    down by first category, by kind and by every (category name, value); the answer-letter
    statistics and their flags (``letter_stats``); the score mean (WUPS where the benchmark
    uses it); how clips were obtained where questions have clips.

    ``seconds`` / ``timed_samples``: time in ``predict_step`` and the samples it covers (the
    shards that carry timing), so ``seconds_per_sample`` is what was measured over what it
    covers, also after a resume. ``diagnostics``: the interventions' cell summaries.
    """
    by_first = defaultdict(list)
    by_kind = defaultdict(list)
    by_category = defaultdict(lambda: defaultdict(list))
    for record in records:
        correct = bool(record["correct"])
        by_first[record["category"]].append(correct)
        by_kind[record["kind"]].append(correct)
        for name, value in record["categories"].items():
            by_category[name][value].append(correct)
    scores = [float(r["score"]) for r in records]
    accuracy = accuracy_summary([bool(r["correct"]) for r in records])
    summary = {
        **accuracy,
        **letter_stats(records, accuracy["ci_low"], accuracy["ci_high"]).metrics(),
        "errors": sum(1 for r in records if r["error"] is not None),
        "score_mean": sum(scores) / len(scores) if scores else math.nan,
        "seconds_per_sample": seconds / timed_samples if timed_samples else math.nan,
        "timed_samples": timed_samples,
        "per_category": {name: accuracy_summary(values) for name, values in sorted(by_first.items())},
        "per_kind": {kind: accuracy_summary(values) for kind, values in sorted(by_kind.items())},
        "by_category": {
            name: {value: accuracy_summary(v) for value, v in sorted(values.items())}
            for name, values in sorted(by_category.items())
        },
        "diagnostics": diagnostics,
    }
    if any("correct_norm" in r for r in records):
        # scoring=cloze: lm-eval's acc_norm beside acc (``accuracy``), over the same questions
        summary["acc_norm"] = accuracy_summary([bool(r.get("correct_norm")) for r in records])
    if any("video_cache" in r for r in records):
        # Per question: "hit" = frames loaded from the frame cache, "decoded" = decoded now.
        cache = Counter(r.get("video_cache") or "failed" for r in records)
        summary["video_cache"] = {"hit": cache["hit"], "decoded": cache["decoded"], "failed": cache["failed"]}
    return summary


def result_line(metrics: dict, where: Path) -> str:
    """The cell's one printed line: accuracy, its interval, counts (clip errors where there are
    clips), the circular accuracy of a circular cell, the most common answer letter's share, and a
    warning when a flag is raised, e.g. ``accuracy 0.2500 (95% CI 0.0715-0.5907, n=8, invalid=0,
    top letter A 100%) ⚠ letter bias, CI contains chance (25%) -> <cell>``.
    """
    extra = ""
    if "video_cache" in metrics:
        extra = f", video errors={metrics['errors']}, skipped missing={metrics.get('skipped_missing', 0)}"
    if metrics.get("acc_norm") is not None:  # scoring=cloze
        norm = metrics["acc_norm"]
        extra += f", acc_norm {norm['accuracy']:.4f} (95% CI {norm['ci_low']:.4f}-{norm['ci_high']:.4f})"
    if metrics.get("top_letter") is not None:
        what = "position" if metrics.get("letters_are") == "positions" else "letter"
        extra += f", top {what} {metrics['top_letter']} {100 * metrics['top_letter_share']:.0f}%"
    circular = metrics.get("circular")
    if circular:  # benchmark.circular=true: right under every rotation of the options
        extra += (f"; circular accuracy {circular['accuracy']:.4f} (95% CI {circular['ci_low']:.4f}-"
                  f"{circular['ci_high']:.4f}, over {circular['rotations']} rotations)")
    warnings = {LETTER_BIAS: "letter bias", POSITION_BIAS: "position bias",
                CI_CONTAINS_CHANCE: f"CI contains chance ({100 * (metrics.get('chance') or 0):.0f}%)"}
    flagged = ", ".join(warnings[flag] for flag in metrics.get("flags", ()))
    return (f"accuracy {metrics['accuracy']:.4f} (95% CI {metrics['ci_low']:.4f}-{metrics['ci_high']:.4f}, "
            f"n={metrics['n']}, invalid={metrics['invalid']}{extra}){' ⚠ ' + flagged if flagged else ''} -> {where}")
