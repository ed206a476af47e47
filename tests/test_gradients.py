"""token_gradients: prompt tokens get gradient as context; the last token gets none."""

import copy

import pytest
import torch

import sftviz as sv
from sftviz import gradients
from sftviz.gradients import group_norms, parameter_groups, token_gradients

P, C = "Question: How much is the lamp?\nAnswer:", " 12 dollars."


@pytest.fixture(scope="module")
def grads(gpt2_tok, tiny_model):
    ex = sv.build_example(gpt2_tok, prompt=P, completion=C)
    return token_gradients(tiny_model, gpt2_tok, ex, chunk=4)


def test_prompt_positions_receive_gradient_under_masking(grads):
    prompt = [i for i, s in enumerate(grads.segments) if s in ("bos", "prompt")]
    assert all(grads.input_grad_masked[i] > 0 for i in prompt)
    # Only the last position's own (unscored) prediction sees the last token: exactly zero, masked or not.
    assert grads.input_grad_masked[-1] == 0.0 and grads.input_grad_full[-1] == 0.0


def test_targets_and_cosine(grads):
    assert grads.target_grad[0] is None
    for seg, g in zip(grads.segments, grads.target_grad):
        assert (g is not None) == (seg in ("completion", "eos"))
    assert all(g > 0 for g in grads.target_grad_full[1:])
    assert -1.0 <= grads.cosine <= 1.0 and grads.cosine < 0.9999
    assert set(grads.layer_norms_masked) == {"embeddings", "block_0", "block_1", "head"}


def test_per_target_norms_match_one_backward_per_token(gpt2_tok_padded, tiny_model):
    """The batched per-target gradients equal the slow way: one backward pass per target."""
    tok = gpt2_tok_padded
    ex = sv.build_example(tok, prompt="Paris is the capital of", completion=" France.")
    fast = token_gradients(tiny_model, tok, ex, chunk=2)
    model = copy.deepcopy(tiny_model)
    ids = torch.tensor([ex.input_ids])
    n_c = sum(ex.completion_mask)
    for t, in_c in enumerate(ex.completion_mask):
        if not in_c:
            continue
        model.zero_grad()
        per = sv.token_nll(model(input_ids=ids).logits, ids)[0]
        (per[t] / n_c).backward()
        slow = torch.sqrt(sum(p.grad.double().pow(2).sum() for p in model.parameters() if p.grad is not None))
        assert fast.target_grad[t] == pytest.approx(float(slow), rel=1e-4)
    # And the masked loss's layer norms equal a plain backward of the masked loss.
    model.zero_grad()
    b = sv.SFTCollator(tok)([ex])
    sv.sft_loss(model(input_ids=b["input_ids"]).logits, b["labels"]).backward()
    plain = group_norms(model, ((n, p.grad) for n, p in model.named_parameters()))
    for g, v in plain.items():
        assert fast.layer_norms_masked[g] == pytest.approx(v, rel=1e-4)


def test_parameter_groups(tiny_model):
    named = list(tiny_model.named_parameters())
    order, groups = parameter_groups(tiny_model, named)
    assert order == ["embeddings", "block_0", "block_1", "head"]
    group = dict(zip((n for n, _ in named), groups))
    assert group["transformer.h.1.attn.c_attn.weight"] == "block_1"
    assert group["transformer.wte.weight"] == group["transformer.wpe.weight"] == "embeddings"
    assert group["transformer.ln_f.weight"] == "head"
    with pytest.raises(ValueError, match="not a parameter name"):
        group_norms(tiny_model, [("nope.weight", torch.ones(2))])


def test_targets_option(gpt2_tok, tiny_model, grads):
    """Fewer per-target norms on request; what is computed is the same; the rest is unchanged."""
    ex = grads.example
    comp = token_gradients(tiny_model, gpt2_tok, ex, targets="trained")
    none = token_gradients(tiny_model, gpt2_tok, ex, targets="none")
    for t, c in enumerate(ex.completion_mask):
        if c:
            assert comp.target_grad[t] == pytest.approx(grads.target_grad[t], rel=1e-5)
            assert comp.target_grad_full[t] == pytest.approx(grads.target_grad_full[t], rel=1e-5)
        else:
            assert comp.target_grad_full[t] is None
    assert all(g is None for g in none.target_grad + none.target_grad_full)
    assert none.cosine == pytest.approx(grads.cosine, abs=1e-6)
    assert none.input_grad_masked == pytest.approx(grads.input_grad_masked)
    # A target's term differs between the two losses only by the number of targets it is divided by.
    n_c, n_f = sum(ex.completion_mask), len(ex) - 1
    t = ex.completion_mask.index(1)
    assert grads.target_grad[t] * n_c == pytest.approx(grads.target_grad_full[t] * n_f, rel=1e-9)
    with pytest.raises(ValueError, match="targets must be one of"):
        token_gradients(tiny_model, gpt2_tok, ex, targets="prompt")


