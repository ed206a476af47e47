"""Supervised-only head vs full logits: step time and peak memory at several prompt fractions.

The supervised-only head applies the output projection (hidden -> vocabulary) only at positions whose
next token is trained. Under completion-only loss that is the completion's share of the sequence, so
the saving grows with the prompt fraction. Measured on a randomly initialised GPT-2-small-sized model
(12 layers, width 768, vocabulary 50257) with synthetic sequences of a fixed length, at prompt
fractions 0.25, 0.5, 0.75 and 0.9, three ways:

* loss only: ``sv.supervised_head_loss(...)`` vs ``sv.sft_loss(model(...).logits, ...)``, forward + backward;
* a whole ``sv.finetune`` step with ``head="supervised"`` vs ``head="full"`` (forward, backward, the
  per-step measurements, AdamW), completion-only loss;
* peak memory of the loss-only forward + backward, from the torch profiler's CPU allocation events
  (``profile_memory=True``: every allocation and free in time order; the peak of their running sum,
  relative to the start). tracemalloc cannot be used: it does not see tensor storage.

    python bench/bench_head.py             # writes its section of bench/RESULTS.md
    python bench/bench_head.py --quick     # fewer repeats, no RESULTS.md

Target (issue 4): at least 1.25x faster at prompt fraction 0.75 on the CPU.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import time

import _common as C
import torch

from sftviz.data import IGNORE_INDEX
from sftviz.loss import sft_loss, supervised_head_loss
from sftviz.train import finetune

FRACTIONS = (0.25, 0.5, 0.75, 0.9)
CLOCK = time.perf_counter  # --clock cpu: time.process_time


def synthetic(batch, length, fraction, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, min(vocab, 1000), (batch, length), generator=g)
    n_prompt = round(fraction * length)
    labels = ids.clone()
    labels[:, :n_prompt] = IGNORE_INDEX
    att = torch.ones_like(ids)
    return ids, labels, att, n_prompt


def loss_step(model, ids, labels, att, mode, backward=True):
    if mode == "supervised":
        loss = supervised_head_loss(model, ids, labels, att)
    else:
        loss = sft_loss(model(input_ids=ids, attention_mask=att).logits, labels)
    if backward:
        loss.backward()  # into existing gradient buffers (kept by zero_grad(set_to_none=False) outside the timings)
    return loss


def time_loss(model, ids, labels, att, reps):
    times = {"full": [], "supervised": []}
    loss_step(model, ids, labels, att, "full")  # warm-up (and allocates the gradient buffers)
    loss_step(model, ids, labels, att, "supervised")
    model.zero_grad(set_to_none=False)
    for _ in range(reps):
        for mode in times:  # interleaved, so background load hits both alike
            t0 = CLOCK()
            loss_step(model, ids, labels, att, mode)
            times[mode].append(CLOCK() - t0)
            model.zero_grad(set_to_none=False)
    return {m: C.median(v) for m, v in times.items()}


def peak_memory(model, ids, labels, att, mode, backward):
    """Peak bytes allocated during one forward (+ backward), from the profiler's CPU allocation events."""
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss = loss_step(model, ids, labels, att, mode, backward=backward)
        del loss
    model.zero_grad(set_to_none=False)
    events = prof.profiler.kineto_results.events()
    mem = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    cur = peak = 0
    for _, nbytes in mem:
        cur += nbytes
        peak = max(peak, cur)
    return peak


def time_finetune(model, tok, rows, steps, batch, head, measure_every=1):
    marks = []

    def clock(record, run):
        if record["kind"] == "train":
            marks.append(CLOCK())

    run = finetune(
        model,
        tok,
        rows,
        "completion",
        steps=steps,
        batch_size=batch,
        lr=1e-4,
        device="cpu",
        progress=False,
        head=head,
        seed=0,
        callbacks=[clock],
        measure_every=measure_every,
    )
    return C.median([b - a for a, b in itertools.pairwise(marks)]), run


class _Tok:
    """Just enough of a tokenizer for sv.finetune on pre-built examples."""

    def __init__(self, vocab):
        self.pad_token_id, self.eos_token_id, self.bos_token_id = 0, 2, 1
        self.name_or_path = "synthetic"
        self._n = vocab
        self.all_special_ids = [0, 1, 2]

    def __len__(self):
        return self._n

    def __call__(self, *a, **k):
        raise NotImplementedError

    def convert_ids_to_tokens(self, ids):
        return [str(i) for i in ids]

    def decode(self, ids, **k):
        return " ".join(map(str, ids))


