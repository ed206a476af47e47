"""Static HTML views of the core's objects: tokens, log-probabilities, gradients, runs, quizzes.

Everything here is plain Python (standard library only): no widget, plotting or model code, so the
same HTML works in a notebook output, in ``nbconvert --to html``, on nbviewer and in a test. The live
widgets in :mod:`sftviz.widgets` use the *records* built here (:func:`token_records`,
:func:`logprob_records`, :func:`gradient_records`) as their data, so the static and live views show
the same tokens with the same words.

Rules kept in every function:

* all token and user text goes through :func:`html.escape` (attributes included);
* every token element carries ``data-sftviz-segment`` and ``data-sftviz-trained`` (and
  ``data-sftviz-position``), so users' CSS and browser tests can find them;
* trained vs masked is never colour alone: see ``widgets/_common.css`` (solid border + underline +
  check badge vs dashed border + hatching + grey text).

Views never compute model quantities: they take an :class:`~sftviz.data.Example`, a
:class:`~sftviz.logprobs.ScoreReport`, or a gradients object from :mod:`sftviz.gradients`.
"""

from __future__ import annotations

import math
import re
from html import escape
from pathlib import Path

IGNORE_INDEX = -100
CSS_PATH = Path(__file__).resolve().parent / "widgets" / "_common.css"

# What each segment is, in words (legend and tooltips). Unknown segments are shown as they are.
SEGMENTS = {
    "bos": ("BOS", "start of sequence: context only, never a target"),
    "prompt": ("prompt x", "the input: read as context"),
    "completion": ("completion y", "the answer the loss is about"),
    "eos": ("EOS", "end of sequence: trained, so the model learns to stop"),
    "system": ("system", "system message: context"),
    "user": ("user", "user turn: context"),
    "assistant": ("assistant", "assistant turn: what SFT trains"),
    "template": ("template", "role markers and control text added by the chat template"),
    "end_of_turn": ("end of turn", "closes an assistant turn: trained, so the model learns to stop"),
    "pad": ("padding", "filler that makes a batch rectangular: never a target"),
}
SPECIAL_SEGMENTS = ("bos", "eos", "template", "end_of_turn", "pad")
# A run of these segments starts with a small text label, so segments are readable without colour.
LABELLED_SEGMENTS = ("prompt", "completion", "system", "user", "assistant")
WHITESPACE = {" ": "\u00b7", "\n": "\u21b5", "\t": "\u2192", "\r": "\u240d"}


def _css() -> str:
    try:
        return CSS_PATH.read_text(encoding="utf-8")
    except OSError:  # a broken install should still show the tokens, just plainer
        return ""


def _minify(css: str) -> str:
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    css = re.sub(r"\s+", " ", css)
    return re.sub(r"\s*([{};:,>])\s*", r"\1", css).strip()


def style_tag() -> str:
    """The ``<style>`` block the static views need (the same CSS the live widgets use, minified)."""
    return "<style>" + _minify(_css()) + "</style>"


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def esc(value) -> str:
    """HTML-escape anything (quotes too, so it is safe inside attributes)."""
    return escape("" if value is None else str(value), quote=True)


def display_parts(text: str) -> list:
    """Split a token's text into ``("txt", s)`` and ``("ws", s)`` parts for display.

    Whitespace is made visible (space as a middle dot, newline as a return arrow, tab as an arrow),
    because where spaces go is half of what tokenization does. The JS in ``widgets/_common.js``
    mirrors this function.
    """
    if text == "":
        return [("ws", "\u2205")]
    parts, buf, kind = [], "", None
    for ch in text:
        k = "ws" if ch in WHITESPACE or ch.isspace() else "txt"
        shown = WHITESPACE.get(ch, "\u2423") if k == "ws" else ch
        if k != kind and buf:
            parts.append((kind, buf))
            buf = ""
        kind = k
        buf += shown
    if buf:
        parts.append((kind, buf))
    return parts


def _fmt(v, digits=3) -> str:
    if v is None:
        return "\u2013"
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return str(v)
    return f"{v:.{digits}f}".replace("-", "\u2212")


