# %% [markdown]
# # 4. Fine-tuning with masking on and off
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sftviz/sftviz/blob/main/notebooks/04_finetuning_masking_on_off.ipynb)
#
# The central experiment of the course. One pretrained model and three ways to weigh the loss over
# `[x, y]`:
#
# * **completion-only** (`masking="completion"`): the loss on the answer and its EOS only, which maximises
#   `log Pr(y | x)`;
# * **full** (`masking="full"`): the loss on every token, which maximises the joint `log Pr([x, y])` and
#   so spends part of the training on modelling the prompts;
# * **a prompt-loss weight** (`masking=0.1`): each prompt token counts a tenth of a completion token.
#   Whether that makes the prompt "ten times less important" depends on how many prompt tokens there
#   are: this notebook measures it.
#
# One run says little: another seed (another batch order) moves the held-out scores by several points.
# So every masking runs under three seeds, on two datasets of opposite shape, and the notebook reports
# each result as mean ± spread and names a winner only when the spread allows it. Every run starts from
# the same weights; runs with the same seed see the same batches in the same order.
#
# About 25 minutes to read and do the exercises; the 18 fine-tunes take about 35 s on an idle 2-core CPU
# (the cell prints how long they took on yours).

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
DATASETS = ("support", "explain")
MASKINGS = ("completion", "full", 0.1)
SEEDS = (0, 1, 2)
STEPS = 50  # per run: the curves below show why 50 is enough for this model and data
BATCH_SIZE = 8
LR = 1e-3

# %%
import time

import sftviz as sv
from sftviz import exercises, plots

model, tok = sv.load_model(MODEL_NAME)
data = {name: (sv.load_dataset(name, split="train"), sv.load_dataset(name, split="eval")) for name in DATASETS}


def n_tokens(text):
    return len(tok(text, add_special_tokens=False)["input_ids"])


shape = {}
for name, (train_rows, eval_rows) in data.items():
    p = sum(n_tokens(r["prompt"]) for r in train_rows) / len(train_rows)
    c = sum(n_tokens(r["completion"]) for r in train_rows) / len(train_rows)
    shape[name] = (p, c)
    print(f"{name:>8}: {len(train_rows)} training rows, {len(eval_rows)} held-out rows (products never seen "
          f"in fine-tuning); prompts {p:.1f} tokens, completions {c:.1f} tokens on average")
print(f"device: {sv.resolve_device('auto')}")
print("\nOne row of each:")
for name, (train_rows, _) in data.items():
    print(f"{name:>8}: {train_rows[0]['prompt'][-60:]!r} -> {train_rows[0]['completion']!r}")

# %% [markdown]
# The two datasets hold the same facts about the same products, in opposite shapes. In `support` a long
# instruction and a question lead to an answer of a few tokens. In `explain` a short request leads to a
# four-sentence description.
#
# ## Predict first
#
# Before running anything, write down which masking you expect to give the best held-out answers
# (greedy exact match) on each dataset: `"completion"`, `"full"` or `0.1`. Think about what the full
# loss spends its effort on when prompts are many times longer than answers, and when answers are
# longer than prompts. The check comes after the runs.

# %% nbgrader={"grade": false, "grade_id": "predict-winner", "locked": false, "schema_version": 3, "solution": true, "task": false}
prediction = {name: None for name in DATASETS}  # e.g. {"support": "full", "explain": 0.1}
### BEGIN SOLUTION
prediction = {"support": "full", "explain": "completion"}
### END SOLUTION

# %% [markdown]
# ## Eighteen runs
#
# `sv.masking_experiment` fine-tunes a copy of the model under every masking and seed (the `model` above
# stays the pretrained one), evaluates on the held-out split before and after training (held-out
# `log Pr(y | x)` and `log Pr(x)` per token, and greedy exact match on every held-out question), and
# measures on some steps which share of the gradient comes from prompt tokens.
#
# "At the end of a run" means one thing in this notebook: the evaluation after the last step.

# %% tags=["nbval-ignore-output"]
experiments = {}
for name, (train_rows, eval_rows) in data.items():
    start = time.perf_counter()
    experiments[name] = sv.masking_experiment(
        model, tok, train_rows, eval_rows, MASKINGS, SEEDS, dataset=name, steps=STEPS, batch_size=BATCH_SIZE,
        lr=LR, eval_every=STEPS, eval_examples=len(eval_rows), progress=True,  # a bar with the time left
    )
    print(f"{name}: {len(experiments[name].runs)} runs in {time.perf_counter() - start:.0f} s")

