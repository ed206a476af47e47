"""The SFT X-ray: pipelines run for real, policies built by the core, and each lint on a fixture with its
bug and on one without (no false alarm)."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys

import pytest

import sftviz as sv
from sftviz.xray import LINTS, Policy, xray
from sftviz.xray.pipelines import template_markers
from sftviz.xray.policy import injected_system, policy_from

CHAT = [
    {"role": "user", "content": "How much is the lamp?"},
    {"role": "assistant", "content": "12 dollars."},
    {"role": "user", "content": "Colour?"},
    {"role": "assistant", "content": "Teal."},
]
CHAT_ROWS = [{"messages": CHAT}, {"messages": CHAT[:2]}]
PAIRS = [
    {"prompt": "Question: How much is the lamp?\nAnswer:", "completion": " 12 dollars."},
    {"prompt": "Does the Nova Fan have a warranty?\nAnswer:", "completion": " Yes, two years."},
]
INJECTING = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}<|im_start|>system\nYou are a kettle."
    "<|im_end|>\n{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Qwen3's shape: reasoning is kept in the last assistant turn and stripped from earlier ones.
STRIPS_THINK = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' and not loop.last %}"
    "{{ m['content'].split('</think>')[-1].lstrip() }}{% else %}{{ m['content'] }}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def chatml(gpt2_tok):
    """A GPT-2-style tokenizer with a ChatML template and no {% generation %} markers; pad == eos."""
    tok = copy.deepcopy(gpt2_tok)
    tok.pad_token = tok.eos_token
    return tok


@pytest.fixture(scope="module")
def chatml_eot(chatml):
    """The same, with <|im_end|> as EOS and pad (SmolLM2's choice)."""
    tok = copy.deepcopy(chatml)
    tok.eos_token = tok.pad_token = "<|im_end|>"
    return tok


@pytest.fixture(scope="module")
def bundled_tok():
    return sv.load_model(device="cpu")[1]


def with_template(tok, template):
    tok = copy.deepcopy(tok)
    tok.chat_template = template
    return tok


def fired(report, lint):
    return report.counts().get(lint, 0)


# ------------------------------------------------------------------------------------------------
# Lints: each on a fixture with its bug and on one without
# ------------------------------------------------------------------------------------------------


def test_every_lint_is_registered_with_a_title_and_level():
    assert {"all-zero-mask", "eos-not-trained", "template-trained", "injected-system", "injected-system-trained",
            "not-prefix-preserving", "truncated", "marker-missed", "template-eos-differs", "doubled-bos",
            "rows-dropped", "roles-trained", "row-failed"} <= set(LINTS)  # fmt: skip
    assert all(e.level in ("info", "warning", "error") and e.title for e in LINTS.values())


def test_all_zero_mask_from_trl_assistant_only_loss_without_generation_markers(chatml, bundled_tok):
    pytest.importorskip("trl")
    bug = xray(CHAT_ROWS, chatml, "trl-assistant-only")
    assert fired(bug, "all-zero-mask") == 2
    assert "generation" in bug.first("all-zero-mask").message
    assert all(sum(rx.trained) == 0 for rx in bug.rows)
    chat = sv.load_dataset("support-chat")[:3]  # the bundled template has the markers
    ok = xray(chat, bundled_tok, "trl-assistant-only")
    assert {f.lint for f in ok.findings} == {"template-eos-differs"}  # a true finding, see below


def test_eos_not_trained_when_pad_equals_eos_and_padding_is_masked_by_id(chatml_eot):
    bug = xray(CHAT_ROWS, chatml_eot, "hf-lm")
    assert fired(bug, "eos-not-trained") == 2
    assert "pad == eos" in bug.first("eos-not-trained").message
    assert [chatml_eot.decode([bug.rows[0].input_ids[t]]) for t in bug.first("eos-not-trained").positions] == [
        "<|im_end|>", "<|im_end|>"]  # fmt: skip
    ok = xray(CHAT_ROWS, chatml_eot, "sftviz")
    assert not ok.findings and all(not rx.disagreements for rx in ok.rows)


def test_template_and_roles_trained_by_a_pipeline_that_trains_everything(chatml):
    pytest.importorskip("trl")
    bug = xray(CHAT_ROWS, chatml, "trl")
    assert fired(bug, "template-trained") == 2 and fired(bug, "roles-trained") == 2
    assert "user" in bug.first("roles-trained").message
    ok = xray(CHAT_ROWS, chatml, "marker")
    assert fired(ok, "roles-trained") == 0 and fired(ok, "eos-not-trained") == 0


def test_injected_system_prompt_found_and_its_training_is_an_error(chatml_eot):
    tok = with_template(chatml_eot, INJECTING)
    assert injected_system(tok) == "You are a kettle."
    assert injected_system(chatml_eot) is None
    report = xray(CHAT_ROWS, tok, "hf-lm")
    assert fired(report, "injected-system") == 2 and fired(report, "injected-system-trained") == 2
    rx = report.rows[0]
    assert "kettle" in "".join(rx.tokens[t] for t in rx.injected)
    ok = xray(CHAT_ROWS, tok, "sftviz")  # shown, not trained
    assert fired(ok, "injected-system") == 2 and fired(ok, "injected-system-trained") == 0
    with_own = [{"messages": [{"role": "system", "content": "Be brief."}, *CHAT]}]
    assert not xray(with_own, tok, "sftviz").findings
    assert not xray(CHAT_ROWS, chatml_eot, "sftviz").findings


def test_a_template_that_rewrites_earlier_turns_is_named_with_the_text_that_changed(chatml):
    tok = with_template(chatml, STRIPS_THINK)
    thinking = [{"messages": [CHAT[0], {"role": "assistant", "content": "<think>cheap</think>12 dollars."},
                              CHAT[2], CHAT[3]]}]  # fmt: skip
    report = xray(thinking, tok, "hf-lm")
    assert fired(report, "not-prefix-preserving") == 1
    message = report.first("not-prefix-preserving").message
    assert "<think>" in message and "rewrites earlier turns" in message
    assert report.rows[0].policy_error and all(e is None for e in report.rows[0].expected)
    assert fired(xray(CHAT_ROWS, tok, "hf-lm"), "not-prefix-preserving") == 0  # nothing to strip


def test_truncation_that_cuts_the_answer(chatml):
    pytest.importorskip("trl")
    long = [{"prompt": "Question: How much is the lamp?\nAnswer:", "completion": " 12 dollars." * 6}]
    bug = xray(long, chatml, "trl", max_length=16)
    assert fired(bug, "truncated") == 1 and "EOS" in bug.first("truncated").message
    assert fired(xray(long, chatml, "trl"), "truncated") == 0


def test_marker_masking_misses_a_marker_that_tokenizes_differently_in_context(chatml):
    rows = [{"text": "Question: How much is the lamp? Answer: 12 dollars."}]
    bug = xray(rows, chatml, "marker", response_part="Answer:")  # " Answer:" merges with its space
    assert fired(bug, "marker-missed") == 1 and fired(bug, "all-zero-mask") == 1
    ok = xray([{"text": "Question: How much is the lamp?\nAnswer: 12 dollars."}], chatml, "marker",
              response_part="\nAnswer:")  # fmt: skip
    assert fired(ok, "marker-missed") == 0 and fired(ok, "all-zero-mask") == 0
    assert chatml.decode([i for i, t in zip(ok.rows[0].input_ids, ok.rows[0].trained) if t]) == " 12 dollars."


def test_markers_read_from_the_chat_template(chatml):
    assert template_markers(chatml) == ("<|im_start|>user\n", "<|im_start|>assistant\n")


def test_doubled_bos(chatml):
    tok = with_template(chatml, "{{ bos_token }}" + chatml.chat_template)

    def render_then_tokenize(row):  # a common mistake: the template writes BOS and tokenizing adds one
        text = tok.apply_chat_template(row["messages"], tokenize=False)
        ids = [tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]
        return {"input_ids": ids, "labels": ids}

    assert fired(xray(CHAT_ROWS, tok, render_then_tokenize), "doubled-bos") == 2
    assert fired(xray(CHAT_ROWS, tok, "hf-lm"), "doubled-bos") == 0


def test_rows_dropped_silently_and_rows_that_fail(chatml):
    def drops_long(row):
        ids = chatml.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]
        return None if len(ids) > 30 else {"input_ids": ids, "labels": ids}

    bug = xray(CHAT_ROWS, chatml, drops_long)
    assert fired(bug, "rows-dropped") == 1 and bug.rows[0].dropped
    assert fired(xray(CHAT_ROWS[1:], chatml, drops_long), "rows-dropped") == 0
    failed = xray([{"text": "plain text"}], chatml, "sftviz")
    assert fired(failed, "row-failed") == 1


