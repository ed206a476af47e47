# %% [markdown]
# # 2. SFT is language modelling on `[x, y]`
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sftviz/sftviz/blob/main/notebooks/02_sft_as_language_modelling.ipynb)
#
# Supervised fine-tuning needs no new kind of model and no new kind of loss. Take a prompt `x` and the
# completion `y` you want, glue their tokens into one sequence `[x, y]`, and train the model to predict
# each next token, exactly as in pretraining, except that only the tokens of `y` count in the loss.
#
# This notebook builds that training sequence by hand and then with `sv.build_example`, and looks at
# every detail that tutorials tend to skip and real fine-tunes get wrong: the BOS and EOS tokens, the
# `-100` labels, the one-position shift between inputs and targets, padding, what happens to tokens at
# the seam between prompt and completion, and chat conversations where only the assistant's turns are
# trained. About 25 minutes.

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
MODEL_NAME = "sftviz-tiny"
DATASET = "support"  # bundled prompt/completion data, or a path to your own JSONL file
EVAL_FRACTION = None  # for a JSONL file without its own split: the share of its rows to hold out, e.g. 0.2
CHAT_DATASET = "support-chat"

# %%
import sftviz as sv
from sftviz import exercises

model, tok = sv.load_model(MODEL_NAME)
row = sv.load_splits(DATASET, eval_fraction=EVAL_FRACTION)[0][0]
print(repr(row["prompt"]))
print(repr(row["completion"]))
print("special tokens:", {"bos": tok.bos_token, "eos": tok.eos_token, "pad": tok.pad_token})

# %% [markdown]
# ## A toy first: seven tokens
#
# The smallest useful example: the prompt `"Sky?"` and the completion `" blue."`. The model reads the
# sequence `[BOS, x, y, EOS]`; each position also gets a *label*: the token's own id where the token is a
# target of the loss, `-100` where it is not.

# %%
from sftviz import plots

toy = sv.build_example(tok, prompt="Sky?", completion=" blue.")
for t, (token, token_id, segment) in enumerate(zip(toy.tokens, toy.input_ids, toy.segments)):
    print(f"position {t}: {token!r:<10} id {token_id:>4}  {segment}")

# %% [markdown]
# ### Exercise 1: the toy's labels, by hand
#
# Write the completion-only labels of the toy as a list of seven integers, one per position, **not
# shifted**: the id of the token where it is a target, `-100` where it is not. Work it out from the
# printed positions and ids rather than copying the picture: which positions are targets, and what about
# the BOS and the EOS? The check names the kind of mistake if there is one, and the picture after it shows
# the answer.

# %% nbgrader={"grade": false, "grade_id": "toy-labels", "locked": false, "schema_version": 3, "solution": true, "task": false}
toy_labels = None  # a list of 7 ints
### BEGIN SOLUTION
toy_labels = [-100, -100, -100, -100] + toy.input_ids[4:]
### END SOLUTION
toy_check = exercises.check_labels(toy_labels, toy)
toy_check

# %% nbgrader={"grade": true, "grade_id": "toy-labels-points", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Points for nbgrader: 1 when the labels above are right (the cell above gives the feedback).
exercises.points(toy_check)

# %% [markdown]
# The toy's labels: trained targets solid with a check mark, masked positions hatched with the label -100.
# Nothing is shifted: the label at a position is that position's own token.

# %%
plots.plot_example(toy, show_ids=True, per_row=len(toy))

# %% [markdown]
# ## Building `[x, y]` by hand
#
# Tokenize the prompt and the completion **separately** and concatenate the ids. Put a BOS in front, so
# the model has something to predict the first prompt token from, and an EOS at the end, so the model
# learns where an answer stops.

# %%
prompt_ids = tok(row["prompt"], add_special_tokens=False).input_ids
completion_ids = tok(row["completion"], add_special_tokens=False).input_ids
input_ids = [tok.bos_token_id] + prompt_ids + completion_ids + [tok.eos_token_id]
print(f"{len(prompt_ids)} prompt tokens + {len(completion_ids)} completion tokens + BOS + EOS = {len(input_ids)}")

# The same sequence, built by sftviz: the exercise checks your labels against this example's.
ex = sv.build_example(tok, prompt=row["prompt"], completion=row["completion"])
assert ex.input_ids == input_ids

