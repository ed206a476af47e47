"""TokenView: the sequence [x, y] token by token, trained vs masked, with the shift made visible."""

from __future__ import annotations

import traitlets

from ..data import Example
from ..logprobs import ScoreReport
from ..views.html import token_html
from ..views.records import example_and_report, example_summary, notes_of, token_records
from ..views.xray import mark_records, xray_strip_html
from ._base import SftvizWidget, json_safe, module_source, read_asset, stylesheet


class TokenView(SftvizWidget):
    """Show an example token by token; click a token to make it a target or not.

    Args:
        example: an :class:`~sftviz.data.Example` (``sv.build_example``) or a
            :class:`~sftviz.logprobs.ScoreReport` (``sv.score``), which also gives log-probs.
        scores: optionally a ``ScoreReport`` of the same example.
        shifted: start in the shifted view (inputs row over targets row).
        editable: let clicks toggle trained/masked (default True).
        title: an optional heading.
        expected: what a policy trains, per token (1, 0, or None where it has no say): each token that
            disagrees gets a badge, "+" (trained, the policy says no) or "\u2212" (not trained, the policy
            asks). ``TokenView(report.rows[i])`` takes an X-ray row (:func:`sftviz.xray`) and its policy.

    Each token shows its segment (prompt, completion, EOS, chat roles) and whether it is trained:
    trained tokens have a solid border, an underline and a check badge; masked tokens are dashed,
    hatched and grey. Hover for the token id, label, position, what predicts it and what it
    predicts, and its log-prob when scored.

    Clicking a token in the browser sets the ``trained`` traitlet; the view then calls
    ``example.set_trained`` so the example's ``labels`` change, and updates ``labels`` and
    ``tokens``. Watch changes with ``view.observe(fn, names="trained")``. A refused change (position
    0 cannot be a target) is undone in the browser, explained in the widget, and sends no event.
    """

    _esm = module_source("token_view.js")
    _css = stylesheet("token_view.css") + "\n" + read_asset("xray.css")

    tokens = traitlets.List().tag(sync=True)
    trained = traitlets.List().tag(sync=True)
    labels = traitlets.List().tag(sync=True)
    shifted = traitlets.Bool(False).tag(sync=True)
    editable = traitlets.Bool(True).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    summary = traitlets.Unicode("").tag(sync=True)
    notes = traitlets.List().tag(sync=True)

    def __init__(
        self,
        example: Example | ScoreReport,
        scores: ScoreReport | None = None,
        *,
        shifted: bool = False,
        editable: bool = True,
        title: str = "",
        expected: list | None = None,
        **kwargs: object,
    ):
        if hasattr(example, "disagreements") and hasattr(example, "expected"):  # an X-ray row
            expected = example.expected if expected is None else expected
            title = title or f"X-ray of row {example.index}"
            example = example.example()
        ex, report = example_and_report(example, scores)
        if expected is not None and (not isinstance(expected, (list, tuple)) or len(expected) != len(ex)):
            raise ValueError(f"expected must list one value (1, 0 or None) per token ({len(ex)}).")
        self.example = ex
        self.report = report
        self.expected = None if expected is None else list(expected)
        self._syncing = False
        super().__init__(shifted=bool(shifted), editable=bool(editable), title=str(title or ""), **kwargs)
        self.refresh()

    # -- Python API ---------------------------------------------------------------------------

    def _records(self) -> list[dict]:
        records = token_records(self.example, self.report)
        return records if self.expected is None else mark_records(records, self.expected)

    def refresh(self) -> None:
        """Re-read the example (after changing it from Python) and update the view."""
        self._syncing = True
        try:
            with self.hold_trait_notifications():
                self.tokens = json_safe(self._records())
                self.trained = [bool(v) for v in self.example.trained]
                self.labels = list(self.example.labels)
                self.summary = example_summary(self.example)
                self.notes = notes_of(self.example)
        finally:
            self._syncing = False

    def set_trained(self, position: int, trained: bool = True) -> None:
        """Make token ``position`` a target (or not), as a click would."""
        new = [bool(v) for v in self.example.trained]
        if isinstance(position, int) and not isinstance(position, bool) and 0 <= position < len(new):
            new[position] = bool(trained)
            self.trained = new
        else:  # let the core explain what is wrong with the position
            try:
                self.example.set_trained(position, trained)
            except (TypeError, ValueError) as err:
                self.report_error(err)

    def toggle(self, position: int) -> None:
        """Flip whether token ``position`` is trained."""
        cur = self.example.trained
        if isinstance(position, int) and not isinstance(position, bool) and 0 <= position < len(cur):
            self.set_trained(position, not cur[position])
        else:
            self.set_trained(position, True)

    # -- what the browser sends -----------------------------------------------------------

    def set_state(self, sync_data: dict) -> None:
        """Apply a state message from the browser (ipywidgets calls this; a click arrives here)."""
        # A click arrives here. A refused click is replaced by the current value before ipywidgets
        # echoes it to the browser (which then shows the old state) and sets the trait, so observers of
        # ``trained`` see no event for a change that did not happen.
        if "trained" in sync_data and not self._syncing:
            sync_data = dict(sync_data)
            sync_data["trained"] = self._apply_trained(sync_data["trained"])
        super().set_state(sync_data)

    @traitlets.validate("trained")
    def _valid_trained(self, proposal):
        if self._syncing:
            return proposal["value"]
        return self._apply_trained(proposal["value"])

    def _apply_trained(self, value):
        """Apply a proposed ``trained`` list to the example; return the list it now has (the old one
        when the change is refused, with the reason shown in the widget)."""
        have = [bool(v) for v in self.example.trained]
        if not isinstance(value, (list, tuple)) or len(value) != len(self.example):
            got = len(value) if isinstance(value, (list, tuple)) else type(value).__name__
            self.error = f"trained must list one true/false per token ({len(self.example)}); got {got}."
            return have
        want = [bool(v) for v in value]
        changed = [t for t in range(len(want)) if want[t] != have[t]]
        backup = (list(self.example.labels), list(self.example.weights), self.example.masking)
        try:
            for t in changed:
                self.example.set_trained(t, want[t])
        except (TypeError, ValueError) as err:
            self.example.labels[:], self.example.weights[:] = backup[0], backup[1]
            self.example.masking = backup[2]
            self.report_error(err)
            return have
        if changed:
            self.error = ""
        return want

    @traitlets.observe("trained")
    def _on_trained(self, change):
        if self._syncing:
            return
        self._syncing = True
        try:
            with self.hold_trait_notifications():
                self.tokens = json_safe(self._records())
                self.labels = list(self.example.labels)
                self.summary = example_summary(self.example)
        finally:
            self._syncing = False

    # -- display ------------------------------------------------------------------------------

    def static_html(self) -> str:
        """The example as static HTML (:func:`sftviz.render.token_html`), in the view's current mode."""
        if self.expected is not None:
            return xray_strip_html(self._records(), title=self.title or None)
        return token_html(self.example, self.report, shifted=self.shifted, title=self.title or None)

    def __repr__(self) -> str:
        n = len(self.example)
        return f"TokenView({n} tokens, {sum(self.example.trained)} trained, masking={self.example.masking!r})"
