"""The widgets in a real JupyterLab in headless Chromium (issue 7).

The tests share one JupyterLab and one page (module fixtures in conftest.py) and run in file order:
tests/browser/widgets_e2e.ipynb is copied to a temporary folder, opened with ``?reset``, and run
once; then each test clicks or types the way a student would and checks the page against what
Python computed. Screenshots of each widget go to ``$SFTVIZ_SCREENSHOTS`` (default artifacts/browser/).

    pytest tests/browser -v                 # only these
    pytest -m "not browser"                 # everything else
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from harness import CONTRAST

pytestmark = pytest.mark.browser

TOKENVIEW = ".sftviz-tokenview"
EXPLORER = ".sftviz-lpx"
LAB = ".sftviz-masking-lab"
TOKEN_STATES = """() => [...document.querySelectorAll(".sftviz-tokenview .sftviz-tok[data-sftviz-role='token']")]
    .map(e => ({position: +e.dataset.sftvizPosition, segment: e.dataset.sftvizSegment, trained: e.dataset.sftvizTrained}))"""
TRAINED_AT = """p => { const e = document.querySelector(
    ".sftviz-tokenview .sftviz-tok[data-sftviz-role='token'][data-sftviz-position='" + p + "']");
    return e ? e.dataset.sftvizTrained : null; }"""
SUMS = """() => Object.fromEntries([...document.querySelectorAll(".sftviz-lpx [data-sftviz-sum]")]
    .map(e => [e.dataset.sftvizSum, e.textContent]))"""
POINTS = """() => { const gd = document.querySelector('.sftviz-masking-lab .js-plotly-plot');
    return gd && gd.data ? gd.data.map(t => (t.x || []).length) : null; }"""
LAB_STATUS = (
    "() => (document.querySelector('.sftviz-masking-lab .sftviz-labpanel .sftviz-status') || {}).textContent || ''"
)
LAB_ERROR = (
    "() => (document.querySelector('.sftviz-masking-lab .sftviz-labpanel .sftviz-error') || {}).textContent || ''"
)
TRAIN_PANELS = (0, 1, 2, 5)  # MaskingLab.PANELS: loss, prompt NLL, completion NLL, (eval, eval), grad norm


def _num(text: str) -> float:
    return float(text.replace("\u2212", "-"))


def _token(nb, position):
    return nb.output(TOKENVIEW).locator(f".sftviz-tok[data-sftviz-role='token'][data-sftviz-position='{position}']")


def _seen(nb) -> dict:
    text = nb.output(".sftviz-e2e-seen").locator(".sftviz-e2e-seen").inner_text().strip()
    return json.loads(text) if text.startswith("{") else {"changes": 0, "trained": None}


# --------------------------------------------------------------------------------------------
# TokenView
# --------------------------------------------------------------------------------------------


def test_token_view_marks_trained_and_masked_tokens(nb):
    exp = nb.expected
    toks = nb.js(TOKEN_STATES)
    assert [t["position"] for t in toks] == list(range(exp["n"])), "token elements are not one per position, in order"
    assert [t["segment"] for t in toks] == exp["segments"], "data-sftviz-segment differs from the Python example"
    assert [t["trained"] for t in toks] == ["true" if v else "false" for v in exp["trained"]], (
        "data-sftviz-trained differs from the Python example's labels"
    )
    n_true = sum(t["trained"] == "true" for t in toks)
    assert (n_true, len(toks) - n_true) == (exp["n_trained"], exp["n_masked"])
    # The known example: BOS and prompt masked, the completion and its EOS trained.
    by_seg = {}
    for t in toks:
        by_seg.setdefault(t["segment"], set()).add(t["trained"])
    assert by_seg.get("bos") == {"false"} and by_seg.get("prompt") == {"false"}, by_seg
    assert by_seg.get("completion") == {"true"} and by_seg.get("eos") == {"true"}, by_seg
    assert nb.output(TOKENVIEW).locator(".sftviz-error").first.is_hidden(), "TokenView shows an error at start"
    nb.screenshot(nb.output(TOKENVIEW), "token_view")


TIP_INSIDE = """([out, n]) => {
    const o = document.querySelectorAll(".jp-OutputArea-output")[out] || null;
    const tip = document.querySelector(".sftviz-tokenview .sftviz-tip");
    if (!tip || tip.classList.contains("sftviz-hidden")) return null;
    const a = tip.getBoundingClientRect(), b = o.getBoundingClientRect();
    return {top: a.top - b.top, bottom: b.bottom - a.bottom, lines: tip.textContent.split("\\n").length, n};
}"""


def test_tooltip_of_the_last_token_is_not_cut_off(nb):
    exp = nb.expected
    out = nb.output(TOKENVIEW)
    index = nb.js(
        """() => [...document.querySelectorAll(".jp-OutputArea-output")].findIndex(
            o => o.querySelector(".sftviz-tokenview"))"""
    )
    for position in (1, exp["n"] - 1):  # a prompt token (first row) and the EOS (last row)
        _token(nb, position).hover()
        box = nb.poll(f"the tooltip of token {position} to show", lambda p=position: nb.js(TIP_INSIDE, [index, p]), 10)
        assert box["top"] >= 0 and box["bottom"] >= 0, (
            f"token {position}'s tooltip sticks out of the output area (clipped there): {box}"
        )
        assert box["lines"] >= 3, box
    nb.screenshot(out, "token_view_tooltip_last")
    nb.page.mouse.move(1, 1)


def test_click_flips_a_token_through_python(nb):
    exp = nb.expected
    prompt_pos = [i for i, s in enumerate(exp["segments"]) if s == "prompt"]
    completion_pos = [i for i, s in enumerate(exp["segments"]) if s == "completion"]
    p, c = prompt_pos[len(prompt_pos) // 2], completion_pos[-1]
    want = {i for i, t in enumerate(exp["trained"]) if t}
    for position in (p, p, c, c):
        before = _seen(nb)["changes"]
        now = nb.js(TRAINED_AT, position)
        flipped = "false" if now == "true" else "true"
        want ^= {position}
        _token(nb, position).click()
        nb.wait_js(
            f"token {position} ({exp['segments'][position]}) to show data-sftviz-trained={flipped} after a click "
            "(the view redraws from the tokens Python sends back)",
            f"() => ({TRAINED_AT})({position}) === '{flipped}'",
            timeout=20,
        )
        seen = nb.poll(
            f"the kernel's observer to report the click on token {position}",
            lambda before=before: (lambda s: s if s["changes"] > before else None)(_seen(nb)),
            timeout=20,
        )
        assert set(seen["trained"]) == want, (
            f"after clicking token {position}, Python's example trains "
            f"{sorted(seen['trained'])}, expected {sorted(want)}"
        )
        assert seen["masking"] == "custom"
        dom = {t["position"] for t in nb.js(TOKEN_STATES) if t["trained"] == "true"}
        assert dom == want, f"page shows trained {sorted(dom)}, Python {sorted(want)}"
        if position == p and flipped == "true":
            nb.screenshot(nb.output(TOKENVIEW), "token_view_clicked")
    assert want == {i for i, t in enumerate(exp["trained"]) if t}  # back where it started


PRESSED_AT = """p => { const e = document.querySelector(
    ".sftviz-tokenview .sftviz-tok[data-sftviz-role='token'][data-sftviz-position='" + p + "']");
    return e ? e.getAttribute("aria-pressed") : null; }"""
FOCUSED_POSITION = (
    "() => { const a = document.activeElement; return a && a.dataset ? a.dataset.sftvizPosition : null; }"
)


def test_keyboard_toggle_keeps_focus_and_is_announced(nb):
    exp = nb.expected
    c = next(i for i, s in enumerate(exp["segments"]) if s == "completion")
    chip = _token(nb, c)
    live = nb.output(TOKENVIEW).locator(".sftviz-sr-only[aria-live='polite']")
    assert chip.get_attribute("role") == "button"
    for key in ("Enter", " "):  # toggle, then toggle back
        before = chip.get_attribute("aria-pressed")
        assert before in ("true", "false") and f"token {c} " in chip.get_attribute("aria-label")
        flipped = "false" if before == "true" else "true"
        chip.focus()
        nb.page.keyboard.press(key)
        nb.poll(
            f"token {c} to be aria-pressed={flipped} after {key!r} on it",
            lambda flipped=flipped: nb.js(PRESSED_AT, c) == flipped or None,
            timeout=20,
        )
        assert nb.js(FOCUSED_POSITION) == str(c), "the focus left the toggled token (it should stay where it was)"
        word = "trained" if flipped == "true" else "masked"
        nb.poll(
            f"the live region to announce token {c} now {word}",
            lambda word=word: f"token {c} " in live.text_content() and f"now {word}" in live.text_content(),
            timeout=10,
        )
    assert chip.get_attribute("aria-pressed") == ("true" if exp["trained"][c] else "false")  # back where it was


def test_refused_click_shows_an_error_in_the_token_view(nb):
    before = _seen(nb)
    _token(nb, 0).click()  # position 0 (BOS) can never be a target
    err = nb.output(TOKENVIEW).locator(".sftviz-error[role='alert']")
    nb.poll(
        "TokenView's error box to explain that position 0 cannot be trained",
        lambda: err.is_visible() and "Position 0" in err.inner_text(),
        timeout=20,
    )
    nb.page.wait_for_timeout(500)  # the undo from Python has arrived with the error; let the view settle
    assert nb.js(TRAINED_AT, 0) == "false", "position 0 shows as trained after a refused click"
    # (traitlets may still notify observers of the refusal, with old == new: what counts is the example)
    after = _seen(nb)
    if after["trained"] is not None:
        dom = {t["position"] for t in nb.js(TOKEN_STATES) if t["trained"] == "true"}
        assert 0 not in after["trained"] and set(after["trained"]) == dom, (
            f"Python's example and the page disagree after a refused click on position 0: {before} -> {after}, page {dom}"
        )
    nb.screenshot(nb.output(TOKENVIEW), "token_view_error")


# --------------------------------------------------------------------------------------------
# LogProbExplorer
# --------------------------------------------------------------------------------------------


def test_typing_a_completion_changes_joint_and_conditional(nb):
    out = nb.output(EXPLORER)
    s0 = nb.js(SUMS)
    assert set(s0) >= {"joint", "marginal", "conditional"}, s0
    n_completion = out.locator(".sftviz-strip .sftviz-tok[data-sftviz-segment='completion']").count()
    box = out.locator("textarea.sftviz-text-completion")
    box.click()
    box.press("Control+End")
    box.press_sequentially(" Thanks!", delay=20)

    def rescored():
        s = nb.js(SUMS)
        return s if s["joint"] != s0["joint"] and s["conditional"] != s0["conditional"] else None

    s1 = nb.poll("the joint and conditional to change after typing into the completion box", rescored, timeout=30)
    assert s1["marginal"] == s0["marginal"], "the prompt did not change, so log Pr(x) must not"
    assert abs(_num(s1["joint"]) - (_num(s1["marginal"]) + _num(s1["conditional"]))) < 0.0025, s1
    assert _num(s1["conditional"]) < _num(s0["conditional"]), "more completion tokens must lower log Pr(y | x)"
    assert out.locator(".sftviz-strip .sftviz-tok[data-sftviz-segment='completion']").count() > n_completion
    assert box.input_value().endswith(" Thanks!")
    nb.screenshot(out, "logprob_explorer")


def test_too_long_completion_shows_an_error_and_keeps_the_text(nb):
    out = nb.output(EXPLORER)
    box = out.locator("textarea.sftviz-text-completion")
    good = box.input_value()
    long_text = "word " * 400
    box.fill(long_text)
    err = out.locator(f"{EXPLORER} > .sftviz-error[role='alert']")
    nb.poll(
        "LogProbExplorer's error box to say the text is too long for the model",
        lambda: err.is_visible() and "reads at most" in err.inner_text(),
        timeout=30,
    )
    assert box.input_value() == long_text, "the too-long text was not kept in the box"
    assert out.locator(".sftviz-results.sftviz-stale").count() == 1, "the last good scores are not shown as stale"
    nb.screenshot(out, "logprob_explorer_error")
    box.fill(good)  # and it recovers
    nb.poll("the error to clear once the text fits again", lambda: err.is_hidden(), timeout=30)


def test_fast_typing_in_both_boxes_keeps_every_character(nb):
    """Edit the prompt, then the completion, within the debounce: neither box may revert, and the scores follow."""
    out = nb.output(EXPLORER)
    prompt_box = out.locator("textarea.sftviz-text-prompt")
    completion_box = out.locator("textarea.sftviz-text-completion")
    prompt0, completion0 = prompt_box.input_value(), completion_box.input_value()
    s0 = nb.js(SUMS)
    want = (prompt0 + " Please", completion0 + " Bye")
    # An edit of each box within a few milliseconds (well inside the debounce), as the browser reports
    # typing: the value changes, then an input event. Done in the page in one go, so that the test does
    # not depend on how fast the test driver can send keys.
    nb.js(
        """([p, c]) => { const q = s => document.querySelector(".sftviz-lpx textarea.sftviz-text-" + s);
        const pb = q("prompt"), cb = q("completion");
        pb.focus(); pb.value = p; pb.dispatchEvent(new InputEvent("input", {bubbles: true, data: "e"}));
        cb.focus(); cb.value = c; cb.dispatchEvent(new InputEvent("input", {bubbles: true, data: "e"})); }""",
        list(want),
    )

    def settled():
        s = nb.js(SUMS)
        boxes = (prompt_box.input_value(), completion_box.input_value())
        return (
            s if boxes == want and s["marginal"] != s0["marginal"] and s["conditional"] != s0["conditional"] else None
        )

    s1 = nb.poll("both boxes to keep the typed text and the scores to follow both", settled, timeout=30)
    nb.page.wait_for_timeout(600)  # past the debounce and the round trip: nothing may revert afterwards
    assert (prompt_box.input_value(), completion_box.input_value()) == want
    assert abs(_num(s1["joint"]) - (_num(s1["marginal"]) + _num(s1["conditional"]))) < 0.0025, s1
    prompt_box.fill(prompt0)  # leave the widget as the later tests expect it
    completion_box.fill(completion0)
    nb.poll("the original text to be scored again", lambda: nb.js(SUMS) == s0 or None, timeout=30)


# --------------------------------------------------------------------------------------------
# MaskingLab
# --------------------------------------------------------------------------------------------


def _points_when(nb, what: str, pred, timeout: float):
    """Poll the plot's point counts (one per trace) until ``pred(counts)``; returns them."""

    def check():
        pts = nb.js(POINTS)
        return pts if pts is not None and pred(pts) else None

    return nb.poll(what, check, timeout=timeout)


