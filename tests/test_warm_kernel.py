"""The warm kernel (sftviz.warm_kernel): a notebook runs in it as in a fresh python3 kernel, with the
launcher's environment and folder, its interrupt and kill work, and nothing of one kernel reaches the next."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import nbformat
import pytest
from nbclient import NotebookClient

from sftviz import warm_kernel

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not warm_kernel.SUPPORTED, reason="the warm kernel forks on Linux only"),
]

CELLS = [
    # warm: imported already; nothing of the notebook run before (the last cell) in either
    "import os, sys\nprint('torch' in sys.modules, 'transformers' in sys.modules, 'leaked' in globals())",
    "print(os.getcwd(), sys.path, sys.argv[0], os.environ['SFTVIZ_TEST_MARK'])",
    "import sftviz as sv\nmodel, tok = sv.load_model()\nrep = sv.score(model, tok, prompt='Q: Hi\\nA:', completion=' Hello')\n"
    "print(f'{rep.joint:.4f} {rep.marginal:.4f} {rep.conditional:.4f}')",
    "import torch\nprint(torch.get_num_threads(), torch.randn(2, generator=torch.Generator().manual_seed(0)).tolist())",
    "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()",
    "leaked = 'a name of this notebook'",
]


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """The warm kernel's spec in a temporary folder, on Jupyter's path; its own server (a marked
    environment), shared by this module's tests and stopped after them."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SFTVIZ_TEST_MARK", uuid.uuid4().hex)
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("JUPYTER_PATH", os.environ.get("JUPYTER_PATH", ""))
        name = warm_kernel.for_nbgrader(tmp_path_factory.mktemp("spec"))
        yield name
        warm_kernel.stop(dict(os.environ))


def _run(kernel: str, folder) -> list[str]:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    NotebookClient(nb, kernel_name=kernel, timeout=120, resources={"metadata": {"path": str(folder)}}).execute()
    out = []
    for cell in nb.cells:
        texts = [o.get("text", "") for o in cell.outputs if o.output_type == "stream"]
        images = [k for o in cell.outputs for k in o.get("data", {}) if k == "image/png"]
        out.append("".join(texts) + "".join(images))
    return out


def test_a_notebook_runs_in_the_warm_kernel_as_in_a_fresh_one(warm, tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    fresh = _run("python3", folder)
    first, second = _run(warm, folder), _run(warm, folder)
    assert fresh[0] == "False False False\n" and first[0] == second[0] == "True True False\n"
    assert first[1:] == second[1:] == fresh[1:], (fresh, first)
    assert fresh[1].startswith(str(folder)) and os.environ["SFTVIZ_TEST_MARK"] in fresh[1]  # folder, environment
    assert fresh[4] == "image/png"  # matplotlib's inline figures


def test_interrupt_and_kill(warm, tmp_path):
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name=warm, cwd=str(tmp_path))
    try:
        lines = []
        kc.execute_interactive(
            "import os; print(os.getpid())", timeout=60,
            output_hook=lambda m: lines.append(m["content"]["text"]) if m["msg_type"] == "stream" else None,
        )  # fmt: skip
        pid = int("".join(lines))
        kc.execute("import time; time.sleep(60)")
        time.sleep(1)
        km.interrupt_kernel()
        while True:
            msg = kc.get_iopub_msg(timeout=20)
            if msg["msg_type"] == "error":
                assert msg["content"]["ename"] == "KeyboardInterrupt"
                break
    finally:
        km.shutdown_kernel(now=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"the kernel {pid} outlived its launcher")


def test_one_server_per_environment_and_the_command_line(tmp_path):
    env = dict(os.environ)
    assert warm_kernel.socket_path(env) == warm_kernel.socket_path(dict(env, JPY_PARENT_PID="1"))
    assert warm_kernel.socket_path(env) != warm_kernel.socket_path(dict(env, OMP_NUM_THREADS="7"))
    assert warm_kernel.socket_path(env) != warm_kernel.socket_path(dict(env, ATEN_CPU_CAPABILITY="default"))
    script = warm_kernel.__file__
    bad = subprocess.run([sys.executable, script, "nonsense"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage:" in bad.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "sftviz.warm_kernel", "install", str(tmp_path)], capture_output=True, text=True
    )
    assert ok.returncode == 0 and (tmp_path / "share/jupyter/kernels/sftviz-warm/kernel.json").is_file()
