"""Consul blocking-query bookkeeping, without I/O: the index rules, jittered waits, backoff and rate limits.

Consul's "Blocking Queries" documentation (Implementation Details) asks every client to:

- reset the index when it goes backwards (a snapshot restore or a new cluster): read again without blocking;
- never block on index 0 (or below): such a query returns at once and would spin;
- treat every wake-up as "maybe changed": a timeout or an idempotent write also returns;
- rate-limit its queries, and back off on errors, so that a misbehaving cluster is never hammered.

These are plain functions and small classes so that the rules are tested without a network or sleeps.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

#: Default maximum wait of one blocking query in seconds (Consul caps ``wait`` at 10 minutes).
DEFAULT_WAIT_SECONDS = 55.0


def next_wait_index(previous: int, returned: int) -> int:
    """The index for the next query, from the one we sent (``previous``) and the X-Consul-Index returned.

    0 means "read again without blocking". The index is reset to 0 when it goes backwards (Consul:
    "reset the index if it goes backwards"), and a returned index below 1 never becomes a blocking index
    (Consul: "sanity check index is greater than zero").
    """
    if returned < 1:
        return 0
    if previous > 0 and returned < previous:
        return 0
    return returned


def jittered_wait(base_seconds: float, rng: Callable[[], float] = random.random, spread: float = 0.1) -> str:
    """A Consul ``wait`` duration near ``base_seconds``, minus up to ``spread`` of it at random.

    Processes started together (a deploy) would otherwise wake up, and query, in lock step.
    """
    seconds = max(1.0, base_seconds * (1.0 - spread * rng()))
    return f"{int(seconds * 1000)}ms"


@dataclass
class Backoff:
    """Exponential backoff with jitter and a cap, for the retries after a failed query.

    ``next_delay()`` returns ``min(cap, base * factor**failures)`` scaled by a random factor in
    [0.5, 1.0]; ``reset()`` after a success.
    """

    base: float = 0.1
    cap: float = 5.0
    factor: float = 2.0
    rng: Callable[[], float] = random.random
    failures: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * self.factor ** min(self.failures, 32))
        self.failures += 1
        return ceiling * (0.5 + 0.5 * self.rng())

    def reset(self) -> None:
        self.failures = 0


@dataclass
class RateLimiter:
    """A token bucket: at most ``burst`` queries at once, refilled at ``rate`` per second.

    ``delay(now)`` takes a token and returns how long to sleep before sending (0 when one was available).
    Even a server that answers every blocking query at once cannot make the watcher spin.
    """

    rate: float = 20.0
    burst: float = 40.0
    tokens: float | None = None
    updated: float | None = None

    def delay(self, now: float) -> float:
        tokens = self.burst if self.tokens is None else self.tokens
        if self.updated is not None:
            tokens = min(self.burst, tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens = tokens - 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate
