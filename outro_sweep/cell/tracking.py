"""One Weights & Biases run per sweep cell.

The cell owns the run (not Lightning's WandbLogger): the run must exist before the model
loads, and must be marked failed, not finished, when anything in the cell raises. Its run id
is the cell's identity, so a requeued, re-run or re-scored cell continues its own run.
Everything the run records (config, tags, name, group, summary, table) is masked
(``outro_sweep.files.masking``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from outro_sweep.cell.identity import defines_cell
from outro_sweep.files.masking import mask, mask_override, mask_text

log = logging.getLogger(__name__)

# Where W&B writes outside a run's own folder unless told otherwise (wandb 0.31): wandb-core's
# ``logs/core-debug-*.log`` and the artifact cache (WANDB_CACHE_DIR, default ~/.cache/wandb),
# artifact staging (WANDB_DATA_DIR, default ~/.local/share/wandb) and downloaded artifacts
# (WANDB_ARTIFACT_DIR, default ./artifacts). Each goes to ``<output folder>/wandb/<name>``.
# WANDB_CONFIG_DIR (~/.config/wandb) is left alone: it holds the user's own W&B settings
# (``wandb login --host``), which a run reads and does not write.
WANDB_FOLDERS = {"WANDB_CACHE_DIR": "cache", "WANDB_DATA_DIR": "data", "WANDB_ARTIFACT_DIR": "artifacts"}


def _flatten(prefix: str, value, out: dict) -> dict:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}/{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value
    return out


def wandb_group_and_name() -> tuple[str, str]:
    """(W&B group, W&B name): the sweep this cell belongs to and the cell's own overrides,
    credentials masked."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        group = "sweep-" + "_".join(Path(hydra_cfg.sweep.dir).parts[-2:])
    else:
        group = "run-" + "_".join(Path(hydra_cfg.runtime.output_dir).parts[-2:])
    overrides = [mask_override(o) for o in hydra_cfg.overrides.task if defines_cell(o.split("=", 1)[0])]
    return mask_text(group), ",".join(overrides) or "defaults"


def keep_wandb_files_under(output_dir: str | os.PathLike) -> None:
    """Point W&B's own folders (``WANDB_FOLDERS``) under ``<output_dir>/wandb/``, unless a WANDB_*
    variable already names them (the user's, or an earlier run's of this process). Called before
    ``wandb.init``: the W&B service started by a process's first run reads them once, so a later
    change would only make W&B warn that it ignores it."""
    for variable, name in WANDB_FOLDERS.items():
        os.environ.setdefault(variable, os.path.join(os.path.abspath(output_dir), "wandb", name))


def cell_output_dir(cell_dir: Path) -> Path:
    """``paths.output_dir`` of a cell folder (``<output_dir>/cells/<identity>``, CellStore)."""
    return Path(cell_dir).parent.parent


def open_cell_run(logger, config: dict, directory: Path) -> "CellRun | None":
    """The cell's run (``logger``: the ``logger`` config node; ``config``: what the run records,
    ``identity`` included), or None with ``logger.mode=disabled``."""
    if logger.mode == "disabled":
        return None
    group, name = wandb_group_and_name()
    keep_wandb_files_under(cell_output_dir(directory))
    return CellRun(mode=logger.mode, project=logger.project, entity=logger.entity, group=group, name=name,
                   config=config, directory=directory, tags=logger.tags, run_id=config["identity"],
                   api_key=logger.get("api_key"))


def update_summary(config: dict, directory: Path, metrics: dict) -> bool:
    """Replace the metrics in the summary of the cell's existing run (re-scoring); reopens it
    by its id, in the mode the cell used. False (nothing done) when the cell logged nothing."""
    logger = config.get("logger") or {}
    if logger.get("mode", "disabled") == "disabled":
        return False
    import wandb

    keep_wandb_files_under(cell_output_dir(directory))
    use_own_wandb_service()
    run = wandb.init(id=config["identity"], resume="allow", project=logger.get("project"),
                     entity=logger.get("entity"), dir=str(directory), mode=logger["mode"], reinit="finish_previous",
                     settings=run_settings(logger.get("api_key")))
    run.summary.update(mask(_flatten("", metrics, {})))
    run.finish(exit_code=0)
    return True


def run_settings(api_key: str | None):
    """W&B settings of a cell's run: no code or system-stats capture, no console mirroring;
    ``api_key`` (``logger.api_key``) authenticates online runs, None leaves it to W&B
    (``WANDB_API_KEY`` or ~/.netrc)."""
    import wandb

    extra = {"api_key": str(api_key)} if api_key is not None else {}
    return wandb.Settings(save_code=False, x_disable_stats=True, console="off", quiet=True, **extra)


class CellRun:
    """Start with ``CellRun(...)``; end with ``finish(metrics, records)`` or ``fail()``."""

    def __init__(self, *, mode: str, project: str, entity: str | None, group: str, name: str,
                 config: dict, directory: Path, tags: list[str], run_id: str | None = None,
                 api_key: str | None = None) -> None:
        import wandb

        self._wandb = wandb
        arguments = dict(
            # A stable id (the cell's identity) with resume="allow": a requeued or re-run cell
            # continues its own run instead of starting a second one.
            id=run_id,
            resume="allow" if run_id else None,
            project=project,
            entity=entity,
            group=group,
            name=name,
            job_type="cell",
            tags=mask(list(tags)),
            config=mask(config),
            dir=str(directory),
            mode=mode,
            # A sweep runs many cells in one process: never log two cells into one run.
            reinit="finish_previous",
            settings=run_settings(api_key),
        )
        use_own_wandb_service()
        self.run = wandb.init(**arguments)
        if mode == "offline":
            log.info("W&B offline run in %s (upload later with `wandb sync`)", self.run.dir)

    def finish(self, metrics: dict, records: list[dict] | None) -> None:
        self.run.summary.update(mask(_flatten("", metrics, {})))
        if records:
            columns = ["index", "id", "prompt_hash", "category", "output", "prediction", "target", "valid", "correct"]
            table = self._wandb.Table(columns=columns, data=mask([[r[c] for c in columns] for r in records]))
            self.run.log({"predictions": table})
        self.run.finish(exit_code=0)

    def fail(self) -> None:
        self.run.finish(exit_code=1)



def use_own_wandb_service() -> None:
    """Forget a W&B service this process inherited (``WANDB_SERVICE`` set by a parent: a
    notebook, a test runner, the process that submitted a SLURM array). A cell's run must live
    in a service its own process starts: a parent's service outlives a killed attempt and keeps
    that attempt's run id "in use", so the requeued attempt could not continue its run. The
    token is ``<version>-<pid of the process that started the service>-...``."""
    token = os.environ.get("WANDB_SERVICE")
    if token and token.split("-")[1:2] != [str(os.getpid())]:
        del os.environ["WANDB_SERVICE"]
