"""Known SFT bugs, injected on purpose for the diagnosis exercises.

Each fault is a small function that does to a batch (or to a loss) exactly what a real bug does, with a
docstring naming the symptom a learner will see. ``sv.finetune(..., fault="eos_masked")`` trains with
the bug switched on; everything the run *measures* (prompt and completion NLL, evaluation, exact
match) stays correct, so the symptom shows up in the numbers the way it would in a real project.

Two kinds of fault:

* **label faults** change which tokens are targets. They take a collated batch (the dict
  :func:`sftviz.collate.collate_examples` returns with ``extras=True``: ``input_ids``,
  ``attention_mask``, ``labels``, ``completion_mask``, ``prompt_mask``, ``loss_weights``) and return a
  new batch with changed ``labels`` and ``loss_weights`` (the input is never modified);
* **reduction faults** change how the per-token losses become one number. They take per-token
  losses ``nll`` and weights ``weights``, both ``(batch, seq)`` and aligned (0 where not trained), and
  return a scalar. :func:`token_mean` is the correct reduction they are compared against.

``FAULTS`` maps each name to a one-line description (for a selector widget); :func:`get_fault`
returns the :class:`Fault` record with its function, kind and symptom.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import IGNORE_INDEX

_BATCH_KEYS = ("input_ids", "attention_mask", "labels", "loss_weights")


def _copy_batch(batch) -> dict:
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


def shifted_labels(batch, **_) -> dict:
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


def eos_masked(batch, *, eos_id, **_) -> dict:
    """EOS never trained: padding masked *by id* when the pad token is the EOS token.

    The bug: ``tok.pad_token = tok.eos_token`` (the usual GPT-2 fix) followed by
    ``labels[labels == tok.pad_token_id] = -100`` to mask the padding. That line also masks the real
    EOS at the end of every completion, so its label becomes -100.

    Symptom: the loss looks normal and answers start right, but the model never learns to stop: EOS
    is never pushed up while every other token is, so more and more answers run on past their end
    (" blue... blue.. blue colour colour ...") until the token budget ends. The evaluation's
    ``stop_rate`` falls and exact match stays low although the completion NLL falls.
    """
    if eos_id is None:
        raise ValueError("eos_masked needs the tokenizer's EOS id (eos_id=tok.eos_token_id).")
    out = _copy_batch(batch)
    hit = batch["input_ids"] == int(eos_id)
    out["labels"][hit] = IGNORE_INDEX
    out["loss_weights"][hit] = 0.0
    return out


def padding_trained(batch, **_) -> dict:
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


def prompt_trained(batch, **_) -> dict:
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


def _check_nll(nll, weights):
    if not isinstance(nll, torch.Tensor) or not isinstance(weights, torch.Tensor):
        raise TypeError("nll and weights must be torch tensors of shape (batch, seq).")
    if nll.dim() != 2 or nll.shape != weights.shape:
        raise ValueError(f"nll {tuple(nll.shape)} and weights {tuple(weights.shape)} must both be (batch, seq).")


def token_mean(nll, weights, *, total_weight=None) -> torch.Tensor:
    """The correct SFT reduction: ``sum(w * l) / sum(w)`` over every trained token of the batch.

    ``total_weight`` replaces the batch's own ``sum(w)`` (gradient accumulation passes the total of all
    micro-batches, so that the sum of the micro-batch losses is a ratio of sums).
    """
    _check_nll(nll, weights)
    denom = weights.sum() if total_weight is None else torch.as_tensor(total_weight, dtype=nll.dtype, device=nll.device)
    return (nll * weights).sum() / denom


def per_sequence_mean(nll, weights, *, n_sequences=None, **_) -> torch.Tensor:
    """Fault: the mean of per-sequence means instead of one mean over all tokens of the batch.

    ``loss = (1 / S) * sum_i [ sum_t w_it l_it / sum_t w_it ]`` over the ``S`` sequences that have a
    trained token (``n_sequences`` overrides ``S``: gradient accumulation passes the number of
    sequences of the whole step).

    Symptom: short completions weigh more. A token of a 2-token answer counts five times as much as a
    token of a 10-token answer, so the model fits short answers and underfits long ones, and the loss
    differs from the token-level mean (``sv.sft_loss``) whenever lengths differ.
    """
    _check_nll(nll, weights)
    per_w = weights.sum(dim=1)
    has = per_w > 0
    means = (nll * weights).sum(dim=1)[has] / per_w[has]
    n = int(has.sum()) if n_sequences is None else n_sequences
    return means.sum() / n


def accum_mean_of_means(nll, weights, *, n_micro=1, **_) -> torch.Tensor:
    """Fault: gradient accumulation that averages the micro-batches' own averages.

    Each micro-batch's loss is normalised by *its own* number of trained tokens and then divided by the
    number of micro-batches ``n_micro``; summed over the micro-batches this gives
    ``(1 / A) * sum_k [ S_k / N_k ]`` instead of the ratio of sums ``sum_k S_k / sum_k N_k``.

    Symptom: the loss and the gradient depend on how the batch is split. Tokens in a micro-batch with
    few trained tokens count more than tokens in a full one, so ``batch_size=8, grad_accum=2`` no
    longer matches ``batch_size=16``. With ``grad_accum=1`` it is harmless.
    """
    _check_nll(nll, weights)
    if n_micro < 1:
        raise ValueError("n_micro must be at least 1.")
    return token_mean(nll, weights) / n_micro


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One injectable bug: its name, kind ("labels" or "reduction"), function and symptom."""

    name: str
    kind: str
    description: str
    function: object

    @property
    def symptom(self) -> str:
        doc = self.function.__doc__ or ""
        for para in doc.split("\n\n"):
            if para.strip().startswith("Symptom:"):
                return " ".join(para.split())[len("Symptom: "):]
        return ""

    def __repr__(self):
        return f"Fault({self.name!r}, kind={self.kind!r}: {self.description})"