def test_template_eos_that_differs_from_the_tokenizers(chatml, chatml_eot):
    report = xray(CHAT_ROWS, chatml, "sftviz")
    # chatml's EOS is <|endoftext|> but its turns end with <|im_end|>: generation would not stop there.
    assert fired(report, "template-eos-differs") == 1
    assert "<|im_end|>" in report.first("template-eos-differs").message
    assert fired(xray(CHAT_ROWS, chatml_eot, "sftviz"), "template-eos-differs") == 0


# ------------------------------------------------------------------------------------------------
# What the X-ray shows is what the pipeline produced, token for token
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["support", "support-chat", "explain"])
def test_each_pipeline_matches_the_labels_it_really_produces(bundled_tok, dataset, tmp_path):
    pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling
    from trl import SFTConfig, SFTTrainer

    tok = bundled_tok
    rows = sv.load_dataset(dataset)[:8]
    cfg = SFTConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, max_length=1024)
    model = sv.load_model(device="cpu")[0]
    trainer = SFTTrainer(
        model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=copy.deepcopy(tok)
    )
    collate_sv, collate_lm = sv.SFTCollator(tok), DataCollatorForLanguageModeling(tok, mlm=False)
    reports = {name: xray(rows, tok, name) for name in ("trl", "sftviz", "hf-lm")}
    for i, row in enumerate(rows):
        trl = trainer.data_collator([trainer.train_dataset[i]])
        ours = collate_sv([row])
        chat = "messages" in row
        text_ids = (tok.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"] if chat
                    else tok(row["prompt"] + row["completion"] + tok.eos_token)["input_ids"])  # fmt: skip
        lm = collate_lm([{"input_ids": text_ids}])
        for name, batch in (("trl", trl), ("sftviz", ours), ("hf-lm", lm)):
            rx = reports[name].rows[i]
            assert rx.input_ids == batch["input_ids"][0].tolist(), (name, i)
            assert rx.labels == batch["labels"][0].tolist(), (name, i)
            assert rx.tokens == [tok.decode([t]) for t in rx.input_ids]


