"""Write the repository's address, kept in one place (pyproject.toml, [project.urls] Repository), into
every course notebook's text source: the "Open in Colab" badge under the title and the setup cell's
SFTVIZ_SOURCE, from which Colab installs sftviz. Run by scripts/build_notebooks.sh; idempotent.

    python scripts/notebook_links.py [--check]     # --check: exit 1 if a source is out of date
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "notebooks" / "src"
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"


def repository() -> str:
    """The repository URL from pyproject.toml, e.g. https://github.com/OWNER/NAME."""
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"].get("urls", {})
    url = urls.get("Repository", "").rstrip("/")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise SystemExit(f"pyproject.toml [project.urls] Repository must be https://github.com/OWNER/NAME, got {url!r}")
    return url


def colab_url(repo: str, notebook: str, branch: str = "main") -> str:
    return f"https://colab.research.google.com/github/{repo.removeprefix('https://github.com/')}/blob/{branch}/notebooks/{notebook}"


def badge_line(repo: str, notebook: str) -> str:
    return f"# [![Open In Colab]({BADGE})]({colab_url(repo, notebook)})"


def rewrite(text: str, repo: str, notebook: str) -> str:
    lines = text.split("\n")
    # The badge: the line after the title (the first '# # ' line), replaced when it is already there.
    title = next(i for i, line in enumerate(lines) if line.startswith("# # "))
    if lines[title + 2].startswith("# [![Open In Colab]"):
        lines[title + 2] = badge_line(repo, notebook)
    else:
        lines[title + 1 : title + 1] = ["#", badge_line(repo, notebook)]
    text = "\n".join(lines)
    source = f'SFTVIZ_SOURCE = "git+{repo}"  # written from pyproject.toml by scripts/build_notebooks.sh'
    text, n = re.subn(r"^SFTVIZ_SOURCE = .*$", source, text, count=1, flags=re.M)
    if n != 1:
        raise SystemExit(f"{notebook}: the setup cell has no SFTVIZ_SOURCE line")
    return text


def main(argv: list[str]) -> int:
    repo = repository()
    stale = []
    for path in sorted(SRC.glob("*.py")):
        old = path.read_text(encoding="utf-8")
        new = rewrite(old, repo, path.with_suffix(".ipynb").name)
        if new != old:
            stale.append(path.name)
            if "--check" not in argv:
                path.write_text(new, encoding="utf-8")
    if "--check" in argv and stale:
        print(
            f"out of date with pyproject.toml's repository ({repo}): {', '.join(stale)}; run scripts/build_notebooks.sh"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
