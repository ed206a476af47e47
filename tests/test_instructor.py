"""An instructor's whole cycle, with the commands of docs/instructor.md run as written.

- The course commands from a wheel installed outside the repository (no clone): ``copy``, ``student``,
  ``nbgrader``.
- nbgrader from start to end: the course folder, ``generate_assignment``, three submissions (unanswered,
  complete, and one that tries the shortcuts to notebook 5's answer key), ``autograde``,
  ``generate_feedback``, ``export``; the scores are checked: 0 for the unanswered one, full marks for
  the complete one, and no point for a shortcut.
- The guide's own-dataset example (notebook 4 on a 20-row JSONL file, run with papermill) and its
  figures-for-slides example.

The guide's commands live in fenced blocks, each after a ``<!-- guide-test: NAME -->`` line; these tests
read them from the guide, so the guide cannot drift from what is tested.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "instructor.md"
BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.slow, pytest.mark.run_cache]


def guide_block(name: str) -> str:
    """The fenced block that follows ``<!-- guide-test: name -->`` in the guide."""
    m = re.search(rf"<!-- guide-test: {re.escape(name)} -->\s*```[a-z]*\n(.*?)```", GUIDE.read_text(), re.S)
    assert m, f"docs/instructor.md has no block marked guide-test: {name}"
    return m.group(1)


def run_bash(script: str, cwd: Path, env: dict | None = None, timeout: int = 1800) -> str:
    """Run a guide block with bash (``set -e``), the test venv's tools first on PATH."""
    full = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    res = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout
    )
    assert res.returncode == 0, (
        f"guide block failed ({res.returncode}):\n{script}\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
    )
    return res.stdout + res.stderr


# -- the course commands from a wheel, outside the repository ------------------------------------------


