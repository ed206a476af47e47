#!/usr/bin/env bash
# Set up (once) and open the sftviz course in JupyterLab, offline, on the bundled model.
# Usage: bash scripts/course.sh [extra jupyter lab arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SFTVIZ_VENV:-.venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[sftviz] creating the virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
echo "[sftviz] installing sftviz with the course dependencies"
"$VENV/bin/python" -m pip install --quiet -e ".[course]"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
extra=()
if [ "$(id -u)" = "0" ]; then extra+=(--allow-root); fi
echo "[sftviz] starting JupyterLab on notebooks/ (Ctrl-C to stop)"
exec "$VENV/bin/python" -m jupyterlab --notebook-dir=notebooks "${extra[@]}" "$@"
