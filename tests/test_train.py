"""sv.finetune / compare_masking / Run.save / load_run on the tiny offline fixtures (fast), plus the lesson
on the bundled sftviz-tiny model (marked slow)."""

import json
import math
import os
import threading
import warnings
from pathlib import Path

import pytest
import torch

import sftviz as sv
from sftviz.collate import collate_examples
from sftviz.data import build_example
from sftviz.loss import loss_breakdown, sft_loss, supervised_head_loss
from sftviz.runs import TIMING_KEYS, Run, load_run
from sftviz.train import CallbackError, TrainingDivergedWarning, compare_masking, finetune

ITEMS = ["lamp", "Nova Fan", "Zephyr Kettle", "fox", "dog", "kettle", "fan"]
PRICES = ["12 dollars.", "49 dollars.", "two years.", "yes.", "five.", "teal.", "Yes, two years in teal."]


def make_rows(n=21):
    rows = []
    for i in range(n):
        item, ans = ITEMS[i % len(ITEMS)], PRICES[(i * 3) % len(PRICES)]
        prompt = (
            ("Customer: " if i % 2 else "Question: ")
            + f"How much is the {item}?"
            + ("\nAssistant:" if i % 2 else "\nAnswer:")
        )
        rows.append({"prompt": prompt, "completion": " " + ans})
    return rows


ROWS = make_rows()
EVAL = make_rows(6)


