"""Packed vs padded training throughput on the bundled datasets (support, explain, support-chat), same examples,
same model, same run.

An epoch over a dataset's training rows is cut into steps of about the same number of real tokens:
padded (``sv.SFTCollator``: each example its own row, padded to the longest of its batch) and packed
(``sv.SFTCollator(packing="boundaries", max_length=256)``: the same batch's examples end to end in rows,
attention kept inside each example). Both run forward, backward and an AdamW step on copies of
sftviz-tiny. Reported: the share of padding in the padded batches, real (non-pad) tokens per second of
each, and their ratio; and the ceiling, ``slots / real tokens`` of the padded batches: the most any layout can
gain by dropping padding alone, at the same cost per token. Goal: packed at least 1.5x padded on the
dataset with the most padding.

    python bench/bench_packing.py              # writes its section of bench/RESULTS.md
    python bench/bench_packing.py --no-write
    python bench/bench_packing.py --device cuda --model smollm2-135m-instruct   # its own section

On a GPU the steps run under bf16 autocast, as ``sv.finetune`` trains there, and the clock waits for the
GPU (``torch.cuda.synchronize``) before it is read.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time

import _common as C
import torch

import sftviz as sv
from sftviz.data import to_example

GOAL = 1.5


def step_batches(collate, rows, batch_rows):
    return [collate(rows[i : i + batch_rows]) for i in range(0, len(rows), batch_rows)]


def run(model, batches, rounds):
    """Best-of-``rounds`` seconds for one pass of training steps over ``batches`` (after one warm-up step)."""
    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
    batches = [{k: v.to(device) for k, v in b.items() if isinstance(v, torch.Tensor)} for b in batches]
    best = float("inf")
    for _ in range(rounds):
        m = copy.deepcopy(model).train()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
        for i, b in enumerate(batches[:1] + batches):
            if i == 1:
                if cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            inputs = {k: b[k] for k in ("input_ids", "attention_mask", "position_ids") if k in b}
            with amp():
                logits = m(**inputs).logits
            loss = sv.sft_loss(logits.float(), b["labels"])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16, help="examples per padded batch")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--row-length", type=int, default=256, help="tokens per packed row (at least the longest example)")
    ap.add_argument("--model", default="sftviz-tiny", help="default: sftviz-tiny (any name sv.load_model takes)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    ap.add_argument("--no-write", action="store_true", help="print only; do not update bench/RESULTS.md")
    args = ap.parse_args()
    info = C.machine()
    model, tok = sv.load_model(args.model, device=args.device)
    device = next(model.parameters()).device
    table = []
    for name in ("support", "explain", "support-chat"):
        rows = sv.load_dataset(name, split="train")
        lengths = [len(to_example(tok, r)) for r in rows]
        real = sum(lengths)
        padded = step_batches(sv.SFTCollator(tok), rows, args.batch)
        slots = sum(b["input_ids"].numel() for b in padded)
        length = max(max(lengths), args.row_length)
        packed = step_batches(sv.SFTCollator(tok, packing="boundaries", max_length=length), rows, args.batch)
        t_pad, t_pack = run(model, padded, args.rounds), run(model, packed, args.rounds)
        table.append([name, f"{len(rows)}", f"{100 * (1 - real / slots):.0f} %", f"{slots / real:.2f}x",
                      f"{real / t_pad:.0f}", f"{real / t_pack:.0f}", f"{t_pad / t_pack:.2f}x"])  # fmt: skip
    ratios = {r[0]: float(r[6][:-1]) for r in table}
    ceilings = {r[0]: float(r[3][:-1]) for r in table}
    most = max(table, key=lambda r: float(r[2][:-2]))[0]
    met = "met" if ratios[most] >= GOAL else "not met"
    body = (
        f"Machine: {C.machine_line(info)}\n\n"
        f"One epoch of training steps (forward, backward, AdamW) on {args.model}, "
        f"{'on the GPU under bf16 autocast' if device.type == 'cuda' else 'on the CPU'}, {args.batch} examples per padded "
        f"batch (padded to its longest); the packed run packs the same batch's examples into rows of "
        f"{args.row_length} tokens (best fit), attention inside each example (a dense 4-D mask). Best of "
        f"{args.rounds} rounds, each after one warm-up step.\n\n"
        + C.table(
            [
                "dataset",
                "rows",
                "padding (padded)",
                "ceiling",
                "tokens/s padded",
                "tokens/s packed",
                "packed vs padded",
            ],
            table,
        )
        + f"\n\nGoal: packed at least {GOAL}x padded on the dataset with the most padding ({most}): {ratios[most]:.2f}x, {met}."
        + (
            f" Removing its padding could gain at most {ceilings[most]:.2f}x, so no packing can meet it on these data."
            if ceilings[most] < GOAL
            else ""
        )
        + "\n"
    )
    print(body)
    if not args.no_write:
        default = args.model == "sftviz-tiny" and device.type == "cpu"
        name = "bench_packing" if default else f"bench_packing_{device.type}_{args.model}"
        command = "python bench/bench_packing.py" + ("" if default else f" --device {device.type} --model {args.model}")
        C.write_section(name, f"## Packed vs padded training (`{command}`)\n\n" + body)


if __name__ == "__main__":
    main()
