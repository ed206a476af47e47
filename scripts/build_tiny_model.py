"""Build the bundled ``sftviz-tiny`` model and data from scratch, reproducibly.

Steps (every random choice comes from ``--seed``):

1. make the fictional world (``scripts/world.py``) and write the bundled data files to
   ``sftviz/assets/data/``;
2. train a byte-level BPE tokenizer on the pretraining corpus and wrap it as a
   ``PreTrainedTokenizerFast`` with BOS/EOS/PAD and chat special tokens and a chat template;
3. pretrain a small GPT-2 on the corpus (``<|bos|> text <|eos|>`` documents packed into blocks);
4. save model and tokenizer (safetensors) to ``sftviz/assets/sftviz-tiny/``;
5. reload them from disk with the Auto classes, evaluate, and write ``MODEL_CARD.md``;
6. run ``scripts/sft_check.py`` (unless ``--skip-sft-check``), which adds the SFT section to the card.

Run from the repository root::

    python scripts/build_tiny_model.py          # 4-8 minutes on a 2-core CPU, then the SFT check
    python scripts/build_tiny_model.py --data-only   # step 1 only: rewrite the data files

Pretraining takes about 0.25 s a step with 2 torch threads on an idle 2-core machine (800 steps:
3-4 minutes). On a machine shared with other jobs, two torch threads per process oversubscribe the
cores and can be ten times slower; run with ``OMP_NUM_THREADS=1`` there (about 0.5 s a step).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # scripts/: `import world` and `import sft_check`

import torch  # noqa: E402
import world as W  # noqa: E402
from sft_check import CARD_BEGIN, CARD_END, exact_match, load_jsonl  # noqa: E402

MODEL_DIR = ROOT / "sftviz" / "assets" / "sftviz-tiny"
DATA_DIR = ROOT / "sftviz" / "assets" / "data"

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
CHAT_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
SPECIAL_TOKENS = [PAD, BOS, EOS] + CHAT_TOKENS  # ids 0..6 in this order

#: Jinja chat template: BOS, then <|role|>content<|end|> per message, then <|assistant|> if asked.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{% if m['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('sftviz-tiny chat roles are system, user and assistant, not ' + m['role']) }}"
    "{% endif %}"
    "<|{{ m['role'] }}|>"
    # An assistant turn (its text and its <|end|>) is a {% generation %} block: TRL's assistant_only_loss and
    # return_assistant_tokens_mask then mark exactly the tokens sftviz trains. It renders the same text.
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}<|end|>{% endgeneration %}"
    "{% else %}{{ m['content'] }}<|end|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

#: Pre-tokenizer regex: every digit is its own piece, a preceding space stays attached to the first
#: digit (" 149" -> " 1", "4", "9"), so numbers are always split into subword tokens.
DIGIT_SPLIT = r" ?\p{N}"


# ---------------------------------------------------------------------------------------------
# 1. data
# ---------------------------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def make_data(seed: int, n_docs: int, n_heldout: int) -> dict:
    """Make the world, the pretraining corpus and every bundled data file."""
    world = W.make_world(seed)
    corpus = W.pretraining_corpus(world, n_docs, seed=seed)
    train_p, eval_p = W.split_products(world)
    files = {
        "support-train.jsonl": W.support_pairs(world, train_p, seed=seed),
        "support-eval.jsonl": W.support_pairs(world, eval_p, seed=seed + 1, phrasings=1),
        "support-chat-train.jsonl": W.support_chat(world, train_p, seed=seed),
        "support-chat-eval.jsonl": W.support_chat(world, eval_p, seed=seed + 1),
        "explain-train.jsonl": W.explain_pairs(world, train_p, seed=seed),
        "explain-eval.jsonl": W.explain_pairs(world, eval_p, seed=seed + 1, phrasings=2),
        "heldout-statements.jsonl": W.heldout_statements(world, seed=seed),
    }
    heldout = W.heldout_corpus(world, n_heldout, seed=seed + 1, exclude=corpus)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        write_jsonl(DATA_DIR / name, rows)
    (DATA_DIR / "heldout-corpus.txt").write_text("\n".join(heldout) + "\n", encoding="utf-8")
    return {
        "world": world,
        "corpus": corpus,
        "heldout": heldout,
        "train_products": train_p,
        "eval_products": eval_p,
        "files": files,
    }


# ---------------------------------------------------------------------------------------------
# 2. tokenizer
# ---------------------------------------------------------------------------------------------


def train_tokenizer(corpus: list[str], vocab_size: int):
    """Byte-level BPE trained on ``corpus``, wrapped as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(DIGIT_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tk.decoder = decoders.ByteLevel()
    # No post-processor: the tokenizer never adds BOS/EOS by itself; sftviz adds them explicitly.
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=CHAT_TOKENS,
        model_max_length=256,
        padding_side="right",
        add_prefix_space=False,
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def make_tokenizer_config_portable(folder: Path) -> None:
    """Rewrite ``tokenizer_config.json`` so that transformers 4.x loads it as well as 5.x.

    transformers 5 writes ``"tokenizer_class": "TokenizersBackend"`` and ``extra_special_tokens``,
    and keeps the chat template only in ``chat_template.jinja``; transformers 4 knows none of these.
    We name the class ``PreTrainedTokenizerFast``, list the chat tokens as
    ``additional_special_tokens`` and also store the template in the config (both versions read
    these; ``chat_template.jinja`` stays for version 5).
    """
    path = folder / "tokenizer_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    extra = cfg.pop("extra_special_tokens", None)
    if isinstance(extra, list):
        cfg["additional_special_tokens"] = extra
    cfg.setdefault("additional_special_tokens", CHAT_TOKENS)
    cfg["chat_template"] = CHAT_TEMPLATE
    path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def check_tokenizer(tok) -> None:
    """Fail loudly if the tokenizer adds tokens by itself or the chat template misbehaves."""
    ids = tok("The Zephyr Kettle costs 49 dollars.")["input_ids"]
    assert ids == tok("The Zephyr Kettle costs 49 dollars.", add_special_tokens=False)["input_ids"]
    assert tok.bos_token_id not in ids and tok.eos_token_id not in ids
    ids = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(len(SPECIAL_TOKENS))), ids
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
    ]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text == "<|bos|><|system|>Be brief.<|end|><|user|>Hi?<|end|><|assistant|>Hello.<|end|>", text
    chat_ids = tok.apply_chat_template(msgs, tokenize=True)
    if isinstance(chat_ids, dict) or hasattr(chat_ids, "keys"):
        chat_ids = chat_ids["input_ids"]
    assert tok.decode(chat_ids) == text, tok.decode(chat_ids)
    assert chat_ids == tok(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------------------------------------
# 3. pretraining
# ---------------------------------------------------------------------------------------------


def pack_documents(tok, docs: list[str], block: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack ``<|bos|> doc <|eos|>`` documents whole into blocks of ``block`` tokens.

    Documents are shuffled (``random.Random(seed)``), then added to the current block while they
    fit; the rest of a block is padding. Every block therefore starts with BOS, and no document is
    cut. Labels are the input ids with padding and BOS set to -100 (BOS is never a target).
    """
    import random

    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    encoded = tok([docs[i] for i in order], add_special_tokens=False)["input_ids"]
    bos, eos, pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    blocks, cur = [], []
    for ids in encoded:
        doc = [bos] + ids + [eos]
        if len(doc) > block:
            raise ValueError(f"document of {len(doc)} tokens does not fit a block of {block}")
        if len(cur) + len(doc) > block:
            blocks.append(cur + [pad] * (block - len(cur)))
            cur = []
        cur += doc
    if cur:
        blocks.append(cur + [pad] * (block - len(cur)))
    x = torch.tensor(blocks)
    y = x.clone()
    y[(x == pad) | (x == bos)] = -100
    return x, y


def pretrain(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    warmup: int,
    seed: int,
    pad_id: int,
    log_every: int = 100,
) -> dict:
    """AdamW with linear warmup and cosine decay to 10% of ``lr``, grad clip 1.0."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    model.train()
    losses, log = [], []
    order: list[int] = []
    t0 = time.time()
    for step in range(steps):
        if len(order) < batch_size:
            order += torch.randperm(len(x), generator=gen).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        xb, yb = x[idx], y[idx]
        # Padding only ever follows the real tokens of a block and attention is causal, so no real
        # token could attend to padding anyway; the mask just says so. Padding labels are -100.
        loss = model(input_ids=xb, attention_mask=(xb != pad_id).long(), labels=yb).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % log_every == 0 or step == 0 or step + 1 == steps:
            recent = sum(losses[-log_every:]) / len(losses[-log_every:])
            log.append((step + 1, recent, time.time() - t0))
            print(
                f"step {step + 1:5d}/{steps}  loss {recent:.3f}  lr {lr_at(step):.2e}  {time.time() - t0:6.1f} s",
                flush=True,
            )
    model.eval()
    return {"losses": losses, "log": log, "seconds": time.time() - t0}


# ---------------------------------------------------------------------------------------------
# 5. evaluation (on the model and tokenizer as reloaded from disk)
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def continuation_logprobs(model, tok, pairs: list[tuple[str, str]], batch_size: int = 64) -> list[float]:
    """log Pr(continuation | [BOS] + context) in nats for each (context, continuation) pair.

    Context and continuation are tokenised separately and concatenated.
    """
    out = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        seqs, spans = [], []
        for ctx, cont in chunk:
            c = tok(ctx, add_special_tokens=False)["input_ids"]
            k = tok(cont, add_special_tokens=False)["input_ids"]
            seqs.append([tok.bos_token_id] + c + k)
            spans.append((1 + len(c), 1 + len(c) + len(k)))
        width = max(map(len, seqs))
        ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in seqs])
        att = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=att).logits.float(), -1)
        for i, (a, b) in enumerate(spans):
            targets = ids[i, a:b]
            out.append(float(logp[i, a - 1 : b - 1].gather(-1, targets[:, None]).sum()))
    return out