def _fmt_weight(w) -> str:
    return f"{w:g}"


# --------------------------------------------------------------------------------------------
# Token records: the one description of each token, used by static HTML and live widgets alike
# --------------------------------------------------------------------------------------------


def _split(obj, scores=None):
    """Return (example, report) from an Example, a ScoreReport, or an Example plus a report."""
    from .data import Example
    from .logprobs import ScoreReport

    if isinstance(obj, ScoreReport):
        if scores is not None and scores is not obj:
            raise ValueError("Pass a ScoreReport, or an Example with scores=, not a report plus other scores.")
        return obj.example, obj
    if isinstance(obj, Example):
        if scores is not None:
            if not isinstance(scores, ScoreReport):
                raise TypeError(f"scores must be a ScoreReport from sv.score; got {type(scores).__name__}.")
            if len(scores.rows) != len(obj):
                raise ValueError(
                    f"scores has {len(scores.rows)} tokens but the example has {len(obj)}: score this example "
                    "(sv.score(model, tok, example=ex))."
                )
        return obj, scores
    raise TypeError(
        f"Expected an sftviz Example (sv.build_example) or a ScoreReport (sv.score); got {type(obj).__name__}."
    )


def token_records(obj, scores=None) -> list:
    """One dict per token with everything a view shows about it.

    Args:
        obj: an :class:`~sftviz.data.Example` or a :class:`~sftviz.logprobs.ScoreReport`.
        scores: optionally a ``ScoreReport`` of the same example (adds log-probs and ranks).

    Keys: ``position``, ``text``, ``id``, ``segment``, ``label``, ``trained``, ``weight``,
    ``predicted_from``, ``next_text``, ``next_trained``, ``logprob``, ``rank``, ``top``,
    ``special``, ``newline`` and ``tip`` (the tooltip, a list of lines).
    """
    example, report = _split(obj, scores)
    n = len(example)
    rows = example.rows()
    out = []
    for t, row in enumerate(rows):
        text = row["token"]
        trained = bool(row["trained"])
        weight = float(row["weight"])
        sc = report.rows[t] if report is not None else None
        logprob = None if sc is None or sc.logprob is None else float(sc.logprob)
        rank = None if sc is None else sc.rank
        top = [] if sc is None else [[str(s), float(v)] for s, v in (sc.top or [])]
        nxt = t + 1 if t + 1 < n else None
        rec = {
            "position": t,
            "text": text,
            "id": int(row["id"]),
            "segment": str(row["segment"]),
            "label": int(row["label"]),
            "trained": trained,
            "weight": weight,
            "predicted_from": row["predicted_from"],
            "next_text": example.tokens[nxt] if nxt is not None else None,
            "next_trained": bool(example.labels[nxt] != IGNORE_INDEX) if nxt is not None else False,
            "logprob": logprob,
            "rank": rank,
            "top": top,
            "special": row["segment"] in SPECIAL_SEGMENTS,
            "newline": "\n" in text,
        }
        rec["tip"] = tooltip_lines(rec, example.tokens)
        out.append(rec)
    return out


def tooltip_lines(rec: dict, tokens) -> list:
    """The hover text of one token, as lines (the shift made explicit)."""
    t = rec["position"]
    seg = rec["segment"]
    seg_words = SEGMENTS.get(seg, (seg, ""))[0]
    lines = [f"position {t} \u00b7 token {rec['text']!r} \u00b7 id {rec['id']} \u00b7 {seg_words}"]
    if rec["trained"]:
        w = "" if rec["weight"] == 1 else f", weight {_fmt_weight(rec['weight'])}"
        lines.append(f"label {rec['label']}: a target of the loss{w}")
    else:
        lines.append("label -100: masked, not in the loss (still read as context)")
    if t == 0:
        lines.append("predicted from: nothing (position 0 is never a target)")
    else:
        lines.append(f"predicted from position {t - 1} ({tokens[t - 1]!r}): the logits there score this token")
    if rec["next_text"] is None:
        lines.append("predicts: nothing (the last token is a target, never an input)")
    else:
        state = "trained" if rec["next_trained"] else "masked, not in the loss"
        lines.append(f"predicts position {t + 1} ({rec['next_text']!r}): {state}")
    if rec["logprob"] is not None:
        p = math.exp(rec["logprob"])
        rank = f", rank {rec['rank']}" if rec["rank"] is not None else ""
        lines.append(f"log Pr(token | before) = {rec['logprob']:.3f} nats (p = {p:.3g}{rank})")
        if rec["top"]:
            alts = ", ".join(f"{s!r} {v:.2f}" for s, v in rec["top"][:5])
            lines.append(f"model preferred: {alts}")
    return lines


