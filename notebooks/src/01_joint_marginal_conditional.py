# %% [markdown]
# # 1. Joint, marginal and conditional log-probabilities
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/sftviz/sftviz/blob/main/notebooks/01_joint_marginal_conditional.ipynb)
#
# A language model gives a probability to every sequence of tokens. Supervised fine-tuning (SFT)
# works with one particular sequence: a prompt `x` followed by its completion `y`, written `[x, y]`.
# This notebook takes that sequence apart with a model (the bundled **sftviz-tiny** unless `MODEL_NAME`
# below names another, such as the real `smollm2-135m-instruct`) and checks, with numbers you compute
# yourself, the identity that all of SFT rests on:
#
# $$\log \Pr([x, y]) = \log \Pr(x) + \log \Pr(y \mid x)$$
#
# *joint = marginal + conditional.* All logs are natural logs, so the unit is the **nat**.
#
# **You will:** score a prompt and its answer token by token; add the token log-probabilities up into
# the three quantities; see why the joint can never be above the marginal; and use that to tell a
# broken computation from a surprising model. About 20 minutes.

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
# Parameters: an instructor can change these (papermill -p MODEL_NAME gpt2 ... when online).
MODEL_NAME = "sftviz-tiny"  # the bundled model; any Hugging Face causal LM id or folder works too
DATASET = "support"  # bundled prompt/completion data, or a path to your own JSONL file
EVAL_FRACTION = None  # for a JSONL file without its own split: the share of its rows to hold out, e.g. 0.2
EXAMPLE_INDEX = 0  # which eval example to take apart
PROBE_ROWS = None  # how many questions each knowledge probe asks: None for all (12 is quicker on a real model)

# %%
import math

import sftviz as sv
from sftviz import exercises

model, tok = sv.load_model(MODEL_NAME)
eval_rows = sv.load_splits(DATASET, eval_fraction=EVAL_FRACTION)[1]
row = eval_rows[EXAMPLE_INDEX]
print("PROMPT x:    ", repr(row["prompt"]))
print("COMPLETION y:", repr(row["completion"]))

# %% [markdown]
# ## The chain rule over tokens
#
# A causal language model never scores a whole sequence at once. It scores one token at a time, each
# given everything before it, and the probability of the sequence is the product of those factors:
#
# $$\Pr(t_1, \dots, t_n \mid t_0) = \prod_{i=1}^{n} \Pr(t_i \mid t_0, \dots, t_{i-1})
# \quad\Longrightarrow\quad
# \log \Pr(\cdot) = \sum_{i=1}^{n} \log \Pr(t_i \mid t_{<i})$$
#
# `t_0` is the BOS ("beginning of sequence") token: it is context only, so that the first real token
# of the prompt also gets a probability. `sv.score` runs **one forward pass** over `[BOS, x, y, EOS]`
# and returns the log-probability of every token.

# %%
rep = sv.score(model, tok, prompt=row["prompt"], completion=row["completion"], top_k=3)
print(f"{'pos':>3}  {'segment':<10} {'token':<16} {'log-prob':>9}  model's top choice")
for r in rep.rows:
    if r.segment == "prompt" and 4 <= r.position < rep.example.n_prompt - 4:
        if r.position == 4:
            print("  ...  (middle of the prompt left out)")
        continue
    lp = "" if r.logprob is None else f"{r.logprob:9.2f}"
    top = "" if not r.top else repr(r.top[0][0])
    print(f"{r.position:>3}  {r.segment:<10} {r.token!r:<16} {lp:>9}  {top}")

# %% [markdown]
# ## Three sums over one list
#
# The joint, the marginal and the conditional are sums over different stretches of the same list of
# token log-probabilities:
#
# | quantity | sum over | meaning |
# |---|---|---|
# | joint `log Pr([x, y])` | every token after BOS | how likely the whole sequence is |
# | marginal `log Pr(x)` | the prompt tokens | how likely the prompt is on its own |
# | conditional `log Pr(y ∣ x)` | the completion tokens and EOS | how likely this answer is, given the prompt |
#
# Because a causal model's prediction at a prompt position cannot see the completion (it lies in the
# future), the prompt rows are exactly what we would get by scoring the prompt alone. So the marginal
# needs no second forward pass; the next cell checks that claim anyway.
#
# Note what kind of probability `Pr(x)` is here: a *prefix* probability, the probability that a text
# starts with `x`, whatever follows. That is why the prompt alone is scored without an EOS after it
# (`add_eos=False`): with the EOS it would be the probability that `x` is the whole text, a smaller number,
# and the chain rule `log Pr([x, y]) = log Pr(x) + log Pr(y | x)` would no longer add up.

