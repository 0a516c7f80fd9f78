"""The relay's bookkeeping, without I/O: answers held in memory, waiters by index, ACL verdicts, idle watches.

The asyncio server (:mod:`._server`) only moves bytes; what to answer whom, and when, is decided here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Generic, TypeVar

from ._reads import JITTER_FRACTION, Shape, readable_keys

W = TypeVar("W")

#: Seconds an ACL verdict (may this token read this shape?) is reused before Consul is asked again.
ACL_VERDICT_SECONDS = 5.0
#: Seconds an upstream query is kept after its last downstream request or waiter (watchers re-ask at once).
LINGER_SECONDS = 30.0
#: Waits end on ticks this many seconds apart: one timer per tick, however many waiters share it.
DEADLINE_TICK_SECONDS = 0.05

# Headers of Consul's answer that the relay repeats (the index, leader contact, content type); the others
# (Date, Content-Length, connection handling) are the relay's own.
_KEPT_HEADERS = ("content-type", "vary", "x-consul-")


def kept_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((name, value) for name, value in headers if name.lower().startswith(_KEPT_HEADERS))


def render(status: int, headers: Iterable[tuple[str, str]], body: bytes, *, keep_alive: bool) -> bytes:
    """One whole HTTP/1.1 response."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", f"Date: {formatdate(usegmt=True)}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"Content-Length: {len(body)}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass(frozen=True)
