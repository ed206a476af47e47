"""Each injected fault changes the labels or the loss exactly the way its docstring says."""

import pytest
import torch

from sftviz import faults as FL
from sftviz.collate import collate_examples
from sftviz.data import IGNORE_INDEX, build_example
from sftviz.loss import sft_loss, token_nll

ROWS = [
    ("Question: How much is the lamp?\nAnswer:", " 12 dollars."),
    (
        "Customer: Does the Nova Fan have a warranty?\nAssistant:",
        " Yes, two years. The Zephyr Kettle costs 49 dollars.",
    ),
    ("Question: capital of France?\nAnswer:", " Paris"),
]


@pytest.fixture()
def batch(gpt2_tok_padded):
    exs = [build_example(gpt2_tok_padded, prompt=p, completion=c, warn=False) for p, c in ROWS]
    return collate_examples(exs, gpt2_tok_padded.pad_token_id, extras=True), exs


def _ends(exs):
    return [len(ex) - 1 for ex in exs]  # position of each example's EOS


def test_registry_lists_every_fault_with_a_symptom():
    assert set(FL.FAULTS) == {
        "shifted_labels",
        "eos_masked",
        "padding_trained",
        "prompt_trained",
        "per_sequence_mean",
        "accum_mean_of_means",
        "naive_packing",
        "packed_row_mean",
        "loss_scaled_by_accum",
    }
    for name in FL.FAULTS:
        f = FL.get_fault(name)
        assert f.name == name and f.kind in ("labels", "reduction", "packing", "logging")
        assert len(f.symptom) > 40, name  # the docstring names the symptom
        assert FL.FAULTS[name] == f.description
    assert FL.get_fault(None) is None
    with pytest.raises(ValueError, match="Unknown fault"):
        FL.get_fault("typo")
    with pytest.raises(TypeError):
        FL.get_fault(3)


def test_faults_do_not_modify_their_input(batch):
    b, _ = batch
    before = {k: v.clone() for k, v in b.items()}
    for name in ("shifted_labels", "eos_masked", "padding_trained", "prompt_trained"):
        FL.apply_label_fault(name, b, eos_id=0, pad_id=0)
        for k in b:
            assert torch.equal(b[k], before[k]), (name, k)


def test_shifted_labels_targets_the_token_after_the_intended_one(batch):
    b, exs = batch
    out = FL.shifted_labels(b)
    lab, good = out["labels"], b["labels"]
    assert torch.equal(lab[:, :-1][:, 1:], good[:, 2:])  # label t is the correct label of t + 1
    assert (lab[:, 0] == IGNORE_INDEX).all() and (lab[:, -1] == IGNORE_INDEX).all()
    for i, ex in enumerate(exs):
        first = ex.n_prompt  # first completion token
        # the last prompt position (first - 1) is now trained on the SECOND completion token
        assert int(lab[i, first]) == ex.input_ids[first + 1]
        # the last completion position (the EOS) predicts nothing any more
        assert int(lab[i, len(ex) - 1]) == IGNORE_INDEX
    assert torch.equal(out["loss_weights"][:, :-1][:, 1:], b["loss_weights"][:, 2:])


def test_eos_masked_never_trains_the_eos(batch, gpt2_tok_padded):
    b, exs = batch
    eos = gpt2_tok_padded.eos_token_id
    assert gpt2_tok_padded.pad_token_id == eos  # the situation the bug needs: pad == eos
    for i, end in enumerate(_ends(exs)):
        assert int(b["labels"][i, end]) == eos  # correct collation trains it (padding masked by length)
    out = FL.eos_masked(b, eos_id=eos)
    for i, end in enumerate(_ends(exs)):
        assert int(out["labels"][i, end]) == IGNORE_INDEX  # the bug masks it at the end of every completion
        assert float(out["loss_weights"][i, end]) == 0.0
    # nothing else changed: exactly one trained target fewer per example
    lost = (b["labels"] != IGNORE_INDEX).sum(1) - (out["labels"] != IGNORE_INDEX).sum(1)
    assert lost.tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="EOS id"):
        FL.eos_masked(b, eos_id=None)


def test_padding_trained_makes_padding_targets(batch):
    b, _exs = batch
    out = FL.padding_trained(b)
    pad = b["attention_mask"] == 0
    assert pad.any()
    assert torch.equal(out["labels"][pad], b["input_ids"][pad])
    assert (out["loss_weights"][pad] == 1.0).all()
    real = ~pad
    assert torch.equal(out["labels"][real], b["labels"][real])
    # the loss now includes easy padding targets: more trained tokens than the real completions have
    assert int((out["labels"] != IGNORE_INDEX).sum()) == int((b["labels"] != IGNORE_INDEX).sum()) + int(pad.sum())


