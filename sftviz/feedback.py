"""The verdict on one exercise answer (:class:`Feedback`), its points for nbgrader, and the number check.

Shared by every checker (:mod:`sftviz.exercises`, :mod:`sftviz.loss_checks`, :mod:`sftviz.diagnosis_checks`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass


@dataclass
class Feedback:
    """The verdict on one answer: correct, not yet correct, or not answered yet.

    It prints as one line ("Correct: ...", "Not yet: ..." with a hint, or "Not answered yet: ..."), is
    truthy when the answer is right, and gives nbgrader its points through :func:`points`.
    """

    ok: bool
    message: str
    answered: bool = True
    #: True for an answer that only the instructor's grader can check (a graded diagnosis case).
    pending: bool = False

    def __bool__(self):
        return self.ok

    @property
    def verdict(self) -> str:
        if self.ok:
            return "Correct"
        if self.pending:
            return "Recorded"
        return "Not yet" if self.answered else "Not answered yet"

    def __repr__(self):
        return f"{self.verdict}: {self.message}"

    def _repr_html_(self):
        from html import escape

        colour, mark = (
            ("#1b7837", "\u2714")
            if self.ok
            else ("#767676", "\u2709")
            if self.pending
            else ("#b2182b", "\u2718")
            if self.answered
            else ("#767676", "\u2026")
        )
        return (
            f'<div class="sftviz-feedback" data-sftviz-ok="{str(self.ok).lower()}" '
            f'data-sftviz-answered="{str(self.answered).lower()}" '
            f'style="border-left:4px solid {colour};padding:4px 8px;margin:4px 0">'
            f"<b>{mark} {self.verdict}:</b> {escape(self.message)}</div>"
        )


def unanswered(what: str) -> Feedback:
    """The feedback for an exercise not answered yet: what to put in place of the ``None``."""
    return Feedback(False, f"replace the None (or ...) with {what}, then run the cell again.", answered=False)


def is_unanswered(answer: object) -> bool:
    """True for the placeholders an exercise starts with (``None`` or ``...``)."""
    return answer is None or answer is Ellipsis


def points(*feedback: Feedback) -> float:
    """The points for one or more checks: one per correct answer (0 for a wrong or missing one).

    The course's autograded cells end with this, so that nbgrader reads the number as the cell's
    (partial) credit; it never raises, so Run All goes on past an unanswered exercise.
    """
    flat = []
    for f in feedback:
        flat.extend(f if isinstance(f, (list, tuple)) else [f])
    if not flat or not all(isinstance(f, Feedback) for f in flat):
        raise TypeError(
            "points() takes the Feedback returned by the exercise checks, e.g. points(check_labels(labels, ex))."
        )
    return float(sum(f.ok for f in flat))


def read_number(answer: object, what: str) -> tuple[float | None, Feedback | None]:
    """``answer`` as a float, or the Feedback that says why it is not one number."""
    if is_unanswered(answer):
        return None, unanswered(what)
    if hasattr(answer, "item") and callable(answer.item):
        try:
            answer = answer.item()
        except (ValueError, RuntimeError):
            return None, Feedback(
                False, f"{what} should be a single number, not an array of shape {tuple(answer.shape)}."
            )
    if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
        return None, Feedback(False, f"{what} should be a number, got {type(answer).__name__}.")
    if math.isnan(float(answer)):
        return None, Feedback(False, f"{what} is NaN: did you take the log of 0 or average over nothing?")
    return float(answer), None


def _check_decimals(decimals: object) -> int | None:
    if decimals is None:
        return None
    if isinstance(decimals, bool) or not isinstance(decimals, numbers.Integral):
        raise TypeError(f"decimals must be a whole number of decimal places or None, got {type(decimals).__name__}.")
    if not 0 <= decimals <= 12:
        raise ValueError(f"decimals must be between 0 and 12, got {decimals}.")
    return int(decimals)


def check_number(
    answer: object,
    expected: float,
    what: str,
    *,
    tol: float = 1e-3,
    hint: str = "",
    decimals: int | None = None,
) -> Feedback:
    """Compare a number with the value the core computed.

    The answer passes within ``max(tol, 1e-4 * |expected|)`` of ``expected``. With ``decimals`` (the
    precision the notebook prints, e.g. 2), it also passes when it is ``expected`` rounded to that many
    decimals: half a unit of the last decimal (0.005 for 2) is added to the tolerance, so -13.36 passes
    for -13.3612 and -13.4 does not. ``expected``, ``tol``, ``what``, ``hint`` and ``decimals`` come
    from the notebook, not the student: bad values raise ``TypeError``/``ValueError``.
    """
    if isinstance(expected, bool) or not isinstance(expected, numbers.Real):
        if hasattr(expected, "item") and callable(expected.item):  # a 0-d tensor or a numpy scalar
            expected = expected.item()
        if isinstance(expected, bool) or not isinstance(expected, numbers.Real):
            raise TypeError(f"check_number needs the expected value as a number, got {type(expected).__name__}.")
    expected = float(expected)
    if not math.isfinite(expected):
        raise ValueError(f"check_number needs a finite expected value, got {expected}.")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not tol >= 0:
        raise ValueError(f"tol must be a non-negative number, got {tol!r}.")
    if not isinstance(what, str) or not isinstance(hint, str):
        raise TypeError("what and hint must be strings (what the number is; an optional hint).")
    decimals = _check_decimals(decimals)
    value, bad = read_number(answer, what)
    if bad is not None:
        return bad
    margin = max(float(tol), 1e-4 * abs(expected))
    if decimals is not None:
        margin += 0.5 * 10.0**-decimals
    if abs(value - expected) <= margin:
        if decimals is not None and abs(value - expected) > max(float(tol), 1e-4 * abs(expected)):
            return Feedback(
                True, f"{what} = {value:.{decimals}f} (the model's {expected:.4f}, to {decimals} decimals)."
            )
        return Feedback(True, f"{what} = {value:.4g}.")
    msg = f"{what} = {value:.4f} does not match the model's {expected:.4f}."
    if abs(value + expected) <= margin and expected != 0:
        msg += " The sign is flipped: log-probabilities are negative, losses positive."
    return Feedback(False, msg + (" " + hint if hint else ""))
