"""/healthz and /metrics, and 503 when Consul is unreachable, leaderless, or refuses configd's ACL token."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from configd.devagent import AgentPorts, ConsulAgent, free_ports
from tests.api_support import GOOD, setup_config
from tests.conftest import ServerProcess, start_server

pytestmark = pytest.mark.timeout(120)


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_healthz_and_metrics(server: ServerProcess, unique_ns: str) -> None:
    with httpx.Client(base_url=server.base_url) as http:
        health = http.get("/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "ok" and health.json()["leader"]
        before = http.get("/metrics").text
    setup_config(server, unique_ns)
    with server.client("editor") as editor:
        assert editor.put(f"/api/v1/configs/{unique_ns}/service", json={"data": {"timeout_ms": -5}}).status_code == 422
        assert editor.put(f"/api/v1/configs/{unique_ns}/service", json={"data": GOOD}).status_code == 200
    with httpx.Client(base_url=server.base_url) as http:
        metrics = http.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    after = metrics.text
    assert _metric(after, "configd_pushes_total", action="push", result="created") == (
        _metric(before, "configd_pushes_total", action="push", result="created") + 1
    )
    assert _metric(after, "configd_pushes_total", action="push", result="unchanged") >= 1
    assert _metric(after, "configd_rejections_total", action="push", reason="validation") == (
        _metric(before, "configd_rejections_total", action="push", reason="validation") + 1
    )
    assert _metric(after, "configd_consul_call_seconds_count", operation="txn") > _metric(
        before, "configd_consul_call_seconds_count", operation="txn"
    )
    print("consul txn calls observed:", _metric(after, "configd_consul_call_seconds_count", operation="txn"))


def test_several_workers_share_the_port_and_their_metrics(consul_addr: str, tmp_path: Path) -> None:
    """``configd serve --workers 2``: two processes answer, pushes through both stay one gap-free history (the
    store is stateless and CAS-guarded), and /metrics sums the counters of both, whichever one answers."""
    server = start_server(consul_addr, tmp_path, env={"CONFIGD_WORKERS": "2"})
    try:
        workers = psutil.Process(server.process.pid).children(recursive=True)
        assert len([w for w in workers if "python" in w.name().lower()]) >= 2, workers
        ns = "workers"
        setup_config(server, ns)
        pushes = 24
        for i in range(pushes):  # a new connection each time, so the kernel spreads them over the workers
            with server.client("editor") as editor:
                answer = editor.put(f"/api/v1/configs/{ns}/service", json={"data": {**GOOD, "retries": i % 10}})
                assert answer.status_code in (200, 201), answer.text
        with server.client("reader") as reader:
            history = reader.get(f"/api/v1/configs/{ns}/service/versions", params={"limit": 500}).json()
        numbers = [v["version"] for v in history["versions"]]
        assert numbers == list(range(len(numbers), 0, -1))
        created = len(numbers) - 1  # setup_config pushed version 1 itself
        totals = set()
        for _ in range(6):  # several scrapes, over new connections: any worker must report the same sum
            with httpx.Client(base_url=server.base_url) as http:
                totals.add(_metric(http.get("/metrics").text, "configd_pushes_total", action="push", result="created"))
        assert totals == {created + 1}, totals
        print(f"{len(workers)} worker processes; {created} versions pushed through them")
    finally:
        server.stop()


def test_unreachable_consul_is_503(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_ports(1)[0]}"
    proc = start_server(closed, tmp_path)
    try:
        with proc.client("admin") as http:
            health = http.get("/healthz")
            assert health.status_code == 503 and health.json()["status"] == "unavailable"
            assert "unreachable" in health.json()["detail"]
            read = http.get("/api/v1/configs")
            assert read.status_code == 503 and "Consul is unavailable" in read.json()["detail"]
            write = http.put("/api/v1/configs/payments/service", json={"data": GOOD})
            assert write.status_code == 503 and "Traceback" not in write.text
    finally:
        proc.stop()


@pytest.fixture
def leaderless_agent(tmp_path: Path) -> Iterator[ConsulAgent]:
    """A server agent that expects a second server which never comes: it answers HTTP but never elects a leader."""
    agent = ConsulAgent(
        args=["-server", "-bootstrap-expect", "2", "-data-dir", str(tmp_path / "data")],
        ports=AgentPorts.allocate(),
        name="leaderless",
    )
    agent.start(wait_for_leader=False)
    try:
        yield agent
    finally:
        agent.cleanup()


def test_leaderless_consul_is_503(leaderless_agent: ConsulAgent, tmp_path: Path) -> None:
    proc = start_server(leaderless_agent.http_addr, tmp_path)
    try:
        deadline = time.monotonic() + 20
        with httpx.Client(base_url=proc.base_url) as http:
            while True:
                health = http.get("/healthz")
                if "no leader" in health.json()["detail"] or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        assert health.status_code == 503 and "no leader" in health.json()["detail"], health.text
        with proc.client("reader") as http:
            read = http.get("/api/v1/configs")
        assert read.status_code == 503 and read.json()["detail"].startswith("Consul is unavailable")
    finally:
        proc.stop()


def test_consul_acl_denial_is_503_with_a_clear_detail(tmp_path: Path) -> None:
    acl = 'acl { enabled = true, default_policy = "deny", tokens { master = "root-token-for-test" } }'
    with ConsulAgent.dev(name="acl-test", extra_hcl=acl) as agent:
        proc = start_server(agent.http_addr, tmp_path)  # no Consul token: anonymous, denied everything
        try:
            with proc.client("admin") as http:
                # Consul filters reads the token may not see (an empty answer); a write is refused outright.
                answer = http.put("/api/v1/schemas/payments/service", json={"type": "object"})
                assert answer.status_code == 503, answer.text
                assert "ACL token" in answer.json()["detail"] and proc.prefix in answer.json()["detail"]
        finally:
            proc.stop()
        # With configd's own token (the environment, like CONSUL_HTTP_TOKEN in production) it works.
        proc = start_server(agent.http_addr, tmp_path / "with-token", env={"CONSUL_HTTP_TOKEN": "root-token-for-test"})
        try:
            with proc.client("admin") as http:
                assert http.put("/api/v1/schemas/payments/service", json={"type": "object"}).status_code == 201
        finally:
            proc.stop()
