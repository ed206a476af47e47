"""SFTCollator: padding by length, extras, HF Trainer and TRL agreement."""

import pytest
import torch

import sftviz as sv

ROWS = [
    {"prompt": "Question: How much is the lamp?\nAnswer:", "completion": " 12 dollars."},
    {"prompt": "Paris is the capital of", "completion": " France."},
]


def test_pads_by_length_and_keeps_eos_trained(gpt2_tok_padded):
    tok = gpt2_tok_padded
    b = sv.SFTCollator(tok, return_extras=True)(ROWS)
    exs = [sv.build_example(tok, **r) for r in ROWS]
    short = min(range(2), key=lambda i: len(exs[i]))
    k = len(exs[short])
    assert b["input_ids"].shape[1] == max(len(e) for e in exs)
    assert torch.all(b["input_ids"][short, k:] == tok.pad_token_id)
    assert torch.all(b["labels"][short, k:] == -100)
    assert torch.all(b["attention_mask"][short, k:] == 0) and torch.all(b["attention_mask"][short, :k] == 1)
    # The real EOS has the pad's id and is still a target.
    assert int(b["labels"][short, k - 1]) == tok.eos_token_id
    assert set(b) == {"input_ids", "attention_mask", "labels", "completion_mask", "prompt_mask", "loss_weights"}
    assert torch.all((b["loss_weights"] > 0) == (b["labels"] != -100))


def test_accepts_examples_rows_and_token_dicts(gpt2_tok_padded):
    tok = gpt2_tok_padded
    col = sv.SFTCollator(tok, masking="full")
    ex = sv.build_example(tok, **ROWS[0])
    feats = {"input_ids": ex.input_ids, "completion_mask": ex.completion_mask}
    a, b, c = col([ex]), col([ROWS[0]]), col([feats])
    assert torch.equal(a["labels"], b["labels"]) and torch.equal(b["labels"], c["labels"])
    assert int((a["labels"] != -100).sum()) == len(ex) - 1


def test_prompt_loss_weight(gpt2_tok_padded):
    b = sv.SFTCollator(gpt2_tok_padded, prompt_loss_weight=0.1, return_extras=True)(ROWS)
    assert b["loss_weights"][b["prompt_mask"].bool()].tolist() == pytest.approx([0.1] * int(b["prompt_mask"].sum()))
    assert set(b["loss_weights"][b["completion_mask"].bool()].tolist()) == {1.0}


def test_errors(gpt2_tok, gpt2_tok_padded):
    with pytest.raises(ValueError, match="no pad token"):
        sv.SFTCollator(gpt2_tok)
    col = sv.SFTCollator(gpt2_tok_padded)
    with pytest.raises(ValueError, match="non-empty list"):
        col([])
    with pytest.raises(ValueError, match="expected 'prompt' and 'completion'"):
        col([{"text": "hello"}])
    with pytest.raises(TypeError, match="Feature 0"):
        col(["hello"])
    with pytest.raises(ValueError, match="Unknown masking"):
        sv.SFTCollator(gpt2_tok_padded, masking="assistant")


def test_works_as_hf_trainer_data_collator(gpt2_tok_padded, tiny_model, tmp_path):
    import copy

    from transformers import Trainer, TrainingArguments

    model = copy.deepcopy(tiny_model)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        max_steps=2,
        report_to=[],
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        remove_unused_columns=False,
        seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=ROWS * 2, data_collator=sv.SFTCollator(gpt2_tok_padded))
    out = trainer.train()
    assert out.global_step == 2 and out.training_loss > 0


def test_labels_match_trl_completion_only(gpt2_tok_padded, tiny_model, tmp_path):
    """On examples without boundary merges our labels equal TRL SFTTrainer's completion-only labels."""
    pytest.importorskip("trl")
    import copy

    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tok = gpt2_tok_padded
    rows = ROWS + [
        {"prompt": "Customer: Does the Nova Fan have a warranty?\nAssistant:", "completion": " Yes, two years."}
    ]
    cfg = SFTConfig(
        output_dir=str(tmp_path), completion_only_loss=True, report_to=[], max_steps=1, use_cpu=True, save_strategy="no"
    )
    trainer = SFTTrainer(
        model=copy.deepcopy(tiny_model), args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok
    )
    feats = [trainer.train_dataset[i] for i in range(len(rows))]
    trl_batch = trainer.data_collator(feats)
    # TRL adds no BOS for a GPT-2-style tokenizer; compare with ours built the same way.
    ours = sv.SFTCollator(tok)([sv.build_example(tok, add_bos=False, **r) for r in rows])
    order = [next(i for i, f in enumerate(feats) if tok.decode(f["input_ids"]).startswith(r["prompt"])) for r in rows]
    for j, i in enumerate(order):
        n = int(ours["attention_mask"][j].sum())
        assert trl_batch["input_ids"][i, :n].tolist() == ours["input_ids"][j, :n].tolist()
        assert trl_batch["labels"][i, :n].tolist() == ours["labels"][j, :n].tolist()


def test_edited_labels_are_kept(gpt2_tok_padded):
    """An Example edited with set_trained (TokenView) keeps its labels in the batch, as in sv.finetune."""
    ex = sv.build_example(gpt2_tok_padded, prompt="Paris is the capital of", completion=" France.")
    p = ex.segments.index("prompt") + 1
    ex.set_trained(p, True)
    for masking in ("completion", "full", 0.1):
        b = sv.SFTCollator(gpt2_tok_padded, masking=masking, return_extras=True)([ex])
        assert b["labels"][0].tolist() == ex.labels and b["loss_weights"][0].tolist() == ex.weights
    plain = sv.build_example(gpt2_tok_padded, prompt="Paris is the capital of", completion=" France.")
    b = sv.SFTCollator(gpt2_tok_padded, masking="full")([plain])  # an unedited one gets the collator's masking
    assert (b["labels"][0, 1:] != -100).all()
