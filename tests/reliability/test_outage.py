"""Consul down entirely: the only Consul server (data on disk) is SIGKILLed, left down, then started again.

Running SDK clients keep serving their last good settings; a client started during the outage starts from the
last-known-good cache (stale); configd answers 503 with a clear detail and recovers without a restart; nothing
busy-loops (CPU time of the configd process and of the process hosting the clients is sampled with psutil).
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict

from configd.devagent import AgentPorts, ConsulAgent
from configd_client import ConfigClient, ConsulUnavailable
from tests.conftest import start_server
from tests.reliability.support import SdkThreadsCpu, cpu_share, wait_until

pytestmark = pytest.mark.reliability

# "Low" CPU: a busy loop burns a whole core; a backing-off watcher, a session renewer and an idle uvicorn burn
# well under 1 %. 5 % of one core leaves room for a slow CI machine without hiding a spin.
CPU_LIMIT = 0.05


class Limits(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_prefix="OUTAGE_TEST_")
    rps: int = 0
    burst: int = 0


@pytest.fixture
def lone_server() -> Iterator[ConsulAgent]:
    """A single Consul server whose data survives SIGKILL and restart (same ports, same data dir)."""
    data_dir = tempfile.mkdtemp(prefix="configd-outage-")
    agent = ConsulAgent(
        args=["-server", "-bootstrap-expect", "1", "-data-dir", data_dir],
        ports=AgentPorts.allocate(),
        name="outage",
        extra_hcl="performance { raft_multiplier = 1 }",
    )
    agent.start(timeout=60)
    try:
        yield agent
    finally:
        agent.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


def run_outage(agent: ConsulAgent, workdir: Path, *, outage_seconds: float) -> None:
    server = start_server(agent.http_addr, workdir / "server", prefix=f"out-{uuid.uuid4().hex[:10]}")
    cache = workdir / "cache"
    path = "/api/v1/configs/edge/limits"
    running: ConfigClient | None = None
    late: ConfigClient | None = None
    try:
        with server.client("admin") as http:
            assert http.put("/api/v1/schemas/edge/limits", json={"type": "object"}).status_code == 201
            assert http.put(path, json={"data": {"rps": 1, "burst": 2}}).status_code == 201
        running = ConfigClient(agent.http_addr, prefix=server.prefix, cache_dir=cache)
        live = running.settings(Limits, "edge/limits")
        errors: list[Exception] = []
        live.on_error(errors.append)
        assert live.version == 1 and not live.stale

        agent.kill(signal.SIGKILL)
        killed = time.monotonic()
        noticed = wait_until(lambda: live.stale, 60)
        assert noticed is not None, "the running client never noticed the outage"
        assert live.current.rps == 1 and live.version == 1  # keeps its last good settings

        with server.client("admin") as http:
            for answer in (http.get(path), http.put(path, json={"data": {"rps": 9}}), http.get("/api/v1/configs")):
                assert answer.status_code == 503, answer.text
                assert answer.json()["detail"].startswith("Consul is unavailable"), answer.json()
            health = http.get("/healthz")
            assert health.status_code == 503 and health.json()["status"] == "unavailable"

        late = ConfigClient(agent.http_addr, prefix=server.prefix, cache_dir=cache)
        started = time.monotonic()
        late_live = late.settings(Limits, "edge/limits", timeout=10)
        late_start = time.monotonic() - started
        assert late_live.stale and late_live.version == 1 and late_live.current.burst == 2
        uncached = ConfigClient(agent.http_addr, prefix=server.prefix, cache_dir=workdir / "empty")
        with uncached, pytest.raises(ConsulUnavailable, match="did not answer"):
            uncached.settings(Limits, "edge/limits", timeout=1)

        # Nothing spins while Consul is away: sample CPU over a quiet stretch of the outage.
        # The clients are measured by their own threads (the SDK names them configd-…), not by the whole pytest
        # process around them.
        processes = {"configd": psutil.Process(server.process.pid), "clients": SdkThreadsCpu()}
        cpu = cpu_share(processes, outage_seconds)
        for name, share in cpu.items():
            assert share < CPU_LIMIT, f"{name} used {share:.1%} of a core while Consul was down"

        agent.start(timeout=60)
        back = time.monotonic()
        configd_back = wait_until(lambda: httpx.get(f"{server.base_url}/healthz").status_code == 200, 60)
        assert configd_back is not None, "configd did not recover"
        assert server.process.poll() is None  # the same process: recovered without a restart
        clients_back = wait_until(lambda: not live.stale and not late_live.stale, 60)
        assert clients_back is not None, "the clients never resynced"

        with server.client("admin") as http:
            pushed = time.monotonic()
            answer = http.put(path, json={"data": {"rps": 2, "burst": 4}})
            assert answer.status_code == 201, answer.text
        assert live.wait_for_version(2, 30) and late_live.wait_for_version(2, 30)
        applied = time.monotonic() - pushed
        assert live.current.rps == 2 and late_live.current.rps == 2
        assert not [e for e in errors if not isinstance(e, ConsulUnavailable)], errors
        print(
            f"\noutage: running client noticed after {noticed:.2f} s; a client started during the outage served "
            f"the cache in {late_start * 1000:.0f} ms; CPU during {outage_seconds:.0f} s of outage: "
            f"configd {cpu['configd']:.2%}, clients {cpu['clients']:.2%} of one core; "
            f"after Consul was back (leader, {back - killed:.1f} s after the kill): configd healthy in "
            f"{configd_back:.2f} s, clients resynced in {clients_back:.2f} s, next push applied in "
            f"{applied * 1000:.0f} ms"
        )
    finally:
        for client in (running, late):
            if client is not None:
                client.close()
        server.stop()


@pytest.mark.timeout(180)
def test_consul_down_entirely_then_back(lone_server: ConsulAgent, tmp_path: Path) -> None:
    run_outage(lone_server, tmp_path, outage_seconds=4.0)


@pytest.mark.reliability_long
@pytest.mark.timeout(600)
def test_long_outage(lone_server: ConsulAgent, tmp_path: Path) -> None:
    """A minute of outage: backoff caps out, and the CPU average covers many retry cycles."""
    run_outage(lone_server, tmp_path, outage_seconds=60.0)
