"""The X-ray exercise's check (notebook 2): predict what each pipeline trains, then compare with what the
X-ray measured on the same rows. Nothing is stored here: the truth is read from the reports."""

from __future__ import annotations

from typing import Any

from .feedback import Feedback, is_unanswered, unanswered

WHAT = "a dict of pipeline name -> (trains the prompt?, trains the EOS?), e.g. {'sftviz': (False, True), ...}"


def trains(report: Any) -> tuple[bool, bool]:
    """(does any row train a prompt token?, does every row train its EOS?) in an X-ray report."""
    rows = [rx for rx in report.rows if not rx.error and not rx.dropped]
    prompt = any(on and seg == "prompt" for rx in rows for seg, on in zip(rx.segments, rx.trained))
    eos = bool(rows) and all(
        any(on and seg in ("eos", "end_of_turn") for seg, on in zip(rx.segments, rx.trained)) for rx in rows
    )
    return prompt, eos


def _words(prompt: bool, eos: bool) -> str:
    return f"{'trains' if prompt else 'does not train'} the prompt and {'trains' if eos else 'does not train'} the EOS"


def check_xray_prediction(answer: object, reports: dict) -> Feedback:
    """``answer`` maps each pipeline in ``reports`` to ``(trains the prompt?, trains the EOS?)``,
    predicted before running the X-ray; the truth is what each report shows."""
    if is_unanswered(answer):
        return unanswered(WHAT)
    if not isinstance(answer, dict) or set(answer) != set(reports):
        return Feedback(False, f"give one entry per pipeline, named {sorted(reports)}: {WHAT}.")
    wrong = []
    for name, report in reports.items():
        guess = answer[name]
        if not isinstance(guess, (tuple, list)) or len(guess) != 2 or not all(isinstance(g, bool) for g in guess):
            return Feedback(False, f"{name}: give a pair of True/False, (trains the prompt?, trains the EOS?).")
        truth = trains(report)
        if tuple(guess) != truth:
            lints = ", ".join(sorted(report.counts())) or "no lint"
            wrong.append(f"{name} {_words(*truth)}, not as you said (its X-ray: {lints})")
    if wrong:
        return Feedback(False, "; ".join(wrong) + ". Look at its report: which tokens carry a + or a \u2212?")
    said = "; ".join(f"{name} {_words(*trains(r))}" for name, r in reports.items())
    return Feedback(True, said + ".")
