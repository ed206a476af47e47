# %% [markdown]
# # 5. Diagnose a faulty fine-tune
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sftviz/sftviz/blob/main/notebooks/05_diagnose_a_faulty_finetune.ipynb)
#
# Most SFT bugs do not crash anything. The loss goes down and the run finishes; some bugs make the model
# worse, others only change what the loss means, and a short evaluation may not show either. This
# notebook trains four models, each with a real bug switched on, and hides which bug is in which run.
# Your job: find each bug from the evidence, the way you would on a real project.
#
# The evidence you have for each run: its curves (the objective it optimised, and the prompt and
# completion NLL measured correctly), what the fine-tuned model answers, and the labels its data
# pipeline produced for one training example. About 25 minutes.
#
# The suspects (`sftviz.faults.FAULTS`):

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
STEPS = 100
SEED = 0  # the training seed of every run
MYSTERY_KEY = 0  # self-study only: decides which bug goes into which run
SUSPECTS = ("eos_masked", "prompt_trained", "shifted_labels", "accum_mean_of_means")
BATCH_SIZE = 8  # examples per micro-batch
GRAD_ACCUM = 2  # micro-batches per step (a step sees 16 examples)
LR = 1e-3  # the bundled model's rate; about 2e-5 for a real model such as SmolLM2
EVAL_ROWS = None  # held-out rows each run is scored on: None for all of them (a few are quicker on a real model)
EVAL_EXAMPLES = 8  # of those, the questions each run answers at the end
# A graded class gets its runs from the instructor, in this folder beside the notebook (built by
# `python -m sftviz.course nbgrader`, with a secret key). Without the folder, the runs are trained here
# for self-study: the checks then know the answers, and so could you, if you went looking.
MYSTERY_CASE = "mystery_case"

# %%
import sftviz as sv
from sftviz import exercises, plots
from sftviz.faults import FAULTS

for name, what in FAULTS.items():
    print(f"{name:>20}: {what}")

# %%
model, tok = sv.load_model(MODEL_NAME)
train_rows, eval_rows = sv.load_splits(DATASET, eval_fraction=EVAL_FRACTION)
eval_rows = eval_rows[:EVAL_ROWS]

# %% [markdown]
# ## The runs
#
# `exercises.mystery_runs` fine-tunes one healthy run (completion-only, no bug) and one run per suspect,
# shuffles the suspects and names the runs A, B, C and D. Every run accumulates gradients over
# `GRAD_ACCUM` micro-batches per step. The bug's name is kept out of the run's record. In a graded class
# the runs are loaded from your instructor's `MYSTERY_CASE` folder instead, and nothing in this notebook
# knows which bug is where: your answers are recorded, and the grader checks them.

# %% tags=["nbval-ignore-output"]
healthy, mysteries = exercises.mystery_runs(
    model, tok, train_rows, SUSPECTS, steps=STEPS, seed=SEED, key=MYSTERY_KEY, case=MYSTERY_CASE, eval_data=eval_rows,
    eval_examples=EVAL_EXAMPLES, eval_every=None, batch_size=BATCH_SIZE, grad_accum=GRAD_ACCUM, lr=LR,
)
print("runs from your instructor's case" if healthy.case else "runs trained here (self-study)")
for name, run in mysteries.items():
    print(name, run)

# %% [markdown]
# ## Evidence 1: the curves
#
# The healthy run is drawn too. Remember what each panel measures: the **objective** is what the buggy
# pipeline optimised; **prompt NLL** and **completion NLL** are measured correctly on the same batches.

# %%
plots.plot_runs([healthy] + list(mysteries.values()))

# %% tags=["nbval-ignore-output"]
print(f"{'run':>8}  {'prompt NLL':>10}  {'completion NLL':>14}  {'objective vs completion NLL':>27}")
for name, run in {"healthy": healthy, **mysteries}.items():
    e = exercises.curve_ends(run)
    print(f"{name:>8}  {e['prompt_nll']:10.2f}  {e['completion_nll']:14.2f}  {e['objective_gap']:26.1%} apart")

# %% [markdown]
# ### Exercise 1: from the curves alone
#
# Before you look at any answer or label: which run was trained on the prompt instead of the completion
# (`prompt_trained`), and which one averaged the micro-batch averages (`accum_mean_of_means`)? Think
# about what each bug changes (which tokens are trained, or only how their losses are averaged) and
# what that does to each panel and to the numbers above. The first shows in the figure; the second only
# in the last column. A wrong answer gets the curves of the run you named, against the healthy run's.

# %% [markdown]
# Some marks are too small to see in a figure. `exercises.curve_ends` reads each run's curves as numbers:
# where the prompt and completion NLL end (mean of the last 10 steps), and how far the objective is from
# the completion NLL measured on the same batches, on average over the run (0 for a healthy
# completion-only run, whose objective *is* that NLL).

