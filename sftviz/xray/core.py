"""The X-ray: a pipeline's labels beside a policy's, row by row, token by token, with the lints.

    >>> report = sv.xray(sv.load_dataset("support-chat")[:2], tok, pipeline="hf-lm")
    >>> sorted(report.counts().items())  # lint -> rows where it fired
    [('roles-trained', 2), ('template-eos-differs', 1), ('template-trained', 2)]

``print(report.text())`` gives the summary and the first rows for a terminal;
``report.save_html("xray.html")`` the same as a page to open or attach to a PR.

Each row shows the pipeline's own ids and labels (never replaced). Beside each token is what the
policy asks for it: trained, not trained, or nothing (the token is not in the sequence the policy
builds, such as a BOS the pipeline adds). The two sequences are aligned token by token, so a pipeline
that adds, drops or cuts tokens is shown as it is.
"""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ..chat import NOT_PREFIX_STABLE
from ..data import Example, display_tokens
from ..masking import IGNORE_INDEX
from .pipelines import Built, Pipeline, pipeline_from
from .policy import Policy, expected_example, policy_from
from .rows import read_rows, row_kind

LEVELS = ("info", "warning", "error")


@dataclass
class Finding:
    """One lint's finding: which lint, how bad, where (row and token positions), and why."""

    lint: str
    level: str
    message: str
    row: int | None = None
    positions: list[int] = field(default_factory=list)


@dataclass
class RowXRay:
    """One row as the pipeline built it, with what the policy asks for each token.

    Attributes:
        index: the row's index in the data.
        kind: the row's form (see :data:`sftviz.xray.rows.KINDS`).
        input_ids, labels: the pipeline's own (labels ``-100`` where not trained).
        tokens: each id's text.
        expected: per token, 1 where the policy trains it, 0 where it does not, None where the token
            is not in the sequence the policy builds.
        weights: per token, the policy's loss weight (None where ``expected`` is None).
        segments: per token, what it is (from the policy's example where aligned).
        missing: tokens of the policy's sequence that the pipeline's lacks (cut or never added).
        error: the pipeline's error for this row; ``dropped``: the pipeline returned no row.
        policy_error: why the policy could not be built for this row (a template that rewrites
            earlier turns, say).
        injected: positions of a system prompt the template wrote into a row that had none.
        meta: what the pipeline reported about the row (markers found, a refusal).
        findings: the lints' findings on this row.
    """

    index: int
    kind: str
    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    expected: list[int | None] = field(default_factory=list)
    weights: list[float | None] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)
    error: str | None = None
    dropped: bool = False
    policy_error: str | None = None
    injected: list[int] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @cached_property
    def trained(self) -> list[int]:
        """1 where the pipeline trains the token. Position 0 never counts: the model's shift drops its label."""
        return [int(t > 0 and v != IGNORE_INDEX) for t, v in enumerate(self.labels)]

    @cached_property
    def disagreements(self) -> list[tuple[int, str]]:
        """``(position, "extra" | "missing")`` where the pipeline trains a token the policy does not
        ask for (extra) or leaves untrained one it asks for (missing)."""
        out = []
        for t, (have, want) in enumerate(zip(self.trained, self.expected)):
            if want is not None and have != want:
                out.append((t, "extra" if have else "missing"))
        return out

    def example(self) -> Example:
        """The row as an :class:`~sftviz.data.Example` with the pipeline's labels (for TokenView)."""
        cmask = [int(e == 1) for e in self.expected] if any(e is not None for e in self.expected) else self.trained
        return Example(list(self.input_ids), [v if t else IGNORE_INDEX for v, t in zip(self.labels, self.trained)],
                       cmask, [int(t > 0 and not c) for t, c in enumerate(cmask)], list(self.segments),
                       list(self.tokens), [float(t) for t in self.trained], masking="custom")  # fmt: skip

    def positions_text(self, positions: list[int], limit: int = 6) -> str:
        """Tokens at ``positions`` as ``12 '<|im_end|>'`` items, the first ``limit`` of them."""
        items = [f"{p} {self.tokens[p]!r}" for p in positions[:limit] if 0 <= p < len(self.tokens)]
        more = len(positions) - limit
        return ", ".join(items) + (f" and {more} more" if more > 0 else "")


def align(policy_ids: list[int], ids: list[int]) -> list[int | None]:
    """For each position of ``ids``, the position of the same token in ``policy_ids`` (None when it
    has no counterpart), by the longest matching blocks."""
    if policy_ids == ids:
        return list(range(len(ids)))
    out: list[int | None] = [None] * len(ids)
    for i, j, n in difflib.SequenceMatcher(None, policy_ids, ids, autojunk=False).get_matching_blocks():
        for k in range(n):
            out[j + k] = i + k
    return out


