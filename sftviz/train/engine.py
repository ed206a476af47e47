"""The step engine: one optimiser step of SFT, read top to bottom.

:class:`Trainer` is set up once per run (precision, output head, optimiser, parameter groups, the loss
reduction) and then called once per step with the rows of that step. Why a step is fast on a CPU:

* Padding is on the right and the model is causal, so real tokens never attend to padding: the body
  runs with an all-ones attention mask (the fast causal kernel; outputs at real tokens are identical)
  and without the last column (the prediction at the last token of ``[x, y]`` is never scored, so
  that token need not be fed in).
* The output projection to the vocabulary is applied with gradient only where a trained target is
  predicted (the supervised-only head, as in :func:`sftviz.supervised_head_loss`) and without gradient
  where a target is only *measured* (e.g. prompt tokens under completion-only loss).
* With ``packing`` the examples of a micro-batch are laid end to end into rows instead (best fit, positions
  restarting at each example, a block-diagonal mask for "boundaries"): no padding, the same targets.
* Gradient accumulation divides every micro-batch's summed loss by the total weight of the whole step,
  so the step's loss is one ratio of sums, exactly as with one big batch.
* All the numbers a step records are copied from the device in one go (one sync per step).
"""

from __future__ import annotations

import math
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..faults import Fault
from ..gradients import parameter_groups
from ..loss import Reduction, head_is_plain, token_mean
from ..packing import best_fit, block_causal_mask, layout
from .config import BETAS, EPS, FinetuneConfig
from .records import StepRecord
from .table import TrainingTable


@torch.no_grad()
def head_matches_logits(model: Any, body: Any, head: Any, device: torch.device) -> bool:
    """Check on a 3-token input that ``head(body(x).last_hidden_state)`` reproduces ``model(x).logits``."""
    was = model.training
    model.eval()
    try:
        x = torch.tensor([[1, 2, 1]], device=device)
        hidden = getattr(body(input_ids=x), "last_hidden_state", None)
        if not isinstance(hidden, torch.Tensor):
            return False
        low = next(model.parameters()).dtype in (torch.float16, torch.bfloat16)
        tol = 5e-2 if low else 1e-3
        return bool(torch.allclose(head(hidden).float(), model(input_ids=x).logits.float(), rtol=tol, atol=tol))
    except Exception:  # noqa: BLE001 -- any surprise means: use the full logits
        return False
    finally:
        model.train(was)


def lr_at(step: int, lr: float, warmup: int) -> float:
    """The learning rate of ``step`` (1-based): linear warmup over ``warmup`` steps, then constant."""
    return lr * min(1.0, step / warmup) if warmup else lr


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether to train under bf16 autocast: "auto" means on a CUDA GPU that supports it."""
    if precision == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("precision='bf16' was asked for, but this GPU does not support bfloat16; use 'fp32'.")
        if device.type not in ("cuda", "cpu"):
            raise ValueError(f"precision='bf16' is supported on CUDA and on the CPU, not on {device.type}.")
        if device.type == "cpu" and cpu_bf16() is False:
            warnings.warn(
                "precision='bf16' on a CPU without bf16 instructions (AVX512-BF16 or AMX) is emulated: a step "
                "can take about ten times longer than in fp32. Use precision='fp32' (the CPU default).",
                UserWarning,
                stacklevel=5,
            )
        return True
    return False


def cpu_bf16() -> bool | None:
    """Whether this CPU has native bf16 arithmetic (AVX512-BF16 or AMX); None when it cannot be told."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        return None
    if not flags:
        return None
    words = set(flags.split())
    return bool(words & {"avx512_bf16", "amx_bf16"})


def fetch(values: dict[str, Any], device: torch.device) -> dict[str, float]:
    """Numbers (0-d tensors or floats) to Python floats in one device-to-host copy: one sync per step,
    not one per number."""
    keys = list(values)
    if not keys:
        return {}
    flat = torch.stack([torch.as_tensor(values[k], device=device).detach().float().reshape(()) for k in keys])
    flat = flat.tolist()
    return dict(zip(keys, flat))


