#!/usr/bin/env bash
# Example: a 2x2 OutRo sweep run as one local process for its one group of cells (hydra/launcher=local).
# Re-running the same command skips finished cells; `+dry_run=true` lists the cells first.
#   bash launchers/sweep_local.sh [more overrides ...]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec bash "$repo/launchers/run.sh" -m hydra/launcher=local \
    outro.layer=1,2 outro.alpha=0.1,0.3 benchmark.limit=50 "$@"
