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
* **Chat** conversations are rendered with the tokenizer's chat template; :mod:`sftviz.chat` finds
  each turn's tokens by comparing rendered prefixes.
* **Labels** follow Hugging Face: same length as ``input_ids``, the token id where the token is a
  target, ``-100`` elsewhere, *not shifted* (the model shifts: the logits at position ``t - 1``
  predict the token at position ``t``). Position 0 is never a target.
"""

from __future__ import annotations

import numbers
import warnings
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .checks import check_bool, check_text, check_tokenizer
from .masking import CUSTOM, IGNORE_INDEX, check_masking, labels_and_weights

__all__ = [
    "IGNORE_INDEX",
    "BoundaryMergeWarning",
    "BoundaryNote",
    "Example",
    "build_example",
    "check_masking",
    "to_example",
]


class BoundaryMergeWarning(UserWarning):
    """Tokenizing prompt and completion separately differs from tokenizing the joined text."""


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------


def encode(tok: Any, text: str, *, split_special: bool = True) -> list[int]:
    """Token ids of ``text`` with no special tokens added by the tokenizer.

    With ``split_special=True`` (for user text) control-token text such as ``<|eos|>`` in ``text`` is
    tokenized as the characters it is made of, never as the control token: a prompt or an answer that
    mentions ``<|end|>`` must not end a turn. ``split_special=False`` is for text a chat template made.
    """
    if text == "":
        return []
    return list(tok(text, add_special_tokens=False, split_special_tokens=split_special)["input_ids"])


def has_special_text(tok: Any, text: str) -> bool:
    """Whether ``text`` contains the text of one of the tokenizer's special (control) tokens."""
    return any(t and t in text for t in getattr(tok, "all_special_tokens", []) or [])


def display_tokens(tok: Any, ids: list[int]) -> list[str]:
    """Each token's text for display (byte-level tokens decoded one by one, each id once per tokenizer)."""
    try:
        size, memo = _DISPLAY.get(tok, (None, None))
        if size != len(tok):  # a token was added: start again
            size, memo = len(tok), {}
            _DISPLAY[tok] = (size, memo)
    except TypeError:  # a tokenizer that cannot be weakly referenced: no memo
        memo = {}
    out = []
    for i in ids:
        text = memo.get(i)
        if text is None:
            text = memo[i] = tok.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        out.append(text)
    return out


#: Each tokenizer's decoded tokens by id (with its size when they were decoded).
_DISPLAY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def bos_id(tok: Any, add_bos: object) -> int | None:
    """The id to prepend as BOS under ``add_bos`` ("auto", True or False), or None for none."""
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


def check_max_length(max_length: object) -> int | None:
    """``max_length`` when it is None or an integer of at least 2."""
    if max_length is None:
        return None
    if isinstance(max_length, bool) or not isinstance(max_length, numbers.Integral) or max_length < 2:
        raise ValueError(f"max_length must be an integer of at least 2 (or None for no limit); got {max_length!r}.")
    return int(max_length)


# --------------------------------------------------------------------------------------------
# The example
# --------------------------------------------------------------------------------------------


