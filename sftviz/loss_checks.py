"""The masked-loss exercise's checker (notebook 3): a student's own ``my_masked_loss(logits, labels)``,
run on this example and on a random batch, refused when it calls ``sft_loss`` or changes its inputs, and
with the usual slips named."""

from __future__ import annotations

import functools
import math
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .data import IGNORE_INDEX
from .feedback import Feedback, check_number, is_unanswered, read_number, unanswered


def _masked_loss_slips(logits: Any, labels: Any) -> dict[str, float]:
    """The usual wrong versions of the masked loss, by what went wrong."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)

    def nll(lp: Any, lab: Any) -> Any:
        keep = lab != IGNORE_INDEX
        return -lp[keep].gather(-1, lab[keep].unsqueeze(-1)).squeeze(-1) if keep.any() else lp.new_zeros(0)

    shifted = nll(logp[:, :-1], labels[:, 1:])
    slips = {
        "you did not shift: the logits at position t predict the token at t + 1, so compare logits[:, :-1] "
        "with labels[:, 1:]": nll(logp, labels).mean(),
        "you summed the per-token losses; the loss is their mean over the trained targets": shifted.sum(),
        "you shifted the wrong way: logits[:, :-1] go with labels[:, 1:], not logits[:, 1:] with labels[:, :-1]": nll(
            logp[:, 1:], labels[:, :-1]
        ).mean(),
        "you averaged over every position, masked ones included (counting them as 0); divide by the number of "
        "trained targets only": shifted.sum() / max(labels[:, 1:].numel(), 1),
        "you used the raw logits as log-probabilities; take log_softmax over the vocabulary first (or use "
        "cross_entropy, which does)": nll(logits.float()[:, :-1], labels[:, 1:]).mean(),
    }
    return {why: float(v) for why, v in slips.items()}


def _close(a: float, b: float) -> bool:
    return math.isfinite(b) and abs(a - b) <= max(1e-3, 1e-4 * abs(b))


def _judge_loss_value(answer: object, expected: float, slips: dict[str, float], where: str) -> Feedback:
    """The verdict on one value returned by a student's loss function (``expected`` and ``slips`` are
    computed by the checker beforehand, on its own copies of the batch)."""
    value, bad = read_number(answer, f"the masked loss{where}")
    if bad is not None:
        return bad
    if _close(value, expected):
        return Feedback(True, f"masked loss{where} = {value:.4f}, the same as sv.sft_loss.")
    for why, wrong in slips.items():
        if _close(value, wrong):
            return Feedback(False, f"masked loss{where} = {value:.4f}, not {expected:.4f}: {why}.")
    return check_number(
        value, expected, f"the masked loss{where}", hint="Shift, cross-entropy, then the mean over labels != -100."
    )


def _namespace(module: object) -> dict | None:
    """A module's attribute dict (None for an entry of ``sys.modules`` that has none or will not say)."""
    try:
        ns = vars(module)
    except Exception:  # noqa: BLE001 (sys.modules can hold any object)
        return None
    return ns if isinstance(ns, dict) else None


