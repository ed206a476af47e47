# %% [markdown]
# # 7. Packing and normalisation
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sftviz/sftviz/blob/main/notebooks/07_packing_and_normalisation.ipynb)
#
# Most SFT runs today do not pad every example to the longest of its batch. They **pack** several
# examples end to end into one row, or drop padding altogether and hand the model `position_ids`. Done
# right, every example trains exactly as it would alone. Done wrong, nothing crashes and nothing warns:
#
# * an example **attends to the example packed before it** (one causal mask over the whole row);
# * **positions** do not restart at each example;
# * the first token of an example is **trained as the next token** after the last token of the one before;
# * the loss is **averaged per row or per micro-batch** when it should be averaged over the whole
#   optimiser step (the gradient-accumulation bug that transformers fixed in October 2024).
#
# This notebook measures each of these on the bundled model: how much padding packing saves on the
# course's data, what a packed row trains, what naive packing does to each example's loss and gradient,
# a short fine-tune padded vs packed vs naively packed, and which loss reductions give the gradient of
# the whole batch. Every number is computed here. About 20 minutes to read and do the two exercises
# (self-checked, not graded); the fine-tunes take about a minute on a 2-core CPU, and sftviz ships the
# records of these very runs (see notebook 4), so on most machines they are read, not trained.

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
EVAL_ROWS = 24  # held-out rows each run is scored on (None: all of them; at least 4, which section 5 cuts in 4 pieces)
ROW_LENGTH = 256  # tokens per packed row (at least the longest example)
BATCH_SIZE = 8  # examples per micro-batch
GRAD_ACCUM = 2  # micro-batches per step (at least 2 for section 5; a step sees BATCH_SIZE x GRAD_ACCUM examples)
STEPS = 40
GA_STEPS = 20  # the gradient-accumulation comparison of section 5
SPEED_STEPS = 10  # steps timed per layout in section 4 (at least 3: the first two are left out)
SEEDS = (0, 1)  # one seed works, but cannot show the seed-to-seed spread
LR = 1e-3  # the bundled model's rate; about 2e-5 for a real model such as SmolLM2

# %%
import math
import statistics

import torch

import sftviz as sv
from sftviz import exercises, render
from sftviz import widgets as W
from sftviz.data import to_example
from sftviz.packed_loss import example_gradients, example_losses, padding_share
from sftviz.reductions import gradient_distances

model, tok = sv.load_model(MODEL_NAME)
train_rows, eval_rows = sv.load_splits(DATASET, eval_fraction=EVAL_FRACTION)
eval_rows = eval_rows[:EVAL_ROWS]
print(f"{len(train_rows)} training rows, {len(eval_rows)} held-out rows of {DATASET}")

# %% [markdown]
# ## 1. How much of a batch is padding?
#
# A padded batch holds each example in its own row, padded to the longest example of the batch. The share
# of padding depends on how much the lengths differ. Packing puts a batch's examples end to end into rows
# of `ROW_LENGTH` tokens (best fit: the longest first, each into the row it fills best), and pads only the
# rows. Below, both for every bundled dataset, in batches of 16 in a seeded random order.

# %%
shares = {}
for name in sv.datasets.BUNDLED_DATASETS:
    lengths = [len(to_example(tok, row)) for row in sv.load_dataset(name, split="train")]
    shares[name] = (padding_share(lengths, 16, ROW_LENGTH, seed=0), lengths)
print(f"{'dataset':>13}  {'tokens':>11}  {'padded':>7}  {'packed':>7}  {'rows per batch of 16':>20}")
for name, (share, lengths) in shares.items():
    span = f"{min(lengths)}-{max(lengths)}"
    print(f"{name:>13}  {span:>11}  {share['padded']:7.0%}  {share['packed']:7.0%}  {share['rows_per_batch']:20.1f}")
most = max(shares, key=lambda n: shares[n][0]["padded"])
print(
    f"\nThe most padding: {most}, {shares[most][0]['padded']:.0%} of a padded batch. Packed into rows of "
    f"{ROW_LENGTH}, the same batches are {shares[most][0]['packed']:.0%} padding: "
    + ("less." if shares[most][0]["packed"] < shares[most][0]["padded"] else "more, not less.")
)
worse = [n for n, (share, _) in shares.items() if share["packed"] > share["padded"]]
if worse:
    print(f"Packing wastes more slots than padding on: {', '.join(worse)}.")

