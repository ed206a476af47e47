"""The batched-runs benchmark computes the same runs as the serial ones (issue 14: K copies trained as one
vmapped computation must reproduce each copy's serial run). Its timing is the benchmark's business
(bench/RESULTS.md); this checks the numbers."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench_batched():
    sys.path.insert(0, str(BENCH))  # the bench scripts import their _common module by name
    try:
        spec = importlib.util.spec_from_file_location("bench_batched", BENCH / "bench_batched.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


def test_batched_copies_reproduce_their_serial_runs(bench_batched):
    import sftviz as sv
    from sftviz.datasets import load_dataset

    model, tok = sv.load_model("sftviz-tiny", device="cpu")
    rows = load_dataset("support", split="train")
    data = bench_batched.batches(tok, rows, k=3, steps=4, batch=2, seed=0)
    _, serial = bench_batched.serial(model, data, 3)
    _, batched = bench_batched.batched(model, data, 3)
    assert len(serial) == len(batched) == 3 and all(len(r) == 4 for r in batched)
    for s, b in zip(serial, batched):
        assert b == pytest.approx(s, abs=1e-4)
    # the copies really are different runs: each trains on its own batches
    assert len({round(r[-1], 4) for r in serial}) == 3
