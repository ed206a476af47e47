"""Question banks (sftviz.quiz) and the Quiz widget's Python side."""

import json
import re
from pathlib import Path

import pytest

from sftviz.quiz import Bank, list_banks, load_bank, parse_bank, parse_question

SEED_DIR = Path("/work/shared/seed")
HOSTILE = "<img src=x onerror=alert(1)> </script> \"q\" & 'a'"


def mc(**kw):
    q = {
        "id": "q1",
        "type": "multiple_choice",
        "prompt": "Which?",
        "choices": ["a", "b", "c"],
        "answer": "B",
        "explanation": "Because.",
    }
    q.update(kw)
    return q


# --------------------------------------------------------------------------------------------
# the bundled banks
# --------------------------------------------------------------------------------------------


def test_bundled_banks_load_and_have_unique_ids():
    banks = list_banks()
    assert {"sft-foundations", "sft-debugging"} <= set(banks)
    assert "(invalid bank)" not in banks.values()
    everything = load_bank("all")
    ids = [q.id for q in everything]
    assert len(ids) == len(set(ids)) >= 20
    for q in everything:
        assert q.explanation and q.prompt
        if q.type == "multiple_choice":
            assert len(q.choices) >= 3
            assert all(c.why for i, c in enumerate(q.choices) if i != q.answer), f"{q.id}: every wrong choice says why"


def test_answers_are_not_always_the_same_letter():
    for name in ("sft-foundations", "sft-debugging"):
        answers = [q.answer for q in load_bank(name) if q.type == "multiple_choice"]
        assert len(set(answers)) >= 3, name
        tf = [q.answer for q in load_bank(name) if q.type == "true_false"]
        assert tf


def test_banks_cover_the_seed_questions_and_the_classic_bugs():
    ids = {q.id for q in load_bank("all")}
    seed_ids = {
        "joint-far-below-marginal",
        "joint-above-marginal",
        "specialising-a-pretrained-model",
        "not-from-scratch",
        "why-mask-the-prompt",
        "unmasked-is-joint",
        "never-stops",
        "what-masking-changes",
    }
    assert seed_ids <= ids
    topics = set(load_bank("all").topics())
    assert {"shift", "eos-and-padding", "masking", "reductions", "log-probabilities"} <= topics
    # the joint above the marginal is impossible: the answer must be False
    q = {q.id: q for q in load_bank("all")}["joint-above-marginal"]
    assert q.type == "true_false" and q.answer_text == "False"


