"""ConfigClient: typed settings from configd, kept current from Consul (or a local directory)."""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic_settings import BaseSettings

from configd_core.blocking import DEFAULT_WAIT_SECONDS
from configd_core.consul import ConsulGateway
from configd_core.errors import ConfigdError, ConsulPermissionDenied, ConsulUnavailable, NotFound
from configd_core.layout import DEFAULT_PREFIX, KeyLayout, parse_ref

from ._cache import CacheWriter, LastKnownGoodCache, default_cache_dir
from ._events import Document
from ._filesource import FileWatcher
from ._live import LiveSettings
from ._registration import DEFAULT_PUBLISH_DELAY, DEFAULT_SESSION_TTL, InstanceRegistration
from ._source import SettingsFactory
from ._watcher import NamespaceWatcher

log = logging.getLogger("configd_client")

S = TypeVar("S", bound=BaseSettings)

DEFAULT_SETTINGS_TIMEOUT = 10.0
# How often settings() re-checks, while waiting for a first value, whether Consul has failed (to use the cache).
_STARTUP_TICK = 0.05


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

    Nothing happens at construction: the first :meth:`settings` call starts the watch of its namespace.
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
    ) -> None:
        self.source = parse_source(source, address)
        self.layout = KeyLayout(prefix or os.environ.get("CONFIGD_PREFIX") or DEFAULT_PREFIX)
        self._token = token
        self._wait_seconds = wait_seconds
        self._lock = threading.Lock()
        self._closed = False
        self._lives: list[LiveSettings[Any]] = []
        self._watchers: dict[str, NamespaceWatcher] = {}
        self._blocking_gateways: list[ConsulGateway] = []
        self.cache: LastKnownGoodCache | None = None
        self._cache_writer: CacheWriter | None = None
        self._reader: ConsulGateway | None = None
        self._files: FileWatcher | None = None
        self.registration: InstanceRegistration | None = None
        if self.source.kind == "file":
            assert self.source.directory is not None
            self._files = FileWatcher(self.source.directory)
            return
        # Short requests only (start-up reads, large bodies, registration): no keep-alive, so when the process
        # is idle its only connection to Consul is the one blocking query per namespace.
        self._reader = ConsulGateway(self.source.address, token=token, pool_size=4, keep_alive=False)
        self.address = self._reader.address
        if cache:
            self.cache = LastKnownGoodCache(cache_dir or default_cache_dir(), self.layout.prefix)
            self._cache_writer = CacheWriter(self.cache)
        if register:
            self.registration = InstanceRegistration(
                self._reader,
                self.layout,
                application=application,
                ttl_seconds=session_ttl,
                publish_delay=registration_delay,
            )

    # --- public API -----------------------------------------------------------------------------------
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
        live: LiveSettings[S] = LiveSettings(factory, namespace, name, on_applied=self._applied)
        try:
            if self._files is not None:
                self._start_file(live, timeout)
            else:
                self._start_consul(live, timeout)
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
            watchers, lives = list(self._watchers.values()), list(self._lives)
        for watcher in watchers:
            watcher.close()
        for live in lives:
            live.close()
        if self._files is not None:
            self._files.close()
        if self._cache_writer is not None:
            self._cache_writer.close()
        if self.registration is not None:
            self.registration.close()
        for gateway in self._blocking_gateways:
            gateway.close()
        if self._reader is not None:
            self._reader.close()

    def __enter__(self) -> ConfigClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- sources ----------------------------------------------------------------------------------------
    def _start_file(self, live: LiveSettings[S], timeout: float) -> None:
        files = self._files
        assert files is not None
        files.watch(live.namespace, live.name, live)
        try:
            document = files.read_now(live.namespace, live.name)
            if document is not None:
                live.offer(document)
            if not live.wait_ready(timeout):
                if live.last_error is not None:
                    raise live.last_error
                raise NotFound(f"no file {files.path(live.namespace, live.name)} (waited {timeout}s)")
        except BaseException:
            files.unwatch(live.namespace, live.name, live)
            raise

    def _watcher(self, namespace: str) -> NamespaceWatcher:
        with self._lock:
            watcher = self._watchers.get(namespace)
            if watcher is None:
                assert self._reader is not None
                blocking = ConsulGateway(self.source.address, token=self._token, pool_size=1)
                self._blocking_gateways.append(blocking)
                watcher = NamespaceWatcher(
                    namespace, self.layout, blocking=blocking, reader=self._reader, wait_seconds=self._wait_seconds
                )
                self._watchers[namespace] = watcher
            return watcher

    def _start_consul(self, live: LiveSettings[S], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        watcher = self._watcher(live.namespace)
        watcher.watch(live.name, live)
        if self.registration is not None:
            self.registration.watch(live.namespace, live.name)
        try:
            unreachable: Exception | None = None
            try:
                document = watcher.read_now(live.name)
                if document is not None:
                    live.offer(document)
            except (ConsulUnavailable, ConsulPermissionDenied) as exc:
                unreachable = exc
            cache_tried = False
            while not live.ready:
                failed = unreachable is not None or watcher.reachable is False
                if failed and not cache_tried and self.cache is not None:
                    cache_tried = True
                    cached = self.cache.read(live.namespace, live.name)
                    if cached is not None:
                        live.offer(cached)
                        if live.ready:
                            log.warning(
                                "configd_client: Consul unreachable; %s starts from the cached v%d (stale)",
                                live.ref,
                                live.version,
                            )
                            live.set_reachable(False)
                            break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._startup_error(live, watcher, unreachable, timeout)
                live.wait_ready(min(remaining, _STARTUP_TICK))
        except BaseException:
            watcher.unwatch(live.name, live)
            raise
        if self._cache_writer is not None and not live.stale:
            # Off the hot path: settings() returns once its first version is in the cache, as a process
            # started right after this one (Consul gone meanwhile) expects.
            self._cache_writer.flush(max(0.0, deadline - time.monotonic()))

    def _startup_error(
        self, live: LiveSettings[Any], watcher: NamespaceWatcher, unreachable: Exception | None, timeout: float
    ) -> Exception:
        if live.last_error is not None and not isinstance(live.last_error, NotFound):
            return live.last_error
        denied = next((e for e in (unreachable, watcher.last_error) if isinstance(e, ConsulPermissionDenied)), None)
        if denied is not None:  # Consul answered, and said no: a token problem, not an outage
            return ConsulPermissionDenied(
                f"could not load {live.ref}: Consul at {self.address} refused this client's ACL token ({denied}); "
                f"the token needs read on {self.layout.heads_prefix(live.namespace)}, "
                f"{self.layout.prefix}/versions/{live.namespace}/ and {self.layout.prefix}/blobs/{live.namespace}/"
            )
        if unreachable is not None or watcher.reachable is not True:
            cause = watcher.last_error or unreachable
            where = f"no cached version in {self.cache.root}" if self.cache is not None else "the cache is disabled"
            return ConsulUnavailable(
                f"could not load {live.ref}: Consul at {self.address} did not answer within {timeout}s and {where}"
                f" ({cause})"
            )
        return NotFound(f"config {live.ref} does not exist in Consul at {self.address} (waited {timeout}s)")

    def _applied(self, live: LiveSettings[Any], document: Document) -> None:
        # On the watch thread, between one head and the next: both only queue work for their own threads.
        if document.origin == "consul":
            if self._cache_writer is not None:
                self._cache_writer.submit(document)
            if self.registration is not None:
                self.registration.applied(document.namespace, document.name, document.version)

    def __repr__(self) -> str:
        where = self.source.directory if self.source.kind == "file" else self.address
        return f"<ConfigClient {self.source.kind} {where} prefix={self.layout.prefix!r}>"
