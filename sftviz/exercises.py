"""Checks for the course's exercises: immediate feedback, computed from the objects in front of you.

Every check compares a student's answer with what the core computes for the same model and text;
no expected value is stored here. A check returns a :class:`Feedback` that prints as one line
("Correct: ..." or "Not yet: ..." with a hint) and is truthy when the answer is right, so notebooks can
also ``assert`` it in their solution cells.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .data import IGNORE_INDEX, Example

if TYPE_CHECKING:  # the checks of notebooks 1-3 work without the training engine
    from .logprobs import ScoreReport
    from .train.runs import Run


@dataclass
class Feedback:
    """The verdict on one answer: correct, not yet correct, or not answered yet.

    It prints as one line ("Correct: ...", "Not yet: ..." with a hint, or "Not answered yet: ..."), is
    truthy when the answer is right, and gives nbgrader its points through :func:`points`.
    """

    ok: bool
    message: str
    answered: bool = True

    def __bool__(self):
        return self.ok

    @property
    def verdict(self) -> str:
        if self.ok:
            return "Correct"
        return "Not yet" if self.answered else "Not answered yet"

    def __repr__(self):
        return f"{self.verdict}: {self.message}"

    def _repr_html_(self):
        from html import escape

        colour, mark = (
            ("#1b7837", "\u2714") if self.ok else ("#b2182b", "\u2718") if self.answered else ("#767676", "\u2026")
        )
        return (
            f'<div class="sftviz-feedback" data-sftviz-ok="{str(self.ok).lower()}" '
            f'data-sftviz-answered="{str(self.answered).lower()}" '
            f'style="border-left:4px solid {colour};padding:4px 8px;margin:4px 0">'
            f"<b>{mark} {self.verdict}:</b> {escape(self.message)}</div>"
        )


def _unanswered(what: str) -> Feedback:
    return Feedback(False, f"replace the None (or ...) with {what}, then run the cell again.", answered=False)


def _is_unanswered(answer) -> bool:
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


def _number(answer, what):
    if _is_unanswered(answer):
        return None, _unanswered(what)
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


def check_number(answer: object, expected: float, what: str, *, tol: float = 1e-3, hint: str = "") -> Feedback:
    """Compare a number with the value the core computed (absolute or 1e-4 relative tolerance)."""
    value, bad = _number(answer, what)
    if bad is not None:
        return bad
    if abs(value - expected) <= max(tol, 1e-4 * abs(expected)):
        return Feedback(True, f"{what} = {value:.4g}.")
    msg = f"{what} = {value:.4f} does not match the model's {expected:.4f}."
    if abs(value + expected) <= max(tol, 1e-4 * abs(expected)) and expected != 0:
        msg += " The sign is flipped: log-probabilities are negative, losses positive."
    return Feedback(False, msg + (" " + hint if hint else ""))


def check_conditional(answer: object, report: ScoreReport) -> Feedback:
    """``answer`` should be log Pr(y | x) for the scored example (from joint and marginal)."""
    return check_number(
        answer,
        report.joint - report.marginal,
        "log Pr(y | x)",
        hint="By the chain rule, log Pr(y | x) = log Pr([x, y]) - log Pr(x).",
    )


def check_joint_from_tokens(answer: object, report: ScoreReport) -> Feedback:
    """``answer`` should be the sum of all per-token log-probs (the joint)."""
    return check_number(
        answer,
        report.joint,
        "log Pr([x, y])",
        hint="Add up the log-prob of every token after the first (position 0 has nothing to predict it).",
    )


def check_marginal_from_tokens(answer: object, report: ScoreReport) -> Feedback:
    """``answer`` should be the sum of the prompt tokens' log-probs (the marginal)."""
    return check_number(
        answer,
        report.marginal,
        "log Pr(x)",
        hint="Sum only the rows whose segment is 'prompt' (the BOS is context and has no log-prob).",
    )


def check_labels(answer: object, example: Example) -> Feedback:
    """``answer`` should be the completion-only labels of ``example`` (-100 where not trained)."""
    if _is_unanswered(answer):
        return _unanswered("the list of labels")
    if not isinstance(answer, (list, tuple)) and not hasattr(answer, "tolist"):
        return Feedback(False, f"labels should be a list of integers, got {type(answer).__name__}.")
    answer = list(answer.tolist() if hasattr(answer, "tolist") else answer)
    expected = example.with_masking("completion").labels
    if len(answer) != len(expected):
        return Feedback(
            False,
            f"labels has {len(answer)} entries; it needs one per input token ({len(expected)}). Labels are not shifted.",
        )
    wrong = [t for t, (a, e) in enumerate(zip(answer, expected)) if a != e]
    if not wrong:
        return Feedback(True, f"{sum(v != IGNORE_INDEX for v in expected)} trained tokens, the rest -100.")
    t = wrong[0]
    seg = example.segments[t]
    why = {
        "eos": "the EOS that ends the completion must be trained, or the model never learns to stop",
        "bos": "the BOS is context only: nothing predicts it",
        "prompt": "prompt tokens are context, not targets, under completion-only loss",
        "completion": "completion tokens are the targets: their label is their own id (the model does the shift)",
    }.get(seg, f"check the {seg} token")
    return Feedback(
        False, f"position {t} ({example.tokens[t]!r}, {seg}) should be {expected[t]}, got {answer[t]}: {why}."
    )


