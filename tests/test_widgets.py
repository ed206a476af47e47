"""The widgets' Python side: traitlet sync, callbacks, errors in the widget, escaping, static fallback, repr.

The browser is simulated the way the ES modules talk to Python: by setting the synced traitlets.
"""

import copy
import re
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import sftviz as sv
from sftviz import widgets as W
from sftviz.views.html import RUN_COLUMNS
from sftviz.widgets import masking_lab

HOSTILE = "<img src=x onerror=alert(1)> </script><script>alert(2)</script> \"q\" & 'a'"
WIDGET_DIR = Path(W.__file__).parent
ROWS = [
    {"prompt": "Question: How much is the lamp?\nAnswer:", "completion": " 12 dollars."},
    {"prompt": "Customer: Does the Nova Fan have a warranty?\nAssistant:", "completion": " Yes, two years."},
]


def html_body(html):
    return re.sub(r"<style>.*?</style>", "", html, flags=re.S)


def bundle(widget):
    data, _meta = widget._repr_mimebundle_()
    return data


def assert_static(widget):
    data = bundle(widget)
    assert "application/vnd.jupyter.widget-view+json" in data  # the live widget still renders
    assert data["text/plain"] == repr(widget)
    assert not re.search(r"0x[0-9a-f]{6,}", data["text/plain"])
    assert len(data["text/plain"]) <= 110
    return data["text/html"]


@pytest.fixture()
def ex(gpt2_tok):
    return sv.build_example(gpt2_tok, prompt="Question: How much is the lamp?\nAnswer:", completion=" 12 dollars.")


# --------------------------------------------------------------------------------------------
# the front-end files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["token_view", "logprob_explorer", "gradient_view", "quiz", "masking_lab"])
def test_es_modules_and_css_follow_the_rules(name):
    js = (WIDGET_DIR / f"{name}.js").read_text()
    css = (WIDGET_DIR / f"{name}.css").read_text()
    common = (WIDGET_DIR / "_common.js").read_text()
    for src in (js, common):
        assert "innerHTML" not in src and "outerHTML" not in src and "insertAdjacentHTML" not in src
        assert "require(" not in src and "eval(" not in src
        assert not re.search(r"https?://", src), "no CDN or network"
    assert js.count("export default") == 1 and "render" in js
    assert "export" not in common  # prepended to each module
    for src in (css, (WIDGET_DIR / "_common.css").read_text()):
        assert "@import" not in src and not re.search(r"url\(\s*['\"]?https?:", src)


def test_widget_classes_ship_their_module_and_css(ex):
    for cls in (W.TokenView, W.LogProbExplorer, W.GradientView, W.Quiz, masking_lab.LabPanel):
        esm, css = str(cls._esm), str(cls._css)
        assert esm.startswith("// sftviz: the display vocabulary") and esm.count("export default") == 1
        assert esm.index("const SV_VOCAB = ") < esm.index("// sftviz: helpers shared")
        assert ".sftviz" in css and "data-sftviz-trained" in css


def test_the_vocabulary_reaches_js_and_css():
    """Segment words, flags and colours come from sftviz.views.vocab, in the JS, the CSS and the static HTML."""
    import json

    from sftviz import render
    from sftviz.views import vocab

    esm, css = str(W.TokenView._esm), str(W.TokenView._css)
    data = json.loads(esm.split("const SV_VOCAB = ", 1)[1].split(";\n", 1)[0])
    assert data == json.loads(json.dumps(vocab.vocab_dict()))
    assert set(data["segments"]) == set(vocab.SEGMENTS)
    for name, seg in vocab.SEGMENTS.items():
        assert data["segments"][name]["words"] == seg.words == render.SEGMENTS[name][0]
        assert data["segments"][name]["special"] is seg.special and data["segments"][name]["labelled"] is seg.labelled
        assert f'.sftviz .sftviz-tok[data-sftviz-segment="{name}"]' in css
        assert f"--tint: var(--sv-{seg.swatch}-tint)" in css
    for swatch in vocab.SWATCHES.values():
        assert f"--sv-{swatch.name}: {swatch.colour};" in css
    assert vocab.segment_css() in css and vocab.segment_css() not in (WIDGET_DIR / "_common.css").read_text()
    common = (WIDGET_DIR / "_common.js").read_text()
    assert "SV_VOCAB" in common and '"prompt x"' not in common and "end_of_turn" not in common
    static = render.style_tag()
    assert '[data-sftviz-segment="assistant"]' in static and "--sv-completion-tint:#fdefd0" in static


