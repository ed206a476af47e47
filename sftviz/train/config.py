"""The settings of a fine-tuning run: one frozen, validated :class:`FinetuneConfig`.

``sv.finetune(model, tok, data, masking, steps=150, lr=1e-3)`` builds one from its keywords;
``sv.finetune(model, tok, data, config=cfg)`` takes one you made (``cfg.replace(seed=1)`` for a
variant). Every field is checked when the config is made, so a typo or a bad value fails at once with
a message that names the setting.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch

from ..checks import check_bool, check_choice, check_float, check_int
from ..faults import get_fault
from ..masking import check_masking

HEADS = ("auto", "supervised", "full")
PACKING = (None, "boundaries", "naive")
PRECISIONS = ("auto", "fp32", "bf16")
BETAS = (0.9, 0.999)
EPS = 1e-8


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything that decides what :func:`sftviz.finetune` computes.

    Attributes:
        masking: "completion" (loss on the completion only), "full" (every token), "prompt" (the
            inverted mask) or a prompt-loss weight in [0, 1] (weight w on prompt targets, 1 on completion
            targets).
        steps: optimiser steps.
        batch_size: examples per micro-batch.
        grad_accum: micro-batches per step: a step sees ``batch_size * grad_accum`` examples, and its loss
            is one ratio of sums over all their trained tokens.
        lr, weight_decay, warmup_steps, max_grad_norm: AdamW (betas 0.9/0.999) with linear warmup to
            ``lr`` over ``warmup_steps`` then a constant rate; weight decay on matrices only; gradients
            clipped to ``max_grad_norm`` (None: no clipping; ``grad_norm`` is measured before clipping).
            The default ``lr=1e-3`` is for the bundled 1.2 M-parameter model; on a model of 50 M
            parameters or more, a rate above 1e-4 gets a warning that suggests 2e-5.
        seed: the batch order (a ``torch.Generator``) and dropout (in a forked RNG, so the global random
            state is untouched). The same seed on the same machine gives the same history (on the CPU;
            some GPU kernels are not bit-for-bit deterministic).
        device: "auto" (CUDA, else MPS, else CPU), "cpu", "cuda", ... On the CPU under Linux, freed
            buffers above 32 MiB are kept for reuse during the run (glibc's ``mallopt``; restored and
            trimmed afterwards; ``SFTVIZ_NO_MALLOPT=1`` turns it off): it saves page faults that cost
            about a tenth of a step on GPT-2-sized models.
        eval_every: evaluate every this many steps (None: only before training and at the end).
        eval_examples: how many eval examples to decode greedily for exact match (0: none).
        fault: None or a name from :data:`sftviz.faults.FAULTS`: trains with that bug switched on while
            every measurement stays correct.
        copy_model: train a deep copy (default), so the caller's model stays as it was; with False the
            caller's model is trained in place.
        max_length: cut prompts from the left to fit (default: the model's context length).
        head: "auto" (the supervised-only head when the model allows it), "supervised" or "full" (full
            logits, as ``model(...).logits``): the same loss and gradients, different speed.
        grad_share_every: measure ``prompt_grad_share`` on step 1 and every this many steps (None: never).
        measure_every: measure the NLL of targets that are *not* trained (the prompt under
            completion-only loss) on step 1 and every this many steps (default 1: every step; None:
            never). This costs a no-grad pass of the output layer over those positions, noticeable only
            for large vocabularies; on other steps the part not measured is None.
        precision: "auto" (bf16 autocast on a CUDA GPU that supports it, fp32 elsewhere), "fp32", or
            "bf16" (bf16 autocast also on the CPU: faster on CPUs with bf16 instructions, with loss values
            a little less precise). Weights, optimiser state and the loss reduction stay in fp32.
        packing: None (each example its own row, padded to the longest of its micro-batch), "boundaries"
            (each micro-batch's examples packed end to end into rows of ``max_length`` tokens, best fit,
            positions restarting at each example and attention kept inside it by a block-diagonal mask:
            every example's loss and gradient are those of the padded run, see :mod:`sftviz.packing`) or
            "naive" (the same rows with one causal mask over each: every example also reads the examples
            packed before it, the bug of packing without boundaries). The loss is the same token mean.
        progress: show a progress bar.
    """

    masking: str | float = "completion"
    steps: int = 200
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    eval_every: int | None = 50
    eval_examples: int = 8
    fault: str | None = None
    copy_model: bool = True
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_length: int | None = None
    head: str = "auto"
    max_grad_norm: float | None = 1.0
    grad_share_every: int | None = 10
    measure_every: int | None = 1
    precision: str = "auto"
    packing: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        checked = {
            "masking": check_masking(self.masking),
            "steps": check_int(self.steps, "steps", 1),
            "batch_size": check_int(self.batch_size, "batch_size", 1),
            "grad_accum": check_int(self.grad_accum, "grad_accum", 1),
            "seed": check_int(self.seed, "seed", 0),
            "lr": check_float(self.lr, "lr", positive=True),
            "weight_decay": check_float(self.weight_decay, "weight_decay", minimum=0.0),
            "warmup_steps": check_int(self.warmup_steps, "warmup_steps", 0),
            "eval_every": check_int(self.eval_every, "eval_every", 1, allow_none=True),
            "eval_examples": check_int(self.eval_examples, "eval_examples", 0),
            "max_grad_norm": check_float(self.max_grad_norm, "max_grad_norm", positive=True, allow_none=True),
            "grad_share_every": check_int(self.grad_share_every, "grad_share_every", 1, allow_none=True),
            "measure_every": check_int(self.measure_every, "measure_every", 1, allow_none=True),
            "progress": check_bool(self.progress, "progress"),
            "copy_model": check_bool(self.copy_model, "copy_model"),
            "precision": check_choice(self.precision, "precision", PRECISIONS),
            "head": check_choice(self.head, "head", HEADS),
            "packing": check_choice(self.packing, "packing", PACKING),
            "max_length": check_int(self.max_length, "max_length", 2, allow_none=True),
            "device": _check_device(self.device),
        }
        fault = get_fault(self.fault)
        checked["fault"] = None if fault is None else fault.name
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        if fault is not None and fault.needs_grad_accum and self.grad_accum == 1:
            warnings.warn(
                f"fault={fault.name!r} only changes anything with grad_accum > 1; with grad_accum=1 the run is correct.",
                UserWarning,
                stacklevel=5,  # finetune's caller: __post_init__ < __init__ < from_kwargs < finetune
            )

    @classmethod
    def from_kwargs(cls, **settings: Any) -> FinetuneConfig:
        """A config from keyword settings; an unknown name is a ``TypeError`` that suggests the right one."""
        known = [f.name for f in fields(cls)]
        for name in settings:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise TypeError(
                    f"finetune() got an unknown setting {name!r}.{hint} The settings are: {', '.join(known)}."
                )
        return cls(**settings)

    def replace(self, **changes: Any) -> FinetuneConfig:
        """A copy with some settings changed (checked again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-safe values, in field order."""
        return asdict(self)


def _check_device(device: object) -> str:
    if isinstance(device, torch.device):
        return str(device)
    if not isinstance(device, str):
        raise TypeError(
            f"device must be a string such as 'auto', 'cpu' or 'cuda', or a torch.device; got {type(device).__name__}."
        )
    return device