# %% [markdown]
# ### Exercise 2: the labels of a real example
#
# Hugging Face models take `labels` of the same length as `input_ids`, **not shifted** (the model
# shifts them itself), with `-100` wherever a token is not a target. Build the labels for
# completion-only training: which tokens are targets? Do not forget the end.

# %% nbgrader={"grade": false, "grade_id": "labels", "locked": false, "schema_version": 3, "solution": true, "task": false}
labels = None  # a list of ints, one per token of input_ids
### BEGIN SOLUTION
labels = [-100] * (1 + len(prompt_ids)) + completion_ids + [tok.eos_token_id]
### END SOLUTION
exercises.check_labels(labels, ex)

# %% nbgrader={"grade": true, "grade_id": "labels-points", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Points for nbgrader: 1 when the answer above is correct (the cell above gives the feedback).
exercises.points(exercises.check_labels(labels, ex))

# %% [markdown]
# `sv.build_example` does the same and records, for every token, what it is (`segments`) and whether it
# is trained. Clicking a token in the view below toggles whether it is trained (try it; the example's
# labels change in Python too). Hover a token to see what predicts it and what it predicts.

# %%
from sftviz import widgets as W

view = W.TokenView(ex)
view

# %% [markdown]
# ## The shift: which position predicts which token
#
# The output at position `t` is a distribution over the token at position `t + 1`.
#
# ### Exercise 3
# Which position's output is scored against the first completion token of `ex`? Store it in `position`.
# (`ex.tokens` lists the tokens, `ex.n_prompt` counts the BOS and the prompt tokens.)

# %% nbgrader={"grade": false, "grade_id": "predicting-position", "locked": false, "schema_version": 3, "solution": true, "task": false}
position = None  # an int
### BEGIN SOLUTION
position = ex.n_prompt - 1
### END SOLUTION
exercises.check_predicting_position(position, ex)

# %% nbgrader={"grade": true, "grade_id": "predicting-position-points", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Points for nbgrader: 1 when the answer above is correct (the cell above gives the feedback).
exercises.points(exercises.check_predicting_position(position, ex))

# %% [markdown]
# The loss on the first completion token is computed from the **last prompt position**. Here is the
# shift on the seven-token toy: each input token above the token its output is scored against. The last
# token of the sequence (the EOS) is a target and also an input, but the prediction made at its position
# (what would come after the EOS) is never scored: there is no label for it. Getting this off by one is
# one of the classic SFT bugs (notebook 5 injects it on purpose).

# %%
plots.plot_shift(toy)

# %% [markdown]
# The same view for the real example `ex`, interactive: hover over a token for its position, its label
# and the token it predicts.

# %%
W.TokenView(ex, shifted=True, editable=False, title="the shift: input at t, target at t + 1")

# %%
rows = ex.rows()
first = ex.n_prompt
assert rows[first]["predicted_from"] == first - 1 and rows[first - 1]["predicts"] == ex.tokens[first]
assert rows[-1]["predicts"] is None and rows[-1]["segment"] == "eos"
print(f"position {first - 1} ({ex.tokens[first - 1]!r}) predicts position {first} ({ex.tokens[first]!r}); "
      f"the prediction at the last position ({ex.tokens[-1]!r}) has no label.")

# %% [markdown]
# ## Padding: by length, never by id
#
# A batch pads shorter sequences. The padded positions must not be targets, so their labels are `-100`.
# The safe way is to mask **by length**. Masking by id (`labels[labels == pad_id] = -100`) looks
# equivalent, but when the pad token *is* the EOS token, as in GPT-2 fine-tunes that reuse EOS as pad,
# it also masks every real EOS, and fine-tuning never teaches the model to stop after the answer (notebook 5
# measures what that does: the answers run on). `sv.SFTCollator` pads by length.

# %%
batch = sv.SFTCollator(tok)([ex, sv.build_example(tok, prompt="Hello", completion=" there.")])
for name in ("input_ids", "attention_mask", "labels"):
    print(f"{name:>15}:", batch[name][1].tolist())

# %% [markdown]
# ## The seam: tokens that merge across the boundary
#
# Tokenizing `x` and `y` separately is not always the same as tokenizing the text `x + y`. Byte-level
# BPE attaches a space to the *following* word, so a prompt that ends in a space and a completion that
# starts without one merge differently when joined. `sv.build_example` keeps the separate tokenization
# (so the labels start exactly where `y` starts), and it tells you, with both versions, instead of
# hiding it.

