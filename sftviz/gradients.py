"""Where the gradient comes from and where it goes, for one example.

Masking changes the loss, not the forward pass. Two consequences this module makes measurable:

* **Prompt tokens still receive gradient.** Under completion-only loss no prompt token is a *target*,
  yet every prompt token is *context* for the completion, so the loss depends on its embedding:
  ``d loss / d embedding`` is non-zero at prompt positions. The last token is a target and never an
  input (nothing comes after it), so its embedding gets exactly zero gradient under any masking.
* **Each target adds its own term to the parameter gradient.** The loss is a mean over targets, so the
  parameter gradient is a mean of per-target gradients; :func:`token_gradients` measures each one's
  norm with a single forward pass and batched backward passes (``is_grads_batched``), not one
  backward pass per token. A target's term under the masked loss and under the full loss is the same
  gradient of its own NLL, divided by a different count of targets, so it is computed once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from .checks import check_model, max_positions
from .data import IGNORE_INDEX, Example
from .loss import token_nll, weighted_mean
from .masking import loss_name


def _find_blocks(model):
    """(prefix, n) of the longest ModuleList (the transformer blocks: ``transformer.h``, ``model.layers``...)."""
    best = None
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) > 0 and (best is None or len(mod) > best[1]):
            best = (name, len(mod))
    return best


def parameter_groups(model: Any, named: list | None = None) -> tuple[list[str], list[str]]:
    """Group each parameter of ``model`` into "embeddings", "block_<i>" or "head".

    Blocks are the entries of the model's longest ``ModuleList`` (``transformer.h`` in GPT-2,
    ``model.layers`` in Llama/Qwen); "embeddings" holds the input embedding matrix (also when it is tied
    to the output layer) and position embeddings; "head" holds the rest (final norm, untied output layer).
    The training engine's per-layer gradient norms and :func:`token_gradients` both use this grouping.

    Args:
        model: a torch module.
        named: ``(name, parameter)`` pairs to group (default: the model's trainable parameters).

    Returns:
        ``(order, groups)``: the group names in model order, and the group of each pair in ``named``.
    """
    if named is None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    blocks = _find_blocks(model)
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    emb_ids = {id(p) for p in emb.parameters()} if emb is not None else set()
    groups = []
    for name, p in named:
        if blocks is not None and name.startswith(blocks[0] + "."):
            groups.append(f"block_{name[len(blocks[0]) + 1 :].split('.')[0]}")
        elif id(p) in emb_ids or any(k in name.lower() for k in ("wpe", "wte", "embed")):
            groups.append("embeddings")
        else:
            groups.append("head")
    order = ["embeddings"] + [f"block_{i}" for i in range(blocks[1] if blocks else 0)] + ["head"]
    order = [g for g in order if g in groups] + sorted(set(groups) - set(order))
    return order, groups


def group_norms(model: Any, named_tensors: Iterable[tuple[str, Any]]) -> dict[str, float]:
    """L2 norm per parameter group (see :func:`parameter_groups`) of ``(name, tensor)`` pairs, e.g.
    ``(name, p.grad)``; names are the model's parameter names. Groups come in model order."""
    named = list(model.named_parameters())
    order, groups = parameter_groups(model, named)
    group_of = dict(zip((n for n, _ in named), groups))
    sq: dict = {}
    for name, t in named_tensors:
        if t is None:
            continue
        if name not in group_of:
            raise ValueError(
                f"{name!r} is not a parameter name of this model; pass (name, tensor) pairs from model.named_parameters()."
            )
        g = group_of[name]
        sq[g] = sq.get(g, 0.0) + float(t.detach().float().pow(2).sum())
    return {g: sq[g] ** 0.5 for g in order if g in sq}


@dataclass
class TokenGradients:
    """Gradients of one example under completion-only ("masked") and full ("unmasked") loss.

    All lists have one entry per position of the example.

    "Masked" is the loss the example trains with: its labels and weights (completion-only for an
    example built with ``masking="completion"``, the default); "full" trains every target equally.

    Attributes:
        input_grad_masked / input_grad_full: norm of d loss / d (input embedding) at each position.
        target_grad: norm of each trained target's own term in the parameter gradient of the
            masked loss (None where the token is not trained, or was skipped).
        target_grad_full: the same under the full loss, for every target (None at position 0, and
            where ``token_gradients(targets=...)`` skipped it).
        cosine: cosine similarity between the masked and the full parameter gradients.
        layer_norms_masked / layer_norms_full: gradient norm per parameter group.
        loss_masked / loss_full: the two losses (nats per target token).
        masked_name: what the masked loss is, for labels: "completion-only", "prompt weight 0.1",
            "prompt-only", "every-target" (an example built with ``masking="full"``: the same as the
            full loss), or "trained tokens" (labels edited with ``set_trained``).
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
    masked_name: str = "completion-only"

    def __repr__(self):
        return (
            f"TokenGradients({len(self.positions)} positions, loss masked {self.loss_masked:.3f} / full "
            f"{self.loss_full:.3f} nats, cosine {self.cosine:.2f})"
        )


def _per_target_norms(losses, params, chunk, progress):
    """Norm of the parameter gradient of each entry of ``losses``: one batched backward per chunk
    (``is_grads_batched``), or a plain backward per entry when ``chunk`` is 1 (less memory)."""
    n = losses.shape[0]
    out = torch.zeros(n, dtype=torch.float64)
    eye = torch.eye(n, dtype=losses.dtype, device=losses.device)
    starts = range(0, n, chunk)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="per-target gradients", unit="target", leave=False)
    try:
        for start in starts:
            rows = eye[start : start + chunk]
            if chunk == 1:
                grads = [
                    g[None] if g is not None else None
                    for g in torch.autograd.grad(losses[start], params, retain_graph=True, allow_unused=True)
                ]
            else:
                grads = torch.autograd.grad(
                    losses, params, grad_outputs=rows, is_grads_batched=True, retain_graph=True, allow_unused=True
                )
            sq = torch.zeros(rows.shape[0], dtype=torch.float64, device=losses.device)
            for g in grads:
                if g is not None:
                    sq += torch.linalg.vector_norm(g.reshape(rows.shape[0], -1), dim=1).double().square()
            del grads
            out[start : start + rows.shape[0]] = sq.sqrt().cpu()
            if bar is not None:
                bar.update(rows.shape[0])
    finally:
        if bar is not None:
            bar.close()
    return out


TARGETS = ("auto", "all", "trained", "none")
#: ``targets="auto"`` computes every target's own gradient while that is at most this many parameters
#: times targets (the bundled model: any example; SmolLM2-135M: up to 7 targets), else the trained ones.
AUTO_ALL_LIMIT = 1_000_000_000
#: Bytes a chunk of ``c`` per-target gradients needs, as a multiple of ``c`` times the parameters' bytes:
#: the gradients themselves plus autograd's batched intermediates (on SmolLM2-135M, a chunk of 3 peaked
#: 1.45 GiB above a chunk of 1, whose gradients take 0.5 GiB each).
CHUNK_COST = 1.5
#: What ``chunk="auto"`` lets a chunk use: a quarter of the memory available when the work starts, and at
#: most 1 GiB (batching per-target gradients saves time on a small model, not on a large one).
CHUNK_SHARE, CHUNK_CAP = 0.25, 1 << 30


def available_memory(device: Any) -> int | None:
    """Bytes available for new tensors on ``device`` now: free GPU memory, or the system's available
    memory for the CPU (Linux ``MemAvailable``); None where it cannot be read."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def gradient_cost(model: Any, example: Example, *, targets: str = "auto", chunk: int | str = "auto") -> dict:
    """What :func:`token_gradients` will cost before it runs: a dict with ``targets`` and ``chunk`` (the
    ones it will use, ``"auto"`` resolved), ``n_targets`` (how many per-target gradients),
    ``backward_passes`` (how many backward passes: one per chunk of targets, plus two),
    ``peak_bytes`` (an estimate of the memory it adds on top of the model) and ``available_bytes`` (what
    the device has free now, or None).

    ``chunk="auto"`` takes the largest chunk (at most 16) whose gradients fit in a quarter of the memory
    available now and in 1 GiB: 16 for the bundled model, 1 for a model of a hundred million parameters
    or more."""
    if not isinstance(example, Example):
        raise TypeError(f"example must be an sftviz Example (from sv.build_example); got {type(example).__name__}.")
    check_model(model)
    if targets not in TARGETS:
        raise ValueError(f"targets must be one of {TARGETS}; got {targets!r}.")
    params = [p for p in model.parameters() if p.requires_grad]
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    device = next(model.parameters()).device
    free = available_memory(device)
    if chunk == "auto":
        budget = min(CHUNK_SHARE * free, CHUNK_CAP) if free is not None else CHUNK_CAP
        chunk = int(max(1, min(16, budget // max(CHUNK_COST * param_bytes, 1))))
    elif isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer or 'auto'; got {chunk!r}.")
    n = len(example)
    counts = {"all": n - 1, "trained": sum(1 for lab in example.labels[1:] if lab != IGNORE_INDEX), "none": 0}
    if targets == "auto":
        n_params = sum(p.numel() for p in params)
        targets = "all" if n_params * counts["all"] <= AUTO_ALL_LIMIT else "trained"
    n_targets = counts[targets]
    vocab = getattr(getattr(model, "config", None), "vocab_size", 0) or 0
    # The masked and full gradients are kept (2x the parameters); a chunk adds its own; the logits and
    # their gradient are n x vocab floats, a few times over.
    peak = 2 * param_bytes + (CHUNK_COST * min(chunk, n_targets) * param_bytes if n_targets else 0) + 8 * n * vocab * 4
    return {
        "targets": targets,
        "chunk": chunk,
        "backward_passes": 2 + -(-n_targets // chunk),
        "n_targets": n_targets,
        "peak_bytes": int(peak),
        "available_bytes": free,
    }


def masked_name(example: Example) -> str:
    """A short name for the loss ``example`` trains with (its labels and weights)."""
    return loss_name(example.masking)


def token_gradients(
    model: Any,
    tok: Any,
    example: Example,
    *,
    targets: str = "auto",
    chunk: int | str = "auto",
    progress: bool | None = None,
) -> TokenGradients:
    """Measure, for one example, how masking changes where gradient flows.

    Args:
        model, tok: from ``sv.load_model()``. The model's weights are not changed and no optimiser
            state is touched; gradients are computed with ``torch.autograd.grad``.
        example: an :class:`~sftviz.data.Example`. Its labels and weights define the "masked" loss:
            the completion only for ``masking="completion"``; a prompt-loss weight, or labels edited
            with ``set_trained`` (in TokenView, say), are followed as they are.
        targets: whose per-target parameter-gradient norms to compute: ``"all"`` (every target, as the
            full loss needs), ``"auto"`` (the default: ``"all"`` while the model's parameters times the
            example's targets are at most a billion, as for the bundled model, else ``"trained"``: on
            SmolLM2-135M every target of a 46-token example means 45 backward passes), ``"trained"``
            (the trained targets only: the masked view, several times faster on long prompts), or
            ``"none"`` (skip them: input-embedding gradients, cosine and layer norms only).
        chunk: how many per-target gradients to batch in one backward pass (memory vs speed). ``"auto"``
            (the default) chooses from the model's size and the memory available now (see
            :func:`gradient_cost`): 16 for the bundled model, 1 for SmolLM2-135M.
        progress: a progress bar over the per-target gradients; None (the default) shows one when
            there is more than one chunk of targets on a model of 10 M parameters or more.

    Before any work, the memory it needs is estimated (:func:`gradient_cost`); if that is more than the
    device has available, it stops with a ValueError that says what to change, instead of being killed
    for running out of memory.

    Returns:
        A :class:`TokenGradients`. A target's term in the masked loss is its NLL times its weight divided
        by the total weight (the number of completion targets, for completion-only), so the terms add
        up (as vectors) to the masked parameter gradient; in the full loss it is divided by the number
        of all targets. Norms that were not computed (see ``targets``) are None.

    Example:
        >>> g = token_gradients(model, tok, sv.build_example(tok, prompt="Q: Hi?\\nA:", completion=" Hello"))
        >>> g.input_grad_masked[-1]  # only the unscored prediction at the last position sees the last token
        0.0
    """
    targets, chunk, progress, weights = _plan(model, example, targets, chunk, progress)
    n = len(example)
    # Positions whose own per-target gradient is computed (position 0 is never a target).
    wanted = {"all": list(range(1, n)), "trained": [t for t in range(1, n) if weights[t] > 0], "none": []}[targets]
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    g = _gradients(model, example, weights, [p for _, p in named], wanted, chunk, progress)
    names = [name for name, _ in named]
    target_grad, target_grad_full = [None] * n, [None] * n
    for t, own in zip(wanted, g["own"]):
        target_grad_full[t] = own / (n - 1)
        if weights[t] > 0:
            target_grad[t] = own * weights[t] / sum(weights)
    return TokenGradients(
        positions=list(range(n)),
        tokens=list(example.tokens),
        segments=list(example.segments),
        trained=[int(v != IGNORE_INDEX) for v in example.labels],
        input_grad_masked=g["masked"][0][0].norm(dim=-1).tolist(),
        input_grad_full=g["full"][0][0].norm(dim=-1).tolist(),
        target_grad=target_grad,
        target_grad_full=target_grad_full,
        cosine=_cosine(g["masked"][1:], g["full"][1:]),
        layer_norms_masked=group_norms(model, zip(names, g["masked"][1:])),
        layer_norms_full=group_norms(model, zip(names, g["full"][1:])),
        loss_masked=g["loss_masked"],
        loss_full=g["loss_full"],
        example=example,
        masked_name=masked_name(example),
    )


def _plan(model: Any, example: Example, targets: str, chunk: int | str, progress: bool | None) -> tuple:
    """Check token_gradients' inputs and size its work: (targets, chunk, progress, per-target weights)."""
    if not isinstance(example, Example):
        raise TypeError(f"example must be an sftviz Example (from sv.build_example); got {type(example).__name__}.")
    check_model(model)
    if targets not in TARGETS:
        raise ValueError(f"targets must be one of {TARGETS}; got {targets!r}.")
    if len(example) < 2:
        raise ValueError(
            "The example has fewer than 2 tokens, so nothing is predicted; give it a prompt and a completion."
        )
    _check_fits(model, example)
    # The example's own objective: the weight of each target (0 where the label is -100; never position 0).
    weights = [0.0] + [
        float(w) if lab != IGNORE_INDEX else 0.0 for lab, w in zip(example.labels[1:], example.weights[1:])
    ]
    if sum(weights) <= 0:
        raise ValueError(
            "The example trains no token (every label is -100), so its loss is undefined; "
            "build it with a completion, or mark a token trained with set_trained."
        )
    cost = gradient_cost(model, example, targets=targets, chunk=chunk)
    if cost["available_bytes"] is not None and cost["peak_bytes"] > cost["available_bytes"]:
        raise ValueError(
            f"token_gradients would need about {cost['peak_bytes'] / 2**30:.1f} GiB for {cost['n_targets']} "
            f"per-target gradients in chunks of {cost['chunk']}, and {cost['available_bytes'] / 2**30:.1f} GiB "
            "is available. Use targets='trained' (the trained targets only) or targets='none' (no per-target "
            "norms), a smaller chunk, or a shorter example."
        )
    if progress is None:
        n_params = sum(p.numel() for p in model.parameters())
        progress = n_params >= 10_000_000 and cost["backward_passes"] > 3
    return cost["targets"], cost["chunk"], bool(progress), weights


def _check_fits(model: Any, example: Example) -> None:
    """The example fits the model: no longer than its context, no token id beyond its vocabulary."""
    limit = max_positions(model)
    if limit is not None and len(example) > limit:
        raise ValueError(f"The example has {len(example)} tokens but the model reads at most {limit}; shorten it.")
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is not None and max(example.input_ids) >= vocab:
        raise ValueError(
            f"The example has token id {max(example.input_ids)} but the model's vocabulary has {vocab} entries: "
            "it was built with another tokenizer."
        )


def _gradients(
    model: Any, example: Example, weights: list[float], params: list, wanted: list[int], chunk: int, progress: bool
) -> dict:
    """One forward pass; the gradients of the masked and the full loss with respect to the input
    embeddings and the parameters, and the norm of each ``wanted`` target's own parameter gradient."""
    device = next(model.parameters()).device
    ids = torch.tensor([example.input_ids], device=device)
    wvec = torch.tensor(weights, device=device, dtype=torch.float32)
    was_training = model.training
    model.eval()  # no dropout: the gradients describe the model as it is
    try:
        with torch.enable_grad():
            # Kept attached to the embedding matrix, so that (tied) embeddings get their input-side
            # gradient too; autograd.grad can still return d loss / d embeds for this non-leaf tensor.
            embeds = model.get_input_embeddings()(ids)
            per = token_nll(model(inputs_embeds=embeds).logits, ids)[0]  # NLL of every token; 0 at position 0
            loss_m = weighted_mean(per, wvec)
            loss_f = per[1:].mean()
            g_m = torch.autograd.grad(loss_m, [embeds, *params], retain_graph=True, allow_unused=True)
            g_f = torch.autograd.grad(loss_f, [embeds, *params], retain_graph=bool(wanted), allow_unused=True)
            own = _per_target_norms(per[wanted], params, chunk, progress).tolist() if wanted else []
    finally:
        model.train(was_training)
    return {
        "masked": g_m,
        "full": g_f,
        "own": own,
        "loss_masked": float(loss_m.detach()),
        "loss_full": float(loss_f.detach()),
    }


def _cosine(a_grads: tuple, b_grads: tuple) -> float:
    """Cosine of two parameter gradients, summed tensor by tensor (no flat copy of all gradients). A
    parameter the forward pass does not use has no gradient under either loss."""
    dot = sq_a = sq_b = 0.0
    for a, b in zip(a_grads, b_grads):
        if a is not None and b is not None:
            a, b = a.double(), b.double()
            dot, sq_a, sq_b = dot + float((a * b).sum()), sq_a + float(a.square().sum()), sq_b + float(b.square().sum())
    return dot / max((sq_a * sq_b) ** 0.5, 1e-30)
