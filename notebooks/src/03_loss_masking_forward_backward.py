# %% [markdown]
# # 3. Loss masking in the forward and the backward pass
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sftviz/sftviz/blob/main/notebooks/03_loss_masking_forward_backward.ipynb)
#
# "Mask the prompt" is easy to say and easy to misread. It does **not** hide the prompt from the model:
# the forward pass runs over every token of `[x, y]`, and the prompt is read as context exactly as
# before. Masking only decides which positions' losses are added up. This notebook shows both halves:
#
# * **forward:** one pass, one loss per token; the full loss is the prompt part plus the completion
#   part, and the masked loss keeps only the completion part;
# * **backward:** prompt tokens still receive gradient through attention, because the completion's
#   loss depends on them; the last token (the EOS) receives none: it is an input, but the only output
#   that sees it is the prediction at its own position, and that prediction is never scored.
#
# It ends with a practical consequence: the output layer only needs to run where a trained target is
# predicted (the *supervised-only head*). About 25 minutes.

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
BATCH_SIZE = 16

# %%
import torch

import sftviz as sv
from sftviz import exercises
from sftviz import plots

model, tok = sv.load_model(MODEL_NAME)
rows = sv.load_splits(DATASET, eval_fraction=EVAL_FRACTION)[0]
ex = sv.build_example(tok, **rows[0])
print(ex)

# %% [markdown]
# ## Forward: one pass, a loss at every position
#
# The model returns logits at every position. `sv.token_nll` turns them into the negative
# log-likelihood of each actual next token: the loss each position *would* contribute if it were
# trained. Masking has not been applied yet; it is a choice made after the forward pass.

# %%
ids = torch.tensor([ex.input_ids])
with torch.no_grad():  # the model may be on a GPU (device="auto"); the sums below run on the CPU
    logits = model(input_ids=ids.to(model.device)).logits.cpu()
per_token = sv.token_nll(logits, ids)[0]
rep0 = sv.score(model, tok, example=ex, top_k=0)
plots.plot_logprobs(rep0)

# %% [markdown]
# ## The full loss is the prompt part plus the completion part
#
# Add the per-token losses over the prompt targets and over the completion targets. Their sum is the
# full-sequence loss. The masked loss keeps only the completion part, as a mean over its tokens, and
# Hugging Face's own loss with our labels is the same number.

# %%
prompt_t = torch.tensor(ex.prompt_mask, dtype=torch.bool)
completion_t = torch.tensor(ex.completion_mask, dtype=torch.bool)
prompt_sum, completion_sum = float(per_token[prompt_t].sum()), float(per_token[completion_t].sum())
full_sum = float(per_token[1:].sum())
print(f"prompt part     {prompt_sum:7.1f} nats over {int(prompt_t.sum())} targets")
print(f"completion part {completion_sum:7.1f} nats over {int(completion_t.sum())} targets")
print(f"full sequence   {full_sum:7.1f} nats = prompt + completion: {abs(full_sum - prompt_sum - completion_sum) < 1e-4}")

labels = torch.tensor([ex.labels])
with torch.no_grad():
    hf_loss = float(model(input_ids=ids.to(model.device), labels=labels.to(model.device)).loss)
print(f"masked loss: sv.sft_loss = {float(sv.sft_loss(logits, labels)):.4f}, HF model(labels=...) = {hf_loss:.4f}")

# %% [markdown]
# ### Exercise 1: write the masked loss yourself
#
# Write a function `my_masked_loss(logits, labels)` that computes the completion-only loss from
# `logits` (batch × positions × vocabulary) and `labels` (batch × positions, the token ids where trained
# and -100 elsewhere, **not shifted**): shift, cross-entropy, mean over the trained targets. You may use
# `torch.nn.functional.cross_entropy` or `log_softmax`; not `sv.sft_loss`. The check runs your function on
# this example and on a random batch of two sequences, and names the usual slips (no shift, a shift the
# wrong way, a sum, masked positions averaged in, raw logits).

# %% nbgrader={"grade": false, "grade_id": "masked-loss", "locked": false, "schema_version": 3, "solution": true, "task": false}
my_masked_loss = None  # a function of (logits, labels) that returns the masked loss
### BEGIN SOLUTION
def my_masked_loss(logits, labels):
    targets = labels[:, 1:].reshape(-1)  # the label of position t + 1 is scored by the logits at t
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(len(targets), -1), targets, ignore_index=-100)
### END SOLUTION
check = exercises.check_masked_loss(my_masked_loss, logits, labels)
check

# %% nbgrader={"grade": true, "grade_id": "masked-loss-points", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Points for nbgrader: 1 when the function above is correct (the cell above gives the feedback).
exercises.points(check)

# %% [markdown]
# The masked loss summed over the completion is exactly `-log Pr(y | x)` from notebook 1: minimising it
# maximises the conditional probability of the answer given the prompt.

