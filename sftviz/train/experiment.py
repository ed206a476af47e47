"""The masking experiment with spread: every masking, several seeds, one verdict per metric.

One fine-tune says little: a different seed (a different batch order) moves held-out scores by a few
points. :func:`masking_experiment` runs every masking under every seed from the same pretrained
weights (seed ``s`` gives every masking the same batches) and returns an :class:`Experiment`, which
reports each metric at the end of the runs as mean ± standard deviation over seeds and names a winner
only when the spread allows it.

"End of run" means one thing everywhere here: the last evaluation, which :func:`sftviz.finetune`
makes after the last step.
"""

from __future__ import annotations

import math
import numbers
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..masking import check_masking, part_weights
from .api import compare_masking
from .runs import Run

#: The held-out metrics an experiment reports: key in the eval records -> (name, unit).
METRICS = {
    "exact_match": ("held-out exact match", "share"),
    "cond_logprob_per_token": ("held-out log Pr(y|x) per token", "nats"),
}


def masking_words(masking: str | float) -> str:
    """How a sentence names a masking: ``"completion-only"``, ``"full"``, ``"prompt-loss weight 0.1"``."""
    if masking == "completion":
        return "completion-only"
    if masking == "full":
        return "full"
    return f"prompt-loss weight {masking:g}" if isinstance(masking, numbers.Real) else str(masking)