def _plain_backward(model, tok, ex, masking="completion"):
    """Gradient norms per group, and the loss, of sv.sft_loss on the example's own labels and weights."""
    model = copy.deepcopy(model)
    b = sv.SFTCollator(tok, masking=masking, return_extras=True)([ex])  # a "custom" example keeps its edited labels
    loss = sv.sft_loss(model(input_ids=b["input_ids"]).logits, b["labels"], b["loss_weights"])
    loss.backward()
    return float(loss.detach()), group_norms(model, ((n, p.grad) for n, p in model.named_parameters()))


def test_masked_loss_follows_edited_labels(gpt2_tok_padded, tiny_model):
    """After set_trained (as TokenView does), the masked side is the example's own loss, not the completion."""
    tok = gpt2_tok_padded
    ex = sv.build_example(tok, prompt="Paris is the capital of", completion=" France.")
    p = ex.segments.index("prompt") + 1
    ex.set_trained(p, True)
    g = token_gradients(tiny_model, tok, ex)
    assert g.masked_name == "trained tokens"
    assert g.target_grad[p] is not None and g.target_grad[p] > 0  # a prompt token, trained now
    loss, norms = _plain_backward(tiny_model, tok, ex)
    assert g.loss_masked == pytest.approx(loss, rel=1e-5)
    for k, v in norms.items():
        assert g.layer_norms_masked[k] == pytest.approx(v, rel=1e-4)


def test_masked_loss_follows_a_prompt_loss_weight(gpt2_tok_padded, tiny_model):
    tok = gpt2_tok_padded
    ex = sv.build_example(tok, prompt="Paris is the capital of", completion=" France.", masking=0.1)
    g = token_gradients(tiny_model, tok, ex, targets="trained")
    assert g.masked_name == "prompt weight 0.1"
    loss, _norms = _plain_backward(tiny_model, tok, ex, masking=0.1)
    assert g.loss_masked == pytest.approx(loss, rel=1e-5)
    # Prompt and completion targets both count; a prompt target's term carries its weight 0.1.
    p, c = ex.segments.index("prompt") + 1, ex.segments.index("completion")
    ratio_m = g.target_grad[p] / g.target_grad[c]
    ratio_f = g.target_grad_full[p] / g.target_grad_full[c]
    assert ratio_m == pytest.approx(0.1 * ratio_f, rel=1e-6)


def test_nothing_trained_is_a_clear_error(gpt2_tok_padded, tiny_model):
    ex = sv.build_example(gpt2_tok_padded, prompt="Paris is the capital of", completion=" France.")
    for t in range(len(ex)):
        if ex.trained[t]:
            ex.set_trained(t, False)
    with pytest.raises(ValueError, match="trains no token"):
        token_gradients(tiny_model, gpt2_tok_padded, ex)


def test_bad_input(gpt2_tok, tiny_model):
    with pytest.raises(TypeError, match="Example"):
        token_gradients(tiny_model, gpt2_tok, {"prompt": P})
    ex = sv.build_example(gpt2_tok, prompt=P, completion=C)
    with pytest.raises(ValueError, match="chunk"):
        token_gradients(tiny_model, gpt2_tok, ex, chunk=0)


def test_masked_name_for_each_masking(gpt2_tok_padded):
    from sftviz.gradients import masked_name

    ex = sv.build_example(gpt2_tok_padded, prompt="Paris is the capital of", completion=" France.")
    names = {m: masked_name(ex.with_masking(m)) for m in ("completion", "full", "prompt", 0.25)}
    assert names == {
        "completion": "completion-only",
        "full": "every-target",
        "prompt": "prompt-only",
        0.25: "prompt weight 0.25",
    }
    assert masked_name(ex.set_trained(1, True)) == "trained tokens"


def test_gradients_refuse_what_does_not_fit(tiny_model, gpt2_tok, monkeypatch):
    """An estimate above the memory available stops before any work, with what to change."""
    ex = sv.build_example(gpt2_tok, prompt="Q: Hi?\nA:", completion=" Hello")
    monkeypatch.setattr(gradients, "available_memory", lambda device: 1 << 10)
    with pytest.raises(ValueError, match=r"would need about .* GiB .* targets='trained'"):
        gradients.token_gradients(tiny_model, gpt2_tok, ex)
    with pytest.raises(ValueError, match="chunk must be a positive integer or 'auto'"):
        gradients.gradient_cost(tiny_model, ex, chunk=0)
    cost = gradients.gradient_cost(tiny_model, ex)
    assert cost["chunk"] == 1 and cost["targets"] == "all"  # 1 KiB free: the smallest chunk
