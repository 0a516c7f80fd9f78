"""Instance registration: this process, its configs and their applied versions, under a Consul session.

``clients/<ns>/<instance>`` holds a :class:`ClientRecord` acquired by a session with a TTL and
``behavior=delete``: when the process dies and stops renewing, Consul deletes the entry (after at most
twice the TTL, Consul's rule); :meth:`InstanceRegistration.close` destroys the session at once. Renewals
and writes are short requests on a gateway without keep-alive, so registration adds no long-lived
connection. Registration never affects settings: its failures are logged and retried.

Every write is a Raft commit, and a push wakes every client at the same moment, so nothing is written while
a change propagates: applied versions are published once, 1 to 1.5 × ``publish_delay`` (1 s) after the first
change not yet published (a burst of versions is one write; the random part keeps the processes that one push
woke together from writing together), and the session is renewed only when a renewal is due (every TTL/3),
not per write. When is what due is decided by :class:`SyncSchedule`, which does no I/O.

Rollouts: the record also carries the instance key and labels, and per config with an active rollout a
:class:`~configd_core.records.RolloutReport` (member or not, the version running, the last failures on the
candidate) that the server's rollout driver counts. A change of a report is published like an applied version.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from configd_core.blocking import Backoff
from configd_core.consul import ConsulGateway
from configd_core.errors import ConfigdError
from configd_core.layout import KeyLayout
from configd_core.records import ClientRecord, FailureKind, utcnow

from ._rollouts import RolloutReports, failure

log = logging.getLogger("configd_client")

DEFAULT_SESSION_TTL = 30  # seconds; Consul accepts 10 s to 24 h
#: Seconds between the first unpublished applied version and its publication in ``clients/<ns>/<instance>``.
DEFAULT_PUBLISH_DELAY = 1.0


def default_application() -> str:
    """``CONFIGD_APPLICATION``, else the name of the running program."""
    explicit = os.environ.get("CONFIGD_APPLICATION")
    if explicit:
        return explicit
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return program or "python"


def new_instance_id() -> str:
    host = socket.gethostname().split(".")[0].lower() or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class SyncWork:
    """What one round of the registration thread must do."""

    namespaces: frozenset[str]  # client records to write
    renew: bool  # renew (or create) the session first


@dataclass
class SyncSchedule:
    """When the registration writes what (pure; times are ``time.monotonic()`` seconds, passed in).

    - A namespace marked dirty is published ``publish_delay × (1 + spread × rng())`` after the FIRST
      unpublished mark, not after the last one, so a steady stream of versions still shows up about once
      per delay. The random part spreads the writes of processes woken by the same push.
    - The session is renewed ``renew_every × (1 - spread/5 × rng())`` after it was created or last renewed
      (never later); a write alone does not renew it (Consul resets a session's TTL only on renew). No
      session yet: the next write creates one.
    - After a failure nothing is attempted before ``retry_at``, and the retry checks the session first: a
      write bound to a session that expired is refused, and would otherwise be retried forever.
    """

    publish_delay: float
    renew_every: float
    spread: float = 0.5
    rng: Callable[[], float] = random.random
    dirty: set[str] = field(default_factory=set)
    publish_at: float | None = None  # None: nothing dirty
    renew_at: float | None = None  # None: no session yet
    retry_at: float | None = None

    def mark(self, namespace: str, now: float) -> None:
        self.dirty.add(namespace)
        if self.publish_at is None:
            self.publish_at = now + self.publish_delay * (1.0 + self.spread * self.rng())

    def deadline(self) -> float | None:
        """When the next round is due (None: nothing to do until something is marked)."""
        if self.retry_at is not None:
            return self.retry_at
        due = [t for t in (self.publish_at, self.renew_at) if t is not None]
        return min(due) if due else None

    def take(self, now: float) -> SyncWork | None:
        """The work due at ``now`` (the namespaces taken are no longer dirty), or None."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return None
        retrying = self.retry_at is not None
        publish = retrying or (self.publish_at is not None and now >= self.publish_at)
        renew = retrying or (self.renew_at is not None and now >= self.renew_at)
        namespaces = frozenset(self.dirty) if publish else frozenset()
        if publish:
            self.dirty, self.publish_at = set(), None
        self.retry_at = None
        return SyncWork(namespaces, renew)

    def done(self, now: float, *, session_renewed: bool) -> None:
        """The round succeeded; ``session_renewed`` when it renewed or created the session."""
        if session_renewed:
            self.renew_at = now + self.renew_every * (1.0 - self.spread / 5 * self.rng())

    def failed(self, work: SyncWork, now: float, delay: float) -> None:
        """The round failed: its namespaces are dirty again, and everything waits ``delay``."""
        for namespace in work.namespaces:
            self.mark(namespace, now)
        self.retry_at = now + delay


class InstanceRegistration:
    """Keeps this process's ClientRecords in Consul while it runs (one thread, short requests).

    Args:
        gateway: short requests (no keep-alive).
        layout: the key layout of the configd installation.
        application: the name to register under (default: ``CONFIGD_APPLICATION`` or argv[0]).
        instance_id: unique per process (default: host, pid and a random suffix).
        ttl_seconds: the session's TTL; it is renewed every third of it.
        publish_delay: seconds from the first unpublished applied version to its write (coalesces bursts
            and keeps writes out of the moment a change propagates).
        instance_key: the stable key rollout percentages are computed from (published as is).
        labels: the instance's labels (published; rollout cohorts select by them).
    """

    def __init__(
        self,
        gateway: ConsulGateway,
        layout: KeyLayout,
        *,
        application: str | None = None,
        instance_id: str | None = None,
        ttl_seconds: int = DEFAULT_SESSION_TTL,
        publish_delay: float = DEFAULT_PUBLISH_DELAY,
        instance_key: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self._gateway = gateway
        self.instance_key = instance_key
        self.labels = dict(labels or {})
        self._rollouts = RolloutReports()
        self._layout = layout
        self.application = application or default_application()
        self.instance_id = instance_id or new_instance_id()
        self.ttl_seconds = max(10, int(ttl_seconds))
        self.started_at = utcnow()
        self.host = socket.gethostname()
        self.session: str | None = None
        self._applied: dict[str, dict[str, int]] = {}
        self._schedule = SyncSchedule(publish_delay=max(0.0, publish_delay), renew_every=self.ttl_seconds / 3)
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._backoff = Backoff(base=1.0, cap=self.ttl_seconds / 3)

    @property
    def publish_delay(self) -> float:
        return self._schedule.publish_delay

    def record(self, namespace: str) -> ClientRecord:
        with self._cond:
            applied = dict(self._applied.get(namespace, {}))
            rollouts = self._rollouts.for_namespace(namespace, applied)
        return ClientRecord(
            instance=self.instance_id,
            application=self.application,
            host=self.host,
            pid=os.getpid(),
            started_at=self.started_at,
            updated_at=utcnow(),
            applied=applied,
            instance_key=self.instance_key,
            labels=self.labels,
            rollouts=rollouts,
        )

    def watch(self, namespace: str, name: str) -> None:
        self._update(namespace, name, None)

    def applied(self, namespace: str, name: str, version: int) -> None:
        """Note an applied version; it is written ``publish_delay`` later (with whatever came meanwhile)."""
        self._update(namespace, name, version)

    # --- rollouts (called from the watch thread and callback threads; no I/O) ------------------------------
    def rollout_decided(self, namespace: str, name: str, rollout_id: str, member: bool) -> None:
        """Note whether this instance is in a config's active rollout (published like an applied version)."""
        with self._cond:
            if self._rollouts.decided(namespace, name, rollout_id, member):
                self._dirty(namespace)

    def rollout_ended(self, namespace: str, name: str) -> None:
        """The config's head has no active rollout any more: its report goes."""
        with self._cond:
            if self._rollouts.ended(namespace, name):
                self._dirty(namespace)

    def rollout_failed(self, namespace: str, name: str, rollout_id: str, kind: FailureKind, reason: str) -> None:
        """A failure on the candidate of ``rollout_id`` (ignored unless it is still the config's active rollout)."""
        with self._cond:
            if self._rollouts.failed(namespace, name, rollout_id, failure(self.instance_id, kind, reason)):
                log.warning("configd_client: %s/%s rollout %s, %s: %s", namespace, name, rollout_id, kind, reason)
                self._dirty(namespace)

    def _update(self, namespace: str, name: str, version: int | None) -> None:
        with self._cond:
            if self._closed:
                return
            configs = self._applied.setdefault(namespace, {})
            if version is not None:
                configs[name] = version
            else:
                configs.setdefault(name, 0)
            self._dirty(namespace)

    def _dirty(self, namespace: str) -> None:
        """Mark ``namespace`` for the next publication (the caller holds the lock)."""
        if self._closed:
            return
        was_due = self._schedule.deadline()
        self._schedule.mark(namespace, time.monotonic())
        if self._thread is None:
            self._start_thread()
        elif was_due != self._schedule.deadline():
            self._cond.notify_all()  # an earlier deadline than the one the thread sleeps towards

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="configd-registration", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    now = time.monotonic()
                    work = self._schedule.take(now)
                    if work is not None:
                        break
                    deadline = self._schedule.deadline()
                    self._cond.wait(None if deadline is None else max(0.0, deadline - now))
            try:
                renewed = self._sync(work)
            except Exception as exc:  # registration must never take the process down; ConfigdError is usual
                if isinstance(exc, ConfigdError):
                    log.info("configd_client: registration failed, will retry: %s", exc)
                else:
                    log.exception("configd_client: registration failed, will retry")
                with self._cond:
                    self._schedule.failed(work, time.monotonic(), self._backoff.next_delay())
                continue
            self._backoff.reset()
            with self._cond:
                self._schedule.done(time.monotonic(), session_renewed=renewed)

    def _sync(self, work: SyncWork) -> bool:
        """Renew the session if due (create it if need be), then write the records due.

        Returns True when the session was renewed or created (its TTL starts again).
        """
        namespaces = set(work.namespaces)
        renewed = False
        if work.renew and self.session is not None:
            renewed = self._gateway.session_renew(self.session)
            if not renewed:
                self.session = None  # expired (Consul was away longer than the TTL) or destroyed: start over
        if self.session is None and (namespaces or work.renew):
            self.session = self._gateway.session_create(
                f"configd-client {self.application} {self.instance_id}", self.ttl_seconds, behavior="delete"
            )
            renewed = True
            with self._cond:
                namespaces = set(self._applied)  # the old session's entries went with it: write them all
        for namespace in sorted(namespaces):
            record = self.record(namespace)
            self._gateway.put(self._layout.client(namespace, self.instance_id), record.to_bytes(), acquire=self.session)
        return renewed

    def after_fork_in_child(self) -> None:
        """A forked child is another instance: a new instance id and, on the next round, a session of its own.

        The parent's session and entries stay the parent's: never renewed, written or destroyed from here. The
        configs and versions held at the fork are published under the new id after the usual delay; call
        :meth:`resume` once the gateway has new connections. Rollout reports start over: the child's watches
        decide its membership again (its instance id is new) and its failures are its own.
        """
        self._cond = threading.Condition()
        self._thread = None
        self.session = None
        self.instance_id = new_instance_id()
        self.started_at = utcnow()
        self._rollouts.clear()
        self._backoff.reset()
        self._schedule = SyncSchedule(publish_delay=self._schedule.publish_delay, renew_every=self.ttl_seconds / 3)
        now = time.monotonic()
        for namespace in self._applied:
            self._schedule.mark(namespace, now)

    def resume(self) -> None:
        """Start the thread if there is something to publish (after :meth:`after_fork_in_child`)."""
        with self._cond:
            if not self._closed and self._thread is None and self._schedule.deadline() is not None:
                self._start_thread()

    def close(self) -> None:
        """Stop renewing and destroy the session (its entries go with it). Best effort."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
        if self.session is not None:
            try:
                self._gateway.session_destroy(self.session)
            except ConfigdError as exc:
                log.info("configd_client: could not destroy session %s: %s", self.session, exc)
            self.session = None
