#!/usr/bin/env bash
# Rebuild the course notebooks from their text sources (notebooks/src/*.py, jupytext percent format,
# paired by notebooks/jupytext.toml), execute them top to bottom, and save them with outputs but
# without widget state (small files; progress bars dropped). First the repository's address from pyproject.toml goes into
# every source's Colab badge and setup cell (scripts/notebook_links.py); then `jupytext --sync`
# carries the source into the notebook (the newer of the pair wins, as in Jupyter with jupytext).
# Usage: bash scripts/build_notebooks.sh [NN]     e.g. `bash scripts/build_notebooks.sh 03` for one notebook
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SFTVIZ_VENV:-.venv}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# One torch thread, as scripts/test.sh runs nbval: a long fine-tune's float32 sums depend on how the
# work is split between threads, and after 150 steps that shows in the printed results.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
pattern="${1:-}"
"$VENV/bin/python" scripts/notebook_links.py
for src in notebooks/src/${pattern}*.py; do
  name="$(basename "$src" .py)"
  out="notebooks/$name.ipynb"
  "$VENV/bin/python" -m jupytext --quiet --sync "$src"
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
nb.metadata.pop("jupytext", None)  # the pairing lives in notebooks/jupytext.toml
nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
for cell in nb.cells:
    cell.metadata.pop("execution", None)
    # Progress bars (tqdm's widgets) show while a cell runs; saved without widget state they would show
    # nothing useful, so they are dropped. sftviz's own widgets keep their static HTML view.
    if cell.cell_type == "code":
        cell.outputs = [
            o for o in cell.outputs
            if not ("application/vnd.jupyter.widget-view+json" in o.get("data", {}) and "text/html" not in o.get("data", {}))
        ]
nbformat.write(nb, path)
PY
  echo "$out: executed in $(( (end - start) / 1000000 )) ms, $(stat -c %s "$out") bytes"
done
