"""The rows an X-ray reads, in every form TRL reads them, and what each one says in text.

Forms (a row is a dict; a dataset is a JSONL path, a list of rows or a ``datasets.Dataset``):

* ``{"prompt": str, "completion": str}``: prompt/completion;
* ``{"prompt": [messages], "completion": [messages]}``: TRL's conversational prompt/completion;
* ``{"messages": [...]}``: a conversation (roles system, user, assistant, tool);
* ``{"conversations": [{"from", "value"}, ...]}``: ShareGPT (``human``/``gpt`` read as user/assistant);
* ``{"text": str}``: plain language modelling;
* ``{"input_ids": [...], "labels" | "completion_mask" | "assistant_masks": [...]}``: already tokenized,
  with or without its text columns.

A row is never changed: pipelines get it as the user gave it. :func:`conversation` and
:func:`row_kind` only read it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

KINDS = ("prompt_completion", "conversational_prompt_completion", "messages", "sharegpt", "text", "tokenized")

#: ShareGPT speaker names and the chat roles they stand for (others are kept as they are).
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "tool": "tool", "function": "tool", "observation": "tool"}  # fmt: skip


def read_rows(data: Any) -> list[dict]:
    """The rows of ``data`` as a list of dicts: a JSONL path (str or Path), a list of dicts, or a
    ``datasets.Dataset``. A line that is not a JSON object is an error naming the line."""
    if isinstance(data, (str, Path)):
        return _read_jsonl(Path(data))
    if hasattr(data, "column_names") and hasattr(data, "__getitem__"):  # a datasets.Dataset
        return [dict(row) for row in data]
    if isinstance(data, Mapping):
        raise TypeError("data is one row; pass a list of rows, a datasets.Dataset or a JSONL path.")
    if not isinstance(data, (list, tuple)):
        raise TypeError(f"data must be a JSONL path, a list of rows or a datasets.Dataset; got {type(data).__name__}.")
    rows = []
    for i, row in enumerate(data):
        if isinstance(row, Mapping):
            rows.append(dict(row))
        else:
            raise TypeError(f"data[{i}] is a {type(row).__name__}; every row must be a dict.")
    return rows


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise ValueError(f"{path} is not a file; pass a JSONL file with one JSON object per line.")
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {n}: not valid JSON ({err.msg}).") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}, line {n}: expected a JSON object, got {type(row).__name__}.")
            rows.append(row)
    return rows


def _is_messages(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, Mapping) and "role" in m for m in value)


def row_kind(row: dict) -> str:
    """Which of :data:`KINDS` a row is; a ``ValueError`` names its keys when it is none."""
    if "input_ids" in row:
        return "tokenized"
    if "messages" in row:
        return "messages"
    if "conversations" in row:
        return "sharegpt"
    if "prompt" in row and "completion" in row:
        if _is_messages(row["prompt"]) and _is_messages(row["completion"]):
            return "conversational_prompt_completion"
        return "prompt_completion"
    if "text" in row:
        return "text"
    raise ValueError(
        f"a row with keys {sorted(row)} is none of the forms the X-ray reads: prompt/completion, messages, "
        "conversations (ShareGPT), text, or input_ids with labels."
    )


def conversation(row: dict) -> tuple[list[dict], set[int] | None] | None:
    """A chat row as ``(messages, trained)``: the messages with chat roles, and the indices a
    conversational prompt/completion row trains (its completion's assistant turns; None for other
    rows). None for rows that are not conversations."""
    kind = row_kind(row)
    if kind == "messages":
        return [dict(m) for m in row["messages"]], None
    if kind == "sharegpt":
        out = []
        for m in row["conversations"]:
            speaker = m.get("from", m.get("role"))
            out.append({**{k: v for k, v in m.items() if k not in ("from", "value")},
                        "role": SHAREGPT_ROLES.get(speaker, speaker), "content": m.get("value", m.get("content"))})  # fmt: skip
        return out, None
    if kind == "conversational_prompt_completion":
        messages = [dict(m) for m in [*row["prompt"], *row["completion"]]]
        first = len(row["prompt"])
        return messages, {i for i in range(first, len(messages)) if messages[i]["role"] == "assistant"}
    return None
