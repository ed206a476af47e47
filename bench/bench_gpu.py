"""Notebook 4's experiment on a GPU, on both models: steps per second, peak memory, and what the runs show.

One prepared script for a GPU machine (about 4 minutes on an H200, judging by the part of it that ran there). For each
model (the bundled ``sftviz-tiny`` and the real ``smollm2-135m-instruct``, which must be installed:
``python -m sftviz.models install``) it:

1. loads the model with ``device="auto"`` and checks that the model and every run land on the GPU
   (a script that silently trained on the CPU would measure the wrong thing);
2. runs ``sv.masking_experiment`` with notebook 4's own parameters (read from the committed notebook's
   parameters cell: datasets, maskings, seeds, steps, batch size; the real model gets a learning rate
   of 2e-5 instead of the toy's 1e-3, as ``sv.finetune`` advises for its size), and records the time,
   the optimiser steps per second over all runs and the peak GPU memory;
3. times the same first run's first steps on the CPU (the reference, in the same process) and prints
   the GPU's speed-up per step;
4. prints the experiment's verdict (which masking wins held-out exact match, by the stated test).

    python bench/bench_gpu.py                 # on a GPU machine: both models, writes bench/RESULTS.md
    python bench/bench_gpu.py --quick --no-write --device cpu   # a smoke run of the script itself

With ``--device cpu`` (or no GPU) the numbers are the CPU's, and the section says so; a GPU run is the
point of the script.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import _common as C
import torch

NOTEBOOK = C.ROOT / "notebooks" / "04_finetuning_masking_on_off.ipynb"
MODELS = ("sftviz-tiny", "smollm2-135m-instruct")
REAL_LR = 2e-5  # sv.finetune warns above 1e-4 for a model of SmolLM2's size
CPU_REFERENCE_STEPS = 4


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory since the last reset: allocated GPU memory on CUDA, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds_per_step(model, tok, rows, batch_size: int, lr: float) -> float:
    """The reference: seconds per optimiser step of the same training on the CPU (first step left out)."""
    import sftviz as sv

    cpu_model = model.to("cpu")
    run = sv.finetune(
        cpu_model,
        tok,
        rows,
        "completion",
        steps=CPU_REFERENCE_STEPS + 1,
        batch_size=batch_size,
        lr=lr,
        seed=0,
        device="cpu",
        progress=False,
        eval_every=None,
        cache=False,
    )
    return C.median([rec["seconds"] for rec in run.history[1:]])


def bench_model(name: str, params: dict, device: str, quick: bool) -> dict:
    import sftviz as sv

    dev = sv.resolve_device(device)
    model, tok = sv.load_model(name, device=device)
    where = next(model.parameters()).device
    if where.type != dev.type:
        raise SystemExit(f"{name}: device={device!r} resolved to {dev} but the model is on {where}")
    datasets = params["DATASETS"][:1] if quick else params["DATASETS"]
    seeds = params["SEEDS"][:1] if quick else params["SEEDS"]
    steps = 2 if quick else params["STEPS"]
    batch = params["BATCH_SIZE"]
    lr = params["LR"] if name == "sftviz-tiny" else REAL_LR
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(dev)
    rows, times, total_steps, verdicts = {}, {}, 0, {}
    for dataset in datasets:
        train, held_out = sv.load_splits(dataset)
        held_out = held_out[:4] if quick else held_out
        rows[dataset] = train
        start = time.perf_counter()
        exp = sv.masking_experiment(
            model,
            tok,
            train,
            held_out,
            params["MASKINGS"],
            seeds,
            dataset=dataset,
            steps=steps,
            batch_size=batch,
            lr=lr,
            eval_every=steps,
            eval_examples=len(held_out),
            progress=True,
            device=device,
            cache=False,
        )
        times[dataset] = time.perf_counter() - start
        for run in exp.runs.values():
            if run.device is None or torch.device(run.device).type != dev.type:
                raise SystemExit(f"{name}: a run trained on {run.device}, not on {dev}")
            total_steps += run.steps_done
        train_s = sum(r.timing.get("train", 0.0) for r in exp.runs.values())
        times[dataset, "train"] = train_s
        verdicts[dataset] = exp.verdict("exact_match")
    peak = peak_memory_mib(dev)
    step_s = sum(times[d, "train"] for d in datasets) / max(total_steps, 1)
    cpu_step_s = cpu_seconds_per_step(model, tok, rows[datasets[0]], batch, lr)
    return {
        "model": name,
        "device": str(dev),
        "datasets": datasets,
        "runs": len(params["MASKINGS"]) * len(seeds) * len(datasets),
        "steps": steps,
        "seeds": len(seeds),
        "batch": batch,
        "lr": lr,
        "wall_s": sum(times[d] for d in datasets),
        "steps_per_s": 1 / step_s if step_s else float("nan"),
        "peak_mib": peak,
        "cpu_step_s": cpu_step_s,
        "speedup": cpu_step_s / step_s if step_s else float("nan"),
        "verdicts": verdicts,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto (the GPU when there is one), cuda or cpu")
    ap.add_argument("--models", nargs="+", default=list(MODELS), help=f"default: {' '.join(MODELS)}")
    ap.add_argument("--quick", action="store_true", help="one dataset, one seed, 2 steps: checks the script")
    ap.add_argument("--no-write", action="store_true", help="print only; do not update bench/RESULTS.md")
    args = ap.parse_args()
    import sftviz as sv
    from sftviz.course import notebook_parameters

    params = notebook_parameters(NOTEBOOK)
    dev = sv.resolve_device(args.device)
    if dev.type != "cuda":
        print(f"[bench_gpu] no GPU in use ({dev}): the numbers below are this machine's CPU", file=sys.stderr)
    info = C.machine()
    results = [bench_model(name, params, args.device, args.quick) for name in args.models]
    rows = [
        [
            r["model"],
            r["device"],
            r["runs"],
            r["steps"],
            f"{r['wall_s']:.0f}",
            f"{r['steps_per_s']:.1f}",
            f"{r['peak_mib']:.0f}",
            f"{1 / r['cpu_step_s']:.2f}",
            f"{r['speedup']:.1f}x",
        ]
        for r in results
    ]
    memory = "peak GPU memory allocated" if dev.type == "cuda" else "peak process RSS (no GPU)"
    lines = [f"- {r['model']}, {d}: {v}" for r in results for d, v in r["verdicts"].items()]
    body = (
        f"Machine: {C.machine_line(info)}\n\n"
        f"Notebook 4's experiment as its parameters cell sets it ({', '.join(results[0]['datasets'])}; maskings "
        f"{list(params['MASKINGS'])}; {results[0]['seeds']} seed(s); {results[0]['steps']} steps at batch "
        f"{params['BATCH_SIZE']}; evaluation before and after on every held-out row), on `device={args.device!r}`; "
        f"the real model at lr {REAL_LR:g}. Steps/s counts every optimiser step of every run over the runs' "
        f"training time (evaluations included); the CPU reference is {CPU_REFERENCE_STEPS} steps of the first "
        f"dataset's completion-only run on this machine's CPU, in the same process.\n\n"
        + C.table(
            [
                "model",
                "device",
                "runs",
                "steps/run",
                "wall s",
                "steps/s",
                f"{memory}, MiB",
                "CPU steps/s",
                "speed-up per step",
            ],
            rows,
        )
        + "\n\nWhat the runs show (held-out exact match, the notebook's stated test):\n\n"
        + "\n".join(lines)
        + "\n"
    )
    print(body)
    if not args.no_write:
        if args.quick:
            raise SystemExit("--quick runs are not written to RESULTS.md; add --no-write")
        C.write_section("bench_gpu", "## Notebook 4 on a GPU (`python bench/bench_gpu.py`)\n\n" + body)


if __name__ == "__main__":
    main()