def _lab_finished(nb, run: int, word: str):
    def check():
        status, error = nb.js(LAB_STATUS), nb.js(LAB_ERROR)
        if error.strip():
            raise AssertionError(f"MaskingLab shows an error during run #{run}: {error.strip()} (status: {status!r})")
        if re.search(rf"#{run}\b[^:]*: (error|stopped|finished|done)", status):
            assert re.search(rf"#{run}\b[^:]*: {word}", status), f"run #{run} ended as {status!r}, expected {word}"
            return status
        return None

    return check


def test_masking_lab_curves_grow_while_training_and_stop_keeps_them(nb):
    out = nb.output(LAB)
    # (by text: the Font Awesome icon's ::before glyph is part of the buttons' accessible names)
    run_btn = out.locator("button").filter(has_text=re.compile(r"^\s*Run\s*$"))
    stop_btn = out.locator("button").filter(has_text=re.compile(r"^\s*Stop\s*$"))
    # Before the first run: no figure, and a note that says what will appear.
    assert nb.js(POINTS) is None, "the lab shows a figure before any run"
    empty = out.locator(".sftviz-empty").inner_text()
    assert "press Run" in empty and "completion NLL" in empty, f"the empty state should say what will appear: {empty!r}"
    nb.screenshot(out, "masking_lab_empty")
    # Sample the plot's point counts in the page every 40 ms while it trains.
    nb.js("""() => { window.__svSamples = []; window.__svSampler = setInterval(() => {
        const gd = document.querySelector('.sftviz-masking-lab .js-plotly-plot');
        if (gd && gd.data) window.__svSamples.push(gd.data.map(t => (t.x || []).length)); }, 40); }""")

    # Run 1: the notebook's 30 steps, to the end.
    run_btn.click()
    status = nb.poll("MaskingLab run #1 (30 steps) to finish", _lab_finished(nb, 1, "finished"), timeout=90)
    samples = nb.js("() => { clearInterval(window.__svSampler); return window.__svSamples; }")
    pts = _points_when(nb, "the plot to show run #1's 30 steps", lambda p: len(p) == 6 and p[0] == 30, timeout=10)
    assert all(pts[i] == 30 for i in TRAIN_PANELS), f"run #1 should have 30 points on each train curve: {pts}"
    assert pts[3] >= 2 and pts[4] >= 2, f"run #1's eval curves should have points at several steps: {pts}"
    during = sorted({s[0] for s in samples if len(s) == 6 and 0 < s[0] < 30})
    assert during, f"the loss curve was only drawn at the end, not while training (status {status!r})"
    counts = [s[0] for s in samples if len(s) == 6]
    assert counts == sorted(counts), "the loss curve lost points while training"

    # Run 2: many steps, stopped early; its curves must stay.
    steps = out.get_by_label("steps", exact=True)
    steps.fill("1000")
    steps.press("Tab")
    nb.poll("the steps box to read 1000", lambda: steps.input_value() == "1000", timeout=5)
    run_btn.click()
    first = _points_when(nb, "run #2's loss curve to get points", lambda p: len(p) == 12 and p[6] >= 2, timeout=60)[6]
    _points_when(nb, "run #2's loss curve to grow while training", lambda p: p[6] > first, timeout=30)
    assert "stopped" not in nb.js(LAB_STATUS) and stop_btn.is_enabled(), "run #2 is not running before Stop"
    assert "1000" in out.locator(".sftviz-labpanel").inner_text(), "run #2 did not take the 1000 steps typed in the box"
    heads = out.locator(".sftviz-labpanel th").all_inner_texts()
    assert "learning rate" in heads and "seed" in heads, f"the runs table should show lr and seed: {heads}"
    stop_btn.click()
    status = nb.poll("MaskingLab run #2 to stop after Stop", _lab_finished(nb, 2, "stopped"), timeout=60)
    pts = nb.js(POINTS)
    assert len(pts) == 12, f"both runs' curves should stay overlaid (6 traces each): {pts}"
    assert all(pts[i] == 30 for i in TRAIN_PANELS), f"run #1's curves changed: {pts[:6]}"
    assert all(0 < pts[6 + i] < 1000 for i in TRAIN_PANELS), (
        f"the stopped run #2 should keep its partial curves: {pts[6:]}"
    )
    nb.page.wait_for_timeout(800)
    assert nb.js(POINTS) == pts, "curves kept changing after the run stopped"
    assert run_btn.is_enabled() and stop_btn.is_disabled(), "after Stop, Run should be enabled and Stop disabled"
    nb.screenshot(out, "masking_lab")


