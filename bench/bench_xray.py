"""How long ``python -m sftviz xray`` takes on 10,000 chat rows, per pipeline, against a 30 s target.

The rows are the bundled ``support-chat`` conversations without their system message (so SmolLM2's
template injects its own), each made unique by a number in its first message, repeated to
``--rows``. Each pipeline runs as a user runs it: a fresh ``python -m sftviz xray`` process
(imports and tokenizer load included), on SmolLM2's real tokenizer and chat template when the real
model is installed, else on sftviz-tiny's. Reference, in the same run: the same rows rendered and
tokenized by ``tok.apply_chat_template(tokenize=True)`` alone, in one process (what any pipeline
must at least do); ``vs tokenizing`` is the X-ray's time over that.

    python bench/bench_xray.py                 # writes its section of bench/RESULTS.md
    python bench/bench_xray.py --rows 2000 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C

TARGET_S, TARGET_ROWS = 30.0, 10_000
PIPELINES = ("sftviz", "trl", "hf-lm", "marker")


def make_rows(n: int) -> list[dict]:
    import sftviz as sv

    base = [[m for m in r["messages"] if m["role"] != "system"] for r in sv.load_dataset("support-chat")]
    rows = []
    for i in range(n):
        messages = [dict(m) for m in base[i % len(base)]]
        messages[0]["content"] += f" (ticket {i})"
        rows.append({"messages": messages})
    return rows


def reference(model: str, rows: list[dict]) -> float:
    code = (
        "import json, sys, time\nfrom sftviz.modeling import load_tokenizer\n"
        "t0 = time.perf_counter()\ntok = load_tokenizer(sys.argv[1])\n"
        "for line in open(sys.argv[2]):\n"
        "    tok.apply_chat_template(json.loads(line)['messages'], tokenize=True)\n"
        "print(time.perf_counter() - t0)\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, model, f.name], check=True, capture_output=True)
    os.unlink(f.name)
    return time.perf_counter() - t0


def one(model: str, data: Path, pipeline: str) -> float:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "sftviz", "xray", str(data), "--model", model, "--pipeline", pipeline,
                          "--rows", "0", "--fail-on", "never"], capture_output=True, text=True)  # fmt: skip
    if out.returncode:
        raise SystemExit(f"{pipeline} failed: {out.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=TARGET_ROWS)
    ap.add_argument("--model", default=None, help="default: smollm2-135m-instruct when installed, else sftviz-tiny")
    ap.add_argument("--no-write", action="store_true", help="print only; do not update bench/RESULTS.md")
    args = ap.parse_args()
    from sftviz import models

    model = args.model
    if model is None:
        try:
            models.converted_path(convert=False)
            model = "smollm2-135m-instruct"
        except ValueError:
            model = "sftviz-tiny"
    info = C.machine()
    rows = make_rows(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "chat.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        ref = reference(model, rows)
        results = [(p, one(model, data, p)) for p in PIPELINES]
    table = C.table(
        ["pipeline", "wall s", "rows/s", "vs tokenizing", "target"],
        [[p, f"{s:.1f}", f"{args.rows / s:.0f}", f"{s / ref:.1f}x", "met" if s <= TARGET_S * args.rows / TARGET_ROWS else "not met"]
         for p, s in results]
        + [["reference: apply_chat_template(tokenize=True) alone", f"{ref:.1f}", f"{args.rows / ref:.0f}", "1.0x", ""]],
    )  # fmt: skip
    body = (
        f"Machine: {C.machine_line(info)}\n\n"
        f"`python -m sftviz xray` on {args.rows} chat rows (3 exchanges each) with the `{model}` tokenizer, one fresh "
        "process per pipeline, imports and tokenizer load included; the policy (every assistant turn and its end of "
        "turn) is built in 2 forked processes. Target: "
        f"{TARGET_S:.0f} s for {TARGET_ROWS} rows on 2 cores.\n\n" + table + "\n"
    )
    print(body)
    if not args.no_write:
        C.write_section("bench_xray", "## The X-ray on 10,000 chat rows (`python bench/bench_xray.py`)\n\n" + body)


if __name__ == "__main__":
    main()
