"""Disaster recovery (issue 18), with Consul's own tools and with configd's export.

1. ``consul snapshot save`` while pushes run; the Consul agent is killed and its data wiped; a NEW agent on the
   same address gets ``consul snapshot restore``: the same configd process and the running app resume, every
   version acknowledged before the snapshot started is there with an identical sha256, and the app kept its
   settings through the outage.
2. ``configd export-all`` while pushes run, ``configd import-all`` into an empty Consul: identical keys, records
   and history; an import into a prefix that holds data, or of a damaged export, is refused and writes nothing.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict

from configd.backup import DATA, LIVE_ROOTS, read_export
from configd.devagent import ConsulAgent, consul_binary
from configd_client import ConfigClient
from configd_core.consul import ConsulGateway
from configd_core.layout import KeyLayout
from configd_core.records import canonical_json, sha256_hex
from tests.conftest import ServerProcess, start_server
from tests.reliability.support import wait_until

# Generous: the 2-core test machine is shared, and a server start there has taken over 30 s.
START_TIMEOUT = 120.0

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(240)]


class Limits(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_prefix="DR_TEST_")
    rps: int = 0


class Pusher:
    """Pushes to load/svc on a thread; remembers each acknowledged version's sha256 and when it was acknowledged."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.acknowledged: list[tuple[int, str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with self.server.client("editor") as http:
            n = 0
            while not self._stop.is_set():
                data = {"n": n}
                try:
                    answer = http.put("/api/v1/configs/load/svc", json={"data": data})
                except httpx.TransportError:
                    return
                if answer.status_code == 201:
                    self.acknowledged.append(
                        (answer.json()["version"], sha256_hex(canonical_json(data)), time.monotonic())
                    )
                n += 1

    def __enter__(self) -> Pusher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _setup(server: ServerProcess) -> None:
    with server.client("admin") as http:
        for ref in ("load/svc", "app/limits"):
            assert http.put(f"/api/v1/schemas/{ref}", json={"type": "object"}).status_code == 201
        assert http.put("/api/v1/configs/app/limits", json={"data": {"rps": 7}}).status_code == 201


