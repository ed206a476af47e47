"""Known SFT bugs, injected on purpose for the diagnosis exercises.

Each fault is a small function that does to a batch (or to a loss) exactly what a real bug does, with a
docstring naming the symptom a learner will see. ``sv.finetune(..., fault="eos_masked")`` trains with
the bug switched on; everything the run *measures* (prompt and completion NLL, evaluation, exact
match) stays correct, so the symptom shows up in the numbers the way it would in a real project.

A fault declares what it changes, and the training engine applies exactly that (it never looks at a
fault's name):

* ``labels``: a function that changes which tokens are targets. It takes a collated batch (the dict
  :func:`sftviz.collate.collate_examples` returns with ``extras=True``: ``input_ids``,
  ``attention_mask``, ``labels``, ``completion_mask``, ``prompt_mask``, ``loss_weights``) and returns
  a new batch with changed ``labels`` and ``loss_weights`` (the input is never modified);
* ``reduction``: a :class:`~sftviz.loss.Reduction` that replaces the correct token mean
  (:func:`~sftviz.loss.token_mean`) in turning per-token losses into one number;
* ``packing``: the run packs its micro-batches into rows (:mod:`sftviz.packing`) in this mode
  ("naive": one causal mask over each row; "boundaries": attention inside each example);
* ``logged_loss``: a function of the step's loss and its number of micro-batches that gives the loss
  the run *records* (the training itself is untouched).

To add a fault, write its function here (a docstring with a ``Symptom:`` paragraph) and add a
:class:`Fault` to the registry at the end of this file. ``FAULTS`` maps each name to a one-line
description (for a selector widget); :func:`get_fault` returns the :class:`Fault`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .loss import Reduction, check_nll_weights, token_mean, weighted_mean
from .masking import IGNORE_INDEX

__all__ = [
    "FAULTS",
    "Fault",
    "accum_mean_of_means",
    "apply_label_fault",
    "eos_masked",
    "get_fault",
    "loss_scaled_by_accum",
    "naive_packing",
    "packed_row_mean",
    "padding_trained",
    "per_sequence_mean",
    "prompt_trained",
    "shifted_labels",
    "token_mean",
]

_BATCH_KEYS = ("input_ids", "attention_mask", "labels", "loss_weights")


def _copy_batch(batch: dict) -> dict:
    if not isinstance(batch, dict):
        raise TypeError(f"A label fault takes a collated batch (a dict of tensors); got {type(batch).__name__}.")
    missing = [k for k in _BATCH_KEYS if k not in batch]
    if missing:
        raise ValueError(
            f"The batch lacks {missing}; build it with sftviz.collate.collate_examples(examples, pad_id, extras=True)."
        )
    out = dict(batch)
    out["labels"] = batch["labels"].clone()
    out["loss_weights"] = batch["loss_weights"].clone()
    return out


# --------------------------------------------------------------------------------------------
# Label faults
# --------------------------------------------------------------------------------------------


def shifted_labels(batch: dict, **_: Any) -> dict:
    """Labels shifted one position too far: every target is the token *after* the intended one.

    The bug: shifting the labels by hand (``labels = labels[1:]``) before giving them to a model (or
    a loss) that shifts them again. The logits at position ``t - 1`` are then trained to predict the
    token at ``t + 1``: the last prompt position is trained on the *second* completion token, and the
    last completion token is trained on nothing.

    Symptom: the training loss still falls (the model learns to skip a token), but the correctly
    measured completion NLL stays high or rises, and greedy answers drop their first token or come
    out garbled; exact match stays near zero.
    """
    out = _copy_batch(batch)
    lab, w = out["labels"], out["loss_weights"]
    lab[:, :-1] = batch["labels"][:, 1:]
    lab[:, -1] = IGNORE_INDEX
    w[:, :-1] = batch["loss_weights"][:, 1:]
    w[:, -1] = 0.0
    lab[:, 0] = IGNORE_INDEX  # position 0 is never a target, whatever the bug
    w[:, 0] = 0.0
    return out


def eos_masked(batch: dict, *, eos_id: int | None, **_: Any) -> dict:
    """EOS never trained: padding masked *by id* when the pad token is the EOS token.

    The bug: ``tok.pad_token = tok.eos_token`` (the usual GPT-2 fix) followed by
    ``labels[labels == tok.pad_token_id] = -100`` to mask the padding. That line also masks the real
    EOS at the end of every completion, so its label becomes -100.

    Symptom: the loss looks normal and answers start right, but fine-tuning never teaches the model to
    stop after the answer: EOS is never pushed up while every other token is, so answers run on past their end
    (" 35 dollars. 35 dollars. 35 dollars."). The evaluation's ``length_ratio`` rises above 1 and exact
    match stays low although the completion NLL falls. ``stop_rate`` may fall little: a pretrained model
    that met the EOS in pretraining still emits it, only later than the reference does.
    """
    if eos_id is None:
        raise ValueError("eos_masked needs the tokenizer's EOS id (eos_id=tok.eos_token_id).")
    out = _copy_batch(batch)
    hit = batch["input_ids"] == int(eos_id)
    out["labels"][hit] = IGNORE_INDEX
    out["loss_weights"][hit] = 0.0
    return out


def padding_trained(batch: dict, **_: Any) -> dict:
    """Padding positions become targets (the pad tokens are trained like real text).

    The bug: labels copied from ``input_ids`` after padding, with the padding never set to -100 (or
    the attention mask ignored when building the labels).

    Symptom: the loss no longer measures the answers. It starts above the completion NLL (the
    pretrained model has never seen padding) and ends below it (predicting pad after pad is trivial),
    and it jumps with the amount of padding in each batch; the real targets get a smaller share of
    the gradient; the model learns to emit padding after its answer.
    """
    out = _copy_batch(batch)
    pad = batch["attention_mask"] == 0
    pad[:, 0] = False
    out["labels"][pad] = batch["input_ids"][pad]
    out["loss_weights"][pad] = 1.0
    return out


def prompt_trained(batch: dict, **_: Any) -> dict:
    """The prompt is trained instead of the completion (the mask inverted).

    The bug: the completion mask is applied the wrong way round (``labels[completion_mask == 1] = -100``).
    The labels are exactly those of ``masking="prompt"``.

    Symptom: the loss falls fast (prompts are repetitive templates) while the completion NLL does not
    improve; the model learns to write questions, not answers, and exact match stays at zero.
    """
    if "prompt_mask" not in batch:
        raise ValueError("prompt_trained needs the batch's prompt_mask (collate_examples(..., extras=True)).")
    out = _copy_batch(batch)
    prm = batch["prompt_mask"].bool() & (batch["attention_mask"] == 1)
    prm[:, 0] = False
    out["labels"] = torch.where(prm, batch["input_ids"], torch.full_like(batch["input_ids"], IGNORE_INDEX))
    out["loss_weights"] = prm.to(batch["loss_weights"].dtype)
    return out


# --------------------------------------------------------------------------------------------
# Reductions
# --------------------------------------------------------------------------------------------


def per_sequence_mean(
    nll: torch.Tensor, weights: torch.Tensor, *, total_weight: Any = None, n_sequences: Any = None, n_micro: int = 1
) -> torch.Tensor:
    """Fault: the mean of per-sequence means instead of one mean over all tokens of the batch.

    ``loss = (1 / S) * sum_i [ sum_t w_it l_it / sum_t w_it ]`` over the ``S`` sequences that have a
    trained token (``n_sequences`` overrides ``S``: gradient accumulation passes the number of
    sequences of the whole step).

    Symptom: short completions weigh more. A token of a 2-token answer counts five times as much as a
    token of a 10-token answer, so the model fits short answers and underfits long ones, and the loss
    differs from the token-level mean (``sv.sft_loss``) whenever lengths differ.
    """
    check_nll_weights(nll, weights)
    per_w = weights.sum(dim=1)
    has = per_w > 0
    means = (nll * weights).sum(dim=1)[has] / per_w[has]
    n = int(has.sum()) if n_sequences is None else n_sequences
    return means.sum() / n


def accum_mean_of_means(
    nll: torch.Tensor, weights: torch.Tensor, *, total_weight: Any = None, n_sequences: Any = None, n_micro: int = 1
) -> torch.Tensor:
    """Fault: gradient accumulation that averages the micro-batches' own averages.

    Each micro-batch's loss is normalised by *its own* number of trained tokens and then divided by the
    number of micro-batches ``n_micro``; summed over the micro-batches this gives
    ``(1 / A) * sum_k [ S_k / N_k ]`` instead of the ratio of sums ``sum_k S_k / sum_k N_k``.

    Symptom: the loss and the gradient depend on how the batch is split. Tokens in a micro-batch with
    few trained tokens count more than tokens in a full one, so ``batch_size=8, grad_accum=2`` no
    longer matches ``batch_size=16``. With ``grad_accum=1`` it is harmless.
    """
    check_nll_weights(nll, weights)
    if n_micro < 1:
        raise ValueError("n_micro must be at least 1.")
    return weighted_mean(nll, weights) / n_micro


def packed_row_mean(
    nll: torch.Tensor, weights: torch.Tensor, *, total_weight: Any = None, n_sequences: Any = None, n_micro: int = 1
) -> torch.Tensor:
    """Fault: a packed batch's loss averaged per packed row (the mean of the rows' token means).

    ``loss = (1 / (A R)) * sum_r [ sum_t w_rt l_rt / sum_t w_rt ]`` over the ``R`` rows of a micro-batch
    that have a trained token, ``A`` the number of micro-batches: a per-sequence mean where a "sequence"
    is a row of several packed examples.

    Symptom: a token counts more when its row holds few trained tokens (a row that best-fit packing
    fills with one leftover example), so the loss and the gradient depend on how the examples happened
    to be packed, and the objective drifts from the completion NLL of the batch although every label is
    right.
    """
    check_nll_weights(nll, weights)
    if n_micro < 1:
        raise ValueError("n_micro must be at least 1.")
    per_w = weights.sum(dim=1)
    has = per_w > 0
    if not bool(has.any()):
        return (nll * weights).sum()
    return ((nll * weights).sum(dim=1)[has] / per_w[has]).mean() / n_micro


# --------------------------------------------------------------------------------------------
# Packing and logging
# --------------------------------------------------------------------------------------------


def naive_packing(batch: dict, **_: Any) -> dict:
    """Examples packed into rows with one causal mask over each row: no boundaries in the attention.

    The bug: concatenating examples into one row (to save padding) and keeping the model's usual
    causal mask. Position ids that restart at each example do not help a model like GPT-2, whose
    attention ignores them. Every example then reads the examples packed before it.

    Takes a packed batch (:func:`sftviz.pack`) and returns it with a 2-D mask over each row's real tokens
    instead of the block-diagonal one: what this fault trains on.

    Symptom: the labels and the loss formula are right, but the loss measured while training is
    computed with foreign context: every example after the first in a row is read behind another one,
    at positions that restart as if nothing were there. On the course's data the completion NLL measured
    on the training batches stays high and ends above twice the healthy run's (the hallmark that
    :data:`sftviz.mystery.HALLMARKS` checks), although the held-out evaluation reads each example alone.
    """
    if not isinstance(batch, dict) or "example_index" not in batch:
        raise TypeError("naive_packing takes a packed batch from sv.pack(...) (a dict with 'example_index').")
    out = dict(batch)
    out["attention_mask"] = (batch["example_index"] >= 0).long()
    return out


def loss_scaled_by_accum(loss: float, *, n_micro: int = 1) -> float:
    """Fault: the logged loss multiplied by the number of gradient accumulation steps.

    The bug (transformers #34263, after the October 2024 fix of the accumulation loss): the loss is
    normalised correctly for the gradient, but the number the trainer *logs* is scaled by the
    accumulation steps once more. Training is exactly the healthy run's.

    Symptom: the logged loss is ``grad_accum`` times the completion NLL measured on the same batches,
    and it jumps when ``grad_accum`` changes, while the NLL curves, the gradient norms and the evaluation
    follow the healthy run's step for step.
    """
    return loss * n_micro


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


LabelFault = Callable[..., dict]


@dataclass(frozen=True)
class Fault:
    """One injectable bug: its name, a one-line description, and what it changes.

    ``labels`` (a function that changes a collated batch's labels and loss weights) and ``reduction`` (a
    :class:`~sftviz.loss.Reduction` used instead of the token mean) are never both set. ``packing`` makes
    the run pack its micro-batches in that mode (with ``reduction``, it is what the reduction needs;
    alone, ``batch`` is the function that shows the change on a packed batch). ``logged_loss`` changes
    only the loss the run records. ``needs_grad_accum`` marks a fault that changes nothing unless a step
    has several micro-batches.
    """

    name: str
    description: str
    labels: LabelFault | None = None
    reduction: Reduction | None = None
    packing: str | None = None
    batch: LabelFault | None = None
    logged_loss: Callable[..., float] | None = None
    needs_grad_accum: bool = False

    def __post_init__(self) -> None:
        changes = [self.labels, self.reduction, self.batch, self.logged_loss]
        if sum(c is not None for c in changes) != 1:
            raise ValueError(
                f"Fault {self.name!r} must change exactly one of: the labels, the reduction, the packed batch, "
                "the logged loss."
            )
        if self.packing not in (None, "boundaries", "naive"):
            raise ValueError(f"Fault {self.name!r}: packing must be None, 'boundaries' or 'naive'.")

    @property
    def kind(self) -> str:
        """What the fault changes: "labels", "reduction", "packing" or "logging"."""
        if self.labels is not None:
            return "labels"
        if self.reduction is not None:
            return "reduction"
        return "packing" if self.batch is not None else "logging"

    @property
    def function(self) -> Callable[..., Any]:
        """The function that does the damage (its docstring explains the bug and its symptom)."""
        return next(f for f in (self.labels, self.reduction, self.batch, self.logged_loss) if f is not None)

    @property
    def symptom(self) -> str:
        """The ``Symptom:`` paragraph of the function's docstring, on one line."""
        doc = self.function.__doc__ or ""
        for para in doc.split("\n\n"):
            if para.strip().startswith("Symptom:"):
                return " ".join(para.split())[len("Symptom: ") :]
        return ""

    def __repr__(self) -> str:
        return f"Fault({self.name!r}, kind={self.kind!r}: {self.description})"


_REGISTRY = {
    f.name: f
    for f in (
        Fault(
            "shifted_labels",
            "Labels shifted one position too far: each target is the token after the intended one.",
            labels=shifted_labels,
        ),
        Fault(
            "eos_masked",
            "EOS never trained (padding masked by id with pad == eos): fine-tuning never teaches the model to stop "
            "after the answer, so answers run on (they may still end with an EOS, later).",
            labels=eos_masked,
        ),
        Fault("padding_trained", "Padding positions are trained as targets.", labels=padding_trained),
        Fault(
            "prompt_trained", "The prompt is trained instead of the completion (mask inverted).", labels=prompt_trained
        ),
        Fault(
            "per_sequence_mean",
            "Loss = mean of per-sequence means: short completions weigh more.",
            reduction=per_sequence_mean,
        ),
        Fault(
            "accum_mean_of_means",
            "Gradient accumulation averages the micro-batch averages instead of one ratio of sums.",
            reduction=accum_mean_of_means,
            needs_grad_accum=True,
        ),
        Fault(
            "naive_packing",
            "Examples packed into rows with one causal mask: each example also reads those packed before it.",
            packing="naive",
            batch=naive_packing,
        ),
        Fault(
            "packed_row_mean",
            "Packed rows, loss = mean of the rows' means: a token counts more in a sparsely filled row.",
            reduction=packed_row_mean,
            packing="boundaries",
        ),
        Fault(
            "loss_scaled_by_accum",
            "The logged loss is multiplied by the accumulation steps (the training itself is right).",
            logged_loss=loss_scaled_by_accum,
            needs_grad_accum=True,
        ),
    )
}

#: name -> one-line description, for a selector.
FAULTS = {name: f.description for name, f in _REGISTRY.items()}


def get_fault(name: str | Fault | None) -> Fault | None:
    """The :class:`Fault` called ``name`` (None for None); a clear error for an unknown name."""
    if name is None or isinstance(name, Fault):
        return name
    if not isinstance(name, str):
        raise TypeError(f"fault must be None or one of {sorted(FAULTS)}; got {type(name).__name__}.")
    if name not in _REGISTRY:
        raise ValueError(f"Unknown fault {name!r}; choose one of: {', '.join(FAULTS)} (or None for no fault).")
    return _REGISTRY[name]


def apply_label_fault(
    fault: str | Fault | None, batch: dict, *, eos_id: int | None = None, pad_id: int | None = None
) -> dict:
    """Apply a fault's label change to a collated batch; a fault that changes no labels (and None)
    returns the batch unchanged."""
    f = get_fault(fault)
    if f is None or f.labels is None:
        return batch
    return f.labels(batch, eos_id=eos_id, pad_id=pad_id)
