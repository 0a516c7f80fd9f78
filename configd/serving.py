"""Running the ASGI app under uvicorn with a bounded shutdown: SIGTERM stops the server within its grace period.

uvicorn's graceful shutdown stops accepting, waits for in-flight requests and cancels them after
``timeout_graceful_shutdown``. A cancelled request whose handler runs in a worker thread keeps that thread busy,
though, and a thread cannot be killed; so the single-process server also arms a hard deadline when the signal
arrives: ``grace`` seconds later, whatever a request is still doing, the process exits (status 1 after SIGTERM's
deadline, so a supervisor sees that the shutdown was not clean).
"""

from __future__ import annotations

import logging
import os
import threading
from types import FrameType

import uvicorn

log = logging.getLogger("configd")

# Past the graceful part: the lifespan's shutdown (closing the Consul pool) gets this long before the hard exit.
HARD_EXIT_MARGIN = 2.0


class GracefulServer(uvicorn.Server):
    """A uvicorn server whose first exit signal also arms a hard exit after the grace period."""

    def __init__(self, config: uvicorn.Config, grace: int) -> None:
        super().__init__(config)
        self.grace = grace
        self._deadline: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._deadline is None:
            self._deadline = threading.Timer(self.grace + HARD_EXIT_MARGIN, self._hard_exit, args=(sig,))
            self._deadline.daemon = True
            self._deadline.start()
        super().handle_exit(sig, frame)

    def _hard_exit(self, sig: int) -> None:
        log.error("configd: still busy %.1f s after signal %d; exiting now", self.grace + HARD_EXIT_MARGIN, sig)
        logging.shutdown()
        os._exit(1)
