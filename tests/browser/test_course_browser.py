"""The student versions of the five course notebooks, run top to bottom in a real JupyterLab in
headless Chromium, with no answer filled in.

nbval checks what the instructor notebooks compute; this checks what a student sees under Run All in
the version ``python -m sftviz.course student`` writes (no solutions, no outputs): every cell runs
without an error in JupyterLab's own kernel, each exercise says "Not answered yet" instead of raising,
every widget of the notebook renders its view (not the static fallback), no widget shows an error,
the page logs no JavaScript error, and nothing reveals an answer. A screenshot of each notebook's first
widget goes to the screenshots folder (``course_NN.png``).
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from harness import CONTRAST

from conftest import ROOT, Budget, NotebookPage

pytestmark = [pytest.mark.browser, pytest.mark.run_cache]

NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))
# The widget views each notebook shows (class of the view's root element: how many at least).
WIDGETS = {
    "01": {"sftviz-lpx": 1, "sftviz-quizw": 1},
    "02": {"sftviz-tokenview": 2, "sftviz-quizw": 1},
    "03": {"sftviz-gradview": 1, "sftviz-quizw": 1},
    "04": {"sftviz-labpanel": 1, "sftviz-quizw": 1},
    "05": {"sftviz-tokenview": 4, "sftviz-quizw": 1},
    "06": {"sftviz-tokenview": 1},
    "07": {"sftviz-quizw": 1},
}

CELLS_STATE = """() => {
  const app = window.jupyterapp; const w = app && app.shell && app.shell.currentWidget;
  const model = w && w.content && w.content.model;
  const kernel = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  if (!model || !kernel) return null;
  const out = {idle: kernel.status === 'idle', waiting: 0, errors: []};
  for (let i = 0; i < model.cells.length; i++) {
    const c = model.cells.get(i);
    if (c.type !== 'code') continue;
    if (c.executionCount === null) out.waiting++;
    for (let j = 0; j < c.outputs.length; j++) {
      const o = c.outputs.get(j);
      if (o.type === 'error') { const d = o.toJSON(); out.errors.push(`cell ${i}: ${d.ename}: ${d.evalue}`); }
    }
  }
  return out;
}"""
# Live views only: the static HTML fallback of a widget carries the same class plus sftviz-static.
LONG_CELLS = ("04", "05")
# tqdm's bar is an ipywidgets FloatProgress (the MaskingLab's own <progress> element does not count).
PROGRESS = """() => document.querySelectorAll(
  '.jp-OutputArea-output .widget-progress, .jp-OutputArea-output .widget-hprogress').length"""
COUNT = "cls => document.querySelectorAll('.jp-OutputArea-output .' + cls + ':not(.sftviz-static)').length"
OUTPUT_TEXT = "() => [...document.querySelectorAll('.jp-OutputArea-output')].map(e => e.innerText).join('\\n')"
WIDGET_ERRORS = """() => [...document.querySelectorAll('.jp-OutputArea-output .sftviz .sftviz-error')]
  .filter(e => e.offsetParent !== null && e.textContent.trim()).map(e => e.textContent.trim())"""


@pytest.fixture(scope="module")
def budget():
    """Five notebooks need more than the widget tests' budget: notebooks 4 and 5 fine-tune for minutes on a
    slow 2-core CPU, beside scripts/test.sh's other job. The budget only bounds a hang."""
    env = "SFTVIZ_COURSE_BROWSER_BUDGET_S"
    return Budget(float(os.environ.get(env, "1200")), env)


@pytest.fixture
def page(browser_context):
    """A fresh page per notebook (closing it skips the 'leave the page?' prompt of an unsaved notebook)."""
    p = browser_context.new_page()
    yield p
    p.close()


def _copy_student_version(src: Path, dest_dir: Path) -> tuple:
    """Write the student version of ``src`` (no solutions, no outputs); returns (name, exercises)."""
    from sftviz.course import is_graded, student_version

    student, n = student_version(nbformat.read(src, as_version=4))
    assert n >= 1 or not is_graded(src), f"{src.name} has graded cells but no exercise"  # notebook 6 has none
    nbformat.write(student, dest_dir / src.name)
    return src.name, n


