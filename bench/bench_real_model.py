"""Loading the real model (SmolLM2-135M-Instruct, sftviz.models) offline, against loading sftviz-tiny.

Each load runs in a fresh Python process with the hub switched off, as a student's kernel would: the
time of ``sv.load_model(name)`` only (after ``import sftviz``), as the process's first load and after a
load of sftviz-tiny (which leaves only the model's own work), the median of ``--repeat`` processes. The
converted copy must exist (``python -m sftviz.models install``); the one-time conversion's own time is
read from its manifest. Target: the real model's own load, once converted, under 3 s.

    python bench/bench_real_model.py            # writes its section of bench/RESULTS.md
    python bench/bench_real_model.py --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import _common as C

TARGET_S = 3.0
SCRIPT = """
import time, sys
import sftviz as sv
if sys.argv[2] == "warm":
    sv.load_model("sftviz-tiny", device="cpu")  # imports transformers' Auto classes and tokenizers
t = time.perf_counter()
sv.load_model(sys.argv[1], device="cpu")
print(time.perf_counter() - t)
"""


def load_time(name: str, warm: bool) -> float:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    args = [sys.executable, "-c", SCRIPT, name, "warm" if warm else "cold"]
    res = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise SystemExit(f"loading {name} failed:\n{res.stderr[-3000:]}")
    return float(res.stdout.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-write", action="store_true", help="print only; do not update bench/RESULTS.md")
    args = ap.parse_args()
    from sftviz import models

    folder = models.converted_path("smollm2-135m-instruct", convert=False)
    manifest = json.loads((folder / models.MANIFEST).read_text())
    info = C.machine()
    load_time("smollm2-135m-instruct", True)  # the first read after a conversion or a reboot fills the page cache
    t = {
        (name, warm): C.median([load_time(name, warm) for _ in range(args.repeat)])
        for name in ("sftviz-tiny", "smollm2-135m-instruct")
        for warm in (False, True)
    }
    real = t["smollm2-135m-instruct", True]
    met = "met" if real <= TARGET_S else "not met"
    rows = [
        [name, f"{t[name, False]:.2f}", f"{t[name, True]:.2f}", f"{t[name, True] / t['sftviz-tiny', True]:.1f}x"]
        for name in ("sftviz-tiny", "smollm2-135m-instruct")
    ]
    body = (
        f"Machine: {C.machine_line(info)}\n\n"
        f"`sv.load_model(name)` offline, in a fresh process after `import sftviz`, median of {args.repeat} processes: "
        "as the first load of the process (which also imports transformers' model and tokenizer classes), and "
        "after a load of sftviz-tiny (the model's own load; the reference is sftviz-tiny's).\n\n"
        + C.table(["model", "first load in the process, s", "model's own load, s", "vs sftviz-tiny"], rows)
        + f"\n\nThe one-time conversion ({manifest['package']}, transformers {manifest['transformers']}) took "
        f"{manifest['converted_in_s']:.0f} s when it ran. Target: the real model's own load, once converted, "
        f"under {TARGET_S:.0f} s ({met}).\n"
    )
    print(body)
    if not args.no_write:
        C.write_section("bench_real_model", "## Loading the real model (`python bench/bench_real_model.py`)\n\n" + body)


if __name__ == "__main__":
    main()
