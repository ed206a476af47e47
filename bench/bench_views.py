"""Latency of the views: score a 64-token example and render it, on CPU, against a 50 ms target.

    python bench/bench_views.py                 # bundled sftviz-tiny (or a tiny random GPT-2 if absent)
    python bench/bench_views.py --repeats 100 --tokens 64 --device cpu --no-write

Every number is the median of ``--repeats`` runs after a warm-up. The reference measured in the same
run is one bare forward pass of the model over the same tokens; each row prints its ratio to it, so
the numbers compare across machines. The target is what a student feels when typing in
LogProbExplorer: scoring plus rendering one example within 50 ms. The table is also written to the
``bench_views`` section of bench/RESULTS.md (unless ``--no-write``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

import sftviz as sv
from sftviz import render

try:  # the shared bench helpers (machine description, bench/RESULTS.md)
    import _common
except ImportError:  # pragma: no cover - the script also runs on its own
    _common = None

TARGET_MS = 50.0


def tiny_random_model():
    """A small random GPT-2 with a byte-level BPE tokenizer trained on the bundled data (no network)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    rows = sv.load_dataset("support")
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(
        [r["prompt"] + r["completion"] for r in rows],
        trainers.BpeTrainer(
            vocab_size=1024, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=128, n_layer=5, n_head=4, n_positions=256))
    return model.eval(), tok, "tiny random GPT-2 (bundled model not found)"


def load(device):
    try:
        model, tok = sv.load_model(device=device)
        return model, tok, "sftviz-tiny (bundled)"
    except Exception as err:  # the bundled model may not be built yet
        print(f"note: bundled model unavailable ({type(err).__name__}: {str(err)[:120]}); using a tiny random GPT-2")
        model, tok, name = tiny_random_model()
        return model.to(device), tok, name


def example_of_length(tok, n):
    """An example of exactly ``n`` tokens: a long prompt cut from the left to fit, and a real completion."""
    rows = sv.load_dataset("support")
    long_prompt = "\n".join(r["prompt"] + r["completion"] for r in rows[1:6]) + "\n" + rows[0]["prompt"]
    ex = sv.build_example(tok, prompt=long_prompt, completion=rows[0]["completion"], max_length=n, warn=False)
    if len(ex) != n:
        raise SystemExit(f"could not build a {n}-token example (got {len(ex)})")
    return ex


def median_ms(fn, repeats, warmup=5):
    import statistics

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), min(times), max(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Latency of scoring + rendering one example (target 50 ms).")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tok, name = load(args.device)
    ex = example_of_length(tok, args.tokens)
    ids = torch.tensor([ex.input_ids], device=next(model.parameters()).device)
    rep = sv.score(model, tok, example=ex)

    def forward():
        with torch.no_grad():
            model(input_ids=ids)

    def score():
        sv.score(model, tok, example=ex, top_k=5)

    def render_only():
        render.token_html(rep)
        render.logprob_html(rep)

    def score_and_render():
        r = sv.score(model, tok, example=ex, top_k=5)
        render.token_html(r)
        render.logprob_html(r)

    from sftviz import widgets as W

    lpx = W.LogProbExplorer(
        model, tok, prompt=ex.source["prompt"], completion=ex.source["completion"], data=[], max_length=args.tokens
    )
    texts = [ex.source["completion"], ex.source["completion"] + " "]
    state = {"i": 0}

    def explorer_update():  # what one debounced keystroke costs on the Python side
        state["i"] ^= 1
        lpx.completion = texts[state["i"]]

    def token_view():
        W.TokenView(rep)._repr_mimebundle_()

    rows = [
        ("reference: one forward pass", forward, False),
        ("score (sv.score, top_k=5)", score, False),
        ("render (token_html + logprob_html)", render_only, False),
        ("score + render", score_and_render, True),
        ("LogProbExplorer update (score + records)", explorer_update, True),
        ("TokenView build + static fallback", token_view, False),
    ]
    load_avg = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    head = (
        f"model {name}; {len(ex)} tokens; device {args.device}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load average {load_avg}; median of {args.repeats} runs after 5 warm-up runs"
    )
    print("sftviz view latency: " + head)
    print(f"target: score + render <= {TARGET_MS:.0f} ms (a busy machine inflates medians: compare with the min)\n")
    print(f"{'what':44s} {'median ms':>10s} {'min':>8s} {'max':>8s} {'x forward':>10s}  verdict")
    ref = None
    worst = 0.0
    table_rows = []
    for label, fn, targeted in rows:
        if label.startswith("LogProbExplorer") and lpx.error:
            print(f"{label:44s} skipped: {lpx.error}")
            continue
        med, lo, hi = median_ms(fn, args.repeats)
        ref = med if ref is None else ref
        verdict = (("OK" if med <= TARGET_MS else "SLOW") + f" (target {TARGET_MS:.0f} ms)") if targeted else ""
        if targeted:
            worst = max(worst, med)
        print(f"{label:44s} {med:10.2f} {lo:8.2f} {hi:8.2f} {med / ref:10.1f}  {verdict}")
        table_rows.append((label, f"{med:.2f}", f"{lo:.2f}", f"{hi:.2f}", f"{med / ref:.1f}", verdict or "-"))
    summary = f"score + render: {worst:.1f} ms median against a {TARGET_MS:.0f} ms target: " + (
        "within target." if worst <= TARGET_MS else "ABOVE target."
    )
    print("\n" + summary)
    if _common is not None and not args.no_write:
        body = "\n".join(
            [
                "## Views: scoring + rendering latency (`bench/bench_views.py`)",
                "",
                "Machine: " + _common.machine_line(_common.machine()),
                "",
                head + ".",
                "",
                _common.table(["what", "median ms", "min ms", "max ms", "x forward pass", "verdict"], table_rows),
                "",
                summary,
            ]
        )
        _common.write_section("bench_views", body)
        print(f"written to {_common.RESULTS}")
    return 0 if worst <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