def example_summary(example) -> str:
    """One line: how many tokens, how many trained, which masking."""
    n = len(example)
    trained = [t for t in range(n) if example.labels[t] != IGNORE_INDEX]
    by_seg: dict = {}
    for t in trained:
        by_seg[example.segments[t]] = by_seg.get(example.segments[t], 0) + 1
    parts = ", ".join(f"{k} {v}" for k, v in by_seg.items())
    return (
        f"{n} tokens \u00b7 {len(trained)} trained targets ({parts or 'none'}) \u00b7 "
        f"{n - len(trained)} masked \u00b7 masking={example.masking!r}"
    )


def legend_entries(segments) -> list:
    """Legend rows for the segments present, in order of first appearance."""
    seen = []
    for s in segments:
        if s not in seen:
            seen.append(s)
    return [{"segment": s, "name": SEGMENTS.get(s, (s, ""))[0], "about": SEGMENTS.get(s, (s, ""))[1]} for s in seen]


# --------------------------------------------------------------------------------------------
# Token HTML
# --------------------------------------------------------------------------------------------


def _text_html(text: str) -> str:
    out = []
    for kind, s in display_parts(text):
        out.append(f'<span class="sftviz-ws">{esc(s)}</span>' if kind == "ws" else esc(s))
    return "".join(out)


def token_chip_html(rec: dict, *, role: str = "token", show_logprob: bool = True, show_mark: bool = True,
                    tip: bool = True) -> str:
    """One token element, with its data attributes and (``tip=True``) a ``title`` tooltip."""
    classes = ["sftviz-tok"]
    if rec["special"]:
        classes.append("sftviz-special")
    if rec["trained"] and rec["weight"] < 1:
        classes.append("sftviz-weighted")
    trained = "true" if rec["trained"] else "false"
    attrs = (
        f'class="{" ".join(classes)}" data-sftviz-segment="{esc(rec["segment"])}" data-sftviz-trained="{trained}" '
        f'data-sftviz-position="{rec["position"]}" data-sftviz-role="{role}"'
    )
    if tip:
        attrs += f' title="{esc(chr(10).join(rec["tip"]))}"'
    inner = f'<span class="sftviz-txt">{_text_html(rec["text"])}</span>'
    if show_mark and rec["trained"] and role != "input":
        inner += '<span class="sftviz-mark" aria-label="trained">\u2713</span>'
    if show_logprob and role != "input" and rec["logprob"] is not None:
        inner += f'<span class="sftviz-lp">{esc(_fmt(rec["logprob"], 2))}</span>'
    return f"<span {attrs}>{inner}</span>"


def _seglabel_html(segment: str) -> str:
    name = SEGMENTS.get(segment, (segment, ""))[0]
    return f'<span class="sftviz-seglabel" data-sftviz-segment="{esc(segment)}">{esc(name)}</span>'


def tokens_strip_html(records, *, show_logprob=True) -> str:
    """The sequence as a wrapping strip of token elements, with a label where each segment run starts."""
    out = ['<div class="sftviz-strip">']
    prev = None
    for rec in records:
        seg = rec["segment"]
        if seg != prev and seg in LABELLED_SEGMENTS:
            out.append(_seglabel_html(seg))
        prev = seg
        out.append(token_chip_html(rec, show_logprob=show_logprob))
        if rec["newline"]:
            out.append('<span class="sftviz-break"></span>')
    out.append("</div>")
    return "".join(out)


