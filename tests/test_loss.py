"""sft_loss, token_nll, loss_breakdown and the supervised-only head."""

import copy
import warnings

import pytest
import torch

import sftviz as sv

ROWS = [
    {"prompt": "Question: How much is the lamp?\nAnswer:", "completion": " 12 dollars."},
    {"prompt": "Customer: Does the Nova Fan have a warranty?\nAssistant:", "completion": " Yes, two years."},
    {"prompt": "Paris is the capital of", "completion": " France."},
]


def batch(tok, masking="completion"):
    return sv.SFTCollator(tok, masking=masking, return_extras=True)(ROWS)


@pytest.mark.parametrize("masking", ["completion", "full"])
def test_equals_hf_loss(gpt2_tok_padded, tiny_model, masking):
    b = batch(gpt2_tok_padded, masking)
    out = tiny_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])
    ours = sv.sft_loss(out.logits, b["labels"])
    assert abs(float(ours) - float(out.loss)) < 1e-6


def test_token_level_mean_not_mean_of_sequence_means(gpt2_tok_padded, tiny_model):
    b = batch(gpt2_tok_padded)
    logits = tiny_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    per = sv.token_nll(logits, b["labels"])
    trained = b["labels"] != -100
    assert float(sv.sft_loss(logits, b["labels"])) == pytest.approx(float(per[trained].mean()), abs=1e-6)
    seq_means = torch.stack([per[i][trained[i]].mean() for i in range(len(ROWS))]).mean()
    assert abs(float(seq_means) - float(per[trained].mean())) > 1e-4  # the two differ on unequal lengths


def test_prompt_loss_weight_formula(gpt2_tok_padded, tiny_model):
    b = batch(gpt2_tok_padded, 0.25)
    logits = tiny_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    per = sv.token_nll(logits, b["input_ids"])
    w = b["loss_weights"]
    assert torch.equal(w[b["prompt_mask"].bool()], torch.full_like(w[b["prompt_mask"].bool()], 0.25))
    expected = (per * w).sum() / w.sum()
    assert float(sv.sft_loss(logits, b["labels"], b["loss_weights"])) == pytest.approx(float(expected), abs=1e-6)
    # Weight 0 gives the completion-only loss, weight 1 the full loss.
    b0, b1 = batch(gpt2_tok_padded, 0.0), batch(gpt2_tok_padded, 1.0)
    bc, bf = batch(gpt2_tok_padded, "completion"), batch(gpt2_tok_padded, "full")
    assert float(sv.sft_loss(logits, b0["labels"], b0["loss_weights"])) == pytest.approx(
        float(sv.sft_loss(logits, bc["labels"])), abs=1e-6
    )
    assert float(sv.sft_loss(logits, b1["labels"], b1["loss_weights"])) == pytest.approx(
        float(sv.sft_loss(logits, bf["labels"])), abs=1e-6
    )


def test_nothing_to_train_gives_attached_zero(tiny_model):
    ids = torch.tensor([[1, 2, 3, 4]])
    model = copy.deepcopy(tiny_model)
    logits = model(input_ids=ids).logits
    with pytest.warns(sv.NothingToTrainWarning):
        loss = sv.sft_loss(logits, torch.full_like(ids, -100))
    assert float(loss) == 0.0 and loss.requires_grad
    loss.backward()
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in model.parameters())


def test_normalizer_gives_ratio_of_sums(gpt2_tok_padded, tiny_model):
    b = batch(gpt2_tok_padded)
    logits = tiny_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    total = int((b["labels"][:, 1:] != -100).sum())
    parts = [sv.sft_loss(logits[i : i + 1], b["labels"][i : i + 1], normalizer=total) for i in range(len(ROWS))]
    assert float(sum(parts)) == pytest.approx(float(sv.sft_loss(logits, b["labels"])), abs=1e-6)


@pytest.mark.parametrize(
    "args, err, match",
    [
        ((torch.zeros(2, 5, 7), torch.zeros(2, 4, dtype=torch.long)), ValueError, "do not line up"),
        ((torch.zeros(2, 5, 7), torch.zeros(2, 5)), TypeError, "integer token ids"),
        (([1, 2], torch.zeros(2, 5, dtype=torch.long)), TypeError, "torch tensors"),
    ],
)
def test_bad_input(args, err, match):
    with pytest.raises(err, match=match):
        sv.sft_loss(*args)


def test_negative_weights_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        sv.sft_loss(torch.zeros(1, 3, 5), torch.ones(1, 3, dtype=torch.long), -torch.ones(1, 3))


def test_breakdown_identity(gpt2_tok_padded, tiny_model):
    b = batch(gpt2_tok_padded)
    logits = tiny_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    br = sv.loss_breakdown(logits, b["input_ids"], b["completion_mask"], b["attention_mask"])
    # Full-sequence NLL = prompt part + completion part, on real numbers.
    full = sv.token_nll(logits, b["input_ids"])
    valid = torch.zeros_like(b["attention_mask"], dtype=torch.bool)
    valid[:, 1:] = b["attention_mask"][:, 1:].bool()
    assert float(full[valid].sum()) == pytest.approx(br.full_nll_sum, rel=1e-6)
    assert br.completion_nll_mean == pytest.approx(float(sv.sft_loss(logits, b["labels"])), abs=1e-6)
    bf = batch(gpt2_tok_padded, "full")
    assert br.full_nll_mean == pytest.approx(float(sv.sft_loss(logits, bf["labels"])), abs=1e-6)
    assert br.n_completion == int((b["labels"] != -100).sum())


@pytest.mark.parametrize("masking", ["completion", "full", 0.3])
def test_supervised_head_same_loss_and_gradients(gpt2_tok_padded, tiny_model, masking):
    b = batch(gpt2_tok_padded, masking)
    m1, m2 = copy.deepcopy(tiny_model), copy.deepcopy(tiny_model)
    logits = m1(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    ref = sv.sft_loss(logits, b["labels"], b["loss_weights"])
    ours = sv.supervised_head_loss(m2, b["input_ids"], b["labels"], b["attention_mask"], b["loss_weights"])
    assert float(ours) == pytest.approx(float(ref), abs=1e-6)
    ref.backward()
    ours.backward()
    for (name, p1), p2 in zip(m1.named_parameters(), m2.parameters()):
        assert torch.allclose(p1.grad, p2.grad, atol=1e-6), name


def test_supervised_head_nothing_to_train(tiny_model):
    ids = torch.tensor([[1, 2, 3]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = sv.supervised_head_loss(tiny_model, ids, torch.full_like(ids, -100))
    assert float(loss) == 0.0 and any(issubclass(w.category, sv.NothingToTrainWarning) for w in caught)
