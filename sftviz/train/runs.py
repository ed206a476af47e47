"""The record of a fine-tuning run.

A :class:`Run` is what :func:`sftviz.finetune` returns: its configuration, one record per training
step (``history``), one record per evaluation (``evals``), how it ended (``status``), the trained
model and what a resumed run needs (``state``). ``run.save(path)`` writes it; :func:`load_run` reads it
back, value for value (see :mod:`sftviz.train.runfile` for the file format and what loading promises).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import runfile
from .records import EvalRecord, Record, StepRecord
from .runfile import FORMAT, FORMAT_VERSION, STATUSES, load_run, weights_path
from .state import TrainingState

__all__ = ["FORMAT", "FORMAT_VERSION", "STATUSES", "TIMING_KEYS", "Run", "load_run", "weights_path"]

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
        state: what ``sv.finetune(run.model, tok, data, resume=run)`` needs to continue the run exactly
            (:class:`~sftviz.train.state.TrainingState`); saved with the weights.
        cached: True when :func:`sftviz.finetune` took the run's record from its run cache
            (:mod:`sftviz.train.cache`) instead of training; such a run has no model. Not saved.
        case: for a run loaded from a graded diagnosis case (:func:`sftviz.mystery.load_case`): the case's
            id, the run's letter, and the labels its pipeline built for the case's probe row. Not saved.
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
    state: TrainingState | None = field(default=None, repr=False)
    cached: bool = field(default=False, repr=False)
    case: dict | None = field(default=None, repr=False)

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
        config = self.config if isinstance(self.config, dict) else {}
        masking = config.get("masking")
        fault = config.get("fault")
        parts = [f"masking={masking!r}"]
        if fault:
            parts.append(f"fault={fault!r}")
        parts.append(f"{self.steps_done}/{config.get('steps')} steps")
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
        """Everything but the model and the training state, as plain JSON-safe values."""
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

    def save(self, path: str | os.PathLike, weights: bool = False, *, overwrite: bool = False) -> Path:
        """Write the run to ``path`` as JSON; with ``weights=True`` also the model and the training state.

        The weights go next to the JSON file as safetensors (``run.json`` -> ``run.safetensors``), the
        training state that ``resume`` needs beside them (``run.state.safetensors``). Nothing is written
        until the JSON is known to serialise; every file goes to a temporary name first, and the JSON,
        which names the others with their SHA-256, is moved into place last: a failed or interrupted save
        leaves the old files as they were, and :func:`load_run` refuses a JSON whose weights do not match.
        Files follow the umask (a shared folder stays shared). Returns the JSON path.

        Args:
            overwrite: replace a weights file that this package did not write (say, a Hugging Face
                model's ``model.safetensors`` next to ``model.json``). Without it, that is an error.
        """
        if not isinstance(weights, bool) or not isinstance(overwrite, bool):
            raise TypeError("weights and overwrite must be True or False.")
        if weights and self.model is None:
            raise ValueError("This run has no model to save (it was loaded without weights).")
        return runfile.save(self, path, model=self.model if weights else None, overwrite=overwrite)


def _plain(record: Any) -> dict:
    return record.to_dict() if isinstance(record, Record) else dict(record)
