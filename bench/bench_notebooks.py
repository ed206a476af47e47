"""How long each course notebook takes to run top to bottom, as a student's "Run All" would.

Each notebook is executed with ``jupyter nbconvert --execute`` into a temporary folder (the committed
notebook is not touched), from kernel start to the last cell, once with torch's default threads (all
cores: what a student gets) and once with one thread (what ``scripts/build_notebooks.sh`` and the nbval
jobs of ``scripts/test.sh`` use). The targets: notebook 4, the course's central experiment, within 60 s
on 2 idle cores; every other notebook within 90 s.

    python bench/bench_notebooks.py             # writes its section of bench/RESULTS.md
    python bench/bench_notebooks.py --only 04   # one notebook, no RESULTS.md
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
TARGETS = {"04": 60.0}  # seconds, on 2 idle cores with the default threads
DEFAULT_TARGET = 90.0


def run(path: Path, threads: int | None) -> float:
    """Seconds to execute ``path`` in a fresh kernel; raises with the log's tail if a cell fails."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("OMP_NUM_THREADS", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory() as out:
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
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
