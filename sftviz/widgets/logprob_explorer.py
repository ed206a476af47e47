"""LogProbExplorer: type a prompt and a completion, watch joint = marginal + conditional token by token."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import traitlets

from ..data import Example
from ..logprobs import ScoreReport
from ..views.html import logprob_html, style_tag
from ..views.records import identity_lines, logprob_records, notes_of, token_records
from ._base import SftvizWidget, json_safe, module_source, stylesheet

MAX_OPTIONS = 60


def picker_rows(data: str | list | tuple | dict | None) -> tuple[list[tuple[str, dict]], int]:
    """The dataset picker's choices: ``(label, row)`` pairs, and how many rows were left out (only
    prompt/completion rows can fill the two boxes; chat rows are counted, not shown).

    ``data`` is None (the bundled "support" train and eval splits), a dataset name or path, a list
    of rows, or a dict name -> rows (or name -> dataset name)."""
    from ..datasets import load_dataset

    if data is None:
        named = {}
        for split in ("train", "eval"):
            try:
                named[f"support/{split}"] = load_dataset("support", split=split)
            except (OSError, ValueError):  # a trimmed install without the bundled data
                pass
    elif isinstance(data, str):
        named = {data: load_dataset(data)}
    elif isinstance(data, dict) and not ({"prompt", "completion"} <= set(data) or "messages" in data):
        named = {str(k): (load_dataset(v) if isinstance(v, str) else list(v)) for k, v in data.items()}
    elif isinstance(data, (list, tuple)):
        named = {"data": list(data)}
    else:
        raise TypeError("data must be a list of {'prompt', 'completion'} rows, a dataset name, or a dict name -> rows.")
    out, skipped = [], 0
    per = max(1, MAX_OPTIONS // max(1, len(named)))
    for name, rows in named.items():
        kept = 0
        for i, row in enumerate(rows):
            if not (
                isinstance(row, dict) and isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str)
            ):
                skipped += 1
                continue
            if kept >= per:
                break
            lines = [ln.strip() for ln in row["prompt"].strip().splitlines() if ln.strip()]
            # The last line is often just a role marker ("Assistant:"): show the last informative one.
            informative = [ln for ln in lines if len(ln) > 15]
            last = (informative or lines or ["(empty prompt)"])[-1]
            label = f"{name} #{i}: {last[:70]} \u2192 {row['completion'].strip()[:30]}"
            out.append((label, row))
            kept += 1
    return out, skipped


class LogProbExplorer(SftvizWidget):
    """Score a prompt and a completion as you type: per-token log-probs, running sums, and the identity.

    Args:
        model, tok: from ``sv.load_model()``; scoring is done by :func:`sftviz.score`.
        prompt, completion: the starting text (default: the first row of ``data``).
        example: start from an :class:`~sftviz.data.Example` instead (a chat example is shown but
            cannot be edited in the two boxes).
        data: rows for the dataset picker: None (the bundled "support" train and eval splits), a
            dataset name or path, a list of ``{"prompt", "completion"}`` rows, or a dict name -> rows.
        top_k: how many preferred alternatives to show per token in the tooltip.
        debounce_ms: how long the browser waits after the last keystroke before scoring.
        title: an optional heading.
        **example_kwargs: passed on to ``build_example`` (``add_eos``, ``max_length``, ...).

    ``LogProbExplorer.from_report(report)`` shows a :class:`~sftviz.logprobs.ScoreReport` you already
    have (read-only). Bad input (say, a text longer than the model reads) shows an error inside the
    widget and keeps your text; the last good scores stay on screen, dimmed. ``on_score(fn)`` calls
    ``fn(report)`` after each successful scoring.
    """

    _esm = module_source("logprob_explorer.js")
    _css = stylesheet("logprob_explorer.css")

    prompt = traitlets.Unicode("").tag(sync=True)
    completion = traitlets.Unicode("").tag(sync=True)
    options = traitlets.List().tag(sync=True)
    choice = traitlets.Int(-1).tag(sync=True)
    tokens = traitlets.List().tag(sync=True)  # views.records.token_records: the strip
    rows = traitlets.List().tag(sync=True)  # views.records.logprob_records: the table
    identity = traitlets.Dict().tag(sync=True)
    notes = traitlets.List().tag(sync=True)
    stale = traitlets.Bool(False).tag(sync=True)
    revision = traitlets.Int(0).tag(sync=True)
    editable = traitlets.Bool(True).tag(sync=True)
    debounce_ms = traitlets.Int(250).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        model: object = None,
        tok: object = None,
        prompt: str | None = None,
        completion: str | None = None,
        *,
        example: Example | None = None,
        data: str | list | tuple | dict | None = None,
        top_k: int = 5,
        debounce_ms: int = 250,
        title: str = "",
        **example_kwargs: object,
    ):
        if isinstance(model, ScoreReport) or isinstance(example, ScoreReport):
            raise TypeError(
                "LogProbExplorer(model, tok) scores text with a model; to show a ScoreReport you already "
                "have, use LogProbExplorer.from_report(report)."
            )
        if model is None or tok is None:
            raise TypeError(
                "LogProbExplorer needs (model, tok) from sv.load_model(); to show a ScoreReport you "
                "already have, use LogProbExplorer.from_report(report)."
            )
        if example is not None and not isinstance(example, Example):
            raise TypeError(f"example must be an sftviz Example; got {type(example).__name__}.")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise ValueError(f"top_k must be a non-negative integer; got {top_k!r}.")
        self._start(model, tok, top_k=top_k, example_kwargs=example_kwargs, debounce_ms=debounce_ms, title=title)
        self.example = example
        if example is not None and "messages" in example.source:
            self.editable = False  # a conversation does not fit two text boxes
        try:
            self._choices, skipped = picker_rows(data) if self.editable else ([], 0)
        except (TypeError, ValueError, OSError) as err:
            self._choices, skipped = [], 0
            self._setup_error = f"The dataset picker is empty: {err}"  # stays shown after each scoring
        self.options = [label for label, _ in self._choices]
        self.set_text(*self._first_text(prompt, completion))
        if skipped and not self.error:
            self.notes = self.notes + [f"{skipped} chat rows are not in the picker: use TokenView for conversations."]

    @classmethod
    def from_report(cls, report: ScoreReport, *, debounce_ms: int = 250, title: str = "") -> LogProbExplorer:
        """Show a :class:`~sftviz.logprobs.ScoreReport` you already have (read-only: no model to rescore with)."""
        if not isinstance(report, ScoreReport):
            raise TypeError(f"from_report takes a ScoreReport (from sv.score); got {type(report).__name__}.")
        view = cls.__new__(cls)
        view._start(None, None, debounce_ms=debounce_ms, title=title)
        src = report.example.source
        view._quiet = True
        view.prompt, view.completion = src.get("prompt") or "", src.get("completion") or ""
        view._quiet = False
        view.editable = False
        view._show(report)
        return view

    def _start(
        self,
        model: object,
        tok: object,
        *,
        top_k: int = 5,
        example_kwargs: dict | None = None,
        debounce_ms: int = 250,
        title: str = "",
    ) -> None:
        """Set the Python-side state and start the widget (what both constructors share)."""
        self.model, self.tok = model, tok
        self.top_k = top_k
        self.example_kwargs = example_kwargs if example_kwargs is not None else {}
        self.report = None
        self.example = None
        self._callbacks = []
        self._quiet = False
        self._last = None
        self._choices = []
        self._setup_error = ""
        super().__init__(debounce_ms=int(debounce_ms), title=str(title or ""))

    def _first_text(self, prompt: str | None, completion: str | None) -> tuple[str, str]:
        """The text to start with: the example's, the caller's, or the picker's first row."""
        if self.example is not None:
            src = self.example.source
            return src.get("prompt") or "", src.get("completion") or ""
        if prompt is not None or completion is not None:
            return prompt or "", completion or ""
        if self._choices:
            self._quiet = True
            self.choice = 0
            self._quiet = False
            return self._choices[0][1]["prompt"], self._choices[0][1]["completion"]
        return "", ""

    # -- Python API ---------------------------------------------------------------------------

    def set_text(self, prompt: str, completion: str) -> None:
        """Replace both texts and score once."""
        self._quiet = True
        try:
            with self.hold_trait_notifications():
                self.prompt = "" if prompt is None else prompt
                self.completion = "" if completion is None else completion
        finally:
            self._quiet = False
        self.rescore(force=True)

    def on_score(self, callback: Callable[[ScoreReport], object]) -> None:
        """Call ``callback(report)`` after every successful scoring (errors it raises show in the widget)."""
        if not callable(callback):
            raise TypeError("on_score needs a function taking a ScoreReport.")
        self._callbacks.append(callback)

    def rescore(self, force: bool = False) -> None:
        """Score the current text with the core (:func:`sftviz.score`) and update the view."""
        if self.model is None:
            return
        key = (self.prompt, self.completion)
        if key == self._last and not force:
            return
        self._last = key
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                from ..logprobs import score

                if self.example is not None and "messages" in self.example.source:
                    rep = score(self.model, self.tok, example=self.example, top_k=self.top_k)
                else:
                    kwargs = {"warn": False, **self.example_kwargs}  # the seam note is shown from the example
                    rep = score(
                        self.model, self.tok, prompt=self.prompt, completion=self.completion, top_k=self.top_k, **kwargs
                    )
        except Exception as err:  # noqa: BLE001 -- shown in the widget; the text stays as typed
            self.report_error(err)
            self.stale = True
            self.revision += 1
            return
        self.error = self._setup_error
        self._show(rep, extra_notes=[str(w.message) for w in caught])
        for cb in list(self._callbacks):
            try:
                cb(rep)
            except Exception as err:  # noqa: BLE001 -- a user's callback: shown in the widget
                self.report_error(err)

    def _show(self, rep: ScoreReport, extra_notes: tuple | list = ()) -> None:
        self.report = rep
        notes = notes_of(rep.example)
        notes += [n for n in extra_notes if n not in notes]
        with self.hold_trait_notifications():
            self.tokens = json_safe(token_records(rep))
            self.rows = json_safe(logprob_records(rep))
            self.identity = json_safe(identity_lines(rep))
            self.notes = notes
            self.stale = False
            self.revision += 1

    # -- what the browser sends -----------------------------------------------------------

    @traitlets.observe("prompt", "completion")
    def _on_text(self, change):
        if not self._quiet:
            self.rescore()

    @traitlets.observe("choice")
    def _on_choice(self, change):
        if self._quiet:
            return
        i = change["new"]
        if i < 0:
            return  # the user's own text
        if i >= len(self._choices):
            self.error = f"There is no dataset row {i} in the picker (it has {len(self._choices)})."
            return
        row = self._choices[i][1]
        self.set_text(row["prompt"], row["completion"])

    # -- display ------------------------------------------------------------------------------

    def static_html(self) -> str:
        """The last scores as static HTML (:func:`sftviz.render.logprob_html`), or the error and the text."""
        if self.report is None:
            from html import escape

            return (
                style_tag()
                + '<div class="sftviz sftviz-static"><div class="sftviz-error">'
                + escape(self.error or "Nothing scored yet.")
                + "</div><pre>"
                + escape(self.prompt)
                + "</pre><pre>"
                + escape(self.completion)
                + "</pre></div>"
            )
        return logprob_html(self.report, title=self.title or None)

    def __repr__(self) -> str:
        r = self.report
        if r is None:
            return "LogProbExplorer(not scored)"
        return (
            f"LogProbExplorer(joint={r.joint:.2f}, marginal={r.marginal:.2f}, conditional={r.conditional:.2f} nats, "
            f"{len(r.rows)} tokens)"
        )
