"""Code-health rules for the package (``sftviz/``), checked with ``ast`` and ``inspect`` (no other tools).

- size: no function or method longer than 80 lines (from its ``def`` line to its last line,
  decorators excluded, docstring included), no module longer than 600 lines;
- privacy: no private name (``_name``, not ``__dunder__``) is imported from another sftviz module
  (``from .x import _y``, ``from sftviz.x import _y``, ``from . import _y``), and no private
  attribute is read off an imported sftviz module (``render._split``). Importing a public name from a
  private module (``from ._memory import reuse_large_buffers``) is fine;
- annotations: every public function and method of the public API is fully annotated (every
  parameter but ``self``/``cls``, and the return; ``__init__`` needs no return annotation).

Each test collects every offending place and names them all (``path:line name``) in one failure.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sftviz"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 600


def _sources() -> list[Path]:
    """Every Python file of the package (bundled assets are data, not code)."""
    return sorted(p for p in PACKAGE.rglob("*.py") if "assets" not in p.relative_to(PACKAGE).parts)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _report(title: str, places: list[str]) -> str:
    return f"{title} ({len(places)}):\n  " + "\n  ".join(places)


def _qualnames(tree: ast.Module):
    """(qualified name, node) for every function and method, nested ones included."""
    out = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                out.append((name, child))
                visit(child, f"{name}.<locals>.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return out


# --------------------------------------------------------------------------------------------
# Size
# --------------------------------------------------------------------------------------------


def test_no_function_longer_than_80_lines():
    long = []
    for path in _sources():
        for name, node in _qualnames(_tree(path)):
            n = node.end_lineno - node.lineno + 1  # node.lineno is the `def` line, after any decorator
            if n > MAX_FUNCTION_LINES:
                long.append(f"{_rel(path)}:{node.lineno} {name}() is {n} lines")
    assert not long, _report(f"functions longer than {MAX_FUNCTION_LINES} lines", long)


def test_no_module_longer_than_600_lines():
    long = []
    for path in _sources():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_MODULE_LINES:
            long.append(f"{_rel(path)} is {n} lines")
    assert not long, _report(f"modules longer than {MAX_MODULE_LINES} lines", long)


# --------------------------------------------------------------------------------------------
# Privacy
# --------------------------------------------------------------------------------------------


def _package_of(path: Path) -> list[str]:
    """The dotted package that holds ``path``, as parts: sftviz/widgets/quiz.py -> ['sftviz', 'widgets']."""
    return list(path.relative_to(ROOT).parent.parts)


def _resolve_from(path: Path, node: ast.ImportFrom) -> list[str] | None:
    """The absolute module parts of ``from <module> import ...``, or None when it is not sftviz."""
    if node.level == 0:
        parts = (node.module or "").split(".")
        return parts if parts[0] == "sftviz" else None
    base = _package_of(path)  # for an __init__.py, its own folder: the package it defines
    base = base[: len(base) - (node.level - 1)]
    return base + (node.module.split(".") if node.module else [])


def _is_module(parts: list[str]) -> bool:
    where = ROOT.joinpath(*parts)
    return where.with_suffix(".py").is_file() or (where / "__init__.py").is_file()


def _sftviz_module_names(path: Path, tree: ast.Module) -> dict[str, str]:
    """Local names bound to sftviz modules in this file -> the module's dotted name."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "sftviz":
                    continue
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    names[alias.name.split(".")[0]] = "sftviz"
        elif isinstance(node, ast.ImportFrom):
            parts = _resolve_from(path, node)
            if parts is None:
                continue
            for alias in node.names:
                if alias.name != "*" and _is_module([*parts, alias.name]):
                    names[alias.asname or alias.name] = ".".join([*parts, alias.name])
    return names


def test_no_private_name_imported_from_another_module():
    bad = []
    for path in _sources():
        for node in ast.walk(_tree(path)):
            if not isinstance(node, ast.ImportFrom):
                continue
            parts = _resolve_from(path, node)
            if parts is None:
                continue
            dots = "." * node.level + (node.module or "")
            for alias in node.names:
                if _is_private(alias.name):
                    bad.append(f"{_rel(path)}:{node.lineno} from {dots} import {alias.name}")
    assert not bad, _report("private names imported from other sftviz modules", bad)


def test_no_private_attribute_of_an_imported_module():
    bad = []
    for path in _sources():
        tree = _tree(path)
        modules = _sftviz_module_names(path, tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in modules
                and _is_private(node.attr)
            ):
                bad.append(
                    f"{_rel(path)}:{node.lineno} {node.value.id}.{node.attr} (private name of {modules[node.value.id]})"
                )
    assert not bad, _report("private attributes read off imported sftviz modules", bad)


# --------------------------------------------------------------------------------------------
# Annotations of the public API
# --------------------------------------------------------------------------------------------


