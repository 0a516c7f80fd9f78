"""20 writers × 50 conditional pushes on ONE config, spread across TWO configd server processes.

Each attempt reads the head from its server and pushes with ``expected_version`` = that head. Consul's CAS in the
push transaction decides: exactly one writer wins each version, every loser gets a 409 with expected/actual, and the
history is linear — versions 1..N, parent = v - 1, each acknowledged push exactly once with its own content.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from configd_core.consul import ConsulGateway
from tests.conftest import ServerProcess, start_server
from tests.reliability.support import audit_prefix

pytestmark = [pytest.mark.timeout(300), pytest.mark.reliability]

WRITERS = 20
PUSHES = 50
SCHEMA = {"type": "object", "required": ["writer", "seq"]}


@pytest.fixture
def two_servers(consul_addr: str, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    prefix = f"conc-{uuid.uuid4().hex[:10]}"
    servers: list[ServerProcess] = []
    try:
        for i in range(2):
            servers.append(start_server(consul_addr, tmp_path / f"server{i}", prefix=prefix))
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.mark.parametrize("writers,pushes", [(WRITERS, PUSHES)])
def test_twenty_writers_two_servers_linear_history(
    two_servers: list[ServerProcess], gateway: ConsulGateway, writers: int, pushes: int
) -> None:
    path = "/api/v1/configs/race/shared"
    with two_servers[0].client("admin") as http:
        assert http.put("/api/v1/schemas/race/shared", json=SCHEMA).status_code == 201
        assert http.put(path, json={"data": {"writer": -1, "seq": 0}, "expected_version": 0}).status_code == 201

    won: list[tuple[int, int, int]] = []  # (version, writer, seq)
    statuses: Counter[int] = Counter()
    conflicts: list[dict[str, object]] = []
    lock = threading.Lock()
    start = threading.Barrier(writers)

    def writer(index: int) -> None:
        server = two_servers[index % 2]
        with server.client("editor") as http:
            start.wait()
            for seq in range(pushes):
                head = http.get(path).json()["version"]
                body = {"data": {"writer": index, "seq": seq}, "expected_version": head, "message": f"w{index}"}
                answer = http.put(path, json=body)
                with lock:
                    statuses[answer.status_code] += 1
                    if answer.status_code == 201:
                        won.append((answer.json()["version"], index, seq))
                    elif answer.status_code == 409:
                        conflicts.append(answer.json())

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(240)
    elapsed = time.perf_counter() - started
    assert not any(t.is_alive() for t in threads)

    assert set(statuses) <= {201, 409}, statuses  # never a 500, never "unchanged"
    assert sum(statuses.values()) == writers * pushes
    odd = [c for c in conflicts if not (isinstance(c["expected"], int) and c["expected"] != c["actual"])]
    assert odd == [], odd[:3]  # every 409 says which head it expected and which one won
    versions = sorted(v for v, _, _ in won)
    assert versions == list(range(2, 2 + len(won))), "winners' versions have gaps or duplicates"

    integrity = audit_prefix(gateway, two_servers[0].layout)
    assert integrity.problems == []
    history = integrity.versions[("race", "shared")]
    assert sorted(history) == list(range(1, 2 + len(won)))
    assert integrity.heads[("race", "shared")].version == 1 + len(won)
    for version, index, seq in won:
        assert history[version] == {"writer": index, "seq": seq}
    with two_servers[1].client("reader") as http:  # the other server sees the same linear history
        listed = http.get(f"{path}/versions", params={"limit": 500}).json()
    assert listed["total"] == 1 + len(won)
    assert [v["version"] for v in listed["versions"]] == list(range(1 + len(won), 0, -1))[:500]
    print(
        f"\n{writers} writers x {pushes} pushes over 2 servers in {elapsed:.1f} s: "
        f"{statuses[201]} created (versions 2..{1 + len(won)}), {statuses[409]} got 409 "
        f"({writers * pushes / elapsed:.0f} attempts/s)"
    )