# %% [markdown]
# ## What the curves show
#
# First one seed of `support`, all three maskings. The **objective** is what each run minimised, so the
# three are not on one scale. The **prompt NLL** and **completion NLL** panels (lower is better) are
# measured the same way under every masking, on the training batches before each step. The eval panels
# (higher is better) have two points per run: before training and at the end.

# %%
support = experiments["support"]
plots.plot_runs([support.runs[(m, SEEDS[0])] for m in MASKINGS])

# %% [markdown]
# The cell below turns what the panels show into numbers, for every run of both datasets, and stops with
# an error if a statement does not hold on every seed. The prompt part is measured on held-out prompts:
# `log Pr(x)` per token, before and after.

# %% tags=["nbval-ignore-output"]
for name, exp in experiments.items():
    print(f"{name}: held-out log Pr(x) per prompt token, before -> after, mean over {len(SEEDS)} seeds")
    for m in MASKINGS:
        before = [exp.runs[(m, s)].evals[0]["marg_logprob_per_token"] for s in SEEDS]
        after = [exp.runs[(m, s)].evals[-1]["marg_logprob_per_token"] for s in SEEDS]
        print(f"   {sv.train.experiment.masking_words(m):>24}: {sum(before) / len(before):6.2f} -> {sum(after) / len(after):6.2f}")

# %%
for name, exp in experiments.items():
    for s in SEEDS:
        def logprobs(m, key):
            run = exp.runs[(m, s)]
            return run.evals[0][key], run.evals[-1][key]

        p0, p1 = logprobs("completion", "marg_logprob_per_token")
        assert p1 < p0 + 1, f"{name}, seed {s}: completion-only training should not teach the prompts"
        if name == "support":
            assert p1 < p0, f"seed {s}: on support, completion-only training should leave log Pr(x) worse"
        for m in ("full", 0.1):
            q0, q1 = logprobs(m, "marg_logprob_per_token")
            assert q1 > q0 + 3, f"{name}, seed {s}: {m} trains on prompt tokens and should model them far better"
        for m in MASKINGS:
            c0, c1 = logprobs(m, "cond_logprob_per_token")
            assert c1 > c0 + 1, f"{name}, seed {s}: every masking trains on the answers"
        run = exp.runs[("completion", s)]
        nll = [r["completion_nll"] for r in run.history]
        fall, last = nll[0] - sum(nll[-10:]) / 10, sum(nll[-20:-10]) / 10 - sum(nll[-10:]) / 10
        assert last < 0.1 * fall, f"{name}, seed {s}: the completion NLL is still falling fast at step {STEPS}"
print(f"Every statement holds on all {len(SEEDS)} seeds of both datasets: completion-only training does not teach "
      "the prompts (held-out log Pr(x) moves by less than a nat, and on support it gets worse); full and weighted "
      "training model them far better (more than 3 nats per token); every masking improves "
      f"log Pr(y | x); and the completion NLL fell by less than a tenth as much over steps {STEPS - 19}-{STEPS - 10} "
      f"to {STEPS - 9}-{STEPS} as over the whole run, so more steps would change little.")

# %% [markdown]
# ## Which masking gave the better model?
#
# Every masking's held-out scores at the end of every run: a cross per seed, and the mean ± standard
# deviation over seeds. Both metrics are "higher is better".

# %%
plots.plot_experiments(list(experiments.values()))

# %% tags=["nbval-ignore-output"]
for name, exp in experiments.items():
    print(f"--- {name}\n{exp.table()}\n")
    for metric in ("exact_match", "cond_logprob_per_token"):
        print(exp.verdict(metric))
    print()

# %% [markdown]
# The sentences above are written by `Experiment.verdict` from these runs: it names a winner only when
# the winner is better on every seed *and* the mean ± sd intervals do not overlap. Now check your
# prediction.

# %% tags=["nbval-ignore-output"]
prediction_checks = [exercises.check_prediction(prediction.get(name), experiments[name]) for name in DATASETS]
for name, check in zip(DATASETS, prediction_checks):
    print(f"{name}: {check}")

# %% nbgrader={"grade": true, "grade_id": "predict-winner-points", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false} tags=["nbval-ignore-output"]
# Points for nbgrader: 1 per dataset where the prediction agrees with the runs (the cell above says why).
exercises.points(prediction_checks)

# %% [markdown]
# ### The data decides
#
# The difference between the full loss and completion-only loss, in held-out log Pr(y|x) per token, on
# each dataset (positive: the full loss did better):