# %% nbgrader={"grade": false, "grade_id": "from-curves", "locked": false, "schema_version": 3, "solution": true, "task": false} tags=["nbval-ignore-output"]
from_curves = {fault: None for fault in exercises.CURVE_SIGNS}  # a run letter each, e.g. "A"
### BEGIN SOLUTION
from_curves = {f: r for r, f in exercises.answer_key(mysteries).items() if f in from_curves}
### END SOLUTION
curve_checks = exercises.check_from_curves(from_curves, mysteries, healthy)
for check in curve_checks:
    print(check)

# %% nbgrader={"grade": true, "grade_id": "from-curves-points", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Points for nbgrader: 1 per run found from the curves (the cell above gives the feedback; in a graded class
# the grader's own check replaces it).
exercises.points(curve_checks)

# %% [markdown]
# ## Evidence 2: what the models answer
#
# Greedy answers to the same eval questions, after fine-tuning. Look at where each answer stops.

# %% tags=["nbval-ignore-output"]
for name, run in {"healthy": healthy, **mysteries}.items():
    last = run.evals[-1]
    print(f"--- {name}: exact match {last['exact_match']:.0%}")
    for s in last["samples"][:3]:
        print(f"    reference {s['reference']!r:<16} model {s['generated']!r}")

# %% [markdown]
# ## Evidence 3: the labels each pipeline built
#
# `exercises.mystery_labels` shows the first training example with the labels the run's (buggy)
# pipeline trained on. Compare with the healthy labels: which tokens are targets?

# %%
from sftviz import widgets as W

W.TokenView(exercises.mystery_labels(tok, train_rows[0], healthy), editable=False, title="healthy")

# %%
W.TokenView(exercises.mystery_labels(tok, train_rows[0], mysteries["A"]), editable=False, title="run A")

# %%
W.TokenView(exercises.mystery_labels(tok, train_rows[0], mysteries["B"]), editable=False, title="run B")

# %%
W.TokenView(exercises.mystery_labels(tok, train_rows[0], mysteries["C"]), editable=False, title="run C")

# %%
W.TokenView(exercises.mystery_labels(tok, train_rows[0], mysteries["D"]), editable=False, title="run D")

# %% [markdown]
# ## Your diagnosis
#
# Now with all the evidence: name the bug in each run (one of the suspects above). The check tells you
# at once whether you are right and, if not, what the bug you named would have looked like.

# %% nbgrader={"grade": false, "grade_id": "diagnosis", "locked": false, "schema_version": 3, "solution": true, "task": false}
diagnosis = {name: None for name in mysteries}  # e.g. {"A": "eos_masked", ...}
### BEGIN SOLUTION
diagnosis = exercises.answer_key(mysteries)  # self-study runs know it; a graded case gets the key written here
### END SOLUTION
checks = exercises.check_diagnoses(diagnosis, mysteries)
for name, check in zip(mysteries, checks):
    print(name, check)

# %% nbgrader={"grade": true, "grade_id": "diagnosis-points", "locked": true, "points": 4, "schema_version": 3, "solution": false, "task": false}
# Points for nbgrader: 1 per correct diagnosis (the cell above gives the feedback; in a graded class the
# grader's own check replaces it).
exercises.points(checks)

# %% [markdown]
# ## What gave each bug away
#
# Each line below is measured from the runs' records by `exercises.clues`, against the healthy run: the
# labels of the first training example, how far the objective is from the completion NLL measured on the
# same batches (a healthy completion-only run optimises exactly that NLL, so the two are equal), the
# NLLs over the last 10 steps, and the answers.

# %% tags=["nbval-ignore-output"]
for letter, run in mysteries.items():
    print(f"run {letter}:")
    for line in exercises.clues(run, healthy, tok, train_rows[0]):
        print(f"    {line}")

# %% [markdown]
# What each bug is known for:
#
# * **EOS masked**: the EOS label is -100, so the completion NLL, which includes the EOS, stays well above
#   the healthy run's while the objective (which leaves the EOS out) falls.
# * **Prompt trained instead of the completion**: prompt labels set and completion labels masked; the
#   prompt NLL falls far below the healthy run's and the completion NLL stays high.
# * **Labels shifted**: every label moved one position; the objective falls, but the completion NLL
#   measured with the true next tokens stays high.
# * **Accumulation averaging the micro-batch averages**: the labels are right and the curves look like
#   the healthy run's, but the objective is no longer the completion NLL of the batch: only the averaging
#   can be wrong.
#
# `exercises.confirm_hallmarks` checks each of these, with thresholds, on the runs above, without naming
# which bug is where; a run whose hallmark does not show is named, with what to change (short runs on a
# large model may not get that far). For a graded case it was checked when your instructor built the
# case (here nothing knows the bugs).

# %%
for line in exercises.confirm_hallmarks(healthy, mysteries, tok, train_rows[0], strict=False):
    print(line)

# %% [markdown]
# One more bug changes no label, only how the per-token losses are averaged (`per_sequence_mean`: short
# answers weigh more than long ones). Try it in the MaskingLab, or add it to `SUSPECTS`.

# %%
W.Quiz("sft-debugging", topics=["debugging", "reductions"])
