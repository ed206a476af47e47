"""Chat templates in the shapes of the families students meet, to X-ray a pipeline on them offline.

The template texts are this project's own; what they reproduce are facts of each format: the header
and end-of-turn tokens, which token is the tokenizer's EOS, whether the tokenizer adds a BOS of its
own, a default system prompt written when there is none, reasoning stripped from earlier turns.
Each :class:`Shape` names its special tokens so a tokenizer can be built for it (the tests train a
small byte-level BPE one; a real tokenizer of the family works the same way).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    """A chat format.

    Attributes:
        name: its name here.
        template: the Jinja chat template.
        special: its control tokens.
        bos, eos, pad: the tokenizer's BOS, EOS and pad tokens (None: it has none).
        adds_bos: whether the tokenizer itself prepends the BOS when it tokenizes text.
        about: what the format does that the X-ray can see.
    """

    name: str
    template: str
    special: tuple[str, ...]
    bos: str | None
    eos: str
    pad: str | None
    adds_bos: bool
    about: str


_CHATML_TURN = "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
_GEN_CHATML = "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"

SHAPES: dict[str, Shape] = {
    s.name: s
    for s in (
        Shape(
            "llama3",
            "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
            "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
            "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
            ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
            "<|begin_of_text|>", "<|end_of_text|>", None, True,
            "turns end with <|eot_id|> but the first release's tokenizer EOS is <|end_of_text|>; the template "
            "writes the BOS and the tokenizer adds one too",
        ),
        Shape(
            "qwen2.5",
            "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}<|im_start|>system\n"
            "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n{% endif %}"
            + _CHATML_TURN + "{% endfor %}" + _GEN_CHATML,
            ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
            None, "<|im_end|>", "<|endoftext|>", False,
            "ChatML; a default system prompt is written into every conversation that has none; no BOS",
        ),
        Shape(
            "qwen3",
            "{% set ns = namespace(last=-1) %}{% for m in messages %}{% if m['role'] == 'user' %}"
            "{% set ns.last = loop.index0 %}{% endif %}{% endfor %}"
            "{% for m in messages %}{% if m['role'] == 'assistant' %}{% set text = m['content'] %}"
            "{% if '</think>' in text %}{% set reasoning = text.split('</think>')[0].split('<think>')[-1].strip() %}"
            "{% set text = text.split('</think>')[-1].lstrip() %}{% else %}{% set reasoning = '' %}{% endif %}"
            "<|im_start|>assistant\n{% if loop.index0 > ns.last %}<think>\n{{ reasoning }}\n</think>\n\n{% endif %}"
            "{{ text }}<|im_end|>\n{% else %}" + _CHATML_TURN + "{% endif %}{% endfor %}" + _GEN_CHATML,
            ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"),
            None, "<|im_end|>", "<|endoftext|>", False,
            "ChatML; reasoning is stripped from assistant turns before the last user message (not "
            "prefix-preserving), and the turns after it get a <think> block, empty when there is no reasoning",
        ),
        Shape(
            "mistral",
            "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
            "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}{% else %}"
            "{{ raise_exception('only user and assistant roles are supported') }}{% endif %}{% endfor %}",
            ("<s>", "</s>", "[INST]", "[/INST]"),
            "<s>", "</s>", None, True,
            "[INST] ... [/INST] around user turns; an assistant turn ends with the EOS </s>; no system role",
        ),
        Shape(
            "gemma",
            "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
            "{{ raise_exception('System role not supported') }}{% endif %}"
            "{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
            "<start_of_turn>{{ role }}\n{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
            "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}",
            ("<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"),
            "<bos>", "<eos>", "<pad>", True,
            "the assistant is called 'model'; turns end with <end_of_turn>, not the EOS <eos>; no system role",
        ),
        Shape(
            "phi3",
            "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>\n{% else %}{{ eos_token }}{% endif %}",
            ("<s>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
            "<s>", "<|endoftext|>", "<|endoftext|>", False,
            "turns end with <|end|>; the EOS <|endoftext|> is also the pad token and closes the conversation",
        ),
    )
}  # fmt: skip
