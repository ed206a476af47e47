"""What each injected fault looks like on sftviz-tiny: the symptoms the diagnosis exercises rely on.

Fine-tunes the bundled model on `support` with completion-only loss, once correctly and once with each
fault of `sftviz.faults.FAULTS`, from the same start and seed, and tabulates the signals a learner
can read: the objective, the honestly measured completion and prompt NLL, held-out log Pr(y|x),
greedy exact match, the share of answers that stop with EOS, and a sample answer.

    python bench/faults_demo.py             # 100 steps each; writes its section of bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import warnings

import _common as C

from sftviz.datasets import load_dataset
from sftviz.faults import FAULTS
from sftviz.modeling import load_model
from sftviz.train import finetune


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    info = C.machine()
    print(C.machine_line(info))
    model, tok = load_model(device="cpu")
    train, held = load_dataset("support", split="train"), load_dataset("support", split="eval")
    rows = []
    for fault in [None, *FAULTS]:
        # accumulation faults need accumulation: the same 16 examples a step, as two micro-batches of 8
        kw = {"batch_size": 8, "grad_accum": 2} if fault == "accum_mean_of_means" else {"batch_size": 16}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = finetune(
                model,
                tok,
                train,
                "completion",
                steps=a.steps,
                lr=1e-3,
                seed=0,
                device="cpu",
                fault=fault,
                eval_data=held,
                eval_every=None,
                eval_examples=len(held),
                progress=False,
                **kw,
            )
        h, e = run.history, run.evals[-1]
        rows.append(
            [
                fault or "none (correct)",
                f"{h[0]['loss']:.2f} -> {h[-1]['loss']:.2f}",
                f"{h[0]['completion_nll']:.2f} -> {h[-1]['completion_nll']:.2f}",
                f"{h[0]['prompt_nll']:.2f} -> {h[-1]['prompt_nll']:.2f}",
                f"{e['cond_logprob_per_token']:.2f}",
                f"{e['exact_match']:.0%}",
                f"{e['stop_rate']:.0%}",
                "`" + repr(e["samples"][0]["generated"])[:60].replace("|", "\\|") + "`",
            ]
        )
        print(rows[-1], flush=True)
    lines = [
        "## What each fault looks like (`python bench/faults_demo.py`)",
        "",
        f"Machine: {C.machine_line(info)}",
        "",
        f"sftviz-tiny on `support` (train), completion-only loss, {a.steps} steps at 16 examples a step, lr 0.001, seed 0, "
        "the same start for every row. Train values: step 1 -> last step (nats per token; the objective is what the "
        "faulty code optimises, the NLLs are measured correctly). Eval on the held-out split after training: log "
        "Pr(y|x) per token, greedy exact match, share of answers ending with EOS, and the answer to the first eval "
        "question (reference `' black.'`).",
        "",
        C.table(
            [
                "fault",
                "objective",
                "completion NLL",
                "prompt NLL",
                "eval log Pr(y|x)",
                "exact match",
                "stops with EOS",
                "first answer",
            ],
            rows,
        ),
    ]
    text = "\n".join(lines)
    print(text)
    if not a.no_write:
        C.write_section("faults_demo", text)
        print(f"\nwrote {C.RESULTS}")


if __name__ == "__main__":
    main()