# %%
rep = sv.score(model, tok, example=ex, top_k=0)
print(f"completion loss sum {completion_sum:.2f}  vs  -log Pr(y|x) {-rep.conditional:.2f}")
assert abs(completion_sum + rep.conditional) < 1e-3

# %% [markdown]
# ## The SFT objective, written out
#
# Supervised fine-tuning takes a model whose weights `θ` were already pretrained, and a curated set `D`
# of prompt/answer pairs, and looks for
#
# $$\hat\theta = \arg\max_\theta \sum_{(x, y) \in D} \log \Pr\nolimits_\theta(y \mid x),
# \qquad \text{starting the search from the pretrained } \theta .$$
#
# Three parts of that sentence matter. The sum runs over the curated pairs, not over the pretraining
# text. Only `log Pr(y | x)` is in it: the prompt is given, not predicted. And the search starts from the
# pretrained weights, not from random ones: everything the model knows comes from there (notebook 4 runs
# the same fine-tune from random weights to show what is lost).
#
# The loss that `sv.sft_loss` computes is this objective made practical. `log Pr(y | x)` is a sum over
# the answer's tokens (the chain rule), so `-Σ log Pr(y | x)` over a batch is a sum of per-token losses
# over every trained target. `sft_loss` divides that sum by the number of trained targets in the batch:
# a *token mean*, which has the same maximiser and a scale that does not grow with the batch. Dividing
# each sequence by its own length first (a *per-sequence mean*) would change the objective: a token of a
# short answer would then count more than a token of a long one. That bug is `per_sequence_mean` in
# `sftviz.faults.FAULTS`; notebook 5 injects a relative of it, `accum_mean_of_means`, which averages the
# averages of the micro-batches of one step.

# %% [markdown]
# ### Exercise 2: what does the full loss maximise?
#
# The completion part summed is `-log Pr(y | x)`. Predict which of notebook 1's three quantities the
# *full* loss summed over every target (`full_sum` above) is the negative of: `"joint"`, `"marginal"` or
# `"conditional"`. The check computes it.

# %% nbgrader={"grade": false, "grade_id": "full-is-joint", "locked": false, "schema_version": 3, "solution": true, "task": false}
full_sum_is = None  # "joint", "marginal" or "conditional"
### BEGIN SOLUTION
full_sum_is = "joint"
### END SOLUTION
sums = {"joint": rep.joint, "marginal": rep.marginal, "conditional": rep.conditional}
matches = [name for name, value in sums.items() if abs(full_sum + value) < 1e-3]
assert matches == ["joint"], matches
full_check = exercises.check_choice(
    full_sum_is, matches[0],
    f"the full loss summed is {full_sum:.1f} = -log Pr([x, y]) (joint {rep.joint:.1f}, marginal {rep.marginal:.1f}, "
    f"conditional {rep.conditional:.1f}): training on every token maximises the joint, i.e. the prompt and the "
    "answer together.",
    hint="sum the full loss's terms by segment: which of notebook 1's sums do the prompt terms and the completion "
    "terms add up to together?",
)
full_check

# %% nbgrader={"grade": true, "grade_id": "full-is-joint-points", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Points for nbgrader: 1 when the prediction above is right (the cell above gives the feedback).
exercises.points(full_check)

# %% [markdown]
# ## Between the two: a prompt-loss weight
#
# A weight `w` on the prompt targets (and 1 on the completion's) interpolates the two objectives:
# `loss = sum(w_i l_i) / sum(w_i)`. `w = 0` is the masked loss, `w = 1` the full loss.

# %%
for w in (0.0, 0.01, 0.1, 0.5, 1.0):
    b = sv.SFTCollator(tok, prompt_loss_weight=w, return_extras=True)([ex])
    print(f"w = {w:<5} loss = {float(sv.sft_loss(logits, b['labels'], b['loss_weights'])):.4f}")

# %% [markdown]
# ## Backward: the prompt still gets gradient
#
# Masked or not, the completion's loss is computed from hidden states that attended to every prompt
# token, so its gradient flows back into the prompt tokens' embeddings. `GradientView` measures, for
# each position, the size of the gradient of the loss with respect to that position's input embedding,
# under the masked and the full loss, and each target's own contribution to the parameter gradient.

# %% [markdown]
# ### Exercise 3: predict before you measure
#
# Under the masked loss, do the prompt tokens' input embeddings receive any gradient? Write `True` or
# `False` in `prompt_gets_gradient` before running the measurement below; the check comes after it.

# %% nbgrader={"grade": false, "grade_id": "prompt-gradient", "locked": false, "schema_version": 3, "solution": true, "task": false}
prompt_gets_gradient = None  # True or False
### BEGIN SOLUTION
prompt_gets_gradient = True
### END SOLUTION

# %%
from sftviz import widgets as W
from sftviz.gradients import token_gradients

