"""Doctests: the examples in sftviz's docstrings run in the test suite (``pytest sftviz``).

Every ``.py`` file of the package is collected for its doctests (and only those files: tests,
scripts and the notebooks' jupytext sources are not imported as doctest modules). Each doctest sees
``sv`` (the package), ``model`` and ``tok`` (the bundled sftviz-tiny, loaded once, offline, on the
CPU), ``token_gradients`` and ``W`` (the widgets), so an example reads as it would in a notebook.
"""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
from _pytest.doctest import DoctestModule  # pytest's own doctest collector (no public name for it)

PACKAGE = Path(__file__).resolve().parent / "sftviz"


def pytest_collect_file(file_path, parent):
    """The package's modules are doctest modules, without ``--doctest-modules`` for everything else."""
    if file_path.suffix == ".py" and PACKAGE in file_path.parents and not parent.config.option.doctestmodules:
        return DoctestModule.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def _bundled_model():
    import sftviz as sv

    return sv.load_model(device="cpu")


@pytest.fixture(autouse=True)
def _doctest_names(request, doctest_namespace):
    if not isinstance(request.node, pytest.DoctestItem):
        return
    import sftviz as sv
    from sftviz import widgets as W
    from sftviz.gradients import token_gradients

    model, tok = request.getfixturevalue("_bundled_model")
    doctest_namespace.update(sv=sv, W=W, model=model, tok=tok, token_gradients=token_gradients)
