"""Retention run by the elected replica of real ``configd serve`` processes (issue 18).

- Killing the elected replica (SIGKILL) hands the duty to the other within ``2 × TTL + lock-delay`` (opt-in tier:
  it waits for Consul to expire the session; the in-process handover is in tests/integration/test_retention.py).
- The soak: N pushes and rejections, then a retention policy: the KV shrinks to what the policy keeps, every
  remaining version reads back with its acknowledged sha256, and no head is touched. N = 300 in ``make test``;
  20,000 in the opt-in ``reliability_long`` tier (``make test-reliability``).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from configd_core.consul import ConsulGateway
from configd_core.layout import KeyLayout
from configd_core.records import canonical_json, sha256_hex
from tests.conftest import ServerProcess, start_server

# Generous: the 2-core test machine is shared, and a server start there has taken over 30 s.
START_TIMEOUT = 120.0

pytestmark = [pytest.mark.reliability]

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}, "pad": {"type": "string"}}}
FAST = {
    "CONFIGD_ELECTION_TTL": "10",
    "CONFIGD_LOCK_DELAY": "1",
    "CONFIGD_RETENTION_INTERVAL": "1",
    "CONFIGD_USAGE_INTERVAL": "1",
}


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _holder(gateway: ConsulGateway, layout: KeyLayout) -> str | None:
    entry = gateway.get(layout.lock("maintenance"), consistent=True)
    if entry is None or not entry.session:
        return None
    holder: str = json.loads(entry.value)["holder"]
    return holder


def _reject(server: ServerProcess, namespace: str, count: int) -> None:
    with server.client("editor") as http:
        for _ in range(count):
            assert http.put(f"/api/v1/configs/{namespace}/svc", json={"data": {"n": -1}}).status_code == 422


@pytest.mark.reliability_long  # ~25 s of waiting for the session to expire, ~100 s on a loaded 2-core machine
@pytest.mark.timeout(300)
def test_sigkill_of_the_elected_replica_hands_the_duty_over(
    consul_addr: str, gateway: ConsulGateway, tmp_path: Path
) -> None:
    first = start_server(consul_addr, tmp_path / "a", env=FAST, timeout=START_TIMEOUT)
    servers = [first]
    try:
        second = start_server(consul_addr, tmp_path / "b", prefix=first.prefix, env=FAST, timeout=START_TIMEOUT)
        servers.append(second)
        holder = _until(lambda: _holder(gateway, first.layout), 30, "a replica to take the lock")
        leader = next(s for s in servers if holder.endswith(f":{s.base_url.rsplit(':', 1)[-1]}"))
        survivor = second if leader is first else first
        with leader.client("admin") as http:
            assert http.put("/api/v1/schemas/ops/svc", json=SCHEMA).status_code == 201
            answer = http.put("/api/v1/retention/ops", json={"audit_max_entries": 5})
            assert answer.status_code == 200, answer.text
        _reject(leader, "ops", 12)
        audit = leader.layout.audit_prefix("ops")
        _until(lambda: len(gateway.keys(audit)) == 5, 30, "the leader's retention pass")

        killed_at = time.monotonic()
        leader.process.kill()  # SIGKILL: no resign, the session must expire
        leader.process.wait(timeout=10)
        new_holder = _until(
            lambda: (h := _holder(gateway, first.layout)) is not None and h != holder and h, 60, "a new holder"
        )
        handover = time.monotonic() - killed_at
        print(f"\nSIGKILL of the elected replica: lock held by the other after {handover:.1f}s (TTL 10 s, delay 1 s)")
        assert new_holder.endswith(f":{survivor.base_url.rsplit(':', 1)[-1]}")
        assert handover <= 2 * 10 + 1 + 5  # Consul invalidates within 2 × TTL; lock-delay; one watch round

        _reject(survivor, "ops", 12)  # the duty now runs on the survivor
        _until(lambda: len(gateway.keys(audit)) == 5, 30, "the new leader's retention pass")
        metrics = httpx.get(f"{survivor.base_url}/metrics", timeout=30).text
        assert "configd_elected 1.0" in metrics
        _until(
            lambda: (
                'configd_kv_keys{kind="audit",namespace="ops"} 5.0'
                in httpx.get(f"{survivor.base_url}/metrics", timeout=30).text
            ),
            30,
            "usage gauges on /metrics",
        )
    finally:
        for server in servers:
            server.stop()


def soak(consul_addr: str, gateway: ConsulGateway, tmp_path: Path, pushes: int, configs: int = 5) -> dict[str, Any]:
    """``pushes`` writes (one in four a rejected one) over ``configs`` configs, then retention; returns numbers."""
    server = start_server(
        consul_addr,
        tmp_path / "soak",
        env={**FAST, "CONFIGD_RETENTION_INTERVAL": "2", "CONFIGD_USAGE_INTERVAL": "5"},
        timeout=START_TIMEOUT,
    )
    keep_versions, keep_audit = 20, 200
    acknowledged: dict[tuple[str, int], str] = {}
    try:
        with server.client("admin") as http:
            for c in range(configs):
                assert http.put(f"/api/v1/schemas/soak/svc-{c}", json=SCHEMA).status_code == 201
        lock = threading.Lock()
        counter = iter(range(pushes))
        started = time.monotonic()

        def worker() -> None:
            rng = random.Random()
            with server.client("editor") as http:
                for i in counter:
                    name = f"svc-{i % configs}"
                    if i % 4 == 3:
                        answer = http.put(f"/api/v1/configs/soak/{name}", json={"data": {"n": -i}})
                        assert answer.status_code == 422, answer.text
                        continue
                    data = {"n": i, "pad": "x" * rng.randint(0, 200)}
                    answer = http.put(f"/api/v1/configs/soak/{name}", json={"data": data})
                    assert answer.status_code == 201, answer.text
                    with lock:
                        acknowledged[(name, answer.json()["version"])] = sha256_hex(canonical_json(data))

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        push_seconds = time.monotonic() - started
        heads_before = {k: v for k, v in _tree(gateway, server.layout).items() if "/heads/" in k}
        with server.client("admin") as http:
            before = http.get("/api/v1/storage", params={"namespace": "soak"}).json()["namespaces"]["soak"]
            policy = {
                "audit_max_entries": keep_audit,
                "versions_keep_last": keep_versions,
                "versions_max_age_days": 1e-5,
            }
            applied_at = time.monotonic()
            assert http.put("/api/v1/retention/soak", json=policy).status_code == 200

            def trimmed() -> dict[str, Any] | None:
                now = http.get("/api/v1/storage", params={"namespace": "soak"}).json()["namespaces"]["soak"]
                kinds = now["by_kind"]
                done = kinds["audit"]["keys"] <= keep_audit and kinds["versions"]["keys"] == keep_versions * configs
                return now if done else None

            after = _until(trimmed, 600, "retention to bound the KV")
            retention_seconds = time.monotonic() - applied_at
        tree = _tree(gateway, server.layout)
        assert {k: v for k, v in tree.items() if "/heads/" in k} == heads_before  # no head touched
        remaining = 0
        with server.client("reader") as http:
            for c in range(configs):
                name = f"svc-{c}"
                history = http.get(f"/api/v1/configs/soak/{name}/versions", params={"limit": 500}).json()
                versions = [v["version"] for v in history["versions"]]
                assert len(versions) == keep_versions and versions == sorted(versions, reverse=True)
                for version in versions:
                    body = http.get(f"/api/v1/configs/soak/{name}/versions/{version}").json()
                    assert sha256_hex(canonical_json(body["data"])) == acknowledged[(name, version)]
                    remaining += 1
                gone = min(versions) - 1
                answer = http.get(f"/api/v1/configs/soak/{name}/versions/{gone}")
                assert answer.status_code == 404 and "retention policy removed it" in answer.json()["detail"]
        numbers = {
            "pushes": pushes,
            "acknowledged_versions": len(acknowledged),
            "push_seconds": round(push_seconds, 1),
            "keys_before": before["keys"],
            "bytes_before": before["bytes"],
            "keys_after": after["keys"],
            "bytes_after": after["bytes"],
            "retention_seconds": round(retention_seconds, 1),
            "versions_remaining": remaining,
        }
        print(f"\nsoak: {json.dumps(numbers)}")
        assert after["keys"] < before["keys"] and after["bytes"] < before["bytes"]
        assert after["by_kind"]["audit"]["keys"] <= keep_audit
        return numbers
    finally:
        server.stop()


def _tree(gateway: ConsulGateway, layout: KeyLayout) -> dict[str, tuple[int, int]]:
    _, entries = gateway.list(f"{layout.prefix}/", consistent=True)
    return {e.key: (e.modify_index, len(e.value)) for e in entries}


@pytest.mark.timeout(240)
def test_soak_small_retention_bounds_the_kv(consul_addr: str, gateway: ConsulGateway, tmp_path: Path) -> None:
    soak(consul_addr, gateway, tmp_path, pushes=300)


@pytest.mark.reliability_long
@pytest.mark.timeout(3600)
def test_soak_20000_pushes_and_rejections(consul_addr: str, gateway: ConsulGateway, tmp_path: Path) -> None:
    soak(consul_addr, gateway, tmp_path, pushes=20_000)