def test_bundled_data_through_sftviz_agrees_with_the_default_policy(bundled_tok):
    for name in ("support", "support-chat", "explain"):
        report = xray(sv.load_dataset(name), bundled_tok, "sftviz")
        assert {f.lint for f in report.findings} <= {"template-eos-differs"}, report.text()
        assert report.stats()["rows_differ"] == 0
    # sftviz-tiny ends turns with <|end|> and its generation_config stops only at <|eos|>: found.
    assert "<|end|>" in xray(sv.load_dataset("support-chat"), bundled_tok).first("template-eos-differs").message


# ------------------------------------------------------------------------------------------------
# Rows in every form, read the way the pipeline reads them
# ------------------------------------------------------------------------------------------------


def test_trl_conversational_prompt_completion_rows(chatml_eot):
    row = {"prompt": CHAT[:3], "completion": CHAT[3:]}
    ex = sv.data.to_example(chatml_eot, row)  # was: TypeError "prompt must be a string"
    trained = chatml_eot.decode([t for t, m in zip(ex.input_ids, ex.trained) if m])
    assert trained == "Teal.<|im_end|>"  # the completion's turn only, not the prompt's assistant turn
    report = xray([row], chatml_eot, "sftviz")
    assert not report.findings and report.rows[0].kind == "conversational_prompt_completion"


