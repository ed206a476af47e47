"""The masking experiment: runs under one or more seeds, summaries with spread, a verdict from a stated paired test."""

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


def _paired(per_seed):
    """An experiment whose runs keep per-example exact matches: per_seed = {masking: [list of bools per seed]}."""
    seeds = list(range(len(next(iter(per_seed.values())))))
    exp = Experiment(maskings=list(per_seed), seeds=seeds)
    for m, lists in per_seed.items():
        for s, exact in enumerate(lists):
            ev = EvalRecord(
                step=10, exact_match=sum(exact) / len(exact), n_generated=len(exact), exact_per_example=list(exact)
            )
            exp.runs[(m, s)] = Run(config={}, history=[StepRecord(step=1)], evals=[ev])
    return exp


def _answers(n, right):
    """n answers, those at the indices in ``right`` correct."""
    return [i in right for i in range(n)]


def test_sign_test_and_holm_are_the_textbook_ones():
    from sftviz.train.experiment import format_p, holm, sign_test

    assert sign_test(3, 0) == sign_test(0, 3) == 0.25  # 3 of 3 seeds: p = 2/8, far from 0.05
    assert sign_test(5, 0) == 0.0625 and sign_test(6, 0) == 0.03125  # 6 is the fewest that can reach 0.05
    assert sign_test(9, 1) == 2 * (1 + 10) / 2**10
    assert sign_test(0, 0) == 1.0 and sign_test(4, 4) == 1.0
    # the two tails, counted by brute force over all 2^n outcomes
    n, k = 12, 3
    extreme = sum(1 for x in range(2**n) if min(bin(x).count("1"), n - bin(x).count("1")) <= k)
    assert sign_test(k, n - k) == extreme / 2**n
    assert holm([0.04, 0.01]) == [0.04, 0.02] and holm([0.03, 0.03]) == [0.06, 0.06]
    assert (
        holm([0.01, 0.5, 0.02]) == [0.03, 0.5, 0.04]
        and holm([0.9, 0.3]) == [0.9, 0.6]
        and holm([0.9, 0.8]) == [1.0, 1.0]
    )
    assert [format_p(p) for p in (0.004123, 0.25, 1.0, 3e-7)] == ["p = 0.0041", "p = 0.25", "p = 1", "p < 0.0001"]


def test_compare_counts_discordant_pairs_pooled_over_seeds():
    # 40 questions: full is right on 30 (0-29) every seed; completion on 25 (0-24) plus question 39 on seed 1
    full = [_answers(40, range(30))] * 3
    comp = [_answers(40, range(25)), _answers(40, [*range(25), 39]), _answers(40, range(25))]
    exp = _paired({"completion": comp, "full": full})
    from sftviz.train.experiment import sign_test

    got = exp.compare("full", "completion", "exact_match")
    assert got["a_wins"] == 15 and got["b_wins"] == 1 and got["n_pairs"] == 120
    assert got["p_value"] == sign_test(15, 1) and got["unit"] == "example"
    assert (got["n_seeds"], got["n_examples"]) == (3, 40)
    assert got["test"] == "exact sign test over 120 (seed, example) pairs"
    back = exp.compare("completion", "full", "exact_match")
    assert (back["a_wins"], back["b_wins"], back["p_value"]) == (1, 15, got["p_value"])
    with pytest.raises(ValueError, match="not a masking of this experiment"):
        exp.compare("full", 0.1, "exact_match")
    with pytest.raises(ValueError, match="metric must be one of"):
        exp.compare("full", "completion", "accuracy")


