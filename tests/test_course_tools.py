"""sftviz.exercises checks and the student-version command."""

import subprocess
import sys

import nbformat
import pytest

import sftviz as sv
from sftviz import exercises
from sftviz.course import strip_solutions, student_version

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


def test_check_sums(rep):
    assert exercises.check_joint_from_tokens(sum(r.logprob for r in rep.rows[1:]), rep)
    assert exercises.check_marginal_from_tokens(sum(r.logprob for r in rep.rows if r.segment == "prompt"), rep)
    assert not exercises.check_marginal_from_tokens(rep.joint, rep)


def test_check_labels_explains_the_first_mistake(gpt2_tok):
    ex = sv.build_example(gpt2_tok, prompt=P, completion=C)
    assert exercises.check_labels(list(ex.labels), ex)
    no_eos = list(ex.labels)
    no_eos[-1] = -100
    fb = exercises.check_labels(no_eos, ex)
    assert not fb and "never learns to stop" in fb.message
    shifted = ex.labels[1:] + [-100]
    assert "one per input token" not in exercises.check_labels(shifted, ex).message
    assert "one per input token" in exercises.check_labels(ex.labels[1:], ex).message


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
        assert n >= 1, f"{path.name} has no exercise with a solution"
        assert all("### BEGIN SOLUTION" not in c.source for c in student.cells)