# %%
joint = sum(r.logprob for r in rep.rows if r.logprob is not None)
marginal = sum(r.logprob for r in rep.rows if r.segment == "prompt")
conditional = sum(r.logprob for r in rep.rows if r.segment in ("completion", "eos"))
print(f"joint       log Pr([x,y]) = {joint:9.2f} nats")
print(f"marginal    log Pr(x)     = {marginal:9.2f} nats")
print(f"conditional log Pr(y|x)   = {conditional:9.2f} nats")
print(f"marginal + conditional    = {marginal + conditional:9.2f} nats")
assert math.isclose(joint, marginal + conditional, abs_tol=1e-6)
assert math.isclose(joint, rep.joint, abs_tol=1e-6) and math.isclose(conditional, rep.conditional, abs_tol=1e-6)

# Score the prompt on its own: the same marginal, from a shorter forward pass.
prompt_alone = sv.score(model, tok, prompt="", completion=row["prompt"], add_eos=False)
print(f"prompt scored alone       = {prompt_alone.conditional:9.2f} nats")
assert math.isclose(prompt_alone.conditional, marginal, abs_tol=1e-3)

# %% [markdown]
# ### Exercise 1: predict, then compute
#
# Here is a second completion for the same prompt: a wrong answer, of the same kind as the right one
# when the held-out answers have one (the cell prints which). Before you run the
# next cells, predict: which of the three sums, `"joint"`, `"marginal"` or `"conditional"`, comes out
# the same for both completions? Then compute the wrong answer's `log Pr(y | x)` yourself, as a sum over
# the per-token log-probs in `rep_wrong.rows` (each row has `.segment` and `.logprob`), without using
# `rep_wrong.conditional`, `.joint` or `.marginal`.

# %%
def kind(completion):
    """The kind of an answer: its unit ("dollars.", "hours.", ...), or "one word" for a colour or a name."""
    words = completion.split()
    return words[-1] if len(words) > 1 else "one word"


others = [r["completion"] for r in eval_rows if r["completion"] != row["completion"]]
same_kind = [c for c in others if kind(c) == kind(row["completion"])]
wrong = (same_kind or others)[0]
rep_wrong = sv.score(model, tok, prompt=row["prompt"], completion=wrong, top_k=0)
print(f"right answer {row['completion']!r}, wrong answer {wrong!r}: "
      + (f"the same kind ({kind(wrong)})" if same_kind else "no held-out answer of the same kind, so another kind"))

# %% nbgrader={"grade": false, "grade_id": "same-for-both", "locked": false, "schema_version": 3, "solution": true, "task": false}
same_for_both = None  # "joint", "marginal" or "conditional"
conditional_wrong = None  # log Pr(y | x) of the wrong answer, summed from rep_wrong.rows
### BEGIN SOLUTION
same_for_both = "marginal"
conditional_wrong = sum(r.logprob for r in rep_wrong.rows if r.segment in ("completion", "eos"))
### END SOLUTION
ex1 = [
    exercises.check_choice(
        same_for_both, "marginal",
        f"log Pr(x) = {rep.marginal:.2f} for both completions: the prompt's tokens are scored before the "
        f"completion and cannot see it. The joint changes ({rep.joint:.2f} vs {rep_wrong.joint:.2f}), and with it "
        "the conditional.",
        hint="which tokens are scored before the completion starts? Their log-probs cannot depend on it.",
    ),
    exercises.check_conditional(conditional_wrong, rep_wrong),
]
for check in ex1:
    print(check)

# %% nbgrader={"grade": true, "grade_id": "same-for-both-points", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Points for nbgrader: 1 per correct answer above (the cell above gives the feedback).
exercises.points(ex1)

