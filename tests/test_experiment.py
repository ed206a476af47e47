"""The masking experiment: runs under several seeds, summaries with spread, a verdict that can say 'too close'."""

import math

import pytest

import sftviz as sv
from sftviz.train.experiment import Experiment, masking_words
from sftviz.train.records import EvalRecord, StepRecord
from sftviz.train.runs import Run


@pytest.fixture(scope="module")
def bundled():
    return sv.load_model(device="cpu")


def _run(em, lp, n_prompt=14, n_completion=1, share=None):
    hist = [StepRecord(step=1, n_prompt_targets=n_prompt, n_completion_targets=n_completion, prompt_grad_share=share)]
    evals = [
        EvalRecord(step=0, exact_match=0.0, cond_logprob_per_token=-5.0),
        EvalRecord(step=10, exact_match=em, cond_logprob_per_token=lp),
    ]
    return Run(config={}, history=hist, evals=evals)


def _experiment(values):
    """values: {masking: [(em, lp), ...] one per seed}."""
    seeds = list(range(len(next(iter(values.values())))))
    exp = Experiment(maskings=list(values), seeds=seeds)
    for m, per_seed in values.items():
        for s, (em, lp) in enumerate(per_seed):
            exp.runs[(m, s)] = _run(em, lp, share=0.0 if m == "completion" else 0.5)
    return exp


def test_summary_is_mean_and_sd_of_the_last_evaluation():
    exp = _experiment({"completion": [(0.5, -1.0), (0.7, -2.0), (0.6, -3.0)], "full": [(0.1, -1.5)] * 3})
    mean, sd = exp.summary("exact_match")["completion"]
    assert mean == pytest.approx(0.6) and sd == pytest.approx(0.1)
    assert exp.final("cond_logprob_per_token")["completion"] == [-1.0, -2.0, -3.0]
    assert exp.summary("exact_match")["full"] == (pytest.approx(0.1), 0.0)


def test_a_clear_winner_is_named():
    exp = _experiment(
        {"completion": [(0.5, -1.0), (0.6, -1.1), (0.55, -1.2)], "full": [(0.8, -1.0), (0.85, -1), (0.9, -1)]}
    )
    assert exp.winner("exact_match") == ("full", True)
    sentence = exp.verdict("exact_match")
    assert sentence.startswith("On held-out exact match, full 85% ± 5% wins against completion-only 55% ± 5%")
    assert "each of the 3 seeds" in sentence


def test_no_winner_when_one_seed_disagrees_or_spreads_overlap():
    exp = _experiment({"completion": [(0.5, 0), (0.9, 0), (0.6, 0)], "full": [(0.6, 0), (0.7, 0), (0.7, 0)]})
    best, clear = exp.winner("exact_match")
    assert best == "completion" and not clear
    assert "beats full on only 1 of the 3 seeds" in exp.verdict("exact_match")
    assert "cannot call a winner" in exp.verdict("exact_match")
    overlap = _experiment({"completion": [(0.5, 0), (0.9, 0), (0.6, 0)], "full": [(0.4, 0), (0.8, 0), (0.5, 0)]})
    assert overlap.winner("exact_match") == ("completion", False)
    assert "overlaps that of full" in overlap.verdict("exact_match")
    assert overlap.wins("completion", "full", "exact_match") == 3


def test_prompt_loss_share_counts_the_weight_and_the_lengths():
    exp = _experiment({"completion": [(0, 0)] * 2, "full": [(0, 0)] * 2, 0.1: [(0, 0)] * 2})
    assert exp.prompt_loss_share("completion") == 0.0
    assert exp.prompt_loss_share("full") == pytest.approx(14 / 15)
    # ten times less weight on prompts 14 times longer: still over half of the loss
    assert exp.prompt_loss_share(0.1) == pytest.approx(1.4 / 2.4)
    assert exp.prompt_grad_share("full") == 0.5
    assert "prompt-loss weight 0.1" in exp.table() and masking_words(0.1) == "prompt-loss weight 0.1"


def test_bad_metric_and_missing_measurements_are_explained():
    exp = _experiment({"completion": [(0, 0)] * 2, "full": [(0, 0)] * 2})
    with pytest.raises(ValueError, match="metric must be one of"):
        exp.summary("accuracy")
    exp.runs[("full", 0)].history[0].prompt_grad_share = None
    exp.runs[("full", 1)].history[0].prompt_grad_share = None
    with pytest.raises(ValueError, match="grad_share_every"):
        exp.prompt_grad_share("full")
    assert exp.table().splitlines()[2].endswith("–")  # the table shows what was not measured as "–"
    assert math.isnan(Experiment(["full"], [0], {("full", 0): Run(config={})}).prompt_loss_share("full"))


