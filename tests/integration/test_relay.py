"""``configd relay`` against a real Consul agent: the SDK unchanged behind it, and Consul's answers side by side.

The relay runs as a real subprocess (``python -m configd relay``); ``start_relay`` is reused by the reliability
tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict

from configd.devagent import free_ports
from configd_client import ConfigClient
from configd_core.consul import ConsulGateway
from tests.conftest import ServerProcess

pytestmark = pytest.mark.timeout(120)


@dataclass
class RelayProcess:
    """A running ``python -m configd relay`` on a loopback port."""

    address: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def metrics(self) -> dict[str, float]:
        """The relay's /metrics as {sample name: value} (samples without labels)."""
        text = httpx.get(f"{self.address}/metrics", timeout=10).text
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def start_relay(
    consul_addr: str, workdir: Path, *, port: int | None = None, token: str | None = None, timeout: float = 30.0
) -> RelayProcess:
    """Start ``python -m configd relay`` and poll its /metrics until it answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_ports(1)[0]
    log_path = workdir / f"relay-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "CONFIGD_"))}
    if token:
        env["CONSUL_HTTP_TOKEN"] = token
    cmd = [sys.executable, "-m", "configd", "relay", "--consul", consul_addr, "--host", "127.0.0.1"]
    cmd += ["--port", str(port)]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    relay = RelayProcess(f"http://127.0.0.1:{port}", port, process, log_path)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"configd relay exited: {log_path.read_text(errors='replace')[-2000:]}")
        try:
            httpx.get(f"{relay.address}/metrics", timeout=2)
            return relay
        except httpx.TransportError:
            if time.monotonic() > deadline:
                relay.stop()
                raise TimeoutError(f"configd relay did not answer within {timeout}s") from None
            time.sleep(0.05)


@pytest.fixture
def relay(consul_addr: str, tmp_path: Path) -> Iterator[RelayProcess]:
    proc = start_relay(consul_addr, tmp_path)
    try:
        yield proc
    finally:
        proc.stop()


class Service(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_prefix="RELAY_TEST_")
    timeout_ms: int = 0


def test_sdk_clients_behind_the_relay_cost_consul_one_query(
    relay: RelayProcess, server: ServerProcess, unique_ns: str, tmp_path: Path
) -> None:
    with server.client() as http:
        assert http.put(f"/api/v1/schemas/{unique_ns}/svc", json={"type": "object"}).status_code == 201
        assert http.put(f"/api/v1/configs/{unique_ns}/svc", json={"data": {"timeout_ms": 1}}).status_code == 201
    clients = [
        ConfigClient(relay.address, prefix=server.prefix, cache_dir=tmp_path / f"c{i}", registration_delay=0.1)
        for i in range(5)
    ]
    try:
        lives = [client.settings(Service, f"{unique_ns}/svc", timeout=10) for client in clients]
        assert all(live.version == 1 and live.current.timeout_ms == 1 for live in lives)
        with server.client() as http:
            assert http.put(f"/api/v1/configs/{unique_ns}/svc", json={"data": {"timeout_ms": 2}}).status_code == 201
        for live in lives:
            assert live.wait_for_version(2, 10) and live.current.timeout_ms == 2 and not live.stale
        time.sleep(0.3)  # every client is back in its blocking query
        metrics = relay.metrics()
        assert metrics["configd_relay_upstream_queries"] == 1  # one namespace watched: one query upstream
        assert metrics["configd_relay_downstream_waiters"] == 5
        assert metrics["configd_relay_waiters_woken_total"] >= 5
        # Registration went through the relay to Consul (sessions and acquire are forwarded unchanged).
        with ConsulGateway(server.consul_addr) as gateway:
            deadline = time.monotonic() + 10
            while len(gateway.keys(server.layout.clients_prefix(unique_ns))) < 5 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(gateway.keys(server.layout.clients_prefix(unique_ns))) == 5
    finally:
        for client in clients:
            client.close()


def _same(relay: httpx.Client, consul: httpx.Client, target: str) -> httpx.Response:
    """GET ``target`` from both; status, X-Consul-Index, leader headers and body must be Consul's."""
    mine, theirs = relay.get(target), consul.get(target)
    assert mine.status_code == theirs.status_code, (target, mine.text, theirs.text)
    for header in ("x-consul-index", "x-consul-knownleader", "content-type"):
        assert mine.headers.get(header) == theirs.headers.get(header), (target, header)
    assert mine.content == theirs.content, target
    return mine


