"""The first code cell of every course notebook: safe to run anywhere, clear when sftviz is missing."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("0*.ipynb"))


def _setup_source(path):
    nb = json.loads(path.read_text())
    cells = [c for c in nb["cells"] if "setup" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{path.name}: expected one cell tagged 'setup'"
    return "".join(cells[0]["source"])


def test_there_are_seven_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_setup_cell_never_installs_by_name_and_explains(path, monkeypatch):
    src = _setup_source(path)
    # Run the cell as if sftviz were missing (as on a fresh Colab kernel).
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sftviz" else real(name, *a))
    installs = []

    class _IPython:
        def run_line_magic(self, magic, line):
            installs.append((magic, line))

    # With the address the build wrote from pyproject.toml, the cell installs from exactly there.
    import re

    source = re.search(r'^SFTVIZ_SOURCE = "(git\+https://github\.com/[^"]+)"', src, re.M)
    assert source, "the setup cell should carry the repository's address (scripts/notebook_links.py)"
    exec(compile(src, path.name, "exec"), {"get_ipython": lambda: _IPython()})
    assert installs == [("pip", f"install -q {source.group(1)}")]
    # Emptied (say, by an instructor without a repository), it explains instead of installing anything.
    installs.clear()
    empty = src.replace(source.group(0), 'SFTVIZ_SOURCE = ""', 1)
    with pytest.raises(ModuleNotFoundError, match="SFTVIZ_SOURCE"):
        exec(compile(empty, path.name, "exec"), {"get_ipython": lambda: _IPython()})
    assert installs == []
