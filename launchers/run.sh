#!/usr/bin/env bash
# Install on first use, then run outro_sweep: `bash launchers/run.sh [-m] [key=value ...]`.
# With no arguments: the smallest meaningful comparison. OutRo with the paper's settings against
# the stock model (its baseline, added by the sweep) on SmolLM2-135M-Instruct (offline), on the
# 300 built-in stories (benchmark=builtin_story: "Mary went to the kitchen. ... Where is Mary?",
# answerable from the prompt's own context), each option scored by its log-likelihood (cloze);
# it ends with the report's verdict line (paired difference, Newcombe interval, McNemar p, and
# whether both cells are above chance).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/launchers/setup.sh"
cd "$repo"
if [ "$#" -eq 0 ]; then
  set -- -m benchmark=builtin_story
fi
exec "${OUTRO_SWEEP_VENV:-$repo/.venv}/bin/python" -m outro_sweep "$@"
