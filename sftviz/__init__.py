"""sftviz: see supervised fine-tuning as language modelling on [prompt, completion].

The core (this namespace) imports no widget or plotting library, so it runs in scripts, tests and
inside Hugging Face ``Trainer``. Views live in ``sftviz.render``, ``sftviz.plots`` and ``sftviz.widgets``.

    >>> import sftviz as sv
    >>> model, tok = sv.load_model()                      # doctest: +SKIP
    >>> ex = sv.build_example(tok, prompt="...", completion="...")   # doctest: +SKIP
    >>> rep = sv.score(model, tok, example=ex)            # doctest: +SKIP
"""

from .collate import SFTCollator
from .data import IGNORE_INDEX, BoundaryMergeWarning, BoundaryNote, Example, build_example, check_masking
from .datasets import load_dataset
from .logprobs import LogProbCheck, ScoreReport, TokenScore, check_logprobs, score, score_batch
from .loss import LossBreakdown, NothingToTrainWarning, loss_breakdown, sft_loss, supervised_head_loss, token_nll
from .modeling import load_model, resolve_device
from .faults import FAULTS
from .runs import Run, load_run
from .train import compare_masking, finetune

__version__ = "0.1.0"

__all__ = [
    "IGNORE_INDEX",
    "BoundaryMergeWarning",
    "BoundaryNote",
    "FAULTS",
    "Run",
    "compare_masking",
    "finetune",
    "load_run",
    "Example",
    "LogProbCheck",
    "LossBreakdown",
    "NothingToTrainWarning",
    "SFTCollator",
    "ScoreReport",
    "TokenScore",
    "build_example",
    "check_logprobs",
    "check_masking",
    "load_dataset",
    "load_model",
    "loss_breakdown",
    "resolve_device",
    "score",
    "score_batch",
    "sft_loss",
    "supervised_head_loss",
    "token_nll",
]
