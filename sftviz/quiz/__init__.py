"""Question banks for the course quizzes: data files instructors edit, and a validating loader.

A bank is a YAML (or JSON) file shaped like this::

    title: SFT foundations
    description: optional words shown above the questions
    questions:
      - id: joint-above-marginal          # unique within the bank; letters, digits, - and _
        type: true_false                  # or multiple_choice
        topic: log-probabilities          # optional, for filtering
        prompt: >-
          A model reports log Pr([x, y]) = -3.5 and log Pr(x) = -5.2 ...
        answer: false                     # true_false: true or false
        explanation: >-
          Shown after any answer: why the right answer is right.

      - id: why-mask-the-prompt
        type: multiple_choice
        prompt: What is the loss mask for?
        choices:                          # two to eight; a string, or {text, why}
          - text: It makes the objective log Pr(y | x).
          - text: It saves compute.
            why: Shown when a student picks this choice.
        answer: A                         # multiple_choice: the letter of the right choice
        explanation: ...

Bundled banks live beside this file (``sftviz/quiz/*.yaml``); :func:`list_banks` names them and
:func:`load_bank` loads one by name or from any path. Everything is checked on load, and a mistake in
a bank is a ``ValueError`` that names the file, the question and the field.
"""

from __future__ import annotations

import json
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

BANK_DIR = Path(__file__).resolve().parent
TYPES = ("multiple_choice", "true_false")
LETTERS = "ABCDEFGH"
_ID = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class Choice:
    text: str
    why: str = ""


@dataclass(frozen=True)
class Question:
    """One question. ``answer`` is the index of the right choice (0-based)."""

    id: str
    type: str
    prompt: str
    choices: tuple
    answer: int
    explanation: str
    topic: str = ""

    @property
    def answer_text(self) -> str:
        return (
            f"{LETTERS[self.answer]}. {self.choices[self.answer].text}"
            if self.type == "multiple_choice"
            else self.choices[self.answer].text
        )

    def grade(self, choice: object) -> dict:
        """Feedback for picking choice ``choice`` (an index): correct, the answer, and the explanations."""
        if isinstance(choice, bool) or not isinstance(choice, numbers.Integral):  # numpy integers too
            raise TypeError(f"Question {self.id!r}: a choice is an integer index, got {type(choice).__name__}.")
        choice = int(choice)
        if not 0 <= choice < len(self.choices):
            raise ValueError(f"Question {self.id!r} has {len(self.choices)} choices; got choice {choice}.")
        return {
            "choice": choice,
            "correct": choice == self.answer,
            "answer": self.answer,
            "answer_text": self.answer_text,
            "why": self.choices[choice].why,
            "explanation": self.explanation,
        }

    def public(self) -> dict:
        """What a student's screen needs before answering (no answer, no explanations)."""
        return {
            "id": self.id,
            "type": self.type,
            "prompt": self.prompt,
            "topic": self.topic,
            "choices": [c.text for c in self.choices],
        }


@dataclass
class Bank:
    title: str
    questions: list
    description: str = ""
    source: str = ""
    name: str = field(default="")

    def __len__(self):
        return len(self.questions)

    def __iter__(self):
        return iter(self.questions)

    def topics(self) -> list:
        out = []
        for q in self.questions:
            if q.topic and q.topic not in out:
                out.append(q.topic)
        return out


def _text(value, where, name, required=True):
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValueError(f"{where}: '{name}' is missing or empty.")
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{where}: '{name}' must be text, got {type(value).__name__} ({value!r:.40}).")
    return value.strip()


def parse_question(raw: object, where: str = "question") -> Question:
    """Check one question (a dict as in the bank format) and return a :class:`Question`."""
    if isinstance(raw, Question):
        return raw
    if not isinstance(raw, dict):
        raise ValueError(
            f"{where}: expected a mapping with id, type, prompt, answer, explanation; got {type(raw).__name__}."
        )
    known = {"id", "type", "prompt", "choices", "answer", "explanation", "topic"}
    extra = sorted(set(raw) - known)
    if extra:
        raise ValueError(f"{where}: unknown field(s) {', '.join(extra)}; a question has {', '.join(sorted(known))}.")
    qid = raw.get("id")
    if isinstance(qid, (int, float)) and not isinstance(qid, bool):
        qid = str(qid)
    qid = _text(qid, where, "id")
    if not _ID.match(qid):
        raise ValueError(f"{where}: id {qid!r} may use only letters, digits, '-' and '_'.")
    where = f"{where} ({qid})"
    qtype = raw.get("type", "multiple_choice")
    if qtype not in TYPES:
        raise ValueError(f"{where}: type must be 'multiple_choice' or 'true_false', got {qtype!r}.")
    prompt = _text(raw.get("prompt"), where, "prompt")
    explanation = _text(raw.get("explanation"), where, "explanation")
    topic = _text(raw.get("topic"), where, "topic", required=False)
    answer = raw.get("answer")
    if qtype == "true_false":
        if raw.get("choices") is not None:
            raise ValueError(f"{where}: a true_false question has no 'choices' (they are True and False).")
        if not isinstance(answer, bool):
            raise ValueError(f"{where}: a true_false answer must be true or false (YAML booleans), got {answer!r}.")
        choices = (Choice("True"), Choice("False"))
        index = 0 if answer else 1
    else:
        raw_choices = raw.get("choices")
        if not isinstance(raw_choices, list) or not 2 <= len(raw_choices) <= len(LETTERS):
            raise ValueError(f"{where}: 'choices' must be a list of 2 to {len(LETTERS)} choices.")
        choices = []
        for j, c in enumerate(raw_choices):
            cw = f"{where}, choice {LETTERS[j]}"
            if isinstance(c, str):
                choices.append(Choice(_text(c, cw, "text")))
            elif isinstance(c, dict):
                bad = sorted(set(c) - {"text", "why"})
                if bad:
                    raise ValueError(
                        f"{cw}: unknown field(s) {', '.join(bad)}; a choice has 'text' and optional 'why'."
                    )
                choices.append(Choice(_text(c.get("text"), cw, "text"), _text(c.get("why"), cw, "why", required=False)))
            else:
                raise ValueError(f"{cw}: a choice is a string or a mapping with 'text' (and optional 'why').")
        choices = tuple(choices)
        if len({c.text for c in choices}) != len(choices):
            raise ValueError(f"{where}: two choices have the same text.")
        if not isinstance(answer, str) or answer.strip().upper() not in LETTERS[: len(choices)]:
            raise ValueError(
                f"{where}: 'answer' must be the letter of the right choice (A to {LETTERS[len(choices) - 1]}), got {answer!r}."
            )
        index = LETTERS.index(answer.strip().upper())
    return Question(qid, qtype, prompt, tuple(choices), index, explanation, topic)


