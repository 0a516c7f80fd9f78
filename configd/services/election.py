"""Leader election on a Consul session lock, and a driver that runs duties only on the elected replica.

Consul's leader-election recipe (docs: "Application Leader Election with Sessions"):

1. create a session (TTL, no health checks; ``behavior=release`` keeps the key when the session ends;
   ``lock-delay`` makes Consul refuse the lock to everyone for that long after the holder's session is invalidated,
   so a holder that lost it has stopped before another starts);
2. ``PUT <prefix>/locks/<duty>?acquire=<session>`` with the holder's description: ``true`` makes this replica the
   leader;
3. renew the session well inside its TTL; a renewal Consul refuses (the session expired: a pause, a partition)
   means leadership is gone at once, and a new session campaigns again;
4. the others watch the key with a blocking query (:mod:`configd_core.blocking`'s rules: reset the index when it
   goes backwards, never block on 0, back off on errors) and try to acquire when its ``Session`` is empty.

Consul invalidates a session between TTL and 2 × TTL after its last renewal, so a SIGKILLed leader is replaced
within ``2 × ttl + lock_delay`` (the failover test measures it).

:class:`ElectedDriver` runs registered duties (retention, usage; rollouts later) on one thread, each on its own
interval, only while the lock is held. A duty gets a ``holding()`` callable and should check it between batches,
so that a replica that lost the lock stops within one batch.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from configd_core.blocking import Backoff, jittered_wait, next_wait_index
from configd_core.consul import ConsulGateway
from configd_core.errors import ConfigdError, VersionConflict

log = logging.getLogger("configd.election")

Duty = Callable[[Callable[[], bool]], object]


@dataclass
class _Registered:
    name: str
    run: Duty
    interval: float
    next_at: float = 0.0


class LeaderElection:
    """Campaign for one lock key; :meth:`step` does one round of the recipe and says whether we hold the lock."""

    def __init__(
        self,
        gateway: ConsulGateway,
        key: str,
        *,
        holder: str | None = None,
        ttl_seconds: int = 15,
        lock_delay_seconds: int = 5,
    ) -> None:
        if ttl_seconds < 10:
            raise ValueError("Consul's smallest session TTL is 10 s")
        self.gateway = gateway
        self.key = key
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self.ttl = ttl_seconds
        self.lock_delay = lock_delay_seconds
        self.session: str | None = None
        self.leading = False
        self._renewed_at = 0.0
        self._index = 0

    def _ensure_session(self, now: float) -> str:
        if self.session is None:
            self.session = self.gateway.session_create(
                f"configd-{self.key}", self.ttl, behavior="release", lock_delay_seconds=self.lock_delay
            )
            self._renewed_at = now
        elif now - self._renewed_at >= self.ttl / 3:
            if not self.gateway.session_renew(self.session):
                log.warning("session for %s expired; %s campaigns again", self.key, self.holder)
                self.session = None
                self.leading = False
                return self._ensure_session(now)
            self._renewed_at = now
        return self.session

    def _try_acquire(self, session: str) -> bool:
        value = json.dumps({"holder": self.holder, "session": session, "since": time.time()}).encode()
        try:
            self.gateway.put(self.key, value, acquire=session)
        except VersionConflict:
            return False
        return True

    def step(self, wait_seconds: float) -> bool:
        """One round: keep the session alive, acquire or confirm the lock, or watch the key for up to
        ``wait_seconds`` when another replica holds it. Returns whether this replica leads now."""
        session = self._ensure_session(time.monotonic())
        index, entries = self.gateway.list(self.key, consistent=self.leading)
        entry = next((e for e in entries if e.key == self.key), None)
        owner = entry.session if entry is not None else None
        if owner == session:
            if not self.leading:
                log.info("%s leads %s", self.holder, self.key)
            self.leading = True
            return True
        if self.leading:
            log.warning("%s lost %s (now held by session %s)", self.holder, self.key, owner)
        self.leading = False
        if owner is None and self._try_acquire(session):
            self.leading = True
            log.info("%s acquired %s", self.holder, self.key)
            return True
        # Someone else holds it (or lock-delay refused us): block until the key changes or the wait ends.
        self._index = next_wait_index(self._index, index)
        if self._index > 0:
            self.gateway.list(self.key, index=self._index, wait=jittered_wait(wait_seconds))
        return False

    def keep_alive(self) -> bool:
        """Renew the session if due (between a duty's batches) and say whether this replica still leads."""
        if not self.leading or self.session is None:
            return False
        try:
            session = self._ensure_session(time.monotonic())
        except ConfigdError:
            self.leading = False
            return False
        if session != self.session:
            self.leading = False
        return self.leading

    def resign(self) -> None:
        """Release the lock (if held) and destroy the session: another replica may take over at once."""
        session, self.session, self.leading = self.session, None, False
        if session is None:
            return
        try:
            self.gateway.session_destroy(session)  # behavior=release: the lock is released with it
        except ConfigdError as exc:
            log.warning("could not destroy session %s: %s", session, exc)


@dataclass
class ElectedDriver:
    """Runs registered duties on one background thread, only while ``election`` holds its lock."""

    election: LeaderElection
    tick_seconds: float = 1.0
    duties: list[_Registered] = field(default_factory=list)
    on_change: Callable[[bool], None] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def register(self, name: str, run: Duty, interval_seconds: float) -> None:
        self.duties.append(_Registered(name, run, interval_seconds))

    @property
    def leading(self) -> bool:
        return self.election.leading and not self._stop.is_set()

    def holding(self) -> bool:
        """What a duty calls between batches: renews the session when due; False once the lock is lost."""
        return not self._stop.is_set() and self.election.keep_alive()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"configd-elected-{self.election.key}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.election.resign()

    def _loop(self) -> None:
        backoff = Backoff(base=0.5, cap=10.0)
        was_leading = False
        while not self._stop.is_set():
            try:
                leading = self.election.step(wait_seconds=max(2.0, self.election.ttl / 3))
                backoff.reset()
            except ConfigdError as exc:
                leading = False
                self.election.leading = False
                delay = backoff.next_delay()
                log.warning("leader election for %s: %s; retrying in %.1fs", self.election.key, exc, delay)
                self._stop.wait(delay)
            if leading != was_leading and self.on_change is not None:
                self.on_change(leading)
            was_leading = leading
            if leading:
                self._run_due()
                self._stop.wait(self.tick_seconds)
        # A round that was still running when stop() resigned may have made a new session: release it too.
        self.election.resign()

    def _run_due(self) -> None:
        now = time.monotonic()
        for duty in self.duties:
            if now < duty.next_at or not self.leading:
                continue
            try:
                duty.run(self.holding)
            except Exception:  # a failing duty must not stop the election or the other duties
                log.exception("duty %s failed; it runs again in %.0fs", duty.name, duty.interval)
            duty.next_at = time.monotonic() + duty.interval
