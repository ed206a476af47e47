"""Check the live widgets in a real JupyterLab in headless Chromium, and take their screenshots.

Not a test (browser tests in CI are a separate job): a helper to run by hand after changing the
widgets' JS or CSS. It writes a small notebook that uses every widget into a temporary folder,
starts JupyterLab on it, runs all cells, then clicks, types and hovers the way a student would and
checks what happens (a click toggles a token through Python, position 0 is refused with an error in
the widget, typing rescores, too-long text shows an error and keeps the text, Stop keeps the curves,
hostile text stays text). Screenshots of each widget go to ``--shots`` (default docs/img), as small
palette PNGs.

JupyterLab and Chromium are started, driven and shut down by ``tests/browser/harness.py``, the same
harness the browser tests use (fresh temporary folders, a free port and a random token, headless
system Chromium with a fresh profile, everything ended at exit, kernels included).

Needs: ``apt-get install -y chromium`` and ``pip install playwright`` (never ``playwright install``).

    python scripts/check_widgets_browser.py                 # checks + screenshots into docs/img
    python scripts/check_widgets_browser.py --shots /tmp/s  # elsewhere
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "browser"))  # the browser harness, shared with the browser tests

import harness as H  # noqa: E402

# With the file browser collapsed (the harness does that), outputs are 748 px wide: the screenshots in docs/img.
VIEWPORT = {"width": 928, "height": 1000}
CELLS = [
    """import sftviz as sv
from sftviz import widgets as W
model, tok = sv.load_model()
rows = sv.load_dataset("support")
ex = sv.build_example(tok, **rows[3])
rep = sv.score(model, tok, example=ex)""",
    "W.TokenView(rep, title='One training example, token by token')",
    "W.TokenView(sv.build_example(tok, **rows[3]), shifted=True, title='The shifted view: what predicts what')",
    "W.LogProbExplorer(model, tok, title='joint = marginal + conditional, token by token')",
    "W.GradientView(model, tok, ex, title='Where the gradient goes: completion-only vs full loss')",
    "W.Quiz('all', ids=['joint-above-marginal', 'why-mask-the-prompt', 'token-mean-vs-sequence-mean'])",
    "lab = W.MaskingLab(model, tok, steps=60, eval_every=15); lab",
    """bad = '<img src=x onerror=alert(1)> </script><script>alert(2)</script> "q" & \\'a\\''