def check_metric(metric: object) -> str:
    """``metric`` if it is one of :data:`METRICS`, else a ``ValueError`` that lists them."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}.")
    return metric  # type: ignore[return-value]


def _format(metric: str, value: float) -> str:
    return f"{value:.0%}" if METRICS[metric][1] == "share" else f"{value:+.3f}"


@dataclass
class Experiment:
    """The runs of one masking experiment: ``runs[(masking, seed)]``, with summaries over seeds.

    Attributes:
        maskings: in the order given. seeds: in the order given. dataset: a label for tables and plots.
        runs: one :class:`~sftviz.train.runs.Run` per masking and seed.
        stopped: True when the experiment was stopped (Ctrl-C or ``stop``) before its last run; ``runs``
            then holds the runs so far, and the summaries use them.
    """

    maskings: list[str | float]
    seeds: list[int]
    runs: dict[tuple[str | float, int], Run] = field(default_factory=dict)
    dataset: str = ""
    stopped: bool = False

    def _by_seed(self, metric: str) -> dict[str | float, dict[int, float]]:
        """``{masking: {seed: value of metric at the last evaluation}}``; runs that are missing (an
        experiment stopped early) or have no such value are left out."""
        check_metric(metric)
        out: dict[str | float, dict[int, float]] = {}
        for m in self.maskings:
            out[m] = {}
            for s in self.seeds:
                run = self.runs.get((m, s))
                value = run.evals[-1][metric] if run is not None and run.evals else None
                if value is not None:
                    out[m][s] = float(value)
        return out

    def final(self, metric: str) -> dict[str | float, list[float]]:
        """Each masking's value of ``metric`` at the end of every seed's run (the last evaluation)."""
        return {m: list(values.values()) for m, values in self._by_seed(metric).items()}

    def summary(self, metric: str) -> dict[str | float, tuple[float, float]]:
        """``{masking: (mean, standard deviation over seeds)}`` of ``metric`` at the end of the runs."""
        out = {}
        for m, values in self.final(metric).items():
            if not values:
                raise ValueError(
                    f"the {masking_words(m)} runs have no evaluation of {metric}: pass eval_data"
                    + (" and eval_examples > 0 (exact match decodes answers)." if metric == "exact_match" else ".")
                )
            out[m] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
        return out

    def wins(self, a: str | float, b: str | float, metric: str) -> int:
        """On how many seeds masking ``a`` ends better than masking ``b`` on ``metric`` (same seed, same batches)."""
        by_seed = self._by_seed(metric)
        return sum(by_seed[a][s] > by_seed[b][s] for s in by_seed[a] if s in by_seed[b])

    def winner(self, metric: str) -> tuple[str | float, bool]:
        """The masking with the best mean, and whether the spread allows calling it the winner.

        It is called the winner (``True``) only when it beats every other masking on every seed (runs
        with the same seed saw the same batches, so they pair up) *and* its mean ± sd interval does not
        overlap any other's. Otherwise the runs cannot tell the maskings apart at this number of seeds.
        """
        return self._winner(metric)[:2]

    def _winner(self, metric: str) -> tuple[str | float, bool, str]:
        summary = self.summary(metric)
        best = max(self.maskings, key=lambda m: summary[m][0])
        mean, sd = summary[best]
        n = len(self.seeds)
        for m in self.maskings:
            if m == best:
                continue
            won = self.wins(best, m, metric)
            if won < n:
                return best, False, f"it beats {masking_words(m)} on only {won} of the {n} seeds"
            if mean - sd <= summary[m][0] + summary[m][1]:
                return best, False, f"its mean ± sd overlaps that of {masking_words(m)}"
        return best, True, f"it is better on each of the {n} seeds, and the spreads do not overlap"

    def verdict(self, metric: str) -> str:
        """One sentence, generated from the runs, that names the winner on ``metric`` or says it is too close."""
        summary = self.summary(metric)
        best, clear, why = self._winner(metric)

        def show(m: str | float) -> str:
            mean, sd = summary[m]
            return f"{masking_words(m)} {_format(metric, mean)} ± {_format(metric, sd).lstrip('+')}"

        others = ", ".join(show(m) for m in self.maskings if m != best)
        if clear:
            return f"On {METRICS[metric][0]}, {show(best)} wins against {others}: {why}."
        return (
            f"On {METRICS[metric][0]}, {show(best)} has the best mean against {others}, but {why}: "
            f"{len(self.seeds)} seeds cannot call a winner."
        )

    def prompt_loss_share(self, masking: str | float) -> float:
        """The share of the training loss on prompt tokens: ``w·n_prompt / (w·n_prompt + n_completion)``.

        ``w`` is the masking's prompt weight (1 for full, 0 for completion-only), the counts are the
        prompt and completion targets of every training batch of the runs. A weight of 0.1 does not make
        the prompt "ten times less" important when prompts are 14 times longer than answers.
        """
        w_p, w_c = part_weights(check_masking(masking))
        history = [r for s in self.seeds if (masking, s) in self.runs for r in self.runs[(masking, s)].history]
        n_p = sum(r.n_prompt_targets for r in history)
        n_c = sum(r.n_completion_targets for r in history)
        total = w_p * n_p + w_c * n_c
        return w_p * n_p / total if total else math.nan

    def prompt_grad_share(self, masking: str | float) -> float:
        """The mean measured share of the gradient from prompt targets (``prompt_grad_share`` of the steps)."""
        values = [
            r.prompt_grad_share
            for s in self.seeds
            if (masking, s) in self.runs
            for r in self.runs[(masking, s)].history
            if r.prompt_grad_share is not None
        ]
        if not values:
            raise ValueError("no step measured the gradient share: run with grad_share_every=N.")
        return statistics.fmean(values)

    def table(self) -> str:
        """A text table: every masking's metrics at the end (mean ± sd) and its prompt shares ("–" where
        the runs did not measure something: exact match with ``eval_examples=0``, the gradient share with
        ``grad_share_every=None``)."""
        head = (
            f"{'masking':>24} {'exact match':>14} {'log Pr(y|x)/token':>19} {'prompt share: loss':>19} {'gradient':>9}"
        )
        lines = [head]
        em, lp = self._measured(self.summary, "exact_match"), self._measured(self.summary, "cond_logprob_per_token")
        for m in self.maskings:
            grad = self._measured(self.prompt_grad_share, m)
            cells = [
                f"{em[m][0]:>7.0%} ± {em[m][1]:<4.0%}" if em else f"{'–':>14}",
                f"{lp[m][0]:>+11.3f} ± {lp[m][1]:<5.3f}" if lp else f"{'–':>19}",
                f"{self.prompt_loss_share(m):>19.0%}",
                f"{grad:>9.0%}" if grad is not None else f"{'–':>9}",
            ]
            lines.append(f"{masking_words(m):>24} " + " ".join(cells))
        return "\n".join(lines)

    @staticmethod
    def _measured(fn: Any, arg: Any) -> Any:
        try:
            return fn(arg)
        except ValueError:  # not measured by these runs
            return None


def masking_experiment(
    model: Any,
    tok: Any,
    data: Iterable,
    eval_data: Iterable,
    maskings: Sequence[str | float] = ("completion", "full", 0.1),
    seeds: Sequence[int] = (0, 1, 2),
    *,
    dataset: str = "",
    progress: bool = True,
    **kw: Any,
) -> Experiment:
    """Fine-tune under every masking with every seed (all from ``model``'s weights) and collect the runs.

    Args:
        data, eval_data: training and held-out rows (TRL rows or Examples); evaluation is required.
        maskings: as for :func:`sftviz.compare_masking`. seeds: two or more different integers.
        dataset: a label for tables and plots. progress: one progress bar over all the runs.
        **kw: passed to :func:`sftviz.finetune` (``steps``, ``batch_size``, ``lr``, ...). The gradient
            share is measured every 25 steps unless ``grad_share_every`` says otherwise.

    Example:
        >>> rows = sv.load_dataset("support")[:16]
        >>> exp = sv.masking_experiment(model, tok, rows, rows[:4], seeds=(0, 1), steps=2, batch_size=8,
        ...                             eval_examples=0, progress=False)
        >>> list(exp.summary("cond_logprob_per_token")), len(exp.runs)
        (['completion', 'full', 0.1], 6)
    """
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
        raise TypeError("seeds must be a list of integers, e.g. (0, 1, 2).")
    seeds = list(seeds)
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds needs two or more different integers to measure a spread, got {seeds}.")
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in seeds):
        raise TypeError(f"seeds must be integers, got {seeds}.")
    if eval_data is None:
        raise ValueError("masking_experiment compares held-out scores: pass eval_data (e.g. the eval split).")
    kw.setdefault("grad_share_every", 25)
    kw["progress"] = False
    exp = Experiment(maskings=[check_masking(m) for m in maskings], seeds=seeds, dataset=dataset)
    bar = runs_progress(len(seeds) * len(exp.maskings), f"masking experiment {dataset}".strip()) if progress else None
    for seed in seeds:
        runs = compare_masking(model, tok, data, maskings, seed=seed, eval_data=eval_data, **kw)
        for m, run in runs.items():
            run.name = f"{masking_words(m)}, seed {seed}"
            exp.runs[(m, seed)] = run
        if bar is not None:
            bar.update(len(runs))
        if any(run.stopped for run in runs.values()):  # Ctrl-C or a stop flag: keep the runs so far
            exp.stopped = True
            break
    if bar is not None:
        bar.close()
    return exp


def runs_progress(total: int, desc: str) -> Any:
    """A progress bar over ``total`` fine-tuning runs (tqdm: a widget in Jupyter, text elsewhere), with the
    time left estimated from the runs so far."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="run", leave=True)