def test_a_winner_needs_the_paired_test_not_just_every_seed():
    """The reviewer's case: better on 3 of 3 seeds and intervals apart, but only 4 discordant pairs."""
    other = [_answers(40, range(20))] * 3
    best = [_answers(40, range(21)), _answers(40, range(21)), _answers(40, range(22))]
    exp = _paired({"completion": other, "full": best})
    assert exp.wins("full", "completion", "exact_match") == 3  # every seed
    (m_best, sd_best), (m_other, sd_other) = (
        exp.summary("exact_match")["full"],
        exp.summary("exact_match")["completion"],
    )
    assert m_best - sd_best > m_other + sd_other  # the spreads do not overlap
    assert exp.winner("exact_match") == ("full", False)  # 4 vs 0 discordant pairs: p = 0.125
    assert exp.verdict("exact_match") == (
        "On held-out exact match, no winner can be called: full (53% ± 1% over 3 seeds) has the best mean, but its "
        "paired sign test over 3 seeds × 40 held-out examples against completion-only (50% ± 0%) gives p = 0.12 "
        "(a winner needs p below 0.05)."
    )


def test_a_clear_winner_is_named_with_its_test_and_p_values():
    base = [_answers(40, range(20))] * 3
    exp = _paired(
        {
            "completion": base,
            "full": [_answers(40, range(28))] * 3,  # 24 discordant pairs, all for full
            0.1: [_answers(40, range(26))] * 3,  # 6 discordant pairs for full (28 vs 26 right)
        }
    )
    assert exp.winner("exact_match") == ("full", True)
    tests = exp._winner("exact_match")[2]
    assert tests["completion"]["p_holm"] == min(1.0, 2 * tests["completion"]["p_value"])  # the smaller p, times 2
    assert tests[0.1]["p_holm"] == tests[0.1]["p_value"]
    assert exp.verdict("exact_match") == (
        "On held-out exact match, full (70% ± 0% over 3 seeds) is the winner: it beats completion-only (50% ± 0%) "
        "and prompt-loss weight 0.1 (65% ± 0%) in a paired sign test over 3 seeds × 40 held-out examples "
        "(Holm-adjusted p < 0.0001 and p = 0.031, each below 0.05)."
    )


def test_holm_can_refuse_what_two_separate_tests_would_allow():
    # against each other masking alone p = 0.031 (6 vs 0): below 0.05, but Holm asks the smaller for 0.025
    exp = _paired(
        {
            "completion": [_answers(10, range(2))] * 3,
            "full": [_answers(10, range(4))] * 3,
            0.1: [_answers(10, range(2))] * 3,
        }
    )
    assert exp.compare("full", "completion", "exact_match")["p_value"] == pytest.approx(0.03125)
    assert exp.winner("exact_match") == ("full", False)
    sentence = exp.verdict("exact_match")
    assert "gives Holm-adjusted p = 0.062 and against prompt-loss weight 0.1 (20% ± 0%) gives" in sentence


def test_log_prob_pairs_drop_ties_and_missing_examples():
    exp = Experiment(maskings=["completion", "full"], seeds=[0, 1])
    per = {
        ("completion", 0): [-1.0, -2.0, None, -0.5],
        ("full", 0): [-1.5, -2.0, None, -0.7],
        ("completion", 1): [-1.0, -2.0, -3.0, -0.5],
        ("full", 1): [-0.5, -2.5, None, -0.6],
    }
    for (m, s), values in per.items():
        ev = EvalRecord(
            step=5, cond_logprob_per_token=-1.0 if m == "completion" else -1.2, cond_logprob_per_example=values
        )
        exp.runs[(m, s)] = Run(config={}, history=[StepRecord(step=1)], evals=[ev])
    got = exp.compare("completion", "full", "cond_logprob_per_token")
    # seed 0: wins, tie, missing, win; seed 1: loss, win, missing, win
    assert (got["a_wins"], got["b_wins"], got["n_pairs"]) == (4, 1, 6)
    assert got["test"] == "exact sign test over 6 (seed, example) pairs"
    assert exp.winner("cond_logprob_per_token") == ("completion", False)
    assert "counts" not in exp.verdict("cond_logprob_per_token")  # it is ahead, just not significantly


