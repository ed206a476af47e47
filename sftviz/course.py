"""Course tools for instructors: the notebooks, student versions, and an nbgrader course folder.

    python -m sftviz.course copy OUTDIR                  the instructor notebooks (with solutions)
    python -m sftviz.course student OUTDIR               student versions (no solutions, no outputs)
    python -m sftviz.course nbgrader COURSE_DIR [--assignment sft-lab] [--mystery-key KEY] [--no-case]

The notebooks ship inside the package (``sftviz.notebooks``), so these work after a plain
``pip install``; ``--notebooks PATH`` takes another folder (say, your adapted copies).

``nbgrader`` lays out ``COURSE_DIR/source/ASSIGNMENT/`` and writes ``nbgrader_config.py``, which sets
what autograding this course needs: no 30 s cell limit (notebook 4 fine-tunes 19 models), no widget
state in the graded files, and a run cache (``COURSE_DIR/run-cache``: a class's identical training
runs are trained once, :mod:`sftviz.train.cache`). It also builds notebook 5's graded case once: the
diagnosis runs are trained with a secret key and written, without the bugs' names, to
``source/ASSIGNMENT/mystery_case/`` (students receive it; :func:`sftviz.mystery.write_case`). The
answers go to ``COURSE_DIR/mystery_key.json`` (the instructor's record) and into the source notebook's
solutions and nbgrader hidden tests (:func:`grade_with_key`), which the release leaves out.

Solutions sit between nbgrader's markers, in cells that carry nbgrader's metadata::

    answer = None  # log Pr(y | x)
    ### BEGIN SOLUTION
    answer = rep.joint - rep.marginal
    ### END SOLUTION
    exercises.check_conditional(answer, rep)

In the student version the lines between the markers (and the markers) become ``# YOUR CODE HERE``
in code cells, or "YOUR ANSWER HERE" in markdown, and every output is cleared. Nothing is raised in
place of the answer: the variable keeps the ``None`` set above the markers, the check says "Not
answered yet", and Run All goes on to the widgets and quizzes after it. ``nbgrader`` writes the
same notebooks when it uses :data:`CODE_STUB` (the ``nbgrader`` command writes that configuration).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
#: nbgrader's per-cell limit in the written configuration (seconds): far above notebook 4's longest cell.
AUTOGRADE_CELL_TIMEOUT = 3600
#: The diagnosis notebook, whose case ``nbgrader`` builds, and the case folder's name beside it.
DIAGNOSIS_NOTEBOOK = "05_diagnose_a_faulty_finetune.ipynb"
CASE_FOLDER = "mystery_case"
CODE_STUB = "# YOUR CODE HERE"
NBGRADER_CONFIG = f"""# nbgrader configuration written by `python -m sftviz.course nbgrader`.
import os
from pathlib import Path

c = get_config()  # noqa: F821
here = Path(__file__).resolve().parent
# Replace a solution with a comment only: each exercise sets its answer to None above the solution,
# so an unanswered exercise shows "Not answered yet" and Run All still reaches every later cell.
c.ClearSolutions.code_stub = {{"python": {CODE_STUB!r}}}
# Notebook 4 fine-tunes 18 small models in one cell: nbgrader's default limit of 30 s per cell would
# interrupt it. No widget state in the graded files (it made each notebook 4 about 5 MB).
c.Execute.timeout = {AUTOGRADE_CELL_TIMEOUT}
c.Execute.store_widget_state = False
# The kernels that nbgrader starts inherit these:
# - a run cache, so that the training runs that every submission repeats are trained once per class
#   (with the records that sftviz ships of the course's own runs, read where the machine kind matches);
# - one thread per kernel: a run's numbers depend on the thread count, and the shipped records were
#   made with one; one grading kernel per core is also the quickest way through a class;
# - no network: the bundled model and data are all the course needs.
os.environ.setdefault("SFTVIZ_RUN_CACHE", str(here / "run-cache"))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# A warm kernel (sftviz.warm_kernel): each notebook's kernel is forked from a process that has already
# imported torch and transformers, which saves about 5 s per notebook; SFTVIZ_WARM_KERNEL=0 uses python3.
if os.environ.get("SFTVIZ_WARM_KERNEL", "1") != "0":
    from sftviz import warm_kernel

    c.Execute.kernel_name = warm_kernel.for_nbgrader(here / ".warm-kernel")
