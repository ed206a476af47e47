"""The X-ray report for a terminal: the summary, the lints with their first example, and rows as
token strips where ``[...]`` marks a trained token, ``+`` a token trained against the policy and
``-`` one the policy asks for that is not trained."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .vocab import EMPTY_TOKEN, WHITESPACE

if TYPE_CHECKING:
    from ..xray.core import RowXRay, XRayReport

ANSI = {"trained": "\x1b[1;32m", "extra": "\x1b[1;41;97m", "missing": "\x1b[1;43;30m", "reset": "\x1b[0m"}


def _visible(text: str) -> str:
    out = "".join(WHITESPACE.get(c, c) for c in text)
    return out or EMPTY_TOKEN


def row_strip(rx: RowXRay, *, colour: bool = False) -> str:
    """One row's tokens on a line: ``[tok]`` trained, ``tok`` not; ``+[tok]`` trained though the policy
    says no, ``-tok`` untrained though the policy asks for it."""
    flags = dict(rx.disagreements)
    out = []
    for t, (text, trained) in enumerate(zip(rx.tokens, rx.trained)):
        shown = f"[{_visible(text)}]" if trained else _visible(text)
        flag = flags.get(t)
        if flag:
            shown = ("+" if flag == "extra" else "-") + shown
        if colour and (flag or trained):
            shown = ANSI[flag or "trained"] + shown + ANSI["reset"]
        out.append(shown)
    return "".join(out)


def report_text(report: XRayReport, *, rows: int = 3, colour: bool = False) -> str:
    """The whole report as text (see :meth:`~sftviz.xray.core.XRayReport.text`)."""
    from ..xray.lints import LINTS

    st = report.stats()
    lines = [
        f"sftviz X-ray: {st['rows']} rows through {report.pipeline_description}",
        f"policy: {report.policy.describe()}",
        f"tokenizer: {report.tokenizer}",
        f"built {st['built']} rows ({st['failed']} failed, {st['dropped']} dropped); {st['trained']} of "
        f"{st['tokens']} tokens trained; {st['rows_differ']} rows differ from the policy "
        f"({st['extra']} tokens trained against it, {st['missing']} it asks for left untrained)",
        "trained by segment: " + ", ".join(
            f"{seg} {d['trained']}/{d['tokens']}" for seg, d in st["by_segment"].items()),
        "rows by trained tokens: " + ", ".join(f"{label}: {n}" for label, n in st["rows_by_trained"] if n),
        "lengths: " + ", ".join(f"{label}: {n}" for label, n in st["lengths"] if n),
    ]  # fmt: skip
    lines += [f"note: {n}" for n in report.notes]
    counts = report.counts()
    lines.append("lints:" if counts else "lints: none found")
    for name, entry in LINTS.items():
        if name in counts:
            first = report.first(name)
            where = f"row {first.row}" if first.row is not None else "the dataset"
            lines.append(f"  {entry.level.upper():8}{name:26}{counts[name]:>6} rows   first: {where}")
            lines.append(f"          {first.message}")
    for rx in report.rows[:rows]:
        lines.append(f"row {rx.index} ({rx.kind}):")
        if rx.error or rx.dropped:
            lines.append("  " + (rx.error or "dropped by the pipeline"))
            continue
        lines.append("  " + row_strip(rx, colour=colour))
        if rx.policy_error:
            lines.append(f"  (no policy for this row: {rx.policy_error})")
    return "\n".join(lines)
