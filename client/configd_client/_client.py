"""ConfigClient: typed settings from configd, kept current from Consul (or a local directory)."""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic_settings import BaseSettings

from configd_core.blocking import DEFAULT_WAIT_SECONDS
from configd_core.errors import ConfigdError, ConsulPermissionDenied, ConsulUnavailable
from configd_core.layout import DEFAULT_PREFIX, KeyLayout, parse_ref
from configd_core.records import FailureKind
from configd_core.rollouts import InstanceIdentity

from ._cache import CacheSource, LastKnownGoodCache, default_cache_dir
from ._events import Document
from ._filesource import FileSource
from ._live import LiveSettings
from ._providers import ConfigSource
from ._registration import DEFAULT_PUBLISH_DELAY, DEFAULT_SESSION_TTL, InstanceRegistration, default_application
from ._rollouts import RolloutParticipant, checked_labels, default_instance_key, default_labels
from ._source import SettingsFactory
from ._watcher import ConsulSource

log = logging.getLogger("configd_client")

S = TypeVar("S", bound=BaseSettings)

DEFAULT_SETTINGS_TIMEOUT = 10.0


@dataclass(frozen=True)
class SourceSpec:
    """Where configs come from: Consul at ``address``, or a directory of JSON files."""

    kind: Literal["consul", "file"]
    address: str | None = None
    directory: Path | None = None


def parse_source(source: str | None, address: str | None = None) -> SourceSpec:
    """``file:///dir`` (or ``file://relative/dir``) → file mode; ``consul://h:p``/``http(s)://h:p``/None → Consul."""
    if source is None:
        return SourceSpec("consul", address)
    if source.startswith("file://"):
        parsed = urllib.parse.urlparse(source)
        raw = urllib.parse.unquote(parsed.netloc + parsed.path)
        if not raw:
            raise ConfigdError(f"file source {source!r} names no directory")
        return SourceSpec("file", directory=Path(raw))
    if source.startswith("consul://"):
        return SourceSpec("consul", "http://" + source[len("consul://") :])
    if source.startswith(("http://", "https://")):
        return SourceSpec("consul", source)
    raise ConfigdError(f"unknown config source {source!r}: use file:///dir, consul://host:port or http://host:port")


