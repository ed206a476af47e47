"""Matplotlib figures of the core's objects: log-probs per token, training runs, gradients, masks.

Every function returns a :class:`matplotlib.figure.Figure` built without ``pyplot`` (no global
figure state, nothing shown twice in a notebook; Jupyter displays a returned figure). Pass ``ax=``
to draw into an axes of your own instead. Colours, tints and line styles come from
:mod:`sftviz.views.vocab` (Okabe-Ito, colour-blind safe) and every distinction that matters also has
a second cue: hatching, line style or a text label. The numbers come from the records of
:mod:`sftviz.views.records`, the same ones the HTML views and widgets show.

Views never compute model quantities: they take a :class:`~sftviz.logprobs.ScoreReport`, runs from
:func:`sftviz.train.finetune`, or the result of :func:`sftviz.gradients.token_gradients`.
"""

from __future__ import annotations

import base64
import io
import math
from html import escape
from typing import TYPE_CHECKING

from ..data import IGNORE_INDEX, Example
from ..logprobs import ScoreReport
from .records import display_parts, example_and_report, gradient_records, logprob_records
from .vocab import LOSS_COLOURS, MASKINGS, OKABE_ITO, PART_COLOURS, RUN_COLOURS, masking_kind, masking_style, segment

if TYPE_CHECKING:  # matplotlib is imported only when a figure is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

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

# The matplotlib line style of each masking kind (from the vocabulary).
MASKING_DASH = {name: m.mpl_dash for name, m in MASKINGS.items()}

# Panels of a run plot: (key, record kind, title, y label)
RUN_PANELS = [
    ("loss", "train", "objective (the loss optimised)", "nats / token"),
    ("prompt_nll", "train", "prompt NLL (lower is better)", "nats / token"),
    ("completion_nll", "train", "completion NLL (lower is better)", "nats / token"),
    ("cond_logprob_per_token", "eval", "eval log Pr(y | x) per token (higher is better)", "nats"),
    ("marg_logprob_per_token", "eval", "eval log Pr(x) per token (higher is better)", "nats"),
    ("grad_norm", "train", "gradient norm", "L2 norm"),
]


def _figure(figsize: tuple[float, float]) -> Figure:
    # Made through pyplot so that Jupyter's inline backend knows how to show it, then closed so that
    # it is shown once: by the notebook displaying the returned figure, not again at the cell's end.
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=figsize, layout="constrained")
    plt.close(fig)
    return fig


def _ink(default: str = "#1a1a1a") -> str:
    """The colour of text and lines drawn on the figure's own background (not on a token box).

    ``default`` under matplotlib's default black text; otherwise the active style's text colour, so
    that a figure drawn under a dark style (``sftviz.views.export``'s dark theme) stays legible.
    """
    import matplotlib as mpl
    from matplotlib.colors import same_color

    colour = mpl.rcParams["text.color"]
    return default if same_color(colour, "black") else colour


def label_text(s: str) -> str:
    """Token text safe for a matplotlib label: visible whitespace, and no mathtext ($ escaped)."""
    return "".join(p for _, p in display_parts(str(s))).replace("$", r"\$")


