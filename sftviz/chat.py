"""Conversations as training examples: which tokens are the assistant's, found from the chat template.

A conversation is rendered with the tokenizer's chat template into one token sequence. Three steps
turn it into an :class:`~sftviz.data.Example`, each a function of its own:

1. **Spans** (:func:`find_turns`): the tokens of each message are found by rendering prefixes of the
   conversation and comparing token ids, never by searching the text. The template must be
   *prefix-stable* (a shorter conversation renders to a prefix of a longer one).
2. **Labels** (:func:`label_turns`): every token gets a segment ("system", "user", "assistant",
   "end_of_turn" or "template" for role markers and control text), and the assistant turns being
   trained (all, or the last) are the "completion".
3. **Truncation** (:func:`truncate_left`): a conversation longer than ``max_length`` loses whole tokens
   from the left, after the BOS, and never from a trained turn.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from .checks import check_text
from .data import Example, assemble_example, bos_id, encode

#: The roles a message may have. A new role also needs a display entry in ``sftviz.views.vocab``.
CHAT_ROLES = ("system", "user", "assistant")
TRAIN_ON = ("all", "last")


def check_messages(messages: object) -> list[dict]:
    """``messages`` as a list of ``{"role", "content"}`` dicts that alternate user and assistant."""
    if not isinstance(messages, (list, tuple)):
        raise TypeError(
            f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {type(messages).__name__}."
        )
    if not messages:
        raise ValueError("messages is empty; give at least a user message and an assistant reply.")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"Message {i} must be a dict with 'role' and 'content' keys; got {m!r:.80}.")
        if m["role"] not in CHAT_ROLES:
            raise ValueError(f"Message {i} has unknown role {m['role']!r}; use one of {', '.join(CHAT_ROLES)}.")
        check_text(m["content"], f"message {i} content")
        if m["role"] == "system" and i != 0:
            raise ValueError(f"Message {i} is a system message; a system message may only come first.")
    body = [m["role"] for m in messages if m["role"] != "system"]
    if not body or body[0] != "user":
        raise ValueError("After an optional system message the conversation must start with a user message.")
    for a, b in itertools.pairwise(body):
        if a == b:
            raise ValueError(f"Two {a} messages in a row: user and assistant turns must alternate.")
    if "assistant" not in body:
        raise ValueError("The conversation has no assistant message, so there is nothing to train.")
    return [dict(m) for m in messages]


def render_ids(tok: Any, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    """Token ids of ``messages`` rendered with the tokenizer's chat template."""
    text = tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)
    return encode(tok, text)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


# --------------------------------------------------------------------------------------------
# 1. Spans
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    """Where one message sits in the rendered conversation (token positions, end exclusive).

    ``start``..``end`` is everything the message adds to the conversation before it. ``body`` is the
    part that is the message's own: for an assistant turn, the tokens generation would produce (its
    text and its end-of-turn token, not template text after that); for other turns, the content
    without the role header and footer.
    """

    index: int
    role: str
    start: int
    end: int
    body: tuple[int, int]


NOT_PREFIX_STABLE = (
    "This chat template is not prefix-stable (rendering a shorter conversation does not give a "
    "prefix of the longer one), so sftviz cannot tell exactly which tokens are the assistant's. "
    "Templates that rewrite earlier turns (e.g. strip reasoning) need a '{% generation %}' "
    "template and return_assistant_tokens_mask instead."
)


def find_turns(tok: Any, messages: list[dict], full: list[int]) -> list[Turn]:
    """The :class:`Turn` of every message of ``messages``, whose full rendering is ``full``."""
    special = set(tok.all_special_ids)
    turns, prev_end = [], 0
    for i, m in enumerate(messages):
        # The ids up to and including message i must extend the ids up to message i - 1.
        upto = render_ids(tok, messages[: i + 1])
        if m["role"] == "assistant":
            head = render_ids(tok, messages[:i], add_generation_prompt=True)
        else:
            head = render_ids(tok, messages[:i]) if i else []
        if full[: len(upto)] != upto or upto[: len(head)] != head:
            raise ValueError(NOT_PREFIX_STABLE)
        start, end = max(len(head), prev_end), len(upto)
        if m["role"] == "assistant":
            # Template text after the turn's end-of-turn token (ChatML's newline after <|im_end|>) is
            # never generated: generation stops at the end-of-turn token. It is not the turn's body.
            specials = [t for t in range(start + 1, end) if full[t] in special]
            body = (start, specials[-1] + 1 if specials else end)
        else:
            # The turn's own header and footer (role names, newlines) are the tokens it shares with the
            # same turn rendered with empty content; only display labels depend on this, not the mask.
            empty = render_ids(tok, [*messages[:i], {**m, "content": ""}])
            lo = max(start, _common_prefix(empty, upto))
            body = (lo, end - _common_prefix(empty[lo:][::-1], upto[lo:][::-1]))
        turns.append(Turn(i, m["role"], start, end, body))
        prev_end = end
    return turns


