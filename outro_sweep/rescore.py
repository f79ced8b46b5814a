"""``python -m outro_sweep.rescore <sweep dir | job dir | cell dir> [...]``: score finished
cells again from their raw predictions, without their model.

Every finished (DONE) cell found under the arguments is re-scored with today's scoring code
and its own settings (``config.yaml``: the benchmark's scoring, open-answer metric and
interventions): its ``predictions.jsonl`` and ``metrics.json`` are rewritten atomically (an
unchanged scorer leaves them byte for byte as they were), and its W&B run's summary is
updated (same run id, the cell's logger mode). The cell's model is never loaded. A cell
graded by the LLM judge (``judge=llm``) has its open answers judged again, which loads the
judge's model; other cells load no model at all.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from outro_sweep.cell.store import CellStore
from outro_sweep.cell.tracking import update_summary
from outro_sweep.errors import ConfigError, RunError
from outro_sweep.predict.shards import check_complete, read_shard_set
from outro_sweep.scoring.cell import score_cell


def find_cells(paths: list[Path]) -> list[Path]:
    """Cell folders under each path: a cell folder itself (it holds config.yaml), a job folder
    (its ``cell`` link), or a sweep folder (every job folder's ``cell`` link, and the cells its
    ``skipped.json`` lists). Each cell once, in the order found."""
    found: dict[Path, None] = {}
    for path in paths:
        path = Path(path)
        if not path.is_dir():
            raise ConfigError(f"{path} is not a folder: valid values are sweep, job or cell folders")
        candidates = [path] if (path / "config.yaml").is_file() else []
        candidates += [path / "cell"] + sorted(job / "cell" for job in path.iterdir() if job.is_dir())
        skipped = path / "skipped.json"
        if skipped.is_file():
            candidates += [Path(entry["cell"]) for entry in json.loads(skipped.read_text())]
        for cell in candidates:
            if (cell / "config.yaml").is_file():
                found.setdefault(cell.resolve(), None)
    return list(found)


def rescore_cell(cell_dir: Path) -> tuple[dict, dict, bool]:
    """Re-score one DONE cell; returns (metrics before, metrics after, whether metrics.json changed)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf


    config = OmegaConf.to_container(OmegaConf.load(cell_dir / "config.yaml"))
    old_text = (cell_dir / "metrics.json").read_text()
    before = json.loads(old_text)
    shard_set = read_shard_set(cell_dir / "shards")
    # One record per prompt: n questions, or every rotation of them in a circular cell.
    check_complete(shard_set, (before.get("circular") or {}).get("rotations", before["n"]), cell_dir / "shards")
    judge = instantiate(config["judge"]) if (config.get("judge") or {}).get("enabled") else None
    after, _ = score_cell(shard_set, config, cell_dir, judge, {"skipped_missing": before.get("skipped_missing", 0)})
    update_summary(config, cell_dir, after)  # before DONE, as a cell does
    store = store_of(cell_dir)
    if store.done_problem() is not None or (after["accuracy"], after["n"]) != (before["accuracy"], before["n"]):
        store.mark_done(after)  # DONE names the new files' digests and repeats the accuracy
    return before, after, (cell_dir / "metrics.json").read_text() != old_text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m outro_sweep.rescore",
        description="Re-score finished cells from their raw predictions without loading their model; "
                    "rewrites predictions.jsonl and metrics.json and updates each cell's W&B run summary. "
                    "Cells that used judge=llm are judged again, which loads the judge's own model.",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="sweep folders, job folders or cell folders")
    args = parser.parse_args(argv)
    try:
        cells = find_cells(args.paths)
        if not cells:
            raise ConfigError(f"no cell under {', '.join(map(str, args.paths))}: valid values are sweep, job or "
                              "cell folders")
        for cell_dir in cells:
            store = store_of(cell_dir)
            with store.lock():  # nothing else writes the cell meanwhile
                if store.state() != "done":  # DONE missing, or not matching its files (warned)
                    print(f"not done, not rescored: {cell_dir}", flush=True)
                    continue
                before, after, changed = rescore_cell(cell_dir)
            change = f"was {before['accuracy']:.4f}" if changed else "metrics unchanged"
            print(f"rescored {cell_dir.name}: accuracy {after['accuracy']:.4f} ({change}) -> {cell_dir}", flush=True)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def store_of(cell_dir: Path):
    store = CellStore(cell_dir.parent.parent, cell_dir.name)
    store.dir = cell_dir  # the folder as found, wherever it is
    return store


if __name__ == "__main__":
    from outro_sweep.files import masked_output

    masked_output.install()  # the console is an output: credentials masked, as in every command
    sys.exit(main())
