"""Hydra's basic sweeper, minus the cells that are already done.

Before each batch goes to the launcher (local processes or a SLURM job array), every cell's
config is composed here, in the submitting process, exactly as the job will compose it; its
identity names its folder, and a cell whose folder holds DONE (digests verified) is left out of
the launch, as is a cell whose lock another process holds (listed in ``busy.json``). A
re-run of a finished sweep therefore submits nothing, and a re-run after a partial failure
submits only the missing cells. ``force=true`` and ``+dry_run=true`` launch every cell (the
cells themselves then recompute, or only list). The skipped cells are written to
``<sweep dir>/skipped.json`` for the sweep summary.

Before anything launches, every cell of the grid goes through its model-free checks
(``outro_sweep.preflight.checks.check_cell``, schemas included; one memo for the grid, so a
benchmark shared by 50 cells is read once; ``+dry_run=true``: the schemas only). One bad cell refuses the whole sweep: one
``error:`` line per distinct error, naming the cells that have it, exit status 2, and no cell
folder is created.

With ``baseline=true`` (the default) each cell with an intervention on brings its stock-model
baseline (``outro_sweep.cell.baseline``: same model, benchmark and settings, every intervention
off): since a baseline's identity ignores the interventions' knobs and the sink rule, the grid's
cells share ONE baseline, launched once.

The jobs go to the launcher ordered by group (``outro_sweep.group.key.group_key``: cells that
differ only in intervention settings), groups in the order the grid first names them, each
group's baseline first and its other cells in grid order: the basic launcher then runs a group's
cells back to back in its one process, and the local and SLURM launchers pack each group into
one task (``hydra.launcher.cells_per_task=group``, ``outro_sweep.sweep.group_task``).

A subclass of ``BasicSweeper`` rather than a new sweeper: the grid, batching and the job
numbering stay Hydra's own; only the launcher call is filtered.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # after Hydra's plugin scan: see sweep/__init__.py
from hydra.core.plugins import Plugins
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher as SubmititLocalLauncher
from omegaconf import OmegaConf, open_dict, read_write

from outro_sweep.cell.baseline import baseline_identity, baseline_overrides, is_baseline
from outro_sweep.cell.identity import identity_of
from outro_sweep.cell.job_names import swept_keys
from outro_sweep.cell.store import CellStore
from outro_sweep.cell.sweep_records import BUSY_FILE, PLAN_FILE, SKIPPED_FILE
from outro_sweep.config.command_line import CONF_DIR
from outro_sweep.config.compose import composition_error, job_config
from outro_sweep.errors import ConfigError
from outro_sweep.files.atomic import write_json_atomic
from outro_sweep.group.key import group_key
from outro_sweep.predict.distributed import launch_id
from outro_sweep.sweep.local_launch import launch_local
from outro_sweep.sweep.plugins import PLUGIN_MODULE
from outro_sweep.sweep.slurm_launcher import SlurmLauncher

log = logging.getLogger(__name__)


class SkipDoneSweeper(BasicSweeper):
    def __init__(self, max_batch_size: int | None, params: dict | None = None, swept: Sequence[str] = ()) -> None:
        # ``swept`` is an output, not a setting: ``give_swept_keys`` sets it for the jobs.
        super().__init__(max_batch_size=max_batch_size, params=params)

    def setup(self, *, hydra_context, task_function, config) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.launcher = _LaunchUnfinished(self.launcher, self)
        self.skipped: list[dict] = []
        self.busy: list[dict] = []
        self.planned: list[dict] = []
        self.group_keys: list[str] = []  # the group key of each job of the last plan(), in launch order

    def cell_config(self, overrides: Sequence[str]):
        """The job's config, composed here exactly as the job will compose it."""
        cfg = self.hydra_context.config_loader.load_sweep_config(master_config=self.config,
                                                                 sweep_overrides=list(overrides))
        with open_dict(cfg):
            del cfg["hydra"]  # the job's config has no hydra node either
        return cfg

    def checked_cells(self, job_overrides: list[list[str]]) -> list[tuple[list[str], object]]:
        """(overrides, job config) of every cell, each composed and checked; with any bad cell,
        one ``error:`` line per distinct error and exit status 2, before anything launches."""
        # Deferred on purpose: the cell checks import torch, and the sweep's summary imports this module.
        from outro_sweep.preflight.checks import check_before_launch

        memo: dict = {}
        cells, errors = [], {}
        for overrides in job_overrides:
            try:
                full = self.hydra_context.config_loader.load_sweep_config(master_config=self.config,
                                                                          sweep_overrides=list(overrides))
            except Exception as err:  # noqa: BLE001 - a composition error, as one line
                errors.setdefault(composition_error(err, overrides, CONF_DIR), []).append(overrides)
                continue
            cfg = job_config(full)
            try:
                check_before_launch(cfg, memo, choices=dict(full.hydra.runtime.choices))
            except ConfigError as err:
                errors.setdefault(str(err), []).append(overrides)
                continue
            except Exception as err:  # noqa: BLE001 - the check itself broke: still refuse the sweep
                errors.setdefault(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                                  []).append(overrides)
                continue
            cells.append((overrides, cfg))
        if errors:
            for line in refusal_lines(errors, job_overrides):
                print(line, file=sys.stderr, flush=True)
            raise SystemExit(2)  # not an exception: Hydra would print it with a traceback
        return cells

    def store_of(self, cfg) -> CellStore:
        return CellStore(cfg.paths.output_dir, identity_of(cfg))

    def plan(self, job_overrides: Sequence[Sequence[str]]) -> list[list[str]]:
        """The jobs to launch: each distinct cell once (cells that differ only in settings that
        cannot change results are one cell), every cell's baseline (every intervention off)
        added once (``baseline=true``), and cells that are done left out (unless forced); in
        group order (``by_group``), their group keys in ``self.group_keys``."""
        jobs: list[tuple[list[str], str, bool]] = []  # (overrides, group key, is a baseline)
        seen: set[str] = set()
        with_baselines = []  # (overrides, composed config, added as a baseline)
        baselines: set[str] = set()  # identities of the baselines composed so far
        for overrides, cfg in self.checked_cells([list(o) for o in job_overrides]):
            with_baselines.append((overrides, cfg, False))
            config = OmegaConf.to_container(cfg, resolve=True)
            if cfg.get("baseline", False) and not is_baseline(config):
                if baseline_identity(config) in baselines:  # the grid's cells share one: composed once
                    continue
                baselines.add(baseline_identity(config))
                added = baseline_overrides(overrides, config)
                added_cfg = self.cell_config(added)
                composed = identity_of(added_cfg)
                if composed != baseline_identity(config):  # the overrides must compose exactly that cell
                    raise RuntimeError(f"the baseline of {' '.join(overrides) or 'defaults'} composed to cell "
                                       f"{composed}, not {baseline_identity(config)}")
                with_baselines.append((added, added_cfg, True))
        launch = launch_id()  # the processes of one multi-process launch each plan the same sweep
        for overrides, cfg, added_as_baseline in with_baselines:
            store = self.store_of(cfg)
            if store.identity in seen:
                if not added_as_baseline:  # e.g. only predict.num_workers differs: one cell, run once
                    print(f"same cell {store.identity} as an earlier job: not launching {' '.join(overrides)}",
                          flush=True)
                continue
            seen.add(store.identity)
            config = OmegaConf.to_container(cfg, resolve=True)
            key = group_key(config)
            self.planned.append({"identity": store.identity, "overrides": list(overrides),
                                 "baseline": added_as_baseline, "group": key})
            if not (cfg.get("force", False) or cfg.get("dry_run", False)) and store.state() == "done":
                self.record_skip(store, overrides)
                continue
            holder = None if cfg.get("dry_run", False) else store.holder()
            if holder is not None and launch is not None and holder.get("launch") == launch:
                holder = None  # rank 0 of this very launch (torchrun, srun) has started it: join it
            if holder is not None:  # running elsewhere (another sweep, an orphan): never beside it
                print(store.busy_line(holder), flush=True)
                self.busy.append({"identity": store.identity, "overrides": list(overrides), "cell": str(store.dir),
                                  "holder": holder})
                self.write(BUSY_FILE, self.busy)
                continue
            jobs.append((overrides, key, is_baseline(config)))
        self.write(PLAN_FILE, self.planned)
        grid = [job for batch in (self.overrides or []) for job in batch]
        self.give_swept_keys(swept_keys([*grid, *(overrides for overrides, _, _ in with_baselines)]))
        ordered = by_group(jobs)
        self.group_keys = [key for _, key, _ in ordered]
        return [overrides for overrides, _, _ in ordered]

    def give_swept_keys(self, keys: Sequence[str]) -> None:
        """Every job's config gets ``hydra.sweeper.swept``: the keys its folder name keeps whole
        (``outro_sweep.cell.job_names``). Each job's config is composed from the submitting
        process's ``hydra.overrides.hydra`` plus the job's own overrides (Hydra's
        ``load_sweep_config``), so the keys go there and the cells' own overrides stay as planned."""
        line = "hydra.sweeper.swept=[" + ",".join(f"'{key}'" for key in keys) + "]"
        overrides = self.config.hydra.overrides
        with read_write(overrides), open_dict(overrides):
            overrides.hydra = [o for o in overrides.hydra if not str(o).startswith("hydra.sweeper.swept=")] + [line]

    def record_skip(self, store: CellStore, overrides: Sequence[str]) -> None:
        print(f"skip {store.identity}: {store.describe()} -> {store.dir}", flush=True)
        self.skipped.append({"identity": store.identity, "overrides": list(overrides), "cell": str(store.dir)})
        self.write(SKIPPED_FILE, self.skipped)

    def write(self, name: str, entries: list[dict]) -> None:
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(sweep_dir / name, entries)


