"""MaskingLab: fine-tune with different maskings (and faults) and compare the curves live."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import ipywidgets as W
import traitlets

from ..faults import FAULTS
from ..views.html import RUN_COLUMNS, runs_table_html
from ..views.vocab import FAULT_PLOTLY_DASH, LAB_RUN_COLOURS, masking_kind, masking_options, masking_style
from ._base import SftvizWidget, error_message, json_safe, module_source, stylesheet, with_static_view

PANELS = [
    ("loss", "train", "objective (loss optimised)"),
    ("prompt_nll", "train", "prompt NLL / token"),
    ("completion_nll", "train", "completion NLL / token"),
    ("cond_logprob_per_token", "eval", "eval log Pr(y|x) / token"),
    ("marg_logprob_per_token", "eval", "eval log Pr(x) / token"),
    ("grad_norm", "train", "gradient norm"),
]


def _finetune():
    from ..train import finetune

    return finetune


BUSY = "A run is still going:"


class LabRun:
    """One run of the lab: its settings and the records received so far (kept when stopped)."""

    def __init__(self, index: int, config: dict):
        self.index = index
        self.config = dict(config)
        self.history: list = []
        self.evals: list = []
        self.status = "starting"
        self.run = None  # the sftviz.train Run, when finetune returns
        self.error = ""
        self.started = time.monotonic()
        self.finished: float | None = None
        self.traces: list = []  # its curves in the lab's figure, one per panel (set when the lab draws it)

    @property
    def kind(self) -> str:
        """The masking kind: ``"completion"``, ``"full"``, ``"weighted"`` (a prompt-loss weight), ..."""
        return masking_kind(self.config["masking"])

    @property
    def colour(self) -> str:
        """The colour of its curves (runs cycle through the lab's palette)."""
        return LAB_RUN_COLOURS[(self.index - 1) % len(LAB_RUN_COLOURS)]

    @property
    def dash(self) -> str:
        """The plotly line style of its curves: its masking's, or dotted when a fault is injected."""
        return FAULT_PLOTLY_DASH if self.config.get("fault") else masking_style(self.kind).plotly_dash

    @property
    def name(self) -> str:
        """Its name in the legend and the runs table: ``#2 plw 0.25 + eos_masked``."""
        m = self.config["masking"]
        words = m if isinstance(m, str) else f"plw {m:g}"
        fault = self.config.get("fault")
        extra = f" + {fault}" if fault else ""
        seed = f" \u00b7 seed {self.config['seed']}" if self.config.get("seed", 0) != 0 else ""
        return f"#{self.index} {words}{extra}{seed}"

    def summary(self) -> dict:
        """Its row of the runs table: settings, status and the last recorded metrics."""
        last = self.history[-1] if self.history else {}
        ev = self.evals[-1] if self.evals else {}
        return {
            "name": self.name,
            "masking": self.config["masking"]
            if isinstance(self.config["masking"], str)
            else f"plw {self.config['masking']:g}",
            "fault": self.config.get("fault") or "none",
            "steps": f"{len(self.history)}/{self.config['steps']}",
            "lr": f"{self.config['lr']:g}",
            "seed": str(self.config.get("seed", 0)),  # a label, not a quantity: never "2.000"
            "status": self.status,
            "loss": last.get("loss"),
            "prompt_nll": last.get("prompt_nll"),
            "completion_nll": last.get("completion_nll"),
            "eval_cond": ev.get("cond_logprob_per_token"),
        }

    def __repr__(self) -> str:
        return f"LabRun({self.name!r}, {len(self.history)} steps, {self.status})"


class LabPanel(SftvizWidget):
    """The lab's status area: progress bar, status line, error box, what the fault does, runs table."""

    _esm = module_source("masking_lab.js")
    _css = stylesheet("masking_lab.css")

    progress = traitlets.Float(0.0).tag(sync=True)
    progress_text = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    running = traitlets.Bool(False).tag(sync=True)
    about = traitlets.Unicode("").tag(sync=True)
    runs = traitlets.List().tag(sync=True)
    # What the lab says before its first run (the figure appears with the first run).
    empty = traitlets.Unicode("").tag(sync=True)
    # The front end's theme, "light" or "dark", set by the browser (JupyterLab's theme; it follows a
    # change of theme); the lab's plotly figure follows it.
    theme = traitlets.Unicode("light").tag(sync=True)
    # The lab's width in the page, in pixels (0 until the browser says): the figure takes it.
    width = traitlets.Int(0).tag(sync=True)
    # The runs table's columns, (key in a run's summary, heading): one list for the live and static tables.
    columns = traitlets.List(json_safe([list(c) for c in RUN_COLUMNS])).tag(sync=True)

    def static_html(self) -> str:
        """The runs table as static HTML."""
        return runs_table_html(self.runs)

    def __repr__(self) -> str:
        return f"LabPanel({len(self.runs)} runs)"


class MaskingLab(W.VBox):
    """Fine-tune the model with a masking of your choice, watch the curves, compare runs.

    Args:
        model, tok: from ``sv.load_model()``. Each run trains a copy (``copy_model=True``), so every
            run starts from the same pretrained weights and your ``model`` is never changed.
        data: training rows (default: the bundled "support" train split).
        eval_data: held-out rows for the eval curves (default: 24 rows of the bundled "support" eval
            split when ``data`` is the default, else none).
        steps, lr, seed, batch_size, eval_every, device: the starting values of the controls and the
            rest of :func:`sftviz.train.finetune`'s arguments (``device="auto"`` uses a GPU when present).
        **finetune_kwargs: passed on to ``finetune``.

    Controls: masking (completion only, full, or a prompt-loss weight with its box), a fault to
    inject, steps, learning rate, seed; Run, Stop, Continue and Clear. Training runs in a background
    thread, so Stop works while it trains; a stopped run keeps its curves. Curves of every run stay
    overlaid (each run its own colour; each masking its own line style). Before the first run the lab
    says what will appear; the figure follows JupyterLab's theme (light or dark) and the lab's width.
    ``lab.runs`` holds the runs, with the :class:`sftviz.train.Run` of each finished run in ``.run``.
    """

    def __init__(
        self,
        model: object,
        tok: object,
        data: list | tuple | None = None,
        eval_data: list | tuple | None = None,
        *,
        steps: int = 60,
        lr: float = 1e-3,
        seed: int = 0,
        batch_size: int = 8,
        eval_every: int = 10,
        device: object = "auto",
        **finetune_kwargs: object,
    ):
        if data is None:
            from ..datasets import load_dataset

            data = load_dataset("support", split="train")
            if eval_data is None:  # a small held-out set keeps evaluation quick on a CPU
                eval_data = load_dataset("support", split="eval")[:24]
                finetune_kwargs.setdefault("eval_examples", 4)
        if not isinstance(data, (list, tuple)) or not data:
            raise TypeError("data must be a non-empty list of {'prompt', 'completion'} (or {'messages'}) rows.")
        self.model, self.tok = model, tok
        self.data, self.eval_data = list(data), (list(eval_data) if eval_data is not None else None)
        self.batch_size, self.eval_every, self.device = batch_size, eval_every, device
        self.finetune_kwargs = finetune_kwargs
        self.runs: list = []
        self.faults = dict(FAULTS)  # name -> what the fault does
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()
        self._last_draw = 0.0
        self._callbacks = []

        controls = self._make_controls(int(steps), float(lr), int(seed))
        self.panel = LabPanel(empty=_empty_text())
        self.figure = _make_figure()
        # The figure joins the lab with the first run: before that the panel says what will appear.
        super().__init__([controls, self.panel])
        self.add_class("sftviz-masking-lab")
        self.panel.observe(lambda change: self._apply_theme(change["new"]), names="theme")
        self.panel.observe(lambda change: self._apply_width(change["new"]), names="width")
        self._on_fault({"new": ""})
        self._set_status(self._idle_status())

    def _make_controls(self, steps: int, lr: float, seed: int) -> W.VBox:
        """The lab's controls, wired to its methods: masking, weight, fault; steps, lr, seed; buttons."""
        style = {"description_width": "initial"}
        narrow = W.Layout(width="150px")
        self.w_masking = W.Dropdown(options=masking_options(), value="completion", description="masking", style=style)
        self.w_plw = W.BoundedFloatText(
            value=0.1, min=0.0, max=1.0, step=0.05, description="prompt-loss weight", disabled=True, style=style,
            layout=W.Layout(width="190px"),
        )  # fmt: skip
        fault_options = [("none", "")] + [(k, k) for k in self.faults]
        self.w_fault = W.Dropdown(options=fault_options, value="", description="fault", style=style)
        self.w_steps = W.BoundedIntText(value=steps, min=1, max=100000, description="steps", style=style, layout=narrow)
        # Text boxes, not sliders: a text box's label is tied to it for screen readers (a slider's is not),
        # and a learning rate is typed more exactly than dragged.
        self.w_lr = W.BoundedFloatText(
            value=lr, min=1e-7, max=1.0, step=1e-4, description="learning rate", style=style, layout=narrow
        )
        self.w_seed = W.BoundedIntText(value=seed, min=0, max=2**31 - 1, description="seed", style=style, layout=narrow)
        self.w_run = W.Button(
            description="Run", button_style="primary", icon="play", tooltip="Start a run with these settings"
        )
        self.w_stop = W.Button(
            description="Stop", icon="stop", disabled=True, tooltip="Stop after the current step; keeps the curves"
        )
        self.w_clear = W.Button(description="Clear", icon="trash", tooltip="Remove all runs and curves")
        self.w_continue = W.Button(
            description="Continue", icon="forward", disabled=True,
            tooltip="Continue the stopped run to its number of steps, exactly as if it had not stopped",
        )  # fmt: skip
        self.w_masking.observe(self._on_masking, names="value")
        self.w_fault.observe(self._on_fault, names="value")
        self.w_run.on_click(lambda _b: self.run())
        self.w_stop.on_click(lambda _b: self.stop())
        self.w_clear.on_click(lambda _b: self.clear())
        self.w_continue.on_click(lambda _b: self.resume())
        rows = [[self.w_masking, self.w_plw, self.w_fault], [self.w_steps, self.w_lr, self.w_seed]]
        wrap = W.Layout(flex_flow="row wrap")  # narrow screens: the controls go onto more lines
        return W.VBox(
            [W.HBox(r, layout=wrap) for r in [*rows, [self.w_run, self.w_stop, self.w_continue, self.w_clear]]]
        )

    # -- settings ----------------------------------------------------------------------------

    def config(self) -> dict:
        """The settings the controls show now, as finetune arguments."""
        m = self.w_masking.value
        masking = float(self.w_plw.value) if m == "weighted" else m
        return {
            "masking": masking,
            "fault": self.w_fault.value or None,
            "steps": int(self.w_steps.value),
            "lr": float(self.w_lr.value),
            "seed": int(self.w_seed.value),
            "batch_size": self.batch_size,
            "eval_every": self.eval_every,
            "device": self.device,
        }

    def _on_masking(self, change):
        self.w_plw.disabled = change["new"] != "weighted"

    def _on_fault(self, change):
        name = change["new"]
        self.panel.about = (
            f"fault {name}: {self.faults.get(name, '')}"
            if name
            else "no fault: the loss is computed correctly. Pick a fault to see what a classic bug does to the curves."
        )

    def _idle_status(self):
        try:
            from ..modeling import resolve_device

            dev = str(resolve_device(self.device))
        except Exception:  # noqa: BLE001 -- a status line: show the device as given
            dev = str(self.device)
        return f"ready \u00b7 {len(self.data)} training rows \u00b7 device {dev}"

    # -- running ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether a run is training now."""
        return self._thread is not None and self._thread.is_alive()

    def on_record(self, callback: Callable[[dict, object], object]) -> None:
        """Also call ``callback(record, run)`` for every record (errors it raises show in the lab)."""
        if not callable(callback):
            raise TypeError("on_record needs a function taking (record, run).")
        self._callbacks.append(callback)

    def run(self, *, wait: bool = False, **overrides: object) -> LabRun | None:
        """Start a run with the controls' settings (``overrides`` replace some); returns its :class:`LabRun`.

        Training happens in a background thread; ``wait=True`` blocks until it ends.
        """
        if self.running:
            self.panel.error = BUSY + " press Stop (or wait) before starting another."
            return None
        cfg = self.config()
        unknown = set(overrides) - set(cfg)
        if unknown:
            raise TypeError(f"Unknown setting(s) {sorted(unknown)}; the lab sets {sorted(cfg)}.")
        cfg.update(overrides)
        entry = LabRun(len(self.runs) + 1, cfg)
        self.runs.append(entry)
        self._add_traces(entry)
        if self.figure not in self.children:
            self.children = (*self.children, self.figure)
        self._start_thread(entry, resume=False, wait=wait)
        return entry

    def resume(self, *, wait: bool = False) -> LabRun | None:
        """Continue the last run, which was stopped, to its number of steps: the curves go on exactly as
        they would have without the stop (``sv.finetune(..., resume=run)``)."""
        entry = self.runs[-1] if self.runs else None
        if self.running:
            self.panel.error = BUSY + " press Stop (or wait) before continuing another."
            return None
        if entry is None or entry.run is None or entry.run.status != "stopped" or entry.run.state is None:
            self.panel.error = "There is no stopped run to continue: press Run to start one."
            return None
        self._start_thread(entry, resume=True, wait=wait)
        return entry

    def _start_thread(self, entry: LabRun, *, resume: bool, wait: bool) -> None:
        self.panel.error = ""
        self._stop = threading.Event()
        self.w_run.disabled, self.w_stop.disabled, self.w_clear.disabled = True, False, True
        self.w_continue.disabled = True
        self.panel.running = True
        if not resume:
            self.panel.progress = 0.0
        self._set_status(f"{'continuing' if resume else 'training'} {entry.name} \u2026")
        self._thread = threading.Thread(
            target=self._worker, args=(entry, resume), name=f"sftviz-lab-{entry.index}", daemon=True
        )
        self._thread.start()
        if wait:
            self.wait()

    def stop(self) -> None:
        """Ask the current run to stop after its current step (its curves stay)."""
        if self.running:
            self._stop.set()
            self.w_stop.disabled = True
            self._set_status("stopping after this step \u2026")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the current run ends; False if it is still going after ``timeout`` seconds."""
        t = self._thread
        if t is not None:
            t.join(timeout)
            return not t.is_alive()
        return True

    def clear(self) -> None:
        """Remove every run and its curves (not while a run is going)."""
        if self.running:
            self.panel.error = "Stop the run before clearing."
            return
        self.runs = []
        self.figure.data = []
        self.children = tuple(c for c in self.children if c is not self.figure)  # back to the empty state
        self.panel.runs = []
        self.panel.progress = 0.0
        self.panel.progress_text = ""
        self.panel.error = ""
        self._set_status(self._idle_status())

    def _worker(self, entry: LabRun, resume: bool = False):
        cfg = entry.config
        try:
            finetune = _finetune()
            shared = dict(eval_data=self.eval_data, callbacks=[self._make_callback(entry)], stop=self._stop,
                          progress=False)  # fmt: skip
            entry.status = "running"
            if resume:
                run = finetune(entry.run.model, self.tok, self.data, resume=entry.run, steps=cfg["steps"], **shared)
            else:
                kwargs = dict(self.finetune_kwargs)
                kwargs.update(
                    masking=cfg["masking"], steps=cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                    seed=cfg["seed"], device=cfg["device"], eval_every=cfg["eval_every"], fault=cfg["fault"],
                    copy_model=True, **shared,
                )  # fmt: skip
                run = finetune(self.model, self.tok, self.data, **kwargs)
            entry.run = run
            entry.status = str(getattr(run, "status", "done") or "done")
            if getattr(run, "status", None) == "nan":  # the engine says why and what to try
                self.panel.error = getattr(run, "error", None) or ""
        except Exception as err:  # noqa: BLE001 -- a background thread: the error is shown in the lab
            entry.status = "error"
            entry.error = error_message(err)
            self.panel.report_error(err)
        finally:
            last = entry.run
            can_continue = getattr(last, "status", None) == "stopped" and getattr(last, "state", None) is not None
            self.w_continue.disabled = not can_continue
            if self.panel.error.startswith(BUSY):  # a press during the run; the run is over now
                self.panel.error = ""
            entry.finished = time.monotonic()
            try:
                self._draw(entry, force=True)
            except Exception as err:  # noqa: BLE001 -- shown in the lab
                self.panel.report_error(err)
            self.w_run.disabled, self.w_stop.disabled, self.w_clear.disabled = False, True, False
            self.panel.running = False
            took = entry.finished - entry.started
            self._set_status(
                f"{entry.name}: {entry.status} after {len(entry.history)} steps ({took:.1f} s) \u00b7 "
                + self._idle_status()
            )

    def _make_callback(self, entry: LabRun):
        def callback(record, run=None):
            try:
                rec = dict(record)
                if rec.get("kind", "train") == "eval":
                    entry.evals.append(rec)
                else:
                    entry.history.append(rec)
                self._draw(entry, force=rec.get("kind") == "eval")
                for cb in list(self._callbacks):
                    cb(record, run)
            except Exception as err:  # noqa: BLE001 -- never kill the training run for a drawing problem
                self.panel.report_error(err)

        return callback

    # -- drawing ------------------------------------------------------------------------------

    def _apply_width(self, width: int) -> None:
        """Fit the figure to the lab's width (plotly's widget does not follow its container by itself)."""
        if width > 0:
            with self._lock:  # the training thread draws into the same figure
                self.figure.layout.width = max(MIN_FIGURE_WIDTH, int(width))

    def _apply_theme(self, theme: str) -> None:
        """Restyle the figure for the front end's theme; the runs keep their colours (black becomes light)."""
        with self._lock, self.figure.batch_update():  # the training thread draws into the same figure
            self.figure.update_layout(**_figure_theme(theme))
            for entry in self.runs:
                for trace in entry.traces:
                    trace.line.color = trace.marker.color = _run_colour(entry.colour, theme)

    def _add_traces(self, entry: LabRun) -> None:
        colour, dash = _run_colour(entry.colour, self.panel.theme), entry.dash
        with self.figure.batch_update():
            for i, (_key, where, _title) in enumerate(PANELS):
                self.figure.add_scatter(
                    x=[],
                    y=[],
                    name=entry.name,
                    legendgroup=entry.name,
                    showlegend=(i == 0),
                    mode="lines+markers" if where == "eval" else "lines",
                    line=dict(color=colour, dash=dash, width=2),
                    marker=dict(size=5, color=colour),
                    row=i // 3 + 1,
                    col=i % 3 + 1,
                )
        entry.traces = list(self.figure.data[-len(PANELS) :])

    def _draw(self, entry: LabRun, force: bool = False):
        now = time.monotonic()
        steps = max(1, int(entry.config["steps"]))
        done = len(entry.history)
        with self._lock:
            if not force and now - self._last_draw < 0.3:
                return
            self._last_draw = now
            if entry.traces:
                with self.figure.batch_update():
                    for trace, (key, where, _title) in zip(entry.traces, PANELS):
                        recs = entry.history if where == "train" else entry.evals
                        pts = [(r.get("step"), r.get(key)) for r in recs if isinstance(r.get(key), (int, float))]
                        trace.x = [p[0] for p in pts]
                        trace.y = [p[1] for p in pts]
            self.panel.progress = min(1.0, done / steps)
            rate = done / max(1e-9, now - entry.started)
            self.panel.progress_text = f"step {done} / {steps} \u00b7 {rate:.1f} steps/s"
            self.panel.runs = json_safe([r.summary() for r in self.runs])

    def _set_status(self, text: str):
        self.panel.status = text

    # -- display ------------------------------------------------------------------------------

    def static_html(self) -> str:
        """The runs table and their training curves (a PNG) as static HTML."""
        parts = [runs_table_html([r.summary() for r in self.runs])]
        if any(r.history for r in self.runs):
            from ..views.plots import figure_html, plot_runs

            fig = plot_runs(
                [{"name": r.name, "config": r.config, "history": r.history, "evals": r.evals} for r in self.runs]
            )
            parts.append(figure_html(fig, alt="training curves of the masking lab's runs"))
        return "".join(parts)

    def _repr_mimebundle_(self, **kwargs: object) -> tuple[dict, dict]:
        parent = getattr(super(), "_repr_mimebundle_", None)  # absent in ipywidgets 7
        return with_static_view(self, parent(**kwargs) if parent is not None else None)

    def __repr__(self) -> str:
        return f"MaskingLab({len(self.data)} training rows, {len(self.runs)} runs)"