def test_notebook_list_matches():
    assert sorted(p.name[:2] for p in NOTEBOOKS) == sorted(WIDGETS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_course_notebook_runs_and_renders(path, jupyter_lab, page, budget, shots_dir):
    view = NotebookPage(page, jupyter_lab, budget, shots_dir)
    name, exercises = _copy_student_version(path, jupyter_lab.root)
    try:
        view.open_notebook(name)

        def done():
            state = view.js(CELLS_STATE)
            if state and state["errors"]:
                raise AssertionError(f"{name}: a cell raised in JupyterLab:\n" + "\n".join(state["errors"])[-3000:])
            return bool(state) and state["waiting"] == 0 and state["idle"]

        # The student version has no outputs, so every code cell counts as waiting until it has run.
        view.poll(f"{name}: every code cell to run and the kernel to be idle", done, timeout=400, interval=0.5)
        for cls, n in WIDGETS[path.name[:2]].items():
            view.poll(f"{name}: {n} rendered .{cls} view(s)", lambda cls=cls, n=n: view.js(COUNT, cls) >= n, timeout=30)
        assert view.js(WIDGET_ERRORS) == [], f"{name}: a widget shows an error"
        if path.name[:2] in LONG_CELLS:  # the long training cells show a progress bar (with the time left)
            view.poll(
                f"{name}: a progress bar in the training cell's output", lambda: view.js(PROGRESS) >= 1, timeout=30
            )
        text = view.js(OUTPUT_TEXT)
        # Every unanswered exercise says so (notebook 5's one cell checks three runs), and none is marked correct.
        assert text.count("Not answered yet") >= exercises, f"{name}: an exercise gave no 'Not answered yet' feedback"
        assert "Correct:" not in text and "\u2714 Correct" not in text, (
            f"{name}: a check says Correct with no answer given"
        )
        assert view.page_errors == [], f"{name}: JavaScript errors on the page: {view.page_errors}"
        first = next(iter(WIDGETS[path.name[:2]]))
        view.screenshot(page.locator(f".jp-OutputArea-output:has(.{first})").first, f"course_{path.name[:2]}")
    except BaseException:
        try:
            page.screenshot(path=str(shots_dir / f"FAILED-course_{path.name[:2]}.png"), full_page=True)
        except Exception:
            pass
        raise
    finally:
        # Free the CPU for the next notebook: shut this notebook's kernel down.
        try:
            view.js("() => window.jupyterapp.serviceManager.sessions.shutdownAll()")
        except Exception:
            pass


TOKEN_BOXES = """() => [...document.querySelectorAll('.jp-OutputArea-output span.sftviz-tok')].map(e => {
  const cs = getComputedStyle(e);
  return {display: cs.display, top: cs.borderTopStyle, weight: parseInt(cs.fontWeight, 10),
          bg: cs.backgroundColor, text: e.textContent};
})"""


def test_committed_notebook_is_legible_before_it_runs(jupyter_lab, page, budget, shots_dir):
    """A committed notebook opened without running is untrusted: JupyterLab strips its <style> blocks and
    data attributes. The static views' inline styles must still show a box per token, trained (solid,
    bold) apart from masked (dashed)."""
    import shutil

    name = "committed_02.ipynb"
    shutil.copy(ROOT / "notebooks" / "02_sft_as_language_modelling.ipynb", jupyter_lab.root / name)
    view = NotebookPage(page, jupyter_lab, budget, shots_dir)
    page.goto(f"{jupyter_lab.url}/lab/tree/{name}?reset&token={jupyter_lab.token}", wait_until="domcontentloaded")
    boxes = view.poll(
        f"{name}: the committed outputs' token elements to show",
        lambda: (lambda b: b if len(b) > 50 else None)(view.js(TOKEN_BOXES)),
        timeout=90,
    )
    assert view.js("() => document.querySelectorAll('.jp-OutputArea-output style').length") == 0, (
        "the notebook's outputs kept their <style> blocks: it was not opened untrusted, so this test shows nothing"
    )
    assert all(b["display"] == "inline-block" for b in boxes), "tokens without the stylesheet should still be boxes"
    masked = [b for b in boxes if b["top"] == "dashed"]
    trained = [b for b in boxes if b["top"] == "solid" and b["weight"] >= 600]
    assert masked and trained, f"trained and masked tokens should look different: {boxes[:5]}"
    # (the rest are the shifted view's input row, solid and thin, and the legend's segment swatches; the
    # X-ray of a pipeline that trains almost everything makes trained boxes as many as masked ones)
    assert len(masked) >= 10 and len(trained) >= 10, (len(masked), len(trained))
    assert all(b["bg"] not in ("rgba(0, 0, 0, 0)", "transparent") for b in masked + trained)
    view.screenshot(page.locator(".jp-OutputArea-output:has(span.sftviz-tok)").first, "committed_untrusted_02")
    # In the dark theme too, every text of the static views stays readable: the inline styles give the
    # token boxes dark text on their light tints; labels and tables take the theme's colours.
    view.js("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    try:
        view.wait_js("the dark theme", "() => document.body.dataset.jpThemeLight === 'false'", timeout=30)
        page.wait_for_timeout(500)
        texts = view.js(
            f"() => [...document.querySelectorAll('.jp-OutputArea-output div.sftviz')].flatMap(r => ({CONTRAST})(r))"
        )
        low = [t for t in texts if t["ratio"] < t["need"]]
        assert len(texts) > 100 and not low, f"{len(low)} of {len(texts)} texts below WCAG contrast: {low[:8]}"
        view.screenshot(page.locator(".jp-OutputArea-output:has(span.sftviz-tok)").first, "committed_untrusted_02_dark")
    finally:
        view.js("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
