"""Conversations as training examples: which tokens are the assistant's, found from the chat template.

A conversation is rendered with the tokenizer's chat template into one token sequence. Three steps
turn it into an :class:`~sftviz.data.Example`, each a function of its own:

1. **Spans** (:func:`find_turns`): where each message sits, found by rendering the template and
   comparing, never by searching the text for role names. The template must be *prefix-stable* (a
   shorter conversation renders to a prefix of a longer one). Most templates render each message on its
   own (a header, the content, a footer): then one rendering of each message and one tokenization of the
   whole conversation suffice, and building an example takes time linear in its length. Other templates
   are handled by rendering every prefix of the conversation (quadratic, exact).
2. **Labels** (:func:`label_turns`): every token gets a segment ("system", "user", "assistant",
   "end_of_turn" or "template" for role markers and control text), and the assistant turns being
   trained (all, or the last) are the "completion".
3. **Truncation** (:func:`truncate_left`): a conversation longer than ``max_length`` loses whole tokens
   from the left, after the BOS, and never from a trained turn.

Message contents are user text: control-token text in them (``"<|end|>"``) is tokenized as characters,
never as the control token, unless ``parse_special_tokens=True``.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from typing import Any

from .checks import check_text
from .data import Example, assemble_example, bos_id, has_special_text

#: The roles a message may have; each is shown with its entry in ``sftviz.views.vocab`` ("tool" as "tool
#: output"). A "tool" message (a tool's result) follows an assistant turn (the call) or another tool message.
CHAT_ROLES = ("system", "user", "assistant", "tool")
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
        if a == b and a != "tool":
            raise ValueError(f"Two {a} messages in a row: user and assistant turns must alternate.")
        if b == "tool" and a not in ("assistant", "tool"):
            raise ValueError(
                "A tool message must follow the assistant turn that called the tool (or another tool message)."
            )
    if "assistant" not in body:
        raise ValueError("The conversation has no assistant message, so there is nothing to train.")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def template_text(tok: Any, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """``messages`` rendered by the tokenizer's chat template, as text."""
    return tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)


# --------------------------------------------------------------------------------------------
# Tokens of a rendered conversation, with where each one starts in the text
# --------------------------------------------------------------------------------------------


@dataclass
class Tokens:
    """Token ids of a rendered conversation and each token's character span in the text."""

    ids: list[int]
    starts: list[int]
    ends: list[int]

    def at(self, char: int, what: str) -> int:
        """The index of the token that starts at ``char`` (a turn boundary must fall between tokens)."""
        j = bisect.bisect_left(self.starts, char)
        if j < len(self.starts) and self.starts[j] == char:
            return j
        if j == len(self.starts) and (not self.ends or self.ends[-1] <= char):
            return j
        raise ValueError(f"{NOT_PREFIX_STABLE} (A token runs across the {what}.)")

    def first_from(self, char: int) -> int:
        """The index of the first token that starts at or after ``char``."""
        return bisect.bisect_left(self.starts, char)


def tokenize_rendered(tok: Any, text: str, contents: list[tuple[int, int]], parse_special: bool) -> Tokens:
    """Tokenize a rendered conversation: the template's text with control tokens recognised, and each
    message's content (``contents``: character spans) as plain text unless ``parse_special``."""
    spans = [] if parse_special else [(a, b) for a, b in contents if has_special_text(tok, text[a:b])]
    pieces, pos = [], 0
    for a, b in spans:
        pieces += [(pos, a, False), (a, b, True)]
        pos = b
    pieces.append((pos, len(text), False))
    ids, starts, ends = [], [], []
    for a, b, split in pieces:
        if a == b:
            continue
        enc = tok(text[a:b], add_special_tokens=False, split_special_tokens=split, return_offsets_mapping=True)
        ids += list(enc["input_ids"])
        starts += [a + s for s, _ in enc["offset_mapping"]]
        ends += [a + e for _, e in enc["offset_mapping"]]
    return Tokens(ids, starts, ends)


