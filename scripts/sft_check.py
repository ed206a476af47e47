"""Check that the bundled tiny model can be taught the support format by SFT.

A plain PyTorch loop, deliberately free of any ``sftviz`` helpers, so it is an independent check of
the bundled model and data:

1. load ``sftviz/assets/sftviz-tiny`` and the bundled ``support-train`` / ``support-eval`` data;
2. greedy-decode an answer to every eval question and count exact matches (the *before* figure);
3. fine-tune with completion-only loss: each example is ``[BOS] + prompt ids + completion ids + [EOS]``
   (prompt and completion tokenised separately), prompt and BOS positions labelled ``-100``,
   completion tokens and the EOS trained; the loss is the token-level mean over all trained tokens of
   the batch (what ``GPT2LMHeadModel`` computes from ``labels``);
4. decode again (the *after* figure), and write both into the marked SFT section of
   ``MODEL_CARD.md``. The fine-tuned model is thrown away.

Run from the repository root::

    python scripts/sft_check.py            # under a minute on a 2-core CPU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "sftviz" / "assets" / "sftviz-tiny"
DATA_DIR = ROOT / "sftviz" / "assets" / "data"
CARD_BEGIN = "<!-- sft-check:begin (written by scripts/sft_check.py; do not edit by hand) -->"
CARD_END = "<!-- sft-check:end -->"


def load_jsonl(path: Path) -> list[dict]:
    """Read a JSON-lines file into a list of dicts."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def encode_pair(tok, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """``[BOS] + prompt + completion + [EOS]`` and its labels (-100 on BOS and the prompt)."""
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"]
    ids = [tok.bos_token_id] + p + c + [tok.eos_token_id]
    labels = [-100] * (1 + len(p)) + c + [tok.eos_token_id]
    return ids, labels


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding gets attention 0 and label -100 (masked by position, not by id)."""
    width = max(len(ids) for ids, _ in examples)
    input_ids, labels, attention = [], [], []
    for ids, lab in examples:
        n_pad = width - len(ids)
        input_ids.append(ids + [pad_id] * n_pad)
        labels.append(lab + [-100] * n_pad)
        attention.append([1] * len(ids) + [0] * n_pad)
    return {
        "input_ids": torch.tensor(input_ids),
        "labels": torch.tensor(labels),
        "attention_mask": torch.tensor(attention),
    }


