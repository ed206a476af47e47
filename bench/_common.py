"""Shared helpers for the benchmark scripts: the machine, timing, and writing bench/RESULTS.md.

Each script owns one section of RESULTS.md, between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``
markers, and rewrites only that section; the machine header is rewritten each time.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import statistics
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    import torch
    import transformers

    info = {
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "nproc": os.cpu_count(),
        "torch threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
    try:
        import trl

        info["trl"] = trl.__version__
    except ImportError:
        info["trl"] = "not installed"
    try:
        info["load average at start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        pass
    return info


def machine_line(info: dict) -> str:
    return "; ".join(f"{k}: {v}" for k, v in info.items())


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def table(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


HEADER = """# Benchmarks and measured figures

Written by the scripts in `bench/` (run by hand, not by pytest); every ratio compares against a
reference measured in the same run on the same machine. Each section names its script, the machine,
the load average when it started and the date; rerun a script to refresh its section (the other
sections stay as they are).

| script | section | what it measures |
|---|---|---|
| `bench/bench_train.py` | training throughput | sv.finetune vs bare PyTorch loop vs HF Trainer vs TRL SFTTrainer, sftviz-tiny and GPT-2-small-sized (`--real-model`: SmolLM2-135M-Instruct) |
| `bench/bench_head.py` | supervised-only head | step time and peak memory vs full logits at prompt fractions 0.25-0.9 (`--real-model`: at SmolLM2's 49,152-word vocabulary) |
| `bench/lesson.py` | the lesson | masking on/off/weighted from the same start: prompt NLL, completion NLL, exact match |
| `bench/faults_demo.py` | faults | what each injected bug does to the curves and answers |
| `bench/bench_views.py` | views | scoring + rendering one 64-token example, against a 50 ms target |
| `bench/bench_gradients.py` | gradient attribution | `token_gradients` on a 64-token example vs one backward pass per target |
| `bench/bench_hf_loss.py` | Trainer with the sftviz loss | `sftviz.hf.SFTLossTrainer` vs Trainer's own loss on the same tokenized rows |
| `bench/bench_batched.py` | runs batched | 9 runs as one vmapped computation vs 9 serial runs, same work, same losses |
| `bench/bench_notebooks.py` | notebooks | each course notebook run top to bottom, default threads and one thread, against its time target |
| `bench/bench_autograde.py` | autograding | nbgrader autograde of a class of the whole course, with the run cache vs without |
| `bench/bench_real_model.py` | the real model | `sv.load_model("smollm2-135m-instruct")` offline in a fresh process vs sftviz-tiny, against a 3 s target |
| `bench/bench_xray.py` | the X-ray | `python -m sftviz xray` on 10,000 chat rows per pipeline vs tokenizing them alone, against a 30 s target |
| `bench/bench_packing.py` | packing | training tokens/s of packed rows (`SFTCollator(packing="boundaries")`) vs padded batches on `support` and `explain`, against a 1.5x goal |
| `bench/bench_gpu.py` | notebook 4 on a GPU | notebook 4's experiment on both models: steps/s, peak memory, speed-up per step vs this machine's CPU |

Timing on a shared machine: wall-clock figures (the default) are what a learner sees on 2 cores, but
they move with other processes' load; `--threads 1 --clock cpu` measures process CPU time on one
thread, which other load barely affects, and writes its own `_1thread` section. Both are reported
where both were run.
"""


ORDER = (
    "bench_train",
    "bench_train_1thread",
    "bench_train_real",
    "bench_train_real_1thread",
    "bench_head",
    "bench_head_1thread",
    "bench_head_real",
    "bench_head_real_1thread",
    "lesson",
    "faults_demo",
    "bench_views",
    "bench_gradients",
    "bench_hf_loss",
    "bench_batched",
    "bench_notebooks",
    "bench_notebooks_real",
    "bench_autograde",
    "bench_real_model",
    "bench_gpu",
    "bench_xray",
    "bench_packing",
)
_SECTION = re.compile(r"<!-- ([\w.-]+):begin -->.*?<!-- \1:end -->", re.S)


def write_section(name: str, body: str) -> None:
    """Replace (or add) the section ``name`` of bench/RESULTS.md; keep the others; sections in ORDER first."""
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    sections = {m.group(1): m.group(0) for m in _SECTION.finditer(text)}
    sections[name] = f"<!-- {name}:begin -->\n{body.rstrip()}\n<!-- {name}:end -->"
    names = [n for n in ORDER if n in sections] + [n for n in sections if n not in ORDER]
    out = HEADER + "".join("\n" + sections[n] + "\n" for n in names)
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text(out, encoding="utf-8")
    os.replace(tmp, RESULTS)
