"""Batching examples: padding by length, never by token id."""

from __future__ import annotations

import numbers

import torch

from .data import IGNORE_INDEX, Example, build_example, check_masking

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
        tok,
        masking="completion",
        prompt_loss_weight=None,
        *,
        max_length=None,
        pad_to_multiple_of=None,
        return_extras: bool = True,
    ):
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
            isinstance(pad_to_multiple_of, bool) or not isinstance(pad_to_multiple_of, numbers.Integral) or pad_to_multiple_of < 1
        ):
            raise ValueError("pad_to_multiple_of must be a positive integer or None.")
        self.tok = tok
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.return_extras = bool(return_extras)

    def __repr__(self):
        return f"SFTCollator(masking={self.masking!r}, pad_id={self.tok.pad_token_id})"

    def example(self, feature, index=0) -> Example:
        """Turn one feature into an :class:`Example` under this collator's masking."""
        if isinstance(feature, Example):
            if feature.masking == self.masking or feature.masking == "custom":
                return feature
            return feature.with_masking(self.masking)
        if not isinstance(feature, dict):
            raise TypeError(f"Feature {index} is a {type(feature).__name__}; expected an Example or a dict.")
        if "messages" in feature:
            return build_example(self.tok, messages=feature["messages"], masking=self.masking, max_length=self.max_length, warn=False)
        if "prompt" in feature and "completion" in feature:
            return build_example(
                self.tok, prompt=feature["prompt"], completion=feature["completion"], masking=self.masking,
                max_length=self.max_length, warn=False,
            )
        if "input_ids" in feature and "completion_mask" in feature:
            ids = list(feature["input_ids"])
            cmask = [int(v) for v in feature["completion_mask"]]
            if len(cmask) != len(ids):
                raise ValueError(f"Feature {index}: completion_mask has {len(cmask)} entries for {len(ids)} input_ids.")
            pmask = [int(t > 0 and not cmask[t]) for t in range(len(ids))]
            tmp = Example(ids, [IGNORE_INDEX] * len(ids), cmask, pmask, [""] * len(ids), [""] * len(ids), [0.0] * len(ids))
            return tmp.with_masking(self.masking)
        raise ValueError(
            f"Feature {index} has keys {sorted(feature)}; expected 'prompt' and 'completion', 'messages', "
            "or 'input_ids' with 'completion_mask'."
        )

    def __call__(self, features) -> dict:
        if not isinstance(features, (list, tuple)) or not features:
            raise ValueError("SFTCollator needs a non-empty list of features.")
        examples = [self.example(f, i) for i, f in enumerate(features)]
        return collate_examples(examples, self.tok.pad_token_id, pad_to_multiple_of=self.pad_to_multiple_of, extras=self.return_extras)


def collate_examples(examples, pad_id: int, *, pad_to_multiple_of=None, extras=True) -> dict:
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
