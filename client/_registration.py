"""Instance registration: this process, its configs and their applied versions, under a Consul session.

``clients/<ns>/<instance>`` holds a :class:`ClientRecord` acquired by a session with a TTL and
``behavior=delete``: when the process dies and stops renewing, Consul deletes the entry (after at most
twice the TTL, Consul's rule); :meth:`InstanceRegistration.close` destroys the session at once. Renewals
and writes are short requests on a gateway without keep-alive, so registration adds no long-lived
connection. Registration never affects settings: its failures are logged and retried.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import uuid
from pathlib import Path

from ._blocking import Backoff
from ._consul import ConsulGateway
from ._exceptions import ConfigdError
from ._layout import KeyLayout
from ._records import ClientRecord, utcnow

log = logging.getLogger("configd_client")

DEFAULT_SESSION_TTL = 30  # seconds; Consul accepts 10 s to 24 h


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


class InstanceRegistration:
    """Keeps this process's ClientRecords in Consul while it runs (one thread, short requests)."""

    def __init__(
        self,
        gateway: ConsulGateway,
        layout: KeyLayout,
        *,
        application: str | None = None,
        instance_id: str | None = None,
        ttl_seconds: int = DEFAULT_SESSION_TTL,
    ) -> None:
        self._gateway = gateway
        self._layout = layout
        self.application = application or default_application()
        self.instance_id = instance_id or new_instance_id()
        self.ttl_seconds = max(10, int(ttl_seconds))
        self.started_at = utcnow()
        self.host = socket.gethostname()
        self.session: str | None = None
        self._applied: dict[str, dict[str, int]] = {}
        self._dirty: set[str] = set()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._backoff = Backoff(base=1.0, cap=self.ttl_seconds / 3)

    def record(self, namespace: str) -> ClientRecord:
        with self._cond:
            applied = dict(self._applied.get(namespace, {}))
        return ClientRecord(
            instance=self.instance_id,
            application=self.application,
            host=self.host,
            pid=os.getpid(),
            started_at=self.started_at,
            updated_at=utcnow(),
            applied=applied,
        )

    def watch(self, namespace: str, name: str) -> None:
        self._update(namespace, name, None)

    def applied(self, namespace: str, name: str, version: int) -> None:
        self._update(namespace, name, version)

    def _update(self, namespace: str, name: str, version: int | None) -> None:
        with self._cond:
            if self._closed:
                return
            configs = self._applied.setdefault(namespace, {})
            if version is not None:
                configs[name] = version
            else:
                configs.setdefault(name, 0)
            self._dirty.add(namespace)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="configd-registration", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        renew_every = self.ttl_seconds / 3
        delay = 0.0
        retry: set[str] = set()
        while True:
            with self._cond:
                if delay:
                    # Backing off: only close() ends the pause. Waking for pending namespaces here would
                    # retry at once, forever, while Consul is down (a busy loop).
                    self._cond.wait_for(lambda: self._closed, timeout=delay)
                else:
                    self._cond.wait_for(lambda: self._closed or bool(self._dirty), timeout=renew_every)
                if self._closed:
                    return
                dirty, self._dirty, retry = self._dirty | retry, set(), set()
            try:
                self._sync(dirty)
                self._backoff.reset()
                delay = 0.0
            except Exception as exc:  # registration must never take the process down; ConfigdError is usual
                if isinstance(exc, ConfigdError):
                    log.info("configd_client: registration failed, will retry: %s", exc)
                else:
                    log.exception("configd_client: registration failed, will retry")
                retry = dirty
                delay = self._backoff.next_delay()

    def _sync(self, dirty: set[str]) -> None:
        if self.session is not None and not self._gateway.session_renew(self.session):
            self.session = None  # expired (Consul was away longer than the TTL) or destroyed: start over
        if self.session is None:
            self.session = self._gateway.session_create(
                f"configd-client {self.application} {self.instance_id}", self.ttl_seconds, behavior="delete"
            )
            with self._cond:
                dirty = set(self._applied)
        for namespace in sorted(dirty):
            record = self.record(namespace)
            self._gateway.put(self._layout.client(namespace, self.instance_id), record.to_bytes(), acquire=self.session)

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