# --------------------------------------------------------------------------------------------
# 2. Labels
# --------------------------------------------------------------------------------------------


def label_turns(
    full: list[int], turns: list[Turn], special: set[int], train_on: str = "all"
) -> tuple[list[str], list[int]]:
    """Segments of every token, and the completion mask (1 on the assistant turns being trained)."""
    segs, cmask = ["template"] * len(full), [0] * len(full)
    last_assistant = max(t.index for t in turns if t.role == "assistant")
    for turn in turns:
        lo, hi = turn.body
        trained = train_on == "all" or turn.index == last_assistant
        for t in range(turn.start, turn.end):
            is_special = full[t] in special
            if turn.role == "assistant":
                if t < hi:
                    segs[t] = "end_of_turn" if is_special else "assistant"
                    cmask[t] = int(trained)
            elif not is_special and lo <= t < hi:
                segs[t] = turn.role
    return segs, cmask


# --------------------------------------------------------------------------------------------
# 3. BOS and truncation
# --------------------------------------------------------------------------------------------


def prepend_bos(
    full: list[int], segs: list[str], cmask: list[int], bos: int | None
) -> tuple[list[int], list[str], list[int]]:
    """Prepend ``bos`` unless the template already starts with it (then that token is the BOS)."""
    if bos is None or not full:
        return full, segs, cmask
    if full[0] == bos:
        return full, ["bos", *segs[1:]], cmask
    return [bos, *full], ["bos", *segs], [0, *cmask]


def truncate_left(
    full: list[int], segs: list[str], cmask: list[int], max_length: int | None, notes: list[str]
) -> tuple[list[int], list[str], list[int]]:
    """Cut whole tokens from the left after the BOS to fit ``max_length``, never from a trained turn."""
    if max_length is None or len(full) <= max_length:
        return full, segs, cmask
    n_front = 1 if segs and segs[0] == "bos" else 0
    cut = len(full) - max_length
    if n_front + cut > cmask.index(1) - 1:
        raise ValueError(
            f"The conversation is {len(full)} tokens; fitting max_length={max_length} would cut into "
            "an assistant turn. Raise max_length, or shorten or drop early turns."
        )
    notes.append(f"The conversation was cut from the left by {cut} tokens to fit max_length={max_length}.")

    def keep(xs: list) -> list:
        return xs[:n_front] + xs[n_front + cut :]

    return keep(full), keep(segs), keep(cmask)


def build_chat(
    tok: Any,
    messages: object,
    *,
    masking: str | float = "completion",
    add_bos: bool | str = "auto",
    max_length: int | None = None,
    train_on: str = "all",
) -> Example:
    """The :class:`~sftviz.data.Example` of a conversation (``sv.build_example(tok, messages=...)``)."""
    messages = check_messages(messages)
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on must be 'all' (every assistant turn) or 'last'; got {train_on!r}.")
    if getattr(tok, "chat_template", None) is None:
        raise ValueError(
            "This tokenizer has no chat template, so messages cannot be rendered. Use prompt=/completion=, "
            "or set tok.chat_template."
        )
    full = render_ids(tok, messages)
    segs, cmask = label_turns(full, find_turns(tok, messages, full), set(tok.all_special_ids), train_on)
    notes: list[str] = []
    bos = bos_id(tok, add_bos)
    full, segs, cmask = prepend_bos(full, segs, cmask, bos)
    if bos is None:
        notes.append("This tokenizer has no BOS token: the first token of the conversation is not scored.")
    full, segs, cmask = truncate_left(full, segs, cmask, max_length, notes)
    return assemble_example(tok, full, segs, cmask, masking, notes=notes, source={"messages": messages})
