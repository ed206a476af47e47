"""Run by tests/test_hf.py under ``accelerate launch --multi_gpu --num_processes 2`` on the CPU (torchrun's
processes, the gloo backend): the bundled model trained by SFTLossTrainer with a prompt-loss weight and
gradient accumulation for three steps. Each rank writes ``rank<N>.txt`` into the folder given as the
first argument: the world size, the steps done, a checksum of the trained weights (equal on every rank
when the gradients were all-reduced) and the logged losses."""

import os
import sys
from pathlib import Path

import torch.distributed as dist
from transformers import TrainingArguments

import sftviz as sv
from sftviz.hf import SFTLossTrainer

out = Path(sys.argv[1])
model, tok = sv.load_model(device="cpu")
args = TrainingArguments(
    output_dir=str(out / "trainer"),
    per_device_train_batch_size=4,
    gradient_accumulation_steps=2,
    max_steps=3,
    logging_steps=1,
    report_to=[],
    use_cpu=True,
    save_strategy="no",
    seed=0,
)
trainer = SFTLossTrainer(
    model=model,
    args=args,
    train_dataset=sv.load_dataset("support")[:64],
    data_collator=sv.SFTCollator(tok, masking=0.1),
)
result = trainer.train()
rank, world = trainer.args.process_index, trainer.args.world_size
assert world == int(os.environ["WORLD_SIZE"]) and rank == int(os.environ["RANK"]), (world, rank)
assert dist.is_initialized() and dist.get_backend() == "gloo"
logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
checksum = sum(float(p.detach().double().sum()) for p in trainer.model.parameters())
(out / f"rank{rank}.txt").write_text(f"{world} {result.global_step} {checksum!r} " + " ".join(map(repr, logged)) + "\n")
# Shut the process group down before the interpreter exits: left to exit-time teardown, a gloo thread can
# still be running and the process aborts ("terminate called without an active exception", exit -6) after
# its work is done, which failed a CI run once.
dist.barrier()
dist.destroy_process_group()
