"""What every sftviz anywidget shares: its ES module and CSS, an ``error`` traitlet, a static HTML
fallback in ``_repr_mimebundle_``, and a deterministic ``__repr__``.

The display vocabulary (:mod:`sftviz.views.vocab`) reaches the browser here: each widget's ES module
starts with ``const SV_VOCAB = {...}`` and each stylesheet with the generated segment colours."""

from __future__ import annotations

import math
import traceback
from pathlib import Path

import anywidget
import traitlets

from ..views.vocab import js_prelude, segment_css

HERE = Path(__file__).resolve().parent


def read_asset(name: str) -> str:
    """The text of a file beside this module (an ES module or a stylesheet)."""
    return (HERE / name).read_text(encoding="utf-8")


def module_source(js_name: str) -> str:
    """The widget's ES module: the vocabulary (``SV_VOCAB``), the shared helpers, then the widget's own
    file (no build step)."""
    return js_prelude() + read_asset("_common.js") + "\n" + read_asset(js_name)


def stylesheet(css_name: str | None = None) -> str:
    """The widget's CSS: the segment colours from the vocabulary, the shared styles, then its own file."""
    return segment_css() + read_asset("_common.css") + ("\n" + read_asset(css_name) if css_name else "")


def error_message(err: BaseException) -> str:
    """A message for the widget's error box: our own errors as they are, others with their type."""
    if isinstance(err, (ValueError, TypeError)):
        return str(err)
    return f"{type(err).__name__}: {err}"


def json_safe(obj: object) -> object:
    """Replace NaN and infinities (which JSON cannot carry to the browser) with None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def with_static_view(widget: object, bundle: dict | tuple | None = None) -> tuple[dict, dict]:
    """The display bundle of a widget: its live view (``bundle``, from ipywidgets or anywidget), its
    deterministic ``repr`` as text/plain, and its ``static_html()`` as text/html for nbviewer, GitHub
    and ``nbconvert``. ipywidgets 7 (Colab's) has no ``_repr_mimebundle_`` on its containers: pass
    ``None`` and the live view's entry is written here."""
    if bundle is None:
        bundle = {
            "application/vnd.jupyter.widget-view+json": {
                "version_major": 2,
                "version_minor": 0,
                "model_id": widget.model_id,
            }
        }
    data, meta = bundle if isinstance(bundle, tuple) else (bundle, {})
    data = dict(data or {})
    data["text/plain"] = repr(widget)
    try:
        data["text/html"] = widget.static_html()
    except Exception as err:  # noqa: BLE001 -- the static view must never break displaying the live one
        from html import escape

        data["text/html"] = f'<div class="sftviz-error">{escape(error_message(err))}</div>'
    return data, meta


class SftvizWidget(anywidget.AnyWidget):
    """Base class: subclasses set ``_esm``/``_css`` and implement ``static_html`` and ``__repr__``."""

    error = traitlets.Unicode("").tag(sync=True)
    last_traceback = ""  # the traceback of the last error shown in the widget, for whoever looks

    def static_html(self) -> str:  # pragma: no cover - every subclass overrides
        """The widget as static HTML (what nbconvert, nbviewer and GitHub show instead of the live view)."""
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs: object) -> tuple[dict, dict]:
        parent = getattr(super(), "_repr_mimebundle_", None)  # absent with ipywidgets 7 and anywidget 0.9
        return with_static_view(self, parent(**kwargs) if parent is not None else None)

    def report_error(self, err: BaseException) -> None:
        """Show an exception in the widget (and keep the traceback for whoever looks)."""
        self.error = error_message(err)
        self.last_traceback = traceback.format_exc()
