"""One harness for driving notebooks in a real JupyterLab with headless Chromium (Python playwright).

Used by the browser tests (``tests/browser/conftest.py`` wraps these in pytest fixtures) and by the
by-hand widget check ``scripts/check_widgets_browser.py`` (which puts this folder on ``sys.path``).
Plain functions and classes: no pytest here, so a script can use it as it is.

- :class:`Lab`: JupyterLab on 127.0.0.1, a free port (or a given one), a random token, fresh
  temporary runtime, config, data, settings, workspace and IPython folders (no restored tabs, no
  news pop-up, every cell kept in the DOM, no autosave, our own ``python3`` kernelspec pointing at
  this interpreter, ``HF_HUB_OFFLINE=1``, the repository first on ``PYTHONPATH``), in its own
  process group. :meth:`Lab.close` ends it (API, then SIGTERM/SIGKILL of its group and of every
  process it started, kernels included) and removes its folders; use it in a ``finally``, a pytest
  finalizer, or ``with Lab(budget) as lab:``.
- :class:`Chromium`: the system Chromium (:func:`find_chromium`), headless, fresh profile, the same
  flags everywhere (:data:`CHROMIUM_FLAGS`); ``playwright install`` is never needed.
  :func:`browser_missing` says why the browser cannot run (no Chromium, no playwright), or None.
- :class:`Budget`: all waits share one time budget, so a hang fails in bounded time.
- :class:`NotebookPage`: a notebook open in the Lab: :meth:`~NotebookPage.open_notebook` (fresh
  workspace, wait for the kernel, run all cells), :meth:`~NotebookPage.wait_cells_run`, and polling
  helpers whose timeouts name what was awaited.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 1000}

# Settings of the fresh JupyterLab (relative to its @jupyterlab settings folder).
LAB_SETTINGS = {
    # no news / update pop-up covering the page
    "apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    # every cell stays in the DOM (no virtual scrolling of the notebook)
    "notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    # the temporary copy is never written back
    "docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}

# The state of the current notebook's cells, read from JupyterLab's model (not from the DOM).
CELLS_RUN = """() => {
  const app = window.jupyterapp; const w = app && app.shell && app.shell.currentWidget;
  const model = w && w.content && w.content.model;
  const kernel = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  if (!model || !kernel) return null;
  const out = {idle: kernel.status === 'idle', code: 0, waiting: 0, errors: []};
  for (let i = 0; i < model.cells.length; i++) {
    const c = model.cells.get(i);
    if (c.type !== 'code') continue;
    out.code++;
    if (c.executionCount === null) out.waiting++;
    for (let j = 0; j < c.outputs.length; j++) {
      const o = c.outputs.get(j);
      if (o.type === 'error') { const d = o.toJSON(); out.errors.push(`cell ${i}: ${d.ename}: ${d.evalue}`); }
    }
  }
  return out;
}"""

# Contrast of every visible text of a view against what is behind it, as WCAG 2 defines it. axe gives up
# on text over gradients (the hatched masked tokens) and over tints, so this computes it: the text colour
# over every colour behind it (each colour of a gradient counts: the text must be readable on each), with
# semi-transparent layers blended, down to the first opaque background.
CONTRAST = r"""root => {
  const num = s => s.endsWith('%') ? parseFloat(s) / 100 : parseFloat(s);
  function parse(c) {  // rgb(), rgba() and color(srgb ...) (color-mix's computed form)
    let m = c.match(/^rgba?\(([^)]+)\)$/);
    if (m) { const p = m[1].split(/[ ,\/]+/).filter(Boolean).map(num); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; }
    m = c.match(/^color\(srgb ([^)]+)\)$/);
    if (m) { const p = m[1].split(/[ \/]+/).filter(Boolean).map(num); return [p[0] * 255, p[1] * 255, p[2] * 255, p.length > 3 ? p[3] : 1]; }
    return null;
  }
  const colours = s => (s.match(/(rgba?\([^)]*\)|color\(srgb [^)]*\))/g) || []).map(parse).filter(Boolean);
  const over = (top, below) => { const a = top[3]; return [0, 1, 2].map(i => top[i] * a + below[i] * (1 - a)).concat([1]); };
  const lum = c => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
                     return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); };
  const ratio = (a, b) => { const x = lum(a), y = lum(b); return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05); };
  function backgrounds(el) {  // every colour that can be behind el's text
    const layers = [];
    for (let n = el; n && n.nodeType === 1; n = n.parentElement) {
      const cs = getComputedStyle(n);
      const g = colours(cs.backgroundImage);
      if (g.length) layers.push(g);
      const bg = parse(cs.backgroundColor);
      if (bg && bg[3] > 0) { layers.push([bg]); if (bg[3] >= 1) break; }
    }
    let base = [[255, 255, 255, 1]];
    for (let i = layers.length - 1; i >= 0; i--) base = layers[i].flatMap(c => base.map(b => over(c, b)));
    return base;
  }
  const out = [];
  const seen = new Set();
  for (const node of root.querySelectorAll('*')) {
    const own = [...node.childNodes].some(t => t.nodeType === 3 && t.textContent.trim());
    if (!own || seen.has(node)) continue;
    seen.add(node);
    const r = node.getBoundingClientRect();
    const cs = getComputedStyle(node);
    if (r.width <= 1 || r.height <= 1 || cs.visibility === 'hidden' || node.closest('.sftviz-hidden, .sftviz-sr-only, .sftviz-tip')) continue;
    if (node.closest(':disabled, [aria-disabled="true"], .mod-disabled')) continue;  // inactive controls: exempt
    let opacity = 1;
    for (let n = node; n && n.nodeType === 1; n = n.parentElement) opacity *= parseFloat(getComputedStyle(n).opacity);
    if (opacity < 0.99) continue;  // a stale view while the kernel works; not a resting state
    const svg = node instanceof SVGElement;
    const fg = parse(svg ? cs.fill : cs.color);
    if (!fg) continue;
    const size = parseFloat(cs.fontSize), bold = parseInt(cs.fontWeight, 10) >= 700;
    const need = size >= 24 || (size >= 18.66 && bold) ? 3 : 4.5;
    const worst = Math.min(...backgrounds(node).map(b => ratio(over(fg, b), b)));
    out.push({text: node.textContent.trim().slice(0, 40), cls: String(node.className.baseVal ?? node.className).slice(0, 60),
              ratio: Math.round(worst * 100) / 100, need});
  }
  return out;
}"""

# Run All in the current notebook; settles with 'done' when its last cell has run, or 'timeout' after ms.
RUN_ALL = """ms => Promise.race([
  window.jupyterapp.commands.execute('notebook:run-all-cells').then(() => 'done'),
  new Promise(resolve => setTimeout(() => resolve('timeout'), ms)),
])"""


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def in_ci() -> bool:
    """True under CI (``CI`` set and not empty/0/false/no): there the browser checks must run, not skip."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def find_chromium() -> str | None:
    """The Chromium executable to use, or None: $SFTVIZ_CHROMIUM, `chromium` on PATH, /usr/bin/chromium."""
    for cand in (os.environ.get("SFTVIZ_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def browser_missing(chromium: str | None) -> str | None:
    """Why the browser cannot run (no Chromium at ``chromium``, no playwright), or None when it can."""
    if chromium is None:
        return (
            "Chromium not found (looked at $SFTVIZ_CHROMIUM, `chromium` on PATH, /usr/bin/chromium); "
            "install it with scripts/install_browser.sh"
        )
    if not (os.path.isfile(chromium) and os.access(chromium, os.X_OK)):
        return f"Chromium not found: {chromium} is not an executable file"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (pip install playwright; never `playwright install`)"
    return None


def screenshots_dir() -> Path:
    """``$SFTVIZ_SCREENSHOTS``, default ``artifacts/browser/`` under the repository root (created)."""
    d = Path(os.environ.get("SFTVIZ_SCREENSHOTS") or ROOT / "artifacts" / "browser")
    d.mkdir(parents=True, exist_ok=True)
    return d


class Budget:
    """All waits of a run share one time budget, so a hang fails in bounded time."""

    def __init__(self, seconds: float, env: str = "SFTVIZ_BROWSER_BUDGET_S"):
        self.seconds = seconds
        self.env = env  # the variable that sets it, named in timeout messages
        self.start = time.monotonic()

    @classmethod
    def from_env(cls, env: str, default: float) -> Budget:
        return cls(float(os.environ.get(env, str(default))), env)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def timeout(self, wanted: float, what: str) -> float:
        left = self.left()
        if left <= 0:
            raise AssertionError(
                f"{what}: the browser checks used up their {self.seconds:.0f} s budget "
                f"({self.env}) before this wait began"
            )
        return min(wanted, left)


def _no_proxy_opener():
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _descendants(pid: int) -> list:
    """psutil.Process objects for every process below ``pid`` (kernels run in their own session)."""
    try:
        import psutil

        return psutil.Process(pid).children(recursive=True)
    except Exception:
        return []


# --------------------------------------------------------------------------------------------
# JupyterLab
# --------------------------------------------------------------------------------------------


class Lab:
    """A JupyterLab server in a temporary folder; ``close()`` ends it and everything it started.

    Notebooks go into ``root`` (:meth:`add_notebook`, or write them there); the server's output goes
    to ``log_path``. ``tmp`` defaults to a fresh temporary folder that ``close()`` removes.
    """

    def __init__(self, budget: Budget, tmp: Path | None = None):
        self.budget = budget
        self._own_tmp = tmp is None
        self.tmp = Path(tempfile.mkdtemp(prefix="sftviz-e2e-lab-")) if tmp is None else Path(tmp)
        self.root = self.tmp / "root"
        self.root.mkdir()
        self.log_path = self.tmp / "jupyterlab.log"
        self.token = secrets.token_hex(16)
        self.port = None
        self.proc = None
        self._known = []  # psutil.Process of kernels etc., gathered while Lab is alive

    def _env(self) -> dict:
        env = dict(os.environ)
        dirs = {
            "JUPYTER_RUNTIME_DIR": "runtime",
            "JUPYTER_CONFIG_DIR": "config",
            "JUPYTER_DATA_DIR": "data",
            "JUPYTERLAB_SETTINGS_DIR": "settings",
            "JUPYTERLAB_WORKSPACES_DIR": "workspaces",
            "IPYTHONDIR": "ipython",
        }
        for var, name in dirs.items():
            (self.tmp / name).mkdir(exist_ok=True)
            env[var] = str(self.tmp / name)
        settings = self.tmp / "settings" / "@jupyterlab"
        for rel, value in LAB_SETTINGS.items():
            f = settings / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(value))
        # Our own python3 kernelspec (the user data dir comes before system ones): this interpreter.
        spec = self.tmp / "data" / "kernels" / "python3"
        spec.mkdir(parents=True, exist_ok=True)
        (spec / "kernel.json").write_text(
            json.dumps(
                {
                    "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    "display_name": "Python 3 (ipykernel)",
                    "language": "python",
                    "metadata": {"debugger": False},
                }
            )
        )
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
        return env

    def _cmd(self, port: int) -> list:
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--LabApp.expose_app_in_browser=True",
            "--ServerApp.terminals_enabled=False",
            # safety nets should the driving process be killed before it can close the Lab
            "--MappingKernelManager.cull_idle_timeout=900",
            "--ServerApp.shutdown_no_activity_timeout=900",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        return cmd

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _get(self, path: str, timeout: float = 2.0, method: str = "GET"):
        req = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with _no_proxy_opener().open(req, timeout=timeout) as r:
            return r.read()

    def add_notebook(self, path: Path) -> str:
        """Copy the notebook at ``path`` into the Lab's root; returns its name there."""
        shutil.copy(path, self.root / Path(path).name)
        return Path(path).name

    def start(self, attempts: int = 3, port: int | None = None) -> Lab:
        """Start the server and wait until it answers. A free port is picked (and picked again after a
        port clash) unless ``port`` is given."""
        env = self._env()
        if port is not None:
            attempts = 1
        for _ in range(attempts):
            self.port = port or free_port()
            with open(self.log_path, "a") as log:  # the server keeps its own copy of the file descriptor
                self.proc = subprocess.Popen(
                    self._cmd(self.port),
                    env=env,
                    cwd=str(self.root),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            deadline = time.monotonic() + self.budget.timeout(90, "starting JupyterLab")
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    self._get("/api/status", timeout=1)
                    return self
                except Exception:
                    time.sleep(0.3)
            if self.proc.poll() is None:  # still starting after the wait: give up
                self.stop()
                raise AssertionError(
                    f"JupyterLab did not answer on {self.url} within its start timeout; "
                    f"log tail:\n{tail(self.log_path)}"
                )
            text = tail(self.log_path)
            if "already in use" not in text and "Errno 98" not in text:
                break  # not a port clash: retrying will not help
        raise AssertionError(
            f"JupyterLab exited with code {self.proc.returncode} while starting; log tail:\n{tail(self.log_path)}"
        )

    def remember_children(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            seen = {p.pid for p in self._known}
            self._known += [p for p in _descendants(self.proc.pid) if p.pid not in seen]

    def stop(self) -> None:
        """End the server, its process group and every process it started (kernels included)."""
        if self.proc is None:
            return
        self.remember_children()
        if self.proc.poll() is None:
            try:  # graceful: the server shuts its kernels down
                self._get("/api/shutdown", timeout=3, method="POST")
            except Exception:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)  # Lab's own process group (start_new_session)
            except (ProcessLookupError, PermissionError):
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything left in the group
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        # Kernels run in sessions of their own: end each one Lab started, by its pid (psutil checks
        # it is still the same process).
        for p in self._known:
            try:
                if p.is_running():
                    p.terminate()
            except Exception:
                pass
        for p in self._known:
            try:
                p.wait(5)
            except Exception:
                try:
                    p.kill()
                except Exception:
                    pass
        self.proc = None

    def close(self, keep_log: Path | None = None) -> None:
        """``stop()``, then copy the server's log to ``keep_log`` (if given) and remove the temporary folder."""
        try:
            self.stop()
        finally:
            if keep_log is not None and self.log_path.exists():
                shutil.copy(self.log_path, keep_log)
            if self._own_tmp:
                shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Lab:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Chromium
# --------------------------------------------------------------------------------------------


class Chromium:
    """Headless system Chromium with a fresh profile, driven by Python playwright.

    ``start()`` returns the playwright ``BrowserContext``; ``close()`` ends the browser and removes
    the profile (also when the context never opened).
    """

    def __init__(self, executable: str, viewport: dict | None = None, default_timeout_ms: int = 20_000):
        self.executable = executable
        self.viewport = dict(viewport or VIEWPORT)
        self.default_timeout_ms = default_timeout_ms
        self.profile = None
        self.context = None
        self._pw = None

    def start(self):
        from playwright.sync_api import sync_playwright

        self.profile = Path(tempfile.mkdtemp(prefix="sftviz-e2e-chromium-"))
        self._pw = sync_playwright().start()
        self.context = self._pw.chromium.launch_persistent_context(
            str(self.profile),
            executable_path=self.executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport=self.viewport,
            device_scale_factor=1,
        )
        self.context.set_default_timeout(self.default_timeout_ms)
        return self.context

    def page(self):
        """The context's first page (a persistent context opens one), or a new one."""
        return self.context.pages[0] if self.context.pages else self.context.new_page()

    def close(self) -> None:
        try:
            if self.context is not None:
                self.context.close()
        except Exception:
            pass
        finally:
            self.context = None
            if self._pw is not None:
                self._pw.stop()  # also ends the browser process if close() did not
                self._pw = None
            if self.profile is not None:
                shutil.rmtree(self.profile, ignore_errors=True)
                self.profile = None

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# A notebook page
# --------------------------------------------------------------------------------------------


class NotebookPage:
    """A notebook open in JupyterLab, with polling helpers that fail with clear messages.

    ``page_errors`` collects the page's JavaScript errors, ``dialogs`` the messages of the dialogs it
    opened (each one is dismissed).
    """

    def __init__(self, page, lab: Lab, budget: Budget, shots: Path):
        self.page = page
        self.lab = lab
        self.budget = budget
        self.shots = shots
        self.expected = None
        self.page_errors = []
        self.dialogs = []

    # -- waiting -----------------------------------------------------------------------------

    def poll(self, what: str, fn: Callable[[], Any], timeout: float = 30, interval: float = 0.1):
        """Call ``fn()`` until it returns a truthy value (returned); else fail naming ``what``."""
        limit = self.budget.timeout(timeout, what)
        deadline = time.monotonic() + limit
        last, last_err = None, None
        while True:
            try:
                last = fn()
                last_err = None
                if last:
                    return last
            except AssertionError:
                raise
            except Exception as err:  # e.g. an element re-rendered while it was read
                last_err = err
            if time.monotonic() >= deadline:
                break
            self.page.wait_for_timeout(int(interval * 1000))
        detail = f"last error: {last_err!r}" if last_err is not None else f"last value: {last!r}"
        if limit < timeout:
            detail += f"; cut short by the {self.budget.seconds:.0f} s budget of the browser checks ({self.budget.env})"
        raise AssertionError(f"timed out after {limit:.0f} s waiting for: {what} ({detail})")

    def js(self, expr: str, arg=None):
        return self.page.evaluate(expr, arg)

    def wait_js(self, what: str, expr: str, arg=None, timeout: float = 30):
        return self.poll(what, lambda: self.js(expr, arg), timeout)

    # -- locating ----------------------------------------------------------------------------

    def output(self, css: str):
        """The output element (of its cell) that holds the widget matching ``css``."""
        return self.page.locator(f".jp-OutputArea-output:has({css})").first

    def stdout(self) -> str:
        return self.js("""() => [...document.querySelectorAll(
            '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stdout"]')]
            .map(e => e.textContent).join('\\n')""")

    def error_outputs(self) -> str:
        return self.js("""() => [...document.querySelectorAll(
            '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"],
             .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
            .map(e => e.textContent).join('\\n')""")

    def marker(self, name: str):
        m = re.search(rf"^{re.escape(name)} (.*)$", self.stdout(), re.M)
        return m.group(1) if m else None

    def screenshot(self, locator, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.mouse.move(1, 1)  # no hover tooltip over the widget
        locator.scroll_into_view_if_needed()
        self.page.wait_for_timeout(250)  # let the inner scroll area settle
        locator.screenshot(path=str(path), animations="disabled")
        return path

    # -- opening and running -----------------------------------------------------------------

    def open_notebook(self, name: str) -> None:
        """Open ``name`` (in the Lab's root) with a fresh workspace, wait for its kernel, run all cells.

        Returns when Run All has finished (widget views may still be rendering), or fails when that takes
        longer than what is left of the budget."""
        self.page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        self.page.on("dialog", self._dismiss)
        self.page.goto(
            f"{self.lab.url}/lab/tree/{name}?reset&token={self.lab.token}",
            wait_until="domcontentloaded",
            timeout=self.budget.timeout(60, "loading JupyterLab in Chromium") * 1000,
        )
        self.wait_js(
            f"{name}: the kernel to connect (window.jupyterapp, expose_app_in_browser)",
            """() => { const app = window.jupyterapp; const w = app && app.shell && app.shell.currentWidget;
              const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
              return !!(k && k.connectionStatus === 'connected'); }""",
            timeout=90,
        )
        self.lab.remember_children()
        self.js("() => window.jupyterapp.shell.collapseLeft()")  # the file browser only narrows the notebook
        # Run All's promise settles when the last cell has run: wait for it, but only as long as the budget
        # allows (evaluate() itself has no timeout, so the page's own timer bounds the wait).
        what = f"{name}: Run All to finish"
        limit = self.budget.timeout(float("inf"), what)
        if self.js(RUN_ALL, min(int(limit * 1000), 2**31 - 1)) != "done":
            raise AssertionError(
                f"timed out after {limit:.0f} s waiting for: {what} (what was left of the "
                f"{self.budget.seconds:.0f} s budget of the browser checks, {self.budget.env})"
            )
        self.lab.remember_children()

    def _dismiss(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def wait_cells_run(self, timeout: float = 300, errors_fail: bool = False) -> dict:
        """Wait until every code cell has run and the kernel is idle; returns the cells' state
        (``errors``: one line per error output). With ``errors_fail``, an error output fails at once."""

        def done():
            state = self.js(CELLS_RUN)
            if errors_fail and state and state["errors"]:
                raise AssertionError("a cell raised:\n" + "\n".join(state["errors"])[-3000:])
            return state if state and state["idle"] and state["code"] and not state["waiting"] else None

        state = self.poll("every code cell to run and the kernel to be idle", done, timeout=timeout, interval=0.5)
        self.lab.remember_children()
        return state
