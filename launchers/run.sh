#!/usr/bin/env bash
# Install on first use, then run outro_sweep: `bash launchers/run.sh [-m] [key=value ...]`.
# With no arguments: the smallest meaningful comparison. OutRo with the paper's settings against
# the stock model (its baseline, added by the sweep) on SmolLM2-135M-Instruct (offline), all 300
# built-in questions, each answered by the option letter with the highest next-token logit (one
# forward per question, and no unparseable answers); it ends with the report's verdict line
# (paired difference, Newcombe interval, McNemar p).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/launchers/setup.sh"
cd "$repo"
if [ "$#" -eq 0 ]; then
  set -- -m benchmark.scoring=logits
fi
exec "${OUTRO_SWEEP_VENV:-$repo/.venv}/bin/python" -m outro_sweep "$@"