def by_group(jobs: Sequence[tuple[list[str], str, bool]]) -> list[tuple[list[str], str, bool]]:
    """``jobs`` (overrides, group key, is a baseline) with each group's jobs consecutive: groups in
    order of their first job, the baseline first within its group, the rest in their order."""
    first: dict[str, int] = {}
    for position, (_, key, _) in enumerate(jobs):
        first.setdefault(key, position)
    order = sorted(range(len(jobs)), key=lambda i: (first[jobs[i][1]], not jobs[i][2], i))
    return [jobs[i] for i in order]


def refusal_lines(errors: dict[str, list[list[str]]], all_cells: list[list[str]], shown: int = 5) -> list[str]:
    """One ``error:`` line per distinct error, naming the cells that have it by the overrides
    that tell them apart (those every cell shares are left out)."""
    shared = set.intersection(*(set(cell) for cell in all_cells)) if len(all_cells) > 1 else set()
    lines = []
    for message, cells in errors.items():
        names = [" ".join(o for o in cell if o not in shared) or "defaults" for cell in cells]
        more = f" and {len(names) - shown} more" if len(names) > shown else ""
        which = (f"all {len(all_cells)} cells" if len(cells) == len(all_cells) > 1
                 else "; ".join(names[:shown]) + more)
        lines.append(f"error: {message} (cells: {which}; the sweep launched nothing)")
    return lines


