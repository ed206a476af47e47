"""Figures for slides: the key figures of a run, an experiment, an example or a gradient report, in one call.

:func:`export_figures` writes each figure of the object at slide size (16:9 by default), in a light
or a dark theme, and returns the paths it wrote. The matplotlib figures are those of
:mod:`sftviz.views.plots`, drawn under a theme of their own (``matplotlib.rc_context``: nothing
leaks into the caller's style). The static HTML views of :mod:`sftviz.views.html` become images
through the system Chromium, driven by Python ``playwright`` (never ``playwright install``): the
view's own CSS is given JupyterLab's theme variables (``--jp-*``) on a page of the theme's
background, and the page is screenshotted. Without Chromium or playwright those views are skipped
with a warning that says what to install, and the matplotlib figures are still written.

Views never compute model quantities: this module takes the objects the core returns.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..data import Example
from ..gradients import TokenGradients
from ..logprobs import ScoreReport
from ..train import Experiment, Run
from . import plots
from .html import gradients_html, logprob_html, token_html

if TYPE_CHECKING:  # matplotlib is imported only when a figure is drawn
    from matplotlib.figure import Figure

__all__ = [
    "FORMATS",
    "SHIFT_MAX_TOKENS",
    "THEMES",
    "Theme",
    "browser_missing",
    "chromium_path",
    "export_figures",
]

#: The file formats :func:`export_figures` writes. The HTML views are written as PNG only.
FORMATS = ("png", "svg", "pdf")

#: The shift diagram (:func:`sftviz.plots.plot_shift`) is written for examples up to this many tokens
#: (three rows of twelve positions); a longer one is better shown by TokenView's shifted view.
SHIFT_MAX_TOKENS = 36

# Figures are drawn this many inches wide (fonts of 9-10 pt), then saved at the dpi that makes them
# the requested number of pixels wide: on a 1920-pixel slide a 9 pt label is 24 pixels high.
SLIDE_WIDTH_IN = 10.0

# The largest CSS zoom of an HTML view on the page (a short example would otherwise fill the slide
# with a few giant tokens), and the smallest (below it a long view is written taller than the slide).
HTML_ZOOMS = (2.5, 2.25, 2.0, 1.75, 1.5, 1.35, 1.2, 1.1, 1.0)

# Chromium: as root it refuses to start with its sandbox; the page needs no GPU and no network.
CHROMIUM_FLAGS = ("--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync")


@dataclass(frozen=True)
class Theme:
    """The colours of one theme, for matplotlib and for the HTML views (JupyterLab's own values).

    Attributes:
        name: ``"light"`` or ``"dark"``.
        background: the page and figure background (``--jp-layout-color1``).
        surface: a second background, for legends and table stripes (``--jp-layout-color2``).
        text: text, axes labels and ticks (``--jp-ui-font-color1``).
        text_dim: captions (``--jp-ui-font-color2``).
        border: axes edges and borders (``--jp-border-color0``).
    """

    name: str
    background: str
    surface: str
    text: str
    text_dim: str
    border: str

    @property
    def dark(self) -> bool:
        """Whether the background is dark."""
        return self.name == "dark"

    def rc(self) -> dict:
        """matplotlib rcParams of the theme (applied over matplotlib's default style)."""
        return {
            "figure.facecolor": self.background,
            "axes.facecolor": self.background,
            "savefig.facecolor": self.background,
            "savefig.edgecolor": self.background,
            "text.color": self.text,
            "axes.labelcolor": self.text,
            "axes.titlecolor": self.text,
            "axes.edgecolor": self.border,
            "xtick.color": self.text,
            "ytick.color": self.text,
            "grid.color": self.border,
            "legend.facecolor": self.surface,
            "legend.edgecolor": self.border,
            "svg.fonttype": "none",  # SVG text stays text: editable and searchable on a slide
            "pdf.fonttype": 42,  # TrueType in PDF, for the same reason
        }

    def css(self) -> str:
        """The JupyterLab variables the views' CSS reads (``_common.css``), as declarations."""
        return (
            f"--jp-layout-color0: {self.background}; --jp-layout-color1: {self.background}; "
            f"--jp-layout-color2: {self.surface}; --jp-cell-editor-background: {self.surface}; "
            f"--jp-ui-font-color0: {self.text}; --jp-ui-font-color1: {self.text}; "
            f"--jp-ui-font-color2: {self.text_dim}; --jp-content-font-color1: {self.text}; "
            f"--jp-border-color0: {self.border}; "
            '--jp-ui-font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; '
            '--jp-code-font-family: "DejaVu Sans Mono", ui-monospace, Menlo, Consolas, monospace;'
        )


THEMES: dict[str, Theme] = {
    t.name: t
    for t in (
        Theme("light", "#ffffff", "#eeeeee", "#1a1a1a", "#555555", "#8c8c8c"),
        # JupyterLab's dark theme: grey-900 background, white text at 87% (on it: #dedede)
        Theme("dark", "#212121", "#424242", "#dedede", "#a6a6a6", "#8c8c8c"),
    )
}

# The metadata that would make two exports of the same figure differ (dates, versions).
_METADATA = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None, "Producer": None}}

