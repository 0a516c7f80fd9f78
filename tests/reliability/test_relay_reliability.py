"""``configd relay`` when things break: the relay killed under load, Consul's leader changing behind it, and ACL
tokens that may not read what they ask for. Real relays, real Consul agents, real SDK clients."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict

from configd.devagent import ConsulAgent, ConsulCluster
from configd_client import ConfigClient, ConsulPermissionDenied
from configd_core.layout import KeyLayout
from tests.conftest import ServerProcess, start_server
from tests.integration.test_relay import start_relay
from tests.reliability.support import wait_until
from tests.reliability.test_consul_acl import ACL_HCL, MASTER, _token, application_policy, operator_policy

pytestmark = pytest.mark.reliability


class Service(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_prefix="RELAY_RELIABILITY_")
    seq: int = 0


def _push(server: ServerProcess, namespace: str, seq: int, *, attempts: int = 1) -> int:
    """Push ``{"seq": seq}`` to ``namespace/svc`` (retrying a 503 while Consul elects); returns the version."""
    with server.client() as http:
        for attempt in range(attempts):
            answer = http.put(f"/api/v1/configs/{namespace}/svc", json={"data": {"seq": seq}})
            if answer.status_code == 201:
                return int(answer.json()["version"])
            assert answer.status_code == 503 and attempt < attempts - 1, answer.text
            time.sleep(0.2)
    raise AssertionError("unreachable")


def _head_versions(body: bytes, key: str) -> int:
    for entry in json.loads(body):
        if entry["Key"] == key:
            return int(json.loads(base64.b64decode(entry["Value"]))["version"])
    return 0


async def _get(address: str, target: str, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """One GET on a new connection with plain asyncio (httpx's async client costs ~20 ms a connection here)."""
    host, port = address.removeprefix("http://").split(":")
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(-1), timeout)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


async def _raw_watcher(addresses: list[str], path: str, key: str, want: int, deadline: float) -> tuple[int, int]:
    """A raw blocking watcher that moves to the next address when its connection fails; (version, switches)."""
    at, index, switches = 0, 0, 0
    while time.monotonic() < deadline:
        try:
            status, headers, body = await _get(addresses[at], f"{path}?recurse&index={index}&wait=5s", 15)
        except (OSError, TimeoutError, IndexError, ValueError):
            at, switches = min(at + 1, len(addresses) - 1), switches + 1
            await asyncio.sleep(0.1)
            continue
        if status != 200:
            index = 0  # Consul's rule after an error: read again without blocking
            await asyncio.sleep(0.1)
            continue
        got = int(headers["x-consul-index"])
        index = 0 if got < index else got
        version = _head_versions(body, key)
        if version >= want:
            return version, switches
    return 0, switches


def test_relay_killed_under_load_loses_no_change(
    consul_addr: str, server: ServerProcess, unique_ns: str, tmp_path: Path
) -> None:
    """Relay A dies (SIGKILL) with 100 raw watchers and an SDK client on it; a change is pushed while no relay runs.
    Half the raw watchers move to relay B (started on A's address: another relay process taking over, as behind a
    load balancer), half straight to Consul with the index the relay gave them. Every one of them and the SDK
    client get the change."""
    with server.client() as http:
        assert http.put(f"/api/v1/schemas/{unique_ns}/svc", json={"type": "object"}).status_code == 201
    _push(server, unique_ns, 1)
    relay_a = start_relay(consul_addr, tmp_path / "a")
    relay_b = None
    client = ConfigClient(relay_a.address, prefix=server.prefix, cache_dir=tmp_path / "cache")
    try:
        live = client.settings(Service, f"{unique_ns}/svc", timeout=10)
        assert live.version == 1
        path = f"/v1/kv/{server.layout.heads_prefix(unique_ns)}"
        key = server.layout.head(unique_ns, "svc")

        async def scenario() -> list[tuple[int, int]]:
            deadline = time.monotonic() + 30
            routes = [[relay_a.address, relay_a.address, relay_a.address] if i % 2 else [relay_a.address, consul_addr]
                      for i in range(100)]  # fmt: skip
            # First the watchers learn v1 and its index; then they block on the relay, and it is killed.
            watchers = [asyncio.create_task(_raw_watcher(route, path, key, 2, deadline)) for route in routes]
            held = await asyncio.to_thread(
                wait_until, lambda: relay_a.metrics()["configd_relay_downstream_waiters"] >= 101, 15
            )
            assert held is not None, relay_a.metrics()
            relay_a.kill()
            version = await asyncio.to_thread(_push, server, unique_ns, 2)
            assert version == 2
            nonlocal relay_b
            relay_b = await asyncio.to_thread(start_relay, consul_addr, tmp_path / "b", port=relay_a.port)
            return await asyncio.gather(*watchers)

        results = asyncio.run(scenario())
        assert [version for version, _ in results] == [2] * 100
        assert all(switches >= 1 for _, switches in results)  # every watcher lost its relay and carried on
        assert live.wait_for_version(2, 15) and live.current.seq == 2
        assert wait_until(lambda: not live.stale, 10) is not None
        assert relay_b is not None and relay_b.metrics()["configd_relay_upstream_queries"] >= 1
    finally:
        client.close()
        relay_a.kill()
        if relay_b is not None:
            relay_b.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[ConsulCluster]:
    with ConsulCluster() as started:
        yield started