def test_a_trl_prepared_row_keeps_trls_labels(bundled_tok, tmp_path):
    """A tokenized row that kept its messages column is shown and trained with its own labels."""
    row = sv.load_dataset("support-chat")[0]
    ids = bundled_tok.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]
    prepared = {**row, "input_ids": ids, "labels": list(ids)}  # a pipeline that trains everything
    ex = sv.data.to_example(bundled_tok, prepared)
    assert sum(ex.completion_mask) == len(ids) - 1  # TRL's labels, not a re-rendering of messages
    assert ex.tokens == [bundled_tok.decode([t]) for t in ids] and "" not in ex.tokens  # no blank chips
    report = xray([prepared], bundled_tok, "given")
    assert report.rows[0].labels == list(ids)
    assert fired(report, "roles-trained") == 1


def test_sharegpt_text_and_tool_turns(chatml_eot):
    sharegpt = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]}
    tool = {"messages": [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "call:weather"},
                         {"role": "tool", "content": "sunny"}, {"role": "assistant", "content": "Sunny."}]}  # fmt: skip
    report = xray([sharegpt, tool, {"text": "Hello there."}], chatml_eot, "hf-lm")
    assert [rx.kind for rx in report.rows] == ["sharegpt", "messages", "text"]
    assert "tool" in report.rows[1].segments
    sv_report = xray([sharegpt, tool], chatml_eot, "sftviz")
    assert not sv_report.findings
    assert chatml_eot.decode([t for t, m in zip(sv_report.rows[1].input_ids, sv_report.rows[1].trained) if m]) == (
        "call:weather<|im_end|>Sunny.<|im_end|>")  # fmt: skip


def test_policies_by_name_and_fields(chatml_eot):
    last = xray(CHAT_ROWS[:1], chatml_eot, "sftviz", policy="last")
    assert [kind for _, kind in last.rows[0].disagreements].count("extra") == 4  # "12", " dollars", "." and <|im_end|>
    assert fired(xray(CHAT_ROWS[:1], chatml_eot, "sftviz", policy="no-eos"), "template-trained") == 0
    flagged = [{"messages": [CHAT[0], {**CHAT[1], "train": False}, CHAT[2], CHAT[3]]}]
    # "train": False on the first answer: the policy trains the second only, as "last" does
    assert xray(flagged, chatml_eot, "sftviz").rows[0].disagreements == last.rows[0].disagreements
    users = policy_from("roles_to_train=assistant,user;train_on_eos=last")
    assert users == Policy(roles_to_train=("assistant", "user"), train_on_eos="last")
    for bad, err in (("nope", ValueError), ("turns=first", ValueError), ({"colour": 1}, ValueError), (3, TypeError),
                     ("roles_to_train=robot", ValueError), ("prompt_loss_weight=2", ValueError)):  # fmt: skip
        with pytest.raises(err):
            policy_from(bad)


