"""What the SDK does after a wake-up, counted on a real Consul: reads, parses and writes on the hot path.

The reader gateway is a real :class:`ConsulGateway` that also notes each call it makes (no mock: every call
still goes to the session's Consul agent).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict

from configd.services.configs import ConfigStore
from configd_client._live import LiveSettings
from configd_client._registration import InstanceRegistration
from configd_client._source import SettingsFactory
from configd_client._watcher import NamespaceWatcher
from configd_core.consul import ConsulGateway, KVEntry
from configd_core.layout import HEAD_INLINE_BYTES, KeyLayout
from configd_core.records import ClientRecord

pytestmark = pytest.mark.timeout(90)


class Flag(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    level: int = 0


class CountingGateway(ConsulGateway):
    """A ConsulGateway that records ``(operation, key, time.monotonic())`` for every call it sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, str, float]] = []
        self._calls_lock = threading.Lock()

    def _note(self, operation: str, key: str) -> None:
        with self._calls_lock:
            self.calls.append((operation, key, time.monotonic()))

    def of(self, operation: str) -> list[tuple[str, str, float]]:
        with self._calls_lock:
            return [call for call in self.calls if call[0] == operation]

    def get(self, key: str, *, consistent: bool = False) -> KVEntry | None:
        self._note("get", key)
        return super().get(key, consistent=consistent)

    def list(
        self, prefix: str, *, index: int | None = None, wait: str | None = None, consistent: bool = False
    ) -> tuple[int, list[KVEntry]]:
        self._note("list", prefix)
        return super().list(prefix, index=index, wait=wait, consistent=consistent)

    def put(self, key: str, value: bytes, *, cas: int | None = None, acquire: str | None = None) -> None:
        self._note("put", key)
        super().put(key, value, cas=cas, acquire=acquire)

    def session_create(self, name: str, ttl_seconds: int, *, behavior: str = "delete") -> str:
        self._note("session.create", name)
        return super().session_create(name, ttl_seconds, behavior=behavior)

    def session_renew(self, session_id: str) -> bool:
        self._note("session.renew", session_id)
        return super().session_renew(session_id)


def wait_until(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


@pytest.fixture
def reader(consul_addr: str) -> Iterator[CountingGateway]:
    with CountingGateway(consul_addr, keep_alive=False) as gateway:
        yield gateway


def test_a_small_change_is_applied_from_the_wake_up_alone(
    gateway: ConsulGateway, layout: KeyLayout, consul_addr: str, reader: CountingGateway
) -> None:
    store = ConfigStore(gateway, layout)
    names = [f"flag{i:02d}" for i in range(10)]
    for name in [*names, "wide"]:
        store.register_schema("hot", name, {"type": "object"}, actor="test")
        store.push("hot", name, {"level": 1}, actor="test")
    wide = {"level": 1, "pad": "x" * HEAD_INLINE_BYTES}  # too large to ride in its head
    store.push("hot", "wide", wide, actor="test")
    blocking = ConsulGateway(consul_addr, pool_size=1)
    watcher = NamespaceWatcher("hot", layout, blocking=blocking, reader=reader, wait_seconds=1.0)
    lives: dict[str, LiveSettings[Flag]] = {}
    try:
        for name in [*names, "wide"]:
            live = LiveSettings(SettingsFactory(Flag), "hot", name)
            watcher.watch(name, live)
            document = watcher.read_now(name)
            assert document is not None
            live.offer(document)
            lives[name] = live
        version_reads = [key for op, key, _ in reader.calls if op == "get" and "/versions/" in key]
        assert version_reads == [layout.version("hot", "wide", 2)], "only the large config's body is read"
        # Every watched head parsed once (the 1 s waits pick up heads watched after the first answer) ...
        assert wait_until(lambda: watcher.heads.parses == 11), watcher.heads.parses
        reader.calls.clear()

        started = time.perf_counter()
        store.push("hot", "flag03", {"level": 2}, actor="test")
        assert lives["flag03"].wait_for_version(2, 10)
        applied = time.perf_counter() - started
        assert lives["flag03"].current.level == 2 and not lives["flag03"].stale
        assert reader.calls == [], "a small change needs no read besides the wake-up itself"
        assert watcher.heads.parses == 12, "only the head that changed is parsed again"

        store.push("hot", "wide", {**wide, "level": 3}, actor="test")
        assert lives["wide"].wait_for_version(3, 10) and lives["wide"].current.level == 3
        assert [key for op, key, _ in reader.calls if op == "get"] == [layout.version("hot", "wide", 3)]
        print(f"\nsmall change applied {applied * 1000:.1f} ms after the push began (push included), no reads")
    finally:
        watcher.close()
        for live in lives.values():
            live.close()
        blocking.close()


def test_registration_publishes_after_the_delay_and_renews_only_when_due(
    layout: KeyLayout, gateway: ConsulGateway, reader: CountingGateway
) -> None:
    registration = InstanceRegistration(reader, layout, application="hot", ttl_seconds=10, publish_delay=0.3)
    key = layout.client("hot", registration.instance_id)

    def applied() -> dict[str, int] | None:
        entry = gateway.get(key)
        return ClientRecord.from_bytes(entry.value).applied if entry is not None else None

    try:
        marked = time.monotonic()
        registration.watch("hot", "a")
        registration.applied("hot", "a", 1)
        registration.applied("hot", "a", 2)
        registration.applied("hot", "b", 1)
        assert wait_until(lambda: applied() == {"a": 2, "b": 1})
        first = reader.of("put")
        assert len(first) == 1, "a burst of applied versions is one write"
        assert first[0][2] >= marked + 0.3, "written before the publish delay had passed"
        assert len(reader.of("session.create")) == 1 and reader.of("session.renew") == []

        marked = time.monotonic()
        registration.applied("hot", "a", 3)
        assert wait_until(lambda: applied() == {"a": 3, "b": 1})
        puts = reader.of("put")
        assert len(puts) == 2 and puts[1][2] >= marked + 0.3
        assert reader.of("session.renew") == [], "a write does not renew the session"
        print(f"\npublished {puts[1][2] - marked:.2f} s after the change (delay 0.3 s, spread up to 0.45 s)")

        # The session ends behind the client's back (as when Consul was away longer than the TTL): the
        # entry goes with it, and the next renewal (every TTL/3) notices and registers again.
        lost = registration.session
        assert lost is not None
        gateway.session_destroy(lost)
        assert wait_until(lambda: applied() is None)
        assert wait_until(lambda: applied() == {"a": 3, "b": 1}, timeout=15), "never registered again"
        assert registration.session not in (None, lost) and len(reader.of("session.renew")) >= 1
        entry = gateway.get(key)
        assert entry is not None and entry.session == registration.session

        # A write that meets an ended session before the renewal is due is retried after checking it.
        lost = registration.session
        assert lost is not None
        gateway.session_destroy(lost)
        registration.applied("hot", "b", 2)
        assert wait_until(lambda: applied() == {"a": 3, "b": 2}, timeout=20), "the write was never retried"
        assert registration.session not in (None, lost)
    finally:
        registration.close()
    assert gateway.get(key) is None  # close() destroyed the session, and the entry went with it
