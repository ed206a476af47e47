"""What a run records: one :class:`StepRecord` per optimiser step, one :class:`EvalRecord` per evaluation.

Records are typed (a dataclass each) and read like the dicts they replace: ``rec["loss"]``,
``rec.get("prompt_nll")``, ``dict(rec)`` and ``rec.loss`` all work, and callbacks receive them as they
are. ``to_dict`` / ``from_dict`` make a JSON round trip lossless (see :mod:`sftviz.train.runs`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar


class Record(Mapping):
    """A dataclass record that also reads as a mapping of its fields (read-only: set attributes)."""

    KIND: ClassVar[str] = ""

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(f"No field {key!r} in a {self.KIND} record; it has {list(self._names())}.")
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain dict (what a run's JSON file stores)."""
        return {name: getattr(self, name) for name in self._names()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Record:
        """Rebuild a record from :meth:`to_dict`'s output; unknown or missing fields are an error."""
        if not isinstance(data, Mapping):
            raise TypeError(f"A {cls.KIND} record must be a JSON object; got {type(data).__name__}.")
        names = set(cls._names())
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"A {cls.KIND} record has unknown field(s) {unknown}.")
        if data.get("kind", cls.KIND) != cls.KIND:
            raise ValueError(f"A {cls.KIND} record says kind={data.get('kind')!r}.")
        if "step" not in data:
            raise ValueError(f"A {cls.KIND} record has no 'step'.")
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name in data and not _fits(data[f.name], str(f.type)):
                raise ValueError(
                    f"A {cls.KIND} record has {f.name}={data[f.name]!r:.60}, which is not a {f.type} value."
                )
        return cls(**dict(data))


_JSON_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "dict": (dict,), "list": (list,)}


def _fits(value: Any, annotation: str) -> bool:
    """Whether a JSON value fits a field annotated ``annotation`` ("float | None", "dict[str, float]", ...)."""
    for part in annotation.split("|"):
        name = part.strip().split("[")[0]
        if name == "None" and value is None:
            return True
        if name in _JSON_TYPES and isinstance(value, _JSON_TYPES[name]) and not isinstance(value, bool):
            return True
    return False


@dataclass(eq=True)
class StepRecord(Record):
    """One optimiser step of :func:`sftviz.finetune`.

    Attributes:
        step: 1-based. loss: the objective optimised, after any fault. lr: this step's learning rate.
        prompt_nll, completion_nll: mean NLL per prompt / completion target token of the batch (nats),
            measured with the true next tokens whatever the masking or fault, before this step's
            update (None when the batch has no such target, or on a step skipped by ``measure_every``).
        n_trained: targets with a non-zero weight. n_prompt_targets, n_completion_targets: targets of
            each part. n_tokens: real tokens, prompt included. n_rows: the rows the step's examples were
            laid in (one per example, fewer when packed). n_slots: token slots of those rows, padding
            included (``1 - n_tokens / n_slots`` is the share of padding; 0 in runs that predate it).
        grad_norm: the global gradient norm, before clipping. grad_norm_groups: per parameter group
            ("embeddings", "block_0", ..., "head" = final norm and untied output layer; a tied output
            matrix counts as embeddings).
        prompt_grad_share: the share of the step's gradient ``g`` that comes from prompt targets,
            ``<g_prompt, g> / |g|^2`` where ``g_prompt`` is the gradient of the prompt targets' loss terms
            alone (prompt and completion shares add up to 1; a share above 1 or below 0 means the two
            parts pull against each other). Exactly 0.0 when no prompt target carries weight
            (completion-only), 1.0 when only prompt targets do; measured with one extra backward pass on
            step 1 and every ``grad_share_every`` steps, None in between. The same steps record
            prompt_grad_norm, completion_grad_norm and prompt_completion_grad_cos.
        seconds: this step's wall time. elapsed: since the start. epoch: passes over the data so far.
    """

    KIND: ClassVar[str] = "train"

    step: int
    loss: float | None = None
    prompt_nll: float | None = None
    completion_nll: float | None = None
    n_trained: int = 0
    n_prompt_targets: int = 0
    n_completion_targets: int = 0
    n_tokens: int = 0
    n_rows: int = 0
    n_slots: int = 0
    grad_norm: float | None = None
    grad_norm_groups: dict[str, float] = field(default_factory=dict)
    prompt_grad_share: float | None = None
    prompt_grad_norm: float | None = None
    completion_grad_norm: float | None = None
    prompt_completion_grad_cos: float | None = None
    lr: float | None = None
    seconds: float | None = None
    elapsed: float | None = None
    epoch: float | None = None
    kind: str = "train"


@dataclass(eq=True)
class EvalRecord(Record):
    """One evaluation on held-out data (step 0 is the model before training).

    Attributes:
        cond_logprob_per_token: mean log Pr(y|x) per completion token over the eval data.
        marg_logprob_per_token: mean log Pr(x) per prompt token.
        exact_match: share of the first ``eval_examples`` examples whose greedy answer equals the
            reference and stops where it does (None when none were decoded). stop_rate: share of greedy
            answers that stopped (with an EOS, before the length limit). length_ratio: the greedy answers'
            length over the references' (characters, all decoded answers together): about 1 when answers
            stop where the references do, above 1 when they run on. samples: the first three decodings.
        exact_per_example: whether each decoded answer matched (one bool per decoded example, in the
            eval data's order; None when none were decoded or the run predates this field).
        cond_logprob_per_example, marg_logprob_per_example: each eval example's own mean log Pr(y|x)
            per completion token and log Pr(x) per prompt token, in the eval data's order (None for an
            example with no such token; the whole list None in runs that predate these fields). Runs of
            the same eval data pair up example by example: see :meth:`sftviz.Experiment.compare`.
    """

    KIND: ClassVar[str] = "eval"

    step: int
    cond_logprob_per_token: float | None = None
    marg_logprob_per_token: float | None = None
    n_prompt_tokens: int = 0
    n_completion_tokens: int = 0
    exact_match: float | None = None
    stop_rate: float | None = None
    length_ratio: float | None = None
    n_generated: int = 0
    samples: list[dict] = field(default_factory=list)
    seconds: float | None = None
    exact_per_example: list[bool] | None = None
    cond_logprob_per_example: list[float | None] | None = None
    marg_logprob_per_example: list[float | None] | None = None
    kind: str = "eval"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalRecord:
        """As :meth:`Record.from_dict`, and the per-example lists hold what they should (bools; numbers or null)."""
        rec = super().from_dict(data)
        checks = {
            "exact_per_example": (lambda v: isinstance(v, bool), "true or false"),
            "cond_logprob_per_example": (_number_or_none, "numbers or null"),
            "marg_logprob_per_example": (_number_or_none, "numbers or null"),
        }
        for name, (ok, what) in checks.items():
            values = getattr(rec, name)
            bad = next((i for i, v in enumerate(values or []) if not ok(v)), None)
            if bad is not None:
                raise ValueError(f"An eval record's {name}[{bad}] is {values[bad]!r:.60}; it must hold {what}.")
        return rec  # type: ignore[return-value]


def _number_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
