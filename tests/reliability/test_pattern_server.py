"""One admin's schema cannot take configd down (issue 18): a catastrophic ``pattern`` fails its push with a 422
within the time limit while ``/healthz`` keeps answering, and SIGTERM stops a real ``configd serve`` within its
grace period whatever its requests are doing."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from configd_core.consul import ConsulGateway
from tests.api_support import rejected
from tests.conftest import ServerProcess, start_server

# Generous: the 2-core test machine is shared, and a server start there has taken over 30 s.
START_TIMEOUT = 120.0

pytestmark = [pytest.mark.timeout(120), pytest.mark.reliability]

ISSUE_PATTERN = "^(a+)+$"  # the issue's pattern: regex's engine answers it at once
CATASTROPHIC = "^(a|a)+$"  # exponential in regex's engine too: only the time limit stops it
EVIL = "a" * 34 + "!"
EVIL_SCHEMA = {
    "type": "object",
    "properties": {
        "blob": {"type": "string", "pattern": ISSUE_PATTERN},
        "slow": {"type": "string", "pattern": CATASTROPHIC},
        "name": {"type": "string", "pattern": r"^\p{L}+$"},
    },
}


def _register(server: ServerProcess, namespace: str) -> str:
    with server.client("admin") as http:
        answer = http.put(f"/api/v1/schemas/{namespace}/evil", json=EVIL_SCHEMA)
        assert answer.status_code == 201, answer.text
        assert http.put(f"/api/v1/configs/{namespace}/evil", json={"data": {"name": "Zoë"}}).status_code == 201
    return f"/api/v1/configs/{namespace}/evil"


def _evil_push(server: ServerProcess, path: str) -> httpx.Response:
    with server.client("editor") as http:
        return http.put(path, json={"data": {"blob": EVIL, "slow": EVIL, "name": "Zoë"}})


def test_catastrophic_pattern_is_a_422_and_healthz_keeps_answering(
    server: ServerProcess, gateway: ConsulGateway, unique_ns: str
) -> None:
    path = _register(server, unique_ns)
    answer, _ = rejected(server, gateway, lambda: _evil_push(server, path), 422)
    body = answer.json()
    assert body["error"] == "ValidationFailed"
    assert [e["path"] for e in body["errors"]] == ["/blob", "/slow"]
    assert body["errors"][0]["message"] == f"{EVIL!r} does not match {ISSUE_PATTERN!r}"
    assert "100 ms time limit" in body["errors"][1]["message"] and CATASTROPHIC in body["errors"][1]["message"]

    push_seconds: list[float] = []
    health_seconds: list[float] = []
    statuses: list[int] = []
    done = threading.Event()

    def pusher() -> None:
        for _ in range(4):
            started = time.monotonic()
            statuses.append(_evil_push(server, path).status_code)
            push_seconds.append(time.monotonic() - started)

    def prober() -> None:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            while not done.is_set():
                started = time.monotonic()
                assert http.get("/healthz").status_code == 200
                health_seconds.append(time.monotonic() - started)
                time.sleep(0.01)

    probe = threading.Thread(target=prober)
    probe.start()
    pushers = [threading.Thread(target=pusher) for _ in range(2)]
    for thread in pushers:
        thread.start()
    for thread in pushers:
        thread.join(timeout=60)
    done.set()
    probe.join(timeout=10)
    print(
        f"\nevil pushes: max {max(push_seconds):.3f}s; /healthz during them: {len(health_seconds)} probes, "
        f"max {max(health_seconds):.3f}s"
    )
    assert statuses == [422] * 8
    assert len(health_seconds) >= 5
    # Before the fix a push hung > 10 s and /healthz with it; each is now bounded by the 100 ms (CPU) budget,
    # times a loaded 2-core machine's slack.
    assert max(push_seconds) < 3.0, push_seconds
    assert max(health_seconds) < 1.0, health_seconds
    # The good config is still there, untouched, and a Unicode-escape pattern still matches.
    with server.client("reader") as http:
        assert http.get(path).json()["data"] == {"name": "Zoë"}


def test_sigterm_stops_the_server_within_its_grace_period(consul_addr: str, tmp_path: Path) -> None:
    grace = 3
    server = start_server(
        consul_addr, tmp_path / "srv", env={"CONFIGD_SHUTDOWN_GRACE": str(grace)}, timeout=START_TIMEOUT
    )
    try:
        path = _register(server, "sigterm")
        # A request that never finishes by itself: headers promise a body that only dribbles in.
        host, port = server.base_url.removeprefix("http://").split(":")
        stuck = socket.create_connection((host, int(port)))
        stuck.sendall(
            f"PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.tokens['editor']}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{".encode()
        )
        stop = threading.Event()

        def pushing() -> None:
            while not stop.is_set():
                try:
                    _evil_push(server, path)
                except httpx.TransportError:
                    return

        pushers = [threading.Thread(target=pushing) for _ in range(2)]
        for thread in pushers:
            thread.start()
        time.sleep(0.5)
        started = time.monotonic()
        server.process.terminate()
        code = server.process.wait(timeout=grace + 10)
        took = time.monotonic() - started
        stop.set()
        for thread in pushers:
            thread.join(timeout=10)
        stuck.close()
        print(
            f"\nSIGTERM with a stuck upload and evil pushes in flight: exited {code} after {took:.2f}s (grace {grace}s)"
        )
        # uvicorn closes the stuck connection after the grace period; the hard deadline is grace + 2 s.
        assert took <= grace + 2 + 1.5, took
    finally:
        server.stop()
