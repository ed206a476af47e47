"""The packed-row view (sftviz.views.packing): what it draws is the batch's own examples, positions, targets
and mask, with every token's text escaped, and bad input is named."""

from __future__ import annotations

import math
from html.parser import HTMLParser
from pathlib import Path

import pytest

import sftviz as sv
from sftviz.modeling import load_tokenizer
from sftviz.views.packing import (
    GRID_MAX,
    MARKS,
    PackedRowHTML,
    allowed_grid,
    cross_example_keys,
    packed_row_html,
)
from sftviz.views.records import display_parts

ROOT = Path(__file__).resolve().parents[1]


class View(HTMLParser):
    """The parts of the view the tests read: example runs, token chips, mask cells, the mode note."""

    def __init__(self, html: str):
        super().__init__()
        self.spans, self.chips, self.cells, self.svg, self.root = [], [], [], {}, {}
        self.mode_note, self.summary = "", ""
        self._stack: list[tuple[str, str]] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = a.get("class") or ""
        names = cls.split()
        if "sftviz-packedview" in names:
            self.root = a
        if "sftviz-pk-ex" in names:
            self.spans.append(
                {"example": int(a["data-sftviz-example"]), "tokens": int(a["data-sftviz-tokens"]), "chips": []}
            )
        if "sftviz-pk-tok" in names:
            chip = {"attrs": a, "text": "", "pos": "", "mark": ""}
            self.chips.append(chip)
            self.spans[-1]["chips"].append(chip)
        if tag == "svg" and "sftviz-pk-grid" in names:
            self.svg = a
        if tag == "rect" and "sftviz-pk-cell" in names:
            self.cells.append(a)
        if tag not in ("rect", "path"):  # void in the SVG as written (<rect .../>)
            self._stack.append((tag, cls))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in ("rect", "path"):
            self._stack.pop()

    def handle_endtag(self, tag):
        if tag in ("rect", "path"):
            return
        assert self._stack and self._stack[-1][0] == tag, f"</{tag}> closes {self._stack[-1:]}: broken markup"
        self._stack.pop()

    def handle_data(self, data):
        classes = [c for _, cls in self._stack for c in cls.split()]
        for part, key in (("sftviz-pk-text", "text"), ("sftviz-pk-pos", "pos"), ("sftviz-pk-mark", "mark")):
            if part in classes:
                self.chips[-1][key] += data
        if "sftviz-pk-mode" in classes:
            self.mode_note += data
        if "sftviz-pk-summary" in classes:
            self.summary += data


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()  # the bundled sftviz-tiny tokenizer (it has a pad token); no model needed


@pytest.fixture(scope="module")
def batches(tok):
    rows = sv.load_dataset("support")[:4]
    return {m: sv.pack(rows, tok, max_length=256, mode=m, strategy="in-order") for m in ("boundaries", "naive")}


def _ints(t):
    return [int(v) for v in t.tolist()]


def _runs(ex):
    """(example, start, end) of each run of example_index, padding (-1) included."""
    runs = []
    for i, e in enumerate(ex):
        if runs and runs[-1][0] == e:
            runs[-1][2] = i + 1
        else:
            runs.append([e, i, i + 1])
    return [tuple(r) for r in runs]


def test_one_span_per_example_with_its_tokens_and_the_summary(batches, tok):
    b = batches["boundaries"]
    view = View(packed_row_html(b, tok))
    ex = _ints(b["example_index"][0])
    runs = _runs(ex)
    assert len({e for e in ex if e >= 0}) == 4 and all(e >= 0 for e in ex)  # 4 examples, no padding in this row
    assert [(s["example"], s["tokens"], len(s["chips"])) for s in view.spans] == [(e, z - a, z - a) for e, a, z in runs]
    assert len(view.chips) == b["input_ids"].shape[1]
    targets = int((b["labels"][0] != -100).sum())
    assert view.summary.startswith(
        f"4 examples in the row, {len(ex)} real tokens, 0 padding tokens, {targets} trained targets"
    )
    assert view.root["data-sftviz-targets"] == str(targets) and view.root["data-sftviz-mode"] == "boundaries"


def test_each_example_run_has_its_own_colour(batches, tok):
    html = packed_row_html(batches["naive"], tok)
    styles = html.split('class="sftviz-pk-ex"')[1:]
    colours = [s.split("--ex:")[1].split('"')[0] for s in styles]
    assert len(colours) == 4 and len(set(colours)) == 4


