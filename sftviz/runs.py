"""Run records and saving/loading them (the code lives in :mod:`sftviz.train.runs`)."""

from .train.records import EvalRecord, StepRecord
from .train.runs import FORMAT, FORMAT_VERSION, STATUSES, TIMING_KEYS, Run, load_run, weights_path

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "STATUSES",
    "TIMING_KEYS",
    "EvalRecord",
    "Run",
    "StepRecord",
    "load_run",
    "weights_path",
]
