"""Static HTML of the core's objects: tokens, log-probabilities, gradients, runs, quizzes.

Plain Python (standard library only, plus the records): no widget, plotting or model code, so the same
HTML works in a notebook output, in ``nbconvert --to html``, on nbviewer and in a test. The words and numbers come
from the records of :mod:`sftviz.views.records` (the live widgets send the same records to the
browser); the segment colours come from :mod:`sftviz.views.vocab`.

Rules kept in every function:

* all token and user text goes through :func:`html.escape` (attributes included);
* every token element carries ``data-sftviz-segment`` and ``data-sftviz-trained`` (and
  ``data-sftviz-position``), so users' CSS and browser tests can find them;
* trained vs masked is never colour alone: see ``widgets/_common.css`` (solid border + underline +
  check badge vs dashed border + hatching + grey text).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from .records import (
    cosine_sentence,
    display_parts,
    example_and_report,
    example_summary,
    fmt_number,
    gradient_records,
    identity_lines,
    legend_entries,
    logprob_records,
    notes_of,
    token_records,
)
from .vocab import PART_COLOURS, is_labelled, is_special, segment_css, segment_words
from .vocab import segment as _segment

if TYPE_CHECKING:
    from ..data import Example
    from ..logprobs import ScoreReport

__all__ = [
    "CSS_PATH",
    "esc",
    "gradients_html",
    "identity_html",
    "layers_table_html",
    "legend_html",
    "logprob_html",
    "logprob_table_html",
    "minify",
    "quiz_html",
    "runs_table_html",
    "seglabel_html",
    "shifted_html",
    "style_tag",
    "sum_row_html",
    "token_chip_html",
    "token_html",
    "tokens_strip_html",
]

CSS_PATH = Path(__file__).resolve().parent.parent / "widgets" / "_common.css"


def _css() -> str:
    try:
        common = CSS_PATH.read_text(encoding="utf-8")
    except OSError:  # a broken install should still show the tokens, just plainer
        common = ""
    return segment_css() + common


def minify(css: str) -> str:
    """CSS without comments and extra whitespace."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    css = re.sub(r"\s+", " ", css)
    return re.sub(r"\s*([{};:,>])\s*", r"\1", css).strip()


def style_tag() -> str:
    """The ``<style>`` block the static views need (the same CSS the live widgets use, minified)."""
    return "<style>" + minify(_css()) + "</style>"


def esc(value: object) -> str:
    """HTML-escape anything (quotes too, so it is safe inside attributes)."""
    return escape("" if value is None else str(value), quote=True)


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------


def _text_html(text: str) -> str:
    out = []
    for kind, s in display_parts(text):
        out.append(f'<span class="sftviz-ws">{esc(s)}</span>' if kind == "ws" else esc(s))
    return "".join(out)


def fallback_style(segment_name: str, trained: bool | None, role: str = "token") -> str:
    """Inline styles that keep a token readable where the stylesheet is stripped.

    JupyterLab drops ``<style>`` blocks (and ``data-*`` attributes) from an untrusted notebook's outputs
    but keeps inline styles; GitHub does the same. These give each token a box in its segment's tint,
    trained ones a solid border in the segment's colour, a thick bottom border and bold text, masked
    ones a dashed grey border and grey text. Where the stylesheet is present its rules win (the few
    properties both set are ``!important`` there), so the styled view does not change.
    """
    seg = _segment(segment_name)
    base = (
        "display:inline-block;margin:1px;padding:1px 4px 2px;border-radius:3px;font-family:monospace;white-space:pre;"
        "color:#1a1a1a"  # the fallback boxes are light in every theme, so their text is dark in every theme
    )
    if role == "input":
        return base + ";background-color:#f7f7f7;border:1px solid #b3b3b3"
    base += f";background-color:{seg.tint}"
    if trained:
        return base + f";border:2px solid {seg.colour};border-bottom-width:4px;font-weight:600"
    if trained is None:  # a legend swatch of the segment
        return base
    return base + ";border:1px dashed #8c8c8c;color:#4a4a4a"


