"""Maskings: which targets of ``[x, y]`` the loss trains, and with what weight.

A masking gives every target a weight: one for prompt targets and one for completion targets. The loss
is then ``sum(w_i * l_i) / sum(w_i)`` over the targets (:func:`sftviz.loss.weighted_mean`), and a label
is set (not -100) exactly where the weight is positive. The named maskings live in :data:`MASKINGS`;
a number ``w`` in [0, 1] is a *prompt-loss weight*: ``w`` on prompt targets and 1 on completion targets
(0 trains like "completion", 1 like "full").

To add a masking, add one :class:`Masking` to :data:`MASKINGS` (and its display label and line style
to :mod:`sftviz.views.vocab`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Masking:
    """A named masking: the weight of a prompt target and of a completion target, and its words."""

    name: str
    prompt_weight: float
    completion_weight: float
    loss_name: str  # what the loss is called in views: "completion-only", ...
    description: str


MASKINGS: dict[str, Masking] = {
    m.name: m
    for m in (
        Masking("completion", 0.0, 1.0, "completion-only", "loss on the completion (and its EOS) only: log Pr(y | x)"),
        Masking("full", 1.0, 1.0, "every-target", "loss on every token after the first: log Pr([x, y])"),
        Masking("prompt", 1.0, 0.0, "prompt-only", "loss on the prompt only: the inverted mask, a classic mistake"),
    )
}

#: The masking of an example whose labels were edited by hand (``Example.set_trained``).
CUSTOM = "custom"


def check_masking(masking: object) -> str | float:
    """Validate a masking choice and return it normalised (a name, or a float prompt-loss weight).

    ``"completion"`` trains the completion (and its EOS) only; ``"full"`` trains every token after the
    first; ``"prompt"`` trains the prompt only (the opposite mistake, used in the fault exercises); a
    number ``w`` in [0, 1] trains everything with weight ``w`` on prompt targets and 1 on completion
    targets (a prompt-loss weight: 0 behaves like "completion", 1 like "full").
    """
    if isinstance(masking, bool):
        raise TypeError(
            "masking must be 'completion', 'full', 'prompt' or a prompt-loss weight between 0 and 1, not a bool."
        )
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


def part_weights(masking: str | float) -> tuple[float, float]:
    """``(weight of a prompt target, weight of a completion target)`` under a (checked) masking."""
    if isinstance(masking, str):
        m = MASKINGS[masking]
        return m.prompt_weight, m.completion_weight
    return float(masking), 1.0


def loss_name(masking: object) -> str:
    """A short name for the loss a masking trains: "completion-only", "prompt weight 0.1", "trained tokens"..."""
    if isinstance(masking, numbers.Real) and not isinstance(masking, bool):
        return f"prompt weight {float(masking):g}"
    if isinstance(masking, str) and masking in MASKINGS:
        return MASKINGS[masking].loss_name
    return "trained tokens"


def labels_and_weights(
    ids: list[int], completion_mask: list[int], prompt_mask: list[int], masking: str | float
) -> tuple[list[int], list[float]]:
    """Labels (the token id where trained, -100 elsewhere; not shifted) and weights under ``masking``.

    A label is set exactly where the weight is positive, so a prompt-loss weight of 0 gives the same
    labels as "completion" and Hugging Face's own loss agrees with ours.
    """
    w_prompt, w_completion = part_weights(masking)
    labels, weights = [], []
    for tok_id, c, p in zip(ids, completion_mask, prompt_mask):
        w = w_completion if c else (w_prompt if p else 0.0)
        labels.append(tok_id if w > 0 else IGNORE_INDEX)
        weights.append(w)
    return labels, weights