# %% tags=["nbval-ignore-output"]
def mean_gap(exp, metric="cond_logprob_per_token"):
    final = exp.final(metric)
    return sum(final["full"]) / len(final["full"]) - sum(final["completion"]) / len(final["completion"])


gaps = {name: mean_gap(exp) for name, exp in experiments.items()}
for name, gap in gaps.items():
    exp = experiments[name]
    print(f"{name:>8}: full - completion-only = {gap:+.3f} nats per answer token; full ends better on "
          f"{exp.wins('full', 'completion', 'cond_logprob_per_token')} of {len(SEEDS)} seeds")

# %%
assert gaps["support"] > gaps["explain"], "the full loss should help more when prompts are long and answers short"
print("The full loss does better, relative to completion-only, on the dataset with long prompts and short answers "
      "(support) than on the one with short prompts and long answers (explain).")

# %% [markdown]
# ## How much of the loss is the prompt?
#
# A prompt-loss weight `w` multiplies each prompt token's loss. The prompt's share of the loss is then
# `w·n_prompt / (w·n_prompt + n_completion)`, where `n_prompt` and `n_completion` are the numbers of
# prompt and completion *targets* (every prompt token after the BOS; every completion token and the EOS).
#
# ### Exercise: predict the share
#
# Using the average lengths printed at the top (add one EOS target to the completion), compute the share
# of the loss that prompt tokens carry under `w = 0.1` on `support`. Store it in `share` (a number
# between 0 and 1). The check compares it with the share measured on the training batches of these
# runs.

# %% nbgrader={"grade": false, "grade_id": "prompt-share", "locked": false, "schema_version": 3, "solution": true, "task": false}
share = None  # a number between 0 and 1
### BEGIN SOLUTION
p, c = shape["support"]
share = 0.1 * p / (0.1 * p + (c + 1))
### END SOLUTION

# %% tags=["nbval-ignore-output"]
share_check = exercises.check_number(
    share, support.prompt_loss_share(0.1), "the prompt's share of the loss under w = 0.1", tol=0.03,
    hint="w·n_prompt / (w·n_prompt + n_completion), with n_completion = completion tokens + 1 (the EOS).",
)
share_check

# %% nbgrader={"grade": true, "grade_id": "prompt-share-points", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false} tags=["nbval-ignore-output"]
# Points for nbgrader: 1 when the share above is right (the cell above gives the feedback).
exercises.points(share_check)

# %% [markdown]
# The runs also measured the share of the *gradient* that comes from prompt targets,
# `<g_prompt, g> / |g|²` (the `prompt_grad_share` of the steps that measured it):

# %% tags=["nbval-ignore-output"]
for name, exp in experiments.items():
    for m in MASKINGS:
        print(f"{name:>8}, {sv.train.experiment.masking_words(m):>24}: prompt share of the loss "
              f"{exp.prompt_loss_share(m):4.0%}, of the gradient {exp.prompt_grad_share(m):4.0%}")

# %%
w_share = support.prompt_loss_share(0.1)
assert 0.3 < w_share < 0.7, "with prompts 14 times longer, a weight of 0.1 leaves the prompt a large share of the loss"
assert support.prompt_grad_share("completion") == 0.0 and experiments["explain"].prompt_grad_share("completion") == 0.0
assert experiments["explain"].prompt_loss_share(0.1) < 0.2, "with short prompts, a weight of 0.1 leaves them little"
print(f"On support, a prompt-loss weight of 0.1 leaves the prompt about {w_share:.1f} of the loss: not ten times "
      f"less than the answer, because prompts are about {shape['support'][0] / shape['support'][1]:.0f} times longer. "
      "On explain it leaves them "
      f"{experiments['explain'].prompt_loss_share(0.1):.2f}. Under completion-only loss the prompt's share of the "
      "gradient is exactly zero.")

# %% [markdown]
# ## Before and after: what the model answers
#
# The first evaluation (step 0) is the pretrained model. It knows the products' facts from its
# pretraining prose, but it has never seen either format, so it does not answer. The last evaluation is
# after fine-tuning on questions about *other* products: the format was learned in fine-tuning, the facts
# come from pretraining.

# %% tags=["nbval-ignore-output"]
for name, exp in experiments.items():
    run = exp.runs[("completion", SEEDS[0])]
    before, after = run.evals[0], run.evals[-1]
    print(f"--- {name}, completion-only, seed {SEEDS[0]}: exact match {before['exact_match']:.0%} before, "
          f"{after['exact_match']:.0%} after")
    for b, a in list(zip(before["samples"], after["samples"]))[:2]:
        print(f"   prompt    ...{b['prompt'][-50:]!r}\n   reference {b['reference']!r}\n"
              f"   before    {b['generated']!r}\n   after     {a['generated']!r}")

