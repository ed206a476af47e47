"""Print the lowest versions pyproject.toml admits, as pip requirements (used by scripts/test.sh).

python scripts/floors.py transformers trl            ->  transformers==4.56 trl==0.21
python scripts/floors.py --installed transformers    ->  transformers 4.56.0 (what is installed)
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def floors() -> dict[str, str]:
    """Each dependency's ``>=`` floor, from the project's dependencies and its optional ones."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    out = {}
    for req in requirements:
        m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)", req)
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--installed":
        parts = []
        for name in argv[1:]:
            try:
                parts.append(f"{name} {version(name)}")
            except PackageNotFoundError:
                parts.append(f"{name} (not installed)")
        print(", ".join(parts))
        return 0
    known = floors()
    missing = [name for name in argv if name.lower() not in known]
    if missing:
        print(f"no '>=' floor for {missing} in pyproject.toml", file=sys.stderr)
        return 2
    print(" ".join(f"{name}=={known[name.lower()]}" for name in argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
