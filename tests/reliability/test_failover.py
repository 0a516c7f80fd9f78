"""Consul leader failover under write load: 3 servers + 1 client agent on loopback (``raft_multiplier = 1``).

configd (a real server process) and SDK clients talk to the client agent, as in production. Writers push
continuously — half with ``expected_version``, half without — while the Raft leader is SIGKILLed and later
restarted. Afterwards: every push acknowledged with 2xx is in history with its content; every other answer is a
409 or a clear 503 (never a 500); every version record decodes and every head points to an existing version; the
SDK clients follow the new leader. Measured numbers are printed (docs/reliability.md records them).
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict

from configd.devagent import ConsulAgent, ConsulCluster
from configd_client import ConfigClient, LiveSettings
from configd_core.consul import ConsulGateway
from tests.conftest import ServerProcess, start_server
from tests.reliability.support import audit_prefix, wait_until

pytestmark = pytest.mark.reliability

CONFIGS = ("alpha", "beta")
NAMESPACE = "failover"


class Payload(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_prefix="FAILOVER_TEST_")
    writer: str = ""
    seq: int = 0


@dataclass
class Attempt:
    writer: str
    config: str
    data: dict[str, Any]
    status: int
    body: dict[str, Any]
    started: float
    ended: float


@dataclass
class Timeline:
    killed: list[float] = field(default_factory=list)
    elected: list[float] = field(default_factory=list)
    probe_acked: list[float] = field(default_factory=list)
    probe_applied: list[float] = field(default_factory=list)
    restarted: list[float] = field(default_factory=list)
    rejoined: list[float] = field(default_factory=list)


class Writer(threading.Thread):
    """Pushes unique documents to one config until stopped; records every answer."""

    def __init__(self, server: ServerProcess, name: str, config: str, conditional: bool, stop: threading.Event):
        super().__init__(name=name, daemon=True)
        self.server, self.config, self.conditional, self.stop = server, config, conditional, stop
        self.attempts: list[Attempt] = []
        self.read_failures: Counter[int] = Counter()

    def run(self) -> None:
        path = f"/api/v1/configs/{NAMESPACE}/{self.config}"
        seq = 0
        with self.server.client("editor") as http:
            while not self.stop.is_set():
                seq += 1
                data = {"writer": self.name, "seq": seq}
                body: dict[str, Any] = {"data": data, "message": f"{self.name} #{seq}"}
                if self.conditional:
                    head = http.get(path)
                    if head.status_code != 200:
                        self.read_failures[head.status_code] += 1
                        time.sleep(0.05)
                        continue
                    body["expected_version"] = head.json()["version"]
                started = time.monotonic()
                answer = http.put(path, json=body)
                self.attempts.append(
                    Attempt(self.name, self.config, data, answer.status_code, answer.json(), started, time.monotonic())
                )
                if answer.status_code >= 500:
                    time.sleep(0.05)  # what a polite client does while Consul elects a leader


def _push_until_acked(server: ServerProcess, config: str, data: dict[str, Any], timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    with server.client("admin") as http:
        while True:
            answer = http.put(f"/api/v1/configs/{NAMESPACE}/{config}", json={"data": data})
            if answer.status_code in (200, 201):
                return int(answer.json()["version"])
            assert answer.status_code == 503 and time.monotonic() < deadline, answer.text
            time.sleep(0.05)


def _new_leader(cluster: ConsulCluster, old: ConsulAgent, timeout: float = 60) -> float:
    waited = wait_until(lambda: (a := cluster.leader_agent()) is not None and a is not old, timeout)
    assert waited is not None, "no new leader was elected"
    return time.monotonic()


def run_failover(
    cluster: ConsulCluster,
    workdir: Path,
    *,
    writers_per_kind: int,
    kills: int,
    steady: float,
    after_election: float,
    after_restart: float,
) -> None:
    server = start_server(cluster.http_addr, workdir / "server", prefix=f"fo-{uuid.uuid4().hex[:10]}")
    clients: list[ConfigClient] = []
    stop = threading.Event()
    writers: list[Writer] = []
    timeline = Timeline()
    try:
        with server.client("admin") as http:
            for config in (*CONFIGS, "probe"):
                assert http.put(f"/api/v1/schemas/{NAMESPACE}/{config}", json={"type": "object"}).status_code == 201
                answer = http.put(f"/api/v1/configs/{NAMESPACE}/{config}", json={"data": {"writer": "init"}})
                assert answer.status_code == 201, answer.text
        lives: list[dict[str, LiveSettings[Payload]]] = []
        for i in range(2):
            client = ConfigClient(cluster.http_addr, prefix=server.prefix, cache_dir=workdir / f"cache{i}")
            clients.append(client)
            lives.append({c: client.settings(Payload, f"{NAMESPACE}/{c}") for c in (*CONFIGS, "probe")})

        for kind in ("conditional", "blind"):
            for i in range(writers_per_kind):
                config = CONFIGS[i % len(CONFIGS)]
                writers.append(Writer(server, f"{kind}-{i}", config, kind == "conditional", stop))
        for writer in writers:
            writer.start()
        time.sleep(steady)

        for round_ in range(kills):
            leader = cluster.leader_agent()
            assert leader is not None
            timeline.killed.append(time.monotonic())
            leader.kill(signal.SIGKILL)
            timeline.elected.append(_new_leader(cluster, leader))
            # A probe pushed as soon as a leader exists: how long until every running client applies it?
            version = _push_until_acked(server, "probe", {"writer": "probe", "seq": round_ + 1})
            timeline.probe_acked.append(time.monotonic())
            for live in lives:
                assert live["probe"].wait_for_version(version, 60), "a client never saw the probe"
            timeline.probe_applied.append(time.monotonic())
            time.sleep(after_election)
            cluster.restart(leader)
            timeline.restarted.append(time.monotonic())
            rejoined = wait_until(lambda agent=leader: bool(agent.leader()), 60)  # type: ignore[misc]
            assert rejoined is not None, "the restarted server never rejoined"
            timeline.rejoined.append(time.monotonic())
            time.sleep(after_restart)

        stop.set()
        for writer in writers:
            writer.join(120)
        assert not any(w.is_alive() for w in writers)
        stopped = time.monotonic()

        # Every running client reaches every final head.
        with server.client("reader") as http:
            finals = {c: http.get(f"/api/v1/configs/{NAMESPACE}/{c}").json()["version"] for c in CONFIGS}
        for live in lives:
            for config, version in finals.items():
                assert live[config].wait_for_version(version, 60), f"a client never reached {config} v{version}"
                assert live[config].version == version
        final_convergence = time.monotonic() - stopped

        attempts = [a for w in writers for a in w.attempts]
        statuses = Counter(a.status for a in attempts)
        assert set(statuses) <= {201, 409, 503}, statuses  # never 500, never a transport error
        for a in attempts:
            if a.status == 503:
                assert a.body["detail"].startswith("Consul is unavailable"), a.body
            if a.status == 409:
                assert isinstance(a.body.get("actual"), int), a.body

        with ConsulGateway(cluster.http_addr) as gateway:
            integrity = audit_prefix(gateway, server.layout)
        assert integrity.problems == []
        landed: set[tuple[str, str, int]] = set()
        for config in CONFIGS:
            history = integrity.versions[(NAMESPACE, config)]
            landed |= {(config, d["writer"], d["seq"]) for d in history.values() if d.get("writer") != "init"}  # type: ignore[union-attr]
        acked = [a for a in attempts if a.status == 201]
        for a in acked:
            record = integrity.versions[(NAMESPACE, a.config)].get(a.body["version"])
            assert record == a.data, f"acknowledged push {a.data} is not version {a.body['version']}"
        failed = [a for a in attempts if a.status != 201]
        failed_but_landed = [a for a in failed if (a.config, a.data["writer"], a.data["seq"]) in landed]
        assert all(a.status == 503 for a in failed_but_landed), "a 409 must never have written"
        attempted = {(a.config, a.data["writer"], a.data["seq"]) for a in attempts}
        assert landed <= attempted, "history holds a version nobody pushed"

        slowest = max((a.ended - a.started for a in attempts), default=0.0)
        reads = sum((w.read_failures for w in writers), Counter())
        for i in range(kills):
            print(
                f"\nround {i + 1}: election {timeline.elected[i] - timeline.killed[i]:.2f} s after SIGKILL; "
                f"probe acked {timeline.probe_acked[i] - timeline.elected[i]:.2f} s and applied by every client "
                f"{timeline.probe_applied[i] - timeline.elected[i]:.2f} s after the new leader; restarted server "
                f"rejoined in {timeline.rejoined[i] - timeline.restarted[i]:.2f} s"
            )
        print(
            f"{len(writers)} writers, {len(attempts)} pushes: {statuses[201]} acked (all in history), "
            f"{statuses[409]} x 409, {statuses[503]} x 503 ({len(failed_but_landed)} of those landed anyway), "
            f"head reads refused {dict(reads)}; slowest push {slowest:.2f} s; clients at the final heads "
            f"{final_convergence:.2f} s after the writers stopped; versions checked {integrity.version_count}"
        )
    finally:
        stop.set()
        for writer in writers:
            writer.join(30)
        for client in clients:
            client.close()
        server.stop()


@pytest.fixture
def cluster() -> Iterator[ConsulCluster]:
    with ConsulCluster() as started:
        yield started


@pytest.mark.timeout(180)
def test_leader_killed_and_restarted_under_write_load(cluster: ConsulCluster, tmp_path: Path) -> None:
    run_failover(cluster, tmp_path, writers_per_kind=2, kills=1, steady=1.5, after_election=2.0, after_restart=1.5)


@pytest.mark.reliability_long
@pytest.mark.timeout(600)
def test_three_leader_kills_under_heavier_write_load(cluster: ConsulCluster, tmp_path: Path) -> None:
    run_failover(cluster, tmp_path, writers_per_kind=4, kills=3, steady=3.0, after_election=5.0, after_restart=5.0)