@dataclass
class BoundaryNote:
    """What happens at the prompt/completion seam when the joined text is tokenized in one go."""

    separate: list[str]  # token texts near the seam, tokenized separately (what the example uses)
    joined: list[str]  # the same stretch, tokenizing prompt + completion as one string
    separate_ids: list[int]
    joined_ids: list[int]
    message: str

    def __str__(self) -> str:
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

    input_ids: list[int]
    labels: list[int]
    completion_mask: list[int]
    prompt_mask: list[int]
    segments: list[str]
    tokens: list[str]
    weights: list[float]
    masking: str | float = "completion"
    boundary_note: BoundaryNote | None = None
    notes: list[str] = field(default_factory=list)
    source: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __repr__(self) -> str:
        n_trained = sum(1 for v in self.labels if v != IGNORE_INDEX)
        kind = "chat" if "messages" in self.source else "prompt/completion"
        return (
            f"Example({kind}, {len(self)} tokens, {sum(self.completion_mask)} completion targets, "
            f"{n_trained} trained under masking={self.masking!r})"
        )

    @property
    def trained(self) -> list[int]:
        """0/1 per token: 1 where the label is not -100."""
        return [int(v != IGNORE_INDEX) for v in self.labels]

    @property
    def n_prompt(self) -> int:
        """Number of tokens before the first completion target (BOS included)."""
        for i, m in enumerate(self.completion_mask):
            if m:
                return i
        return len(self)

    def with_masking(self, masking: str | float) -> Example:
        """The same tokens with labels and weights rebuilt for another masking."""
        masking = check_masking(masking)
        labels, weights = labels_and_weights(self.input_ids, self.completion_mask, self.prompt_mask, masking)
        return replace(self, labels=labels, weights=weights, masking=masking, notes=list(self.notes))

    def for_masking(self, masking: str | float) -> Example:
        """This example as trained under ``masking``: itself when it already has that masking or was
        edited by hand (``masking == "custom"``: its labels are kept), else :meth:`with_masking`."""
        if self.masking == CUSTOM or self.masking == masking:
            return self
        return self.with_masking(masking)

    def set_trained(self, position: int, trained: bool) -> Example:
        """Make one token a target (``trained=True``) or not, in place; returns the example.

        Position 0 can never be a target: nothing comes before it to predict it from.
        """
        if isinstance(position, bool) or not isinstance(position, numbers.Integral):
            raise TypeError(f"position must be an integer, got {type(position).__name__}.")
        if not 0 <= position < len(self):
            raise ValueError(f"position {position} is outside the example (0 to {len(self) - 1}).")
        if position == 0 and trained:
            raise ValueError(
                "Position 0 cannot be trained: no earlier token predicts it (the labels are shifted by the model)."
            )
        self.labels[position] = self.input_ids[position] if trained else IGNORE_INDEX
        self.weights[position] = 1.0 if trained else 0.0
        self.masking = CUSTOM
        return self

    def rows(self) -> list[dict]:
        """One dict per position: what the token is, whether it is trained, what predicts what.

        ``predicted_from`` is the position whose logits score this token (``position - 1``);
        ``predicts`` is the token this position's logits are trained to predict (the next token when
        that one is a target, else None). The last token predicts nothing: it is a target, and the
        prediction at its own position is never scored.
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

    def to_features(self) -> dict[str, list]:
        """The fields a collator needs, as plain lists."""
        return {
            "input_ids": list(self.input_ids),
            "labels": list(self.labels),
            "completion_mask": list(self.completion_mask),
            "prompt_mask": list(self.prompt_mask),
            "loss_weights": list(self.weights),
        }


# --------------------------------------------------------------------------------------------
# Building an example
# --------------------------------------------------------------------------------------------


def assemble_example(
    tok: Any,
    ids: list[int],
    segments: list[str],
    completion_mask: list[int],
    masking: str | float,
    *,
    notes: list[str],
    source: dict,
    boundary_note: BoundaryNote | None = None,
) -> Example:
    """An :class:`Example` from its tokens, their segments and which of them the completion holds.

    The prompt mask is every other position after the first; labels and weights follow ``masking``.
    Both builders (prompt/completion here, conversations in :mod:`sftviz.chat`) end here.
    """
    prompt_mask = [int(t > 0 and not completion_mask[t]) for t in range(len(ids))]
    completion_mask = [int(t > 0 and bool(completion_mask[t])) for t in range(len(ids))]
    if not any(completion_mask):
        raise ValueError(
            "This example has nothing to train: no completion token is a target. Give a non-empty "
            "completion, or keep add_eos=True so the EOS is trained."
        )
    labels, weights = labels_and_weights(ids, completion_mask, prompt_mask, masking)
    if not any(v != IGNORE_INDEX for v in labels):
        raise ValueError(
            f"With masking={masking!r} this example has no trained token (e.g. an empty prompt under 'prompt')."
        )
    return Example(
        input_ids=list(ids),
        labels=labels,
        completion_mask=completion_mask,
        prompt_mask=prompt_mask,
        segments=list(segments),
        tokens=display_tokens(tok, ids),
        weights=weights,
        masking=masking,
        boundary_note=boundary_note,
        notes=notes,
        source=source,
    )


def _boundary_note(
    tok: Any, prompt: str, completion: str, prompt_ids: list[int], completion_ids: list[int], split_special: bool
) -> BoundaryNote | None:
    if not prompt or not completion:
        return None
    joined_ids = encode(tok, prompt + completion, split_special=split_special)
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
    sep_txt, joi_txt = display_tokens(tok, sep), display_tokens(tok, joi)
    message = (
        f"Tokens merge across the prompt/completion boundary: tokenized separately the seam is "
        f"{sep_txt}, tokenized as one string it is {joi_txt}. The example uses the separate "
        "tokenization, so the labels start exactly where the completion starts; at inference the model "
        "will see the prompt's tokens and must produce the completion's. Ending the prompt without a "
        "trailing space (and starting the completion with one) usually avoids the merge."
    )
    return BoundaryNote(separate=sep_txt, joined=joi_txt, separate_ids=sep, joined_ids=joi, message=message)


def _truncate(
    prompt_ids: list[int],
    completion_ids: list[int],
    n_special_front: int,
    n_eos: int,
    max_length: int | None,
    truncate_completion: bool,
    notes: list[str],
) -> tuple[list[int], list[int], int]:
    """Cut the prompt from the left to fit ``max_length`` (the completion only when asked)."""
    if max_length is None:
        return prompt_ids, completion_ids, n_eos
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
        stacklevel=5,
    )
    notes.append(f"The completion was cut to {keep} of its {len(completion_ids) + n_eos} tokens (EOS dropped).")
    return prompt_ids[-1:], completion_ids[:keep], 0


NO_BOS_NOTE = (
    "This tokenizer has no BOS token, so the first prompt token has nothing before it and is not "
    "scored: log Pr(x) here leaves it out."
)


def build_example(
    tok: Any,
    prompt: str | None = None,
    completion: str | None = None,
    *,
    messages: list[dict] | None = None,
    add_eos: bool = True,
    add_bos: bool | str = "auto",
    masking: str | float = "completion",
    max_length: int | None = None,
    truncate_completion: bool = False,
    train_on: str = "all",
    warn: bool = True,
    parse_special_tokens: bool = False,
) -> Example:
    """Build the training sequence [x, y] for one prompt/completion pair or one conversation.

    Args:
        tok: a Hugging Face tokenizer (``model, tok = sv.load_model()``).
        prompt, completion: the input ``x`` and the output ``y`` as strings. The prompt may be empty.
        messages: instead of prompt/completion, a conversation: a list of ``{"role", "content"}`` with
            roles "system", "user", "assistant", rendered with the tokenizer's chat template.
        add_eos: append the EOS token to the completion and train it (default True). Without a trained
            EOS, fine-tuning never teaches the model to stop after the answer.
        add_bos: "auto" (prepend the tokenizer's BOS when it has one), True or False.
        masking: "completion" (default: loss on the completion and its EOS only), "full" (loss on every
            token after the first), "prompt", or a prompt-loss weight in [0, 1].
        max_length: cut the prompt from the left to fit; a completion that alone does not fit is an
            error unless ``truncate_completion=True``.
        train_on: chat only: "all" assistant turns (default) or only the "last" one.
        warn: issue a :class:`BoundaryMergeWarning` when tokens merge across the seam.
        parse_special_tokens: read control-token text in the user's text (``"<|eos|>"`` in a completion,
            ``"<|end|><|user|>"`` in a message) as the control tokens themselves. Off by default: user
            text is text, tokenized as its characters, so it can never end a turn or fake a role.

    Returns:
        An :class:`Example` with ``input_ids``, ``labels`` (-100 where not trained, not shifted),
        ``completion_mask``, ``segments``, ``tokens`` and more, all of the same length.

    Example:
        >>> ex = sv.build_example(tok, prompt="Q: What colour is the sky?\\nA:", completion=" blue")
        >>> [s for s, t in zip(ex.segments, ex.trained) if t]
        ['completion', 'eos']
    """
    check_tokenizer(tok)
    masking = check_masking(masking)
    max_length = check_max_length(max_length)
    if messages is not None:
        if prompt is not None or completion is not None:
            raise ValueError("Pass either prompt and completion, or messages, not both.")
        from .chat import build_chat  # chat builds on this module's helpers

        return build_chat(
            tok, messages, masking=masking, add_bos=add_bos, max_length=max_length, train_on=train_on,
            add_eos=add_eos, parse_special_tokens=parse_special_tokens,
        )  # fmt: skip
    if prompt is None and completion is None:
        raise TypeError("build_example needs prompt= and completion= strings, or messages=[...].")
    eos = _check_pair(tok, prompt, completion, add_eos)
    split = not check_bool(parse_special_tokens, "parse_special_tokens")
    return _pair_example(tok, prompt, completion, eos, bos_id(tok, add_bos), masking, max_length,
                         truncate_completion, warn, split)  # fmt: skip


def _pair_example(
    tok: Any,
    prompt: str,
    completion: str,
    eos: int | None,
    bos: int | None,
    masking: str | float,
    max_length: int | None,
    truncate_completion: bool,
    warn: bool,
    split: bool,
) -> Example:
    """[BOS] + prompt + completion + [EOS]: the two parts tokenized separately, so segments are exact."""
    notes: list[str] = []
    prompt_ids = encode(tok, prompt, split_special=split)
    completion_ids = encode(tok, completion, split_special=split)
    boundary = _boundary_note(tok, prompt, completion, prompt_ids, completion_ids, split)
    if boundary is not None and warn:
        warnings.warn(boundary.message, BoundaryMergeWarning, stacklevel=4)
    n_front = 1 if bos is not None else 0
    prompt_ids, completion_ids, n_eos = _truncate(
        prompt_ids, completion_ids, n_front, 1 if eos is not None else 0, max_length, truncate_completion, notes
    )
    if bos is None:
        notes.append(NO_BOS_NOTE)
    front, back = ([bos] if bos is not None else []), ([eos] if n_eos else [])
    ids = front + prompt_ids + completion_ids + back
    segs = ["bos"] * len(front) + ["prompt"] * len(prompt_ids) + ["completion"] * len(completion_ids)
    segs += ["eos"] * len(back)
    cmask = [0] * (len(front) + len(prompt_ids)) + [1] * (len(completion_ids) + len(back))
    if len(ids) < 2:
        raise ValueError(
            "The example is a single token, so there is nothing to predict. Give a prompt or a completion."
        )
    source = {"prompt": prompt, "completion": completion}
    return assemble_example(tok, ids, segs, cmask, masking, notes=notes, source=source, boundary_note=boundary)


def _check_pair(tok: Any, prompt: object, completion: object, add_eos: object) -> int | None:
    """Check a prompt/completion pair; return the EOS id to append (None when ``add_eos`` is False)."""
    check_text(prompt, "prompt")
    check_text(completion, "completion")
    if not isinstance(add_eos, bool):
        raise TypeError("add_eos must be True or False.")
    if completion == "" and not add_eos:
        raise ValueError(
            "The completion is empty and add_eos=False, so there is nothing to train. "
            "Give a completion or keep add_eos=True."
        )
    if add_eos and tok.eos_token_id is None:
        raise ValueError("add_eos=True but this tokenizer has no EOS token; set tok.eos_token or pass add_eos=False.")
    return tok.eos_token_id if add_eos else None


# --------------------------------------------------------------------------------------------
# Anything a user or a library hands us -> an Example
# --------------------------------------------------------------------------------------------


def to_example(
    tok: Any,
    item: object,
    *,
    masking: str | float | None = None,
    where: str = "the row",
    **build_kwargs: Any,
) -> Example:
    """One :class:`Example` from what a caller passes as data: the one place for this rule.

    ``item`` may be:

    * an :class:`Example`: kept as it is when ``masking`` is None, already its masking, or the example
      was edited by hand (``masking == "custom"``: edited labels are never overwritten); otherwise
      rebuilt for ``masking`` (:meth:`Example.for_masking`);
    * a TRL-style row: ``{"prompt", "completion"}`` or ``{"messages"}``, built with
      :func:`build_example` (``build_kwargs`` such as ``max_length`` go there; ``warn=False``);
    * tokenized rows, as TRL and :meth:`sftviz.SFTCollator.tokenize` make them: ``input_ids`` with one of
      ``completion_mask`` (1 on completion tokens), ``assistant_masks`` (1 on assistant tokens) or
      ``labels`` (-100 where not a completion target), in that order of preference. The row's own
      masking is read from them, and ``masking`` is applied to it.

    Errors name the item with ``where`` (e.g. ``"data[3]"``).
    """
    if isinstance(item, Example):
        return item if masking is None else item.for_masking(masking)
    if isinstance(item, Mapping) and not isinstance(item, dict):  # e.g. a datasets row
        item = dict(item)
    if not isinstance(item, dict):
        raise TypeError(
            f"{where} is a {type(item).__name__}; expected an sftviz Example or a dict row "
            "({'prompt', 'completion'} or {'messages'})."
        )
    masking = "completion" if masking is None else masking
    from .tokenized import TOKEN_MASKS, from_token_lists  # tokenized rows build on this module

    try:
        # A tokenized row is trained as tokenized, also when it keeps its text columns (TRL's prepared
        # rows keep "messages"): re-rendering the text would replace the pipeline's labels with ours.
        if "input_ids" in item and any(key in item for key in TOKEN_MASKS):
            return from_token_lists(tok, item, masking)
        if "messages" in item:
            return build_example(tok, messages=item["messages"], masking=masking, warn=False, **build_kwargs)
        if "prompt" in item and "completion" in item:
            from .chat import conversational_pair, is_message_list

            if is_message_list(item["prompt"]) and is_message_list(item["completion"]):
                return conversational_pair(tok, item["prompt"], item["completion"], masking=masking, **build_kwargs)
            return build_example(
                tok, prompt=item["prompt"], completion=item["completion"], masking=masking, warn=False, **build_kwargs
            )
    except (ValueError, TypeError) as err:
        raise type(err)(f"{where}: {err}") from err
    raise ValueError(
        f"{where} has keys {sorted(item)}; expected 'prompt' and 'completion' strings, 'messages', "
        f"or 'input_ids' with one of {', '.join(repr(k) for k in TOKEN_MASKS)}."
    )