def parse_bank(data: object, source: str = "bank") -> Bank:
    """Check a whole bank (the parsed YAML/JSON: a mapping with 'questions', or a bare list)."""
    if isinstance(data, list):
        data = {"questions": data}
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a bank is a mapping with 'title' and 'questions' (or a list of questions).")
    extra = sorted(set(data) - {"title", "description", "questions"})
    if extra:
        raise ValueError(f"{source}: unknown top-level field(s) {', '.join(extra)}; use title, description, questions.")
    raw = data.get("questions")
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{source}: 'questions' must be a non-empty list.")
    questions = [parse_question(q, f"{source}, question {i + 1}") for i, q in enumerate(raw)]
    seen = set()
    for q in questions:
        if q.id in seen:
            raise ValueError(f"{source}: two questions have the id {q.id!r}; ids must be unique.")
        seen.add(q.id)
    title = _text(data.get("title"), source, "title", required=False) or "Quiz"
    return Bank(
        title=title,
        questions=questions,
        description=_text(data.get("description"), source, "description", required=False),
        source=source,
    )


def list_banks() -> dict:
    """The bundled banks: name -> title."""
    out = {}
    for p in sorted(BANK_DIR.glob("*.yaml")):
        try:
            out[p.stem] = load_bank(p).title
        except ValueError:
            out[p.stem] = "(invalid bank)"
    return out


def _read(path: Path):
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err.msg}, line {err.lineno}).") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err}).") from None


def load_bank(name_or_path: str | os.PathLike = "sft-foundations") -> Bank:
    """Load a bundled bank by name (see :func:`list_banks`) or a bank file (``.yaml``, ``.yml``, ``.json``).

    ``"all"`` loads every bundled bank as one.
    """
    if isinstance(name_or_path, str) and name_or_path == "all":
        banks = [load_bank(n) for n in sorted(p.stem for p in BANK_DIR.glob("*.yaml"))]
        questions = [q for b in banks for q in b.questions]
        if len({q.id for q in questions}) != len(questions):
            raise ValueError("Two bundled banks share a question id.")
        return Bank(title="All SFT questions", questions=questions, source="all", name="all")
    if not isinstance(name_or_path, (str, Path)):
        raise TypeError(f"Pass a bank name or a path to a .yaml/.json file; got {type(name_or_path).__name__}.")
    path = Path(name_or_path)
    if isinstance(name_or_path, str) and not path.suffix and (BANK_DIR / f"{name_or_path}.yaml").is_file():
        path = BANK_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(
            f"No question bank {str(name_or_path)!r}: it is neither a bundled bank "
            f"({', '.join(sorted(p.stem for p in BANK_DIR.glob('*.yaml')))}) nor an existing file."
        )
    bank = parse_bank(_read(path), source=str(path.name))
    bank.name = path.stem
    return bank


def as_questions(obj: object) -> Bank:
    """Turn what a user passes to ``Quiz`` into a :class:`Bank`: a bank name or path, a Bank, a list
    of questions (dicts or :class:`Question`), or a mapping in the bank format."""
    if isinstance(obj, Bank):
        return obj
    if isinstance(obj, (str, Path)):
        return load_bank(obj)
    if isinstance(obj, Question):
        return Bank(title="Quiz", questions=[obj])
    if isinstance(obj, (list, tuple)):
        if obj and all(isinstance(q, Question) for q in obj):
            ids = [q.id for q in obj]
            if len(set(ids)) != len(ids):
                raise ValueError("Two questions have the same id; ids must be unique.")
            return Bank(title="Quiz", questions=list(obj))
        return parse_bank(list(obj), source="questions")
    if isinstance(obj, dict):
        return parse_bank(obj, source="questions")
    raise TypeError(
        f"Quiz needs a bank name (e.g. 'sft-foundations'), a path to a .yaml/.json bank, or a list of questions; got {type(obj).__name__}."
    )


__all__ = ["Bank", "Choice", "Question", "as_questions", "list_banks", "load_bank", "parse_bank", "parse_question"]