def test_es_modules_parse(tmp_path):
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed; the modules are checked in a browser by scripts/check_widgets_browser.py")
    for cls in (W.TokenView, W.LogProbExplorer, W.GradientView, W.Quiz, masking_lab.LabPanel):
        f = tmp_path / f"{cls.__name__}.mjs"
        f.write_text(str(cls._esm))
        r = subprocess.run([node, "--check", str(f)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"{cls.__name__}: {r.stderr}"


# --------------------------------------------------------------------------------------------
# TokenView
# --------------------------------------------------------------------------------------------


def test_token_view_syncs_tokens_and_static_html(ex):
    v = W.TokenView(ex)
    assert len(v.tokens) == len(ex) and v.trained == [bool(t) for t in ex.trained] and v.labels == ex.labels
    assert repr(v) == f"TokenView({len(ex)} tokens, {sum(ex.trained)} trained, masking='completion')"
    html = assert_static(v)
    assert html.count('data-sftviz-role="token"') == len(ex)
    assert 'data-sftviz-trained="true"' in html and 'data-sftviz-segment="completion"' in html
    assert "masking=&#x27;completion&#x27;" in html  # the summary, escaped
    v.shifted = True
    assert 'data-sftviz-role="target"' in bundle(v)["text/html"]


def test_clicking_a_token_updates_the_example_and_fires_observers(ex):
    v = W.TokenView(ex)
    seen, labels_seen = [], []
    v.observe(lambda ch: seen.append(ch["new"]), names="trained")
    v.observe(lambda ch: labels_seen.append(ch["new"]), names="labels")
    p = 3
    assert not ex.trained[p]
    new = list(v.trained)
    new[p] = True
    v.trained = new  # what the JS does on a click: model.set("trained", list); model.save_changes()
    assert ex.labels[p] == ex.input_ids[p] and ex.masking == "custom"
    assert v.labels[p] == ex.input_ids[p] and v.tokens[p]["trained"] is True
    assert seen and seen[-1][p] is True and labels_seen
    assert "custom" in v.summary and v.error == ""
    v.toggle(p)
    assert ex.labels[p] == -100 and v.trained[p] is False
    last = len(ex) - 1
    v.set_trained(last, False)
    assert ex.labels[last] == -100


def test_refused_click_is_explained_and_undone(ex):
    v = W.TokenView(ex)
    before = list(ex.labels)
    new = list(v.trained)
    new[0] = True
    new[2] = True  # several changes in one message: all or nothing
    v.trained = new
    assert "Position 0" in v.error
    assert v.trained == [bool(t) for t in ex.trained] and ex.labels == before
    v.trained = [True]  # wrong length
    assert "one true/false per token" in v.error and ex.labels == before
    v.set_trained(len(ex) + 5, True)
    assert "outside the example" in v.error
    v.toggle(2)
    assert v.error == ""


def test_refused_browser_click_sends_no_event(ex):
    """A click arrives through set_state (as from the front end): refused, it changes nothing and
    observers hear nothing; accepted, they hear one change."""
    v = W.TokenView(ex)
    events = []
    v.observe(events.append, names="trained")
    before = list(ex.labels)
    click = list(v.trained)
    click[0] = True
    v.set_state({"trained": click})
    assert events == [] and "Position 0" in v.error and ex.labels == before and v.trained[0] is False
    click = list(v.trained)
    click[1] = not click[1]
    v.set_state({"trained": click})
    assert len(events) == 1 and events[0]["new"] == click and v.error == ""


def test_token_view_takes_a_score_report(tiny_model, gpt2_tok, ex):
    rep = sv.score(tiny_model, gpt2_tok, example=ex)
    v = W.TokenView(rep, title="t")
    assert v.report is rep and v.example is ex
    assert v.tokens[0]["logprob"] is None and isinstance(v.tokens[1]["logprob"], float)
    assert "sftviz-lp" in bundle(v)["text/html"]
    with pytest.raises(TypeError, match="Example"):
        W.TokenView({"prompt": "x"})


def test_token_view_escapes_hostile_text(gpt2_tok):
    hx = sv.build_example(gpt2_tok, prompt=HOSTILE, completion=' & <b>bold</b> "x"', warn=False)
    v = W.TokenView(hx, title=HOSTILE)
    # the browser gets raw text (the JS sets it with textContent) ...
    assert v.title == HOSTILE and "".join(r["text"] for r in v.tokens).startswith("<|endoftext|><img")
    # ... and the static view is escaped
    html = html_body(assert_static(v))
    assert "<img" not in html and "<script" not in html and "</script>" not in html and "<b>bold" not in html
    assert "&lt;img" in html


def test_chat_example(gpt2_tok):
    chat = sv.build_example(
        gpt2_tok,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Price of the lamp?"},
            {"role": "assistant", "content": "12 dollars."},
        ],
    )
    v = W.TokenView(chat)
    assert {"system", "user", "assistant"} <= {r["segment"] for r in v.tokens}


# --------------------------------------------------------------------------------------------
# LogProbExplorer
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def lpx(tiny_model, gpt2_tok):
    return W.LogProbExplorer(tiny_model, gpt2_tok, data=ROWS)


def test_explorer_scores_the_first_row_and_shows_the_identity(lpx):
    r = lpx.report
    assert lpx.prompt == ROWS[0]["prompt"] and lpx.choice == 0 and len(lpx.options) == 2
    assert r.joint == pytest.approx(r.marginal + r.conditional)
    assert lpx.identity["joint"] == f"{r.joint:.3f}".replace("-", "\u2212")
    assert lpx.identity["ok"] is True
    assert len(lpx.rows) == len(r.rows) - 1 and len(lpx.tokens) == len(r.rows)
    assert lpx.rows[-1]["running_joint"] == pytest.approx(r.joint)
    assert repr(lpx).startswith("LogProbExplorer(joint=") and "0x" not in repr(lpx)
    html = assert_static(lpx)
    assert 'data-sftviz-sum="conditional"' in html


def test_explorer_rescores_when_the_browser_sends_text(lpx):
    rev = lpx.revision
    seen = []
    lpx.on_score(seen.append)
    lpx.completion = " 13 dollars."  # the debounced JS sets the traitlet
    assert lpx.report.example.source["completion"] == " 13 dollars." and lpx.revision > rev
    assert len(seen) == 1 and seen[0] is lpx.report
    lpx.completion = " 13 dollars."  # same text: no second scoring
    assert len(seen) == 1
    lpx.choice = 1  # the dataset picker
    assert lpx.prompt == ROWS[1]["prompt"] and lpx.completion == ROWS[1]["completion"] and len(seen) == 2
    lpx.choice = 7
    assert "no dataset row 7" in lpx.error


def test_explorer_errors_show_inside_and_keep_the_text(lpx):
    good = lpx.report
    long = "the lamp " * 200  # more tokens than the tiny model reads (128)
    lpx.prompt = long
    assert "reads at most 128" in lpx.error
    assert lpx.prompt == long and lpx.stale is True and lpx.report is good  # text kept, last scores kept
    lpx.prompt = "Question: How much?\nAnswer:"
    assert lpx.error == "" and lpx.stale is False and lpx.report is not good


def test_explorer_callback_errors_are_shown(lpx):
    lpx.on_score(lambda rep: 1 / 0)
    lpx.completion = " 14 dollars."
    assert "ZeroDivisionError" in lpx.error
    assert lpx.report.example.source["completion"] == " 14 dollars."


def test_explorer_escapes(tiny_model, gpt2_tok):
    e = W.LogProbExplorer(tiny_model, gpt2_tok, prompt=HOSTILE, completion=' & "x"', data=[])
    assert e.error == "" and e.options == []
    html = html_body(assert_static(e))
    assert "<img" not in html and "<script" not in html and "&lt;" in html and "&quot;" in html


def test_explorer_takes_examples_and_reports(tiny_model, gpt2_tok, ex):
    rep = sv.score(tiny_model, gpt2_tok, example=ex)
    shown = W.LogProbExplorer.from_report(rep, title="t")
    assert shown.title == "t" and repr(shown).startswith("LogProbExplorer(joint=")
    assert shown.editable is False and shown.report is rep and shown.prompt == ex.source["prompt"]
    shown.prompt = "ignored"  # no model: nothing to rescore, no error
    assert shown.report is rep and shown.error == ""
    from_ex = W.LogProbExplorer(tiny_model, gpt2_tok, example=ex, data=[])
    assert from_ex.completion == ex.source["completion"]
    chat = sv.build_example(
        gpt2_tok, messages=[{"role": "user", "content": "Lamp?"}, {"role": "assistant", "content": "12."}]
    )
    c = W.LogProbExplorer(tiny_model, gpt2_tok, example=chat)
    assert c.editable is False and c.report is not None and c.options == []
    with pytest.raises(TypeError, match="model, tok"):
        W.LogProbExplorer()
    with pytest.raises(TypeError, match=r"LogProbExplorer\.from_report\(report\)"):
        W.LogProbExplorer(rep)  # the old guess: a report where the model goes
    with pytest.raises(TypeError, match=r"from_report"):
        W.LogProbExplorer(tiny_model, gpt2_tok, example=rep)
    with pytest.raises(TypeError, match="ScoreReport"):
        W.LogProbExplorer.from_report(ex)


def test_explorer_default_picker_uses_the_bundled_data():
    from sftviz.widgets.logprob_explorer import picker_rows

    rows, skipped = picker_rows(None)
    assert rows and all(isinstance(r, dict) and "prompt" in r for _, r in rows)
    assert not any(label.endswith("Assistant: \u2192") for label, _ in rows)
    rows, skipped = picker_rows([{"messages": [{"role": "user", "content": "x"}]}, ROWS[0]])
    assert len(rows) == 1 and skipped == 1


# --------------------------------------------------------------------------------------------
# GradientView
# --------------------------------------------------------------------------------------------


def fake_grads(n=5):
    toks = ["<|endoftext|>", "Q", ":", " <img src=x>", "<|endoftext|>"][:n]
    segs = ["bos", "prompt", "prompt", "completion", "eos"][:n]
    return SimpleNamespace(
        positions=list(range(n)),
        tokens=toks,
        segments=segs,
        input_grad_masked=[0.1, 0.2, 0.3, 0.4, 0.0],
        input_grad_full=[0.5, 0.5, 0.5, 0.5, 0.0],
        target_grad=[None, None, None, 0.7, 0.2],
        cosine=0.5,
        layer_norms_masked={"embeddings": 1.0, "block_0": 2.0, "head": 0.1},
        layer_norms_full={"embeddings": 2.0, "block_0": 3.0, "head": 0.2},
    )


def test_gradient_view_from_a_result():
    with pytest.raises(TypeError, match=r"GradientView\.from_gradients\(grads\)"):
        W.GradientView(fake_grads())  # the old guess: gradients where the model goes
    with pytest.raises(TypeError, match="token_gradients"):
        W.GradientView.from_gradients("not gradients")
    g = W.GradientView.from_gradients(fake_grads())
    assert len(g.tokens) == 5 and len(g.layers) == 3 and g.cosine == 0.5
    assert g.scale["input"] == 0.5 and "0.500" in g.cosine_text
    assert repr(g) == "GradientView(5 tokens, 3 parameter groups, cosine=0.50)"
    html = html_body(assert_static(g))
    assert "<img" not in html and html.count('data-sftviz-role="token"') == 5
    g.what = "target"
    assert "share of the weight gradient" in bundle(g)["text/html"]
    g.what = "everything"  # as a bad message from the browser would
    assert g.what == "target" and "what must be" in g.error


def test_gradient_view_with_the_core(tiny_model, gpt2_tok, ex):
    pytest.importorskip("sftviz.gradients")
    g = W.GradientView(tiny_model, gpt2_tok, ex)
    assert g.error == "" and len(g.tokens) == len(ex)
    assert g.tokens[-1]["input_masked"] == pytest.approx(0.0, abs=1e-12)
    assert any(t["input_masked"] > 0 for t in g.tokens if t["segment"] == "prompt")
    assert set(g.layers[0]) == {"name", "masked", "full"}
    g2 = W.GradientView(tiny_model, gpt2_tok, prompt="Question: lamp?\nAnswer:", completion=" 12.")
    assert g2.error == ""
    assert g.masked_name == "completion-only" and "completion-only loss" in g.summary


def test_gradient_view_follows_edited_labels(tiny_model, gpt2_tok, ex):
    """Edit the labels (as a TokenView click does), refresh: the masked side is now the edited loss, named so."""
    ex = copy.deepcopy(ex)
    p = ex.segments.index("prompt") + 1
    g = W.GradientView(tiny_model, gpt2_tok, ex)
    assert g.tokens[p]["target_masked"] is None
    ex.set_trained(p, True)
    g.refresh()
    assert g.masked_name == "trained tokens" and "trained tokens loss" in g.summary
    assert g.tokens[p]["trained"] is True and g.tokens[p]["target_masked"] > 0
    html = bundle(g)["text/html"]
    assert "trained tokens loss" in html and "gradient of trained tokens loss" in html


def test_gradient_view_shows_core_errors(tiny_model, gpt2_tok, ex, monkeypatch):
    gradients = pytest.importorskip("sftviz.gradients")

    def boom(*a, **k):
        raise ValueError("no gradients today")

    monkeypatch.setattr(gradients, "token_gradients", boom)
    g = W.GradientView(tiny_model, gpt2_tok, ex)
    assert g.error == "no gradients today" and g.tokens == []
    assert repr(g) == "GradientView(no gradients)"
    assert "no gradients today" in bundle(g)["text/html"]
    with pytest.raises(TypeError):
        W.GradientView(tiny_model, gpt2_tok, example="text")


# --------------------------------------------------------------------------------------------
# MaskingLab
# --------------------------------------------------------------------------------------------


def fake_finetune(steps_done=None, fail=None, block=False):
    """A stand-in for sftviz.train.finetune with its contract: callbacks(record, run), stop.is_set()."""
    calls = []

    def finetune(
        model, tok, data, masking="completion", *, steps, callbacks=(), stop=None, eval_data=None, fault=None, **kw
    ):
        calls.append({"masking": masking, "steps": steps, "fault": fault, **kw})
        run = SimpleNamespace(history=[], evals=[], config={"masking": masking}, status="running")
        if fail:
            raise ValueError(fail)
        ev = {"kind": "eval", "step": 0, "cond_logprob_per_token": -2.0, "marg_logprob_per_token": -3.0}
        run.evals.append(ev)
        for cb in callbacks:
            cb(ev, run)
        deadline = time.monotonic() + 20
        k = 0
        while k < steps and time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                run.status = "stopped"
                return run
            if block and k >= 2:
                time.sleep(0.01)
                continue
            k += 1
            rec = {
                "kind": "train",
                "step": k,
                "loss": 1.0 / k,
                "prompt_nll": 3.0,
                "completion_nll": 1.0 / k,
                "grad_norm": 2.0,
                "grad_norm_groups": {"head": 1.0},
                "lr": kw.get("lr"),
                "n_trained": 10,
            }
            run.history.append(rec)
            for cb in callbacks:
                cb(rec, run)
        run.status = "finished"
        return run

    finetune.calls = calls
    return finetune


def test_lab_runs_in_the_background_and_draws(tiny_model, gpt2_tok, monkeypatch):
    ft = fake_finetune()
    monkeypatch.setattr(masking_lab, "_finetune", lambda: ft)
    lab = W.MaskingLab(tiny_model, gpt2_tok, ROWS, ROWS, steps=7, lr=3e-3, seed=2)
    assert repr(lab) == "MaskingLab(2 training rows, 0 runs)"
    html = assert_static(lab)
    assert "No runs yet" in html
    # the empty state: no figure yet, and the panel says what will appear
    assert lab.figure not in lab.children and "press Run" in lab.panel.empty
    assert all(title in lab.panel.empty for _k, _w, title in masking_lab.PANELS)
    records = []
    lab.on_record(lambda rec, run: records.append(rec["kind"]))
    entry = lab.run(wait=True)
    assert entry.status == "finished" and len(entry.history) == 7 and len(entry.evals) == 1
    assert lab.children[-1] is lab.figure  # the figure came with the first run
    assert records.count("train") == 7 and records[0] == "eval"
    call = ft.calls[0]
    assert call["masking"] == "completion" and call["steps"] == 7 and call["lr"] == pytest.approx(3e-3)
    assert call["seed"] == 2 and call["copy_model"] is True and call["progress"] is False
    xs = [len(t.x) for t in lab.figure.data]
    assert len(lab.figure.data) == 6 and xs == [7, 7, 7, 1, 1, 7]
    assert [len(t.x) for t in entry.traces] == xs  # the run's own curves, one per panel
    assert masking_lab.LabRun(1, {"masking": "full"}).traces == []
    assert lab.panel.progress == 1.0 and "finished" in lab.panel.status
    assert lab.panel.runs[0]["steps"] == "7/7" and lab.panel.runs[0]["eval_cond"] == -2.0
    # two runs must never look identical: the table shows the learning rate and the seed
    assert lab.panel.runs[0]["lr"] == "0.003" and lab.panel.runs[0]["seed"] == "2"
    assert [k for k, _ in lab.panel.columns] == [k for k, _ in RUN_COLUMNS] and "lr" in dict(lab.panel.columns)
    table = lab.panel.static_html()
    assert "<th>learning rate</th><th>seed</th>" in table and "<td>0.003</td>" in table
    assert not lab.w_run.disabled and lab.w_stop.disabled
    assert repr(lab) == "MaskingLab(2 training rows, 1 runs)"
    html = assert_static(lab)
    assert "<img alt=" in html and "#1 completion" in html
    # a second run with the prompt-loss weight slider is overlaid
    lab.w_masking.value = "weighted"
    assert lab.w_plw.disabled is False
    lab.w_plw.value = 0.25
    lab.w_fault.value = "eos_masked"
    entry2 = lab.run(wait=True)
    assert ft.calls[1]["masking"] == 0.25 and ft.calls[1]["fault"] == "eos_masked"
    assert entry2.name == "#2 plw 0.25 + eos_masked \u00b7 seed 2" and len(lab.figure.data) == 12
    assert lab.figure.data[6].line.dash == "dot" and lab.figure.data[0].line.dash == "solid"
    assert "eos_masked" in lab.panel.about
    lab.clear()
    assert lab.runs == [] and len(lab.figure.data) == 0 and lab.panel.runs == []
    assert lab.figure not in lab.children  # back to the empty state


def test_lab_figure_follows_the_front_ends_theme(tiny_model, gpt2_tok, monkeypatch):
    monkeypatch.setattr(masking_lab, "_finetune", lambda: fake_finetune())
    lab = W.MaskingLab(tiny_model, gpt2_tok, ROWS, steps=2)
    assert lab.figure.layout.paper_bgcolor == "rgba(0,0,0,0)" and lab.figure.layout.font.color == "#1a1a1a"
    for _ in range(7):  # the seventh run gets the palette's black
        lab.run(wait=True)
    black = lab.runs[6]
    assert black.colour == "#000000" and black.traces[0].line.color == "#000000"
    lab.panel.theme = "dark"  # what the browser sends when JupyterLab's theme is dark
    assert lab.figure.layout.font.color == "#e8e8e8" and lab.figure.layout.plot_bgcolor == "rgba(0,0,0,0)"
    assert lab.figure.layout.template.layout.paper_bgcolor is not None  # plotly_dark's
    assert {t.line.color for t in black.traces} == {"#e8e8e8"} and black.traces[0].marker.color == "#e8e8e8"
    assert lab.runs[0].traces[0].line.color == lab.runs[0].colour  # the other runs keep theirs
    lab.run(wait=True)  # a run started in the dark theme is drawn for it
    lab.panel.theme = "light"
    assert lab.figure.layout.font.color == "#1a1a1a" and black.traces[0].line.color == "#000000"


def test_lab_figure_takes_the_width_the_browser_reports(tiny_model, gpt2_tok):
    lab = W.MaskingLab(tiny_model, gpt2_tok, ROWS, steps=2)
    assert lab.figure.layout.width is None  # plotly's default until the browser says
    lab.panel.width = 620
    assert lab.figure.layout.width == 620
    lab.panel.width = 200  # too narrow for six panels: the figure keeps a floor (the page scrolls it)
    assert lab.figure.layout.width == masking_lab.MIN_FIGURE_WIDTH


def test_lab_learning_rate_and_weight_are_labelled_text_boxes(tiny_model, gpt2_tok, monkeypatch):
    ft = fake_finetune()
    monkeypatch.setattr(masking_lab, "_finetune", lambda: ft)
    lab = W.MaskingLab(tiny_model, gpt2_tok, ROWS, steps=2, lr=2e-4)
    import ipywidgets

    assert isinstance(lab.w_lr, ipywidgets.BoundedFloatText) and isinstance(lab.w_plw, ipywidgets.BoundedFloatText)
    assert lab.w_lr.description == "learning rate" and lab.w_plw.description == "prompt-loss weight"
    lab.w_lr.value = 0.02
    lab.run(wait=True)
    assert ft.calls[0]["lr"] == pytest.approx(0.02)
    lab.w_lr.value = 5.0  # out of range: the box clamps it
    assert lab.w_lr.value == 1.0


def test_lab_stop_keeps_the_curves(tiny_model, gpt2_tok, monkeypatch):
    ft = fake_finetune(block=True)
    monkeypatch.setattr(masking_lab, "_finetune", lambda: ft)
    lab = W.MaskingLab(tiny_model, gpt2_tok, ROWS, steps=500)
    entry = lab.run()
    for _ in range(200):
        if len(entry.history) >= 2:
            break
        time.sleep(0.01)
    assert lab.running and lab.w_run.disabled and not lab.w_stop.disabled
    assert lab.run() is None and "still going" in lab.panel.error  # one run at a time
    lab.clear()
    assert "Stop the run" in lab.panel.error and lab.runs
    lab.w_stop.click()  # the Stop button, while the kernel thread is free
    assert lab.wait(10)
    assert entry.status == "stopped" and len(entry.history) == 2
    assert [len(t.x) for t in lab.figure.data][:3] == [2, 2, 2]  # curves kept
    assert "stopped" in lab.panel.status and not lab.running


def test_lab_errors_are_shown_in_the_lab(tiny_model, gpt2_tok, monkeypatch):
    monkeypatch.setattr(masking_lab, "_finetune", lambda: fake_finetune(fail="learning rate must be positive"))
    lab = W.MaskingLab(tiny_model, gpt2_tok, ROWS, steps=3)
    entry = lab.run(wait=True)
    assert entry.status == "error" and lab.panel.error == "learning rate must be positive"
    assert not lab.w_run.disabled
    # an error in a user's callback is shown too, and training carries on
    monkeypatch.setattr(masking_lab, "_finetune", lambda: fake_finetune())
    lab.on_record(lambda rec, run: 1 / 0)
    entry = lab.run(wait=True)
    assert entry.status == "finished" and "ZeroDivisionError" in lab.panel.error
    with pytest.raises(TypeError, match="Unknown setting"):
        lab.run(temperature=2)


def test_lab_html_escapes_run_names(tiny_model, gpt2_tok, monkeypatch):
    monkeypatch.setattr(masking_lab, "_finetune", lambda: fake_finetune())
    lab = W.MaskingLab(tiny_model, gpt2_tok, ROWS, steps=2)
    lab.faults[HOSTILE] = "x"
    lab.run(wait=True, fault=HOSTILE)
    html = html_body(bundle(lab)["text/html"])
    assert "<script" not in html and "&lt;img src=x" in html


def test_lab_with_the_real_finetune(tiny_model, gpt2_tok):
    pytest.importorskip("sftviz.train")
    lab = W.MaskingLab(
        tiny_model, gpt2_tok, ROWS * 4, ROWS, steps=3, batch_size=4, eval_every=2, device="cpu", eval_examples=0
    )
    entry = lab.run(wait=True)
    assert lab.panel.error == "" and entry.status == "finished", lab.panel.error
    assert len(entry.history) == 3 and entry.evals and entry.run is not None
    assert all(t.x is not None for t in lab.figure.data)
    assert max(len(t.x) for t in lab.figure.data) == 3
    # Stop from another thread while the real loop runs
    lab2 = W.MaskingLab(tiny_model, gpt2_tok, ROWS * 4, steps=10_000, batch_size=2, device="cpu")
    e2 = lab2.run()
    threading.Timer(0.5, lab2.stop).start()
    assert lab2.wait(60)
    assert e2.status == "stopped" and 0 < len(e2.history) < 10_000
