"""The exercise checks refuse shortcuts (a copied number, a call to sv.sft_loss, inputs changed in place,
a prediction that cannot be wrong) and accept the right answers as students write them."""

import types

import pytest
import torch

import sftviz
import sftviz as sv
from sftviz import exercises
from sftviz.loss import sft_loss as imported_sft_loss  # a name a student's notebook could have bound
from sftviz.train.experiment import Experiment
from sftviz.train.runs import Run

F = torch.nn.functional
P, C = "Question: How much is the lamp?\nAnswer:", " 12 dollars."
ORIGINAL_SFT_LOSS = sftviz.loss.sft_loss


# --------------------------------------------------------------------------------------------
# check_masked_loss
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch(gpt2_tok, tiny_model):
    ex = sv.build_example(gpt2_tok, prompt=P, completion=C)
    ids, labels = torch.tensor([ex.input_ids]), torch.tensor([ex.labels])
    with torch.no_grad():
        logits = tiny_model(input_ids=ids).logits
    return logits, labels


def cross_entropy_loss(logits, labels):
    targets = labels[:, 1:].reshape(-1)
    return F.cross_entropy(logits[:, :-1].reshape(len(targets), -1), targets, ignore_index=-100)


def log_softmax_loss(logits, labels):
    logp = logits[:, :-1].log_softmax(-1)
    targets = labels[:, 1:].clone()  # a copy: the caller's labels stay as they were
    keep = targets != -100
    targets[~keep] = 0
    nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (nll * keep).sum() / keep.sum()


@pytest.mark.parametrize("fn", [cross_entropy_loss, log_softmax_loss])
def test_check_masked_loss_accepts_a_right_function(batch, fn):
    fb = exercises.check_masked_loss(fn, *batch)
    assert fb and "same loss as sv.sft_loss" in fb.message


def test_check_masked_loss_refuses_a_number(batch):
    logits, labels = batch
    right = sv.sft_loss(logits, labels)
    for answer in (right, float(right)):
        fb = exercises.check_masked_loss(answer, logits, labels)
        assert not fb and fb.answered
        assert "write a function my_masked_loss(logits, labels)" in fb.message
        assert "cannot be checked on other batches" in fb.message


def calls_sv(logits, labels):
    return sv.sft_loss(logits, labels)


def calls_the_module(logits, labels):
    return sftviz.loss.sft_loss(logits, labels)


def calls_an_imported_name(logits, labels):
    return imported_sft_loss(logits, labels)


def imports_it_inside(logits, labels):
    from sftviz import sft_loss

    return sft_loss(logits, labels)


def calls_it_then_raises(logits, labels):
    sv.sft_loss(logits, labels)
    raise RuntimeError("boom")


@pytest.mark.parametrize("fn", [calls_sv, calls_the_module, calls_an_imported_name, imports_it_inside])
def test_check_masked_loss_refuses_a_call_to_sft_loss(batch, fn):
    fb = exercises.check_masked_loss(fn, *batch)
    assert not fb and "your function calls sv.sft_loss, which the exercise asks you to write yourself" in fb.message
    # every name is restored: the course (and the reference of the next check) use the real function
    assert sv.sft_loss is ORIGINAL_SFT_LOSS and sftviz.loss.sft_loss is ORIGINAL_SFT_LOSS
    assert imported_sft_loss is ORIGINAL_SFT_LOSS


def test_check_masked_loss_restores_sft_loss_after_an_error(batch):
    fb = exercises.check_masked_loss(calls_it_then_raises, *batch)
    assert not fb and "your function calls sv.sft_loss" in fb.message
    assert sv.sft_loss is ORIGINAL_SFT_LOSS and sftviz.loss.sft_loss is ORIGINAL_SFT_LOSS
    assert exercises.check_masked_loss(cross_entropy_loss, *batch)


def masks_in_place(logits, labels):
    labels[labels == -100] = 0  # the classic shortcut: "ignore" by overwriting the caller's labels
    return cross_entropy_loss(logits, labels)


def right_then_changes_labels(logits, labels):
    loss = cross_entropy_loss(logits, labels)
    labels[:, :-1] = labels[:, 1:].clone()
    return loss


def changes_logits(logits, labels):
    loss = cross_entropy_loss(logits, labels)
    logits.zero_()
    return loss


