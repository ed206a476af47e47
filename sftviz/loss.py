"""The SFT loss: a token-level mean of next-token negative log-likelihoods over the trained targets.

Everything here takes *unshifted* labels in the Hugging Face convention (-100 = not a target) and
does the shift itself: the logits at position ``t - 1`` score the token at position ``t``.

* :func:`weighted_mean` -- ``sum(w_i * v_i) / sum(w_i)``: the one token-level mean every loss here (and
  the training engine, and the gradient views) reduces with; :func:`token_mean` is that mean with the
  signature every *reduction* shares (see :mod:`sftviz.faults` for the faulty ones).
* :func:`sft_loss` -- ``sum(w_i * l_i) / sum(w_i)`` over all trained targets of the batch (a mean over
  tokens, never a mean of per-sequence means). With no weights it equals the loss Hugging Face models
  return for ``model(input_ids, labels=labels)``.
* :func:`token_nll` -- the per-token losses, for views and breakdowns.
* :func:`loss_breakdown` -- prompt NLL and completion NLL of any batch, whatever the masking.
* :func:`supervised_head_loss` -- the same loss, computing ``lm_head`` logits only at positions whose
  next token is trained (saves time and memory when prompts are long).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from .checks import check_model, max_positions
from .masking import IGNORE_INDEX


class NothingToTrainWarning(UserWarning):
    """A batch had no trained target; its loss is an (attached) zero."""


def check_logits_labels(logits, labels):
    """``(logits, labels)`` checked (types, shapes, dtypes) with a clear error, as the losses need them."""
    if not isinstance(logits, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError("logits and labels must be torch tensors (e.g. model(...).logits and batch['labels']).")
    if labels.dim() == 1:
        labels = labels.unsqueeze(0)
    if logits.dim() == 2:
        logits = logits.unsqueeze(0)
    if logits.dim() != 3 or labels.dim() != 2:
        raise ValueError(
            f"Expected logits of shape (batch, seq, vocab) and labels (batch, seq); got {tuple(logits.shape)} and {tuple(labels.shape)}."
        )
    if logits.shape[:2] != labels.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not line up. Pass unshifted "
            "labels of the same length as the input; sft_loss shifts them itself."
        )
    if labels.dtype not in (torch.long, torch.int, torch.int32, torch.int64):
        raise TypeError(f"labels must be integer token ids (with -100 for ignored), got {labels.dtype}.")
    labels = labels.long()
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= logits.shape[-1]))
    if bool(bad.any()):
        raise ValueError(
            f"labels hold {int(labels[bad][0])}, not a token id of this model's {logits.shape[-1]}-entry vocabulary "
            "(nor -100): were they made with another tokenizer?"
        )
    return logits, labels


def _check_weights(weights, labels):
    if weights is None:
        return None
    if not isinstance(weights, torch.Tensor):
        weights = torch.as_tensor(weights, dtype=torch.float32)
    if weights.dim() == 1:
        weights = weights.unsqueeze(0)
    if not torch.is_floating_point(weights) and weights.dtype not in (torch.long, torch.int, torch.int32, torch.bool):
        raise TypeError(f"weights must be numbers; got a {weights.dtype} tensor.")
    if weights.shape != labels.shape:
        raise ValueError(
            f"weights {tuple(weights.shape)} must have the same shape as labels {tuple(labels.shape)} (unshifted)."
        )
    if not bool(torch.isfinite(weights.float()).all()) or (weights < 0).any():
        raise ValueError(
            "weights must be finite, non-negative numbers (e.g. a prompt-loss weight in [0, 1] on prompt targets, 1 on completion targets)."
        )
    return weights.to(labels.device, torch.float32)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor, total_weight: Any = None) -> torch.Tensor:
    """``sum(weights * values) / sum(weights)``: a mean over tokens, each counted with its weight.

    ``values`` and ``weights`` have the same shape (any shape; 0 weight where a token is not trained).
    ``total_weight`` replaces ``sum(weights)`` in the denominator: gradient accumulation passes the total
    weight of every micro-batch of the step, so that the micro-batches' results add up to one ratio of
    sums, exactly as with one big batch.
    """
    denom = (
        weights.sum()
        if total_weight is None
        else torch.as_tensor(total_weight, dtype=values.dtype, device=values.device)
    )
    return (values * weights).sum() / denom


class Reduction(Protocol):
    """How per-token losses become the step's loss. Every reduction takes the same arguments:

    ``nll`` and ``weights``, both ``(batch, seq)`` and aligned (weight 0 where a token is not trained),
    for one micro-batch; and what it may need to know of the whole optimiser step: ``total_weight`` (the
    weights of all its micro-batches), ``n_sequences`` (its sequences with a trained token) and
    ``n_micro`` (its micro-batches). Left at their defaults, the micro-batch is the whole step.
    """

    def __call__(
        self,
        nll: torch.Tensor,
        weights: torch.Tensor,
        *,
        total_weight: Any = None,
        n_sequences: Any = None,
        n_micro: int = 1,
    ) -> torch.Tensor: ...


def token_mean(
    nll: torch.Tensor, weights: torch.Tensor, *, total_weight: Any = None, n_sequences: Any = None, n_micro: int = 1
) -> torch.Tensor:
    """The correct SFT reduction: ``sum(w * l) / sum(w)`` over every trained token of the step.

    A :class:`Reduction`: ``n_sequences`` and ``n_micro`` do not change it (that is the point).
    """
    check_nll_weights(nll, weights)
    return weighted_mean(nll, weights, total_weight)


def check_nll_weights(nll: object, weights: object) -> None:
    """Raise unless ``nll`` and ``weights`` are tensors of the same ``(batch, seq)`` shape."""
    if not isinstance(nll, torch.Tensor) or not isinstance(weights, torch.Tensor):
        raise TypeError("nll and weights must be torch tensors of shape (batch, seq).")
    if nll.dim() != 2 or nll.shape != weights.shape:
        raise ValueError(f"nll {tuple(nll.shape)} and weights {tuple(weights.shape)} must both be (batch, seq).")


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token negative log-likelihood, aligned with ``labels`` (shape ``(batch, seq)``).

    ``out[b, t] = -log Pr(labels[b, t] | tokens before t)`` where ``labels[b, t] != -100``; 0 elsewhere
    (and always 0 at ``t = 0``, which nothing predicts). Pass ``input_ids`` as labels to score every
    token. Computed in float32 whatever the logits' dtype.
    """
    logits, labels = check_logits_labels(logits, labels)
    b, n, v = logits.shape
    out = logits.new_zeros((b, n), dtype=torch.float32)
    if n < 2:
        return out
    targets = labels[:, 1:]
    nll = F.cross_entropy(
        logits[:, :-1].float().reshape(-1, v), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(b, n - 1)
    return torch.cat([out[:, :1], nll], dim=1)


def _zero_loss(tensor):
    warnings.warn(
        "This batch has no trained target (every label is -100 or has weight 0); its loss is 0. "
        "Check the masking: was every completion truncated away?",
        NothingToTrainWarning,
        stacklevel=3,
    )
    return (tensor.float() * 0.0).sum()


def sft_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: Any = None, *, normalizer: Any = None
) -> torch.Tensor:
    """The SFT objective: a weighted token-level mean of next-token losses over trained targets.

    Args:
        logits: ``(batch, seq, vocab)`` from the model.
        labels: ``(batch, seq)`` unshifted token ids, ``-100`` where a token is not a target.
        weights: optional ``(batch, seq)`` non-negative weights aligned with ``labels``
            (``SFTCollator`` returns them as ``loss_weights``). None means 1 for every target.
        normalizer: divide by this total weight instead of the batch's own (gradient accumulation:
            pass the number of trained tokens of all micro-batches so the result is a ratio of sums).

    Returns:
        ``sum(w_i * l_i) / sum(w_i)`` as a scalar tensor. Over all trained tokens of the batch, so a
        long completion counts more than a short one, as in Hugging Face's loss. A batch with nothing
        to train returns a zero that is still attached to the graph, with a warning (never NaN).
    """
    logits, labels = check_logits_labels(logits, labels)
    weights = _check_weights(weights, labels)
    if labels.shape[1] < 2:
        return _zero_loss(logits)
    nll = token_nll(logits, labels)[:, 1:]
    target = (labels[:, 1:] != IGNORE_INDEX).float()
    w = target if weights is None else weights[:, 1:] * target
    total = w.sum()
    denom = total if normalizer is None else torch.as_tensor(normalizer, dtype=torch.float32, device=total.device)
    if float(total) == 0.0:
        return _zero_loss(logits)
    if not (float(denom) > 0 and math.isfinite(float(denom))):
        raise ValueError(f"normalizer must be a positive, finite total weight; got {float(denom)}.")
    return weighted_mean(nll, w, denom)