def test_bad_input_is_explained(chatml, tmp_path):
    with pytest.raises(ValueError, match="not a file"):
        xray(tmp_path / "missing.jsonl", chatml)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n[1, 2]\n')
    with pytest.raises(ValueError, match="line 2"):
        xray(bad, chatml)
    with pytest.raises(ValueError, match="none of the forms"):
        xray([{"question": "?"}], chatml)
    with pytest.raises(ValueError, match="unknown pipeline"):
        xray(CHAT_ROWS, chatml, "axolotl")
    with pytest.raises(TypeError, match="list of rows"):
        xray({"text": "x"}, chatml)
    with pytest.raises(ValueError, match="max_rows"):
        xray(CHAT_ROWS, chatml, max_rows=0)


# ------------------------------------------------------------------------------------------------
# Reports: text, HTML, the command and its exit status
# ------------------------------------------------------------------------------------------------


def test_text_and_html_reports_escape_and_mark_disagreements(chatml_eot):
    hostile = [{"messages": [{"role": "user", "content": "<script>alert(1)</script>"},
                             {"role": "assistant", "content": "<b>no</b>"}]}]  # fmt: skip
    report = xray(hostile, chatml_eot, "hf-lm")
    text = report.text()
    assert "eos-not-trained" in text and "-<|im_end|>" in text and "+[" in text
    page = report.to_html()
    assert "<script>" not in page and "<b>no" not in page and "&lt;" in page and "&gt;" in page
    assert 'data-sftviz-xray="missing"' in page and 'data-sftviz-xray="extra"' in page
    assert 'data-sftviz-lint="eos-not-trained"' in page and "<!DOCTYPE html>" in page
    assert "sftviz-xray" in report._repr_html_()