_REGISTRY = {
    "shifted_labels": Fault(
        "shifted_labels", "labels", "Labels shifted one position too far: each target is the token after the intended one.",
        shifted_labels,
    ),
    "eos_masked": Fault(
        "eos_masked", "labels", "EOS never trained (padding masked by id with pad == eos): the model never learns to stop.",
        eos_masked,
    ),
    "padding_trained": Fault(
        "padding_trained", "labels", "Padding positions are trained as targets.", padding_trained,
    ),
    "prompt_trained": Fault(
        "prompt_trained", "labels", "The prompt is trained instead of the completion (mask inverted).", prompt_trained,
    ),
    "per_sequence_mean": Fault(
        "per_sequence_mean", "reduction", "Loss = mean of per-sequence means: short completions weigh more.",
        per_sequence_mean,
    ),
    "accum_mean_of_means": Fault(
        "accum_mean_of_means", "reduction",
        "Gradient accumulation averages the micro-batch averages instead of one ratio of sums.",
        accum_mean_of_means,
    ),
}

#: name -> one-line description, for a selector.
FAULTS = {name: f.description for name, f in _REGISTRY.items()}


def get_fault(name) -> Fault | None:
    """The :class:`Fault` called ``name`` (None for None); a clear error for an unknown name."""
    if name is None:
        return None
    if isinstance(name, Fault):
        return name
    if not isinstance(name, str):
        raise TypeError(f"fault must be None or one of {sorted(FAULTS)}; got {type(name).__name__}.")
    if name not in _REGISTRY:
        raise ValueError(f"Unknown fault {name!r}; choose one of: {', '.join(FAULTS)} (or None for no fault).")
    return _REGISTRY[name]


def apply_label_fault(fault, batch, *, eos_id=None, pad_id=None) -> dict:
    """Apply a label fault to a collated batch; reduction faults (and None) return the batch unchanged."""
    f = get_fault(fault)
    if f is None or f.kind != "labels":
        return batch
    return f.function(batch, eos_id=eos_id, pad_id=pad_id)