@dataclass
class LossBreakdown:
    """Where the loss of a batch comes from: prompt targets vs completion targets (nats)."""

    prompt_nll_sum: float
    prompt_nll_mean: float
    n_prompt: int
    completion_nll_sum: float
    completion_nll_mean: float
    n_completion: int
    per_token: torch.Tensor  # (batch, seq) NLL of every target, 0 where nothing is predicted

    @property
    def full_nll_sum(self) -> float:
        """NLL summed over every target: prompt part + completion part."""
        return self.prompt_nll_sum + self.completion_nll_sum

    @property
    def full_nll_mean(self) -> float:
        """Mean NLL per target over both parts."""
        n = self.n_prompt + self.n_completion
        return self.full_nll_sum / n if n else float("nan")

    def __repr__(self) -> str:
        return (
            f"LossBreakdown(prompt: {self.prompt_nll_mean:.4f} nats/token over {self.n_prompt}, "
            f"completion: {self.completion_nll_mean:.4f} nats/token over {self.n_completion})"
        )


def target_masks(
    input_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    prompt_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean ``(batch, seq)`` masks of prompt targets and completion targets.

    A position is a target when it and the position before it are real tokens (not padding) and it is
    not position 0. Completion targets are those with ``completion_mask == 1``; prompt targets are the
    rest (or ``prompt_mask`` when given).
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    real = attention_mask.bool()
    valid = torch.zeros_like(real)
    valid[:, 1:] = real[:, 1:] & real[:, :-1]
    comp = valid & completion_mask.bool()
    prm = valid & ~completion_mask.bool() if prompt_mask is None else valid & prompt_mask.bool()
    return prm, comp


def loss_breakdown(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    prompt_mask: torch.Tensor | None = None,
) -> LossBreakdown:
    """Prompt NLL and completion NLL of a batch, measured whatever the masking used for training.

    Pass the batch's ``input_ids``, ``completion_mask`` and ``attention_mask`` (an :class:`SFTCollator`
    batch has them). Means are per token over the whole batch.
    """
    for name, value in (("logits", logits), ("input_ids", input_ids), ("completion_mask", completion_mask)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{name} must be a torch tensor (from a model and an SFTCollator batch); got {value!r:.40}."
            )
    input_ids = input_ids if input_ids.dim() == 2 else input_ids.unsqueeze(0)
    completion_mask = completion_mask if completion_mask.dim() == 2 else completion_mask.unsqueeze(0)
    if completion_mask.shape != input_ids.shape:
        raise ValueError(
            f"completion_mask {tuple(completion_mask.shape)} must match input_ids {tuple(input_ids.shape)}."
        )
    with torch.no_grad():
        per = token_nll(logits.detach(), input_ids)
        prm, comp = target_masks(input_ids, completion_mask, attention_mask, prompt_mask)
        per = per * (prm | comp)
        ps, cs = float(per[prm].sum()), float(per[comp].sum())
        npr, nco = int(prm.sum()), int(comp.sum())
    return LossBreakdown(
        prompt_nll_sum=ps,
        prompt_nll_mean=ps / npr if npr else float("nan"),
        n_prompt=npr,
        completion_nll_sum=cs,
        completion_nll_mean=cs / nco if nco else float("nan"),
        n_completion=nco,
        per_token=per,
    )


def head_is_plain(model: Any) -> bool:
    """True when the model's logits are its output layer applied to the hidden states, nothing more
    (no soft-capping, no scaling), so the supervised-only head reproduces them."""
    cfg = getattr(model, "config", None)
    return not (getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None))