# What the object is drawn as: (file stem, kind, builder). kind "figure": the builder returns a
# matplotlib Figure; kind "html": it returns a static HTML view.
_Job = tuple[str, str, Callable[[], Any]]
_ACCEPTED = (
    "a Run (sv.finetune), a list of Runs, an Experiment (sv.masking_experiment) or a list or dict of "
    "them, an Example (sv.build_example), a ScoreReport (sv.score) or TokenGradients (sv.token_gradients)"
)


# --------------------------------------------------------------------------------------------
# What to draw
# --------------------------------------------------------------------------------------------


def _slug(text: object) -> str:
    """A file-name part: lower case letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")


def _type_name(obj: object) -> str:
    if isinstance(obj, (list, tuple)):
        inner = sorted({type(x).__name__ for x in obj})
        return f"{type(obj).__name__} of {', '.join(inner)}" if inner else f"an empty {type(obj).__name__}"
    if isinstance(obj, dict):
        inner = sorted({type(x).__name__ for x in obj.values()})
        return f"dict of {', '.join(inner)}" if inner else "an empty dict"
    return type(obj).__name__


def _curves_job(stem: str, runs: list, aspect: float) -> _Job:
    return (stem, "figure", lambda: plots.plot_runs(runs, figsize=(SLIDE_WIDTH_IN, SLIDE_WIDTH_IN / aspect)))


def _experiment_jobs(named: dict[str, Experiment], aspect: float, *, single: bool) -> list[_Job]:
    """plot_experiments over all of them, then each one's curves for seed 0 (or, where seed 0 has no runs,
    the first seed that has: a stopped experiment holds the runs so far)."""
    exps = list(named.values())
    height = max(SLIDE_WIDTH_IN / aspect, 2.9 * len(exps))
    prefix = {name: f"experiment-{name}" if name else "experiment" for name in named}
    summary = prefix[next(iter(named))] if single else "experiments"
    jobs: list[_Job] = [(summary, "figure", lambda: plots.plot_experiments(exps, figsize=(SLIDE_WIDTH_IN, height)))]
    for name, exp in named.items():
        seeds = [s for s in exp.seeds if any((m, s) in exp.runs for m in exp.maskings)]
        if seeds:
            seed = 0 if 0 in seeds else seeds[0]
            runs = [exp.runs[(m, seed)] for m in exp.maskings if (m, seed) in exp.runs]
            jobs.append(_curves_job(f"{prefix[name]}-curves-seed{seed}", runs, aspect))
    return jobs


def _experiment_names(exps: dict | list) -> dict[str, Experiment]:
    """A unique file-name part per experiment: the dict key, else the dataset, else its number (or
    nothing, for one experiment alone)."""
    items = list(exps.items() if isinstance(exps, dict) else ((e.dataset, e) for e in exps))
    named: dict[str, Experiment] = {}
    for i, (label, exp) in enumerate(items, start=1):
        base = _slug(label) or (str(i) if len(items) > 1 else "")
        name, k = base, 2
        while name in named:
            name, k = f"{base}-{k}", k + 1
        named[name] = exp
    return named


def _example_jobs(ex: Example) -> list[_Job]:
    jobs: list[_Job] = [("example-masks", "figure", lambda: plots.plot_example(ex))]
    if len(ex) <= SHIFT_MAX_TOKENS:
        jobs.append(("example-shift", "figure", lambda: plots.plot_shift(ex)))
    jobs.append(("example-tokens", "html", lambda: token_html(ex)))
    return jobs


def _plan(obj: object, aspect: float = 16 / 9) -> list[_Job]:
    """What :func:`export_figures` draws for ``obj``: ``(file stem, "figure" or "html", builder)``.

    Raises a ``TypeError`` naming the accepted types for anything else.
    """
    if isinstance(obj, Run):
        return [_curves_job("curves", [obj], aspect)]
    if isinstance(obj, Experiment):
        return _experiment_jobs(_experiment_names([obj]), aspect, single=True)
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(r, Run) for r in obj):
        return [_curves_job("curves", list(obj), aspect)]
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(e, Experiment) for e in obj):
        return _experiment_jobs(_experiment_names(list(obj)), aspect, single=len(obj) == 1)
    if isinstance(obj, dict) and obj and all(isinstance(e, Experiment) for e in obj.values()):
        return _experiment_jobs(_experiment_names(obj), aspect, single=len(obj) == 1)
    if isinstance(obj, Example):
        return _example_jobs(obj)
    if isinstance(obj, ScoreReport):
        return [
            ("logprobs", "figure", lambda: plots.plot_logprobs(obj)),
            ("logprobs-view", "html", lambda: logprob_html(obj)),
        ]
    if isinstance(obj, TokenGradients):
        return [
            ("gradients", "figure", lambda: plots.plot_token_gradients(obj)),
            ("gradients-view", "html", lambda: gradients_html(obj)),
        ]
    raise TypeError(f"export_figures takes {_ACCEPTED}; got {_type_name(obj)}.")


# --------------------------------------------------------------------------------------------
# Checking the arguments (all of them, before anything is written)
# --------------------------------------------------------------------------------------------


def _as_tuple(value: object, what: str, allowed: tuple) -> tuple[str, ...]:
    values = (value,) if isinstance(value, str) else value
    try:
        values = tuple(values)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{what} must be a string or a list of strings from {allowed}, got {value!r}") from None
    if not values:
        raise ValueError(f"{what} is empty: give at least one of {allowed}")
    for v in values:
        if not isinstance(v, str) or v.lower().lstrip(".") not in allowed:
            raise ValueError(f"Unknown {what[:-1]} {v!r}: allowed are {allowed}")
    return tuple(dict.fromkeys(v.lower().lstrip(".") for v in values))  # in order, once each


def _check_size(size: object) -> tuple[int, int]:
    ok = (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in size)
    )
    if not ok or not (160 <= size[0] <= 8000 and 90 <= size[1] <= 8000):  # type: ignore[index]
        raise ValueError(
            f"size must be (width, height) in pixels, two ints from 160 x 90 to 8000 x 8000, such as "
            f"(1920, 1080) or (1280, 720); got {size!r}"
        )
    return int(size[0]), int(size[1])  # type: ignore[index]


# --------------------------------------------------------------------------------------------
# matplotlib figures
# --------------------------------------------------------------------------------------------


def _light_lines(fig: Figure, theme: Theme) -> None:
    """Lines drawn in black (the last colour of the run palette, a running sum) get the theme's text colour."""
    from matplotlib.colors import to_rgba

    for ax in fig.axes:
        for line in ax.lines:
            r, g, b, a = to_rgba(line.get_color())
            if a > 0 and 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.15:
                line.set_color(theme.text)


