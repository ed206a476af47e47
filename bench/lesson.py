"""The lesson, measured: masking on and off (and a prompt-loss weight) from the same start.

Fine-tunes the bundled sftviz-tiny on the bundled `support` training split with completion-only loss,
full loss and a prompt-loss weight of 0.1, from the same weights, data order and seed, and reports
what the course claims:

* under full loss the prompt NLL falls; under completion-only loss it does not;
* the completion NLL falls under both;
* greedy exact match on the held-out `support` eval split rises well above the base model's.

    python bench/lesson.py                 # 150 steps at batch 16, writes its section of bench/RESULTS.md
    python bench/lesson.py --steps 300     # longer
"""

from __future__ import annotations

import argparse
import time

import _common as C

from sftviz.datasets import load_dataset
from sftviz.modeling import load_model
from sftviz.train import compare_masking


def mean(run, key, sl):
    vals = [r[key] for r in run.history[sl] if r[key] is not None]
    return sum(vals) / len(vals)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch RESULTS.md")
    a = ap.parse_args()
    info = C.machine()
    print(C.machine_line(info))
    model, tok = load_model(device="cpu")
    train, held = load_dataset("support", split="train"), load_dataset("support", split="eval")
    t0 = time.perf_counter()
    runs = compare_masking(
        model,
        tok,
        train,
        maskings=("completion", "full", 0.1),
        steps=a.steps,
        batch_size=a.batch_size,
        lr=a.lr,
        seed=a.seed,
        device="cpu",
        eval_data=held,
        eval_every=None,
        eval_examples=len(held),
        progress=False,
    )
    wall = time.perf_counter() - t0
    first, last = slice(0, 1), slice(-20, None)  # step 1 is measured before any update
    rows = []
    for m, run in runs.items():
        e0, e1 = run.evals[0], run.evals[-1]
        rows.append(
            [
                f"`{m!r}`" if isinstance(m, str) else f"weight {m:g}",
                f"{mean(run, 'prompt_nll', first):.2f} -> {mean(run, 'prompt_nll', last):.2f}",
                f"{mean(run, 'completion_nll', first):.2f} -> {mean(run, 'completion_nll', last):.2f}",
                f"{e0['marg_logprob_per_token']:.2f} -> {e1['marg_logprob_per_token']:.2f}",
                f"{e0['cond_logprob_per_token']:.2f} -> {e1['cond_logprob_per_token']:.2f}",
                f"{e0['exact_match']:.0%} -> {e1['exact_match']:.0%}",
                f"{mean(run, 'prompt_grad_share', slice(0, None)):.2f}",
                f"{run.timing['train']:.1f}",
            ]
        )
    c, f = runs["completion"], runs["full"]
    checks = [
        ("prompt NLL falls under full loss", mean(f, "prompt_nll", last) < mean(f, "prompt_nll", first) - 2.0),
        (
            "prompt NLL does not fall under completion-only loss",
            mean(c, "prompt_nll", last) > mean(c, "prompt_nll", first) - 0.2,
        ),
        (
            "completion NLL falls under both (to under half)",
            all(mean(r, "completion_nll", last) < 0.5 * mean(r, "completion_nll", first) for r in (c, f)),
        ),
        (
            "eval exact match rises by at least 20 points under both",
            all(r.evals[-1]["exact_match"] >= r.evals[0]["exact_match"] + 0.2 for r in (c, f)),
        ),
    ]
    samples = c.evals[-1]["samples"]
    lines = (
        [
            "## The lesson, measured (`python bench/lesson.py`)",
            "",
            f"Machine: {C.machine_line(info)}",
            "",
            f"sftviz-tiny fine-tuned on `support` (train, {len(train)} rows) for {a.steps} steps at batch {a.batch_size}, "
            f"AdamW lr {a.lr:g}, seed {a.seed}, from the same weights and data order under each masking "
            f"(`sv.compare_masking`). Train NLLs: step 1 (measured before the first update, i.e. the base model on the first batch) -> mean of the last 20 steps (nats per token, "
            f"measured on each batch whatever the masking). Eval: the held-out `support` eval split ({len(held)} rows, "
            "products never seen in fine-tuning), step 0 (the base model) -> the last step; exact match = greedy answer "
            "identical to the reference and ending with EOS, on all eval rows. Prompt grad share: mean of the measured "
            f"steps (0 by construction for completion-only). Wall time for all three runs: {wall:.1f} s.",
            "",
            C.table(
                [
                    "masking",
                    "train prompt NLL",
                    "train completion NLL",
                    "eval log Pr(x)/token",
                    "eval log Pr(y|x)/token",
                    "eval exact match",
                    "prompt grad share",
                    "train s",
                ],
                rows,
            ),
            "",
            "Checks (a subset of those in `tests/test_train.py::test_lesson_masking_on_and_off_from_the_same_start`, run with `pytest -m slow`):",
            "",
        ]
        + [f"- {name}: {'yes' if ok else 'NO'}" for name, ok in checks]
        + [
            "",
            "Completion-only answers after training (first three eval rows):",
            "",
            C.table(
                ["question", "reference", "generated"],
                [
                    [s["prompt"].split("Customer: ")[-1].split("\n")[0], repr(s["reference"]), repr(s["generated"])]
                    for s in samples
                ],
            ),
        ]
    )
    text = "\n".join(lines)
    print(text)
    if not a.no_write:
        C.write_section("lesson", text)
        print(f"\nwrote {C.RESULTS}")
    if not all(ok for _, ok in checks):
        raise SystemExit("some lesson checks failed")


if __name__ == "__main__":
    main()
