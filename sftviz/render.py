"""Static HTML views of the core's objects: tokens, log-probabilities, gradients, runs, quizzes.

This module is the public import path (``from sftviz import render``); the code lives in
:mod:`sftviz.views`:

* :mod:`sftviz.views.html`: the HTML (:func:`token_html`, :func:`logprob_html`, :func:`gradients_html`,
  :func:`runs_table_html`, :func:`quiz_html`, :func:`style_tag`, and the chips and tables they use);
* :mod:`sftviz.views.records`: the records the static HTML and the live widgets share
  (:func:`token_records`, :func:`logprob_records`, :func:`gradient_records`, ...);
* :mod:`sftviz.views.packing`: a packed row, its position ids, targets and attention mask
  (:func:`packed_row_html`);
* :mod:`sftviz.views.vocab`: the display vocabulary (segment names, words, colours; the CSS and JS
  the front ends get from it). ``SEGMENTS`` here maps each segment to ``(words, description)``.

Every token element carries ``data-sftviz-segment``, ``data-sftviz-trained`` and
``data-sftviz-position``; all token and user text is escaped.
"""

from __future__ import annotations

from .views import vocab
from .views.html import (
    CSS_PATH,
    esc,
    gradients_html,
    identity_html,
    layers_table_html,
    legend_html,
    logprob_html,
    logprob_table_html,
    quiz_html,
    runs_table_html,
    seglabel_html,
    shifted_html,
    style_tag,
    sum_row_html,
    token_chip_html,
    token_html,
    tokens_strip_html,
)
from .views.packing import packed_row_html
from .views.records import (
    IGNORE_INDEX,
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
    tooltip_lines,
)
from .views.vocab import WHITESPACE

# What each segment is, in words: name -> (words, description). Unknown segments are shown as they are.
SEGMENTS = {name: (s.words, s.description) for name, s in vocab.SEGMENTS.items()}
SPECIAL_SEGMENTS = tuple(name for name, s in vocab.SEGMENTS.items() if s.special)
# A run of these segments starts with a small text label, so segments are readable without colour.
LABELLED_SEGMENTS = tuple(name for name, s in vocab.SEGMENTS.items() if s.labelled)

__all__ = [
    "CSS_PATH",
    "IGNORE_INDEX",
    "LABELLED_SEGMENTS",
    "SEGMENTS",
    "SPECIAL_SEGMENTS",
    "WHITESPACE",
    "cosine_sentence",
    "display_parts",
    "esc",
    "example_and_report",
    "example_summary",
    "fmt_number",
    "gradient_records",
    "gradients_html",
    "identity_html",
    "identity_lines",
    "layers_table_html",
    "legend_entries",
    "legend_html",
    "logprob_html",
    "logprob_records",
    "logprob_table_html",
    "notes_of",
    "packed_row_html",
    "quiz_html",
    "runs_table_html",
    "seglabel_html",
    "shifted_html",
    "style_tag",
    "sum_row_html",
    "token_chip_html",
    "token_html",
    "token_records",
    "tokens_strip_html",
    "tooltip_lines",
]
