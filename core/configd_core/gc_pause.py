"""Python's cyclic garbage collector paused while a large document is decoded and built (server and SDK).

Decoding a 4 MB config and building its settings object allocates some 250,000 container objects (dicts, lists,
model instances). CPython 3.11 starts a full collection whenever the objects that survived younger collections
reach a quarter of the old ones, so in a process that already holds the previous version, the same work triggers
two or three full collections, each walking every object the process holds: measured, 200–330 ms of a 300–450 ms
decode-and-build, against ~90 ms with the collector paused. None of those objects is cyclic garbage (the
intermediate dicts are freed by reference counting), so the walks find nothing to free.

:func:`paused_gc` disables automatic collection for the duration of such a step and enables it again after, when
the document is at least :data:`PAUSE_FROM_BYTES` (small documents never touch the collector's state). Nested or
concurrent pauses (two watchers, two pushes) share one pause; a collector the application disabled itself is left
disabled. The collector's state is process-wide, so a process forked during a pause gets it back enabled
(``os.register_at_fork``).
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: Canonical JSON size from which a document's decode and build run with the collector paused.
PAUSE_FROM_BYTES = 256 * 1024


class _Pause:
    """How many steps hold the pause, and whether it was this module that disabled the collector."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holders = 0
        self.disabled_here = False

    def enter(self) -> None:
        with self.lock:
            if self.holders == 0:
                self.disabled_here = gc.isenabled()
                if self.disabled_here:
                    gc.disable()
            self.holders += 1

    def leave(self) -> None:
        with self.lock:
            self.holders -= 1
            if self.holders == 0 and self.disabled_here:
                self.disabled_here = False
                gc.enable()


_PAUSE = _Pause()


def _after_fork_in_child() -> None:
    # The threads that held the pause did not survive the fork: nobody would ever enable the collector again.
    global _PAUSE
    if _PAUSE.disabled_here:
        gc.enable()
    _PAUSE = _Pause()


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextmanager
def paused_gc(size: int) -> Iterator[None]:
    """Automatic garbage collection paused inside the block when ``size`` (bytes of the document being decoded
    or built) is at least :data:`PAUSE_FROM_BYTES`; otherwise nothing changes."""
    if size < PAUSE_FROM_BYTES:
        yield
        return
    pause = _PAUSE
    pause.enter()
    try:
        yield
    finally:
        pause.leave()
