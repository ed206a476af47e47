"""score: joint, marginal and conditional log-probabilities, and check()."""

import math

import pytest
import torch

import sftviz as sv

P, C = "Question: How much is the lamp?\nAnswer:", " 12 dollars."


def test_identity_and_relation_to_the_loss(gpt2_tok_padded, tiny_model):
    tok = gpt2_tok_padded
    rep = sv.score(tiny_model, tok, prompt=P, completion=C)
    assert rep.joint == pytest.approx(rep.marginal + rep.conditional, abs=1e-9)
    assert rep.conditional <= 0 and rep.marginal <= 0 and rep.joint <= rep.marginal
    # -conditional is the masked loss summed over the completion targets.
    b = sv.SFTCollator(tok)([rep.example])
    with torch.no_grad():
        logits = tiny_model(input_ids=b["input_ids"]).logits
    loss_sum = float(sv.sft_loss(logits, b["labels"])) * int((b["labels"] != -100).sum())
    assert -rep.conditional == pytest.approx(loss_sum, rel=1e-5)
    assert rep.completion_nll_mean == pytest.approx(float(sv.sft_loss(logits, b["labels"])), rel=1e-5)
    assert rep.check().ok


def test_marginal_equals_scoring_the_prompt_alone(gpt2_tok, tiny_model):
    rep = sv.score(tiny_model, gpt2_tok, prompt=P, completion=C)
    ids = rep.example.input_ids[: rep.example.n_prompt]
    with torch.no_grad():
        logp = torch.log_softmax(tiny_model(input_ids=torch.tensor([ids])).logits[0, :-1].double(), -1)
    alone = float(logp.gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).sum())
    assert rep.marginal == pytest.approx(alone, abs=1e-4)
    assert rep.n_prompt_scored == len(ids) - 1  # every prompt token, thanks to the BOS


def test_rows_and_top_alternatives(gpt2_tok, tiny_model):
    rep = sv.score(tiny_model, gpt2_tok, prompt=P, completion=C, top_k=3)
    assert rep.rows[0].logprob is None and rep.rows[0].segment == "bos"
    for r in rep.rows[1:]:
        assert r.logprob <= 0 and len(r.top) == 3
        assert [v for _, v in r.top] == sorted((v for _, v in r.top), reverse=True)
        assert r.top[0][1] >= r.logprob - 1e-6
        assert (r.rank == 1) == (abs(r.top[0][1] - r.logprob) < 1e-6 and r.top[0][0] == r.token) or r.rank > 1
    assert sum(r.logprob for r in rep.rows if r.in_completion) == pytest.approx(rep.conditional)


def test_batched_equals_single(gpt2_tok_padded, tiny_model):
    rows = [
        {"prompt": P, "completion": C},
        {"prompt": "Paris is the capital of", "completion": " France."},
        {"prompt": "Two plus three is", "completion": " five, of course, and the quick brown fox agrees."},
    ]
    batched = sv.score_batch(tiny_model, gpt2_tok_padded, rows, batch_size=3)
    for row, rep in zip(rows, batched):
        single = sv.score(tiny_model, gpt2_tok_padded, **row)
        assert rep.joint == pytest.approx(single.joint, abs=1e-4)
        assert rep.conditional == pytest.approx(single.conditional, abs=1e-4)


def test_chat_scoring(gpt2_tok, tiny_model):
    msgs = [{"role": "user", "content": "Colour?"}, {"role": "assistant", "content": "teal"}]
    rep = sv.score(tiny_model, gpt2_tok, messages=msgs)
    n_teal = len(gpt2_tok("teal", add_special_tokens=False).input_ids)
    assert rep.n_completion_scored == n_teal + 1  # the reply and its <|im_end|>
    assert rep.joint == pytest.approx(rep.marginal + rep.conditional)


def test_seed_question_is_flagged():
    verdict = sv.check_logprobs(joint=-3.5, marginal=-5.2)
    assert not verdict.ok
    text = str(verdict)
    assert "above the marginal" in text and "Pr(y | x)" in text and "> 1" in text
    far = sv.check_logprobs(joint=-40.0, marginal=-12.0)
    assert far.ok and "unlikely given x" in str(far)
    assert not sv.check_logprobs(joint=-3.0, marginal=-1.0, conditional=-1.0).ok  # inconsistent sum
    assert not sv.check_logprobs(joint=0.5, marginal=0.7).ok  # positive log-probabilities


@pytest.mark.parametrize("bad", [None, "x", float("nan"), True])
def test_check_bad_input(bad):
    with pytest.raises((TypeError, ValueError)):
        sv.check_logprobs(joint=bad, marginal=-1.0)


def test_score_bad_input(gpt2_tok, tiny_model):
    with pytest.raises(TypeError, match="causal language model"):
        sv.score("model", gpt2_tok, prompt=P, completion=C)
    with pytest.raises(ValueError, match="not both"):
        sv.score(
            tiny_model, gpt2_tok, prompt=P, completion=C, example=sv.build_example(gpt2_tok, prompt=P, completion=C)
        )
    with pytest.raises(ValueError, match="reads at most"):
        sv.score(tiny_model, gpt2_tok, prompt="word " * 300, completion=C)
    with pytest.raises(ValueError, match="top_k"):
        sv.score(tiny_model, gpt2_tok, prompt=P, completion=C, top_k=-1)


def test_probabilities_are_probabilities(gpt2_tok, tiny_model):
    rep = sv.score(tiny_model, gpt2_tok, prompt=P, completion=C)
    assert math.exp(rep.conditional) <= 1.0
    assert all(0 < r.prob <= 1 for r in rep.rows[1:])
