"""Many runs from one start: K model copies trained as one batched computation vs K serial runs.

The idea of issue 14: a masking experiment trains K copies of one small model (maskings x seeds), and
on a device with spare parallelism K copies can step together: the copies' weights are stacked
(``torch.func.stack_module_state``) and one ``vmap`` of the model's forward pass computes all K losses,
so one backward pass and one AdamW step (elementwise, so per copy exactly as if alone) update every
copy. The same work is done serially as K ordinary steps. Each copy trains on its own batches, with
completion-only labels, no gradient clipping (a per-copy global norm would need a per-copy reduction;
both sides leave it out, so the work is the same).

The script checks that every copy's losses equal its serial run's (within float tolerance) and reports
the time per step of both ways and their ratio. Target: batched at most half the serial time.

    python bench/bench_batched.py            # writes its section of bench/RESULTS.md
    python bench/bench_batched.py --quick    # fewer steps, no RESULTS.md
"""

from __future__ import annotations

import argparse
import copy
import time

import _common as C
import torch
from torch.func import functional_call, stack_module_state

from sftviz.collate import SFTCollator
from sftviz.datasets import load_dataset
from sftviz.modeling import load_model

LR = 1e-3


def loss_of(logits, labels):
    """The completion-only token mean (as ``sv.sft_loss``, without its input checks, which vmap cannot run)."""
    targets = labels[:, 1:]
    total = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return total / (targets != -100).sum()


def batches(tok, rows, k, steps, batch, seed):
    """``steps`` lists of ``k`` batches of the same shape (one per copy), each copy with its own rows."""
    collate = SFTCollator(tok)
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        idx = torch.randint(0, len(rows), (k * batch,), generator=g).tolist()
        b = collate([rows[i] for i in idx])  # one padding width for all copies
        out.append({key: v.view(k, batch, -1) for key, v in b.items()})
    return out


def serial(model, data, k):
    """K ordinary runs, one after the other; returns (seconds per step of all K, losses[k][step])."""
    models = [copy.deepcopy(model).train() for _ in range(k)]
    for m in models:
        m.config.pad_token_id = None  # as in the batched copies (padding is on the right, no mask)
    opts = [torch.optim.AdamW(m.parameters(), lr=LR, foreach=True) for m in models]
    losses = [[] for _ in range(k)]
    times = []
    for step in data:
        t0 = time.perf_counter()
        for j, (m, opt) in enumerate(zip(models, opts)):
            logits = m(input_ids=step["input_ids"][j]).logits
            loss = loss_of(logits, step["labels"][j])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses[j].append(float(loss.detach()))
        times.append(time.perf_counter() - t0)
    return times, losses


def batched(model, data, k):
    """The same K runs as one computation: stacked weights, vmap over copies, one AdamW for all."""
    copies = [copy.deepcopy(model).train() for _ in range(k)]
    params, buffers = stack_module_state(copies)
    base = copy.deepcopy(model)  # its own weights are never used: functional_call swaps in the stacked ones
    base.config.pad_token_id = None  # no data-dependent padding warning inside vmap
    opt = torch.optim.AdamW(list(params.values()), lr=LR, foreach=True)

    def one(p, b, ids, labels):
        logits = functional_call(base, (p, b), args=(), kwargs={"input_ids": ids}).logits
        return loss_of(logits, labels)

    all_losses = torch.func.vmap(one, in_dims=(0, 0, 0, 0))
    losses = [[] for _ in range(k)]
    times = []
    for step in data:
        t0 = time.perf_counter()
        per_copy = all_losses(params, buffers, step["input_ids"], step["labels"])
        per_copy.sum().backward()  # each copy's weights get only its own loss's gradient
        opt.step()
        opt.zero_grad(set_to_none=True)
        for j, v in enumerate(per_copy.detach().tolist()):
            losses[j].append(v)
        times.append(time.perf_counter() - t0)
    return times, losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, default=9, help="runs (copies)")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = 4 if args.quick else args.steps
    info = C.machine()
    model, tok = load_model("sftviz-tiny", device="cpu")
    rows = load_dataset("support", split="train")
    data = batches(tok, rows, args.k, steps, args.batch, seed=0)
    best = {"serial": float("inf"), "batched": float("inf")}
    for _ in range(args.rounds):
        for name, fn in (("serial", serial), ("batched", batched)):
            times, losses = fn(model, data, args.k)
            best[name] = min(best[name], C.median(times[1:]))
            if name == "serial":
                ref = losses
            else:
                diff = max(abs(a - b) for r, s in zip(ref, losses) for a, b in zip(r, s))
    ratio = best["serial"] / best["batched"]
    print(
        f"K={args.k}: serial {best['serial'] * 1e3:.0f} ms/step, batched {best['batched'] * 1e3:.0f} ms/step, "
        f"serial/batched {ratio:.2f}x; largest loss difference {diff:.2e}"
    )
    assert diff < 1e-3, f"batched runs do not reproduce the serial runs: loss difference {diff}"
    if args.quick:
        return
    body = f"""## {args.k} runs batched vs serial (`python bench/bench_batched.py`)

Machine: {C.machine_line(info)}

sftviz-tiny, {args.k} copies from one start, each on its own `support` batches of {args.batch}, completion-only
loss, AdamW (lr {LR}), no clipping, {steps} steps (the first left out of the median), best of {args.rounds}
interleaved rounds. Batched: stacked weights, `torch.func.vmap` of the forward pass, one backward and one
AdamW step for all copies. Every copy's losses equal its serial run's: largest difference {diff:.1e}.

{C.table(["method", "ms / step (all copies)", "serial / this"], [["serial", f"{best['serial'] * 1e3:.0f}", "1.00x"], ["batched (vmap)", f"{best['batched'] * 1e3:.0f}", f"{ratio:.2f}x"]])}

Target: batched at most half the serial time (2.00x or more). Measured: {ratio:.2f}x{"" if ratio >= 2 else ", so the target is not met on this machine and the engine trains runs serially"}.
"""
    C.write_section("bench_batched", body)


if __name__ == "__main__":
    main()