def synthetic_examples(n, length, fraction, vocab, seed=0):
    from sftviz.data import Example

    g = torch.Generator().manual_seed(seed)
    n_prompt = round(fraction * length)
    out = []
    for _ in range(n):
        ids = torch.randint(3, min(vocab, 1000), (length,), generator=g).tolist()
        cmask = [0] * n_prompt + [1] * (length - n_prompt)
        pmask = [int(0 < t < n_prompt) for t in range(length)]
        labels = [i if c else IGNORE_INDEX for i, c in zip(ids, cmask)]
        out.append(
            Example(
                ids,
                labels,
                cmask,
                pmask,
                ["prompt"] * n_prompt + ["completion"] * (length - n_prompt),
                [""] * length,
                [float(c) for c in cmask],
                masking="completion",
            )
        )
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument(
        "--real-model",
        action="store_true",
        help="SmolLM2-135M-Instruct's real weights (vocabulary 49,152; python -m sftviz.models install) instead of "
        "the random GPT-2-small-sized model; writes its own section",
    )
    a = ap.parse_args()
    global CLOCK
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.clock == "cpu":
        CLOCK = time.process_time
    from bench_train import gpt2_small

    info = C.machine()
    info["clock"] = "process CPU time" if a.clock == "cpu" else "wall"
    print(C.machine_line(info))
    if a.real_model:
        from sftviz.modeling import load_model

        model, _ = load_model("smollm2-135m-instruct", device="cpu")
        described = (
            f"SmolLM2-135M-Instruct (its real weights, {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M "
            f"parameters, vocabulary {model.config.vocab_size:,}, dropout off)"
        )
    else:
        model = gpt2_small()
        described = (
            f"GPT-2-small-sized model (random init, 124M parameters, vocabulary {model.config.vocab_size}, dropout off)"
        )
    model.train()
    for mod in model.modules():  # dropout off: both paths then compute exactly the same loss
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    vocab = model.config.vocab_size
    n_params = f"{sum(p.numel() for p in model.parameters()) / 1e6:.0f}M"
    embedding = model.get_input_embeddings().weight
    embedding_mb = f"{embedding.numel() * embedding.element_size() / 1e6:.0f} MB"
    tied = "tied " if embedding is model.get_output_embeddings().weight else ""
    reps = 2 if a.quick else 6
    ft_steps = 4 if a.quick else 10  # the median of the step times after the first
    rows = []
    speedups = {}
    full_steps = []  # the full-logits finetune step does not depend on the fraction: its spread is the noise
    for frac in FRACTIONS:
        ids, labels, att, n_prompt = synthetic(a.batch, a.length, frac, vocab)
        with torch.no_grad():
            full = sft_loss(model(input_ids=ids, attention_mask=att).logits, labels).item()
            sup = supervised_head_loss(model, ids, labels, att).item()
        assert abs(full - sup) < 1e-3 * max(1.0, abs(full)), (full, sup)
        t = time_loss(model, ids, labels, att, reps)
        mem = {m: peak_memory(model, ids, labels, att, m, backward=True) for m in ("full", "supervised")}
        fwd = {m: peak_memory(model, ids, labels, att, m, backward=False) for m in ("full", "supervised")}
        model.zero_grad(set_to_none=True)  # finetune deep-copies the model: do not copy the timing runs' gradients
        gc.collect()
        exs = synthetic_examples(a.batch * ft_steps, a.length, frac, vocab)
        tok = _Tok(vocab)
        ft = {}
        variants = {
            "full": ("full", 1),
            "supervised": ("supervised", 1),
            "supervised, measure_every=None": ("supervised", None),
        }
        for _ in range(1 if a.quick else 2):
            for key, (head, every) in variants.items():  # interleaved
                sec, _ = time_finetune(model, tok, exs, ft_steps, a.batch, head, every)
                ft.setdefault(key, []).append(sec)
        ft = {k: C.median(v) for k, v in ft.items()}
        lean = ft["supervised, measure_every=None"]
        speedups[frac] = (t["full"] / t["supervised"], ft["full"] / ft["supervised"], ft["full"] / lean)
        full_steps.append(ft["full"])
        rows.append(
            [
                f"{frac:.2f} ({n_prompt}/{a.length})",
                f"{t['full'] * 1000:.0f}",
                f"{t['supervised'] * 1000:.0f}",
                f"{t['full'] / t['supervised']:.2f}x",
                f"{fwd['full'] / 2**20:.0f} / {fwd['supervised'] / 2**20:.0f} ({fwd['full'] / fwd['supervised']:.2f}x)",
                f"{mem['full'] / 2**20:.0f} / {mem['supervised'] / 2**20:.0f} ({mem['full'] / mem['supervised']:.2f}x)",
                f"{ft['full'] * 1000:.0f}",
                f"{ft['supervised'] * 1000:.0f} ({ft['full'] / ft['supervised']:.2f}x)",
                f"{lean * 1000:.0f} ({ft['full'] / lean:.2f}x)",
            ]
        )
        print(rows[-1], flush=True)
    lines = [
        "## Supervised-only head vs full logits (`python bench/bench_head.py"
        + (" --real-model" if a.real_model else "")
        + (f" --threads {a.threads}" if a.threads else "")
        + (f" --batch {a.batch}" if a.batch != 4 else "")
        + (f" --length {a.length}" if a.length != 128 else "")
        + (" --clock cpu" if a.clock == "cpu" else "")
        + "`)",
        "",
        f"Machine: {C.machine_line(info)}",
        "",
        f"{described}, batch {a.batch} x "
        f"{a.length} tokens of synthetic ids, completion-only labels, CPU fp32. Loss only: forward + backward of "
        "`sv.supervised_head_loss` vs `sv.sft_loss(model(...).logits)`, median of "
        f"{reps} interleaved repeats. Finetune step: median time of a `sv.finetune` step (forward, backward, per-step "
        'measurements, AdamW) with `head="full"` vs `head="supervised"`, with and without the per-step prompt NLL. Peak memory: '
        "torch profiler CPU allocation events (peak of the running sum of allocations minus frees, relative to the "
        "start) of one loss-only forward with the loss (what is kept for backward), and of forward + backward with the "
        f"gradient buffers already allocated (so the {n_params}-parameter gradients themselves are not counted; transient "
        f"per-parameter gradients, e.g. of the {embedding_mb} {tied}embedding, are).",
        "",
        C.table(
            [
                "prompt fraction",
                "full ms",
                "supervised ms",
                "speed-up",
                "peak MiB forward+loss: full / sup.",
                "peak MiB forward+backward: full / sup.",
                "finetune step, full ms",
                "finetune step, supervised ms (speed-up)",
                "same, measure_every=None ms (speed-up)",
            ],
            rows,
        ),
        "",
        f"Target: at least 1.25x faster at prompt fraction 0.75 on the CPU. Loss only: {speedups[0.75][0]:.3f}x "
        f"({'met' if speedups[0.75][0] >= 1.25 else 'NOT met'}). Whole finetune step: {speedups[0.75][1]:.3f}x with the "
        f"prompt NLL measured every step ({'met' if speedups[0.75][1] >= 1.25 else 'NOT met'}), {speedups[0.75][2]:.3f}x "
        f"without it ({'met' if speedups[0.75][2] >= 1.25 else 'NOT met'}).",
        "",
        "Why the finetune step gains less than the loss alone: a step also runs AdamW, gradient norms and clipping over "
        f"{n_params} parameters (the same in both columns), and under completion-only loss it measures the prompt NLL every step, "
        "which needs the output layer at every prompt position (without gradient: a third of its cost there). "
        "`measure_every=None` (or `measure_every=k`) skips that measurement, leaving `prompt_nll` None on those steps.",
        "",
        f"Noise: the full-logits finetune step does the same work at every prompt fraction, so the spread of its column "
        f"({min(full_steps) * 1000:.0f}-{max(full_steps) * 1000:.0f} ms, {(max(full_steps) / min(full_steps) - 1) * 100:.0f}%) "
        f"shows how much the finetune-step columns move from run to run on this machine (allocation of the {n_params}-parameter "
        "gradients every step, other processes). The loss-only columns are steadier (more repeats, no optimiser).",
    ]
    text = "\n".join(lines)
    print(text)
    if not a.quick:
        section = "bench_head" + ("_real" if a.real_model else "")
        C.write_section(section + ("_1thread" if (a.threads == 1 and a.clock == "cpu") else ""), text)
        print(f"\nwrote {C.RESULTS}")


if __name__ == "__main__":
    main()
