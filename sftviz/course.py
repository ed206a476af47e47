"""Course tools for instructors: write student versions of the notebooks, without solutions.

    python -m sftviz.course student OUTDIR [--notebooks notebooks/]

Solutions sit between nbgrader's markers, in code or markdown cells::

    ### BEGIN SOLUTION
    answer = rep.joint - rep.marginal
    ### END SOLUTION

In the student version the lines between the markers (and the markers) become
``# YOUR CODE HERE`` and ``raise NotImplementedError()`` in code cells, or "YOUR ANSWER HERE" in
markdown, and the outputs of those cells are cleared. The same markers work with nbgrader itself.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
_BLOCK = re.compile(r"^([ \t]*)### BEGIN SOLUTION[^\n]*\n.*?^[ \t]*### END SOLUTION[^\n]*$", re.S | re.M)


def strip_solutions(source: str, cell_type: str = "code") -> tuple:
    """Replace each solution block in ``source``; returns ``(new_source, number_of_blocks)``."""
    if source.count(BEGIN) != source.count(END):
        raise ValueError(f"Unbalanced solution markers: {source.count(BEGIN)} BEGIN vs {source.count(END)} END in:\n{source[:200]}")

    def repl(m):
        indent = m.group(1)
        if cell_type == "code":
            return f"{indent}# YOUR CODE HERE\n{indent}raise NotImplementedError()"
        return "YOUR ANSWER HERE"

    return _BLOCK.subn(repl, source)


def student_version(nb):
    """Return a copy of a notebook (nbformat node) with solutions removed; also the count removed."""
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


def write_student_versions(src_dir, out_dir) -> list:
    """Write a student version of every notebook in ``src_dir`` to ``out_dir``; returns a report per file."""
    import nbformat

    src, out = Path(src_dir), Path(out_dir)
    if not src.is_dir():
        raise ValueError(f"{src} is not a folder of notebooks; pass --notebooks PATH.")
    paths = sorted(src.glob("*.ipynb"))
    if not paths:
        raise ValueError(f"No .ipynb notebooks in {src}.")
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sftviz.course", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser("student", help="write student versions of the notebooks, without solutions")
    st.add_argument("outdir", help="folder to write the student notebooks to")
    st.add_argument("--notebooks", default="notebooks", help="folder with the instructor notebooks (default: notebooks)")
    args = parser.parse_args(argv)
    try:
        report = write_student_versions(args.notebooks, args.outdir)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, n in report:
        print(f"{name}: {n} solution block(s) removed")
    print(f"Student notebooks written to {args.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
