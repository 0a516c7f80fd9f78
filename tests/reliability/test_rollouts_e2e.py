"""Progressive rollouts end to end (issue 13): two real ``configd serve`` replicas, a real Consul, and 20 separate
application processes on the real SDK (tests/reliability/rolloutapps/app.py), each logging every version it holds.

1. Labels + a listed instance + a percentage: exactly the cohort runs the candidate; the others never see it.
2. 25 % → 50 % moves no instance out; restarting every app keeps each one's membership.
3. Abort: every instance is back on the head within a normal push's propagation time.
4. SIGKILL of the replica that drives an automatic rollout: the other one continues it at the right step and
   completes it; complete makes the candidate the head everywhere.
5. Apps on the candidate that raise in their callback or report themselves unhealthy abort the rollout by themselves
   at the threshold; instances outside the cohort see nothing at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from configd_core.consul import ConsulGateway
from configd_core.records import HeadRecord, RolloutRecord
from configd_core.rollouts import bucket
from tests.conftest import ServerProcess, start_server

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[2]
NS, NAME = "shop", "svc"
APPS = 20
START_TIMEOUT = 120.0
SCHEMA = {
    "type": "object",
    "properties": {
        "timeout_ms": {"type": "integer", "minimum": 1},
        "fail_on": {"type": "array", "items": {"type": "string"}},
        "unhealthy_on": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["timeout_ms"],
}
FAST = {"CONFIGD_ELECTION_TTL": "10", "CONFIGD_LOCK_DELAY": "1", "CONFIGD_ROLLOUT_INTERVAL": "0.5"}


def _key(i: int) -> str:
    return f"app-{i:02d}"


def _region(i: int) -> str:
    return "eu" if i % 2 == 0 else "us"


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class Fleet:
    """The 20 application processes and their logs (one file per process start)."""

    def __init__(self, consul_addr: str, prefix: str, workdir: Path) -> None:
        self.consul_addr, self.prefix, self.workdir = consul_addr, prefix, workdir
        self.generation = 0
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "CONFIGD_"))}

    def log(self, i: int, generation: int | None = None) -> list[dict[str, Any]]:
        path = self.workdir / f"{_key(i)}-{self.generation if generation is None else generation}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def version(self, i: int) -> int | None:
        entries = self.log(i)
        return entries[-1]["version"] if entries else None

    def start(self) -> None:
        self.generation += 1
        for i in range(APPS):
            logfile = self.workdir / f"{_key(i)}-{self.generation}.jsonl"
            self.procs[i] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.reliability.rolloutapps.app",
                    self.consul_addr,
                    self.prefix,
                    f"{NS}/{NAME}",
                    _key(i),
                    f"region={_region(i)}",
                    str(logfile),
                ],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=open(self.workdir / f"{_key(i)}-{self.generation}.err", "ab"),  # noqa: SIM115
            )
        _until(lambda: all(self.log(i) for i in range(APPS)), START_TIMEOUT, "every app's first version")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    def converged(self, expected: dict[int, int]) -> bool:
        return all(self.version(i) == v for i, v in expected.items())

    def seen(self, i: int, version: int) -> bool:
        """Whether app ``i`` ever held ``version`` (in any of its starts)."""
        return any(entry["version"] == version for g in range(1, self.generation + 1) for entry in self.log(i, g))


def _members(rollout_id: str, percent: float, listed: set[str], region: str | None) -> set[int]:
    """Who must run the candidate: the one membership rule, computed here from its definition."""
    return {
        i
        for i in range(APPS)
        if _key(i) in listed
        or (
            (region is None or _region(i) == region)
            and (percent >= 100 or bucket(_key(i), NS, NAME, rollout_id) < percent)
        )
    }


def _head(gateway: ConsulGateway, server: ServerProcess) -> HeadRecord:
    entry = gateway.get(server.layout.head(NS, NAME))
    assert entry is not None
    return HeadRecord.from_bytes(entry.value)


def _leader(gateway: ConsulGateway, servers: list[ServerProcess]) -> ServerProcess:
    def holder() -> str | None:
        entry = gateway.get(servers[0].layout.lock("maintenance"), consistent=True)
        return json.loads(entry.value)["holder"] if entry is not None and entry.session else None

    name = _until(holder, 60, "a replica to hold the lock")
    return next(s for s in servers if name.endswith(f":{s.base_url.rsplit(':', 1)[-1]}"))


def test_rollouts_with_twenty_app_processes(consul_addr: str, gateway: ConsulGateway, tmp_path: Path) -> None:
    first = start_server(consul_addr, tmp_path / "a", env=FAST, timeout=START_TIMEOUT)
    servers = [first]
    fleet = Fleet(consul_addr, first.prefix, tmp_path)
    try:
        servers.append(start_server(consul_addr, tmp_path / "b", prefix=first.prefix, env=FAST, timeout=START_TIMEOUT))
        with first.client("admin") as http:
            assert http.put(f"/api/v1/schemas/{NS}/{NAME}", json=SCHEMA).status_code == 201
            assert http.put(f"/api/v1/configs/{NS}/{NAME}", json={"data": {"timeout_ms": 500}}).status_code == 201
        fleet.start()
        assert all(fleet.version(i) == 1 for i in range(APPS))
        url = f"/api/v1/configs/{NS}/{NAME}/rollouts"

        # --- 1. labels + a listed instance + 25 %: exactly the cohort runs v2 ------------------------------------
        with first.client("editor") as http:
            answer = http.post(
                url,
                json={
                    "data": {"timeout_ms": 900},
                    "cohort": {"labels": {"region": "eu"}, "instances": ["app-01"]},
                    "steps": [25, 50, 100],
                    "auto": False,
                    "message": "canary",
                },
            )
        assert answer.status_code == 201, answer.text
        r1 = answer.json()["rollout"]["id"]
        at_25 = _members(r1, 25, {"app-01"}, "eu")
        expected = {i: 2 if i in at_25 else 1 for i in range(APPS)}
        _until(lambda: fleet.converged(expected), 30, "the 25 % cohort on v2")
        with first.client("reader") as http:
            counts = _until(
                lambda: (
                    (c := http.get(f"{url}/current").json()["instances"])["members"] == len(at_25)
                    and c["total"] == APPS
                    and c
                ),
                30,
                "registrations reporting membership",
            )
        assert counts["on_candidate"] == len(at_25) and counts["on_base"] == APPS - len(at_25)

        # --- 2. 25 % → 50 %: nobody moves out; a restart of every app keeps membership ----------------------------
        with first.client("editor") as http:
            assert http.post(f"{url}/current/promote", json={"message": "to 50%"}).status_code == 200
        at_50 = _members(r1, 50, {"app-01"}, "eu")
        assert at_25 <= at_50
        expected = {i: 2 if i in at_50 else 1 for i in range(APPS)}
        _until(lambda: fleet.converged(expected), 30, "the 50 % cohort on v2")
        fleet.stop()
        fleet.start()
        assert fleet.converged(expected), {i: fleet.version(i) for i in range(APPS)}
        outside = [i for i in range(APPS) if i not in at_50]
        assert not [i for i in outside if fleet.seen(i, 2)], "an instance outside the cohort saw the candidate"

        # --- 3. abort: everyone on v1 again, as fast as a push propagates -----------------------------------------
        with first.client("editor") as http:
            aborted_at = time.monotonic()
            assert http.post(f"{url}/current/abort", json={"message": "p99 up"}).status_code == 200
        _until(lambda: fleet.converged(dict.fromkeys(range(APPS), 1)), 15, "every app back on v1")
        abort_seconds = time.monotonic() - aborted_at
        with first.client("editor") as http:
            pushed_at = time.monotonic()
            assert http.put(f"/api/v1/configs/{NS}/{NAME}", json={"data": {"timeout_ms": 550}}).status_code == 201
        _until(lambda: fleet.converged(dict.fromkeys(range(APPS), 2)), 15, "every app on the pushed v2")
        push_seconds = time.monotonic() - pushed_at
        print(f"\nabort → all 20 on H: {abort_seconds:.2f}s; a plain push → all 20: {push_seconds:.2f}s")
        assert abort_seconds <= max(3 * push_seconds, 2.0)

        # --- 4. SIGKILL of the driving replica: the other continues at the right step -----------------------------
        leader = _leader(gateway, servers)
        survivor = next(s for s in servers if s is not leader)
        with survivor.client("editor") as http:
            answer = http.post(url, json={"data": {"timeout_ms": 800}, "steps": [50, 100], "bake_seconds": 4})
        assert answer.status_code == 201, answer.text
        r2 = answer.json()["rollout"]["id"]
        leader.process.kill()
        leader.process.wait(timeout=10)
        killed_at = time.monotonic()
        done = _until(lambda: (h := _head(gateway, survivor)).rollout is None and h, 90, "the rollout to complete")
        print(f"SIGKILL of the driving replica: rollout completed {time.monotonic() - killed_at:.1f}s later")
        assert done.version == 3
        _until(lambda: fleet.converged(dict.fromkeys(range(APPS), 3)), 15, "every app on the completed v3")
        with survivor.client("reader") as http:
            ended = RolloutRecord.model_validate(http.get(url).json()["items"][0])
            moves = [
                (e["action"], e["actor"])
                for e in reversed(http.get("/api/v1/audit", params={"namespace": NS, "limit": 200}).json()["entries"])
                if e["action"] in ("rollout.advance", "rollout.complete")
            ]
        assert ended.id == r2 and ended.state == "completed" and ended.step == 1
        assert moves == [("rollout.advance", "configd-rollouts"), ("rollout.complete", "configd-rollouts")]

        # --- 5. failures on the candidate abort it by themselves; outsiders see nothing ----------------------------
        before = {i: len(fleet.log(i)) for i in range(APPS)}
        failing = {_key(0), _key(2)}
        with survivor.client("editor") as http:
            answer = http.post(
                url,
                json={
                    "data": {"timeout_ms": 650, "fail_on": sorted(failing), "unhealthy_on": [_key(4)]},
                    "cohort": {"labels": {"region": "eu"}},
                    "steps": [100],
                    "bake_seconds": 600,
                    "max_failures": 2,
                },
            )
        assert answer.status_code == 201, answer.text
        _until(lambda: _head(gateway, survivor).rollout is None, 60, "the automatic rollback")
        with survivor.client("reader") as http:
            ended = RolloutRecord.model_validate(http.get(url).json()["items"][0])
        assert ended.state == "aborted" and ended.finished_by == "configd-rollouts", ended
        assert "automatic rollback" in ended.reason
        eu = [i for i in range(APPS) if _region(i) == "eu"]
        _until(lambda: fleet.converged(dict.fromkeys(range(APPS), 3)), 15, "every app back on v3")
        assert all(fleet.seen(i, 4) for i in eu)
        us = [i for i in range(APPS) if _region(i) == "us"]
        assert all(len(fleet.log(i)) == before[i] for i in us), "an instance outside the cohort saw something"
        assert len({f.instance for f in ended.failures}) >= 2
        assert {f.kind for f in ended.failures} <= {"callback", "unhealthy"}
    finally:
        fleet.stop()
        for server in servers:
            server.stop()