# %% [markdown]
# Where the lengths are close, padding costs little, and packing a batch of 16 into rows of `ROW_LENGTH`
# tokens can waste more than it saves (the cell says where): its last row is short, and every row is padded
# to the longest row. Krell et al. (2021) found up to half of all tokens were padding on common corpora
# with long-tailed lengths; on such data packing pays. A padding-free batch (every example of the batch in
# one row, as TRL's `padding_free=True` does) has no padding at all, but its attention must then keep the
# examples apart.

# %% [markdown]
# ## 2. What a packed row trains
#
# `sv.pack` packs rows (prompt/completion, messages or Examples) into rows of at most `max_length`
# tokens. Each example keeps its own labels, and three things make it exact:
#
# * `position_ids` restart at 0 at every example;
# * every example's first token has the label -100: nothing before it *in its own example* predicts it;
# * with `mode="boundaries"` the attention mask is block-diagonal: a position attends only to earlier
#   positions of its own example.
#
# Here are three held-out examples, packed in their order, with the loss on **every** token
# (`masking="full"`), so that only the packing decides which tokens are targets.

# %%
batch = sv.pack(eval_rows[:3], tok, max_length=ROW_LENGTH, masking="full", strategy="in-order")
sizes = [int((batch["example_index"][0] == i).sum()) for i in range(3)]
print(
    f"one row of {batch['input_ids'].shape[1]} tokens: three examples of {sizes[0]}, {sizes[1]} and {sizes[2]} tokens"
)

# %% [markdown]
# ### Exercise 1: predict the targets of the row
#
# Before you look at the row below: at which positions of the row does each example start (counting from
# 0), and how many of the row's positions are trained targets? Use only the sizes printed above.

# %%
packed_answer = None  # a dict, e.g. {"starts": [0, 10, 20], "trained": 27}
### BEGIN SOLUTION
packed_answer = {"starts": [0, sizes[0], sizes[0] + sizes[1]], "trained": sum(sizes) - 3}
### END SOLUTION
print(exercises.check_packed_targets(packed_answer, batch))

# %% [markdown]
# The row, drawn: each example in its own colour, its `position_ids` under every token, the targets
# marked, and the attention mask as blocks (rows: the position that attends; columns: what it may read).
# First with boundaries, then the same row packed naively.

# %%
render.packed_row_html(batch, tok)

# %%
naive_batch = sv.pack(eval_rows[:3], tok, max_length=ROW_LENGTH, masking="full", strategy="in-order", mode="naive")
render.packed_row_html(naive_batch, tok)

# %% [markdown]
# ## 3. What naive packing does to each example
#
# The same four held-out examples, scored three ways with completion-only labels: each alone, packed in
# one row with boundaries, and packed naively (one causal mask over the row, positions still restarting).
# The first example of the row has nothing before it, so it scores the same in every case; every later
# one reads its neighbours under naive packing. The gradient column compares each example's gradient in
# the naive row with its gradient alone (cosine; 1 means the same direction).

# %%
four = eval_rows[:4]
alone = [example_losses(model, sv.pack([row], tok, max_length=ROW_LENGTH))[0] for row in four]
packed = {
    mode: example_losses(model, sv.pack(four, tok, max_length=ROW_LENGTH, mode=mode, strategy="in-order"))
    for mode in ("boundaries", "naive")
}
g_alone = [example_gradients(model, sv.pack([row], tok, max_length=ROW_LENGTH))[0] for row in four]
g_naive = example_gradients(model, sv.pack(four, tok, max_length=ROW_LENGTH, mode="naive", strategy="in-order"))
cosines = [
    torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0).item() for a, b in zip(g_naive, g_alone)
]
print(f"{'example':>7}  {'alone':>6}  {'boundaries':>10}  {'naive':>6}  {'naive - alone':>13}  {'gradient cosine':>15}")
for i in range(len(four)):
    d = packed["naive"][i] - alone[i]
    print(
        f"{i:>7}  {alone[i]:6.3f}  {packed['boundaries'][i]:10.3f}  {packed['naive'][i]:6.3f}  {d:+13.3f}  {cosines[i]:15.3f}"
    )
exact = max(abs(a - b) for a, b in zip(alone, packed["boundaries"]))
shift = max(abs(a - b) for a, b in zip(alone[1:], packed["naive"][1:]))
assert exact < 1e-4 and abs(alone[0] - packed["naive"][0]) < 1e-4 and shift > 10 * exact
print(
    f"\nWith boundaries every example scores as alone (largest difference below 1e-4 nats, float32 rounding). "
    f"Naive packing leaves the first example alone and moves the others by up to {shift:.2f} nats; their "
    f"gradients turn by up to {math.degrees(math.acos(min(cosines[1:]))):.0f} degrees."
)

