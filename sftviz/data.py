"""From text to training examples: the concatenation [x, y], its labels and its masks.

SFT is language modelling on the concatenation of a prompt ``x`` and a completion ``y``. This module
builds that concatenation token by token and records, for every token, what it is (its *segment*)
and whether it is a *target* of the loss.

The rules, in one place:

* **Segments are exact by construction.** The prompt and the completion are tokenized separately and
  their ids concatenated. We never search the ids for a response template. When tokenizing the joined
  text would give different tokens at the seam (a token that merges across the boundary), the example
  keeps both tokenizations in ``ex.boundary_note`` and a :class:`BoundaryMergeWarning` is issued.
* **BOS.** When the tokenizer has a BOS token it is prepended (GPT-2-style tokenizers use their EOS
  token ``<|endoftext|>`` as BOS, so that one is prepended). The BOS is context only, never a target,
  and it lets the model score the first prompt token, so that ``log Pr(x)`` covers every prompt token.
  A tokenizer with no BOS at all (e.g. Qwen) gets none, and the first prompt token goes unscored: the
  example says so in ``ex.notes``. Pass ``add_bos=False``/``True`` to override.
* **EOS.** ``add_eos=True`` (the default) appends the EOS token to the completion and trains it, also
  when the pad token equals EOS: labels are never masked by id.
* **Labels** follow Hugging Face: same length as ``input_ids``, the token id where the token is a
  target, ``-100`` elsewhere, *not shifted* (the model shifts: the logits at position ``t - 1``
  predict the token at position ``t``). Position 0 is never a target.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field, replace

IGNORE_INDEX = -100
MASKINGS = ("completion", "full", "prompt")
CHAT_ROLES = ("system", "user", "assistant")


class BoundaryMergeWarning(UserWarning):
    """Tokenizing prompt and completion separately differs from tokenizing the joined text."""


# --------------------------------------------------------------------------------------------
# Validation helpers (shared by the collator and the scorer)
# --------------------------------------------------------------------------------------------


def check_masking(masking):
    """Validate a masking choice and return it normalised.

    ``"completion"`` trains the completion (and its EOS) only; ``"full"`` trains every token after the
    first; ``"prompt"`` trains the prompt only (the opposite mistake, used in the fault exercises); a
    number ``w`` in [0, 1] trains everything with weight ``w`` on prompt targets and 1 on completion
    targets (a prompt-loss weight: 0 behaves like "completion", 1 like "full").
    """
    if isinstance(masking, bool):
        raise TypeError("masking must be 'completion', 'full', 'prompt' or a prompt-loss weight between 0 and 1, not a bool.")
    if isinstance(masking, str):
        if masking not in MASKINGS:
            raise ValueError(
                f"Unknown masking {masking!r}: use 'completion' (loss on the completion only), 'full' "
                "(loss on every token) or a prompt-loss weight between 0 and 1 such as 0.1."
            )
        return masking
    if isinstance(masking, numbers.Real):
        w = float(masking)
        if not (0.0 <= w <= 1.0) or math.isnan(w):
            raise ValueError(f"A prompt-loss weight must lie in [0, 1]; got {masking!r}.")
        return w
    raise TypeError(
        f"masking must be 'completion', 'full' or a prompt-loss weight in [0, 1]; got {type(masking).__name__}."
    )


def _check_tokenizer(tok):
    if not (callable(tok) and hasattr(tok, "convert_ids_to_tokens") and hasattr(tok, "decode")):
        raise TypeError(
            f"Expected a Hugging Face tokenizer as the first argument, got {type(tok).__name__}. "
            "Get one with `model, tok = sv.load_model()`."
        )


def _check_text(value, name):
    if value is None:
        raise TypeError(f"{name} is None; pass a string (an empty string \"\" is allowed for the prompt).")
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}: {value!r:.60}")


def _encode(tok, text: str) -> list:
    """Token ids of ``text`` with no special tokens added by the tokenizer."""
    if text == "":
        return []
    return list(tok(text, add_special_tokens=False)["input_ids"])


def _display(tok, ids) -> list:
    """Each token's text for display (byte-level tokens decoded one by one)."""
    return [tok.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False) for i in ids]


