"""sv.load_dataset on files: splits that never hand the same rows to train and eval, and errors that
name the line and the field."""

import json
import warnings

import pytest

import sftviz as sv

ROWS = [{"prompt": f"Question {i}?", "completion": f" Answer {i}."} for i in range(10)]
CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _key(row):
    return json.dumps(row, sort_keys=True)


# ------------------------------------------------------------------------------------------------
# Splits
# ------------------------------------------------------------------------------------------------


def test_bundled_datasets_keep_their_splits():
    train, held = sv.load_dataset("support"), sv.load_dataset("support", split="eval")
    assert train == sv.load_dataset("support", split="train")
    assert not {_key(r) for r in train} & {_key(r) for r in held}
    with pytest.raises(ValueError, match="Unknown split 'all'"):
        sv.load_dataset("support", split="all")
    with pytest.raises(ValueError, match="bundled with its own train and eval"):
        sv.load_dataset("support", split="eval", eval_fraction=0.2)


def test_a_file_without_a_split_gives_every_row_and_refuses_train_or_eval(tmp_path):
    path = _write(tmp_path / "mine.jsonl", ROWS)
    assert sv.load_dataset(path) == ROWS == sv.load_dataset(path, split="all")
    for split in ("train", "eval"):
        with pytest.raises(ValueError, match="has no train/eval split") as info:
            sv.load_dataset(path, split=split)
        text = str(info.value)  # the three ways to make one, named
        assert '"split": "train" or "eval" field' in text and "mine-eval.jsonl" in text and "eval_fraction=0.2" in text
    with pytest.raises(ValueError, match="Unknown split 'test'"):
        sv.load_dataset(path, split="test")
    with pytest.raises(TypeError, match="split must be a string"):
        sv.load_dataset(path, split=1)


def test_a_split_field_in_the_rows_is_filtered_and_removed(tmp_path):
    rows = [dict(r, split="eval" if i % 4 == 0 else "train") for i, r in enumerate(ROWS)]
    path = _write(tmp_path / "mine.jsonl", rows)
    train, held = sv.load_dataset(path, split="train"), sv.load_dataset(path, split="eval")
    assert held == [ROWS[0], ROWS[4], ROWS[8]] and train == [r for i, r in enumerate(ROWS) if i % 4]
    assert sv.load_dataset(path, split="all") == rows  # every row as written, the field kept
    with pytest.raises(ValueError, match="already has a split"):
        sv.load_dataset(path, split="train", eval_fraction=0.2)


def test_split_field_problems_name_the_line(tmp_path):
    path = _write(tmp_path / "some.jsonl", [dict(ROWS[0], split="train"), ROWS[1]])
    with pytest.raises(ValueError, match=r"some.jsonl, line 2: no 'split' field, but other rows have one"):
        sv.load_dataset(path, split="train")
    path = _write(tmp_path / "bad.jsonl", [dict(ROWS[0], split="train"), dict(ROWS[1], split="test")])
    with pytest.raises(ValueError, match=r"bad.jsonl, line 2: 'split' is 'test'"):
        sv.load_dataset(path)
    path = _write(tmp_path / "only.jsonl", [dict(r, split="train") for r in ROWS])
    with pytest.raises(ValueError, match="no row with 'split': 'eval'"):
        sv.load_dataset(path, split="eval")


def test_a_row_in_both_splits_gives_a_warning(tmp_path):
    path = _write(tmp_path / "dup.jsonl", [dict(ROWS[0], split="train"), dict(ROWS[0], split="eval")])
    with pytest.warns(UserWarning, match="1 of the 1 rows .* also appear"):
        sv.load_dataset(path, split="eval")


def test_sibling_files_hold_the_splits(tmp_path):
    _write(tmp_path / "shop.jsonl", ROWS[:7])
    _write(tmp_path / "shop-eval.jsonl", ROWS[7:])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overlap, no warning
        assert sv.load_dataset(tmp_path / "shop.jsonl", split="train") == ROWS[:7]
        assert sv.load_dataset(tmp_path / "shop.jsonl", split="eval") == ROWS[7:]
    assert sv.load_dataset(tmp_path / "shop.jsonl") == ROWS[:7]  # the file itself, all of it
    # NAME-train / NAME-eval, reached from either name, or from NAME.jsonl that does not exist
    _write(tmp_path / "kb-train.jsonl", ROWS[:6])
    _write(tmp_path / "kb-eval.jsonl", ROWS[6:])
    for given in ("kb.jsonl", "kb-train.jsonl", "kb-eval.jsonl"):
        assert sv.load_dataset(tmp_path / given, split="train") == ROWS[:6]
        assert sv.load_dataset(tmp_path / given, split="eval") == ROWS[6:]
    with pytest.raises(ValueError, match="No dataset"):
        sv.load_dataset(tmp_path / "kb.jsonl")  # every row of a file that is not there
    with pytest.raises(ValueError, match="already has a split"):
        sv.load_dataset(tmp_path / "kb.jsonl", split="eval", eval_fraction=0.2)
    _write(tmp_path / "leak-train.jsonl", ROWS[:6])
    _write(tmp_path / "leak-eval.jsonl", ROWS[4:])
    with pytest.warns(UserWarning, match="2 of the 6 rows of leak-eval.jsonl also appear in leak-train.jsonl"):
        sv.load_dataset(tmp_path / "leak.jsonl", split="eval")


