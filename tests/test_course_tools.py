"""sftviz.exercises checks and the student-version command."""

import subprocess
import sys

import nbformat
import pytest
import torch

import sftviz as sv
from sftviz import exercises
from sftviz.course import is_graded, strip_solutions, student_version

P, C = "Question: How much is the lamp?\nAnswer:", " 12 dollars."


@pytest.fixture(scope="module")
def rep(gpt2_tok, tiny_model):
    return sv.score(tiny_model, gpt2_tok, prompt=P, completion=C, top_k=0)


def test_check_conditional(rep):
    assert exercises.check_conditional(rep.joint - rep.marginal, rep)
    wrong = exercises.check_conditional(rep.marginal - rep.joint, rep)
    assert not wrong and "sign is flipped" in repr(wrong)
    unanswered = exercises.check_conditional(None, rep)
    assert (
        not unanswered and repr(unanswered).startswith("Not answered yet:") and "replace the None" in repr(unanswered)
    )
    assert not exercises.check_conditional(..., rep).answered
    assert "should be a number" in repr(exercises.check_conditional("x", rep))
    assert "NaN" in repr(exercises.check_conditional(float("nan"), rep))


@pytest.fixture(scope="module")
def ex(gpt2_tok):
    return sv.build_example(gpt2_tok, prompt=P, completion=C)


def test_check_labels_accepts_the_right_labels_and_a_labelled_bos(ex):
    assert exercises.check_labels(list(ex.labels), ex)
    assert exercises.check_labels(torch.tensor([ex.labels]), ex)  # a batch of one, as a tensor
    bos = [ex.input_ids[0]] + list(ex.labels[1:])
    fb = exercises.check_labels(bos, ex)
    assert fb and "changes nothing" in fb.message


def _typical_wrong_labels(ex):
    ids, labels = list(ex.input_ids), list(ex.labels)
    completion = [t for t, v in enumerate(labels) if v != -100]
    return {
        "full-loss labels": ([-100] + ids[1:], "every token after the BOS is a target"),
        "full-loss labels, BOS too": (ids, "every token is a target"),
        "shifted by hand": (labels[1:] + [-100], "shifted one position to the left"),
        "shifted by hand, one fewer": (labels[1:], "did you shift them"),
        "prompt trained": ([-100] + [ids[t] if t not in completion else -100 for t in range(1, len(ids))], "inverted"),
        "EOS masked": (labels[:-1] + [-100], "never teaches the model to stop"),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "full-loss labels",
        "full-loss labels, BOS too",
        "shifted by hand",
        "shifted by hand, one fewer",
        "prompt trained",
        "EOS masked",
    ],
)
def test_check_labels_names_the_kind_of_mistake(ex, kind):
    answer, words = _typical_wrong_labels(ex)[kind]
    fb = exercises.check_labels(answer, ex)
    assert not fb and fb.answered and words in fb.message, fb.message
    assert not fb.message.startswith("position")  # a kind, not a first mismatch


@pytest.mark.parametrize(
    "answer, words",
    [
        ("-100, 5", "list of integers"),
        ({"a": 1}, "list of integers"),
        (3, "list of integers"),
        ([1.5, 2.0], "integers only"),
        ([[1, 2], [3, 4]], "integers only"),
        ([True, False], "integers only"),
        ([1, 2], "one per input token"),
    ],
)
def test_check_labels_never_crashes_on_wrong_types(ex, answer, words):
    fb = exercises.check_labels(answer, ex)
    assert not fb and words in fb.message


def test_check_labels_one_wrong_token_names_its_position(ex):
    labels = list(ex.labels)
    labels[2] = ex.input_ids[2]  # one prompt token trained
    fb = exercises.check_labels(labels, ex)
    assert not fb and "position 2" in fb.message and "prompt tokens are context" in fb.message


def test_check_masked_loss_names_the_slip(tiny_model, gpt2_tok, ex):
    # the check takes a function (a copied number cannot be checked on other batches): each slip as one
    ids, labels = torch.tensor([ex.input_ids]), torch.tensor([ex.labels])
    with torch.no_grad():
        logits = tiny_model(input_ids=ids).logits
    F = torch.nn.functional

    def right(lg, lb):
        return F.cross_entropy(lg[:, :-1].flatten(0, 1), lb[:, 1:].flatten(), ignore_index=-100)

    def picked(lg, lb):
        keep = lb[:, 1:] != -100
        return -lg.log_softmax(-1)[:, :-1][keep].gather(-1, lb[:, 1:][keep].unsqueeze(-1)).squeeze(-1)

    assert exercises.check_masked_loss(right, logits, labels)
    wrong = {
        "did not shift": lambda lg, lb: F.cross_entropy(lg.flatten(0, 1), lb.flatten(), ignore_index=-100),
        "summed": lambda lg, lb: picked(lg, lb).sum(),
        "masked ones included": lambda lg, lb: picked(lg, lb).sum() / lb[:, 1:].numel(),
        "raw logits": lambda lg, lb: (
            -lg[:, :-1][lb[:, 1:] != -100].gather(-1, lb[:, 1:][lb[:, 1:] != -100].unsqueeze(-1)).mean()
        ),
    }
    for words, fn in wrong.items():
        fb = exercises.check_masked_loss(fn, logits, labels)
        assert not fb and words in fb.message, (words, fb.message)
    assert "sign is flipped" in exercises.check_masked_loss(lambda lg, lb: -right(lg, lb), logits, labels).message
    assert not exercises.check_masked_loss(None, logits, labels).answered
    assert "single number" in exercises.check_masked_loss(lambda lg, lb: lg[0, 0], logits, labels).message


