"""The display vocabulary: the one place that says how sftviz shows segments, maskings and runs.

Plain data, no display library. Everything else reads it from here:

* the static HTML (:mod:`sftviz.views.html`) and the records (:mod:`sftviz.views.records`) take
  segment words, descriptions and the special / labelled flags from :data:`SEGMENTS`;
* the widgets' ES modules get it as ``const SV_VOCAB = {...}`` (:func:`js_prelude`, prepended to
  ``widgets/_common.js`` when a widget class is defined);
* the CSS of the widgets and of the static HTML gets every segment's colour rule and the
  ``--sv-<swatch>`` custom properties from :func:`segment_css`;
* the figures (:mod:`sftviz.views.plots`) and the MaskingLab take colours, tints, line styles and
  masking labels from :data:`SWATCHES`, :data:`MASKINGS` and the run palettes.

To show a new kind of token (say a chat role ``"observation"``), add one :class:`Segment` to
:data:`SEGMENTS`; the legend, tooltips, labels, CSS, JS and figures follow. Colours are Okabe-Ito
(colour-blind safe); no distinction that matters is made by colour alone (see ``_common.css``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Swatch:
    """A colour pair: ``colour`` for borders, underlines and lines; ``tint`` for backgrounds.

    Each swatch is also a pair of CSS custom properties on ``.sftviz``: ``--sv-<name>`` and
    ``--sv-<name>-tint`` (other CSS, e.g. the log-prob bars, uses them by name).
    """

    name: str
    colour: str
    tint: str


SWATCHES: dict[str, Swatch] = {
    s.name: s
    for s in (
        Swatch("prompt", "#0072B2", "#dcebf6"),
        Swatch("completion", "#E69F00", "#fdefd0"),
        Swatch("eos", "#CC79A7", "#f6e1ed"),
        Swatch("system", "#009E73", "#d4f0e6"),
        Swatch("special", "#7a7a7a", "#ececec"),
    )
}
DEFAULT_SWATCH = "special"  # segments not in SEGMENTS are drawn with it


@dataclass(frozen=True)
class Segment:
    """One kind of token, as ``Example.segments`` names it.

    Attributes:
        name: the segment's name in ``Example.segments`` (and in ``data-sftviz-segment``).
        words: how views name it (legend, segment labels, tooltips): ``"prompt x"``.
        description: what it is, in one line (legend hover text).
        swatch: the name of its colour pair in :data:`SWATCHES`.
        special: a control token (BOS, EOS, template text, padding): drawn rounded and in italics.
        labelled: a run of these tokens starts with a small text label, so the segment is readable
            without colour.
    """

    name: str
    words: str
    description: str
    swatch: str = DEFAULT_SWATCH
    special: bool = False
    labelled: bool = False

    @property
    def colour(self) -> str:
        """The strong colour (borders, underlines, lines)."""
        return SWATCHES[self.swatch].colour

    @property
    def tint(self) -> str:
        """The light colour (backgrounds)."""
        return SWATCHES[self.swatch].tint


SEGMENTS: dict[str, Segment] = {
    s.name: s
    for s in (
        Segment("bos", "BOS", "start of sequence: context only, never a target", special=True),
        Segment("prompt", "prompt x", "the input: read as context", "prompt", labelled=True),
        Segment("completion", "completion y", "the answer the loss is about", "completion", labelled=True),
        Segment("eos", "EOS", "end of sequence: trained, so the model learns to stop", "eos", special=True),
        Segment("system", "system", "system message: context", "system", labelled=True),
        Segment("user", "user", "user turn: context", "prompt", labelled=True),
        Segment("assistant", "assistant", "assistant turn: what SFT trains", "completion", labelled=True),
        Segment("tool", "tool output", "what a tool returned: context for the next turn", "system", labelled=True),
        Segment("template", "template", "role markers and control text added by the chat template", special=True),
        Segment(
            "end_of_turn",
            "end of turn",
            "closes an assistant turn: trained, so the model learns to stop",
            "eos",
            special=True,
        ),
        Segment("pad", "padding", "filler that makes a batch rectangular: never a target", special=True),
    )
}


def segment(name: str) -> Segment:
    """The :class:`Segment` called ``name``; an unknown name gets a plain one (shown as it is, grey)."""
    found = SEGMENTS.get(name)
    return found if found is not None else Segment(str(name), str(name), "")


def segment_words(name: str) -> str:
    """How views name a segment (``"prompt x"``); an unknown segment by its own name."""
    return segment(name).words


def is_special(name: str) -> bool:
    """Whether the segment is a control token (drawn rounded and in italics)."""
    return segment(name).special


def is_labelled(name: str) -> bool:
    """Whether a run of this segment starts with a text label."""
    return segment(name).labelled


# Token text: whitespace made visible (where spaces go is half of what tokenization does).
WHITESPACE = {" ": "\u00b7", "\n": "\u21b5", "\t": "\u2192", "\r": "\u240d"}
OTHER_WHITESPACE = "\u2423"  # any other whitespace character
EMPTY_TOKEN = "\u2205"  # a token with no text


# --------------------------------------------------------------------------------------------
# Maskings, parts and runs (figures and the MaskingLab)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Masking:
    """How a masking is named and drawn.

    Attributes:
        name: the masking kind: ``Example.masking``, or ``"weighted"`` for a prompt-loss weight.
        label: its words in a selector.
        plotly_dash: its line style in plotly (the live MaskingLab).
        mpl_dash: its line style in matplotlib (:func:`sftviz.plots.plot_runs`).
        selectable: offered in the MaskingLab's masking selector.
    """

    name: str
    label: str
    plotly_dash: str = "solid"
    mpl_dash: str = "-"
    selectable: bool = False


MASKINGS: dict[str, Masking] = {
    m.name: m
    for m in (
        Masking("completion", "completion only (masked prompt)", "solid", "-", selectable=True),
        Masking("full", "full sequence (no mask)", "dash", "--", selectable=True),
        Masking("weighted", "prompt-loss weight", "dashdot", "-.", selectable=True),
        Masking("prompt", "prompt only", "solid", ":"),
        Masking("custom", "custom labels", "solid", ":"),
    )
}
FAULT_PLOTLY_DASH = "dot"  # a run with an injected fault, in the live MaskingLab


def masking_kind(masking: object) -> str:
    """The kind of a ``masking`` argument: its name, or ``"weighted"`` for a prompt-loss weight."""
    return masking if isinstance(masking, str) else "weighted"


def masking_style(kind: str) -> Masking:
    """The :class:`Masking` of ``kind``; an unknown kind is drawn as a solid line."""
    found = MASKINGS.get(kind)
    return found if found is not None else Masking(str(kind), str(kind))


def masking_options() -> list[tuple[str, str]]:
    """``(label, name)`` pairs for a masking selector."""
    return [(m.label, m.name) for m in MASKINGS.values() if m.selectable]


OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
# Runs drawn in the live MaskingLab cycle through these (the yellow is too faint for thin lines).
LAB_RUN_COLOURS = OKABE_ITO[:7]
# Runs drawn by sftviz.plots.plot_runs cycle through the whole palette.
RUN_COLOURS = OKABE_ITO
# log Pr(x) (prompt part, "x") and log Pr(y | x) (completion part, "y"), as in the CSS bars.
PART_COLOURS = {"x": SWATCHES["prompt"].colour, "y": SWATCHES["completion"].colour}
# The example's own (masked) loss and the full loss, in the gradient figures and bars.
LOSS_COLOURS = {"masked": SWATCHES["prompt"].colour, "full": SWATCHES["completion"].colour}


# --------------------------------------------------------------------------------------------
# For the front ends
# --------------------------------------------------------------------------------------------


def vocab_dict() -> dict:
    """The vocabulary as JSON-ready data (what the ES modules get as ``SV_VOCAB``)."""
    return {
        "segments": {
            name: {k: v for k, v in asdict(s).items() if k != "name"} | {"colour": s.colour, "tint": s.tint}
            for name, s in SEGMENTS.items()
        },
        "swatches": {name: {"colour": s.colour, "tint": s.tint} for name, s in SWATCHES.items()},
        "whitespace": dict(WHITESPACE),
        "otherWhitespace": OTHER_WHITESPACE,
        "emptyToken": EMPTY_TOKEN,
    }


def js_prelude() -> str:
    """JavaScript that defines ``SV_VOCAB`` (prepended to the widgets' shared ES helpers)."""
    data = json.dumps(vocab_dict(), ensure_ascii=True, separators=(",", ":"))
    return (
        "// sftviz: the display vocabulary, generated from sftviz/views/vocab.py (edit it there).\n"
        f"const SV_VOCAB = {data};\n"
    )


#: How much of a swatch's colour its tint holds when the tint is mixed with the theme's background.
TINT_PERCENT = 16


def swatch_css() -> str:
    """The ``--sv-<swatch>`` and ``--sv-<swatch>-tint`` custom properties, on ``.sftviz``.

    Where the browser has ``color-mix`` (every current one), a tint is the swatch's colour mixed into
    the theme's background (``--sv-bg``, JupyterLab's ``--jp-layout-color1``): light in a light theme,
    dark in a dark one, so token text in the theme's own colour stays readable. Elsewhere the fixed
    light tints of :data:`SWATCHES` are used (the figures use those too).
    """
    props = " ".join(f"--sv-{s.name}: {s.colour}; --sv-{s.name}-tint: {s.tint};" for s in SWATCHES.values())
    mixed = " ".join(
        f"--sv-{s.name}-tint: color-mix(in srgb, var(--sv-{s.name}) {TINT_PERCENT}%, var(--sv-bg));"
        for s in SWATCHES.values()
    )
    return (
        ".sftviz { " + props + " }\n@supports (color: color-mix(in srgb, red 50%, blue)) { .sftviz { " + mixed + " } }"
    )


def segment_css() -> str:
    """CSS for every segment: the custom properties of the swatches, and each segment's colour pair
    (``--seg``, ``--tint``) on its tokens (and on its text label, for labelled segments)."""
    rules = ["/* sftviz: segment colours, generated from sftviz/views/vocab.py (edit them there). */", swatch_css()]
    for s in SEGMENTS.values():
        sel = f'[data-sftviz-segment="{s.name}"]'
        selectors = [f".sftviz .sftviz-tok{sel}"] + ([f".sftviz .sftviz-seglabel{sel}"] if s.labelled else [])
        rules.append(f"{', '.join(selectors)} {{ --seg: var(--sv-{s.swatch}); --tint: var(--sv-{s.swatch}-tint); }}")
    return "\n".join(rules) + "\n"
