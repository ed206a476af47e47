"""The bundled SFT datasets and a validating loader for your own JSONL files.

Rows come back in TRL's formats, so they work with TRL and with sftviz alike:

* prompt/completion: ``{"prompt": "...", "completion": "..."}``
* conversational:    ``{"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}``
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
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


#: The values a row's own ``"split"`` field may take in a file.
ROW_SPLITS = ("train", "eval")


def _message_problem(messages: object) -> str | None:
    """What is missing from a message (by index and field), in words, or None; the other rules are
    :func:`~sftviz.chat.check_messages`'s."""
    if not isinstance(messages, list):
        return None  # check_messages says it
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            return f"messages[{i}] must be an object with 'role' and 'content', got {type(m).__name__}."
        missing = [k for k in ("role", "content") if k not in m]
        if missing:
            return f"messages[{i}] has no {' and no '.join(repr(k) for k in missing)} field."
    return None


def _problem(row: object, where: str) -> str | None:
    """Return None when ``row`` is a valid TRL row, else a sentence saying what is wrong."""
    if not isinstance(row, dict):
        return f"{where}: expected a JSON object, got {type(row).__name__}."
    try:
        if "messages" in row:
            problem = _message_problem(row["messages"])
            if problem:
                return f"{where}: {problem}"
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


def _read_lines(path: Path) -> list[tuple[int, dict]]:
    """``(line number, row)`` for every non-blank line of a JSONL file, each row checked; errors name
    the file, the line and what is wrong."""
    rows = []
    n_lines = 0
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            n_lines = lineno
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
            if "split" in row and row["split"] not in ROW_SPLITS:
                raise ValueError(
                    f"{path}, line {lineno}: 'split' is {row['split']!r:.40}; a row's split must be 'train' or 'eval'."
                )
            rows.append((lineno, row))
    if not rows:
        raise ValueError(
            f"{path}, line {max(n_lines, 1)}: the file holds no rows ({'empty' if not n_lines else 'only blank lines'}); "
            "write one JSON object a line."
        )
    return rows


def _read_jsonl(path: Path) -> list:
    return [row for _, row in _read_lines(path)]


def load_dataset(
    name: str | os.PathLike = "support",
    split: str | None = None,
    *,
    eval_fraction: float | None = None,
    split_seed: int = 0,
) -> list[dict]:
    """Load a bundled SFT dataset, or your own JSONL file, as a list of dicts.

    The train and eval rows of one dataset never overlap by accident: asking a file for ``"train"`` or
    ``"eval"`` needs the file to say which rows are which (or ``eval_fraction`` to choose), so the
    same rows are never returned for both.

    Args:
        name: ``"support"``, ``"explain"`` (prompt/completion) or ``"support-chat"`` (messages), bundled
            and offline; or a path to a ``.jsonl`` file with one JSON object a line in either format.
        split: for a bundled dataset, ``"train"`` (the default) or ``"eval"`` (questions about products
            the fine-tune never sees). For a file, None or ``"all"`` (every row, as written), or
            ``"train"`` / ``"eval"``, found in the first of these ways that applies:

            1. the rows carry a ``"split": "train"`` or ``"eval"`` field (every row then needs one): the
               rows of that split, without the field;
            2. sibling files: for ``mine.jsonl``, the file ``mine-train.jsonl`` or ``mine-eval.jsonl``
               (``mine.jsonl`` itself is the train split when only ``mine-eval.jsonl`` exists; the path
               may also name ``mine-train.jsonl`` and ask for ``"eval"``). A row found in both files
               gives a warning;
            3. ``eval_fraction``: a deterministic share of the rows is held out (see below).

            Without any of these, asking a file for ``"train"`` or ``"eval"`` is a ``ValueError``.
        eval_fraction: for a file without a split of its own, the share of rows to hold out as
            ``"eval"`` (between 0 and 1, at least one row each side). Which rows is decided by a hash of
            each row's text and ``split_seed``, so it does not depend on the order of the rows, and
            identical rows always land on the same side. split_seed: another seed, another split.

    Raises:
        ValueError: unknown name or split, a file with no split asked for one, or a malformed file (the
            message names the file, the line and what is wrong: bad JSON, a row that is not an object, a
            missing field, a message without "role" or "content", text that is not a string, no rows).

    Example:
        >>> import sftviz as sv
        >>> rows = sv.load_dataset("support", split="train")
        >>> sorted(rows[0])
        ['completion', 'prompt']

        Your own file, split once and the same way every time (no row is in both)::

            train = sv.load_dataset("mine.jsonl", split="train", eval_fraction=0.2)
            held_out = sv.load_dataset("mine.jsonl", split="eval", eval_fraction=0.2)
    """
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"name must be a bundled dataset name or a path to a .jsonl file; got {type(name).__name__}.")
    if split is not None and not isinstance(split, str):
        raise TypeError(f"split must be a string such as 'train' or 'eval', got {type(split).__name__}.")
    if eval_fraction is not None:
        _check_fraction(eval_fraction, split_seed)
    key = str(name)
    if key in BUNDLED_DATASETS:
        split = "train" if split is None else split
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r} for {key!r}: use 'train' or 'eval'.")
        if eval_fraction is not None:
            raise ValueError(f"{key!r} is bundled with its own train and eval splits; do not pass eval_fraction.")
        return _read_jsonl(DATA_DIR / f"{key}-{split}.jsonl")
    return _load_file(key, split, eval_fraction, split_seed)


