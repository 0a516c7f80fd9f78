"""NamespaceWatcher: ONE blocking query on ``heads/<ns>/`` per watched namespace, however many configs.

The watcher thread only talks to Consul; the rules it follows (index bookkeeping, backoff, rate limit,
which heads changed) are the pure pieces in :mod:`._blocking`, :mod:`._events` and :class:`HeadIndex`.

After a wake-up the work is kept to what changed: Consul answers with every head of the namespace, but only
entries whose ModifyIndex moved are parsed again, and a small document (≤ ``HEAD_INLINE_BYTES``) is applied
from its head without reading its version record (docs/storage.md).

A head with an active rollout (``HeadRecord.rollout``) names two documents: its own and the rollout's candidate.
Which one this process runs is decided from that same head (:func:`document_to_run`, membership by
:class:`~._rollouts.RolloutParticipant`): members get the candidate (carried in the rollout record when small,
else read from its version record), everyone else the head's own document — a non-member is never offered it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Container
from typing import Any

from configd_core.blocking import DEFAULT_WAIT_SECONDS, Backoff, RateLimiter, jittered_wait, next_wait_index
from configd_core.consul import ConsulGateway, KVEntry
from configd_core.errors import ConfigdError, ConsulPermissionDenied, ConsulUnavailable, InvalidConfig, NotFound
from configd_core.gc_pause import paused_gc
from configd_core.layout import KeyLayout
from configd_core.records import HeadRecord, RolloutRecord, VersionRecord, decode_data_and_bytes

from ._events import Document
from ._live import LiveSettings
from ._providers import ConfigSource
from ._rollouts import RolloutParticipant, rollout_key

log = logging.getLogger("configd_client")

HeadKey = tuple[int, str, bool, tuple[str, str, int] | None]


def head_key(head: HeadRecord | None) -> HeadKey | None:
    """What of a head decides the document offered: its version and content, and its rollout's id, state and
    step (a step that grows the cohort takes new members to the candidate)."""
    return (head.version, head.sha256, head.deleted, rollout_key(head)) if head is not None else None


class HeadIndex:
    """The parsed head records of one namespace, re-parsed only where Consul's ModifyIndex moved (no I/O).

    Every wake-up of the blocking query returns every head of the namespace; most did not change. Consul
    bumps an entry's ModifyIndex on every write to it, so an entry whose index is the one seen last time
    holds the same bytes and its parsed record is reused. Keys that are gone from the answer are forgotten.
    Call :meth:`reset` when the blocking index is reset: another cluster may reuse an index for other bytes.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._known: dict[str, tuple[int, HeadRecord | None]] = {}
        self.parses = 0  # head records parsed so far (for tests and metrics)

    def update(self, entries: list[KVEntry], wanted: Container[str]) -> dict[str, HeadRecord]:
        """The readable heads directly under the prefix whose name is in ``wanted``, by config name."""
        known: dict[str, tuple[int, HeadRecord | None]] = {}
        heads: dict[str, HeadRecord] = {}
        for entry in entries:
            name = entry.key[len(self.prefix) :]
            if not name or "/" in name or name not in wanted:
                continue
            previous = self._known.get(name)
            same = previous is not None and previous[0] == entry.modify_index
            head = previous[1] if previous is not None and same else self._parse(entry)
            known[name] = (entry.modify_index, head)
            if head is not None:
                heads[name] = head
        self._known = known
        return heads

    def _parse(self, entry: KVEntry) -> HeadRecord | None:
        self.parses += 1
        try:
            return HeadRecord.from_bytes(entry.value)
        except ConfigdError as exc:  # remembered as unreadable until its ModifyIndex moves: logged once
            log.warning("configd_client: skipping unreadable head %s: %s", entry.key, exc)
            return None

    def reset(self) -> None:
        self._known = {}


def inline_document(head: HeadRecord) -> Document | None:
    """The document a head carries (checked against its sha256; ConfigdError if not matching), else None."""
    data = head.inline_data()
    if data is None:
        return None
    return Document(head.namespace, head.name, head.version, head.sha256, data, "consul")


def fetch_version(
    gateway: ConsulGateway, layout: KeyLayout, namespace: str, name: str, version: int, sha256: str | None = None
) -> VersionRecord:
    """One version record; with ``sha256``, it must be that content (the rollout naming it says so)."""
    entry = gateway.get(layout.version(namespace, name, version))
    if entry is None:
        raise NotFound(f"{namespace}/{name} has no version {version} in Consul")
    record = VersionRecord.from_bytes(entry.value)
    if sha256 is not None and record.sha256 != sha256:
        raise ConfigdError(f"{namespace}/{name} v{version} in Consul is not the content its rollout names")
    return record


