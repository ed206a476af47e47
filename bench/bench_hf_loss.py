"""HF Trainer with the sftviz loss (sftviz.hf.SFTLossTrainer) against Trainer's own loss, same data.

Both train deep copies of one model on the same tokenized rows (``collate.tokenize``), with the same
``TrainingArguments`` (defaults but for the step count, batch size, CPU, no saving or logging) and the
same completion-only labels; one also with a prompt-loss weight of 0.1, which only the sftviz loss
can train. A method's time per step is the median step of a run (its first steps left out), best of
interleaved rounds. The ratio is Trainer's own loss time divided by SFTLossTrainer's (above 1: the
sftviz loss is faster).

    python bench/bench_hf_loss.py            # writes its section of bench/RESULTS.md
    python bench/bench_hf_loss.py --quick    # fewer steps, no RESULTS.md
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
import warnings

import _common as C
import torch

from sftviz.collate import SFTCollator
from sftviz.datasets import load_dataset
from sftviz.modeling import load_model


def step_clock():
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def __init__(self):
            self.ends = []

        def on_step_end(self, args, state, control, **kw):
            self.ends.append(time.perf_counter())

    return Clock()


def run(kind, model, tok, rows, steps, batch):
    """Step end times of one run: Trainer's own loss ("own") or SFTLossTrainer ("sftviz", "sftviz 0.1")."""
    from transformers import Trainer, TrainingArguments

    from sftviz.hf import SFTLossTrainer

    masking = 0.1 if kind == "sftviz 0.1" else "completion"
    collate = SFTCollator(tok, masking=masking)
    train = collate.tokenize(rows)
    clock = step_clock()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, max_steps=steps, per_device_train_batch_size=batch, use_cpu=True, save_strategy="no",
            report_to="none", disable_tqdm=True, seed=0, dataloader_pin_memory=False,
        )  # fmt: skip
        cls = Trainer if kind == "own" else SFTLossTrainer
        trainer = cls(model=model, args=args, train_dataset=train, data_collator=collate, callbacks=[clock])
        trainer.train()
    return clock.ends


KINDS = {
    "Trainer, its own loss (completion-only labels)": "own",
    "SFTLossTrainer, the sftviz loss (completion-only)": "sftviz",
    "SFTLossTrainer, prompt-loss weight 0.1": "sftviz 0.1",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps and rounds; do not write RESULTS.md")
    a = ap.parse_args()
    info = C.machine()
    print(C.machine_line(info))
    model, tok = load_model(device="cpu")
    rows = load_dataset("support", split="train")
    steps, batch, warmup, rounds = (15, 16, 3, 1) if a.quick else (40, 16, 5, 3)
    per = {name: [] for name in KINDS}
    for r in range(rounds):
        for name, kind in KINDS.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ends = run(kind, copy.deepcopy(model), tok, rows, steps, batch)
            steady = C.median([b - a for a, b in zip(ends[warmup - 1 :], ends[warmup:])])
            per[name].append(steady)
            print(f"  round {r + 1}: {name:52s} {steady * 1000:8.1f} ms/step", flush=True)
    best = {name: min(v) for name, v in per.items()}
    own = best["Trainer, its own loss (completion-only labels)"]
    table = C.table(
        ["method", "ms / step", "Trainer's own loss / this"],
        [[name, f"{t * 1000:.1f}", f"{own / t:.2f}x"] for name, t in best.items()],
    )
    ratio = own / best["SFTLossTrainer, the sftviz loss (completion-only)"]
    print(table)
    print(f"Trainer's own loss / the sftviz loss, same labels: {ratio:.2f}x")
    if a.quick:
        return
    body = "\n".join(
        [
            "## Trainer with the sftviz loss (`python bench/bench_hf_loss.py`)",
            "",
            f"Machine: {C.machine_line(info)}",
            "",
            f"sftviz-tiny, `support` train tokenized once, {steps} steps at batch {batch} ({warmup} warm-up steps left "
            f"out), best of {rounds} interleaved rounds, default `TrainingArguments` otherwise, CPU, fp32, torch threads: "
            f"{torch.get_num_threads()}. The last column is Trainer's own loss time per step divided by the row's "
            "(above 1: faster than Trainer's own loss).",
            "",
            table,
            "",
            f"Same labels: the sftviz loss costs {1 / ratio:.2f}x Trainer's own per step (ratio {ratio:.2f}x).",
        ]
    )
    C.write_section("bench_hf_loss", body)


if __name__ == "__main__":
    main()
