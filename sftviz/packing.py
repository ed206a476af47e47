"""Packing: several examples in one row, each with its own positions, and attention that stays inside it.

Short examples padded to the longest waste most of a batch. Packing puts several examples end to end in
one row instead. Three things must then hold, or the examples leak into each other:

* **positions restart** at every example (``position_ids``);
* **no target crosses a boundary**: the first token of an example is never predicted from the last token
  of the one before it (its label is -100);
* **attention stays inside each example**: with one causal mask over the whole row ("naive" packing) an
  example reads its neighbour before it, and its loss changes.

``mode="boundaries"`` gives each row a block-diagonal causal mask as a 4-D boolean ``attention_mask``
(``(rows, 1, length, length)``, True where a position may attend), which transformers' attention
implementations (eager and sdpa, on the CPU and the GPU) take as it is. Position ids alone are not enough
for every model: GPT-2's attention does not read them, and the examples then attend to each other.
``mode="naive"`` keeps the restarting positions and a plain 2-D mask over the row: the bug, for the lesson.

    >>> batch = sv.pack([{"prompt": "Q: Hi?\\nA:", "completion": " Hello."}] * 3, tok, max_length=64)
    >>> tuple(batch["input_ids"].shape), tuple(batch["attention_mask"].shape)  # one row, a 4-D mask
    ((1, 42), (1, 1, 42, 42))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .checks import check_int
from .data import IGNORE_INDEX, Example, to_example

MODES = ("boundaries", "naive")


def check_mode(mode: object) -> str:
    """``mode`` as one of :data:`MODES`."""
    if mode not in MODES:
        raise ValueError(f"packing mode must be 'boundaries' (attention inside each example) or 'naive'; got {mode!r}.")
    return str(mode)


def best_fit(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Indices of examples grouped into rows of at most ``max_length`` tokens: the longest first, each
    into the row it fills best (best-fit decreasing, as TRL's ``packing_strategy="bfd"`` from TRL 0.22; the
    two may differ in which of two equally full rows gets an example). Ties keep the data's order, so the
    packing is deterministic."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        fits = [r for r in range(len(rows)) if room[r] >= lengths[i]]
        if fits:
            r = min(fits, key=lambda r: (room[r], r))
            rows[r].append(i)
            room[r] -= lengths[i]
        else:
            rows.append([i])
            room.append(max_length - lengths[i])
    return rows


def layout(lengths: Sequence[int], rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each example lies once the examples of each row (indices into ``lengths``) are laid end to
    end: ``example_index`` (which example each slot holds, -1 on padding) and ``position_ids`` (0, 1, ...
    restarting at each example; 0 on padding), both ``(len(rows), width of the longest row)``."""
    width = max(sum(lengths[i] for i in row) for row in rows)
    example = torch.full((len(rows), width), -1, dtype=torch.long)
    position = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            example[r, at : at + lengths[i]] = i
            position[r, at : at + lengths[i]] = torch.arange(lengths[i])
            at += lengths[i]
    return example, position


def block_causal_mask(example_index: torch.Tensor) -> torch.Tensor:
    """``(rows, 1, length, length)`` booleans: position ``q`` may attend to ``k <= q`` of its own example.
    Padding (``example_index == -1``) attends to itself only, so no softmax row is empty."""
    n = example_index.shape[1]
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool, device=example_index.device))
    same = example_index[:, :, None] == example_index[:, None, :]
    mask = causal & same & (example_index[:, :, None] >= 0)
    eye = torch.eye(n, dtype=torch.bool, device=example_index.device)
    mask = mask | (eye & (example_index[:, :, None] < 0))
    return mask[:, None]


def pack_examples(
    examples: Sequence[Example],
    *,
    max_length: int,
    pad_id: int,
    mode: str = "boundaries",
    rows: list[list[int]] | None = None,
) -> dict[str, torch.Tensor]:
    """Pack examples into rows (see the module's text). ``rows``: the grouping to use (indices of
    ``examples`` per row), else :func:`best_fit`.

    Returns ``input_ids``, ``labels`` (-100 on padding and on every example's first token),
    ``position_ids`` (restarting at each example), ``attention_mask`` (4-D block-diagonal for
    "boundaries", 2-D for "naive"), ``loss_weights`` and ``example_index`` (which example each
    position holds, -1 on padding), all ``(rows, length)`` but the 4-D mask.
    """
    mode = check_mode(mode)
    max_length = check_int(max_length, "max_length", 2)
    if not examples:
        raise ValueError("nothing to pack: give at least one example.")
    for i, ex in enumerate(examples):
        if len(ex) > max_length:
            raise ValueError(f"example {i} has {len(ex)} tokens, more than max_length={max_length}: raise max_length "
                             "or truncate it first (sv.build_example(..., max_length=...)).")  # fmt: skip
    rows = rows if rows is not None else best_fit([len(ex) for ex in examples], max_length)
    example, position = layout([len(ex) for ex in examples], rows)
    real, at = example >= 0, (example.clamp_min(0), position)
    # each example's own row of ids, labels and weights, padded; nothing before an example predicts its
    # first token, so its first label is -100 and its first weight 0
    width = max(len(ex) for ex in examples)
    ids, labels = torch.full((len(examples), width), pad_id), torch.full((len(examples), width), IGNORE_INDEX)
    weights = torch.zeros((len(examples), width))
    for i, ex in enumerate(examples):
        ids[i, : len(ex)] = torch.tensor(ex.input_ids)
        labels[i, 1 : len(ex)] = torch.tensor(ex.labels[1:], dtype=torch.long)
        weights[i, 1 : len(ex)] = torch.tensor(ex.weights[1:], dtype=torch.float32)
    out = {
        "input_ids": torch.where(real, ids[at], pad_id),
        "labels": torch.where(real, labels[at], IGNORE_INDEX),
        "position_ids": position,
        "loss_weights": torch.where(real, weights[at], 0.0),
        "example_index": example,
    }
    if mode == "boundaries":
        out["attention_mask"] = block_causal_mask(out["example_index"])
    else:
        out["attention_mask"] = (out["example_index"] >= 0).long()
    return out