"""
_HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS[^\n]*\n.*?^[ \t]*### END HIDDEN TESTS[^\n]*\n?", re.S | re.M)
_BLOCK = re.compile(r"^([ \t]*)### BEGIN SOLUTION[^\n]*\n.*?^[ \t]*### END SOLUTION[^\n]*$", re.S | re.M)


def strip_solutions(source: str, cell_type: str = "code") -> tuple:
    """Replace each solution block in ``source`` and drop nbgrader's hidden tests; returns
    ``(new_source, number_of_solution_blocks)``."""
    if source.count(BEGIN) != source.count(END):
        raise ValueError(
            f"Unbalanced solution markers: {source.count(BEGIN)} BEGIN vs {source.count(END)} END in:\n{source[:200]}"
        )

    def repl(m):
        indent = m.group(1)
        if cell_type == "code":
            return f"{indent}{CODE_STUB}"
        return "YOUR ANSWER HERE"

    source = _HIDDEN.sub("", source)  # nbgrader's hidden tests hold answers too (grade_with_key writes them)
    return _BLOCK.subn(repl, source)


def student_version(nb: Any) -> Any:
    """Return a copy of a notebook (nbformat node) with solutions and all outputs removed; also the
    number of solution blocks removed. Outputs go too: the instructor's run shows the answers."""
    import copy

    nb = copy.deepcopy(nb)
    total = 0
    for cell in nb.cells:
        new, n = strip_solutions(cell.source, cell.cell_type)
        cell.source = new
        total += n
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb, total


def packaged_notebooks() -> Path:
    """The folder of the course notebooks installed with the package (``sftviz.notebooks`` in a wheel), or
    ``notebooks/`` beside the package in a repository checkout (an editable install)."""
    package = Path(__file__).resolve().parent
    installed = package / "notebooks"
    return installed if installed.is_dir() else package.parent / "notebooks"


def _notebook_paths(src: str | os.PathLike | None) -> list:
    src = packaged_notebooks() if src is None else Path(src)
    if not src.is_dir():
        raise ValueError(f"{src} is not a folder of notebooks; pass --notebooks PATH.")
    paths = sorted(src.glob("*.ipynb"))
    if not paths:
        raise ValueError(f"No .ipynb notebooks in {src}.")
    return paths


def copy_notebooks(out_dir: str | os.PathLike, src_dir: str | os.PathLike | None = None) -> list[Path]:
    """Copy the instructor notebooks (with solutions and outputs) to ``out_dir``; returns the new files."""
    import shutil

    paths = _notebook_paths(src_dir)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; give a folder to copy the notebooks into.")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        if (out / path.name).exists() and (out / path.name).resolve() == path.resolve():
            raise ValueError("OUTDIR is the notebooks folder itself; give another folder.")
        shutil.copyfile(path, out / path.name)
        written.append(out / path.name)
    return written


def write_student_versions(src_dir: str | os.PathLike | None, out_dir: str | os.PathLike) -> list:
    """Write a student version of every notebook in ``src_dir`` (None: the packaged ones) to ``out_dir``;
    returns ``(file name, solution blocks removed)`` per file."""
    import nbformat

    paths = _notebook_paths(src_dir)
    src, out = paths[0].parent, Path(out_dir)
    if out.resolve() == src.resolve():
        raise ValueError("OUTDIR must differ from the notebooks folder, or the solutions would be overwritten.")
    out.mkdir(parents=True, exist_ok=True)
    report = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        student, n = student_version(nb)
        nbformat.write(student, out / path.name)
        report.append((path.name, n))
    return report


def read_notebook(path: str | os.PathLike) -> Any:
    """The notebook at ``path`` (nbformat 4), or a ``ValueError`` that names the path and what is wrong."""
    import nbformat

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a notebook file path, got {type(path).__name__}.")
    if not Path(path).is_file():
        raise ValueError(f"{path} is not a file: give the path of a .ipynb notebook.")
    try:
        return nbformat.read(path, as_version=4)
    except (OSError, ValueError, nbformat.reader.NotJSONError) as err:
        raise ValueError(f"{path} is not a readable Jupyter notebook ({type(err).__name__}: {err}).") from None


def notebook_parameters(path: str | os.PathLike) -> dict:
    """The values of a notebook's ``parameters`` cell (plain literal assignments, as papermill reads them)."""
    import ast

    nb = read_notebook(path)
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if not cells:
        raise ValueError(f"{path} has no cell tagged 'parameters'.")
    values = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                raise ValueError(
                    f"{path}: the parameter {node.targets[0].id} must be a plain value (a number, a string, a tuple...)."
                ) from None
    return values


