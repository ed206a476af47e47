"""Fixtures for the browser tests: a real JupyterLab and headless Chromium, driven by Python playwright.

What they guarantee:
- JupyterLab runs on 127.0.0.1 on a free port with a random token, from fresh temporary runtime,
  config, data, settings, workspace and IPython folders (no restored tabs, no news pop-up, our own
  ``python3`` kernelspec pointing at this interpreter, ``HF_HUB_OFFLINE=1``), in its own process
  group. It is shut down (API, then SIGTERM/SIGKILL of its group and of every process it started,
  kernels included) by a finalizer, also when a test fails.
- Chromium is the system one (``SFTVIZ_CHROMIUM``, ``chromium`` on PATH, or /usr/bin/chromium),
  launched headless with a fresh profile; ``playwright install`` is never needed.
- No Chromium (or no playwright) on a developer's machine: the tests skip and say why. Under CI
  (``CI`` set and not false/0) that is a failure instead.
- Every wait polls with a timeout and a message naming what was awaited; all waits together stay
  within a budget (``SFTVIZ_BROWSER_BUDGET_S``, default 170 s) so the module ends in 3 minutes.
- A failing test leaves ``FAILED-<test>.png`` (and ``jupyterlab.log``) in the screenshots folder:
  ``SFTVIZ_SCREENSHOTS``, default ``artifacts/browser/`` under the repository root.
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
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "widgets_e2e.ipynb"
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

# The test notebook is opened by the browser test, not collected by nbval (scripts/test.sh passes --nbval).
collect_ignore_glob = ["*.ipynb"]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "browser: runs the widgets in JupyterLab in headless Chromium (deselect: -m 'not browser')")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def find_chromium():
    """The Chromium executable to use, or None: $SFTVIZ_CHROMIUM, `chromium` on PATH, /usr/bin/chromium."""
    for cand in (os.environ.get("SFTVIZ_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def screenshots_dir() -> Path:
    d = Path(os.environ.get("SFTVIZ_SCREENSHOTS") or ROOT / "artifacts" / "browser")
    d.mkdir(parents=True, exist_ok=True)
    return d


def skip_or_fail(reason: str):
    if in_ci():
        pytest.fail(f"{reason} [CI is set, so the browser tests must run, not skip]", pytrace=False)
    pytest.skip(reason)


class Budget:
    """All waits of the module share one time budget, so a hang fails in bounded time."""

    def __init__(self, seconds: float, env: str = "SFTVIZ_BROWSER_BUDGET_S"):
        self.seconds = seconds
        self.env = env  # the variable that sets it, named in timeout messages
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def timeout(self, wanted: float, what: str) -> float:
        left = self.left()
        if left <= 0:
            raise AssertionError(f"{what}: the browser tests used up their {self.seconds:.0f} s budget "
                                 f"({self.env}) before this wait began")
        return min(wanted, left)


def _no_proxy_opener():
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 40) -> str:
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
    """A JupyterLab server in a temporary folder; ``stop()`` ends it and everything it started."""

    def __init__(self, tmp: Path, budget: Budget):
        self.tmp = tmp
        self.budget = budget
        self.root = tmp / "root"
        self.root.mkdir()
        self.log_path = tmp / "jupyterlab.log"
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
            (self.tmp / name).mkdir()
            env[var] = str(self.tmp / name)
        settings = self.tmp / "settings" / "@jupyterlab"
        for rel, value in {
            # no news / update pop-up covering the page
            "apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
            # every cell stays in the DOM (no virtual scrolling of the notebook)
            "notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
            # the temporary copy is never written back
            "docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
        }.items():
            f = settings / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(value))
        # Our own python3 kernelspec (the user data dir comes before system ones): this interpreter.
        spec = self.tmp / "data" / "kernels" / "python3"
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
            "metadata": {"debugger": False},
        }))
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
        return env

    def _cmd(self, port: int) -> list:
        cmd = [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}", "--LabApp.expose_app_in_browser=True",
            "--ServerApp.terminals_enabled=False",
            # safety nets should this test process be killed before its finalizers run
            "--MappingKernelManager.cull_idle_timeout=900", "--ServerApp.shutdown_no_activity_timeout=900",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        return cmd

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _get(self, path: str, timeout: float = 2.0, method: str = "GET"):
        req = urllib.request.Request(f"{self.url}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with _no_proxy_opener().open(req, timeout=timeout) as r:
            return r.read()

    def start(self, attempts: int = 3):
        env = self._env()
        for attempt in range(attempts):
            self.port = _free_port()
            log = open(self.log_path, "a")
            self.proc = subprocess.Popen(self._cmd(self.port), env=env, cwd=str(self.root), stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            log.close()
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
                raise AssertionError(f"JupyterLab did not answer on {self.url} within its start timeout; "
                                     f"log tail:\n{_tail(self.log_path)}")
            text = _tail(self.log_path)
            if "already in use" not in text and "Errno 98" not in text:
                break  # not a port clash: retrying will not help
        raise AssertionError(f"JupyterLab exited with code {self.proc.returncode} while starting; log tail:\n"
                             f"{_tail(self.log_path)}")

    def remember_children(self):
        if self.proc is not None and self.proc.poll() is None:
            seen = {p.pid for p in self._known}
            self._known += [p for p in _descendants(self.proc.pid) if p.pid not in seen]

    def stop(self):
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


# --------------------------------------------------------------------------------------------
# The notebook page
# --------------------------------------------------------------------------------------------


class NotebookPage:
    """The test notebook open in JupyterLab, with polling helpers that fail with clear messages."""

    def __init__(self, page, lab: Lab, budget: Budget, shots: Path):
        self.page = page
        self.lab = lab
        self.budget = budget
        self.shots = shots
        self.expected = None
        self.page_errors = []

    # -- waiting -----------------------------------------------------------------------------

    def poll(self, what: str, fn, timeout: float = 30, interval: float = 0.1):
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
            detail += f"; cut short by the {self.budget.seconds:.0f} s budget of the browser tests ({self.budget.env})"
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

    def open_notebook(self, name: str):
        """Open ``name`` (in the Lab's root) with a fresh workspace, wait for its kernel, run all cells."""
        self.page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        self.page.on("dialog", lambda d: d.dismiss())
        self.page.goto(f"{self.lab.url}/lab/tree/{name}?reset&token={self.lab.token}", wait_until="domcontentloaded",
                       timeout=self.budget.timeout(60, "loading JupyterLab in Chromium") * 1000)
        self.wait_js(
            f"{name}: the kernel to connect (window.jupyterapp, expose_app_in_browser)",
            """() => { const app = window.jupyterapp; const w = app && app.shell && app.shell.currentWidget;
              const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
              return !!(k && k.connectionStatus === 'connected'); }""", timeout=90)
        self.lab.remember_children()
        self.js("() => window.jupyterapp.shell.collapseLeft()")  # the file browser only narrows the notebook
        self.js("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

    def open_and_run(self, name: str):
        self.open_notebook(name)

        def ready():
            errs = self.js("""() => [...document.querySelectorAll(
                '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]')].map(e => e.textContent)""")
            if errs:
                raise AssertionError("a cell of the test notebook raised:\n" + "\n".join(errs)[-3000:])
            return "SFTVIZ_E2E_READY" in self.stdout()

        self.poll("all cells of the notebook to run (the last one prints SFTVIZ_E2E_READY)", ready, timeout=120)
        raw = self.marker("SFTVIZ_E2E_EXPECTED")
        assert raw, "the notebook did not print SFTVIZ_E2E_EXPECTED"
        self.expected = json.loads(raw)
        self.lab.remember_children()
        # The widget views render asynchronously after their outputs arrive.
        self.wait_js("the TokenView to render all its tokens",
                     "n => document.querySelectorAll(\".sftviz-tokenview .sftviz-tok[data-sftviz-role='token']\").length === n",
                     self.expected["n"])
        self.wait_js("the LogProbExplorer to show the identity",
                     "() => !!document.querySelector(\".sftviz-lpx [data-sftviz-sum='joint']\")")
        self.wait_js("the MaskingLab to render its plot and Run button",
                     """() => !!document.querySelector('.sftviz-masking-lab .js-plotly-plot') &&
                        [...document.querySelectorAll('.sftviz-masking-lab button')].some(b => b.textContent.trim() === 'Run')""")
        return self


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium_path():
    path = find_chromium()
    if path is None:
        skip_or_fail("Chromium not found (looked at $SFTVIZ_CHROMIUM, `chromium` on PATH, /usr/bin/chromium); "
                     "install it with scripts/install_browser.sh")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        skip_or_fail("the Python package playwright is not installed (pip install playwright; never `playwright install`)")
    return path


@pytest.fixture(scope="module")
def budget():
    return Budget(float(os.environ.get("SFTVIZ_BROWSER_BUDGET_S", "170")))


@pytest.fixture(scope="module")
def shots_dir():
    d = screenshots_dir()
    for old in [*d.glob("FAILED-*.png"), d / "jupyterlab.log"]:  # left by an earlier run
        old.unlink(missing_ok=True)
    return d


@pytest.fixture(scope="module")
def jupyter_lab(request, chromium_path, budget, shots_dir):
    tmp = Path(tempfile.mkdtemp(prefix="sftviz-e2e-lab-"))
    lab = Lab(tmp, budget)
    failed_before = request.session.testsfailed

    def finish():
        try:
            lab.stop()
        finally:
            if request.session.testsfailed > failed_before and lab.log_path.exists():
                shutil.copy(lab.log_path, shots_dir / "jupyterlab.log")
            shutil.rmtree(tmp, ignore_errors=True)

    request.addfinalizer(finish)
    lab.start()
    shutil.copy(NOTEBOOK, lab.root / NOTEBOOK.name)
    return lab


@pytest.fixture(scope="module")
def browser_context(request, chromium_path):
    from playwright.sync_api import sync_playwright

    profile = Path(tempfile.mkdtemp(prefix="sftviz-e2e-chromium-"))
    pw = sync_playwright().start()
    ctx = None

    def finish():
        try:
            if ctx is not None:
                ctx.close()
        except Exception:
            pass
        finally:
            pw.stop()  # also ends the browser process if close() did not
            shutil.rmtree(profile, ignore_errors=True)

    request.addfinalizer(finish)
    ctx = pw.chromium.launch_persistent_context(
        str(profile), executable_path=chromium_path, headless=True, args=CHROMIUM_FLAGS, viewport=VIEWPORT,
        device_scale_factor=1,
    )
    ctx.set_default_timeout(20_000)
    return ctx


@pytest.fixture(scope="module")
def nb(jupyter_lab, browser_context, budget, shots_dir):
    page = browser_context.pages[0] if browser_context.pages else browser_context.new_page()
    view = NotebookPage(page, jupyter_lab, budget, shots_dir)
    try:
        return view.open_and_run(NOTEBOOK.name)
    except BaseException:
        try:
            page.screenshot(path=str(shots_dir / "FAILED-setup.png"))
        except Exception:
            pass
        raise


@pytest.fixture(autouse=True)
def _screenshot_on_failure(request):
    yield
    rep = getattr(request.node, "rep_call", None)
    view = request.node.funcargs.get("nb") if hasattr(request.node, "funcargs") else None
    if rep is not None and rep.failed and isinstance(view, NotebookPage):
        try:
            view.page.screenshot(path=str(view.shots / f"FAILED-{request.node.name}.png"))
        except Exception:
            pass
