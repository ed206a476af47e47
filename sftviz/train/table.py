"""The training data as the engine sees it: every example built once and padded once into tensors.

* :func:`prepare_examples` turns rows (or Examples) into :class:`~sftviz.data.Example` objects for one
  masking, with errors that name the row.
* :class:`TrainingTable` pads them into one table, applies a fault's label change, and shifts the
  targets (column ``t`` predicts token ``t + 1``), so a step only picks rows and trims the padding.
* :class:`BatchOrder` yields the rows of each step: successive seeded random permutations.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from ..collate import collate_examples
from ..data import IGNORE_INDEX, BoundaryMergeWarning, Example, to_example
from ..faults import Fault, apply_label_fault
from ..loss import target_masks


def prepare_examples(
    tok: Any, data: object, masking: str | float, max_length: int | None, name: str = "data"
) -> list[Example]:
    """Examples for ``data`` (TRL rows or Examples) under ``masking``; errors name the row (``data[3]``).

    Tokens that merge across the prompt/completion seam give one :class:`BoundaryMergeWarning` for the
    whole data set, not one per row.
    """
    if isinstance(data, (str, bytes, dict)) or not isinstance(data, (list, tuple)):
        raise TypeError(
            f"{name} must be a list of {{'prompt', 'completion'}} or {{'messages'}} rows (or Examples); got "
            f"{type(data).__name__}. Load one with sv.load_dataset('support')."
        )
    if not data:
        raise ValueError(f"{name} is empty: give at least one example.")
    out, merged = [], []
    for i, item in enumerate(data):
        ex = to_example(tok, item, masking=masking, where=f"{name}[{i}]", max_length=max_length)
        if max_length is not None and len(ex) > max_length:
            raise ValueError(
                f"{name}[{i}] has {len(ex)} tokens but the model reads at most {max_length}; rebuild it with "
                f"max_length={max_length} or pass the raw rows."
            )
        if ex.boundary_note is not None:
            merged.append(i)
        out.append(ex)
    if merged:
        warnings.warn(
            f"{len(merged)} of {len(out)} examples in {name} have tokens merging across the prompt/completion "
            f"boundary (first: {name}[{merged[0]}]: {out[merged[0]].boundary_note.message})",
            BoundaryMergeWarning,
            stacklevel=3,
        )
    return out


def fingerprint(examples: Sequence[Example]) -> str:
    """A short hash of the tokens and their prompt/completion split (not of the masking-specific labels,
    so the runs of :func:`sftviz.compare_masking` share it; hand-edited labels are included)."""
    h = hashlib.sha256()
    for ex in examples:
        parts = (ex.input_ids, ex.completion_mask) + ((ex.labels, ex.weights) if ex.masking == "custom" else ())
        h.update(repr(parts).encode())
    return h.hexdigest()[:16]


def describe_data(examples: Sequence[Example]) -> dict[str, Any]:
    """What a run's configuration records about its data: size, format and fingerprint."""
    kinds = {"chat" if "messages" in ex.source else "prompt/completion" for ex in examples}
    return {
        "n_examples": len(examples),
        "format": "/".join(sorted(kinds)),
        "n_tokens": sum(len(ex) for ex in examples),
        "fingerprint": fingerprint(examples),
    }


class TrainingTable:
    """The whole training set as padded tensors, targets already shifted (column t predicts token t+1).

    Attributes (all ``(n_examples, width - 1)`` on the training device unless said otherwise):
        ids: the padded input ids, ``(n_examples, width)``.
        lengths: each example's number of real tokens (on the CPU).
        train_tgt / train_w: the targets the loss trains on and their weights (0 where not trained),
            after any fault's label change.
        true_tgt: the true next tokens, for honest measurements whatever the fault.
        is_prompt / is_comp: which targets are prompt tokens / completion tokens.
        per_example: per-example totals a step adds up without touching the big tensors:
            "weight", "prompt_weight", "n_trained", "n_prompt", "n_completion", "n_tokens".
    """

    def __init__(
        self, examples: Sequence[Example], pad_id: int, eos_id: int | None, fault: Fault | None, device: torch.device
    ):
        batch = collate_examples(examples, pad_id, extras=True)
        batch = apply_label_fault(fault, batch, eos_id=eos_id, pad_id=pad_id)
        ids, att, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        weights = batch["loss_weights"] * (labels != IGNORE_INDEX)
        weights[:, 0] = 0.0  # position 0 is never a target
        prm, comp = target_masks(ids, batch["completion_mask"], att, batch["prompt_mask"])
        self.n = ids.shape[0]
        self.lengths = att.sum(1)
        self.ids = ids.to(device)
        self.train_tgt = labels[:, 1:].clamp_min(0).to(device)  # -100 -> 0 where the weight is 0
        self.train_w = weights[:, 1:].contiguous().to(device)
        self.true_tgt = ids[:, 1:].contiguous().to(device)
        self.is_prompt = prm[:, 1:].contiguous().to(device)
        self.is_comp = comp[:, 1:].contiguous().to(device)
        w = self.train_w
        self.per_example = {
            "weight": w.sum(1),
            "prompt_weight": (w * self.is_prompt).sum(1),
            "n_trained": (w > 0).sum(1).float(),
            "n_prompt": self.is_prompt.sum(1).float(),
            "n_completion": self.is_comp.sum(1).float(),
            "n_tokens": att.sum(1).float().to(device),
        }
        # Targets past an example's own end (only the padding_trained fault makes them): how many a step
        # trains then depends on how far each micro-batch is padded, so the step counts them on its cut.
        past_end = torch.arange(w.shape[1], device=w.device)[None, :] >= (self.lengths.to(w.device)[:, None] - 1)
        self.trains_padding = bool((w * past_end).any())
        # Without a label fault every trained target is the true next token: one cross-entropy serves both.
        self.labels_are_next_tokens = bool(((self.train_tgt == self.true_tgt) | (self.train_w == 0)).all())
        if not bool((self.per_example["weight"] > 0).any()):
            raise ValueError("No example has a trained token under this masking and fault: there is nothing to train.")

    def totals(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """The per-example totals summed over ``rows`` (a step's examples), as 0-d tensors."""
        return {key: values[rows].sum() for key, values in self.per_example.items()}


class BatchOrder:
    """Row indices for the steps: successive random permutations of the data, from a seeded generator.

    The same seed gives the same batches, whatever the masking, so runs from :func:`sftviz.compare_masking`
    see the same examples at every step.
    """

    def __init__(self, n: int, seed: int):
        self.n = n
        self.gen = torch.Generator().manual_seed(int(seed))
        self.buf = torch.empty(0, dtype=torch.long)

    def take(self, k: int) -> torch.Tensor:
        """The next ``k`` row indices (a CPU tensor)."""
        while self.buf.numel() < k:
            self.buf = torch.cat([self.buf, torch.randperm(self.n, generator=self.gen)])
        out, self.buf = self.buf[:k], self.buf[k:]
        return out