# %%
# the same prompt, so the same marginal (up to float32 rounding, which depends on the sequence length)
assert math.isclose(rep.marginal, rep_wrong.marginal, rel_tol=1e-5, abs_tol=1e-4)
ratio = rep.conditional - rep_wrong.conditional
better = "right" if ratio > 0 else "wrong"
print(f"The base model finds the {better} answer exp({abs(ratio):.1f}) = {math.exp(abs(ratio)):.1f} times as likely "
      f"as the other, given this prompt.")

# %% [markdown]
# A probability for the whole answer is small because it is a product of per-token factors. Per token:

# %%
per_token_probs = [math.exp(r.logprob) for r in rep.rows if r.segment in ("completion", "eos")]
print(f"Pr(y | x) = exp({rep.conditional:.2f}) = {math.exp(rep.conditional):.1e} over {len(per_token_probs)} tokens")
print(f"mean NLL per completion token: {rep.completion_nll_mean:.3f} nats; its exponential, "
      f"{math.exp(-rep.completion_nll_mean):.3f}, is the geometric mean of the per-token probabilities")
arithmetic = sum(per_token_probs) / len(per_token_probs)
assert math.exp(-rep.completion_nll_mean) <= arithmetic + 1e-9
print(f"the arithmetic mean of the same probabilities is {arithmetic:.3f}. The geometric mean is never above it, "
      "and a single unlikely token pulls it down.")

# %% [markdown]
# ## Why the joint can never be above the marginal
#
# `log Pr(y | x)` is the log of a probability, so it is at most 0. Adding it to `log Pr(x)` can only
# lower it: **`log Pr([x, y]) <= log Pr(x)`**, always, for every model, trained or not. A longer
# sequence that starts with `x` is never more likely than `x` itself.
#
# That makes it a test.
#
# ### Exercise 2: which of these could a correct computation produce?
#
# A colleague's logs report these (joint, marginal) pairs, in nats. Predict which are impossible for
# any model, and put their indices in `impossible` (e.g. `{1, 2}`). Then run the cell after it, where
# `sv.check_logprobs` applies the laws of probability to each pair and says why in words.

# %%
pairs = [(-3.5, -5.2), (-40.1, -12.3), (-7.0, -7.0), (-2.0, 1.5)]

# %% nbgrader={"grade": false, "grade_id": "impossible-pairs", "locked": false, "schema_version": 3, "solution": true, "task": false}
impossible = None  # a set of indices into pairs
### BEGIN SOLUTION
impossible = {0, 3}
### END SOLUTION

# %%
verdicts = [sv.check_logprobs(joint=j, marginal=m) for j, m in pairs]
for i, v in enumerate(verdicts):
    print(f"{i}: joint {pairs[i][0]}, marginal {pairs[i][1]} -> {v}\n")
truly_impossible = {i for i, v in enumerate(verdicts) if not v.ok}
ex2 = exercises.check_choice(
    impossible, truly_impossible,
    f"the impossible pairs are {sorted(truly_impossible)}: a joint above its marginal, or a log-probability above 0. "
    "A joint far below the marginal is possible: the answer is just unlikely given the prompt.",
    hint="log Pr([x, y]) = log Pr(x) + log Pr(y | x), and a log-probability is never above 0.",
)
ex2

# %% nbgrader={"grade": true, "grade_id": "impossible-pairs-points", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Points for nbgrader: 1 when the set above is right (the cell above gives the feedback).
exercises.points(ex2)

# %% [markdown]
# And on the numbers the model just produced:

# %%
verdict = rep.check()
print(verdict)
assert verdict.ok and rep.joint <= rep.marginal

# %% [markdown]
# ## A joint far below the marginal: the answer is unlikely given the prompt
#
# When the joint is *much* lower than the marginal, `log Pr(y | x)` is very negative: the model finds
# `y` unlikely as a continuation of `x`. That is a statement about `y` given `x`, not about `x`.
#
# Two different things can make `y` unlikely: `y` may be wrong, or `x` may be in a form the model does
# not expect an answer after. Which facts a model has depends on what it read: the bundled model read
# the made-up shop's facts as prose (and some real ones, such as capitals) and never saw the support
# question/answer format; a real model read the world's facts, in many forms, and never heard of the
# shop. The next cell asks the model in use about both sets of facts, each in two forms, and compares the
# true answer with the other answers of the same kind (the other colours, the other capitals...).

# %%
import json
from math import comb

from sftviz.datasets import DATA_DIR


