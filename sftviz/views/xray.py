"""The X-ray report as HTML: the dataset's figures, the lints with their first rows, and each row as a
token strip where every disagreement with the policy is marked.

A disagreement is never colour alone: the token gets a badge with a sign and words ("+ trained, policy
says no", "\u2212 not trained, policy asks") and ``data-sftviz-xray="extra" | "missing"``. The page
uses the same stylesheet as the widgets (both themes) and escapes all token and user text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .html import CSS_PATH, esc, legend_html, minify, style_tag, token_chip_html
from .records import token_records
from .vocab import segment_words

if TYPE_CHECKING:
    from ..xray.core import RowXRay, XRayReport

BADGE = {"extra": ("+", "trained, the policy says no"), "missing": ("\u2212", "not trained, the policy asks for it")}


def xray_css() -> str:
    """The X-ray's stylesheet (``widgets/xray.css``, shared with the TokenView widget), minified."""
    try:
        return minify((CSS_PATH.parent / "xray.css").read_text(encoding="utf-8"))
    except OSError:  # a broken install still shows the badges, just plainer
        return ""


def xray_wrap(chip: str, flag: str | None) -> str:
    """A token element wrapped with its disagreement badge (``flag``: "extra", "missing" or None)."""
    if not flag:
        return chip
    sign, words = BADGE[flag]
    return (f'<span class="sftviz-xr" data-sftviz-xray="{flag}" title="{esc(words)}">{chip}'
            f'<span class="sftviz-xr-badge" aria-label="{esc(words)}">{sign}</span></span>')  # fmt: skip


def mark_records(records: list[dict], expected: list) -> list[dict]:
    """Add each record's X-ray flag (``rec["xray"]``: "extra", "missing" or None) against ``expected``
    (per position: 1 the policy trains it, 0 it does not, None not in its sequence), with a tooltip line."""
    for rec in records:
        t = rec["position"]
        want = expected[t] if t < len(expected) else None
        have = bool(rec["trained"]) and t > 0
        flag = None if want is None or have == bool(want) else ("extra" if have else "missing")
        rec["xray"] = flag
        if flag:
            rec["tip"] = [*rec["tip"], "X-ray: " + BADGE[flag][1]]
    return records


def _strip(records: list[dict]) -> str:
    """Marked records (:func:`mark_records`) as a strip of token elements, each disagreement with its badge."""
    out = ['<div class="sftviz-strip">']
    for rec in records:
        out.append(xray_wrap(token_chip_html(rec, show_logprob=False), rec.get("xray")))
        if rec["newline"]:
            out.append('<span class="sftviz-break"></span>')
    out.append("</div>")
    return "".join(out)


def _chips(rx: RowXRay, positions: set[int] | None = None) -> str:
    """The row's strip; ``positions`` limits it to a window around them (for a lint's first example)."""
    records = mark_records(token_records(rx.example()), rx.expected)
    if positions:
        records = records[max(0, min(positions) - 8) : max(positions) + 9]
    return _strip(records)


def xray_strip_html(records: list[dict], *, title: str | None = None) -> str:
    """Static HTML of marked records (:func:`mark_records`): the TokenView of an X-ray row."""
    head = f'<div class="sftviz-title">{esc(title)}</div>' if title else ""
    return (f'{style_tag()}<style>{xray_css()}</style><div class="sftviz sftviz-static sftviz-tokenview sftviz-xrayview">'
            f'{head}{_strip(records)}{legend_html(r["segment"] for r in records)}</div>')  # fmt: skip


def _row_html(rx: RowXRay) -> str:
    head = f"row {rx.index} ({esc(rx.kind)}): {sum(rx.trained)} of {len(rx.input_ids)} tokens trained"
    diffs = rx.disagreements
    if diffs:
        head += f"; {len(diffs)} disagree with the policy"
    parts = [f'<div class="sftviz-xr-row" data-sftviz-row="{rx.index}"><div class="sftviz-summary">{head}</div>']
    if rx.error or rx.dropped:
        parts.append(f'<div class="sftviz-error">{esc(rx.error or "dropped by the pipeline")}</div></div>')
        return "".join(parts)
    parts.append(_chips(rx))
    if rx.missing:
        cut = ", ".join(repr(m["token"]) for m in rx.missing[:8])
        parts.append(
            f'<div class="sftviz-note">Not in the pipeline\'s sequence (the policy has them): {esc(cut)}</div>'
        )
    if rx.policy_error:
        parts.append(f'<div class="sftviz-note">No policy for this row: {esc(rx.policy_error)}</div>')
    parts.append("</div>")
    return "".join(parts)


