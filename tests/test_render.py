"""Static views (sftviz.render) and matplotlib figures (sftviz.plots): content, escaping, determinism."""

import math
import re
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest

import sftviz as sv
from sftviz import render

HOSTILE = "<img src=x onerror=alert(1)> </script><script>alert(2)</script> \"q\" & 'a'"
HOSTILE_COMPLETION = ' & <b>bold</b> "x" </script>'


class Tags(HTMLParser):
    """Collect start tags with their attributes, and the text, of an HTML fragment."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(html):
    p = Tags()
    p.feed(html)
    p.close()
    return p


def body(html):
    """The HTML without the leading <style> block (CSS is not user text)."""
    return re.sub(r"<style>.*?</style>", "", html, flags=re.S)


def token_elements(html, role=None):
    return [
        a
        for t, a in parse(html).tags
        if "data-sftviz-segment" in a
        and "data-sftviz-trained" in a
        and (role is None or a.get("data-sftviz-role") == role)
    ]


@pytest.fixture()
def ex(gpt2_tok):
    return sv.build_example(gpt2_tok, prompt="Question: How much is the lamp?\nAnswer:", completion=" 12 dollars.")


@pytest.fixture()
def rep(tiny_model, gpt2_tok, ex):
    return sv.score(tiny_model, gpt2_tok, example=ex, top_k=3)


@pytest.fixture()
def hostile(gpt2_tok):
    return sv.build_example(gpt2_tok, prompt=HOSTILE, completion=HOSTILE_COMPLETION, warn=False)


# --------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------


def test_token_records_describe_every_token_and_the_shift(ex):
    recs = render.token_records(ex)
    assert len(recs) == len(ex)
    assert [r["trained"] for r in recs] == [bool(v) for v in ex.trained]
    assert [r["segment"] for r in recs] == ex.segments
    assert [r["label"] for r in recs] == ex.labels
    assert recs[0]["predicted_from"] is None and "nothing" in recs[0]["tip"][2]
    t = ex.n_prompt  # first completion token: predicted from the last prompt position
    assert recs[t]["predicted_from"] == t - 1
    assert any(f"predicted from position {t - 1}" in line for line in recs[t]["tip"])
    assert any(f"predicts position {t}" in line and "trained" in line for line in recs[t - 1]["tip"])
    last = recs[-1]
    assert last["next_text"] is None and any("never scored" in line for line in last["tip"])
    assert all(r["logprob"] is None for r in recs)


def test_token_records_with_scores_carry_logprobs(rep):
    recs = render.token_records(rep)
    assert recs[0]["logprob"] is None
    assert all(isinstance(r["logprob"], float) for r in recs[1:])
    assert all(len(r["top"]) == 3 for r in recs[1:])
    assert any("log Pr(token | before)" in line for line in recs[1]["tip"])


def test_split_rejects_wrong_objects(ex, rep, gpt2_tok):
    with pytest.raises(TypeError, match="Example"):
        render.token_records("not an example")
    other = sv.build_example(gpt2_tok, prompt="Paris is", completion=" the capital of France.")
    with pytest.raises(ValueError, match="score this example"):
        render.token_records(other, rep)
    with pytest.raises(TypeError, match="ScoreReport"):
        render.token_records(ex, scores={"joint": 0})


def test_logprob_records_running_sums_end_at_the_three_numbers(rep):
    recs = render.logprob_records(rep)
    assert len(recs) == len(rep.example) - 1
    assert math.isclose(recs[-1]["running_joint"], rep.joint, rel_tol=1e-9, abs_tol=1e-9)
    last_x = [r for r in recs if r["part"] == "x"][-1]
    last_y = [r for r in recs if r["part"] == "y"][-1]
    assert math.isclose(last_x["running_part"], rep.marginal, rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(last_y["running_part"], rep.conditional, rel_tol=1e-9, abs_tol=1e-9)
    assert all(0.0 <= r["bar"] <= 1.0 for r in recs)
    assert max(r["bar"] for r in recs) == pytest.approx(1.0) or max(-r["logprob"] for r in recs) < 1


def test_display_parts_make_whitespace_visible():
    assert render.display_parts(" the") == [("ws", "\u00b7"), ("txt", "the")]
    assert render.display_parts("\n") == [("ws", "\u21b5")]
    assert render.display_parts("") == [("ws", "\u2205")]
    assert render.display_parts("a\tb") == [("txt", "a"), ("ws", "\u2192"), ("txt", "b")]


# --------------------------------------------------------------------------------------------
# token HTML
# --------------------------------------------------------------------------------------------


def test_token_html_has_one_element_per_token_with_data_attributes(ex):
    html = render.token_html(ex)
    els = token_elements(html, role="token")
    assert len(els) == len(ex)
    assert [e["data-sftviz-segment"] for e in els] == ex.segments
    assert [e["data-sftviz-trained"] for e in els] == ["true" if t else "false" for t in ex.trained]
    assert [int(e["data-sftviz-position"]) for e in els] == list(range(len(ex)))
    assert all("title" in e and "predict" in e["title"] for e in els)
    assert html.startswith("<style>") and ".sftviz" in html
    assert "trained: a target of the loss" in html and "masked: context only" in html  # the legend
    assert render.token_html(ex) == html  # deterministic


def test_trained_is_marked_by_more_than_colour(ex):
    html = body(render.token_html(ex))
    n_marks = html.count('class="sftviz-mark"')
    assert n_marks == sum(ex.trained) + 1  # one per trained token, plus the legend sample
    css = render.style_tag()
    assert "dashed" in css and "repeating-linear-gradient" in css and "solid" in css


def test_segment_labels_are_text(ex):
    text = "".join(parse(body(render.token_html(ex))).text)
    assert "prompt x" in text and "completion y" in text


def test_shifted_html_pairs_inputs_with_targets(ex):
    html = render.token_html(ex, shifted=True)
    inputs, targets = token_elements(html, role="input"), token_elements(html, role="target")
    assert len(inputs) == len(targets) == len(ex) - 1
    assert [int(e["data-sftviz-position"]) for e in inputs] == list(range(len(ex) - 1))
    assert [int(e["data-sftviz-position"]) for e in targets] == list(range(1, len(ex)))
    assert "input t\u22121" in html and "target t" in html


def test_token_html_escapes_hostile_text(hostile, tiny_model, gpt2_tok):
    rep = sv.score(tiny_model, gpt2_tok, example=hostile)
    for html in (
        render.token_html(hostile, title=HOSTILE),
        render.token_html(hostile, shifted=True),
        render.logprob_html(rep, title=HOSTILE),
    ):
        b = body(html)
        tags = {t for t, _ in parse(b).tags}
        assert "img" not in tags and "script" not in tags and "b" not in tags
        assert "<img" not in b and "</script>" not in b and "<script" not in b
    for html in (render.token_html(hostile, title=HOSTILE), render.logprob_html(rep, title=HOSTILE)):
        text = "".join(parse(body(html)).text)
        assert HOSTILE in text  # the title, shown as text
        assert "onerror=alert(1)" in text.replace("\u00b7", " ")  # the tokens, whitespace made visible
    assert "&lt;img" in render.token_html(hostile, title=HOSTILE)


def test_attribute_values_cannot_break_out(gpt2_tok):
    ex = sv.build_example(gpt2_tok, prompt='a" onmouseover="alert(1)', completion=" x' y", warn=False)
    html = body(render.token_html(ex))
    for _tag, attrs in parse(html).tags:
        assert "onmouseover" not in attrs


def test_notes_are_shown(gpt2_tok):
    ex = sv.build_example(gpt2_tok, prompt="Answer: ", completion="yes", warn=False)
    html = render.token_html(ex)
    if ex.boundary_note is not None:
        assert "merge across the prompt/completion boundary" in html


def test_chat_example_html(gpt2_tok):
    ex = sv.build_example(
        gpt2_tok,
        messages=[
            {"role": "user", "content": "How much is the lamp?"},
            {"role": "assistant", "content": "12 dollars."},
        ],
    )
    html = render.token_html(ex)
    segs = {e["data-sftviz-segment"] for e in token_elements(html, role="token")}
    assert {"user", "assistant"} <= segs


def test_a_tool_turn_is_drawn_as_tool_output(gpt2_tok):
    ex = sv.build_example(
        gpt2_tok,
        messages=[
            {"role": "user", "content": "Is it sunny?"},
            {"role": "assistant", "content": "Let me check."},
            {"role": "tool", "content": "sunny"},
            {"role": "assistant", "content": "Yes."},
        ],
    )
    html = render.token_html(ex)
    tool = [e for e in token_elements(html, role="token") if e["data-sftviz-segment"] == "tool"]
    assert tool and all(e["data-sftviz-trained"] == "false" for e in tool)
    assert ">tool output<" in html and 'title="what a tool returned: context for the next turn"' in html


# --------------------------------------------------------------------------------------------
# log-probs
# --------------------------------------------------------------------------------------------


def test_logprob_html_shows_the_identity_and_table(rep):
    html = render.logprob_html(rep)
    tags = parse(html).tags
    sums = {a["data-sftviz-sum"] for _, a in tags if "data-sftviz-sum" in a}
    assert sums == {"joint", "marginal", "conditional"}
    text = "".join(parse(body(html)).text)
    for v in (rep.joint, rep.marginal, rep.conditional):
        assert f"{v:.3f}".replace("-", "\u2212") in text
    assert "log Pr([x, y])" in text and "log Pr(y | x)" in text
    rows = [a for t, a in tags if t == "tr" and "data-sftviz-part" in a]
    assert len(rows) == len(rep.example) - 1
    assert "consistent with the laws of probability" in text


def test_identity_html_flags_impossible_numbers(rep):
    bad = sv.ScoreReport(
        joint=-3.5,
        marginal=-5.2,
        conditional=1.7,
        rows=rep.rows,
        example=rep.example,
        n_prompt_scored=rep.n_prompt_scored,
        n_completion_scored=rep.n_completion_scored,
    )
    html = render.identity_html(bad)
    assert 'class="sftviz-error"' in html and "cannot come from a correct computation" in html


# --------------------------------------------------------------------------------------------
# gradients, runs, quizzes
# --------------------------------------------------------------------------------------------


def fake_grads(tokens, segments):
    n = len(tokens)
    return SimpleNamespace(
        positions=list(range(n)),
        tokens=tokens,
        segments=segments,
        input_grad_masked=[0.5] * (n - 1) + [0.0],
        input_grad_full=[1.0] * (n - 1) + [0.0],
        target_grad=[None] * (n - 1) + [0.3],
        cosine=0.42,
        layer_norms_masked={"embeddings": 1.0, "block_0": 2.0, "head": 0.5},
        layer_norms_full={"embeddings": 2.0, "block_0": 3.0, "head": 1.0},
    )


def test_gradient_records_from_a_contract_shaped_object():
    g = fake_grads(["<|endoftext|>", "Q", " A", "<img src=x>"], ["bos", "prompt", "prompt", "completion"])
    d = render.gradient_records(g)
    assert len(d["tokens"]) == 4
    assert [r["trained"] for r in d["tokens"]] == [False, False, False, True]  # from target_grad when no `trained`
    assert d["max_input"] == 1.0 and d["max_target"] == pytest.approx(0.3)
    assert [x["name"] for x in d["layers"]] == ["embeddings", "block_0", "head"]
    html = render.gradients_html(g, title=HOSTILE)
    b = body(html)
    assert "<img" not in b and "img" not in {t for t, _ in parse(b).tags}
    assert len(token_elements(html, role="token")) == 4
    assert "0.420" in html
    with pytest.raises(ValueError, match="input"):
        render.gradients_html(g, what="weights")
    with pytest.raises(TypeError, match="token_gradients"):
        render.gradient_records(object())


def test_a_new_segment_needs_one_vocabulary_entry(monkeypatch):
    """A new kind of token (a chat role "observation", say) is one Segment in sftviz.views.vocab: words, tooltips,
    labels, legend, CSS and the JS vocabulary follow."""
    from sftviz.views import vocab

    role = vocab.Segment(
        "observation", "observation", "what the environment returned: context", "system", labelled=True
    )
    monkeypatch.setitem(vocab.SEGMENTS, "observation", role)
    g = fake_grads(["<|endoftext|>", "Q", "42"], ["bos", "observation", "completion"])
    d = render.gradient_records(g)
    assert "observation" in d["tokens"][1]["tip"][0] and d["tokens"][1]["special"] is False
    html = render.gradients_html(g)
    assert 'title="what the environment returned: context"' in html and ">observation<" in html
    strip = render.tokens_strip_html(d["tokens"])
    assert 'class="sftviz-seglabel" data-sftviz-segment="observation" style="border-left:3px solid ' in strip
    assert ">observation</span>" in strip
    css = render.style_tag()
    assert (
        '.sftviz-tok[data-sftviz-segment="observation"],.sftviz .sftviz-seglabel[data-sftviz-segment="observation"]'
        in css
    )
    assert '"observation":{"words":"observation"' in vocab.js_prelude()
    assert vocab.segment("observation").tint == vocab.SWATCHES["system"].tint


def test_example_and_report(ex, rep):
    assert render.example_and_report(ex) == (ex, None)
    assert render.example_and_report(rep) == (rep.example, rep)
    assert render.example_and_report(rep.example, rep) == (rep.example, rep)
    with pytest.raises(ValueError, match="not a report plus other scores"):
        render.example_and_report(rep, object())


def test_gradients_html_with_the_core(tiny_model, gpt2_tok, ex):
    gradients = pytest.importorskip("sftviz.gradients")
    g = gradients.token_gradients(tiny_model, gpt2_tok, ex)
    d = render.gradient_records(g)
    assert len(d["tokens"]) == len(ex)
    assert d["tokens"][-1]["input_masked"] == pytest.approx(0.0, abs=1e-12)
    assert any(r["input_masked"] > 0 for r in d["tokens"] if r["segment"] == "prompt")  # prompt gets gradient
    html = render.gradients_html(g, what="target")
    assert len(token_elements(html, role="token")) == len(ex)


def test_runs_table_html():
    empty = render.runs_table_html([])
    assert "No runs yet" in empty
    html = render.runs_table_html(
        [
            {
                "name": HOSTILE,
                "masking": "completion",
                "fault": "none",
                "steps": "3/3",
                "status": "finished",
                "loss": 1.5,
                "prompt_nll": None,
                "completion_nll": 1.5,
                "eval_cond": -0.5,
            }
        ]
    )
    b = body(html)
    assert "<img" not in b and "\u22120.500" in b and "1.500" in b


def test_quiz_html_escapes_and_can_hide_answers():
    from sftviz.quiz import parse_question

    q = parse_question(
        {
            "id": "x",
            "type": "multiple_choice",
            "prompt": HOSTILE,
            "choices": ["<b>a</b>", "b & c"],
            "answer": "B",
            "explanation": "</script>",
        }
    )
    html = render.quiz_html([q])
    b = body(html)
    assert "<script" not in b and "</script>" not in b and "<b>a</b>" not in b and "b &amp; c" in b
    assert "<details>" in html
    assert "<details>" not in render.quiz_html([q], reveal=False)


# --------------------------------------------------------------------------------------------
# matplotlib figures
# --------------------------------------------------------------------------------------------


def test_plots_return_figures(rep, ex, hostile):
    from matplotlib.figure import Figure

    from sftviz import plots

    assert isinstance(plots.plot_logprobs(rep), Figure)
    assert isinstance(plots.plot_example(ex), Figure)
    assert isinstance(plots.plot_example(hostile), Figure)
    g = fake_grads(["a", "$x$", "c"], ["bos", "prompt", "completion"])
    fig = plots.plot_token_gradients(g, log_scale=True)
    assert isinstance(fig, Figure)
    html = plots.figure_html(fig, alt='a "figure"')
    assert html.startswith('<img alt="a &quot;figure&quot;" src="data:image/png;base64,')
    assert plots.label_text("$x$") == r"\$x\$"


def test_plot_runs_takes_run_like_dicts():
    from sftviz import plots

    hist = [
        {"kind": "train", "step": s, "loss": 1.0 / s, "prompt_nll": 2.0, "completion_nll": 1.0 / s, "grad_norm": 1.0}
        for s in range(1, 6)
    ]
    evals = [
        {"kind": "eval", "step": s, "cond_logprob_per_token": -1.0 / (s + 1), "marg_logprob_per_token": -2.0}
        for s in (0, 5)
    ]
    runs = [
        {"config": {"masking": "completion"}, "history": hist, "evals": evals},
        {"config": {"masking": 0.1, "fault": "eos_masked"}, "history": hist, "evals": []},
    ]
    fig = plots.plot_runs(runs)
    axes = fig.get_axes()
    assert len(axes) == 6
    assert len(axes[0].lines) == 2 and len(axes[3].lines) == 1
    assert axes[0].get_legend() is not None
    assert repr(fig).startswith("<Figure size")


def test_static_tokens_carry_inline_styles_for_when_the_stylesheet_is_stripped(gpt2_tok):
    """Untrusted notebooks and GitHub drop <style>: trained and masked tokens must still differ."""
    from sftviz.views import vocab
    from sftviz.views.html import fallback_style

    ex = sv.build_example(gpt2_tok, prompt="Q: colour?\nA:", completion=" blue.")
    html = render.token_html(ex)
    styles = re.findall(r'<span class="sftviz-tok[^"]*"[^>]*? style="([^"]*)"', html)
    assert len(styles) >= len(ex)  # every token (and the legend samples)
    trained, masked = fallback_style("completion", True), fallback_style("prompt", False)
    assert "border:2px solid " + vocab.segment("completion").colour in trained and "font-weight:600" in trained
    assert "dashed" in masked and "dashed" not in trained
    assert "background-color:" + vocab.segment("prompt").tint in masked
    assert html.count(trained) >= 2 and html.count(masked) >= 3
    # the stylesheet keeps its own look where both set a property
    css = render.style_tag()
    assert "display:inline-flex!important" in css.replace(" ", "") and "margin:0!important" in css.replace(" ", "")


def test_nbconvert_html_of_a_committed_notebook_keeps_the_inline_styles():
    nbconvert = pytest.importorskip("nbconvert")
    import nbformat

    path = Path(__file__).resolve().parents[1] / "notebooks" / "02_sft_as_language_modelling.ipynb"
    body, _ = nbconvert.HTMLExporter().from_notebook_node(nbformat.read(path, as_version=4))
    chips = re.findall(r'<span class="sftviz-tok[^"]*"[^>]*>', body)
    assert len(chips) > 50
    assert all('style="display:inline-block;' in c for c in chips), chips[0]
    assert any("dashed" in c for c in chips) and any("font-weight:600" in c for c in chips)
