"""Checks for the course's exercises: immediate feedback, computed from the objects in front of you.

Every check compares a student's answer with what the core computes for the same model and text;
no expected value is stored here. A check returns a :class:`Feedback` that prints as one line
("Correct: ..." or "Not yet: ..." with a hint) and is truthy when the answer is right, so notebooks can
also ``assert`` it in their solution cells.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

from .data import IGNORE_INDEX, Example
from .diagnosis_checks import CURVE_SIGNS, check_diagnoses, check_diagnosis, check_from_curves
from .feedback import Feedback, check_number, is_unanswered, points, unanswered
from .loss_checks import check_masked_loss
from .mystery import (
    answer_key,
    clues,
    confirm_hallmarks,
    curve_ends,
    evidence,
    load_case,
    mystery_assignment,
    mystery_labels,
    mystery_runs,
    write_case,
)
from .packing_checks import check_matching_reduction, check_packed_targets
from .xray_checks import check_xray_prediction

__all__ = [
    "CURVE_SIGNS",
    "Feedback",
    "answer_key",
    "check_choice",
    "check_conditional",
    "check_diagnoses",
    "check_diagnosis",
    "check_from_curves",
    "check_labels",
    "check_masked_loss",
    "check_matching_reduction",
    "check_number",
    "check_packed_targets",
    "check_predicting_position",
    "check_prediction",
    "check_xray_prediction",
    "clues",
    "confirm_hallmarks",
    "curve_ends",
    "evidence",
    "load_case",
    "mystery_assignment",
    "mystery_labels",
    "mystery_runs",
    "points",
    "write_case",
]

if TYPE_CHECKING:  # the checks of notebooks 1-3 work without the training engine
    from .logprobs import ScoreReport


def check_conditional(answer: object, report: ScoreReport, *, decimals: int | None = 2) -> Feedback:
    """``answer`` should be log Pr(y | x) for the scored example (from joint and marginal).

    ``decimals`` is the precision the notebook prints (2 by default): an answer copied from a printout,
    rounded to that many decimals (-13.36 for -13.3612), passes; ``decimals=None`` asks for the full value.
    """
    joint, marginal = getattr(report, "joint", None), getattr(report, "marginal", None)
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (joint, marginal)):
        raise TypeError(
            "check_conditional needs the ScoreReport of sv.score (with .joint and .marginal), "
            f"got {type(report).__name__}."
        )
    return check_number(
        answer,
        joint - marginal,
        "log Pr(y | x)",
        hint="By the chain rule, log Pr(y | x) = log Pr([x, y]) - log Pr(x).",
        decimals=decimals,
    )


def _int_list(answer: object, what: str) -> tuple[list[int] | None, Feedback | None]:
    """``answer`` as a flat list of ints, or the Feedback that says why it is not one."""
    if is_unanswered(answer):
        return None, unanswered(what)
    if isinstance(answer, (str, bytes, dict)) or not (isinstance(answer, (list, tuple)) or hasattr(answer, "tolist")):
        return None, Feedback(False, f"{what} should be a list of integers, got {type(answer).__name__}.")
    values = answer.tolist() if hasattr(answer, "tolist") else list(answer)
    if len(values) == 1 and isinstance(values[0], list):  # a batch of one, e.g. torch.tensor([labels])
        values = values[0]
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, numbers.Integral)]
    if bad:
        return None, Feedback(
            False, f"{what} should hold integers only (token ids and -100); found {bad[0]!r} ({type(bad[0]).__name__})."
        )
    return [int(v) for v in values], None


def _label_mistake(answer: list[int], example: Example, expected: list[int]) -> str | None:
    """Name the kind of mistake when ``answer`` is a whole known wrong labelling, else None."""
    ids, n = example.input_ids, len(expected)
    trained = [v != IGNORE_INDEX for v in expected]
    if answer == list(ids):
        return (
            "these are the full-loss labels: every token is a target. Under completion-only loss the prompt "
            "tokens are context, so their labels are -100; only the completion and the EOS keep their ids."
        )
    if answer == [IGNORE_INDEX] + list(ids[1:]):
        return (
            "these are the full-loss labels (every token after the BOS is a target). Completion-only loss "
            "masks the prompt tokens too: -100 there, the ids only on the completion and the EOS."
        )
    if answer == expected[1:] + [IGNORE_INDEX]:
        return (
            "the labels are shifted one position to the left. Hugging Face models shift labels themselves "
            "(the logits at t are scored against the label at t + 1), so labels line up with input_ids: "
            "the label at position t is the id of the token at t, or -100."
        )
    inverted = [IGNORE_INDEX if (trained[t] or example.segments[t] == "bos") else ids[t] for t in range(n)]
    if answer == inverted:
        return (
            "the mask is inverted: the prompt is trained and the answer masked. That teaches the model to "
            "continue prompts, not to answer them."
        )
    eos = [t for t in range(n) if example.segments[t] == "eos"]
    if eos and answer == [IGNORE_INDEX if t in eos else v for t, v in enumerate(expected)]:
        return (
            "the EOS is masked. The EOS that ends the completion must be a target, or fine-tuning never "
            "teaches the model to stop after the answer, and its answers run on."
        )
    return None


def check_labels(answer: object, example: Example) -> Feedback:
    """``answer`` should be the completion-only labels of ``example`` (-100 where not trained).

    Known wrong labellings are named as such (full-loss labels, labels shifted by hand, an inverted
    mask, a masked EOS) rather than by their first mismatch. A labelled BOS is accepted: nothing
    predicts position 0, so its label never enters the loss.
    """
    answer, bad = _int_list(answer, "the list of labels")
    if bad is not None:
        return bad
    expected = example.with_masking("completion").labels
    if len(answer) == len(expected) - 1:
        return Feedback(
            False,
            f"labels has {len(answer)} entries, one fewer than input_ids ({len(expected)}): did you shift them? "
            "Labels line up with input_ids, one per input token; the model does the shift.",
        )
    if len(answer) != len(expected):
        return Feedback(False, f"labels has {len(answer)} entries; it needs one per input token ({len(expected)}).")
    n_trained = sum(v != IGNORE_INDEX for v in expected)
    if answer == expected:
        return Feedback(True, f"{n_trained} trained tokens (the completion and its EOS), the rest -100.")
    if answer[1:] == expected[1:] and example.segments[0] == "bos" and answer[0] == example.input_ids[0]:
        return Feedback(
            True,
            f"{n_trained} trained tokens, the rest -100. You also labelled the BOS with its id: that changes "
            "nothing, because no position predicts position 0 (the shift drops the first label), but -100 "
            "says so plainly.",
        )
    kind = _label_mistake(answer, example, expected)
    if kind is not None:
        return Feedback(False, kind)
    wrong = [t for t, (a, e) in enumerate(zip(answer, expected)) if a != e]
    t = wrong[0]
    seg = example.segments[t]
    why = {
        "eos": "the EOS that ends the completion must be trained, or fine-tuning never teaches the model to stop after the answer",
        "bos": "the BOS is context only: nothing predicts it",
        "prompt": "prompt tokens are context, not targets, under completion-only loss",
        "completion": "completion tokens are the targets: their label is their own id (the model does the shift)",
    }.get(seg, f"check the {seg} token")
    more = f" ({len(wrong)} positions differ in all)" if len(wrong) > 1 else ""
    return Feedback(
        False, f"position {t} ({example.tokens[t]!r}, {seg}) should be {expected[t]}, got {answer[t]}: {why}{more}."
    )


def check_predicting_position(answer: object, example: Example) -> Feedback:
    """``answer`` should be the position whose logits predict the first completion token."""
    expected = example.n_prompt - 1
    if is_unanswered(answer):
        return unanswered("a position (an integer)")
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


_BOOL_WORDS = {"true": True, "yes": True, "false": False, "no": False}


def _plain_bool(value: object) -> object:
    """A numpy or 0-d torch bool as a Python bool; anything else unchanged."""
    if not isinstance(value, bool) and type(value).__name__ in ("bool_", "bool", "Tensor") and hasattr(value, "item"):
        try:
            item = value.item()
        except (ValueError, RuntimeError):
            return value
        return item if isinstance(item, bool) else value
    return value


def check_choice(answer: object, expected: object, explanation: str, *, hint: str = "") -> Feedback:
    """A multiple-choice or true/false answer.

    A right answer shows ``explanation``; a wrong one does not (it would give the answer away) but shows
    ``hint`` if given ("Not yet: <hint>"), else a generic nudge to reread the question and try again.
    Strings compare without case or surrounding space; a list, tuple or set of choices compares as a
    set. When ``expected`` is a bool, the strings "True"/"yes" and "False"/"no" (any case) count as
    that bool. ``expected``, ``explanation`` and ``hint`` come from the notebook: ``expected`` None
    raises ``ValueError``, a non-string explanation or hint ``TypeError``.
    """
    if not isinstance(explanation, str) or not isinstance(hint, str):
        raise TypeError("check_choice needs the explanation (and the optional hint) as strings.")
    if is_unanswered(expected):
        raise ValueError("check_choice needs the expected answer, got None.")
    if is_unanswered(answer):
        return unanswered("your choice")
    expected = _plain_bool(expected)
    answer = _plain_bool(answer)
    nudge = hint or "that is not it; reread the question and the output above it, then try again."
    if isinstance(expected, bool):
        if isinstance(answer, str) and answer.strip().lower() in _BOOL_WORDS:
            answer = _BOOL_WORDS[answer.strip().lower()]
        if not isinstance(answer, bool):
            return Feedback(False, f"answer True or False, not {answer!r}.")
        return Feedback(True, explanation) if answer == expected else Feedback(False, nudge)

    def norm(v: object) -> object:
        if isinstance(v, str):
            return v.strip().lower()
        if isinstance(v, (list, tuple, set, frozenset)):  # a set of choices: order does not matter
            try:
                return frozenset(norm(x) for x in v)
            except TypeError:  # unhashable items: compare as given
                return v
        return v

    try:
        ok = bool(norm(answer) == norm(expected))
    except Exception:  # noqa: BLE001 (an answer whose == is not a plain bool, e.g. an array)
        ok = False
    return Feedback(True, explanation) if ok else Feedback(False, nudge)


_TIE_WORDS = {"tie", "nowinner", "nonecanbecalled"}
_MASKING_WORDS = {
    "completion": "completion",
    "completion only": "completion",
    "completion only loss": "completion",
    "completion loss": "completion",
    "full": "full",
    "full loss": "full",
    "unmasked": "full",
    "prompt": "prompt",
}


def _is_tie(answer: object) -> bool:
    if not isinstance(answer, str):
        return False
    return "".join(answer.lower().replace("-", " ").replace("_", " ").split()) in _TIE_WORDS


def _student_masking(answer: object) -> str | float:
    """A masking as a student writes it, normalised: any case and spacing; "completion-only", "completion
    only" or "completion_only" for "completion"; "full loss" or "unmasked" for "full"; "0.1" for 0.1.
    Raises ``TypeError``/``ValueError`` (from :func:`sftviz.masking.check_masking`) for anything else."""
    from .masking import check_masking

    if isinstance(answer, str):
        words = " ".join(answer.strip().lower().replace("-", " ").replace("_", " ").split())
        if words in _MASKING_WORDS:
            return _MASKING_WORDS[words]
        try:
            weight = float(words)
        except ValueError:
            return check_masking(answer)  # raises the ValueError that lists the maskings
        return check_masking(weight)
    if not isinstance(answer, numbers.Real) and hasattr(answer, "item"):  # a numpy scalar or a 0-d tensor
        try:
            answer = answer.item()
        except (ValueError, RuntimeError) as err:
            raise TypeError(f"a masking is one name or one number, not an array of shape {answer.shape}.") from err
    return check_masking(answer)


def check_prediction(answer: object, experiment: Any, metric: str = "exact_match") -> Feedback:
    """A prediction, made before the runs, of which masking ends best on ``metric`` in ``experiment``.

    The right answer is what :meth:`sftviz.Experiment.winner` calls: the winning masking when the runs
    call a winner, and ``"tie"`` when they cannot (``"no winner"`` and ``"none can be called"`` are read
    the same way, in any case, with or without spaces or hyphens). So predicting a masking is wrong
    when the runs cannot tell the maskings apart, and predicting a tie is wrong when they can. Maskings
    are read as a student writes them (``"Full"``, ``"completion-only"``, ``"0.1"``). The message always
    ends with what the runs found, in a sentence generated from them (:meth:`~sftviz.Experiment.verdict`).

    ``experiment`` and ``metric`` come from the notebook: a bad one raises ``TypeError``/``ValueError``.
    """
    from .train.experiment import check_metric, masking_words

    if not all(hasattr(experiment, a) for a in ("winner", "verdict", "maskings")):
        raise TypeError(
            f"check_prediction needs an Experiment (from sv.masking_experiment), got {type(experiment).__name__}."
        )
    check_metric(metric)
    if is_unanswered(answer):
        return unanswered(
            "a masking: 'completion', 'full' or a prompt-loss weight such as 0.1; or 'tie' if you expect the runs "
            "to call no winner"
        )
    best, clear = experiment.winner(metric)
    found = experiment.verdict(metric)
    if _is_tie(answer):
        if clear:
            return Feedback(
                False, f"you predicted that the runs cannot call a winner, but they call {masking_words(best)}. {found}"
            )
        return Feedback(True, f"you predicted that the runs cannot call a winner, and they cannot. {found}")
    try:
        predicted = _student_masking(answer)
    except (TypeError, ValueError) as err:
        return Feedback(False, f"{answer!r} is not a masking (nor 'tie'): {err}")
    maskings = list(experiment.maskings)
    if isinstance(predicted, float) and predicted in (0.0, 1.0) and predicted not in maskings:
        predicted = "completion" if predicted == 0.0 else "full"  # w = 0 trains like completion, w = 1 like full
    if predicted not in maskings:
        names = ", ".join(repr(m) for m in maskings)
        return Feedback(False, f"the experiment ran {names}; predict one of them (or 'tie'), not {predicted!r}.")
    if not clear:
        return Feedback(
            False,
            f"you predicted {masking_words(predicted)}, but the runs cannot call a winner on this metric; "
            f"predicting 'tie' would have matched them. {found}",
        )
    if predicted == best:
        return Feedback(True, f"you predicted {masking_words(predicted)}. {found}")
    return Feedback(False, f"you predicted {masking_words(predicted)}, but {masking_words(best)} wins. {found}")
