"""GradientView: where the gradient goes, token by token and layer by layer, masked vs unmasked."""

from __future__ import annotations

import math

import traitlets

from ..data import Example, build_example
from ..logprobs import ScoreReport
from ..views.html import gradients_html, style_tag
from ..views.records import cosine_sentence, gradient_records
from ._base import SftvizWidget, json_safe, module_source, stylesheet


def _is_gradients(obj: object) -> bool:
    """Whether ``obj`` looks like a result of :func:`sftviz.gradients.token_gradients`."""
    return hasattr(obj, "input_grad_masked") and hasattr(obj, "tokens")


class GradientView(SftvizWidget):
    """Per-token gradient magnitudes under the example's own loss and the full loss, side by side.

    Args:
        model, tok, example: computed with :func:`sftviz.gradients.token_gradients`. ``example`` may
            be an :class:`~sftviz.data.Example` or a :class:`~sftviz.logprobs.ScoreReport`; or give
            ``prompt=`` and ``completion=`` to build one.
        what: ``"input"`` (|d loss / d input embedding| per position) or ``"target"`` (each target
            token's share of the weight gradient).
        log_scale: draw bar heights on a log scale (gradients span orders of magnitude).
        title: an optional heading.

    ``GradientView.from_gradients(grads)`` shows a result of ``token_gradients`` you already have.

    The view shows that masking changes the loss, not the forward pass: under the completion-only
    loss the prompt tokens are not targets, yet their input embeddings still get gradient through
    attention. Below the tokens: per-layer gradient norms and the cosine between the two gradients.
    The left bars follow the example's labels and weights: completion-only for an example built with
    ``masking="completion"``, otherwise a prompt-loss weight or labels edited with ``set_trained``
    (``masked_name`` says which). After editing the example, call ``refresh()``.
    """

    _esm = module_source("gradient_view.js")
    _css = stylesheet("gradient_view.css")

    tokens = traitlets.List().tag(sync=True)
    layers = traitlets.List().tag(sync=True)
    cosine = traitlets.Float(None, allow_none=True).tag(sync=True)
    cosine_text = traitlets.Unicode("").tag(sync=True)
    masked_name = traitlets.Unicode("completion-only").tag(sync=True)
    scale = traitlets.Dict().tag(sync=True)
    what = traitlets.Unicode("input").tag(sync=True)
    log_scale = traitlets.Bool(False).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    summary = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        model: object = None,
        tok: object = None,
        example: Example | ScoreReport | None = None,
        *,
        prompt: str | None = None,
        completion: str | None = None,
        what: str = "input",
        log_scale: bool = False,
        title: str = "",
    ):
        if _is_gradients(model):
            raise TypeError(
                "GradientView(model, tok, example) computes the gradients; to show a token_gradients "
                "result you already have, use GradientView.from_gradients(grads)."
            )
        if model is None or tok is None:
            raise TypeError(
                "GradientView needs (model, tok, example); for a token_gradients result use "
                "GradientView.from_gradients(grads)."
            )
        _check_what(what)
        self._start(model, tok, what=what, log_scale=log_scale, title=title)
        if isinstance(example, ScoreReport):
            example = example.example
        if example is None:
            if prompt is None and completion is None:
                raise TypeError("GradientView needs an example (sv.build_example) or prompt= and completion=.")
            example = build_example(tok, prompt=prompt, completion=completion, warn=False)
        if not isinstance(example, Example):
            raise TypeError(f"example must be an sftviz Example; got {type(example).__name__}.")
        self.example = example
        self.refresh()

    @classmethod
    def from_gradients(
        cls, grads: object, *, what: str = "input", log_scale: bool = False, title: str = ""
    ) -> GradientView:
        """Show a result of :func:`sftviz.gradients.token_gradients` you already have (no model: ``refresh``
        does nothing)."""
        if not _is_gradients(grads):
            raise TypeError(
                f"from_gradients takes the result of sftviz.gradients.token_gradients; got {type(grads).__name__}."
            )
        _check_what(what)
        view = cls.__new__(cls)
        view._start(None, None, what=what, log_scale=log_scale, title=title)
        view._show(grads)
        return view

    def _start(self, model: object, tok: object, *, what: str, log_scale: bool, title: str) -> None:
        """Set the Python-side state and start the widget (what both constructors share)."""
        self.model, self.tok = model, tok
        self.grads = None
        self.example = None
        super().__init__(log_scale=bool(log_scale), title=str(title or ""))
        self.what = what

    @traitlets.validate("what")
    def _valid_what(self, proposal):
        v = proposal["value"]
        if v not in ("input", "target"):
            self.error = f"what must be 'input' or 'target', not {v!r}."
            return self.what if self.what in ("input", "target") else "input"
        return v

    def refresh(self) -> None:
        """Recompute the gradients (after training the model further, say) with the core."""
        if self.model is None or self.example is None:
            return
        try:
            from ..gradients import token_gradients

            grads = token_gradients(self.model, self.tok, self.example)
        except Exception as err:  # noqa: BLE001 -- shown inside the widget
            self.report_error(err)
            return
        self.error = ""
        self._show(grads)

    def _show(self, grads: object) -> None:
        d = gradient_records(grads)
        self.grads = grads
        lm, lf = getattr(grads, "loss_masked", None), getattr(grads, "loss_full", None)
        summary = f"{len(d['tokens'])} tokens"
        if lm is not None and lf is not None:
            summary += f" \u00b7 {d['masked_name']} loss {lm:.3f} nats/token \u00b7 full loss {lf:.3f} nats/token"
        with self.hold_trait_notifications():
            self.tokens = json_safe(d["tokens"])
            self.layers = json_safe(d["layers"])
            self.cosine = None if math.isnan(d["cosine"]) else d["cosine"]
            self.cosine_text = cosine_sentence(d["cosine"], d["masked_name"])
            self.masked_name = d["masked_name"]
            self.scale = json_safe({"input": d["max_input"], "target": d["max_target"], "layer": d["max_layer"]})
            self.summary = summary

    def static_html(self) -> str:
        """The gradients as static HTML (:func:`sftviz.render.gradients_html`), or the error."""
        if self.grads is None:
            from html import escape

            return (
                style_tag()
                + f'<div class="sftviz sftviz-static"><div class="sftviz-error">{escape(self.error or "No gradients.")}</div></div>'
            )
        return gradients_html(self.grads, what=self.what, title=self.title or None)

    def __repr__(self) -> str:
        if self.grads is None:
            return "GradientView(no gradients)"
        cos = "nan" if self.cosine is None else f"{self.cosine:.2f}"
        return f"GradientView({len(self.tokens)} tokens, {len(self.layers)} parameter groups, cosine={cos})"


def _check_what(what: object) -> None:
    if what not in ("input", "target"):
        raise ValueError(
            f"what must be 'input' (gradient reaching each input embedding) or 'target' (each target's share); "
            f"got {what!r}."
        )
