"""A Jupyter kernel that starts warm: forked from a process that has already imported torch,
transformers and sftviz.

Every notebook a grader runs (``nbgrader autograde``), and every notebook nbval checks, starts a fresh
kernel, and each fresh kernel spends about 5 seconds importing torch and transformers before the
notebook's first line runs: with five notebooks per submission, that is a third of autograding a class.
This kernel removes it. Its launcher (this file, run by path so that it imports nothing heavy) asks a
*warm server* to fork a child; the child applies the launcher's environment, working folder and
arguments, and becomes an ordinary IPython kernel (``ipykernel``). Everything the notebook does then
runs in that child, as it would in a fresh kernel: nothing of one notebook reaches another.

- The server is started by the first launcher that finds none, and stops after ``IDLE_S`` seconds
  without a request. One server serves one environment: its socket's name is a hash of the Python
  executable and of the environment variables (the thread count, the CPU kernels, offline flags... are
  read at import), so a launcher with another environment gets another server.
- The server imports, and never runs, anything: no thread pool is started before the fork.
- The launcher stays alive as long as its kernel: Jupyter's interrupt and kill signals reach the launcher,
  which passes an interrupt on; when the launcher dies (killed), its kernel exits too.

Use it through ``python -m sftviz.warm_kernel install`` (a kernelspec named ``sftviz-warm`` in the
current environment) and ``--nbval-kernel-name sftviz-warm`` or nbgrader's ``c.Execute.kernel_name``;
``python -m sftviz.course nbgrader`` writes a configuration that uses it. It forks on Linux only;
elsewhere the launcher starts an ordinary kernel and the configuration uses python3.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]  # run by path: this package's modules must not shadow others (sftviz/datasets.py)

import hashlib
import json
import signal
import socket
import subprocess
import time

NAME = "sftviz-warm"
#: Where it forks: Linux (on macOS, forking a process that has loaded system frameworks is unsafe).
SUPPORTED = sys.platform.startswith("linux") and hasattr(os, "fork")
#: The server stops after this many seconds without a request.
IDLE_S = 300
#: What the server imports before it forks (modules every course notebook imports).
PRELOAD = (
    "torch", "transformers", "transformers.modeling_utils", "sftviz", "sftviz.exercises", "sftviz.widgets",
    "ipykernel.kernelapp", "ipykernel.ipkernel",
)  # fmt: skip
# Variables that differ between launches of the same environment and are read at run time, not import.
_VOLATILE = ("JPY_PARENT_PID", "JPY_SESSION_NAME", "PWD", "OLDPWD", "SHLVL", "_")


def _code_stamp() -> list:
    """What the server's imports were read from: this package's sources and the installed packages (a
    server started before an edit or an install would run stale code)."""
    here = os.path.dirname(os.path.abspath(__file__))
    stamp = [os.stat(os.path.dirname(os.__file__)).st_mtime_ns]
    for folder, _, files in os.walk(here):
        stamp += [
            (os.path.join(folder, f), os.stat(os.path.join(folder, f)).st_mtime_ns) for f in files if f.endswith(".py")
        ]
    for entry in sys.path:
        if entry.endswith("site-packages") and os.path.isdir(entry):
            stamp.append((entry, os.stat(entry).st_mtime_ns))
    return stamp


def _key(env: dict) -> str:
    stable = sorted((k, v) for k, v in env.items() if k not in _VOLATILE and not k.startswith("PYTEST_"))
    text = json.dumps([sys.executable, sys.version, stable, _code_stamp()])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _private_folder() -> str:
    """A folder only this user can use (the socket passes the environment and the terminal's files)."""
    folder = os.environ.get("XDG_RUNTIME_DIR") or os.path.join("/tmp", f"sftviz-warm-{os.getuid()}")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    st = os.lstat(folder)
    if st.st_uid != os.getuid() or st.st_mode & 0o077 or not os.path.isdir(folder) or os.path.islink(folder):
        raise PermissionError(f"{folder} must be a folder of this user's that nobody else can open (mode 700).")
    return folder


def socket_path(env: dict | None = None) -> str:
    """The warm server's socket for an environment (default: this process's)."""
    return os.path.join(_private_folder(), f"sftviz-warm-{_key(dict(os.environ if env is None else env))}.sock")


# -- the launcher (Jupyter's kernel command) ----------------------------------------------------------


def _connect(path: str, timeout: float) -> socket.socket | None:
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)


