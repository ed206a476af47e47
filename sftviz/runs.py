"""Run records and saving/loading them (the code lives in :mod:`sftviz.train.runs` and
:mod:`sftviz.train.runfile`)."""

from .train.records import EvalRecord, StepRecord
from .train.runfile import FORMAT, FORMAT_VERSION, STATUSES, load_run, weights_path
from .train.runs import TIMING_KEYS, Run

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
