"""Shared fixtures: ONE real `consul agent -dev` per test session (free ports, health-polled, torn down).

Tests isolate themselves by key prefix (``layout`` fixture), never by mocking Consul.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from configd.devagent import ConsulAgent, free_ports
from configd.services.keys import create_key
from configd_core.consul import ConsulGateway
from configd_core.layout import KeyLayout
from configd_core.secrets import KEYS_FORMAT, KeyRing

# Tiers by folder (docs/architecture.md): `pytest -m unit` runs in seconds with no network.
_TIERS = ("unit", "integration", "browser", "reliability", "bench")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.relative_to(Path(__file__).parent).parts
        if parts and parts[0] in _TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture(scope="session")
def consul_agent() -> Iterator[ConsulAgent]:
    agent = ConsulAgent.dev(name="configd-test")
    agent.start(timeout=60)
    try:
        yield agent
    finally:
        agent.cleanup()


@pytest.fixture(scope="session")
def consul_addr(consul_agent: ConsulAgent) -> str:
    return consul_agent.http_addr


@pytest.fixture
def gateway(consul_addr: str) -> Iterator[ConsulGateway]:
    with ConsulGateway(consul_addr, pool_size=32) as gw:
        yield gw


@pytest.fixture
def layout() -> KeyLayout:
    """A fresh key prefix per test, so tests sharing the session's agent never see each other's keys."""
    return KeyLayout(prefix=f"t-{uuid.uuid4().hex[:12]}")


# Keys of the elected replica's own upkeep (the maintenance lock, the KV usage count it stores on an interval):
# they change on their own schedule, never because of a request, so "nothing changed" comparisons leave them out.
_UPKEEP = ("/locks/", "/maintenance/")


def kv_tree(gateway: ConsulGateway, prefix: str = "") -> dict[str, tuple[str, int]]:
    """Consul's whole KV tree (or one prefix): key -> (sha256 of the value, ModifyIndex); upkeep keys left out."""
    _, entries = gateway.list(prefix, consistent=True)
    return {
        e.key: (hashlib.sha256(e.value).hexdigest(), e.modify_index)
        for e in entries
        if not any(u in e.key for u in _UPKEEP)
    }


# --- the configd server as a real subprocess (issue 3); reusable by the CLI and UI tests ---------------------
# Token name -> (token, role, namespace globs). Names are what the audit log records as the author.
SERVER_TOKENS: dict[str, tuple[str, str, list[str]]] = {
    "admin": ("test-admin-token-0001", "admin", ["*"]),
    "editor": ("test-editor-token-0002", "editor", ["*"]),
    "reader": ("test-reader-token-0003", "reader", ["*"]),
    "team-admin": ("test-team-admin-token-0004", "admin", ["team-a-*"]),
    "team-editor": ("test-team-editor-token-0005", "editor", ["team-a-*"]),
    "team-reader": ("test-team-reader-token-0006", "reader", ["team-a-*"]),
}


@dataclass
class ServerProcess:
    """A running ``python -m configd serve`` on a free loopback port, with its tokens and key layout."""

    base_url: str
    consul_addr: str
    layout: KeyLayout
    tokens: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path
    tokens_file: Path
    keys_file: Path

    @property
    def prefix(self) -> str:
        return self.layout.prefix

    def allow_secrets(self, namespace: str) -> None:
        """Give the server a key for ``namespace`` (its key file is re-read on change), so secret fields there can be
        written (docs/security.md)."""
        if namespace not in KeyRing.from_file(self.keys_file).namespaces:
            create_key(self.keys_file, namespace)

    def headers(self, token_name: str | None = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[token_name]}"} if token_name else {}

    def client(self, token_name: str | None = "admin", **kwargs: Any) -> httpx.Client:
        """An httpx client for the server, authenticated as ``token_name`` (None: no Authorization header)."""
        return httpx.Client(base_url=self.base_url, headers=self.headers(token_name), timeout=30, **kwargs)

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_server(
    consul_addr: str,
    workdir: Path,
    *,
    prefix: str | None = None,
    tokens: dict[str, tuple[str, str, list[str]]] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> ServerProcess:
    """Start ``python -m configd serve`` and poll it until it answers HTTP (any status: /healthz may be 503)."""
    workdir.mkdir(parents=True, exist_ok=True)
    specs = tokens if tokens is not None else SERVER_TOKENS
    tokens_file = workdir / "tokens.json"
    tokens_file.write_text(
        json.dumps(
            {"tokens": [{"name": n, "token": t, "role": r, "namespaces": ns} for n, (t, r, ns) in specs.items()]}
        )
    )
    layout = KeyLayout(prefix=prefix or f"srv-{uuid.uuid4().hex[:10]}")
    port = free_ports(1)[0]
    log_path = workdir / f"server-{port}.log"
    keys_file = workdir / "keys.json"
    if not keys_file.exists():  # no namespace keys yet: ``allow_secrets`` adds them as tests need
        keys_file.write_text(json.dumps({"format": KEYS_FORMAT, "namespaces": {}}))
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "CONFIGD_"))}
    child_env.update({"CONFIGD_KEYS_FILE": str(keys_file), **(env or {})})
    cmd = [
        sys.executable,
        "-m",
        "configd",
        "serve",
        "--consul",
        consul_addr,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--prefix",
        layout.prefix,
        "--tokens-file",
        str(tokens_file),
    ]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env)
    server = ServerProcess(
        base_url=f"http://127.0.0.1:{port}",
        consul_addr=consul_addr,
        layout=layout,
        tokens={name: spec[0] for name, spec in specs.items()},
        process=process,
        log_path=log_path,
        tokens_file=tokens_file,
        keys_file=Path(child_env["CONFIGD_KEYS_FILE"]),
    )
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"configd serve exited with {process.returncode}:\n{server.log_tail()}")
        try:
            httpx.get(f"{server.base_url}/healthz", timeout=2)
            return server
        except httpx.TransportError:
            if time.monotonic() > deadline:
                server.stop()
                raise TimeoutError(f"configd serve did not answer within {timeout}s:\n{server.log_tail()}") from None
            time.sleep(0.05)


@pytest.fixture(scope="session")
def server(consul_addr: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """ONE configd server per test session on the session's Consul agent, under its own key prefix.

    Tests isolate themselves by namespace (``unique_ns``); tokens: ``SERVER_TOKENS``.
    """
    proc = start_server(consul_addr, tmp_path_factory.mktemp("configd-server"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def unique_ns() -> str:
    """A namespace no other test uses (``team-a-…`` namespaces are the scoped tokens' territory)."""
    return f"ns-{uuid.uuid4().hex[:10]}"
