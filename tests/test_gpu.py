"""The course on a CUDA GPU (Colab, a lab machine): what a student's ``device="auto"`` runs there.

CI has no GPU, so these tests are skipped there; run them on a GPU machine with
``python -m pytest tests/test_gpu.py``. The real model's tests also need it installed
(``python -m sftviz.models install``). What they check is what the CPU tests check, where a GPU
could break it: the model and every run land on the GPU, scores agree with the CPU's, a fine-tune
trains under bf16 autocast and repeats with the same seed (to GPU tolerance: some CUDA kernels are
not bit-for-bit deterministic, as ``FinetuneConfig`` says), boundary packing trains what padding
trains, the reductions' gradients, Hugging Face ``Trainer`` with the lab's collator, and the run
cache keeping GPU runs apart from CPU runs.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import sftviz as sv
from sftviz import models

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)"),
    pytest.mark.slow,
]
REAL = "smollm2-135m-instruct"


def _real_model_installed() -> bool:
    try:
        models.gguf_path(REAL)
    except ValueError:
        return False
    return True


@pytest.fixture(scope="module")
def gpu_model():
    return sv.load_model("sftviz-tiny", device="auto")


@pytest.fixture(scope="module")
def rows():
    train, held_out = sv.load_splits("support")
    return train[:32], held_out[:8]


def _finetune(model, tok, data, **kw):
    kw = {"steps": 4, "batch_size": 8, "lr": 1e-3, "seed": 0, "progress": False, "cache": False, **kw}
    return sv.finetune(model, tok, data, "completion", eval_every=None, eval_examples=0, **kw)


def _curve(run, key):
    return [h[key] for h in run.history]


def test_auto_is_the_gpu_and_the_model_lands_there(gpu_model):
    model, _ = gpu_model
    assert sv.resolve_device("auto").type == "cuda"
    assert {p.device.type for p in model.parameters()} == {"cuda"}


def test_scores_on_the_gpu_match_the_cpu(gpu_model):
    model, tok = gpu_model
    cpu_model, _ = sv.load_model("sftviz-tiny", device="cpu")
    ex = sv.build_example(tok, prompt="Customer: Does the Nova Fan have a warranty?\nAssistant:", completion=" Yes.")
    gpu, cpu = sv.score(model, tok, example=ex), sv.score(cpu_model, tok, example=ex)
    for key in ("joint", "marginal", "conditional"):
        assert getattr(gpu, key) == pytest.approx(getattr(cpu, key), abs=1e-3)
    assert abs(gpu.joint - (gpu.marginal + gpu.conditional)) < 1e-4


def test_a_fine_tune_on_the_gpu_trains_in_bf16_and_repeats_with_its_seed(gpu_model, rows):
    model, tok = gpu_model
    train, held_out = rows
    runs = [_finetune(model, tok, train, steps=8, eval_data=held_out) for _ in range(2)]
    for run in runs:
        assert torch.device(run.device).type == "cuda" and run.status == "finished"
        assert all(math.isfinite(v) for v in _curve(run, "loss"))
    assert runs[0].evals[-1]["cond_logprob_per_token"] > runs[0].evals[0]["cond_logprob_per_token"]
    # the caller's model is untouched (copy_model=True) and still on the GPU
    assert next(model.parameters()).device.type == "cuda"
    assert _curve(runs[1], "loss") == pytest.approx(_curve(runs[0], "loss"), rel=1e-3)
    # bf16 autocast ("auto" on a GPU that has it) is close to fp32, not equal to it
    fp32 = _finetune(model, tok, train, steps=8, precision="fp32")
    assert _curve(fp32, "loss")[0] == pytest.approx(_curve(runs[0], "loss")[0], rel=2e-2)
    assert _curve(fp32, "loss") != _curve(runs[0], "loss")


def test_boundary_packing_on_the_gpu_trains_what_padding_trains(gpu_model, rows):
    model, tok = gpu_model
    train, _ = rows
    padded = _finetune(model, tok, train, precision="fp32")
    packed = _finetune(model, tok, train, precision="fp32", packing="boundaries", max_length=256)
    naive = _finetune(model, tok, train, precision="fp32", packing="naive", max_length=256)
    for key in ("loss", "completion_nll", "grad_norm"):
        assert _curve(packed, key) == pytest.approx(_curve(padded, key), rel=1e-4)
    assert packed.history[0]["n_rows"] < padded.history[0]["n_rows"]
    assert abs(naive.history[-1]["loss"] - padded.history[-1]["loss"]) > 1e-3


def test_notebook_7s_measurements_on_the_gpu(gpu_model, rows):
    """sv.pack builds its rows on the CPU; example_losses, example_gradients and gradient_distances take
    a model on the GPU (notebook 7 on a GPU runtime)."""
    from sftviz.packed_loss import example_gradients, example_losses
    from sftviz.reductions import gradient_distances

    model, tok = gpu_model
    train, _ = rows
    four = train[:4]
    alone = [example_losses(model, sv.pack([row], tok, max_length=256))[0] for row in four]
    packed = example_losses(model, sv.pack(four, tok, max_length=256, strategy="in-order"))
    naive = example_losses(model, sv.pack(four, tok, max_length=256, strategy="in-order", mode="naive"))
    assert packed == pytest.approx(alone, rel=1e-4) and naive[1:] != pytest.approx(alone[1:], rel=1e-3)
    grads = example_gradients(model, sv.pack(four, tok, max_length=256, strategy="in-order"))
    assert len(grads) == 4 and all(g.device.type == "cuda" for g in grads)
    by_name = {d["reduction"]: d for d in gradient_distances(model, tok, train[:8])}
    assert by_name["step_token_mean"]["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert by_name["step_token_mean"]["relative_l2"] < 1e-4
    assert by_name["micro_batch_mean_of_means"]["relative_l2"] > 1e-3


def test_hf_trainer_with_the_lab_collator_on_the_gpu(gpu_model, rows, tmp_path):
    from transformers import TrainingArguments

    from sftviz.hf import SFTLossTrainer

    model, tok = gpu_model
    train, _ = rows
    import copy

    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=3, report_to=[], save_strategy="no",
        logging_steps=1, seed=0, bf16=True,
    )  # fmt: skip
    trainer = SFTLossTrainer(model=copy.deepcopy(model), args=args, train_dataset=train, processing_class=tok)
    assert trainer.args.device.type == "cuda"
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert next(trainer.model.parameters()).device.type == "cuda"


def test_the_run_cache_keeps_gpu_runs_apart_from_cpu_runs(gpu_model, rows, tmp_path):
    model, tok = gpu_model
    train, _ = rows
    first = _finetune(model, tok, train, steps=2, cache=tmp_path)
    again = _finetune(model, tok, train, steps=2, cache=tmp_path)
    assert not first.cached and again.cached and _curve(again, "loss") == _curve(first, "loss")
    cpu = _finetune(model, tok, train, steps=2, cache=tmp_path, device="cpu")
    assert not cpu.cached and torch.device(cpu.device).type == "cpu"


@pytest.mark.skipif(not _real_model_installed(), reason=f"the real model is not installed: {models.install_hint()}")
def test_the_real_model_fine_tunes_on_the_gpu_and_packs_exactly():
    model, tok = sv.load_model(REAL, device="auto")
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    train, held_out = sv.load_splits("support")
    torch.cuda.reset_peak_memory_stats()
    run = _finetune(model, tok, train[:16], lr=2e-5, eval_data=held_out[:4])
    assert run.status == "finished" and all(math.isfinite(v) for v in _curve(run, "loss"))
    assert run.evals[-1]["cond_logprob_per_token"] > run.evals[0]["cond_logprob_per_token"]
    # AdamW state and activations of a 135 M-parameter model at batch 8: well under 8 GiB
    assert torch.cuda.max_memory_allocated() < 8 * 2**30
    padded = _finetune(model, tok, train[:16], steps=2, lr=2e-5, precision="fp32")
    packed = _finetune(model, tok, train[:16], steps=2, lr=2e-5, precision="fp32", packing="boundaries",
                       max_length=512)  # fmt: skip
    for key in ("loss", "completion_nll"):
        assert _curve(packed, key) == pytest.approx(_curve(padded, key), rel=1e-4)


NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("number", ["01", "02", "03", "04", "05", "06", "07"])
def test_the_notebooks_run_top_to_bottom_on_the_gpu(number, tmp_path):
    """Each course notebook as a student on a GPU runtime runs it: sv.load_model puts the model on the
    GPU (device="auto"), so every tensor a cell builds by hand must go where the model is. The shipped
    records are the CPU's, so the runs train here."""
    pm = pytest.importorskip("papermill", reason="the notebooks run through papermill: pip install -e '.[test]'")
    (src,) = NOTEBOOKS.glob(f"{number}_*.ipynb")
    out = tmp_path / src.name
    pm.execute_notebook(str(src), str(out), cwd=str(NOTEBOOKS), progress_bar=False)
    printed = out.read_text(encoding="utf-8")
    assert "Traceback" not in printed