def test_check_diagnosis_never_crashes(tiny_model, gpt2_tok):
    run = sv.Run(config={"fault": "hidden"})
    run.hidden_fault = "eos_masked"
    assert exercises.check_diagnosis("eos_masked", run)
    for answer in (["eos_masked"], {"A": "eos_masked"}, 3):
        fb = exercises.check_diagnosis(answer, run)
        assert not fb and "as a string" in fb.message
    assert "not a known fault" in exercises.check_diagnosis("nope", run).message


def test_check_predicting_position(gpt2_tok):
    ex = sv.build_example(gpt2_tok, prompt=P, completion=C)
    assert exercises.check_predicting_position(ex.n_prompt - 1, ex)
    assert "first completion token itself" in exercises.check_predicting_position(ex.n_prompt, ex).message
    assert "outside the sequence" in exercises.check_predicting_position(999, ex).message
    assert not exercises.check_predicting_position(None, ex).answered
    assert not exercises.check_labels(None, ex).answered


def test_feedback_html_is_escaped():
    html = exercises.Feedback(False, "<img src=x onerror=alert(1)>")._repr_html_()
    assert "<img" not in html and "&lt;img" in html


def test_check_choice():
    assert exercises.check_choice("B", "b", "because")
    assert not exercises.check_choice("A", "b", "because")


NB_SRC = "x = 1\n### BEGIN SOLUTION\nanswer = x + 1\n### END SOLUTION\nprint(answer)\n"


def test_strip_solutions():
    new, n = strip_solutions(NB_SRC)
    assert n == 1 and "answer = x + 1" not in new and new == "x = 1\n# YOUR CODE HERE\nprint(answer)\n"
    assert "raise" not in new  # an unanswered exercise must not stop Run All
    md, n = strip_solutions("Why?\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION\n", "markdown")
    assert n == 1 and "Because" not in md and "YOUR ANSWER HERE" in md
    with pytest.raises(ValueError, match="Unbalanced"):
        strip_solutions("### BEGIN SOLUTION\nx = 1\n")


def test_student_command(tmp_path):
    src = tmp_path / "nbs"
    src.mkdir()
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(NB_SRC)
    cell.outputs = [nbformat.v4.new_output("stream", text="2\n")]
    cell.execution_count = 1
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"), cell]
    nbformat.write(nb, src / "01_demo.ipynb")
    out = tmp_path / "student"
    res = subprocess.run(
        [sys.executable, "-m", "sftviz.course", "student", str(out), "--notebooks", str(src)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert "01_demo.ipynb: 1 solution block(s) removed" in res.stdout
    student = nbformat.read(out / "01_demo.ipynb", as_version=4)
    assert "answer = x + 1" not in student.cells[1].source and student.cells[1].outputs == []
    bad = subprocess.run(
        [sys.executable, "-m", "sftviz.course", "student", str(src), "--notebooks", str(src)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "must differ" in bad.stderr


def test_student_version_of_the_course_notebooks():
    from pathlib import Path

    nbdir = Path(__file__).resolve().parents[1] / "notebooks"
    paths = sorted(nbdir.glob("*.ipynb"))
    if not paths:
        pytest.skip("the course notebooks are not built in this checkout")
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        student, n = student_version(nb)
        # Notebook 6 (the real model) has no exercise; every graded notebook has at least one.
        assert n >= 1 or (path.name.startswith("06") and not is_graded(path)), f"{path.name} has no exercise"
        assert all("### BEGIN SOLUTION" not in c.source for c in student.cells)


def test_notebook_readers_name_a_bad_path(tmp_path):
    from sftviz.course import is_graded, notebook_parameters

    for fn in (is_graded, notebook_parameters):
        with pytest.raises(ValueError, match="is not a file"):
            fn(tmp_path / "missing.ipynb")
        (tmp_path / "broken.ipynb").write_text("{not json")
        with pytest.raises(ValueError, match="not a readable Jupyter notebook"):
            fn(tmp_path / "broken.ipynb")
        with pytest.raises(TypeError, match="notebook file path"):
            fn(3)
