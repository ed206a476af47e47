"""A cache of finished training runs, keyed by everything that determines them.

A fine-tune on the same machine kind is deterministic: the same starting weights, tokenizer, training
and eval examples, settings and seed give the same record. A grader who runs the same notebook for a
whole class (``nbgrader autograde``) therefore needs each run only once. :func:`sftviz.finetune` looks
a run up here when a cache folder is given (``cache=DIR``, or the environment variable
``SFTVIZ_RUN_CACHE``) and stores every run it finishes.

The key is a SHA-256 over: the starting weights (every tensor's bytes, and the model's configuration
without the folder it was loaded from), the tokenizer (its full serialisation and chat template), the
training and eval examples (ids, labels, weights, masks), every setting of
:class:`~sftviz.train.config.FinetuneConfig` except ``progress``, the device type (and on a CPU, the
kernels PyTorch picked for it and its number of threads, since both change how float32 sums round),
the source code of the modules that train and evaluate (:data:`CODE`) and the versions of sftviz, torch
and transformers. A student who changes any of these on purpose gets a run trained for real. Only the
record is cached (history, evaluations, settings), not the weights: a run taken from the cache has
``run.model = None`` and ``run.cached = True``. Runs with callbacks, runs trained in place
(``copy_model=False``), resumed runs and runs that did not finish are never cached.

**Shipped records.** sftviz ships the records of the course's own runs (notebooks 4, 5 and 6 with their
default parameters, on the bundled model and on the real one), made by ``scripts/ship_runs.py`` on the
machine named in ``sftviz/assets/runs/manifest.json``, with one thread, once per kind of kernels it can
run (its own, AVX2 where its own are AVX-512, and PyTorch's portable ones). They are looked up after the
cache folder, and with ``cache="shipped"`` without one. ``cache="auto"`` is ``$SFTVIZ_RUN_CACHE`` when it
is set, else ``"shipped"``: what callers that need only records use by default
(:func:`sftviz.masking_experiment` and :func:`sftviz.compare_masking` with ``keep_models=False``, notebook
5's mystery runs; notebook 4's control runs pass it). The key decides, as for any cached run, so a record
is used only for the very run it records; on another kind of machine, with more threads, or once the
code changed, the runs are trained here.
``SFTVIZ_SHIPPED_RUNS=0`` ignores them; ``SFTVIZ_RUN_CACHE=off`` turns every cache off.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import json
import os
import weakref
from pathlib import Path
from typing import Any

import torch

#: The environment variable that names the cache folder when ``cache`` is not given ("off" or "": no
#: cache at all, not even the shipped records).
ENV = "SFTVIZ_RUN_CACHE"
#: Set to "0" to ignore the shipped records (``scripts/ship_runs.py`` does, to train them afresh).
SHIPPED_ENV = "SFTVIZ_SHIPPED_RUNS"
#: Set to "1" to make a run that no cache holds an error instead of a training run: a quick check that a
#: cache covers a notebook (the tests use it on the shipped records).
ONLY_ENV = "SFTVIZ_RUN_CACHE_ONLY"
#: The shipped records: ``<key>.json`` run files and ``manifest.json`` (how and where they were made).
SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "runs"
#: The modules (relative to the package) whose source is part of every key: the code that trains a run
#: and evaluates it. Data preparation is in the key through the examples themselves.
CODE = (
    "train/api.py", "train/config.py", "train/engine.py", "train/evaluation.py", "train/records.py",
    "train/state.py", "train/table.py", "loss.py", "collate.py", "faults.py", "masking.py", "gradients.py",
    "_memory.py", "packing.py",
)  # fmt: skip


#: ``cache=`` value: the shipped records only, no folder (nothing is stored).
SHIPPED_ONLY = "shipped"
#: ``cache=`` value for callers that need only the record, not the model: :func:`records_default`.
AUTO = "auto"


def cpu_name() -> str:
    """The CPU's model name (Linux: ``/proc/cpuinfo``), else what the platform says: the shipped records'
    manifest names the machine they were made on with it."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def records_default() -> str | None:
    """What ``cache="auto"`` means (what callers that keep no models use by default):
    ``$SFTVIZ_RUN_CACHE`` when it is set (a folder, or "off"), else the shipped records only."""
    return None if ENV in os.environ else SHIPPED_ONLY


def cache_folder(cache: object) -> Path | None:
    """The cache folder for ``cache``: a path, ``False`` (no cache), ``None`` (``$SFTVIZ_RUN_CACHE``
    if set, else no cache), ``"shipped"`` (none) or ``"auto"`` (:func:`records_default`)."""
    if cache == AUTO:
        cache = records_default()
    if cache is None:
        cache = os.environ.get(ENV) or False
        if isinstance(cache, str) and cache.strip().lower() == "off":
            cache = False
    if cache is False or cache == SHIPPED_ONLY:
        return None
    if cache is True:
        raise ValueError(f"cache=True names no folder: pass cache='path/to/folder', or set {ENV}.")
    if not isinstance(cache, (str, os.PathLike)) or not str(cache).strip():
        raise TypeError(f"cache must be a folder path, False, None, 'auto' or 'shipped', got {cache!r}.")
    return Path(cache).expanduser()