def supervised_head_loss(
    model: Any,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    weights: Any = None,
    *,
    normalizer: Any = None,
) -> torch.Tensor:
    """The SFT loss with ``lm_head`` applied only where a trained target is predicted.

    The transformer body still runs over every token (prompt tokens are context), but the output
    projection to the vocabulary -- the largest matrix product for small models -- is computed only
    at positions ``t - 1`` whose target ``t`` is trained with a non-zero weight. The loss and its
    gradients equal :func:`sft_loss` on the full logits; time and memory drop with the share of
    untrained targets. Works for models whose logits are ``get_output_embeddings()(hidden)`` (GPT-2,
    Llama, Qwen, ...); models with logit soft-capping or scaling fall back to the full path.

    Returns the scalar loss.
    """
    check_model(model)
    for name, value in (("input_ids", input_ids), ("labels", labels)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor (from an SFTCollator batch); got {value!r:.40}.")
    limit = max_positions(model)
    if limit is not None and input_ids.shape[-1] > limit:
        raise ValueError(f"The batch is {input_ids.shape[-1]} tokens long but the model reads at most {limit}.")
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is not None and input_ids.numel() and int(input_ids.max()) >= vocab:
        raise ValueError(f"input_ids hold {int(input_ids.max())}, beyond the model's {vocab}-token vocabulary.")
    if not head_is_plain(model):
        out = model(input_ids=input_ids, attention_mask=attention_mask)
        return sft_loss(out.logits, labels, weights, normalizer=normalizer)
    if labels.shape != input_ids.shape:
        raise ValueError(
            f"labels {tuple(labels.shape)} must have the shape of input_ids {tuple(input_ids.shape)} (unshifted)."
        )
    weights = _check_weights(weights, labels)
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    targets = labels[:, 1:]
    w = (targets != IGNORE_INDEX).float()
    if weights is not None:
        w = w * weights[:, 1:]
    keep = w > 0
    if not bool(keep.any()):
        return _zero_loss(hidden)
    h = hidden[:, :-1][keep]
    logits = model.get_output_embeddings()(h)
    nll = F.cross_entropy(logits.float(), targets[keep], reduction="none")
    return weighted_mean(nll, w[keep], normalizer)