def _bos_id(tok, add_bos):
    if add_bos == "auto":
        return tok.bos_token_id
    if add_bos is True:
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if bos is None:
            raise ValueError("add_bos=True, but the tokenizer has neither a BOS nor an EOS token to use as one.")
        return bos
    if add_bos is False:
        return None
    raise ValueError(f"add_bos must be 'auto', True or False; got {add_bos!r}.")


# --------------------------------------------------------------------------------------------
# The example
# --------------------------------------------------------------------------------------------


@dataclass
class BoundaryNote:
    """What happens at the prompt/completion seam when the joined text is tokenized in one go."""

    separate: list  # token texts near the seam, tokenized separately (what the example uses)
    joined: list  # the same stretch, tokenizing prompt + completion as one string
    separate_ids: list
    joined_ids: list
    message: str

    def __str__(self):
        return self.message


@dataclass
class Example:
    """One training sequence [x, y] with everything needed to see and train it.

    All list fields have one entry per token of ``input_ids``.

    Attributes:
        input_ids: the concatenated sequence ([BOS] + prompt + completion + [EOS]).
        labels: token id where the token is a target of the loss, -100 elsewhere; not shifted.
        completion_mask: 1 on tokens that are targets under completion-only loss (completion and its
            EOS; in chat, the assistant turns being trained and their end-of-turn token), else 0.
        prompt_mask: 1 on the prompt tokens that a full (unmasked) loss would also train: every
            non-completion token after position 0.
        segments: what each token is: "bos", "prompt", "completion", "eos"; in chat "system", "user",
            "assistant", "template" (role markers and control tokens) and "end_of_turn".
        tokens: each token's text for display.
        weights: per-token loss weight aligned with ``labels`` (0 where not trained).
        masking: the masking the labels were built with.
        boundary_note: None, or a :class:`BoundaryNote` when the seam tokenizes differently joined.
        notes: plain-language remarks (truncation, no BOS, ...).
        source: the text the example was built from.
    """

    input_ids: list
    labels: list
    completion_mask: list
    prompt_mask: list
    segments: list
    tokens: list
    weights: list
    masking: object = "completion"
    boundary_note: BoundaryNote | None = None
    notes: list = field(default_factory=list)
    source: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.input_ids)

    def __repr__(self):
        n_trained = sum(1 for v in self.labels if v != IGNORE_INDEX)
        kind = "chat" if "messages" in self.source else "prompt/completion"
        return (
            f"Example({kind}, {len(self)} tokens, {sum(self.completion_mask)} completion targets, "
            f"{n_trained} trained under masking={self.masking!r})"
        )

    @property
    def trained(self) -> list:
        """0/1 per token: 1 where the label is not -100."""
        return [int(v != IGNORE_INDEX) for v in self.labels]

    @property
    def n_prompt(self) -> int:
        """Number of tokens before the first completion target (BOS included)."""
        for i, m in enumerate(self.completion_mask):
            if m:
                return i
        return len(self)

    def with_masking(self, masking) -> "Example":
        """The same tokens with labels and weights rebuilt for another masking."""
        masking = check_masking(masking)
        labels, weights = _labels_and_weights(self.input_ids, self.completion_mask, self.prompt_mask, masking)
        return replace(self, labels=labels, weights=weights, masking=masking, notes=list(self.notes))

    def set_trained(self, position: int, trained: bool) -> "Example":
        """Make one token a target (``trained=True``) or not, in place; returns the example.

        Position 0 can never be a target: nothing comes before it to predict it from.
        """
        if isinstance(position, bool) or not isinstance(position, numbers.Integral):
            raise TypeError(f"position must be an integer, got {type(position).__name__}.")
        if not 0 <= position < len(self):
            raise ValueError(f"position {position} is outside the example (0 to {len(self) - 1}).")
        if position == 0 and trained:
            raise ValueError("Position 0 cannot be trained: no earlier token predicts it (the labels are shifted by the model).")
        self.labels[position] = self.input_ids[position] if trained else IGNORE_INDEX
        self.weights[position] = 1.0 if trained else 0.0
        self.masking = "custom"
        return self

    def rows(self) -> list:
        """One dict per position: what the token is, whether it is trained, what predicts what.

        ``predicted_from`` is the position whose logits score this token (``position - 1``);
        ``predicts`` is the token this position's logits are trained to predict (the next token when
        that one is a target, else None). The last token predicts nothing: it is a target, never an input.
        """
        out = []
        n = len(self)
        for t in range(n):
            nxt = t + 1
            out.append(
                {
                    "position": t,
                    "token": self.tokens[t],
                    "id": self.input_ids[t],
                    "segment": self.segments[t],
                    "label": self.labels[t],
                    "trained": self.labels[t] != IGNORE_INDEX,
                    "weight": self.weights[t],
                    "predicted_from": t - 1 if t > 0 else None,
                    "predicts": self.tokens[nxt] if nxt < n and self.labels[nxt] != IGNORE_INDEX else None,
                }
            )
        return out

    def to_features(self) -> dict:
        """The fields a collator needs, as plain lists."""
        return {
            "input_ids": list(self.input_ids),
            "labels": list(self.labels),
            "completion_mask": list(self.completion_mask),
            "prompt_mask": list(self.prompt_mask),
            "loss_weights": list(self.weights),
        }


