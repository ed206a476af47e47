"""``python -m sftviz COMMAND``: ``xray`` (see what a pipeline trains; :mod:`sftviz.xray.cli`).

The course and the real models have their own commands: ``python -m sftviz.course`` and
``python -m sftviz.models``.
"""

from __future__ import annotations

import sys

COMMANDS = {"xray": "see what a data pipeline trains, beside what you mean to train, and catch mask bugs"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = ["usage: python -m sftviz COMMAND ...", "", "commands:"]
        lines += [f"  {name:8}{about}" for name, about in COMMANDS.items()]
        lines += ["", "also: python -m sftviz.course (the course), python -m sftviz.models (real models)"]
        print("\n".join(lines), file=sys.stdout if argv[:1] in ([], ["-h"], ["--help"]) else sys.stderr)
        return 0 if argv[:1] in ([], ["-h"], ["--help"]) else 2
    from .xray.cli import main as xray_main

    return xray_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