def test_answers_are_consuls_own(relay: RelayProcess, consul_addr: str) -> None:
    base = f"relay-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=relay.address, timeout=30) as r, httpx.Client(base_url=consul_addr, timeout=30) as c:
        assert r.put(f"/v1/kv/{base}/a", content=b"1").json() is True  # writes are forwarded
        assert c.put(f"/v1/kv/{base}/dir/b", content=b"2").json() is True
        first = r.get(f"/v1/kv/{base}/?recurse&index=1&wait=2s")  # starts the watch; index 1 is behind: at once
        assert first.status_code == 200
        index = int(first.headers["x-consul-index"])
        for target in (
            f"/v1/kv/{base}/?recurse&index=1",
            f"/v1/kv/{base}/?recurse",  # a plain read of a watched shape, from memory
            f"/v1/kv/{base}/?keys&separator=/&index=1",
            f"/v1/kv/{base}/a?raw&index=1",
            f"/v1/kv/{base}/a?index=1",
            f"/v1/kv/{base}/none/?recurse&index=1",  # 404 with X-Consul-Index
            f"/v1/kv/{base}/a?consistent",  # forwarded
        ):
            _same(r, c, target)
        assert r.get(f"/v1/kv/{base}/none/?recurse&index=1").status_code == 404

        # A blocking read at the current index waits for its wait plus at most wait/16, then answers that index.
        started = time.monotonic()
        held = r.get(f"/v1/kv/{base}/?recurse&index={index}&wait=1s")
        waited = time.monotonic() - started
        assert 1.0 <= waited < 1.0625 + 0.5, waited
        assert held.status_code == 200 and int(held.headers["x-consul-index"]) == index

        # A write under the prefix wakes it with the new index and data.
        threading.Timer(0.3, lambda: httpx.put(f"{consul_addr}/v1/kv/{base}/a", content=b"3")).start()
        started = time.monotonic()
        woken = r.get(f"/v1/kv/{base}/?recurse&index={index}&wait=20s")
        assert time.monotonic() - started < 5
        assert int(woken.headers["x-consul-index"]) > index
        assert {e["Key"]: e["Value"] for e in woken.json()}[f"{base}/a"] == "Mw=="
        _same(r, c, f"/v1/kv/{base}/?recurse&index=1")

        # Everything that is not a KV read is Consul's: sessions, txn, status.
        session = r.put("/v1/session/create", json={"TTL": "10s"})
        assert session.status_code == 200
        assert r.put("/v1/session/destroy/" + session.json()["ID"]).json() is True
        assert r.get("/v1/status/leader").json() == c.get("/v1/status/leader").json()
        txn = r.put("/v1/txn", content=json.dumps([{"KV": {"Verb": "get", "Key": f"{base}/a"}}]))
        assert txn.status_code == 200 and txn.json()["Results"][0]["KV"]["Key"] == f"{base}/a"
        assert r.get("/v1/kv/x?index=abc").status_code == c.get("/v1/kv/x?index=abc").status_code == 400


def test_consul_watch_works_through_the_relay(relay: RelayProcess, consul_addr: str, tmp_path: Path) -> None:
    """Consul's own `consul watch -type=keyprefix`, pointed at the relay, fires on a change written to Consul; the
    relay holds its blocking query and asks Consul once for that prefix."""
    from configd.devagent import consul_binary

    base = f"relay-watch/{uuid.uuid4().hex[:8]}"
    gateway = ConsulGateway(consul_addr)
    gateway.put(f"{base}/a", b"one")
    out = tmp_path / "calls.jsonl"
    handler = f"tr -d '\\n' >> {out}; echo >> {out}"  # one line of JSON per handler call
    watch = subprocess.Popen(
        [consul_binary(), "watch", f"-http-addr={relay.address}", "-type=keyprefix", f"-prefix={base}/", handler],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")},
    )

    def calls() -> list[list[dict[str, object]]]:
        return [json.loads(line) for line in out.read_text().splitlines() if line] if out.exists() else []

    def wait_for(predicate: object, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():  # type: ignore[operator]
                return True
            time.sleep(0.05)
        return False

    try:
        assert wait_for(lambda: bool(calls()))  # the first call: the prefix as it is
        assert [entry["Key"] for entry in calls()[0]] == [f"{base}/a"]
        assert wait_for(lambda: relay.metrics().get("configd_relay_downstream_waiters", 0) >= 1)
        gateway.put(f"{base}/b", b"two")
        assert wait_for(lambda: any(len(call) == 2 for call in calls()))
        last = calls()[-1]
        assert {entry["Key"] for entry in last} == {f"{base}/a", f"{base}/b"}
        assert relay.metrics()["configd_relay_upstream_queries"] == 1  # the watch's prefix: one query upstream
    finally:
        watch.terminate()
        watch.wait(timeout=10)
        gateway.close()
