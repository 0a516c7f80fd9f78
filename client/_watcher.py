"""NamespaceWatcher: ONE blocking query on ``heads/<ns>/`` per watched namespace, however many configs.

The watcher thread only talks to Consul; the rules it follows (index bookkeeping, backoff, rate limit,
which heads changed) are the pure pieces in :mod:`._blocking` and :mod:`._events`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ._blocking import DEFAULT_WAIT_SECONDS, Backoff, RateLimiter, jittered_wait, next_wait_index
from ._consul import ConsulGateway, KVEntry
from ._events import Document
from ._exceptions import ConfigdError, ConsulPermissionDenied, ConsulUnavailable, InvalidConfig, NotFound
from ._layout import KeyLayout
from ._live import LiveSettings
from ._records import HeadRecord, VersionRecord, decode_data

log = logging.getLogger("configd_client")

HeadKey = tuple[int, str, bool]


def head_key(head: HeadRecord | None) -> HeadKey | None:
    return (head.version, head.sha256, head.deleted) if head is not None else None


def parse_heads(prefix: str, entries: list[KVEntry]) -> dict[str, HeadRecord]:
    """The head records directly under ``prefix``, by config name; unreadable ones are skipped (logged)."""
    heads: dict[str, HeadRecord] = {}
    for entry in entries:
        name = entry.key[len(prefix) :]
        if not name or "/" in name:
            continue
        try:
            heads[name] = HeadRecord.from_bytes(entry.value)
        except ConfigdError as exc:
            log.warning("configd_client: skipping unreadable head %s: %s", entry.key, exc)
    return heads


def fetch_document(gateway: ConsulGateway, layout: KeyLayout, head: HeadRecord) -> Document:
    """The version body a head points to, decoded (and checked against its sha256)."""
    entry = gateway.get(layout.version(head.namespace, head.name, head.version))
    if entry is None:
        raise NotFound(f"{head.namespace}/{head.name} has no version {head.version} in Consul")
    record = VersionRecord.from_bytes(entry.value)

    def chunks(rec: VersionRecord) -> list[bytes]:
        _, parts = gateway.list(layout.blob_prefix(rec.namespace, rec.name, rec.sha256))
        return [e.value for e in sorted(parts, key=lambda e: e.key)]

    data = decode_data(record, chunks)
    if not isinstance(data, dict):
        raise InvalidConfig(f"{head.namespace}/{head.name} v{record.version} is not a JSON object")
    return Document(head.namespace, head.name, record.version, record.sha256, data, "consul")


class NamespaceWatcher:
    """Follows every watched config of one namespace with a single blocking query.

    Args:
        namespace: the namespace whose heads are watched.
        layout: the key layout (prefix) of the configd installation.
        blocking: a gateway used only for the blocking query (its one long-lived connection).
        reader: a gateway for short reads (version bodies), ideally without keep-alive.
        wait_seconds: the maximum wait of one blocking query, jittered down by up to 10 %.
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
    ) -> None:
        self.namespace = namespace
        self.layout = layout
        self.prefix = layout.heads_prefix(namespace)
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
                self._thread = threading.Thread(target=self._run, name=f"configd-watch-{self.namespace}", daemon=True)
                self._thread.start()
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
        entry = self._reader.get(self.layout.head(self.namespace, name))
        if entry is None:
            return None
        head = HeadRecord.from_bytes(entry.value)
        return None if head.deleted else fetch_document(self._reader, self.layout, head)

    # --- the loop -------------------------------------------------------------------------------------
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
                index = 0  # after an outage the cluster may be another one: read first, then block
                self._stop.wait(self._backoff.next_delay())
                continue
            except Exception:  # a bug must not end the watch silently: log it and retry like an outage
                log.exception("configd_client: watch of %s failed", self.namespace)
                index = 0
                self._stop.wait(self._backoff.next_delay())
                continue
            if self._stop.is_set():
                return
            self._set_reachable(True, None)
            index = next_wait_index(index, returned)
            if not self._process(parse_heads(self.prefix, entries)):
                index = 0
                self._stop.wait(self._backoff.next_delay())
            else:
                self._backoff.reset()

    def _process(self, heads: dict[str, HeadRecord]) -> bool:
        """Offer every changed head to its targets; False when a body could not be fetched (retry)."""
        with self._lock:
            targets = dict(self._targets)
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
            try:
                document = fetch_document(self._reader, self.layout, head)
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