def test_old_runs_without_per_example_values_fall_back_to_seeds():
    exp = _experiment(
        {"completion": [(0.5, -1.0), (0.6, -1.1), (0.55, -1.2)], "full": [(0.8, -1.0), (0.85, -0.9), (0.9, -0.8)]}
    )
    got = exp.compare("full", "completion", "exact_match")
    assert (got["unit"], got["a_wins"], got["b_wins"], got["n_pairs"], got["p_value"]) == ("seed", 3, 0, 3, 0.25)
    assert got["test"] == "exact sign test over 3 seeds (no per-example values)"
    assert exp.winner("exact_match") == ("full", False)
    sentence = exp.verdict("exact_match")
    assert "paired sign test over 3 seeds against completion-only (55% ± 5%) gives p = 0.25" in sentence
    assert "cannot give p below 0.25 (6 or more seeds are needed to go below 0.05)" in sentence
    # six seeds, all one way, is enough for one comparison
    six = _experiment({"completion": [(0.5, -1.0)] * 6, "full": [(0.6 + i / 100, -1.0) for i in range(6)]})
    assert six.winner("exact_match") == ("full", True) and "p = 0.031" in six.verdict("exact_match")
    # kept samples stand in for exact_per_example when they are every decoded answer
    for (m, _seed), run in exp.runs.items():
        run.evals[-1].samples = [{"exact": m == "full" or i < 2} for i in range(10)]
        run.evals[-1].n_generated = 10
    assert exp.compare("full", "completion", "exact_match")["n_pairs"] == 30


def test_one_seed_is_summarised_without_a_spread():
    exp = _paired({"completion": [_answers(40, range(20))], "full": [_answers(40, range(30))]})
    assert exp.summary("exact_match")["full"] == (0.75, 0.0)
    assert exp.winner("exact_match") == ("full", True)
    assert exp.verdict("exact_match") == (
        "On held-out exact match, full (75%, 1 seed, no spread) is the winner: it beats completion-only (50%) in a "
        "paired sign test over 1 seed × 40 held-out examples (p = 0.002, below 0.05). One seed cannot show the "
        "seed-to-seed spread: the test is over the held-out examples of one batch order."
    )
    assert exp.compare("full", "completion", "exact_match")["test"] == "exact sign test over 40 held-out examples"
    table = exp.table()
    assert "±" not in table and "1 seed, no spread" in table.splitlines()[-1]


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
    # the records stay; each run's trained model and optimiser state were dropped when it finished
    assert all(r.model is None and r.state is None for r in exp.runs.values())
    kept = sv.masking_experiment(model, tok, rows, rows[:4], ("completion",), seeds=(0,), progress=False,
                                 keep_models=True, **kw)  # fmt: skip
    assert kept.runs[("completion", 0)].model is not None
    assert kept.runs[("completion", 0)].history[-1].loss == exp.runs[("completion", 0)].history[-1].loss


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


def test_best_mean_that_loses_most_pairs_is_not_the_winner():
    # completion has the best mean (one example far ahead) but full is better on most examples
    exp = Experiment(maskings=["completion", "full"], seeds=[0])
    for m, values in {"completion": [-0.1, -2.0, -2.0, -2.0], "full": [-3.0, -1.9, -1.9, -1.9]}.items():
        ev = EvalRecord(step=5, cond_logprob_per_token=sum(values) / 4, cond_logprob_per_example=values)
        exp.runs[(m, 0)] = Run(config={}, history=[StepRecord(step=1)], evals=[ev])
    assert exp.winner("cond_logprob_per_token") == ("completion", False)
    assert (
        "against full (-2.175) counts 1 pair in its favour and 3 against, p = 0.62 (a winner needs p below 0.05)"
        in exp.verdict("cond_logprob_per_token")
    )


