"""How long nbgrader takes to autograde a class of the whole course, with and without the run cache and
the warm kernel.

A course folder is laid out as an instructor would (``python -m sftviz.course nbgrader``, which also
builds notebook 5's graded case; ``nbgrader generate_assignment``). Then:

* reference: ``--reference`` complete submissions autograded with the run cache switched off
  (``SFTVIZ_RUN_CACHE=""``): every submission trains notebook 4's 21 runs and notebook 5's 5;
* the same with ordinary kernels: ``--reference`` complete submissions with the run cache but python3
  kernels instead of sftviz's warm kernel (``SFTVIZ_WARM_KERNEL=0``), each of which imports torch and
  transformers before the notebook's first line;
* the class: ``--students`` submissions (complete and unanswered, alternating) autograded with the cache
  that ``nbgrader_config.py`` sets, starting empty, and the run records sftviz ships behind it: on a
  machine like the one that made them, no submission trains notebooks 4 and 5; elsewhere the first
  complete submission trains them and the rest read.

It prints seconds per submission for both and their ratio, and the class's total against the target of
10 minutes for 30 submissions on 2 cores.

    python bench/bench_autograde.py                      # 30 students; writes its section of bench/RESULTS.md
    python bench/bench_autograde.py --students 6 --no-write
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C

ROOT = Path(__file__).resolve().parents[1]
TARGET_S, TARGET_STUDENTS = 600.0, 30


def sh(args: list[str], cwd: Path, env: dict) -> None:
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")


def submit(course: Path, student: str, complete: bool) -> None:
    dest = course / "submitted" / student / "sft-lab"
    shutil.copytree(course / "release" / "sft-lab", dest)
    if complete:
        for nb in (course / "source" / "sft-lab").glob("*.ipynb"):
            shutil.copyfile(nb, dest / nb.name)


def autograde(course: Path, students: list[str], env: dict) -> list[float]:
    """Seconds per student, one at a time, as `nbgrader autograde` does."""
    times = []
    for student in students:
        start = time.perf_counter()
        sh([sys.executable, "-m", "nbgrader", "autograde", "sft-lab", "--create", "--student", student], course, env)
        times.append(time.perf_counter() - start)
    return times


def autograde_in_parallel(course: Path, students: list[str], env: dict, jobs: int) -> float:
    """Seconds to autograde ``students`` with ``jobs`` processes of `nbgrader autograde --student` at a time
    (one gradebook; each process holds it only briefly, at its start and end)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(student: str) -> None:
        sh([sys.executable, "-m", "nbgrader", "autograde", "sft-lab", "--create", "--student", student], course, env)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, students))
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", type=int, default=TARGET_STUDENTS)
    ap.add_argument("--reference", type=int, default=1, help="submissions autograded without the cache")
    ap.add_argument("--jobs", type=int, default=2, help="then as many more submissions, this many at a time")
    ap.add_argument("--no-write", action="store_true", help="print only; do not update bench/RESULTS.md")
    args = ap.parse_args()
    info = C.machine()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    with tempfile.TemporaryDirectory() as tmp:
        course = Path(tmp) / "course"
        t0 = time.perf_counter()
        sh([sys.executable, "-m", "sftviz.course", "nbgrader", str(course), "--mystery-key", "bench"], ROOT, env)
        setup = time.perf_counter() - t0
        sh([sys.executable, "-m", "nbgrader", "generate_assignment", "sft-lab", "--force"], course, env)
        ref_students = [f"ref{i}" for i in range(args.reference)]
        class_students = [f"s{i:02d}" for i in range(args.students)]
        cold_students = [f"cold{i}" for i in range(args.reference)]
        for s in ref_students + cold_students:
            submit(course, s, complete=True)
        parallel_students = [f"p{i:02d}" for i in range(args.students if args.jobs > 1 else 0)]
        for i, s in enumerate(class_students):
            submit(course, s, complete=i % 2 == 0)
        for i, s in enumerate(parallel_students):
            submit(course, s, complete=i % 2 == 0)
        ref = C.median(autograde(course, ref_students, {**env, "SFTVIZ_RUN_CACHE": ""}))
        cold = C.median(autograde(course, cold_students, {**env, "SFTVIZ_WARM_KERNEL": "0"}))
        times = autograde(course, class_students, env)
        wall = autograde_in_parallel(course, parallel_students, env, args.jobs) if parallel_students else None
    total = sum(times)
    per = total / len(class_students)
    # After the first complete submission (which trains what the shipped records lack), complete and
    # unanswered ones alternate.
    complete = C.median(times[2::2]) if len(times) > 2 else float("nan")
    unanswered = C.median(times[1::2]) if len(times) > 1 else float("nan")
    # A class of 30 at these rates: the first complete one, 14 more complete ones and 15 unanswered ones.
    half = TARGET_STUDENTS // 2
    projected = times[0] + (half - 1) * complete + (TARGET_STUDENTS - half) * unanswered
    rows = [
        ["without the run cache (reference): complete", f"{ref:.0f}", "1.00x"],
        ["with the run cache, python3 kernels (SFTVIZ_WARM_KERNEL=0): complete", f"{cold:.0f}", f"{ref / cold:.2f}x"],
        [f"with the run cache: all {len(class_students)} students, mean", f"{per:.0f}", f"{ref / per:.2f}x"],
        ["with the run cache: the first complete one", f"{times[0]:.0f}", f"{ref / times[0]:.2f}x"],
        ["with the run cache: a later complete one (median)", f"{complete:.0f}", f"{ref / complete:.2f}x"],
        ["with the run cache: an unanswered one (median)", f"{unanswered:.0f}", f"{ref / unanswered:.2f}x"],
    ]
    parallel = ""
    if wall is not None:
        per_parallel = wall / len(parallel_students)
        rows.append(
            [f"{args.jobs} at a time (the same mix, after the cache is warm): wall time per submission",
             f"{per_parallel:.0f}", f"{ref / per_parallel:.2f}x"]
        )  # fmt: skip
        projected = min(projected, per_parallel * TARGET_STUDENTS)
        parallel = (
            f" {len(parallel_students)} more, {args.jobs} at a time (`nbgrader autograde --student` in "
            f"{args.jobs} processes), took {wall:.0f} s."
        )
    met = "met" if projected <= TARGET_S else "not met"
    body = (
        f"Machine: {C.machine_line(info)}\n\n"
        f"`nbgrader autograde` of all five notebooks per submission, one submission at a time, in sftviz's warm "
        f"kernel (`sftviz.warm_kernel`, what `nbgrader_config.py` sets) unless the row says otherwise. The course setup "
        f"(`python -m sftviz.course nbgrader`, which trains notebook 5's case) took {setup:.0f} s once.\n\n"
        + C.table(["autograding", "s / submission", "speed-up"], rows)
        + f"\n\n{len(class_students)} submissions took {total:.0f} s one at a time.{parallel} A class of "
        f"{TARGET_STUDENTS} at the better of these rates: {projected:.0f} s. Target: "
        f"{TARGET_S:.0f} s for {TARGET_STUDENTS} submissions on 2 cores ({met}).\n"
    )
    print(body)
    if not args.no_write:
        C.write_section("bench_autograde", "## Autograding a class (`python bench/bench_autograde.py`)\n\n" + body)


if __name__ == "__main__":
    main()