QUIZ = ".sftviz-quizw"


def test_quiz_answer_by_keyboard_keeps_focus_on_the_choice(nb):
    out = nb.output(QUIZ)
    second = out.locator(".sftviz-qcard").nth(1)
    qid = second.get_attribute("data-sftviz-question")
    choice = second.locator(".sftviz-choice[data-sftviz-choice='1']")
    choice.focus()
    nb.page.keyboard.press("Enter")
    nb.poll(
        "the quiz to mark the second question's choice B and show feedback",
        lambda: choice.get_attribute("aria-checked") == "true" and second.locator(".sftviz-feedback").count() == 1,
        timeout=20,
    )
    where = nb.js(
        """() => { const a = document.activeElement; const card = a && a.closest ? a.closest(".sftviz-qcard") : null;
        return card ? [card.dataset.sftvizQuestion, a.dataset.sftvizChoice] : null; }"""
    )
    assert where == [qid, "1"], f"focus should stay on question {qid}'s choice B after answering, not {where}"
    head = second.locator(".sftviz-fbhead").inner_text()
    assert head.startswith("\u2717 Not quite: the answer is") and not head.endswith(".."), head
    nb.screenshot(out, "quiz")


def test_xray_marks_in_the_token_view_and_the_report_match_python(nb):
    want = json.loads(nb.marker("SFTVIZ_E2E_XRAY"))
    view, report = VIEWS["xray_token_view"], VIEWS["xray_report"]
    nb.wait_js("the X-ray views", "css => !!document.querySelector(css)", report, timeout=30)
    marks = nb.js("css => [...document.querySelectorAll(css + ' .sftviz-xr')].map(e => e.dataset.sftvizXray)", view)
    assert len(marks) == want["marks"] > 0 and set(marks) <= {"extra", "missing"}
    # every mark says what it means in words (not colour alone), for a screen reader too
    labels = nb.js(
        "css => [...document.querySelectorAll(css + ' .sftviz-xr-badge')].map(e => e.getAttribute('aria-label'))", view
    )
    assert all(label and "policy" in label for label in labels)
    lints = nb.js(
        "css => [...document.querySelectorAll(css + ' [data-sftviz-lint]')].map(e => e.dataset.sftvizLint)", report
    )
    assert sorted(lints) == want["lints"]
    nb.screenshot(nb.output(report), "xray_report")