grads = token_gradients(model, tok, ex)
prompt_positions = [i for i, s in enumerate(ex.segments) if s == "prompt"]
share = sum(grads.input_grad_masked[i] > 0 for i in prompt_positions) / len(prompt_positions)
print(f"prompt positions with non-zero embedding gradient under the masked loss: {share:.0%}")
print(f"gradient at the last token (EOS), masked / full: {grads.input_grad_masked[-1]} / {grads.input_grad_full[-1]}")
print(f"cosine similarity of the masked and full parameter gradients: {grads.cosine:.2f}")
assert share == 1.0 and grads.input_grad_masked[-1] == 0.0
gradient_check = exercises.check_choice(
    prompt_gets_gradient, share > 0,
    f"{share:.0%} of the prompt positions get gradient under the masked loss. Masking removes the prompt's own "
    "loss terms (forward), not the prompt's influence: the completion's loss depends on the prompt through "
    "attention, so gradient flows back into it (backward).",
    hint="masking removes loss terms. Does the completion's loss depend on the prompt tokens' embeddings?",
)
gradient_check

# %% nbgrader={"grade": true, "grade_id": "prompt-gradient-points", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Points for nbgrader: 1 when the prediction above is right (the cell above gives the feedback).
exercises.points(gradient_check)

# %%
W.GradientView(model, tok, ex)

# %%
n_masked = sum(label != -100 for label in ex.labels[1:])
n_full = sum(label != -100 for label in ex.with_masking("full").labels[1:])
print(f"the masked loss divides by {n_masked} targets, the full loss by {n_full}: each completion target, and its "
      f"gradient, weighs {n_full / n_masked:.1f} times as much in the masked mean. The full loss adds the prompt "
      "targets' own gradients, so the two totals differ by less than that.")
assert n_full > n_masked

# %% [markdown]
# The full loss adds gradient from the prompt's own targets, and with prompts much longer than answers
# that part can dominate: the cosine above says how far apart the two update directions are for this
# one example.
#
# Two words for two quantities. The prompt tokens as *inputs* get gradient under either loss (the
# measurement above). The prompt tokens as *targets* contribute nothing under the masked loss: their
# loss terms are gone, so the share of the parameter gradient that comes from prompt targets is exactly
# zero there (notebook 4 measures that share).
#
# Why are the masked loss's gradients larger in the view, although it has fewer terms? Both losses are
# token means, and the masked one divides by fewer targets:
#
# ## The supervised-only head
#
# The output layer turns each position's hidden state into a score for every word of the vocabulary:
# for large vocabularies it is the biggest single computation of the step. Under the masked loss only
# the positions that predict a completion token need it. `sv.supervised_head_loss` runs the transformer
# over all tokens but the output layer only where it is needed: same loss, same gradients.

# %%
import time

batch = sv.SFTCollator(tok)(rows[:BATCH_SIZE])
args = tuple(batch[k].to(model.device) for k in ("input_ids", "labels", "attention_mask"))  # where the model is


def step(fn):
    model.zero_grad()
    start = time.perf_counter()
    loss = fn()
    loss.backward()
    value = float(loss.detach())  # on a GPU, this waits for the backward to finish
    return value, time.perf_counter() - start, [p.grad.clone() for p in model.parameters()]


full_fn = lambda: sv.sft_loss(model(input_ids=args[0], attention_mask=args[2]).logits, args[1])  # noqa: E731
head_fn = lambda: sv.supervised_head_loss(model, *args)  # noqa: E731
step(full_fn), step(head_fn)  # warm up
(l_full, t_full, g_full), (l_head, t_head, g_head) = step(full_fn), step(head_fn)
same = all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g_full, g_head))
trained_share = float((batch["labels"][:, 1:] != -100).sum() / batch["attention_mask"][:, 1:].sum())
print(f"loss full logits {l_full:.4f} | supervised-only head {l_head:.4f} | same gradients: {same}")
print(f"only {trained_share:.0%} of the positions predict a trained token; step time {t_full * 1e3:.1f} ms vs {t_head * 1e3:.1f} ms")
assert abs(l_full - l_head) < 1e-5 and same

# What the head can save: the output layer's share of the weight matrices' multiply-adds at one position
# (one per weight; embeddings are lookups, not products, and the attention scores are left out).
head = model.get_output_embeddings().weight
lookups = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
body = sum(p.numel() for p in model.parameters() if p.dim() == 2 and id(p) not in lookups and p is not head)
share = head.numel() / (body + head.numel())
print(f"the output layer ({head.shape[0]:,} words x {head.shape[1]} dimensions) is {share:.0%} of the weight "
      f"multiply-adds at a position; run at {trained_share:.0%} of the positions, it saves at most "
      f"{share * (1 - trained_share):.0%} of the forward pass (its gradient too, in the backward)")

# %% [markdown]
# How much the supervised-only head saves depends on the share printed above, and so on the size of the
# vocabulary next to the rest of the model. Single timings on a shared CPU are noisy;
# `bench/bench_head.py` measures the difference properly, on a GPT-2-small-sized model.
#
# ## Check your understanding

# %%
W.Quiz("sft-foundations", ids=["what-masking-changes", "masked-sum-is-conditional", "prompt-loss-weight"])
