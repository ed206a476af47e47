"""The lab's labels and weights in Hugging Face Trainer, TRL and accelerate (sftviz.hf, SFTCollator)."""

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sftviz as sv
from sftviz.collate import collate_examples
from sftviz.hf import SFTLossTrainer, step_weight

ROOT = Path(__file__).resolve().parents[1]
ROWS = [
    {"prompt": "Question: How much is the lamp?\nAnswer:", "completion": " 12 dollars."},
    {"prompt": "Paris is the capital of", "completion": " France."},
    {"prompt": "Customer: Does the Nova Fan have a warranty?\nAssistant:", "completion": " Yes, two years."},
    {"prompt": "Question: What colour is the kettle?\nAnswer:", "completion": " teal."},
] * 2


def args(tmp_path, **kw):
    """Default TrainingArguments but for what keeps a test small: two CPU steps, no saving, no reports."""
    from transformers import TrainingArguments

    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=2, report_to=[], use_cpu=True)
    base.update(save_strategy="no", logging_steps=1, seed=0)
    base.update(kw)
    return TrainingArguments(**base)


def losses(trainer):
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


# ------------------------------------------------------------------------------------------------
# 1. Trainer with default TrainingArguments: raw rows, a datasets.Dataset, tokenized rows
# ------------------------------------------------------------------------------------------------


def test_plain_trainer_with_tokenized_rows_and_default_arguments(tiny_model, gpt2_tok_padded, tmp_path):
    from datasets import Dataset
    from transformers import Trainer

    collate = sv.SFTCollator(gpt2_tok_padded)
    for train in (collate.tokenize(ROWS), collate.tokenize(Dataset.from_list(ROWS))):
        trainer = Trainer(
            model=copy.deepcopy(tiny_model), args=args(tmp_path), train_dataset=train, data_collator=collate
        )
        assert trainer.args.remove_unused_columns  # the default, which drops raw prompt/completion columns
        out = trainer.train()
        assert out.global_step == 2 and all(math.isfinite(v) for v in losses(trainer))


def test_tokenized_rows_carry_the_completion_so_every_masking_can_use_them(gpt2_tok_padded):
    tok = gpt2_tok_padded
    tokenized = sv.SFTCollator(tok).tokenize(ROWS)
    assert set(tokenized[0]) == {"input_ids", "labels"}
    for masking in ("completion", "full", 0.25):
        collate = sv.SFTCollator(tok, masking=masking, return_extras=True)
        from_text, from_tokens = collate(ROWS), collate(tokenized)
        for key in ("input_ids", "labels", "loss_weights", "completion_mask"):
            assert torch.equal(from_text[key], from_tokens[key]), (masking, key)


def test_raw_rows_stripped_by_the_trainer_get_a_message_that_says_what_to_do(tiny_model, gpt2_tok_padded, tmp_path):
    from transformers import Trainer

    collate = sv.SFTCollator(gpt2_tok_padded)
    trainer = Trainer(model=copy.deepcopy(tiny_model), args=args(tmp_path), train_dataset=ROWS, data_collator=collate)
    with pytest.raises(ValueError, match=r"remove_unused_columns=True.*collate\.tokenize\(rows\)"):
        trainer.train()


@pytest.mark.parametrize("kind", ["list", "dataset", "tokenized"])
def test_sft_loss_trainer_takes_raw_and_tokenized_rows_with_default_arguments(
    kind, tiny_model, gpt2_tok_padded, tmp_path
):
    from datasets import Dataset

    collate = sv.SFTCollator(gpt2_tok_padded, masking=0.1)
    train = {"list": ROWS, "dataset": Dataset.from_list(ROWS), "tokenized": collate.tokenize(ROWS)}[kind]
    trainer = SFTLossTrainer(
        model=copy.deepcopy(tiny_model), args=args(tmp_path), train_dataset=train, data_collator=collate
    )
    out = trainer.train()
    assert out.global_step == 2 and all(math.isfinite(v) for v in losses(trainer))


def test_sft_loss_trainer_refuses_what_it_cannot_honour(tiny_model, gpt2_tok_padded, tmp_path):
    from transformers import DataCollatorForLanguageModeling

    with pytest.raises(TypeError, match="SFTCollator"):
        SFTLossTrainer(model=tiny_model, args=args(tmp_path), train_dataset=ROWS,
                       data_collator=DataCollatorForLanguageModeling(gpt2_tok_padded, mlm=False))  # fmt: skip
    with pytest.raises(TypeError, match="compute_loss_func"):
        SFTLossTrainer(model=tiny_model, args=args(tmp_path), train_dataset=ROWS,
                       data_collator=sv.SFTCollator(gpt2_tok_padded), compute_loss_func=lambda *a, **k: 0)  # fmt: skip


# ------------------------------------------------------------------------------------------------
# 2. A prompt-loss weight is honoured, or refused
# ------------------------------------------------------------------------------------------------