def shifted_html(records, *, show_logprob=True) -> str:
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


def legend_html(segments) -> str:
    """The legend: segments present, plus what trained, weighted and masked look like."""
    items = []
    for e in legend_entries(segments):
        rec = {"segment": e["segment"], "special": e["segment"] in SPECIAL_SEGMENTS}
        items.append(
            f'<span class="sftviz-legend-item" title="{esc(e["about"])}"><span class="sftviz-tok'
            f'{" sftviz-special" if rec["special"] else ""}" data-sftviz-segment="{esc(e["segment"])}" '
            f'data-sftviz-role="legend">{esc(e["name"])}</span></span>'
        )
    items.append(
        '<span class="sftviz-legend-item"><span class="sftviz-tok" data-sftviz-segment="completion" '
        'data-sftviz-trained="true" data-sftviz-role="legend">ab<span class="sftviz-mark">\u2713</span></span>'
        "trained: a target of the loss (solid border, underline, \u2713)</span>"
    )
    items.append(
        '<span class="sftviz-legend-item"><span class="sftviz-tok" data-sftviz-segment="prompt" '
        'data-sftviz-trained="false" data-sftviz-role="legend">ab</span>'
        "masked: context only, label \u2212100 (dashed, hatched)</span>"
    )
    return '<div class="sftviz-legend">' + "".join(items) + "</div>"


def token_html(obj, scores=None, *, shifted: bool = False, title: str | None = None, legend: bool = True, style: bool = True) -> str:
    """Static HTML of an example token by token (trained vs masked, segments, shift, log-probs).

    Args:
        obj: an :class:`~sftviz.data.Example` or a :class:`~sftviz.logprobs.ScoreReport`.
        scores: a ``ScoreReport`` of the same example, to show each token's log-prob.
        shifted: show the shifted view (inputs row over targets row) instead of the plain sequence.
        title: an optional heading.
        legend: include the legend.
        style: include the ``<style>`` block (leave it on unless you add :func:`style_tag` yourself).
    """
    example, report = _split(obj, scores)
    records = token_records(example, report)
    body = shifted_html(records) if shifted else tokens_strip_html(records)
    parts = [style_tag() if style else "", '<div class="sftviz sftviz-static sftviz-tokenview">']
    if title:
        parts.append(f'<div class="sftviz-title">{esc(title)}</div>')
    parts.append(f'<div class="sftviz-summary">{esc(example_summary(example))}</div>')
    parts.append(body)
    for note in notes_of(example):
        parts.append(f'<div class="sftviz-note">{esc(note)}</div>')
    if legend:
        parts.append(legend_html(example.segments))
    parts.append("</div>")
    return "".join(parts)


def notes_of(example) -> list:
    """The example's plain-language notes (truncation, no BOS, tokens merging at the seam)."""
    notes = list(getattr(example, "notes", []) or [])
    bn = getattr(example, "boundary_note", None)
    if bn is not None:
        notes.append(str(bn))
    return notes


# --------------------------------------------------------------------------------------------
# Log-probabilities: joint = marginal + conditional, token by token
# --------------------------------------------------------------------------------------------


def logprob_records(report) -> list:
    """One dict per scored token with its log-prob, the running sums, and the bar length (0..1).

    ``part`` is ``"x"`` for tokens counted in log Pr(x) and ``"y"`` for those in log Pr(y | x);
    ``running_joint`` is the sum so far of every scored token, ``running_part`` the sum so far of
    this token's part. The last ``running_part`` of each part equals ``report.marginal`` /
    ``report.conditional`` (up to rounding), and the last ``running_joint`` equals ``report.joint``.
    """
    from .logprobs import ScoreReport

    if not isinstance(report, ScoreReport):
        raise TypeError(f"Expected a ScoreReport (from sv.score); got {type(report).__name__}.")
    recs = token_records(report)
    scored = [r for r in recs if r["logprob"] is not None]
    scale = max([1.0] + [-r["logprob"] for r in scored if math.isfinite(r["logprob"])])
    joint = marg = cond = 0.0
    out = []
    for r in scored:
        lp = r["logprob"]
        in_y = bool(report.rows[r["position"]].in_completion)
        joint += lp
        if in_y:
            cond += lp
        else:
            marg += lp
        out.append(
            {
                **r,
                "part": "y" if in_y else "x",
                "running_joint": joint,
                "running_part": cond if in_y else marg,
                "bar": min(1.0, -lp / scale) if math.isfinite(lp) else 1.0,
            }
        )
    return out


