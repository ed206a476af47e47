"""Packing (sv.pack): boundaries keep every example's loss and gradients as if alone; naive packing does
not; labels, positions and weights; the same labels and positions as TRL's padding-free batches."""

from __future__ import annotations

import pytest
import torch

import sftviz as sv
from sftviz.packing import best_fit, in_order, model_inputs, pack

ROWS = sv.load_dataset("support", split="eval")[:3]  # unequal lengths


@pytest.fixture(scope="module")
def bundled():
    return sv.load_model(device="cpu")


def per_example_nll(logits, labels, index, n):
    """Each example's mean NLL over its trained tokens (a tensor each, so gradients flow)."""
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    target, where = labels[:, 1:], index[:, 1:]
    out = []
    for i in range(n):
        m = (where == i) & (target != -100)
        out.append(-logp[m].gather(-1, target[m][:, None]).mean())
    return out


def alone(model, tok, rows):
    losses = []
    for row in rows:
        ex = sv.build_example(tok, **row)
        logits = model(torch.tensor([ex.input_ids])).logits
        losses += per_example_nll(logits, torch.tensor([ex.labels]), torch.zeros(1, len(ex), dtype=torch.long), 1)
    return losses


def grads(model, losses):
    model.zero_grad()
    torch.stack(losses).sum().backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_boundaries_keep_each_example_as_alone_and_naive_packing_does_not(bundled, family):
    model, tok = bundled
    if family == "llama":  # rotary positions and another attention code path, same tokenizer
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)  # fmt: skip
        model = LlamaForCausalLM(cfg)
    ref = alone(model, tok, ROWS)
    ref_grads = grads(model, ref)
    for mode in ("boundaries", "naive"):
        batch = pack(ROWS, tok, max_length=512, mode=mode)
        assert batch["input_ids"].shape[0] == 1  # all three in one row
        got = per_example_nll(model(**model_inputs(batch)).logits, batch["labels"], batch["example_index"], 3)
        diff = max(abs(a.item() - b.item()) for a, b in zip(got, ref))
        g = grads(model, got)
        rel = ((g - ref_grads).norm() / ref_grads.norm()).item()
        if mode == "boundaries":
            assert diff < 1e-4 and rel < 1e-4, (family, diff, rel)
        else:  # every example after the first reads the one before it
            assert diff > 1e-3 and rel > 1e-3, (family, diff, rel)


def test_labels_positions_and_weights_of_a_packed_batch(bundled):
    _, tok = bundled
    exs = [sv.build_example(tok, **r, masking=0.5) for r in ROWS]
    batch = pack(exs, tok, max_length=max(len(e) for e in exs) + 5, mode="boundaries")
    rows, width = batch["input_ids"].shape
    assert rows == 3  # no two fit together: one example per row, padded to the longest
    for r in range(rows):
        i = int(batch["example_index"][r, 0])
        k = len(exs[i])
        assert batch["input_ids"][r, :k].tolist() == exs[i].input_ids
        assert batch["labels"][r, 0] == -100 and batch["labels"][r, 1:k].tolist() == exs[i].labels[1:]
        assert batch["position_ids"][r, :k].tolist() == list(range(k))
        assert batch["loss_weights"][r, 1:k].tolist() == exs[i].weights[1:]  # the prompt-loss weight kept
        assert (batch["labels"][r, k:] == -100).all() and (batch["example_index"][r, k:] == -1).all()
        mask = batch["attention_mask"][r, 0]
        assert mask[k:, k:].equal(torch.eye(width - k, dtype=torch.bool))  # padding sees only itself
    two = pack(ROWS[:2], tok, max_length=512, mode="naive")
    assert two["attention_mask"].shape == two["input_ids"].shape  # one 2-D mask over the row: the bug
    starts = (two["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert len(starts) == 2 and all(two["labels"][0, s] == -100 for s in starts)


def test_grouping_strategies():
    assert best_fit([5, 9, 3, 7], 12) == [[1, 2], [3, 0]]
    assert in_order([5, 9, 3, 7], 12) == [[0], [1, 2], [3]]


def test_same_labels_and_positions_as_trls_padding_free_batch(bundled):
    pytest.importorskip("trl")
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    _, tok = bundled
    exs = [sv.build_example(tok, add_bos=False, **r) for r in ROWS]  # TRL adds no BOS for this tokenizer
    feats = [{"input_ids": e.input_ids, "completion_mask": e.completion_mask, "labels": e.labels} for e in exs]
    trl = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(feats)
    ours = pack(exs, tok, max_length=10_000, strategy="in-order")
    for key in ("input_ids", "labels", "position_ids"):
        assert trl[key].tolist() == ours[key].tolist(), key


def test_bad_input(bundled):
    _, tok = bundled
    with pytest.raises(ValueError, match="packing mode"):
        pack(ROWS, tok, max_length=512, mode="tight")
    with pytest.raises(ValueError, match="more than max_length"):
        pack(ROWS, tok, max_length=8)
    with pytest.raises(ValueError, match="strategy"):
        pack(ROWS, tok, max_length=512, strategy="random")
    with pytest.raises(TypeError, match="list of rows"):
        pack(ROWS[0], tok, max_length=512)
    with pytest.raises(ValueError, match="nothing to pack"):
        pack([], tok, max_length=512)


def test_the_collator_packs_and_keeps_a_packed_batch_packed(bundled):
    """sv.SFTCollator(packing=...) packs; a row that arrives packed (TRL) keeps its examples apart: before,
    the collator dropped position_ids and let the examples attend to each other."""
    model, tok = bundled
    ref = alone(model, tok, ROWS)
    collate = sv.SFTCollator(tok, packing="boundaries", max_length=512)
    batch = collate(ROWS)
    assert set(batch) == {"input_ids", "labels", "position_ids", "attention_mask"}
    assert batch["input_ids"].shape[0] == 1
    exs = [sv.build_example(tok, **r) for r in ROWS]
    trl_row = {  # TRL's packed row: the examples end to end, seq_lengths, no attention mask
        "input_ids": [t for e in exs for t in e.input_ids],
        "labels": [t for e in exs for t in e.labels],
        "seq_lengths": [len(e) for e in exs],
    }
    for features in ([trl_row], [{**trl_row, "position_ids": [p for e in exs for p in range(len(e))]}]):
        got = sv.SFTCollator(tok)(features)
        assert got["attention_mask"].dim() == 4 and got["position_ids"][0].tolist().count(0) == 3
        index = torch.tensor([[i for i, e in enumerate(exs) for _ in e.input_ids]])
        losses = per_example_nll(model(**model_inputs(got)).logits, got["labels"], index, 3)
        assert max(abs(a.item() - b.item()) for a, b in zip(losses, ref)) < 1e-4
    with pytest.raises(ValueError, match="max_length"):
        sv.SFTCollator(tok, packing="boundaries")
    with pytest.raises(ValueError, match="packing mode"):
        sv.SFTCollator(tok, packing="yes", max_length=64)