def true_answer_wins(items):
    """How often the true continuation has the highest conditional among its alternatives."""
    wins, chance = 0, 0.0
    for context, true, options in items:
        reports = sv.score_batch(model, tok, [{"prompt": context, "completion": o} for o in options], top_k=0, add_eos=False)
        best = max(zip(reports, options), key=lambda pair: pair[0].conditional)[1]
        wins += best == true
        chance += 1 / len(options)
    return wins, len(items), chance / len(items)


def p_at_least(wins, n, chance):
    """The chance of `wins` or more of `n` right by guessing (binomial, at the mean chance rate)."""
    return sum(comb(n, k) * chance**k * (1 - chance) ** (n - k) for k in range(wins, n + 1))


def read_jsonl(name):
    with open(DATA_DIR / name) as fh:
        return [json.loads(line) for line in fh]


# The shop in prose: held-out sentences about the eval rows' products, in templates no model trained on.
statements = read_jsonl("heldout-statements.jsonl")
probe_rows = eval_rows[:PROBE_ROWS]
eval_products = {s["subject"] for s in statements if any(s["subject"] in r["prompt"] for r in probe_rows)}
shop_prose = [(s["context"], s["true"], [s["true"]] + s["distractors"]) for s in statements if s["subject"] in eval_products]

# The shop in the support format: each eval question against the other answers to questions of the same kind.
def kind(prompt):
    return " ".join(prompt.split("Customer:")[-1].split()[:3])

answers = {}
for r in eval_rows:
    answers.setdefault(kind(r["prompt"]), set()).add(r["completion"])
shop_qa = [(r["prompt"], r["completion"], sorted(answers[kind(r["prompt"])])) for r in probe_rows if len(answers[kind(r["prompt"])]) > 1]

# The world: capitals, as a sentence to complete and as a question.
world = read_jsonl("world-facts.jsonl")[:PROBE_ROWS]
world_prose = [(s["context"], s["true"], [s["true"]] + s["distractors"]) for s in world]
world_qa = [(s["question"], s["true"], [s["true"]] + s["distractors"]) for s in world]

above = {}
for facts, form, items in (("the shop's facts", "in prose", shop_prose), ("the shop's facts", "as support questions", shop_qa),
                           ("world capitals", "in prose", world_prose), ("world capitals", "as questions", world_qa)):
    wins, n, chance = true_answer_wins(items)
    above[facts, form] = p_at_least(wins, n, chance) < 0.01
    print(f"{facts + ', ' + form:>38}: the true answer is the most likely in {wins:2d} of {n} ({wins / n:.0%}; chance {chance:.0%})")

print("\n(Above chance: fewer than 1 in 100 people guessing at random would do as well.)")
for facts, (prose, qa) in (("the shop's facts", ("in prose", "as support questions")), ("world capitals", ("in prose", "as questions"))):
    known = [form for form in (prose, qa) if above[facts, form]]
    if len(known) == 2:
        verdict = "above chance in both forms: the model has them and answers in either form"
    elif known:
        verdict = f"above chance only {known[0]}: the model has the facts, but not in every form it is asked"
    else:
        verdict = "at chance in both forms: this model does not know them"
    print(f"{facts}: {verdict}.")

gaps = sorted(s.marginal - s.joint for s in sv.score_batch(model, tok, probe_rows, top_k=0))
print(f"In the support format even the true answer sits {gaps[0]:.1f} to {gaps[-1]:.1f} nats below its prompt's "
      f"marginal (median {gaps[len(gaps) // 2]:.1f}): Pr(y | x) is at most exp(-{gaps[0]:.1f}) for each of these {len(gaps)} rows.")

# %% [markdown]
# Fine-tuning on `[x, y]` with the loss on `y` is exactly the training that raises this conditional.
# Notebook 4 measures how far it rises.

# %% [markdown]
# ## Explore
#
# Type your own prompt and completion. The widget scores them as you type and shows the three sums and
# the identity live. Try: a true vs a false price; the same answer without its leading space; an empty
# completion (only EOS is scored).

# %%
from sftviz import widgets as W

W.LogProbExplorer(model, tok, prompt=row["prompt"], completion=row["completion"])

# %% [markdown]
# ## Check your understanding

# %%
W.Quiz("sft-foundations", topics=["log-probabilities", "objective"])
