"""The record of a fine-tuning run, and saving/loading it losslessly.

A :class:`Run` is what :func:`sftviz.finetune` returns: its configuration, one record per training
step (``history``), one record per evaluation (``evals``), how it ended (``status``) and the trained
model. ``run.save(path)`` writes it as JSON (atomically: a temporary file in the same folder, then
``os.replace``), optionally with the weights as safetensors next to it; :func:`load_run` reads it back
with the same history, evaluations and configuration, value for value.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .records import EvalRecord, Record, StepRecord

FORMAT = "sftviz-run"
FORMAT_VERSION = 1
STATUSES = ("running", "finished", "stopped", "nan", "error")
#: History fields that measure wall-clock time: they differ between otherwise identical runs.
TIMING_KEYS = ("seconds", "elapsed")


@dataclass
class Run:
    """One fine-tuning run.

    Attributes:
        config: every argument of :func:`sftviz.finetune` and what it resolved to, JSON-safe.
        history: one dict per optimiser step (see :func:`sftviz.finetune` for the fields).
        evals: one dict per evaluation (step 0 is the starting model).
        status: "running", "finished", "stopped" (stop flag or KeyboardInterrupt), "nan" (a non-finite
            loss or gradient ended it; see ``error``) or "error" (a callback raised).
        stopped: True when the run ended early on request.
        error: None, or a message saying why the run ended early.
        model: the trained model (the caller's model stays untouched unless ``copy_model=False``);
            None for a loaded run saved without weights.
        device: the torch.device it trained on.
        timing: wall-clock seconds: "setup" (checks, tokenization, copying the model) and "train"
            (the loop, evaluations included). Kept out of ``config`` so that identical runs have
            identical configurations.
        name: an optional label for tables and plot legends (e.g. "run A").
        hidden_fault: for the diagnosis exercises: the fault a mystery run trained with while its
            ``config["fault"]`` says "hidden" (:func:`sftviz.exercises.mystery_runs`). Not saved.
    """

    config: dict
    history: list[StepRecord] = field(default_factory=list)
    evals: list[EvalRecord] = field(default_factory=list)
    status: str = "running"
    stopped: bool = False
    error: str | None = None
    model: Any = None
    device: Any = None
    timing: dict = field(default_factory=dict)
    name: str | None = None
    hidden_fault: str | None = field(default=None, repr=False)

    # ---------------------------------------------------------------- reading
    @property
    def steps_done(self) -> int:
        return self.history[-1]["step"] if self.history else 0

    def series(self, key: str, kind: str = "train") -> tuple:
        """``(steps, values)`` of one field over the run, from ``history`` (kind="train") or ``evals``.

        Steps where the value is None (e.g. ``prompt_grad_share`` between measurements) are left out.
        """
        if kind not in ("train", "eval"):
            raise ValueError("kind must be 'train' or 'eval'.")
        records = self.history if kind == "train" else self.evals
        if records and key not in records[0]:
            raise KeyError(f"No field {key!r} in the {kind} records; they have {sorted(records[0])}.")
        pairs = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        return [s for s, _ in pairs], [v for _, v in pairs]

    def __repr__(self) -> str:
        masking = self.config.get("masking")
        fault = self.config.get("fault")
        parts = [f"masking={masking!r}"]
        if fault:
            parts.append(f"fault={fault!r}")
        parts.append(f"{self.steps_done}/{self.config.get('steps')} steps")
        parts.append(f"status={self.status!r}")
        if self.history:
            h = self.history[-1]
            for key in ("loss", "completion_nll", "prompt_nll"):  # None on a step that did not measure it
                if h.get(key) is not None:
                    parts.append(f"{key}={h[key]:.4f}")
        if self.evals and self.evals[-1].get("exact_match") is not None:
            parts.append(f"eval exact_match={self.evals[-1]['exact_match']:.2f}")
        return "Run(" + ", ".join(parts) + ")"

    # ---------------------------------------------------------------- saving
    def to_dict(self) -> dict:
        """Everything but the model, as plain JSON-safe values."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "status": self.status,
            "stopped": self.stopped,
            "error": self.error,
            "device": None if self.device is None else str(self.device),
            "timing": self.timing,
            "config": self.config,
            "history": [_plain(r) for r in self.history],
            "evals": [_plain(r) for r in self.evals],
        }

    def save(self, path: str | os.PathLike, weights: bool = False) -> Path:
        """Write the run to ``path`` as JSON; with ``weights=True`` also the model, as safetensors.

        The weights go next to the JSON file, with the suffix ``.safetensors`` (``run.json`` ->
        ``run.safetensors``). Both files are written to a temporary name first and then moved into
        place, so an interrupted save never leaves a half-written file. Returns the JSON path.
        """
        path = _as_path(path)
        if path.suffix.lower() == ".safetensors":
            raise ValueError("Give the path of the JSON file (e.g. 'run.json'); the weights go next to it.")
        if not isinstance(weights, bool):
            raise TypeError("weights must be True or False.")
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = self.to_dict()
        wpath = weights_path(path)
        if weights:
            if self.model is None:
                raise ValueError("This run has no model to save (it was loaded without weights).")
            _save_weights(self.model, wpath)
            payload["weights"] = wpath.name
        else:
            payload["weights"] = None
        try:
            text = json.dumps(payload, indent=1, allow_nan=True)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"The run holds a value JSON cannot store ({err}); was a callback writing into run.history?"
            ) from err
        _atomic_write_text(path, text)
        return path


