"""Run files: what :meth:`sftviz.Run.save` writes and :func:`load_run` reads, and what loading promises.

A run is saved as ``run.json`` (settings, history, evaluations), optionally with ``run.safetensors``
(the model) and ``run.state.safetensors`` (the optimiser, random and data-order state that ``resume``
needs). The JSON names the other two with their SHA-256.

A run file is input from a stranger (students share them, instructors hand them out), so loading one:

* never runs code: the model is rebuilt only for causal-LM architectures that ``transformers`` has
  locally, with ``trust_remote_code=False`` and without the config's ``auto_map``; weights are
  safetensors (tensors only, no pickles);
* never reads outside the run's folder: the files the JSON names are plain names in the same folder;
* validates before it allocates: the format, the version, every field's type and bounded sizes are
  checked first, and the shapes in the weights file's header are compared with the architecture built
  on the meta device (no memory) before any real tensor is made;
* says what is wrong, naming the file, with a ``ValueError``: never a ``KeyError``, a raw
  ``SafetensorError`` or a size-mismatch ``RuntimeError``.

Saving never loses data: the JSON is serialised before anything is written, every file is written to
a temporary name and moved into place (the JSON last), and a weights file that sftviz did not write
is not replaced unless ``overwrite=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

FORMAT = "sftviz-run"
FORMAT_VERSION = 2  # 2: weights and state named with their SHA-256; 1 (read too): weights by name only
STATUSES = ("running", "finished", "stopped", "nan", "error")
#: Bounds checked before anything is built from a file.
MAX_JSON_BYTES = 256 * 1024 * 1024
MAX_RECORDS = 1_000_000
_PLAIN_NAME = re.compile(r"^[^/\\]+\.safetensors$")


def weights_path(path: str | os.PathLike) -> Path:
    """Where ``run.save(path, weights=True)`` puts the weights."""
    return as_path(path).with_suffix(".safetensors")


def state_path(path: str | os.PathLike) -> Path:
    """Where ``run.save(path, weights=True)`` puts the training state."""
    return as_path(path).with_suffix(".state.safetensors")


def as_path(path: object) -> Path:
    """``path`` as a :class:`~pathlib.Path`, with a clear error for anything else."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a string or a path, got {type(path).__name__}.")
    if str(path).strip() == "":
        raise ValueError("path is empty.")
    return Path(path).expanduser()


# ==============================================================================================
# Saving
# ==============================================================================================


def save(run: Any, path: str | os.PathLike, *, model: Any = None, overwrite: bool = False) -> Path:
    """Write ``run`` (and ``model`` with the run's training state, when given) to ``path``; see
    :meth:`sftviz.Run.save`."""
    path = as_path(path)
    if path.suffix.lower() == ".safetensors":
        raise ValueError("Give the path of the JSON file (e.g. 'run.json'); the weights go next to it.")
    payload = run.to_dict()
    _serialise(payload)  # fail here, before any file is touched
    path.parent.mkdir(parents=True, exist_ok=True)
    if model is not None and not overwrite:
        _check_ours(path)
    written: list[tuple[Path, Path]] = []  # (temporary, final)
    try:
        payload["weights"] = payload["state"] = None
        if model is not None:
            wpath = weights_path(path)
            written.append((_write_temp(wpath, lambda tmp: _save_model(model, tmp)), wpath))
            payload["weights"] = {"file": wpath.name, "sha256": _sha256(written[-1][0])}
            if run.state is not None:
                spath = state_path(path)
                written.append((_write_temp(spath, lambda tmp: _save_tensors(run.state.tensors(), tmp)), spath))
                payload["state"] = {"file": spath.name, "sha256": _sha256(written[-1][0]), **run.state.meta()}
        text = _serialise(payload)
        written.append((_write_temp(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8")), path))
        for tmp, final in written:  # the JSON last: it names the others with their hashes
            os.replace(tmp, final)
    finally:
        for tmp, _ in written:
            if tmp.exists():
                tmp.unlink()
    return path


def _serialise(payload: dict) -> str:
    try:
        return json.dumps(payload, indent=1, allow_nan=True)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"The run holds a value JSON cannot store ({err}); nothing was written. Was a callback writing "
            "into run.history or run.config?"
        ) from None


def _check_ours(path: Path) -> None:
    """Refuse to replace a weights file that is not the one the run file at ``path`` says it wrote."""
    wpath = weights_path(path)
    if not wpath.exists():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        entry = old.get("weights")
        ours = old.get("format") == FORMAT and (
            entry == wpath.name or (isinstance(entry, dict) and entry.get("file") == wpath.name)
        )
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise ValueError(
            f"{wpath} exists and was not written by sftviz for {path.name} (it may be a model's own weights). "
            "Save elsewhere, or pass overwrite=True to replace it."
        )


def _write_temp(final: Path, write: Callable[[str], Any]) -> Path:
    """Write a file to a temporary name next to ``final`` (synced, with umask permissions); return it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a saved run follows the umask like any file
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _save_model(model: Any, tmp: str) -> None:
    from safetensors.torch import save_model

    save_model(model, tmp)  # handles tied (shared) tensors


def _save_tensors(tensors: dict[str, torch.Tensor], tmp: str) -> None:
    from safetensors.torch import save_file

    save_file(tensors, tmp)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ==============================================================================================
# Loading
# ==============================================================================================


def load_run(path: str | os.PathLike, *, model: Any = None, device: str | torch.device = "cpu") -> Any:
    """Read a run written by :meth:`sftviz.Run.save`; see this module for what loading promises.

    Args:
        path: the JSON file.
        model: optional model of the same architecture to receive the saved weights (a deep copy is
            made; your model is not changed). Without it, when weights were saved, the model is rebuilt
            from the configuration stored in the run (``transformers`` Auto classes, no remote code).
        device: where to put the loaded model.

    Returns:
        A :class:`~sftviz.Run` whose ``history``, ``evals`` and ``config`` equal the saved ones;
        ``run.model`` and ``run.state`` are None when the run was saved without weights.
    """
    from .records import EvalRecord, StepRecord
    from .runs import Run
    from .state import TrainingState

    path = as_path(path)
    payload = read_payload(path)
    try:
        history = [StepRecord.from_dict(r) for r in payload["history"]]
        evals = [EvalRecord.from_dict(r) for r in payload["evals"]]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path} has a malformed record: {err}") from None
    run = Run(
        config=payload["config"],
        history=history,
        evals=evals,
        status=payload["status"],
        stopped=payload["stopped"],
        error=payload["error"],
        device=None if payload["device"] is None else _device(path, payload["device"]),
        timing=payload["timing"],
    )
    weights = _named_file(path, payload.get("weights"), "weights")
    if weights is not None:
        run.model = load_weights(weights, run.config, model, device)
        state = _named_file(path, payload.get("state"), "state")
        if state is not None:
            meta = payload["state"]
            run.state = TrainingState.from_saved(meta, _read_tensors(state))
    return run


def read_payload(path: Path) -> dict:
    """The run file's JSON, checked field by field (types, format, version, sizes) before use."""
    if not path.is_file():
        raise ValueError(f"No saved run at {str(path)!r}.")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ValueError(f"{path} is {path.stat().st_size:,} bytes: too large to be a run file.")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not a valid run file (JSON error: {err.msg} at line {err.lineno}).") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a valid run file (not UTF-8 text).") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not an sftviz run (no 'format': '{FORMAT}').")
    version = payload.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{path} has no valid format version ({version!r}).")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer sftviz (format version {version}); upgrade sftviz.")
    expected = {"status": str, "stopped": bool, "config": dict, "history": list, "evals": list, "timing": dict}
    for key, kind in expected.items():
        if not isinstance(payload.get(key), kind):
            raise ValueError(f"{path}: '{key}' must be a {kind.__name__}; found {type(payload.get(key)).__name__}.")
    if payload["status"] not in STATUSES:
        raise ValueError(f"{path}: status {payload['status']!r} is not one of {STATUSES}.")
    for key in ("error", "device"):
        if payload.get(key) is not None and not isinstance(payload[key], str):
            raise ValueError(f"{path}: '{key}' must be a string or null.")
    if len(payload["history"]) > MAX_RECORDS or len(payload["evals"]) > MAX_RECORDS:
        raise ValueError(f"{path} holds more than {MAX_RECORDS:,} records: not a run file this package wrote.")
    payload.setdefault("error", None)
    payload.setdefault("device", None)
    return payload


def _device(path: Path, name: str) -> torch.device:
    try:
        return torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"{path}: device {name!r} is not a device name.") from None


