"""The diagnosis exercise's evidence: measured from a run's record, the same way for every run."""

from pathlib import Path

import pytest

import sftviz as sv
from sftviz import exercises
from sftviz.train.records import EvalRecord, StepRecord
from sftviz.train.runs import Run

ROW = {"prompt": "Question: How much is the lamp?\nAnswer:", "completion": " 12 dollars."}


def _run(fault=None, loss=0.1, completion=0.1, prompt=5.0, em=0.8, stop=1.0, length=1.0):
    history = [StepRecord(step=k, loss=loss, completion_nll=completion, prompt_nll=prompt) for k in range(1, 21)]
    run = Run(config={"masking": "completion", "fault": "hidden" if fault else None}, history=history)
    run.evals = [EvalRecord(step=20, exact_match=em, stop_rate=stop, length_ratio=length)]
    run.hidden_fault = fault
    return run


def test_evidence_of_a_healthy_run(gpt2_tok_padded):
    e = exercises.evidence(_run(), gpt2_tok_padded, ROW)
    assert e["objective_gap"] == 0 and e["label_changes"] == {} and not e["shifted"]
    assert e["completion_nll_end"] == pytest.approx(0.1) and e["exact_match"] == 0.8


@pytest.mark.parametrize(
    "fault, changes, shifted",
    [("eos_masked", {"eos": 1}, False), ("shifted_labels", None, True), ("accum_mean_of_means", {}, False)],
)
def test_evidence_reads_the_labels_each_bug_builds(gpt2_tok_padded, fault, changes, shifted):
    e = exercises.evidence(_run(fault), gpt2_tok_padded, ROW)
    if changes is not None:
        assert e["label_changes"] == changes
    assert e["shifted"] is shifted


def test_prompt_trained_changes_prompt_and_completion_labels(gpt2_tok_padded):
    e = exercises.evidence(_run("prompt_trained"), gpt2_tok_padded, ROW)
    assert e["label_changes"]["prompt"] > 0 and e["label_changes"]["completion"] > 0


def test_clues_compare_with_the_healthy_run(gpt2_tok_padded):
    lines = exercises.clues(_run("eos_masked", loss=0.05, completion=1.5, length=2.44), _run(), gpt2_tok_padded, ROW)
    assert lines[0] == "labels: 1 eos position(s) differ from the correct completion-only labels"
    assert "96.7% apart on average, 0.03 times it (healthy: 0.0%)" in lines[1]
    assert "1.50 nats (healthy: 0.10)" in lines[2]
    assert lines[3] == (
        "answers: 80% exact, 100% end with an EOS (healthy: 80% and 100%); 2.4 times as long as the reference "
        "answers (healthy: 1.0 times)"
    )


def test_confirm_hallmarks_passes_and_fails_by_the_numbers(gpt2_tok_padded):
    healthy = _run()
    good = {"A": _run("eos_masked", completion=1.5), "B": _run("accum_mean_of_means", loss=0.11)}
    lines = exercises.confirm_hallmarks(healthy, good, gpt2_tok_padded, ROW)
    assert lines == ["run A: the hallmark of its bug shows", "run B: the hallmark of its bug shows"]
    assert "eos" not in " ".join(lines)  # the lines do not name the bug
    with pytest.raises(AssertionError, match="run B does not show"):
        exercises.confirm_hallmarks(healthy, {"B": _run("accum_mean_of_means")}, gpt2_tok_padded, ROW)
    # strict=False (notebook 5): the same run is named, with what to change, and nothing stops
    (line,) = exercises.confirm_hallmarks(
        healthy, {"B": _run("accum_mean_of_means")}, gpt2_tok_padded, ROW, strict=False
    )
    assert line.startswith("run B: the hallmark of its bug does NOT show") and "raise STEPS" in line
    assert "accum" not in line
    with pytest.raises(AssertionError, match="healthy run"):
        exercises.confirm_hallmarks(_run(loss=0.2), good, gpt2_tok_padded, ROW)
    other = exercises.confirm_hallmarks(healthy, {"C": _run("per_sequence_mean")}, gpt2_tok_padded, ROW)
    assert other == ["run C: no hallmark is defined for its bug; not checked"]


def test_evidence_needs_a_history(gpt2_tok_padded):
    with pytest.raises(ValueError, match="training history"):
        exercises.evidence(Run(config={}), gpt2_tok_padded, ROW)