@pytest.mark.timeout(180)
def test_consul_leader_change_behind_the_relay(cluster: ConsulCluster, tmp_path: Path) -> None:
    """The Raft leader is SIGKILLed while SDK clients watch through a relay on the client agent; the change pushed
    once a new leader exists reaches every client, and none stays stale."""
    server = start_server(cluster.http_addr, tmp_path / "server", prefix=f"rl-{uuid.uuid4().hex[:8]}")
    relay = start_relay(cluster.http_addr, tmp_path / "relay")
    namespace = "leader"
    clients: list[ConfigClient] = []
    try:
        with server.client() as http:
            assert http.put(f"/api/v1/schemas/{namespace}/svc", json={"type": "object"}).status_code == 201
        _push(server, namespace, 1)
        clients = [
            ConfigClient(relay.address, prefix=server.prefix, cache_dir=tmp_path / f"c{i}", register=False)
            for i in range(3)
        ]
        lives = [client.settings(Service, f"{namespace}/svc", timeout=15) for client in clients]
        killed = cluster.leader_agent()
        assert killed is not None
        killed.kill(signal.SIGKILL)
        elected = wait_until(lambda: (a := cluster.leader_agent()) is not None and a is not killed, 60)
        assert elected is not None, "no new leader"
        version = _push(server, namespace, 2, attempts=100)
        for live in lives:
            assert live.wait_for_version(version, 30) and live.current.seq == 2
            assert wait_until(lambda live=live: not live.stale, 30) is not None  # type: ignore[misc]
        print(f"\nnew leader after {elected:.2f} s; relay upstream errors: "
              f"{relay.metrics()['configd_relay_upstream_errors_total']:.0f}")  # fmt: skip
    finally:
        for client in clients:
            client.close()
        relay.stop()
        server.stop()  # the killed server stays down: this module's cluster ends with this test


@pytest.fixture(scope="module")
def acl_agent() -> Iterator[ConsulAgent]:
    with ConsulAgent.dev(name="configd-relay-acl", extra_hcl=ACL_HCL) as agent:
        yield agent


def test_acl_token_without_read_gets_consuls_403_from_the_relay(acl_agent: ConsulAgent, tmp_path: Path) -> None:
    """A token that reads only namespace alpha, through a relay whose own token reads everything: every answer,
    403 or filtered, is byte for byte the one Consul gives that token."""
    prefix = f"acl-{uuid.uuid4().hex[:8]}"
    layout = KeyLayout(prefix)
    app = _token(acl_agent, f"app-{prefix}", application_policy(prefix, "alpha"))
    relay_token = _token(acl_agent, f"relay-{prefix}", operator_policy(prefix))
    root = {"X-Consul-Token": MASTER}
    for ns in ("alpha", "bravo"):
        body = json.dumps({"namespace": ns, "name": "svc", "version": 1}).encode()
        assert httpx.put(f"{acl_agent.http_addr}/v1/kv/{layout.head(ns, 'svc')}", content=body, headers=root).json()
    relay = start_relay(acl_agent.http_addr, tmp_path, token=relay_token)
    try:
        with (
            httpx.Client(base_url=relay.address, timeout=20) as via,
            httpx.Client(base_url=acl_agent.http_addr, timeout=20) as consul,
        ):
            # The relay's own token watches everything (started by a reader that may); then each token is checked.
            assert via.get(
                f"/v1/kv/{prefix}/heads/?recurse&index=1", headers={"X-Consul-Token": relay_token}
            ).is_success
            cases = [
                (f"/v1/kv/{layout.head('bravo', 'svc')}?index=1", {"X-Consul-Token": app}),  # no read: 403
                (f"/v1/kv/{layout.head('bravo', 'svc')}?index=1&token={app}", {}),  # the token as ?token=
                (f"/v1/kv/{layout.head('bravo', 'svc')}?index=1", {"Authorization": f"Bearer {app}"}),
                (f"/v1/kv/{layout.head('bravo', 'svc')}?index=1", {}),  # anonymous: 403
                (f"/v1/kv/{layout.head('alpha', 'svc')}?index=1", {"X-Consul-Token": app}),  # may read
                (f"/v1/kv/{layout.heads_prefix('bravo')}?recurse&index=1", {"X-Consul-Token": app}),
                (f"/v1/kv/{layout.heads_prefix('alpha')}?recurse&index=1", {"X-Consul-Token": app}),
                (f"/v1/kv/{prefix}/heads/?recurse&index=1", {"X-Consul-Token": app}),  # filtered by Consul
                (f"/v1/kv/{prefix}/heads/?keys&index=1", {"X-Consul-Token": app}),
            ]
            for target, headers in cases:
                for _ in range(2):  # the second time from the relay's cached verdict
                    mine, theirs = via.get(target, headers=headers), consul.get(target, headers=headers)
                    assert (mine.status_code, mine.content) == (theirs.status_code, theirs.content), target
            denied = via.get(f"/v1/kv/{layout.head('bravo', 'svc')}?index=1", headers={"X-Consul-Token": app})
            assert denied.status_code == 403 and b"ermission denied" in denied.content
            whole = via.get(f"/v1/kv/{prefix}/heads/?recurse&index=1", headers={"X-Consul-Token": app}).json()
            assert {e["Key"] for e in whole} == {layout.head("alpha", "svc")}  # never bravo: no access widened

        # The SDK, unchanged, behind the relay: alpha is read, bravo refused exactly as by Consul itself.
        sdk = ConfigClient(relay.address, token=app, prefix=prefix, cache_dir=tmp_path / "c", register=False)
        with sdk, pytest.raises(ConsulPermissionDenied):
            sdk.settings(Service, "bravo/svc", timeout=3)
        assert relay.metrics()["configd_relay_acl_checks_total"] >= 1
    finally:
        relay.stop()