def _labels_and_weights(ids, completion_mask, prompt_mask, masking):
    labels, weights = [], []
    for t, tok_id in enumerate(ids):
        c, p = completion_mask[t], prompt_mask[t]
        if masking == "completion":
            w = 1.0 if c else 0.0
        elif masking == "full":
            w = 1.0 if (c or p) else 0.0
        elif masking == "prompt":
            w = 1.0 if p else 0.0
        else:  # prompt-loss weight
            w = 1.0 if c else (float(masking) if p else 0.0)
        # A label is set exactly where the weight is positive, so a prompt-loss weight of 0 gives the
        # same labels as "completion" and HF's own loss agrees with ours.
        labels.append(tok_id if w > 0 else IGNORE_INDEX)
        weights.append(w)
    return labels, weights


def _assemble(tok, ids, segments, completion_mask, masking, *, notes, source, boundary_note=None):
    prompt_mask = [int(t > 0 and not completion_mask[t]) for t in range(len(ids))]
    completion_mask = [int(t > 0 and bool(completion_mask[t])) for t in range(len(ids))]
    if not any(completion_mask):
        raise ValueError(
            "This example has nothing to train: no completion token is a target. Give a non-empty "
            "completion, or keep add_eos=True so the EOS is trained."
        )
    labels, weights = _labels_and_weights(ids, completion_mask, prompt_mask, masking)
    if not any(v != IGNORE_INDEX for v in labels):
        raise ValueError(f"With masking={masking!r} this example has no trained token (e.g. an empty prompt under 'prompt').")
    return Example(
        input_ids=list(ids),
        labels=labels,
        completion_mask=completion_mask,
        prompt_mask=prompt_mask,
        segments=list(segments),
        tokens=_display(tok, ids),
        weights=weights,
        masking=masking,
        boundary_note=boundary_note,
        notes=notes,
        source=source,
    )


def _boundary_note(tok, prompt, completion, prompt_ids, completion_ids):
    if not prompt or not completion:
        return None
    joined_ids = _encode(tok, prompt + completion)
    separate_ids = prompt_ids + completion_ids
    if joined_ids == separate_ids:
        return None
    # Show the stretch that differs, with a little context on each side.
    start = 0
    while start < min(len(joined_ids), len(separate_ids)) and joined_ids[start] == separate_ids[start]:
        start += 1
    end_j, end_s = len(joined_ids), len(separate_ids)
    while end_j > start and end_s > start and joined_ids[end_j - 1] == separate_ids[end_s - 1]:
        end_j -= 1
        end_s -= 1
    lo = max(0, start - 1)
    sep = separate_ids[lo : end_s + 1]
    joi = joined_ids[lo : end_j + 1]
    sep_txt, joi_txt = _display(tok, sep), _display(tok, joi)
    message = (
        f"Tokens merge across the prompt/completion boundary: tokenized separately the seam is "
        f"{sep_txt}, tokenized as one string it is {joi_txt}. The example uses the separate "
        "tokenization, so the labels start exactly where the completion starts; at inference the model "
        "will see the prompt's tokens and must produce the completion's. Ending the prompt without a "
        "trailing space (and starting the completion with one) usually avoids the merge."
    )
    return BoundaryNote(separate=sep_txt, joined=joi_txt, separate_ids=sep, joined_ids=joi, message=message)


