"""The SFT X-ray: see exactly what any pipeline trains, beside what you mean to train, and catch its
known bugs.

    >>> report = sv.xray(sv.load_dataset("support")[:2], tok)  # sftviz's collator, the default policy
    >>> report.rows[0].tokens[-4:], report.counts()
    ([' 1', ' year', '.', '<|eos|>'], {})

``pipelines`` runs what really builds labels (sftviz, TRL, transformers' LM collator, marker-string
masking, any callable); ``policy`` says what the user means, built by the core's own label code;
``lints`` names the bugs; ``core`` compares them row by row. The command line is
``python -m sftviz xray DATA --model M --pipeline P --policy Q``.
"""

from .core import Finding, RowXRay, XRayReport, xray
from .lints import LINTS
from .pipelines import PIPELINES, Built, Pipeline
from .policy import PRESETS, Policy

__all__ = ["LINTS", "PIPELINES", "PRESETS", "Built", "Finding", "Pipeline", "Policy", "RowXRay", "XRayReport", "xray"]