def test_packed_row_view_draws_the_batch_python_packed(nb):
    want = json.loads(nb.marker("SFTVIZ_E2E_PACKED"))
    view = VIEWS["packed_row"]
    nb.wait_js("the packed-row view", "css => !!document.querySelector(css)", view, timeout=30)
    got = nb.js(
        """css => { const v = document.querySelector(css);
             return {chips: v.querySelectorAll('.sftviz-pk-tok').length, cross: +v.dataset.sftvizCrossKeys,
                     cells: v.querySelectorAll('svg.sftviz-pk-grid rect.sftviz-pk-cell').length,
                     boundaries: v.querySelectorAll('.sftviz-pk-tok[data-sftviz-target="boundary"]').length}; }""",
        view,
    )
    assert got["chips"] == want["positions"] and got["cells"] > 0
    assert got["cross"] == sum(want["cross"].values()) > 0 and got["boundaries"] == len(want["cross"])
    nb.screenshot(nb.output(view), "packed_row")


def test_no_uncaught_errors_in_the_page(nb):
    ours = [e for e in nb.page_errors if "sftviz" in e or "anywidget" in e or "widget" in e.lower()]
    assert not ours, f"uncaught errors in the page: {ours[:3]}"


# --------------------------------------------------------------------------------------------
# Every view, in the light and the dark theme and on a narrow screen: axe-core, computed contrast,
# layout, screenshots. These run last: they switch the theme and the window size (and switch back).
# --------------------------------------------------------------------------------------------