def test_the_command_prints_writes_html_and_fails_on_a_chosen_level(tmp_path, capsys):
    from sftviz.__main__ import main as sftviz_main

    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in sv.load_dataset("support-chat")[:4]))
    html = tmp_path / "report.html"

    def run(*args):
        return subprocess.run([sys.executable, "-m", "sftviz", "xray", str(data), *args],
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    ok = run("--pipeline", "sftviz", "--html", str(html))  # one real process: python -m sftviz xray
    assert ok.returncode == 0, ok.stderr  # a warning only; the default fails on errors
    assert "template-eos-differs" in ok.stdout and html.stat().st_size > 2000
    # in-process: the same entry point
    assert sftviz_main(["xray", str(data), "--pipeline", "hf-lm", "--rows", "1", "--fail-on", "warning"]) == 1
    out = capsys.readouterr()
    assert "template-trained" in out.out and "findings at level warning" in out.err
    assert sftviz_main(["xray", str(data), "--model", str(tmp_path / "nowhere")]) == 2
    assert "Could not load the tokenizer" in capsys.readouterr().err
    assert sftviz_main(["xray", str(data), "--pipeline", "hf-lm", "--max-length", "8"]) == 2
    assert "--max-length applies to" in capsys.readouterr().err
    assert sftviz_main([]) == 0 and "xray" in capsys.readouterr().out
    assert sftviz_main(["nope"]) == 2


# ------------------------------------------------------------------------------------------------
# The families' chat formats (sftviz.xray.templates), on tokenizers built here
# ------------------------------------------------------------------------------------------------

SHAPE_CORPUS = ["How much is the lamp? 12 dollars. Colour? Teal. Let me think about the price."] * 20
THINKING = [CHAT[0], {"role": "assistant", "content": "<think>cheap</think>12 dollars."}, CHAT[2], CHAT[3]]


def shape_tokenizer(shape):
    """A small byte-level BPE tokenizer with the shape's control tokens (and its own BOS when it adds one)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=list(shape.special),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    core.train_from_iterator(SHAPE_CORPUS, trainer)
    if shape.adds_bos:
        core.post_processor = processors.TemplateProcessing(
            single=f"{shape.bos} $A", special_tokens=[(shape.bos, core.token_to_id(shape.bos))]
        )
    others = [t for t in shape.special if t not in (shape.bos, shape.eos, shape.pad)]
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=shape.bos, eos_token=shape.eos,
                                  pad_token=shape.pad, additional_special_tokens=others)  # fmt: skip
    tok.chat_template = shape.template
    return tok


# shape: (what sftviz's collator shows, what transformers' LM collator shows), on three conversations
SHAPE_FINDINGS = {
    "llama3": ({"template-eos-differs"}, {"template-eos-differs", "template-trained", "roles-trained"}),
    "qwen2.5": ({"injected-system"}, {"injected-system", "injected-system-trained", "template-trained", "roles-trained"}),
    "qwen3": ({"not-prefix-preserving", "row-failed", "template-trained"},
              {"not-prefix-preserving", "template-trained", "roles-trained"}),
    "mistral": (set(), {"eos-not-trained", "template-trained", "roles-trained"}),
    "gemma": ({"template-eos-differs"}, {"template-eos-differs", "template-trained", "roles-trained"}),
    "phi3": ({"template-eos-differs"}, {"template-eos-differs", "template-trained", "roles-trained"}),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SHAPE_FINDINGS))
def test_each_family_format_shows_its_known_traps(name):
    from sftviz.xray.marked import marked_template
    from sftviz.xray.templates import SHAPES

    tok = shape_tokenizer(SHAPES[name])
    rows = [{"messages": THINKING}, {"messages": CHAT[2:]}, {"messages": CHAT[:2]}]
    for pipeline, want in zip(("sftviz", "hf-lm"), SHAPE_FINDINGS[name]):
        assert set(xray(rows, tok, pipeline).counts()) == want, (name, pipeline)
    if name == "qwen3":  # the last turn's empty <think> block is template text the collator trains
        rx = xray(rows[2:], tok).rows[0]
        boiler = [rx.tokens[t] for t, s in enumerate(rx.segments) if s == "template" and rx.trained[t]]
        assert "".join(boiler) == "<think>\n\n</think>\n\n"
        with pytest.raises(ValueError, match="does not render each message on its own"):
            marked_template(tok, rows)
    else:
        marked = marked_template(tok, rows)
        for row in rows:
            enc = tok.apply_chat_template(row["messages"], tokenize=True, return_dict=True,
                                          return_assistant_tokens_mask=True, chat_template=marked)  # fmt: skip
            ex = sv.build_example(tok, messages=row["messages"], add_bos=False)
            assert enc["input_ids"] == ex.input_ids
            assert enc["assistant_masks"] == [int(v != -100) for v in ex.labels], name


def test_trl_trains_what_sftviz_trains_with_a_marked_copy_of_the_template(chatml_eot, tmp_path):
    """A template without {% generation %}: TRL refuses assistant_only_loss; with sftviz's marked copy,
    TRL's own preparation gives sftviz's labels."""
    pytest.importorskip("trl")
    from sftviz.xray.marked import marked_template

    tok = with_template(chatml_eot, INJECTING)
    rows = [*CHAT_ROWS, {"messages": [{"role": "system", "content": "Be brief."}, *CHAT]}]
    assert fired(xray(rows, tok, "trl-assistant-only"), "all-zero-mask") == 3
    tok.chat_template = marked_template(tok, rows)
    report = xray(rows, tok, "trl-assistant-only")
    assert set(report.counts()) == {"injected-system"}  # shown, not trained
    for rx, row in zip(report.rows, rows):
        assert rx.labels == sv.build_example(tok, messages=row["messages"], add_bos=False).labels
    with pytest.raises(ValueError, match="no chat template"):
        marked_template(_no_template(chatml_eot))


def _no_template(tok):
    tok = copy.deepcopy(tok)
    tok.chat_template = None
    return tok


def test_token_view_of_an_xray_row_marks_each_disagreement(bundled_tok):
    from sftviz import widgets as W

    report = xray(sv.load_dataset("support-chat")[:1], bundled_tok, pipeline="hf-lm")
    rx = report.rows[0]
    view = W.TokenView(rx)
    flags = {t["position"]: t["xray"] for t in view.tokens if t["xray"]}
    assert flags == dict(rx.disagreements) and view.title == "X-ray of row 0"
    assert any("X-ray: trained, the policy says no" in t["tip"] for t in view.tokens)
    html = view.static_html()
    assert html.count('class="sftviz-xr"') == len(flags) and "sftviz-xrayview" in html
    first = min(flags)
    view.set_trained(first, not rx.trained[first])  # trained as the policy asks: no mark there any more
    assert first not in {t["position"] for t in view.tokens if t["xray"]}
    with pytest.raises(ValueError, match="one value"):
        W.TokenView(rx.example(), expected=[1, 0])


def test_a_turn_opener_used_as_bos_is_named(chatml_eot):
    """SmolLM2's shape: its nominal BOS is ChatML's <|im_start|>; sftviz prepends it to plain rows, TRL does not."""
    tok = copy.deepcopy(chatml_eot)
    tok.bos_token = "<|im_start|>"
    assert fired(xray(PAIRS, tok, "sftviz"), "bos-added") == 2
    assert fired(xray(PAIRS, tok, "hf-lm"), "bos-added") == 0  # no BOS there
    assert fired(xray(CHAT_ROWS, tok, "sftviz"), "bos-added") == 0  # the template writes it: aligned
    gpt2_like = copy.deepcopy(chatml_eot)  # <|endoftext|> as BOS, never a turn opener
    assert fired(xray(PAIRS, gpt2_like, "sftviz"), "bos-added") == 0


def test_rows_from_a_datasets_dataset(chatml_eot):
    from datasets import Dataset

    report = xray(Dataset.from_list(PAIRS), chatml_eot, "sftviz")
    assert [rx.kind for rx in report.rows] == ["prompt_completion"] * 2 and not report.findings


def test_smollm2s_real_tokenizer_and_template():
    """The real model's tokenizer (installed in CI): its injected system prompt, pad == eos, TRL's refusal
    of its template, and sftviz's marked copy that TRL then trains as sftviz does."""
    from sftviz import models
    from sftviz.modeling import load_tokenizer
    from sftviz.xray.marked import marked_template

    try:
        models.converted_path(convert=False)
    except ValueError as err:
        pytest.skip(f"the real model is not installed: {err}")
    tok = load_tokenizer("smollm2-135m-instruct")
    rows = [
        {"messages": [m for m in r["messages"] if m["role"] != "system"]} for r in sv.load_dataset("support-chat")[:3]
    ]
    lm = xray(rows, tok, "hf-lm")
    assert {"injected-system", "injected-system-trained", "eos-not-trained"} <= set(lm.counts())
    assert "pad == eos" in lm.first("eos-not-trained").message
    assert fired(xray(sv.load_dataset("support")[:2], tok, "sftviz"), "bos-added") == 2
    if importlib.util.find_spec("trl") is None:
        return
    assert fired(xray(rows, tok, "trl-assistant-only"), "all-zero-mask") == 3
    marked = copy.deepcopy(tok)
    marked.chat_template = marked_template(tok, rows)
    report = xray(rows, marked, "trl-assistant-only")
    assert not report.stats()["rows_differ"] and "all-zero-mask" not in report.counts()


def test_many_rows_are_split_over_forked_processes_with_the_same_result(bundled_tok):
    from sftviz.xray.core import policy_examples

    rows = (sv.load_dataset("support-chat") * 8)[:400]
    forked = policy_examples(bundled_tok, rows, Policy(), workers=2)
    serial = policy_examples(bundled_tok, rows, Policy(), workers=1)
    assert [e.labels for e, _ in forked] == [e.labels for e, _ in serial]

    def fails(row):
        raise RuntimeError("my pipeline broke")

    report = xray(rows[:2], bundled_tok, fails)  # a user's function: its error marks the row, and goes on
    assert fired(report, "row-failed") == 2 and "my pipeline broke" in report.first("row-failed").message