# %% [markdown]
# A model such as GPT-2 (the bundled model's architecture) gives positions to its attention only through
# its position embeddings: restarting `position_ids` do not stop it from reading the example before.
# Whether a model treats a restart as a boundary depends on its architecture, its attention implementation
# and the library version (recent transformers can infer the boundaries from `position_ids` for some
# models when no attention mask is given), which is why sftviz passes the block-diagonal mask explicitly.
#
# ## 4. A short fine-tune: padded, packed, naively packed
#
# The same data, seeds and settings, three ways to lay out each micro-batch (`sv.finetune(...,
# packing=...)`). Every run is scored on the same held-out rows, each read alone.

# %% tags=["nbval-ignore-output"]
PACKINGS = (None, "boundaries", "naive")
# The settings every run of sections 4 and 6 shares; cache="auto": sftviz's records of these very runs,
# where they match (see notebook 4).
SHARED = {"steps": STEPS, "batch_size": BATCH_SIZE, "grad_accum": GRAD_ACCUM, "lr": LR, "max_length": ROW_LENGTH,
          "eval_data": eval_rows, "eval_every": None, "eval_examples": 0, "cache": "auto"}
runs = {
    (packing, seed): sv.finetune(model, tok, train_rows, seed=seed, packing=packing, **SHARED)
    for packing in PACKINGS
    for seed in SEEDS
}
for run in runs.values():  # the records are all this notebook reads: let the trained models go (memory)
    run.model, run.state = None, None
print(f"{sum(r.cached for r in runs.values())} of {len(runs)} runs read from sftviz's records")


# %%
def held_out_nll(run):
    return -run.evals[-1]["cond_logprob_per_token"]


def padding_of(run):
    return 1 - sum(h["n_tokens"] for h in run.history) / sum(h["n_slots"] for h in run.history)


label = {None: "padded", "boundaries": "packed", "naive": "naive"}
ends = {p: [held_out_nll(runs[p, s]) for s in SEEDS] for p in PACKINGS}
print(f"{'layout':>8}  {'held-out NLL':>12}  {'per seed':>18}  {'rows per step':>13}  {'padding':>7}")
for p in PACKINGS:
    rows_per_step = statistics.mean(h["n_rows"] for h in runs[p, SEEDS[0]].history)
    per_seed = " ".join(f"{v:.2f}" for v in ends[p])
    print(
        f"{label[p]:>8}  {statistics.mean(ends[p]):12.2f}  {per_seed:>18}  {rows_per_step:13.1f}  {padding_of(runs[p, SEEDS[0]]):7.0%}"
    )
same = max(abs(a - b) for a, b in zip(ends[None], ends["boundaries"]))
assert same < 5e-3, same
gaps = [n - p for n, p in zip(ends["naive"], ends[None])]
print("\nPacked with boundaries, every seed ends where the padded run does (within 0.005 nats).")
if len(SEEDS) == 1:
    side = "worse than" if gaps[0] > 0 else "better than" if gaps[0] < 0 else "level with"
    print(
        f"Naive packing ends {side} the padded run by {gaps[0]:+.2f} nats at seed {SEEDS[0]}; one seed cannot "
        "show the seed-to-seed spread, so this may be the batch order's doing (add seeds to SEEDS)."
    )
else:
    if all(g > 0 for g in gaps):
        verdict = "worse than the padded run at every seed"
    elif all(g < 0 for g in gaps):
        verdict = "better than the padded run at every seed"
    else:
        verdict = "on either side of the padded run, depending on the seed"
    print(
        f"Naive packing ends {verdict}: by {min(gaps):+.2f} to {max(gaps):+.2f} nats, against a seed-to-seed "
        f"spread of {max(ends[None]) - min(ends[None]):.2f} nats among the padded runs."
    )

# %% [markdown]
# How fast? Records read from sftviz's store carry the step times of the machine that made them. The cell
# below times `SPEED_STEPS` steps of each layout here, on the same batches of `BATCH_SIZE x GRAD_ACCUM`
# examples in one micro-batch (`cache=False`: trained now), and reports real (non-padding) tokens per second.