def test_masking_experiment_runs_equal_their_serial_runs(bundled, capsys):
    model, tok = bundled
    rows = sv.load_dataset("support")[:24]
    kw = dict(steps=3, batch_size=8, eval_examples=2, grad_share_every=1)
    exp = sv.masking_experiment(
        model, tok, rows, rows[:4], ("completion", 0.1), seeds=(0, 5), dataset="support", progress=True, **kw
    )
    shown = capsys.readouterr().err  # one progress bar over all the runs
    assert "masking experiment support" in shown and "4/4" in shown and "run" in shown
    assert exp.maskings == ["completion", 0.1]
    assert set(exp.runs) == {("completion", 0), ("completion", 5), (0.1, 0), (0.1, 5)}
    serial = sv.finetune(model, tok, rows, 0.1, seed=5, eval_data=rows[:4], progress=False, **kw)
    run = exp.runs[(0.1, 5)]
    assert [r.loss for r in run.history] == [r.loss for r in serial.history]
    assert run.evals[-1].cond_logprob_per_token == serial.evals[-1].cond_logprob_per_token
    assert exp.runs[("completion", 0)].history[0].loss != exp.runs[("completion", 5)].history[0].loss
    assert exp.prompt_grad_share("completion") == 0.0 and 0 < exp.prompt_loss_share(0.1) < 1


def test_a_stopped_experiment_keeps_its_runs_and_starts_no_more(bundled):
    import threading

    model, tok = bundled
    rows = sv.load_dataset("support")[:8]
    stop = threading.Event()
    stop.set()
    exp = sv.masking_experiment(
        model, tok, rows, rows[:2], seeds=(0, 1), steps=2, batch_size=4, eval_examples=0, progress=False, stop=stop
    )
    assert exp.stopped and list(exp.runs) == [("completion", 0)]
    assert exp.maskings == ["completion", "full", 0.1]
    assert exp.final("cond_logprob_per_token")["full"] == [] and exp.wins("completion", "full", "exact_match") == 0


@pytest.mark.parametrize(
    "kw, err, match",
    [
        (dict(seeds=(0,)), ValueError, "two or more different"),
        (dict(seeds=(1, 1)), ValueError, "two or more different"),
        (dict(seeds="01"), TypeError, "list of integers"),
        (dict(seeds=(0, 1.5)), TypeError, "integers"),
        (dict(eval_data=None), ValueError, "pass eval_data"),
    ],
)
def test_masking_experiment_bad_input(bundled, kw, err, match):
    model, tok = bundled
    rows = sv.load_dataset("support")[:8]
    args = dict(data=rows, eval_data=rows, seeds=(0, 1), steps=1, batch_size=4, progress=False) | kw
    with pytest.raises(err, match=match):
        sv.masking_experiment(model, tok, **args)


def test_plot_experiments_draws_two_panels_per_experiment_and_rejects_other_input():
    from sftviz import plots

    exp = _experiment({"completion": [(0.5, -1.0), (0.7, -2.0)], "full": [(0.1, -1.5), (0.2, -1.4)]})
    exp.dataset = "support"
    fig = plots.plot_experiments([exp, exp])
    assert len(fig.axes) == 4
    assert fig.axes[0].get_title() == "support: held-out exact match (higher is better)"
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["completion-only", "full"]
    assert all(t.get_fontsize() >= 9 for t in fig.axes[0].get_xticklabels())
    with pytest.raises(TypeError, match="Experiment"):
        plots.plot_experiments([{"runs": {}}])


def test_plot_example_can_write_ids_and_labels(bundled):
    from sftviz import plots

    _, tok = bundled
    toy = sv.build_example(tok, prompt="Sky?", completion=" blue.")
    fig = plots.plot_example(toy, show_ids=True, per_row=len(toy))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert f"pos 0\nid {toy.input_ids[0]}\nlabel \u2212100" in texts
    assert f"pos {len(toy) - 1}\nid {toy.input_ids[-1]}\nlabel {toy.input_ids[-1]}" in texts
    with pytest.raises(ValueError, match="per_row"):
        plots.plot_example(toy, per_row=0)


def test_plot_shift_draws_each_input_over_its_target(bundled):
    from sftviz import plots

    _, tok = bundled
    toy = sv.build_example(tok, prompt="Sky?", completion=" blue.")
    fig = plots.plot_shift(toy)
    texts = [t.get_text() for t in fig.axes[0].texts]
    # one caption per position, one "no label" (the EOS's own prediction), and a -100 under every
    # input whose next token is masked
    assert [x for x in texts if x.startswith("t = ")] == [f"t = {t}" for t in range(len(toy))]
    assert texts.count("no\nlabel") == 1
    masked_next = sum(1 for lab in toy.labels[1:] if lab == -100)
    assert sum(1 for x in texts if x.endswith("\u2212100")) == masked_next == toy.n_prompt - 1
    assert sum(1 for x in texts if x.endswith("\u2713")) == len(toy) - toy.n_prompt
    assert all(t.get_fontsize() >= 9 for t in fig.axes[0].texts)
    # wrapping: two rows of diagram, each with its own row captions
    assert [t.get_text() for t in plots.plot_shift(toy, per_row=4).axes[0].texts].count("input\nat t") == 2
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="per_row"):
            plots.plot_shift(toy, per_row=bad)
