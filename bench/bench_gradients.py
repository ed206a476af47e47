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
    ex = sv.build_example(
        tok, prompt=row["prompt"] + "\n" + row["prompt"], completion=row["completion"], max_length=64, warn=False
    )
    assert len(ex) == 64
    ids = torch.tensor([ex.input_ids])
    labels = torch.tensor([ex.labels])
    all_targets = list(range(1, len(ex)))
    comp_targets = [t for t, c in enumerate(ex.completion_mask) if c]

    def forward_backward():
        model.zero_grad()
        sv.sft_loss(model(input_ids=ids).logits, labels).backward()

    def loop(targets):
        def run():
            for t in targets:
                model.zero_grad()
                per = sv.token_nll(model(input_ids=ids).logits, ids)[0]
                per[t].backward()

        return run

    cases = (
        ("forward + backward of the masked loss (reference)", None, forward_backward),
        ("one forward + backward per target, all targets (slow way)", "slow_all", loop(all_targets)),
        ("token_gradients(targets='all')", "slow_all", lambda: token_gradients(model, tok, ex, targets="all")),
        ("one forward + backward per target, completion targets (slow way)", "slow_comp", loop(comp_targets)),
        ("token_gradients(targets='trained')", "slow_comp", lambda: token_gradients(model, tok, ex, targets="trained")),
        ("token_gradients(targets='none')", None, lambda: token_gradients(model, tok, ex, targets="none")),
    )
    timings = {}
    for name, _, fn in cases:
        fn()
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - start)
        timings[name] = median(runs) * 1e3
    ref = timings[cases[0][0]]
    slow = {"slow_all": timings[cases[1][0]], "slow_comp": timings[cases[3][0]]}
    rows = [
        [
            name,
            f"{timings[name]:.1f}",
            f"{timings[name] / ref:.1f}x",
            f"{slow[key] / timings[name]:.2f}x" if key and not name.startswith("one") else "",
        ]
        for name, key, _ in cases
    ]
    body = (
        "## Gradient attribution (`python bench/bench_gradients.py`)\n\n"
        + machine_line(info)
        + f"\n\nOne example of {len(ex)} tokens ({len(all_targets)} targets, {len(comp_targets)} of them completion "
        f"targets) on sftviz-tiny, CPU; median of {args.repeats} runs after one warm-up. Every `token_gradients` row also "
        "computes the input-embedding gradients, layer norms and cosine of both losses (one forward pass, two backward "
        "passes); the per-target norms come from batched backward passes (`is_grads_batched`, chunks of 16). "
        "`speed-up` compares it with the slow way for the same targets, measured in the same run.\n\n"
        + table(["what", "median ms", "x forward+backward", "speed-up vs slow way"], rows)
        + "\n"
    )
    write_section("bench_gradients", body)
    print(body)


if __name__ == "__main__":
    main()