def _segment_of(tok: Any, t: int, ids: list[int], trained: int, special: set[int]) -> str:
    """What an unaligned token is, from its id alone."""
    tid = ids[t]
    if tid == tok.bos_token_id and (t == 0 or ids[t - 1] == tid):
        return "bos"
    if tid == tok.eos_token_id:
        return "eos"
    if tid in special:
        return "template"
    return "completion" if trained else "prompt"


def row_xray(
    index: int, row: dict, built: Built | None, tok: Any, expected: tuple[Example | None, str | None]
) -> RowXRay:
    """Compare one row's built labels with the policy's (``expected``: its example, or why there is none)."""
    rx = RowXRay(index, row_kind(row))
    if built is None:
        rx.dropped = True
    elif built.error:
        rx.error = built.error
    else:
        rx.input_ids, rx.labels, rx.meta = list(built.input_ids), list(built.labels), dict(built.meta)
        rx.tokens = display_tokens(tok, rx.input_ids)
    ex, rx.policy_error = expected
    _compare(rx, ex, tok)
    return rx


def _expected(tok: Any, rows: list[dict], policy: Policy) -> list[tuple[Example | None, str | None]]:
    out = []
    for row in rows:
        try:
            out.append((expected_example(tok, row, policy), None))
        except (ValueError, TypeError) as err:
            out.append((None, str(err)))
    return out


_FORKED: tuple = ()


def _expected_chunk(bounds: tuple[int, int]) -> list[tuple[Example | None, str | None]]:
    tok, rows, policy = _FORKED
    return _expected(tok, rows[bounds[0] : bounds[1]], policy)


