"""Find a report's cells: from sweep folders (job folders, skipped.json, multirun.yaml) or
from cell folders given directly; plus the shared cell store, searched for baselines.

Never raises for an incomplete sweep: a job folder without a cell, a cell without results,
an unreadable file: each becomes a cell whose ``state`` says so (done, partial, failed,
missing) and whose ``notes`` say why.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from outro_sweep.cell.identity import defines_cell
from outro_sweep.cell.job_names import cell_dirname, swept_keys
from outro_sweep.cell.store import CellStore
from outro_sweep.cell.sweep_records import PLAN_FILE, SKIPPED_FILE
from outro_sweep.scoring.circular import plain_records
from outro_sweep.scoring.metrics import read_predictions

log = logging.getLogger(__name__)

MULTIRUN_FILE = "multirun.yaml"
STATES = ("done", "partial", "failed", "missing")
RECORD_KEYS = ("index", "id", "prompt_hash", "correct", "category", "categories", "rotation", "question_id",
               "kind", "options", "target", "prediction", "valid",  # these five: letter statistics
               "correct_norm", "option_ll", "error")  # cloze scoring: acc_norm, and positions for letter statistics


@dataclass
class ReportCell:
    """One row of the report. ``config`` is the cell's config.yaml (None when it has none)."""

    identity: str | None
    dir: Path | None
    state: str
    jobs: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    config: dict | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    from_store: bool = False  # found in the shared store (a baseline), not among the report's cells
    planned_baseline: bool = False  # the sweep's plan.json added it as a baseline (known without config.yaml)
    _records: list[dict] | None = None
    _metrics: dict | None = None

    @property
    def key(self) -> str:
        return self.identity or ("missing:" + ",".join(self.jobs or self.overrides))

    def records(self) -> list[dict] | None:
        """The cell's predictions, one per question (done cells only); None when absent or
        unreadable. A circular cell's are its rotation-0 records (``all_records`` has them all)."""
        records = self.all_records()
        return plain_records(records) if records else None

    def all_records(self) -> list[dict] | None:
        """Every prediction record, each rotation of a circular cell included; None as ``records``."""
        if self._records is None and self.state == "done" and self.dir is not None:
            try:
                # Only what the report uses: a big sweep's generated texts need not all sit in memory.
                self._records = [{k: r[k] for k in RECORD_KEYS if k in r}
                                 for r in read_predictions(self.dir / "predictions.jsonl")]
            except (OSError, ValueError, KeyError, TypeError) as err:
                self.notes.append(f"predictions unreadable: {err}")
                self._records = []
        return self._records or None

    def metrics(self) -> dict:
        if self._metrics is None:
            self._metrics = {}
            if self.dir is not None and (self.dir / "metrics.json").is_file():
                try:
                    self._metrics = json.loads((self.dir / "metrics.json").read_text())
                except (OSError, ValueError) as err:
                    self.notes.append(f"metrics.json unreadable: {err}")
        return self._metrics


# ----------------------------------------------------------------------------- one cell folder


def load_config(path: Path) -> dict | None:
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as err:  # noqa: BLE001 - a corrupt config is a note, not a crash
        log.warning("unreadable %s: %s", path, err)
        return None


def store_of(cell_dir: Path) -> CellStore:
    store = CellStore(cell_dir.parent.parent, cell_dir.name)
    store.dir = cell_dir  # the folder as given, wherever it is
    return store


def store_state(cell_dir: Path) -> str:
    """CellStore's state of a folder (done > failed > partial > new); "new" reads as missing."""
    state = store_of(cell_dir).state()
    return "missing" if state == "new" else state


def read_cell(cell_dir: Path, job: str | None = None) -> ReportCell:
    cell_dir = Path(cell_dir)
    if not cell_dir.is_dir():
        return ReportCell(identity=cell_dir.name, dir=None, state="missing", jobs=[job] if job else [],
                          notes=[f"cell folder {cell_dir} does not exist"])
    state = store_state(cell_dir)
    cell = ReportCell(identity=cell_dir.name, dir=cell_dir, state=state, jobs=[job] if job else [],
                      config=load_config(cell_dir / "config.yaml"))
    if cell.config is not None and cell.config.get("identity"):
        cell.identity = str(cell.config["identity"])
    if state == "failed":
        try:
            cell.error = json.loads((cell_dir / "FAILED").read_text()).get("error")
        except (OSError, ValueError):
            cell.error = "FAILED marker unreadable"
    problem = store_of(cell_dir).done_problem() if state != "done" else None
    if problem is not None:
        cell.notes.append(f"DONE does not hold: {problem}")
    if state == "partial":
        cell.notes.append(f"{len(list((cell_dir / 'shards').glob('*.jsonl')))} prediction shards so far")
    return cell


# ----------------------------------------------------------------------------- the sweep's plan