def test_banks_do_not_copy_the_seed_text():
    files = sorted(SEED_DIR.glob("*")) if SEED_DIR.is_dir() else []
    if not files:
        pytest.skip("the seed text is not on this machine")
    seed = " ".join(f.read_text(encoding="utf-8", errors="replace") for f in files).lower()
    seed_words = re.findall(r"[a-z0-9]+", seed)
    grams = {tuple(seed_words[i : i + 8]) for i in range(len(seed_words) - 7)}
    for q in load_bank("all"):
        for text in [q.prompt, q.explanation] + [c.text for c in q.choices] + [c.why for c in q.choices]:
            words = re.findall(r"[a-z0-9]+", text.lower())
            for i in range(len(words) - 7):
                assert tuple(words[i : i + 8]) not in grams, f"{q.id} copies the seed: {' '.join(words[i : i + 8])}"


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"prompt": ""}, "'prompt' is missing"),
        ({"explanation": None}, "'explanation' is missing"),
        ({"answer": "E"}, "letter of the right choice"),
        ({"answer": 1}, "letter of the right choice"),
        ({"choices": ["only one"]}, "2 to 8 choices"),
        ({"choices": ["a", "a"]}, "same text"),
        ({"type": "essay"}, "multiple_choice' or 'true_false"),
        ({"id": "has space"}, "letters, digits"),
        ({"hint": "x"}, "unknown field"),
        ({"choices": ["a", {"txt": "b"}]}, "unknown field"),
    ],
)
def test_bad_questions_are_explained(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_question(mc(**change), "bank.yaml, question 1")


def test_true_false_rules():
    q = parse_question({"id": "t", "type": "true_false", "prompt": "p", "answer": False, "explanation": "e"})
    assert [c.text for c in q.choices] == ["True", "False"] and q.answer == 1
    with pytest.raises(ValueError, match="true or false"):
        parse_question({"id": "t", "type": "true_false", "prompt": "p", "answer": "no", "explanation": "e"})
    with pytest.raises(ValueError, match="no 'choices'"):
        parse_question(
            {"id": "t", "type": "true_false", "prompt": "p", "answer": True, "explanation": "e", "choices": ["a", "b"]}
        )


def test_bank_errors_name_the_problem():
    with pytest.raises(ValueError, match="unique"):
        parse_bank({"questions": [mc(), mc()]})
    with pytest.raises(ValueError, match="non-empty list"):
        parse_bank({"questions": []})
    with pytest.raises(ValueError, match="question 2 \\(q2\\)"):
        parse_bank([mc(), mc(id="q2", answer="Z")], source="mine.yaml")
    with pytest.raises(ValueError, match="No question bank"):
        load_bank("no-such-bank")


def test_grade():
    q = parse_question(mc(choices=["a", {"text": "b"}, {"text": "c", "why": "c is wrong"}]))
    assert q.grade(1)["correct"] is True
    fb = q.grade(2)
    assert fb["correct"] is False and fb["why"] == "c is wrong" and fb["answer_text"] == "B. b"
    with pytest.raises(ValueError, match="3 choices"):
        q.grade(3)
    with pytest.raises(TypeError):
        q.grade("1")
    assert "answer" not in q.public()


def test_load_yaml_and_json_files(tmp_path):
    data = {"title": "Mine", "questions": [mc(), mc(id="q2", answer="A")]}
    (tmp_path / "mine.json").write_text(json.dumps(data))
    (tmp_path / "mine.yaml").write_text(
        "title: Mine\nquestions:\n  - id: q1\n    prompt: Which?\n    choices: [a, b]\n    answer: A\n    explanation: E.\n"
    )
    assert len(load_bank(tmp_path / "mine.json")) == 2
    b = load_bank(str(tmp_path / "mine.yaml"))
    assert b.title == "Mine" and b.questions[0].answer == 0
    (tmp_path / "broken.yaml").write_text("questions: [\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_bank(tmp_path / "broken.yaml")


# --------------------------------------------------------------------------------------------
# the widget
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def quiz():
    from sftviz.widgets import Quiz

    return Quiz("sft-foundations")


def test_quiz_widget_grades_what_the_browser_sends(quiz):
    first = quiz.questions[0]
    assert set(first) == {"id", "type", "prompt", "topic", "choices"}  # no answers sent before answering
    assert quiz.feedback == {} and "pick an answer" in quiz.score_text
    seen = []
    quiz.on_answer(lambda qid, fb: seen.append((qid, fb["correct"])))
    q = quiz.question_list[0]
    wrong = (q.answer + 1) % len(q.choices)
    quiz.responses = {q.id: wrong}  # as the JS does: model.set("responses", {...}); save_changes()
    assert quiz.feedback[q.id]["correct"] is False
    assert quiz.feedback[q.id]["explanation"] == q.explanation
    assert quiz.feedback[q.id]["why"] == q.choices[wrong].why
    quiz.responses = {q.id: q.answer}
    assert quiz.feedback[q.id]["correct"] is True
    assert seen == [(q.id, False), (q.id, True)]
    assert quiz.score == (1, 1, len(quiz.question_list)) and quiz.score_text.startswith("1 of 1")
    assert repr(quiz) == f"Quiz({quiz.title!r}, {len(quiz.question_list)} questions, 1 answered, 1 correct)"[:110]


def test_quiz_widget_bad_responses_show_an_error_and_keep_answers(quiz):
    q = quiz.question_list[0]
    quiz.answer(q.id, q.answer)
    quiz.responses = {q.id: q.answer, "nope": 0}
    assert "no question 'nope'" in quiz.error
    assert quiz.responses == {q.id: q.answer}
    quiz.responses = {q.id: 99}
    assert "choices" in quiz.error and quiz.responses == {q.id: q.answer}
    with pytest.raises(ValueError):
        quiz.answer(q.id, 42)
    quiz.answer(q.id, q.answer)
    assert quiz.error == ""
    quiz.reset()
    assert quiz.feedback == {}


def test_quiz_callback_errors_are_shown(quiz):
    def broken(qid, fb):
        raise RuntimeError("callback broke")

    quiz.on_answer(broken)
    q = quiz.question_list[0]
    quiz.answer(q.id, q.answer)
    assert "callback broke" in quiz.error and quiz.feedback[q.id]["correct"]


def test_quiz_filters_and_shuffles():
    from sftviz.widgets import Quiz

    a = Quiz("all", topics="shift")
    assert {q.topic for q in a.question_list} == {"shift"}
    ids = ["never-stops", "joint-above-marginal"]
    assert [q.id for q in Quiz("all", ids=ids).question_list] == ids
    s1 = [q.id for q in Quiz("all", shuffle=True, seed=3).question_list]
    s2 = [q.id for q in Quiz("all", shuffle=True, seed=3).question_list]
    assert s1 == s2 and s1 != [q.id for q in Quiz("all").question_list]
    with pytest.raises(ValueError, match="topic"):
        Quiz("all", topics=["astronomy"])
    with pytest.raises(TypeError):
        Quiz(42)


def test_quiz_static_fallback_and_escaping():
    from sftviz.widgets import Quiz

    qz = Quiz(
        [mc(prompt=HOSTILE, choices=[HOSTILE, "b & c"], explanation="</script>")], title=HOSTILE, reveal_in_static=True
    )
    data, _meta = qz._repr_mimebundle_()
    html = re.sub(r"<style>.*?</style>", "", data["text/html"], flags=re.S)
    assert "<img" not in html and "</script>" not in html and "&lt;img" in html and "b &amp; c" in html
    assert "<details>" in html
    assert data["text/plain"] == repr(qz) and "0x" not in data["text/plain"]
    hidden = Quiz([mc()], reveal_in_static=False)
    assert "<details>" not in hidden._repr_mimebundle_()[0]["text/html"]
    assert isinstance(Quiz(Bank(title="B", questions=[parse_question(mc())])).bank, Bank)
