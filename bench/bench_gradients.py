"""Gradient attribution time for a 64-token example on sftviz-tiny (``sftviz.gradients.token_gradients``).

References measured in the same run: one forward + backward pass of the masked loss (what training
costs per example), and the slow way to get per-target gradients: one backward pass per target token.
Prints ratios and writes the ``bench_gradients`` section of bench/RESULTS.md.

    python bench/bench_gradients.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import time

from _common import machine, machine_line, median, table, write_section


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    import torch

    import sftviz as sv
    from sftviz.gradients import token_gradients

    info = machine()
    model, tok = sv.load_model(device="cpu")
    row = sv.load_dataset("support")[0]
    # A long prompt cut from the left to fit exactly 64 tokens, with the row's short answer.
    ex = sv.build_example(tok, prompt=row["prompt"] + "\n" + row["prompt"], completion=row["completion"], max_length=64, warn=False)
    assert len(ex) == 64
    ids = torch.tensor([ex.input_ids])
    labels = torch.tensor([ex.labels])
    targets = [t for t, c in enumerate(ex.completion_mask) if c]

    def forward_backward():
        model.zero_grad()
        sv.sft_loss(model(input_ids=ids).logits, labels).backward()

    def per_target_loop():
        for t in targets:
            model.zero_grad()
            per = sv.token_nll(model(input_ids=ids).logits, ids)[0]
            per[t].backward()

    def attribution():
        token_gradients(model, tok, ex)

    timings = {}
    for name, fn in (("forward + backward (reference)", forward_backward), ("one backward per target (slow way)", per_target_loop),
                     ("token_gradients (masked + full, all targets)", attribution)):
        fn()
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - start)
        timings[name] = median(runs) * 1e3
    ref = timings["forward + backward (reference)"]
    rows = [[name, f"{ms:.1f}", f"{ms / ref:.1f}x"] for name, ms in timings.items()]
    body = (
        "## Gradient attribution (`python bench/bench_gradients.py`)\n\n"
        + machine_line(info)
        + f"\n\nOne example of {len(ex)} tokens ({len(targets)} completion targets) on sftviz-tiny, CPU; median of "
        f"{args.repeats} runs after one warm-up. `token_gradients` computes input-embedding gradients and every "
        "target's parameter-gradient norm under both the masked and the full loss (one forward pass, batched "
        "backward passes); the slow way covers the masked targets only.\n\n"
        + table(["what", "median ms", "x forward+backward"], rows)
        + "\n"
    )
    write_section("bench_gradients", body)
    print(body)


if __name__ == "__main__":
    main()
