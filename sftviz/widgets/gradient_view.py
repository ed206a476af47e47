"""GradientView: where the gradient goes, token by token and layer by layer, masked vs unmasked."""

from __future__ import annotations

import math

import traitlets

from .. import render
from ._base import SftvizWidget, json_safe, module_source, stylesheet


class GradientView(SftvizWidget):
    """Per-token gradient magnitudes under the example's own loss and the full loss, side by side.

    Args:
        model, tok, example: computed with :func:`sftviz.gradients.token_gradients`. ``example`` may
            be an :class:`~sftviz.data.Example` or a :class:`~sftviz.logprobs.ScoreReport`; or give
            ``prompt=`` and ``completion=`` to build one.
        grads: instead, a result of ``token_gradients`` you already have (``GradientView(grads)`` works too).
        what: ``"input"`` (|d loss / d input embedding| per position) or ``"target"`` (each target
            token's share of the weight gradient).
        log_scale: draw bar heights on a log scale (gradients span orders of magnitude).

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

    def __init__(self, model=None, tok=None, example=None, *, grads=None, prompt=None, completion=None,
                 what: str = "input", log_scale: bool = False, title: str = ""):
        if grads is None and hasattr(model, "input_grad_masked"):
            grads, model = model, None
        self.model, self.tok = model, tok
        self.grads = None
        self.example = None
        super().__init__(log_scale=bool(log_scale), title=str(title or ""))
        self.what = what
        if grads is not None:
            self._show(grads)
            return
        if model is None or tok is None:
            raise TypeError("GradientView needs (model, tok, example) or a token_gradients result.")
        from ..data import Example, build_example
        from ..logprobs import ScoreReport

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
        except Exception as err:
            self._report(err)
            return
        self.error = ""
        self._show(grads)

    def _show(self, grads) -> None:
        d = render.gradient_records(grads)
        self.grads = grads
        lm, lf = getattr(grads, "loss_masked", None), getattr(grads, "loss_full", None)
        summary = f"{len(d['tokens'])} tokens"
        if lm is not None and lf is not None:
            summary += f" \u00b7 {d['masked_name']} loss {lm:.3f} nats/token \u00b7 full loss {lf:.3f} nats/token"
        with self.hold_trait_notifications():
            self.tokens = json_safe(d["tokens"])
            self.layers = json_safe(d["layers"])
            self.cosine = None if math.isnan(d["cosine"]) else d["cosine"]
            self.cosine_text = render.cosine_sentence(d["cosine"], d["masked_name"])
            self.masked_name = d["masked_name"]
            self.scale = json_safe({"input": d["max_input"], "target": d["max_target"], "layer": d["max_layer"]})
            self.summary = summary

    def static_html(self) -> str:
        if self.grads is None:
            from html import escape

            return render.style_tag() + f'<div class="sftviz sftviz-static"><div class="sftviz-error">{escape(self.error or "No gradients.")}</div></div>'
        return render.gradients_html(self.grads, what=self.what, title=self.title or None)

    def __repr__(self) -> str:
        if self.grads is None:
            return "GradientView(no gradients)"
        cos = "nan" if self.cosine is None else f"{self.cosine:.2f}"
        return f"GradientView({len(self.tokens)} tokens, {len(self.layers)} parameter groups, cosine={cos})"
