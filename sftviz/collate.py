"""Batching examples: padding by length, never by token id; the same labels in sftviz and in HF Trainer.

:class:`SFTCollator` is the one collator of the lab and of Hugging Face ``Trainer``. It turns rows,
Examples or tokenized rows into a padded batch whose ``labels`` follow its masking; for a prompt-loss
weight it adds the per-token ``loss_weights`` that only a weight-aware loss reads
(:class:`sftviz.hf.SFTLossTrainer`, or :func:`sftviz.sft_loss` in a loop of your own).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .checks import check_bool, check_int
from .data import IGNORE_INDEX, Example, check_masking, to_example
from .packing import check_mode, pack_examples, packed_rows

#: Modules whose training loops call a data collator and compute their own loss from ``labels`` only.
FOREIGN_TRAINERS = ("transformers.", "trl.", "accelerate.")


class SFTCollator:
    """Turn examples (or raw rows) into a padded batch; usable as ``data_collator`` in HF ``Trainer``.

    Args:
        tok: the tokenizer (its pad id pads ``input_ids``; it must have one: ``sv.load_model`` sets it).
        masking: "completion" (default), "full", "prompt", or a prompt-loss weight in [0, 1].
        prompt_loss_weight: shorthand for ``masking=<weight>``; overrides ``masking`` when given.
        max_length: passed to :func:`build_example` for raw rows.
        pad_to_multiple_of: round the padded length up (useful on GPUs).
        return_extras: also return ``completion_mask``, ``prompt_mask`` and ``loss_weights`` (for
            looking at a batch). Off by default: a batch then holds only what a model's ``forward``
            accepts, plus ``loss_weights`` when they carry a prompt-loss weight.
        packing: None (padded rows, one example each), "boundaries" or "naive": pack the examples into
            rows of ``max_length`` tokens with :func:`sftviz.packing.pack_examples` (``position_ids``
            restarting per example; "boundaries" keeps attention inside each example with a 4-D mask).
            Rows that arrive packed (TRL's ``packing=True`` or padding-free rows, with ``position_ids``
            or ``seq_lengths``) are kept packed, their examples kept apart, whatever this says.

    Each feature may be an :class:`~sftviz.data.Example`, a raw row (``{"prompt", "completion"}`` or
    ``{"messages"}``), or a tokenized row: ``input_ids`` with ``labels``, ``completion_mask`` or
    ``assistant_masks`` (as TRL and :meth:`tokenize` make them). An Example whose labels were edited by
    hand (``set_trained``, e.g. in TokenView: ``masking == "custom"``) keeps its labels and weights, as
    in ``sv.finetune``; everything else gets this collator's masking.

    The batch holds ``input_ids`` (padded with the pad id), ``attention_mask`` and ``labels`` (padded
    with -100 *by length*, so an EOS with the pad's id at the end of a completion stays trained), all
    aligned with ``input_ids`` and not shifted. With a prompt-loss weight ``w`` the labels mark every
    target and ``loss_weights`` holds ``w`` on prompt targets and 1 on completion targets; a loss that
    ignores it would train the full sequence, so inside a Hugging Face or TRL trainer other than
    :class:`sftviz.hf.SFTLossTrainer` such a batch is refused with an error that says what to use instead.

    Example:
        >>> collate = sv.SFTCollator(tok)
        >>> batch = collate([{"prompt": "Q: Hi?\\nA:", "completion": " Hello."}])
        >>> sorted(batch)
        ['attention_mask', 'input_ids', 'labels']
    """

    def __init__(
        self,
        tok: Any,
        masking: str | float = "completion",
        prompt_loss_weight: float | None = None,
        *,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        return_extras: bool = False,
        packing: str | None = None,
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
        self.tok = tok
        self.max_length = check_int(max_length, "max_length", 2, allow_none=True)
        self.pad_to_multiple_of = check_int(pad_to_multiple_of, "pad_to_multiple_of", 1, allow_none=True)
        self.return_extras = check_bool(return_extras, "return_extras")
        self.packing = None if packing is None else check_mode(packing)
        if self.packing and self.max_length is None:
            raise ValueError("packing needs max_length= (the length of a packed row).")
        #: Set by :class:`sftviz.hf.SFTLossTrainer`: its loss reads ``loss_weights``.
        self.loss_reads_weights = False

    def __repr__(self) -> str:
        return f"SFTCollator(masking={self.masking!r}, pad_id={self.tok.pad_token_id})"

    def example(self, feature: object, index: int = 0) -> Example:
        """Turn one feature into an :class:`Example` under this collator's masking (see :func:`to_example`)."""
        if isinstance(feature, Mapping) and not feature:
            raise ValueError(
                f"Feature {index} is an empty dict: a Trainer with remove_unused_columns=True (the default) "
                "removed its columns (prompt/completion or messages) before the collator saw them. Tokenize "
                "the rows first, train_dataset = collate.tokenize(rows), or use sftviz.hf.SFTLossTrainer, which "
                "does that for you."
            )
        return to_example(self.tok, feature, masking=self.masking, where=f"Feature {index}", max_length=self.max_length)

    def __call__(self, features: list) -> dict[str, torch.Tensor]:
        if not isinstance(features, (list, tuple)) or not features:
            raise ValueError("SFTCollator needs a non-empty list of features.")
        if any(isinstance(f, Mapping) and ("position_ids" in f or "seq_lengths" in f) for f in features):
            batch = packed_rows(features, self.tok.pad_token_id, self.packing or "boundaries")
        elif self.packing:
            examples = [self.example(f, i) for i, f in enumerate(features)]
            batch = pack_examples(examples, max_length=self.max_length, pad_id=self.tok.pad_token_id, mode=self.packing)
        else:
            examples = [self.example(f, i) for i, f in enumerate(features)]
            batch = collate_examples(examples, self.tok.pad_token_id, pad_to_multiple_of=self.pad_to_multiple_of)
        weights = batch.pop("loss_weights")
        informative = bool(((weights != 0) & (weights != 1)).any())  # not just a copy of labels != -100
        if informative and not self.loss_reads_weights and _called_by_foreign_trainer():
            raise ValueError(
                f"SFTCollator(masking={self.masking!r}) gives prompt targets a weight in loss_weights, and this "
                "trainer computes its loss from the labels alone: it would silently train the full sequence. "
                "Use sftviz.hf.SFTLossTrainer (a transformers.Trainer whose loss reads the weights), or "
                "masking='completion' / 'full'."
            )
        if self.return_extras or informative:
            batch["loss_weights"] = weights
        if not self.return_extras:
            for key in ("completion_mask", "prompt_mask", "example_index"):
                batch.pop(key, None)
        return batch

    def tokenize(self, rows: Any) -> Any:
        """Tokenize rows once, into ``{"input_ids", "labels"}`` rows that any Trainer keeps.

        ``labels`` mark each row's completion targets (-100 elsewhere): the form TRL uses too. This
        collator reads the completion from them and applies its masking, so the tokenized rows serve
        every masking. They survive ``TrainingArguments(remove_unused_columns=True)``, the default,
        which drops raw ``prompt``/``completion`` columns before the collator sees them.

        Args:
            rows: a list of rows (or Examples), or a ``datasets.Dataset`` (mapped, with its other
                columns removed).

        Returns:
            The same kind of object: a list of dicts, or a ``datasets.Dataset``.
        """
        if hasattr(rows, "map") and hasattr(rows, "column_names"):  # a datasets.Dataset
            return rows.map(self.tokenize_row, remove_columns=list(rows.column_names), desc="sftviz: tokenize")
        if isinstance(rows, (str, bytes, dict)) or not isinstance(rows, Sequence):
            raise TypeError(
                f"rows must be a list of rows or a datasets.Dataset; got {type(rows).__name__}. "
                "Load rows with sv.load_dataset('support')."
            )
        return [self.tokenize_row(row, i) for i, row in enumerate(rows)]

    def tokenize_row(self, row: object, index: int = 0) -> dict[str, list[int]]:
        """One row as ``{"input_ids", "labels"}`` with completion-only labels (see :meth:`tokenize`)."""
        ex = to_example(self.tok, row, masking="completion", where=f"rows[{index}]", max_length=self.max_length)
        return {"input_ids": list(ex.input_ids), "labels": list(ex.labels)}


def _called_by_foreign_trainer(depth: int = 40) -> bool:
    """Whether a Hugging Face, TRL or accelerate training loop is calling the collator (up the stack)."""
    frame = sys._getframe(2)
    for _ in range(depth):
        if frame is None:
            return False
        if str(frame.f_globals.get("__name__", "")).startswith(FOREIGN_TRAINERS):
            return True
        frame = frame.f_back
    return False


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
