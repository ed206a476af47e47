"""Loss normalisation as data (sftviz.reductions): only the step-level token mean gives the full batch's
gradient for any split into micro-batches and processes; every other reduction does not when lengths differ."""

from __future__ import annotations

import pytest

import sftviz as sv
from sftviz.reductions import REDUCTIONS, gradient_distances

ROWS = sv.load_dataset("explain", split="eval")[:4] + sv.load_dataset("support", split="eval")[:8]  # long and short


@pytest.fixture(scope="module")
def bundled():
    return sv.load_model(device="cpu")


@pytest.mark.parametrize(("micro_batches", "processes"), [(2, 1), (3, 2)])
def test_only_the_step_token_mean_gives_the_full_batch_gradient(bundled, micro_batches, processes):
    model, tok = bundled
    before = [p.detach().clone() for p in model.parameters()]
    got = {
        d["reduction"]: d
        for d in gradient_distances(model, tok, ROWS, micro_batches=micro_batches, processes=processes)
    }
    assert set(got) == set(REDUCTIONS)
    assert got["step_token_mean"]["relative_l2"] < 1e-4 and got["step_token_mean"]["cosine"] > 0.99999
    for name in ("micro_batch_mean_of_means", "sequence_mean", "packed_row_mean"):
        assert got[name]["relative_l2"] > 1e-3, (name, got[name])
    if processes > 1:
        assert got["process_mean_of_means"]["relative_l2"] > 1e-3
    # the sum points the same way, at another size: a learning rate away from the mean
    assert got["token_sum"]["cosine"] > 0.99999 and got["token_sum"]["relative_l2"] > 1
    assert all(p.equal(b) for p, b in zip(model.parameters(), before))  # the model is not changed


def test_bad_splits(bundled):
    model, tok = bundled
    with pytest.raises(ValueError, match="at least 1"):
        gradient_distances(model, tok, ROWS, micro_batches=0)
    with pytest.raises(ValueError, match="cannot fill"):
        gradient_distances(model, tok, ROWS[:3], micro_batches=2, processes=2)
