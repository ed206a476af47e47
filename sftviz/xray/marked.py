"""A copy of a chat template with ``{% generation %}`` markers, for TRL's ``assistant_only_loss``.

TRL (and ``apply_chat_template(return_assistant_tokens_mask=True)``) can only mask a conversation
whose template marks the assistant's text with ``{% generation %} ... {% endgeneration %}``. Most
templates do not (TRL #5471, transformers #34172). sftviz finds each message's header, content and
footer by rendering (:mod:`sftviz.chat`), so it can write a template that renders the same text with
the markers around what an assistant generates: its content and its end-of-turn token.

The copy is built from probe conversations, and then checked: every row given (and the probes) must
render to exactly the same text with the copy as with the original, else it is refused with the row
that differs. Templates whose messages do not render on their own (Gemma folds the system prompt into
the first user turn; Qwen3 rewrites earlier turns) are refused.
"""

from __future__ import annotations

import json
from typing import Any

from ..chat import local_layout, renderer

PROBE = "\u2063{}\u2063"  # invisible separators around each probe's content, so it is found exactly


def _probe(roles: list[str]) -> list[dict]:
    return [{"role": r, "content": PROBE.format(f"{r[0]}{k}")} for k, r in enumerate(roles)]


def _parts(tok: Any, messages: list[dict], k: int) -> tuple[str, str]:
    """Message ``k``'s header and footer in the rendering of ``messages``."""
    layout = local_layout(tok, messages)
    if layout is None:
        raise ValueError(
            "this chat template does not render each message on its own (it merges or rewrites turns), so "
            "sftviz cannot write a marked copy of it; add {% generation %} markers by hand."
        )
    text, (lo, hi) = layout.text, layout.contents[k]
    return text[layout.bounds[k] : lo], text[hi : layout.bounds[k + 1]]


def _lit(s: str) -> str:
    """``s`` as a Jinja expression that prints it."""
    return "{{ " + json.dumps(s) + " }}" if s else ""


def _split_end(tok: Any, footer: str) -> tuple[str, str]:
    """An assistant footer as (what generation produces: up to its last control token, the rest)."""
    cut = -1
    for special in tok.all_special_tokens:
        at = footer.rfind(special)
        if at >= 0:
            cut = max(cut, at + len(special))
    return (footer[:cut], footer[cut:]) if cut >= 0 else ("", footer)


def marked_template(tok: Any, rows: list[dict] | None = None) -> str:
    """A copy of ``tok.chat_template`` with ``{% generation %}`` around each assistant reply.

    Args:
        tok: a tokenizer with a chat template.
        rows: conversations (``{"messages": [...]}`` rows) the copy must render exactly as the
            original does; the probes are always checked.

    Returns:
        The template text: set ``tok.chat_template`` to it, then TRL's ``assistant_only_loss=True``
        trains each assistant's content and end-of-turn token, as sftviz does.
    """
    if getattr(tok, "chat_template", None) is None:
        raise ValueError("this tokenizer has no chat template to mark.")
    if "{% generation %}" in tok.chat_template or "{%- generation" in tok.chat_template:
        return tok.chat_template
    two = ["user", "assistant", "user", "assistant"]
    head_u, foot_u = _parts(tok, _probe(two), 2)
    head_a, foot_a = _parts(tok, _probe(two), 3)
    first_u, _ = _parts(tok, _probe(two), 0)
    if not first_u.endswith(head_u):
        raise ValueError("the first user turn's header does not end with the others'; mark this template by hand.")
    prefix_plain = first_u[: len(first_u) - len(head_u)]
    end_a, rest_a = _split_end(tok, foot_a)
    branches = [("user", head_u, foot_u), ("assistant", None, None)]
    system = _system_parts(tok, two)
    tool = _tool_parts(tok)
    if tool:
        branches.append(("tool", *tool))
    render, closing = renderer(tok)
    gen = render(_probe(two[:3]), add_generation_prompt=True)[len(render(_probe(two[:3]))) :]
    body = "{%- for m in messages -%}"
    if system:
        body += "{%- if loop.first and m['role'] == 'system' -%}" + _lit(system[0]) + "{{ m['content'] }}"
        body += _lit(system[1]) + "{%- else -%}"
    body += "{%- if loop.first -%}" + _lit(prefix_plain) + "{%- endif -%}"
    for n, (role, head, foot) in enumerate(branches):
        body += ("{%- if" if n == 0 else "{%- elif") + f" m['role'] == {json.dumps(role)} -%}}"
        if role == "assistant":
            body += _lit(head_a) + "{% generation %}{{ m['content'] }}" + _lit(end_a) + "{% endgeneration %}"
            body += _lit(rest_a)
        else:
            body += _lit(head) + "{{ m['content'] }}" + _lit(foot)
    body += "{%- else -%}{{ raise_exception('the marked copy has no rule for role ' + m['role']) }}{%- endif -%}"
    body += "{%- endif -%}" if system else ""
    body += (
        "{%- endfor -%}{%- if add_generation_prompt -%}" + _lit(gen) + "{%- else -%}" + _lit(closing) + "{%- endif -%}"
    )
    _check(tok, body, rows)
    return body


def _system_parts(tok: Any, two: list[str]) -> tuple[str, str] | None:
    try:
        return _parts(tok, _probe(["system", *two]), 0)
    except Exception:  # noqa: BLE001 -- a template without system messages
        return None


def _tool_parts(tok: Any) -> tuple[str, str] | None:
    try:
        return _parts(tok, _probe(["user", "assistant", "tool", "assistant"]), 2)
    except Exception:  # noqa: BLE001 -- a template without tool messages
        return None


def _check(tok: Any, template: str, rows: list[dict] | None) -> None:
    """Every probe and row renders to the same text with ``template`` as with the original."""
    from .rows import conversation

    probes = [["user", "assistant"], ["user", "assistant", "user", "assistant"], ["system", "user", "assistant"]]
    cases = [("a probe conversation", _probe(roles)) for roles in probes]
    for i, row in enumerate(rows or []):
        chat = conversation(row)
        if chat is not None:
            cases.append((f"row {i}", chat[0]))
    for which, messages in cases:
        for gen in (False, True):
            try:
                want = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
            except Exception:  # noqa: BLE001 -- the original refuses this case (no system role, say)
                continue
            got = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen, chat_template=template)
            if got != want:
                at = next((j for j, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
                raise ValueError(
                    f"the marked copy renders {which} differently from the original (at character {at}: "
                    f"{want[max(0, at - 20) : at + 30]!r} vs {got[max(0, at - 20) : at + 30]!r}); mark this "
                    "template by hand."
                )