def policy_examples(tok: Any, rows: list[dict], policy: Policy, workers: int | None = None) -> list:
    """The policy's example (or its error) for every row. Many rows are split over processes forked
    from this one (Linux; rendering templates is pure Python, so threads would not help)."""
    import os
    import sys

    workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    if workers < 2 or len(rows) < 400 or not sys.platform.startswith("linux"):
        return _expected(tok, rows, policy)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    global _FORKED
    _FORKED = (tok, rows, policy)
    step = -(-len(rows) // (workers * 4))
    chunks = [(i, min(i + step, len(rows))) for i in range(0, len(rows), step)]
    # The fast tokenizer warns in a forked child when the parent has used its threads: they are off
    # in the children (the setting is inherited at the fork) and unchanged here afterwards.
    was = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            return [item for part in pool.map(_expected_chunk, chunks) for item in part]
    finally:
        _FORKED = ()
        if was is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = was


def _compare(rx: RowXRay, ex: Example | None, tok: Any) -> None:
    n = len(rx.input_ids)
    trained = rx.trained
    special = set(tok.all_special_ids) if n else set()
    if ex is None:
        rx.expected, rx.weights = [None] * n, [None] * n
        rx.segments = [_segment_of(tok, t, rx.input_ids, trained[t], special) for t in range(n)]
        return
    want = [int(t > 0 and w > 0) for t, w in enumerate(ex.weights)]
    where = align(ex.input_ids, rx.input_ids)
    rx.expected = [want[p] if p is not None else None for p in where]
    rx.weights = [ex.weights[p] if p is not None else None for p in where]
    rx.segments = [ex.segments[p] if p is not None else _segment_of(tok, t, rx.input_ids, trained[t], special)
                   for t, p in enumerate(where)]  # fmt: skip
    injected = set(ex.source.get("injected_system", ()))
    rx.injected = [t for t, p in enumerate(where) if p is not None and p in injected]
    matched = {p for p in where if p is not None}
    rx.missing = [{"position": p, "token": ex.tokens[p], "trained": bool(want[p]), "segment": ex.segments[p]}
                  for p in range(len(ex)) if p not in matched]  # fmt: skip


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


@dataclass
class XRayReport:
    """What :func:`xray` found: every row, the findings, and the dataset's figures.

    ``text()`` is the terminal form, ``save_html(path)`` / ``to_html()`` the page (the same view in
    a notebook), ``exit_code(fail_on)`` what a CI job should return.
    """

    pipeline: str
    pipeline_description: str
    policy: Policy
    tokenizer: str
    rows: list[RowXRay]
    findings: list[Finding]
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Rows affected by each lint, by lint name."""
        seen = Counter()
        for lint in {(f.lint, f.row) for f in self.findings}:
            seen[lint[0]] += 1
        return dict(seen)

    def first(self, lint: str) -> Finding | None:
        """The first finding of ``lint``."""
        return next((f for f in self.findings if f.lint == lint), None)

    def worst(self) -> str | None:
        """The highest level among the findings (None when there are none)."""
        levels = [LEVELS.index(f.level) for f in self.findings]
        return LEVELS[max(levels)] if levels else None

    def exit_code(self, fail_on: str = "error") -> int:
        """1 when a finding reaches ``fail_on`` ("info", "warning", "error"; "never": always 0), else 0."""
        if fail_on == "never":
            return 0
        if fail_on not in LEVELS:
            raise ValueError(f"fail_on must be one of {', '.join(LEVELS)} or 'never'; got {fail_on!r}.")
        worst = self.worst()
        return int(worst is not None and LEVELS.index(worst) >= LEVELS.index(fail_on))

    def stats(self) -> dict:
        """The dataset's figures: tokens trained by segment, rows by trained-token count, lengths,
        disagreements with the policy."""
        from .stats import dataset_stats

        return dataset_stats(self)

    def text(self, rows: int = 3, *, colour: bool = False) -> str:
        """The report for a terminal: summary, lints with their first example, and the first ``rows`` rows."""
        from ..views.xray_text import report_text

        return report_text(self, rows=rows, colour=colour)

    def to_html(self, rows: int = 20) -> str:
        """The report as a standalone HTML page (:func:`sftviz.views.xray.xray_page`)."""
        from ..views.xray import xray_page

        return xray_page(self, rows=rows)

    def save_html(self, path: Any, rows: int = 20) -> None:
        """Write :meth:`to_html` to ``path``."""
        from pathlib import Path

        Path(path).write_text(self.to_html(rows=rows), encoding="utf-8")

    def view(self, rows: int = 5) -> ReportView:
        """The report as a notebook output showing its first ``rows`` rows (displaying the report itself
        shows 5)."""
        return ReportView(self, rows)

    def _repr_html_(self) -> str:
        return ReportView(self, 5)._repr_html_()

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(self.counts().items())) or "no findings"
        return f"XRayReport({len(self.rows)} rows, pipeline {self.pipeline!r}, {counts})"


@dataclass
class ReportView:
    """An :class:`XRayReport` as a notebook shows it (:meth:`XRayReport.view`)."""

    report: XRayReport
    rows: int

    def _repr_html_(self) -> str:
        from ..views.xray import xray_html

        return xray_html(self.report, rows=self.rows)

    def __repr__(self) -> str:
        return repr(self.report)


def xray(
    data: Any,
    tok: Any,
    pipeline: object = "sftviz",
    policy: object = None,
    *,
    max_rows: int | None = None,
    **pipeline_options: Any,
) -> XRayReport:
    """See exactly what a pipeline trains in every row, beside what the policy means to train.

    Args:
        data: a JSONL path, a list of rows or a ``datasets.Dataset``, in TRL's forms (prompt/completion,
            conversational prompt/completion, messages, text), ShareGPT ``conversations``, or
            tokenized rows (``input_ids`` with ``labels``).
        tok: the tokenizer (with its chat template) the pipeline uses.
        pipeline: what builds the labels: "sftviz", "trl", "trl-assistant-only", "hf-lm", "marker",
            "given", a :class:`~sftviz.xray.pipelines.Pipeline`, or a callable ``row -> {"input_ids",
            "labels"}``. ``pipeline_options`` go to a named pipeline (``max_length=...``,
            ``response_part=...``).
        policy: what you mean to train: None (every assistant turn with its end-of-turn token), a
            :class:`~sftviz.xray.policy.Policy`, a preset ("assistant", "last", "no-eos",
            "everything") or ``"KEY=VALUE;..."``.
        max_rows: look at the first rows only.

    Returns:
        An :class:`XRayReport`.
    """
    from ..checks import check_tokenizer
    from .lints import run_lints

    check_tokenizer(tok)
    rows = read_rows(data)
    if max_rows is not None:
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise ValueError(f"max_rows must be a positive integer or None; got {max_rows!r}.")
        rows = rows[:max_rows]
    if not rows:
        raise ValueError("data has no rows to X-ray.")
    for i, row in enumerate(rows):
        try:
            row_kind(row)
        except ValueError as err:
            raise ValueError(f"row {i}: {err}") from None
    pipe: Pipeline = pipeline_from(pipeline, **pipeline_options)
    policy = policy_from(policy)
    expected = policy_examples(tok, rows, policy)  # first: the pipelines may start threads
    built = pipe.run(rows, tok)
    if len(built) != len(rows):
        raise ValueError(
            f"the pipeline returned {len(built)} results for {len(rows)} rows; it must return one per row."
        )
    row_reports = [row_xray(i, row, b, tok, e) for i, (row, b, e) in enumerate(zip(rows, built, expected))]
    report = XRayReport(pipe.name, pipe.description, policy, _tok_name(tok), row_reports, [], list(pipe.notes))
    run_lints(report, rows, tok, pipe)
    return report


def _tok_name(tok: Any) -> str:
    """The tokenizer in words: its folder's name (not the machine's path to it) or hub id, and its specials."""
    from pathlib import Path

    name = str(getattr(tok, "name_or_path", "") or type(tok).__name__)
    if Path(name).is_dir():
        name = Path(name).name
    return f"{name} ({len(tok)} tokens; bos {tok.bos_token!r}, eos {tok.eos_token!r}, pad {tok.pad_token!r})"


def not_prefix_stable(err: str | None) -> bool:
    """Whether a policy error says the template rewrites earlier turns."""
    return bool(err) and NOT_PREFIX_STABLE[:60] in err
