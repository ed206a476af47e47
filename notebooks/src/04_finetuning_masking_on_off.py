# %% [markdown]
# # 4. Fine-tuning with masking on and off
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sftviz/sftviz/blob/main/notebooks/04_finetuning_masking_on_off.ipynb)
#
# The central experiment of the course. One pretrained model, one dataset, one seed, and three ways to
# weigh the loss over `[x, y]`:
#
# * **completion-only** (`masking="completion"`): the loss on the answer and its EOS only, which maximises
#   `log Pr(y | x)`;
# * **full** (`masking="full"`): the loss on every token, which maximises the joint `log Pr([x, y])` and
#   so spends part of the training on modelling the prompts;
# * **a prompt-loss weight** (`masking=0.1`): the prompt tokens count, but ten times less.
#
# Each run starts from the same weights and sees the same batches in the same order. Every step records
# the objective it optimised *and* the prompt NLL and completion NLL, measured the same way whatever the
# masking, so the curves are comparable. About 30 minutes.

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
DATASET = "support"
STEPS = 150  # per run; 300 gets the tiny model further, at twice the time
BATCH_SIZE = 16
LR = 1e-3
PROMPT_LOSS_WEIGHT = 0.1
SEED = 0

# %%
import sftviz as sv
from sftviz import exercises, plots

model, tok = sv.load_model(MODEL_NAME)
train_rows = sv.load_dataset(DATASET, split="train")
eval_rows = sv.load_dataset(DATASET, split="eval")
print(f"{len(train_rows)} training rows, {len(eval_rows)} eval rows (about products never seen in fine-tuning)")
print(f"device: {sv.resolve_device('auto')}")

# %% [markdown]
# ## Three runs from the same start
#
# `sv.compare_masking` copies the model for each run (the `model` above stays the pretrained one), uses
# the same seed for the batch order, and evaluates every 50 steps on the eval split: the mean
# `log Pr(y | x)` and `log Pr(x)` per token, and greedy exact match on a few questions.
#
# The exact numbers below depend on the machine (floating-point order differs between CPUs and GPUs);
# the claims the notebook makes about them are checked in code, so they hold wherever it runs.

# %% tags=["nbval-ignore-output"]
runs = sv.compare_masking(
    model, tok, train_rows, maskings=("completion", "full", PROMPT_LOSS_WEIGHT), steps=STEPS, seed=SEED,
    batch_size=BATCH_SIZE, lr=LR, eval_data=eval_rows, eval_every=50, eval_examples=len(eval_rows), progress=False, grad_share_every=50,
)
for masking, run in runs.items():
    print(f"{str(masking):>10}: {run.timing['train']:.1f} s, status {run.status}")

# %%
plots.plot_runs(list(runs.values()))

# %% [markdown]
# ## What the curves show
#
# Read the panels left to right. The **objective** is what each run minimised, so the three are not on
# the same scale: the full loss averages over many easy prompt tokens. The two middle panels put the runs
# on one scale:
#
# * **prompt NLL** falls under the full loss, which trains on the prompts. Under completion-only loss
#   nothing asks the model to predict a prompt token, and the prompt NLL does not fall: it drifts *up*,
#   as the model stops being a good model of the prompts it reads. The weighted run's prompt targets
#   count ten times less, yet that is enough to pull its prompt NLL down too.
# * **completion NLL** falls under all three: every run trains on the answers.
#
# The cell below measures each of these statements on the runs above and stops with an error if one of
# them does not hold.

# %% tags=["nbval-ignore-output"]
def start_end(run, key):
    """The value on the first batch (the pretrained model) and the mean over the last 10 steps."""
    values = [r[key] for r in run.history]
    return values[0], sum(values[-10:]) / len(values[-10:])


full, completion, weighted = runs["full"], runs["completion"], runs[PROMPT_LOSS_WEIGHT]
print(f"{'run':>10} {'prompt NLL':>20} {'completion NLL':>20} {'eval exact match':>18}")
for name, run in runs.items():
    (p0, p1), (c0, c1) = start_end(run, "prompt_nll"), start_end(run, "completion_nll")
    e0, e1 = run.evals[0]["exact_match"], run.evals[-1]["exact_match"]
    print(f"{str(name):>10} {p0:8.3f} -> {p1:7.3f}   {c0:8.3f} -> {c1:7.3f}   {e0:8.0%} -> {e1:5.0%}")