@pytest.mark.parametrize(
    "fn, name", [(masks_in_place, "labels"), (right_then_changes_labels, "labels"), (changes_logits, "logits")]
)
def test_check_masked_loss_refuses_inputs_changed_in_place(batch, fn, name):
    logits, labels = batch
    kept_logits, kept_labels = logits.clone(), labels.clone()
    fb = exercises.check_masked_loss(fn, logits, labels)
    assert not fb and f"your function changed {name} in place" in fb.message
    assert torch.equal(labels, kept_labels) and torch.equal(logits, kept_logits)  # the caller's tensors are intact


def test_check_masked_loss_bad_inputs_from_the_notebook_raise(batch):
    logits, labels = batch
    with pytest.raises(TypeError):
        exercises.check_masked_loss(cross_entropy_loss, logits.tolist(), labels)
    with pytest.raises(ValueError, match="do not line up"):
        exercises.check_masked_loss(cross_entropy_loss, logits, labels[:, :-1])


def test_check_masked_loss_reports_a_broken_return_value(batch):
    fb = exercises.check_masked_loss(lambda lg, lb: "0.5", *batch)
    assert not fb and "should be a number" in fb.message
    fb = exercises.check_masked_loss(lambda lg: 0.5, *batch)
    assert not fb and "raised TypeError" in fb.message


# --------------------------------------------------------------------------------------------
# check_choice
# --------------------------------------------------------------------------------------------

WHY = "the marginal is the same for both completions"


def test_check_choice_shows_the_explanation_only_when_right():
    right = exercises.check_choice(" Marginal ", "marginal", WHY)
    assert right and right.message == WHY
    wrong = exercises.check_choice("joint", "marginal", WHY)
    assert not wrong and WHY not in wrong.message and "marginal" not in wrong.message
    assert repr(wrong).startswith("Not yet: that is not it; reread")
    hinted = exercises.check_choice("joint", "marginal", WHY, hint="which part is scored before y is seen?")
    assert not hinted and repr(hinted) == "Not yet: which part is scored before y is seen?"
    assert not exercises.check_choice(None, "marginal", WHY).answered


@pytest.mark.parametrize("answer", [True, "True", "true", " yes ", "YES"])
def test_check_choice_reads_true_as_students_write_it(answer):
    assert exercises.check_choice(answer, True, WHY)
    assert not exercises.check_choice(answer, False, WHY)


@pytest.mark.parametrize("answer", [False, "False", "false", "no", "No"])
def test_check_choice_reads_false_as_students_write_it(answer):
    assert exercises.check_choice(answer, False, WHY)
    assert not exercises.check_choice(answer, True, WHY)


def test_check_choice_bool_expected_and_sets():
    assert exercises.check_choice(True, torch.tensor(True), WHY)  # an expected value computed as a tensor
    assert "answer True or False" in exercises.check_choice("maybe", True, WHY).message
    assert not exercises.check_choice("true", "false", WHY)  # strings stay strings when expected is not a bool
    assert exercises.check_choice({3, 0}, {0, 3}, WHY) and exercises.check_choice([3, 0], {0, 3}, WHY)
    fb = exercises.check_choice({0}, {0, 3}, WHY)
    assert not fb and WHY not in fb.message


def test_check_choice_bad_arguments_from_the_notebook_raise():
    with pytest.raises(TypeError):
        exercises.check_choice("a", "a", None)
    with pytest.raises(TypeError):
        exercises.check_choice("a", "a", WHY, hint=3)
    with pytest.raises(ValueError):
        exercises.check_choice("a", None, WHY)


# --------------------------------------------------------------------------------------------
# check_prediction
# --------------------------------------------------------------------------------------------

N_EXAMPLES = 40


def _run(exact, logprob):
    """A finished run whose last evaluation scored N_EXAMPLES held-out examples the same way."""
    per_example = [exact] * N_EXAMPLES
    last = {
        "step": 10,
        "exact_match": float(exact),
        "cond_logprob_per_token": logprob,
        "n_generated": N_EXAMPLES,
        "samples": [{"exact": exact} for _ in range(N_EXAMPLES)],
        "exact_per_example": per_example,
        "cond_logprob_per_example": [logprob] * N_EXAMPLES,
    }
    return Run(config={}, evals=[{"step": 0, "exact_match": 0.0, "cond_logprob_per_token": -5.0}, last])