def _truncate(prompt_ids, completion_ids, n_special_front, n_eos, max_length, truncate_completion, notes):
    if max_length is None:
        return prompt_ids, completion_ids, n_eos
    if isinstance(max_length, bool) or not isinstance(max_length, numbers.Integral) or max_length < 2:
        raise ValueError(f"max_length must be an integer of at least 2 (or None for no limit); got {max_length!r}.")
    total = n_special_front + len(prompt_ids) + len(completion_ids) + n_eos
    if total <= max_length:
        return prompt_ids, completion_ids, n_eos
    room_for_prompt = max_length - n_special_front - len(completion_ids) - n_eos
    if room_for_prompt >= 1 or (room_for_prompt == 0 and n_special_front > 0):
        cut = len(prompt_ids) - room_for_prompt
        notes.append(f"The prompt was cut from the left by {cut} tokens to fit max_length={max_length}.")
        return prompt_ids[cut:], completion_ids, n_eos
    if not truncate_completion:
        raise ValueError(
            f"The completion alone ({len(completion_ids) + n_eos} tokens with its EOS, plus "
            f"{n_special_front} BOS) does not fit max_length={max_length}. Raise max_length, shorten the "
            "completion, or pass truncate_completion=True to cut it (it will then not end with EOS)."
        )
    keep = max_length - n_special_front - 1  # keep one prompt token as context
    if keep < 1:
        raise ValueError(f"max_length={max_length} leaves no room for a trained token; raise it.")
    warnings.warn(
        f"The completion was cut to {keep} tokens to fit max_length={max_length}: the model will not learn "
        "where this answer ends.",
        UserWarning,
        stacklevel=4,
    )
    notes.append(f"The completion was cut to {keep} of its {len(completion_ids) + n_eos} tokens (EOS dropped).")
    return prompt_ids[-1:], completion_ids[:keep], 0


