"""Rebuild the run records that sftviz ships (``sftviz/assets/runs``): the course's own fine-tunes.

Notebooks 4 and 5 run top to bottom with their default parameters, with one thread, twice at the same
time: once with this CPU's own kernels and once with PyTorch's portable ones (``ATEN_CPU_CAPABILITY=default``,
another CPU's rounding). Every run they train goes into a fresh run cache (``SFTVIZ_RUN_CACHE``, the
shipped records switched off), and those records replace the shipped ones, with ``manifest.json``
saying where and with what they were made. :mod:`sftviz.train.cache` explains when a record is used:
only for the very run it records (same weights, data, settings, seed, kernels, threads, code, versions).

Run it after a change to the code in ``sftviz.train.cache.CODE``, to notebook 4's or 5's parameters or
data, or to the pinned torch or transformers; ``tests/test_shipped_runs.py`` says when it is needed.
It takes about 6 minutes on 2 cores.

    python scripts/ship_runs.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("04_finetuning_masking_on_off.ipynb", "05_diagnose_a_faulty_finetune.ipynb")
KERNELS = ("native", "default")

# Runs each notebook given after the folder they run in, one after the other, in a fresh kernel each.
EXECUTE = """
import sys, nbformat
from nbclient import NotebookClient
for path in sys.argv[2:]:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": sys.argv[1]}}).execute()
"""


def build(kernels: str, cache: Path) -> subprocess.Popen:
    env = dict(os.environ, SFTVIZ_RUN_CACHE=str(cache), SFTVIZ_SHIPPED_RUNS="0", OMP_NUM_THREADS="1")
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("SFTVIZ_RUN_CACHE_ONLY", None)
    if kernels == "default":
        env["ATEN_CPU_CAPABILITY"] = "default"
    else:
        env.pop("ATEN_CPU_CAPABILITY", None)
    paths = [str(ROOT / "notebooks" / nb) for nb in NOTEBOOKS]
    return subprocess.Popen([sys.executable, "-c", EXECUTE, str(ROOT / "notebooks"), *paths], env=env)


def main() -> None:
    import torch
    import transformers

    import sftviz
    from sftviz.modeling import BUNDLED_MODELS
    from sftviz.train.cache import SHIPPED, code_digest, cpu_name

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        caches = {k: Path(tmp) / k for k in KERNELS}
        jobs = {k: build(k, caches[k]) for k in KERNELS}
        failed = [k for k, job in jobs.items() if job.wait() != 0]
        if failed:
            raise SystemExit(f"notebooks 4 and 5 failed with the {', '.join(failed)} kernels: nothing was replaced.")
        if SHIPPED.exists():
            shutil.rmtree(SHIPPED)
        SHIPPED.mkdir(parents=True)
        n = 0
        bundled = str(BUNDLED_MODELS["sftviz-tiny"])
        for k in KERNELS:
            for path in sorted(caches[k].glob("*.json")):
                # The record names the folder the model was read from: this machine's, not the user's.
                text = path.read_text(encoding="utf-8").replace(json.dumps(bundled)[1:-1], "sftviz-tiny")
                (SHIPPED / path.name).write_text(text, encoding="utf-8")
                n += 1
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    native = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        capture_output=True, text=True, check=True, env=env,
    ).stdout.strip()  # fmt: skip
    manifest = {
        "made_by": "python scripts/ship_runs.py",
        "date": time.strftime("%Y-%m-%d"),
        "notebooks": list(NOTEBOOKS),
        "cpu": cpu_name(),
        "cpu_kernels": [native, "DEFAULT"],
        "cpu_threads": 1,
        "code": code_digest(),
        "versions": {
            "sftviz": sftviz.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "runs": n,
    }
    (SHIPPED / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    size = sum(p.stat().st_size for p in SHIPPED.iterdir())
    print(f"{n} run records ({size / 1e6:.1f} MB) in {SHIPPED} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
