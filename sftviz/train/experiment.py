"""The masking experiment with spread: every masking, one or more seeds, one verdict per metric.

One fine-tune says little: a different seed (a different batch order) moves held-out scores by a few
points. :func:`masking_experiment` runs every masking under every seed from the same pretrained
weights (seed ``s`` gives every masking the same batches) and returns an :class:`Experiment`, which
reports each metric at the end of the runs as mean ± standard deviation over seeds and names a winner
only when a stated paired test allows it: an exact sign test over (seed, held-out example) pairs, at
:data:`ALPHA` = 0.05 with Holm's correction over the comparisons (see :meth:`Experiment.winner`).

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

#: The held-out metrics an experiment reports in its table and plots: key in the eval records -> (name, unit).
METRICS = {
    "exact_match": ("held-out exact match", "share"),
    "cond_logprob_per_token": ("held-out log Pr(y|x) per token", "nats"),
}
#: Every metric :meth:`Experiment.summary`, :meth:`~Experiment.compare` and :meth:`~Experiment.verdict`
#: accept: the reported ones and log Pr(x) per prompt token (what full masking also trains).
ALL_METRICS = {**METRICS, "marg_logprob_per_token": ("held-out log Pr(x) per prompt token", "nats")}
#: Where the eval records keep each metric's per-example values, which pair up runs example by example.
PER_EXAMPLE = {
    "exact_match": "exact_per_example",
    "cond_logprob_per_token": "cond_logprob_per_example",
    "marg_logprob_per_token": "marg_logprob_per_example",
}
#: The significance level of the paired test that calls a winner (after Holm's correction).
ALPHA = 0.05


def masking_words(masking: str | float) -> str:
    """How a sentence names a masking: ``"completion-only"``, ``"full"``, ``"prompt-loss weight 0.1"``."""
    if masking == "completion":
        return "completion-only"
    if masking == "full":
        return "full"
    return f"prompt-loss weight {masking:g}" if isinstance(masking, numbers.Real) else str(masking)


def check_metric(metric: object) -> str:
    """``metric`` if it is one of :data:`ALL_METRICS`, else a ``ValueError`` that lists them."""
    if metric not in ALL_METRICS:
        raise ValueError(f"metric must be one of {list(ALL_METRICS)}, got {metric!r}.")
    return metric  # type: ignore[return-value]


def _format(metric: str, value: float) -> str:
    return f"{value:.0%}" if ALL_METRICS[metric][1] == "share" else f"{value:+.3f}"


def sign_test(wins: int, losses: int) -> float:
    """The exact two-sided sign test (McNemar's exact test on discordant pairs): the probability, if
    each discordant pair were a fair coin, of a split at least as uneven as ``wins`` vs ``losses``.

    ``p = min(1, 2 * sum_{i <= min(wins, losses)} C(n, i) / 2**n)`` with ``n = wins + losses``; 1.0 when
    ``n`` is 0. Integer arithmetic, so the same counts give the same ``p`` on every machine.

    >>> sign_test(3, 0), sign_test(9, 1)
    (0.25, 0.021484375)
    """
    n, k = wins + losses, min(wins, losses)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2**n)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given: the ``j``-th smallest p is multiplied by
    ``m - j + 1`` (``m`` tests), and an adjusted p is never below the one before it. Rejecting every
    hypothesis whose adjusted p is below ``alpha`` keeps the chance of any false rejection below ``alpha``."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    out = [1.0] * m
    running = 0.0
    for j, i in enumerate(order):
        running = max(running, min(1.0, (m - j) * p_values[i]))
        out[i] = running
    return out


def format_p(p: float) -> str:
    """``"p = 0.0041"``, ``"p = 0.25"``, ``"p = 1"``: two significant digits; below 0.0001, ``"p < 0.0001"``."""
    return "p < 0.0001" if p < 1e-4 else f"p = {p:.2g}"


def _and(parts: Sequence[str]) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _min_sign_p(n: int) -> float:
    """The smallest p a two-sided sign test over ``n`` pairs can give (all of them one way)."""
    return sign_test(n, 0)


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

    def _last_eval(self, masking: str | float, seed: int) -> Any:
        run = self.runs.get((masking, seed))
        return run.evals[-1] if run is not None and run.evals else None

    def _by_seed(self, metric: str) -> dict[str | float, dict[int, float]]:
        """``{masking: {seed: value of metric at the last evaluation}}``; runs that are missing (an
        experiment stopped early) or have no such value are left out."""
        check_metric(metric)
        out: dict[str | float, dict[int, float]] = {}
        for m in self.maskings:
            out[m] = {}
            for s in self.seeds:
                last = self._last_eval(m, s)
                value = last.get(metric) if last is not None else None
                if value is not None:
                    out[m][s] = float(value)
        return out

    def _per_example(self, masking: str | float, seed: int, metric: str) -> list | None:
        """The per-example values of ``metric`` at the end of one run, or None where the run kept none
        (a run saved before sftviz recorded them; exact match then uses the kept samples if they are all)."""
        last = self._last_eval(masking, seed)
        if last is None:
            return None
        values = last.get(PER_EXAMPLE[metric])
        if values is None and metric == "exact_match":
            samples = last.get("samples") or []
            if samples and len(samples) == last.get("n_generated"):
                values = [bool(s["exact"]) for s in samples]
        return list(values) if values else None

    def final(self, metric: str) -> dict[str | float, list[float]]:
        """Each masking's value of ``metric`` at the end of every seed's run (the last evaluation)."""
        return {m: list(values.values()) for m, values in self._by_seed(metric).items()}

    def summary(self, metric: str) -> dict[str | float, tuple[float, float]]:
        """``{masking: (mean, standard deviation over seeds)}`` of ``metric`` at the end of the runs
        (the standard deviation is 0.0 for one seed, which cannot show a spread)."""
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

    def compare(self, a: str | float, b: str | float, metric: str) -> dict[str, Any]:
        """A paired sign test of masking ``a`` against masking ``b`` on ``metric`` at the end of the runs.

        Runs with the same seed saw the same batches, and every evaluation scores the same held-out
        examples in the same order, so the runs pair up per (seed, example): for exact match, a pair
        counts for ``a`` when ``a``'s answer is right and ``b``'s wrong, for ``b`` the other way round
        (McNemar's discordant pairs); for log-probabilities, a pair counts for whichever run gives the
        example the higher mean log-probability per token (exact ties and examples without such tokens
        drop out). ``p_value`` is the exact two-sided sign test (:func:`sign_test`) on the two counts.
        Runs saved without per-example values fall back to pairing by seed alone (each seed's end value).

        Returns a dict: ``a_wins``, ``b_wins`` (pairs where each is better), ``n_pairs`` (pairs compared,
        ties included), ``p_value``, ``unit`` (``"example"`` or ``"seed"``), ``n_seeds``, ``n_examples``
        (per seed; 0 when pairing by seed) and ``test`` (a short description, e.g. "exact sign test over
        120 (seed, example) pairs").
        """
        check_metric(metric)
        for m in (a, b):
            if m not in self.maskings:
                raise ValueError(f"{m!r} is not a masking of this experiment; it ran {self.maskings}.")
        by_seed = self._by_seed(metric)
        seeds = [s for s in self.seeds if s in by_seed[a] and s in by_seed[b]]
        pairs = [(self._per_example(a, s, metric), self._per_example(b, s, metric)) for s in seeds]
        paired = bool(seeds) and all(x is not None and y is not None and len(x) == len(y) for x, y in pairs)
        a_wins = b_wins = n_pairs = 0
        if paired:
            for xs, ys in pairs:
                for x, y in zip(xs, ys):  # type: ignore[arg-type]
                    if x is None or y is None:
                        continue
                    n_pairs += 1
                    a_wins += x > y
                    b_wins += y > x
            n_examples = max(len(x) for x, _ in pairs)  # type: ignore[arg-type]
            what = "(seed, example) pairs" if len(seeds) > 1 else "held-out examples"
            test = f"exact sign test over {n_pairs} {what}"
        else:
            for s in seeds:
                n_pairs += 1
                a_wins += by_seed[a][s] > by_seed[b][s]
                b_wins += by_seed[b][s] > by_seed[a][s]
            n_examples = 0
            test = f"exact sign test over {n_pairs} seed{'s' if n_pairs != 1 else ''} (no per-example values)"
        return {
            "a_wins": int(a_wins),
            "b_wins": int(b_wins),
            "n_pairs": n_pairs,
            "p_value": sign_test(int(a_wins), int(b_wins)),
            "unit": "example" if paired else "seed",
            "n_seeds": len(seeds),
            "n_examples": n_examples,
            "test": test,
        }

    def winner(self, metric: str) -> tuple[str | float, bool]:
        """The masking with the best mean, and whether a paired test allows calling it the winner.

        It is called the winner (``True``) only when, in the paired sign test of :meth:`compare` (per
        seed and held-out example, pooled over seeds), it beats every other masking: more pairs in its
        favour and a Holm-Bonferroni-adjusted p-value below :data:`ALPHA` (0.05) in each comparison. Holm
        over the ``k`` comparisons: the smallest p must be below 0.05/k, the next below 0.05/(k-1), ...,
        the largest below 0.05. Runs without per-example values are compared seed by seed, and a sign
        test over fewer than 6 seeds can never reach 0.05 (3 seeds: p is at least 0.25).
        """
        best, clear, _ = self._winner(metric)
        return best, clear

    def _winner(self, metric: str) -> tuple[str | float, bool, dict[str | float, dict[str, Any]]]:
        """The best mean, whether it wins, and its comparison with every other masking (with ``p_holm``)."""
        summary = self.summary(metric)
        best = max(self.maskings, key=lambda m: summary[m][0])
        others = [m for m in self.maskings if m != best]
        tests = {m: self.compare(best, m, metric) for m in others}
        for m, p in zip(others, holm([tests[m]["p_value"] for m in others])):
            tests[m]["p_holm"] = p
        clear = all(t["a_wins"] > t["b_wins"] and t["p_holm"] < ALPHA for t in tests.values())
        return best, clear, tests

    def verdict(self, metric: str) -> str:
        """A sentence, generated from the runs, that names the winner on ``metric`` or says why none can
        be called, with the paired test used and its p-values (see :meth:`winner`)."""
        summary = self.summary(metric)
        best, clear, tests = self._winner(metric)
        name = ALL_METRICS[metric][0]
        n_seeds = len(self.final(metric)[best])

        def show(m: str | float) -> str:  # the best masking's mean says over how many seeds; the others' do not
            mean, sd = summary[m]
            if n_seeds == 1:
                return f"{masking_words(m)} ({_format(metric, mean)}" + (", 1 seed, no spread)" if m == best else ")")
            spread = f"{_format(metric, mean)} ± {_format(metric, sd).lstrip('+')}"
            return f"{masking_words(m)} ({spread}" + (f" over {n_seeds} seeds)" if m == best else ")")

        if not tests:
            return f"On {name}, {show(best)} is the only masking: there is nothing to compare it with."
        others = [m for m in self.maskings if m != best]
        first = tests[others[0]]
        corrected = "Holm-adjusted " if len(others) > 1 else ""
        if first["unit"] == "example":
            across = f"{first['n_seeds']} seed{'s' if first['n_seeds'] != 1 else ''} × {first['n_examples']} held-out examples"
        else:
            across = f"{first['n_seeds']} seeds"
        one_seed = (
            " One seed cannot show the seed-to-seed spread: the test is over the held-out examples of one batch order."
            if n_seeds == 1
            else ""
        )
        if clear:
            ps = _and([format_p(tests[m]["p_holm"]) for m in others])
            return (
                f"On {name}, {show(best)} is the winner: it beats {_and([show(m) for m in others])} in a paired "
                f"sign test over {across} ({corrected}{ps}, {'each ' if len(others) > 1 else ''}below {ALPHA:g})."
                + one_seed
            )
        failed = [m for m in others if not (tests[m]["a_wins"] > tests[m]["b_wins"] and tests[m]["p_holm"] < ALPHA)]
        why = []
        for m in failed:
            t = tests[m]
            if t["a_wins"] <= t["b_wins"]:
                why.append(
                    f"against {show(m)} counts {t['a_wins']} pair{'s' if t['a_wins'] != 1 else ''} in its favour "
                    f"and {t['b_wins']} against, {corrected}{format_p(t['p_holm'])}"
                )
            else:
                why.append(f"against {show(m)} gives {corrected}{format_p(t['p_holm'])}")
        sentence = (
            f"On {name}, no winner can be called: {show(best)} has the best mean, but its paired sign test over "
            f"{across} {_and(why)} (a winner needs p below {ALPHA:g})."
        )
        if any(t["unit"] == "seed" for t in tests.values()):
            sentence += (
                f" These runs keep no per-example values, so the test pairs whole seeds, and a sign test over "
                f"{first['n_seeds']} seed{'s' if first['n_seeds'] != 1 else ''} cannot give p below "
                f"{_min_sign_p(first['n_seeds']):.2g} (6 or more seeds are needed to go below {ALPHA:g})."
            )
        return sentence + one_seed

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
        ``grad_share_every=None``). With one seed the spread is not shown: one seed has none."""
        one = len(self.seeds) == 1
        head = (
            f"{'masking':>24} {'exact match':>14} {'log Pr(y|x)/token':>19} {'prompt share: loss':>19} {'gradient':>9}"
        )
        lines = [head]
        em, lp = self._measured(self.summary, "exact_match"), self._measured(self.summary, "cond_logprob_per_token")
        for m in self.maskings:
            grad = self._measured(self.prompt_grad_share, m)
            cells = [
                (f"{em[m][0]:>7.0%}{'':7}" if one else f"{em[m][0]:>7.0%} ± {em[m][1]:<4.0%}") if em else f"{'–':>14}",
                (f"{lp[m][0]:>+11.3f}{'':8}" if one else f"{lp[m][0]:>+11.3f} ± {lp[m][1]:<5.3f}")
                if lp
                else f"{'–':>19}",
                f"{self.prompt_loss_share(m):>19.0%}",
                f"{grad:>9.0%}" if grad is not None else f"{'–':>9}",
            ]
            lines.append(f"{masking_words(m):>24} " + " ".join(cells))
        if one:
            lines.append(
                f"(1 seed, no spread: seed {self.seeds[0]} alone cannot show how much another seed would move these.)"
            )
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
    keep_models: bool = False,
    **kw: Any,
) -> Experiment:
    """Fine-tune under every masking with every seed (all from ``model``'s weights) and collect the runs.

    Args:
        data, eval_data: training and held-out rows (TRL rows or Examples); evaluation is required.
        maskings: as for :func:`sftviz.compare_masking`.
        seeds: one or more different integers. Each seed is one batch order, shared by every masking.
            Two or more show the seed-to-seed spread (mean ± sd); one seed is allowed (its sd is 0, shown
            as "1 seed, no spread"), and :meth:`Experiment.verdict` still tests the maskings against
            each other on the held-out examples, but cannot say how much another seed would change.
        dataset: a label for tables and plots. progress: one progress bar over all the runs.
        keep_models: False (the default) keeps each run's record only: its trained model and training state
            are dropped as soon as it finishes (``run.model`` is None), so that memory holds one copy of the
            model at a time, not one per run (on a 135M-parameter model with its AdamW state, about 1.6 GB
            per run). True keeps them, e.g. to continue a run. Without models, a run recorded before under
            the same key is read instead of trained (``run.cached``; the progress bar counts them): from
            ``$SFTVIZ_RUN_CACHE`` when it is set, and from the records shipped with sftviz (the course's
            own runs, on the machine kind that made them: :mod:`sftviz.train.cache`). ``cache=False``
            trains every run.
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
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in seeds):
        raise TypeError(f"seeds must be integers, got {seeds}.")
    if not seeds:
        raise ValueError("seeds is empty: give at least one integer, e.g. (0,), or (0, 1, 2) to see the spread.")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(
            f"seeds repeats {', '.join(map(str, repeated))} (got {seeds}): a repeated seed reruns the same "
            "batches and adds nothing. Give different integers."
        )
    if eval_data is None:
        raise ValueError("masking_experiment compares held-out scores: pass eval_data (e.g. the eval split).")
    kw.setdefault("grad_share_every", 25)
    kw["progress"] = False
    exp = Experiment(maskings=[check_masking(m) for m in maskings], seeds=seeds, dataset=dataset)
    bar = runs_progress(len(seeds) * len(exp.maskings), f"masking experiment {dataset}".strip()) if progress else None
    for seed in seeds:
        runs = compare_masking(
            model, tok, data, maskings, seed=seed, eval_data=eval_data, keep_models=keep_models, **kw
        )
        for m, run in runs.items():
            run.name = f"{masking_words(m)}, seed {seed}"
            exp.runs[(m, seed)] = run
        if bar is not None:
            read = sum(run.cached for run in exp.runs.values())
            if read:
                bar.set_postfix_str(f"{read} read from the run cache", refresh=False)
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
