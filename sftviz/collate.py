"""Batching examples: padding by length, never by token id."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch

from .data import IGNORE_INDEX, Example, check_masking, to_example

_REQUIRED = ("input_ids",)


class SFTCollator:
    """Turn examples (or raw rows) into a padded batch; usable as ``data_collator`` in HF ``Trainer``.

    Args:
        tok: the tokenizer (its pad id pads ``input_ids``; it must have one: ``sv.load_model`` sets it).
        masking: "completion" (default), "full", "prompt", or a prompt-loss weight in [0, 1].
        prompt_loss_weight: shorthand for ``masking=<weight>``; overrides ``masking`` when given.
        max_length: passed to :func:`build_example` for raw rows.
        pad_to_multiple_of: round the padded length up (useful on GPUs).
        return_extras: also return ``completion_mask``, ``prompt_mask`` and ``loss_weights``
            (default True; GPT-2-style models ignore unknown keys; turn it off for models that reject them).

    Each feature may be an :class:`~sftviz.data.Example`, a raw row (``{"prompt", "completion"}`` or
    ``{"messages"}``), or a dict of token lists with at least ``input_ids`` and ``completion_mask``.
    An Example whose labels were edited by hand (``set_trained``, e.g. in TokenView: ``masking ==
    "custom"``) keeps its labels and weights, as in ``sv.finetune``; other Examples get this collator's
    masking.

    The batch holds ``input_ids`` (padded with the pad id), ``attention_mask``, ``labels`` (padded with
    -100 *by length*, so an EOS with the pad's id at the end of a completion stays trained), and the
    extras, all aligned with ``input_ids`` and not shifted. ``loss_weights`` is 0 wherever the label is
    -100; for a prompt-loss weight ``w`` it is ``w`` on prompt targets and 1 on completion targets.
    """

    def __init__(
        self,
        tok: Any,
        masking: str | float = "completion",
        prompt_loss_weight: float | None = None,
        *,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        return_extras: bool = True,
    ) -> None:
        if tok is None or not hasattr(tok, "pad_token_id"):
            raise TypeError("SFTCollator needs a Hugging Face tokenizer as its first argument.")
        if tok.pad_token_id is None:
            raise ValueError(
                "The tokenizer has no pad token. Load it with sv.load_model (which sets one) or set "
                "tok.pad_token = tok.eos_token: padding is masked by length, so EOS stays trained."
            )
        if prompt_loss_weight is not None:
            if isinstance(masking, str) and masking not in ("completion", "full"):
                raise ValueError("prompt_loss_weight cannot be combined with masking='prompt'.")
            masking = prompt_loss_weight
        self.masking = check_masking(masking)
        if pad_to_multiple_of is not None and (
            isinstance(pad_to_multiple_of, bool)
            or not isinstance(pad_to_multiple_of, numbers.Integral)
            or pad_to_multiple_of < 1
        ):
            raise ValueError("pad_to_multiple_of must be a positive integer or None.")
        self.tok = tok
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.return_extras = bool(return_extras)

    def __repr__(self) -> str:
        return f"SFTCollator(masking={self.masking!r}, pad_id={self.tok.pad_token_id})"

    def example(self, feature: object, index: int = 0) -> Example:
        """Turn one feature into an :class:`Example` under this collator's masking (see :func:`to_example`)."""
        return to_example(self.tok, feature, masking=self.masking, where=f"Feature {index}", max_length=self.max_length)

    def __call__(self, features: list) -> dict[str, torch.Tensor]:
        if not isinstance(features, (list, tuple)) or not features:
            raise ValueError("SFTCollator needs a non-empty list of features.")
        examples = [self.example(f, i) for i, f in enumerate(features)]
        return collate_examples(
            examples, self.tok.pad_token_id, pad_to_multiple_of=self.pad_to_multiple_of, extras=self.return_extras
        )


def collate_examples(
    examples: Sequence[Example], pad_id: int, *, pad_to_multiple_of: int | None = None, extras: bool = True
) -> dict[str, torch.Tensor]:
    """Right-pad a list of examples into tensors (see :class:`SFTCollator`)."""
    n = max(len(ex) for ex in examples)
    if pad_to_multiple_of:
        n = -(-n // pad_to_multiple_of) * pad_to_multiple_of
    b = len(examples)
    input_ids = torch.full((b, n), pad_id, dtype=torch.long)
    labels = torch.full((b, n), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((b, n), dtype=torch.long)
    cmask = torch.zeros((b, n), dtype=torch.long)
    pmask = torch.zeros((b, n), dtype=torch.long)
    weights = torch.zeros((b, n), dtype=torch.float32)
    for i, ex in enumerate(examples):
        k = len(ex)
        input_ids[i, :k] = torch.tensor(ex.input_ids, dtype=torch.long)
        labels[i, :k] = torch.tensor(ex.labels, dtype=torch.long)
        attention[i, :k] = 1
        cmask[i, :k] = torch.tensor(ex.completion_mask, dtype=torch.long)
        pmask[i, :k] = torch.tensor(ex.prompt_mask, dtype=torch.long)
        weights[i, :k] = torch.tensor(ex.weights, dtype=torch.float32)
    batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
    if extras:
        batch.update({"completion_mask": cmask, "prompt_mask": pmask, "loss_weights": weights})
    return batch