@dataclass
class MicroBatch:
    """The forward pass of one micro-batch.

    ``nll`` is each trained target's NLL (0 where not trained), attached to the graph; ``weights`` its
    loss weight; ``is_prompt`` marks prompt targets. The two sums are the measured NLL (true next
    tokens, no gradient) of the prompt and completion targets; ``missed_*`` says a part went unmeasured
    on this step (``measure_every``).
    """

    nll: torch.Tensor
    weights: torch.Tensor
    is_prompt: torch.Tensor
    prompt_nll_sum: torch.Tensor
    completion_nll_sum: torch.Tensor
    missed_prompt: bool = False
    missed_completion: bool = False
    rows: int = 0
    slots: int = 0


class Trainer:
    """One run's model, optimiser and loss, stepped by :meth:`step`."""

    def __init__(
        self,
        model: Any,
        table: TrainingTable,
        config: FinetuneConfig,
        fault: Fault | None,
        device: torch.device,
        row_length: int | None = None,
    ):
        self.model, self.table, self.config, self.device = model, table, config, device
        # A fault that packs (naive packing, a per-row mean) decides the packing; else the config does.
        self.packing = (fault.packing if fault is not None else None) or config.packing
        self.row_length = max(row_length or 0, int(table.lengths.max()))
        if self.packing is not None and table.trains_padding:
            raise ValueError("packing leaves no padding to train: this fault needs padded batches (packing=None).")
        self.logged_loss = fault.logged_loss if fault is not None else None
        self.bf16 = use_bf16(config.precision, device)
        self.precision = "bf16-autocast" if self.bf16 else "fp32"
        self.body, self.head_mod, self.head = self._choose_head(config.head)
        # The reduction a fault declares replaces the token mean; the engine never asks which fault it is.
        self.reduce: Reduction = fault.reduction if fault is not None and fault.reduction is not None else token_mean

        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("The model has no trainable parameters (every requires_grad is False).")
        self.params = [p for _, p in named]
        self.group_names, groups = parameter_groups(model, named)
        self.group_index = torch.tensor([self.group_names.index(g) for g in groups], dtype=torch.long, device=device)
        self.opt, self.optimizer_name = self._optimizer(config.lr, config.weight_decay)

    def _choose_head(self, head: str) -> tuple[Any, Any, str]:
        """(body, output layer, "supervised" or "full"): the supervised-only head when it reproduces the logits."""
        model = self.model
        body = getattr(model, "base_model", None)
        out = model.get_output_embeddings()
        plain = body is not None and body is not model and out is not None and head_is_plain(model)
        if plain and head != "full":
            plain = head_matches_logits(model, body, out, self.device)
        if head == "supervised" and not plain:
            raise ValueError(
                "head='supervised' needs a model whose logits are get_output_embeddings()(hidden states) "
                "(GPT-2, Llama, Qwen, ...); this one scales or caps its logits. Use head='auto' or 'full'."
            )
        return body, out, "supervised" if (head == "supervised" or (head == "auto" and plain)) else "full"

    def _optimizer(self, lr: float, weight_decay: float) -> tuple[torch.optim.Optimizer, str]:
        """AdamW with weight decay on matrices only; the fused kernel where torch has one."""
        decay = [p for p in self.params if p.dim() >= 2]
        no_decay = [p for p in self.params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
        try:
            fused = self.device.type in ("cpu", "cuda")
            return torch.optim.AdamW(groups, lr=lr, betas=BETAS, eps=EPS, fused=fused), "AdamW(fused)"
        except (RuntimeError, ValueError, TypeError):
            return torch.optim.AdamW(groups, lr=lr, betas=BETAS, eps=EPS), "AdamW"

    def amp(self) -> AbstractContextManager:
        """The autocast context of this run (bf16) or a no-op (fp32)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()

    # ------------------------------------------------------------------ one micro-batch
    def forward(self, rows: torch.Tensor, measure: bool = True) -> MicroBatch:
        """Forward pass of the examples ``rows`` (CPU indices), trimmed to their longest real length."""
        t = self.table
        if self.packing is not None:
            ids_in, (w, tgt, true, isp, isc), attn = self._packed(rows)
        else:
            width = int(t.lengths[rows].max()) - 1  # the prediction at the last token is never scored
            idx = rows.to(self.device)
            ids_in = t.ids[idx, :width]
            w, tgt, true = t.train_w[idx, :width], t.train_tgt[idx, :width], t.true_tgt[idx, :width]
            isp, isc = t.is_prompt[idx, :width], t.is_comp[idx, :width]
            # right padding + causal attention: an all-ones mask, see the module docstring
            attn = {"attention_mask": torch.ones_like(ids_in)}
        keep = w > 0
        measured = isp | isc
        missed = (False, False)
        with self.amp():
            if self.head == "supervised":
                hidden = self.body(input_ids=ids_in, **attn).last_hidden_state
                nll_k = F.cross_entropy(self.head_mod(hidden[keep]).float(), tgt[keep], reduction="none")
                nll = torch.zeros(w.shape, dtype=torch.float32, device=w.device).masked_scatter(keep, nll_k)
                # A trained target whose label is its true next token is measured by its training NLL;
                # every other measured target costs a no-grad pass of the output layer (or is skipped).
                reuse = keep & (tgt == true)
                true_nll = nll.detach() * reuse
                extra = measured & ~reuse
                if measure and bool(extra.any()):
                    with torch.no_grad():
                        logits_x = self.head_mod(hidden.detach()[extra]).float()
                        true_nll[extra] = F.cross_entropy(logits_x, true[extra], reduction="none")
                elif not measure:
                    missed = (bool((extra & isp).any()), bool((extra & isc).any()))
            else:
                flat = self.model(input_ids=ids_in, **attn).logits.float().flatten(0, 1)
                # Without a label fault the trained targets are the true next tokens: one cross-entropy
                # over every position serves the loss and the measurements.
                target = true if t.labels_are_next_tokens else tgt
                nll_all = F.cross_entropy(flat, target.reshape(-1), reduction="none").view(w.shape)
                nll = torch.where(keep, nll_all, torch.zeros_like(nll_all))
                if t.labels_are_next_tokens:
                    true_nll = nll_all.detach()
                else:
                    with torch.no_grad():
                        true_nll = F.cross_entropy(flat.detach(), true.reshape(-1), reduction="none").view(w.shape)
        n_rows = ids_in.shape[0]
        slots = n_rows * ids_in.shape[1] if self.packing is not None else n_rows * int(t.lengths[rows].max())
        return MicroBatch(nll, w, isp, (true_nll * isp).sum(), (true_nll * isc).sum(), *missed, n_rows, slots)

    def _packed(self, rows: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
        """The examples ``rows`` laid end to end into rows of at most ``row_length`` tokens (best fit).

        Returns the input ids, the five target tensors of :meth:`forward` (weight, trained target, true
        target, is-prompt, is-completion; nothing is a target at an example's last token, so no target
        crosses into the next example) and the model's other inputs: ``position_ids`` restarting at each
        example, and the attention mask (block-diagonal for "boundaries", one causal row for "naive").
        """
        t = self.table
        lengths = t.lengths[rows].tolist()
        example, column = layout(lengths, best_fit(lengths, self.row_length))
        real = example >= 0
        table_row = rows[example.clamp_min(0)]
        # column t predicts token t + 1 of the same example: the example's last token predicts nothing
        target = real & (column < t.lengths[table_row] - 1)
        dev = self.device
        r_i, c_i = table_row.to(dev), column.clamp(max=t.train_w.shape[1] - 1).to(dev)
        target = target.to(dev)
        ids = torch.where(real.to(dev), t.ids[r_i, column.to(dev)], t.ids.new_zeros(()))
        picked = tuple(
            torch.where(target, x[r_i, c_i], torch.zeros((), dtype=x.dtype, device=dev))
            for x in (t.train_w, t.train_tgt, t.true_tgt, t.is_prompt, t.is_comp)
        )
        mask = block_causal_mask(example) if self.packing == "boundaries" else real.long()
        return ids, picked, {"attention_mask": mask.to(dev), "position_ids": column.to(dev)}

    # ------------------------------------------------------------------ one optimiser step
    def step(self, k: int, rows: torch.Tensor) -> tuple[StepRecord, bool]:
        """Optimiser step ``k`` (1-based) on the examples ``rows``; returns its record and whether the
        loss and the gradient were finite (if not, the update is skipped and the run should stop)."""
        cfg, t = self.config, self.table

        # 1. What this step trains: the totals of its examples, the denominators of its loss.
        tot = t.totals(rows.to(self.device))
        if t.trains_padding:  # padding targets depend on how far each micro-batch is padded: count them there
            tot.update(self._padding_totals(rows))
        total_w = tot["weight"].clamp_min(1e-12)  # a step with nothing to train adds 0, not NaN
        n_seq = (t.per_example["weight"][rows.to(self.device)] > 0).sum().clamp_min(1)
        measure = cfg.measure_every is not None and (k == 1 or k % cfg.measure_every == 0)
        share_step = cfg.grad_share_every is not None and (k == 1 or k % cfg.grad_share_every == 0)
        share_step = share_step and 0.0 < float(tot["prompt_weight"]) < float(tot["weight"])  # else exactly 0 or 1

        # 2. This step's learning rate; fresh gradients.
        for g in self.opt.param_groups:
            g["lr"] = lr_at(k, cfg.lr, cfg.warmup_steps)
        self.opt.zero_grad(set_to_none=True)

        # 3. Forward and backward, one micro-batch at a time. Each micro-batch's loss is already divided
        #    by the whole step's total weight, so the gradients add up to those of one ratio of sums.
        sums = {"loss": 0.0, "prompt_nll_sum": 0.0, "completion_nll_sum": 0.0, "n_rows": 0.0, "n_slots": 0.0}
        missed_p = missed_c = False
        prompt_grads = None
        for micro in rows.split(cfg.batch_size):
            mb = self.forward(micro, measure)
            loss = self.reduce(mb.nll, mb.weights, total_weight=total_w, n_sequences=n_seq, n_micro=cfg.grad_accum)
            if share_step:  # the gradient of the prompt targets' terms alone (one extra backward pass)
                loss_p = self.reduce(mb.nll * mb.is_prompt, mb.weights, total_weight=total_w, n_sequences=n_seq,
                                     n_micro=cfg.grad_accum)  # fmt: skip
                prompt_grads = _add(prompt_grads, self._grads_of(loss_p))
            loss.backward()
            sums["loss"] += loss.detach()
            sums["prompt_nll_sum"] += mb.prompt_nll_sum
            sums["completion_nll_sum"] += mb.completion_nll_sum
            sums["n_rows"] += mb.rows
            sums["n_slots"] += mb.slots
            missed_p, missed_c = missed_p or mb.missed_prompt, missed_c or mb.missed_completion

        # 4. Gradient norms, global and per parameter group, before clipping.
        have = [i for i, p in enumerate(self.params) if p.grad is not None]
        grads = [self.params[i].grad for i in have]
        norms = torch.stack(torch._foreach_norm(grads)).float() if grads else torch.zeros(0, device=self.device)
        index = self.group_index[have] if have else self.group_index[:0]
        group_sq = torch.zeros(len(self.group_names), device=self.device).index_add_(0, index, norms.square())
        total_norm = group_sq.sum().sqrt()
        values = {**sums, "grad_norm": total_norm, **tot}
        values.update({f"group:{name}": v for name, v in zip(self.group_names, group_sq.sqrt())})

        # 5. How the gradient splits between prompt and completion targets (on measuring steps).
        if prompt_grads is not None and have:
            values.update(_split_gradient([prompt_grads[i] for i in have], grads))

        # 6. Every number of the record in one copy from the device.
        v = fetch(values, self.device)

        # 7. Clip and update, unless the loss or the gradient is not finite (then the run stops here).
        finite = math.isfinite(v["loss"]) and math.isfinite(v["grad_norm"])
        if finite:
            if cfg.max_grad_norm is not None and grads:
                torch._foreach_mul_(grads, (cfg.max_grad_norm / (total_norm + 1e-6)).clamp(max=1.0))
            self.opt.step()
        return self._record(k, v, missed_p, missed_c), finite

    def _padding_totals(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weight totals of a step counted on each micro-batch as :meth:`forward` cuts it."""
        t = self.table
        out = {"weight": 0.0, "prompt_weight": 0.0, "n_trained": 0.0}
        for micro in rows.split(self.config.batch_size):
            width = int(t.lengths[micro].max()) - 1
            idx = micro.to(self.device)
            w = t.train_w[idx, :width]
            out["weight"] = out["weight"] + w.sum()
            out["prompt_weight"] = out["prompt_weight"] + (w * t.is_prompt[idx, :width]).sum()
            out["n_trained"] = out["n_trained"] + (w > 0).sum().float()
        return out

    def _grads_of(self, loss: torch.Tensor) -> list[torch.Tensor]:
        grads = torch.autograd.grad(loss, self.params, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads)]

    def _record(self, k: int, v: dict[str, float], missed_p: bool, missed_c: bool) -> StepRecord:
        """The step's record from the fetched numbers."""
        n_p, n_c = v["n_prompt"], v["n_completion"]
        loss = v["loss"] if self.logged_loss is None else self.logged_loss(v["loss"], n_micro=self.config.grad_accum)
        rec = StepRecord(
            step=k,
            loss=loss,
            prompt_nll=v["prompt_nll_sum"] / n_p if n_p and not missed_p else None,
            completion_nll=v["completion_nll_sum"] / n_c if n_c and not missed_c else None,
            n_trained=int(v["n_trained"]),
            n_prompt_targets=int(n_p),
            n_completion_targets=int(n_c),
            n_tokens=int(v["n_tokens"]),
            n_rows=int(v["n_rows"]),
            n_slots=int(v["n_slots"]),
            grad_norm=v["grad_norm"],
            grad_norm_groups={name: v[f"group:{name}"] for name in self.group_names},
            lr=self.opt.param_groups[0]["lr"],
        )
        if v["prompt_weight"] == 0.0:  # no prompt target carries weight: the share is exactly 0
            rec.prompt_grad_share = 0.0
        elif v["prompt_weight"] == v["weight"]:  # only prompt targets do: exactly 1
            rec.prompt_grad_share = 1.0
        elif "dot" in v:
            _share_fields(rec, v["dot"], v["prompt_sq"], v["completion_sq"], v["grad_norm"])
        return rec