def test_mystery_runs_hide_the_bug(tiny_model, gpt2_tok_padded, capsys):
    rows = [ROW] * 8
    healthy, runs = exercises.mystery_runs(
        tiny_model, gpt2_tok_padded, rows, ["eos_masked", "accum_mean_of_means"], steps=2, batch_size=2, grad_accum=2
    )
    shown = capsys.readouterr().err  # one progress bar over the three runs, naming no bug
    assert "mystery runs" in shown and "3/3" in shown
    assert "eos_masked" not in shown and "accum" not in shown
    assert list(runs) == ["A", "B"] and all(r.config["fault"] == "hidden" for r in runs.values())
    assert sorted(r.hidden_fault for r in runs.values()) == ["accum_mean_of_means", "eos_masked"]
    assert healthy.config["fault"] is None and isinstance(healthy, sv.Run)


def test_check_diagnoses_reads_a_dict_or_a_list_and_never_crashes():
    a, b = _run("eos_masked"), _run("shifted_labels")
    runs = {"A": a, "B": b}
    assert all(exercises.check_diagnoses({"A": "eos_masked", "B": "shifted_labels"}, runs))
    assert all(exercises.check_diagnoses(["eos_masked", "shifted_labels"], runs))
    partial = exercises.check_diagnoses({"A": "eos_masked"}, runs)
    assert partial[0] and not partial[1].answered
    for answer in (["eos_masked"], "eos_masked", 3, None):
        fbs = exercises.check_diagnoses(answer, runs)
        assert len(fbs) == 2 and not any(fbs) and "dict from run letter" in fbs[0].message
    with pytest.raises(TypeError, match="mystery runs"):
        exercises.check_diagnoses({}, [])


def test_check_from_curves_quotes_the_curves_and_never_names_the_answer():
    healthy = _run(loss=0.05, prompt=8.0, completion=0.05)
    runs = {
        "A": _run("eos_masked", completion=1.4, prompt=8.2),
        "B": _run("prompt_trained", completion=6.0, prompt=0.1),
        "C": _run("accum_mean_of_means", loss=0.06, completion=0.05, prompt=8.1),
    }
    right = exercises.check_from_curves({"prompt_trained": "B", "accum_mean_of_means": "c "}, runs, healthy)
    assert all(right) and len(right) == 2
    assert (
        "run B ends with prompt NLL 0.10 and completion NLL 6.00 nats (last 10 steps), and its objective is 98.3% "
        "off the completion NLL on average (healthy run: 8.00, 0.05 and 0.0%)" in right[0].message
    )
    assert "objective is 20.0% off" in right[1].message
    wrong = exercises.check_from_curves({"prompt_trained": "A", "accum_mean_of_means": "B"}, runs, healthy)
    assert not any(wrong) and all(f.answered for f in wrong)
    assert "run A ends with prompt NLL 8.20" in wrong[0].message and "falls far below" in wrong[0].message
    assert "run B" in wrong[1].message and "run C" not in wrong[1].message  # the right run is not named
    partial = exercises.check_from_curves({"prompt_trained": "B"}, runs, healthy)
    assert partial[0] and not partial[1].answered
    assert not any(f.answered for f in exercises.check_from_curves(None, runs, healthy))
    for answer in (["B", "C"], "B", 3):
        fbs = exercises.check_from_curves(answer, runs, healthy)
        assert len(fbs) == 2 and not any(fbs) and "dict from bug to run letter" in fbs[0].message
    bad = exercises.check_from_curves({"prompt_trained": "Z", "accum_mean_of_means": 2}, runs, healthy)
    assert "not a run; name one of A, B, C" in bad[0].message and "2 is not a run" in bad[1].message
    # only the bugs the curves give away are asked about
    only_eos = exercises.check_from_curves({}, {"A": runs["A"]}, healthy)
    assert len(only_eos) == 1 and "nothing to check" in only_eos[0].message
    with pytest.raises(TypeError, match="mystery runs"):
        exercises.check_from_curves({}, [], healthy)
    with pytest.raises(ValueError, match="training history"):
        exercises.check_from_curves({}, runs, Run(config={}))


# -- a graded case: built once by the instructor, nothing in the student's kernel knows the bugs -------------

SUSPECTS = ["eos_masked", "shifted_labels", "accum_mean_of_means"]