def build_diagnosis_case(
    notebook: str | os.PathLike, case_dir: str | os.PathLike, key_file: str | os.PathLike, key: str, *, progress=True
) -> dict:
    """Train notebook 5's diagnosis runs once, with its parameters and a secret ``key``, into ``case_dir``
    (released to students) and ``key_file`` (kept by the grader); returns the answer key."""
    import sftviz as sv

    from .mystery import write_case

    p = notebook_parameters(notebook)
    model, tok = sv.load_model(p["MODEL_NAME"])
    rows, eval_rows = sv.load_splits(p["DATASET"], eval_fraction=p.get("EVAL_FRACTION"))
    return write_case(
        case_dir, key_file, model, tok, rows, list(p["SUSPECTS"]), rows[0], key=key, steps=p["STEPS"],
        eval_data=eval_rows[: p.get("EVAL_ROWS")], eval_examples=p.get("EVAL_EXAMPLES", 8), eval_every=None,
        batch_size=p["BATCH_SIZE"], grad_accum=p["GRAD_ACCUM"], lr=p.get("LR", 1e-3), progress=progress,
    )  # fmt: skip


def _solution(source: str, line: str) -> str:
    """``source`` with its solution block's body replaced by ``line``."""
    new, n = _BLOCK.subn(lambda m: f"{m.group(1)}{BEGIN}\n{m.group(1)}{line}\n{m.group(1)}{END}", source)
    if n != 1:
        raise ValueError("expected one solution block in the cell:\n" + source[:200])
    return new


def _hidden_test(source: str, line: str) -> str:
    """``source`` (a points cell ending with ``exercises.points(...)``) with nbgrader's hidden test ``line``
    before its last line: nbgrader removes it from the release and puts it back when it autogrades."""
    lines = source.rstrip("\n").split("\n")
    if not lines[-1].startswith("exercises.points("):
        raise ValueError("expected a points cell ending with exercises.points(...):\n" + source[:200])
    return "\n".join([*lines[:-1], "### BEGIN HIDDEN TESTS", line, "### END HIDDEN TESTS", lines[-1]]) + "\n"


def grade_with_key(notebook: str | os.PathLike, answers: dict) -> None:
    """Write a graded case's answers into the instructor's copy of the diagnosis notebook: the solutions
    become the answers, and each points cell gets a hidden test that checks the student's answer with
    them. The release (``nbgrader generate_assignment``) drops both, so no student sees the key, and the
    test runs after the student's code, so no code of theirs can read it."""
    import nbformat

    from .exercises import CURVE_SIGNS

    nb = read_notebook(notebook)
    cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nb.cells}
    missing = {"from-curves", "from-curves-points", "diagnosis", "diagnosis-points"} - set(cells)
    if missing:
        raise ValueError(f"{notebook} has no nbgrader cell(s) {sorted(missing)}: is it the diagnosis notebook?")
    curves = {fault: letter for letter, fault in answers.items() if fault in CURVE_SIGNS}
    cells["from-curves"].source = _solution(cells["from-curves"].source, f"from_curves = {curves!r}")
    cells["diagnosis"].source = _solution(cells["diagnosis"].source, f"diagnosis = {answers!r}")
    cells["from-curves-points"].source = _hidden_test(
        cells["from-curves-points"].source,
        f"curve_checks = exercises.check_from_curves(from_curves, mysteries, healthy, key={answers!r})",
    )
    cells["diagnosis-points"].source = _hidden_test(
        cells["diagnosis-points"].source, f"checks = exercises.check_diagnoses(diagnosis, mysteries, key={answers!r})"
    )
    nbformat.write(nb, notebook)


def is_graded(path: str | os.PathLike) -> bool:
    """Whether a notebook has a cell that nbgrader grades (``"grade": true`` in its nbgrader metadata)."""
    nb = read_notebook(path)
    return any(c.metadata.get("nbgrader", {}).get("grade") for c in nb.cells)