class ConfigClient:
    """Typed, hot-reloaded settings from configd.

    Args:
        address: Consul's HTTP address; defaults to ``CONSUL_HTTP_ADDR``, then ``http://127.0.0.1:8500``.
        token: Consul ACL token; defaults to ``CONSUL_HTTP_TOKEN``.
        source: ``file:///dir`` to read ``<dir>/<ns>/<name>.json`` instead of Consul (same API), or a
            ``consul://host:port`` / ``http://host:port`` address.
        prefix: the configd key prefix in Consul; defaults to ``CONFIGD_PREFIX``, then ``configd``.
        cache_dir: the last-known-good cache; defaults to ``CONFIGD_CACHE_DIR``, then ``~/.cache/configd``.
        cache: False disables the last-known-good cache.
        application: the name this process registers under; defaults to ``CONFIGD_APPLICATION`` or argv[0].
        register: False skips instance registration in Consul.
        wait_seconds: maximum wait of one blocking query.
        session_ttl: TTL in seconds of the registration session.
        registration_delay: about how long after a version is applied it shows in the registration (seconds;
            the write waits 1 to 1.5 times this, so it never competes with the change it reports).
        labels: this instance's labels, which rollout cohorts select by; defaults to ``CONFIGD_LABELS``
            (``region=eu,tier=canary``), then none.
        instance_key: the stable key rollout percentages are computed from; defaults to
            ``CONFIGD_INSTANCE_KEY``, then ``<host name>/<application>``. Keep it stable across restarts.

    Nothing happens at construction: the first :meth:`settings` call starts the watch of its namespace.

    A client survives ``os.fork()`` (gunicorn ``--preload``, uWSGI, Celery's prefork pool, ``multiprocessing``):
    in the child it starts its own watches, connections, cache writer and registration (a new instance id),
    catches up with Consul at once, and keeps every LiveSettings and callback — nothing to call.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        token: str | None = None,
        source: str | None = None,
        prefix: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        cache: bool = True,
        application: str | None = None,
        register: bool = True,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
        session_ttl: int = DEFAULT_SESSION_TTL,
        registration_delay: float = DEFAULT_PUBLISH_DELAY,
        labels: Mapping[str, str] | None = None,
        instance_key: str | None = None,
    ) -> None:
        self.source = parse_source(source, address)
        application = application or default_application()
        own_labels = checked_labels(labels) if labels is not None else default_labels()
        key = instance_key or default_instance_key(application)
        self._participant = RolloutParticipant(InstanceIdentity(key, "", own_labels))
        self.layout = KeyLayout(prefix or os.environ.get("CONFIGD_PREFIX") or DEFAULT_PREFIX)
        self._lock = threading.Lock()
        self._closed = False
        self._lives: list[LiveSettings[Any]] = []
        self.cache: LastKnownGoodCache | None = None
        self._fallback: CacheSource | None = None
        self.registration: InstanceRegistration | None = None
        self._primary: ConfigSource
        if self.source.kind == "file":
            assert self.source.directory is not None
            self._primary = FileSource(self.source.directory)
        else:
            if cache:
                self.cache = LastKnownGoodCache(cache_dir or default_cache_dir(), self.layout.prefix)
                self._fallback = CacheSource(self.cache)
            fallback = f"no cached version in {self.cache.root}" if self.cache is not None else "the cache is disabled"
            consul = ConsulSource(
                self.source.address,
                token=token,
                layout=self.layout,
                wait_seconds=wait_seconds,
                fallback=fallback,
                participant=self._participant,
            )
            self._primary = consul
            self.address = consul.address
            if register:
                self.registration = InstanceRegistration(
                    consul.reader,
                    self.layout,
                    application=application,
                    ttl_seconds=session_ttl,
                    publish_delay=registration_delay,
                    instance_key=key,
                    labels=own_labels,
                )
                self._participant.sink = self.registration
                self._sync_identity()
        _CLIENTS.add(self)

    # --- public API -----------------------------------------------------------------------------------
    @property
    def identity(self) -> InstanceIdentity:
        """Who this process is in rollouts: the stable instance key, the registration's instance id (empty
        without registration; new in a forked child) and the labels."""
        return self._participant.identity

    def settings(
        self,
        model: type[S],
        ref: str,
        *,
        timeout: float = DEFAULT_SETTINGS_TIMEOUT,
        overrides: Mapping[str, Any] | None = None,
    ) -> LiveSettings[S]:
        """Follow config ``ref`` (``"namespace/name"``) as instances of ``model``; waits for the first value.

        Precedence: ``overrides`` (init arguments) > environment > dotenv > secrets > configd > defaults.

        Raises:
            ConsulUnavailable: Consul did not answer within ``timeout`` and no cached version exists.
            NotFound: the config does not exist (after ``timeout``).
            ValidationFailed: the current version fails ``model`` (and no earlier value could be used).
        """
        namespace, name = parse_ref(ref)
        factory = SettingsFactory(model, overrides)
        with self._lock:
            if self._closed:
                raise ConfigdError("the ConfigClient is closed")
        live: LiveSettings[S] = LiveSettings(
            factory, namespace, name, on_applied=self._applied, on_failure=self._rollout_failed
        )
        try:
            self._start(live, timeout)
        except BaseException:
            live.close()
            raise
        with self._lock:
            self._lives.append(live)
        return live

    def close(self) -> None:
        """Stop every watch, callback worker and the registration (its Consul entries are removed).

        Applied versions not yet written to the last-known-good cache are written before it returns.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            lives = list(self._lives)
        for live in lives:
            live.close()
        self._primary.close()
        if self._fallback is not None:
            self._fallback.close()
        if self.registration is not None:
            self.registration.close()
        _CLIENTS.discard(self)

    def __enter__(self) -> ConfigClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- start-up ---------------------------------------------------------------------------------------
    def _start(self, live: LiveSettings[S], timeout: float) -> None:
        """Read now, follow, and wait for a first value; the cache stands in when the source cannot be reached.

        Every wait is on the LiveSettings' condition, woken by a first version or by the source reporting that
        it cannot reach its origin (``set_reachable``): no polling.
        """
        deadline = time.monotonic() + timeout
        source = self._primary
        source.follow(live)
        if self.registration is not None:
            self.registration.watch(live.namespace, live.name)
        try:
            unreachable: Exception | None = None
            try:
                document = source.read_now(live.namespace, live.name)
                if document is not None:
                    live.offer(document)
            except (ConsulUnavailable, ConsulPermissionDenied) as exc:
                unreachable = exc
            if not live.ready and self._fallback is not None:
                if unreachable is None:
                    live.wait_ready(_remaining(deadline), until_unreachable=True)
                if not live.ready and (unreachable is not None or not live.reachable):
                    self._start_from_cache(live, self._fallback)
            if not live.ready and not live.wait_ready(_remaining(deadline)):
                raise source.missing(live, timeout, unreachable)
        except BaseException:
            source.unfollow(live)
            raise
        if self._fallback is not None and not live.stale:
            # Off the hot path: settings() returns once its first version is in the cache, as a process
            # started right after this one (Consul gone meanwhile) expects.
            self._fallback.flush(_remaining(deadline))

    def _start_from_cache(self, live: LiveSettings[Any], cache: CacheSource) -> None:
        cached = cache.read_now(live.namespace, live.name)
        if cached is None:
            return
        live.offer(cached)
        if live.ready:
            log.warning(
                "configd_client: Consul unreachable; %s starts from the cached v%d (stale)", live.ref, live.version
            )
            live.set_reachable(False)

    def _applied(self, live: LiveSettings[Any], document: Document) -> None:
        # On the watch thread, between one head and the next: both only queue work for their own threads.
        if document.origin == "consul":
            if self._fallback is not None and document.rollout is None:
                # The cache holds heads only, never a rollout's candidate: the cache directory is shared by the
                # processes of a host, and a non-member must never start on a candidate (docs/client.md).
                self._fallback.keep(document)
            if self.registration is not None:
                self.registration.applied(document.namespace, document.name, document.version)

    def _rollout_failed(self, live: LiveSettings[Any], rollout_id: str, kind: FailureKind, reason: str) -> None:
        self._participant.failed(live.namespace, live.name, rollout_id, kind, reason)

    def _sync_identity(self) -> None:
        """Rebind the rollout identity to the registration's instance id (at start and after a fork)."""
        if self.registration is not None:
            old = self._participant.identity
            self._participant.identity = InstanceIdentity(old.key, self.registration.instance_id, old.labels)

    # --- fork ---------------------------------------------------------------------------------------------
    def _after_fork_in_child(self) -> None:
        """Make this client the child's own (called by ``os.register_at_fork``; see :func:`_after_fork`).

        Only the forking thread survives a fork: every other thread of the client is gone, and any lock one of
        them held stays locked. So locks are made anew before any thread starts, state first and threads last:
        LiveSettings (callbacks kept, nothing pending), cache writer, registration (new instance id), then the
        source, which drops the parent's connections and starts its watches with a non-blocking read.
        """
        self._lock = threading.Lock()
        if self._closed:
            return
        for live in self._lives:
            live.after_fork_in_child()
        if self._fallback is not None:
            self._fallback.after_fork_in_child()
        if self.registration is not None:
            self.registration.after_fork_in_child()
            self._sync_identity()  # before the watches restart: they decide membership with it
        self._primary.after_fork_in_child()
        if self.registration is not None:
            self.registration.resume()  # after the source: it shares the source's (now new) connections

    def __repr__(self) -> str:
        where = self.source.directory if self.source.kind == "file" else self.address
        return f"<ConfigClient {self.source.kind} {where} prefix={self.layout.prefix!r}>"


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


# Every open client, weakly: the fork hook must not keep a client alive.
_CLIENTS: weakref.WeakSet[ConfigClient] = weakref.WeakSet()
_FIRST_IN_CHILD: list[Callable[[], None]] = []


def first_in_forked_child(reset: Callable[[], None]) -> None:
    """Have ``reset()`` run in a forked child before any client restarts its threads (the asyncio views use it
    to let go of the parent's event loop before the first event of the child can reach them)."""
    _FIRST_IN_CHILD.append(reset)


def _after_fork() -> None:
    # Runs in the child's only thread: nothing else can touch the SDK's state until a client starts a thread.
    for reset in _FIRST_IN_CHILD:
        reset()
    for client in list(_CLIENTS):
        try:
            client._after_fork_in_child()
        except Exception:  # one broken client must not leave the others frozen
            log.exception("configd_client: %r could not restart after fork", client)


os.register_at_fork(after_in_child=_after_fork)
