"""Matplotlib figures of the core's objects: log-probs per token, training runs, gradients, masks.

This module is the public import path (``from sftviz import plots``); the code lives in
:mod:`sftviz.views.plots`, and its colours, tints and line styles in :mod:`sftviz.views.vocab`.
"""

from __future__ import annotations

from .views.plots import (
    MASKING_DASH,
    OKABE_ITO,
    PART_COLOURS,
    RUN_PANELS,
    figure_html,
    label_text,
    plot_example,
    plot_experiments,
    plot_logprobs,
    plot_runs,
    plot_shift,
    plot_token_gradients,
)

__all__ = [
    "MASKING_DASH",
    "OKABE_ITO",
    "PART_COLOURS",
    "RUN_PANELS",
    "figure_html",
    "label_text",
    "plot_example",
    "plot_experiments",
    "plot_logprobs",
    "plot_runs",
    "plot_shift",
    "plot_token_gradients",
]
