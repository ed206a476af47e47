"""Fine-tuning: the same model, data and seed under masked, unmasked and weighted losses.

:func:`finetune` is a small, fast training loop written for watching SFT happen: every step records
the objective it optimised *and* the prompt NLL and completion NLL measured honestly whatever the
masking (and whatever injected fault), per-layer gradient norms and the share of the gradient that comes
from prompt targets; every ``eval_every`` steps it measures log Pr(y|x) and log Pr(x) per token on
held-out data and greedy exact match. :func:`compare_masking` runs several maskings from the same start.

How a step works (and why it is fast on a CPU):

* All examples are tokenized once and padded into one table; a step picks rows with a
  ``torch.Generator`` seeded from ``seed`` and trims the padding to the longest row picked.
* Padding is on the right and the model is causal, so real tokens never attend to padding: the
  body runs with an all-ones attention mask (the fast causal kernel; outputs at real tokens are
  identical) and without the last column (the last token of ``[x, y]`` is a target, never an input).
* The output projection to the vocabulary is applied with gradient only where a trained target is
  predicted (the supervised-only head, as in :func:`sftviz.supervised_head_loss`) and without gradient
  where a target is only *measured* (e.g. prompt tokens under completion-only loss).
* Gradient accumulation divides every micro-batch's summed loss by the total weight of the whole step,
  so the step's loss is one ratio of sums, exactly as with one big batch.
"""

from __future__ import annotations

import copy
import hashlib
import math
import numbers
import time
import warnings
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from ._memory import reuse_large_buffers
from .collate import collate_examples
from .data import IGNORE_INDEX, Example, build_example, check_masking
from .faults import apply_label_fault, get_fault
from .faults import accum_mean_of_means as _accum_mean_of_means
from .faults import per_sequence_mean as _per_sequence_mean
from .gradients import parameter_groups
from .loss import _head_is_plain, target_masks
from .modeling import resolve_device
from .runs import TIMING_KEYS, Run, load_run

__all__ = [
    "CallbackError",
    "Run",
    "TIMING_KEYS",
    "TrainingDivergedWarning",
    "compare_masking",
    "finetune",
    "load_run",
]

HEADS = ("auto", "supervised", "full")
PRECISIONS = ("auto", "fp32", "bf16")
BETAS = (0.9, 0.999)
EPS = 1e-8


class TrainingDivergedWarning(UserWarning):
    """The loss or the gradient became NaN or infinite; the run stopped (see ``run.error``)."""


class CallbackError(RuntimeError):
    """A callback raised. ``err.run`` is the run up to that point (its history is kept)."""

    def __init__(self, message, *, run, callback):
        super().__init__(message)
        self.run = run
        self.callback = callback


# ==============================================================================================
# Argument checks
# ==============================================================================================


def _int(value, name, minimum, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} ({value!r}).")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}; got {value}.")
    return int(value)


def _float(value, name, minimum=None, positive=False, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r}).")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value}.")
    if positive and value <= 0:
        raise ValueError(f"{name} must be positive; got {value}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}; got {value}.")
    return value


def _check_bool(value, name):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {value!r}.")
    return value


def _callbacks(callbacks):
    if callbacks is None:
        return []
    if callable(callbacks):
        return [callbacks]
    if isinstance(callbacks, (str, bytes)) or not hasattr(callbacks, "__iter__"):
        raise TypeError("callbacks must be a callable or a list of callables, each called as cb(record, run).")
    out = list(callbacks)
    for i, cb in enumerate(out):
        if not callable(cb):
            raise TypeError(f"callbacks[{i}] is a {type(cb).__name__}, not a function; each is called as cb(record, run).")
    return out


def _callback_name(cb) -> str:
    name = getattr(cb, "__qualname__", None) or getattr(cb, "__name__", None) or type(cb).__name__
    return str(name)


def _check_model(model):
    if not (callable(model) and hasattr(model, "parameters") and hasattr(model, "get_output_embeddings")):
        raise TypeError(
            f"Expected a Hugging Face causal language model (from sv.load_model), got {type(model).__name__}."
        )