def _start_server(path: str) -> socket.socket:
    """Start the warm server for ``path`` unless one answers; return a connection to it."""
    import fcntl

    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one server per socket, even when launchers start together
        conn = _connect(path, 0)
        if conn is not None:
            return conn
        code = f"import sftviz.warm_kernel as w; w.serve({path!r})"
        env = {k: v for k, v in os.environ.items() if k != "JPY_PARENT_PID"}  # read by ipykernel at import
        with open(path + ".log", "ab") as log:
            server = subprocess.Popen(
                [sys.executable, "-c", code], env=env, start_new_session=True, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=log, close_fds=True,
            )  # fmt: skip
        deadline = time.monotonic() + 300
        while (conn := _connect(path, 0.5)) is None:
            if server.poll() is not None or time.monotonic() > deadline:
                with open(path + ".log", errors="replace") as log:
                    raise RuntimeError(f"the warm kernel server did not start ({path}.log):\n{log.read()[-3000:]}")
        return conn


def launch(argv: list[str]) -> int:
    """Start a kernel with ipykernel's arguments ``argv`` (``-f CONNECTION_FILE``) in a forked child of the
    warm server; return when the kernel exits."""
    if not SUPPORTED:
        return subprocess.call([sys.executable, "-m", "ipykernel_launcher", *argv])
    path = socket_path()
    conn = _connect(path, 0) or _start_server(path)
    request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}
    socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [0, 1, 2])

    def forward(signum, frame):  # an interrupt from Jupyter goes on to the kernel
        try:
            conn.sendall(f"{signum}\n".encode())
        except OSError:
            pass

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    while True:  # the kernel holds the other end: it closes when the kernel exits
        try:
            if not conn.recv(64):
                return 0
        except InterruptedError:
            continue
        except OSError:
            return 1


# -- the server -----------------------------------------------------------------------------------------


def serve(path: str) -> None:
    """Import :data:`PRELOAD`, listen on ``path``, and fork a kernel for each launcher that connects."""
    import importlib

    if sys.path and sys.path[0] == "":
        del sys.path[0]  # as ipykernel's launcher does: the folder it was started from is no module source
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:  # an environment without it: the kernel imports what it needs itself
            pass
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # kernels are reaped by the system
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    with open(path + ".pid", "w") as f:
        f.write(str(os.getpid()))
    server.listen(16)
    server.settimeout(IDLE_S)
    try:
        while True:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                return
            try:
                msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
                while msg and not msg.endswith(b"\n"):
                    more = conn.recv(1 << 20)
                    if not more:
                        break
                    msg += more
                request = json.loads(msg)
            except (OSError, ValueError):
                conn.close()
                continue
            if len(fds) == 3 and os.fork() == 0:
                try:
                    server.close()
                    _become_kernel(conn, fds, request)
                finally:
                    os._exit(1)
            conn.close()
            for fd in fds:
                os.close(fd)
    finally:
        server.close()
        _clean(path)


def _become_kernel(conn: socket.socket, fds: list[int], request: dict) -> None:
    """In the forked child: take the launcher's stdio, environment and folder, then run ipykernel."""
    import threading

    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])  # IPython puts "" (the working folder) on sys.path, as in any kernel
        # parent_handle=1: no polling for a parent (ipykernel's value for that); the launcher's end of the
        # connection below does that job
        import importlib.util

        launcher = importlib.util.find_spec("ipykernel_launcher")
        sys.argv = [
            launcher.origin if launcher else "ipykernel_launcher",
            "--IPKernelApp.parent_handle=1",
            *request["argv"],
        ]

        def listen():  # interrupts from the launcher; its end closing means it is gone: so is the kernel
            buf = b""
            while True:
                try:
                    data = conn.recv(64)
                except OSError:
                    data = b""
                if not data:
                    os._exit(1)
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    os.kill(os.getpid(), int(line) if int(line) == signal.SIGINT else signal.SIGTERM)

        threading.Thread(target=listen, daemon=True).start()
        from ipykernel import kernelapp

        kernelapp.launch_new_instance()
    except SystemExit as exit:
        os._exit(exit.code if isinstance(exit.code, int) else 0)
    except BaseException:  # noqa: BLE001 (whatever happens, the child must not return into the server)
        import traceback

        traceback.print_exc()
        os._exit(1)
    os._exit(0)


