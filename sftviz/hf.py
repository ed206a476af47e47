"""The lab's labels and weights in Hugging Face ``Trainer`` (and through it, accelerate and TRL).

:class:`SFTLossTrainer` is a ``transformers.Trainer`` whose loss is the lab's: :func:`sftviz.sft_loss`
over the batch's ``labels`` with its ``loss_weights`` (a prompt-loss weight), divided by the total
weight of the optimiser step, across gradient accumulation and devices, so the step's loss is one
ratio of sums, as in :func:`sftviz.finetune`. It takes raw rows, a ``datasets.Dataset`` or tokenized
rows with default ``TrainingArguments``::

    from transformers import TrainingArguments
    from sftviz.hf import SFTLossTrainer

    trainer = SFTLossTrainer(
        model=model,
        args=TrainingArguments("out"),
        train_dataset=sv.load_dataset("support"),
        data_collator=sv.SFTCollator(tok, masking=0.1),
    )
    trainer.train()

With ``masking="completion"`` or ``"full"`` a plain ``transformers.Trainer`` trains the same labels (pass
it ``train_dataset=collate.tokenize(rows)``); a prompt-loss weight needs this class, and the collator
refuses to hand weighted batches to a trainer whose loss would drop them.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer

from .collate import SFTCollator
from .loss import sft_loss
from .masking import IGNORE_INDEX

#: Keys of a batch that are the loss's business, never the model's.
LOSS_KEYS = ("loss_weights", "completion_mask", "prompt_mask")
#: Keys that mark a row as raw text (tokenized by the trainer, with the collator's rules).
RAW_KEYS = ("prompt", "completion", "messages")


def step_weight(batch: dict) -> torch.Tensor:
    """The total loss weight of a batch's targets: the denominator of its share of the step's loss."""
    labels = batch["labels"][..., 1:]
    trained = (labels != IGNORE_INDEX).float()
    weights = batch.get("loss_weights")
    return trained.sum() if weights is None else (weights[..., 1:].float() * trained).sum()


class SFTLossTrainer(Trainer):
    """A ``transformers.Trainer`` that trains the lab's objective with an :class:`~sftviz.SFTCollator`.

    Arguments are ``Trainer``'s. Differences:

    * ``data_collator`` must be an :class:`~sftviz.SFTCollator` (default: ``SFTCollator(processing_class)``);
      its masking decides the labels and weights;
    * raw rows (``prompt``/``completion`` or ``messages``) in ``train_dataset`` / ``eval_dataset`` are
      tokenized with the collator's rules (:meth:`~sftviz.SFTCollator.tokenize`), so the default
      ``remove_unused_columns=True`` keeps what the loss needs;
    * the loss is ``sum(w * nll) / sum(w)`` over all trained targets of the optimiser step (all
      micro-batches, all processes): :func:`sftviz.sft_loss` with the batch's ``loss_weights``.
    """

    def __init__(
        self,
        model: Any = None,
        args: Any = None,
        data_collator: SFTCollator | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        **kwargs: Any,
    ) -> None:
        if data_collator is None:
            if processing_class is None:
                raise TypeError("SFTLossTrainer needs data_collator=sv.SFTCollator(tok, ...) or processing_class=tok.")
            data_collator = SFTCollator(processing_class)
        if not isinstance(data_collator, SFTCollator):
            raise TypeError(
                f"SFTLossTrainer trains with an sftviz.SFTCollator (its masking decides the labels and weights); "
                f"got data_collator={type(data_collator).__name__}."
            )
        if kwargs.get("compute_loss_func") is not None:
            raise TypeError(
                "SFTLossTrainer computes the loss itself (sv.sft_loss with the batch's weights); "
                "do not pass compute_loss_func."
            )
        data_collator.loss_reads_weights = True
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=_tokenized(data_collator, train_dataset),
            eval_dataset=_tokenized(data_collator, eval_dataset),
            processing_class=processing_class,
            compute_loss_func=self._sft_loss,
            **kwargs,
        )
        # The loss is already divided by the step's total weight (get_batch_samples): no further division
        # by the number of accumulation steps.
        self.loss_is_scaled_for_ga = True
        self._weights: torch.Tensor | None = None

    def compute_loss(
        self, model: Any, inputs: dict, return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        """Trainer's ``compute_loss``, with the batch's weights set aside for :meth:`_sft_loss`."""
        inputs = dict(inputs)
        self._weights = inputs.pop("loss_weights", None)
        for key in LOSS_KEYS:
            inputs.pop(key, None)
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def _sft_loss(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        weights = None if self._weights is None else self._weights.to(logits.device)
        normalizer = None if num_items_in_batch is None else torch.as_tensor(num_items_in_batch, device=logits.device)
        return sft_loss(logits, labels, weights, normalizer=normalizer)

    def get_batch_samples(self, *args: Any, **kwargs: Any) -> tuple[list, Any]:
        """Trainer's batches of one optimiser step, with their total *weight* (not count) of targets."""
        batch_samples, num_items = super().get_batch_samples(*args, **kwargs)
        if not batch_samples or "labels" not in batch_samples[0]:
            return batch_samples, num_items
        total = sum(step_weight(b) for b in batch_samples)
        if getattr(self.args, "average_tokens_across_devices", False) and self.args.world_size > 1:
            total = self.accelerator.gather(total.to(self.args.device)).sum()
        return batch_samples, total


def _tokenized(collate: SFTCollator, dataset: Any) -> Any:
    """``dataset`` with raw rows tokenized by ``collate`` (other datasets as they are)."""
    if dataset is None:
        return None
    if isinstance(dataset, dict) and not any(k in dataset for k in RAW_KEYS):  # {"name": dataset, ...}
        return {name: _tokenized(collate, d) for name, d in dataset.items()}
    columns = getattr(dataset, "column_names", None)
    if columns is not None:
        return collate.tokenize(dataset) if any(k in columns for k in RAW_KEYS) else dataset
    try:
        first = dataset[0]
    except (TypeError, IndexError, KeyError):
        return dataset  # an iterable dataset: rows are taken as they come
    raw = isinstance(first, dict) and any(k in first for k in RAW_KEYS)
    return collate.tokenize(list(dataset)) if raw else dataset