def decoded_document(gateway: ConsulGateway, layout: KeyLayout, record: VersionRecord) -> Document:
    """A version record's document, decoded (blob chunks read if need be) and checked against its sha256."""

    def chunks(rec: VersionRecord) -> list[bytes]:
        return gateway.get_values(layout.blob_chunks(rec.namespace, rec.name, rec.sha256, rec.chunks))

    data, canonical = decode_data_and_bytes(record, chunks)
    if not isinstance(data, dict):
        raise InvalidConfig(f"{record.namespace}/{record.name} v{record.version} is not a JSON object")
    return Document(record.namespace, record.name, record.version, record.sha256, data, "consul", canonical=canonical)


def fetch_document(gateway: ConsulGateway, layout: KeyLayout, head: HeadRecord) -> Document:
    """The version body a head points to, decoded (and checked against its sha256)."""
    record = fetch_version(gateway, layout, head.namespace, head.name, head.version)
    return decoded_document(gateway, layout, record)


def load_document(gateway: ConsulGateway, layout: KeyLayout, head: HeadRecord) -> Document:
    """The document of ``head``: from the head itself when it carries it, else read from its version."""
    document = inline_document(head)
    return document if document is not None else fetch_document(gateway, layout, head)


def candidate_document(gateway: ConsulGateway, layout: KeyLayout, rollout: RolloutRecord) -> Document:
    """A rollout's candidate: from the rollout record when it carries it, else read from its version record."""
    data, canonical = rollout.candidate_inline(), None
    if data is None:
        record = fetch_version(
            gateway, layout, rollout.namespace, rollout.name, rollout.candidate_version, rollout.candidate_sha256
        )
        decoded = decoded_document(gateway, layout, record)
        data, canonical = decoded.data, decoded.canonical
    return Document(
        rollout.namespace,
        rollout.name,
        rollout.candidate_version,
        rollout.candidate_sha256,
        data,
        "consul",
        rollout.id,
        canonical=canonical,
    )


def document_to_run(
    gateway: ConsulGateway, layout: KeyLayout, head: HeadRecord, participant: RolloutParticipant | None
) -> Document:
    """What this process runs for ``head``: a rollout's candidate if it is a member, else the head's document.

    A candidate that cannot be read or does not match its sha256 is reported as the member's ``rejected``
    failure, then raised (the member stays on what it runs).
    """
    rollout = participant.choose(head) if participant is not None else None
    if rollout is None or participant is None:
        return load_document(gateway, layout, head)
    try:
        return candidate_document(gateway, layout, rollout)
    except (ConsulUnavailable, ConsulPermissionDenied):
        raise
    except ConfigdError as exc:
        participant.failed(rollout.namespace, rollout.name, rollout.id, "rejected", f"unreadable candidate: {exc}")
        raise


def read_document(
    gateway: ConsulGateway,
    layout: KeyLayout,
    namespace: str,
    name: str,
    participant: RolloutParticipant | None = None,
) -> Document | None:
    """One non-blocking read of what this process runs of a config (None if it does not exist or is deleted)."""
    entry = gateway.get(layout.head(namespace, name))
    if entry is None:
        return None
    head = HeadRecord.from_bytes(entry.value)
    return None if head.deleted else document_to_run(gateway, layout, head, participant)


