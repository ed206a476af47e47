"""Tests of the bundled tiny model, its tokenizer, the bundled data files and the world generator
(``scripts/world.py``, a build-time module outside the package).

The model and tokenizer are loaded with the transformers Auto classes straight from the asset
folder, offline, without any other sftviz module, so these tests check the files themselves.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # the world generator is a build-time module, not part of sftviz

import world as W  # noqa: E402

MODEL_DIR = ROOT / "sftviz" / "assets" / "sftviz-tiny"
DATA_DIR = ROOT / "sftviz" / "assets" / "data"
CHAT_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]


def load_jsonl(name: str) -> list[dict]:
    with open(DATA_DIR / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MODEL_DIR)


@pytest.fixture(scope="module")
def model():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(MODEL_DIR).eval()


# ------------------------------------------------------------------------------------------------
# files and loading
# ------------------------------------------------------------------------------------------------


def test_files_are_safetensors_and_small():
    names = {f.name for f in MODEL_DIR.iterdir()}
    assert "model.safetensors" in names
    assert "config.json" in names and "tokenizer.json" in names and "MODEL_CARD.md" in names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    assert sum(f.stat().st_size for f in MODEL_DIR.iterdir() if f.is_file()) <= 10 * 1024 * 1024


def test_model_loads_offline_and_has_1_to_3m_params(model, tok):
    n = sum(p.numel() for p in model.parameters())
    assert 1_000_000 <= n <= 3_000_000
    assert model.config.vocab_size == len(tok)
    assert model.config.bos_token_id == tok.bos_token_id
    assert model.config.eos_token_id == tok.eos_token_id
    assert model.config.pad_token_id == tok.pad_token_id
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id


# ------------------------------------------------------------------------------------------------
# tokenizer
# ------------------------------------------------------------------------------------------------


def test_special_tokens_are_set_and_distinct(tok):
    ids = [tok.bos_token_id, tok.eos_token_id, tok.pad_token_id] + tok.convert_tokens_to_ids(CHAT_TOKENS)
    assert tok.bos_token == "<|bos|>" and tok.eos_token == "<|eos|>" and tok.pad_token == "<|pad|>"
    assert None not in ids and tok.unk_token_id not in ids
    assert len(set(ids)) == len(ids), "special token ids must be distinct (pad != eos)"
    assert all(0 <= i < len(tok) for i in ids)
    for t in [tok.bos_token, tok.eos_token, tok.pad_token] + CHAT_TOKENS:
        assert tok.tokenize(t) == [t], f"{t} must be a single token"


def test_tokenizer_adds_no_special_tokens_by_itself(tok):
    text = "The Zephyr Kettle costs 49 dollars."
    plain = tok(text, add_special_tokens=False)["input_ids"]
    assert tok(text)["input_ids"] == plain
    assert tok(text, add_special_tokens=True)["input_ids"] == plain
    special = set(tok.all_special_ids)
    assert not special & set(plain)
    assert tok.decode(plain) == text


def test_numbers_split_into_subword_tokens(tok):
    assert len(tok(" 149", add_special_tokens=False)["input_ids"]) == 3


def test_chat_template(tok):
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "How much is the Zephyr Kettle?"},
        {"role": "assistant", "content": "49 dollars."},
    ]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text == (
        "<|bos|><|system|>Be brief.<|end|><|user|>How much is the Zephyr Kettle?<|end|><|assistant|>49 dollars.<|end|>"
    )
    ids = tok.apply_chat_template(msgs, tokenize=True)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert ids.count(tok.convert_tokens_to_ids("<|end|>")) == 3
    for t in ["<|system|>", "<|user|>", "<|assistant|>"]:
        assert ids.count(tok.convert_tokens_to_ids(t)) == 1
    assert tok.decode(ids) == text  # round trip
    assert ids == tok(text, add_special_tokens=False)["input_ids"]

    gen = tok.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True)
    assert gen.endswith("<|user|>How much is the Zephyr Kettle?<|end|><|assistant|>")
    assert not tok.apply_chat_template(msgs[:2], tokenize=False).endswith("<|assistant|>")


# ------------------------------------------------------------------------------------------------
# quality
# ------------------------------------------------------------------------------------------------


@torch.no_grad()
def _continuation_logprobs(model, tok, pairs):
    """log Pr(continuation | BOS + context) for each (context, continuation) pair."""
    seqs, spans = [], []
    for ctx, cont in pairs:
        c = tok(ctx, add_special_tokens=False)["input_ids"]
        k = tok(cont, add_special_tokens=False)["input_ids"]
        seqs.append([tok.bos_token_id] + c + k)
        spans.append((1 + len(c), 1 + len(c) + len(k)))
    width = max(map(len, seqs))
    ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in seqs])
    att = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    logp = torch.log_softmax(model(input_ids=ids, attention_mask=att).logits.float(), -1)
    return [float(logp[i, a - 1 : b - 1].gather(-1, ids[i, a:b, None]).sum()) for i, (a, b) in enumerate(spans)]


def test_heldout_statement_accuracy(model, tok):
    items = load_jsonl("heldout-statements.jsonl")
    assert len(items) >= 100
    correct = 0
    for start in range(0, len(items), 16):
        chunk = items[start : start + 16]
        pairs = [(it["context"], c) for it in chunk for c in [it["true"]] + it["distractors"]]
        scores = iter(_continuation_logprobs(model, tok, pairs))
        for it in chunk:
            s = [next(scores) for _ in range(1 + len(it["distractors"]))]
            correct += s[0] > max(s[1:])
    assert correct / len(items) >= 0.90, f"{correct}/{len(items)}"


@torch.no_grad()
def test_heldout_corpus_nll_well_below_uniform(model, tok):
    docs = (DATA_DIR / "heldout-corpus.txt").read_text(encoding="utf-8").splitlines()[:300]
    seqs = [[tok.bos_token_id] + tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for d in docs if d]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in seqs])
    att = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    logp = torch.log_softmax(model(input_ids=ids, attention_mask=att).logits[:, :-1].float(), -1)
    tok_logp = logp.gather(-1, ids[:, 1:, None])[..., 0]
    nll = float(-tok_logp[att[:, 1:].bool()].mean())
    assert nll < 0.5 * math.log(len(tok)), nll


# ------------------------------------------------------------------------------------------------
# data files
# ------------------------------------------------------------------------------------------------


def _products_in(rows: list[str], names: list[str]) -> set[str]:
    return {n for n in names for r in rows if n in r}


def test_support_files_rows_and_split(tok):
    names = [p.name for p in W.make_world(0).products]
    train, evals = load_jsonl("support-train.jsonl"), load_jsonl("support-eval.jsonl")
    assert len(train) >= 100 and len(evals) >= 30
    for r in train + evals:
        assert set(r) == {"prompt", "completion"}
        assert isinstance(r["prompt"], str) and isinstance(r["completion"], str)
        assert r["prompt"].endswith("Assistant:") and r["completion"].startswith(" ")
    train_p = _products_in([r["prompt"] for r in train], names)
    eval_p = _products_in([r["prompt"] for r in evals], names)
    assert train_p and eval_p and not train_p & eval_p

    def n_tokens(s):
        return len(tok(s, add_special_tokens=False)["input_ids"])

    for rows in (train, evals):
        p = sum(n_tokens(r["prompt"]) for r in rows) / len(rows)
        c = sum(n_tokens(r["completion"]) for r in rows) / len(rows)
        assert p >= 3 * c, (p, c)
        assert all(2 <= n_tokens(r["completion"]) <= 6 for r in rows)


def test_chat_files_rows_and_split(tok):
    names = [p.name for p in W.make_world(0).products]
    train, evals = load_jsonl("support-chat-train.jsonl"), load_jsonl("support-chat-eval.jsonl")
    assert train and evals
    for conv in train + evals:
        assert set(conv) == {"messages"}
        msgs = conv["messages"]
        assert msgs[0]["role"] == "system"
        roles = [m["role"] for m in msgs[1:]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and 2 <= len(roles) <= 6
        assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in msgs)
        tok.apply_chat_template(msgs, tokenize=False)
    text = lambda convs: [m["content"] for c in convs for m in c["messages"]]  # noqa: E731
    train_p, eval_p = _products_in(text(train), names), _products_in(text(evals), names)
    assert train_p and eval_p and not train_p & eval_p
    support_train = _products_in([r["prompt"] for r in load_jsonl("support-train.jsonl")], names)
    assert train_p <= support_train and not eval_p & support_train


def test_heldout_files():
    items = load_jsonl("heldout-statements.jsonl")
    for it in items:
        assert isinstance(it["context"], str) and isinstance(it["true"], str)
        assert isinstance(it["distractors"], list) and it["distractors"]
        assert it["true"] not in it["distractors"]
        assert all(isinstance(d, str) and d.startswith(" ") for d in it["distractors"])
        assert it["true"].startswith(" ")
    docs = [d for d in (DATA_DIR / "heldout-corpus.txt").read_text(encoding="utf-8").splitlines() if d]
    assert len(docs) >= 100
    train_docs = set(W.pretraining_corpus(W.make_world(0), 40_000, seed=0))
    assert not train_docs & set(docs), "held-out corpus documents must not be training documents"
    corpus_text = "\n".join(train_docs)
    assert not any(it["context"] in corpus_text for it in items), "eval templates leaked"


def test_bundled_data_matches_the_generator():
    world = W.make_world(0)
    train_p, eval_p = W.split_products(world)
    assert load_jsonl("support-train.jsonl") == W.support_pairs(world, train_p, seed=0)
    assert load_jsonl("support-eval.jsonl") == W.support_pairs(world, eval_p, seed=1, phrasings=1)
    assert load_jsonl("heldout-statements.jsonl") == W.heldout_statements(world, seed=0)
    assert load_jsonl("explain-train.jsonl") == W.explain_pairs(world, train_p, seed=0)
    assert load_jsonl("explain-eval.jsonl") == W.explain_pairs(world, eval_p, seed=1, phrasings=2)
    names = [p.name for p in eval_p]
    assert _products_in([r["prompt"] for r in load_jsonl("explain-eval.jsonl")], names) == set(names)


# ------------------------------------------------------------------------------------------------
# the generator
# ------------------------------------------------------------------------------------------------


def test_generator_is_deterministic():
    a, b, c = W.make_world(0), W.make_world(0), W.make_world(1)
    assert a == b and a != c
    assert W.pretraining_corpus(a, 500, seed=0) == W.pretraining_corpus(b, 500, seed=0)
    assert W.pretraining_corpus(a, 500, seed=0) != W.pretraining_corpus(a, 500, seed=1)
    tp, ep = W.split_products(a)
    assert W.support_pairs(a, tp, seed=3) == W.support_pairs(b, tp, seed=3)
    assert W.support_chat(a, ep, seed=3) == W.support_chat(b, ep, seed=3)
    assert W.heldout_statements(a, seed=0) == W.heldout_statements(b, seed=0)


def test_generator_does_not_touch_global_random_state():
    import random

    random.seed(123)
    expected = random.random()
    random.seed(123)
    W.pretraining_corpus(W.make_world(5), 200, seed=5)
    assert random.random() == expected


def test_world_shape():
    world = W.make_world(0)
    assert len(world.products) == 40
    assert len({p.name for p in world.products}) == 40
    assert all(len(p.name.split()) == 2 for p in world.products)
    assert 90 <= len(world.general_facts) <= 110
    tp, ep = W.split_products(world)
    assert len(tp) == 30 and len(ep) == 10
    corpus = W.pretraining_corpus(world, 2000, seed=0)
    assert not any("Customer:" in d or "Assistant:" in d or "?" in d for d in corpus)


def test_hf_loss_is_named_so_it_does_not_warn():
    """sv.load_model names HF's causal-LM loss, so model(..., labels=...) does not log 'loss_type=None'."""
    import logging

    from transformers.utils import logging as hf_logging

    import sftviz as sv

    model, tok = sv.load_model(device="cpu")
    assert model.loss_type == "ForCausalLM"

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    keep, logger = Keep(), hf_logging.get_logger("transformers")  # HF's logger does not propagate to caplog
    logger.addHandler(keep)
    try:
        ids = torch.tensor([tok("Hello there.")["input_ids"]])
        out = model(input_ids=ids, labels=ids)
    finally:
        logger.removeHandler(keep)
    assert torch.isfinite(out.loss) and not any("loss_type" in m for m in keep.messages)