# -- the kernelspec ---------------------------------------------------------------------------------------


def kernel_spec() -> dict:
    """The kernelspec (``kernel.json``) of the warm kernel for this environment."""
    return {
        "argv": [sys.executable, os.path.abspath(__file__), "-f", "{connection_file}"],
        "display_name": "Python 3 (sftviz, warm start)",
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {"debugger": False},
    }


def install(prefix: str | None = None) -> str:
    """Write the kernelspec into ``prefix``'s ``share/jupyter/kernels/sftviz-warm`` (default: this
    environment's); returns the folder."""
    folder = os.path.join(prefix or sys.prefix, "share", "jupyter", "kernels", NAME)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "kernel.json"), "w") as f:
        json.dump(kernel_spec(), f, indent=1)
    return folder


def installed_name() -> str:
    """``"sftviz-warm"`` where its kernelspec is installed where Jupyter looks, else ``"python3"``: the
    kernel to give papermill or nbval for whole notebooks."""
    from jupyter_client.kernelspec import find_kernel_specs

    return NAME if SUPPORTED and NAME in find_kernel_specs() else "python3"


def for_nbgrader(folder: str | os.PathLike) -> str:
    """For an nbgrader configuration: write the kernelspec under ``folder``, put it on Jupyter's path
    (``JUPYTER_PATH``) and return the kernel name to set as ``c.Execute.kernel_name`` (``"python3"``
    where there is no ``fork``)."""
    if not SUPPORTED:
        return "python3"
    install(os.fspath(folder))
    data = os.path.join(os.fspath(folder), "share", "jupyter")
    paths = [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p and p != data]
    os.environ["JUPYTER_PATH"] = os.pathsep.join([data, *paths])
    return NAME


def stop(env: dict | None = None) -> int:
    """Stop this user's warm servers, or only the one for the environment ``env`` (their kernels go on);
    returns how many were running."""
    import glob

    n = 0
    pattern = "sftviz-warm-*.sock" if env is None else os.path.basename(socket_path(env))
    for pidfile in glob.glob(os.path.join(_private_folder(), pattern + ".pid")):
        try:
            with open(pidfile) as f:
                os.kill(int(f.read()), signal.SIGTERM)
            n += 1
        except (OSError, ValueError):
            pass
        _clean(pidfile[: -len(".pid")])
    return n


def _clean(path: str) -> None:
    """Remove a server's socket and its files (its log only when empty)."""
    for leftover in (path, path + ".pid", path + ".lock", path + ".log"):
        try:
            if not leftover.endswith(".log") or os.path.getsize(leftover) == 0:
                os.unlink(leftover)
        except FileNotFoundError:
            pass


USAGE = f"""usage: python -m sftviz.warm_kernel install [PREFIX]   the {NAME} kernelspec into PREFIX (default: this environment)
       python -m sftviz.warm_kernel stop               stop this user's warm servers
       (Jupyter runs it as a kernel: warm_kernel.py -f CONNECTION_FILE)"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["install"] and len(argv) <= 2:
        print(f"installed the {NAME} kernel in {install(argv[1] if len(argv) > 1 else None)}")
        return 0
    if argv == ["stop"]:
        print(f"stopped {stop()} warm server(s)")
        return 0
    if not argv or argv[0] in ("-h", "--help") or "-f" not in argv:
        print(USAGE, file=sys.stderr if argv[:1] not in (["-h"], ["--help"]) else sys.stdout)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    return launch(argv)


if __name__ == "__main__":
    sys.exit(main())