def statement_accuracy(model, tok, items: list[dict]) -> dict:
    """Share of items whose true continuation beats every distractor, overall and by kind."""
    pairs, owners = [], []
    for i, it in enumerate(items):
        for cont in [it["true"]] + it["distractors"]:
            pairs.append((it["context"], cont))
            owners.append(i)
    scores = continuation_logprobs(model, tok, pairs)
    per_item: dict[int, list[float]] = {}
    for i, s in zip(owners, scores):
        per_item.setdefault(i, []).append(s)
    correct = [s[0] > max(s[1:]) for _, s in sorted(per_item.items())]
    by_kind: dict[str, list[bool]] = {}
    for it, ok in zip(items, correct):
        by_kind.setdefault(it.get("kind", "?"), []).append(ok)
    return {
        "n": len(items),
        "correct": sum(correct),
        "accuracy": sum(correct) / len(items),
        "by_kind": {k: (sum(v), len(v)) for k, v in by_kind.items()},
    }


@torch.no_grad()
def corpus_nll(model, tok, docs: list[str], batch_size: int = 64) -> dict:
    """Per-token NLL (nats) of ``<|bos|> doc <|eos|>`` documents: every token after BOS, EOS included."""
    total, count = 0.0, 0
    for start in range(0, len(docs), batch_size):
        seqs = [
            [tok.bos_token_id] + tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            for d in docs[start : start + batch_size]
        ]
        width = max(map(len, seqs))
        ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in seqs])
        att = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        logits = model(input_ids=ids, attention_mask=att).logits.float()
        logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
        mask = att[:, 1:].bool()
        total -= float(logp[mask].sum())
        count += int(mask.sum())
    nll = total / count
    return {"tokens": count, "nll": nll, "ppl": math.exp(nll)}