def test_the_weighted_loss_in_trainer_is_sft_loss_with_the_weights(tiny_model, gpt2_tok_padded, tmp_path):
    tok = gpt2_tok_padded
    collate = sv.SFTCollator(tok, masking=0.1)
    trainer = SFTLossTrainer(
        model=copy.deepcopy(tiny_model), args=args(tmp_path), train_dataset=ROWS, data_collator=collate
    )
    model = trainer.model.eval()
    micro = [collate(ROWS[:3]), collate(ROWS[3:])]  # two micro-batches of one step, padded differently
    total = sum(step_weight(b) for b in micro)
    with torch.no_grad():
        got = sum(trainer.compute_loss(model, b, num_items_in_batch=total) for b in micro)
        whole = collate_examples([collate.example(r) for r in ROWS], tok.pad_token_id)
        logits = model(input_ids=whole["input_ids"], attention_mask=whole["attention_mask"]).logits
        expected = sv.sft_loss(logits, whole["labels"], whole["loss_weights"])
    assert float(got) == pytest.approx(float(expected), rel=1e-5)  # one ratio of sums, not a mean of means
    assert float(expected) != pytest.approx(float(sv.sft_loss(logits, whole["labels"])), rel=1e-3)


@pytest.mark.parametrize("library", ["transformers", "trl"])
def test_a_trainer_that_would_drop_the_weights_is_refused(library, tiny_model, gpt2_tok_padded, tmp_path):
    collate = sv.SFTCollator(gpt2_tok_padded, masking=0.1)
    train = collate.tokenize(ROWS)
    if library == "transformers":
        from transformers import Trainer

        trainer = Trainer(
            model=copy.deepcopy(tiny_model), args=args(tmp_path), train_dataset=train, data_collator=collate
        )
    else:
        pytest.importorskip("trl")
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        cfg = SFTConfig(output_dir=str(tmp_path), max_steps=1, report_to=[], use_cpu=True, save_strategy="no")
        trainer = SFTTrainer(model=copy.deepcopy(tiny_model), args=cfg, train_dataset=Dataset.from_list(train),
                             processing_class=gpt2_tok_padded, data_collator=collate)  # fmt: skip
    with pytest.raises(ValueError, match="silently train the full sequence"):
        trainer.train()
    # Outside a trainer the batch is there to be read, weights and all.
    assert "loss_weights" in collate(ROWS)


def test_unweighted_batches_hold_only_what_a_model_accepts(gpt2_tok_padded):
    for masking in ("completion", "full", 0.0, 1.0):
        assert set(sv.SFTCollator(gpt2_tok_padded, masking=masking)(ROWS)) == {"input_ids", "attention_mask", "labels"}


# ------------------------------------------------------------------------------------------------
# 3. TRL: assistant-only loss on the bundled chat data, TRL's tokenized rows
# ------------------------------------------------------------------------------------------------

OLD_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('sftviz-tiny chat roles are system, user and assistant, not ' + m['role']) }}{% endif %}"
    "<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def bundled():
    return sv.load_model(device="cpu")


def test_the_chat_template_marks_generation_and_renders_the_same_text(bundled):
    _, tok = bundled
    assert "{% generation %}" in tok.chat_template
    for row in sv.load_dataset("support-chat"):
        for gen in (False, True):
            new = tok.apply_chat_template(row["messages"], tokenize=False, add_generation_prompt=gen)
            old = tok.apply_chat_template(
                row["messages"], tokenize=False, add_generation_prompt=gen, chat_template=OLD_TEMPLATE
            )
            assert new == old


def test_trl_assistant_only_loss_runs_and_its_masks_are_ours(bundled, tmp_path):
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tok = bundled
    rows = sv.load_dataset("support-chat")
    cfg = SFTConfig(output_dir=str(tmp_path), assistant_only_loss=True, max_steps=2, per_device_train_batch_size=4,
                    report_to=[], use_cpu=True, save_strategy="no", logging_steps=1)  # fmt: skip
    trainer = SFTTrainer(
        model=copy.deepcopy(model), args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok
    )
    out = trainer.train()
    assert out.global_step == 2 and all(math.isfinite(v) for v in losses(trainer))
    collate = sv.SFTCollator(tok)
    for i, row in enumerate(rows):
        trl_row = trainer.train_dataset[i]
        ours = sv.build_example(tok, messages=row["messages"])
        trl_labels = trl_row.get("labels") or [
            t if m else -100 for t, m in zip(trl_row["input_ids"], trl_row["assistant_masks"])
        ]
        assert trl_row["input_ids"] == ours.input_ids
        assert trl_labels == ours.labels  # the assistant turns and their <|end|>, nothing else
        # ... and SFTCollator takes TRL's tokenized row as it is.
        assert collate([trl_row])["labels"][0].tolist() == ours.labels


# ------------------------------------------------------------------------------------------------
# 4. Distributed: two processes on the CPU (gloo)
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_process_accelerate_run_finishes_on_both_ranks(tmp_path):
    """Two processes on the CPU with the gloo backend. ``accelerate launch --cpu --num_processes 2`` starts
    one process unless MPI is installed (accelerate >= 1.x); its multi-process launcher (torchrun) with
    ``TrainingArguments(use_cpu=True)`` is the way to two CPU processes."""
    pytest.importorskip("accelerate")
    script = ROOT / "tests" / "hf_two_ranks.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script), str(tmp_path)]  # fmt: skip
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    reports = sorted(tmp_path.glob("rank*.txt"))
    assert [p.name for p in reports] == ["rank0.txt", "rank1.txt"]
    checksums = set()
    for p in reports:
        world, steps, checksum, *losses = p.read_text().split()
        assert world == "2" and steps == "3"
        assert losses and all(math.isfinite(float(v)) for v in losses), p.read_text()
        checksums.add(checksum)
    assert len(checksums) == 1  # the ranks' gradients were all-reduced: the same weights on both