def token_chip_html(
    rec: dict, *, role: str = "token", show_logprob: bool = True, show_mark: bool = True, tip: bool = True
) -> str:
    """One token element, with its data attributes and (``tip=True``) a ``title`` tooltip."""
    classes = ["sftviz-tok"]
    if rec["special"]:
        classes.append("sftviz-special")
    if rec["trained"] and rec["weight"] < 1:
        classes.append("sftviz-weighted")
    trained = "true" if rec["trained"] else "false"
    attrs = (
        f'class="{" ".join(classes)}" data-sftviz-segment="{esc(rec["segment"])}" data-sftviz-trained="{trained}" '
        f'data-sftviz-position="{rec["position"]}" data-sftviz-role="{role}" '
        f'style="{fallback_style(rec["segment"], bool(rec["trained"]), role)}"'
    )
    if tip:
        attrs += f' title="{esc(chr(10).join(rec["tip"]))}"'
    inner = f'<span class="sftviz-txt">{_text_html(rec["text"])}</span>'
    if show_mark and rec["trained"] and role != "input":
        inner += '<span class="sftviz-mark" aria-label="trained">\u2713</span>'
    if show_logprob and role != "input" and rec["logprob"] is not None:
        inner += f'<span class="sftviz-lp">{esc(fmt_number(rec["logprob"], 2))}</span>'
    return f"<span {attrs}>{inner}</span>"


def seglabel_html(segment: str) -> str:
    """The small text label that starts a run of a labelled segment (``PROMPT X``)."""
    style = f"border-left:3px solid {_segment(segment).colour};padding:0 4px 0 3px;margin-left:4px;font-weight:600"
    return (
        f'<span class="sftviz-seglabel" data-sftviz-segment="{esc(segment)}" style="{style}">'
        f"{esc(segment_words(segment))}</span>"
    )


def tokens_strip_html(records: list[dict], *, show_logprob: bool = True) -> str:
    """The sequence as a wrapping strip of token elements, with a label where each segment run starts."""
    out = ['<div class="sftviz-strip">']
    prev = None
    for rec in records:
        seg = rec["segment"]
        if seg != prev and is_labelled(seg):
            out.append(seglabel_html(seg))
        prev = seg
        out.append(token_chip_html(rec, show_logprob=show_logprob))
        if rec["newline"]:
            out.append('<span class="sftviz-break"></span>')
    out.append("</div>")
    return "".join(out)


def shifted_html(records: list[dict], *, show_logprob: bool = True) -> str:
    """The shifted view: for each prediction, the input token (above) and the target it is scored on (below)."""
    out = [
        '<div class="sftviz-caption">Each column is one prediction: the model reads the top token (and everything '
        "before it) and is scored on the bottom token. Only targets marked trained count in the loss.</div>",
        '<div class="sftviz-strip sftviz-shift">',
        '<span class="sftviz-rowkey"><span>input t\u22121</span><span>target t</span></span>',
    ]
    for t in range(1, len(records)):
        inp, tgt = records[t - 1], records[t]
        out.append(f'<span class="sftviz-col" data-sftviz-position="{t}">')
        out.append(token_chip_html(inp, role="input", show_logprob=False))
        out.append('<span class="sftviz-arrow" aria-hidden="true">\u2193</span>')
        out.append(token_chip_html(tgt, role="target", show_logprob=show_logprob))
        out.append("</span>")
    out.append("</div>")
    return "".join(out)


def legend_html(segments: Iterable[str]) -> str:
    """The legend: segments present, plus what trained, weighted and masked look like."""
    items = []
    for e in legend_entries(segments):
        special = " sftviz-special" if is_special(e["segment"]) else ""
        items.append(
            f'<span class="sftviz-legend-item" title="{esc(e["about"])}"><span class="sftviz-tok'
            f'{special}" data-sftviz-segment="{esc(e["segment"])}" data-sftviz-role="legend" '
            f'style="{fallback_style(e["segment"], None)}">{esc(e["name"])}</span></span> '
        )
    items.append(
        '<span class="sftviz-legend-item"><span class="sftviz-tok" data-sftviz-segment="completion" '
        f'data-sftviz-trained="true" data-sftviz-role="legend" style="{fallback_style("completion", True)}">'
        'ab<span class="sftviz-mark">\u2713</span></span>'
        "trained: a target of the loss (solid border, underline, \u2713)</span> "
    )
    items.append(
        '<span class="sftviz-legend-item"><span class="sftviz-tok" data-sftviz-segment="prompt" '
        f'data-sftviz-trained="false" data-sftviz-role="legend" style="{fallback_style("prompt", False)}">ab</span>'
        "masked: context only, label \u2212100 (dashed, hatched)</span>"
    )
    return '<div class="sftviz-legend">' + "".join(items) + "</div>"


def _notes_html(example: Example) -> str:
    return "".join(f'<div class="sftviz-note">{esc(note)}</div>' for note in notes_of(example))