def load_splits(
    name: str | os.PathLike, *, eval_fraction: float | None = None, split_seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """``(train rows, eval rows)`` of a bundled dataset or a JSONL file, as a notebook's ``DATASET``
    parameter names it: a bundled dataset's own splits; a file's own split (a ``"split"`` field or sibling
    files, see :func:`load_dataset`), else ``eval_fraction`` of its rows held out, else a ``ValueError``
    that says how to give it one. ``eval_fraction`` is ignored for a bundled dataset.

    Example:
        >>> import sftviz as sv
        >>> train, held_out = sv.load_splits("explain")
        >>> len(train), len(held_out)
        (90, 20)
    """
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"name must be a bundled dataset name or a path to a .jsonl file; got {type(name).__name__}.")
    path = Path(str(name)).expanduser()
    own = str(name) in BUNDLED_DATASETS or _sibling(path, "eval") is not None or _sibling(path, "train") is not None
    if not own and path.is_file():
        own = any("split" in row for _, row in _read_lines(path))
    kw = {} if own else {"eval_fraction": eval_fraction, "split_seed": split_seed}
    return load_dataset(name, "train", **kw), load_dataset(name, "eval", **kw)


def _load_file(key: str, split: str | None, eval_fraction: float | None, split_seed: int) -> list[dict]:
    """:func:`load_dataset` for a file: every row, or the split the file (or ``eval_fraction``) defines."""
    path = Path(key).expanduser()
    if split not in (None, "all", *ROW_SPLITS):
        raise ValueError(
            f"Unknown split {split!r} for the file {path.name}: use None or 'all' (every row), 'train' or 'eval'."
        )
    sibling = _sibling(path, split) if split in ROW_SPLITS else None
    if not path.is_file() and sibling is None:
        raise ValueError(
            f"No dataset {key!r}: it is neither a bundled dataset ({', '.join(sorted(BUNDLED_DATASETS))}) "
            "nor an existing .jsonl file."
        )
    if split in (None, "all"):
        if eval_fraction is not None:
            raise ValueError("eval_fraction chooses the rows of split='train' or split='eval'; pass one of them.")
        return _read_jsonl(path)
    lines = _read_lines(path) if path.is_file() else []
    if any("split" in row for _, row in lines):
        _no_fraction(eval_fraction, path, "its rows carry a 'split' field")
        return _by_field(path, lines, split)
    if sibling is not None:
        _no_fraction(eval_fraction, path, f"it has the sibling file {sibling.name}")
        rows = _read_jsonl(sibling)
        other = _sibling(path, "eval" if split == "train" else "train")
        if other is not None and other != sibling:
            _warn_overlap(rows, _read_jsonl(other), sibling.name, other.name)
        return rows
    if eval_fraction is not None:
        return _by_fraction([row for _, row in lines], split, eval_fraction, split_seed)
    base = _base_name(path)
    raise ValueError(
        f"{path} has no train/eval split, so split={split!r} cannot be answered (the same rows would be both). "
        f'Make one in any of three ways: (1) give every row a "split": "train" or "eval" field; '
        f"(2) put the eval rows in a sibling file {base}-eval{path.suffix} (the training rows stay in {path.name} "
        f"or go to {base}-train{path.suffix}); (3) pass eval_fraction=0.2 (and split_seed=0) to hold out a "
        "fixed share of the rows. Or load every row with split='all'."
    )