def _plain(record: Any) -> dict:
    return record.to_dict() if isinstance(record, Record) else dict(record)


def weights_path(path: str | os.PathLike) -> Path:
    """Where ``run.save(path, weights=True)`` puts the weights."""
    return _as_path(path).with_suffix(".safetensors")


def _as_path(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a string or a path, got {type(path).__name__}.")
    if str(path).strip() == "":
        raise ValueError("path is empty.")
    return Path(path).expanduser()


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _save_weights(model, path: Path) -> None:
    from safetensors.torch import save_model

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_model(model, tmp)  # handles tied (shared) tensors
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_run(path: str | os.PathLike, *, model: Any = None, device: str | torch.device = "cpu") -> Run:
    """Read a run written by :meth:`Run.save`.

    Args:
        path: the JSON file.
        model: optional model of the same architecture to receive the saved weights (a deep copy is
            made; your model is not changed). Without it, when weights were saved, the model is rebuilt
            from the configuration stored in the run (``transformers`` Auto classes, no remote code).
        device: where to put the loaded model.

    Returns:
        A :class:`Run` whose ``history``, ``evals`` and ``config`` equal the saved ones; ``run.model``
        is None when the run was saved without weights.
    """
    path = _as_path(path)
    if not path.is_file():
        raise ValueError(f"No saved run at {str(path)!r}.")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not a valid run file (JSON error: {err.msg} at line {err.lineno}).") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not an sftviz run (no 'format': '{FORMAT}').")
    if payload.get("version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer sftviz (format version {payload['version']}); upgrade sftviz.")
    try:
        history = [StepRecord.from_dict(r) for r in payload["history"]]
        evals = [EvalRecord.from_dict(r) for r in payload["evals"]]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path} has a malformed record: {err}") from None
    run = Run(
        config=payload["config"],
        history=history,
        evals=evals,
        status=payload["status"],
        stopped=payload["stopped"],
        error=payload["error"],
        device=None if payload.get("device") is None else torch.device(payload["device"]),
        timing=payload.get("timing") or {},
    )
    if payload.get("weights"):
        wpath = path.parent / payload["weights"]
        if not wpath.is_file():
            raise ValueError(
                f"The run says its weights are in {wpath.name}, but that file is missing next to {path.name}."
            )
        run.model = _load_weights(wpath, run.config, model, device)
    return run


def _load_weights(wpath: Path, config: dict, model, device):
    import copy

    from safetensors.torch import load_model

    if model is None:
        cfg = (config.get("model") or {}).get("config")
        if not cfg:
            raise ValueError("The run stores no model configuration to rebuild the model from; pass model=.")
        from transformers import AutoConfig, AutoModelForCausalLM

        cfg = dict(cfg)
        model_type = cfg.pop("model_type")
        hf_config = AutoConfig.for_model(model_type, **cfg)
        target = AutoModelForCausalLM.from_config(hf_config)
    else:
        target = copy.deepcopy(model).cpu()
    missing, unexpected = load_model(target, str(wpath), strict=False)
    if unexpected or [m for m in missing if not _is_tied(target, m)]:
        raise ValueError(
            f"The saved weights do not fit this model (missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})."
        )
    target.to(device)
    target.eval()
    return target


def _is_tied(model, name) -> bool:
    """True when parameter ``name`` shares its storage with another parameter (tied embeddings)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    p = params.get(name)
    if p is None:
        return False
    return any(q is p for n, q in params.items() if n != name)
