#!/usr/bin/env bash
# Set up (once) and run the whole sftviz test suite: unit tests, notebooks under nbval, browser tests.
# Usage: bash scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SFTVIZ_VENV:-.venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[sftviz] creating the virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
echo "[sftviz] installing sftviz with its test dependencies"
"$VENV/bin/python" -m pip install --quiet -e ".[test]"

echo "[sftviz] checking for Chromium (browser tests)"
bash scripts/install_browser.sh

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
targets=(tests)
nbargs=()
if compgen -G "notebooks/*.ipynb" > /dev/null; then
  targets+=(notebooks)
  nbargs=(--nbval --nbval-sanitize-with notebooks/sanitize.cfg --nbval-current-env)
fi
echo "[sftviz] running pytest on: ${targets[*]}"
"$VENV/bin/python" -m pytest "${targets[@]}" "${nbargs[@]}" "$@"