def _read_multirun(sweep_dir: Path) -> dict | None:
    path = sweep_dir / MULTIRUN_FILE
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as err:  # noqa: BLE001
        log.warning("unreadable %s: %s", path, err)
        return None


def expected_jobs(multirun: dict) -> list[list[str]] | None:
    """The sweep's cells as Hydra's basic sweeper expands them: the cross product of
    ``hydra.sweeper.params`` and the command line's overrides (later keys replace earlier)."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra_cfg = multirun.get("hydra") or {}
    task = list(((hydra_cfg.get("overrides") or {}).get("task")) or [])
    params = (hydra_cfg.get("sweeper") or {}).get("params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + task
    try:
        parsed = OverridesParser.create().parse_overrides(arguments)
    except Exception:  # noqa: BLE001 - the sweep ran, so Hydra parsed it; we may lack its config loader
        return None
    final: dict[str, list[str]] = {}
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                return None
            final[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            final[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(combo) for combo in itertools.product(*final.values())]


def plan_key(overrides: list[str]) -> tuple[str, ...]:
    """Overrides that make the same cell compare equal: the keys that define a cell, sorted
    (a planned cell without a job folder is matched to the launched jobs by this key)."""
    return tuple(sorted(o for o in overrides if defines_cell(o.split("=", 1)[0])))


def _job_suffix(name: str) -> str:
    number, _, rest = name.partition("_")
    return rest if number.isdigit() else name


def _job_overrides(job_dir: Path) -> list[str] | None:
    """The overrides Hydra recorded for the job (``<job>/.hydra/overrides.yaml``), or None."""
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    try:
        return [str(o) for o in OmegaConf.to_container(OmegaConf.load(path))]
    except Exception as err:  # noqa: BLE001 - unreadable: the folder's name is used instead
        log.warning("unreadable %s: %s", path, err)
        return None


def _overrides_from_name(name: str) -> list[str]:
    """Best effort when the sweep's plan is unreadable: ``k=v,k=v`` from a job folder's name."""
    parts: list[str] = []
    for piece in _job_suffix(name).split(","):
        if "=" in piece or not parts:
            parts.append(piece)
        else:
            parts[-1] += "," + piece
    return [p for p in parts if p]


# ----------------------------------------------------------------------------- a sweep


def output_dir_of(sweep_dir: Path, multirun: dict | None) -> Path | None:
    """The sweep's ``paths.output_dir`` (where ``cells/`` lives)."""
    if multirun and (multirun.get("paths") or {}).get("output_dir"):
        candidate = Path(str(multirun["paths"]["output_dir"]))
        if "${" not in str(candidate) and (candidate / "cells").is_dir():
            return candidate
    guess = sweep_dir.parent.parent.parent  # <output_dir>/multirun/<date>/<time>
    return guess if (guess / "cells").is_dir() else None