# --------------------------------------------------------------------------------------------
# 1. Spans
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    """Where one message sits in the rendered conversation (token positions, end exclusive).

    ``start``..``end`` is everything the message adds to the conversation before it. ``body`` is the
    part that is the message's own: for an assistant turn, the tokens generation would produce (its
    text and its end-of-turn token, not template text after that); for other turns, the content
    without the role header and footer. ``content_start``: where an assistant's own text begins
    inside its body; template text before it (Qwen3's empty ``<think></think>``) is boilerplate.
    """

    index: int
    role: str
    start: int
    end: int
    body: tuple[int, int]
    content_start: int | None = None  # assistant turns: the first token of the message's own text


NOT_PREFIX_STABLE = (
    "This chat template is not prefix-stable (rendering a shorter conversation does not give a "
    "prefix of the longer one), so sftviz cannot tell exactly which tokens are the assistant's. "
    "Templates that rewrite earlier turns (e.g. strip reasoning) need a '{% generation %}' "
    "template and return_assistant_tokens_mask instead."
)


@dataclass(frozen=True)
class Layout:
    """A rendered conversation in characters: the text, where each message starts and ends (``bounds``,
    one more than the messages), where each assistant's generated text starts, and each content span."""

    text: str
    bounds: list[int]
    generated: dict[int, int]
    contents: list[tuple[int, int]]


def find_turns(tok: Any, messages: list[dict], parse_special: bool = False) -> tuple[list[int], list[Turn]]:
    """The token ids of the whole conversation and the :class:`Turn` of every message."""
    tokens, turns, _ = rendered_turns(tok, messages, parse_special)
    return tokens.ids, turns


def rendered_turns(tok: Any, messages: list[dict], parse_special: bool = False) -> tuple[Tokens, list[Turn], Layout]:
    """:func:`find_turns` with the rendered text's :class:`Tokens` (ids and character offsets) and
    :class:`Layout`, for callers that map text back to tokens (the X-ray)."""
    layout = local_layout(tok, messages) or prefix_layout(tok, messages)
    tokens = tokenize_rendered(tok, layout.text, layout.contents, parse_special)
    special = set(tok.all_special_ids)
    turns = []
    for i, m in enumerate(messages):
        start = tokens.at(layout.bounds[i], f"start of message {i}")
        end = tokens.at(layout.bounds[i + 1], f"end of message {i}")
        if m["role"] == "assistant":
            # Generation starts after the generation prompt and stops at the turn's end-of-turn token:
            # template text after it (ChatML's newline after <|im_end|>) is never generated.
            start = tokens.at(layout.generated[i], f"generation prompt of message {i}")
            specials = [t for t in range(start + 1, end) if tokens.ids[t] in special]
            body = (start, specials[-1] + 1 if specials else end)
            lo = layout.contents[i][0]
            content_start = next((t for t in range(*body) if tokens.ends[t] > lo), body[1])
            turns.append(Turn(i, m["role"], start, end, body, content_start))
            continue
        # other turns: the content, without the role's header and footer (display only, not the mask)
        a, b = layout.contents[i]
        body = (max(start, tokens.first_from(a)), min(end, tokens.first_from(b)))
        turns.append(Turn(i, m["role"], start, end, body))
    return tokens, turns, layout


