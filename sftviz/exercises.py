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
from .mystery import (
    clues,
    confirm_hallmarks,
    curve_ends,
    evidence,
    mystery_assignment,
    mystery_labels,
    mystery_runs,
)

__all__ = [
    "CURVE_SIGNS",
    "Feedback",
    "check_choice",
    "check_conditional",
    "check_diagnoses",
    "check_diagnosis",
    "check_from_curves",
    "check_labels",
    "check_masked_loss",
    "check_number",
    "check_predicting_position",
    "check_prediction",
    "clues",
    "confirm_hallmarks",
    "curve_ends",
    "evidence",
    "mystery_assignment",
    "mystery_labels",
    "mystery_runs",
    "points",
]

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


def _int_list(answer: object, what: str) -> tuple[list[int] | None, Feedback | None]:
    """``answer`` as a flat list of ints, or the Feedback that says why it is not one."""
    if _is_unanswered(answer):
        return None, _unanswered(what)
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
            "the EOS is masked. The EOS that ends the completion must be a target, or the model never "
            "learns to stop and keeps generating after the answer."
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
        "eos": "the EOS that ends the completion must be trained, or the model never learns to stop",
        "bos": "the BOS is context only: nothing predicts it",
        "prompt": "prompt tokens are context, not targets, under completion-only loss",
        "completion": "completion tokens are the targets: their label is their own id (the model does the shift)",
    }.get(seg, f"check the {seg} token")
    more = f" ({len(wrong)} positions differ in all)" if len(wrong) > 1 else ""
    return Feedback(
        False, f"position {t} ({example.tokens[t]!r}, {seg}) should be {expected[t]}, got {answer[t]}: {why}{more}."
    )


