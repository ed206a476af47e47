"""sv.finetune on packed rows, and the diagnosis lab's packing and normalisation suspects."""

import pytest
import torch

import sftviz as sv
from sftviz import exercises
from sftviz import faults as FL
from sftviz.train.records import EvalRecord, StepRecord
from sftviz.train.runs import Run

ROWS = [
    {"prompt": "Question: How much is the lamp?\nAnswer:", "completion": " 12 dollars."},
    {"prompt": "Q: colour of the sky?\nA:", "completion": " Blue, on a clear day, and grey under clouds."},
    {"prompt": "Question: Is the shop open on Sunday morning?\nAnswer:", "completion": " No."},
    {"prompt": "Q: 2+2?\nA:", "completion": " 4"},
] * 3
ROW = ROWS[0]


@pytest.fixture(scope="module")
def model(tiny_model):
    """The tiny GPT-2 without dropout: dropout draws a different mask for a different batch layout."""
    import copy

    m = copy.deepcopy(tiny_model)
    for module in m.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return m


def _finetune(model, tok, **kw):
    kw = {"steps": 3, "batch_size": 4, "lr": 1e-3, "seed": 0, "progress": False, "cache": False, **kw}
    return sv.finetune(model, tok, ROWS, eval_data=ROWS[:4], eval_every=None, eval_examples=0, **kw)


def _curves(run, *keys):
    return [[h[k] for h in run.history] for k in keys]


def test_boundary_packing_trains_exactly_what_padding_trains_and_naive_packing_does_not(model, gpt2_tok_padded):
    # a rate at which the random model learns to use its context within a few steps
    padded = _finetune(model, gpt2_tok_padded, steps=6, lr=1e-2)
    packed = _finetune(model, gpt2_tok_padded, steps=6, lr=1e-2, packing="boundaries", max_length=64)
    naive = _finetune(model, gpt2_tok_padded, steps=6, lr=1e-2, packing="naive", max_length=64)
    keys = ("loss", "completion_nll", "prompt_nll", "grad_norm")
    for a, b in zip(_curves(padded, *keys), _curves(packed, *keys)):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    assert abs(naive.history[-1]["loss"] - padded.history[-1]["loss"]) > 1e-2
    # the same tokens, laid in fewer rows; the padded rows are padded to their longest
    h_pad, h_pack = padded.history[0], packed.history[0]
    assert h_pad["n_tokens"] == h_pack["n_tokens"] and h_pad["n_rows"] == 4 and h_pack["n_rows"] < 4
    assert h_pack["n_slots"] >= h_pack["n_tokens"] and h_pad["n_slots"] >= h_pad["n_tokens"]
    assert packed.config["packing"] == "boundaries"
    # evaluation reads each example alone, whatever the training did
    assert padded.evals[0]["cond_logprob_per_token"] == naive.evals[0]["cond_logprob_per_token"]


def test_packing_is_checked(model, gpt2_tok_padded):
    with pytest.raises(ValueError, match="packing must be one of"):
        _finetune(model, gpt2_tok_padded, packing="yes")
    with pytest.raises(ValueError, match="no padding to train"):
        _finetune(model, gpt2_tok_padded, packing="boundaries", fault="padding_trained")


def test_the_packing_faults_do_what_they_say(model, gpt2_tok_padded):
    naive = _finetune(model, gpt2_tok_padded, packing="naive")
    assert _curves(_finetune(model, gpt2_tok_padded, fault="naive_packing"), "loss") == _curves(naive, "loss")
    packed = _finetune(model, gpt2_tok_padded, packing="boundaries")
    row_mean = _finetune(model, gpt2_tok_padded, fault="packed_row_mean")
    assert row_mean.history[0]["completion_nll"] == pytest.approx(packed.history[0]["completion_nll"], rel=1e-6)
    assert row_mean.history[0]["loss"] != pytest.approx(packed.history[0]["loss"], rel=1e-4)
    # the logged loss is scaled; the training is the healthy run's, step for step
    healthy = _finetune(model, gpt2_tok_padded, batch_size=2, grad_accum=2)
    scaled = _finetune(model, gpt2_tok_padded, batch_size=2, grad_accum=2, fault="loss_scaled_by_accum")
    assert _curves(scaled, "grad_norm", "completion_nll") == _curves(healthy, "grad_norm", "completion_nll")
    assert _curves(scaled, "loss")[0] == pytest.approx([2 * v for v in _curves(healthy, "loss")[0]], rel=1e-6)


