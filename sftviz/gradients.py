"""Where the gradient comes from and where it goes, for one example.

Masking changes the loss, not the forward pass. Two consequences this module makes measurable:

* **Prompt tokens still receive gradient.** Under completion-only loss no prompt token is a *target*,
  yet every prompt token is *context* for the completion, so the loss depends on its embedding:
  ``d loss / d embedding`` is non-zero at prompt positions. The last token is a target and never an
  input (nothing comes after it), so its embedding gets exactly zero gradient under any masking.
* **Each target adds its own term to the parameter gradient.** The loss is a mean over targets, so the
  parameter gradient is a mean of per-target gradients; :func:`token_gradients` measures each one's
  norm with a single forward pass and one batched backward pass (``is_grads_batched``), not one
  backward pass per token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .data import IGNORE_INDEX, Example
from .loss import token_nll

_BLOCK = re.compile(r"\.(?:h|layers|layer|blocks|block)\.(\d+)\.")


def parameter_group(name: str) -> str:
    """Group a parameter name into "embeddings", "block_<i>" or "head" (final norm and output layer)."""
    m = _BLOCK.search("." + name)
    if m:
        return f"block_{int(m.group(1))}"
    if any(k in name for k in ("wte", "wpe", "embed")):
        return "embeddings"
    return "head"


def group_norms(named_tensors) -> dict:
    """L2 norm per parameter group of ``(name, tensor)`` pairs (e.g. gradients); groups in model order."""
    sq: dict = {}
    for name, t in named_tensors:
        if t is None:
            continue
        g = parameter_group(name)
        sq[g] = sq.get(g, 0.0) + float(t.detach().float().pow(2).sum())
    return {g: v**0.5 for g, v in sq.items()}


@dataclass
class TokenGradients:
    """Gradients of one example under completion-only ("masked") and full ("unmasked") loss.

    All lists have one entry per position of the example.

    Attributes:
        input_grad_masked / input_grad_full: norm of d loss / d (input embedding) at each position.
        target_grad: norm of each completion target's own term in the parameter gradient of the
            masked loss (None where the token is not a completion target).
        target_grad_full: the same under the full loss, for every target (None at position 0).
        cosine: cosine similarity between the masked and the full parameter gradients.
        layer_norms_masked / layer_norms_full: gradient norm per parameter group.
        loss_masked / loss_full: the two losses (nats per target token).
    """

    positions: list
    tokens: list
    segments: list
    trained: list
    input_grad_masked: list
    input_grad_full: list
    target_grad: list
    target_grad_full: list
    cosine: float
    layer_norms_masked: dict
    layer_norms_full: dict
    loss_masked: float
    loss_full: float
    example: Example

    def __repr__(self):
        return (
            f"TokenGradients({len(self.positions)} positions, loss masked {self.loss_masked:.3f} / full "
            f"{self.loss_full:.3f} nats, cosine {self.cosine:.3f})"
        )


def _per_target_norms(losses, params, chunk):
    """Norm of the parameter gradient of each entry of ``losses`` (one batched backward per chunk)."""
    n = losses.shape[0]
    out = torch.zeros(n, dtype=torch.float64)
    eye = torch.eye(n, dtype=losses.dtype, device=losses.device)
    for start in range(0, n, chunk):
        rows = eye[start : start + chunk]
        grads = torch.autograd.grad(losses, params, grad_outputs=rows, is_grads_batched=True, retain_graph=True, allow_unused=True)
        sq = torch.zeros(rows.shape[0], dtype=torch.float64, device=losses.device)
        for g in grads:
            if g is not None:
                sq += g.reshape(rows.shape[0], -1).double().pow(2).sum(1)
        out[start : start + rows.shape[0]] = sq.sqrt().cpu()
    return out


def token_gradients(model, tok, example: Example, *, chunk: int = 16) -> TokenGradients:
    """Measure, for one example, how masking changes where gradient flows.

    Args:
        model, tok: from ``sv.load_model()``. The model's weights are not changed and no optimiser
            state is touched; gradients are computed with ``torch.autograd.grad``.
        example: an :class:`~sftviz.data.Example` (its completion mask decides what "masked" trains).
        chunk: how many per-target gradients to batch in one backward pass (memory vs speed).

    Returns:
        A :class:`TokenGradients`. Per-target gradient norms of the masked loss are for the summed loss
        of each target divided by the number of completion targets, so they add up (as vectors) to the
        masked parameter gradient.
    """
    if not isinstance(example, Example):
        raise TypeError(f"example must be an sftviz Example (from sv.build_example); got {type(example).__name__}.")
    if not callable(model) or not hasattr(model, "get_input_embeddings"):
        raise TypeError(f"Expected a Hugging Face causal language model, got {type(model).__name__}.")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer; got {chunk!r}.")
    device = next(model.parameters()).device
    ids = torch.tensor([example.input_ids], device=device)
    was_training = model.training
    model.eval()  # no dropout: the gradients describe the model as it is
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    names, params = [n for n, _ in named], [p for _, p in named]
    try:
        with torch.enable_grad():
            # Kept attached to the embedding matrix, so that (tied) embeddings get their input-side
            # gradient too; autograd.grad can still return d loss / d embeds for this non-leaf tensor.
            embeds = model.get_input_embeddings()(ids)
            logits = model(inputs_embeds=embeds).logits
            per = token_nll(logits, ids)[0]  # (T,) NLL of every token given its prefix; 0 at position 0
            cmask = torch.tensor(example.completion_mask, device=device, dtype=torch.bool)
            full_mask = torch.zeros_like(cmask)
            full_mask[1:] = True
            n_c, n_f = int(cmask.sum()), int(full_mask.sum())
            loss_m = per[cmask].sum() / n_c
            loss_f = per[full_mask].sum() / n_f
            g_m = torch.autograd.grad(loss_m, [embeds] + params, retain_graph=True, allow_unused=True)
            g_f = torch.autograd.grad(loss_f, [embeds] + params, retain_graph=True, allow_unused=True)
            targets_m = _per_target_norms(per[cmask] / n_c, params, chunk)
            targets_f = _per_target_norms(per[full_mask] / n_f, params, chunk)
    finally:
        model.train(was_training)

    def flat(gs):
        return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).double() for g, p in zip(gs, params)])

    vm, vf = flat(g_m[1:]), flat(g_f[1:])
    cosine = float(torch.dot(vm, vf) / (vm.norm() * vf.norm()).clamp_min(1e-30))
    n = len(example)
    target_grad = [None] * n
    for k, t in enumerate(torch.nonzero(cmask).flatten().tolist()):
        target_grad[t] = float(targets_m[k])
    target_grad_full = [None] + [float(v) for v in targets_f]
    return TokenGradients(
        positions=list(range(n)),
        tokens=list(example.tokens),
        segments=list(example.segments),
        trained=[int(v != IGNORE_INDEX) for v in example.labels],
        input_grad_masked=g_m[0][0].norm(dim=-1).tolist(),
        input_grad_full=g_f[0][0].norm(dim=-1).tolist(),
        target_grad=target_grad,
        target_grad_full=target_grad_full,
        cosine=cosine,
        layer_norms_masked=group_norms(zip(names, g_m[1:])),
        layer_norms_full=group_norms(zip(names, g_f[1:])),
        loss_masked=float(loss_m.detach()),
        loss_full=float(loss_f.detach()),
        example=example,
    )