def _masked_loss_slips(logits: Any, labels: Any) -> dict[str, float]:
    """The usual wrong versions of the masked loss, by what went wrong."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)

    def nll(lp: Any, lab: Any) -> Any:
        keep = lab != IGNORE_INDEX
        return -lp[keep].gather(-1, lab[keep].unsqueeze(-1)).squeeze(-1) if keep.any() else lp.new_zeros(0)

    shifted = nll(logp[:, :-1], labels[:, 1:])
    slips = {
        "you did not shift: the logits at position t predict the token at t + 1, so compare logits[:, :-1] "
        "with labels[:, 1:]": nll(logp, labels).mean(),
        "you summed the per-token losses; the loss is their mean over the trained targets": shifted.sum(),
        "you shifted the wrong way: logits[:, :-1] go with labels[:, 1:], not logits[:, 1:] with labels[:, :-1]": nll(
            logp[:, 1:], labels[:, :-1]
        ).mean(),
        "you averaged over every position, masked ones included (counting them as 0); divide by the number of "
        "trained targets only": shifted.sum() / max(labels[:, 1:].numel(), 1),
        "you used the raw logits as log-probabilities; take log_softmax over the vocabulary first (or use "
        "cross_entropy, which does)": nll(logits.float()[:, :-1], labels[:, 1:]).mean(),
    }
    return {why: float(v) for why, v in slips.items()}


def _close(a: float, b: float) -> bool:
    return math.isfinite(b) and abs(a - b) <= max(1e-3, 1e-4 * abs(b))


def _check_loss_value(answer: object, logits: Any, labels: Any, where: str) -> Feedback:
    from .loss import sft_loss

    value, bad = _number(answer, f"the masked loss{where}")
    if bad is not None:
        return bad
    expected = float(sft_loss(logits, labels))
    if _close(value, expected):
        return Feedback(True, f"masked loss{where} = {value:.4f}, the same as sv.sft_loss.")
    for why, wrong in _masked_loss_slips(logits, labels).items():
        if _close(value, wrong):
            return Feedback(False, f"masked loss{where} = {value:.4f}, not {expected:.4f}: {why}.")
    return check_number(
        value, expected, f"the masked loss{where}", hint="Shift, cross-entropy, then the mean over labels != -100."
    )


def check_masked_loss(answer: object, logits: Any, labels: Any) -> Feedback:
    """The completion-only loss from ``logits`` (batch, seq, vocab) and unshifted ``labels`` (batch, seq).

    ``answer`` is a number, or better a function ``f(logits, labels)`` that computes it: a function is
    also run on a second, random batch of two sequences (other masks, other lengths of the trained part), so
    a copied number or a rule that only fits this example does not pass. The right value is
    :func:`sftviz.sft_loss`: shift (logits at t against labels at t + 1), cross-entropy, mean over the
    targets that are not -100. The usual slips are named: no shift, a shift the wrong way, a sum instead of
    a mean, masked positions averaged in, raw logits instead of log-probabilities.
    """
    import torch

    if not callable(answer):
        return _check_loss_value(answer, logits, labels, "")
    gen = torch.Generator().manual_seed(0)
    other_logits = torch.randn(2, 6, 11, generator=gen)
    other_labels = torch.randint(0, 11, (2, 6), generator=gen)
    other_labels[0, :3] = IGNORE_INDEX
    other_labels[1, :1] = IGNORE_INDEX
    cases = [(logits, labels, " on this example"), (other_logits, other_labels, " on a random batch of two")]
    for lg, lb, where in cases:
        try:
            value = answer(lg, lb)
        except Exception as err:  # noqa: BLE001 (a student's function: report any error, never raise it)
            return Feedback(False, f"your function raised {type(err).__name__}{where}: {err}")
        fb = _check_loss_value(value, lg, lb, where)
        if not fb:
            return fb
    return Feedback(True, "your function gives the same loss as sv.sft_loss on this example and on a random batch.")


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
    """A multiple-choice or true/false answer, with the explanation either way.

    Strings compare without case or surrounding space; a list, tuple or set of choices compares as a set.
    """
    if _is_unanswered(answer):
        return _unanswered("your choice")

    def norm(v: object) -> object:
        if isinstance(v, str):
            return v.strip().lower()
        if isinstance(v, (list, tuple, set, frozenset)):  # a set of choices: order does not matter
            try:
                return frozenset(norm(x) for x in v)
            except TypeError:  # unhashable items: compare as given
                return v
        return v

    ok = norm(answer) == norm(expected)
    return Feedback(ok, explanation)


def check_prediction(answer: object, experiment: Any, metric: str = "exact_match") -> Feedback:
    """A prediction, made before the runs, of which masking ends best on ``metric`` in ``experiment``.

    Right when the runs name that masking the clear winner, or, when they cannot call one, when the
    prediction is not clearly beaten by the best mean (see :meth:`sftviz.Experiment.winner`). The
    message always says what the runs found, in a sentence generated from them.
    """
    from .masking import check_masking
    from .train.experiment import check_metric, masking_words

    if _is_unanswered(answer):
        return _unanswered("a masking: 'completion', 'full' or a prompt-loss weight such as 0.1")
    check_metric(metric)
    try:
        predicted = check_masking(answer)
    except (TypeError, ValueError) as err:
        return Feedback(False, f"{answer!r} is not a masking: {err}")
    if predicted not in experiment.maskings:
        names = ", ".join(repr(m) for m in experiment.maskings)
        return Feedback(False, f"the experiment ran {names}; predict one of them, not {predicted!r}.")
    best, clear = experiment.winner(metric)
    found = experiment.verdict(metric)
    if predicted == best:
        return Feedback(True, f"you predicted {masking_words(predicted)}. {found}")
    if clear:
        return Feedback(False, f"you predicted {masking_words(predicted)}. {found}")
    n = len(experiment.seeds)
    if experiment.wins(best, predicted, metric) == n:
        return Feedback(
            False,
            f"you predicted {masking_words(predicted)}, which ends below {masking_words(best)} on all {n} seeds. {found}",
        )
    return Feedback(
        True,
        f"you predicted {masking_words(predicted)}, which the runs cannot tell apart from the best mean. {found}",
    )


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
    if not isinstance(answer, str):
        return Feedback(
            False, f"name one fault as a string, e.g. 'eos_masked', not a {type(answer).__name__}: {', '.join(FAULTS)}."
        )
    if answer not in FAULTS:
        return Feedback(False, f"{answer!r} is not a known fault; choose one of: {', '.join(FAULTS)}.")
    if answer == truth:
        return Feedback(True, f"{answer}: {FAULTS[answer]}")
    return Feedback(False, f"{answer} would look different ({FAULTS[answer]}). Look again at the curves and labels.")


#: The bugs that the curves alone give away, and how (notebook 5's "curves alone" exercise).
CURVE_SIGNS = {
    "prompt_trained": "the run whose prompt NLL falls far below the healthy run's while its completion NLL stays high",
    "accum_mean_of_means": "the run whose prompt and completion NLL follow the healthy run's, although its objective "
    "does not",
}


def _curve_line(letter: str, e: dict, ok: dict) -> str:
    return (
        f"run {letter} ends with prompt NLL {e['prompt_nll']:.2f} and completion NLL {e['completion_nll']:.2f} "
        f"nats (last 10 steps), and its objective is {e['objective_gap']:.1%} off the completion NLL on average "
        f"(healthy run: {ok['prompt_nll']:.2f}, {ok['completion_nll']:.2f} and {ok['objective_gap']:.1%})"
    )


def check_from_curves(answers: object, mysteries: dict[str, Run], healthy: Run) -> list[Feedback]:
    """Which run has which bug, from the training curves alone: one :class:`Feedback` per bug of
    :data:`CURVE_SIGNS` that is among the mystery runs.

    ``answers`` maps a bug's name to a run letter, e.g. ``{"prompt_trained": "A"}``. The feedback quotes
    the curves' end values of the run named (measured by :func:`curve_ends`, against the healthy run),
    and a wrong answer says what the right run's curves look like without naming it.
    """
    if not isinstance(mysteries, dict) or not mysteries:
        raise TypeError("check_from_curves needs the dict of mystery runs from mystery_runs (e.g. mysteries).")
    ok = curve_ends(healthy)
    truth = {getattr(run, "hidden_fault", None): letter for letter, run in mysteries.items()}
    faults = [f for f in CURVE_SIGNS if f in truth]
    if not faults:
        return [Feedback(False, "none of these runs has a bug that the curves alone give away; nothing to check.")]
    letters = ", ".join(mysteries)
    if _is_unanswered(answers):
        return [_unanswered(f"a run letter ({letters}) for {f!r}") for f in faults]
    if not isinstance(answers, dict):
        example = "{" + ", ".join(f"{f!r}: {letter!r}" for f, letter in zip(faults, mysteries)) + "}"
        return [Feedback(False, f"answer with a dict from bug to run letter, e.g. {example}.") for _ in faults]
    out = []
    for fault in faults:
        answer = answers.get(fault)
        if _is_unanswered(answer):
            out.append(_unanswered(f"a run letter ({letters}) for {fault!r}"))
        elif not isinstance(answer, str) or answer.strip().upper() not in mysteries:
            out.append(Feedback(False, f"{fault}: {answer!r} is not a run; name one of {letters}."))
        else:
            letter = answer.strip().upper()
            line = _curve_line(letter, curve_ends(mysteries[letter]), ok)
            if letter == truth[fault]:
                out.append(Feedback(True, f"{fault}: {line}."))
            else:
                out.append(Feedback(False, f"{fault}: {line}. Look for {CURVE_SIGNS[fault]}."))
    return out


def check_diagnoses(answers: object, mysteries: dict[str, Run]) -> list[Feedback]:
    """One :func:`check_diagnosis` per mystery run; ``answers`` maps letters to fault names.

    A list or tuple with one name per run, in the runs' order, is read as such; any other answer gets
    feedback saying what shape is expected, never an exception.
    """
    if not isinstance(mysteries, dict) or not mysteries:
        raise TypeError("check_diagnoses needs the dict of mystery runs from mystery_runs (e.g. mysteries).")
    if isinstance(answers, dict):
        return [check_diagnosis(answers.get(letter), run) for letter, run in mysteries.items()]
    if isinstance(answers, (list, tuple)) and len(answers) == len(mysteries):
        return [check_diagnosis(a, run) for a, run in zip(answers, mysteries.values())]
    example = "{" + f"'{next(iter(mysteries))}': 'eos_masked', ..." + "}"
    shape = f"a {type(answers).__name__}" + (f" of {len(answers)}" if isinstance(answers, (list, tuple)) else "")
    return [
        Feedback(False, f"diagnosis should be a dict from run letter to fault name, e.g. {example}; got {shape}.")
        for _ in mysteries
    ]