def _figures_html(report: XRayReport) -> str:
    st = report.stats()
    rows = "".join(
        f"<tr><td>{esc(segment_words(seg))}</td><td class='sftviz-num'>{d['tokens']}</td>"
        f"<td class='sftviz-num'>{d['trained']}</td><td class='sftviz-num'>{100 * d['share']:.0f} %</td></tr>"
        for seg, d in st["by_segment"].items()
    )
    hist = "".join(
        f"<tr><td>{esc(label)}</td><td class='sftviz-num'>{n}</td></tr>" for label, n in st["rows_by_trained"]
    )
    lengths = "".join(f"<tr><td>{esc(label)}</td><td class='sftviz-num'>{n}</td></tr>" for label, n in st["lengths"])
    summary = (f"{st['rows']} rows: {st['built']} built, {st['failed']} failed, {st['dropped']} dropped, "
               f"{st['truncated']} truncated. {st['trained']} of {st['tokens']} tokens trained. {st['rows_differ']} rows "
               f"differ from the policy: {st['extra']} tokens trained that it does not ask for, {st['missing']} it "
               "asks for left untrained.")  # fmt: skip
    return (
        f'<div class="sftviz-summary">{esc(summary)}</div><div class="sftviz-xr-figures">'
        '<div><h3>Tokens trained, by kind</h3><table class="sftviz-table"><thead><tr><th scope="col">kind</th>'
        '<th scope="col">tokens</th><th scope="col">trained</th><th scope="col">share</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
        '<div><h3>Rows by trained tokens</h3><table class="sftviz-table"><thead><tr><th scope="col">trained tokens</th>'
        f'<th scope="col">rows</th></tr></thead><tbody>{hist}</tbody></table></div>'
        '<div><h3>Row lengths</h3><table class="sftviz-table"><thead><tr><th scope="col">tokens</th>'
        f'<th scope="col">rows</th></tr></thead><tbody>{lengths}</tbody></table></div></div>'
    )


def _lints_html(report: XRayReport) -> str:
    from ..xray.lints import LINTS

    counts = report.counts()
    if not counts:
        return '<h3>Lints</h3><div class="sftviz-summary">No lint found anything.</div>'
    out = ["<h3>Lints</h3>"]
    for name, entry in LINTS.items():
        if name not in counts:
            continue
        first = report.first(name)
        where = f"first in row {first.row}" if first.row is not None else "the dataset"
        sources = f" Reported in: {', '.join(entry.sources)}." if entry.sources else ""
        out.append(
            f'<div class="sftviz-xr-lint" data-level="{esc(entry.level)}" data-sftviz-lint="{esc(name)}">'
            f'<span class="sftviz-xr-level">{esc(entry.level)}</span><b>{esc(name)}</b>: {esc(entry.title)} '
            f"({counts[name]} rows, {where}).{esc(sources)}<div>{esc(first.message)}</div>"
        )
        if first.row is not None and first.positions:
            out.append(_chips(report.rows[first.row], set(first.positions)))
        out.append("</div>")
    return "".join(out)


def xray_html(report: XRayReport, *, rows: int = 20, style: bool = True) -> str:
    """The report as an HTML fragment (a notebook output): figures, lints, the first ``rows`` rows."""
    parts = [style_tag() if style else "", f"<style>{xray_css()}</style>" if style else ""]
    parts.append('<div class="sftviz sftviz-static sftviz-xray">')
    parts.append(f'<div class="sftviz-title">sftviz X-ray: {esc(report.pipeline_description)}</div>')
    parts.append(f'<div class="sftviz-summary">policy: {esc(report.policy.describe())}<br>tokenizer: '
                 f"{esc(report.tokenizer)}</div>")  # fmt: skip
    parts += [f'<div class="sftviz-note">{esc(n)}</div>' for n in report.notes]
    parts.append(_figures_html(report))
    parts.append(_lints_html(report))
    parts.append(f"<h3>The first {min(rows, len(report.rows))} rows</h3>")
    parts.append(
        '<div class="sftviz-caption">Each token is drawn as the pipeline trains it. A token with an orange '
        "frame and a + badge is trained though the policy says no; a blue dashed frame and a \u2212 badge: the "
        "policy asks for it and it is not trained.</div>"
    )
    parts += [_row_html(rx) for rx in report.rows[:rows]]
    segments = {s for rx in report.rows[:rows] for s in rx.segments}
    parts.append(legend_html(sorted(segments)))
    parts.append("</div>")
    return "".join(parts)


def xray_page(report: XRayReport, *, rows: int = 20) -> str:
    """The report as a standalone HTML page (``report.save_html(path)``)."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>sftviz X-ray: {esc(report.pipeline)}</title></head><body><main>"
        f"<h1 style='font-size:18px;font-family:system-ui,sans-serif'>sftviz X-ray</h1>{xray_html(report, rows=rows)}"
        "</main></body></html>"
    )
