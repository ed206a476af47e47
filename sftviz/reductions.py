"""Loss normalisation as data: every way a step's loss is averaged over micro-batches, processes and
packed rows, and how far each one's gradient is from the gradient of the whole batch.

A step of SFT sees its examples split: into micro-batches (gradient accumulation), across processes
(data parallelism), and, when packed, into rows. The correct loss is the token mean over the whole
step, ``sum(w * l) / sum(w)`` with the sum of weights taken over every piece (what ``num_items_in_batch``
gives transformers since October 2024). Every other common reduction weighs tokens by the piece they
land in, so its gradient depends on how the step was cut whenever lengths differ.

Each reduction here takes the step's pieces, a list of ``(nll, weights, process)`` with ``nll`` and
``weights`` of shape ``(rows, seq)`` (weights 0 where nothing is trained), and returns the step's loss.

    >>> from sftviz.reductions import gradient_distances
    >>> rows = sv.load_dataset("support", split="eval")[:6]
    >>> d = {r["reduction"]: r for r in gradient_distances(model, tok, rows, micro_batches=3, processes=1)}
    >>> d["step_token_mean"]["relative_l2"] < 1e-5, d["micro_batch_mean_of_means"]["relative_l2"] > 1e-3
    (True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .collate import collate_examples
from .data import to_example
from .loss import token_nll
from .modeling import to_model_device
from .packing import best_fit, pack_examples

Piece = tuple[torch.Tensor, torch.Tensor, int]  # nll, weights, process


def _total(pieces: Sequence[Piece]) -> torch.Tensor:
    return sum(w.sum() for _, w, _ in pieces)


def step_token_mean(pieces: Sequence[Piece]) -> torch.Tensor:
    """The token mean over the whole step: every piece's ``sum(w * l)`` over the step's total weight."""
    total = _total(pieces)
    return sum((nll * w).sum() for nll, w, _ in pieces) / total


def micro_batch_mean_of_means(pieces: Sequence[Piece]) -> torch.Tensor:
    """Each micro-batch's own token mean, averaged over the micro-batches (the gradient-accumulation bug)."""
    return sum((nll * w).sum() / w.sum() for nll, w, _ in pieces) / len(pieces)


def process_mean_of_means(pieces: Sequence[Piece]) -> torch.Tensor:
    """Each process's token mean over its own micro-batches, averaged over the processes (what averaging
    the processes' gradients gives when each normalises by its own token count)."""
    procs = sorted({p for _, _, p in pieces})
    means = []
    for p in procs:
        mine = [piece for piece in pieces if piece[2] == p]
        means.append(step_token_mean(mine))
    return sum(means) / len(means)


def sequence_mean(pieces: Sequence[Piece]) -> torch.Tensor:
    """The mean over the step's sequences of each sequence's own token mean (short answers weigh more)."""
    means = []
    for nll, w, _ in pieces:
        per = w.sum(dim=1)
        has = per > 0
        means.append((nll * w).sum(dim=1)[has] / per[has])
    return torch.cat(means).mean()


def token_sum(pieces: Sequence[Piece]) -> torch.Tensor:
    """The sum of the step's token losses (Tülu 3's sum loss): the token mean's direction, not its size."""
    return sum((nll * w).sum() for nll, w, _ in pieces)


@dataclass(frozen=True)
class Reduction:
    """A named reduction: what it computes, and whether it works on packed rows."""

    name: str
    description: str
    fn: Callable[[Sequence[Piece]], torch.Tensor]
    packed: bool = False


REDUCTIONS: dict[str, Reduction] = {
    r.name: r
    for r in (
        Reduction("step_token_mean", "token mean over the whole step (num_items_in_batch)", step_token_mean),
        Reduction("micro_batch_mean_of_means", "mean of the micro-batches' token means", micro_batch_mean_of_means),
        Reduction("process_mean_of_means", "mean of the processes' token means", process_mean_of_means),
        Reduction("sequence_mean", "mean of per-sequence token means", sequence_mean),
        Reduction("token_sum", "sum of token losses (Tülu 3)", token_sum),
        Reduction("packed_row_mean", "mean of each packed row's token mean", sequence_mean, packed=True),
    )
}


def _pieces(model: Any, tok: Any, examples: list, micro_batches: int, processes: int, packed: bool) -> list:
    """The step cut into ``processes x micro_batches`` pieces (padded batches, or packed rows), with NLLs."""
    n_pieces = processes * micro_batches
    groups = [examples[k::n_pieces] for k in range(n_pieces)]
    pieces = []
    for k, group in enumerate(groups):
        if not group:
            continue
        if packed:
            width = max(len(e) for e in group) * 3
            batch = pack_examples(group, max_length=width, pad_id=tok.pad_token_id,
                                  rows=best_fit([len(e) for e in group], width))  # fmt: skip
            keys = ("input_ids", "attention_mask", "position_ids")
        else:
            batch = collate_examples(group, tok.pad_token_id)
            keys = ("input_ids", "attention_mask")
        batch = to_model_device(batch, model)  # built on the CPU; the model may be on a GPU
        nll = token_nll(model(**{key: batch[key] for key in keys}).logits, batch["labels"])
        pieces.append((nll, batch["loss_weights"], k // micro_batches))
    return pieces


def _grad(params: list, loss: torch.Tensor) -> torch.Tensor:
    """The gradient of ``loss`` as one flat vector (the parameters' ``.grad`` are left alone)."""
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)])


def _dot(a: torch.Tensor, b: torch.Tensor, chunk: int = 1 << 20) -> float:
    """``a . b`` summed in float64 a chunk at a time (float32 over 10^8 terms is off by about 1e-4)."""
    return sum(float(a[i : i + chunk].double() @ b[i : i + chunk].double()) for i in range(0, a.numel(), chunk))


def gradient_distances(
    model: Any, tok: Any, rows: Sequence[Any], *, micro_batches: int = 2, processes: int = 2
) -> list[dict]:
    """Each reduction's gradient against the full batch's token-mean gradient, on ``rows`` cut into
    ``processes x micro_batches`` pieces (round robin, so the pieces' lengths differ).

    Returns one dict per reduction of :data:`REDUCTIONS`: ``reduction``, ``description``, ``cosine`` and
    ``relative_l2`` (``|g - g_full| / |g_full|``); the model's weights are not changed.
    """
    if processes < 1 or micro_batches < 1:
        raise ValueError("micro_batches and processes must be at least 1.")
    examples = [to_example(tok, r, where=f"rows[{i}]") for i, r in enumerate(rows)]
    if len(examples) < processes * micro_batches:
        raise ValueError(f"{len(examples)} rows cannot fill {processes} x {micro_batches} pieces; give more rows.")
    params = [p for p in model.parameters() if p.requires_grad]
    if any(p.dtype != torch.float32 for p in params):
        raise TypeError("gradient_distances compares float32 gradients; load the model in float32.")
    was = model.training
    model.eval()
    try:
        full = _grad(params, step_token_mean(_pieces(model, tok, examples, 1, 1, packed=False)))
        ff = _dot(full, full)
        out = []
        for r in REDUCTIONS.values():
            g = _grad(params, r.fn(_pieces(model, tok, examples, micro_batches, processes, packed=r.packed)))
            gg, gf = _dot(g, g), _dot(g, full)
            g.sub_(full)  # now g - full, in place
            out.append({"reduction": r.name, "description": r.description, "cosine": gf / (gg * ff) ** 0.5,
                        "relative_l2": (_dot(g, g) / ff) ** 0.5})  # fmt: skip
            del g
        return out
    finally:
        model.train(was)
