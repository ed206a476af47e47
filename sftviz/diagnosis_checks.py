"""The diagnosis exercise's checkers (notebook 5): which bug is in which mystery run, from the curves
alone and from all the evidence. For a graded case (:func:`sftviz.mystery.load_case`) the runs carry no
truth: the grader's hidden tests pass the instructor's ``key``, and without it answers are recorded."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .feedback import Feedback, is_unanswered, unanswered
from .mystery import answer_key, curve_ends, true_fault

if TYPE_CHECKING:
    from .train.runs import Run


def check_diagnosis(answer: object, mystery: Run, *, fault: str | None = None) -> Feedback:
    """``answer`` should name the fault injected into ``mystery`` (a run from the diagnosis notebook).

    ``fault`` is the truth where the run does not carry it: a graded case's runs carry nothing, and the
    grader's hidden test passes the answer from the instructor's key. Without either, the answer is
    recorded ("Recorded"), not judged.
    """
    from .faults import FAULTS  # imported here: the engine is optional for the other checks

    if is_unanswered(answer):
        return unanswered(f"one of: {', '.join(FAULTS)}")
    if not isinstance(getattr(mystery, "config", None), dict):
        raise TypeError(
            f"check_diagnosis needs a run from mystery_runs (e.g. mysteries['A']), got {type(mystery).__name__}."
        )
    truth = fault or true_fault(mystery)
    if not isinstance(answer, str):
        return Feedback(
            False, f"name one fault as a string, e.g. 'eos_masked', not a {type(answer).__name__}: {', '.join(FAULTS)}."
        )
    if answer not in FAULTS:
        return Feedback(False, f"{answer!r} is not a known fault; choose one of: {', '.join(FAULTS)}.")
    if truth is None:
        return _recorded(answer)
    if answer == truth:
        return Feedback(True, f"{answer}: {FAULTS[answer]}")
    return Feedback(False, f"{answer} would look different ({FAULTS[answer]}). Look again at the curves and labels.")


def _recorded(answer: str) -> Feedback:
    return Feedback(
        False,
        f"{answer}: recorded. These runs come from your instructor's graded case: nothing in this notebook knows "
        "which bug is where, so your instructor's grader checks this answer.",
        pending=True,
    )


#: The bugs that the curves alone give away, and how (notebook 5's "curves alone" exercise).
CURVE_SIGNS = {
    "prompt_trained": "the run whose prompt NLL falls far below the healthy run's while its completion NLL stays high",
    "accum_mean_of_means": "the run whose prompt and completion NLL follow the healthy run's, although its objective "
    "does not",
    "loss_scaled_by_accum": "the run whose objective sits at the accumulation steps times its completion NLL at "
    "every step, while its NLL curves are the healthy run's",
}


def _curve_line(letter: str, e: dict, ok: dict) -> str:
    return (
        f"run {letter} ends with prompt NLL {e['prompt_nll']:.2f} and completion NLL {e['completion_nll']:.2f} "
        f"nats (last {e.get('tail_steps', 10)} steps), and its objective is {e['objective_gap']:.1%} off the "
        "completion NLL on average "
        f"(healthy run: {ok['prompt_nll']:.2f}, {ok['completion_nll']:.2f} and {ok['objective_gap']:.1%})"
    )


def check_from_curves(
    answers: object, mysteries: dict[str, Run], healthy: Run, *, key: dict[str, str] | None = None
) -> list[Feedback]:
    """Which run has which bug, from the training curves alone: one :class:`Feedback` per bug of
    :data:`CURVE_SIGNS` that is among the mystery runs.

    ``answers`` maps a bug's name to a run letter, e.g. ``{"prompt_trained": "A"}``. The feedback quotes
    the curves' end values of the run named (measured by :func:`curve_ends`, against the healthy run),
    and a wrong answer says what the right run's curves look like without naming it. ``key`` (``{"A":
    fault, ...}``) is the truth for a graded case, whose runs carry none (the grader's hidden test passes
    it); without it such answers are recorded, not judged.
    """
    if not isinstance(mysteries, dict) or not mysteries:
        raise TypeError("check_from_curves needs the dict of mystery runs from mystery_runs (e.g. mysteries).")
    ok = curve_ends(healthy)
    key = key or answer_key(mysteries)
    if key is None:  # a graded case in a student's kernel: the suspects are known, their runs are not
        suspects = set((getattr(next(iter(mysteries.values())), "case", None) or {}).get("suspects", []))
        faults = [f for f in CURVE_SIGNS if f in suspects]
        truth = {}
    else:
        truth = {fault: letter for letter, fault in key.items()}
        faults = [f for f in CURVE_SIGNS if f in truth]
    if not faults:
        return [Feedback(False, "none of these runs has a bug that the curves alone give away; nothing to check.")]
    letters = ", ".join(mysteries)
    if is_unanswered(answers):
        return [unanswered(f"a run letter ({letters}) for {f!r}") for f in faults]
    if not isinstance(answers, dict):
        example = "{" + ", ".join(f"{f!r}: {letter!r}" for f, letter in zip(faults, mysteries)) + "}"
        return [Feedback(False, f"answer with a dict from bug to run letter, e.g. {example}.") for _ in faults]
    out = []
    for fault in faults:
        answer = answers.get(fault)
        if is_unanswered(answer):
            out.append(unanswered(f"a run letter ({letters}) for {fault!r}"))
        elif not isinstance(answer, str) or answer.strip().upper() not in mysteries:
            out.append(Feedback(False, f"{fault}: {answer!r} is not a run; name one of {letters}."))
        else:
            letter = answer.strip().upper()
            line = _curve_line(letter, curve_ends(mysteries[letter]), ok)
            if not truth:
                out.append(_recorded(f"{fault} in run {letter}"))
            elif letter == truth[fault]:
                out.append(Feedback(True, f"{fault}: {line}."))
            else:
                out.append(Feedback(False, f"{fault}: {line}. Look for {CURVE_SIGNS[fault]}."))
    return out


def check_diagnoses(answers: object, mysteries: dict[str, Run], *, key: dict[str, str] | None = None) -> list[Feedback]:
    """One :func:`check_diagnosis` per mystery run; ``answers`` maps letters to fault names, and ``key``
    (for a graded case: the grader's hidden test passes it) maps them to the truth.

    A list or tuple with one name per run, in the runs' order, is read as such; any other answer gets
    feedback saying what shape is expected, never an exception.
    """
    if not isinstance(mysteries, dict) or not mysteries:
        raise TypeError("check_diagnoses needs the dict of mystery runs from mystery_runs (e.g. mysteries).")
    if key is not None and (not isinstance(key, dict) or set(key) != set(mysteries)):
        raise ValueError(f"key must map every run letter ({', '.join(mysteries)}) to its fault.")
    truth = key or {}
    if isinstance(answers, dict):
        return [check_diagnosis(answers.get(letter), run, fault=truth.get(letter)) for letter, run in mysteries.items()]
    if isinstance(answers, (list, tuple)) and len(answers) == len(mysteries):
        return [
            check_diagnosis(a, run, fault=truth.get(letter)) for a, (letter, run) in zip(answers, mysteries.items())
        ]
    example = "{" + f"'{next(iter(mysteries))}': 'eos_masked', ..." + "}"
    shape = f"a {type(answers).__name__}" + (f" of {len(answers)}" if isinstance(answers, (list, tuple)) else "")
    return [
        Feedback(False, f"diagnosis should be a dict from run letter to fault name, e.g. {example}; got {shape}.")
        for _ in mysteries
    ]