# Each view's root as it is in the page: the five widgets and the static views (a ScoreReport's HTML, the
# X-ray report, a packed row).
VIEWS = {
    "token_view": ".sftviz-tokenview:not(.sftviz-static)",
    "token_view_shifted": ".sftviz-tokenview:has(.sftviz-shift)",
    "logprob_explorer": EXPLORER,
    "masking_lab": LAB,
    "gradient_view": ".sftviz-gradview",
    "quiz": QUIZ,
    "static_view": ".sftviz-static.sftviz-logprobview",
    "xray_token_view": ".sftviz-tokenview.sftviz-xrayview",
    "xray_report": ".sftviz-static.sftviz-xray",
    "packed_row": ".sftviz-static.sftviz-packedview",
}
THEMES = {"light": "JupyterLab Light", "dark": "JupyterLab Dark"}


def _wcag_ratio(fg, bg) -> float:
    def lum(c):
        f = [(v / 255 / 12.92 if v / 255 <= 0.03928 else ((v / 255 + 0.055) / 1.055) ** 2.4) for v in c[:3]]
        return 0.2126 * f[0] + 0.7152 * f[1] + 0.0722 * f[2]

    a, b = lum(fg), lum(bg)
    return (max(a, b) + 0.05) / (min(a, b) + 0.05)