MIN_FIGURE_WIDTH = 360  # px: below this the figure scrolls sideways instead of squeezing its panels


def _empty_text() -> str:
    """What the lab shows before its first run: what to do, and what will appear."""
    titles = ", ".join(title for _key, _where, title in PANELS)
    return (
        "No runs yet. Choose a masking (and a fault, if you like) and press Run. Six panels of curves will "
        f"appear below and grow as the model trains: {titles}. Each run adds its own coloured curves and a "
        "row in a table here, so runs can be compared."
    )


def _figure_theme(theme: str) -> dict:
    """Plotly layout settings for a light or dark front end: transparent backgrounds (the notebook's
    own shows through), text and grid lines in the theme's colours."""
    dark = theme == "dark"
    return dict(
        template="plotly_dark" if dark else "plotly_white",
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        font_color="#e8e8e8" if dark else "#1a1a1a",
    )


def _run_colour(colour: str, theme: str) -> str:
    """A run's line colour on the theme's background: the palette's black is drawn light on a dark one."""
    return "#e8e8e8" if theme == "dark" and colour.lower() == "#000000" else colour


def _make_figure() -> object:
    """The lab's plotly figure: one panel per curve of :data:`PANELS`, steps on every x axis."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=2, cols=3, subplot_titles=[p[2] for p in PANELS], horizontal_spacing=0.07, vertical_spacing=0.16
    )
    figure = go.FigureWidget(fig)
    figure.update_layout(
        height=460,
        margin=dict(l=40, r=10, t=40, b=30),
        legend=dict(orientation="h", y=-0.12, font=dict(size=11)),
        font=dict(size=11),
        **_figure_theme("light"),
    )
    figure.update_annotations(font_size=12)  # the subplot titles
    for i in range(len(PANELS)):
        figure.update_xaxes(title_text="step", title_font=dict(size=10), row=i // 3 + 1, col=i % 3 + 1)
    return figure
