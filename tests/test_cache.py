"""The run cache (sftviz.train.cache): a finished run is trained once, keyed by everything that determines it."""

import pytest

import sftviz as sv
from sftviz.train import cache as run_cache

ROWS = [{"prompt": "Question: How much is the lamp?\nAnswer:", "completion": " 12 dollars."}] * 8
KW = dict(steps=2, batch_size=4, progress=False, eval_every=None)


def test_a_run_is_trained_once_and_read_back_the_same(tiny_model, gpt2_tok_padded, tmp_path):
    first = sv.finetune(tiny_model, gpt2_tok_padded, ROWS, cache=tmp_path, **KW)
    again = sv.finetune(tiny_model, gpt2_tok_padded, ROWS, cache=tmp_path, **KW)
    assert not first.cached and first.model is not None
    assert again.cached and again.model is None
    assert [dict(r) for r in again.history] == [dict(r) for r in first.history]
    assert again.config == first.config and again.status == "finished"
    assert len(list(tmp_path.glob("*.json"))) == 1


@pytest.mark.parametrize("change", [{"seed": 1}, {"lr": 5e-4}, {"steps": 3}, {"masking": "full"}])
def test_anything_that_determines_a_run_changes_the_key(tiny_model, gpt2_tok_padded, tmp_path, change):
    sv.finetune(tiny_model, gpt2_tok_padded, ROWS, cache=tmp_path, **KW)
    other = sv.finetune(tiny_model, gpt2_tok_padded, ROWS, cache=tmp_path, **{**KW, **change})
    assert not other.cached


def test_other_data_or_weights_change_the_key(tiny_model, gpt2_tok_padded, tmp_path):
    import copy

    import torch

    sv.finetune(tiny_model, gpt2_tok_padded, ROWS, cache=tmp_path, **KW)
    rows = [{**ROWS[0], "completion": " 13 dollars."}] * 8
    assert not sv.finetune(tiny_model, gpt2_tok_padded, rows, cache=tmp_path, **KW).cached
    nudged = copy.deepcopy(tiny_model)
    with torch.no_grad():
        next(nudged.parameters()).add_(1e-3)
    assert not sv.finetune(nudged, gpt2_tok_padded, ROWS, cache=tmp_path, **KW).cached


def test_the_environment_variable_and_when_nothing_is_cached(tiny_model, gpt2_tok_padded, tmp_path, monkeypatch):
    monkeypatch.setenv(run_cache.ENV, str(tmp_path))
    sv.finetune(tiny_model, gpt2_tok_padded, ROWS, **KW)
    assert sv.finetune(tiny_model, gpt2_tok_padded, ROWS, **KW).cached
    assert not sv.finetune(tiny_model, gpt2_tok_padded, ROWS, cache=False, **KW).cached
    # runs with callbacks, and runs that train the caller's model in place, are never taken from the cache
    assert not sv.finetune(tiny_model, gpt2_tok_padded, ROWS, callbacks=[lambda rec, run: None], **KW).cached
    import copy

    model = copy.deepcopy(tiny_model)
    assert not sv.finetune(model, gpt2_tok_padded, ROWS, copy_model=False, **KW).cached


def test_a_broken_cache_file_is_trained_again(tiny_model, gpt2_tok_padded, tmp_path):
    sv.finetune(tiny_model, gpt2_tok_padded, ROWS, cache=tmp_path, **KW)
    (path,) = tmp_path.glob("*.json")
    path.write_text("{not json")
    run = sv.finetune(tiny_model, gpt2_tok_padded, ROWS, cache=tmp_path, **KW)
    assert not run.cached and sv.finetune(tiny_model, gpt2_tok_padded, ROWS, cache=tmp_path, **KW).cached


def test_bad_cache_arguments(tiny_model, gpt2_tok_padded):
    with pytest.raises(ValueError, match="names no folder"):
        sv.finetune(tiny_model, gpt2_tok_padded, ROWS, cache=True, **KW)
    with pytest.raises(TypeError, match="folder path"):
        sv.finetune(tiny_model, gpt2_tok_padded, ROWS, cache=3, **KW)


def test_a_model_changed_in_place_gets_a_new_fingerprint(tiny_model):
    import copy

    import torch

    model = copy.deepcopy(tiny_model)
    first = run_cache.model_fingerprint(model)
    assert run_cache.model_fingerprint(model) == first  # remembered
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    second = run_cache.model_fingerprint(model)
    assert second != first
    model.config.resid_pdrop = 0.5  # a setting that changes training, no tensor touched
    assert run_cache.model_fingerprint(model) != second
    model.config._name_or_path = "/somewhere/else"  # where it was loaded from is not part of it
    model.config.resid_pdrop = tiny_model.config.resid_pdrop
    assert run_cache.model_fingerprint(model) == second


def test_auto_is_the_folder_when_set_and_runs_without_models_use_it(tiny_model, gpt2_tok_padded, tmp_path, monkeypatch):
    # cache="auto": $SFTVIZ_RUN_CACHE when it is set, else the shipped records only (nothing is stored)
    monkeypatch.delenv(run_cache.ENV, raising=False)
    assert run_cache.cache_folder("auto") is None
    assert not sv.finetune(tiny_model, gpt2_tok_padded, ROWS, cache="auto", **KW).cached
    monkeypatch.setenv(run_cache.ENV, str(tmp_path))
    assert run_cache.cache_folder("auto") == tmp_path
    assert not sv.finetune(tiny_model, gpt2_tok_padded, ROWS, cache="auto", **KW).cached
    assert sv.finetune(tiny_model, gpt2_tok_padded, ROWS, cache="auto", **KW).cached
    # compare_masking without models reads a cache by default (cache='auto'); cache=False trains with models
    kw = {k: v for k, v in KW.items() if k != "steps"}
    without = sv.compare_masking(tiny_model, gpt2_tok_padded, ROWS, ("completion",), steps=2, keep_models=False, **kw)
    assert without["completion"].cached
    kept = sv.compare_masking(tiny_model, gpt2_tok_padded, ROWS, ("completion",), steps=2, cache=False, **kw)
    assert not kept["completion"].cached and kept["completion"].model is not None
