"""Keep large CPU buffers in the process heap while training (Linux with glibc only).

glibc serves every allocation above 32 MiB with a fresh ``mmap`` and gives it back to the system when
it is freed. A CPU training step on a model with a large vocabulary allocates and frees several such
buffers (for GPT-2: the 50,257 x 768 embedding gradient, its sum with the tied output layer's gradient,
the logits), and the first write to each new page costs a page fault: measured on a GPT-2-small-sized
model, that was about a tenth of the step. Raising glibc's mmap and trim thresholds for the length of a
run lets freed buffers be reused instead. Afterwards the thresholds go back to the values glibc itself
settles on after large frees (32 MiB and 64 MiB) and the heap is trimmed, so the memory is returned.

Small models allocate nothing that large and see no difference. ``SFTVIZ_NO_MALLOPT=1`` turns this off.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import threading
from collections.abc import Iterator

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
DURING = {M_MMAP_THRESHOLD: 1 << 30, M_TRIM_THRESHOLD: (1 << 31) - 1}
AFTER = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 64 << 20}

_lock = threading.Lock()
_depth = 0


def _libc():
    """glibc, or None where it is not the C library (macOS, Windows, musl)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _enabled() -> bool:
    return os.environ.get("SFTVIZ_NO_MALLOPT", "").strip().lower() in ("", "0", "false", "no")


@contextlib.contextmanager
def reuse_large_buffers(active: bool = True) -> Iterator[None]:
    """Within this block, freed large CPU buffers stay in the heap for reuse (see the module docstring).

    Nested and concurrent blocks (several runs in threads) are counted: the thresholds are restored
    when the last one ends. Does nothing when ``active`` is false, off glibc, or with
    ``SFTVIZ_NO_MALLOPT=1``.
    """
    global _depth
    libc = _libc() if active and _enabled() else None
    if libc is None:
        yield
        return
    with _lock:
        if _depth == 0:
            for param, value in DURING.items():
                libc.mallopt(param, value)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for param, value in AFTER.items():
                    libc.mallopt(param, value)
                libc.malloc_trim(0)
