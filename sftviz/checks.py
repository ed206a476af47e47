"""Argument checks shared by every public entry point: one wording for each kind of mistake.

Each check returns the value (normalised where that helps, e.g. an ``int`` from a numpy integer) or
raises a ``TypeError`` / ``ValueError`` whose message names the argument, says what was wrong and what
to pass instead. Nothing here imports a widget or plotting library.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

#: The largest integer a setting may take: torch seeds and counters are 64-bit.
MAX_INT = 2**63 - 1


def check_int(value: Any, name: str, minimum: int, *, allow_none: bool = False, maximum: int = MAX_INT) -> int | None:
    """``value`` as an ``int`` between ``minimum`` and ``maximum`` (None passes when ``allow_none``)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} ({value!r}).")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}; got {value}.")
    if value > maximum:
        raise ValueError(f"{name} must be at most {maximum:,}; got {value:,}.")
    return int(value)


def check_float(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    positive: bool = False,
    allow_none: bool = False,
) -> float | None:
    """``value`` as a finite ``float`` (positive, or at least ``minimum``, when asked)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r}).")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value}.")
    if positive and value <= 0:
        raise ValueError(f"{name} must be positive; got {value}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}; got {value}.")
    return value


def check_bool(value: Any, name: str) -> bool:
    """``value`` itself when it is exactly True or False."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {value!r}.")
    return value


def check_choice(value: Any, name: str, choices: tuple) -> Any:
    """``value`` when it is one of ``choices``."""
    if isinstance(value, (str, int, float, type(None))) and value in choices:
        return value
    raise ValueError(f"{name} must be one of {choices}; got {value!r}.")


def check_text(value: Any, name: str) -> str:
    """``value`` when it is a string (an empty one included)."""
    if value is None:
        raise TypeError(f'{name} is None; pass a string (an empty string "" is allowed for the prompt).')
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}: {value!r:.60}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"{name} holds {value[err.start : err.end]!r} at position {err.start}: a lone surrogate, not valid "
            "Unicode text (it can come from decoding bytes with errors='surrogateescape'). Remove or replace it."
        ) from None
    return value


def check_tokenizer(tok: Any) -> Any:
    """``tok`` when it looks like a Hugging Face tokenizer."""
    if not (callable(tok) and hasattr(tok, "convert_ids_to_tokens") and hasattr(tok, "decode")):
        raise TypeError(
            f"Expected a Hugging Face tokenizer as the first argument, got {type(tok).__name__}. "
            "Get one with `model, tok = sv.load_model()`."
        )
    return tok


def check_model(model: Any) -> Any:
    """``model`` when it looks like a Hugging Face causal language model (a module with embeddings)."""
    if not (
        callable(model)
        and hasattr(model, "parameters")
        and hasattr(model, "get_input_embeddings")
        and hasattr(model, "get_output_embeddings")
    ):
        raise TypeError(
            f"Expected a Hugging Face causal language model (from sv.load_model), got {type(model).__name__}."
        )
    return model


def max_positions(model: Any) -> int | None:
    """How many tokens the model reads at most (its context length), or None when its config says nothing."""
    cfg = getattr(model, "config", None)
    for key in ("n_positions", "max_position_embeddings"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 1:
            return v
    return None
