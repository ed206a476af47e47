"""How long each course notebook takes to run top to bottom, as a student's "Run All" would.

Each notebook is executed with ``jupyter nbconvert --execute`` into a temporary folder (the committed
notebook is not touched), from kernel start to the last cell, once with torch's default threads (all
cores: what a student gets) and once with one thread (what ``scripts/build_notebooks.sh`` and the nbval
jobs of ``scripts/test.sh`` use). The targets: notebook 4, the course's central experiment, and
notebook 7, the packing lesson, within 60 s on 2 idle cores; every other notebook within 90 s. Every
fine-tune is trained: the run records that sftviz ships, which notebooks 4 to 7 read on a machine like
the one that made them, are switched off.

    python bench/bench_notebooks.py             # writes its section of bench/RESULTS.md
    python bench/bench_notebooks.py --only 04   # one notebook, no RESULTS.md
    python bench/bench_notebooks.py --real-model  # notebooks 1-5 with MODEL_NAME = SmolLM2, and notebook 6

With ``--real-model`` (SmolLM2-135M-Instruct installed: ``python -m sftviz.models install``) every notebook is
timed on it with ``sftviz.models.QUICK_NOTEBOOK_PARAMETERS`` (what ``tests/test_real_model.py`` uses; notebook 6 as it is);
the targets do not apply (a real model is about 100 times the bundled one's work per token).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"04": 60.0, "07": 60.0}  # seconds, on 2 idle cores with the default threads
DEFAULT_TARGET = 90.0


REAL = "smollm2-135m-instruct"


def with_parameters(path: Path, params: dict, out: Path) -> Path:
    """A copy of ``path`` in ``out`` whose parameters cell ends with ``params`` (as papermill injects them)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "".join(f"\n{k} = {v!r}" for k, v in params.items())
    nbformat.write(nb, out / path.name)
    return out / path.name


def run(path: Path, threads: int | None, params: dict | None = None) -> float:
    """Seconds to execute ``path`` (with ``params`` set) in a fresh kernel; raises with the log's tail if a
    cell fails."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    # Every run trained, none read from a run cache or from the records sftviz ships (sftviz.train.cache).
    env.update(SFTVIZ_SHIPPED_RUNS="0", SFTVIZ_RUN_CACHE="off")
    env.pop("OMP_NUM_THREADS", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory() as out:
        if params:
            path = with_parameters(path, params, Path(out))
        cmd = [
            sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
            "--ExecutePreprocessor.timeout=900", "--output-dir", out, str(path),
        ]  # fmt: skip
        start = time.perf_counter()
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
        took = time.perf_counter() - start
    if res.returncode:
        raise RuntimeError(f"{path.name} failed:\n{res.stderr[-3000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="", help="run only the notebooks whose name starts with this")
    ap.add_argument("--real-model", action="store_true", help=f"time the notebooks that run on {REAL}")
    args = ap.parse_args()
    if args.real_model:
        return real_model()
    info = C.machine()
    paths = sorted((ROOT / "notebooks").glob(f"{args.only}*.ipynb"))
    if not paths:
        raise SystemExit(f"no notebook in notebooks/ starts with {args.only!r}")
    rows, verdicts = [], []
    for path in paths:
        key = path.name[:2]
        default, one = run(path, None), run(path, 1)
        target = TARGETS.get(key, DEFAULT_TARGET)
        met = default <= target
        print(f"{path.name}: {default:.0f} s (default threads), {one:.0f} s (1 thread); target {target:.0f} s")
        rows.append([f"`{path.stem}`", f"{default:.0f}", f"{one:.0f}", f"{target:.0f}", f"{default / target:.2f}"])
        verdicts.append(f"{path.stem}: {default:.0f} s of {target:.0f} s ({'met' if met else 'NOT met'})")
    if args.only:
        return
    body = f"""## The notebooks' run times (`python bench/bench_notebooks.py`)

Machine: {C.machine_line(info)}

`jupyter nbconvert --execute` of each committed notebook into a temporary folder, kernel start to last
cell, with torch's default threads (all cores, what a student gets) and with one thread (as
`scripts/build_notebooks.sh` and the nbval jobs run them). `time / target` uses the default-threads time.

{C.table(["notebook", "s, default threads", "s, 1 thread", "target s", "time / target"], rows)}

Targets (default threads, idle machine): {"; ".join(verdicts)}.
"""
    C.write_section("bench_notebooks", body)


def real_model() -> None:
    info = C.machine()
    rows = []
    from sftviz.models import QUICK_NOTEBOOK_PARAMETERS  # what tests/test_real_model.py runs them with

    for key, params in QUICK_NOTEBOOK_PARAMETERS.items():
        (path,) = (ROOT / "notebooks").glob(f"{key}_*.ipynb")
        params = params if key == "06" else {"MODEL_NAME": REAL, **params}
        default, one = run(path, None, params), run(path, 1, params)
        print(f"{path.name} on {REAL}: {default:.0f} s (default threads), {one:.0f} s (1 thread)")
        shown = ", ".join(f"`{k}={v!r}`" for k, v in params.items() if k != "MODEL_NAME") or "its own"
        rows.append([f"`{path.stem}`", shown, f"{default:.0f}", f"{one:.0f}"])
    body = f"""## The notebooks on the real model (`python bench/bench_notebooks.py --real-model`)

Machine: {C.machine_line(info)}

As above, with `MODEL_NAME = "{REAL}"` and `sftviz.models.QUICK_NOTEBOOK_PARAMETERS` (what `tests/test_real_model.py`
runs them with; notebook 6 runs on it by default). No target applies: the real model does about 100 times the
bundled one's work per token, so notebooks 4 and 5 run a few steps on one seed and a few held-out rows.

{C.table(["notebook", "parameters", "s, default threads", "s, 1 thread"], rows)}
"""
    C.write_section("bench_notebooks_real", body)


if __name__ == "__main__":
    main()