def closing_text(tok: Any) -> str:
    """Text the template writes after the last message when it is not prompting for a reply (Phi-3
    closes every conversation with its EOS), or "". A shorter conversation's rendering carries it too,
    so the layouts compare renderings without it."""
    key = (tok.chat_template, tuple(tok.all_special_tokens))
    if key not in _CLOSING:
        probe = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
        closing = ""
        try:
            full, gen = template_text(tok, probe), template_text(tok, probe, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 -- a template that cannot render the probe: nothing to strip
            full = gen = ""
        if not gen.startswith(full):
            for special in sorted(set(tok.all_special_tokens), key=len, reverse=True):
                if special and full.endswith(special) and gen.startswith(full[: -len(special)]):
                    closing = special
                    break
        _CLOSING[key] = closing
    return _CLOSING[key]


_CLOSING: dict[tuple, str] = {}


def renderer(tok: Any) -> tuple[Any, str]:
    """A renderer of conversations without the template's closing text, and that text."""
    closing = closing_text(tok)

    def render(messages: list[dict], add_generation_prompt: bool = False) -> str:
        text = template_text(tok, messages, add_generation_prompt)
        if closing and not add_generation_prompt and text.endswith(closing):
            text = text[: -len(closing)]
        return text

    return render, closing


def local_layout(tok: Any, messages: list[dict]) -> Layout | None:
    """The layout when the template renders each message on its own (a header, the content, a footer):
    each message's text is found from a window of it and the message before, so the work is linear in
    the conversation's length; the pieces must add up to the whole rendering. None for other templates."""
    render, closing = renderer(tok)
    try:
        first = render(messages[:1])
        pieces, gen_prompts, empties = [], {}, []
        for k, m in enumerate(messages):
            if k == 0:
                before, piece, empty = "", first, render([{**m, "content": CONTENT_PROBE}])
            else:
                before = render(messages[k - 1 : k])
                piece = _after(before, render(messages[k - 1 : k + 1]))
                empty = _after(before, render([messages[k - 1], {**m, "content": CONTENT_PROBE}]))
            if m["role"] == "assistant":
                prompt = render(messages[max(0, k - 1) : k], add_generation_prompt=True) if k else None
                gen_prompts[k] = _after(before, prompt) if prompt is not None else None
            pieces.append(piece)
            empties.append(empty)
        text = render(messages)
    except Exception:  # noqa: BLE001 -- a template that cannot render such windows: use the general way
        return None
    if None in pieces or None in empties or "".join(pieces) != text:
        return None
    bounds, generated, contents = [0], {}, []
    for k, (piece, empty) in enumerate(zip(pieces, empties)):
        bounds.append(bounds[-1] + len(piece))
        header, footer = _header_footer(piece, empty)
        contents.append((bounds[k] + header, bounds[k + 1] - footer))
        if k in gen_prompts:
            gen = gen_prompts[k]
            if gen is None or not piece.startswith(gen):
                return None
            generated[k] = bounds[k] + len(gen)
    return Layout(text + closing, bounds, generated, contents)


def _after(before: str, text: str | None) -> str | None:
    """``text`` without its prefix ``before`` (None when ``text`` does not start with it)."""
    return text[len(before) :] if text is not None and text.startswith(before) else None


#: The content a message is rendered with to find its header and footer: an invisible separator, which
#: no template trims and no content shares a first or last character with by chance.
CONTENT_PROBE = "\u2063"


def _header_footer(piece: str, probe: str) -> tuple[int, int]:
    """Lengths of a message's header and footer: what comes before and after :data:`CONTENT_PROBE` in
    the same message rendered with the probe as its content. A template that changes the probe falls
    back to what the two renderings share, from the front and then from the back."""
    at = probe.find(CONTENT_PROBE)
    if at >= 0:
        head, foot = probe[:at], probe[at + len(CONTENT_PROBE) :]
        if piece.startswith(head) and piece.endswith(foot) and len(head) + len(foot) <= len(piece):
            return len(head), len(foot)
    header = _common_prefix(probe, piece)
    footer = _common_prefix(probe[header:][::-1], piece[header:][::-1])
    return header, footer


def prefix_layout(tok: Any, messages: list[dict]) -> Layout:
    """The layout of any prefix-stable template, by rendering every prefix of the conversation."""
    render, closing = renderer(tok)
    text = render(messages)
    bounds, generated, contents = [0], {}, []
    for i, m in enumerate(messages):
        upto = render(messages[: i + 1])
        before = render(messages[:i]) if i else ""
        if not text.startswith(upto) or not upto.startswith(before):
            raise ValueError(NOT_PREFIX_STABLE)
        if m["role"] == "assistant":
            head = render(messages[:i], add_generation_prompt=True)
            if not upto.startswith(head):
                raise ValueError(NOT_PREFIX_STABLE)
            generated[i] = max(len(head), len(before))
        probe = render([*messages[:i], {**m, "content": CONTENT_PROBE}])
        if probe.startswith(before):
            header, footer = _header_footer(upto[len(before) :], probe[len(before) :])
            lo, hi = len(before) + header, len(upto) - footer
        else:
            lo = max(len(before), _common_prefix(probe, upto))
            hi = len(upto) - _common_prefix(probe[lo:][::-1], upto[lo:][::-1])
        contents.append((lo, max(lo, hi)))
        bounds.append(len(upto))
    return Layout(text + closing, bounds, generated, contents)


def _common_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


# --------------------------------------------------------------------------------------------
# 2. Labels
# --------------------------------------------------------------------------------------------


def label_turns(
    full: list[int],
    turns: list[Turn],
    special: set[int],
    train_on: str = "all",
    train_end: bool = True,
    trained: set[int] | None = None,
) -> tuple[list[str], list[int]]:
    """Segments of every token, and the completion mask (1 on the assistant turns being trained; their
    end-of-turn tokens too unless ``train_end`` is False).

    ``trained``, when given, names the messages to train by index instead of ``train_on``; a trained
    message of another role (a user turn, say) has its content trained, not its header or footer.
    """
    segs, cmask = ["template"] * len(full), [0] * len(full)
    if trained is None:
        last_assistant = max(t.index for t in turns if t.role == "assistant")
        trained = {t.index for t in turns if t.role == "assistant" and (train_on == "all" or t.index == last_assistant)}
    for turn in turns:
        lo, hi = turn.body
        on = turn.index in trained
        for t in range(turn.start, turn.end):
            is_special = full[t] in special
            if turn.role == "assistant":
                if t < hi:
                    boilerplate = turn.content_start is not None and t < turn.content_start
                    if boilerplate:  # template text the assistant "generates" before its own text
                        segs[t] = "template"
                    else:
                        segs[t] = "end_of_turn" if is_special else "assistant"
                    cmask[t] = int(on and (train_end or not is_special or boilerplate))
            elif not is_special and lo <= t < hi:
                segs[t] = turn.role
                cmask[t] = int(on)
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
    add_eos: bool = True,
    parse_special_tokens: bool = False,
    train_turns: set[int] | None = None,
) -> Example:
    """The :class:`~sftviz.data.Example` of a conversation (``sv.build_example(tok, messages=...)``).

    ``add_eos=False`` leaves the assistant turns' end-of-turn tokens untrained (the model then never
    learns to end a turn: a bug to look at, not a setting to use). ``train_turns`` names the messages
    to train by index, instead of ``train_on`` (TRL's conversational prompt/completion rows train the
    completion's turns only).
    """
    messages = check_messages(messages)
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on must be 'all' (every assistant turn) or 'last'; got {train_on!r}.")
    if not isinstance(add_eos, bool) or not isinstance(parse_special_tokens, bool):
        raise TypeError("add_eos and parse_special_tokens must be True or False.")
    if getattr(tok, "chat_template", None) is None:
        raise ValueError(
            "This tokenizer has no chat template, so messages cannot be rendered. Use prompt=/completion=, "
            "or set tok.chat_template."
        )
    full, turns = find_turns(tok, messages, parse_special_tokens)
    segs, cmask = label_turns(full, turns, set(tok.all_special_ids), train_on, train_end=add_eos, trained=train_turns)
    notes: list[str] = []
    if not add_eos:
        notes.append(
            "add_eos=False: the end-of-turn tokens are not trained, so fine-tuning never teaches the model to stop after the answer."
        )
    bos = bos_id(tok, add_bos)
    full, segs, cmask = prepend_bos(full, segs, cmask, bos)
    if bos is None:
        notes.append("This tokenizer has no BOS token: the first token of the conversation is not scored.")
    full, segs, cmask = truncate_left(full, segs, cmask, max_length, notes)
    return assemble_example(tok, full, segs, cmask, masking, notes=notes, source={"messages": messages})


def is_message_list(value: object) -> bool:
    """Whether ``value`` is a non-empty list of message dicts (each with a ``"role"``)."""
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m for m in value)


def conversational_pair(tok: Any, prompt: list[dict], completion: list[dict], **build_kwargs: Any) -> Example:
    """TRL's conversational prompt/completion row (both lists of messages) as an example: the
    conversation is the prompt's messages then the completion's, and only the completion's assistant
    turns are trained, as TRL's ``completion_only_loss`` trains them."""
    messages = [*prompt, *completion]
    trained = {i for i in range(len(prompt), len(messages)) if messages[i].get("role") == "assistant"}
    if not trained:
        raise ValueError("its completion holds no assistant message, so nothing would be trained.")
    return build_chat(tok, messages, train_turns=trained, **build_kwargs)
