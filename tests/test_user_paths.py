"""The paths users take that the makers don't: student versions and nbgrader, jupytext pairing, the
repository's address in every notebook, ipywidgets 7 (Colab's), and restarting both commands offline.

The student versions are executed top to bottom in JupyterLab by tests/browser/test_course_browser.py;
the notebooks under another CPU's kernels and in the course environment by scripts/test.sh.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
import tomllib

from sftviz import exercises
from sftviz.course import CODE_STUB, is_graded, student_version

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _need(env: str, what: str) -> Path:
    """The folder named by ``env`` (set by scripts/test.sh); skip without it, but fail under CI."""
    value = os.environ.get(env)
    if value and Path(value).exists():
        return Path(value)
    if IN_CI:
        pytest.fail(f"{env} is not set to an existing folder: run the suite with `bash scripts/test.sh` ({what}).")
    pytest.skip(f"{env} not set: `bash scripts/test.sh` sets it up ({what})")


def _solution_lines(nb) -> set:
    """The lines between the solution markers of every cell of ``nb``."""
    lines = set()
    for cell in nb.cells:
        for block in re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", cell.source, re.S):
            lines.update(line.strip() for line in block.splitlines() if line.strip())
    return lines


# -- student versions and nbgrader ----------------------------------------------------------------


def test_exercise_checks_say_not_answered_yet():
    fb = exercises.check_diagnosis(None, None)
    assert not fb and not fb.answered and repr(fb).startswith("Not answered yet:")
    assert 'data-sftviz-answered="false"' in fb._repr_html_()
    assert exercises.points(fb) == 0.0
    assert exercises.points([exercises.Feedback(True, "a"), exercises.Feedback(False, "b")]) == 1.0
    with pytest.raises(TypeError, match="Feedback"):
        exercises.points(1.0)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_student_version_leaves_no_answer_and_no_gap(path):
    nb = nbformat.read(path, as_version=4)
    student, n = student_version(nb)
    solutions = _solution_lines(nb)
    if not is_graded(path):  # notebook 6: no exercise; notebook 7: exercises that check themselves, no points
        assert (n == 0) == (path.name[:2] == "06")
        for cell in student.cells:
            assert "### BEGIN SOLUTION" not in cell.source
            assert not any(line.strip() in solutions for line in cell.source.splitlines() if line.strip())
            if CODE_STUB in cell.source:  # the answer is None above the stub, so the next cells run
                assert re.search(r"^\w+ = None", cell.source.split(CODE_STUB)[0], re.M), cell.source
        return
    assert n >= 1
    grade_ids = []
    for cell in student.cells:
        assert "### BEGIN SOLUTION" not in cell.source
        assert not any(line.strip() in solutions for line in cell.source.splitlines() if line.strip())
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
        meta = cell.metadata.get("nbgrader")
        if meta:
            grade_ids.append(meta["grade_id"])
            if meta["solution"]:
                # The answer variable is set to None above the solution, so nothing after it breaks.
                before = cell.source.split(CODE_STUB)[0]
                assert re.search(r"^\w+ = (None|\{.*: None .*\})", before, re.M), cell.source
                assert "raise" not in cell.source
            if meta["grade"]:
                assert meta["points"] >= 1 and "exercises.points(" in cell.source
    assert len(grade_ids) == len(set(grade_ids)) and len(grade_ids) >= 2 * n, grade_ids
    # Every solution cell is an nbgrader solution cell, and every one is followed by its points.
    for cell in nb.cells:
        if "### BEGIN SOLUTION" in cell.source:
            assert cell.metadata.get("nbgrader", {}).get("solution") is True


def test_diagnosis_answer_key_comes_from_the_parameter():
    suspects = ("eos_masked", "prompt_trained", "shifted_labels")
    keys = {k: exercises.mystery_assignment(suspects, k) for k in (0, 1, 2, "2026-fall", "2027-spring")}
    assert all(sorted(a.values()) == sorted(suspects) and list(a) == ["A", "B", "C"] for a in keys.values())
    assert len({tuple(a.values()) for a in keys.values()}) > 1, "the key should change the assignment"
    assert exercises.mystery_assignment(suspects, "2026-fall") == keys["2026-fall"]
    with pytest.raises(TypeError, match="key"):
        exercises.mystery_assignment(suspects, 1.5)
    nb = nbformat.read(ROOT / "notebooks" / "05_diagnose_a_faulty_finetune.ipynb", as_version=4)
    student, _ = student_version(nb)
    source = "\n".join(c.source for c in student.cells)
    assert "MYSTERY_KEY" in source and "key=MYSTERY_KEY" in source
    assert "mystery_assignment" not in source and "hidden_fault" not in source


def test_nbgrader_release_has_no_solution_and_matches_the_student_version(tmp_path):
    pytest.importorskip("nbgrader")
    course = tmp_path / "course"
    res = subprocess.run(
        # --no-case: notebook 5 as the student version has it (tests/test_instructor.py builds a graded case)
        [
            sys.executable,
            "-m",
            "sftviz.course",
            "nbgrader",
            str(course),
            "--notebooks",
            str(ROOT / "notebooks"),
            "--no-case",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert "nbgrader generate_assignment sft-lab" in res.stdout
    res_setup = res
    assert (course / "nbgrader_config.py").read_text().count(CODE_STUB) == 1
    env = dict(
        os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    )  # nbgrader runs `alembic`
    res = subprocess.run(
        [sys.executable, "-m", "nbgrader", "generate_assignment", "sft-lab", "--force"],
        cwd=course,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    released = sorted((course / "release" / "sft-lab").glob("*.ipynb"))
    graded = [p for p in NOTEBOOKS if is_graded(p)]
    assert [p.name for p in released] == [p.name for p in graded] and len(graded) == 5
    assert "06_on_a_real_model.ipynb has no graded cell" in res_setup.stdout
    for path in graded:
        nb = nbformat.read(path, as_version=4)
        release = nbformat.read(course / "release" / "sft-lab" / path.name, as_version=4)
        text = "\n".join(c.source for c in release.cells)
        assert "BEGIN SOLUTION" not in text and "NotImplementedError" not in text
        assert not any(line in text for line in _solution_lines(nb)), path.name
        # nbgrader's release is the student version that the browser test runs top to bottom.
        student, _ = student_version(nb)
        ours = [c.source.strip() for c in student.cells if c.cell_type == "code"]
        theirs = [c.source.strip() for c in release.cells if c.cell_type == "code"]
        assert theirs == ours, path.name
        assert all(not c.get("outputs") for c in release.cells if c.cell_type == "code")


def test_nbgrader_command_refuses_bad_input(tmp_path):
    from sftviz.course import write_nbgrader_course

    with pytest.raises(ValueError, match="plain folder name"):
        write_nbgrader_course(ROOT / "notebooks", tmp_path, assignment="../up")
    with pytest.raises(ValueError, match="not a folder of notebooks"):
        write_nbgrader_course(tmp_path / "missing", tmp_path)


# -- jupytext pairing and the repository's address --------------------------------------------------


def test_jupytext_sync_finds_every_notebook_in_step_with_its_source(tmp_path):
    pytest.importorskip("jupytext")
    work = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", work, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    before = {p.name: p.read_text() for p in list(work.glob("*.ipynb")) + list((work / "src").glob("*.py"))}
    sources = [str(src) for src in sorted((work / "src").glob("*.py"))]  # one process syncs them all
    res = subprocess.run([sys.executable, "-m", "jupytext", "--sync", *sources], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    for path in list(work.glob("*.ipynb")) + list((work / "src").glob("*.py")):
        if path.suffix == ".py":
            assert path.read_text() == before[path.name], f"{path.name} changed under jupytext --sync"
        else:
            old, new = (nbformat.reads(t, as_version=4) for t in (before[path.name], path.read_text()))
            assert [(c.cell_type, c.source, c.metadata) for c in new.cells] == [
                (c.cell_type, c.source, c.metadata) for c in old.cells
            ], f"{path.name} is not in step with its source"
            assert [c.get("outputs") for c in new.cells] == [c.get("outputs") for c in old.cells]


def test_every_notebook_carries_the_repository_address_from_pyproject():
    repo = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "notebook_links.py"), "--check"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr
    owner_name = repo.removeprefix("https://github.com/")
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert f"colab.research.google.com/github/{owner_name}/blob/main/notebooks/{path.name}" in nb.cells[0].source
        setup = next(c for c in nb.cells if "setup" in c.metadata.get("tags", []))
        assert f'SFTVIZ_SOURCE = "git+{repo}"' in setup.source
    readme = (ROOT / "README.md").read_text()
    assert f"colab.research.google.com/github/{owner_name}/blob/main/notebooks/" in readme
    assert f"mybinder.org/v2/gh/{owner_name}/" in readme
    assert f'pip install "sftviz[course] @ git+{repo}"' in readme  # the install form that works today
    assert f'pip install "sftviz[hf] @ git+{repo}"' in readme


# -- ipywidgets 7 ------------------------------------------------------------------------------------


def test_widgets_python_side_under_ipywidgets_7():
    overlay = _need("SFTVIZ_IPYWIDGETS7", "ipywidgets 7.7 installed beside the venv's ipywidgets 8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(overlay), str(ROOT)]))
    version = subprocess.run(
        [sys.executable, "-c", "import ipywidgets; print(ipywidgets.__version__)"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert version.stdout.startswith("7.7."), version.stdout + version.stderr
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_widgets.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert re.search(r"\d+ passed", res.stdout) and " failed" not in res.stdout


# -- offline restarts ---------------------------------------------------------------------------------


def _offline_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "SFTVIZ_"))}
    env.update(PIP_NO_INDEX="1", **extra)
    return env


def test_test_command_restarts_offline():
    """A second `bash scripts/test.sh` with no package index installs nothing and runs the tests."""
    env = _offline_env(SFTVIZ_VENV=sys.prefix)
    res = subprocess.run(
        ["bash", "scripts/test.sh", "-q", "-p", "no:cacheprovider", "-k", "test_there_are_seven_notebooks"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "nothing to install" in out and re.search(r"\b1 passed", out), out[-4000:]


def test_course_command_restarts_offline(tmp_path):
    """A second `bash scripts/course.sh` with no package index installs nothing and starts JupyterLab."""
    venv = _need("SFTVIZ_COURSE_VENV", "the course environment made by scripts/course.sh")
    # scripts/test.sh makes it in the background, at the same time as this suite runs.
    deadline = time.monotonic() + 600
    while not (venv / ".sftviz-setup-done").exists():
        assert time.monotonic() < deadline, f"{venv} was not set up within 10 minutes"
        time.sleep(2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "sftviz-offline-test"
    dirs = {
        v: tmp_path / v.lower()
        for v in ("JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR", "JUPYTERLAB_WORKSPACES_DIR", "JUPYTERLAB_SETTINGS_DIR")
    }
    for d in dirs.values():
        d.mkdir()
    env = _offline_env(SFTVIZ_VENV=str(venv), **{k: str(v) for k, v in dirs.items()})
    log = tmp_path / "course.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [
                "bash",
                "scripts/course.sh",
                "--no-browser",
                "--ip=127.0.0.1",
                f"--port={port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={token}",
            ],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline, status = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with opener.open(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2) as r:
                    status = json.loads(r.read())
                break
            except OSError:
                time.sleep(0.5)
        out = log.read_text()
        assert status is not None, f"JupyterLab did not answer (exit {proc.poll()}):\n{out[-4000:]}"
        assert "nothing to install" in out, out[-4000:]
        with opener.open(
            f"http://127.0.0.1:{port}/api/contents/01_joint_marginal_conditional.ipynb?content=0&token={token}",
            timeout=5,
        ) as r:
            assert json.loads(r.read())["type"] == "notebook"  # it serves the course's notebooks/
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
