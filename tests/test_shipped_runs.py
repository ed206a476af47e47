"""The run records sftviz ships (sftviz/assets/runs, made by scripts/ship_runs.py): they are of this code, they
cover notebooks 4, 5 and 6 with their default parameters, and a record is what training that run here gives.

The last two need the machine kind the records were made on (manifest.json names its CPU, kernels and
versions); elsewhere they are skipped, and the notebooks train their runs as they would without records.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

import sftviz as sv
from sftviz.course import notebook_parameters
from sftviz.models import converted_path
from sftviz.train import cache as run_cache
from sftviz.train.runs import TIMING_KEYS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
MANIFEST = json.loads((run_cache.SHIPPED / "manifest.json").read_text())


def _same_machine_kind() -> str | None:
    """Why this machine cannot use the records with its own kernels (None: it can)."""
    import transformers

    from sftviz.train.cache import cpu_name

    here = {"sftviz": sv.__version__, "torch": torch.__version__, "transformers": transformers.__version__}
    if cpu_name() != MANIFEST["cpu"]:
        return f"the records were made on {MANIFEST['cpu']}, this is {cpu_name()}"
    if torch.backends.cpu.get_cpu_capability() not in MANIFEST["cpu_kernels"]:
        return f"the records have {MANIFEST['cpu_kernels']} kernels, this CPU uses {torch.backends.cpu.get_cpu_capability()}"
    if here != MANIFEST["versions"]:
        return f"the records were made with {MANIFEST['versions']}, this is {here}"
    return None


def test_the_shipped_records_are_of_this_code():
    assert MANIFEST["code"] == run_cache.code_digest(), (
        "the code that trains runs changed since the shipped records were made (sftviz.train.cache.CODE): "
        "rebuild them with `python scripts/ship_runs.py` (about 5 minutes on 2 cores)"
    )
    records = sorted(run_cache.SHIPPED.glob("*.json"))
    # Per kind of kernels: notebook 4's 18 runs and 3 controls, notebook 5's 5, notebook 6's 2.
    kinds = MANIFEST["cpu_kernels"]
    assert "DEFAULT" in kinds and len(records) - 1 == MANIFEST["runs"] == len(kinds) * 40, (kinds, len(records))
    for path in records:
        assert "/" not in json.loads(path.read_text()).get("config", {}).get("model", {}).get("name_or_path", ""), path


def _cells_until(notebook: str, marker: str) -> list[str]:
    """The code cells of ``notebook`` up to the first one containing ``marker``."""
    nb = nbformat.read(NOTEBOOKS / notebook, as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "code"]
    return cells[: next(i for i, c in enumerate(cells) if marker in c) + 1]


# The cells run in one IPython shell (as a kernel runs them, without starting one per notebook).
RUN_CELLS = """
import json, os, sys
from IPython.core.interactiveshell import InteractiveShell
os.chdir(sys.argv[1])
for notebook in json.loads(sys.stdin.read()):
    shell = InteractiveShell.instance()
    for cell in notebook:
        shell.run_cell(cell).raise_error()
    InteractiveShell.clear_instance()
"""


@pytest.mark.slow
def test_notebooks_4_to_7_read_every_run_from_the_shipped_records():
    """With this CPU's own kernels (ship_runs.py makes every kind in one go, so one kind read through
    stands for the others: the count above checks that each kind has as many)."""
    why = _same_machine_kind()
    if why:
        pytest.skip(why)
    try:
        converted_path("smollm2-135m-instruct", convert=False)
    except (FileNotFoundError, ModuleNotFoundError, ValueError) as err:
        if os.environ.get("SFTVIZ_REQUIRE_REAL_MODEL") == "1":
            raise
        pytest.skip(f"notebook 6 needs the real model: {err}")
    env = {k: v for k, v in os.environ.items() if k not in ("SFTVIZ_RUN_CACHE", run_cache.SHIPPED_ENV)}
    env.update({run_cache.ONLY_ENV: "1", "OMP_NUM_THREADS": "1"})  # a run not in the records fails, not trains
    env.pop("ATEN_CPU_CAPABILITY", None)
    cells = [
        _cells_until("04_finetuning_masking_on_off.ipynb", "random_model = AutoModelForCausalLM"),
        _cells_until("05_diagnose_a_faulty_finetune.ipynb", "exercises.mystery_runs("),
        _cells_until("06_on_a_real_model.ipynb", "sv.compare_masking("),
        _cells_until("07_packing_and_normalisation.ipynb", "PACKINGS = "),
    ]
    res = subprocess.run(
        [sys.executable, "-c", RUN_CELLS, str(NOTEBOOKS)], input=json.dumps(cells), text=True, capture_output=True,
        env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    lines = ("support: 9 runs in", "9 of them read from the run cache", "3 of them read from the run cache",
             "6 of 6 runs read from sftviz's records")  # fmt: skip
    for line in lines:
        assert line in res.stdout, res.stdout


@pytest.mark.slow
def test_a_shipped_record_is_what_training_the_run_here_gives(monkeypatch):
    why = _same_machine_kind()
    if why:
        pytest.skip(why)
    monkeypatch.delenv(run_cache.SHIPPED_ENV, raising=False)
    p = notebook_parameters(NOTEBOOKS / "04_finetuning_masking_on_off.ipynb")
    model, tok = sv.load_model(p["MODEL_NAME"])
    train_rows, eval_rows = sv.load_splits(p["DATASETS"][0], eval_fraction=p["EVAL_FRACTION"])
    eval_rows = eval_rows[: p["EVAL_ROWS"]]
    kw = dict(
        steps=p["STEPS"], batch_size=p["BATCH_SIZE"], lr=p["LR"], seed=p["SEEDS"][0], eval_data=eval_rows,
        eval_every=p["STEPS"], eval_examples=len(eval_rows), grad_share_every=25, progress=False,
    )  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        shipped = sv.finetune(model, tok, train_rows, "completion", cache="shipped", **kw)
        assert shipped.cached, "notebook 4's first run is not in the shipped records: python scripts/ship_runs.py"
        trained = sv.finetune(model, tok, train_rows, "completion", cache=False, **kw)
    finally:
        torch.set_num_threads(threads)
    assert not trained.cached and trained.model is not None

    def record(run):
        return [{k: v for k, v in dict(r).items() if k not in TIMING_KEYS} for r in run.history], [
            {k: v for k, v in dict(e).items() if k != "seconds"} for e in run.evals
        ]

    assert record(shipped) == record(trained)