W.TokenView(sv.build_example(tok, prompt=bad, completion=' & <b>bold</b> "x"', warn=False), title=bad)""",
    "W.TokenView(sv.build_example(tok, messages=sv.load_dataset('support-chat')[0]['messages']), title='A chat example')",
]


def write_notebook(folder: Path) -> str:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(folder / "widgets.ipynb"))
    return "widgets.ipynb"


def small_png(path: Path, max_height: int | None = None, colours: int = 96):
    """Shrink a screenshot: optional crop, then a palette PNG."""
    try:
        from PIL import Image
    except ImportError:
        return
    im = Image.open(path).convert("RGB")
    if max_height and im.height > max_height:
        im = im.crop((0, 0, im.width, max_height))
    im.quantize(colors=colours, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Check the widgets in JupyterLab + headless Chromium; take screenshots.")
    ap.add_argument("--shots", default=str(ROOT / "docs" / "img"))
    ap.add_argument("--port", type=int, default=0, help="JupyterLab's port (default: a free one)")
    ap.add_argument(
        "--chromium",
        default=None,
        help="the Chromium executable (default: $SFTVIZ_CHROMIUM, chromium on PATH, /usr/bin/chromium)",
    )
    args = ap.parse_args(argv)
    chromium = args.chromium or H.find_chromium()
    missing = H.browser_missing(chromium)
    if missing is not None:
        print(f"cannot run: {missing}", file=sys.stderr)
        return 2

    shots = Path(args.shots)
    shots.mkdir(parents=True, exist_ok=True)
    budget = H.Budget.from_env("SFTVIZ_CHECK_BUDGET_S", 900)  # the harness's own waits, all together
    lab = H.Lab(budget)  # fresh temporary folders; started below
    browser = H.Chromium(chromium, viewport=VIEWPORT)
    failures = []

    def check(name, cond, detail=""):
        print(("PASS " if cond else "FAIL ") + name + (f"  ({detail})" if detail else ""), flush=True)
        if not cond:
            failures.append(name)

    try:
        nb_name = write_notebook(lab.root)
        lab.start(port=args.port or None)
        with browser:
            view = H.NotebookPage(browser.page(), lab, budget, shots)
            page = view.page
            dialogs, errors = view.dialogs, view.page_errors  # both recorded by the harness
            view.open_notebook(nb_name)  # fresh workspace, kernel connected, Run All
            view.wait_cells_run(timeout=300)
            page.wait_for_timeout(2500)
            cells = page.locator(".jp-Notebook .jp-CodeCell")

            def out(i):
                return cells.nth(i).locator(".jp-OutputArea-output").first

            def shot(i, name, max_height=None):
                loc = out(i)
                loc.scroll_into_view_if_needed()
                page.wait_for_timeout(300)
                path = shots / f"{name}.png"
                loc.screenshot(path=str(path))
                small_png(path, max_height)

            check("no error outputs", page.locator("[data-mime-type='application/vnd.jupyter.error']").count() == 0)

            # TokenView
            tv = out(1)
            n_tok = tv.locator(".sftviz-tok[data-sftviz-role='token']").count()
            n_attr = tv.locator(
                ".sftviz-tok[data-sftviz-role='token'][data-sftviz-segment][data-sftviz-trained]"
            ).count()
            check("token view renders the tokens", n_tok > 10 and n_attr == n_tok, n_tok)
            check(
                "tokens carry data-sftviz-segment and data-sftviz-trained",
                tv.locator(".sftviz-tok[data-sftviz-segment='prompt'][data-sftviz-trained='false']").count() > 0
                and tv.locator(".sftviz-tok[data-sftviz-segment='completion'][data-sftviz-trained='true']").count() > 0,
            )
            shot(1, "token_view")
            before = tv.locator(".sftviz-summary").inner_text()
            t5 = tv.locator(".sftviz-tok[data-sftviz-position='5']")
            t5.hover()
            page.wait_for_timeout(300)
            tip = tv.locator(".sftviz-tip")
            check(
                "hover shows the tooltip with the shift",
                tip.is_visible() and "predicted from position 4" in tip.inner_text(),
            )
            shot(1, "token_view_hover")
            t5.click()
            page.wait_for_function(
                "() => document.querySelectorAll('.jp-CodeCell')[1].querySelector(\".sftviz-tok[data-sftviz-position='5']\")"
                ".dataset.sftvizTrained === 'true'",
                timeout=10000,
            )
            check("a click toggles the token through Python", tv.locator(".sftviz-summary").inner_text() != before)
            tv.locator(".sftviz-tok[data-sftviz-position='0']").click()
            page.wait_for_timeout(1200)
            err = tv.locator(".sftviz-error:not(.sftviz-hidden)")
            check(
                "position 0 is refused with an error in the widget",
                err.count() == 1 and "Position 0" in err.inner_text(),
            )
            check(
                "position 0 stays masked",
                tv.locator(".sftviz-tok[data-sftviz-position='0']").get_attribute("data-sftviz-trained") == "false",
            )
            shot(2, "token_view_shifted")
            # LogProbExplorer
            lp = out(3)
            check("explorer shows the identity", lp.locator("[data-sftviz-sum='joint']").count() == 1)
            shot(3, "logprob_explorer", max_height=760)
            j0 = lp.locator("[data-sftviz-sum='joint']").inner_text()
            box = lp.locator("textarea.sftviz-text-completion")
            box.click()
            box.press("End")
            box.type(" Thanks!", delay=30)
            page.wait_for_timeout(1500)
            check("typing rescores (debounced)", lp.locator("[data-sftviz-sum='joint']").inner_text() != j0)
            long_text = "word " * 400
            box.fill(long_text)
            page.wait_for_timeout(2000)
            lerr = lp.locator(".sftviz-error:not(.sftviz-hidden)")
            check(
                "too-long text: error inside the widget",
                lerr.count() >= 1 and "reads at most" in lerr.first.inner_text(),
            )
            check("too-long text: the text is kept", box.input_value() == long_text)
            shot(3, "logprob_explorer_error", max_height=420)
            # GradientView
            check("gradient view draws bars", out(4).locator(".sftviz-bar-masked").count() > 10)
            shot(4, "gradient_view")
            # Quiz
            qz = out(5)
            qz.locator(".sftviz-qcard").nth(0).locator(".sftviz-choice").nth(0).click()
            page.wait_for_timeout(700)
            qz.locator(".sftviz-qcard").nth(1).locator(".sftviz-choice").nth(3).click()
            page.wait_for_timeout(700)
            check("quiz gives immediate feedback", qz.locator(".sftviz-feedback").count() == 2)
            shot(5, "quiz", max_height=640)
            # MaskingLab: three runs overlaid, the last one stopped
            lab_out = cells.nth(6).locator(".jp-OutputArea-output").first
            status = "() => document.querySelectorAll('.jp-CodeCell')[6].querySelector('.sftviz-status').textContent"

            def run_and_wait(n, stop_after=None):
                lab_out.get_by_role("button", name="Run").click()
                if stop_after is not None:
                    page.wait_for_timeout(stop_after)
                    if lab_out.get_by_role("button", name="Stop").is_enabled():
                        lab_out.get_by_role("button", name="Stop").click()
                page.wait_for_function(f"() => /#{n}.*(stopped|finished|error)/.test(({status})())", timeout=240000)

            run_and_wait(1)
            lab_out.locator("select").first.select_option(label="full sequence (no mask)")
            run_and_wait(2)
            lab_out.locator("select").first.select_option(label="prompt-loss weight")
            run_and_wait(3, stop_after=2500)
            text = page.evaluate(status)
            npts = page.evaluate(
                "() => document.querySelectorAll('.jp-CodeCell')[6].querySelector('.js-plotly-plot')"
                ".data.map(t => (t.x || []).length)"
            )
            check("three runs overlaid", len(npts) == 18 and min(npts[:6]) > 0, npts)
            check(
                "the stopped run keeps its curves",
                "#3" in text and ("stopped" in text or "finished" in text) and npts[12] > 0,
                text,
            )
            shot(6, "masking_lab")
            # escaping
            hv = out(7)
            check("hostile text: no <img> element", hv.locator("img").count() == 0)
            check("hostile text: no alert", not dialogs, dialogs)
            check("hostile text shown as text", "onerror=alert(1)" in hv.inner_text())
            shot(7, "escaping")
            shot(8, "token_view_chat")
            # The dark theme: the same widgets in JupyterLab Dark (the lab's figure follows it from Python).
            page.evaluate(
                "() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})"
            )
            page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=30000)
            page.wait_for_function(
                "() => { const gd = document.querySelectorAll('.jp-CodeCell')[6].querySelector('.js-plotly-plot');"
                " return !!gd && gd.layout.font.color === '#e8e8e8'; }",
                timeout=30000,
            )
            page.wait_for_timeout(500)
            for i, name in ((1, "token_view_dark"), (3, "logprob_explorer_dark"), (6, "masking_lab_dark")):
                shot(i, name, max_height=640)
            check(
                "no page errors from the widgets",
                not [e for e in errors if "sftviz" in e or "anywidget" in e],
                errors[:3],
            )
    except BaseException:
        print(f"JupyterLab log tail:\n{H.tail(lab.log_path)}", file=sys.stderr)
        raise
    finally:
        browser.close()  # Chromium and its profile (again, if the `with` already did)
        lab.close()  # JupyterLab, its process group, its kernels and its folders
    print(f"screenshots in {shots}")
    print("FAILURES: " + (", ".join(failures) if failures else "none"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