def _add(acc: list[torch.Tensor] | None, grads: list[torch.Tensor]) -> list[torch.Tensor]:
    return grads if acc is None else [a + b for a, b in zip(acc, grads)]


def _split_gradient(prompt: list[torch.Tensor], total: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """``<g_p, g>``, ``|g_p|^2`` and ``|g_c|^2`` where ``g = g_p + g_c`` (prompt and completion parts)."""
    return {
        "dot": sum((a.float() * b.float()).sum() for a, b in zip(prompt, total)),
        "prompt_sq": sum(a.float().square().sum() for a in prompt),
        "completion_sq": sum((b.float() - a.float()).square().sum() for a, b in zip(prompt, total)),
    }


def _share_fields(rec: StepRecord, dot: float, gp_sq: float, gc_sq: float, norm: float) -> None:
    """Fill the prompt share of the gradient, the two parts' norms and their cosine into ``rec``."""
    g_sq = norm**2
    rec.prompt_grad_share = dot / g_sq if g_sq > 0 else None
    rec.prompt_grad_norm = math.sqrt(gp_sq)
    rec.completion_grad_norm = math.sqrt(gc_sq)
    cross = dot - gp_sq  # <g_p, g_c> = <g_p, g> - |g_p|^2
    denom = math.sqrt(gp_sq * gc_sq)
    rec.prompt_completion_grad_cos = cross / denom if denom > 0 else None