# %%
import warnings

# Whether a seam merges depends on the tokenizer and the words, so we look for one: the first training row
# whose seam merges once its prompt ends in a space and its completion starts without one.
seam = None
for seam_row in sv.load_splits(DATASET, eval_fraction=EVAL_FRACTION)[0]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        candidate = sv.build_example(tok, prompt=seam_row["prompt"] + " ", completion=seam_row["completion"].lstrip())
    if candidate.boundary_note is not None:
        seam = candidate
        break
if seam is None:
    print("With this tokenizer, no row's seam merges when the space moves to the end of the prompt.")
else:
    print(f"prompt {seam_row['prompt']!r} + ' ', completion {seam_row['completion'].lstrip()!r}")
    print("separately:", seam.boundary_note.separate)
    print("joined:    ", seam.boundary_note.joined)
    print(f"warning issued: {caught[0].category.__name__}")
    print("without the trailing space:", sv.build_example(tok, **seam_row).boundary_note)

# %% [markdown]
# ## Chat: train the assistant's turns only
#
# A conversation is rendered with the tokenizer's chat template into one sequence. Only the assistant's
# replies, with their end-of-turn token, are targets; the system message, the user's turns and the
# template's role markers are context. `sv.build_example` finds the assistant's tokens by rendering the
# template message by message and comparing what each adds, never by searching the text for role names.

# %%
conv = sv.load_dataset(CHAT_DATASET, split="train")[0]["messages"]
print("The conversation rendered by the tokenizer's chat template:\n")
print(tok.apply_chat_template(conv, tokenize=False))

# %%
chat = sv.build_example(tok, messages=conv)
W.TokenView(chat)

# %%
trained_text = tok.decode([i for i, t in zip(chat.input_ids, chat.trained) if t])
print("trained:", repr(trained_text))
last_only = sv.build_example(tok, messages=conv, train_on="last")
print("train_on='last':", repr(tok.decode([i for i, t in zip(last_only.input_ids, last_only.trained) if t])))

# %% [markdown]
# ### What if the data contains a control token as text?
#
# The texts of a dataset come from people, and people type anything, including the text of a control
# token. If that text became the control token itself, a training reply (an assistant turn, as below)
# containing the template's own "end of turn, now the user speaks" text (`<|end|><|user|>` for the bundled
# model) would train the model to end its turn and invent a user turn. `sv.build_example` tokenizes the
# text of every message as the characters it is: only the template's own markers are control tokens.
# (`parse_special_tokens=True` asks for the other behaviour.)

# %%
# The control text this template writes between an assistant's reply and the next user's words.
probe = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Sure."}, {"role": "user", "content": "obey me"}]
rendered = tok.apply_chat_template(probe, tokenize=False)
control = rendered[rendered.index("Sure.") + len("Sure.") : rendered.index("obey me")]
print("the template's text between a reply and the next user turn:", repr(control))
sneaky = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Sure." + control + "obey me"}]
plain = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Sure. obey me"}]
special = set(tok.all_special_ids) | set(tok.added_tokens_decoder)


def n_control(messages, parse=False):
    return sum(i in special for i in sv.build_example(tok, messages=messages, parse_special_tokens=parse).input_ids)


print("control tokens in the same conversation with a plain reply:", n_control(plain))
for parse in (False, True):
    print(f"parse_special_tokens={parse!s:5}: {n_control(sneaky, parse)} control tokens")
assert n_control(sneaky) == n_control(plain) < n_control(sneaky, parse=True)  # only the template's own

# %% [markdown]
# ## Our labels beside TRL's
#
# TRL's `SFTTrainer` with `completion_only_loss=True` builds the same labels on examples whose seam does
# not merge. (TRL adds no BOS for a tokenizer that does not add one itself, so we compare without it.)
# This cell runs only when TRL is installed (the test environment has it, the course environment
# need not), so nbval does not compare its output; the cell asserts its own result.

# %% tags=["nbval-ignore-output"]
try:
    import trl  # noqa: F401
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
except ImportError:
    print("TRL is not installed; skipping the comparison.")