def collect_sweep(sweep_dir: Path) -> tuple[list[ReportCell], list[str]]:
    """Every cell of one sweep folder, plus notes about the folder itself."""
    sweep_dir = Path(sweep_dir)
    notes: list[str] = []
    multirun = _read_multirun(sweep_dir)
    output_dir = output_dir_of(sweep_dir, multirun)
    plan = expected_jobs(multirun) if multirun else None
    by_dirname: dict[str, list[list[str]]] = {}  # several planned jobs can share a name (excluded keys)
    if plan is not None:
        swept = swept_keys(plan)
        for overrides in plan:
            try:
                by_dirname.setdefault(cell_dirname(overrides, swept), []).append(overrides)
            except Exception as err:  # noqa: BLE001 - that job then shows under its folder's name
                log.debug("no job folder name for %s: %s", overrides, err)
    elif multirun is None:
        notes.append(f"{sweep_dir}: no {MULTIRUN_FILE}; expected-but-missing cells cannot be listed")
    else:
        notes.append(f"{sweep_dir}: the sweep's overrides could not be expanded; missing cells are not listed")

    cells: list[ReportCell] = []
    seen_plans: set[tuple[str, ...]] = set()
    # Cells the sweeper left out of the launch because they were done: exact overrides recorded.
    skipped_file = sweep_dir / SKIPPED_FILE
    if skipped_file.is_file():
        try:
            skipped = json.loads(skipped_file.read_text())
        except (OSError, ValueError) as err:
            skipped = []
            notes.append(f"{skipped_file} unreadable: {err}")
        for entry in skipped:
            path = Path(entry.get("cell", ""))
            if not path.is_dir() and output_dir is not None:
                path = output_dir / "cells" / entry.get("identity", "")
            cell = read_cell(path, "skipped (already done)")
            cell.identity = cell.identity or entry.get("identity")
            cell.overrides = list(entry.get("overrides") or [])
            seen_plans.add(plan_key(cell.overrides))
            cells.append(cell)

    # Launched jobs: each job's own overrides (``.hydra/overrides.yaml``); without them, by its
    # folder's name: a name can stand for several planned jobs (keys it leaves out), and the
    # sweeper launches in plan order, so they are taken in turn.
    job_dirs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name[:1].isdigit() and "_" in p.name),
                      key=lambda p: (int(p.name.split("_", 1)[0]), p.name)) if sweep_dir.is_dir() else []
    for job_dir in job_dirs:
        queue = by_dirname.get(_job_suffix(job_dir.name), [])
        while queue and plan_key(queue[0]) in seen_plans:
            queue.pop(0)
        overrides = _job_overrides(job_dir)
        if overrides is None:
            overrides = queue.pop(0) if queue else _overrides_from_name(job_dir.name)
        seen_plans.add(plan_key(overrides))
        status = {}
        if (job_dir / "status.json").is_file():
            try:
                status = json.loads((job_dir / "status.json").read_text())
            except (OSError, ValueError):
                status = {"status": "failed", "error": "status.json unreadable"}
        link = job_dir / "cell"
        target = None
        if link.exists():
            target = link.resolve()
        elif status.get("cell") and Path(status["cell"]).is_dir():
            target = Path(status["cell"])
        elif status.get("identity") and output_dir is not None:
            target = output_dir / "cells" / status["identity"]
        if target is None:
            cell = ReportCell(identity=status.get("identity"), dir=None, state="missing", jobs=[job_dir.name],
                              notes=["the job has no cell yet (not started, or died before its folder was made)"])
            if status.get("status") == "failed":
                cell.state, cell.error = "failed", status.get("error")
        else:
            cell = read_cell(target, job_dir.name)
            if cell.state == "missing" and status.get("status") == "failed":
                cell.state, cell.error = "failed", status.get("error")
        cell.overrides = list(overrides)
        if status.get("status") == "dry-run":
            cell.notes.append("dry run: nothing was run")
        cells.append(cell)

    planned = _read_plan(sweep_dir)
    if planned is not None:  # the sweeper's own plan: a cell is missing when its identity is
        baselines = {entry["identity"] for entry in planned if entry.get("baseline")}
        for cell in cells:
            cell.planned_baseline = cell.identity in baselines
        known = {c.identity for c in cells if c.identity}
        for entry in planned:
            if entry["identity"] not in known:
                known.add(entry["identity"])
                cells.append(ReportCell(identity=entry["identity"], dir=None, state="missing",
                                        overrides=list(entry["overrides"]), planned_baseline=bool(entry.get("baseline")),
                                        notes=[("expected by the sweep; no job folder and not skipped as done "
                                                "(not started yet, or its job never ran)")]))
    elif plan is not None:
        for overrides in plan:
            key = plan_key(overrides)
            if key not in seen_plans:
                seen_plans.add(key)
                cells.append(ReportCell(identity=None, dir=None, state="missing", overrides=list(overrides),
                                        notes=[("expected by the sweep; no job folder and not skipped as done "
                                                "(not started yet, or its job never ran)")]))
    if not cells:
        notes.append(f"{sweep_dir}: no cells found")
    return cells, notes


def _read_plan(sweep_dir: Path) -> list[dict] | None:
    path = sweep_dir / PLAN_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError) as err:
        log.warning("unreadable %s: %s", path, err)
        return None


def merge_cells(cells: list[ReportCell]) -> list[ReportCell]:
    """One entry per identity (a cell in two sweeps, or twice in one): jobs merged."""
    merged: dict[str, ReportCell] = {}
    for cell in cells:
        existing = merged.get(cell.key)
        if existing is None:
            merged[cell.key] = cell
        else:
            existing.jobs.extend(j for j in cell.jobs if j not in existing.jobs)
    return list(merged.values())


def sweep_group(sweep_dir: Path) -> str:
    """The sweep's W&B group, as ``outro_sweep.cell.tracking.wandb_group_and_name`` names it."""
    return "sweep-" + "_".join(Path(sweep_dir).resolve().parts[-2:])


# ----------------------------------------------------------------------------- the shared store


class Store:
    """``<output_dir>/cells/*/``: every cell of every sweep, read lazily (DONE ones only)."""

    def __init__(self, output_dirs: list[Path]) -> None:
        self.output_dirs = []
        for path in output_dirs:
            path = Path(os.path.realpath(path))
            if path not in self.output_dirs and (path / "cells").is_dir():
                self.output_dirs.append(path)
        self._done: list[ReportCell] | None = None

    def done_cells(self) -> list[ReportCell]:
        if self._done is None:
            self._done = []
            for root in self.output_dirs:
                for cell_dir in sorted((root / "cells").iterdir()):
                    if (cell_dir / "DONE").is_file() and (cell_dir / "config.yaml").is_file():
                        cell = read_cell(cell_dir, "store")
                        cell.from_store = True
                        if cell.config is not None and cell.state == "done":
                            self._done.append(cell)
        return self._done