def test_eval_fraction_makes_a_fixed_split_with_no_row_in_both(tmp_path):
    rows = [*ROWS, ROWS[3], CHAT]  # a duplicate row stays on one side
    path = _write(tmp_path / "mine.jsonl", rows)
    train = sv.load_dataset(path, split="train", eval_fraction=0.25)
    held = sv.load_dataset(path, split="eval", eval_fraction=0.25)
    assert len(train) + len(held) == len(rows) and 2 <= len(held) <= 4
    assert not {_key(r) for r in train} & {_key(r) for r in held}
    assert sorted(map(_key, train + held)) == sorted(map(_key, rows))
    assert [r for r in rows if r in train] == train  # file order kept
    assert sv.load_dataset(path, split="eval", eval_fraction=0.25) == held  # the same every time
    # it depends on the rows' text, not their order; another seed gives another split
    _write(tmp_path / "reversed.jsonl", rows[::-1])
    assert sorted(map(_key, sv.load_dataset(tmp_path / "reversed.jsonl", split="eval", eval_fraction=0.25))) == sorted(
        map(_key, held)
    )
    others = [sv.load_dataset(path, split="eval", eval_fraction=0.25, split_seed=s) for s in range(1, 6)]
    assert any(o != held for o in others)
    # at least one row each side
    assert len(sv.load_dataset(path, split="eval", eval_fraction=0.01)) == 1
    assert len(sv.load_dataset(path, split="train", eval_fraction=0.99)) == 1


@pytest.mark.parametrize(
    "kw, err, match",
    [
        (dict(eval_fraction=0), ValueError, "between 0 and 1"),
        (dict(eval_fraction=1.0), ValueError, "between 0 and 1"),
        (dict(eval_fraction=True), ValueError, "between 0 and 1"),
        (dict(eval_fraction="0.2"), ValueError, "between 0 and 1"),
        (dict(eval_fraction=0.2, split_seed=1.5), TypeError, "split_seed"),
        (dict(eval_fraction=0.2, split="all"), ValueError, "split='train' or split='eval'"),
    ],
)
def test_eval_fraction_bad_input(tmp_path, kw, err, match):
    path = _write(tmp_path / "mine.jsonl", ROWS)
    with pytest.raises(err, match=match):
        sv.load_dataset(path, **({"split": "eval"} | kw))


def test_eval_fraction_needs_two_different_rows(tmp_path):
    with pytest.raises(ValueError, match="at least 2 rows"):
        sv.load_dataset(_write(tmp_path / "one.jsonl", ROWS[:1]), split="eval", eval_fraction=0.5)
    with pytest.raises(ValueError, match="all the same row"):
        sv.load_dataset(_write(tmp_path / "same.jsonl", ROWS[:1] * 3), split="eval", eval_fraction=0.5)


# ------------------------------------------------------------------------------------------------
# A bad file: the line number and the field
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, match",
    [
        ("{not json", "not valid JSON"),
        ('["a", "b"]', "expected a JSON object, got list"),
        ('"text"', "expected a JSON object, got str"),
        ('{"prompt": "a"}', "missing 'completion'"),
        ('{"completion": "a"}', "missing 'prompt'"),
        ('{"prompt": "a", "completion": 3}', "'completion' must be a string, got int"),
        ('{"prompt": null, "completion": "b"}', "'prompt' is None"),
        ('{"messages": []}', "messages is empty"),
        ('{"messages": "hi"}', "messages must be a list"),
        ('{"messages": [{"role": "user", "content": "a"}, {"content": "b"}]}', r"messages\[1\] has no 'role' field"),
        ('{"messages": [{"role": "user"}]}', r"messages\[0\] has no 'content' field"),
        ('{"messages": [{}]}', r"messages\[0\] has no 'role' and no 'content' field"),
        ('{"messages": ["hi"]}', r"messages\[0\] must be an object"),
        (
            '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": 5}]}',
            "message 1 content must be a string, got int",
        ),
        ('{"messages": [{"role": "bot", "content": "x"}]}', "Message 0 has unknown role 'bot'"),
    ],
)
def test_a_bad_line_is_named_with_its_number_and_field(tmp_path, line, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"bad.jsonl, line 3: {match}"):
        sv.load_dataset(path)
    with pytest.raises(ValueError, match=rf"bad.jsonl, line 3: {match}"):
        sv.load_dataset(path, split="train", eval_fraction=0.5)  # checked whatever the split


@pytest.mark.parametrize("text, line, what", [("", 1, "empty"), ("\n  \n", 2, "only blank lines")])
def test_an_empty_file_is_named(tmp_path, text, line, what):
    path = tmp_path / "empty.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=rf"empty.jsonl, line {line}: the file holds no rows \({what}\)"):
        sv.load_dataset(path)


def test_chat_rows_load_and_split(tmp_path):
    chats = [
        {"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": f"A{i}"}]}
        for i in range(6)
    ]
    path = _write(tmp_path / "chat.jsonl", chats)
    held = sv.load_dataset(path, split="eval", eval_fraction=0.5)
    assert len(held) == 3 and all("messages" in r for r in held)