@contextmanager
def _watching_calls(fn: Any, namespaces: list[dict]) -> Iterator[list[int]]:
    """While the block runs, every module attribute (and every entry of ``namespaces``) bound to ``fn``
    is a wrapper that records the calls made from this thread; all are restored afterwards.

    This is how :func:`check_masked_loss` sees a student's function call ``sv.sft_loss``, whichever
    name it is reached by (``sv.sft_loss``, ``sv.loss.sft_loss``, ``from sftviz import sft_loss``).
    """
    calls: list[int] = []
    me = threading.get_ident()

    @functools.wraps(fn)
    def spy(*args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == me:
            calls.append(1)
        return fn(*args, **kwargs)

    found: list[tuple[dict, str]] = []
    seen: set[int] = set()
    for ns in [*(_namespace(m) for m in list(sys.modules.values())), *namespaces]:
        if not isinstance(ns, dict) or id(ns) in seen:
            continue
        seen.add(id(ns))
        found.extend((ns, name) for name, value in list(ns.items()) if value is fn)
    try:
        for ns, name in found:
            ns[name] = spy
        yield calls
    finally:
        for ns, name in found:
            if ns.get(name) is spy:
                ns[name] = fn


def _changed(before: Any, after: Any) -> bool:
    return before.shape != after.shape or not bool(((before == after) | (before != before) & (after != after)).all())


def check_masked_loss(answer: object, logits: Any, labels: Any) -> Feedback:
    """The student's function ``my_masked_loss(logits, labels)``: the completion-only loss from ``logits``
    (batch, seq, vocab) and unshifted ``labels`` (batch, seq).

    The function runs on this batch and on a second, random batch of two sequences (other masks, other
    lengths of the trained part), so a rule that only fits this example does not pass. A bare number is
    not accepted: a number copied from a cell above cannot be checked on other batches. The right value
    is :func:`sftviz.sft_loss` (shift: logits at t against labels at t + 1; cross-entropy; mean over
    the targets that are not -100), which the function may not call: the check computes its reference
    first, on its own copies, then watches for calls to ``sft_loss`` while the function runs. The
    function gets copies of the tensors and must not change them in place. The usual slips are named:
    no shift, a shift the wrong way, a sum instead of a mean, masked positions averaged in, raw logits
    instead of log-probabilities.

    ``logits`` and ``labels`` come from the notebook: bad ones raise ``TypeError``/``ValueError``; anything
    about ``answer`` (including an error it raises) is reported as :class:`Feedback`.
    """
    import torch

    from . import loss as loss_module

    logits, labels = loss_module.check_logits_labels(logits, labels)
    if is_unanswered(answer):
        return unanswered("a function my_masked_loss(logits, labels) that returns the masked loss")
    if not callable(answer):
        return Feedback(
            False,
            f"got a {type(answer).__name__}, not a function: write a function my_masked_loss(logits, labels) that "
            "returns the masked loss and pass the function itself (no parentheses); a number copied from the cell "
            "above cannot be checked on other batches.",
        )
    reference = loss_module.sft_loss  # the real one, taken before any patching
    gen = torch.Generator().manual_seed(0)
    other_logits = torch.randn(2, 6, 11, generator=gen)
    other_labels = torch.randint(0, 11, (2, 6), generator=gen)
    other_labels[0, :3] = IGNORE_INDEX
    other_labels[1, :1] = IGNORE_INDEX
    cases = []
    for lg, lb, where in (
        (logits, labels, " on this example"),
        (other_logits, other_labels, " on a random batch of two"),
    ):
        lg, lb = lg.detach().clone(), lb.clone()  # the checker's own copies, taken before the student's code runs
        with torch.no_grad():
            expected = float(reference(lg, lb))
            slips = _masked_loss_slips(lg, lb)
        cases.append((lg, lb, where, expected, slips))
    namespaces = [g for g in (getattr(answer, "__globals__", None),) if isinstance(g, dict)]
    for lg, lb, where, expected, slips in cases:
        given_logits, given_labels = lg.clone(), lb.clone()  # the student's copies
        with _watching_calls(reference, namespaces) as calls:  # restored before any feedback is returned
            try:
                value = answer(given_logits, given_labels)
            except Exception as err:  # noqa: BLE001 (a student's function: report any error, never raise it)
                value, error = None, err
            else:
                error = None
        if calls:
            return Feedback(
                False,
                "your function calls sv.sft_loss, which the exercise asks you to write yourself: compute the loss "
                "with torch.nn.functional.cross_entropy or log_softmax.",
            )
        if error is not None:
            return Feedback(False, f"your function raised {type(error).__name__}{where}: {error}")
        for name, before, after in (("labels", lb, given_labels), ("logits", lg, given_logits)):
            if _changed(before, after):
                return Feedback(
                    False,
                    f"your function changed {name} in place{where} (e.g. {name}[{name} == -100] = 0 or a shift "
                    "written into the tensor): the caller's tensors must stay as they were. Work on new tensors "
                    f"({name}[:, 1:], {name}.clone(), torch.where(...)) instead.",
                )
        fb = _judge_loss_value(value, expected, slips, where)
        if not fb:
            return fb
    return Feedback(True, "your function gives the same loss as sv.sft_loss on this example and on a random batch.")