def _consul(*args: str) -> None:
    done = subprocess.run([consul_binary(), *args], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr + done.stdout


def test_snapshot_save_while_pushing_then_restore_into_a_new_cluster(tmp_path: Path) -> None:
    old = ConsulAgent.dev(name="dr-old")
    old.start(timeout=60)
    new: ConsulAgent | None = None
    server = start_server(old.http_addr, tmp_path / "server", timeout=START_TIMEOUT)
    app: ConfigClient | None = None
    try:
        _setup(server)
        app = ConfigClient(old.http_addr, prefix=server.prefix, cache_dir=tmp_path / "cache")
        live = app.settings(Limits, "app/limits")
        assert live.current.rps == 7

        snapshot = tmp_path / "backup.snap"
        with Pusher(server) as pusher:
            assert wait_until(lambda: len(pusher.acknowledged) >= 20, 60) is not None
            snapshot_started = time.monotonic()
            _consul("snapshot", "save", f"-http-addr={old.http_addr}", str(snapshot))
            time.sleep(0.3)
        before = [(v, sha) for v, sha, at in pusher.acknowledged if at < snapshot_started]
        print(
            f"\nsnapshot during pushes: {len(before)} versions acknowledged before it, "
            f"{len(pusher.acknowledged)} in all"
        )

        old.kill(signal.SIGKILL)  # the cluster is gone, its data (in memory) with it
        old_ports = old.ports
        old.cleanup()
        assert wait_until(lambda: live.stale, 60) is not None
        assert live.current.rps == 7  # the app runs on with its settings

        new = ConsulAgent(args=["-dev"], ports=old_ports, name="dr-new")  # a new cluster at the same address
        new.start(timeout=60)
        _consul("snapshot", "restore", f"-http-addr={new.http_addr}", str(snapshot))
        assert wait_until(lambda: httpx.get(f"{server.base_url}/healthz").status_code == 200, 60) is not None
        assert server.process.poll() is None  # the same configd process resumed

        with server.client("reader") as http:
            for version, sha in before:
                answer = http.get(f"/api/v1/configs/load/svc/versions/{version}")
                assert answer.status_code == 200, (version, answer.text)
                assert sha256_hex(canonical_json(answer.json()["data"])) == sha
        assert wait_until(lambda: not live.stale, 60) is not None
        assert live.current.rps == 7
        with server.client("editor") as http:
            assert http.put("/api/v1/configs/app/limits", json={"data": {"rps": 8}}).status_code == 201
        assert live.wait_for_version(2, 30) and live.current.rps == 8  # the app follows the restored cluster
    finally:
        if app is not None:
            app.close()
        server.stop()
        old.cleanup()
        if new is not None:
            new.cleanup()


def _kv(gateway: ConsulGateway, layout: KeyLayout) -> dict[str, bytes]:
    _, entries = gateway.list(f"{layout.prefix}/", consistent=True)
    root = f"{layout.prefix}/"
    return {e.key[len(root) :]: e.value for e in entries if not e.key[len(root) :].startswith(LIVE_ROOTS)}


def _configd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "configd", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_export_all_while_pushing_then_import_all_into_an_empty_consul(consul_addr: str, tmp_path: Path) -> None:
    server = start_server(consul_addr, tmp_path / "server", timeout=START_TIMEOUT)
    target = ConsulAgent.dev(name="dr-import")
    target.start(timeout=60)
    try:
        _setup(server)
        export = tmp_path / "export"
        with Pusher(server) as pusher:
            assert wait_until(lambda: len(pusher.acknowledged) >= 20, 60) is not None
            exported = _configd("export-all", str(export), "--consul", consul_addr, "--prefix", server.prefix)
            assert exported.returncode == 0, exported.stderr
        pairs = dict(read_export(export))
        versions = [k for k in pairs if k.startswith("versions/load/svc/")]
        assert len(versions) >= 20 and any(k.startswith("audit/load/") for k in pairs)
        assert all(not k.startswith(LIVE_ROOTS) for k in pairs)
        head = json.loads(pairs["heads/load/svc"])
        assert f"versions/load/svc/{head['version']:012d}" in pairs  # one consistent read: the head's version too

        imported = _configd("import-all", str(export), "--consul", target.http_addr, "--prefix", server.prefix)
        assert imported.returncode == 0, imported.stderr
        layout = KeyLayout(server.prefix)
        with ConsulGateway(target.http_addr) as gateway:
            assert _kv(gateway, layout) == pairs  # identical records, history and audit

            # Refused, writing nothing: into a prefix that holds data, and a damaged export.
            before = _kv(gateway, layout)
            again = _configd("import-all", str(export), "--consul", target.http_addr, "--prefix", server.prefix)
            assert again.returncode == 1 and "only fills an empty prefix" in again.stderr
            damaged = tmp_path / "damaged"
            damaged.mkdir()
            (damaged / "manifest.json").write_text((export / "manifest.json").read_text())
            (damaged / DATA).write_bytes((export / DATA).read_bytes()[:-10] + b"0000000000")
            other = _configd("import-all", str(damaged), "--consul", target.http_addr, "--prefix", "elsewhere")
            assert other.returncode == 1 and "does not match the sha256" in other.stderr
            assert _kv(gateway, layout) == before
            assert gateway.keys("elsewhere/") == []

        # A configd on the new Consul serves the same history.
        restored = start_server(target.http_addr, tmp_path / "restored", prefix=server.prefix, timeout=START_TIMEOUT)
        try:
            with server.client("reader") as old_http, restored.client("reader") as new_http:
                old_page = old_http.get("/api/v1/configs/app/limits/versions").json()
                assert new_http.get("/api/v1/configs/app/limits/versions").json() == old_page
                number = head["version"]
                answer: Any = new_http.get(f"/api/v1/configs/load/svc/versions/{number}").json()
                assert answer == old_http.get(f"/api/v1/configs/load/svc/versions/{number}").json()
        finally:
            restored.stop()
    finally:
        server.stop()
        target.cleanup()