p_full, p_comp, p_weighted = (start_end(r, "prompt_nll") for r in (full, completion, weighted))
assert p_full[1] < p_full[0] / 2, "the full loss should lower the prompt NLL"
assert p_comp[1] > p_comp[0], "completion-only training should not lower the prompt NLL"
assert p_weighted[1] < p_weighted[0] / 2 and p_weighted[1] < p_comp[1], "a prompt-loss weight of 0.1 should lower it too"
for run in runs.values():
    c_start, c_end = start_end(run, "completion_nll")
    assert c_end < c_start - 0.5, "every run should lower the completion NLL"
    assert run.evals[-1]["exact_match"] > run.evals[0]["exact_match"], "every run should answer better than the base model"
print("All the statements above hold for these runs.")

# %% [markdown]
# ### Exercise: read a curve from the record
#
# `run.series(key)` returns the steps and the values of one field of a run's history. By how many nats
# did the completion-only run's prompt NLL change from its first step to its last? Store it in `change`
# (positive if it rose).

# %% nbgrader={"grade": false, "grade_id": "prompt-nll-change", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["nbval-ignore-output"]
change = None  # a number, in nats
### BEGIN SOLUTION
steps_, values_ = completion.series("prompt_nll")
change = values_[-1] - values_[0]
### END SOLUTION
check = exercises.check_number(change, completion.history[-1]["prompt_nll"] - completion.history[0]["prompt_nll"],
                               "the change in prompt NLL", hint="Take the last value minus the first.")
check

# %% nbgrader={"grade": true, "grade_id": "prompt-nll-change-points", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Points for nbgrader: 1 when the answer above is correct (the cell above gives the feedback).
exercises.points(check)

# %% [markdown]
# ## Before and after: what the model answers
#
# The first evaluation (step 0) is the pretrained model. It knows the products' facts from its
# pretraining prose, but it has never seen the support format, so it does not answer. The last
# evaluation is after fine-tuning on questions about *other* products: the format was learned in
# fine-tuning, the facts come from pretraining.

# %% tags=["nbval-ignore-output"]
before, after = completion.evals[0], completion.evals[-1]
print(f"exact match on the eval split: {before['exact_match']:.0%} before, {after['exact_match']:.0%} after "
      f"(completion-only, {STEPS} steps)\n")
for b, a in list(zip(before["samples"], after["samples"]))[:5]:
    question = b["prompt"].split("Customer:")[-1].split("\n")[0].strip()
    print(f"Q: {question}\n   reference {b['reference']!r}\n   before    {b['generated']!r}\n   after     {a['generated']!r}")

# %% [markdown]
# ## Try it yourself: the MaskingLab
#
# Run the experiment interactively: choose the masking (or a prompt-loss weight), the number of steps,
# the learning rate and the seed; press **Run** and watch the curves grow; press **Stop** at any time
# (the curves are kept). Runs are overlaid, so you can compare. Training runs in the background, so the
# notebook stays responsive; on a GPU it takes seconds.
#
# Things to try: a learning rate of 0.01 (watch for the NaN guard); completion-only vs full at 300
# steps; a prompt-loss weight of 0.01 vs 0.5.

# %%
from sftviz import widgets as W

W.MaskingLab(model, tok, train_rows, eval_rows[:24], steps=STEPS, lr=LR, seed=SEED)

# %% [markdown]
# ## What research says about the prompt-loss weight
#
# Masking the prompt is the default in TRL, axolotl and most SFT recipes, but it is a choice, and the
# evidence is mixed:
#
# * Huerta-Enochian and Ko (2024), *Instruction Fine-Tuning: Does Prompt Loss Matter?* (arXiv:2401.13586),
#   varied the prompt-loss weight on LLaMA models. On data with **short completions** (like ours) the weight
#   mattered, with small non-zero values (around 0.01 to 0.1) best for multiple-choice and short answers;
#   on data with long completions it hardly mattered.
# * Shi et al. (2024), *Instruction Tuning With Loss Over Instructions* (NeurIPS 2024, arXiv:2405.14394),
#   found that also training on the instructions helps most when instructions are long relative to
#   outputs and when there are few training examples, and traced the gain to less overfitting.
# * Dettmers et al. (2023), *QLoRA* (arXiv:2305.14314), trained on the answers only and found that
#   helped on their chatbot benchmark.
#
# The common thread is the one the curves above show: the full loss spends effort on modelling the
# prompts, which acts as a regulariser when data is small and answers are short, and as a distraction
# when it is not.

# %% [markdown]
# ## Check your understanding

# %%
W.Quiz("sft-foundations", ids=["why-mask-the-prompt", "unmasked-is-joint", "specialising-a-pretrained-model"])
