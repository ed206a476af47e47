"""Shared fixtures: small tokenizers and models built offline, in seconds."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

CORPUS = [
    "The Zephyr Kettle costs 49 dollars and comes in teal.",
    "Question: How much is the lamp?\nAnswer: 12 dollars.",
    "Customer: Does the Nova Fan have a warranty?\nAssistant: Yes, two years.",
    "Paris is the capital of France. Two plus three is five.",
    "The quick brown fox jumps over the lazy dog. Answer: yes. Answer:yes",
] * 20

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_gpt2_style_tokenizer(vocab_size=400):
    """A byte-level BPE tokenizer shaped like GPT-2's: <|endoftext|> is BOS, EOS and UNK; no pad; ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    core.train_from_iterator(CORPUS, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tok.chat_template = CHATML
    return tok


def make_tiny_gpt2(vocab_size, seed=0, n_positions=128):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=n_positions, bos_token_id=0, eos_token_id=0
    )
    model = GPT2LMHeadModel(cfg)
    model.eval()
    return model


@pytest.fixture(autouse=True)
def _session_run_cache_only_for_notebooks(request, monkeypatch):
    """scripts/test.sh gives the session one run cache ($SFTVIZ_RUN_CACHE) so that the notebooks' deterministic
    fine-tunes are trained once. It is for the tests that run whole notebooks (marked ``run_cache``); every
    other test trains for real, and gets a run with its model."""
    if request.node.get_closest_marker("run_cache") is None:
        monkeypatch.delenv("SFTVIZ_RUN_CACHE", raising=False)


@pytest.fixture(scope="session")
def gpt2_tok():
    return make_gpt2_style_tokenizer()


@pytest.fixture()
def gpt2_tok_padded(gpt2_tok):
    import copy

    from sftviz.modeling import ensure_pad_token

    tok = copy.deepcopy(gpt2_tok)
    ensure_pad_token(tok)
    return tok


@pytest.fixture(scope="session")
def tiny_model(gpt2_tok):
    return make_tiny_gpt2(len(gpt2_tok))
