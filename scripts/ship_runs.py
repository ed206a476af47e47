"""Rebuild the run records that sftviz ships (``sftviz/assets/runs``): the course's own fine-tunes.

Notebooks 4, 5, 6 and 7 run top to bottom with their default parameters (notebook 6 on the real model,
which must be installed: ``python -m sftviz.models install``), with one thread, once per kind of CPU
kernels this machine can run: its own, the narrower AVX2 ones where its own are AVX-512 (what a CPU
without AVX-512 runs), and PyTorch's portable ones (``ATEN_CPU_CAPABILITY=default``, another CPU's
rounding), as many at a time as there are cores. Every run they train goes into a fresh run cache
(``SFTVIZ_RUN_CACHE``, the shipped records switched off), and those records replace the shipped ones,
with ``manifest.json`` saying where and with what they were made. :mod:`sftviz.train.cache` explains
when a record is used: only for the very run it records (same weights, data, settings, seed, kernels,
threads, code, versions).

Run it after a change to the code in ``sftviz.train.cache.CODE``, to notebook 4's, 5's, 6's or 7's parameters
or data, or to the pinned torch or transformers; ``tests/test_shipped_runs.py`` says when it is needed.
It takes about 7 minutes on 2 cores.

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
NOTEBOOKS = (
    "04_finetuning_masking_on_off.ipynb", "05_diagnose_a_faulty_finetune.ipynb", "06_on_a_real_model.ipynb",
    "07_packing_and_normalisation.ipynb",
)  # fmt: skip
# The kernels a CPU whose own are the key can also run, narrowest last (ATEN_CPU_CAPABILITY's values).
NARROWER = {"AVX512": ("avx2",)}

# Runs each notebook given after the folder they run in, one after the other, in a fresh kernel each.
EXECUTE = """
import sys, nbformat
from nbclient import NotebookClient
for path in sys.argv[2:]:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": sys.argv[1]}}).execute()
"""


def capability(kernels: str | None) -> str:
    """The kernels PyTorch uses with ``ATEN_CPU_CAPABILITY=kernels`` (None: this CPU's own)."""
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    if kernels:
        env["ATEN_CPU_CAPABILITY"] = kernels
    return subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        capture_output=True, text=True, check=True, env=env,
    ).stdout.strip()  # fmt: skip


def build(kernels: str | None, cache: Path) -> subprocess.Popen:
    env = dict(os.environ, SFTVIZ_RUN_CACHE=str(cache), SFTVIZ_SHIPPED_RUNS="0", OMP_NUM_THREADS="1")
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("SFTVIZ_RUN_CACHE_ONLY", None)
    env.pop("ATEN_CPU_CAPABILITY", None)
    if kernels:
        env["ATEN_CPU_CAPABILITY"] = kernels
    paths = [str(ROOT / "notebooks" / nb) for nb in NOTEBOOKS]
    return subprocess.Popen([sys.executable, "-c", EXECUTE, str(ROOT / "notebooks"), *paths], env=env)


def main() -> None:
    import torch
    import transformers

    import sftviz
    from sftviz.modeling import BUNDLED_MODELS
    from sftviz.models import REAL_MODELS, converted_path
    from sftviz.train.cache import SHIPPED, code_digest, cpu_name

    start = time.perf_counter()
    # The folders the models are read from (this machine's) become the names users load them by.
    folders = {str(BUNDLED_MODELS["sftviz-tiny"]): "sftviz-tiny"}
    for name in REAL_MODELS:
        try:
            folders[str(converted_path(name, convert=False))] = name
        except (FileNotFoundError, ModuleNotFoundError, ValueError) as err:
            raise SystemExit(f"notebook 6 needs {name}: {err}") from err
    native = capability(None)
    kinds = {native: None, **{capability(k): k for k in NARROWER.get(native, ())}, capability("default"): "default"}
    with tempfile.TemporaryDirectory() as tmp:
        caches = {kind: Path(tmp) / kind for kind in kinds}
        waiting, running, failed = list(kinds), {}, []
        while waiting or running:
            while waiting and len(running) < (os.cpu_count() or 1):
                kind = waiting.pop(0)
                running[kind] = build(kinds[kind], caches[kind])
                print(f"[ship_runs {time.perf_counter() - start:.0f}s] notebooks with the {kind} kernels", flush=True)
            time.sleep(2)
            for kind, job in list(running.items()):
                if job.poll() is not None:
                    del running[kind]
                    if job.returncode != 0:
                        failed.append(kind)
        if failed:
            raise SystemExit(f"the notebooks failed with the {', '.join(failed)} kernels: nothing was replaced.")
        if SHIPPED.exists():
            shutil.rmtree(SHIPPED)
        SHIPPED.mkdir(parents=True)
        n = 0
        for kind in kinds:
            for path in sorted(caches[kind].glob("*.json")):
                text = path.read_text(encoding="utf-8")
                for folder, name in folders.items():
                    text = text.replace(json.dumps(folder)[1:-1], name)
                (SHIPPED / path.name).write_text(text, encoding="utf-8")
                n += 1
    manifest = {
        "made_by": "python scripts/ship_runs.py",
        "date": time.strftime("%Y-%m-%d"),
        "notebooks": list(NOTEBOOKS),
        "cpu": cpu_name(),
        "cpu_kernels": list(kinds),
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