def test_masking_experiment_runs_chat_rows_with_one_seed(bundled):
    """support-chat rows (messages) go through the same experiment; one seed is allowed; every run keeps
    per-example values, which survive a save and load."""
    from sftviz.train.records import EvalRecord as Rec

    model, tok = bundled
    train, held = sv.load_dataset("support-chat")[:8], sv.load_dataset("support-chat", split="eval")[:4]
    exp = sv.masking_experiment(
        model, tok, train, held, ("completion", "full"), seeds=(0,), steps=2, batch_size=4, eval_examples=4,
        grad_share_every=None, progress=False, dataset="support-chat",
    )  # fmt: skip
    assert set(exp.runs) == {("completion", 0), ("full", 0)}
    last = exp.runs[("full", 0)].evals[-1]
    assert len(last.exact_per_example) == 4 and all(isinstance(x, bool) for x in last.exact_per_example)
    assert last.exact_match == sum(last.exact_per_example) / 4
    assert len(last.cond_logprob_per_example) == len(last.marg_logprob_per_example) == 4
    assert all(v < 0 for v in last.cond_logprob_per_example + last.marg_logprob_per_example)
    for metric in ("exact_match", "cond_logprob_per_token", "marg_logprob_per_token"):
        sentence = exp.verdict(metric)
        assert "1 seed, no spread" in sentence and "One seed cannot show the seed-to-seed spread" in sentence
        assert "paired sign test over 1 seed × 4 held-out examples" in sentence
        assert exp.summary(metric)["full"][1] == 0.0
    assert exp.compare("full", "completion", "cond_logprob_per_token")["n_pairs"] == 4
    table = exp.table()
    assert "completion-only" in table and "1 seed, no spread" in table
    back = Rec.from_dict(last.to_dict())
    assert back == last
    with pytest.raises(ValueError, match=r"exact_per_example\[1\] is 1; it must hold true or false"):
        Rec.from_dict(last.to_dict() | {"exact_per_example": [True, 1]})
    with pytest.raises(ValueError, match=r"cond_logprob_per_example\[0\] is 'x'"):
        Rec.from_dict(last.to_dict() | {"cond_logprob_per_example": ["x"]})
    old = {k: v for k, v in last.to_dict().items() if not k.endswith("_per_example")}
    assert Rec.from_dict(old).cond_logprob_per_example is None  # a run saved before these fields loads


def test_per_example_log_probs_are_each_examples_own_mean(tiny_model, gpt2_tok_padded, tmp_path):
    from sftviz.logprobs import score_batch

    rows = [{"prompt": f"Question: How much is the {it}?\nAnswer:", "completion": f" {n} dollars."} for it, n in
            [("lamp", 12), ("Nova Fan", 49), ("Zephyr Kettle", 5), ("fox", 7)]]  # fmt: skip
    run = sv.finetune(
        tiny_model, gpt2_tok_padded, rows, steps=1, batch_size=2, device="cpu", progress=False, eval_data=rows,
        eval_examples=2,
    )  # fmt: skip
    first = run.evals[0]  # the starting model
    reps = score_batch(tiny_model, gpt2_tok_padded, rows)
    assert first.cond_logprob_per_example == pytest.approx(
        [r.conditional / r.n_completion_scored for r in reps], rel=1e-5
    )
    assert first.marg_logprob_per_example == pytest.approx([r.marginal / r.n_prompt_scored for r in reps], rel=1e-5)
    assert len(first.exact_per_example) == 2 == first.n_generated
    path = run.save(tmp_path / "run.json")
    assert sv.load_run(path).evals == run.evals


@pytest.mark.parametrize(
    "kw, err, match",
    [
        (dict(seeds=()), ValueError, "seeds is empty"),
        (dict(seeds=(1, 2, 1)), ValueError, "seeds repeats 1"),
        (dict(seeds="01"), TypeError, "list of integers"),
        (dict(seeds=(0, 1.5)), TypeError, "integers"),
        (dict(eval_data=None), ValueError, "pass eval_data"),
        (dict(keep_models="no"), TypeError, "keep_models must be True or False"),
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
