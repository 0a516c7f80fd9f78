"""configd_client when Consul goes away: a persistent single-server agent killed and restarted."""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from configd.devagent import AgentPorts, ConsulAgent
from configd.services.configs import ConfigStore
from configd_client import ChangeEvent, ConfigClient, ConsulUnavailable
from configd_core.consul import ConsulGateway
from configd_core.layout import KeyLayout


class Limits(BaseSettings):
    rps: int = 10
    burst: int = 20


@pytest.fixture(scope="module")
def server_agent() -> Iterator[ConsulAgent]:
    """A real single-server Consul whose data survives kill -9 and restart (same ports, same data dir)."""
    data_dir = tempfile.mkdtemp(prefix="configd-client-data-")
    agent = ConsulAgent(
        args=["-server", "-bootstrap-expect", "1", "-data-dir", data_dir],
        ports=AgentPorts.allocate(),
        name="configd-client-resilience",
    )
    agent.start(timeout=60)
    try:
        yield agent
    finally:
        agent.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


def push(agent: ConsulAgent, layout: KeyLayout, data: dict[str, int]) -> int:
    with ConsulGateway(agent.http_addr) as gateway:
        store = ConfigStore(gateway, layout)
        store.register_schema("edge", "limits", {"type": "object"}, actor="test")
        return store.push("edge", "limits", data, actor="test").head.version


def restart(agent: ConsulAgent) -> float:
    started = time.perf_counter()
    agent.kill()
    agent.start(timeout=60)
    return time.perf_counter() - started


def wait_until(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


@pytest.mark.timeout(120)
def test_consul_killed_and_restarted_while_watching(server_agent: ConsulAgent, tmp_path: Path) -> None:
    layout = KeyLayout(prefix="kill-restart")
    push(server_agent, layout, {"rps": 1})
    with ConfigClient(server_agent.http_addr, prefix=layout.prefix, cache_dir=tmp_path) as client:
        live = client.settings(Limits, "edge/limits")
        got = threading.Event()
        events: list[ChangeEvent[Limits]] = []
        live.on_change(lambda e: (events.append(e), got.set()))

        server_agent.kill(signal.SIGKILL)
        killed = time.perf_counter()
        assert wait_until(lambda: live.stale, 30), "the client did not notice Consul going away"
        noticed = time.perf_counter() - killed
        assert live.current.rps == 1  # keeps serving the last good value

        server_agent.start(timeout=60)
        back = time.perf_counter()
        version = push(server_agent, layout, {"rps": 2})
        pushed = time.perf_counter()
        assert got.wait(30), "no change after Consul came back"
        applied = time.perf_counter()
        assert live.version == version and live.current.rps == 2 and not live.stale
        assert events[-1].changes == [("/rps", 1, 2)]
        print(
            f"\nkill -9: noticed after {noticed * 1000:.0f} ms; Consul back (leader) after "
            f"{back - killed:.1f} s; push after restart applied in {(applied - pushed) * 1000:.0f} ms"
        )


@pytest.mark.timeout(150)
def test_start_from_cache_with_consul_down_then_catch_up(server_agent: ConsulAgent, tmp_path: Path) -> None:
    layout = KeyLayout(prefix="from-cache")
    cache_dir = tmp_path / "cache"
    push(server_agent, layout, {"rps": 5})
    with ConfigClient(server_agent.http_addr, prefix=layout.prefix, cache_dir=cache_dir) as first:
        assert first.settings(Limits, "edge/limits").version == 1  # written to the cache
    assert (cache_dir / "from-cache" / "edge" / "limits.json").exists()

    server_agent.kill(signal.SIGKILL)
    try:
        uncached = ConfigClient(server_agent.http_addr, prefix=layout.prefix, cache_dir=tmp_path / "empty")
        with uncached, pytest.raises(ConsulUnavailable):
            uncached.settings(Limits, "edge/limits", timeout=1)

        client = ConfigClient(server_agent.http_addr, prefix=layout.prefix, cache_dir=cache_dir)
        started = time.perf_counter()
        live = client.settings(Limits, "edge/limits", timeout=10)
        print(f"\nstarted from the cache with Consul down in {(time.perf_counter() - started) * 1000:.0f} ms")
        assert live.stale and live.version == 1 and live.current.rps == 5
        changes: list[ChangeEvent[Limits]] = []
        live.on_change(changes.append)
    finally:
        server_agent.start(timeout=60)
    try:
        assert wait_until(lambda: not live.stale, 60), "never caught up after Consul returned"
        assert live.version == 1 and changes == []  # the cache was current: confirmed, no change event
        push(server_agent, layout, {"rps": 6})
        assert live.wait_for_version(2, 30)
        assert live.callbacks_idle(10)
        assert live.current.rps == 6 and [e.version for e in changes] == [2]
    finally:
        client.close()
