"""Fixtures for the browser tests: a real JupyterLab and headless Chromium, driven by Python playwright.

The machinery is in ``harness.py`` (no pytest there; ``scripts/check_widgets_browser.py`` uses it
too); this file wraps it in module-scoped fixtures and adds what is pytest's: skipping, finalizers,
screenshots of failures.

What they guarantee:
- JupyterLab runs on 127.0.0.1 on a free port with a random token, from fresh temporary runtime,
  config, data, settings, workspace and IPython folders (no restored tabs, no news pop-up, our own
  ``python3`` kernelspec pointing at this interpreter, ``HF_HUB_OFFLINE=1``), in its own process
  group. It is shut down (API, then SIGTERM/SIGKILL of its group and of every process it started,
  kernels included) by a finalizer, also when a test fails (``harness.Lab``).
- Chromium is the system one (``SFTVIZ_CHROMIUM``, ``chromium`` on PATH, or /usr/bin/chromium),
  launched headless with a fresh profile; ``playwright install`` is never needed (``harness.Chromium``).
- No Chromium (or no playwright) on a developer's machine: the tests skip and say why. Under CI
  (``CI`` set and not false/0) that is a failure instead.
- Every wait polls with a timeout and a message naming what was awaited; all waits together stay
  within a budget (``SFTVIZ_BROWSER_BUDGET_S``, default 170 s) so the module ends in 3 minutes
  (``harness.Budget``, ``harness.NotebookPage``).
- A failing test leaves ``FAILED-<test>.png`` (and ``jupyterlab.log``) in the screenshots folder:
  ``SFTVIZ_SCREENSHOTS``, default ``artifacts/browser/`` under the repository root.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from harness import (  # noqa: F401  (ROOT, Budget and NotebookPage are imported from here by the tests)
    CELLS_RUN,
    ROOT,
    Budget,
    Chromium,
    Lab,
    NotebookPage,
    browser_missing,
    find_chromium,
    in_ci,
    screenshots_dir,
)

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "widgets_e2e.ipynb"

# The test notebook is opened by the browser test, not collected by nbval (scripts/test.sh passes --nbval).
collect_ignore_glob = ["*.ipynb"]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "browser: runs the widgets in JupyterLab in headless Chromium (deselect: -m 'not browser')"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def skip_or_fail(reason: str):
    if in_ci():
        pytest.fail(f"{reason} [CI is set, so the browser tests must run, not skip]", pytrace=False)
    pytest.skip(reason)


# --------------------------------------------------------------------------------------------
# The widgets test notebook (tests/browser/widgets_e2e.ipynb)
# --------------------------------------------------------------------------------------------


class WidgetsNotebook(NotebookPage):
    """The widgets test notebook, run once; ``expected`` is what Python computed for the page."""

    def open_and_run(self, name: str):
        self.open_notebook(name)

        def ready():
            # Errors from JupyterLab's model: the page renders them with the stderr mime type.
            state = self.js(CELLS_RUN)
            if state and state["errors"]:
                raise AssertionError("a cell of the test notebook raised:\n" + "\n".join(state["errors"])[-3000:])
            return "SFTVIZ_E2E_READY" in self.stdout()

        self.poll("all cells of the notebook to run (the last one prints SFTVIZ_E2E_READY)", ready, timeout=120)
        raw = self.marker("SFTVIZ_E2E_EXPECTED")
        assert raw, "the notebook did not print SFTVIZ_E2E_EXPECTED"
        self.expected = json.loads(raw)
        self.lab.remember_children()
        # The widget views render asynchronously after their outputs arrive.
        self.wait_js(
            "the TokenView to render all its tokens",
            "n => document.querySelectorAll(\".sftviz-tokenview .sftviz-tok[data-sftviz-role='token']\").length === n",
            self.expected["n"],
        )
        self.wait_js(
            "the LogProbExplorer to show the identity",
            "() => !!document.querySelector(\".sftviz-lpx [data-sftviz-sum='joint']\")",
        )
        self.wait_js(
            "the MaskingLab to render its empty state and Run button",
            """() => !!document.querySelector('.sftviz-masking-lab .sftviz-empty') &&
                        [...document.querySelectorAll('.sftviz-masking-lab button')].some(b => b.textContent.trim() === 'Run')""",
        )
        return self


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium_path():
    path = find_chromium()
    reason = browser_missing(path)
    if reason is not None:
        skip_or_fail(reason)
    return path


@pytest.fixture(scope="module")
def budget():
    return Budget.from_env("SFTVIZ_BROWSER_BUDGET_S", 170)


@pytest.fixture(scope="module")
def shots_dir():
    d = screenshots_dir()
    for old in [*d.glob("FAILED-*.png"), d / "jupyterlab.log"]:  # left by an earlier run
        old.unlink(missing_ok=True)
    return d


@pytest.fixture(scope="module")
def jupyter_lab(request, chromium_path, budget, shots_dir):
    lab = Lab(budget)
    failed_before = request.session.testsfailed

    def finish():
        failed = request.session.testsfailed > failed_before
        lab.close(keep_log=shots_dir / "jupyterlab.log" if failed else None)

    request.addfinalizer(finish)
    lab.start()
    lab.add_notebook(NOTEBOOK)
    return lab


@pytest.fixture(scope="module")
def browser_context(request, chromium_path):
    browser = Chromium(chromium_path)
    request.addfinalizer(browser.close)
    return browser.start()


@pytest.fixture(scope="module")
def nb(jupyter_lab, browser_context, budget, shots_dir):
    page = browser_context.pages[0] if browser_context.pages else browser_context.new_page()
    view = WidgetsNotebook(page, jupyter_lab, budget, shots_dir)
    try:
        return view.open_and_run(NOTEBOOK.name)
    except BaseException:
        try:
            page.screenshot(path=str(shots_dir / "FAILED-setup.png"))
        except Exception:
            pass
        raise


@pytest.fixture(autouse=True)
def _screenshot_on_failure(request):
    yield
    rep = getattr(request.node, "rep_call", None)
    view = (getattr(request.node, "funcargs", None) or {}).get("nb")  # None once pytest was interrupted
    if rep is not None and rep.failed and isinstance(view, NotebookPage):
        try:
            view.page.screenshot(path=str(view.shots / f"FAILED-{request.node.name}.png"))
        except Exception:
            pass
