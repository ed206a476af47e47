"""Joint, marginal and conditional log-probabilities from one forward pass over [x, y].

By the chain rule over tokens, ``log Pr([x, y]) = sum_t log Pr(token_t | tokens before t)``. Split the
sum at the seam and you get the two parts the course is about:

    joint        log Pr([x, y])  = sum over every scored token
    marginal     log Pr(x)       = sum over the prompt tokens
    conditional  log Pr(y | x)   = sum over the completion tokens (and its EOS)

so ``joint == marginal + conditional`` holds by construction, and the masked SFT loss summed over the
completion is exactly ``-conditional``. All values are natural logs (nats). In a conversation the
"completion" is the assistant turns being trained and the "prompt" is every other token.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import torch

from .checks import check_model, check_tokenizer, max_positions
from .data import Example, build_example, to_example
from .modeling import model_device


@dataclass
class TokenScore:
    """One token of a scored sequence."""

    position: int
    token: str
    id: int
    segment: str
    in_completion: bool
    logprob: float | None  # log Pr(token | tokens before); None at position 0 (nothing predicts it)
    rank: int | None  # 1 if the model's top choice, 2 if second, ...
    top: list = field(default_factory=list)  # [(token text, log-prob), ...] the model preferred at this step

    @property
    def prob(self):
        return None if self.logprob is None else math.exp(self.logprob)


@dataclass
class LogProbCheck:
    """The verdict on a set of log-probabilities: problems break the laws of probability, notes interpret."""

    ok: bool
    problems: list
    notes: list

    def __str__(self):
        head = (
            "These numbers are consistent with the laws of probability."
            if self.ok
            else "These numbers cannot come from a correct computation:"
        )
        lines = [head] + [f"- {p}" for p in self.problems] + [f"- {n}" for n in self.notes]
        return "\n".join(lines)

    def __repr__(self):
        return str(self)

    def _repr_html_(self):
        from html import escape

        return "<pre>" + escape(str(self)) + "</pre>"


def check_logprobs(
    joint: float, marginal: float, conditional: float | None = None, *, tol: float = 1e-4
) -> LogProbCheck:
    """Say in words whether ``log Pr([x,y])``, ``log Pr(x)`` (and ``log Pr(y|x)``) can be right.

    The laws used: every log-probability is at most 0; ``log Pr([x,y]) = log Pr(x) + log Pr(y|x)``;
    and since ``log Pr(y|x) <= 0``, the joint can never exceed the marginal.

    >>> print(check_logprobs(joint=-3.5, marginal=-5.2).ok)
    False
    """
    values = {}
    for name, v in (("joint", joint), ("marginal", marginal), ("conditional", conditional)):
        if v is None and name == "conditional":
            values[name] = None
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Real):  # numpy scalars are Real too
            raise TypeError(f"{name} must be a number (a log-probability in nats); got {type(v).__name__}.")
        values[name] = float(v)
        if math.isnan(values[name]):
            raise ValueError(
                f"{name} is NaN: the computation that produced it failed (a log of 0 or of a negative number?)."
            )
    joint, marginal, conditional = values["joint"], values["marginal"], values["conditional"]
    infinite = [n for n, v in values.items() if v is not None and math.isinf(v)]
    if infinite:
        return LogProbCheck(
            ok=False,
            problems=[
                f"{' and '.join(infinite)} = {' and '.join(str(values[n]) for n in infinite)}: an infinite "
                "log-probability means a probability of exactly 0 (or above 1), which a softmax never gives; then "
                "Pr(y | x) = Pr([x, y]) / Pr(x) is undefined. Look for a log of 0 (a probability that underflowed "
                "or a logit masked to -inf) instead of log_softmax."
            ],
            notes=[],
        )
    problems, notes = [], []
    for name, v in (("log Pr([x, y])", joint), ("log Pr(x)", marginal), ("log Pr(y | x)", conditional)):
        if v is not None and v > tol:
            problems.append(
                f"{name} = {v:.4g} is positive, which would mean a probability of e^{v:.3g} = {math.exp(min(v, 700)):.3g} > 1. "
                "Log-probabilities are at most 0."
            )
    implied = joint - marginal
    if joint > marginal + tol:
        problems.append(
            f"The joint log Pr([x, y]) = {joint:.4g} is above the marginal log Pr(x) = {marginal:.4g}. Since "
            f"log Pr([x, y]) = log Pr(x) + log Pr(y | x), that gives log Pr(y | x) = {implied:.4g} > 0, i.e. "
            f"Pr(y | x) = {math.exp(min(implied, 700)):.3g} > 1. Adding y can only make the sequence less likely. "
            "Look for a bug: joint and marginal computed on different tokenizations or prompts, a marginal "
            "that scores extra tokens (or misses a BOS), probabilities multiplied in the wrong place, or "
            "logs in different bases."
        )
    if conditional is not None and abs(joint - (marginal + conditional)) > max(tol, 1e-6 * abs(joint)):
        problems.append(
            f"joint ({joint:.4g}) should equal marginal + conditional ({marginal:.4g} + {conditional:.4g} = "
            f"{marginal + conditional:.4g}): the three were not computed from the same token log-probabilities."
        )
    if not problems:
        gap = marginal - joint
        notes.append(
            f"log Pr(y | x) = joint - marginal = {implied:.4g} nats, so Pr(y | x) = {math.exp(implied):.3g}"
            + (f": y is unlikely given x (the joint is {gap:.3g} nats below the marginal)." if gap > 5 else ".")
        )
    return LogProbCheck(ok=not problems, problems=problems, notes=notes)


@dataclass
class ScoreReport:
    """Per-token log-probabilities of [x, y] and the three sums (nats).

    Attributes:
        joint: log Pr([x, y]), every scored token.
        marginal: log Pr(x), the prompt tokens as they appear in the joint sequence.
        conditional: log Pr(y | x), the completion tokens and their EOS.
        rows: one :class:`TokenScore` per position.
        example: the :class:`~sftviz.data.Example` that was scored.
    """

    joint: float
    marginal: float
    conditional: float
    rows: list
    example: Example
    n_prompt_scored: int
    n_completion_scored: int

    def check(self) -> LogProbCheck:
        """Check the three numbers against the laws of probability (see :func:`check_logprobs`)."""
        return check_logprobs(self.joint, self.marginal, self.conditional)

    @property
    def logprobs(self) -> list:
        """Per-position log-probs (None at position 0)."""
        return [r.logprob for r in self.rows]

    @property
    def completion_nll_mean(self) -> float:
        """Mean negative log-likelihood per completion token: the masked SFT loss of this example."""
        return -self.conditional / self.n_completion_scored

    def __repr__(self):
        return (
            f"ScoreReport(joint={self.joint:.4f}, marginal={self.marginal:.4f}, conditional={self.conditional:.4f} "
            f"nats; {self.n_prompt_scored} prompt + {self.n_completion_scored} completion tokens)"
        )


@torch.no_grad()
def score_batch(
    model: Any, tok: Any, items: list, *, batch_size: int = 16, top_k: int = 0, **example_kwargs: Any
) -> list[ScoreReport]:
    """Score many examples (Examples or TRL rows) in padded batches; returns a list of :class:`ScoreReport`.

    ``top_k`` alternatives per token are included when > 0 (costs a top-k per position).
    """
    check_model(model)
    check_tokenizer(tok)
    if not isinstance(items, (list, tuple)):
        raise TypeError("items must be a list of Examples or of {'prompt', 'completion'} / {'messages'} dicts.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be a non-negative integer; got {top_k!r}.")
    examples = [to_example(tok, item, where=f"Item {i}", **example_kwargs) for i, item in enumerate(items)]
    limit = max_positions(model)
    for i, ex in enumerate(examples):
        if limit is not None and len(ex) > limit:
            raise ValueError(
                f"{'The example' if len(examples) == 1 else f'Example {i}'} has {len(ex)} tokens but the model reads at "
                f"most {limit}. Shorten it or pass max_length={limit}."
            )
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    top = max((max(ex.input_ids) for ex in examples), default=0)
    if vocab is not None and top >= vocab:
        raise ValueError(
            f"The text has token id {top} but the model's vocabulary has {vocab} entries: the tokenizer does "
            "not belong to this model."
        )
    device = model_device(model)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    reports = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        n = max(len(ex) for ex in chunk)
        ids = torch.full((len(chunk), n), pad, dtype=torch.long)
        att = torch.zeros((len(chunk), n), dtype=torch.long)
        for i, ex in enumerate(chunk):
            ids[i, : len(ex)] = torch.tensor(ex.input_ids)
            att[i, : len(ex)] = 1
        was_training = model.training
        model.eval()
        try:
            logits = model(input_ids=ids.to(device), attention_mask=att.to(device)).logits
        finally:
            model.train(was_training)
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # position t-1 scores token t
        target = ids[:, 1:].to(device)
        lp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        ranks = (logp > lp.unsqueeze(-1)).sum(-1) + 1
        if top_k:
            top_v, top_i = logp.topk(min(top_k, logp.shape[-1]), dim=-1)
            top_v, top_i = top_v.cpu(), top_i.cpu()
        lp, ranks = lp.double().cpu(), ranks.cpu()
        for i, ex in enumerate(chunk):
            reports.append(_report(tok, ex, lp[i], ranks[i], (top_v[i], top_i[i]) if top_k else None))
    return reports


def _report(tok, ex, lp, ranks, top):
    rows = []
    marginal = conditional = 0.0
    n_p = n_c = 0
    for t in range(len(ex)):
        if t == 0:
            rows.append(
                TokenScore(0, ex.tokens[0], ex.input_ids[0], ex.segments[0], bool(ex.completion_mask[0]), None, None)
            )
            continue
        v = float(lp[t - 1])
        alts = []
        if top is not None:
            vals, idx = top
            ids = idx[t - 1].tolist()
            texts = [tok.decode([j], clean_up_tokenization_spaces=False) for j in ids]
            alts = [(s, float(x)) for s, x in zip(texts, vals[t - 1].tolist())]
        in_c = bool(ex.completion_mask[t])
        rows.append(TokenScore(t, ex.tokens[t], ex.input_ids[t], ex.segments[t], in_c, v, int(ranks[t - 1]), alts))
        if in_c:
            conditional += v
            n_c += 1
        else:
            marginal += v
            n_p += 1
    joint = float(lp[: len(ex) - 1].sum())
    return ScoreReport(joint, marginal, conditional, rows, ex, n_p, n_c)


def score(
    model: Any,
    tok: Any,
    prompt: str | None = None,
    completion: str | None = None,
    *,
    example: Example | None = None,
    messages: list[dict] | None = None,
    top_k: int = 5,
    **example_kwargs: Any,
) -> ScoreReport:
    """Score one [x, y] in a single forward pass: per-token log-probs and joint, marginal, conditional.

    Args:
        model, tok: from ``sv.load_model()``.
        prompt, completion: strings; or ``example=`` an :class:`~sftviz.data.Example`; or ``messages=``.
        top_k: how many alternatives the model preferred to show per token (0 for none).
        **example_kwargs: passed to :func:`~sftviz.data.build_example` (``add_eos``, ``max_length``, ...).

    Returns:
        A :class:`ScoreReport`: ``rep.joint``, ``rep.marginal``, ``rep.conditional`` (nats),
        ``rep.rows`` (per-token), and ``rep.check()``.

    Example:
        >>> rep = sv.score(model, tok, prompt="Q: What colour is the sky?\\nA:", completion=" blue")
        >>> abs(rep.joint - (rep.marginal + rep.conditional)) < 1e-4
        True
        >>> rep.conditional <= 0 and rep.joint <= rep.marginal  # adding y can only make [x, y] less likely
        True
    """
    if example is not None:
        if prompt is not None or completion is not None or messages is not None:
            raise ValueError("Pass either example= or the text (prompt/completion or messages), not both.")
        if not isinstance(example, Example):
            raise TypeError(f"example must be an sftviz Example (from sv.build_example); got {type(example).__name__}.")
        item = example
    elif messages is not None:
        item = build_example(tok, messages=messages, **example_kwargs)
    else:
        item = build_example(tok, prompt=prompt, completion=completion, **example_kwargs)
    return score_batch(model, tok, [item], batch_size=1, top_k=top_k)[0]