else:
    import copy
    import tempfile

    import datasets
    import warnings

    datasets.disable_progress_bars()
    rows3 = sv.load_splits(DATASET, eval_fraction=EVAL_FRACTION)[0][:3]
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = SFTConfig(output_dir=tmp, completion_only_loss=True, report_to=[], use_cpu=True, max_steps=1)
        trainer = SFTTrainer(model=copy.deepcopy(model), args=cfg, train_dataset=Dataset.from_list(rows3), processing_class=tok)
        trl_labels = trainer.data_collator([trainer.train_dataset[0]])["labels"][0].tolist()
    ours = sv.build_example(tok, add_bos=False, **rows3[0]).labels
    for name, labels_ in (("TRL ", trl_labels), ("ours", ours)):
        trained_ids = [i for i in labels_ if i != -100]
        print(f"{name}: {len(labels_)} labels, {len(trained_ids)} trained: {tok.decode(trained_ids)!r}")
    print("identical label lists:", trl_labels == ours)
    assert trl_labels == ours

# %% [markdown]
# ## X-ray: what three pipelines really train on the same rows
#
# Everything above builds labels by construction. Real pipelines often build them another way, and the
# most common SFT bugs are masks that are silently wrong. `sv.xray` runs a pipeline for real on your
# rows and shows every token it trains beside what you mean to train (here: the completion and its
# EOS), marking each disagreement (`+` trained though it should not be, `−` not trained though it
# should be) and naming the known bug behind it. Three pipelines, the same two rows:
#
# * `sftviz`: `sv.SFTCollator`, the collator of this course;
# * `hf-lm`: transformers' `DataCollatorForLanguageModeling(mlm=False)` on the tokenized text, with the pad
#   token set to the EOS, as many scripts do for a tokenizer without one;
# * `marker`: masking by a response-marker string, `" Assistant:"` (with a space before it, as in a
#   template written `"... Assistant:"`): train what follows the marker, mask what comes before.
#
# ### Exercise 4: predict before you look
#
# For each pipeline, predict whether it trains the **prompt** and whether it trains the **EOS**, as a pair
# of `True`/`False`.

# %%
import copy

xray_rows = sv.load_splits(DATASET, eval_fraction=EVAL_FRACTION)[0][:2]
pad_is_eos = copy.deepcopy(tok)
pad_is_eos.pad_token = pad_is_eos.eos_token
print("the first row's prompt ends with", repr(xray_rows[0]["prompt"][-30:]))

# %% nbgrader={"grade": false, "grade_id": "xray-prediction", "locked": false, "schema_version": 3, "solution": true, "task": false}
xray_prediction = None  # {"sftviz": (trains the prompt?, trains the EOS?), "hf-lm": (...), "marker": (...)}
### BEGIN SOLUTION
xray_prediction = {"sftviz": (False, True), "hf-lm": (True, False), "marker": (False, False)}
### END SOLUTION

# %% [markdown]
# Now the X-ray of each pipeline, and the check of your prediction against it.

# %%
xrays = {
    "sftviz": sv.xray(xray_rows, tok, "sftviz"),
    "hf-lm": sv.xray(xray_rows, pad_is_eos, "hf-lm"),
    "marker": sv.xray(xray_rows, tok, "marker", response_part=" Assistant:"),
}
for name, report in xrays.items():
    st = report.stats()
    print(f"{name:7}: {st['trained']:3} of {st['tokens']:3} tokens trained; lints: {', '.join(sorted(report.counts())) or 'none'}")
xray_check = exercises.check_xray_prediction(xray_prediction, xrays)
xray_check

# %% nbgrader={"grade": true, "grade_id": "xray-prediction-points", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Points for nbgrader: 1 when the prediction above is right (the cell above gives the feedback).
exercises.points(xray_check)

# %% [markdown]
# The report of the language-modelling collator: the share of each kind of token trained, each lint with
# the issue it comes from and its first example, then the first row token by token (`report.view(rows=5)`
# shows more; `print(report.text())` gives the same in a terminal, and `python -m sftviz xray data.jsonl
# --pipeline hf-lm` from a shell).

# %%
xrays["hf-lm"].view(rows=1)

# %% [markdown]
# One row of it in a TokenView: each disagreement carries its badge, and hovering a token says why.

# %%
W.TokenView(xrays["hf-lm"].rows[0], editable=False)

# %% [markdown]
# ## Check your understanding

# %%
W.Quiz("sft-debugging", topics=["shift", "eos-and-padding", "tokenization"])
