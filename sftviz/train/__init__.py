"""Fine-tuning: :func:`finetune` and :func:`compare_masking`, and what they return.

The code is split by what it does (read it in this order): :mod:`.config` (the settings, one frozen
:class:`FinetuneConfig`), :mod:`.table` (the data as padded tensors, the batch order), :mod:`.engine`
(one optimiser step, top to bottom), :mod:`.evaluation` (held-out scores and greedy answers),
:mod:`.records` (one typed record per step and per evaluation), :mod:`.runs` (the run, saving and
loading it), :mod:`.api` (the public functions and the training loop) and :mod:`.experiment` (every
masking under several seeds, with spread).
"""

from .api import CallbackError, TrainingDivergedWarning, compare_masking, finetune
from .config import FinetuneConfig
from .experiment import Experiment, masking_experiment
from .records import EvalRecord, StepRecord
from .runs import TIMING_KEYS, Run, load_run

__all__ = [
    "TIMING_KEYS",
    "CallbackError",
    "EvalRecord",
    "Experiment",
    "FinetuneConfig",
    "Run",
    "StepRecord",
    "TrainingDivergedWarning",
    "compare_masking",
    "finetune",
    "load_run",
    "masking_experiment",
]
