"""Live views for Jupyter: anywidget classes (a small ES module and CSS file beside each) and ipywidgets.

    >>> from sftviz import widgets as W
    >>> ex = sv.build_example(tok, prompt="Q: What colour is the sky?\\nA:", completion=" blue")
    >>> W.TokenView(ex)                  # tokens, trained vs masked; click a token to toggle it
    TokenView(16 tokens, 2 trained, masking='completion')
    >>> W.LogProbExplorer(model, tok)    # joint = marginal + conditional while you type  # doctest: +ELLIPSIS
    LogProbExplorer(joint=..., marginal=..., conditional=... nats, 53 tokens)
    >>> W.MaskingLab(model, tok)         # fine-tune with different maskings, live curves
    MaskingLab(300 training rows, 0 runs)
    >>> W.GradientView(model, tok, ex)   # gradient per token and layer, masked vs full  # doctest: +ELLIPSIS
    GradientView(16 tokens, 7 parameter groups, cosine=...)
    >>> W.Quiz("sft-foundations")        # questions with immediate feedback
    Quiz('SFT foundations: the objective and the chain rule', 10 questions, 0 answered, 0 correct)

A result you already have is shown with ``W.LogProbExplorer.from_report(rep)`` (a ``ScoreReport``,
read-only) and ``W.GradientView.from_gradients(g)`` (a ``token_gradients`` result).

Every widget also has a static ``text/html`` view (for nbconvert, nbviewer and jupyter-book) and a
deterministic ``repr``. Token elements carry ``data-sftviz-segment`` and ``data-sftviz-trained``.
"""

from .gradient_view import GradientView
from .logprob_explorer import LogProbExplorer
from .masking_lab import LabRun, MaskingLab
from .quiz import Quiz
from .token_view import TokenView

__all__ = ["GradientView", "LabRun", "LogProbExplorer", "MaskingLab", "Quiz", "TokenView"]