def _public_api() -> dict[str, object]:
    """Qualified name -> object: sftviz.__all__, sftviz.widgets' public names, token_gradients and the
    public functions of sftviz.exercises."""
    api = {}
    sv = importlib.import_module("sftviz")
    for name in sv.__all__:
        api[f"sftviz.{name}"] = getattr(sv, name)
    widgets = importlib.import_module("sftviz.widgets")
    names = getattr(widgets, "__all__", None)
    if names is None:
        names = [
            n
            for n, obj in vars(widgets).items()
            if not n.startswith("_")
            and (inspect.isclass(obj) or inspect.isfunction(obj))
            and getattr(obj, "__module__", "").startswith("sftviz")
        ]
    for name in names:
        api[f"sftviz.widgets.{name}"] = getattr(widgets, name)
    api["sftviz.gradients.token_gradients"] = importlib.import_module("sftviz.gradients").token_gradients
    ex = importlib.import_module("sftviz.exercises")
    names = getattr(ex, "__all__", None) or [n for n in vars(ex) if not n.startswith("_")]
    for name in names:
        obj = getattr(ex, name)
        if inspect.isfunction(obj) and obj.__module__ == ex.__name__:
            api[f"sftviz.exercises.{name}"] = obj
    return api


def _generated(fn) -> bool:
    """A method written by ``dataclasses`` (its code comes from a string, not a file)."""
    code = getattr(inspect.unwrap(fn), "__code__", None)
    return code is not None and code.co_filename == "<string>"


def _methods(cls):
    """(name, function, kind) for the public methods (and ``__init__``, ``__call__``) of ``cls`` and of its
    sftviz base classes; kind is 'static', 'class' or 'method'."""
    seen = set()
    for klass in cls.__mro__:
        if not getattr(klass, "__module__", "").startswith("sftviz"):
            continue
        for name, raw in vars(klass).items():
            if name in seen or (name.startswith("_") and name not in ("__init__", "__call__")):
                continue
            seen.add(name)
            if isinstance(raw, staticmethod):
                yield name, raw.__func__, "static"
            elif isinstance(raw, classmethod):
                yield name, raw.__func__, "class"
            elif inspect.isfunction(raw):
                if dataclasses.is_dataclass(cls) and _generated(raw):
                    continue
                yield name, raw, "method"


def _where(fn) -> str:
    """path:line of a function's definition (through decorators that wrap it)."""
    fn = inspect.unwrap(fn)
    try:
        path = Path(inspect.getsourcefile(fn)).resolve()
        line = inspect.getsourcelines(fn)[1]
    except (TypeError, OSError):
        return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"
    where = _rel(path) if path.is_relative_to(ROOT) else str(path)
    return f"{where}:{line}"


def _missing_annotations(fn, kind: str, is_init: bool = False) -> list[str]:
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    if kind in ("method", "class") and params and params[0].name in ("self", "cls"):
        params = params[1:]
    missing = [p.name for p in params if p.annotation is inspect.Parameter.empty]
    if not is_init and sig.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


def test_public_api_is_fully_annotated():
    bad = []
    for qual, obj in _public_api().items():
        if inspect.isclass(obj):
            for name, fn, kind in _methods(obj):
                missing = _missing_annotations(fn, kind, is_init=name == "__init__")
                if missing:
                    bad.append(f"{_where(fn)} {qual}.{name}: {', '.join(missing)}")
        elif inspect.isfunction(obj) or inspect.ismethod(obj):
            missing = _missing_annotations(obj, "function")
            if missing:
                bad.append(f"{_where(obj)} {qual}: {', '.join(missing)}")
    assert not bad, _report("public functions and methods not fully annotated (what lacks an annotation)", bad)


def test_the_helpers_measure_what_the_rules_say():
    """A function's length runs from its def line (not its decorator) to its last line, docstring included;
    relative imports resolve against the importing file's package."""
    tree = ast.parse(
        '@decorator\ndef f(a, b=1):\n    """Doc."""\n    return a\n\nclass C:\n    def m(self):\n        pass\n'
    )
    (f_name, f), (m_name, m) = _qualnames(tree)
    assert (f_name, f.end_lineno - f.lineno + 1) == ("f", 3)
    assert (m_name, m.end_lineno - m.lineno + 1) == ("C.m", 2)
    quiz = PACKAGE / "widgets" / "quiz.py"
    assert _resolve_from(quiz, ast.parse("from ._base import x").body[0]) == ["sftviz", "widgets", "_base"]
    assert _resolve_from(quiz, ast.parse("from .. import render").body[0]) == ["sftviz"]
    assert _resolve_from(quiz, ast.parse("from sftviz.data import y").body[0]) == ["sftviz", "data"]
    assert _resolve_from(quiz, ast.parse("from numpy import z").body[0]) is None
    assert _is_private("_split") and not _is_private("__version__") and not _is_private("split")
