"""sftviz: see supervised fine-tuning as language modelling on [prompt, completion].

The core (this namespace) imports no widget or plotting library, so it runs in scripts, tests and
inside Hugging Face ``Trainer``. Views live in ``sftviz.views`` (``sftviz.render`` and ``sftviz.plots``
are their public names) and ``sftviz.widgets``; ``sv.export_figures`` (figures for slides) is a view
too, imported when first used.

    >>> import sftviz as sv
    >>> model, tok = sv.load_model()
    >>> ex = sv.build_example(tok, prompt="Q: What colour is the sky?\\nA:", completion=" blue")
    >>> rep = sv.score(model, tok, example=ex)
    >>> abs(rep.joint - (rep.marginal + rep.conditional)) < 1e-4
    True
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _distribution_version

from .collate import SFTCollator
from .data import IGNORE_INDEX, BoundaryMergeWarning, BoundaryNote, Example, build_example
from .datasets import load_dataset, load_splits
from .faults import FAULTS
from .gradients import TokenGradients, token_gradients
from .logprobs import LogProbCheck, ScoreReport, TokenScore, check_logprobs, score, score_batch
from .loss import LossBreakdown, NothingToTrainWarning, loss_breakdown, sft_loss, supervised_head_loss, token_nll
from .modeling import load_model, resolve_device
from .packing import pack
from .train import (
    CallbackError,
    EvalRecord,
    Experiment,
    FinetuneConfig,
    Run,
    StepRecord,
    TrainingDivergedWarning,
    compare_masking,
    finetune,
    load_run,
    masking_experiment,
)
from .xray import xray

try:
    __version__ = _distribution_version("sftviz")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "FAULTS",
    "IGNORE_INDEX",
    "BoundaryMergeWarning",
    "BoundaryNote",
    "CallbackError",
    "EvalRecord",
    "Example",
    "Experiment",
    "FinetuneConfig",
    "LogProbCheck",
    "LossBreakdown",
    "NothingToTrainWarning",
    "Run",
    "SFTCollator",
    "ScoreReport",
    "StepRecord",
    "TokenGradients",
    "TokenScore",
    "TrainingDivergedWarning",
    "build_example",
    "check_logprobs",
    "compare_masking",
    "export_figures",
    "finetune",
    "load_dataset",
    "load_model",
    "load_run",
    "load_splits",
    "loss_breakdown",
    "masking_experiment",
    "pack",
    "resolve_device",
    "score",
    "score_batch",
    "sft_loss",
    "supervised_head_loss",
    "token_gradients",
    "token_nll",
    "xray",
]


def __getattr__(name: str) -> object:
    """``sv.export_figures`` lives in the views (:mod:`sftviz.views.export`) and is imported when first
    asked for, so that ``import sftviz`` imports no view module (the core runs without a display)."""
    if name == "export_figures":
        from .views.export import export_figures

        return export_figures
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
