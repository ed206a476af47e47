"""Live views for Jupyter: anywidget classes (a small ES module and CSS file beside each) and ipywidgets.

    >>> from sftviz import widgets as W
    >>> W.TokenView(ex)                       # doctest: +SKIP  tokens, trained vs masked, click to toggle
    >>> W.LogProbExplorer(model, tok)         # doctest: +SKIP  joint = marginal + conditional while typing
    >>> W.MaskingLab(model, tok)              # doctest: +SKIP  fine-tune with different maskings, live curves
    >>> W.GradientView(model, tok, ex)        # doctest: +SKIP  gradient per token and layer, masked vs full
    >>> W.Quiz("sft-foundations")             # doctest: +SKIP  questions with immediate feedback

Every widget also has a static ``text/html`` view (for nbconvert, nbviewer and jupyter-book) and a
deterministic ``repr``. Token elements carry ``data-sftviz-segment`` and ``data-sftviz-trained``.
"""

from .gradient_view import GradientView
from .logprob_explorer import LogProbExplorer
from .masking_lab import LabRun, MaskingLab
from .quiz import Quiz
from .token_view import TokenView

__all__ = ["GradientView", "LabRun", "LogProbExplorer", "MaskingLab", "Quiz", "TokenView"]
