"""The bundled SFT datasets and a validating loader for your own JSONL files.

Rows come back in TRL's formats, so they work with TRL and with sftviz alike:

* prompt/completion: ``{"prompt": "...", "completion": "..."}``
* conversational:    ``{"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}``
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .chat import check_messages
from .checks import check_text

DATA_DIR = Path(__file__).resolve().parent / "assets" / "data"
BUNDLED_DATASETS = {
    "support": "prompt/completion pairs: an instruction plus a customer question -> a short answer",
    "support-chat": "the same knowledge as system/user/assistant conversations",
    "explain": "prompt/completion pairs of the opposite shape: a short request -> a four-sentence description",
}
SPLITS = ("train", "eval")


def _problem(row: object, where: str) -> str | None:
    """Return None when ``row`` is a valid TRL row, else a sentence saying what is wrong."""
    if not isinstance(row, dict):
        return f"{where}: expected a JSON object, got {type(row).__name__}."
    try:
        if "messages" in row:
            check_messages(row["messages"])  # roles, order, text: the rules build_example applies
            return None
        missing = [k for k in ("prompt", "completion") if k not in row]
        if missing:
            return (
                f"{where}: missing {', '.join(repr(k) for k in missing)}. Each row needs either "
                "'prompt' and 'completion' strings, or a 'messages' list."
            )
        for k in ("prompt", "completion"):
            check_text(row[k], repr(k))
    except (TypeError, ValueError) as err:
        return f"{where}: {err}"
    return None


def validate_rows(rows: object, source: str = "data") -> list[dict]:
    """Check that every row is in TRL's prompt/completion or messages format; raise ``ValueError`` naming the first bad row."""
    if not isinstance(rows, (list, tuple)):
        raise TypeError(f"{source}: expected a list of rows, got {type(rows).__name__}.")
    for i, row in enumerate(rows):
        problem = _problem(row, f"{source}, row {i}")
        if problem:
            raise ValueError(problem)
    return list(rows)


def _read_jsonl(path: Path) -> list:
    rows = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark (Windows editors)
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"{path}, line {lineno}: not UTF-8 text (byte {raw[err.start]:#04x} at column {err.start + 1}). "
                    "Save the file as UTF-8."
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {lineno}: not valid JSON ({err.msg} at column {err.colno}).") from None
            problem = _problem(row, f"{path}, line {lineno}")
            if problem:
                raise ValueError(problem)
            rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no rows.")
    return rows


def load_dataset(name: str | os.PathLike = "support", split: str = "train") -> list[dict]:
    """Load a bundled SFT dataset, or your own JSONL file, as a list of dicts.

    Args:
        name: ``"support"`` (prompt/completion) or ``"support-chat"`` (messages), both bundled and
            offline; or a path to a ``.jsonl`` file with one JSON object a line in either format.
        split: ``"train"`` or ``"eval"`` for bundled datasets (the eval split asks about products the
            fine-tune never sees). Ignored for a file path.

    Raises:
        ValueError: unknown name or split, or a malformed row (the message names the line and the problem).

    Example:
        >>> import sftviz as sv
        >>> rows = sv.load_dataset("support", split="train")
        >>> sorted(rows[0])
        ['completion', 'prompt']
    """
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"name must be a bundled dataset name or a path to a .jsonl file; got {type(name).__name__}.")
    key = str(name)
    if key in BUNDLED_DATASETS:
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r} for {key!r}: use 'train' or 'eval'.")
        return _read_jsonl(DATA_DIR / f"{key}-{split}.jsonl")
    path = Path(key).expanduser()
    if path.is_file():
        return _read_jsonl(path)
    raise ValueError(
        f"No dataset {key!r}: it is neither a bundled dataset ({', '.join(sorted(BUNDLED_DATASETS))}) "
        "nor an existing .jsonl file."
    )