# %% [markdown]
# ## Why start from the pretrained weights: a control run
#
# The same fine-tune (completion-only, seed 0, the same steps and batches) from *random* weights of the
# same architecture. It can learn the format from the training pairs, but the facts about the held-out
# products were only ever in the pretraining prose, which this model never saw.

# %% tags=["nbval-ignore-output"]
import torch
from transformers import AutoModelForCausalLM

train_rows, eval_rows = data["support"]
torch.manual_seed(SEEDS[0])
random_model = AutoModelForCausalLM.from_config(model.config)
start = time.perf_counter()
control = sv.finetune(random_model, tok, train_rows, "completion", steps=STEPS, batch_size=BATCH_SIZE, lr=LR,
                      seed=SEEDS[0], eval_data=eval_rows, eval_every=STEPS, eval_examples=len(eval_rows), progress=False)
pretrained = support.runs[("completion", SEEDS[0])]
print(f"control run: {time.perf_counter() - start:.0f} s")
for name, run in (("pretrained start", pretrained), ("random start", control)):
    last = run.evals[-1]
    print(f"{name:>16}: held-out exact match {last['exact_match']:.0%}, log Pr(y|x) per token "
          f"{last['cond_logprob_per_token']:+.2f}")

# %%
assert control.evals[-1]["exact_match"] < pretrained.evals[-1]["exact_match"] - 0.15
assert control.evals[-1]["cond_logprob_per_token"] < pretrained.evals[-1]["cond_logprob_per_token"] - 0.4
print("From random weights the same fine-tune answers fewer held-out questions and gives the right answers a "
      "lower probability (by more than 0.4 nats per token): the facts come from pretraining, and SFT teaches the "
      "format on top of them.")

# %% [markdown]
# ## Try it yourself: the MaskingLab
#
# Run the experiment interactively: choose the masking (or a prompt-loss weight), the number of steps,
# the learning rate and the seed; press **Run** and watch the curves grow; press **Stop** at any time
# (the curves are kept). Runs are overlaid, so you can compare. Training runs in the background, so the
# notebook stays responsive.
#
# Things to try: the same masking under two seeds (how far apart do they end?); a learning rate of 0.01
# (watch for the NaN guard); a prompt-loss weight of 0.01 vs 0.5.

# %%
from sftviz import widgets as W

W.MaskingLab(model, tok, train_rows, eval_rows[:24], steps=STEPS, lr=LR, seed=SEEDS[0])

# %% [markdown]
# ## What research says, beside what these runs measured
#
# Masking the prompt is TRL's default for prompt/completion data (`completion_only_loss`); for
# conversational data TRL trains on every token unless you set `assistant_only_loss=True` and the chat
# template marks the assistant's turns with `{% generation %}`. It is a choice, and published results
# depend on the data:
#
# * Shi et al. (2024), *Instruction Tuning With Loss Over Instructions* (NeurIPS 2024, arXiv:2405.14394),
#   report that also training on the instructions helps most when instructions are long relative to
#   outputs and when there are few training examples, and trace the gain to less overfitting.
# * Huerta-Enochian and Ko (2024), *Instruction Fine-Tuning: Does Prompt Loss Matter?* (arXiv:2401.13586),
#   varied the prompt-loss weight on LLaMA models. They report that it matters on data with short
#   completions, where a small non-zero weight did better than 0, and hardly at all on data with long
#   completions.
#
# Their models have billions of parameters and their benchmarks are not ours, so the cell below only sets
# their conditions beside this run's measurements.

# %% tags=["nbval-ignore-output"]
for name, exp in experiments.items():
    p, c = shape[name]
    print(f"{name}: prompts {p / c:.1f} times as long as completions, {len(data[name][0])} training rows.")
    for metric in ("exact_match", "cond_logprob_per_token"):
        print("   " + exp.verdict(metric))
    weighted_vs_completion = exp.wins(0.1, "completion", "cond_logprob_per_token")
    print(f"   A weight of 0.1 ends above completion-only in log Pr(y|x) on {weighted_vs_completion} of {len(SEEDS)} seeds.\n")

# %% [markdown]
# ## Check your understanding

# %%
W.Quiz("sft-foundations", ids=["why-mask-the-prompt", "unmasked-is-joint", "prompt-loss-weight", "specialising-a-pretrained-model"])