def identity_lines(report) -> dict:
    """The chain-rule identity with this report's numbers, as strings (for static and live views)."""
    check = report.check()
    n_c = report.n_completion_scored
    return {
        "joint": _fmt(report.joint),
        "marginal": _fmt(report.marginal),
        "conditional": _fmt(report.conditional),
        "prob_y_given_x": f"{math.exp(report.conditional):.3g}",
        "loss": _fmt(-report.conditional / n_c) if n_c else "\u2013",
        "n_prompt": report.n_prompt_scored,
        "n_completion": n_c,
        "ok": bool(check.ok),
        "check": str(check),
    }


def identity_html(report) -> str:
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
        f'(mean NLL per completion token) = {esc(d["loss"])} nats</div>'
        f'<div class="{"sftviz-note" if d["ok"] else "sftviz-error"}">{esc(d["check"])}</div>'
        "</div>"
    )


def logprob_table_html(report, *, max_rows: int | None = None) -> str:
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
            rows.append(_sum_row("log Pr(x) =", report.marginal, "sum of the prompt rows above"))
        prev_part = r["part"]
        bar_cls = "sftviz-bar-y" if r["part"] == "y" else "sftviz-bar-x"
        part = "y | x" if r["part"] == "y" else "x"
        rows.append(
            f'<tr data-sftviz-part="{r["part"]}"><td class="sftviz-num">{r["position"]}</td>'
            f"<td>{token_chip_html(r, show_logprob=False, tip=False)}</td><td>{part}</td>"
            f'<td><span class="sftviz-bartrack"><span class="sftviz-bar {bar_cls}" style="width:{100 * r["bar"]:.1f}%"></span></span></td>'
            f'<td class="sftviz-num">{esc(_fmt(r["logprob"]))}</td><td class="sftviz-num">{esc(_fmt(r["running_joint"]))}</td>'
            f'<td class="sftviz-num">{esc(_fmt(r["running_part"]))}</td></tr>'
        )
    if prev_part == "x":
        rows.append(_sum_row("log Pr(x) =", report.marginal, "sum of the prompt rows above"))
    rows.append(_sum_row("log Pr(y | x) =", report.conditional, "sum of the completion rows above"))
    rows.append(_sum_row("log Pr([x, y]) =", report.joint, "every row: marginal + conditional"))
    rows.append("</table>")
    return "".join(rows)


def _sum_row(label, value, why):
    return (
        f'<tr class="sftviz-sumrow"><td></td><td colspan="3">{esc(label)} <span class="sftviz-caption">({esc(why)})</span></td>'
        f'<td class="sftviz-num">{esc(_fmt(value))}</td><td></td><td></td></tr>'
    )


def logprob_html(report, *, title: str | None = None, style: bool = True) -> str:
    """Static view of a :class:`~sftviz.logprobs.ScoreReport`: identity, tokens with log-probs, and the table."""
    example = report.example if hasattr(report, "example") else None
    if example is None:
        raise TypeError(f"Expected a ScoreReport (from sv.score); got {type(report).__name__}.")
    parts = [style_tag() if style else "", '<div class="sftviz sftviz-static sftviz-logprobview">']
    if title:
        parts.append(f'<div class="sftviz-title">{esc(title)}</div>')
    parts.append(identity_html(report))
    parts.append(tokens_strip_html(token_records(report)))
    for note in notes_of(example):
        parts.append(f'<div class="sftviz-note">{esc(note)}</div>')
    parts.append(logprob_table_html(report))
    parts.append("</div>")
    return "".join(parts)


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------