def _experiment(winner=None, maskings=("completion", "full", 0.1), seeds=(0, 1, 2)):
    """``winner`` answers every held-out example right and scores it far higher, on every seed; the
    others answer none. ``winner=None``: every masking scores the same (no winner can be called)."""
    exp = Experiment(maskings=list(maskings), seeds=list(seeds))
    for m in maskings:
        for s in seeds:
            best = winner is not None and m == winner
            exp.runs[(m, s)] = _run(best, -1.0 if best else -3.0)
    return exp


@pytest.fixture(scope="module")
def clear():
    exp = _experiment("completion")
    assert exp.winner("exact_match") == ("completion", True)
    return exp


@pytest.fixture(scope="module")
def tie():
    exp = _experiment(None)
    assert exp.winner("exact_match")[1] is False
    return exp


def test_check_prediction_right_winner(clear):
    fb = exercises.check_prediction("completion", clear)
    assert fb and fb.message.endswith(clear.verdict("exact_match"))


def test_check_prediction_wrong_winner_and_tie_where_a_winner_is_called(clear):
    fb = exercises.check_prediction("full", clear)
    assert not fb and "completion-only wins" in fb.message and fb.message.endswith(clear.verdict("exact_match"))
    fb = exercises.check_prediction("tie", clear)
    assert not fb and "but they call completion-only" in fb.message
    assert fb.message.endswith(clear.verdict("exact_match"))


@pytest.mark.parametrize("masking", ["completion", "full", 0.1])
def test_check_prediction_a_masking_is_wrong_where_no_winner_can_be_called(tie, masking):
    fb = exercises.check_prediction(masking, tie)
    assert not fb and "cannot call a winner" in fb.message and "'tie'" in fb.message
    assert fb.message.endswith(tie.verdict("exact_match"))


@pytest.mark.parametrize(
    "answer", ["tie", "Tie", " TIE ", "no winner", "No-winner", "none can be called", "None-can-be-called"]
)
def test_check_prediction_tie_is_right_where_no_winner_can_be_called(tie, answer):
    fb = exercises.check_prediction(answer, tie)
    assert fb and fb.message.endswith(tie.verdict("exact_match"))


@pytest.mark.parametrize(
    "answer, winner",
    [
        ("Full", "full"),
        (" FULL ", "full"),
        ("full loss", "full"),
        ("unmasked", "full"),
        ("Completion", "completion"),
        ("completion-only", "completion"),
        ("completion only", "completion"),
        ("completion_only", "completion"),
        ("0.1", 0.1),
        (" 0.10 ", 0.1),
        (0.1, 0.1),
    ],
)
def test_check_prediction_reads_maskings_as_students_write_them(answer, winner):
    exp = _experiment(winner)
    assert exp.winner("exact_match") == (winner, True)
    assert exercises.check_prediction(answer, exp)
    other = "completion" if winner != "completion" else "full"
    assert not exercises.check_prediction(other, exp)


def test_check_prediction_not_a_masking_is_feedback(clear):
    for answer in ("prompt-masked", "maybe", [1], True, "2.5"):
        fb = exercises.check_prediction(answer, clear)
        assert not fb and fb.answered and "is not a masking" in fb.message, (answer, fb.message)
    fb = exercises.check_prediction(0.5, clear)
    assert not fb and "predict one of them" in fb.message
    assert not exercises.check_prediction(None, clear).answered
    assert exercises.check_prediction(0, clear)  # a prompt-loss weight of 0 trains like completion-only


def test_check_prediction_bad_arguments_from_the_notebook_raise(clear):
    with pytest.raises(TypeError, match="needs an Experiment"):
        exercises.check_prediction("full", {"completion": 1})
    with pytest.raises(ValueError, match="metric must be one of"):
        exercises.check_prediction("full", clear, metric="accuracy")


# --------------------------------------------------------------------------------------------
# the precision a student reads
# --------------------------------------------------------------------------------------------

REPORT = types.SimpleNamespace(joint=-20.0, marginal=-6.6358)  # log Pr(y | x) = -13.3642, printed -13.36


def test_check_conditional_accepts_the_printed_precision():
    assert exercises.check_conditional(-13.3642, REPORT)
    fb = exercises.check_conditional(-13.36, REPORT)
    assert fb and "-13.3642, to 2 decimals" in fb.message
    assert exercises.check_conditional(torch.tensor(-13.36), REPORT)
    assert exercises.check_conditional(-13.36, types.SimpleNamespace(joint=-20.0, marginal=-6.6388))  # -13.3612
    assert not exercises.check_conditional(-13.4, REPORT)
    assert not exercises.check_conditional(-13.35, REPORT)
    assert "sign is flipped" in exercises.check_conditional(13.36, REPORT).message
    assert not exercises.check_conditional(-13.36, REPORT, decimals=None)
    assert exercises.check_conditional(-13.4, REPORT, decimals=1)