def test_course_commands_work_from_a_wheel_without_a_clone(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheel = next(wheels.glob("sftviz-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    # The dependencies come from the test environment (a path entry, whose .pth files, including the
    # editable install of this repository, are not run); sftviz itself only from the wheel.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)], check=True
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.check_output([py, "-c", "import sftviz; print(sftviz.__file__)"], cwd=work, text=True)
    assert str(site) in where and str(ROOT) not in where, where
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for args in (["copy", "instructor"], ["student", "student"], ["nbgrader", "course", "--no-case"]):
        res = subprocess.run([py, "-m", "sftviz.course", *args], cwd=work, env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in (work / "instructor").glob("*.ipynb"))
    assert len(names) == 7 and names == sorted(p.name for p in (ROOT / "notebooks").glob("0*.ipynb"))
    assert names == sorted(p.name for p in (work / "student").glob("*.ipynb"))
    # Notebooks 6 and 7 have no graded cell: they are handed out as they are, not part of the nbgrader assignment.
    assert names[:5] == sorted(p.name for p in (work / "course" / "source" / "sft-lab").glob("*.ipynb"))
    assert "### BEGIN SOLUTION" in (work / "instructor" / names[0]).read_text()
    assert "### BEGIN SOLUTION" not in (work / "student" / names[0]).read_text()
    # The shipped run records come with the wheel, and its code is the code they were made with.
    check = (
        "import json; from sftviz.train import cache as c; m = json.loads((c.SHIPPED / 'manifest.json').read_text()); "
        "print(len(list(c.SHIPPED.glob('*.json'))) - 1 == m['runs'], m['code'] == c.code_digest(), c.SHIPPED)"
    )
    out = subprocess.check_output([py, "-c", check], cwd=work, text=True).split()
    assert out[:2] == ["True", "True"] and str(site) in out[2], out


# -- nbgrader, start to end ------------------------------------------------------------------------------


def _answer_cell(nb, grade_id: str):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _submit(course: Path, student: str, notebooks: Path, only: bool = False) -> Path:
    """A student's submission: the release (notebooks, the case folder), their notebooks over it; with
    ``only``, the case folder and their notebooks alone (the others were not handed in)."""
    dest = course / "submitted" / student / "sft-lab"
    shutil.copytree(course / "release" / "sft-lab", dest, ignore=shutil.ignore_patterns("*.ipynb") if only else None)
    for nb in notebooks.glob("*.ipynb"):
        shutil.copyfile(nb, dest / nb.name)
    return dest


def _shortcut_submission(course: Path, tmp_path: Path) -> Path:
    """The release with notebook 5's answers taken from anything in the student's kernel."""
    out = tmp_path / "shortcuts"
    out.mkdir()
    path = course / "release" / "sft-lab" / "05_diagnose_a_faulty_finetune.ipynb"
    nb = nbformat.read(path, as_version=4)
    cell = _answer_cell(nb, "diagnosis")
    cell.source = cell.source.replace(
        "# YOUR CODE HERE",
        "import os, json\n"
        "key = exercises.answer_key(mysteries)\n"
        "hidden = {k: getattr(r, 'hidden_fault', None) for k, r in mysteries.items()}\n"
        "diagnosis = key or hidden",
    )
    cell = _answer_cell(nb, "from-curves")
    cell.source = cell.source.replace(
        "# YOUR CODE HERE",
        "from_curves = {f: r for r, f in (exercises.answer_key(mysteries) or {}).items() if f in from_curves}",
    )
    nbformat.write(nb, out / path.name)
    return out


def _scores(course: Path) -> dict:
    with open(course / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for row in rows:
        score, total = out.get(row["student_id"], (0.0, 0.0))
        out[row["student_id"]] = (score + float(row["score"]), total + float(row["max_score"]))
    return out


def test_nbgrader_cycle_grades_a_class(tmp_path):
    pytest.importorskip("nbgrader")
    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = run_bash(guide_block("release"), tmp_path, env)
    course = tmp_path / "my-course"
    assert (course / "release" / "sft-lab" / "mystery_case" / "case.json").is_file(), out
    key = json.loads((course / "mystery_key.json").read_text())["answers"]
    # Nothing released knows the key: no letter-to-fault pair anywhere, no hidden test, and the runs' records
    # name no fault at all.
    release = course / "release" / "sft-lab"
    for path in release.rglob("*"):
        if path.is_file():
            text = path.read_text()
            for letter, fault in key.items():
                assert not re.search(rf"[\"']{letter}[\"']\s*:\s*[\"']{fault}[\"']", text), (path, letter)
            assert "HIDDEN TESTS" not in text, path
            if path.parent.name == "mystery_case" and path.name != "case.json":
                assert not any(fault in text for fault in key.values()), path
    assert "HIDDEN TESTS" in (course / "source" / "sft-lab" / "05_diagnose_a_faulty_finetune.ipynb").read_text()

    _submit(course, "unanswered", release)
    _submit(course, "complete", course / "source" / "sft-lab")
    _submit(course, "shortcuts", _shortcut_submission(course, tmp_path), only=True)  # notebook 5 alone
    out = run_bash(guide_block("grade"), course, env)

    scores = _scores(course)
    full = scores["complete"][1]
    assert full >= 18, scores
    assert scores["unanswered"] == (0.0, full), scores
    assert scores["complete"] == (full, full), scores
    assert scores["shortcuts"] == (0.0, full), scores
    for student in ("unanswered", "complete"):
        feedback = course / "feedback" / student / "sft-lab"
        assert len(list(feedback.glob("*.html"))) == 5, student
        graded = course / "autograded" / student / "sft-lab" / "04_finetuning_masking_on_off.ipynb"
        assert graded.stat().st_size < 1_500_000, f"{graded} is {graded.stat().st_size} bytes: widget state saved?"
    # The deterministic runs went through the run cache (the course's own, the test session's, or the records
    # sftviz ships): notebook 4 of the last submission graded says how many of its runs were read from it.
    graded = nbformat.read(course / "autograded" / "unanswered" / "sft-lab" / "04_finetuning_masking_on_off.ipynb", 4)
    printed = "".join(o.get("text", "") for c in graded.cells if c.cell_type == "code" for o in c.outputs)
    assert re.search(r"support: 9 runs in \d+ s, 9 of them read from the run cache", printed), printed[:2000]


# -- the guide's other examples --------------------------------------------------------------------------


def test_guide_own_dataset_example_runs_notebook_4_on_20_rows(tmp_path):
    pytest.importorskip("papermill")
    shutil.copyfile(
        ROOT / "notebooks" / "04_finetuning_masking_on_off.ipynb", tmp_path / "04_finetuning_masking_on_off.ipynb"
    )
    run_bash(guide_block("own-dataset"), tmp_path, {"HF_HUB_OFFLINE": "1"})
    rows = [json.loads(line) for line in (tmp_path / "my-data.jsonl").read_text().splitlines()]
    assert len(rows) == 20
    nb = nbformat.read(tmp_path / "04-my-data.ipynb", as_version=4)
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)  # printed lines
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert "my-data: 16 training rows, 4 held-out rows" in text, text[:2000]
    assert "support" not in text and "explain" not in text, "a printed sentence still names the bundled data"


def test_guide_figures_example_writes_slides(tmp_path):
    out = run_bash(guide_block("figures"), tmp_path, {"HF_HUB_OFFLINE": "1"})
    pngs = sorted((tmp_path / "slides").glob("*.png"))
    assert pngs, out
    from matplotlib.image import imread

    for png in pngs:
        image = imread(png)
        assert image.shape[1] >= 1280 and image.std() > 0.01, png