def _max_positions(model):
    cfg = getattr(model, "config", None)
    for key in ("n_positions", "max_position_embeddings"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v > 1:
            return v
    return None


# ==============================================================================================
# Data: every example built once, padded once
# ==============================================================================================


def _prepare_examples(tok, data, masking, max_length, name="data") -> list:
    """Examples for ``data`` (TRL rows or Examples) under ``masking``; errors name the row."""
    if isinstance(data, (str, bytes, dict)) or not isinstance(data, (list, tuple)):
        raise TypeError(
            f"{name} must be a list of {{'prompt', 'completion'}} or {{'messages'}} rows (or Examples); got "
            f"{type(data).__name__}. Load one with sv.load_dataset('support')."
        )
    if not data:
        raise ValueError(f"{name} is empty: give at least one example.")
    out, merged = [], []
    for i, item in enumerate(data):
        if isinstance(item, Example):
            ex = item if item.masking == masking or item.masking == "custom" else item.with_masking(masking)
        elif isinstance(item, dict):
            try:
                if "messages" in item:
                    ex = build_example(tok, messages=item["messages"], masking=masking, max_length=max_length, warn=False)
                elif "prompt" in item and "completion" in item:
                    ex = build_example(
                        tok, prompt=item["prompt"], completion=item["completion"], masking=masking,
                        max_length=max_length, warn=False,
                    )
                else:
                    raise ValueError(
                        f"it has keys {sorted(item)}; each row needs 'prompt' and 'completion' strings, or 'messages'."
                    )
            except (ValueError, TypeError) as err:
                raise type(err)(f"{name}[{i}]: {err}") from err
        else:
            raise TypeError(f"{name}[{i}] is a {type(item).__name__}; expected a dict row or an sftviz Example.")
        if max_length is not None and len(ex) > max_length:
            raise ValueError(
                f"{name}[{i}] has {len(ex)} tokens but the model reads at most {max_length}; rebuild it with "
                f"max_length={max_length} or pass the raw rows."
            )
        if ex.boundary_note is not None:
            merged.append(i)
        out.append(ex)
    if merged:
        from .data import BoundaryMergeWarning

        warnings.warn(
            f"{len(merged)} of {len(out)} examples in {name} have tokens merging across the prompt/completion "
            f"boundary (first: {name}[{merged[0]}]: {out[merged[0]].boundary_note.message})",
            BoundaryMergeWarning,
            stacklevel=3,
        )
    return out


def _fingerprint(examples) -> str:
    """A short hash of the tokens and their prompt/completion split (not of the masking-specific labels,
    so runs of :func:`compare_masking` share it; hand-edited labels are included)."""
    h = hashlib.sha256()
    for ex in examples:
        parts = (ex.input_ids, ex.completion_mask) + ((ex.labels, ex.weights) if ex.masking == "custom" else ())
        h.update(repr(parts).encode())
    return h.hexdigest()[:16]


def _describe_data(examples) -> dict:
    kinds = {"chat" if "messages" in ex.source else "prompt/completion" for ex in examples}
    return {
        "n_examples": len(examples),
        "format": "/".join(sorted(kinds)),
        "n_tokens": sum(len(ex) for ex in examples),
        "fingerprint": _fingerprint(examples),
    }


class _Table:
    """The whole training set as padded tensors, targets already shifted (column t predicts token t+1)."""

    def __init__(self, examples, pad_id, eos_id, fault, device):
        batch = collate_examples(examples, pad_id, extras=True)
        batch = apply_label_fault(fault, batch, eos_id=eos_id, pad_id=pad_id)
        ids, att, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        weights = batch["loss_weights"] * (labels != IGNORE_INDEX)
        weights[:, 0] = 0.0
        prm, comp = target_masks(ids, batch["completion_mask"], att, batch["prompt_mask"])
        self.lengths = att.sum(1)
        self.ids = ids.to(device)
        self.train_tgt = labels[:, 1:].clamp_min(0).to(device)  # -100 -> 0 where the weight is 0
        self.train_w = weights[:, 1:].contiguous().to(device)
        self.true_tgt = ids[:, 1:].contiguous().to(device)
        self.is_prompt = prm[:, 1:].contiguous().to(device)
        self.is_comp = comp[:, 1:].contiguous().to(device)
        # Per-example totals, summed per step without touching the big tensors.
        w = self.train_w
        self.per_example = torch.stack(
            [
                w.sum(1),  # 0 total loss weight
                (w * self.is_prompt).sum(1),  # 1 weight on prompt targets
                (w > 0).sum(1).float(),  # 2 trained targets
                self.is_prompt.sum(1).float(),  # 3 prompt targets
                self.is_comp.sum(1).float(),  # 4 completion targets
                att.sum(1).float().to(device),  # 5 real tokens
            ],
            dim=1,
        )
        self.n = ids.shape[0]
        # Targets past an example's own end (only the padding_trained fault makes them): how many a step
        # trains then depends on how far each micro-batch is padded, so step() counts them on its cut.
        past_end = torch.arange(w.shape[1], device=w.device)[None, :] >= (self.lengths.to(w.device)[:, None] - 1)
        self.trains_padding = bool((w * past_end).any())
        # Without a label fault every trained target is the true next token: one cross-entropy serves both.
        self.labels_are_next_tokens = bool(((self.train_tgt == self.true_tgt) | (self.train_w == 0)).all())
        if not bool((self.per_example[:, 0] > 0).any()):
            raise ValueError("No example has a trained token under this masking and fault: there is nothing to train.")


class _IndexStream:
    """Row indices: successive random permutations of the data, from a seeded generator."""

    def __init__(self, n, seed):
        self.n = n
        self.gen = torch.Generator().manual_seed(int(seed))
        self.buf = torch.empty(0, dtype=torch.long)

    def take(self, k):
        while self.buf.numel() < k:
            self.buf = torch.cat([self.buf, torch.randperm(self.n, generator=self.gen)])
        out, self.buf = self.buf[:k], self.buf[k:]
        return out


# ==============================================================================================
# Parameter groups for per-layer gradient norms
# ==============================================================================================


def _param_groups(model, params_named):
    """Group order and, per parameter, the index of its group (see ``gradients.parameter_groups``)."""
    order, groups = parameter_groups(model, params_named)
    return order, torch.tensor([order.index(g) for g in groups], dtype=torch.long)


# ==============================================================================================
# Evaluation
# ==============================================================================================


class _EvalSet:
    def __init__(self, tok, examples, pad_id, n_generate, max_positions):
        self.examples = examples
        self.tok = tok
        self.pad_id = pad_id
        batch = collate_examples(examples, pad_id, extras=True)
        prm, comp = target_masks(batch["input_ids"], batch["completion_mask"], batch["attention_mask"], batch["prompt_mask"])
        self.ids = batch["input_ids"]
        self.lengths = batch["attention_mask"].sum(1)
        self.is_prompt = prm[:, 1:]
        self.is_comp = comp[:, 1:]
        special = set(getattr(tok, "all_special_ids", []) or [])
        self.gen = []
        for ex in examples[:n_generate]:
            cm = ex.completion_mask
            end = max(i for i, m in enumerate(cm) if m)
            start = end
            while start > 0 and cm[start - 1]:
                start -= 1
            prompt_ids, ref_ids = ex.input_ids[:start], ex.input_ids[start : end + 1]
            stops = {tok.eos_token_id} if tok.eos_token_id is not None else set()
            if ref_ids and ref_ids[-1] in special:
                stops.add(ref_ids[-1])
            src = ex.source
            if "prompt" in src:
                shown = src["prompt"]
            else:
                users = [m["content"] for m in src.get("messages", []) if m["role"] == "user"]
                shown = users[-1] if users else tok.decode(prompt_ids)
            self.gen.append((prompt_ids, ref_ids, stops, shown))
        self.stop_ids = sorted(set().union(*[g[2] for g in self.gen])) if self.gen else []
        longest_ref = max((len(g[1]) for g in self.gen), default=0)
        longest_prompt = max((len(g[0]) for g in self.gen), default=0)
        self.max_new = longest_ref + 8
        if max_positions is not None:
            self.max_new = max(1, min(self.max_new, max_positions - longest_prompt))

    @torch.no_grad()
    def score(self, model, device, amp, chunk=16):
        psum = csum = 0.0
        for s in range(0, self.ids.shape[0], chunk):
            n = int(self.lengths[s : s + chunk].max())
            ids = self.ids[s : s + chunk, :n].to(device)
            with amp():
                logits = model(input_ids=ids[:, :-1], attention_mask=torch.ones_like(ids[:, :-1])).logits  # right padded
            nll = F.cross_entropy(logits.float().transpose(1, 2), ids[:, 1:], reduction="none")
            isp = self.is_prompt[s : s + chunk, : n - 1].to(device)
            isc = self.is_comp[s : s + chunk, : n - 1].to(device)
            psum += float((nll * isp).sum())
            csum += float((nll * isc).sum())
        n_p, n_c = int(self.is_prompt.sum()), int(self.is_comp.sum())
        return (-psum / n_p if n_p else None), (-csum / n_c if n_c else None), n_p, n_c

    @torch.no_grad()
    def generate(self, model, device, amp):
        if not self.gen:
            return []
        from transformers import GenerationConfig

        prompts = [g[0] for g in self.gen]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        att = torch.zeros_like(ids)
        for i, p in enumerate(prompts):  # left padding: every prompt ends at the last column
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            att[i, width - len(p) :] = 1
        cfg = GenerationConfig(
            max_new_tokens=self.max_new, do_sample=False, num_beams=1, eos_token_id=self.stop_ids or None,
            pad_token_id=self.pad_id,
        )
        with amp():
            out = model.generate(input_ids=ids.to(device), attention_mask=att.to(device), generation_config=cfg)
        new = out[:, width:].tolist()
        results = []
        for (prompt_ids, ref_ids, stops, shown), gen in zip(self.gen, new):
            cut = len(gen)
            for j, t in enumerate(gen):
                if t in stops:
                    cut = j + 1
                    break
            gen = gen[:cut]
            stopped = bool(gen) and gen[-1] in stops
            ref_stops = bool(ref_ids) and ref_ids[-1] in stops
            body = gen[:-1] if stopped else gen
            ref_body = ref_ids[:-1] if ref_stops else ref_ids
            text = self.tok.decode(body, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            ref_text = self.tok.decode(ref_body, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            results.append(
                {
                    "prompt": shown,
                    "generated": text,
                    "reference": ref_text,
                    "exact": text == ref_text and stopped == ref_stops,
                    "stopped": stopped,
                }
            )
        return results


# ==============================================================================================
# The loop
# ==============================================================================================


@torch.no_grad()
def _head_matches_logits(model, body, head, device) -> bool:
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


def _lr_at(step, lr, warmup):
    return lr * min(1.0, step / warmup) if warmup else lr


class _Trainer:
    def __init__(self, model, table, *, masking, fault, batch_size, grad_accum, lr, weight_decay, warmup_steps,
                 max_grad_norm, grad_share_every, head, device, measure_every=1, precision="auto"):
        self.model = model
        self.table = table
        self.fault = fault
        self.B, self.A = batch_size, grad_accum
        self.lr, self.warmup = lr, warmup_steps
        self.max_grad_norm = max_grad_norm
        self.share_every = grad_share_every
        self.measure_every = measure_every
        self.device = device
        if precision == "auto":
            self.use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        elif precision == "bf16":
            if device.type == "cuda" and not torch.cuda.is_bf16_supported():
                raise ValueError("precision='bf16' was asked for, but this GPU does not support bfloat16; use 'fp32'.")
            if device.type not in ("cuda", "cpu"):
                raise ValueError(f"precision='bf16' is supported on CUDA and on the CPU, not on {device.type}.")
            self.use_bf16 = True
        else:
            self.use_bf16 = False
        self.precision = "bf16-autocast" if self.use_bf16 else "fp32"

        body = getattr(model, "base_model", None)
        plain = body is not None and body is not model and model.get_output_embeddings() is not None and _head_is_plain(model)
        if plain and head != "full":
            plain = _head_matches_logits(model, body, model.get_output_embeddings(), device)
        if head == "supervised" and not plain:
            raise ValueError(
                "head='supervised' needs a model whose logits are get_output_embeddings()(hidden states) "
                "(GPT-2, Llama, Qwen, ...); this one scales or caps its logits. Use head='auto' or 'full'."
            )
        self.head = "supervised" if (head == "supervised" or (head == "auto" and plain)) else "full"
        self.body = body
        self.head_mod = model.get_output_embeddings()

        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("The model has no trainable parameters (every requires_grad is False).")
        self.params = [p for _, p in named]
        self.group_names, self.group_index = _param_groups(model, named)
        self.group_index = self.group_index.to(device)
        decay = [p for p in self.params if p.dim() >= 2]
        no_decay = [p for p in self.params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
        try:
            self.opt = torch.optim.AdamW(groups, lr=lr, betas=BETAS, eps=EPS, fused=device.type in ("cpu", "cuda"))
            self.optimizer_name = "AdamW(fused)"
        except (RuntimeError, ValueError, TypeError):
            self.opt = torch.optim.AdamW(groups, lr=lr, betas=BETAS, eps=EPS)
            self.optimizer_name = "AdamW"

        if fault is not None and fault.name == "per_sequence_mean":
            self.reduction = "sequence"
        elif fault is not None and fault.name == "accum_mean_of_means":
            self.reduction = "accum"
        else:
            self.reduction = "token"

    def amp(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.use_bf16 else nullcontext()

    # -------------------------------------------------------------- one micro-batch
    def _micro(self, idx_cpu, measure=True):
        t = self.table
        missing = None  # (prompt part incomplete, completion part incomplete) when measure=False skipped some
        n = int(t.lengths[idx_cpu].max())
        T = n - 1  # the last token is a target, never an input
        idx = idx_cpu.to(self.device)
        ids_in = t.ids[idx, :T]
        w = t.train_w[idx, :T]
        tgt = t.train_tgt[idx, :T]
        true = t.true_tgt[idx, :T]
        isp, isc = t.is_prompt[idx, :T], t.is_comp[idx, :T]
        keep = w > 0
        measured = isp | isc
        with self.amp():
            if self.head == "supervised":
                # Right padding + causal attention: real tokens never attend to the padding after them, so
                # an all-ones mask gives them exactly the outputs of the padded mask, on the fast causal path.
                hidden = self.body(input_ids=ids_in, attention_mask=torch.ones_like(ids_in)).last_hidden_state
                nll_k = F.cross_entropy(self.head_mod(hidden[keep]).float(), tgt[keep], reduction="none")
                nll_true = torch.zeros(w.shape, dtype=torch.float32, device=w.device)
                nll_true[keep] = nll_k.detach()
                reuse = keep & (tgt == true)
                extra = measured & ~reuse  # measured but not trained (on its true next token): no gradient needed
                nll_true = nll_true * reuse
                if bool(extra.any()):
                    if measure:
                        with torch.no_grad():
                            logits_x = self.head_mod(hidden.detach()[extra]).float()
                            nll_true[extra] = F.cross_entropy(logits_x, true[extra], reduction="none")
                    else:
                        missing = (extra & isp).any(), (extra & isc).any()
            else:
                logits = self.model(input_ids=ids_in, attention_mask=torch.ones_like(ids_in)).logits.float()
                flat = logits.reshape(-1, logits.shape[-1])
                if t.labels_are_next_tokens:
                    nll_all = F.cross_entropy(flat, true.reshape(-1), reduction="none").view(w.shape)
                    nll_true = nll_all.detach()
                else:
                    nll_all = F.cross_entropy(flat, tgt.reshape(-1), reduction="none").view(w.shape)
                    with torch.no_grad():
                        nll_true = F.cross_entropy(flat.detach(), true.reshape(-1), reduction="none").view(w.shape)
                nll_k = nll_all[keep]
        return nll_k, w, keep, isp, nll_true * isp, nll_true * isc, missing

    def _reduce(self, nll_k, w, keep, total_w, n_seq):
        if self.reduction == "token":
            return (nll_k * w[keep]).sum() / total_w
        full = torch.zeros(w.shape, dtype=nll_k.dtype, device=nll_k.device).masked_scatter(keep, nll_k)
        if self.reduction == "sequence":
            return _per_sequence_mean(full, w, n_sequences=n_seq)
        return _accum_mean_of_means(full, w, n_micro=self.A)

    # -------------------------------------------------------------- one optimiser step
    def step(self, k, idx_cpu):
        t = self.table
        idx_all = idx_cpu.to(self.device)
        tot = t.per_example[idx_all].sum(0)  # weight, prompt weight, trained, prompt targets, completion targets, tokens
        if t.trains_padding:  # count the weights on each micro-batch as _micro cuts it
            cut = torch.zeros(3, device=self.device)
            for idx in idx_cpu.split(self.B):
                T = int(t.lengths[idx].max()) - 1
                w = t.train_w[idx.to(self.device), :T]
                cut += torch.stack([w.sum(), (w * t.is_prompt[idx.to(self.device), :T]).sum(), (w > 0).sum().float()])
            tot = torch.cat([cut, tot[3:]])
        # A step whose examples have no trained target at all (possible only with custom labels or faults) adds 0.
        total_w = tot[0].clamp_min(1e-12)
        n_seq = (t.per_example[idx_all, 0] > 0).sum().clamp_min(1)
        share_step = self.share_every is not None and (k == 1 or k % self.share_every == 0)
        if share_step:
            wp, wt = float(tot[1]), float(tot[0])
            share_step = 0.0 < wp < wt  # both parts present: otherwise the share is exactly 0 or 1
        for g in self.opt.param_groups:
            g["lr"] = _lr_at(k, self.lr, self.warmup)
        self.opt.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=self.device)
        psum = torch.zeros((), device=self.device)
        csum = torch.zeros((), device=self.device)
        gp = None
        measure = self.measure_every is not None and (k == 1 or k % self.measure_every == 0)
        miss_p = miss_c = False
        for idx in idx_cpu.split(self.B):
            nll_k, w, keep, isp, p_nll, c_nll, missing = self._micro(idx, measure)
            if missing is not None:
                miss_p, miss_c = miss_p or bool(missing[0]), miss_c or bool(missing[1])
            loss = self._reduce(nll_k, w, keep, total_w, n_seq)
            if share_step:
                loss_p = self._reduce(nll_k * isp[keep], w, keep, total_w, n_seq)
                grads = torch.autograd.grad(loss_p, self.params, retain_graph=True, allow_unused=True)
                grads = [torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads)]
                gp = grads if gp is None else [a + b for a, b in zip(gp, grads)]
            loss.backward()
            loss_sum += loss.detach()
            psum += p_nll.sum()
            csum += c_nll.sum()

        have = [i for i, p in enumerate(self.params) if p.grad is not None]
        grads = [self.params[i].grad for i in have]
        norms = torch.stack(torch._foreach_norm(grads)).float() if grads else torch.zeros(0, device=self.device)
        group_sq = torch.zeros(len(self.group_names), device=self.device).index_add_(
            0, self.group_index[have] if have else self.group_index[:0], norms.square()
        )
        total_norm = group_sq.sum().sqrt()
        extra = []
        if share_step:
            gpf = [gp[i] for i in have]
            dot = sum((a.float() * b.float()).sum() for a, b in zip(gpf, grads))
            gp_sq = sum(a.float().square().sum() for a in gpf)
            gc_sq = sum((b.float() - a.float()).square().sum() for a, b in zip(gpf, grads))
            extra = [dot, gp_sq, gc_sq]
        scalars = torch.cat(
            [torch.stack([loss_sum, psum, csum, total_norm]), group_sq.sqrt(), tot,
             torch.stack(extra) if extra else torch.zeros(0, device=self.device)]
        ).tolist()
        loss_v, psum_v, csum_v, norm_v = scalars[:4]
        G = len(self.group_names)
        group_norms = scalars[4 : 4 + G]
        total_wv, prompt_wv, n_trained, n_p, n_c, n_tok = scalars[4 + G : 10 + G]
        finite = math.isfinite(loss_v) and math.isfinite(norm_v)
        if finite:
            if self.max_grad_norm is not None and grads:
                coef = (self.max_grad_norm / (total_norm + 1e-6)).clamp(max=1.0)
                torch._foreach_mul_(grads, coef)
            self.opt.step()
        rec = {
            "kind": "train",
            "step": k,
            "loss": loss_v,
            "prompt_nll": psum_v / n_p if n_p and not miss_p else None,
            "completion_nll": csum_v / n_c if n_c and not miss_c else None,
            "n_trained": int(n_trained),
            "n_prompt_targets": int(n_p),
            "n_completion_targets": int(n_c),
            "n_tokens": int(n_tok),
            "grad_norm": norm_v,
            "grad_norm_groups": dict(zip(self.group_names, group_norms)),
            "prompt_grad_share": None,
            "prompt_grad_norm": None,
            "completion_grad_norm": None,
            "prompt_completion_grad_cos": None,
            "lr": self.opt.param_groups[0]["lr"],
        }
        if prompt_wv == 0.0:
            rec["prompt_grad_share"] = 0.0
        elif prompt_wv == total_wv:
            rec["prompt_grad_share"] = 1.0
        elif extra:
            dot, gp_sq, gc_sq = scalars[10 + G : 13 + G]
            g_sq = norm_v**2
            rec["prompt_grad_share"] = dot / g_sq if g_sq > 0 else None
            rec["prompt_grad_norm"] = math.sqrt(gp_sq)
            rec["completion_grad_norm"] = math.sqrt(gc_sq)
            cross = dot - gp_sq  # <g_p, g_c> = <g_p, g> - |g_p|^2
            denom = math.sqrt(gp_sq * gc_sq)
            rec["prompt_completion_grad_cos"] = cross / denom if denom > 0 else None
        return rec, finite


def _nan_message(k, loss, grad_norm, lr):
    what = "loss" if not math.isfinite(loss) else "gradient norm"
    value = loss if what == "loss" else grad_norm
    return (
        f"The {what} became {value} at step {k}, so training stopped (this step was not applied; the model "
        f"keeps the weights of step {k - 1}). Likely cause: the learning rate {lr:g} is too high, try 10 times "
        "smaller or add warmup_steps; other causes: a batch with no trained token under a custom loss, or "
        "float16 overflow."
    )


def finetune(
    model,
    tok,
    data,
    masking="completion",
    *,
    steps=200,
    batch_size=16,
    lr=1e-3,
    seed=0,
    device="auto",
    eval_data=None,
    eval_every=50,
    callbacks=(),
    grad_accum=1,
    fault=None,
    stop=None,
    progress=True,
    copy_model=True,
    weight_decay=0.0,
    warmup_steps=0,
    max_length=None,
    eval_examples=8,
    head="auto",
    max_grad_norm=1.0,
    grad_share_every=10,
    measure_every=1,
    precision="auto",
) -> Run:
    """Fine-tune a causal LM on ``[prompt, completion]`` examples and record everything about it.

    Args:
        model, tok: from ``sv.load_model()`` (any Hugging Face causal LM works).
        data: a list of TRL rows (``{"prompt", "completion"}`` or ``{"messages"}``) or sftviz Examples.
            Examples are rebuilt for ``masking`` unless they already have it (or were edited by hand:
            ``masking == "custom"``, whose labels are used as they are).
        masking: "completion" (loss on the completion only), "full" (loss on every token), a
            prompt-loss weight in [0, 1] (weight w on prompt targets, 1 on completion targets), or
            "prompt" (the prompt only: the inverted mask).
        steps: optimiser steps. batch_size: examples per micro-batch. grad_accum: micro-batches per
            step (the step sees ``batch_size * grad_accum`` examples; the loss is one ratio of sums over
            all their trained tokens).
        lr, weight_decay, warmup_steps, max_grad_norm: AdamW (betas 0.9/0.999) with linear warmup to
            ``lr`` over ``warmup_steps`` then a constant rate; weight decay on matrices only; gradients
            clipped to ``max_grad_norm`` (None: no clipping). ``grad_norm`` is measured before clipping.
        seed: seeds the batch order (a ``torch.Generator``) and dropout (in a forked RNG, so the global
            random state is untouched). The same seed on the same machine gives the same history
            (on the CPU; some GPU kernels are not bit-for-bit deterministic).
        device: "auto" (CUDA, else MPS, else CPU), "cpu", "cuda", ... On the CPU under Linux, freed
            buffers above 32 MiB are kept for reuse during the run (glibc's ``mallopt``; restored and
            trimmed afterwards; ``SFTVIZ_NO_MALLOPT=1`` turns it off): it saves page faults that cost
            about a tenth of a step on GPT-2-sized models.
        precision: "auto" (bf16 autocast on a CUDA GPU that supports it, fp32 elsewhere), "fp32", or
            "bf16" (bf16 autocast also on the CPU: faster on CPUs with bf16 instructions, with loss values
            a little less precise). Weights, optimiser state and the loss reduction stay in fp32.
        eval_data: rows or Examples to evaluate on (None: no evaluation). Evaluated before training
            (step 0), every ``eval_every`` steps (None: only at the start and the end) and at the end.
        eval_examples: how many eval examples to decode greedily for exact match (0: none).
        callbacks: functions called as ``cb(record, run)`` after every step (``record["kind"] ==
            "train"``) and every evaluation (``"eval"``). If one raises, the run stops and a
            :class:`CallbackError` naming it is raised, with the run so far in ``err.run``.
        fault: None or a name from :data:`sftviz.faults.FAULTS`: trains with that bug switched on while
            every measurement stays correct.
        stop: None or an object with ``is_set()`` (e.g. ``threading.Event``), checked before every
            step; when set, the run ends cleanly (``status="stopped"``). KeyboardInterrupt does the same.
        progress: show a tqdm progress bar.
        copy_model: train a deep copy (default), so the caller's model stays as it was; with False the
            caller's model is trained in place.
        max_length: cut prompts from the left to fit (default: the model's context length).
        head: "auto" (the supervised-only head when the model allows it), "supervised" or "full"
            (full logits, as ``model(...).logits``): the same loss and gradients, different speed.
        grad_share_every: measure ``prompt_grad_share`` on step 1 and every this many steps (None: never).
        measure_every: measure the NLL of targets that are *not* trained (the prompt under
            completion-only loss) on step 1 and every this many steps (default 1: every step; None:
            never). This costs a no-grad pass of the output layer over those positions, which is
            noticeable only for large vocabularies; on other steps the part not measured is None.

    Returns:
        A :class:`~sftviz.runs.Run`. ``run.history`` has one record per step:

        * ``step``, ``loss`` (the objective optimised, after any fault), ``lr``, ``seconds`` (this
          step's wall time) and ``elapsed`` (since the start);
        * ``prompt_nll``, ``completion_nll``: mean NLL per prompt / completion target token of the
          batch (nats), measured with the true next tokens whatever the masking or fault (None when
          the batch has no such target, or on a step skipped by ``measure_every``), before this step's
          update;
        * ``n_trained`` (targets with a non-zero weight), ``n_prompt_targets``, ``n_completion_targets``,
          ``n_tokens`` (real tokens, prompt included);
        * ``grad_norm`` (global, before clipping) and ``grad_norm_groups`` ("embeddings", "block_0",
          ..., "head" = final norm and untied output layer; a tied output matrix counts as embeddings);
        * ``prompt_grad_share``: the share of the step's gradient ``g`` that comes from prompt targets,
          ``<g_prompt, g> / |g|^2`` where ``g_prompt`` is the gradient of the loss terms of the prompt
          targets alone (so prompt and completion shares add up to 1; a share above 1 or below 0 means
          the two parts pull against each other). Exactly 0.0 when no prompt target carries weight
          (completion-only), 1.0 when only prompt targets do; measured with one extra backward pass on
          step 1 and every ``grad_share_every`` steps, None in between. The same steps record
          ``prompt_grad_norm``, ``completion_grad_norm`` and ``prompt_completion_grad_cos``.

        ``run.evals`` has one record per evaluation: ``step``, ``cond_logprob_per_token`` (mean
        log Pr(y|x) per completion token over ``eval_data``), ``marg_logprob_per_token`` (mean
        log Pr(x) per prompt token), ``exact_match`` (share of the first ``eval_examples`` examples
        whose greedy answer equals the reference and stops where it does), ``stop_rate`` and ``samples``.
        ``run.status`` is "finished", "stopped", "nan" (a non-finite loss or gradient: the run ends
        cleanly, keeps its history, sets ``run.error`` and warns with :class:`TrainingDivergedWarning`)
        or "error" (a callback raised).

    Example:
        >>> model, tok = sv.load_model()                                          # doctest: +SKIP
        >>> data = sv.load_dataset("support")                                     # doctest: +SKIP
        >>> run = sv.finetune(model, tok, data, masking="completion", steps=150)  # doctest: +SKIP
        >>> run.history[-1]["completion_nll"] < run.history[0]["completion_nll"]  # doctest: +SKIP
        True
    """
    t_setup = time.perf_counter()
    _check_model(model)
    from .data import _check_tokenizer

    _check_tokenizer(tok)
    masking = check_masking(masking)
    steps = _int(steps, "steps", 1)
    batch_size = _int(batch_size, "batch_size", 1)
    grad_accum = _int(grad_accum, "grad_accum", 1)
    seed = _int(seed, "seed", 0)
    lr = _float(lr, "lr", positive=True)
    weight_decay = _float(weight_decay, "weight_decay", minimum=0.0)
    warmup_steps = _int(warmup_steps, "warmup_steps", 0)
    eval_every = _int(eval_every, "eval_every", 1, allow_none=True)
    eval_examples = _int(eval_examples, "eval_examples", 0)
    max_grad_norm = _float(max_grad_norm, "max_grad_norm", positive=True, allow_none=True)
    grad_share_every = _int(grad_share_every, "grad_share_every", 1, allow_none=True)
    measure_every = _int(measure_every, "measure_every", 1, allow_none=True)
    progress = _check_bool(progress, "progress")
    copy_model = _check_bool(copy_model, "copy_model")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}.")
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}; got {head!r}.")
    cbs = _callbacks(callbacks)
    if stop is not None and not callable(getattr(stop, "is_set", None)):
        raise TypeError("stop must be None or an object with an is_set() method, such as threading.Event().")
    fault_obj = get_fault(fault)
    if fault_obj is not None and fault_obj.name == "accum_mean_of_means" and grad_accum == 1:
        warnings.warn(
            "fault='accum_mean_of_means' only changes anything with grad_accum > 1; with grad_accum=1 the run is correct.",
            UserWarning,
            stacklevel=2,
        )
    dev = resolve_device(device)
    limit = _max_positions(model)
    if max_length is not None:
        max_length = _int(max_length, "max_length", 2)
        if limit is not None and max_length > limit:
            raise ValueError(f"max_length={max_length} is longer than the model's context ({limit} tokens).")
    eff_max = max_length if max_length is not None else limit

    examples = _prepare_examples(tok, data, masking, eff_max, "data")
    eval_exs = None
    if eval_data is not None:
        eval_exs = _prepare_examples(tok, eval_data, "completion", eff_max, "eval_data")
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is not None:
        top = max(max(ex.input_ids) for ex in examples + (eval_exs or []))
        if top >= vocab:
            raise ValueError(
                f"The data has token id {top} but the model's vocabulary has {vocab} entries: the tokenizer "
                "does not belong to this model."
            )
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

    config = {
        "masking": masking,
        "steps": steps,
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "lr": lr,
        "seed": seed,
        "device": device if isinstance(device, str) else str(device),
        "eval_every": eval_every,
        "eval_examples": eval_examples,
        "fault": None if fault_obj is None else fault_obj.name,
        "copy_model": copy_model,
        "weight_decay": weight_decay,
        "warmup_steps": warmup_steps,
        "max_length": max_length,
        "head": head,
        "max_grad_norm": max_grad_norm,
        "grad_share_every": grad_share_every,
        "measure_every": measure_every,
        "precision": precision,
        "progress": progress,
        "callbacks": [_callback_name(cb) for cb in cbs],
        "stop": stop is not None,
        "data": _describe_data(examples),
        "eval_data": None if eval_exs is None else _describe_data(eval_exs),
    }

    work = copy.deepcopy(model) if copy_model else model
    work.to(dev)
    table = _Table(examples, pad_id, tok.eos_token_id, fault_obj, dev)
    trainer = _Trainer(
        work, table, masking=masking, fault=fault_obj, batch_size=batch_size, grad_accum=grad_accum, lr=lr,
        weight_decay=weight_decay, warmup_steps=warmup_steps, max_grad_norm=max_grad_norm,
        grad_share_every=grad_share_every, head=head, device=dev, measure_every=measure_every, precision=precision,
    )
    evalset = None if eval_exs is None else _EvalSet(tok, eval_exs, pad_id, eval_examples, limit)
    config.update(
        {
            "resolved_device": str(dev),
            "head_used": trainer.head,
            "precision_used": trainer.precision,
            "optimizer": f"{trainer.optimizer_name} betas={list(BETAS)} eps={EPS}; linear warmup then constant lr",
            "model": _describe_model(work),
            "tokenizer": {"name_or_path": str(getattr(tok, "name_or_path", "")), "vocab_size": len(tok), "pad_id": pad_id,
                          "eos_id": tok.eos_token_id, "bos_id": tok.bos_token_id},
            "versions": _versions(),
        }
    )
    run = Run(config=config, model=work, device=dev)
    run.timing["setup"] = time.perf_counter() - t_setup

    def emit(record):
        for cb in cbs:
            try:
                cb(record, run)
            except (KeyboardInterrupt, CallbackError):
                raise
            except Exception as err:  # noqa: BLE001 -- re-raised with the callback's name
                msg = (
                    f"The callback {_callback_name(cb)!r} raised {type(err).__name__}: {err} (after the {record['kind']} "
                    f"record of step {record['step']}). Training stopped; the run so far is in err.run."
                )
                run.status, run.error = "error", msg
                raise CallbackError(msg, run=run, callback=cb) from err

    def evaluate(k):
        if evalset is None:
            return
        t0 = time.perf_counter()
        was = work.training
        work.eval()
        try:
            marg, cond, n_p, n_c = evalset.score(work, dev, trainer.amp)
            samples = evalset.generate(work, dev, trainer.amp) if eval_examples else []
        finally:
            work.train(was)
        n = len(samples)
        rec = {
            "kind": "eval",
            "step": k,
            "cond_logprob_per_token": cond,
            "marg_logprob_per_token": marg,
            "n_prompt_tokens": n_p,
            "n_completion_tokens": n_c,
            "exact_match": sum(s["exact"] for s in samples) / n if n else None,
            "stop_rate": sum(s["stopped"] for s in samples) / n if n else None,
            "n_generated": n,
            "samples": samples[:3],
            "seconds": time.perf_counter() - t0,
        }
        run.evals.append(rec)
        emit(rec)

    stream = _IndexStream(table.n, seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        label = f"finetune masking={masking}" + (f" fault={fault_obj.name}" if fault_obj else "")
        bar = tqdm(total=steps, desc=label, leave=True)
    rng_devices = [dev] if dev.type == "cuda" else []
    t_start = time.perf_counter()
    k = 0
    try:
        with torch.random.fork_rng(devices=rng_devices), reuse_large_buffers(dev.type == "cpu"):
            torch.manual_seed(seed)
            evaluate(0)
            work.train()
            for k in range(1, steps + 1):
                if stop is not None and stop.is_set():
                    run.stopped, run.status = True, "stopped"
                    break
                t0 = time.perf_counter()
                rec, finite = trainer.step(k, stream.take(batch_size * grad_accum))
                now = time.perf_counter()
                rec["seconds"] = now - t0
                rec["elapsed"] = now - t_start
                rec["epoch"] = k * batch_size * grad_accum / table.n
                run.history.append(rec)
                if not finite:
                    run.status = "nan"
                    run.error = _nan_message(k, rec["loss"], rec["grad_norm"], rec["lr"])
                    warnings.warn(run.error, TrainingDivergedWarning, stacklevel=2)
                    emit(rec)
                    break
                emit(rec)
                if bar is not None:
                    bar.update(1)
                    if k % 10 == 0 or k == steps:
                        bar.set_postfix_str(f"loss {rec['loss']:.3f}", refresh=False)
                if eval_every is not None and k % eval_every == 0 and k < steps:
                    evaluate(k)  # in eval mode; back to train mode after
            else:
                run.status = "finished"
                evaluate(steps)
    except KeyboardInterrupt:
        run.stopped, run.status = True, "stopped"
        run.error = f"Interrupted (KeyboardInterrupt) during step {k}; the history keeps the {len(run.history)} finished steps."
        trainer.opt.zero_grad(set_to_none=True)
    finally:
        work.eval()
        if bar is not None:
            bar.close()
    run.timing["train"] = time.perf_counter() - t_start
    return run


def _describe_model(model) -> dict:
    import json

    cfg = getattr(model, "config", None)
    try:
        cfg_dict = json.loads(cfg.to_json_string(use_diff=False)) if cfg is not None else None
    except Exception:  # noqa: BLE001 -- a config that cannot be serialised is simply not stored
        cfg_dict = None
    return {
        "class": type(model).__name__,
        "name_or_path": str(getattr(cfg, "_name_or_path", "") or getattr(model, "name_or_path", "")),
        "n_params": sum(p.numel() for p in model.parameters()),
        "config": cfg_dict,
    }


def _versions() -> dict:
    import transformers

    from . import __version__

    return {"torch": torch.__version__, "transformers": transformers.__version__, "sftviz": __version__}


def compare_masking(model, tok, data, maskings=("completion", "full", 0.1), steps=200, seed=0, **kw) -> dict:
    """Fine-tune from the same initial weights, data order and seed under several maskings.

    Returns ``{masking: run}`` in the order given (a prompt-loss weight is a float key, e.g. ``0.1``).
    Every run trains its own copy of ``model``. Examples are tokenized once and shared. If a run is
    stopped (stop flag or KeyboardInterrupt) the remaining ones are not started: the dict then holds
    the runs so far. Other keyword arguments go to :func:`finetune`.
    """
    if kw.get("copy_model", True) is not True:
        raise ValueError("compare_masking always starts every run from a copy of the same model; do not pass copy_model=False.")
    kw.pop("copy_model", None)
    if isinstance(maskings, (str, numbers.Real)) or not hasattr(maskings, "__iter__"):
        raise TypeError("maskings must be a list such as ('completion', 'full', 0.1).")
    norm = [check_masking(m) for m in maskings]
    if not norm:
        raise ValueError("maskings is empty: give at least one, e.g. ('completion', 'full').")
    if len(set(map(repr, norm))) != len(norm):
        raise ValueError(f"maskings has duplicates: {norm}.")
    _check_model(model)
    limit = _max_positions(model)
    max_length = kw.get("max_length") or limit
    examples = _prepare_examples(tok, data, "completion", max_length, "data")
    if kw.get("eval_data") is not None:
        kw["eval_data"] = _prepare_examples(tok, kw["eval_data"], "completion", max_length, "eval_data")
    runs = {}
    for m in norm:
        try:
            run = finetune(model, tok, examples, masking=m, steps=steps, seed=seed, copy_model=True, **kw)
        except CallbackError as err:
            err.runs = dict(runs)
            raise
        runs[m] = run
        if run.stopped:
            break
    return runs