def test_packed_row_mean_is_the_mean_of_the_rows_token_means():
    nll = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
    w = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    assert float(FL.packed_row_mean(nll, w)) == pytest.approx((2.0 + 4.0) / 2)
    assert float(FL.packed_row_mean(nll, w, n_micro=2)) == pytest.approx(1.5)
    assert float(FL.token_mean(nll, w)) == pytest.approx(10.0 / 4)
    with pytest.raises(ValueError, match="n_micro"):
        FL.packed_row_mean(nll, w, n_micro=0)


def test_naive_packing_shows_on_a_packed_batch(gpt2_tok_padded):
    batch = sv.pack(ROWS[:3], gpt2_tok_padded, max_length=128)
    naive = FL.naive_packing(batch)
    assert batch["attention_mask"].dim() == 4 and naive["attention_mask"].dim() == 2
    assert torch.equal(naive["attention_mask"], (batch["example_index"] >= 0).long())
    assert torch.equal(naive["labels"], batch["labels"]) and batch["attention_mask"].dim() == 4  # input untouched
    with pytest.raises(TypeError, match="packed batch"):
        FL.naive_packing({"input_ids": batch["input_ids"]})


def test_a_fault_changes_exactly_one_thing():
    with pytest.raises(ValueError, match="exactly one"):
        FL.Fault("x", "two things", reduction=FL.token_mean, logged_loss=FL.loss_scaled_by_accum)
    with pytest.raises(ValueError, match="packing must be"):
        FL.Fault("x", "bad mode", reduction=FL.token_mean, packing="tight")
    kinds = {name: FL.get_fault(name).kind for name in ("naive_packing", "packed_row_mean", "loss_scaled_by_accum")}
    assert kinds == {"naive_packing": "packing", "packed_row_mean": "reduction", "loss_scaled_by_accum": "logging"}


def _run(fault=None, loss=0.1, completion=0.1, rows=16, grad_accum=2):
    history = [
        StepRecord(step=k, loss=loss, completion_nll=completion, prompt_nll=5.0, n_rows=rows) for k in range(1, 21)
    ]
    config = {"masking": "completion", "fault": "hidden" if fault else None, "batch_size": 8, "grad_accum": grad_accum}
    run = Run(config=config, history=history)
    run.evals = [EvalRecord(step=20, exact_match=0.5, stop_rate=1.0, length_ratio=1.0)]
    run.hidden_fault = fault
    return run


def test_the_hallmarks_of_the_packing_and_normalisation_suspects(gpt2_tok_padded):
    healthy = _run()
    shows = {
        "A": _run("naive_packing", completion=0.4, loss=0.4, rows=4),
        "B": _run("packed_row_mean", loss=0.11, rows=4),
        "C": _run("loss_scaled_by_accum", loss=0.2),
    }
    lines = exercises.confirm_hallmarks(healthy, shows, gpt2_tok_padded, ROW)
    assert lines == [f"run {k}: the hallmark of its bug shows" for k in "ABC"]
    hidden = {
        "A": _run("naive_packing", completion=0.4, loss=0.4),  # not packed: not this bug
        "B": _run("packed_row_mean", loss=0.11),  # not packed: accum_mean_of_means would look like this
        "C": _run("loss_scaled_by_accum", loss=0.3),  # 3 times with 2 micro-batches: not this bug
    }
    for letter, run in hidden.items():
        with pytest.raises(AssertionError, match=f"run {letter} does not show"):
            exercises.confirm_hallmarks(healthy, {letter: run}, gpt2_tok_padded, ROW)
    clue = exercises.clues(shows["A"], healthy, gpt2_tok_padded, ROW)
    assert "batches: 4.0 rows per step (packed); healthy: 16.0 (one per example)" in clue
    assert "2.00 times it" in " ".join(exercises.clues(shows["C"], healthy, gpt2_tok_padded, ROW))


def test_the_checkers_name_the_new_suspects(gpt2_tok_padded):
    run = _run("loss_scaled_by_accum", loss=0.2)
    assert exercises.check_diagnosis("loss_scaled_by_accum", run).ok
    assert not exercises.check_diagnosis("accum_mean_of_means", run).ok
    (fb,) = exercises.check_from_curves({"loss_scaled_by_accum": "C"}, {"C": run}, _run())
    assert fb.ok
