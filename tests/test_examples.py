"""build_example: the concatenation [x, y], its labels, masks and segments."""

import warnings

import pytest

import sftviz as sv
from sftviz.data import IGNORE_INDEX

QA = ("Question: How much is the lamp?\nAnswer:", " 12 dollars.")


def test_fields_align_and_only_the_completion_is_trained(gpt2_tok):
    ex = sv.build_example(gpt2_tok, prompt=QA[0], completion=QA[1])
    n = len(ex.input_ids)
    for name in ("labels", "completion_mask", "prompt_mask", "segments", "tokens", "weights"):
        assert len(getattr(ex, name)) == n, name
    eos = gpt2_tok.eos_token_id
    prompt_ids = gpt2_tok(QA[0], add_special_tokens=False).input_ids
    completion_ids = gpt2_tok(QA[1], add_special_tokens=False).input_ids
    # GPT-2 style: the EOS token doubles as BOS and is prepended, so the first prompt token is scored.
    assert ex.input_ids == [eos] + prompt_ids + completion_ids + [eos]
    assert ex.labels == [IGNORE_INDEX] * (1 + len(prompt_ids)) + completion_ids + [eos]
    assert ex.segments == ["bos"] + ["prompt"] * len(prompt_ids) + ["completion"] * len(completion_ids) + ["eos"]
    assert ex.completion_mask == [0] * (1 + len(prompt_ids)) + [1] * (len(completion_ids) + 1)
    assert ex.prompt_mask == [0] + [1] * len(prompt_ids) + [0] * (len(completion_ids) + 1)
    assert "".join(ex.tokens[1:-1]) == QA[0] + QA[1]
    assert ex.n_prompt == 1 + len(prompt_ids)
    assert ex.boundary_note is None


def test_full_masking_trains_everything_but_position_zero(gpt2_tok):
    ex = sv.build_example(gpt2_tok, prompt=QA[0], completion=QA[1], masking="full")
    assert ex.labels[0] == IGNORE_INDEX
    assert ex.labels[1:] == ex.input_ids[1:]
    assert ex.with_masking("completion").labels == sv.build_example(gpt2_tok, prompt=QA[0], completion=QA[1]).labels


def test_prompt_loss_weight_sets_weights(gpt2_tok):
    ex = sv.build_example(gpt2_tok, prompt=QA[0], completion=QA[1], masking=0.1)
    for seg, w, lab in zip(ex.segments, ex.weights, ex.labels):
        if seg == "bos":
            assert (w, lab) == (0.0, IGNORE_INDEX)
        elif seg == "prompt":
            assert w == pytest.approx(0.1) and lab != IGNORE_INDEX
        else:
            assert w == 1.0 and lab != IGNORE_INDEX


def test_eos_is_trained_even_when_pad_equals_eos(gpt2_tok_padded):
    tok = gpt2_tok_padded
    assert tok.pad_token_id == tok.eos_token_id
    ex = sv.build_example(tok, prompt=QA[0], completion=QA[1])
    assert ex.segments[-1] == "eos" and ex.labels[-1] == tok.eos_token_id


def test_no_eos_when_asked(gpt2_tok):
    ex = sv.build_example(gpt2_tok, prompt=QA[0], completion=QA[1], add_eos=False)
    assert ex.segments[-1] == "completion"


def test_add_bos_false_and_tokenizer_without_bos(gpt2_tok):
    ex = sv.build_example(gpt2_tok, prompt=QA[0], completion=QA[1], add_bos=False)
    assert ex.segments[0] == "prompt" and "no BOS" in ex.notes[0]


def test_boundary_merge_is_reported_not_hidden(gpt2_tok):
    with pytest.warns(sv.BoundaryMergeWarning, match="merge across"):
        ex = sv.build_example(gpt2_tok, prompt="Answer: ", completion="yes")
    note = ex.boundary_note
    assert note is not None
    # The example keeps the separate tokenization: the completion starts exactly at "yes".
    assert ex.tokens[ex.n_prompt] == "yes"
    assert note.separate != note.joined
    assert "".join(note.separate) == "".join(note.joined)
    # Without the trailing space there is no merge and no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sv.build_example(gpt2_tok, prompt="Answer:", completion=" yes").boundary_note is None


def test_max_length_cuts_the_prompt_from_the_left(gpt2_tok):
    full = sv.build_example(gpt2_tok, prompt=QA[0], completion=QA[1])
    ex = sv.build_example(gpt2_tok, prompt=QA[0], completion=QA[1], max_length=len(full) - 3)
    assert len(ex) == len(full) - 3
    assert ex.input_ids[0] == full.input_ids[0]  # BOS kept
    assert ex.input_ids[1:] == full.input_ids[4:]
    assert "cut from the left" in ex.notes[0]


def test_max_length_too_short_for_the_completion(gpt2_tok):
    with pytest.raises(ValueError, match="does not fit max_length"):
        sv.build_example(gpt2_tok, prompt=QA[0], completion=QA[1], max_length=3)
    with pytest.warns(UserWarning, match="completion was cut"):
        ex = sv.build_example(gpt2_tok, prompt=QA[0], completion=QA[1], max_length=4, truncate_completion=True)
    assert len(ex) == 4 and sum(ex.trained) >= 1


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(prompt=None, completion="x"), TypeError, "prompt is None"),
        (dict(prompt=3, completion="x"), TypeError, "prompt must be a string"),
        (dict(prompt="x", completion=b"y"), TypeError, "completion must be a string"),
        (dict(prompt="x", completion="", add_eos=False), ValueError, "nothing to train"),
        (dict(prompt="x", completion="y", masking="answers"), ValueError, "Unknown masking"),
        (dict(prompt="x", completion="y", masking=1.5), ValueError, r"\[0, 1\]"),
        (dict(prompt="x", completion="y", masking=True), TypeError, "not a bool"),
        (dict(prompt="x", completion="y", max_length=0), ValueError, "max_length"),
        (dict(), TypeError, "needs prompt"),
        (dict(prompt="x", completion="y", messages=[]), ValueError, "not both"),
    ],
)
def test_bad_input(gpt2_tok, kwargs, err, match):
    with pytest.raises(err, match=match):
        sv.build_example(gpt2_tok, **kwargs)