def _update_tensor(h: Any, name: str, t: torch.Tensor) -> None:
    t = t.detach().to("cpu").contiguous()
    h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_fingerprint(model: Any) -> str:
    """SHA-256 of a model's class, configuration (without the folder it was loaded from) and every parameter
    and buffer. Remembered per model until its configuration or a tensor changes (PyTorch counts in-place
    changes), so that an experiment's runs from one model hash its weights once."""
    config = getattr(model, "config", None)
    settings = ""
    if config is not None and hasattr(config, "to_dict"):
        settings = json.dumps(
            {k: v for k, v in config.to_dict().items() if k != "_name_or_path"}, sort_keys=True, default=repr
        )
    state = model.state_dict()
    stamp = (settings, *((name, t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for name, t in state.items()))
    try:
        known = _FINGERPRINTS.get(model)
    except TypeError:  # not weak-referenceable
        known = None
    if known is not None and known[0] == stamp:
        return known[1]
    h = hashlib.sha256()
    h.update(type(model).__name__.encode())
    h.update(settings.encode())
    for name, t in state.items():
        _update_tensor(h, name, t)
    digest = h.hexdigest()
    try:
        _FINGERPRINTS[model] = (stamp, digest)
    except TypeError:
        pass
    return digest


def _code_only(source: str) -> str:
    """A module's syntax tree without its docstrings: what runs, not how it is explained or laid out."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        first = node.body[0] if node.body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 of the code of the modules in :data:`CODE` (comments, docstrings and layout left out)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for rel in CODE:
        h.update(rel.encode() + b"\0" + _code_only((root / rel).read_text(encoding="utf-8")).encode())
    return h.hexdigest()


def tokenizer_fingerprint(tok: Any) -> str:
    """SHA-256 of a tokenizer's full serialisation (fast tokenizers), vocabulary, special tokens and chat
    template."""
    h = hashlib.sha256()
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:  # a slow tokenizer: its vocabulary stands for it
        h.update(json.dumps(sorted(tok.get_vocab().items())).encode())
    special = {k: str(v) for k, v in (getattr(tok, "special_tokens_map", None) or {}).items()}
    h.update(json.dumps(special, sort_keys=True).encode())
    h.update(str(getattr(tok, "chat_template", None)).encode())
    h.update(f"{tok.pad_token_id}/{tok.eos_token_id}/{tok.bos_token_id}".encode())
    return h.hexdigest()


def _examples_digest(examples: list | None) -> str:
    if examples is None:
        return "none"
    h = hashlib.sha256()
    for ex in examples:
        row = [ex.input_ids, ex.labels, ex.completion_mask, ex.prompt_mask, ex.segments, ex.weights, ex.masking]
        h.update(json.dumps(row).encode())
    return h.hexdigest()


def run_key(model: Any, tok: Any, cfg: Any, examples: list, eval_examples: list | None, device: Any) -> str:
    """The cache key of a run: what determines its record (see this module)."""
    import transformers

    from .. import __version__

    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("progress", "device")}
    parts = {
        "model": model_fingerprint(model),
        "tokenizer": tokenizer_fingerprint(tok),
        "data": _examples_digest(examples),
        "eval_data": _examples_digest(eval_examples),
        "settings": settings,
        "device": torch.device(device).type,
        # the CPU's kernels round float32 sums differently (ATEN_CPU_CAPABILITY shows another CPU's)
        "cpu_kernels": torch.backends.cpu.get_cpu_capability() if torch.device(device).type == "cpu" else None,
        "cpu_threads": torch.get_num_threads() if torch.device(device).type == "cpu" else None,
        "code": code_digest(),
        "versions": [__version__, torch.__version__, transformers.__version__],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()


def find(
    cache: object,
    model: Any,
    tok: Any,
    cfg: Any,
    examples: list,
    eval_examples: list | None,
    device: Any,
    eligible: bool,
) -> tuple[Path | None, Any]:
    """``(where the run goes in the cache folder, or None; the cached run or None)`` for a run about to train.

    Nothing is looked up unless a cache is in use (a folder, or ``cache="shipped"``) and the run is
    ``eligible`` (no callbacks, not resumed) and trains a copy of the model. The folder is read first, then
    the shipped records. With ``$SFTVIZ_RUN_CACHE_ONLY=1``, a run found nowhere is a ``LookupError``.
    """
    if cache == AUTO:
        cache = records_default()
    folder = cache_folder(cache)
    no_records = cache != SHIPPED_ONLY or os.environ.get(SHIPPED_ENV) == "0"
    if (folder is None and no_records) or not eligible or not cfg.copy_model:
        return None, None  # nowhere to look: not even the key is computed
    key = run_key(model, tok, cfg, examples, eval_examples, device)
    slot = None if folder is None else folder / f"{key}.json"
    run = None if slot is None else lookup(slot)
    if run is None:
        run = shipped(key)
    if run is None and os.environ.get(ONLY_ENV) == "1":
        raise LookupError(
            f"no cached record of this run (key {key[:12]}) and {ONLY_ENV}=1 forbids training it. If this is "
            "a course notebook with its default parameters, the shipped records are out of date: rebuild "
            "them with `python scripts/ship_runs.py`."
        )
    return slot, run


def shipped(key: str) -> Any:
    """The shipped record with this key, or None (also when ``$SFTVIZ_SHIPPED_RUNS=0``)."""
    if os.environ.get(SHIPPED_ENV) == "0":
        return None
    return lookup(SHIPPED / f"{key}.json")


def lookup(path: Path) -> Any:
    """The cached run stored at ``path``, or None. A cache file that cannot be read is treated as missing."""
    from .runfile import load_run

    if not path.is_file():
        return None
    try:
        run = load_run(path)
    except ValueError:
        return None
    run.cached = True
    return run


def store(run: Any, path: Path | None) -> None:
    """Keep a finished run's record at ``path`` (None: not cached). Written atomically; a failure to write
    is not an error for the run, so it is ignored."""
    if path is None or run.status != "finished":
        return
    try:
        run.save(path, weights=False, overwrite=True)
    except OSError:
        pass
