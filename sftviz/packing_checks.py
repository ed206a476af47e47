"""The packing notebook's checks (notebook 7): predict what a packed row trains, and which loss reduction
gives the gradient of the whole batch. Nothing is stored here: the truth is read from the batch and from
the measured gradients."""

from __future__ import annotations

import numbers

from .data import IGNORE_INDEX
from .feedback import Feedback, is_unanswered, unanswered

TARGETS = "a dict {'starts': [positions where an example starts], 'trained': number of trained targets}"


def row_truth(batch: dict, row: int = 0) -> tuple[list[int], int, int]:
    """(positions where an example starts, trained targets, real tokens) of ``row`` of a packed batch
    (:func:`sftviz.pack`)."""
    if not isinstance(batch, dict) or not {"position_ids", "labels", "example_index"} <= set(batch):
        raise TypeError("give the packed batch from sv.pack(...): a dict with position_ids, labels, example_index.")
    rows = len(batch["example_index"])
    if isinstance(row, bool) or not isinstance(row, int) or not 0 <= row < rows:
        raise ValueError(f"row must be a row number of the batch, 0 to {rows - 1}; got {row!r}.")
    real = batch["example_index"][row] >= 0
    starts = [int(i) for i in ((batch["position_ids"][row] == 0) & real).nonzero().flatten()]
    trained = int((batch["labels"][row] != IGNORE_INDEX).sum())
    return starts, trained, int(real.sum())


def check_packed_targets(answer: object, batch: dict, row: int = 0) -> Feedback:
    """``answer`` = ``{"starts": [...], "trained": n}``: where each example of ``row`` starts, and how many
    of the row's positions are trained targets; the truth is the batch's own labels and positions."""
    if is_unanswered(answer):
        return unanswered(TARGETS)
    starts, trained, real = row_truth(batch, row)
    if not isinstance(answer, dict) or set(answer) != {"starts", "trained"}:
        return Feedback(False, f"answer with {TARGETS}.")
    given, n = answer["starts"], answer["trained"]
    if not isinstance(given, (list, tuple)) or not all(isinstance(p, int) and not isinstance(p, bool) for p in given):
        return Feedback(False, "'starts' must be a list of whole numbers (positions in the row, from 0).")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        return Feedback(False, "'trained' must be a whole number.")
    problems = []
    if sorted(given) != starts:
        hint = " The first example starts at 0 too." if sorted(given) == starts[1:] else ""
        problems.append(f"the examples do not start at {sorted(given)}: count each example's tokens.{hint}")
    if n != trained:
        if n == real - 1 and len(starts) > 1:
            why = ("that trains each later example's first token as the next token after the example before it: "
                   "a target across a boundary")  # fmt: skip
        elif n >= real:
            why = "the row's first token has nothing before it to predict it"
        else:
            why = "count the tokens the masking trains in each example, less each example's first token"
        problems.append(f"{n} is not the number of trained targets: {why}.")
    if problems:
        return Feedback(False, " ".join(problems))
    return Feedback(
        True,
        f"the examples start at {starts}, and {trained} of the row's {real} real tokens are targets: no "
        "example's first token is one, since nothing before it in its own example predicts it.",
    )


def check_matching_reduction(answer: object, distances: list[dict], *, tol: float = 1e-4) -> Feedback:
    """``answer`` names the reduction (from :data:`sftviz.reductions.REDUCTIONS`) whose gradient equals the
    whole batch's; the truth is ``distances`` (:func:`sftviz.reductions.gradient_distances`), where it is
    the one whose relative L2 distance is below ``tol``."""
    names = [d["reduction"] for d in distances]
    if is_unanswered(answer):
        return unanswered(f"one of {names}")
    if not isinstance(answer, str) or answer not in names:
        return Feedback(False, f"name one reduction as a string, one of {names}.")
    by_name = {d["reduction"]: d for d in distances}
    exact = [name for name in names if by_name[name]["relative_l2"] < tol]
    d = by_name[answer]
    rel = d["relative_l2"]
    measured = f"cosine {d['cosine']:.4f}, relative L2 distance " + (f"below {tol:g}" if rel < tol else f"{rel:.2g}")
    if answer in exact:
        return Feedback(True, f"{answer} gives the whole batch's gradient however the step is cut ({measured}).")
    if d["cosine"] > 1 - tol:
        return Feedback(False, f"{answer} points the same way but is not the same size ({measured}): its scale "
                        "grows with the number of tokens.")  # fmt: skip
    return Feedback(False, f"{answer} weighs a token by the piece it lands in ({measured}).")