@pytest.fixture
def case(tiny_model, gpt2_tok_padded, tmp_path):
    answers = exercises.write_case(
        tmp_path / "case", tmp_path / "key.json", tiny_model, gpt2_tok_padded, [ROW] * 8, SUSPECTS, ROW,
        key="term-secret", steps=2, batch_size=2, grad_accum=2, progress=False, check_hallmarks=False,
    )  # fmt: skip
    return tmp_path, answers


def test_a_graded_case_holds_no_bug_names_and_its_checks_only_record(case, tiny_model, gpt2_tok_padded):
    import json

    tmp_path, answers = case
    assert sorted(answers.values()) == sorted(SUSPECTS)
    assert json.loads((tmp_path / "key.json").read_text())["answers"] == answers
    for path in (tmp_path / "case").glob("*.json"):
        if path.name != "case.json":
            assert not any(f in path.read_text() for f in SUSPECTS), path
    healthy, runs = exercises.mystery_runs(
        tiny_model, gpt2_tok_padded, [ROW] * 8, SUSPECTS, case=tmp_path / "case", steps=2
    )
    assert list(runs) == list(answers) and all(r.hidden_fault is None for r in runs.values())
    assert exercises.answer_key(runs) is None
    recorded = exercises.check_diagnoses(answers, runs)
    assert [f.verdict for f in recorded] == ["Recorded"] * 3 and exercises.points(recorded) == 0
    assert exercises.points(exercises.check_diagnoses(answers, runs, key=answers)) == 3
    wrong = dict(zip(answers, reversed(list(answers.values()))))
    assert exercises.points(exercises.check_diagnoses(wrong, runs, key=answers)) == 1  # the middle one stays
    curves = exercises.check_from_curves({"accum_mean_of_means": "A"}, runs, healthy)
    assert [f.verdict for f in curves] == ["Recorded"]
    assert exercises.confirm_hallmarks(healthy, runs, gpt2_tok_padded, ROW)[0].endswith(
        "checked when the case was built"
    )


def test_a_case_keeps_each_pipelines_labels_for_its_probe_row(case, tiny_model, gpt2_tok_padded):
    tmp_path, answers = case
    _, runs = exercises.load_case(tmp_path / "case")
    letter = next(k for k, f in answers.items() if f == "eos_masked")
    labels = exercises.mystery_labels(gpt2_tok_padded, ROW, runs[letter]).labels
    assert labels[-1] == -100 and any(v != -100 for v in labels)
    e = exercises.evidence(runs[letter], gpt2_tok_padded, ROW)
    assert e["label_changes"] == {"eos": 1}
    with pytest.raises(ValueError, match="one training row only"):
        exercises.mystery_labels(gpt2_tok_padded, {"prompt": "Hi", "completion": " there."}, runs[letter])


def test_a_case_is_refused_where_it_would_leak_or_does_not_match(case, tiny_model, gpt2_tok_padded, tmp_path):
    with pytest.raises(ValueError, match="outside the case folder"):
        exercises.write_case(
            tmp_path / "c2", tmp_path / "c2" / "key.json", tiny_model, gpt2_tok_padded, [ROW] * 8, SUSPECTS, ROW,
            key="k", steps=1, batch_size=2, progress=False, check_hallmarks=False,
        )  # fmt: skip
    with pytest.raises(ValueError, match="built with the suspects"):
        exercises.mystery_runs(
            tiny_model, gpt2_tok_padded, [ROW] * 8, ["eos_masked", "prompt_trained"], case=case[0] / "case"
        )


def test_grade_with_key_writes_hidden_tests_that_the_student_version_drops(tmp_path):
    import nbformat

    from sftviz.course import grade_with_key, student_version

    path = tmp_path / "05.ipynb"
    src = Path(__file__).resolve().parents[1] / "notebooks" / "05_diagnose_a_faulty_finetune.ipynb"
    path.write_bytes(src.read_bytes())
    key = {"A": "shifted_labels", "B": "prompt_trained", "C": "eos_masked", "D": "accum_mean_of_means"}
    grade_with_key(path, key)
    nb = nbformat.read(path, as_version=4)
    text = "\n".join(c.source for c in nb.cells)
    assert text.count("### BEGIN HIDDEN TESTS") == 2 and f"key={key!r}" in text and f"diagnosis = {key!r}" in text
    student, _ = student_version(nb)
    text = "\n".join(c.source for c in student.cells)
    assert "HIDDEN" not in text and "shifted_labels'" not in text