class NamespaceWatcher:
    """Follows every watched config of one namespace with a single blocking query.

    Args:
        namespace: the namespace whose heads are watched.
        layout: the key layout (prefix) of the configd installation.
        blocking: a gateway used only for the blocking query (its one long-lived connection).
        reader: a gateway for short reads (heads at start, bodies too large to ride in a head), without keep-alive.
        wait_seconds: the maximum wait of one blocking query, jittered down by up to 10 %.
        participant: this process in rollouts (None: never a member of any).
    """

    def __init__(
        self,
        namespace: str,
        layout: KeyLayout,
        *,
        blocking: ConsulGateway,
        reader: ConsulGateway,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
        backoff: Backoff | None = None,
        rate_limiter: RateLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
        participant: RolloutParticipant | None = None,
    ) -> None:
        self.namespace = namespace
        self.participant = participant
        self.layout = layout
        self.prefix = layout.heads_prefix(namespace)
        self.heads = HeadIndex(self.prefix)
        self._blocking = blocking
        self._reader = reader
        self.wait_seconds = wait_seconds
        self._backoff = backoff or Backoff()
        self._rate = rate_limiter or RateLimiter()
        self._clock = clock
        self._lock = threading.Lock()
        self._targets: dict[str, tuple[LiveSettings[Any], ...]] = {}
        self._offered: dict[str, HeadKey | None] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reachable: bool | None = None  # None until the first answer or failure
        self.last_error: Exception | None = None
        self.queries = 0  # blocking and non-blocking list calls sent (for tests and metrics)

    # --- targets ------------------------------------------------------------------------------------
    def watch(self, name: str, live: LiveSettings[Any]) -> None:
        with self._lock:
            self._targets[name] = (*self._targets.get(name, ()), live)
            self._offered.pop(name, None)  # the new target needs the current head, even if others have it
            if self._thread is None:
                self._start_thread()
        if self.reachable is not None:
            live.set_reachable(self.reachable)

    def unwatch(self, name: str, live: LiveSettings[Any]) -> None:
        with self._lock:
            remaining = tuple(t for t in self._targets.get(name, ()) if t is not live)
            if remaining:
                self._targets[name] = remaining
            else:
                self._targets.pop(name, None)
                self._offered.pop(name, None)

    def read_now(self, name: str) -> Document | None:
        """One non-blocking read of a config's current version (None if it does not exist or is deleted)."""
        return read_document(self._reader, self.layout, self.namespace, name, self.participant)

    # --- the loop -------------------------------------------------------------------------------------
    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"configd-watch-{self.namespace}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set():
            pause = self._rate.delay(self._clock())
            if pause > 0 and self._stop.wait(pause):
                return
            try:
                self.queries += 1
                if index == 0:
                    returned, entries = self._blocking.list(self.prefix)
                else:
                    returned, entries = self._blocking.list(
                        self.prefix, index=index, wait=jittered_wait(self.wait_seconds)
                    )
            except (ConsulUnavailable, ConsulPermissionDenied) as exc:
                self._set_reachable(False, exc)
                index = self._reset()  # after an outage the cluster may be another one: read first, then block
                self._stop.wait(self._backoff.next_delay())
                continue
            except Exception:  # a bug must not end the watch silently: log it and retry like an outage
                log.exception("configd_client: watch of %s failed", self.namespace)
                index = self._reset()
                self._stop.wait(self._backoff.next_delay())
                continue
            if self._stop.is_set():
                return
            self._set_reachable(True, None)
            index = next_wait_index(index, returned)
            if index == 0:
                self.heads.reset()  # the index went backwards: ModifyIndexes seen so far mean nothing now
            with self._lock:
                targets = dict(self._targets)
            if not self._process(self.heads.update(entries, targets), targets):
                index = self._reset()
                self._stop.wait(self._backoff.next_delay())
            else:
                self._backoff.reset()

    def _reset(self) -> int:
        """Forget what the last answers said; the next query reads without blocking (index 0)."""
        self.heads.reset()
        return 0

    def _process(self, heads: dict[str, HeadRecord], targets: dict[str, tuple[LiveSettings[Any], ...]]) -> bool:
        """Offer every changed head to its targets; False when a body could not be fetched (retry)."""
        complete = True
        for name, lives in targets.items():
            head = heads.get(name)
            key = head_key(head)
            if key == self._offered.get(name, ()) or head is None:
                self._offered[name] = key
                continue
            if head.deleted:
                for live in lives:
                    live.report_error(NotFound(f"{self.namespace}/{name} was deleted; keeping v{live.version}"))
                self._offered[name] = key
                continue
            # A large document's decode and settings build run with the garbage collector paused (gc_pause).
            with paused_gc(head.size):
                try:
                    document = document_to_run(self._reader, self.layout, head, self.participant)
                except (ConsulUnavailable, ConsulPermissionDenied) as exc:
                    self._set_reachable(False, exc)
                    complete = False
                    continue
                except ConfigdError as exc:
                    for live in lives:
                        live.report_error(exc)
                    self._offered[name] = key
                    continue
                for live in lives:
                    live.offer(document)
            self._offered[name] = key
        return complete

    def _set_reachable(self, reachable: bool, exc: Exception | None) -> None:
        if exc is not None:
            self.last_error = exc
        if self.reachable == reachable:
            return
        if not reachable:
            log.warning("configd_client: Consul unreachable while watching %s: %s", self.namespace, exc)
        self.reachable = reachable
        with self._lock:
            lives = [live for group in self._targets.values() for live in group]
        for live in lives:
            live.set_reachable(reachable)

    def close(self) -> None:
        """Stop the loop. A query in flight is abandoned (daemon thread); it ends by its wait at the latest."""
        self._stop.set()

    def after_fork_in_child(self) -> None:
        """Own lock, stop event and thread in a forked child; its first query reads without blocking.

        The parent's thread did not survive the fork, and it may have held the lock. What the parent saw is
        forgotten (index 0, no head offered yet), so the child reads the heads at once and offers each to its
        targets: a version they already hold is no event (:func:`plan_apply`), a newer one is applied here.
        The gateways are the owner's to renew (:meth:`ConsulSource.after_fork_in_child`).
        """
        stopped = self._stop.is_set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self.heads.reset()
        self._offered = {}
        if stopped:
            self._stop.set()
        elif self._targets:
            self._start_thread()