def _seq(grads, name, n, default=None):
    v = getattr(grads, name, None)
    if v is None:
        return [default] * n
    v = list(v)
    if len(v) != n:
        raise ValueError(f"gradients.{name} has {len(v)} entries for {n} tokens.")
    return v


def gradient_records(grads) -> dict:
    """Per-token and per-layer gradient numbers from :func:`sftviz.gradients.token_gradients`, ready to draw.

    Returns ``{"tokens": [...], "layers": [...], "masked_name": str, "cosine": float, "max_input": float,
    "max_target": float, "max_layer": float}``; ``masked_name`` names the masked loss ("completion-only"...).
    Each token dict has the keys of :func:`token_records` that exist without an Example (position,
    text, segment, trained, special, newline, tip) plus ``input_masked``, ``input_full``,
    ``target_masked`` and ``target_full`` (None where a token is not a target).
    """
    if not hasattr(grads, "input_grad_masked") or not hasattr(grads, "tokens"):
        raise TypeError(f"Expected the result of sftviz.gradients.token_gradients; got {type(grads).__name__}.")
    tokens = list(grads.tokens)
    n = len(tokens)
    segments = _seq(grads, "segments", n, "prompt")
    positions = _seq(grads, "positions", n) if getattr(grads, "positions", None) is not None else list(range(n))
    im, ifull = _seq(grads, "input_grad_masked", n, 0.0), _seq(grads, "input_grad_full", n, 0.0)
    tm, tf = _seq(grads, "target_grad", n), _seq(grads, "target_grad_full", n)
    trained = getattr(grads, "trained", None)
    trained = [bool(v) for v in trained] if trained is not None else [v is not None for v in tm]
    name = str(getattr(grads, "masked_name", None) or "completion-only")
    out = []
    for t in range(n):
        tip = [
            f"position {positions[t]} \u00b7 token {tokens[t]!r} \u00b7 {SEGMENTS.get(segments[t], (segments[t], ''))[0]}",
            "trained target" if trained[t] else f"masked (not a target of the {name} loss)",
            f"|d loss / d input embedding|: {name} {im[t]:.3g}, full {ifull[t]:.3g}",
        ]
        if tm[t] is not None or tf[t] is not None:
            tip.append(
                f"as a target, its share of the weight gradient: {name} "
                + ("\u2013" if tm[t] is None else f"{tm[t]:.3g}")
                + ", full "
                + ("\u2013" if tf[t] is None else f"{tf[t]:.3g}")
            )
        if t == n - 1:
            tip.append("last token: a target, never an input, so no gradient reaches its input embedding")
        out.append(
            {
                "position": positions[t],
                "text": tokens[t],
                "segment": segments[t],
                "trained": trained[t],
                "weight": 1.0 if trained[t] else 0.0,
                "special": segments[t] in SPECIAL_SEGMENTS,
                "newline": "\n" in tokens[t],
                "logprob": None,
                "input_masked": float(im[t] or 0.0),
                "input_full": float(ifull[t] or 0.0),
                "target_masked": None if tm[t] is None else float(tm[t]),
                "target_full": None if tf[t] is None else float(tf[t]),
                "tip": tip,
            }
        )
    lm = dict(getattr(grads, "layer_norms_masked", {}) or {})
    lf = dict(getattr(grads, "layer_norms_full", {}) or {})
    names = list(lm) + [k for k in lf if k not in lm]
    layers = [{"name": k, "masked": float(lm.get(k, 0.0)), "full": float(lf.get(k, 0.0))} for k in names]

    def vmax(vals):
        vals = [abs(v) for v in vals if v is not None and math.isfinite(v)]
        return max(vals) if vals else 0.0

    return {
        "tokens": out,
        "layers": layers,
        "masked_name": name,
        "cosine": float(getattr(grads, "cosine", float("nan"))),
        "max_input": vmax([r["input_masked"] for r in out] + [r["input_full"] for r in out]),
        "max_target": vmax([r["target_masked"] for r in out] + [r["target_full"] for r in out]),
        "max_layer": vmax([x["masked"] for x in layers] + [x["full"] for x in layers]),
    }


