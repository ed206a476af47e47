"""What packing does to each example, measured: its loss and gradient inside a packed row against alone,
and how much of a batch is padding.

    >>> rows = sv.load_dataset("support", split="eval")[:3]
    >>> alone = example_losses(model, sv.pack(rows, tok, max_length=256, strategy="in-order", mode="boundaries"))
    >>> naive = example_losses(model, sv.pack(rows, tok, max_length=256, strategy="in-order", mode="naive"))
    >>> abs(alone[0] - naive[0]) < 1e-5, abs(alone[1] - naive[1]) > 1e-3  # the first example reads nothing foreign
    (True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .checks import check_int
from .data import IGNORE_INDEX
from .loss import token_nll
from .modeling import to_model_device
from .packing import best_fit, model_inputs


def _check_batch(batch: object, model: Any) -> dict:
    """The packed batch on the model's device (a model on a GPU reads a batch that sv.pack built on the CPU)."""
    if not isinstance(batch, dict) or not {"input_ids", "labels", "example_index"} <= set(batch):
        raise TypeError("give a packed batch from sv.pack(...): a dict with input_ids, labels and example_index.")
    return to_model_device(batch, model)


def _per_example(nll: torch.Tensor, batch: dict) -> list[torch.Tensor]:
    """Each example's mean NLL over its trained targets (``labels`` are the token's own; position t's NLL
    is the prediction of token t from the tokens before it)."""
    index, weights = batch["example_index"], batch.get("loss_weights")
    trained = batch["labels"] != IGNORE_INDEX
    w = trained.float() if weights is None else weights * trained
    out = []
    for i in range(int(index.max()) + 1):
        mine = (index == i).float() * w
        if float(mine.sum()) == 0:
            raise ValueError(f"example {i} of the batch has no trained target; pack rows with a completion.")
        out.append((nll * mine).sum() / mine.sum())
    return out


def example_losses(model: Any, batch: dict) -> list[float]:
    """Each example's mean loss (nats per trained target) from one forward pass of the packed ``batch``,
    in the order of the examples given to :func:`sftviz.pack`."""
    batch = _check_batch(batch, model)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            nll = token_nll(model(**model_inputs(batch)).logits.float(), batch["labels"])
        return [float(v) for v in _per_example(nll, batch)]
    finally:
        model.train(was)


def example_gradients(model: Any, batch: dict) -> list[torch.Tensor]:
    """Each example's gradient (of its own mean loss, flattened over every trainable parameter) inside the
    packed ``batch``; the model's ``.grad`` is left as it was."""
    batch = _check_batch(batch, model)
    params = [p for p in model.parameters() if p.requires_grad]
    was = model.training
    model.eval()
    try:
        nll = token_nll(model(**model_inputs(batch)).logits.float(), batch["labels"])
        losses = _per_example(nll, batch)
        out = []
        for k, loss in enumerate(losses):
            grads = torch.autograd.grad(loss, params, retain_graph=k < len(losses) - 1, allow_unused=True)
            out.append(torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)]))
        return out
    finally:
        model.train(was)


def padding_share(lengths: Sequence[int], batch_size: int, row_length: int, *, seed: int = 0) -> dict[str, float]:
    """The share of token slots that are padding when examples of these ``lengths`` go in batches of
    ``batch_size`` (in a seeded random order): each example its own row, padded to the batch's longest
    ("padded"); or the batch's examples packed into rows of ``row_length`` by best fit, the rows padded
    to the batch's longest row ("packed"). Also the batches' rows per batch, as means."""
    batch_size = check_int(batch_size, "batch_size", 1)
    row_length = check_int(row_length, "row_length", 2)
    lengths = [check_int(n, "a length", 1) for n in lengths]
    if not lengths or max(lengths) > row_length:
        raise ValueError("give at least one length, none longer than row_length.")
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(int(seed))).tolist()
    real = padded = packed = rows = 0
    batches = [[lengths[i] for i in order[k : k + batch_size]] for k in range(0, len(order), batch_size)]
    for batch in batches:
        groups = best_fit(batch, row_length)
        real += sum(batch)
        padded += len(batch) * max(batch)
        packed += len(groups) * max(sum(batch[i] for i in g) for g in groups)
        rows += len(groups)
    return {"padded": 1 - real / padded, "packed": 1 - real / packed, "rows_per_batch": rows / len(batches),
            "examples_per_batch": len(lengths) / len(batches)}  # fmt: skip
