#!/usr/bin/env bash
# Rebuild the course notebooks from their text sources (notebooks/src/*.py, jupytext percent format),
# execute them top to bottom, and save them with outputs but without widget state (small files).
# Usage: bash scripts/build_notebooks.sh [NN]     e.g. `bash scripts/build_notebooks.sh 03` for one notebook
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SFTVIZ_VENV:-.venv}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
pattern="${1:-}"
for src in notebooks/src/${pattern}*.py; do
  name="$(basename "$src" .py)"
  out="notebooks/$name.ipynb"
  "$VENV/bin/python" -m jupytext --quiet --to ipynb --output "$out" "$src"
  start=$(date +%s%N)
  log="$(mktemp)"
  if ! "$VENV/bin/python" -m jupyter nbconvert --to notebook --execute --inplace \
    --ExecutePreprocessor.timeout=900 --ExecutePreprocessor.store_widget_state=False "$out" > "$log" 2>&1; then
    tail -n 40 "$log"; rm -f "$log"; echo "FAILED: $out"; exit 1
  fi
  rm -f "$log"
  end=$(date +%s%N)
  "$VENV/bin/python" - "$out" <<'PY'
import sys, nbformat
path = sys.argv[1]
nb = nbformat.read(path, as_version=4)
nb.metadata.pop("widgets", None)
nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
for cell in nb.cells:
    cell.metadata.pop("execution", None)
nbformat.write(nb, path)
PY
  echo "$out: executed in $(( (end - start) / 1000000 )) ms, $(stat -c %s "$out") bytes"
done