def cosine_sentence(cosine: float, name: str = "completion-only") -> str:
    """One sentence reading the cosine between the gradients of the ``name`` loss and of the full loss."""
    if cosine is None or math.isnan(cosine):
        return "cosine(masked, full) is not available."
    if cosine > 0.9:
        how = "they point almost the same way"
    elif cosine > 0.5:
        how = "similar directions, but the prompt tokens pull the full loss elsewhere too"
    elif cosine > 0:
        how = "quite different directions: most of the full loss's push comes from modelling the prompt"
    else:
        how = "opposing directions"
    return f"cosine(gradient of {name} loss, gradient of full loss) = {cosine:.3f}: {how}."


def _vbar(value, vmax, cls, height=60):
    h = 0.0 if not vmax or value is None else max(0.0, min(1.0, value / vmax)) * height
    return f'<span class="sftviz-bar {cls}" style="width:6px;height:{h:.1f}px"></span>'


def gradients_html(grads, *, what: str = "input", title: str | None = None, style: bool = True) -> str:
    """Static view of per-token gradients (masked vs full, side by side) and per-layer norms.

    ``what="input"`` shows |d loss / d input embedding| per position (prompt tokens get gradient under
    masking too: they are read as context); ``what="target"`` shows each target's share of the weight
    gradient.
    """
    if what not in ("input", "target"):
        raise ValueError("what must be 'input' (gradient reaching each input embedding) or 'target' (each target's share).")
    d = gradient_records(grads)
    km, kf = ("input_masked", "input_full") if what == "input" else ("target_masked", "target_full")
    vmax = d["max_input"] if what == "input" else d["max_target"]
    parts = [style_tag() if style else "", '<div class="sftviz sftviz-static sftviz-gradview">']
    if title:
        parts.append(f'<div class="sftviz-title">{esc(title)}</div>')
    what_words = (
        "|d loss / d input embedding| at each position" if what == "input" else "each target token's share of the weight gradient"
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
    vmax = d["max_layer"] or 1.0
    name = esc(d.get("masked_name", "completion-only"))
    rows = [f'<table class="sftviz-table sftviz-layers"><tr><th>parameter group</th><th>{name}</th><th></th><th>full</th><th></th></tr>']
    for x in d["layers"]:
        rows.append(
            f'<tr><td>{esc(x["name"])}</td>'
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


def runs_table_html(summaries, *, style: bool = True) -> str:
    """A table of fine-tuning runs: one dict per run with name, masking, fault, steps, status and final metrics."""
    cols = [
        ("name", "run"),
        ("masking", "masking"),
        ("fault", "fault"),
        ("steps", "steps"),
        ("status", "status"),
        ("loss", "objective"),
        ("prompt_nll", "prompt NLL"),
        ("completion_nll", "completion NLL"),
        ("eval_cond", "eval log Pr(y|x)/token"),
    ]
    parts = [style_tag() if style else "", '<div class="sftviz sftviz-static sftviz-runs">']
    if not summaries:
        parts.append('<div class="sftviz-caption">No runs yet: choose a masking and press Run.</div></div>')
        return "".join(parts)
    parts.append('<table class="sftviz-table"><tr>' + "".join(f"<th>{esc(h)}</th>" for _, h in cols) + "</tr>")
    for s in summaries:
        cells = []
        for k, _ in cols:
            v = s.get(k)
            text = _fmt(v) if isinstance(v, float) else ("\u2013" if v is None else str(v))
            cells.append(f'<td{" class=sftviz-num" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""}>{esc(text)}</td>')
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table></div>")
    return "".join(parts)


def quiz_html(questions, *, reveal: bool = True, title: str | None = None, style: bool = True) -> str:
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
