"""Any causal LM, not only GPT-2: Llama-, Qwen2- and Phi-3-style models, built small from their configs
(random weights, no download), each with a tokenizer and chat template of its family's shape.

Untied output layers, final norms, rotary positions, grouped-query attention, no BOS token (Qwen) and
other module layouts are where the supervised-only head, the parameter groups and the chat spans could
go wrong; each model goes through examples (chat too), scoring, both heads of ``finetune``, gradients
and GradientView.
"""

import copy
import math

import pytest
import torch

import sftviz as sv
from sftviz.gradients import parameter_groups, token_gradients

CORPUS = [
    "The Zephyr Kettle costs 49 dollars and comes in teal.",
    "Question: How much is the lamp?\nAnswer: 12 dollars.",
    "Does the Nova Fan have a warranty? Yes, two years.",
] * 20

LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
PHI3 = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# family: (config class, config kwargs, special tokens, bos, eos, pad, chat template)
FAMILIES = {
    "llama": (
        "LlamaConfig",
        dict(num_key_value_heads=2, tie_word_embeddings=False),
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>", LLAMA3,
    ),
    "qwen2": (
        "Qwen2Config",
        dict(num_key_value_heads=2, tie_word_embeddings=True),
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        None, "<|im_end|>", "<|endoftext|>", CHATML,
    ),
    "phi3": (
        "Phi3Config",
        dict(num_key_value_heads=4, tie_word_embeddings=False, pad_token_id=0),
        ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
        None, "<|end|>", "<|endoftext|>", PHI3,
    ),
}  # fmt: skip


def make_tokenizer(special, bos, eos, pad, template):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    core.train_from_iterator(CORPUS, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=bos, eos_token=eos, pad_token=pad,
        additional_special_tokens=[t for t in special if t not in (bos, eos, pad)],
    )  # fmt: skip
    tok.chat_template = template
    return tok


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    import transformers

    cls_name, extra, special, bos, eos, pad, template = FAMILIES[request.param]
    tok = make_tokenizer(special, bos, eos, pad, template)
    config_cls = getattr(transformers, cls_name)
    cfg = config_cls(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=256, **extra,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    return request.param, model, tok


ROWS = [
    {"prompt": "Question: How much is the lamp?\nAnswer:", "completion": " 12 dollars."},
    {"prompt": "Does the Nova Fan have a warranty?", "completion": " Yes, two years."},
] * 4
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "How much is the lamp?"},
    {"role": "assistant", "content": "12 dollars."},
    {"role": "user", "content": "Colour?"},
    {"role": "assistant", "content": "Teal."},
]


def test_examples_and_chat_spans(family):
    name, _, tok = family
    ex = sv.build_example(tok, **ROWS[0])
    assert ex.segments[-1] == "eos" and ex.labels[-1] == tok.eos_token_id
    assert (ex.segments[0] == "bos") == (tok.bos_token is not None)
    chat = sv.build_example(tok, messages=CHAT)
    trained = tok.decode([t for t, lab in zip(chat.input_ids, chat.labels) if lab != -100])
    end = tok.eos_token  # each family ends an assistant turn with its own end-of-turn token
    assert trained == f"12 dollars.{end}Teal.{end}", name
    assert {"system", "user", "assistant", "end_of_turn"} <= set(chat.segments)


def test_scores_add_up(family):
    _, model, tok = family
    rep = sv.score(model, tok, **ROWS[0])
    assert rep.joint == pytest.approx(rep.marginal + rep.conditional, abs=1e-4)
    assert rep.conditional < 0 and rep.joint <= rep.marginal
    chat = sv.score(model, tok, example=sv.build_example(tok, messages=CHAT))
    assert chat.joint == pytest.approx(chat.marginal + chat.conditional, abs=1e-4)


def test_finetune_both_heads_train_the_same(family):
    name, model, tok = family
    kw = dict(steps=2, batch_size=4, lr=1e-2, seed=0, device="cpu", progress=False, eval_every=None)
    sup = sv.finetune(model, tok, ROWS, 0.1, head="auto", **kw)
    full = sv.finetune(model, tok, ROWS, 0.1, head="full", **kw)
    assert sup.config["head_used"] == "supervised", name  # untied or tied, normed: the plain head is detected
    for a, b in zip(sup.history, full.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3)
        assert a["prompt_nll"] == pytest.approx(b["prompt_nll"], rel=1e-4)
    groups, _ = parameter_groups(model)
    assert groups == ["embeddings", "block_0", "block_1", "head"], name
    assert list(sup.history[0]["grad_norm_groups"]) == groups
    assert all(math.isfinite(r["loss"]) for r in sup.history)
    chat = sv.finetune(model, tok, [{"messages": CHAT}] * 4, **kw)
    assert chat.status == "finished"


def test_gradients_and_gradient_view(family):
    _, model, tok = family
    from sftviz import widgets as W

    ex = sv.build_example(tok, **ROWS[0])
    g = token_gradients(copy.deepcopy(model), tok, ex)
    assert g.input_grad_masked[-1] == 0.0  # the prediction at the last token is never scored
    assert g.input_grad_masked[1] > 0.0  # prompt tokens get gradient as context
    assert set(g.layer_norms_masked) == {"embeddings", "block_0", "block_1", "head"}
    view = W.GradientView(model, tok, ex)
    assert view.error == "" and len(view.tokens) == len(ex)
