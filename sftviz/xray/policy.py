"""What the user means to train: a policy, named the way axolotl and torchtune name it.

A policy turns a row into the labels it asks for, with the core's own label code
(:func:`sftviz.build_example` for prompt/completion and text rows, :mod:`sftviz.chat` for
conversations). The X-ray compares these labels with the ones a pipeline really produced; it never
trains with them.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, fields
from typing import Any

from ..chat import CHAT_ROLES, check_messages, label_turns, rendered_turns
from ..data import Example, assemble_example, build_example, display_tokens
from ..masking import IGNORE_INDEX
from .rows import conversation, row_kind

TRAIN_ON_EOS = ("turn", "last", "none")
TURNS = ("all", "last")


@dataclass(frozen=True)
class Policy:
    """What to train in each row.

    Attributes:
        roles_to_train: the chat roles whose turns are trained (axolotl's ``roles_to_train``); a
            trained user, system or tool turn trains its content, not its header. For prompt/completion
            rows, ``"assistant"`` means the completion and ``"user"`` the prompt.
        train_on_eos: ``"turn"`` (the end-of-turn / EOS token of every trained turn: axolotl's
            default), ``"last"`` (only the last one) or ``"none"``.
        turns: ``"all"`` trained turns, or only the ``"last"`` one (torchtune trains all; many
            recipes train the last).
        prompt_loss_weight: weight of every other token after the first (0: masked, 1: full loss);
            a token with weight above 0 counts as trained.
        message_field_training: the message key whose true/false value turns a single message's
            training on or off (axolotl's ``message_field_training``, default ``"train"``); None to ignore.
        message_field_weight: the message key with a per-turn loss weight (0 turns it off); None to ignore.
    """

    roles_to_train: tuple[str, ...] = ("assistant",)
    train_on_eos: str = "turn"
    turns: str = "all"
    prompt_loss_weight: float = 0.0
    message_field_training: str | None = "train"
    message_field_weight: str | None = "weight"

    def __post_init__(self) -> None:
        roles = self.roles_to_train
        if isinstance(roles, str) or not isinstance(roles, (tuple, list)):
            raise TypeError(f"roles_to_train must be a tuple of roles, e.g. ('assistant',); got {roles!r}.")
        bad = [r for r in roles if r not in CHAT_ROLES]
        if bad:
            raise ValueError(f"roles_to_train holds {bad}; the roles are {', '.join(CHAT_ROLES)}.")
        object.__setattr__(self, "roles_to_train", tuple(roles))
        if self.train_on_eos not in TRAIN_ON_EOS:
            raise ValueError(f"train_on_eos must be one of {', '.join(TRAIN_ON_EOS)}; got {self.train_on_eos!r}.")
        if self.turns not in TURNS:
            raise ValueError(f"turns must be 'all' or 'last'; got {self.turns!r}.")
        w = self.prompt_loss_weight
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not 0 <= w <= 1:
            raise ValueError(f"prompt_loss_weight must be a number in [0, 1]; got {w!r}.")

    def describe(self) -> str:
        """The policy in one line."""
        text = f"train {', '.join(self.roles_to_train) or 'nothing'} ({self.turns} turns), train_on_eos={self.train_on_eos}"
        return text + (f", prompt_loss_weight={self.prompt_loss_weight:g}" if self.prompt_loss_weight else "")


#: Named policies for the command line (``--policy last``); keys ``KEY=VALUE`` change one field.
PRESETS = {
    "assistant": Policy(),
    "last": Policy(turns="last"),
    "no-eos": Policy(train_on_eos="none"),
    "everything": Policy(roles_to_train=CHAT_ROLES, prompt_loss_weight=1.0),
}


def policy_from(spec: object = None) -> Policy:
    """A :class:`Policy` from ``spec``: None (the default: every assistant turn and its end-of-turn
    token), a Policy, a preset name (:data:`PRESETS`), a dict of fields, or a string of ``KEY=VALUE``
    pairs separated by ``;`` (``"roles_to_train=assistant,user;train_on_eos=last"``)."""
    if spec is None:
        return Policy()
    if isinstance(spec, Policy):
        return spec
    if isinstance(spec, dict):
        names = {f.name for f in fields(Policy)}
        unknown = sorted(set(spec) - names)
        if unknown:
            raise ValueError(f"unknown policy fields {unknown}; the fields are {', '.join(sorted(names))}.")
        return Policy(**spec)
    if isinstance(spec, str):
        if spec in PRESETS:
            return PRESETS[spec]
        if "=" not in spec:
            raise ValueError(f"unknown policy {spec!r}; use one of {', '.join(PRESETS)} or KEY=VALUE pairs.")
        return policy_from(dict(_parse_pair(part) for part in spec.split(";") if part.strip()))
    raise TypeError(f"policy must be a Policy, a preset name, a dict or a 'KEY=VALUE;...' string; got {spec!r}.")


def _parse_pair(part: str) -> tuple[str, Any]:
    key, _, value = part.partition("=")
    key, value = key.strip(), value.strip()
    if key == "roles_to_train":
        return key, tuple(r.strip() for r in value.split(",") if r.strip())
    if key == "prompt_loss_weight":
        try:
            return key, float(value)
        except ValueError:
            raise ValueError(f"prompt_loss_weight must be a number; got {value!r}.") from None
    if key.startswith("message_field_"):
        return key, value or None
    return key, value


# --------------------------------------------------------------------------------------------
# The labels a policy asks for
# --------------------------------------------------------------------------------------------


def expected_example(tok: Any, row: dict, policy: Policy) -> Example | None:
    """The row as the policy would train it, built by the core's label code; None for tokenized rows
    with no text (the policy has nothing to read). Errors (a conversation the template cannot split,
    a row with nothing to train) are raised as ``ValueError``."""
    kind = row_kind(row)
    masking = policy.prompt_loss_weight if policy.prompt_loss_weight else "completion"
    add_eos = policy.train_on_eos != "none"
    if kind == "prompt_completion":
        ex = build_example(tok, prompt=row["prompt"], completion=row["completion"], add_bos=False,
                           add_eos=add_eos and tok.eos_token_id is not None, warn=False, masking=masking)  # fmt: skip
        return _pair_roles(ex, policy)
    if kind == "text":
        return build_example(tok, prompt="", completion=row["text"], add_bos=False,
                             add_eos=add_eos and tok.eos_token_id is not None, warn=False, masking=masking)  # fmt: skip
    chat = conversation(row)
    if chat is None:
        if isinstance(row.get("messages"), list) or isinstance(row.get("prompt"), str):
            return expected_example(tok, {k: v for k, v in row.items() if k != "input_ids"}, policy)
        return None
    return _chat_example(tok, *chat, policy, masking)


def _pair_roles(ex: Example, policy: Policy) -> Example:
    """A prompt/completion example with the policy's roles: the prompt is the user's, the completion
    the assistant's."""
    if "user" in policy.roles_to_train:
        ex = ex.with_masking("full")
    if "assistant" not in policy.roles_to_train:
        for t, seg in enumerate(ex.segments):
            if seg in ("completion", "eos"):
                ex.labels[t], ex.weights[t] = IGNORE_INDEX, 0.0
    return ex


def _chat_example(tok: Any, messages: list[dict], trained: set[int] | None, policy: Policy, masking: Any) -> Example:
    checked = check_messages(messages)
    tokens, turns, layout = rendered_turns(tok, checked)
    chosen = _trained_turns(messages, trained, policy)
    segs, cmask = label_turns(tokens.ids, turns, set(tok.all_special_ids), train_end=policy.train_on_eos != "none",
                              trained=chosen)  # fmt: skip
    if policy.train_on_eos == "last":
        ends = [t for t, s in enumerate(segs) if s == "end_of_turn" and cmask[t]]
        for t in ends[:-1]:
            cmask[t] = 0
    if not any(cmask[1:]):  # the policy trains nothing in this row: an example with no target
        n = len(tokens.ids)
        return Example(list(tokens.ids), [IGNORE_INDEX] * n, [0] * n, [int(t > 0) for t in range(n)], segs,
                       display_tokens(tok, tokens.ids), [0.0] * n, masking="custom", source={"messages": checked})  # fmt: skip
    ex = assemble_example(tok, tokens.ids, segs, cmask, masking, notes=[], source={"messages": checked})
    _turn_weights(ex, turns, messages, policy)
    _mark_injected(ex, tok, checked, tokens, layout)
    return ex


def injected_system(tok: Any) -> str | None:
    """The system prompt the chat template writes into a conversation that has none (SmolLM2's
    "You are a helpful AI assistant named SmolLM..."), or None. Found by rendering a conversation
    with and without a system message of our own."""
    key = (tok.chat_template, tok.bos_token, tok.eos_token)
    if key not in _INJECTED:
        _INJECTED[key] = _find_injected(tok)
    return _INJECTED[key]


_INJECTED: dict[tuple, str | None] = {}


def _find_injected(tok: Any) -> str | None:
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    probe = "\u2063S\u2063"
    try:
        plain = tok.apply_chat_template(messages, tokenize=False)
        with_system = tok.apply_chat_template([{"role": "system", "content": probe}, *messages], tokenize=False)
    except Exception:  # noqa: BLE001 -- a template that refuses a system message injects none of its own
        return None
    head, _, tail = with_system.partition(probe)
    if not plain.startswith(head) or not plain.endswith(tail):
        return None
    injected = plain[len(head) : len(plain) - len(tail)]
    return injected or None


def _mark_injected(ex: Example, tok: Any, messages: list[dict], tokens: Any, layout: Any) -> None:
    """Record in ``ex.source["injected_system"]`` the positions of an injected system prompt."""
    if messages[0]["role"] == "system":
        return
    text = injected_system(tok)
    if not text:
        return
    at = layout.text.find(text)
    if at < 0 or at >= layout.contents[0][0]:
        return
    ex.source["injected_system"] = [t for t, start in enumerate(tokens.starts) if start < at + len(text)]


def _trained_turns(messages: list[dict], trained: set[int] | None, policy: Policy) -> set[int]:
    """Indices of the messages the policy trains."""
    chosen = []
    for i, m in enumerate(messages):
        if m["role"] not in policy.roles_to_train:
            continue
        if trained is not None and i not in trained and m["role"] == "assistant":
            continue
        flag = m.get(policy.message_field_training) if policy.message_field_training else None
        if flag is not None and not flag:
            continue
        chosen.append(i)
    if policy.turns == "last":
        chosen = chosen[-1:]
    return set(chosen)


def _turn_weights(ex: Example, turns: list, messages: list[dict], policy: Policy) -> None:
    """Apply per-message weights (``message_field_weight``) to the tokens of each trained turn."""
    key = policy.message_field_weight
    if not key:
        return
    for turn in turns:
        w = messages[turn.index].get(key)
        if w is None:
            continue
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or w < 0:
            raise ValueError(f"message {turn.index} has {key}={w!r}; a turn weight is a number of at least 0.")
        for t in range(turn.start, turn.end):
            if ex.labels[t] != IGNORE_INDEX:
                ex.weights[t] = float(w)
                if w == 0:
                    ex.labels[t] = IGNORE_INDEX
