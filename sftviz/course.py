"""Course tools for instructors: student versions of the notebooks, and an nbgrader course folder.

    python -m sftviz.course student OUTDIR [--notebooks notebooks/]
    python -m sftviz.course nbgrader COURSE_DIR [--assignment sft-lab] [--notebooks notebooks/]

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
CODE_STUB = "# YOUR CODE HERE"
NBGRADER_CONFIG = f"""# nbgrader configuration written by `python -m sftviz.course nbgrader`.
c = get_config()  # noqa: F821
# Replace a solution with a comment only: each exercise sets its answer to None above the solution,
# so an unanswered exercise shows "Not answered yet" and Run All still reaches every later cell.
c.ClearSolutions.code_stub = {{"python": {CODE_STUB!r}}}
"""
_BLOCK = re.compile(r"^([ \t]*)### BEGIN SOLUTION[^\n]*\n.*?^[ \t]*### END SOLUTION[^\n]*$", re.S | re.M)


def strip_solutions(source: str, cell_type: str = "code") -> tuple:
    """Replace each solution block in ``source``; returns ``(new_source, number_of_blocks)``."""
    if source.count(BEGIN) != source.count(END):
        raise ValueError(
            f"Unbalanced solution markers: {source.count(BEGIN)} BEGIN vs {source.count(END)} END in:\n{source[:200]}"
        )

    def repl(m):
        indent = m.group(1)
        if cell_type == "code":
            return f"{indent}{CODE_STUB}"
        return "YOUR ANSWER HERE"

    return _BLOCK.subn(repl, source)


def student_version(nb: Any) -> Any:
    """Return a copy of a notebook (nbformat node) with solutions and all outputs removed; also the
    number of solution blocks removed. Outputs go too: the instructor's run shows the answers."""
    import copy

    nb = copy.deepcopy(nb)
    total = 0
    for cell in nb.cells:
        new, n = strip_solutions(cell.source, cell.cell_type)
        if n:
            cell.source = new
            total += n
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb, total


def _notebook_paths(src: Path) -> list:
    if not src.is_dir():
        raise ValueError(f"{src} is not a folder of notebooks; pass --notebooks PATH.")
    paths = sorted(src.glob("*.ipynb"))
    if not paths:
        raise ValueError(f"No .ipynb notebooks in {src}.")
    return paths


def write_student_versions(src_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Write a student version of every notebook in ``src_dir`` to ``out_dir``; returns a report per file."""
    import nbformat

    src, out = Path(src_dir), Path(out_dir)
    paths = _notebook_paths(src)
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


def write_nbgrader_course(
    src_dir: str | os.PathLike, course_dir: str | os.PathLike, assignment: str = "sft-lab"
) -> Path:
    """Lay out an nbgrader course folder: ``COURSE_DIR/source/ASSIGNMENT/`` with the notebooks, and an
    ``nbgrader_config.py`` with :data:`CODE_STUB` (an existing config is kept). Returns the source folder.

    Then, in ``COURSE_DIR``: ``nbgrader generate_assignment ASSIGNMENT`` writes the release.
    """
    import shutil

    paths = _notebook_paths(Path(src_dir))
    if not assignment or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", assignment):
        raise ValueError(
            f"assignment must be a plain folder name (letters, digits, '-', '_', '.'), got {assignment!r}."
        )
    course = Path(course_dir)
    dest = course / "source" / assignment
    dest.mkdir(parents=True, exist_ok=True)
    for path in paths:
        shutil.copyfile(path, dest / path.name)
    config = course / "nbgrader_config.py"
    if not config.exists():
        config.write_text(NBGRADER_CONFIG, encoding="utf-8")
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sftviz.course", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser("student", help="write student versions of the notebooks, without solutions")
    st.add_argument("outdir", help="folder to write the student notebooks to")
    st.add_argument(
        "--notebooks", default="notebooks", help="folder with the instructor notebooks (default: notebooks)"
    )
    ng = sub.add_parser("nbgrader", help="lay out an nbgrader course folder (source/ASSIGNMENT and nbgrader_config.py)")
    ng.add_argument("course_dir", help="the nbgrader course folder (created if missing)")
    ng.add_argument("--assignment", default="sft-lab", help="assignment name (default: sft-lab)")
    ng.add_argument(
        "--notebooks", default="notebooks", help="folder with the instructor notebooks (default: notebooks)"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "nbgrader":
            dest = write_nbgrader_course(args.notebooks, args.course_dir, args.assignment)
        else:
            report = write_student_versions(args.notebooks, args.outdir)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.command == "nbgrader":
        print(f"Notebooks copied to {dest}; configuration in {Path(args.course_dir) / 'nbgrader_config.py'}")
        print(f"Next: cd {args.course_dir} && nbgrader generate_assignment {args.assignment}")
        return 0
    for name, n in report:
        print(f"{name}: {n} solution block(s) removed")
    print(f"Student notebooks written to {args.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
