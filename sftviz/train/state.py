"""What a run needs to continue exactly where it stopped: the optimiser's state, the random number
generators' states and the position in the data.

:func:`sftviz.finetune` keeps a :class:`TrainingState` on every run it returns (``run.state``), taken at
the last recorded step. ``sv.finetune(model, tok, data, resume=run, steps=N)`` restores it, so the
resumed run continues bit-identically to an uninterrupted run of ``N`` steps (on the same machine).
:meth:`sftviz.Run.save` writes it next to the weights (``run.state.safetensors``): tensors only, no
pickles, the optimiser's hyper-parameters in the run's JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

#: Names of the tensors of a saved state (the optimiser's per-parameter tensors are "opt.<i>.<name>").
RNG_CPU, RNG_CUDA, ORDER_GEN, ORDER_BUF = "rng.cpu", "rng.cuda", "order.generator", "order.buffer"


@dataclass
class TrainingState:
    """The state of a run after its last recorded step.

    Attributes:
        step: the last finished step.
        optimizer: the optimiser's ``state_dict()`` (per-parameter tensors and hyper-parameters).
        rng_cpu / rng_cuda: the torch random number generator states inside the run (dropout).
        order_generator / order_buffer: the batch order's generator state and the rows it has drawn but
            not yet used (see :class:`sftviz.train.table.BatchOrder`).
    """

    step: int
    optimizer: dict
    rng_cpu: torch.Tensor
    order_generator: torch.Tensor
    order_buffer: torch.Tensor
    rng_cuda: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of the state by name, for a safetensors file."""
        out = {RNG_CPU: self.rng_cpu, ORDER_GEN: self.order_generator, ORDER_BUF: self.order_buffer}
        if self.rng_cuda is not None:
            out[RNG_CUDA] = self.rng_cuda
        for i, per in self.optimizer.get("state", {}).items():
            for name, value in per.items():
                out[f"opt.{i}.{name}"] = torch.as_tensor(value)
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    def meta(self) -> dict[str, Any]:
        """The JSON-safe rest of the state (the optimiser's parameter groups, the step)."""
        return {"step": self.step, "param_groups": self.optimizer.get("param_groups", [])}

    @classmethod
    def from_saved(cls, meta: dict, tensors: dict[str, torch.Tensor]) -> TrainingState:
        """Rebuild a state from :meth:`meta` and :meth:`tensors` (as read back from a file)."""
        state: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in tensors.items():
            if name.startswith("opt."):
                _, index, key = name.split(".", 2)
                state.setdefault(int(index), {})[key] = value
        return cls(
            step=int(meta["step"]),
            optimizer={"state": state, "param_groups": meta["param_groups"]},
            rng_cpu=tensors[RNG_CPU],
            order_generator=tensors[ORDER_GEN],
            order_buffer=tensors[ORDER_BUF],
            rng_cuda=tensors.get(RNG_CUDA),
        )


def capture_state(trainer: Any, order: Any, step: int) -> TrainingState:
    """The state after ``step``, copied (the run goes on changing the live tensors if resumed)."""
    import copy

    cuda = trainer.device.type == "cuda"
    return TrainingState(
        step=step,
        optimizer=copy.deepcopy(trainer.opt.state_dict()),
        rng_cpu=torch.get_rng_state(),
        order_generator=order.gen.get_state(),
        order_buffer=order.buf.clone(),
        rng_cuda=torch.cuda.get_rng_state(trainer.device) if cuda else None,
    )


def restore_state(trainer: Any, order: Any, state: TrainingState) -> None:
    """Put the optimiser, the random number generators and the batch order back as they were."""
    import copy

    trainer.opt.load_state_dict(copy.deepcopy(state.optimizer))
    torch.set_rng_state(state.rng_cpu)
    if state.rng_cuda is not None and trainer.device.type == "cuda":
        torch.cuda.set_rng_state(state.rng_cuda, trainer.device)
    order.gen.set_state(state.order_generator)
    order.buf = state.order_buffer.clone()