@torch.no_grad()
def greedy_answers(
    model, tok, prompts: list[str], max_new_tokens: int = 12, batch_size: int = 64
) -> list[tuple[str, bool]]:
    """Greedy-decode from ``[BOS] + prompt ids`` until EOS or ``max_new_tokens``, for each prompt.

    Returns, per prompt, the decoded new text (EOS excluded) and whether the model stopped with EOS.
    Prompts of the same length in tokens are decoded together as one batch, so no padding is needed
    and batching cannot change any answer.
    """
    device = next(model.parameters()).device
    encoded = [[tok.bos_token_id] + tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    by_length: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        by_length.setdefault(len(ids), []).append(i)
    results: list[tuple[str, bool]] = [("", False)] * len(prompts)
    for group in by_length.values():
        for start in range(0, len(group), batch_size):
            rows = group[start : start + batch_size]
            x = torch.tensor([encoded[i] for i in rows], device=device)
            new: list[list[int]] = [[] for _ in rows]
            stopped = [False] * len(rows)
            for _ in range(max_new_tokens):
                # No key/value cache: the whole sequence is re-read each step (short, tiny model).
                nxt = model(input_ids=x).logits[:, -1].argmax(-1)
                for j, t in enumerate(nxt.tolist()):
                    if stopped[j]:
                        continue  # finished rows keep running but are ignored
                    if t == tok.eos_token_id:
                        stopped[j] = True
                    else:
                        new[j].append(t)
                if all(stopped):
                    break
                x = torch.cat([x, nxt[:, None]], dim=1)
            for j, i in enumerate(rows):
                results[i] = (tok.decode(new[j]), stopped[j])
    return results


def exact_match(model, tok, rows: list[dict], max_new_tokens: int = 12) -> dict:
    """Greedy exact match of ``rows`` ({"prompt", "completion"}).

    A row counts as an exact match when the model stops with EOS and the decoded answer equals the
    reference completion (surrounding whitespace ignored). ``starts_right`` counts answers that
    merely begin with the reference (right fact, whether or not the model then stops).
    """
    was_training = model.training
    model.eval()
    answers = greedy_answers(model, tok, [r["prompt"] for r in rows], max_new_tokens)
    model.train(was_training)
    hits = starts = 0
    samples = []
    for row, (text, stopped) in zip(rows, answers):
        ref = row["completion"].strip()
        hits += stopped and text.strip() == ref
        starts += text.strip().startswith(ref)
        if len(samples) < 5:
            samples.append(
                {
                    "question": row["prompt"].rsplit("Customer: ", 1)[-1].split("\n")[0],
                    "reference": row["completion"],
                    "model": text,
                    "stopped": stopped,
                }
            )
    n = len(rows)
    return {
        "n": n,
        "exact": hits,
        "exact_rate": hits / n,
        "starts_right": starts,
        "starts_right_rate": starts / n,
        "samples": samples,
    }


def finetune(
    model,
    tok,
    rows: list[dict],
    steps: int = 300,
    batch_size: int = 16,
    lr: float = 3e-4,
    warmup: int = 20,
    seed: int = 0,
) -> list[float]:
    """Completion-only SFT with AdamW, linear warmup then cosine decay, grad clip 1.0.

    Batches are drawn epoch by epoch from a permutation made with ``torch.Generator`` seeded by
    ``seed``. Returns the loss of every step.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    examples = [encode_pair(tok, r["prompt"], r["completion"]) for r in rows]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    model.train()
    losses: list[float] = []
    order: list[int] = []
    for step in range(steps):
        if len(order) < batch_size:
            order += torch.randperm(len(examples), generator=gen).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        batch = {k: v.to(device) for k, v in collate([examples[i] for i in idx], tok.pad_token_id).items()}
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def _pct(k: int, n: int) -> str:
    return f"{k}/{n} ({100 * k / n:.0f}%)"


def card_section(res: dict) -> str:
    """The Markdown of the SFT section of the model card (between the markers)."""
    b, a = res["before"], res["after"]
    lines = [
        CARD_BEGIN,
        "## SFT check (`scripts/sft_check.py`)",
        "",
        f"Completion-only fine-tuning of this model on `support-train.jsonl` ({res['n_train']} rows, "
        f"{res['n_train_products']} products): {res['steps']} steps at batch {res['batch_size']}, AdamW, "
        f"learning rate {res['lr']:g} (warmup {res['warmup']} steps, cosine decay to 10%), grad clip 1.0, "
        f"seed {res['seed']}. Each example is `[BOS] + prompt + completion + [EOS]`, prompt and "
        "completion tokenised separately; BOS and prompt positions are labelled -100, the completion "
        "and EOS are trained. Greedy decoding from `[BOS] + prompt` until EOS or "
        f"{res['max_new_tokens']} new tokens; exact match = stopped with EOS and the answer equals "
        "the reference (surrounding whitespace ignored).",
        "",
        "| split | rows | exact match before SFT | exact match after SFT | answer starts right, after |",
        "|---|---|---|---|---|",
        f"| support-eval (held-out products) | {b['eval']['n']} | {_pct(b['eval']['exact'], b['eval']['n'])} "
        f"| {_pct(a['eval']['exact'], a['eval']['n'])} | {_pct(a['eval']['starts_right'], a['eval']['n'])} |",
        f"| support-train | {b['train']['n']} | {_pct(b['train']['exact'], b['train']['n'])} "
        f"| {_pct(a['train']['exact'], a['train']['n'])} | {_pct(a['train']['starts_right'], a['train']['n'])} |",
        "",
        f"Training loss (completion tokens + EOS, nats/token): first step {res['losses'][0]:.3f}, "
        f"mean of the last 20 steps {sum(res['losses'][-20:]) / 20:.3f}. "
        f"Fine-tuning took {res['train_seconds']:.1f} s, the whole check {res['total_seconds']:.1f} s "
        f"on {res['machine']}.",
        "",
        "The eval questions are about products that occur in no fine-tuning row; their facts were only "
        "in the pretraining prose"
        + (
            ". SFT taught the format, pretraining supplied the knowledge."
            if a["eval"]["exact_rate"] > 0.5
            else ": fewer than half were answered exactly, so this fine-tune did not transfer well."
        ),
        "",
        "Sample eval answers after SFT:",
        "",
        "| question | reference | model | stopped with EOS |",
        "|---|---|---|---|",
    ]
    for s in a["eval"]["samples"]:
        cells = [s["question"], f"`{s['reference']!r}`", f"`{s['model']!r}`", str(s["stopped"])]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append(CARD_END)
    return "\n".join(lines)


def update_card(card_path: Path, section: str) -> None:
    """Replace the marked SFT section of the card, or append it if the markers are missing."""
    text = card_path.read_text(encoding="utf-8") if card_path.exists() else ""
    if CARD_BEGIN in text and CARD_END in text:
        head, rest = text.split(CARD_BEGIN, 1)
        tail = rest.split(CARD_END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    card_path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=MODEL_DIR)
    ap.add_argument("--data", type=Path, default=DATA_DIR)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=12)
    ap.add_argument("--no-card", action="store_true", help="print the figures, leave MODEL_CARD.md alone")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    model.eval()
    train = load_jsonl(args.data / "support-train.jsonl")
    evals = load_jsonl(args.data / "support-eval.jsonl")

    before = {
        "eval": exact_match(model, tok, evals, args.max_new_tokens),
        "train": exact_match(model, tok, train, args.max_new_tokens),
    }
    print(
        f"before SFT: eval {_pct(before['eval']['exact'], len(evals))}, "
        f"train {_pct(before['train']['exact'], len(train))}",
        flush=True,
    )

    t1 = time.time()
    losses = finetune(
        model, tok, train, steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, seed=args.seed
    )
    train_seconds = time.time() - t1
    after = {
        "eval": exact_match(model, tok, evals, args.max_new_tokens),
        "train": exact_match(model, tok, train, args.max_new_tokens),
    }
    print(
        f"after SFT:  eval {_pct(after['eval']['exact'], len(evals))}, "
        f"train {_pct(after['train']['exact'], len(train))}; "
        f"loss {losses[0]:.3f} -> {sum(losses[-20:]) / 20:.3f}; {train_seconds:.1f} s",
        flush=True,
    )

    # Product names are two capitalised words after "the" in the question (only used for a count).
    questions = [r["prompt"].rsplit("Customer:", 1)[-1] for r in train]
    n_train_products = len({m for q in questions for m in re.findall(r"the ([A-Z][a-z]+ [A-Z][a-z]+)", q)})
    res = {
        "before": before,
        "after": after,
        "losses": losses,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "warmup": args.warmup,
        "seed": args.seed,
        "max_new_tokens": args.max_new_tokens,
        "n_train": len(train),
        "n_train_products": n_train_products,
        "train_seconds": train_seconds,
        "total_seconds": time.time() - t0,
        "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__}, "
        f"torch threads: {torch.get_num_threads()}, "
        f"{'CUDA' if next(model.parameters()).is_cuda else 'CPU'}",
    }
    for s in after["eval"]["samples"]:
        print("  ", s)
    if not args.no_card:
        update_card(args.model / "MODEL_CARD.md", card_section(res))
        print(f"updated {args.model / 'MODEL_CARD.md'}")
    return res


if __name__ == "__main__":
    main()