def test_position_ids_and_target_marks_are_the_batch_s(batches, tok):
    b = batches["naive"]
    view = View(packed_row_html(b, tok))
    labels, ex = _ints(b["labels"][0]), _ints(b["example_index"][0])
    assert [int(c["pos"]) for c in view.chips] == _ints(b["position_ids"][0])
    assert [int(c["attrs"]["data-sftviz-position-id"]) for c in view.chips] == _ints(b["position_ids"][0])
    firsts = [a for e, a, _ in _runs(ex) if e >= 0]
    boundary = [i for i, c in enumerate(view.chips) if c["attrs"]["data-sftviz-target"] == "boundary"]
    assert boundary == firsts == [i for i, c in enumerate(view.chips) if c["mark"] == MARKS["boundary"][0]]
    assert all(labels[i] == -100 for i in boundary)
    assert all("boundary: not a target" in view.chips[i]["attrs"]["title"] for i in boundary)
    trained = [i for i, c in enumerate(view.chips) if c["attrs"]["data-sftviz-target"] == "trained"]
    assert trained == [i for i, v in enumerate(labels) if v != -100] and trained
    assert all(view.chips[i]["mark"] == MARKS["trained"][0] for i in trained)
    masked = set(range(len(labels))) - set(trained) - set(boundary)
    assert masked and all(view.chips[i]["attrs"]["data-sftviz-target"] == "masked" for i in masked)
    assert "boundary: not a target" in packed_row_html(b, tok)  # the legend says it in words


def _drawn(view):
    """The (query, key) pairs the grid draws as allowed, and those drawn as reading another example."""
    cell = int(view.svg["data-sftviz-cell"])
    allowed, other = set(), set()
    for r in view.cells:
        q, k0, n = int(r["y"]) // cell, int(r["x"]) // cell, int(r["width"]) // cell
        assert int(r["height"]) == cell
        pairs = {(q, k) for k in range(k0, k0 + n)}
        assert not pairs & allowed, "a cell is drawn twice"
        allowed |= pairs
        if r["data-sftviz-kind"] == "other":
            other |= pairs
    return allowed, other


def test_the_grid_is_the_mask_and_the_modes_differ_off_the_diagonal_blocks(batches, tok):
    ex = _ints(batches["naive"]["example_index"][0])
    n = len(ex)
    drawn = {}
    for mode, b in batches.items():
        view = View(packed_row_html(b, tok))
        assert int(view.svg["data-sftviz-step"]) == 1 and int(view.svg["data-sftviz-positions"]) == n
        allowed, other = _drawn(view)
        drawn[mode] = allowed
        if mode == "boundaries":  # the 4-D mask as it is
            mask = b["attention_mask"][0, 0].tolist()
            want = {(q, k) for q in range(n) for k in range(n) if mask[q][k]}
        else:  # the 2-D mask read as one causal mask over the real tokens
            real = _ints(b["attention_mask"][0])
            want = {(q, k) for q in range(n) for k in range(q + 1) if real[q] and real[k]}
        assert allowed == want
        assert other == {(q, k) for q, k in want if ex[q] != ex[k]}
        assert allowed_grid(b) == [[(q, k) in want for k in range(n)] for q in range(n)]
    off_blocks = {(q, k) for q in range(n) for k in range(q + 1) if ex[q] != ex[k]}
    assert drawn["boundaries"] <= drawn["naive"] and drawn["naive"] - drawn["boundaries"] == off_blocks != set()


def test_the_naive_row_counts_what_each_example_can_see_of_the_others(batches, tok):
    b = batches["naive"]
    ex = _ints(b["example_index"][0])
    # independently: every real key of another example at or before the example's last token
    want = {}
    for e, _start, end in _runs(ex):
        want[e] = sum(1 for k in range(end) if ex[k] >= 0 and ex[k] != e)
    assert cross_example_keys(b) == want and next(iter(want.values())) == 0 and sum(want.values()) > 0
    view = View(packed_row_html(b, tok))
    assert "Mode: naive" in view.mode_note
    for e, n in want.items():
        assert f"example {e}: {n}" in view.mode_note
    assert f"({sum(want.values())} in all)" in view.mode_note
    assert view.root["data-sftviz-cross-keys"] == str(sum(want.values()))
    bound = View(packed_row_html(batches["boundaries"], tok))
    assert set(cross_example_keys(batches["boundaries"]).values()) == {0}
    assert (
        "Mode: boundaries" in bound.mode_note
        and "No example can see a key position of another example" in bound.mode_note
    )


def test_all_token_text_is_escaped(tok):
    rows = [
        {"prompt": "Q: <b>&\"'? <script>alert(1)</script>\nA:", "completion": " <i>yes</i> & 'no'"},
        {"prompt": "Q: 2+2?\nA:", "completion": " 4"},
    ]
    b = sv.pack(rows, tok, max_length=256, mode="naive", strategy="in-order")
    html = packed_row_html(b, tok)
    assert "<script" not in html and "<b>" not in html and "<i>" not in html
    view = View(html)  # the markup stays whole: every tag closes where it should
    ids = _ints(b["input_ids"][0])
    assert len(view.chips) == len(ids)
    shown = [c["text"] for c in view.chips]
    assert shown == ["".join(s for _, s in display_parts(tok.decode([t]))) for t in ids]
    joined = "".join(shown)
    assert all(s in joined for s in ("<b>", "&", '"', "'", "<script>", "</script>"))