def _named_file(path: Path, entry: object, what: str) -> Path | None:
    """The file the JSON names for ``what``, confined to the run's folder and checked against its hash."""
    if entry is None:
        return None
    name, digest = (entry, None) if isinstance(entry, str) else _entry(path, entry, what)
    if not _PLAIN_NAME.match(name) or name in (".", "..") or ".." in Path(name).parts:
        raise ValueError(
            f"{path}: the {what} file {name!r} must be a plain .safetensors file name in the run's folder."
        )
    file = path.parent / name
    if file.resolve().parent != path.parent.resolve():
        raise ValueError(f"{path}: the {what} file {name!r} is not in the run's folder.")
    if not file.is_file():
        raise ValueError(f"The run says its {what} are in {name}, but that file is missing next to {path.name}.")
    if digest is not None and _sha256(file) != digest:
        raise ValueError(
            f"{file.name} is not the {what} file {path.name} was saved with (its SHA-256 differs): the two "
            "files are out of step, perhaps from an interrupted save or a copy of only one of them."
        )
    return file


def _entry(path: Path, entry: object, what: str) -> tuple[str, str]:
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("file"), str)
        or not isinstance(entry.get("sha256"), str)
    ):
        raise ValueError(f"{path}: '{what}' must name a file and its sha256.")
    if what == "state" and (not isinstance(entry.get("step"), int) or not isinstance(entry.get("param_groups"), list)):
        raise ValueError(f"{path}: 'state' must give the step and the optimiser's param_groups.")
    return entry["file"], entry["sha256"]


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{file} is not a readable safetensors file ({err}).") from None


def load_weights(wpath: Path, config: dict, model: Any, device: str | torch.device) -> Any:
    """The model with the weights of ``wpath``: ``model``'s architecture (a copy), or the run's own."""
    import copy

    from safetensors import SafetensorError
    from safetensors.torch import load_model

    header = _header_shapes(wpath)
    if model is None:
        target = _rebuild(wpath, config, header)
    else:
        target = copy.deepcopy(model).cpu()
        _compare_shapes(wpath, target, header)
    try:
        load_model(target, str(wpath), strict=False)  # names and shapes were compared above
    except (SafetensorError, RuntimeError, OSError) as err:
        raise ValueError(f"{wpath} could not be read into the model ({err}).") from None
    target.to(device)
    target.eval()
    return target


def _header_shapes(wpath: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from the file's header (no tensor is read); a clear error if it is broken."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(wpath), framework="pt") as fh:
            return {name: tuple(fh.get_slice(name).get_shape()) for name in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{wpath} is not a readable safetensors file ({err}).") from None


def _rebuild(wpath: Path, config: dict, header: dict) -> Any:
    """The run's architecture from its stored config: local causal-LM classes only, checked on the meta
    device against the file's shapes before real memory is allocated."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    cfg = (config.get("model") or {}).get("config") if isinstance(config.get("model"), dict) else None
    if not isinstance(cfg, dict) or not cfg:
        raise ValueError(f"{wpath.name}: the run stores no model configuration to rebuild the model from; pass model=.")
    cfg = {k: v for k, v in cfg.items() if k != "auto_map"}  # never code named by the file
    model_type = cfg.pop("model_type", None)
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(
            f"{wpath.name}: the run's model_type {model_type!r} is not a causal language model transformers knows "
            "locally; sftviz rebuilds only those (never remote code). Pass model= to load into your own."
        )
    try:
        hf_config = AutoConfig.for_model(model_type, **cfg)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(hf_config, trust_remote_code=False)
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError) as err:
        raise ValueError(f"{wpath.name}: the run's model configuration is not usable ({err}).") from None
    _compare_shapes(wpath, skeleton, header)
    return AutoModelForCausalLM.from_config(hf_config, trust_remote_code=False)


def _compare_shapes(wpath: Path, model: Any, header: dict) -> None:
    """The file holds exactly the model's tensors (a tied copy may be left out), with the same shapes."""
    state = model.state_dict()
    missing = [name for name in state if name not in header and not is_tied(model, name)]
    unexpected = [name for name in header if name not in state]
    if missing or unexpected:
        raise ValueError(
            f"{wpath.name}: the saved weights do not fit this model (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]})."
        )
    for name, p in state.items():
        if name in header and tuple(p.shape) != header[name]:
            raise ValueError(
                f"{wpath.name}: {name} has shape {header[name]} in the file but {tuple(p.shape)} in the model; "
                "the weights belong to another architecture."
            )


def is_tied(model: Any, name: str) -> bool:
    """True when parameter ``name`` shares its storage with another parameter (tied embeddings)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    p = params.get(name)
    if p is None:
        return False
    return any(q is p for n, q in params.items() if n != name)