# ---------------------------------------------------------------------------------------------
# model card
# ---------------------------------------------------------------------------------------------


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def _cell(text: str) -> str:
    """Text for a Markdown table cell: pipes escaped (GitHub tables split on them, even in code)."""
    return text.replace("|", "\\|")


def write_card(info: dict) -> None:
    cfg, tok = info["config"], info["tok"]
    ev, st, base = info["heldout_nll"], info["statements"], info["base_em"]
    st_ex = info["files"]["heldout-statements.jsonl"][0]
    logv = math.log(cfg.vocab_size)
    files = sorted(f.name for f in MODEL_DIR.iterdir() if f.is_file() and f.name != "MODEL_CARD.md")
    ex = info["files"]["support-train.jsonl"][0]
    chat_ex = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
    ]
    kinds = ", ".join(f"{k} {c}/{n}" for k, (c, n) in st["by_kind"].items())
    pre = info["pretrain"]
    curve = " -> ".join(f"{loss:.2f} (step {s})" for s, loss, _ in pre["log"][:: max(1, len(pre["log"]) // 6)])
    lines = [
        "# sftviz-tiny",
        "",
        "A very small GPT-2-style causal language model, pretrained from scratch on prose about a "
        f"fictional shop (**{W.COMPANY}**) and a handful of general facts. It exists to make supervised "
        "fine-tuning visible on a laptop CPU in the `sftviz` course: it knows facts from pretraining but "
        "does not follow the support question/answer format until it is fine-tuned. It is not useful "
        "for anything else.",
        "",
        "Every figure on this page was computed by `scripts/build_tiny_model.py` (and the SFT section by "
        "`scripts/sft_check.py`) on the files in this folder, reloaded from disk; none is typed by hand.",
        "",
        "## Architecture",
        "",
        "| | |",
        "|---|---|",
        f"| type | `GPT2LMHeadModel` (transformers {info['transformers']}) |",
        f"| layers / width / heads | {cfg.n_layer} / {cfg.n_embd} / {cfg.n_head} |",
        f"| context (n_positions) | {cfg.n_positions} |",
        f"| vocabulary | {cfg.vocab_size} |",
        f"| tied input/output embeddings | {cfg.tie_word_embeddings} |",
        f"| dropout | {cfg.resid_pdrop} |",
        f"| parameters | {info['n_params']:,} |",
        f"| files | {', '.join(f'`{f}`' for f in files)} ({folder_size(MODEL_DIR) / 1e6:.2f} MB with this card) |",
        "",
        "## Tokenizer",
        "",
        f"Byte-level BPE trained with `tokenizers` on the pretraining corpus, vocabulary {len(tok)}. "
        "Pre-tokenisation splits every digit into its own piece (a preceding space stays with the first "
        "digit: ` 149` -> ` 1`, `4`, `9`), then applies GPT-2's byte-level regex with "
        "`add_prefix_space=False`. There is no post-processor: the tokenizer never adds BOS or EOS by "
        "itself (`tok(text).input_ids == tok(text, add_special_tokens=False).input_ids`); add them "
        "explicitly. Example: "
        f"`{info['tok_example'][0]}` -> {info['tok_example'][1]}.",
        "",
        "| special token | id | role |",
        "|---|---|---|",
    ]
    roles = {
        PAD: "pad_token (distinct from EOS)",
        BOS: "bos_token",
        EOS: "eos_token",
        "<|system|>": "chat: system turn",
        "<|user|>": "chat: user turn",
        "<|assistant|>": "chat: assistant turn",
        "<|end|>": "chat: end of turn",
    }
    for t in SPECIAL_TOKENS:
        lines.append(f"| `{_cell(t)}` | {tok.convert_tokens_to_ids(t)} | {roles[t]} |")
    lines += [
        "",
        "Chat template (no newlines are added between turns):",
        "",
        "```jinja",
        CHAT_TEMPLATE,
        "```",
        "",
        f"`apply_chat_template({json.dumps(chat_ex)}, tokenize=False)` gives "
        f"`{tok.apply_chat_template(chat_ex, tokenize=False)}`; with `add_generation_prompt=True` the text "
        "ends with `<|assistant|>`. Roles other than system/user/assistant raise an error. Each assistant turn (its "
        "text and its `<|end|>`) sits in a `{% generation %}` block, so `return_assistant_tokens_mask=True` (and TRL's "
        "`assistant_only_loss=True`) mark exactly the tokens sftviz trains in a conversation.",
        "",
        "## Pretraining data",
        "",
        f"`scripts/world.py`: `make_world(seed={info['seed']})`: {len(info['world'].products)} products "
        f"(price, colour, battery hours, warranty years), {len(info['world'].shop)} shop facts and "
        f"{len(info['world'].general_facts)} general facts. "
        f"`pretraining_corpus(world, {info['n_docs']}, seed={info['seed']})`: {info['n_docs']:,} short prose "
        f"documents ({info['n_unique_docs']:,} distinct) stating 1-3 facts each, "
        f"{info['corpus_tokens']:,} tokens (without BOS/EOS). Each document is `<|bos|> text <|eos|>`; "
        f"documents are packed whole into {info['n_blocks']:,} blocks of {info['block']} tokens (padding "
        "at the end of a block is not trained; every block starts with BOS). The corpus is prose only: "
        "it never contains the question/answer format of the fine-tuning data, and it never uses the "
        "sentence templates of the held-out statements.",
        "",
        "## Pretraining",
        "",
        f"{info['steps']} steps at batch {info['batch_size']} x {info['block']} tokens "
        f"(about {info['steps'] * info['batch_size'] / info['n_blocks']:.1f} epochs), AdamW (betas 0.9/0.95, "
        f"weight decay 0.01), learning rate {info['lr']:g} with {info['warmup']} warmup steps and cosine "
        f"decay to 10%, grad clip 1.0, `torch.manual_seed({info['seed']})`. "
        f"Pretraining took {pre['seconds'] / 60:.1f} minutes (the whole build {info['build_seconds'] / 60:.1f} "
        f"minutes before the SFT check) on {info['machine']}.",
        "",
        f"Training loss (mean over the logging window, nats/token): {curve}; final (mean of the last 100 "
        f"steps) **{sum(pre['losses'][-100:]) / len(pre['losses'][-100:]):.3f}**.",
        "",
        "## Evaluation",
        "",
        "| check | result |",
        "|---|---|",
        f"| held-out corpus (`data/heldout-corpus.txt`, {len(info['heldout'])} documents from the same "
        f"generator that are not in the training corpus, {ev['tokens']:,} scored tokens incl. EOS) | "
        f"**{ev['nll']:.3f} nats/token** (perplexity {ev['ppl']:.2f}); uniform guess log(V) = {logv:.3f} "
        f"nats (perplexity {cfg.vocab_size}) |",
        f"| held-out statements (`data/heldout-statements.jsonl`: eval-only paraphrase templates that never "
        f"occur in the corpus, e.g. `{_cell(st_ex['context'])}` + `{_cell(st_ex['true'])}`; the true continuation "
        f"must have a higher log-probability than each of its {len(st_ex['distractors'])} distractors) | **{st['correct']}/{st['n']} = {100 * st['accuracy']:.1f}%** "
        f"({kinds}) |",
        f"| base-model greedy exact match on `data/support-eval.jsonl` (same decoding as the SFT check) | "
        f"{base['exact']}/{base['n']} = {100 * base['exact_rate']:.0f}% (answer merely starts right: "
        f"{base['starts_right']}/{base['n']}) |",
        "",
        "The base model knows the facts (held-out statements) but does not answer in the support format.",
        "",
        "Base-model answers to the first eval questions:",
        "",
        "| question | reference | base model | stopped with EOS |",
        "|---|---|---|---|",
    ]
    for s in base["samples"]:
        lines.append(
            f"| {_cell(s['question'])} | `{_cell(repr(s['reference']))}` | `{_cell(repr(s['model']))}` "
            f"| {s['stopped']} |"
        )
    lines += [
        "",
        "## Fine-tuning data (`sftviz/assets/data/`)",
        "",
        f"Products 1-{len(info['train_products'])} are the training products, the other "
        f"{len(info['eval_products'])} are held out: eval files mention only them, and their facts occur "
        "only in pretraining prose.",
        "",
        "| file | rows | content |",
        "|---|---|---|",
    ]
    descr = {
        "support-train.jsonl": "`{prompt, completion}`: support instruction + question -> short answer",
        "support-eval.jsonl": "same, held-out products, one phrasing per question type",
        "support-chat-train.jsonl": "`{messages}`: system + 1-3 user/assistant exchanges",
        "support-chat-eval.jsonl": "same, held-out products",
        "explain-train.jsonl": "`{prompt, completion}`: short request -> four-sentence product description",
        "explain-eval.jsonl": "same, held-out products, two phrasings per product",
        "heldout-statements.jsonl": "`{context, true, distractors, kind, subject}` knowledge probes",
    }
    for name, rows in info["files"].items():
        lines.append(f"| `{name}` | {len(rows)} | {descr[name]} |")
    lines.append(f"| `heldout-corpus.txt` | {len(info['heldout'])} | one held-out document per line |")
    lines += [
        "",
        f"Example row (prompt {info['ex_prompt_tokens']} tokens, completion {info['ex_completion_tokens']} "
        "tokens; the completion starts with a space, the prompt ends with `Assistant:`):",
        "",
        "```json",
        json.dumps(ex, ensure_ascii=False),
        "```",
        "",
        CARD_BEGIN,
        "## SFT check",
        "",
        "Not run yet: run `python scripts/sft_check.py`.",
        CARD_END,
        "",
        "## Rebuild",
        "",
        "```bash",
        "python scripts/build_tiny_model.py   # data, tokenizer, pretraining, evaluation, this card, SFT check",
        "python scripts/sft_check.py          # only the SFT section of this card",
        "```",
        "",
        "Options: `--seed` (default 0), `--steps`, `--skip-sft-check`; see `--help`. Rebuilding on another "
        "machine or torch version gives a model of the same quality, not bit-identical weights.",
        "",
    ]
    (MODEL_DIR / "MODEL_CARD.md").write_text("\n".join(lines), encoding="utf-8")


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--docs", type=int, default=40_000, help="pretraining documents")
    ap.add_argument("--heldout-docs", type=int, default=1000)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=60)
    ap.add_argument("--skip-sft-check", action="store_true")
    ap.add_argument(
        "--data-only", action="store_true", help="write the bundled data files only (the model is left as it is)"
    )
    args = ap.parse_args(argv)
    if args.data_only:
        make_data(args.seed, args.docs, args.heldout_docs)
        print(f"wrote the data files in {DATA_DIR}")
        return

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, GPT2Config, GPT2LMHeadModel

    t_build = time.time()
    print("1/5 data", flush=True)
    d = make_data(args.seed, args.docs, args.heldout_docs)

    print("2/5 tokenizer", flush=True)
    tok = train_tokenizer(d["corpus"], args.vocab)
    check_tokenizer(tok)

    print("3/5 pretraining", flush=True)
    x, y = pack_documents(tok, d["corpus"], args.block, seed=args.seed)
    corpus_tokens = int((y != -100).sum()) - len(d["corpus"])  # minus one EOS per document
    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=256,
        n_embd=args.width,
        n_layer=args.layers,
        n_head=args.heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(args.seed)
    model = GPT2LMHeadModel(config)
    load_before = os.getloadavg()[0]
    pre = pretrain(model, x, y, args.steps, args.batch_size, args.lr, args.warmup, args.seed, pad_id=tok.pad_token_id)

    load_after = os.getloadavg()[0]
    print("4/5 save", flush=True)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        do_sample=False,
        max_new_tokens=32,
    )
    # Write into a fresh temporary folder, then move the files in one by one (each move is atomic),
    # and drop stale files: anyone loading the model meanwhile sees old or new files, never none.
    tmp = MODEL_DIR.with_name(MODEL_DIR.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    make_tokenizer_config_portable(tmp)
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    written = {f.name for f in tmp.iterdir()}
    for name in written:
        os.chmod(tmp / name, 0o644)  # some writers create 0600 files
        os.replace(tmp / name, MODEL_DIR / name)
    for f in MODEL_DIR.iterdir():
        if f.is_file() and f.name not in written | {"MODEL_CARD.md"}:
            f.unlink()
    tmp.rmdir()

    print("5/5 evaluate and write the card", flush=True)
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR).eval()
    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    check_tokenizer(tok)
    heldout_nll = corpus_nll(model, tok, d["heldout"])
    statements = statement_accuracy(model, tok, d["files"]["heldout-statements.jsonl"])
    base_em = exact_match(model, tok, load_jsonl(DATA_DIR / "support-eval.jsonl"))
    print(
        f"held-out NLL {heldout_nll['nll']:.3f} (log V {math.log(len(tok)):.3f}); statements "
        f"{statements['correct']}/{statements['n']} {statements['by_kind']}; base EM "
        f"{base_em['exact']}/{base_em['n']}",
        flush=True,
    )
    ex = d["files"]["support-train.jsonl"][0]
    example_text = "The Zephyr Kettle costs 149 dollars."
    info = {
        "config": model.config,
        "tok": tok,
        "seed": args.seed,
        "world": d["world"],
        "n_docs": args.docs,
        "n_unique_docs": len(set(d["corpus"])),
        "corpus_tokens": corpus_tokens,
        "n_blocks": len(x),
        "block": args.block,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "warmup": args.warmup,
        "pretrain": pre,
        "heldout": d["heldout"],
        "heldout_nll": heldout_nll,
        "statements": statements,
        "base_em": base_em,
        "files": d["files"],
        "train_products": d["train_products"],
        "eval_products": d["eval_products"],
        "n_params": sum(p.numel() for p in model.parameters()),
        "transformers": transformers.__version__,
        "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}, `nproc` = {os.cpu_count()}), "
        f"torch {torch.__version__}, torch threads: {torch.get_num_threads()}; 1-minute load "
        f"average {load_before:.1f} before and {load_after:.1f} after pretraining (this job "
        f"accounts for about {torch.get_num_threads()}; the rest is other work on the machine)",
        "tok_example": (example_text, " ".join(f"`{t}`" for t in tok.tokenize(example_text))),
        "ex_prompt_tokens": len(tok(ex["prompt"])["input_ids"]),
        "ex_completion_tokens": len(tok(ex["completion"])["input_ids"]),
        "build_seconds": time.time() - t_build,
    }
    write_card(info)
    print(
        f"wrote {MODEL_DIR} ({folder_size(MODEL_DIR) / 1e6:.2f} MB) in {(time.time() - t_build) / 60:.1f} min",
        flush=True,
    )

    if not args.skip_sft_check:
        subprocess.run([sys.executable, str(Path(__file__).parent / "sft_check.py")], check=True)


if __name__ == "__main__":
    main()