def test_prompt_trained_inverts_the_mask(batch, gpt2_tok_padded):
    b, exs = batch
    out = FL.prompt_trained(b)
    for i, ex in enumerate(exs):
        trained = (out["labels"][i, : len(ex)] != IGNORE_INDEX).tolist()
        assert trained == [bool(m) for m in ex.prompt_mask]
        assert not any(t and c for t, c in zip(trained, ex.completion_mask))
        prompt_ex = ex.with_masking("prompt")
        assert out["labels"][i, : len(ex)].tolist() == prompt_ex.labels


def _nll_and_weights(batch, vocab, seed=0):
    torch.manual_seed(seed)
    logits = torch.randn(*batch["input_ids"].shape, vocab)
    nll = token_nll(logits, batch["labels"])
    w = (batch["labels"] != IGNORE_INDEX).float()
    return logits, nll, w


def test_token_mean_is_sft_loss(batch, gpt2_tok_padded):
    b, _ = batch
    logits, nll, w = _nll_and_weights(b, len(gpt2_tok_padded))
    assert torch.allclose(FL.token_mean(nll, w), sft_loss(logits, b["labels"]))


def test_per_sequence_mean_differs_on_unequal_lengths_and_is_the_mean_of_means(batch, gpt2_tok_padded):
    b, exs = batch
    counts = (b["labels"] != IGNORE_INDEX).sum(1).tolist()
    assert len(set(counts)) > 1  # unequal completion lengths
    logits, nll, w = _nll_and_weights(b, len(gpt2_tok_padded))
    per_seq = [float(nll[i][w[i] > 0].mean()) for i in range(len(exs))]
    got = FL.per_sequence_mean(nll, w)
    assert got.item() == pytest.approx(sum(per_seq) / len(per_seq), rel=1e-6)
    assert abs(got.item() - sft_loss(logits, b["labels"]).item()) > 1e-3
    # short completions weigh more: the gradient weight of one token is 1 / (S * n_i)
    nll_leaf = nll.clone().requires_grad_(True)
    FL.per_sequence_mean(nll_leaf, w).backward()
    per_token_weight = [float(nll_leaf.grad[i][w[i] > 0][0]) for i in range(len(exs))]
    for i in range(len(exs)):
        assert per_token_weight[i] == pytest.approx(1.0 / (len(exs) * counts[i]))
    # equal lengths: identical to the token mean
    same = torch.ones(2, 5)
    vals = torch.rand(2, 5)
    assert FL.per_sequence_mean(vals, same).item() == pytest.approx(FL.token_mean(vals, same).item())


def test_accum_mean_of_means_differs_from_ratio_of_sums(batch, gpt2_tok_padded):
    b, _exs = batch
    logits, nll, w = _nll_and_weights(b, len(gpt2_tok_padded))
    # two micro-batches with unequal trained tokens: [ex0] and [ex1, ex2]
    micro = [slice(0, 1), slice(1, 3)]
    total = w.sum()
    ratio_of_sums = sum(FL.token_mean(nll[m], w[m], total_weight=total) for m in micro)
    assert ratio_of_sums.item() == pytest.approx(sft_loss(logits, b["labels"]).item(), rel=1e-6)
    faulty = sum(FL.accum_mean_of_means(nll[m], w[m], n_micro=2) for m in micro)
    means = [FL.token_mean(nll[m], w[m]).item() for m in micro]
    assert faulty.item() == pytest.approx(sum(means) / 2, rel=1e-6)
    assert abs(faulty.item() - ratio_of_sums.item()) > 1e-3
    # with equal trained tokens per micro-batch the two agree
    same = torch.ones(4, 3)
    vals = torch.rand(4, 3)
    eq = sum(FL.accum_mean_of_means(vals[i : i + 2], same[i : i + 2], n_micro=2) for i in (0, 2))
    assert eq.item() == pytest.approx(FL.token_mean(vals, same).item())


def test_label_fault_needs_a_collated_batch():
    with pytest.raises(TypeError):
        FL.shifted_labels([1, 2, 3])
    with pytest.raises(ValueError, match="collate_examples"):
        FL.shifted_labels({"input_ids": torch.zeros(1, 2)})