def test_padding_is_grey_and_max_tokens_cuts_the_drawing(tok):
    b = sv.pack(sv.load_dataset("support")[:7], tok, max_length=160, mode="boundaries")
    row = next(r for r in range(b["input_ids"].shape[0]) if (b["example_index"][r] < 0).any())
    ex = _ints(b["example_index"][row])
    pad = sum(e < 0 for e in ex)
    view = View(packed_row_html(b, tok, row=row))
    assert view.spans[-1]["example"] == -1 and view.spans[-1]["tokens"] == pad
    assert all(c["attrs"]["data-sftviz-target"] == "pad" and c["mark"] == "pad" for c in view.spans[-1]["chips"])
    assert f"{pad} padding tokens" in view.summary
    cut = View(packed_row_html(b, tok, row=row, max_tokens=20))
    assert len(cut.chips) == 20 and cut.svg["data-sftviz-positions"] == "20"
    assert f"{len(ex) - pad} real tokens" in cut.summary  # the counts stay the row's


def test_a_long_row_is_drawn_downsampled(tok):
    b = sv.pack(sv.load_dataset("support")[:12], tok, max_length=1024, mode="naive", strategy="in-order")
    n = b["input_ids"].shape[1]
    assert n > GRID_MAX
    view = View(packed_row_html(b, tok))
    step = int(view.svg["data-sftviz-step"])
    assert step == math.ceil(n / GRID_MAX)
    allowed, other = _drawn(view)  # in cells: a cell is drawn where any of its pairs may attend
    ex = _ints(b["example_index"][0])
    cells = math.ceil(n / step)

    def pairs(qb, kb):
        return [
            (q, k)
            for q in range(qb * step, min(n, qb * step + step))
            for k in range(kb * step, min(n, kb * step + step))
        ]

    want = {(qb, kb) for qb in range(cells) for kb in range(qb + 1) if any(k <= q for q, k in pairs(qb, kb))}
    assert allowed == want
    assert other == {c for c in want if any(k <= q and ex[k] != ex[q] for q, k in pairs(*c))}
    assert f"cells of {step}\u00d7{step} positions" in view.mode_note


def test_it_shows_itself_in_a_notebook_with_its_stylesheet(batches, tok):
    html = packed_row_html(batches["naive"], tok)
    assert isinstance(html, str) and isinstance(html, PackedRowHTML) and html._repr_html_() == str(html)
    assert ".sftviz-pk-tok" in html  # widgets/packing.css, read from the package
    assert (ROOT / "sftviz" / "widgets" / "packing.css").is_file()
    assert '"widgets/*.css"' in (ROOT / "pyproject.toml").read_text()  # and shipped in the wheel


def test_bad_input_is_named(batches, tok):
    b = batches["naive"]
    with pytest.raises(TypeError, match=r"sv\.pack"):
        packed_row_html([1, 2], tok)
    with pytest.raises(ValueError, match=r"lacks .*position_ids.*example_index"):
        packed_row_html(
            {"input_ids": b["input_ids"], "labels": b["labels"], "attention_mask": b["attention_mask"]}, tok
        )
    with pytest.raises(ValueError, match="out of range: the batch has 1 row"):
        packed_row_html(b, tok, row=1)
    with pytest.raises(ValueError, match="out of range"):
        packed_row_html(b, tok, row=-1)
    with pytest.raises(TypeError, match="row must be a whole number"):
        packed_row_html(b, tok, row="0")
    with pytest.raises(ValueError, match=r"batch\['labels'\] has shape \(1, 10\)"):
        packed_row_html({**b, "labels": b["labels"][:, :10]}, tok)
    with pytest.raises(ValueError, match=r"attention_mask.*mode='naive'.*mode='boundaries'"):
        packed_row_html({**b, "attention_mask": b["attention_mask"][:, :10]}, tok)
    with pytest.raises(TypeError, match=r"batch\['position_ids'\] must be a tensor"):
        packed_row_html({**b, "position_ids": b["position_ids"].tolist()}, tok)
    with pytest.raises(TypeError, match="tokenizer"):
        packed_row_html(b, None)
    with pytest.raises(ValueError, match="max_tokens must be at least 1"):
        packed_row_html(b, tok, max_tokens=0)
    with pytest.raises(TypeError, match="max_tokens"):
        packed_row_html(b, tok, max_tokens=2.5)