def test_the_contrast_check_measures_what_wcag_defines(nb):
    """The contrast check itself, on a probe with known colours: plain, translucent, tinted, hatched."""
    probe = """() => { const d = document.createElement('div'); d.id = 'sv-probe'; d.style.background = '#ffffff';
        d.innerHTML = '<span style="color:#777777">grey</span>' +
          '<span style="color:rgba(0,0,0,0.54);background-color:color-mix(in srgb, #0072B2 16%, #ffffff)">tint</span>' +
          '<span style="color:#000000;background-image:repeating-linear-gradient(135deg,' +
          ' rgb(255,255,255) 0 4px, rgb(60,60,60) 4px 7px)">hatch</span>' +
          '<span style="color:#767676;font-size:24px">large</span>';
        document.querySelector('.jp-OutputArea-output').appendChild(d); return true; }"""
    nb.js(probe)
    try:
        got = {r["text"]: r for r in nb.js(f"() => ({CONTRAST})(document.getElementById('sv-probe'))")}
    finally:
        nb.js("() => document.getElementById('sv-probe').remove()")
    assert got["grey"]["ratio"] == pytest.approx(_wcag_ratio((119,) * 3, (255,) * 3), abs=0.01)
    assert got["grey"]["need"] == 4.5 and got["large"]["need"] == 3
    # rgba(0,0,0,.54) over the tint (16% of #0072B2 into white, as Chromium rounds it)
    tint = [round(255 * 0.84 + c * 0.16) for c in (0x00, 0x72, 0xB2)]
    text = [0.46 * t for t in tint]
    assert got["tint"]["ratio"] == pytest.approx(_wcag_ratio(text, tint), abs=0.05)
    # over hatching the worst stripe counts: black on rgb(60,60,60)
    assert got["hatch"]["ratio"] == pytest.approx(_wcag_ratio((0,) * 3, (60,) * 3), abs=0.01)