class Answer:
    """One answer from Consul (status, the headers the relay repeats, body), rendered once for every waiter."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    keep_alive_bytes: bytes = field(init=False, repr=False)
    closing_bytes: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_alive_bytes", render(self.status, self.headers, self.body, keep_alive=True))
        object.__setattr__(self, "closing_bytes", render(self.status, self.headers, self.body, keep_alive=False))

    def wire(self, keep_alive: bool) -> bytes:
        return self.keep_alive_bytes if keep_alive else self.closing_bytes

    @property
    def index(self) -> int:
        for name, value in self.headers:
            if name.lower() == "x-consul-index":
                return int(value) if value.isdigit() else 0
        return 0


@dataclass(frozen=True)
class Snapshot:
    """The last data Consul answered for one shape: what every waiter of that shape is given."""

    answer: Answer
    index: int
    keys: frozenset[str]  # the keys it shows: ACL verdicts are checked against them
    received: float  # monotonic seconds

    @classmethod
    def of(cls, shape: Shape, answer: Answer, received: float) -> Snapshot | None:
        """A snapshot of a 200/404 answer (None for anything else, or a body that is not what Consul sends)."""
        keys = readable_keys(shape, answer.status, answer.body)
        if keys is None:
            return None
        return cls(answer, answer.index, keys, received)


def relay_error(message: str) -> Answer:
    """A 500 like the one Consul gives when it cannot answer (the SDK counts it as "Consul unavailable")."""
    return Answer(500, (("Content-Type", "text/plain; charset=utf-8"),), message.encode())


class WaiterBook(Generic[W]):
    """The downstream waiters of one shape, grouped by the index they hold.

    Waiters of one shape nearly all hold the same index (the one they were last given), so releasing is a
    walk over a handful of groups, not over every waiter.
    """

    def __init__(self) -> None:
        self._by_index: dict[int, dict[W, None]] = {}
        self._index_of: dict[W, int] = {}

    def __len__(self) -> int:
        return len(self._index_of)

    def __contains__(self, waiter: object) -> bool:
        return waiter in self._index_of

    def add(self, waiter: W, index: int) -> None:
        self.remove(waiter)
        self._index_of[waiter] = index
        self._by_index.setdefault(index, {})[waiter] = None

    def remove(self, waiter: W) -> bool:
        index = self._index_of.pop(waiter, None)
        if index is None:
            return False
        group = self._by_index[index]
        del group[waiter]
        if not group:
            del self._by_index[index]
        return True

    def release(self, current_index: int) -> list[W]:
        """Take every waiter whose index is below ``current_index`` (Consul answers those), oldest group first."""
        released: list[W] = []
        for index in sorted(i for i in self._by_index if i < current_index):
            group = self._by_index.pop(index)
            for waiter in group:
                del self._index_of[waiter]
            released.extend(group)
        return released

    def drain(self) -> list[W]:
        """Take every waiter (the upstream failed: each gets the failure now)."""
        released = list(self._index_of)
        self._by_index.clear()
        self._index_of.clear()
        return released


def wait_ends_on(now: float, timeout: float, wait: float, tick: float = DEADLINE_TICK_SECONDS) -> int:
    """The tick on which a wait of ``timeout`` seconds (``wait`` plus its jitter) that starts at ``now`` ends.

    The first tick at or after ``now + timeout``, unless that is past Consul's latest answer
    (``wait + wait/16``) and a tick fits between ``now + wait`` and that: then the last such tick. So the wait
    ends inside Consul's window whenever the jitter is wider than a tick (``wait`` ≥ 0.8 s), and at most one tick
    late otherwise.
    """
    due = math.ceil((now + timeout) / tick)
    latest = math.floor((now + wait + wait / JITTER_FRACTION) / tick)
    if due > latest and latest * tick >= now + wait:
        return latest
    return due


class Deadlines(Generic[W]):
    """Waiters by the tick on which their wait ends (:func:`wait_ends_on`).

    A push answers thousands of waiters at once and each asks again at once: a timer per waiter would be one
    timer started and one cancelled per waiter and push, where a tick is one timer for every waiter whose wait
    ends on it, and forgetting a waiter is one dict deletion.
    """

    def __init__(self) -> None:
        self._due: dict[int, dict[W, None]] = {}

    def __len__(self) -> int:
        return sum(len(group) for group in self._due.values())

    def add(self, waiter: W, tick: int) -> bool:
        """Keep ``waiter`` until ``tick``; True when no one else ends on that tick yet (start its timer)."""
        group = self._due.get(tick)
        if group is None:
            self._due[tick] = {waiter: None}
            return True
        group[waiter] = None
        return False

    def discard(self, waiter: W, tick: int) -> None:
        group = self._due.get(tick)
        if group is not None:
            group.pop(waiter, None)

    def take(self, tick: int) -> list[W]:
        """The waiters whose wait ends on ``tick`` (its timer fired); the tick is forgotten."""
        return list(self._due.pop(tick, ()))


@dataclass(frozen=True)
class Verdict:
    """What Consul said when asked the same read with a downstream token.

    ``denied`` is Consul's own 403 answer. Otherwise ``readable`` holds the keys that token was shown: Consul
    filters a recursive read by ACL (keys the token may not read are left out) rather than refusing it, so
    the relay may hand a token its snapshot only when the snapshot shows no key outside ``readable``.
    """

    checked_at: float  # monotonic seconds when the check was SENT: it saw at least what Consul held then
    denied: Answer | None
    readable: frozenset[str]

    def permits(self, snapshot: Snapshot) -> bool:
        if self.denied is not None:
            return False
        # Asked for every request and every woken token: a subset test walks every key of a large prefix, so
        # the answer for the last snapshot asked about is kept.
        last = self.__dict__.get("_last")
        if last is not None and last[0] is snapshot:
            return bool(last[1])
        permitted = snapshot.keys <= self.readable
        object.__setattr__(self, "_last", (snapshot, permitted))
        return permitted

    def is_filtered_view(self, snapshot: Snapshot) -> bool:
        """True when asking again cannot help: the check was sent after the snapshot arrived and saw less.

        Such a token reads through to Consul, which filters for it.
        """
        return self.denied is None and self.checked_at >= snapshot.received and not self.permits(snapshot)


@dataclass
class AclVerdicts:
    """Verdicts per (token, shape), each reused for ``ttl`` seconds; never more than ``capacity`` of them."""

    ttl: float = ACL_VERDICT_SECONDS
    capacity: int = 50_000
    _verdicts: dict[tuple[str, Shape], Verdict] = field(default_factory=dict)

    def get(self, token: str, shape: Shape, now: float) -> Verdict | None:
        verdict = self._verdicts.get((token, shape))
        if verdict is None or now - verdict.checked_at >= self.ttl:
            return None
        return verdict

    def refresh_at(self, verdict: Verdict) -> float:
        """When to check again a verdict that a push just used (at 80 % of its life).

        A push that wakes a token's waiters schedules one check of that token ahead of its verdict's expiry, so
        the next push (if it comes within ``ttl``) does not hold those waiters for a check. A token that no push
        wakes costs Consul nothing, each woken token costs at most one check per ``0.8 * ttl`` (one more after
        the last push), and a verdict is still never used past ``ttl``.
        """
        return verdict.checked_at + self.ttl * 0.8

    def put(self, token: str, shape: Shape, verdict: Verdict, now: float) -> None:
        if len(self._verdicts) >= self.capacity:
            self._verdicts = {k: v for k, v in self._verdicts.items() if now - v.checked_at < self.ttl}
            if len(self._verdicts) >= self.capacity:
                self._verdicts.clear()  # a flood of distinct tokens: asking Consul again is always safe
        self._verdicts[(token, shape)] = verdict

    def __len__(self) -> int:
        return len(self._verdicts)


def is_idle(waiters: int, last_used: float, now: float, linger: float = LINGER_SECONDS) -> bool:
    """An upstream query is stopped once nobody waited on or read its shape for ``linger`` seconds."""
    return waiters == 0 and now - last_used >= linger
