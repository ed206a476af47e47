"""Quiz: multiple-choice and true/false questions with immediate feedback and an explanation."""

from __future__ import annotations

import random
from collections.abc import Callable

import traitlets

from ..quiz import as_questions
from ..views.html import quiz_html
from ._base import SftvizWidget, module_source, stylesheet


class Quiz(SftvizWidget):
    """A quiz from a question bank (a YAML/JSON data file instructors edit).

    Args:
        questions: a bundled bank name (``"sft-foundations"``, ``"sft-debugging"``, ``"all"``), a path
            to a ``.yaml``/``.json`` bank, a :class:`~sftviz.quiz.Bank`, or a list of question dicts.
        topics: keep only questions with these topics.
        ids: keep only these question ids, in this order.
        shuffle: shuffle the question order with ``random.Random(seed)``.
        title: a heading (default: the bank's title).
        reveal_in_static: whether the static HTML (nbconvert, nbviewer, a committed notebook's saved
            output) includes the answers in a closed "Answer" box. Off by default, so that a static view
            never gives the answers away; an instructor turns it on for an answer sheet.

    Picking a choice in the browser sets ``responses`` (question id -> choice index); the Python side
    grades it at once and fills ``feedback`` (correct or not, the right answer, why the picked choice
    is wrong, the explanation). ``quiz.answer("joint-above-marginal", 1)`` does the same from Python;
    ``on_answer(fn)`` calls ``fn(question_id, feedback)`` after each answer.
    """

    _esm = module_source("quiz.js")
    _css = stylesheet("quiz.css")

    questions = traitlets.List().tag(sync=True)
    responses = traitlets.Dict().tag(sync=True)
    feedback = traitlets.Dict().tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    description = traitlets.Unicode("").tag(sync=True)
    score_text = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        questions: object = "sft-foundations",
        *,
        topics: str | list[str] | tuple[str, ...] | None = None,
        ids: list[str] | tuple[str, ...] | None = None,
        shuffle: bool = False,
        seed: int = 0,
        title: str | None = None,
        reveal_in_static: bool = False,
    ):
        bank = as_questions(questions)
        qs = list(bank.questions)
        if topics is not None:
            topics = [topics] if isinstance(topics, str) else list(topics)
            unknown = [t for t in topics if t not in bank.topics()]
            if unknown:
                raise ValueError(f"No questions with topic(s) {unknown}; this bank has {bank.topics()}.")
            qs = [q for q in qs if q.topic in topics]
        if ids is not None:
            by_id = {q.id: q for q in qs}
            missing = [i for i in ids if i not in by_id]
            if missing:
                raise ValueError(f"No question(s) with id {missing} here.")
            qs = [by_id[i] for i in ids]
        if shuffle:
            random.Random(seed).shuffle(qs)
        if not qs:
            raise ValueError("The quiz has no questions left after filtering.")
        self.bank = bank
        self._questions = {q.id: q for q in qs}
        self._order = [q.id for q in qs]
        self._callbacks = []
        self.reveal_in_static = bool(reveal_in_static)
        super().__init__(
            questions=[q.public() for q in qs],
            title=bank.title if title is None else str(title),
            description=bank.description,
        )
        self._update_score()

    # -- Python API ---------------------------------------------------------------------------

    @property
    def question_list(self) -> list:
        """The quiz's questions, in the order shown."""
        return [self._questions[i] for i in self._order]

    def answer(self, question_id: str, choice: int) -> dict:
        """Answer a question (as a click would) and return its feedback."""
        q = self._questions.get(question_id)
        if q is None:
            raise ValueError(f"There is no question {question_id!r} in this quiz; its ids are {self._order}.")
        choice = q.grade(choice)["choice"]  # raises a clear error for a bad choice; a plain int after it
        self.responses = {**self.responses, question_id: choice}
        return self.feedback[question_id]

    def reset(self) -> None:
        """Clear every answer."""
        self.responses = {}

    def on_answer(self, callback: Callable[[str, dict], object]) -> None:
        """Call ``callback(question_id, feedback)`` after each answer (errors it raises show in the widget)."""
        if not callable(callback):
            raise TypeError("on_answer needs a function taking (question_id, feedback).")
        self._callbacks.append(callback)

    @property
    def score(self) -> tuple:
        """(number answered correctly, number answered, number of questions)."""
        right = sum(1 for f in self.feedback.values() if f["correct"])
        return right, len(self.feedback), len(self._order)

    # -- what the browser sends -----------------------------------------------------------

    @traitlets.validate("responses")
    def _valid_responses(self, proposal):
        value = proposal["value"]
        clean = {}
        for qid, choice in dict(value).items():
            q = self._questions.get(qid)
            if q is None:
                self.error = f"There is no question {qid!r} in this quiz."
                return self.responses
            try:
                q.grade(int(choice) if isinstance(choice, float) and choice.is_integer() else choice)
            except (TypeError, ValueError) as err:
                self.error = str(err)
                return self.responses
            clean[qid] = int(choice)
        self.error = ""
        return clean

    @traitlets.observe("responses")
    def _on_responses(self, change):
        old, new = change["old"] or {}, change["new"] or {}
        self.feedback = {qid: self._questions[qid].grade(c) for qid, c in new.items()}
        self._update_score()
        for qid, c in new.items():
            if old.get(qid) != c:
                for cb in list(self._callbacks):
                    try:
                        cb(qid, self.feedback[qid])
                    except Exception as err:  # noqa: BLE001 -- a user's callback: shown in the widget
                        self.report_error(err)

    def _update_score(self):
        right, answered, total = self.score
        self.score_text = (
            f"{right} of {answered} answered correctly \u00b7 {total} questions"
            if answered
            else f"{total} questions: pick an answer to check it"
        )

    # -- display ------------------------------------------------------------------------------

    def static_html(self) -> str:
        """The questions as static HTML (:func:`sftviz.render.quiz_html`); the answers (folded) only when
        ``reveal_in_static`` is True."""
        return quiz_html(self.question_list, reveal=self.reveal_in_static, title=self.title or None)

    def __repr__(self) -> str:
        right, answered, total = self.score
        return f"Quiz({self.title!r}, {total} questions, {answered} answered, {right} correct)"[:110]