def _set_theme(nb, theme: str) -> None:
    light = "true" if theme == "light" else "false"
    nb.js("t => window.jupyterapp.commands.execute('apputils:change-theme', {theme: t})", THEMES[theme])
    nb.poll(
        f"JupyterLab to switch to its {theme} theme",
        lambda: nb.js(
            """l => document.body.dataset.jpThemeLight === l &&
                   getComputedStyle(document.body).getPropertyValue('--jp-layout-color1').trim() !== ''""",
            light,
        ),
        timeout=30,
    )
    # The MaskingLab's figure is drawn by Python: it follows once the panel has told the kernel.
    want = "#e8e8e8" if theme == "dark" else "#1a1a1a"
    nb.poll(
        f"the MaskingLab figure to follow the {theme} theme",
        lambda: (
            nb.js(
                "() => { const gd = document.querySelector('.sftviz-masking-lab .js-plotly-plot'); "
                "return gd ? gd.layout.font.color : null; }"
            )
            == want
        ),
        timeout=30,
    )
    nb.page.wait_for_timeout(300)


def _views_ready(nb) -> None:
    for name, css in VIEWS.items():
        nb.wait_js(f"the {name} view to be in the page", "css => !!document.querySelector(css)", css, timeout=30)
    nb.wait_js(
        "the GradientView to draw its bars",
        "() => document.querySelectorAll('.sftviz-gradview .sftviz-bars .sftviz-bar').length > 0",
        timeout=30,
    )
    assert nb.js(POINTS), "the accessibility checks expect the MaskingLab with runs (run the lab test first)"