STRATEGIES = ("best-fit", "in-order")


def in_order(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Indices of examples grouped into rows in the data's order: a new row when the next does not fit
    (what a padding-free collator does with one batch)."""
    rows: list[list[int]] = [[]]
    used = 0
    for i, n in enumerate(lengths):
        if rows[-1] and used + n > max_length:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += n
    return rows


def pack(
    data: Sequence[Any],
    tok: Any,
    *,
    max_length: int,
    mode: str = "boundaries",
    masking: str | float | None = None,
    strategy: str = "best-fit",
) -> dict[str, torch.Tensor]:
    """Pack rows (prompt/completion, messages, tokenized rows) or Examples into rows of at most
    ``max_length`` tokens; see :func:`pack_examples` for what comes back. ``strategy``: "best-fit"
    (fewest rows: :func:`best_fit`) or "in-order" (:func:`in_order`). ``masking``: for rows (default
    "completion"); Examples keep their own unless it is given.

    The batch goes to the model as ``model(input_ids=..., attention_mask=..., position_ids=...)``; the
    loss is :func:`sftviz.sft_loss` on ``labels`` (and ``loss_weights`` for a prompt-loss weight).
    """
    if isinstance(data, (str, bytes, dict)) or not isinstance(data, Sequence):
        raise TypeError(f"data must be a list of rows or Examples; got {type(data).__name__}.")
    if tok.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; set tok.pad_token (sv.load_model sets one).")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}.")
    examples = [to_example(tok, item, masking=masking, where=f"data[{i}]") for i, item in enumerate(data)]
    rows = None
    if strategy == "in-order":
        rows = in_order([len(ex) for ex in examples], check_int(max_length, "max_length", 2))
    return pack_examples(examples, max_length=max_length, pad_id=tok.pad_token_id, mode=mode, rows=rows)


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of a packed batch that a model's ``forward`` takes."""
    return {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}


def _ints(value: Any) -> list[int]:
    return [int(v) for v in (value.tolist() if hasattr(value, "tolist") else value)]


def _positions(feature: Any, n: int) -> list[int]:
    """A packed row's position ids: given, or made from TRL's ``seq_lengths``."""
    if "position_ids" in feature:
        pos = _ints(feature["position_ids"])
    else:
        pos = [p for k in _ints(feature["seq_lengths"]) for p in range(k)]
    if len(pos) != n:
        raise ValueError(f"a packed row has {len(pos)} positions for {n} input_ids.")
    return pos


def packed_rows(features: Sequence[Any], pad_id: int, mode: str = "boundaries") -> dict[str, torch.Tensor]:
    """A batch of rows that arrive packed already (TRL's ``packing=True`` or padding-free rows: ``input_ids``
    with ``position_ids`` or ``seq_lengths``, and ``labels`` or ``completion_mask``): each row stays as it
    is, its examples found where the positions restart, no target crossing a boundary, and attention kept
    inside each example (``mode="boundaries"``)."""
    mode = check_mode(mode)
    rows = []
    for f in features:
        ids = _ints(f["input_ids"])
        pos = _positions(f, len(ids))
        if "labels" in f:
            labels = _ints(f["labels"])
        else:
            mask = _ints(f.get("completion_mask", f.get("assistant_masks", [1] * len(ids))))
            labels = [t if m else IGNORE_INDEX for t, m in zip(ids, mask)]
        index, k = [], -1
        for p in pos:
            k += p == 0
            index.append(max(k, 0))
        labels = [IGNORE_INDEX if p == 0 else v for p, v in zip(pos, labels)]
        rows.append((ids, labels, pos, index))
    width = max(len(r[0]) for r in rows)
    shape = (len(rows), width)
    out = {
        "input_ids": torch.full(shape, pad_id, dtype=torch.long),
        "labels": torch.full(shape, IGNORE_INDEX, dtype=torch.long),
        "position_ids": torch.zeros(shape, dtype=torch.long),
        "example_index": torch.full(shape, -1, dtype=torch.long),
    }
    for r, (ids, labels, pos, index) in enumerate(rows):
        n = len(ids)
        for key, values in (("input_ids", ids), ("labels", labels), ("position_ids", pos), ("example_index", index)):
            out[key][r, :n] = torch.tensor(values)
    out["loss_weights"] = (out["labels"] != IGNORE_INDEX).float()
    out["attention_mask"] = (
        block_causal_mask(out["example_index"]) if mode == "boundaries" else (out["example_index"] >= 0).long()
    )
    return out
