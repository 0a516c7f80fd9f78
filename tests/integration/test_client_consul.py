"""configd_client against the session's real Consul agent: callbacks, validation, bursts, env, registration."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict

from configd.services.configs import ConfigStore
from configd_client import (
    AsyncConfigClient,
    ChangeEvent,
    ConfigClient,
    ConsulUnavailable,
    NotFound,
    ValidationFailed,
)
from configd_core.consul import ConsulGateway
from configd_core.layout import KeyLayout
from configd_core.records import ClientRecord

PERMISSIVE_SCHEMA = {"type": "object"}  # the server's schema lets through what the app's model will refuse


class PaymentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CFGTEST_", extra="ignore")

    timeout_ms: int = 500
    retries: int = 3
    currency: str = "EUR"


@pytest.fixture
def store(gateway: ConsulGateway, layout: KeyLayout) -> ConfigStore:
    configs = ConfigStore(gateway, layout)
    configs.register_schema("payments", "service", PERMISSIVE_SCHEMA, actor="test")
    return configs


@pytest.fixture
def client(consul_addr: str, layout: KeyLayout, tmp_path: Path) -> Iterator[ConfigClient]:
    with ConfigClient(consul_addr, prefix=layout.prefix, cache_dir=tmp_path / "cache", application="tests") as c:
        yield c


def wait_until(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


@pytest.mark.timeout(60)
def test_callback_fires_with_changed_paths_and_latency_is_printed(store: ConfigStore, client: ConfigClient) -> None:
    store.push("payments", "service", {"timeout_ms": 100, "retries": 2}, actor="test")
    live = client.settings(PaymentSettings, "payments/service", timeout=10)
    assert (live.version, live.current.timeout_ms, live.current.retries, live.stale) == (1, 100, 2, False)

    arrived: list[tuple[float, ChangeEvent[PaymentSettings]]] = []
    got = threading.Event()

    def on_change(event: ChangeEvent[PaymentSettings]) -> None:
        arrived.append((time.perf_counter(), event))
        got.set()

    live.on_change(on_change)
    latencies = []
    for round_ in range(10):
        got.clear()
        before = live.current
        started = time.perf_counter()
        store.push("payments", "service", {"timeout_ms": 200 + round_, "retries": 2, "currency": "USD"}, actor="t")
        assert got.wait(10), "no change callback within 10 s"
        at, event = arrived[-1]
        latencies.append((at - started) * 1000)
        assert event.old is before and event.new is live.current and event.version == round_ + 2
        expected = [("/timeout_ms", 199 + round_ if round_ else 100, 200 + round_)]
        if round_ == 0:
            expected = [("/currency", "EUR", "USD"), *expected]
        assert event.changes == expected
        assert before.timeout_ms == (199 + round_ if round_ else 100)  # the old object was never mutated
    print(
        f"\npush -> callback latency over {len(latencies)} pushes: median {statistics.median(latencies):.1f} ms, "
        f"max {max(latencies):.1f} ms (push itself included)"
    )


@pytest.mark.timeout(60)
def test_a_version_failing_the_model_keeps_the_old_object_and_calls_on_error(
    store: ConfigStore, client: ConfigClient
) -> None:
    store.push("payments", "service", {"timeout_ms": 100}, actor="test")
    live = client.settings(PaymentSettings, "payments/service")
    good = live.current
    errors: list[Exception] = []
    changes: list[ChangeEvent[PaymentSettings]] = []
    failed = threading.Event()
    live.on_error(lambda exc: (errors.append(exc), failed.set()))
    live.on_change(changes.append)

    store.push("payments", "service", {"timeout_ms": "soon"}, actor="test")  # valid JSON Schema, invalid model
    assert failed.wait(10)
    assert isinstance(errors[0], ValidationFailed)
    assert [e.path for e in errors[0].errors] == ["/timeout_ms"]
    assert live.current is good and live.version == 1

    store.push("payments", "service", {"timeout_ms": 300}, actor="test")
    assert live.wait_for_version(3, 10)
    assert live.callbacks_idle(10)
    assert live.current.timeout_ms == 300
    assert [(e.old_version, e.version, e.changes) for e in changes] == [(1, 3, [("/timeout_ms", 100, 300)])]
    assert len(errors) == 1


@pytest.mark.timeout(90)
def test_fifty_rapid_pushes_end_on_the_final_version_in_increasing_order(
    store: ConfigStore, client: ConfigClient
) -> None:
    store.push("payments", "service", {"timeout_ms": 0}, actor="test")
    live = client.settings(PaymentSettings, "payments/service")
    seen: list[tuple[int, int, int]] = []

    def slowish(event: ChangeEvent[PaymentSettings]) -> None:
        seen.append((event.old_version, event.version, event.new.timeout_ms))
        time.sleep(0.005)

    live.on_change(slowish)
    started = time.perf_counter()
    for i in range(1, 51):
        store.push("payments", "service", {"timeout_ms": i}, actor="test")
    pushed = time.perf_counter()
    assert live.wait_for_version(51, 30)
    applied = time.perf_counter()
    assert live.callbacks_idle(30)
    assert live.version == 51 and live.current.timeout_ms == 50
    versions = [v for _, v, _ in seen]
    assert versions == sorted(set(versions)), "callbacks must see increasing versions, each once"
    assert versions[-1] == 51 and seen[-1][2] == 50
    assert all(old < new for old, new, _ in seen)
    assert [old for old, _, _ in seen][1:] == versions[:-1]  # each event starts where the previous one ended
    print(
        f"\n50 pushes in {(pushed - started) * 1000:.0f} ms; final version applied {(applied - pushed) * 1000:.1f} ms "
        f"after the last push; the callback got {len(seen)} events (coalesced: {50 - len(seen)})"
    )


@pytest.mark.timeout(60)
def test_an_environment_variable_overrides_consul(
    store: ConfigStore, client: ConfigClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CFGTEST_RETRIES", "9")
    store.push("payments", "service", {"timeout_ms": 100, "retries": 1}, actor="test")
    live = client.settings(PaymentSettings, "payments/service")
    assert (live.current.timeout_ms, live.current.retries) == (100, 9)
    changes: list[ChangeEvent[PaymentSettings]] = []
    live.on_change(changes.append)
    store.push("payments", "service", {"timeout_ms": 150, "retries": 2}, actor="test")
    assert live.wait_for_version(2, 10) and live.callbacks_idle(10)
    assert (live.current.timeout_ms, live.current.retries) == (150, 9)
    assert changes[0].changes == [("/timeout_ms", 100, 150)]  # the pinned value did not change for the app
    pinned = client.settings(PaymentSettings, "payments/service", overrides={"retries": 4})
    assert pinned.current.retries == 4  # init arguments beat the environment


@pytest.mark.timeout(60)
def test_registration_lists_the_instance_with_applied_versions_and_goes_on_close(
    store: ConfigStore, consul_addr: str, layout: KeyLayout, gateway: ConsulGateway, tmp_path: Path
) -> None:
    store.push("payments", "service", {"timeout_ms": 1}, actor="test")
    key_prefix = layout.clients_prefix("payments")
    client = ConfigClient(consul_addr, prefix=layout.prefix, cache_dir=tmp_path, application="checkout")
    try:
        live = client.settings(PaymentSettings, "payments/service")
        assert client.registration is not None
        key = layout.client("payments", client.registration.instance_id)

        def record() -> ClientRecord | None:
            entry = gateway.get(key)
            return ClientRecord.from_bytes(entry.value) if entry else None

        assert wait_until(lambda: (r := record()) is not None and r.applied == {"service": 1})
        entry = gateway.get(key)
        assert entry is not None and entry.session == client.registration.session
        found = record()
        assert found is not None and (found.application, found.pid) == ("checkout", os.getpid())
        store.push("payments", "service", {"timeout_ms": 2}, actor="test")
        assert live.wait_for_version(2, 10)
        assert wait_until(lambda: (r := record()) is not None and r.applied == {"service": 2})
    finally:
        client.close()
    assert gateway.keys(key_prefix) == []  # the session was destroyed and its entry deleted with it


@pytest.mark.timeout(60)
def test_missing_config_raises_not_found_after_the_timeout(client: ConfigClient, layout: KeyLayout) -> None:
    started = time.perf_counter()
    with pytest.raises(NotFound, match="does not exist"):
        client.settings(PaymentSettings, "payments/absent", timeout=0.5)
    print(f"\nNotFound raised after {time.perf_counter() - started:.2f} s (timeout 0.5 s)")


@pytest.mark.timeout(60)
def test_neither_consul_nor_cache_raises_consul_unavailable(tmp_path: Path) -> None:
    from configd.devagent import free_ports

    (port,) = free_ports(1)
    with ConfigClient(f"http://127.0.0.1:{port}", cache_dir=tmp_path) as client:
        started = time.perf_counter()
        with pytest.raises(ConsulUnavailable, match="no cached version"):
            client.settings(PaymentSettings, "payments/service", timeout=1.0)
        print(f"\nConsulUnavailable raised after {time.perf_counter() - started:.2f} s (timeout 1.0 s)")


@pytest.mark.timeout(60)
async def test_async_client_with_coroutine_callbacks(
    store: ConfigStore, consul_addr: str, layout: KeyLayout, tmp_path: Path
) -> None:
    store.push("payments", "service", {"timeout_ms": 10}, actor="test")
    async with AsyncConfigClient(consul_addr, prefix=layout.prefix, cache_dir=tmp_path) as client:
        live = await client.settings(PaymentSettings, "payments/service")
        assert (live.version, live.current.timeout_ms) == (1, 10)
        loop = asyncio.get_running_loop()
        got: asyncio.Queue[tuple[ChangeEvent[PaymentSettings], bool]] = asyncio.Queue()
        errors: list[Exception] = []

        async def on_change(event: ChangeEvent[PaymentSettings]) -> None:
            await asyncio.sleep(0)
            got.put_nowait((event, asyncio.get_running_loop() is loop))

        live.on_change(on_change)
        live.on_error(errors.append)  # a plain function is allowed too (run off the loop)
        started = time.perf_counter()
        await asyncio.to_thread(store.push, "payments", "service", {"timeout_ms": 20}, actor="test")
        event, on_loop = await asyncio.wait_for(got.get(), 10)
        print(f"\nasync push -> coroutine callback: {(time.perf_counter() - started) * 1000:.1f} ms")
        assert on_loop and event.version == 2 and event.changes == [("/timeout_ms", 10, 20)]
        await asyncio.to_thread(store.push, "payments", "service", {"timeout_ms": "x"}, actor="test")
        assert await asyncio.to_thread(live.live.wait_for_version, 2, 0)  # still v2
        for _ in range(500):
            if errors:
                break
            await asyncio.sleep(0.02)
        assert errors and isinstance(errors[0], ValidationFailed)
        assert live.version == 2 and live.current.timeout_ms == 20


CHILD = textwrap.dedent(
    """
    import sys, time
    from pydantic_settings import BaseSettings, SettingsConfigDict
    from configd_client import ConfigClient

    class Feature(BaseSettings):
        model_config = SettingsConfigDict(extra="ignore")
        enabled: bool = False
        level: int = 0

    address, prefix, cache = sys.argv[1:4]
    client = ConfigClient(address, prefix=prefix, cache_dir=cache, application="twenty")
    lives = [client.settings(Feature, f"features/flag{i:02d}") for i in range(20)]
    for live in lives:
        live.on_change(lambda e: print("CHANGED", e.ref, e.version, e.new.level, flush=True))
    print("READY", flush=True)
    sys.stdin.readline()
    client.close()
    """
)


@pytest.mark.timeout(90)
def test_twenty_configs_of_one_namespace_hold_exactly_one_connection(
    gateway: ConsulGateway, layout: KeyLayout, consul_addr: str, consul_agent: Any, tmp_path: Path
) -> None:
    store = ConfigStore(gateway, layout)
    for i in range(20):
        store.register_schema("features", f"flag{i:02d}", PERMISSIVE_SCHEMA, actor="test")
        store.push("features", f"flag{i:02d}", {"enabled": True, "level": i}, actor="test")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, consul_addr, layout.prefix, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "READY"
        time.sleep(1.0)  # let start-up requests finish: the child is now idle inside its blocking query
        process = psutil.Process(child.pid)
        port = consul_agent.ports.http
        samples = []
        for _ in range(5):
            established = [
                c
                for c in process.net_connections(kind="tcp")
                if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
            ]
            samples.append(len(established))
            time.sleep(0.2)
        threads = process.num_threads()
        print(f"\nchild watching 20 configs: connections to Consul per sample {samples}, {threads} threads")
        assert samples == [1] * 5
        store.push("features", "flag07", {"enabled": True, "level": 70}, actor="test")
        assert child.stdout.readline().split() == ["CHANGED", "features/flag07", "2", "70"]
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(20) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