def build_example(
    tok,
    prompt=None,
    completion=None,
    *,
    messages=None,
    add_eos: bool = True,
    add_bos="auto",
    masking="completion",
    max_length=None,
    truncate_completion: bool = False,
    train_on="all",
    warn: bool = True,
) -> Example:
    """Build the training sequence [x, y] for one prompt/completion pair or one conversation.

    Args:
        tok: a Hugging Face tokenizer (``model, tok = sv.load_model()``).
        prompt, completion: the input ``x`` and the output ``y`` as strings. The prompt may be empty.
        messages: instead of prompt/completion, a conversation: a list of ``{"role", "content"}`` with
            roles "system", "user", "assistant", rendered with the tokenizer's chat template.
        add_eos: append the EOS token to the completion and train it (default True). Without a trained
            EOS a fine-tuned model never learns to stop.
        add_bos: "auto" (prepend the tokenizer's BOS when it has one), True or False.
        masking: "completion" (default: loss on the completion and its EOS only), "full" (loss on every
            token after the first), "prompt", or a prompt-loss weight in [0, 1].
        max_length: cut the prompt from the left to fit; a completion that alone does not fit is an
            error unless ``truncate_completion=True``.
        train_on: chat only: "all" assistant turns (default) or only the "last" one.
        warn: issue a :class:`BoundaryMergeWarning` when tokens merge across the seam.

    Returns:
        An :class:`Example` with ``input_ids``, ``labels`` (-100 where not trained, not shifted),
        ``completion_mask``, ``segments``, ``tokens`` and more, all of the same length.

    Example:
        >>> import sftviz as sv
        >>> model, tok = sv.load_model()                                  # doctest: +SKIP
        >>> ex = sv.build_example(tok, prompt="Q: 2+2?\\nA:", completion=" 4")  # doctest: +SKIP
        >>> [s for s, t in zip(ex.segments, ex.trained) if t]              # doctest: +SKIP
        ['completion', 'eos']
    """
    _check_tokenizer(tok)
    masking = check_masking(masking)
    if messages is not None:
        if prompt is not None or completion is not None:
            raise ValueError("Pass either prompt and completion, or messages, not both.")
        return _build_chat(tok, messages, masking=masking, add_bos=add_bos, max_length=max_length, train_on=train_on)
    if prompt is None and completion is None:
        raise TypeError("build_example needs prompt= and completion= strings, or messages=[...].")
    _check_text(prompt, "prompt")
    _check_text(completion, "completion")
    if not isinstance(add_eos, bool):
        raise TypeError("add_eos must be True or False.")
    if completion == "" and not add_eos:
        raise ValueError("The completion is empty and add_eos=False, so there is nothing to train. Give a completion or keep add_eos=True.")
    eos = tok.eos_token_id
    if add_eos and eos is None:
        raise ValueError("add_eos=True but this tokenizer has no EOS token; set tok.eos_token or pass add_eos=False.")
    bos = _bos_id(tok, add_bos)

    notes = []
    prompt_ids = _encode(tok, prompt)
    completion_ids = _encode(tok, completion)
    boundary = _boundary_note(tok, prompt, completion, prompt_ids, completion_ids)
    if boundary is not None and warn:
        warnings.warn(boundary.message, BoundaryMergeWarning, stacklevel=2)
    n_front = 1 if bos is not None else 0
    prompt_ids, completion_ids, n_eos = _truncate(
        prompt_ids, completion_ids, n_front, 1 if add_eos else 0, max_length, truncate_completion, notes
    )
    if bos is None:
        notes.append(
            "This tokenizer has no BOS token, so the first prompt token has nothing before it and is not "
            "scored: log Pr(x) here leaves it out."
        )

    ids, segs, cmask = [], [], []
    if bos is not None:
        ids.append(bos), segs.append("bos"), cmask.append(0)
    ids += prompt_ids
    segs += ["prompt"] * len(prompt_ids)
    cmask += [0] * len(prompt_ids)
    ids += completion_ids
    segs += ["completion"] * len(completion_ids)
    cmask += [1] * len(completion_ids)
    if n_eos:
        ids.append(eos), segs.append("eos"), cmask.append(1)
    if len(ids) < 2:
        raise ValueError("The example is a single token, so there is nothing to predict. Give a prompt or a completion.")
    return _assemble(
        tok, ids, segs, cmask, masking, notes=notes, source={"prompt": prompt, "completion": completion},
        boundary_note=boundary,
    )


# --------------------------------------------------------------------------------------------
# Chat
# --------------------------------------------------------------------------------------------


def _check_messages(messages):
    if not isinstance(messages, (list, tuple)):
        raise TypeError(f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {type(messages).__name__}.")
    if not messages:
        raise ValueError("messages is empty; give at least a user message and an assistant reply.")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"Message {i} must be a dict with 'role' and 'content' keys; got {m!r:.80}.")
        if m["role"] not in CHAT_ROLES:
            raise ValueError(f"Message {i} has unknown role {m['role']!r}; use 'system', 'user' or 'assistant'.")
        _check_text(m["content"], f"message {i} content")
        if m["role"] == "system" and i != 0:
            raise ValueError(f"Message {i} is a system message; a system message may only come first.")
    body = [m["role"] for m in messages if m["role"] != "system"]
    if not body or body[0] != "user":
        raise ValueError("After an optional system message the conversation must start with a user message.")
    for a, b in zip(body, body[1:]):
        if a == b:
            raise ValueError(f"Two {a} messages in a row: user and assistant turns must alternate.")
    if "assistant" not in body:
        raise ValueError("The conversation has no assistant message, so there is nothing to train.")


def _render_ids(tok, messages, add_generation_prompt):
    text = tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)
    return _encode(tok, text)


