"""The report's one line on the console, printed by ``python -m outro_sweep.report`` and once at
the end of every sweep: how many cells, how many compared with a baseline and significant, and
where the report is.

    report: 3 cells (3 done); 2 compared with a baseline, 1 significant (p < 0.05) -> outputs/.../report
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from outro_sweep.report.build import TABLE_CSV, TABLE_MD


def report_line(out: Path, holm: bool = False) -> str:
    table = Path(out) / TABLE_CSV
    if not table.is_file():
        return f"report: could not be built, see {Path(out) / TABLE_MD}"
    with open(table, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    states = Counter(r["state"] for r in rows)
    compared = sum(1 for r in rows if r["diff"] != "")
    significant = sum(1 for r in rows if r["significant"] == "true")
    listed = ", ".join(f"{states[s]} {s}" for s in ("done", "partial", "failed", "missing") if states[s])
    return (f"report: {len(rows)} cells ({listed}); {compared} compared with a baseline, {significant} significant "
            f"(p < 0.05{', Holm' if holm else ''}) -> {out}")