class ConsulSource(ConfigSource):
    """Configs from Consul: one :class:`NamespaceWatcher` (one blocking query) per watched namespace.

    Args:
        address: Consul's HTTP address.
        token: Consul ACL token.
        layout: the key layout of the configd installation.
        wait_seconds: maximum wait of one blocking query.
        fallback: what stands in when Consul does not answer, for the start-up error message.
        participant: this process in rollouts (None: never a member of any).
    """

    origin = "consul"

    def __init__(
        self,
        address: str | None,
        *,
        token: str | None,
        layout: KeyLayout,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
        fallback: str = "the cache is disabled",
        participant: RolloutParticipant | None = None,
    ) -> None:
        self.layout = layout
        self.participant = participant
        self._token = token
        self._wait_seconds = wait_seconds
        self.fallback = fallback
        # Short requests only (start-up reads, large bodies, registration): no keep-alive, so when the process
        # is idle its only connection to Consul is the one blocking query per namespace.
        self.reader = ConsulGateway(address, token=token, pool_size=4, keep_alive=False)
        self.address = self.reader.address
        self._lock = threading.Lock()
        self._watchers: dict[str, NamespaceWatcher] = {}
        self._blocking: list[ConsulGateway] = []

    def watcher(self, namespace: str) -> NamespaceWatcher:
        """The namespace's watcher, created on first use (it starts with its first target)."""
        with self._lock:
            watcher = self._watchers.get(namespace)
            if watcher is None:
                blocking = ConsulGateway(self.address, token=self._token, pool_size=1)
                self._blocking.append(blocking)
                watcher = NamespaceWatcher(
                    namespace,
                    self.layout,
                    blocking=blocking,
                    reader=self.reader,
                    wait_seconds=self._wait_seconds,
                    participant=self.participant,
                )
                self._watchers[namespace] = watcher
            return watcher

    def read_now(self, namespace: str, name: str) -> Document | None:
        return read_document(self.reader, self.layout, namespace, name, self.participant)

    def follow(self, live: LiveSettings[Any]) -> None:
        self.watcher(live.namespace).watch(live.name, live)

    def unfollow(self, live: LiveSettings[Any]) -> None:
        self.watcher(live.namespace).unwatch(live.name, live)

    def missing(self, live: LiveSettings[Any], timeout: float, unreachable: Exception | None) -> Exception:
        if live.last_error is not None and not isinstance(live.last_error, NotFound):
            return live.last_error
        watcher = self.watcher(live.namespace)
        denied = next((e for e in (unreachable, watcher.last_error) if isinstance(e, ConsulPermissionDenied)), None)
        if denied is not None:  # Consul answered, and said no: a token problem, not an outage
            return ConsulPermissionDenied(
                f"could not load {live.ref}: Consul at {self.address} refused this client's ACL token ({denied}); "
                f"the token needs read on {self.layout.heads_prefix(live.namespace)}, "
                f"{self.layout.prefix}/versions/{live.namespace}/ and {self.layout.prefix}/blobs/{live.namespace}/"
            )
        if unreachable is not None or watcher.reachable is not True:
            cause = watcher.last_error or unreachable
            return ConsulUnavailable(
                f"could not load {live.ref}: Consul at {self.address} did not answer within {timeout}s and "
                f"{self.fallback} ({cause})"
            )
        return NotFound(f"config {live.ref} does not exist in Consul at {self.address} (waited {timeout}s)")

    def after_fork_in_child(self) -> None:
        """New connection pools (the inherited ones are the parent's), then every watcher starts over."""
        self._lock = threading.Lock()
        self.reader.forget_connections()
        for gateway in self._blocking:
            gateway.forget_connections()
        for watcher in list(self._watchers.values()):
            watcher.after_fork_in_child()

    def close(self) -> None:
        for watcher in list(self._watchers.values()):
            watcher.close()
        for gateway in self._blocking:
            gateway.close()
        self.reader.close()