def _save_figure(fig: Figure, path: Path, fmt: str, size: tuple[int, int], theme: Theme) -> None:
    """Save ``fig`` centred on a canvas of exactly ``size`` pixels (its own aspect kept, the rest background)."""
    from matplotlib.transforms import Bbox

    w, h = (float(v) for v in fig.get_size_inches())
    ratio = size[0] / size[1]
    page_w, page_h = (w, w / ratio) if w / h >= ratio else (h * ratio, h)
    bbox = Bbox.from_bounds(-(page_w - w) / 2, -(page_h - h) / 2, page_w, page_h)
    fig.savefig(
        path,
        format=fmt,
        dpi=size[0] / page_w,
        bbox_inches=bbox,
        facecolor=theme.background,
        edgecolor=theme.background,
        metadata=_METADATA[fmt],
    )


def _write_figures(jobs: list[_Job], out: Path, formats: tuple, themes: tuple, size: tuple[int, int]) -> list[Path]:
    import matplotlib as mpl
    import matplotlib.style

    written = []
    for name in themes:
        theme = THEMES[name]
        for stem, kind, build in jobs:
            if kind != "figure":
                continue
            with mpl.rc_context():
                matplotlib.style.use("default")  # the theme, not the caller's style (restored on exit)
                mpl.rcParams.update(theme.rc())
                fig = build()
                if theme.dark:
                    _light_lines(fig, theme)
                for fmt in formats:
                    path = out / f"{stem}-{name}.{fmt}"
                    _save_figure(fig, path, fmt, size, theme)
                    written.append(path)
    return written