# %% tags=["nbval-ignore-output"]
speed = {}
for p in (None, "boundaries"):
    timed = sv.finetune(
        model,
        tok,
        train_rows,
        steps=SPEED_STEPS,
        batch_size=BATCH_SIZE * GRAD_ACCUM,
        lr=LR,
        seed=0,
        packing=p,
        max_length=ROW_LENGTH,
        eval_every=None,
        eval_data=None,
        cache=False,
        progress=False,
    )
    speed[p] = sum(h["n_tokens"] for h in timed.history[2:]) / sum(h["seconds"] for h in timed.history[2:])
ratio = speed["boundaries"] / speed[None]
print(
    f"padded: {speed[None]:,.0f} tokens/s; packed with boundaries: {speed['boundaries']:,.0f} tokens/s: "
    f"{ratio:.2f} times the padded rate on this machine now, so packing "
    + ("pays here." if ratio > 1.05 else "does not pay here." if ratio < 0.95 else "makes no clear difference here.")
)

# %% [markdown]
# Why packing can lose on the course's data: there is little padding to save (section 1), and the
# block-diagonal mask is a dense `(rows, 1, length, length)` tensor, so attention covers whole rows of
# `ROW_LENGTH` tokens instead of single examples (section 1 gives their lengths). `bench/bench_packing.py`
# measures the same on `support`, `explain` and `support-chat` over whole epochs, on the CPU or a GPU.
# Packing pays with many short examples beside long ones, and with attention kernels that skip the masked
# blocks (flash attention's variable-length kernels on a GPU).
#
# ## 5. Normalisation: which average gives the gradient of the whole batch?
#
# A step's examples are split: into micro-batches (gradient accumulation), across processes (several
# GPUs), and into packed rows. The loss of the step can be averaged in several ways, each common in real
# code (`sftviz.reductions.REDUCTIONS`):

# %%
from sftviz.reductions import REDUCTIONS

for name, r in REDUCTIONS.items():
    print(f"{name:>26}: {r.description}")

# %% [markdown]
# `gradient_distances` cuts the held-out rows (up to 24) into 2 processes x 2 micro-batches (round robin,
# so the pieces hold different numbers of tokens), computes each reduction's gradient, and compares it with
# the gradient of the token mean over all those rows in one batch: the cosine, and the relative L2 distance
# `|g - g_full| / |g_full|`.
#
# ### Exercise 2: which reduction matches the whole batch?
#
# Before running the next cell: which one of them gives exactly the gradient of the whole batch, whatever
# the cut, when the examples' lengths differ?

# %%
matching_reduction = None  # one name from the list above, e.g. "sequence_mean"
### BEGIN SOLUTION
matching_reduction = "step_token_mean"
### END SOLUTION

# %%
distances = gradient_distances(model, tok, eval_rows[:24], micro_batches=2, processes=2)
print(f"{len(eval_rows[:24])} held-out rows in 2 x 2 pieces\n{'reduction':>26}  {'cosine':>8}  {'relative L2':>11}")
for d in distances:
    rel = d["relative_l2"]
    print(
        f"{d['reduction']:>26}  {d['cosine']:8.4f}  {'below 1e-5' if rel < 1e-5 else f'{rel:.2g}' if rel < 10 else f'{rel:.0f}':>11}"
    )
exact = [d["reduction"] for d in distances if d["relative_l2"] < 1e-5]
by_name = {d["reduction"]: d for d in distances}
assert exact == ["step_token_mean"] and by_name["token_sum"]["cosine"] > 0.9999 < by_name["token_sum"]["relative_l2"]
print()
print(exercises.check_matching_reduction(matching_reduction, distances))

# %% [markdown]
# Only the step's token mean (`sum(w * l) / sum(w)` with the sum of weights over the whole step: what
# transformers passes as `num_items_in_batch` since October 2024) has a relative distance of zero up to
# float rounding. The sum points the same way but grows with the number of tokens, so its learning rate
# must shrink to match. Every mean of means weighs a token by the piece it happens to land in.
#
# The bug the October 2024 fix closed, reproduced on the training engine: a step's `BATCH_SIZE x GRAD_ACCUM`
# examples in one micro-batch, against `GRAD_ACCUM` micro-batches of `BATCH_SIZE` with the correct reduction
# and with the mean of the micro-batch means (`fault="accum_mean_of_means"`), from the same start and seed.

