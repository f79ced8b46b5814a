"""Each cell's baseline: the cell whose identity is the one ``baseline_of`` names (every
intervention off, everything else the same; ``outro_sweep.cell.baseline``).

Looked for first among the report's own cells, then (for keys still without a done
baseline) among the DONE cells of the shared store ``<output_dir>/cells/*/`` of every
output folder the report's cells live in. Several candidates: a done one from the report's
cells first, then the first by identity (deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass

from outro_sweep.report.collect import ReportCell, Store
from outro_sweep.report.settings import baseline_of, intervention_enabled


@dataclass
class BaselineMatch:
    baseline: ReportCell | None  # a DONE baseline, or None
    note: str = ""  # why there is none, or where it came from


def _pick(candidates: list[ReportCell]) -> ReportCell | None:
    done = [c for c in candidates if c.state == "done"]
    return min(done, key=lambda c: c.identity or "") if done else None


def find_baselines(cells: list[ReportCell], store: Store) -> dict[str, BaselineMatch]:
    """``{baseline identity: match}`` for every cell among ``cells`` with an intervention on."""
    wanted = {baseline_of(c.config) for c in cells if c.config is not None and intervention_enabled(c.config)}
    own: dict[str, list[ReportCell]] = {}
    for cell in cells:
        if cell.config is not None and not intervention_enabled(cell.config):
            own.setdefault(baseline_of(cell.config), []).append(cell)
    matches: dict[str, BaselineMatch] = {}
    for key in wanted:
        chosen = _pick(own.get(key, []))
        if chosen is not None:
            matches[key] = BaselineMatch(chosen)
    missing = wanted - set(matches)
    if missing:
        stored: dict[str, list[ReportCell]] = {}
        for cell in store.done_cells():
            if not intervention_enabled(cell.config):
                stored.setdefault(baseline_of(cell.config), []).append(cell)
        for key in missing:
            chosen = _pick(stored.get(key, []))
            if chosen is not None:
                matches[key] = BaselineMatch(chosen, f"baseline {chosen.identity} from the cell store {chosen.dir}")
            else:
                unfinished = [c for c in own.get(key, []) if c.state != "done"]
                why = (f"baseline {unfinished[0].identity} is {unfinished[0].state}" if unfinished
                       else f"no cell {key} (every intervention off, the same model, benchmark, seed and "
                            "predict settings) in this report or the cell store")
                matches[key] = BaselineMatch(None, why)
    return matches
