"""Packing (sv.pack): boundaries keep every example's loss and gradients as if alone; naive packing does
not; labels, positions and weights; the same labels and positions as TRL's padding-free batches."""

from __future__ import annotations

import copy
import random
from collections import defaultdict, deque

import pytest
import torch
from packaging.version import Version

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


# TRL's packing=True, packing_strategy="bfd", on the same rows ----------------------------------------------------
#
# TRL (trl/data_utils.py, _pack_bfd and _SegmentTree) truncates every example to max_length (list_slice), sorts the
# examples by length, longest first (a stable arrow sort: ties keep the data's order), and puts each into the open
# row with the least room that still fits it, found with a segment tree over the rooms; max_length itself is always
# in the tree and stands for "open a new row". Rows with the same room wait in a FIFO deque (space_to_bin[space]):
# on a tie TRL takes the row that has had that room longest, sv's best_fit the row opened first. Both therefore make
# the same sequence of room multisets, so the same number of rows, the same first (longest) example in every row
# and the same row totals; only which of two equally full rows takes the next example may differ.

PACK_ROWS = sv.load_dataset("support", split="eval")  # 40 distinct rows of 45 to 52 tokens


def trl_version():
    return Version(pytest.importorskip("trl").__version__)


def trl_bfd_rule(lengths, max_length):
    """TRL's _pack_bfd grouping in plain Python: best-fit decreasing, ties to the row that got its room first."""
    rows, by_room = [], defaultdict(deque)
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        rooms = [room for room, queue in by_room.items() if queue and room >= lengths[i]]
        row = by_room[min(rooms)].popleft() if rooms else {"ids": [], "room": max_length}
        if not rooms:
            rows.append(row)
        row["ids"].append(i)
        row["room"] -= lengths[i]
        by_room[row["room"]].append(row)
    return [row["ids"] for row in rows]


