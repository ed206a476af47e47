"""Ctrl-C during training, deferred to the end of the step: the weights never stop half-updated.

In the main thread (a script, or a notebook cell: Jupyter's interrupt is SIGINT), :func:`defer_interrupts`
replaces the SIGINT handler for the length of a run with one that only counts presses; the loop looks at
the count after each recorded step and ends the run cleanly there. Elsewhere (the MaskingLab trains in a
background thread, which never receives SIGINT) it does nothing: there the ``stop`` flag is the way.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType


@dataclass
class Interrupts:
    """How many times Ctrl-C was pressed since the run started."""

    pressed: int = 0

    def press(self, signum: int, frame: FrameType | None) -> None:
        """The SIGINT handler: count the press; the loop stops after the current step."""
        self.pressed += 1


@contextmanager
def defer_interrupts() -> Iterator[Interrupts]:
    """Count Ctrl-C presses instead of raising KeyboardInterrupt, while the block runs (main thread only)."""
    flag = Interrupts()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    try:
        previous = signal.signal(signal.SIGINT, flag.press)
    except ValueError:  # signals are not available here (e.g. an embedded interpreter)
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