# --------------------------------------------------------------------------------------------
# HTML views, through Chromium
# --------------------------------------------------------------------------------------------


def chromium_path() -> str | None:
    """The Chromium to render HTML views with: ``$SFTVIZ_CHROMIUM``, ``chromium`` on PATH or
    /usr/bin/chromium (the first that is an executable file), or None."""
    for cand in (os.environ.get("SFTVIZ_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def browser_missing() -> str | None:
    """Why the HTML views cannot become images here (no Chromium, no playwright), or None when they can."""
    if chromium_path() is None:
        return "Chromium was not found ($SFTVIZ_CHROMIUM, `chromium` on PATH, /usr/bin/chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed"
    return None


def _html_page(view: str, theme: Theme) -> str:
    """A minimal page that shows one static HTML view the way JupyterLab would in ``theme``."""
    return (
        '<!doctype html><html><head><meta charset="utf-8"><style>'
        f":root {{ {theme.css()} color-scheme: {theme.name}; }}"
        f"html, body {{ margin: 0; background: {theme.background}; color: {theme.text}; }}"
        "body { min-height: 100vh; display: flex; }"
        # margin: auto centres it, and a view taller than the page overflows at the bottom only
        "#sftviz-export { margin: auto; padding: 16px 24px; box-sizing: border-box; }"
        f'</style></head><body><div id="sftviz-export">{view}</div></body></html>'
    )


def _fit_zoom(page: Any, width: int, height: int) -> bool:
    """Zoom the view to the largest of :data:`HTML_ZOOMS` at which it fits the page; False if none does
    (it is then left at 1x, as wide as the page)."""
    for zoom in HTML_ZOOMS:
        w, h = page.evaluate(
            """([z, width]) => {
                const el = document.getElementById("sftviz-export");
                el.style.zoom = String(z);
                el.style.maxWidth = (width / z) + "px";
                return [document.documentElement.scrollWidth, document.documentElement.scrollHeight];
            }""",
            [zoom, width],
        )
        if w <= width and h <= height:
            return True
    return False


def _screenshot_views(views: list[tuple[Path, str, Theme]], chromium: str, size: tuple[int, int]) -> list[Path]:
    """Render each (path, html, theme) on a page of ``size`` CSS pixels and screenshot it to ``path``."""
    from playwright.sync_api import sync_playwright

    args = list(CHROMIUM_FLAGS) + (["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])
    written = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=args)
        try:
            context = browser.new_context(
                viewport={"width": size[0], "height": size[1]}, device_scale_factor=1, offline=True
            )
            page = context.new_page()
            page.route("**/*", lambda route: route.abort())  # the views are self-contained: no requests
            for path, view, theme in views:
                page.set_content(_html_page(view, theme), wait_until="load")
                fits = _fit_zoom(page, *size)
                page.screenshot(path=str(path), full_page=not fits, type="png")
                written.append(path)
        finally:
            browser.close()
    return written


def _write_views(jobs: list[_Job], out: Path, formats: tuple, themes: tuple, size: tuple[int, int]) -> list[Path]:
    html_jobs = [(stem, build) for stem, kind, build in jobs if kind == "html"]
    if not html_jobs or "png" not in formats:
        return []  # an HTML view has no SVG or PDF of its own (see export_figures)
    views = [(out / f"{stem}-{name}.png", build(), THEMES[name]) for name in themes for stem, build in html_jobs]
    why = browser_missing()
    if why is not None:
        warnings.warn(
            f"export_figures skipped the HTML views ({', '.join(p.name for p, _, _ in views)}): {why}. "
            "To render them, install playwright (`pip install playwright`) and a Chromium binary "
            "(Debian/Ubuntu: `apt-get install chromium`, or set SFTVIZ_CHROMIUM to one); "
            "`playwright install` is not needed. The figures were written.",
            stacklevel=3,
        )
        return []
    chromium = chromium_path()
    try:
        # Playwright's sync API refuses to run where an asyncio loop runs (a Jupyter kernel): a thread has none.
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(_screenshot_views, views, chromium, size).result()
    except Exception as err:  # noqa: BLE001 -- a browser that fails must not cost the figures already written
        warnings.warn(
            f"export_figures could not render the HTML views with {chromium} ({type(err).__name__}: {err}); "
            "the figures were written.",
            stacklevel=3,
        )
        return []


# --------------------------------------------------------------------------------------------
# The one call
# --------------------------------------------------------------------------------------------


def export_figures(
    obj: object,
    out_dir: str | os.PathLike,
    *,
    formats: str | Iterable[str] = ("png", "svg"),
    theme: str | Iterable[str] = "light",
    size: tuple[int, int] = (1920, 1080),
) -> list[Path]:
    """Write the key figures of ``obj`` at slide size, and return the paths written.

    Args:
        obj: what to draw (file names below are for ``theme="light"`` and PNG):

            * a :class:`~sftviz.train.Run` (``sv.finetune``): ``curves-light.png``, its training
              curves (:func:`sftviz.plots.plot_runs`); a list of runs: the same, overlaid;
            * an :class:`~sftviz.train.Experiment` (``sv.masking_experiment``) on dataset ``support``:
              ``experiment-support-light.png`` (:func:`sftviz.plots.plot_experiments`) and
              ``experiment-support-curves-seed0-light.png`` (its runs of seed 0, or of its first seed
              with runs), or ``experiment-light.png`` and ``experiment-curves-seed0-light.png`` without
              a dataset name; a list or dict of experiments: ``experiments-light.png`` and each one's
              curves (``experiment-<name>-curves-seed0-light.png``, the name from the dict key, else
              the dataset, else its number);
            * an :class:`~sftviz.data.Example` (``sv.build_example``): ``example-masks-light.png``
              (:func:`sftviz.plots.plot_example`), ``example-shift-light.png``
              (:func:`sftviz.plots.plot_shift`, for examples of at most :data:`SHIFT_MAX_TOKENS`
              tokens) and ``example-tokens-light.png`` (the static token view,
              :func:`sftviz.render.token_html`);
            * a :class:`~sftviz.logprobs.ScoreReport` (``sv.score``): ``logprobs-light.png``
              (:func:`sftviz.plots.plot_logprobs`) and ``logprobs-view-light.png``
              (:func:`sftviz.render.logprob_html`);
            * :class:`~sftviz.gradients.TokenGradients` (``sv.token_gradients``):
              ``gradients-light.png`` (:func:`sftviz.plots.plot_token_gradients`) and
              ``gradients-view-light.png`` (:func:`sftviz.render.gradients_html`).
        out_dir: the folder to write into (created if missing). Files of the same name are replaced.
        formats: any of ``"png"``, ``"svg"``, ``"pdf"`` (a string or a list). SVG and PDF keep text as
            text. The HTML views are written as PNG only: they have no vector form of their own, and
            a PNG wrapped in an SVG would only pretend to be one.
        theme: ``"light"``, ``"dark"``, or both as ``("light", "dark")``. Dark is JupyterLab's dark
            theme: a dark grey background with light text and axes (the token boxes keep their
            light tints in the figures; in the HTML views the tints are mixed into the background).
        size: ``(width, height)`` of every image in pixels (PNG), 16:9 Full HD by default. A figure
            keeps its own aspect, centred on the theme's background; an HTML view is zoomed to fill
            the slide (up to 2.5x), and one too long for it at 1x is written taller than ``size``.

    Returns:
        The paths written, in order: figures (theme by theme, format by format), then HTML views.

    Raises:
        TypeError: ``obj`` is of none of the types above (the message names them).
        ValueError: an unknown format or theme, or a ``size`` that is not two ints in range.

    HTML views need Python ``playwright`` and a Chromium binary (``$SFTVIZ_CHROMIUM``, ``chromium`` on
    PATH or /usr/bin/chromium; ``playwright install`` is never needed). Without them those views are
    skipped with a warning that says what to install, and the figures are still written.
    """
    themes = _as_tuple(theme, "themes", tuple(THEMES))
    fmts = _as_tuple(formats, "formats", FORMATS)
    size = _check_size(size)
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a folder path (str or pathlib.Path), got {type(out_dir).__name__}")
    jobs = _plan(obj, aspect=size[0] / size[1])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return _write_figures(jobs, out, fmts, themes, size) + _write_views(jobs, out, fmts, themes, size)