def _axe(nb, css: str) -> list:
    import axe_playwright_python

    if not nb.js("() => typeof window.axe === 'object'"):
        nb.page.add_script_tag(path=str(Path(axe_playwright_python.__file__).parent / "axe.min.js"))
    result = nb.js(
        """css => axe.run(document.querySelector(css), {
              runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']},
              resultTypes: ['violations']})
            .then(r => r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                               nodes: v.nodes.slice(0, 3).map(n => n.html.slice(0, 120))})))""",
        css,
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_every_view_passes_axe_and_contrast(nb, theme):
    _views_ready(nb)
    try:
        _set_theme(nb, theme)
        problems = {}
        for name, css in VIEWS.items():
            nb.page.locator(css).first.scroll_into_view_if_needed()
            bad = _axe(nb, css)
            low = [
                t
                for t in nb.js(f"() => ({CONTRAST})(document.querySelector({json.dumps(css)}))")
                if t["ratio"] < t["need"]
            ]
            # every enabled control, and every token a click acts on, is in the Tab order
            untabbable = nb.js(
                """css => [...document.querySelector(css).querySelectorAll(
                      'button, input, select, textarea, [role=button], .sftviz-choice, ' +
                      '.sftviz-editable .sftviz-tok[data-sftviz-role="token"]')]
                    .filter(e => !e.disabled && e.getBoundingClientRect().width > 0 && e.tabIndex < 0)
                    .map(e => e.outerHTML.slice(0, 80))""",
                css,
            )
            if bad or low or untabbable:
                problems[name] = {"axe": bad, "contrast": low[:8], "low contrast texts": len(low), "no Tab": untabbable}
            nb.screenshot(nb.output(css), f"{name}_{theme}")
        assert not problems, f"{theme} theme: {json.dumps(problems, indent=1)[:6000]}"
    finally:
        _set_theme(nb, "light")


@pytest.mark.parametrize("width", [800, 1600])
def test_every_view_fits_the_window(nb, width):
    _views_ready(nb)
    size = nb.page.viewport_size
    try:
        nb.page.set_viewport_size({"width": width, "height": 1000})
        nb.page.wait_for_timeout(800)  # JupyterLab and plotly lay out again
        for name, css in VIEWS.items():
            out = nb.output(css)
            out.scroll_into_view_if_needed()
            box = nb.js(
                """css => { const o = document.querySelector(css).closest('.jp-OutputArea-output');
                  const ob = o.getBoundingClientRect();
                  const sticking = [...o.querySelectorAll('button, input, select, textarea, .js-plotly-plot, table, .sftviz-strip')]
                    .filter(e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.right > ob.right + 1
                                   && !e.closest('.sftviz-tablewrap, .sftviz-strip'); })
                    .map(e => e.tagName + '.' + String(e.className).slice(0, 40));
                  return {overflow: o.scrollWidth - o.clientWidth, sticking, width: ob.width}; }""",
                css,
            )
            assert box["overflow"] <= 1 and not box["sticking"], f"{name} at {width} px does not fit: {box}"
            if width == 800:
                nb.screenshot(out, f"{name}_800px")
        # the lab's figure takes the width it has
        fig, area = nb.js(
            """() => { const gd = document.querySelector('.sftviz-masking-lab .js-plotly-plot');
               return [gd.getBoundingClientRect().width, gd.closest('.jp-OutputArea-output').getBoundingClientRect().width]; }"""
        )
        assert area * 0.8 <= fig <= area + 1, (
            f"the MaskingLab figure is {fig:.0f} px wide in {area:.0f} px at {width} px"
        )
    finally:
        nb.page.set_viewport_size(size)
