"""Tokenized rows (``input_ids`` with a mask or labels, as TRL and ``SFTCollator.tokenize`` make them)
as :class:`~sftviz.data.Example` objects: :func:`sftviz.data.to_example` comes here for them."""

from __future__ import annotations

import operator
from typing import Any

from .data import Example, display_tokens
from .masking import IGNORE_INDEX

#: Keys of tokenized rows that say which tokens are the completion, in order of preference.
TOKEN_MASKS = ("completion_mask", "assistant_masks", "labels")


def token_id(v: object) -> int:
    try:
        i = operator.index(v)  # ints, numpy integers, 0-d integer tensors
    except TypeError:
        i = -1
    if isinstance(v, bool) or i < 0:
        raise ValueError(f"input_ids must be non-negative integer token ids; found {v!r}.")
    return i


def from_token_lists(tok: Any, item: dict, masking: str | float) -> Example:
    ids = [token_id(v) for v in item["input_ids"]]
    if ids and max(ids) >= len(tok):
        raise ValueError(
            f"input_ids hold {max(ids)}, beyond this tokenizer's {len(tok)} tokens: the row was tokenized "
            "with another tokenizer."
        )
    key = next(k for k in TOKEN_MASKS if k in item)
    values = [int(v) for v in item[key]]
    if len(values) != len(ids):
        raise ValueError(f"{key} has {len(values)} entries for {len(ids)} input_ids.")
    # labels mark completion targets with their token id and everything else with -100.
    cmask = [int(v != IGNORE_INDEX) for v in values] if key == "labels" else [int(bool(v)) for v in values]
    cmask = [int(t > 0 and c) for t, c in enumerate(cmask)]  # position 0 is never a target
    if not any(cmask):
        raise ValueError(f"its {key} marks no completion token after the first position, so nothing would be trained.")
    pmask = [int(t > 0 and not cmask[t]) for t in range(len(ids))]
    # The segments come from the row's own mask; the text, decoded token by token.
    segments = ["completion" if c else "prompt" for c in cmask]
    if ids and tok.bos_token_id is not None and ids[0] == tok.bos_token_id and not cmask[0]:
        segments[0] = "bos"
    source = {k: item[k] for k in ("messages", "prompt", "completion", "text") if k in item}
    example = Example(ids, [IGNORE_INDEX] * len(ids), cmask, pmask, segments, display_tokens(tok, ids),
                      [0.0] * len(ids), source=source)  # fmt: skip
    return example.with_masking(masking)