class _LaunchUnfinished:
    """Wraps the configured launcher: ``launch`` gets only the cells that are not done, in group
    order, and the submitit launchers also get each job's group key (to pack a group into one
    task). The local submitit launcher's own wait orphans its cells on Ctrl-C and crashes when
    one cell process is killed, so its jobs are submitted and waited for by ``launch_local``
    instead."""

    def __init__(self, launcher, sweeper: SkipDoneSweeper) -> None:
        self.launcher = launcher
        self.sweeper = sweeper

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        todo = self.sweeper.plan(job_overrides)
        if not todo:  # nothing to submit (an empty job array is an error for submitit)
            return []
        keys = self.sweeper.group_keys
        if isinstance(self.launcher, SubmititLocalLauncher):  # the plugin's own or outro_local
            return launch_local(self.launcher, todo, initial_job_idx, keys)
        if isinstance(self.launcher, SlurmLauncher):
            return self.launcher.launch(todo, initial_job_idx=initial_job_idx, keys=keys)
        return self.launcher.launch(todo, initial_job_idx=initial_job_idx)

    def __getattr__(self, name: str):
        return getattr(self.launcher, name)


def register_plugin() -> None:
    """Make ``hydra/sweeper=skip_done`` instantiable: called by the CLI before Hydra starts."""
    import sys

    SkipDoneSweeper.__module__ = PLUGIN_MODULE
    sys.modules.setdefault(PLUGIN_MODULE, sys.modules[__name__])  # so that _target_ imports it
    Plugins.instance().register(SkipDoneSweeper)