def token_html(
    obj: Example | ScoreReport,
    scores: ScoreReport | None = None,
    *,
    shifted: bool = False,
    title: str | None = None,
    legend: bool = True,
    style: bool = True,
) -> str:
    """Static HTML of an example token by token (trained vs masked, segments, shift, log-probs).

    Args:
        obj: an :class:`~sftviz.data.Example` or a :class:`~sftviz.logprobs.ScoreReport`.
        scores: a ``ScoreReport`` of the same example, to show each token's log-prob.
        shifted: show the shifted view (inputs row over targets row) instead of the plain sequence.
        title: an optional heading.
        legend: include the legend.
        style: include the ``<style>`` block (leave it on unless you add :func:`style_tag` yourself).
    """
    example, report = example_and_report(obj, scores)
    records = token_records(example, report)
    body = shifted_html(records) if shifted else tokens_strip_html(records)
    parts = [style_tag() if style else "", '<div class="sftviz sftviz-static sftviz-tokenview">']
    if title:
        parts.append(f'<div class="sftviz-title">{esc(title)}</div>')
    parts.append(f'<div class="sftviz-summary">{esc(example_summary(example))}</div>')
    parts.append(body)
    parts.append(_notes_html(example))
    if legend:
        parts.append(legend_html(example.segments))
    parts.append("</div>")
    return "".join(parts)


# --------------------------------------------------------------------------------------------
# Log-probabilities: joint = marginal + conditional, token by token
# --------------------------------------------------------------------------------------------


def identity_html(report: ScoreReport) -> str:
    """``log Pr([x, y]) = log Pr(x) + log Pr(y | x)`` with the numbers, and the check in words."""
    d = identity_lines(report)
    return (
        '<div class="sftviz-identity">'
        '<table class="sftviz-table"><tr><th>log Pr([x, y])</th><th></th><th>log Pr(x)</th><th></th><th>log Pr(y | x)</th></tr>'
        f'<tr><td class="sftviz-num" data-sftviz-sum="joint">{esc(d["joint"])}</td><td>=</td>'
        f'<td class="sftviz-num" data-sftviz-sum="marginal">{esc(d["marginal"])}</td><td>+</td>'
        f'<td class="sftviz-num" data-sftviz-sum="conditional">{esc(d["conditional"])}</td></tr>'
        f'<tr><td class="sftviz-caption">joint, {d["n_prompt"] + d["n_completion"]} scored tokens</td><td></td>'
        f'<td class="sftviz-caption">marginal, {d["n_prompt"]} prompt tokens</td><td></td>'
        f'<td class="sftviz-caption">conditional, {d["n_completion"]} completion tokens</td></tr></table>'
        f'<div class="sftviz-caption">Pr(y | x) = {esc(d["prob_y_given_x"])} \u00b7 masked SFT loss on this example '
        f"(mean NLL per completion token) = {esc(d['loss'])} nats</div>"
        f'<div class="{"sftviz-note" if d["ok"] else "sftviz-error"}">{esc(d["check"])}</div>'
        "</div>"
    )


# Inline fallbacks of the log-prob bars (see fallback_style): a grey track, a bar in the part's colour.
_TRACK_STYLE = "display:inline-block;width:160px;height:10px;vertical-align:middle;background-color:#e6e6e6"


def _bar_style(part: str) -> str:
    return f"display:inline-block;height:10px;vertical-align:middle;background-color:{PART_COLOURS[part]}"


def _logprob_row_html(r: dict) -> str:
    bar_cls = "sftviz-bar-y" if r["part"] == "y" else "sftviz-bar-x"
    part = "y | x" if r["part"] == "y" else "x"
    return (
        f'<tr data-sftviz-part="{r["part"]}"><td class="sftviz-num">{r["position"]}</td>'
        f"<td>{token_chip_html(r, show_logprob=False, tip=False)}</td><td>{part}</td>"
        f'<td><span class="sftviz-bartrack" style="{_TRACK_STYLE}"><span class="sftviz-bar {bar_cls}" '
        f'style="width:{100 * r["bar"]:.1f}%;{_bar_style(r["part"])}"></span></span></td>'
        f'<td class="sftviz-num">{esc(fmt_number(r["logprob"]))}</td><td class="sftviz-num">{esc(fmt_number(r["running_joint"]))}</td>'
        f'<td class="sftviz-num">{esc(fmt_number(r["running_part"]))}</td></tr>'
    )


