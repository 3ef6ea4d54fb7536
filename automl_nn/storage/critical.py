"""Sections a stop signal must not cut in two: a journal append that holds the file's lock.

A signal handler that raises (the search's GracefulStop) asks `defer` first. Inside a section the
raise waits for the section's end, where it happens with the lock released and the record whole.
Raised inside, it would leave Optuna's symlink lock half-released (its `release` then fails with
FileNotFoundError, which replaces the interrupt and fails the trial for the wrong reason) or, while
waiting in `acquire`, remove the lock another process holds.

Python runs signal handlers on the main thread only; the depth is per thread, so a section the
heartbeat thread is in never defers a signal meant for the main thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

_local = threading.local()


@contextlib.contextmanager
def section() -> Iterator[None]:
    """Run the body whole: a raise `defer`red inside it happens at its end (sections nest)."""
    depth: int = getattr(_local, "depth", 0)
    deferred: Callable[[], None] | None = None
    _local.depth = depth + 1
    try:
        yield
    finally:
        _local.depth = depth
        if depth == 0:  # the outermost section takes the deferred raise, even if the body raised
            deferred, _local.deferred = getattr(_local, "deferred", None), None
    if deferred is not None:
        deferred()


def defer(action: Callable[[], None]) -> bool:
    """Inside a section, keep `action` (the first one) for the section's end and return True;
    outside, return False and let the caller act now."""
    if getattr(_local, "depth", 0) == 0:
        return False
    if getattr(_local, "deferred", None) is None:
        _local.deferred = action
    return True