# %% tags=["nbval-ignore-output"]
ONE, SPLIT = f"one batch of {BATCH_SIZE * GRAD_ACCUM}", f"{GRAD_ACCUM} x {BATCH_SIZE}"
GA_SETTINGS = {
    ONE: {"batch_size": BATCH_SIZE * GRAD_ACCUM},
    f"{SPLIT}, token mean": {"batch_size": BATCH_SIZE, "grad_accum": GRAD_ACCUM},
    f"{SPLIT}, mean of means": {"batch_size": BATCH_SIZE, "grad_accum": GRAD_ACCUM, "fault": "accum_mean_of_means"},
}
ga = {
    name: sv.finetune(model, tok, train_rows, steps=GA_STEPS, lr=LR, seed=0, eval_every=None, cache="auto", **settings)
    for name, settings in GA_SETTINGS.items()
}
for run in ga.values():  # records only, as above
    run.model, run.state = None, None

# %%
base = [h["loss"] for h in ga[ONE].history]
print(f"{ONE}: loss at step 1 {base[0]:.3f}")
diffs = {}
for name in list(ga)[1:]:
    diffs[name] = max(abs(h["loss"] - b) for h, b in zip(ga[name].history, base))
    size = "below 1e-4" if diffs[name] < 1e-4 else "above 1e-3" if diffs[name] > 1e-3 else "between 1e-4 and 1e-3"
    print(
        f"{name}: loss at step 1 {ga[name].history[0]['loss']:.3f}, largest difference from one batch over "
        f"{GA_STEPS} steps {size}"
    )
assert diffs[f"{SPLIT}, token mean"] < 1e-4 < diffs[f"{SPLIT}, mean of means"]

# %% [markdown]
# ## 6. Three more suspects for the diagnosis lab
#
# Notebook 5's lab has three new suspects (add them to its `SUSPECTS`): `naive_packing`, `packed_row_mean`
# (a packed batch's loss averaged per row) and `loss_scaled_by_accum` (the training is right, but the
# logged loss is multiplied by the accumulation steps: transformers #34263). Here they are in the open,
# trained with the settings of section 4, beside the healthy padded run of seed 0.

# %% tags=["nbval-ignore-output"]
SUSPECTS = ("naive_packing", "packed_row_mean", "loss_scaled_by_accum")
healthy = runs[None, SEEDS[0]]
suspects = {fault: sv.finetune(model, tok, train_rows, seed=SEEDS[0], fault=fault, **SHARED) for fault in SUSPECTS}
for run in suspects.values():  # records only, as above
    run.model, run.state = None, None

# %% [markdown]
# What gives each away, measured from the records against the healthy run (`exercises.clues`): the
# batches (rows per step: fewer than examples means packed), the objective against the completion NLL
# measured on the same batches, and the NLLs over the last steps (up to 10).

# %% tags=["nbval-ignore-output"]
# (the NLLs move in their second decimal with another CPU's rounding; the hallmarks below are checked)
for fault, run in suspects.items():
    print(f"{fault}:")
    for line in exercises.clues(run, healthy, tok, train_rows[0])[1:]:  # the first line: labels, all right here
        print(f"    {line}")

# %% [markdown]
# * **Naive packing**: packed batches, the objective *is* the completion NLL of its batches, and yet that
#   NLL ends above twice the healthy run's (the hallmark checked below): every example after the first in a
#   row is read with a foreign example in front of it, at positions that restart as if nothing were there.
# * **A per-row mean in packed rows**: packed batches, right labels, and an objective that is not the
#   completion NLL of the batch, only the averaging can be wrong.
# * **The logged loss scaled by the accumulation steps**: unpacked, and the objective is exactly
#   `GRAD_ACCUM` times the completion NLL at every step; everything else is the healthy run's.
#
# `exercises.confirm_hallmarks` checks each with thresholds and names any run whose hallmark does not show
# (short runs, or a large model, may not get that far).

# %%
for line in exercises.confirm_hallmarks(healthy, suspects, tok, train_rows[0], strict=False):
    print(line)

# %% [markdown]
# ## What to take away
#
# * Packing is exact only with all three: restarting positions, no target across a boundary, and
#   attention kept inside each example. Check a pipeline's packed batch, not its documentation: the
#   X-ray of notebook 2 shows the labels, the view above shows the attention.
# * Whether packing saves time depends on the data: measure the padding first (section 1).
# * Average the loss over the whole optimiser step; any other mean weighs a token by where it landed.

# %%
W.Quiz("sft-debugging", topics=["reductions"])
