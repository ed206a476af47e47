"""A cache of finished training runs, keyed by everything that determines them.

A fine-tune on the same machine kind is deterministic: the same starting weights, tokenizer, training
and eval examples, settings and seed give the same record. A grader who runs the same notebook for a
whole class (``nbgrader autograde``) therefore needs each run only once. :func:`sftviz.finetune` looks
a run up here when a cache folder is given (``cache=DIR``, or the environment variable
``SFTVIZ_RUN_CACHE``) and stores every run it finishes.

The key is a SHA-256 over: the starting weights (every tensor's bytes), the tokenizer (its full
serialisation and chat template), the training and eval examples (ids, labels, weights, masks),
every setting of :class:`~sftviz.train.config.FinetuneConfig` except ``progress``, the device type (and
on a CPU, the kernels PyTorch picked for it) and the versions of sftviz, torch and transformers. A student who changes any of these on purpose gets a
run trained for real. Only the record is cached (history, evaluations, settings), not the weights: a
run taken from the cache has ``run.model = None`` and ``run.cached = True``. Runs with callbacks, runs
trained in place (``copy_model=False``), resumed runs and runs that did not finish are never cached.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

#: The environment variable that names the cache folder when ``cache`` is not given.
ENV = "SFTVIZ_RUN_CACHE"


def cache_folder(cache: object) -> Path | None:
    """The cache folder for ``cache``: a path, ``False`` (no cache), or ``None`` (``$SFTVIZ_RUN_CACHE``
    if set, else no cache)."""
    if cache is None:
        cache = os.environ.get(ENV) or False
    if cache is False:
        return None
    if cache is True:
        raise ValueError(f"cache=True names no folder: pass cache='path/to/folder', or set {ENV}.")
    if not isinstance(cache, (str, os.PathLike)) or not str(cache).strip():
        raise TypeError(f"cache must be a folder path, False or None, got {cache!r}.")
    return Path(cache).expanduser()


def _update_tensor(h: Any, name: str, t: torch.Tensor) -> None:
    t = t.detach().to("cpu").contiguous()
    h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def model_fingerprint(model: Any) -> str:
    """SHA-256 of a model's class, configuration and every parameter and buffer."""
    h = hashlib.sha256()
    h.update(type(model).__name__.encode())
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_json_string"):
        h.update(config.to_json_string(use_diff=False).encode())
    for name, t in model.state_dict().items():
        _update_tensor(h, name, t)
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
    """``(where the run goes in the cache, or None, the cached run or None)`` for a run about to train.

    Nothing is looked up unless a cache folder is set and the run is ``eligible`` (no callbacks, not
    resumed) and trains a copy of the model.
    """
    folder = cache_folder(cache)
    if folder is None or not eligible or not cfg.copy_model:
        return None, None
    slot = folder / f"{run_key(model, tok, cfg, examples, eval_examples, device)}.json"
    return slot, lookup(slot)


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