def logprob_table_html(report: ScoreReport, *, max_rows: int | None = None) -> str:
    """Per-token log-probs with bars and running sums, split into the prompt part and the completion part."""
    recs = logprob_records(report)
    if max_rows is not None:
        recs = recs[:max_rows]
    head = (
        '<table class="sftviz-table sftviz-logprobs"><tr><th>pos</th><th>token</th><th>part</th>'
        "<th>\u2212log Pr (bar)</th><th>log Pr</th><th>\u03a3 joint so far</th><th>\u03a3 part so far</th></tr>"
    )
    rows = [head]
    prev_part = None
    for r in recs:
        if prev_part == "x" and r["part"] == "y":
            rows.append(sum_row_html("log Pr(x) =", report.marginal, "sum of the prompt rows above"))
        prev_part = r["part"]
        rows.append(_logprob_row_html(r))
    if prev_part == "x":
        rows.append(sum_row_html("log Pr(x) =", report.marginal, "sum of the prompt rows above"))
    rows.append(sum_row_html("log Pr(y | x) =", report.conditional, "sum of the completion rows above"))
    rows.append(sum_row_html("log Pr([x, y]) =", report.joint, "every row: marginal + conditional"))
    rows.append("</table>")
    return "".join(rows)


def sum_row_html(label: str, value: float | None, why: str) -> str:
    """A bold row of the log-prob table: ``label`` and the sum ``value``, with why it is that sum."""
    return (
        f'<tr class="sftviz-sumrow"><td></td><td colspan="3">{esc(label)} <span class="sftviz-caption">({esc(why)})</span></td>'
        f'<td class="sftviz-num">{esc(fmt_number(value))}</td><td></td><td></td></tr>'
    )


def logprob_html(report: ScoreReport, *, title: str | None = None, style: bool = True) -> str:
    """Static view of a :class:`~sftviz.logprobs.ScoreReport`: identity, tokens with log-probs, and the table."""
    example = report.example if hasattr(report, "example") else None
    if example is None:
        raise TypeError(f"Expected a ScoreReport (from sv.score); got {type(report).__name__}.")
    parts = [style_tag() if style else "", '<div class="sftviz sftviz-static sftviz-logprobview">']
    if title:
        parts.append(f'<div class="sftviz-title">{esc(title)}</div>')
    parts.append(identity_html(report))
    parts.append(tokens_strip_html(token_records(report)))
    parts.append(_notes_html(example))
    parts.append(logprob_table_html(report))
    parts.append("</div>")
    return "".join(parts)


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------


def _vbar(value: float | None, vmax: float, cls: str, height: int = 60) -> str:
    h = 0.0 if not vmax or value is None else max(0.0, min(1.0, value / vmax)) * height
    return f'<span class="sftviz-bar {cls}" style="width:6px;height:{h:.1f}px"></span>'


def gradients_html(grads: object, *, what: str = "input", title: str | None = None, style: bool = True) -> str:
    """Static view of per-token gradients (masked vs full, side by side) and per-layer norms.

    ``what="input"`` shows |d loss / d input embedding| per position (prompt tokens get gradient under
    masking too: they are read as context); ``what="target"`` shows each target's share of the weight
    gradient.
    """
    if what not in ("input", "target"):
        raise ValueError(
            "what must be 'input' (gradient reaching each input embedding) or 'target' (each target's share)."
        )
    d = gradient_records(grads)
    km, kf = ("input_masked", "input_full") if what == "input" else ("target_masked", "target_full")
    vmax = d["max_input"] if what == "input" else d["max_target"]
    parts = [style_tag() if style else "", '<div class="sftviz sftviz-static sftviz-gradview">']
    if title:
        parts.append(f'<div class="sftviz-title">{esc(title)}</div>')
    what_words = (
        "|d loss / d input embedding| at each position"
        if what == "input"
        else "each target token's share of the weight gradient"
    )
    parts.append(
        f'<div class="sftviz-caption">{esc(what_words)}. Left bar (solid): {esc(d["masked_name"])} loss. '
        "Right bar (striped): full loss. Same scale for both.</div>"
    )
    parts.append('<div class="sftviz-strip sftviz-gradstrip">')
    for r in d["tokens"]:
        parts.append(
            '<span class="sftviz-col"><span style="display:flex;align-items:flex-end;gap:1px;height:62px">'
            + _vbar(r[km], vmax, "sftviz-bar-masked")
            + _vbar(r[kf], vmax, "sftviz-bar-full")
            + "</span>"
            + token_chip_html(r, show_logprob=False)
            + "</span>"
        )
    parts.append("</div>")
    parts.append(layers_table_html(d))
    parts.append(f'<div class="sftviz-caption">{esc(cosine_sentence(d["cosine"], d["masked_name"]))}</div>')
    parts.append(legend_html([r["segment"] for r in d["tokens"]]))
    parts.append("</div>")
    return "".join(parts)