def trl_groups(lengths, max_length):
    """Indices grouped into rows by trl.data_utils.pack_dataset(strategy="bfd") (each example's tokens are its index)."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    packed = pack_dataset(Dataset.from_dict({"input_ids": [[i] * n for i, n in enumerate(lengths)]}), max_length, "bfd")
    return [[row["input_ids"][at] for at in starts(row["seq_lengths"])] for row in packed]


def starts(seq_lengths):
    return [sum(seq_lengths[:k]) for k in range(len(seq_lengths))]


def same_up_to_ties(ours, trls, lengths):
    assert len(ours) == len(trls)
    assert [row[0] for row in ours] == [row[0] for row in trls]  # each row opened by the same example
    assert totals(ours, lengths) == totals(trls, lengths)


def totals(rows, lengths):
    return sorted(sum(lengths[i] for i in row) for row in rows)


def test_trls_bfd_groups_lengths_as_best_fit_up_to_ties():
    """pack_dataset(..., strategy="bfd") follows trl_bfd_rule exactly; sv's best_fit makes the same number of rows
    with the same totals and first examples, and breaks a tie between equally full rows the other way."""
    trl_version()
    rng = random.Random(0)
    cases = [([13, 11, 4, 2, 1], 16)]
    cases += [([rng.randint(1, n // 2) for _ in range(rng.randint(1, 25))], n) for n in (16, 64, 128) for _ in range(8)]
    for lengths, n in cases:  # max_length a power of two: see the next test for the others at TRL < 0.22
        ours, trls = best_fit(lengths, n), trl_groups(lengths, n)
        assert trls == trl_bfd_rule(lengths, n), (lengths, n)
        same_up_to_ties(ours, trls, lengths)
    # 13 and 11 open two rows; 4 then 2 leave both with room 1, and 1 goes to the row that had room 1 first (TRL)
    # or to the row opened first (sv)
    assert best_fit([13, 11, 4, 2, 1], 16) == [[0, 3, 4], [1, 2]]
    assert trl_groups([13, 11, 4, 2, 1], 16) == [[0, 3], [1, 2, 4]]


def test_trl_before_0_22_bfd_misses_fits_when_max_length_is_not_a_power_of_two():
    """TRL < 0.22 lays its segment tree over 2 * max_length slots, a heap that is only ordered when max_length is a
    power of two; otherwise search() can miss a row with room and open a new one (never an overfull one). TRL 0.22
    rounds the tree up to a power of two (huggingface/trl#3888) and then packs as sv's best_fit."""
    old = trl_version() < Version("0.22")
    assert trl_groups([9, 1], 10) == ([[0], [1]] if old else [[0, 1]])
    assert best_fit([9, 1], 10) == [[0, 1]]
    rng = random.Random(1)
    for _ in range(10):
        lengths = [rng.randint(1, 10) for _ in range(rng.randint(1, 25))]
        ours, trls = best_fit(lengths, 10), trl_groups(lengths, 10)
        assert all(sum(lengths[i] for i in row) <= 10 for row in trls)
        if old:
            assert len(trls) >= len(ours)
        else:
            same_up_to_ties(ours, trls, lengths)


def trl_packed(model, tok, rows, max_length, tmp_path):
    """The train dataset of SFTTrainer(args=SFTConfig(packing=True, packing_strategy="bfd", max_length=...)): rows
    of input_ids with seq_lengths, and labels (TRL >= 1.7) or completion_mask (before) or neither (text rows)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(output_dir=str(tmp_path), packing=True, packing_strategy="bfd", max_length=max_length,
                     report_to="none", use_cpu=True)  # fmt: skip
    trainer = SFTTrainer(copy.deepcopy(model), args, train_dataset=Dataset.from_list(rows),
                         processing_class=copy.deepcopy(tok))  # fmt: skip
    return list(trainer.train_dataset)


def segments(packed, exs):
    """For each packed row, the index of the example each segment is (its tokens, or their start when TRL cut it)."""
    groups = []
    for row in packed:
        groups.append([])
        for at, n in zip(starts(row["seq_lengths"]), row["seq_lengths"]):
            seg = row["input_ids"][at : at + n]
            (i,) = [i for i, ex in enumerate(exs) if ex.input_ids[:n] == seg]
            groups[-1].append(i)
    return groups


def trl_labels(row):
    ids = row["input_ids"]
    if "labels" in row:
        return row["labels"]
    mask = row.get("completion_mask", [1] * len(ids))
    return [t if m else -100 for t, m in zip(ids, mask)]


def test_sft_trainer_packing_bfd_groups_the_rows_as_best_fit(bundled, tmp_path):
    """SFTTrainer's own packing of 40 rows into rows of 256 tokens: its examples are sv's (no BOS), and its rows are
    sv's best_fit rows (the same up to ties in general; exactly the same on these rows)."""
    trl_version()
    model, tok = bundled
    exs = [sv.build_example(tok, add_bos=False, **r) for r in PACK_ROWS]
    packed = trl_packed(model, tok, PACK_ROWS, 256, tmp_path)
    trls = segments(packed, exs)
    assert sorted(i for row in trls for i in row) == list(range(len(exs)))  # each example once, whole
    assert all(sum(row["seq_lengths"]) <= 256 for row in packed)
    lengths = [len(ex) for ex in exs]
    ours = best_fit(lengths, 256)
    same_up_to_ties(ours, trls, lengths)
    assert trls == ours == trl_bfd_rule(lengths, 256)
    batch = pack(exs, tok, max_length=256)  # sv's packed rows hold the same tokens as TRL's
    for r, row in enumerate(packed):
        assert batch["input_ids"][r, : len(row["input_ids"])].tolist() == row["input_ids"]


@pytest.mark.parametrize("kind", ["prompt-completion", "text"])
def test_trls_packed_rows_through_the_collator_train_each_example_as_alone(bundled, tmp_path, kind):
    """TRL's packed rows through sv.SFTCollator (its packed_rows path) train what the padded batch of the same
    examples trains: the same targets, and each example's loss as alone. The first token of every example gets
    label -100. With prompt-completion rows it is a prompt token, masked anyway; with text rows TRL's dataset keeps
    it as a target, and TRL's own padding-free collator masks it only from TRL 0.24 (huggingface/trl#4170): before,
    the first token of each example is trained as predicted from the last token of the example before it."""
    version = trl_version()
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model, tok = bundled
    rows, masking = PACK_ROWS[:12], "completion"
    if kind == "text":  # TRL trains every token of a text row: sv's masking="full"
        rows, masking = [{"text": r["prompt"] + r["completion"]} for r in rows], "full"
        exs = [sv.build_example(tok, "", r["text"], add_bos=False, masking=masking) for r in rows]
    else:
        exs = [sv.build_example(tok, add_bos=False, **r) for r in rows]
    packed = trl_packed(model, tok, rows, 256, tmp_path)
    groups = segments(packed, exs)
    assert sorted(i for g in groups for i in g) == list(range(len(exs))) and len(packed) < len(exs)
    first = []
    for row, group in zip(packed, groups):  # TRL's examples are sv's, tokens and targets
        labels = trl_labels(row)
        for at, n, i in zip(starts(row["seq_lengths"]), row["seq_lengths"], group):
            assert row["input_ids"][at : at + n] == exs[i].input_ids
            assert labels[at + 1 : at + n] == exs[i].labels[1:]
            first.append(labels[at] != -100)
    assert any(first) == (kind == "text")  # TRL's dataset trains a text row's first token

    got = sv.SFTCollator(tok, packing="boundaries", max_length=256)(packed)
    assert got["attention_mask"].dim() == 4 and got["input_ids"].shape[0] == len(packed)
    index = torch.full(got["input_ids"].shape, -1)
    for r, (row, group) in enumerate(zip(packed, groups)):
        for at, n, i in zip(starts(row["seq_lengths"]), row["seq_lengths"], group):
            index[r, at : at + n] = i
            assert got["position_ids"][r, at : at + n].tolist() == list(range(n))
    assert (got["labels"][(got["position_ids"] == 0) & (index >= 0)] == -100).all()  # every example's first token
    padded = sv.SFTCollator(tok, masking)(exs)
    assert (got["labels"] != -100).sum() == (padded["labels"] != -100).sum()  # the same targets, none added
    pad_index = torch.where(padded["attention_mask"].bool(), torch.arange(len(exs))[:, None], -1)
    with torch.no_grad():
        ref = per_example_nll(model(**padded).logits, padded["labels"], pad_index, len(exs))
        losses = per_example_nll(model(**model_inputs(got)).logits, got["labels"], index, len(exs))
    assert max(abs(a.item() - b.item()) for a, b in zip(losses, ref)) < 1e-4

    trl = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(packed)
    flat = got["labels"][index >= 0]  # TRL's collator puts all rows in one
    differ = trl["labels"][0] != flat
    assert not (differ & (got["position_ids"][index >= 0] != 0)).any()  # TRL's targets are sv's but at first tokens,
    assert differ.any() == (kind == "text" and version < Version("0.24"))  # which TRL < 0.24 trains on text rows


def test_trl_bfd_truncates_an_example_longer_than_max_length_that_sftviz_refuses(bundled, tmp_path):
    """TRL's "bfd" cuts an example longer than max_length to its first max_length tokens and drops the rest: here
    the end of the completion and its EOS, which are then never trained (TRL >= 1.0 also has "bfd_split", before
    0.29 "bfd-requeue", which packs the rest as an example of its own). sv.pack refuses such an example instead (truncate it yourself with
    sv.build_example(..., max_length=...), which cuts the prompt from the left)."""
    trl_version()
    model, tok = bundled
    rows = PACK_ROWS[:12]
    exs = [sv.build_example(tok, add_bos=False, **r) for r in rows]
    packed = trl_packed(model, tok, rows, 48, tmp_path)
    groups = segments(packed, exs)
    assert sorted(i for g in groups for i in g) == list(range(len(exs)))  # every example kept, some of it cut
    kept = {i: n for row, g in zip(packed, groups) for i, n in zip(g, row["seq_lengths"])}
    cut = [i for i, ex in enumerate(exs) if len(ex) > 48]
    assert cut and all(kept[i] == min(len(ex), 48) for i, ex in enumerate(exs))
    for row, group in zip(packed, groups):
        for at, n, i in zip(starts(row["seq_lengths"]), row["seq_lengths"], group):
            assert (row["input_ids"][at + n - 1] == tok.eos_token_id) == (i not in cut)  # the cut lose their EOS
    dropped = sum(len(exs[i]) - 48 for i in cut)
    assert sum(kept.values()) == sum(len(ex) for ex in exs) - dropped
    with pytest.raises(ValueError, match="more than max_length"):
        pack(exs, tok, max_length=48)