def write_nbgrader_course(
    src_dir: str | os.PathLike | None,
    course_dir: str | os.PathLike,
    assignment: str = "sft-lab",
    *,
    mystery_key: str | None = None,
    case: bool = True,
    progress: bool = True,
) -> Path:
    """Lay out an nbgrader course folder: ``COURSE_DIR/source/ASSIGNMENT/`` with the notebooks that have
    graded cells (notebook 6 has none: hand it out as it is), and an ``nbgrader_config.py`` for this course
    (an existing config is kept). Returns the source folder.

    With ``case=True`` (the default) and the diagnosis notebook among them, its graded case is built:
    the runs, trained once with ``mystery_key`` (default: a new random secret), go to
    ``source/ASSIGNMENT/mystery_case/``, the answers to ``COURSE_DIR/mystery_key.json`` (for the
    instructor's records) and into the source notebook's solutions and hidden tests (:func:`grade_with_key`).
    Then, in ``COURSE_DIR``: ``nbgrader generate_assignment ASSIGNMENT`` writes the release.
    """
    import secrets
    import shutil

    paths = _notebook_paths(src_dir)
    if not assignment or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", assignment):
        raise ValueError(
            f"assignment must be a plain folder name (letters, digits, '-', '_', '.'), got {assignment!r}."
        )
    if mystery_key is not None and (not isinstance(mystery_key, str) or not mystery_key.strip()):
        raise ValueError("mystery_key must be a non-empty string (keep it secret).")
    course = Path(course_dir)
    dest = course / "source" / assignment
    dest.mkdir(parents=True, exist_ok=True)
    for path in paths:
        if is_graded(path):  # a notebook with no graded cell is handed out as it is, not autograded
            shutil.copyfile(path, dest / path.name)
    config = course / "nbgrader_config.py"
    if not config.exists():
        config.write_text(NBGRADER_CONFIG, encoding="utf-8")
    if case and (dest / DIAGNOSIS_NOTEBOOK).exists():
        key = mystery_key or secrets.token_hex(8)
        answers = build_diagnosis_case(
            dest / DIAGNOSIS_NOTEBOOK, dest / CASE_FOLDER, course / "mystery_key.json", key, progress=progress
        )
        grade_with_key(dest / DIAGNOSIS_NOTEBOOK, answers)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sftviz.course", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    nb_help = "folder with the instructor notebooks (default: the notebooks installed with sftviz)"
    cp = sub.add_parser("copy", help="copy the instructor notebooks (with solutions) to a folder")
    cp.add_argument("outdir", help="folder to copy the notebooks to")
    cp.add_argument("--notebooks", default=None, help=nb_help)
    st = sub.add_parser("student", help="write student versions of the notebooks, without solutions")
    st.add_argument("outdir", help="folder to write the student notebooks to")
    st.add_argument("--notebooks", default=None, help=nb_help)
    ng = sub.add_parser("nbgrader", help="lay out an nbgrader course folder (source/ASSIGNMENT and nbgrader_config.py)")
    ng.add_argument("course_dir", help="the nbgrader course folder (created if missing)")
    ng.add_argument("--assignment", default="sft-lab", help="assignment name (default: sft-lab)")
    ng.add_argument("--notebooks", default=None, help=nb_help)
    ng.add_argument("--mystery-key", default=None, help="secret that decides notebook 5's case (default: random)")
    ng.add_argument(
        "--no-case", action="store_true", help="do not build notebook 5's graded case (students train the runs)"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "nbgrader":
            dest = write_nbgrader_course(
                args.notebooks, args.course_dir, args.assignment, mystery_key=args.mystery_key, case=not args.no_case
            )
        elif args.command == "copy":
            written = copy_notebooks(args.outdir, args.notebooks)
        else:
            report = write_student_versions(args.notebooks, args.outdir)
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except AssertionError as err:  # write_case checks that each run shows its bug before releasing the case
        print(
            f"error: notebook 5's case was not written: {err} Train longer (STEPS) or choose other SUSPECTS in the "
            "notebook's parameters.",
            file=sys.stderr,
        )
        return 2
    if args.command == "nbgrader":
        course = Path(args.course_dir)
        graded = sorted(p.name for p in dest.glob("*.ipynb"))
        print(f"{len(graded)} graded notebooks copied to {dest}; configuration in {course / 'nbgrader_config.py'}")
        for path in _notebook_paths(args.notebooks):
            if path.name not in graded:
                print(f"{path.name} has no graded cell, so it is not in the assignment: hand it out as it is")
        if (dest / CASE_FOLDER).is_dir():
            print(
                f"Notebook 5's graded case is in {dest / CASE_FOLDER} (released); its answer key is in "
                f"{course / 'mystery_key.json'} (keep it: the grader reads it, students never get it)"
            )
        print(f"Next: cd {args.course_dir} && nbgrader generate_assignment {args.assignment}")
        return 0
    if args.command == "copy":
        print(f"{len(written)} notebooks copied to {args.outdir}")
        return 0
    for name, n in report:
        print(f"{name}: {n} solution block(s) removed")
    print(f"Student notebooks written to {args.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