def layers_table_html(d: dict) -> str:
    """The per-layer gradient norms of :func:`~sftviz.views.records.gradient_records` as a table with bars."""
    vmax = d["max_layer"] or 1.0
    name = esc(d.get("masked_name", "completion-only"))
    rows = [
        f'<table class="sftviz-table sftviz-layers"><tr><th>parameter group</th><th>{name}</th><th></th><th>full</th><th></th></tr>'
    ]
    for x in d["layers"]:
        rows.append(
            f"<tr><td>{esc(x['name'])}</td>"
            f'<td><span class="sftviz-bartrack"><span class="sftviz-bar sftviz-bar-masked" style="width:{100 * x["masked"] / vmax:.1f}%"></span></span></td>'
            f'<td class="sftviz-num">{x["masked"]:.3g}</td>'
            f'<td><span class="sftviz-bartrack"><span class="sftviz-bar sftviz-bar-full" style="width:{100 * x["full"] / vmax:.1f}%"></span></span></td>'
            f'<td class="sftviz-num">{x["full"]:.3g}</td></tr>'
        )
    rows.append("</table>")
    return "".join(rows)


# --------------------------------------------------------------------------------------------
# Runs and quizzes
# --------------------------------------------------------------------------------------------

RUN_COLUMNS = (
    ("name", "run"),
    ("masking", "masking"),
    ("fault", "fault"),
    ("steps", "steps"),
    ("lr", "learning rate"),
    ("seed", "seed"),
    ("status", "status"),
    ("loss", "objective"),
    ("prompt_nll", "prompt NLL"),
    ("completion_nll", "completion NLL"),
    ("eval_cond", "eval log Pr(y|x)/token"),
)


def _run_cell_html(v: object) -> str:
    text = fmt_number(v) if isinstance(v, float) else ("\u2013" if v is None else str(v))
    num = isinstance(v, (int, float)) and not isinstance(v, bool)
    return f"<td{' class=sftviz-num' if num else ''}>{esc(text)}</td>"


def runs_table_html(summaries: list[dict], *, style: bool = True) -> str:
    """A table of fine-tuning runs: one dict per run with name, masking, fault, steps, status and final metrics."""
    parts = [style_tag() if style else "", '<div class="sftviz sftviz-static sftviz-runs">']
    if not summaries:
        parts.append('<div class="sftviz-caption">No runs yet: choose a masking and press Run.</div></div>')
        return "".join(parts)
    parts.append('<table class="sftviz-table"><tr>' + "".join(f"<th>{esc(h)}</th>" for _, h in RUN_COLUMNS) + "</tr>")
    for s in summaries:
        parts.append("<tr>" + "".join(_run_cell_html(s.get(k)) for k, _ in RUN_COLUMNS) + "</tr>")
    parts.append("</table></div>")
    return "".join(parts)


def quiz_html(questions: Iterable, *, reveal: bool = True, title: str | None = None, style: bool = True) -> str:
    """Static view of a question bank: each question with its choices; answers in a closed ``<details>``."""
    parts = [style_tag() if style else "", '<div class="sftviz sftviz-static sftviz-quiz">']
    if title:
        parts.append(f'<div class="sftviz-title">{esc(title)}</div>')
    for i, q in enumerate(questions, start=1):
        parts.append(f'<div class="sftviz-q" data-sftviz-question="{esc(q.id)}">')
        parts.append(f'<p><b>{i}.</b> {esc(q.prompt)}</p><ul class="sftviz-static-choices">')
        for j, c in enumerate(q.choices):
            letter = "" if q.type == "true_false" else f"<b>{'ABCDEFGH'[j]}.</b> "
            parts.append(f"<li>{letter}{esc(c.text)}</li>")
        parts.append("</ul>")
        if reveal:
            parts.append(
                f"<details><summary>Answer</summary><p><b>{esc(q.answer_text)}</b></p>"
                f"<p>{esc(q.explanation)}</p></details>"
            )
        parts.append("</div>")
    parts.append("</div>")
    return "".join(parts)