def test_check_number_decimals():
    assert not exercises.check_number(-13.36, -13.3642, "x")  # without decimals: the existing tolerance only
    assert exercises.check_number(-13.36, -13.3642, "x", decimals=2)
    assert not exercises.check_number(-13.4, -13.3612, "x", decimals=2)
    assert exercises.check_number(0.58, 1.4 / 2.4, "the share", decimals=2)
    assert not exercises.check_number(0.57, 1.4 / 2.4, "the share", decimals=2)


def test_check_number_and_conditional_bad_arguments_raise():
    with pytest.raises(ValueError):
        exercises.check_number(1.0, 1.0, "x", decimals=-1)
    with pytest.raises(TypeError):
        exercises.check_number(1.0, 1.0, "x", decimals=1.5)
    with pytest.raises(TypeError):
        exercises.check_number(1.0, "1.0", "x")
    with pytest.raises(ValueError):
        exercises.check_number(1.0, float("nan"), "x")
    with pytest.raises(ValueError):
        exercises.check_number(1.0, 1.0, "x", tol=-1)
    with pytest.raises(TypeError, match="ScoreReport"):
        exercises.check_conditional(-13.36, {"joint": -20.0, "marginal": -6.6388})
    assert "should be a number" in exercises.check_number("-13.36", -13.3612, "x", decimals=2).message


# --------------------------------------------------------------------------------------------
# quizzes in static views
# --------------------------------------------------------------------------------------------


def test_quiz_static_view_hides_answers_unless_asked():
    from sftviz.widgets import Quiz

    assert "<details>" not in Quiz("sft-foundations").static_html()
    assert "<details>" in Quiz("sft-foundations", reveal_in_static=True).static_html()


# ---------------------------------------------------------------------------------- notebook 7's checks


def test_check_packed_targets_reads_the_truth_from_the_batch(gpt2_tok_padded):
    rows = [{"prompt": "Q: Hi?\nA:", "completion": " Hello."}, {"prompt": "Q: 2+2?\nA:", "completion": " 4"}]
    batch = sv.pack(rows, gpt2_tok_padded, max_length=64, masking="full", strategy="in-order")
    real = int((batch["example_index"][0] >= 0).sum())
    second = int((batch["example_index"][0] == 0).sum())
    right = {"starts": [0, second], "trained": real - 2}  # full masking: every token but each example's first
    assert exercises.check_packed_targets(right, batch).ok
    assert not exercises.check_packed_targets(None, batch).answered
    late = exercises.check_packed_targets({"starts": [second], "trained": real - 2}, batch)
    assert not late.ok and "The first example starts at 0 too." in late.message
    across = exercises.check_packed_targets({"starts": [0, second], "trained": real - 1}, batch)
    assert not across.ok and "a target across a boundary" in across.message
    assert "whole number" in exercises.check_packed_targets({"starts": [0, second], "trained": "9"}, batch).message
    with pytest.raises(ValueError, match="row must be a row number of the batch, 0 to 0; got 3"):
        exercises.check_packed_targets(right, batch, row=3)
    with pytest.raises(TypeError, match=r"packed batch from sv\.pack"):
        exercises.check_packed_targets(right, {"input_ids": batch["input_ids"]})


def test_check_matching_reduction_reads_the_measured_distances():
    distances = [
        {"reduction": "step_token_mean", "cosine": 1.0, "relative_l2": 1e-7},
        {"reduction": "token_sum", "cosine": 1.0, "relative_l2": 99.0},
        {"reduction": "sequence_mean", "cosine": 0.97, "relative_l2": 0.25},
    ]
    assert exercises.check_matching_reduction("step_token_mean", distances).ok
    assert "not the same size" in exercises.check_matching_reduction("token_sum", distances).message
    assert "weighs a token by the piece" in exercises.check_matching_reduction("sequence_mean", distances).message
    assert "one of" in exercises.check_matching_reduction("mean", distances).message
    assert not exercises.check_matching_reduction(None, distances).answered