def figure_html(fig: Figure, alt: str = "figure", dpi: int = 80) -> str:
    """A figure as an ``<img>`` with an inline PNG (for static HTML that works offline)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{escape(alt, quote=True)}" src="data:image/png;base64,{data}"/>'


# --------------------------------------------------------------------------------------------
# Log-probabilities
# --------------------------------------------------------------------------------------------


def plot_logprobs(report: ScoreReport, ax: Axes | None = None, *, max_tokens: int = 96) -> Figure:
    """Bars of -log Pr(token | before) per token (prompt solid, completion hatched) and running sums.

    The running-sum lines end at log Pr(x) (marginal) and log Pr(y | x) (conditional); the title
    states ``joint = marginal + conditional`` with the report's numbers.
    """
    recs = logprob_records(report)[:max_tokens]
    fig = None
    if ax is None:
        fig = _figure((max(6.0, 0.22 * len(recs) + 2), 3.4))
        ax = fig.add_subplot()
    xs = list(range(len(recs)))
    for i, r in enumerate(recs):
        ax.bar(
            i,
            -r["logprob"],
            color=PART_COLOURS[r["part"]],
            hatch="///" if r["part"] == "y" else None,
            edgecolor="#333333",
            linewidth=0.4,
        )
    ax.set_xticks(xs)
    ax.set_xticklabels([label_text(r["text"]) for r in recs], rotation=90, fontsize=9, family="monospace")
    ax.set_ylabel("\u2212log Pr(token | before)  [nats]")
    ax2 = ax.twinx()
    ax2.plot(xs, [r["running_joint"] for r in recs], color=_ink("#000000"), linewidth=1.2, label="\u03a3 joint so far")
    ax2.set_ylabel("running sum [nats]")
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor=PART_COLOURS["x"], edgecolor="#333", label="prompt token: in log Pr(x)"),
        Patch(facecolor=PART_COLOURS["y"], edgecolor="#333", hatch="///", label="completion token: in log Pr(y|x)"),
    ]
    handles += ax2.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=9, loc="upper left")
    ax.set_title(
        f"log Pr([x,y]) = {report.joint:.2f}  =  log Pr(x) {report.marginal:.2f}  +  log Pr(y|x) {report.conditional:.2f}",
        fontsize=9,
    )
    return fig if fig is not None else ax.figure


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def _run_parts(run: object) -> tuple[str, str, list, list]:
    """(name, masking kind, train records, eval records) of a Run or a run-like dict."""
    get = (lambda k, d=None: run.get(k, d)) if isinstance(run, dict) else (lambda k, d=None: getattr(run, k, d))
    config = get("config") or {}
    masking = config.get("masking", "completion") if isinstance(config, dict) else "completion"
    kind = masking_kind(masking)
    fault = config.get("fault") if isinstance(config, dict) else None
    name = get("name") or (
        f"{masking if isinstance(masking, str) else f'plw {masking:g}'}" + (f" + {fault}" if fault else "")
    )
    history = list(get("history") or [])
    evals = list(get("evals") or [])
    train = [r for r in history if r.get("kind", "train") == "train"]
    evals = evals or [r for r in history if r.get("kind") == "eval"]
    return str(name), kind, train, evals


# Eval points of the runs of one plot: a marker shape per run as well as a colour.
_MARKERS = "os^Dvp<>"


def plot_runs(
    runs: object, *, panels: list[str] | tuple[str, ...] | None = None, figsize: tuple[float, float] = (11, 5.6)
) -> Figure:
    """Training curves of one or more runs, overlaid: objective, prompt NLL, completion NLL, eval
    conditional and marginal log-prob per token, gradient norm.

    ``runs`` are :class:`sftviz.train.Run` objects (or dicts with ``history``, ``evals``, ``config``
    and optionally ``name``). Each run has its own colour *and* its masking its own line style.
    """
    if not isinstance(runs, (list, tuple)):
        runs = [runs]
    panels = RUN_PANELS if panels is None else [p for p in RUN_PANELS if p[0] in panels]
    cols = 3 if len(panels) > 2 else len(panels)
    rows = math.ceil(len(panels) / cols)
    fig = _figure(figsize)
    axes = [fig.add_subplot(rows, cols, k + 1) for k in range(len(panels))]
    for i, run in enumerate(runs):
        name, kind, train, evals = _run_parts(run)
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        for ax, (key, where, _title, _ylabel) in zip(axes, panels):
            recs = train if where == "train" else evals
            pts = [(r["step"], r[key]) for r in recs if r.get(key) is not None and isinstance(r.get(key), (int, float))]
            if pts:
                # Two evaluations (start and end) are points, not a line that invents the path between.
                sparse = where == "eval" and len(pts) < 3
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    linestyle="none" if sparse else masking_style(kind).mpl_dash,
                    color=colour,
                    linewidth=1.4,
                    marker=_MARKERS[i % len(_MARKERS)] if where == "eval" else None,
                    markersize=6 if sparse else 3,
                    label=name,
                )
    for ax, (_key, where, title, ylabel) in zip(axes, panels):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.tick_params(labelsize=9)
        if not ax.lines:
            ax.text(
                0.5,
                0.5,
                "no data" if where == "train" else "no eval data",
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=9,
                color=_ink("#555555"),
            )
    if runs and axes[0].lines:
        axes[0].legend(fontsize=9)
    return fig


def plot_experiments(experiments: object, *, figsize: tuple[float, float] | None = None) -> Figure:
    """Held-out scores at the end of the runs of one or more :class:`~sftviz.train.experiment.Experiment`.

    One row per experiment (dataset), two panels: exact match and log Pr(y|x) per token, both "higher
    is better". Each masking shows every seed's value as a dot and the mean ± sd as a bar with a
    marker, so the spread is as visible as the mean. NLL curves (lower is better) are for :func:`plot_runs`.
    """
    from ..train.experiment import METRICS, Experiment, masking_words

    exps = list(experiments) if isinstance(experiments, (list, tuple)) else [experiments]
    if not exps or not all(isinstance(e, Experiment) for e in exps):
        raise TypeError("plot_experiments takes an Experiment (from sv.masking_experiment) or a list of them.")
    fig = _figure(figsize or (10, 2.9 * len(exps)))
    for row, exp in enumerate(exps):
        for col, metric in enumerate(METRICS):
            ax = fig.add_subplot(len(exps), len(METRICS), row * len(METRICS) + col + 1)
            summary, finals = exp.summary(metric), exp.final(metric)
            for i, m in enumerate(exp.maskings):
                colour = RUN_COLOURS[i % len(RUN_COLOURS)]
                ax.scatter([i + 0.15] * len(finals[m]), finals[m], s=18, color=colour, alpha=0.6, marker="x")
                mean, sd = summary[m]
                ax.errorbar(
                    [i - 0.1], [mean], yerr=[sd], fmt=_MARKERS[i % len(_MARKERS)], color=colour, capsize=4, markersize=7
                )
            ax.set_xticks(range(len(exp.maskings)), [masking_words(m) for m in exp.maskings], fontsize=9)
            ax.set_xlim(-0.6, len(exp.maskings) - 0.4)
            name, unit = METRICS[metric]
            ax.set_ylabel("share of answers" if unit == "share" else "nats (higher is better)", fontsize=9)
            ax.set_title(f"{exp.dataset + ': ' if exp.dataset else ''}{name} (higher is better)", fontsize=10)
            ax.tick_params(labelsize=9)
            if unit == "share":
                ax.yaxis.set_major_formatter(lambda v, _pos: f"{v:.0%}")
    return fig


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------


def plot_token_gradients(
    grads: object, *, what: str = "input", log_scale: bool = False, figsize: tuple[float, float] | None = None
) -> Figure:
    """Per-token gradient magnitude, completion-only (solid) vs full loss (hatched), side by side,
    with per-layer gradient norms below."""
    if what not in ("input", "target"):
        raise ValueError("what must be 'input' or 'target'.")
    d = gradient_records(grads)
    recs = d["tokens"]
    km, kf = ("input_masked", "input_full") if what == "input" else ("target_masked", "target_full")
    fig = _figure(figsize or (max(7.0, 0.24 * len(recs) + 2), 5.2))
    ax, axl = fig.subplots(2, 1, height_ratios=[2.2, 1])
    xs = list(range(len(recs)))
    w = 0.4
    ax.bar(
        [x - w / 2 for x in xs],
        [r[km] or 0.0 for r in recs],
        width=w,
        color=LOSS_COLOURS["masked"],
        label="completion-only loss",
    )
    ax.bar(
        [x + w / 2 for x in xs],
        [r[kf] or 0.0 for r in recs],
        width=w,
        color=LOSS_COLOURS["full"],
        hatch="///",
        edgecolor="#333333",
        linewidth=0.3,
        label="full loss",
    )
    ax.set_xticks(xs)
    ax.set_xticklabels(
        [label_text(r["text"]) + (" \u2713" if r["trained"] else "") for r in recs],
        rotation=90,
        fontsize=9,
        family="monospace",
    )
    ax.set_ylabel(
        "|d loss / d input embedding|" if what == "input" else "target's share of the weight gradient", fontsize=9
    )
    if log_scale:
        ax.set_yscale("log")
    ax.legend(fontsize=9)
    ax.set_title(
        f"{d['cosine']:.3f} = cosine(completion-only gradient, full gradient)  (\u2713 = trained target)", fontsize=9
    )
    names = [x["name"] for x in d["layers"]]
    ys = list(range(len(names)))
    axl.barh(
        [y - 0.2 for y in ys],
        [x["masked"] for x in d["layers"]],
        height=0.4,
        color=LOSS_COLOURS["masked"],
        label="completion-only",
    )
    axl.barh(
        [y + 0.2 for y in ys],
        [x["full"] for x in d["layers"]],
        height=0.4,
        color=LOSS_COLOURS["full"],
        hatch="///",
        edgecolor="#333333",
        linewidth=0.3,
        label="full",
    )
    axl.set_yticks(ys)
    axl.set_yticklabels(names, fontsize=9)
    axl.invert_yaxis()
    axl.set_xlabel("gradient norm per parameter group", fontsize=9)
    axl.tick_params(labelsize=9)
    return fig


# --------------------------------------------------------------------------------------------
# The mask itself
# --------------------------------------------------------------------------------------------


def _check_per_row(per_row: object) -> None:
    if isinstance(per_row, bool) or not isinstance(per_row, int) or per_row < 1:
        raise ValueError(f"per_row must be a positive int (positions per row of the diagram), got {per_row!r}")


def _token_box(ax: Axes, x: float, y: float, text: str, *, trained: bool, tint: str, missing: bool = False) -> None:
    """One token as a box at (x, y): trained solid with a thick black edge and bold text; masked hatched,
    dashed and grey, its text on a white patch so that the hatching does not cross it; ``missing`` (no
    token at all) dotted and empty."""
    from matplotlib.patches import Rectangle

    ax.add_patch(
        Rectangle(
            (x, y),
            0.92,
            0.8,
            facecolor="#ffffff" if missing else tint,
            hatch=None if trained or missing else "////",
            edgecolor="#000000" if trained else "#8c8c8c",
            linewidth=1.6 if trained else 0.6,
            linestyle=":" if missing else ("-" if trained else "--"),
        )
    )
    ax.text(
        x + 0.46,
        y + 0.4,
        text,
        ha="center",
        va="center",
        fontsize=9,
        family="monospace",
        color="#1a1a1a" if trained else "#4a4a4a",
        fontweight="bold" if trained else "normal",
        bbox=None if trained or missing else {"facecolor": "#ffffff", "edgecolor": "none", "pad": 0.5},
    )


def plot_example(
    example: Example | ScoreReport, ax: Axes | None = None, *, per_row: int = 16, show_ids: bool = False
) -> Figure:
    """The tokens of an example as boxes: trained ones solid with a thick edge and a check mark,
    masked ones hatched and grey (for slides and papers; the widgets are interactive).

    ``show_ids=True`` writes under each box its position, its token id and its label (the id where
    the token is a target, -100 where it is not): the picture of a toy example's labels.
    """
    _check_per_row(per_row)
    ex, _ = example_and_report(example)
    n = len(ex)
    nrows = math.ceil(n / per_row)
    step = 1.9 if show_ids else 1.0  # the height of one row of boxes, in box units
    fig = None
    if ax is None:
        fig = _figure((per_row * (1.0 if show_ids else 0.75), (0.55 * step) * nrows + 0.5))
        ax = fig.add_subplot()
    for t in range(n):
        r, c = divmod(t, per_row)
        y = -r * step
        trained = ex.labels[t] != IGNORE_INDEX
        text = label_text(ex.tokens[t])[:8] + (" \u2713" if trained else "")
        _token_box(ax, c, y, text, trained=trained, tint=segment(ex.segments[t]).tint)
        if show_ids:
            label = "\u2212100" if not trained else str(ex.labels[t])
            ax.text(
                c + 0.46,
                y - 0.12,
                f"pos {t}\nid {ex.input_ids[t]}\nlabel {label}",
                ha="center",
                va="top",
                fontsize=9,
                family="monospace",
                color=_ink(),
            )
    bottom = -(nrows - 1) * step - (0.95 if show_ids else 0.1)
    ax.set_xlim(-0.1, per_row)
    ax.set_ylim(bottom, 0.9)
    ax.axis("off")
    ax.set_title("solid + \u2713: trained target;  hatched, dashed: masked (label \u2212100)", fontsize=9)
    return fig if fig is not None else ax.figure


def plot_shift(example: Example | ScoreReport, ax: Axes | None = None, *, per_row: int = 12) -> Figure:
    """The shift between inputs and targets, as a diagram for a small example.

    Each column is one position ``t``: the input token at ``t`` on top, and below it, joined by an
    arrow, the token its output is scored against, the one at ``t + 1``. Trained targets are solid
    with a check mark; masked ones hatched and grey with the label -100; the last position (the EOS)
    has no target at all. Long examples wrap every ``per_row`` positions (TokenView's shifted view
    is the interactive version for real lengths).
    """
    from matplotlib.patches import FancyArrowPatch

    _check_per_row(per_row)
    ex, _ = example_and_report(example)
    n = len(ex)
    nrows = math.ceil(n / per_row)
    step = 3.0  # one row: input boxes, the arrow, target boxes and the position caption
    fig = None
    if ax is None:
        fig = _figure((min(n, per_row) * 0.95 + 1.3, 1.45 * nrows + 0.5))
        ax = fig.add_subplot()

    for t in range(n):
        r, c = divmod(t, per_row)
        top = -r * step
        bottom = top - 1.45
        # the input at t: every token is an input, so every box is solid and plain
        _token_box(ax, c, top, label_text(ex.tokens[t])[:8], trained=True, tint=segment(ex.segments[t]).tint)
        if t + 1 < n:
            trained = ex.labels[t + 1] != IGNORE_INDEX
            text = label_text(ex.tokens[t + 1])[:8] + (" \u2713" if trained else "\n\u2212100")
            _token_box(ax, c, bottom, text, trained=trained, tint=segment(ex.segments[t + 1]).tint)
        else:
            _token_box(ax, c, bottom, "no\nlabel", trained=False, tint="#ffffff", missing=True)
        ax.add_patch(
            FancyArrowPatch(
                (c + 0.46, top - 0.03),
                (c + 0.46, bottom + 0.83),
                arrowstyle="-|>",
                mutation_scale=9,
                color=_ink("#4a4a4a"),
            )
        )
        ax.text(c + 0.46, bottom - 0.12, f"t = {t}", ha="center", va="top", fontsize=9, color=_ink())
        if c == 0:
            ax.text(-0.15, top + 0.4, "input\nat t", ha="right", va="center", fontsize=9, color=_ink())
            ax.text(-0.15, bottom + 0.4, "target:\nt + 1", ha="right", va="center", fontsize=9, color=_ink())
    ax.set_xlim(-1.3, min(n, per_row))
    ax.set_ylim(-(nrows - 1) * step - 2.0, 0.9)
    ax.axis("off")
    ax.set_title(
        "the output at t is scored against the token at t + 1:  solid + \u2713 trained,  hatched \u2212100 masked",
        fontsize=9,
    )
    return fig if fig is not None else ax.figure