def make_tiny_gpt2(vocab_size, seed=0, n_positions=128):
    """A 2-layer GPT-2 like conftest's (defined here: ``import conftest`` is ambiguous with several conftest files)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=n_positions, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(cfg).eval()


def no_dropout(model):
    """Exact comparisons with eval-mode references need training without dropout."""
    for mod in model.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    return model


@pytest.fixture(scope="module")
def tiny_model(gpt2_tok):
    return no_dropout(make_tiny_gpt2(len(gpt2_tok)))


def fast(**kw):
    base = dict(steps=3, batch_size=4, lr=1e-2, seed=0, device="cpu", progress=False)
    base.update(kw)
    return base


def strip_timing(history):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in history]


def first_indices(n, batch, seed=0):
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:batch].tolist()


def params_equal(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


# ------------------------------------------------------------------------------------------------
# The records
# ------------------------------------------------------------------------------------------------


def test_history_records_have_the_contract_fields(tiny_model, gpt2_tok_padded):
    run = finetune(tiny_model, gpt2_tok_padded, ROWS, "completion", **fast(steps=4))
    assert isinstance(run, Run) and run.status == "finished" and not run.stopped and run.error is None
    assert [r["step"] for r in run.history] == [1, 2, 3, 4]
    for r in run.history:
        assert r["kind"] == "train"
        for key in ("loss", "prompt_nll", "completion_nll", "grad_norm", "lr", "seconds", "elapsed"):
            assert isinstance(r[key], float) and math.isfinite(r[key]), key
        for key in ("n_trained", "n_prompt_targets", "n_completion_targets", "n_tokens"):
            assert isinstance(r[key], int) and r[key] > 0, key
        assert r["n_trained"] == r["n_completion_targets"]  # completion-only
        assert r["prompt_grad_share"] == 0.0
        groups = r["grad_norm_groups"]
        assert list(groups) == ["embeddings", "block_0", "block_1", "head"]
        assert math.sqrt(sum(v * v for v in groups.values())) == pytest.approx(r["grad_norm"], rel=1e-4)
        assert r["loss"] == pytest.approx(r["completion_nll"], rel=1e-5)  # completion-only: the loss IS it
    assert run.device == torch.device("cpu")
    assert run.model is not tiny_model
    assert run.config["masking"] == "completion" and run.config["steps"] == 4
    json.dumps(run.config)  # JSON-safe


def test_padding_trained_counts_the_padding_of_its_own_batch(tiny_model, gpt2_tok_padded):
    """Under padding_trained the loss is divided by the weights in the batch as padded for that step
    (to its own longest row), not by padding out to the longest row of the whole data set."""
    from sftviz.faults import apply_label_fault, get_fault

    tok = gpt2_tok_padded
    lengths = [len(build_example(tok, prompt=r["prompt"], completion=r["completion"], warn=False)) for r in ROWS]
    seed = next(s for s in range(50) if max(lengths[i] for i in first_indices(len(ROWS), 4, s)) < max(lengths))
    idx = first_indices(len(ROWS), 4, seed)
    exs = [build_example(tok, prompt=ROWS[i]["prompt"], completion=ROWS[i]["completion"], warn=False) for i in idx]
    longest = max(len(build_example(tok, prompt=r["prompt"], completion=r["completion"], warn=False)) for r in ROWS)
    assert max(len(e) for e in exs) < longest  # the step's batch is padded less than the whole table
    batch = apply_label_fault(
        get_fault("padding_trained"),
        collate_examples(exs, tok.pad_token_id),
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
    )
    weights = batch["loss_weights"] * (batch["labels"] != -100)
    weights[:, 0] = 0.0
    with torch.no_grad():
        # The engine runs right-padded batches with a causal-only mask: real tokens are unaffected, and the
        # (here trained) pad positions see the pads before them.
        logits = tiny_model(
            input_ids=batch["input_ids"], attention_mask=torch.ones_like(batch["attention_mask"])
        ).logits
        expected = sft_loss(logits, batch["labels"], weights).item()
    rec = finetune(tiny_model, tok, ROWS, "completion", **fast(steps=1, seed=seed, fault="padding_trained")).history[0]
    assert rec["n_trained"] == int((weights > 0).sum())
    assert rec["loss"] == pytest.approx(expected, rel=1e-5)


def test_first_step_loss_and_nlls_match_the_core_functions(tiny_model, gpt2_tok_padded):
    """The recorded loss and prompt/completion NLL equal sft_loss / loss_breakdown on the same batch."""
    idx = first_indices(len(ROWS), 4)
    for masking in ("completion", "full", 0.1):
        exs = [
            build_example(
                gpt2_tok_padded, prompt=ROWS[i]["prompt"], completion=ROWS[i]["completion"], masking=masking, warn=False
            )
            for i in idx
        ]
        batch = collate_examples(exs, gpt2_tok_padded.pad_token_id)
        with torch.no_grad():
            logits = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            expected = sft_loss(logits, batch["labels"], batch["loss_weights"]).item()
            head = supervised_head_loss(
                tiny_model, batch["input_ids"], batch["labels"], batch["attention_mask"], batch["loss_weights"]
            ).item()
        br = loss_breakdown(
            logits, batch["input_ids"], batch["completion_mask"], batch["attention_mask"], batch["prompt_mask"]
        )
        assert head == pytest.approx(expected, rel=1e-5)
        for head_mode in ("supervised", "full"):
            rec = finetune(tiny_model, gpt2_tok_padded, ROWS, masking, **fast(steps=1, head=head_mode)).history[0]
            assert rec["loss"] == pytest.approx(expected, rel=1e-5), (masking, head_mode)
            assert rec["prompt_nll"] == pytest.approx(br.prompt_nll_mean, rel=1e-5)
            assert rec["completion_nll"] == pytest.approx(br.completion_nll_mean, rel=1e-5)
            assert rec["n_prompt_targets"] == br.n_prompt and rec["n_completion_targets"] == br.n_completion
        if masking == "full":
            assert rec["n_trained"] == br.n_prompt + br.n_completion


def test_supervised_head_and_full_logits_train_the_same(tiny_model, gpt2_tok_padded):
    a = finetune(tiny_model, gpt2_tok_padded, ROWS, "completion", **fast(steps=5, head="supervised"))
    b = finetune(tiny_model, gpt2_tok_padded, ROWS, "completion", **fast(steps=5, head="full"))
    assert a.config["head_used"] == "supervised" and b.config["head_used"] == "full"
    for ra, rb in zip(a.history, b.history):
        for key in ("loss", "prompt_nll", "completion_nll", "grad_norm"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-6), key


def test_caller_model_untouched_unless_copy_model_false(tiny_model, gpt2_tok):
    import copy

    from sftviz.modeling import ensure_pad_token

    tok = copy.deepcopy(gpt2_tok)
    ensure_pad_token(tok)
    before = copy.deepcopy(tiny_model)
    run = finetune(tiny_model, tok, ROWS, **fast())
    assert params_equal(tiny_model, before)
    assert not params_equal(run.model, before)
    own = no_dropout(make_tiny_gpt2(len(tok), seed=3))
    start = copy.deepcopy(own)
    run2 = finetune(own, tok, ROWS, **fast(copy_model=False))
    assert run2.model is own and not params_equal(own, start)


def test_tokenizer_without_pad_token_is_not_modified(tiny_model, gpt2_tok):
    assert gpt2_tok.pad_token_id is None
    run = finetune(tiny_model, gpt2_tok, ROWS, **fast(steps=1))
    assert run.status == "finished" and gpt2_tok.pad_token_id is None


def test_same_seed_same_history_other_seed_differs(tiny_model, gpt2_tok_padded):
    kw = fast(steps=6, eval_data=EVAL, eval_every=3, eval_examples=2, grad_share_every=2)
    a = finetune(tiny_model, gpt2_tok_padded, ROWS, "full", **kw)
    b = finetune(tiny_model, gpt2_tok_padded, ROWS, "full", **kw)
    assert strip_timing(a.history) == strip_timing(b.history)
    assert [{k: v for k, v in e.items() if k != "seconds"} for e in a.evals] == [
        {k: v for k, v in e.items() if k != "seconds"} for e in b.evals
    ]
    assert params_equal(a.model, b.model)
    c = finetune(tiny_model, gpt2_tok_padded, ROWS, "full", **{**kw, "seed": 1})
    assert strip_timing(a.history) != strip_timing(c.history)


def test_global_rng_state_is_left_alone(tiny_model, gpt2_tok_padded):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    finetune(tiny_model, gpt2_tok_padded, ROWS, **fast(steps=2))
    assert torch.equal(torch.rand(3), expected)


def test_dropout_is_seeded_too(gpt2_tok_padded):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(gpt2_tok_padded), n_embd=32, n_layer=1, n_head=2, n_positions=64, resid_pdrop=0.3)
    model = GPT2LMHeadModel(cfg)
    a = finetune(model, gpt2_tok_padded, ROWS, **fast(steps=3))
    b = finetune(model, gpt2_tok_padded, ROWS, **fast(steps=3))
    assert strip_timing(a.history) == strip_timing(b.history)


# ------------------------------------------------------------------------------------------------
# Gradient accumulation and the prompt share of the gradient
# ------------------------------------------------------------------------------------------------


def _first_step_grads(model, tok, **kw):
    grads = {}

    def grab(record, run):
        if record["kind"] == "train" and record["step"] == 1:
            grads.update({n: p.grad.clone() for n, p in run.model.named_parameters() if p.grad is not None})

    run = finetune(model, tok, ROWS, callbacks=[grab], max_grad_norm=None, **kw)
    return run, grads


def test_grad_accum_is_a_ratio_of_sums(tiny_model, gpt2_tok_padded):
    common = dict(steps=1, lr=1e-2, seed=0, device="cpu", progress=False)
    big, g_big = _first_step_grads(tiny_model, gpt2_tok_padded, batch_size=8, grad_accum=1, **common)
    acc, g_acc = _first_step_grads(tiny_model, gpt2_tok_padded, batch_size=4, grad_accum=2, **common)
    assert acc.history[0]["loss"] == pytest.approx(big.history[0]["loss"], rel=1e-5)
    assert acc.history[0]["n_trained"] == big.history[0]["n_trained"]
    assert acc.history[0]["grad_norm"] == pytest.approx(big.history[0]["grad_norm"], rel=1e-4)
    assert g_big.keys() == g_acc.keys()
    for name in g_big:
        assert torch.allclose(g_big[name], g_acc[name], rtol=1e-4, atol=1e-6), name
    # the classic bug: averaging the micro-batch averages gives another gradient
    bad, g_bad = _first_step_grads(
        tiny_model, gpt2_tok_padded, batch_size=4, grad_accum=2, fault="accum_mean_of_means", **common
    )
    assert abs(bad.history[0]["loss"] - big.history[0]["loss"]) > 1e-4
    assert any(not torch.allclose(g_big[n], g_bad[n], rtol=1e-3, atol=1e-6) for n in g_big)


def test_prompt_grad_share_matches_two_separate_gradients(tiny_model, gpt2_tok_padded):
    idx = first_indices(len(ROWS), 4)
    exs = [
        build_example(
            gpt2_tok_padded, prompt=ROWS[i]["prompt"], completion=ROWS[i]["completion"], masking="full", warn=False
        )
        for i in idx
    ]
    batch = collate_examples(exs, gpt2_tok_padded.pad_token_id)
    logits = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    total_w = batch["loss_weights"][:, 1:].sum()
    comp_w = batch["loss_weights"] * batch["completion_mask"]
    prompt_w = batch["loss_weights"] * (1 - batch["completion_mask"])
    params = [p for p in tiny_model.parameters()]
    gp = torch.autograd.grad(
        sft_loss(logits, batch["labels"], prompt_w, normalizer=total_w), params, retain_graph=True, allow_unused=True
    )
    gc = torch.autograd.grad(sft_loss(logits, batch["labels"], comp_w, normalizer=total_w), params, allow_unused=True)
    gp = [torch.zeros_like(p) if g is None else g for p, g in zip(params, gp)]
    gc = [torch.zeros_like(p) if g is None else g for p, g in zip(params, gc)]
    dot = sum(float((a * (a + b)).sum()) for a, b in zip(gp, gc))
    g_sq = sum(float(((a + b) ** 2).sum()) for a, b in zip(gp, gc))
    rec = finetune(tiny_model, gpt2_tok_padded, ROWS, "full", **fast(steps=1)).history[0]
    assert rec["prompt_grad_share"] == pytest.approx(dot / g_sq, rel=1e-3)
    assert rec["prompt_grad_norm"] == pytest.approx(math.sqrt(sum(float((a**2).sum()) for a in gp)), rel=1e-3)
    assert rec["completion_grad_norm"] == pytest.approx(math.sqrt(sum(float((b**2).sum()) for b in gc)), rel=1e-3)


def test_prompt_grad_share_schedule(tiny_model, gpt2_tok_padded):
    full = finetune(tiny_model, gpt2_tok_padded, ROWS, "full", **fast(steps=5, grad_share_every=2))
    measured = [r["step"] for r in full.history if r["prompt_grad_share"] is not None]
    assert measured == [1, 2, 4]
    weighted = finetune(tiny_model, gpt2_tok_padded, ROWS, 0.1, **fast(steps=1)).history[0]
    full1 = full.history[0]
    assert 0 < weighted["prompt_grad_share"] < full1["prompt_grad_share"]  # a small weight, a small share
    prompt_only = finetune(tiny_model, gpt2_tok_padded, ROWS, "prompt", **fast(steps=2))
    assert [r["prompt_grad_share"] for r in prompt_only.history] == [1.0, 1.0]
    never = finetune(tiny_model, gpt2_tok_padded, ROWS, "full", **fast(steps=2, grad_share_every=None))
    assert [r["prompt_grad_share"] for r in never.history] == [None, None]


def test_measure_every_skips_only_the_untrained_part(tiny_model, gpt2_tok_padded):
    every = finetune(tiny_model, gpt2_tok_padded, ROWS, **fast(steps=5))
    some = finetune(tiny_model, gpt2_tok_padded, ROWS, **fast(steps=5, measure_every=2))
    assert [r["prompt_nll"] is not None for r in some.history] == [True, True, False, True, False]
    for a, b in zip(every.history, some.history):  # training itself is unchanged
        assert b["loss"] == a["loss"] and b["completion_nll"] == a["completion_nll"]
        if b["prompt_nll"] is not None:
            assert b["prompt_nll"] == a["prompt_nll"]
    never = finetune(tiny_model, gpt2_tok_padded, ROWS, "full", **fast(steps=2, measure_every=None))
    assert all(r["prompt_nll"] is not None for r in never.history)  # under full loss the prompt is trained: free


# ------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------


def test_evaluation_schedule_and_fields(tiny_model, gpt2_tok_padded):
    seen = []
    run = finetune(
        tiny_model,
        gpt2_tok_padded,
        ROWS,
        **fast(steps=5, eval_data=EVAL, eval_every=2, eval_examples=3),
        callbacks=[lambda rec, run: seen.append((rec["kind"], rec["step"]))],
    )
    assert [e["step"] for e in run.evals] == [0, 2, 4, 5]
    assert seen[:3] == [("eval", 0), ("train", 1), ("train", 2)] and seen[3] == ("eval", 2) and seen[-1] == ("eval", 5)
    for e in run.evals:
        assert e["kind"] == "eval"
        assert e["cond_logprob_per_token"] < 0 and e["marg_logprob_per_token"] < 0
        assert 0.0 <= e["exact_match"] <= 1.0 and e["n_generated"] == 3
        assert len(e["samples"]) == 3
        for s in e["samples"]:
            assert set(s) == {"prompt", "generated", "reference", "exact", "stopped"}
        # all three answers were decoded and kept: their length over the references'
        gen, ref = (sum(len(s[k]) for s in e["samples"]) for k in ("generated", "reference"))
        assert e["length_ratio"] == pytest.approx(gen / ref)
    assert run.evals[0]["samples"][0]["reference"] == EVAL[0]["completion"]
    # the eval at step 0 scores the starting model: log Pr(y|x) per token from sv.score_batch
    from sftviz.logprobs import score_batch

    reps = score_batch(tiny_model, gpt2_tok_padded, EVAL)
    cond = sum(r.conditional for r in reps) / sum(r.n_completion_scored for r in reps)
    marg = sum(r.marginal for r in reps) / sum(r.n_prompt_scored for r in reps)
    assert run.evals[0]["cond_logprob_per_token"] == pytest.approx(cond, rel=1e-5)
    assert run.evals[0]["marg_logprob_per_token"] == pytest.approx(marg, rel=1e-5)
    none = finetune(
        tiny_model, gpt2_tok_padded, ROWS, **fast(steps=2, eval_data=EVAL, eval_every=None, eval_examples=0)
    )
    assert [e["step"] for e in none.evals] == [0, 2] and none.evals[0]["exact_match"] is None
    assert none.evals[0]["length_ratio"] is None


def test_batched_greedy_generation_matches_one_at_a_time(tiny_model, gpt2_tok_padded):
    """Left-padded batched decoding gives each example the same tokens as decoding it alone."""
    from sftviz.train.evaluation import EvalSet

    exs = [build_example(gpt2_tok_padded, prompt=r["prompt"], completion=r["completion"], warn=False) for r in EVAL]
    assert len({len(ex) for ex in exs}) > 1
    evalset = EvalSet(gpt2_tok_padded, exs, gpt2_tok_padded.pad_token_id, 6, 128)
    batched = evalset.generate(tiny_model, torch.device("cpu"), _nullamp)
    for ex, got in zip(exs, batched):
        ids = torch.tensor([ex.input_ids[: ex.n_prompt]])
        new = []
        with torch.no_grad():
            for _ in range(evalset.max_new):
                nxt = int(tiny_model(input_ids=ids).logits[0, -1].argmax())
                new.append(nxt)
                if nxt == gpt2_tok_padded.eos_token_id:
                    break
                ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
        stopped = new[-1] == gpt2_tok_padded.eos_token_id
        body = new[:-1] if stopped else new
        assert got["generated"] == gpt2_tok_padded.decode(body, clean_up_tokenization_spaces=False)
        assert got["stopped"] == stopped


def _nullamp():
    from contextlib import nullcontext

    return nullcontext()


def test_exact_match_counts_a_memorised_answer(gpt2_tok_padded):
    rows = [{"prompt": "Question: How much is the lamp?\nAnswer:", "completion": " 12 dollars."}] * 4
    model = no_dropout(make_tiny_gpt2(len(gpt2_tok_padded), seed=1))
    run = finetune(
        model, gpt2_tok_padded, rows, **fast(steps=60, lr=1e-2, eval_data=rows[:1], eval_every=None, eval_examples=1)
    )
    assert run.evals[0]["exact_match"] == 0.0
    assert run.evals[-1]["exact_match"] == 1.0, run.evals[-1]["samples"]
    assert run.evals[-1]["samples"][0]["generated"] == " 12 dollars." and run.evals[-1]["stop_rate"] == 1.0
    assert run.evals[-1]["length_ratio"] == 1.0


def test_chat_rows_train(tiny_model, gpt2_tok_padded):
    chat = [
        {"messages": [{"role": "user", "content": f"How much is the {it}?"}, {"role": "assistant", "content": ans}]}
        for it, ans in zip(ITEMS, PRICES)
    ]
    run = finetune(tiny_model, gpt2_tok_padded, chat, **fast(steps=2, eval_data=chat[:2], eval_examples=2))
    assert run.status == "finished" and run.config["data"]["format"] == "chat"
    assert run.evals[0]["samples"][0]["reference"] == PRICES[0]  # the assistant turn, without <|im_end|>


# ------------------------------------------------------------------------------------------------
# Callbacks, stop flag, interrupts, NaN
# ------------------------------------------------------------------------------------------------


def test_callback_errors_name_the_callback_and_keep_the_run(tiny_model, gpt2_tok_padded):
    def broken_plot(record, run):
        if record["step"] == 2:
            raise ZeroDivisionError("oops")

    with pytest.raises(CallbackError, match="broken_plot") as info:
        finetune(tiny_model, gpt2_tok_padded, ROWS, **fast(steps=5), callbacks=[broken_plot])
    err = info.value
    assert isinstance(err.__cause__, ZeroDivisionError) and err.callback is broken_plot
    assert err.run.status == "error" and len(err.run.history) == 2 and "broken_plot" in err.run.error


def test_stop_flag_ends_the_run_cleanly(tiny_model, gpt2_tok_padded):
    flag = threading.Event()

    def stopper(record, run):
        if record["kind"] == "train" and record["step"] == 3:
            flag.set()

    run = finetune(
        tiny_model,
        gpt2_tok_padded,
        ROWS,
        **fast(steps=10, eval_data=EVAL, eval_examples=1),
        stop=flag,
        callbacks=stopper,
    )
    assert run.stopped and run.status == "stopped" and len(run.history) == 3
    assert [e["step"] for e in run.evals] == [0]
    assert not run.model.training


def test_keyboard_interrupt_ends_the_run_cleanly(tiny_model, gpt2_tok_padded):
    def interrupt(record, run):
        if record["step"] == 2:
            raise KeyboardInterrupt

    run = finetune(tiny_model, gpt2_tok_padded, ROWS, **fast(steps=10), callbacks=[interrupt])
    assert run.stopped and run.status == "stopped" and len(run.history) == 2
    assert "Interrupted" in run.error and "step 2" in run.error


def test_nan_loss_stops_with_a_message(tiny_model, gpt2_tok_padded):
    def poison(record, run):
        if record["step"] == 1:
            with torch.no_grad():
                next(run.model.parameters()).fill_(float("nan"))

    with pytest.warns(TrainingDivergedWarning, match="step 2"):
        run = finetune(tiny_model, gpt2_tok_padded, ROWS, **fast(steps=10), callbacks=[poison])
    assert run.status == "nan" and not run.stopped and len(run.history) == 2
    assert "learning rate" in run.error and "step 2" in run.error
    assert math.isnan(run.history[-1]["loss"])


# ------------------------------------------------------------------------------------------------
# Faults through finetune
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault", ["shifted_labels", "eos_masked", "padding_trained", "prompt_trained", "per_sequence_mean"]
)
def test_faults_change_the_objective_but_not_the_measurements(tiny_model, gpt2_tok_padded, fault):
    good = finetune(tiny_model, gpt2_tok_padded, ROWS, **fast(steps=1)).history[0]
    bad_run = finetune(tiny_model, gpt2_tok_padded, ROWS, **fast(steps=1, fault=fault))
    bad = bad_run.history[0]
    assert bad_run.config["fault"] == fault
    # the measurements are honest: same batch, same starting weights, same prompt and completion NLL
    assert bad["prompt_nll"] == pytest.approx(good["prompt_nll"], rel=1e-6)
    assert bad["completion_nll"] == pytest.approx(good["completion_nll"], rel=1e-6)
    assert abs(bad["loss"] - good["loss"]) > 1e-4
    if fault == "eos_masked":
        assert bad["n_trained"] == good["n_trained"] - 4  # one EOS per example
    if fault == "prompt_trained":
        assert bad["n_trained"] == bad["n_prompt_targets"] and bad["prompt_grad_share"] == 1.0
    if fault == "padding_trained":
        assert bad["n_trained"] > good["n_trained"]


def test_fault_validation(tiny_model, gpt2_tok_padded):
    with pytest.raises(ValueError, match="Unknown fault"):
        finetune(tiny_model, gpt2_tok_padded, ROWS, **fast(fault="bogus"))
    with pytest.warns(UserWarning, match="grad_accum"):
        finetune(tiny_model, gpt2_tok_padded, ROWS, **fast(steps=1, fault="accum_mean_of_means"))


# ------------------------------------------------------------------------------------------------
# Saving and loading
# ------------------------------------------------------------------------------------------------


def test_save_load_round_trip(tiny_model, gpt2_tok_padded, tmp_path):
    run = finetune(
        tiny_model, gpt2_tok_padded, ROWS, 0.25, **fast(steps=3, eval_data=EVAL, eval_every=2, eval_examples=2)
    )
    path = run.save(tmp_path / "runs" / "r.json")
    assert sorted(os.listdir(path.parent)) == ["r.json"]  # no temporary file left behind
    back = load_run(path)
    assert back.history == run.history and back.evals == run.evals and back.config == run.config
    assert (back.status, back.stopped, back.error, back.device) == (run.status, run.stopped, run.error, run.device)
    assert back.model is None
    run.save(tmp_path / "w.json", weights=True)
    assert (tmp_path / "w.safetensors").is_file()
    back = load_run(tmp_path / "w.json")
    assert params_equal(back.model, run.model) and back.history == run.history
    out = back.model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert torch.allclose(out, run.model(input_ids=torch.tensor([[1, 2, 3]])).logits)
    into = load_run(tmp_path / "w.json", model=tiny_model)
    assert params_equal(into.model, run.model) and not params_equal(tiny_model, run.model)


def test_load_run_errors(tmp_path):
    with pytest.raises(ValueError, match="No saved run"):
        load_run(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a valid run"):
        load_run(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not an sftviz run"):
        load_run(other)


def test_save_refuses_weights_without_a_model(tmp_path):
    run = Run(config={"masking": "full", "steps": 1})
    with pytest.raises(ValueError, match="no model"):
        run.save(tmp_path / "x.json", weights=True)


# ------------------------------------------------------------------------------------------------
# compare_masking
# ------------------------------------------------------------------------------------------------


def test_compare_masking_same_start_same_batches(tiny_model, gpt2_tok_padded):
    runs = compare_masking(
        tiny_model,
        gpt2_tok_padded,
        ROWS,
        maskings=("completion", "full", 0.1),
        steps=3,
        batch_size=4,
        lr=1e-2,
        device="cpu",
        progress=False,
    )
    assert list(runs) == ["completion", "full", 0.1]
    first = [r.history[0] for r in runs.values()]
    # same initial weights and the same first batch: the measurements of step 1 agree
    for rec in first[1:]:
        for key in ("prompt_nll", "completion_nll", "n_tokens", "n_prompt_targets", "n_completion_targets"):
            assert rec[key] == pytest.approx(first[0][key], rel=1e-6), key
    # the same batches at every step
    for step in range(3):
        assert len({r.history[step]["n_tokens"] for r in runs.values()}) == 1
    assert runs["completion"].history[0]["loss"] != runs["full"].history[0]["loss"]
    assert len({r.config["data"]["fingerprint"] for r in runs.values()}) == 1
    with pytest.raises(ValueError, match="duplicates"):
        compare_masking(tiny_model, gpt2_tok_padded, ROWS, maskings=("full", "full"), steps=1)
    with pytest.raises(ValueError, match="copy"):
        compare_masking(tiny_model, gpt2_tok_padded, ROWS, steps=1, copy_model=False)


def test_compare_masking_stops_after_a_stopped_run(tiny_model, gpt2_tok_padded):
    flag = threading.Event()
    flag.set()
    runs = compare_masking(
        tiny_model, gpt2_tok_padded, ROWS, steps=2, batch_size=4, device="cpu", progress=False, stop=flag
    )
    assert list(runs) == ["completion"] and runs["completion"].stopped and runs["completion"].history == []


# ------------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"masking": "all"}, ValueError, "Unknown masking"),
        ({"masking": 1.5}, ValueError, "prompt-loss weight"),
        ({"steps": 0}, ValueError, "steps"),
        ({"steps": 2.5}, TypeError, "steps"),
        ({"batch_size": True}, TypeError, "batch_size"),
        ({"lr": -1.0}, ValueError, "lr"),
        ({"lr": float("nan")}, ValueError, "lr"),
        ({"grad_accum": 0}, ValueError, "grad_accum"),
        ({"head": "fast"}, ValueError, "head"),
        ({"stop": True}, TypeError, "is_set"),
        ({"callbacks": [1]}, TypeError, "callbacks"),
        ({"eval_every": 0}, ValueError, "eval_every"),
        ({"device": "gpu0"}, ValueError, "device"),
        ({"max_length": 100000}, ValueError, "context"),
        ({"progress": "yes"}, TypeError, "progress"),
    ],
)
def test_bad_arguments_get_clear_errors(tiny_model, gpt2_tok_padded, kwargs, error, match):
    kw = fast(steps=1)
    kw.update(kwargs)
    masking = kw.pop("masking", "completion")
    with pytest.raises(error, match=match):
        finetune(tiny_model, gpt2_tok_padded, ROWS, masking, **kw)


def test_bad_data_gets_clear_errors(tiny_model, gpt2_tok_padded):
    with pytest.raises(ValueError, match="empty"):
        finetune(tiny_model, gpt2_tok_padded, [], **fast())
    with pytest.raises(TypeError, match="list"):
        finetune(tiny_model, gpt2_tok_padded, "support", **fast())
    with pytest.raises(ValueError, match=r"data\[1\]"):
        finetune(tiny_model, gpt2_tok_padded, [ROWS[0], {"question": "x"}], **fast())
    with pytest.raises(TypeError, match=r"data\[0\]"):
        finetune(tiny_model, gpt2_tok_padded, [("a", "b")], **fast())
    with pytest.raises(TypeError, match="tokenizer"):
        finetune(tiny_model, None, ROWS, **fast())
    with pytest.raises(TypeError, match="causal language model"):
        finetune("gpt2", gpt2_tok_padded, ROWS, **fast())
    small = make_tiny_gpt2(50)
    with pytest.raises(ValueError, match="vocabulary"):
        finetune(small, gpt2_tok_padded, ROWS, **fast())


def test_examples_are_accepted_and_rebuilt_for_the_masking(tiny_model, gpt2_tok_padded):
    exs = [build_example(gpt2_tok_padded, prompt=r["prompt"], completion=r["completion"], warn=False) for r in ROWS]
    a = finetune(tiny_model, gpt2_tok_padded, exs, "full", **fast(steps=2))
    b = finetune(tiny_model, gpt2_tok_padded, ROWS, "full", **fast(steps=2))
    assert strip_timing(a.history) == strip_timing(b.history)
    assert exs[0].masking == "completion"  # the caller's examples are not changed


def test_head_falls_back_to_full_logits_when_the_model_changes_them(gpt2_tok_padded):
    model = no_dropout(make_tiny_gpt2(len(gpt2_tok_padded)))
    model.config.final_logit_softcapping = 30.0  # the supervised-only head would not reproduce such logits
    run = finetune(model, gpt2_tok_padded, ROWS, **fast(steps=1))
    assert run.config["head"] == "auto" and run.config["head_used"] == "full"
    with pytest.raises(ValueError, match="head='supervised'"):
        finetune(model, gpt2_tok_padded, ROWS, **fast(steps=1, head="supervised"))


def test_bf16_autocast_on_the_cpu_is_an_option(tiny_model, gpt2_tok_padded):
    fp32 = finetune(tiny_model, gpt2_tok_padded, ROWS, **fast(steps=2))
    bf16 = finetune(
        tiny_model, gpt2_tok_padded, ROWS, **fast(steps=2, precision="bf16", eval_data=EVAL, eval_examples=1)
    )
    assert fp32.config["precision_used"] == "fp32" and bf16.config["precision_used"] == "bf16-autocast"
    assert bf16.history[0]["loss"] == pytest.approx(fp32.history[0]["loss"], rel=0.05)
    assert next(bf16.model.parameters()).dtype == torch.float32  # the weights stay fp32
    with pytest.raises(ValueError, match="precision"):
        finetune(tiny_model, gpt2_tok_padded, ROWS, **fast(precision="fp16"))


def test_series_and_repr(tiny_model, gpt2_tok_padded):
    run = finetune(tiny_model, gpt2_tok_padded, ROWS, "full", **fast(steps=4, grad_share_every=2))
    steps, shares = run.series("prompt_grad_share")
    assert steps == [1, 2, 4] and len(shares) == 3
    assert "masking='full'" in repr(run) and "4/4 steps" in repr(run)
    with pytest.raises(KeyError):
        run.series("nope")
    # A last step that did not measure the prompt NLL (measure_every) still shows.
    lean = finetune(tiny_model, gpt2_tok_padded, ROWS, "completion", **fast(steps=3, measure_every=2))
    assert lean.history[-1]["prompt_nll"] is None
    assert "prompt_nll" not in repr(lean) and "completion_nll=" in repr(lean)


# ------------------------------------------------------------------------------------------------
# The lesson, on the bundled model (slow)
# ------------------------------------------------------------------------------------------------

ASSETS = Path(__file__).resolve().parents[1] / "sftviz" / "assets"


@pytest.mark.slow
@pytest.mark.skipif(not (ASSETS / "sftviz-tiny" / "model.safetensors").is_file(), reason="bundled model not built")
def test_lesson_masking_on_and_off_from_the_same_start():
    """Full loss lowers the prompt NLL, completion-only does not; both lower the completion NLL; exact match rises."""
    from sftviz.datasets import load_dataset
    from sftviz.modeling import load_model

    model, tok = load_model(device="cpu")
    train, held = load_dataset("support", split="train"), load_dataset("support", split="eval")
    runs = compare_masking(
        model,
        tok,
        train,
        maskings=("completion", "full"),
        steps=40,  # the lesson shows by 30 steps at batch 8 with wide margins (in seconds, not minutes)
        batch_size=8,
        lr=1e-3,
        seed=0,
        device="cpu",
        eval_data=held,
        eval_every=None,
        eval_examples=40,
        progress=False,
    )

    def mean(run, key, sl):
        vals = [r[key] for r in run.history[sl]]
        return sum(vals) / len(vals)

    start, end = slice(0, 1), slice(-10, None)  # step 1 is measured before any update: the base model
    c, f = runs["completion"], runs["full"]
    assert mean(f, "prompt_nll", end) < mean(f, "prompt_nll", start) - 2.0  # full loss models the prompts
    assert mean(c, "prompt_nll", end) > mean(c, "prompt_nll", start) - 0.2  # completion-only does not
    for run in (c, f):
        assert mean(run, "completion_nll", end) < 0.5 * mean(run, "completion_nll", start)
        assert run.evals[-1]["cond_logprob_per_token"] > run.evals[0]["cond_logprob_per_token"] + 1.0
        assert run.evals[-1]["exact_match"] >= run.evals[0]["exact_match"] + 0.2
    # the held-out prompts: full loss raises log Pr(x), completion-only leaves it no better
    assert f.evals[-1]["marg_logprob_per_token"] > f.evals[0]["marg_logprob_per_token"] + 2.0
    assert c.evals[-1]["marg_logprob_per_token"] < c.evals[0]["marg_logprob_per_token"] + 0.2


def test_a_large_model_gets_a_rate_warning(tiny_model, gpt2_tok_padded, monkeypatch):
    """The bundled model's lr on a model of 50 M parameters or more names a better one (here the threshold
    is lowered to the test model's size; tests/test_real_model.py does it on SmolLM2)."""
    from sftviz.train import api

    monkeypatch.setattr(api, "LARGE_MODEL_PARAMS", sum(p.numel() for p in tiny_model.parameters()))
    rows = [{"prompt": "Q: Hi?\nA:", "completion": " Hello."}] * 2
    with pytest.warns(UserWarning, match="try lr=2e-5"):
        sv.finetune(tiny_model, gpt2_tok_padded, rows, steps=1, batch_size=2, eval_examples=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        sv.finetune(tiny_model, gpt2_tok_padded, rows, steps=1, batch_size=2, lr=1e-4, eval_examples=0)