def _common_prefix(a, b) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _build_chat(tok, messages, *, masking, add_bos, max_length, train_on):
    _check_messages(messages)
    if train_on not in ("all", "last"):
        raise ValueError(f"train_on must be 'all' (every assistant turn) or 'last'; got {train_on!r}.")
    if getattr(tok, "chat_template", None) is None:
        raise ValueError(
            "This tokenizer has no chat template, so messages cannot be rendered. Use prompt=/completion=, "
            "or set tok.chat_template."
        )
    messages = [dict(m) for m in messages]
    full = _render_ids(tok, messages, add_generation_prompt=False)
    special = set(tok.all_special_ids)
    segs = ["template"] * len(full)
    cmask = [0] * len(full)
    last_assistant = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    prev_end = 0
    for i, m in enumerate(messages):
        # The ids of the conversation up to and including message i must extend the ids up to i - 1.
        # Spans are found by comparing rendered prefixes, never by searching strings.
        upto = _render_ids(tok, messages[: i + 1], add_generation_prompt=False)
        if m["role"] == "assistant":
            head = _render_ids(tok, messages[:i], add_generation_prompt=True)
        else:
            head = _render_ids(tok, messages[:i], add_generation_prompt=False) if i else []
        if full[: len(upto)] != upto or upto[: len(head)] != head:
            raise ValueError(
                "This chat template is not prefix-stable (rendering a shorter conversation does not give a "
                "prefix of the longer one), so sftviz cannot tell exactly which tokens are the assistant's. "
                "Templates that rewrite earlier turns (e.g. strip reasoning) need a '{% generation %}' "
                "template and return_assistant_tokens_mask instead."
            )
        start = max(len(head), prev_end)
        stop = len(upto)
        if m["role"] == "assistant":
            # Template text after the turn's end-of-turn token (ChatML's newline after <|im_end|>) is
            # never generated: generation stops at the end-of-turn token. Leave it untrained.
            specials = [t for t in range(start + 1, stop) if full[t] in special]
            if specials:
                stop = specials[-1] + 1
        lo, hi = start, len(upto)
        if m["role"] != "assistant":
            # The turn's own header and footer (role names, newlines) are the tokens it shares with the
            # same turn rendered with empty content; only display labels depend on this, not the mask.
            empty = _render_ids(tok, messages[:i] + [{**m, "content": ""}], add_generation_prompt=False)
            lo = max(start, _common_prefix(empty, upto))
            hi = len(upto) - _common_prefix(empty[lo:][::-1], upto[lo:][::-1])
        for t in range(start, len(upto)):
            is_special = full[t] in special
            if m["role"] == "assistant" and t < stop:
                segs[t] = "end_of_turn" if is_special else "assistant"
                if train_on == "all" or i == last_assistant:
                    cmask[t] = 1
            elif m["role"] != "assistant":
                segs[t] = "template" if (is_special or not lo <= t < hi) else m["role"]
        prev_end = len(upto)
    notes = []
    bos = _bos_id(tok, add_bos)
    if bos is not None and (not full or full[0] != bos):
        full, segs, cmask = [bos] + full, ["bos"] + segs, [0] + cmask
    elif full and bos is not None:
        segs[0] = "bos"
    if bos is None:
        notes.append("This tokenizer has no BOS token: the first token of the conversation is not scored.")
    if max_length is not None:
        if isinstance(max_length, bool) or not isinstance(max_length, numbers.Integral) or max_length < 2:
            raise ValueError(f"max_length must be an integer of at least 2 (or None); got {max_length!r}.")
        if len(full) > max_length:
            # Cut whole tokens from the left after the BOS, never from the trained turns' right end.
            n_front = 1 if segs and segs[0] == "bos" else 0
            cut = len(full) - max_length
            first_trained = cmask.index(1)
            if n_front + cut > first_trained - 1:
                raise ValueError(
                    f"The conversation is {len(full)} tokens; fitting max_length={max_length} would cut into "
                    "an assistant turn. Raise max_length, or shorten or drop early turns."
                )
            full = full[:n_front] + full[n_front + cut :]
            segs = segs[:n_front] + segs[n_front + cut :]
            cmask = cmask[:n_front] + cmask[n_front + cut :]
            notes.append(f"The conversation was cut from the left by {cut} tokens to fit max_length={max_length}.")
    return _assemble(tok, full, segs, cmask, masking, notes=notes, source={"messages": messages})