def _check_fraction(eval_fraction: object, split_seed: object) -> None:
    if isinstance(eval_fraction, bool) or not isinstance(eval_fraction, (int, float)) or not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be a number between 0 and 1 (e.g. 0.2), got {eval_fraction!r}.")
    if isinstance(split_seed, bool) or not isinstance(split_seed, int):
        raise TypeError(f"split_seed must be an integer, got {split_seed!r}.")


def _no_fraction(eval_fraction: float | None, path: Path, has: str) -> None:
    if eval_fraction is not None:
        raise ValueError(f"{path} already has a split ({has}); drop eval_fraction, or remove that split.")


def _base_name(path: Path) -> str:
    """``mine`` for ``mine.jsonl``, ``mine-train.jsonl`` and ``mine-eval.jsonl``."""
    for split in ROW_SPLITS:
        if path.stem.endswith(f"-{split}"):
            return path.stem[: -len(split) - 1]
    return path.stem


def _sibling(path: Path, split: str) -> Path | None:
    """The file that holds ``split`` by its name, next to ``path`` (see :func:`load_dataset`), or None."""
    base = _base_name(path)
    named = path.with_name(f"{base}-{split}{path.suffix}")
    if named.is_file():
        return named
    if (
        split == "train"
        and path.stem == base
        and path.is_file()
        and path.with_name(f"{base}-eval{path.suffix}").is_file()
    ):
        return path  # mine.jsonl beside mine-eval.jsonl: mine.jsonl is the training data
    return None


def _by_field(path: Path, lines: list[tuple[int, dict]], split: str) -> list[dict]:
    """The rows whose ``"split"`` field is ``split``, without the field."""
    for lineno, row in lines:
        if "split" not in row:
            raise ValueError(
                f"{path}, line {lineno}: no 'split' field, but other rows have one; give every row "
                "'split': 'train' or 'eval'."
            )
    chosen = [{k: v for k, v in row.items() if k != "split"} for _, row in lines if row["split"] == split]
    if not chosen:
        raise ValueError(f"{path} has no row with 'split': {split!r}.")
    rest = [{k: v for k, v in row.items() if k != "split"} for _, row in lines if row["split"] != split]
    _warn_overlap(chosen, rest, f"the {split!r} rows of {path.name}", "its other rows", stacklevel=4)
    return chosen


def _canonical(row: dict) -> str:
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


def _warn_overlap(rows: list[dict], others: list[dict], name: str, other_name: str, stacklevel: int = 3) -> None:
    """Warn when a row of one split is also a row of the other (an eval that is not held out)."""
    seen = {_canonical(r) for r in others}
    shared = sum(_canonical(r) in seen for r in rows)
    if shared:
        warnings.warn(
            f"{shared} of the {len(rows)} rows of {name} also appear in {other_name}: the eval split is not "
            "fully held out.",
            UserWarning,
            stacklevel=stacklevel,
        )


def _by_fraction(rows: list[dict], split: str, eval_fraction: float, split_seed: int) -> list[dict]:
    """A deterministic split of ``rows``: the rows with the smallest hashes of (seed, row text) are the
    eval rows, about ``eval_fraction`` of them; identical rows share a hash and so a side. File order is kept."""
    if len(rows) < 2:
        raise ValueError(f"eval_fraction needs at least 2 rows to split, got {len(rows)}.")
    keys = [hashlib.sha256(f"{split_seed}\n{_canonical(r)}".encode()).hexdigest() for r in rows]
    order = sorted(range(len(rows)), key=lambda i: keys[i])
    k = min(max(1, round(eval_fraction * len(rows))), len(rows) - 1)
    while k < len(rows) and keys[order[k]] == keys[order[k - 1]]:  # a duplicate row stays with its twin
        k += 1
    if k == len(rows):
        raise ValueError("eval_fraction cannot split these rows: they are all the same row.")
    held = set(order[:k])
    return [r for i, r in enumerate(rows) if (i in held) == (split == "eval")]