def check_predicting_position(answer: object, example: Example) -> Feedback:
    """``answer`` should be the position whose logits predict the first completion token."""
    expected = example.n_prompt - 1
    if _is_unanswered(answer):
        return _unanswered("a position (an integer)")
    if isinstance(answer, bool) or not isinstance(answer, numbers.Integral):
        return Feedback(False, f"give a position (an integer), got {type(answer).__name__}.")
    if answer == expected:
        return Feedback(
            True,
            f"position {expected} ({example.tokens[expected]!r}), the last prompt token, predicts the first completion token.",
        )
    if answer == expected + 1:
        return Feedback(
            False, "that is the position of the first completion token itself: which position's output scores it?"
        )
    if not 0 <= answer < len(example.tokens):
        return Feedback(
            False,
            f"position {answer} is outside the sequence, whose positions run from 0 to {len(example.tokens) - 1}.",
        )
    return Feedback(
        False, f"position {answer} is {example.tokens[answer]!r}; the logits at position t score the token at t + 1."
    )


def check_choice(answer: object, expected: object, explanation: str) -> Feedback:
    """A multiple-choice or true/false answer, with the explanation either way."""
    if _is_unanswered(answer):
        return _unanswered("your choice")

    def norm(v: object) -> object:
        return v.strip().lower() if isinstance(v, str) else v

    ok = norm(answer) == norm(expected)
    return Feedback(ok, explanation)


def check_diagnosis(answer: object, mystery: Run) -> Feedback:
    """``answer`` should name the fault injected into ``mystery`` (a run from the diagnosis notebook)."""
    from .faults import FAULTS  # imported here: the engine is optional for the other checks

    if _is_unanswered(answer):
        return _unanswered(f"one of: {', '.join(FAULTS)}")
    if not isinstance(getattr(mystery, "config", None), dict):
        raise TypeError(
            f"check_diagnosis needs a run from mystery_runs (e.g. mysteries['A']), got {type(mystery).__name__}."
        )
    truth = getattr(mystery, "hidden_fault", None) or mystery.config.get("fault")
    if answer not in FAULTS:
        return Feedback(False, f"{answer!r} is not a known fault; choose one of: {', '.join(FAULTS)}.")
    if answer == truth:
        return Feedback(True, f"{answer}: {FAULTS[answer]}")
    return Feedback(False, f"{answer} would look different ({FAULTS[answer]}). Look again at the curves and labels.")


def _check_suspects(suspects):
    from .faults import FAULTS

    if isinstance(suspects, str) or not isinstance(suspects, (list, tuple)):
        raise TypeError("suspects must be a list of fault names, e.g. ['eos_masked', 'prompt_trained'].")
    unknown = [s for s in suspects if s not in FAULTS]
    if unknown:
        raise ValueError(f"Unknown fault(s) {unknown}; choose from: {', '.join(FAULTS)}.")
    if len(set(suspects)) != len(suspects) or not 2 <= len(suspects) <= 6:
        raise ValueError("Give between 2 and 6 different suspects.")


def mystery_assignment(suspects: list[str], key: int | str) -> dict[str, str]:
    """Which suspect goes into which mystery run: ``{"A": fault, "B": fault, ...}``, decided by ``key``.

    This is the instructor's answer key. ``key`` (an int or a string, e.g. the term: ``"2026-fall"``) is
    a parameter of the diagnosis notebook, so each term can get another assignment without editing
    code; the student version calls only :func:`mystery_runs` and never prints this.
    """
    import random

    _check_suspects(suspects)
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise TypeError(f"key must be an int or a string (e.g. the term, '2026-fall'), got {type(key).__name__}.")
    order = list(suspects)
    random.Random(f"sftviz-mystery:{key}").shuffle(order)
    return dict(zip("ABCDEF", order))


def mystery_runs(
    model: Any,
    tok: Any,
    data: list,
    suspects: list[str],
    *,
    steps: int = 150,
    seed: int = 0,
    key: int | str | None = None,
    **finetune_kwargs: Any,
) -> tuple[Run, dict[str, Run]]:
    """Fine-tune one healthy run and one run per suspected bug, with the bugs' names hidden.

    Args:
        suspects: fault names from :data:`sftviz.faults.FAULTS` (2 to 6 of them, all different).
        seed: the training seed of every run.
        key: decides which bug is in which run (see :func:`mystery_assignment`); default: ``seed``.
        **finetune_kwargs: passed to :func:`sftviz.finetune` (``eval_data``, ``lr``, ...).

    Returns:
        ``(healthy, {"A": run, "B": run, ...})``. Each mystery run's record says ``fault: "hidden"``;
        :func:`check_diagnosis` knows the truth.
    """
    from .train import finetune

    assignment = mystery_assignment(suspects, seed if key is None else key)
    finetune_kwargs.setdefault("progress", False)
    healthy = finetune(model, tok, data, "completion", steps=steps, seed=seed, **finetune_kwargs)
    healthy.name = "healthy"
    runs = {}
    for letter, fault in assignment.items():
        run = finetune(model, tok, data, "completion", steps=steps, seed=seed, fault=fault, **finetune_kwargs)
        run.hidden_fault = fault
        run.config["fault"] = "hidden"
        run.name = f"run {letter}"
        runs[letter] = run
    return healthy, runs


def mystery_labels(tok: Any, row: dict, run: Run) -> Example:
    """The example built from ``row`` with the labels that ``run``'s (possibly buggy) pipeline trained on."""
    from dataclasses import replace

    from .collate import collate_examples
    from .data import build_example
    from .faults import apply_label_fault

    fault = getattr(run, "hidden_fault", None) or run.config.get("fault")
    ex = build_example(tok, **row, masking=run.config.get("masking", "completion"), warn=False)
    batch = collate_examples([ex], tok.pad_token_id, extras=True)
    batch = apply_label_fault(fault, batch, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
    labels = batch["labels"][0].tolist()
    weights = batch["loss_weights"][0].tolist()
    return replace(ex, labels=labels, weights=weights, masking="custom" if fault else ex.masking, notes=list(ex.notes))