def test_not_a_tokenizer():
    with pytest.raises(TypeError, match="tokenizer"):
        sv.build_example("gpt2", prompt="a", completion="b")


def test_empty_completion_trains_only_eos(gpt2_tok):
    ex = sv.build_example(gpt2_tok, prompt="Say nothing.", completion="")
    assert [s for s, t in zip(ex.segments, ex.trained) if t] == ["eos"]


def test_set_trained_toggles_one_token(gpt2_tok):
    ex = sv.build_example(gpt2_tok, prompt=QA[0], completion=QA[1])
    ex.set_trained(2, True)
    assert ex.labels[2] == ex.input_ids[2] and ex.weights[2] == 1.0 and ex.masking == "custom"
    ex.set_trained(2, False)
    assert ex.labels[2] == IGNORE_INDEX
    with pytest.raises(ValueError, match="Position 0"):
        ex.set_trained(0, True)
    with pytest.raises(ValueError, match="outside"):
        ex.set_trained(len(ex), True)


def test_rows_make_the_shift_visible(gpt2_tok):
    ex = sv.build_example(gpt2_tok, prompt=QA[0], completion=QA[1])
    rows = ex.rows()
    last_prompt = ex.n_prompt - 1
    # The first completion token is predicted from the last prompt position.
    assert rows[last_prompt]["predicts"] == ex.tokens[ex.n_prompt]
    assert rows[ex.n_prompt]["predicted_from"] == last_prompt
    assert rows[-1]["predicts"] is None  # the prediction at the last token is never scored
    assert rows[0]["predicted_from"] is None


@pytest.mark.parametrize(
    "prompt, completion",
    [
        ("Ünïcødé prömpt 🙂 ", "emoji 🎉 answer"),
        ('<img src=x onerror=alert(1)> & "quotes"', " </script>"),
        ("   spaces   ", "   "),
        ("\n\n", "\t"),
        ("word " * 400, " end"),
    ],
)
def test_adversarial_text_roundtrips(gpt2_tok, prompt, completion):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sv.BoundaryMergeWarning)
        ex = sv.build_example(gpt2_tok, prompt=prompt, completion=completion)
    body = [i for i, s in zip(ex.input_ids, ex.segments) if s in ("prompt", "completion")]
    assert gpt2_tok.decode(body) == prompt + completion
    assert gpt2_tok.decode([i for i, s in zip(ex.input_ids, ex.segments) if s == "completion"]) == completion


CONV = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "How much is the lamp?"},
    {"role": "assistant", "content": "12 dollars."},
    {"role": "user", "content": "Colour?"},
    {"role": "assistant", "content": "teal"},
]


def _trained_text(tok, ex):
    return tok.decode([i for i, t in zip(ex.input_ids, ex.trained) if t])


def test_chat_trains_assistant_turns_and_their_end_token(gpt2_tok):
    ex = sv.build_example(gpt2_tok, messages=CONV)
    assert _trained_text(gpt2_tok, ex) == "12 dollars.<|im_end|>teal<|im_end|>"
    assert {s for s, t in zip(ex.segments, ex.trained) if t} == {"assistant", "end_of_turn"}
    assert {s for s, t in zip(ex.segments, ex.trained) if not t} == {"bos", "template", "system", "user"}
    # The user's content is labelled as the user's, the role header as template.
    user_text = "".join(t for t, s in zip(ex.tokens, ex.segments) if s == "user")
    assert user_text == "How much is the lamp?Colour?"
    last = sv.build_example(gpt2_tok, messages=CONV, train_on="last")
    assert _trained_text(gpt2_tok, last) == "teal<|im_end|>"


def test_chat_ids_match_the_template(gpt2_tok):
    ex = sv.build_example(gpt2_tok, messages=CONV)
    text = gpt2_tok.apply_chat_template(CONV, tokenize=False)
    assert ex.input_ids[1:] == gpt2_tok(text, add_special_tokens=False).input_ids


@pytest.mark.parametrize(
    "messages, match",
    [
        ([], "empty"),
        ("hello", "must be a list"),
        ([{"role": "user", "content": "hi"}], "no assistant"),
        ([{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}], "unknown role"),
        ([{"role": "assistant", "content": "x"}, {"role": "user", "content": "hi"}], "start with a user"),
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}],
            "in a row",
        ),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "system", "content": "b"},
                {"role": "assistant", "content": "c"},
            ],
            "only come first",
        ),
        ([{"role": "user", "content": None}, {"role": "assistant", "content": "c"}], "is None"),
        ([{"role": "user"}], "'role' and 'content'"),
    ],
)
def test_chat_bad_input(gpt2_tok, messages, match):
    with pytest.raises((ValueError, TypeError), match=match):
        sv.build_example(gpt2_tok, messages=messages)


def test_chat_template_that_rewrites_history_is_refused(gpt2_tok):
    import copy

    tok = copy.deepcopy(gpt2_tok)
    # Drops earlier assistant turns' content, like templates that strip reasoning: not prefix-stable.
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}<|im_start|>assistant\n<|im_end|>"
        "{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    with pytest.raises(ValueError, match="prefix-stable"):
        sv.build_example(tok, messages=CONV)
