"""The benchmark's world: one Consul dev agent and configd server processes on free loopback ports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from configd.devagent import ConsulAgent, free_ports

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "bench-admin-token-0001"

# A config of 20 fields and a schema with types and bounds: what the throughput, bulk and propagation
# sections push (``seq`` changes per push so every push makes a new version).
FIELDS: dict[str, dict[str, Any]] = {
    "seq": {"type": "integer", "minimum": 0},
    "timeout_ms": {"type": "integer", "minimum": 1, "maximum": 600000},
    "retries": {"type": "integer", "minimum": 0, "maximum": 20},
    "pool_size": {"type": "integer", "minimum": 1, "maximum": 1024},
    "rate_limit": {"type": "number", "minimum": 0, "maximum": 100000},
    "ratio": {"type": "number", "minimum": 0, "maximum": 1},
    "currency": {"type": "string", "enum": ["EUR", "USD", "GBP", "CHF"]},
    "region": {"type": "string", "minLength": 2, "maxLength": 32},
    "endpoint": {"type": "string", "maxLength": 256},
    "owner": {"type": "string", "maxLength": 64},
    "log_level": {"type": "string", "enum": ["debug", "info", "warning", "error"]},
    "feature_a": {"type": "boolean"},
    "feature_b": {"type": "boolean"},
    "feature_c": {"type": "boolean"},
    "max_body_kb": {"type": "integer", "minimum": 1, "maximum": 65536},
    "cache_ttl_s": {"type": "integer", "minimum": 0, "maximum": 86400},
    "backoff_s": {"type": "number", "minimum": 0, "maximum": 60},
    "queue": {"type": "string", "pattern": "^[a-z][a-z0-9-]*$", "maxLength": 64},
    "replicas": {"type": "integer", "minimum": 1, "maximum": 100},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 32}, "maxItems": 16},
}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": FIELDS,
    "required": sorted(FIELDS),
    "additionalProperties": False,
}
LOOSE_SCHEMA: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"}


def config_data(seq: int) -> dict[str, Any]:
    """A valid 20-field document; ``seq`` makes it differ from the previous version."""
    return {
        "seq": seq,
        "timeout_ms": 1500,
        "retries": 3,
        "pool_size": 32,
        "rate_limit": 250.5,
        "ratio": 0.25,
        "currency": "EUR",
        "region": "eu-west-1",
        "endpoint": "https://payments.internal.example/api/v2",
        "owner": "team-payments",
        "log_level": "info",
        "feature_a": True,
        "feature_b": False,
        "feature_c": seq % 2 == 0,
        "max_body_kb": 1024,
        "cache_ttl_s": 300,
        "backoff_s": 0.5,
        "queue": "payments-events",
        "replicas": 3,
        "tags": ["payments", "eu", "tier-1"],
    }


@dataclass
class Server:
    """One ``python -m configd serve`` process."""

    base_url: str
    prefix: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def client(self, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=120, **kwargs)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@dataclass
class BenchEnv:
    """A Consul dev agent plus the configd servers started on it; everything is torn down on exit."""

    agent: ConsulAgent = field(default_factory=lambda: ConsulAgent.dev(name="configd-bench"))
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="configd-bench-")))
    servers: list[Server] = field(default_factory=list)
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def consul_addr(self) -> str:
        return self.agent.http_addr

    def __enter__(self) -> BenchEnv:
        self.agent.start(timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
        for server in self.servers:
            server.stop()
        self.agent.cleanup()

    def start_server(self, prefix: str | None = None, workers: int = 1) -> Server:
        """A configd server (``workers`` processes) on a free port under its own key prefix, polled until it answers."""
        tokens_file = self.workdir / "tokens.json"
        tokens = {"tokens": [{"name": "bench", "token": ADMIN_TOKEN, "role": "admin", "namespaces": ["*"]}]}
        tokens_file.write_text(json.dumps(tokens))
        prefix = prefix or f"bench-{uuid.uuid4().hex[:8]}"
        port = free_ports(1)[0]
        log_path = self.workdir / f"server-{port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "CONFIGD_"))}
        cmd = [sys.executable, "-m", "configd", "serve", "--consul", self.consul_addr, "--host", "127.0.0.1"]
        cmd += ["--port", str(port), "--prefix", prefix, "--tokens-file", str(tokens_file), "--log-level", "warning"]
        cmd += ["--workers", str(workers)]
        with open(log_path, "ab") as log:
            process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        server = Server(f"http://127.0.0.1:{port}", prefix, process, log_path)
        self.servers.append(server)
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"configd serve exited: {log_path.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"{server.base_url}/healthz", timeout=2).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("configd serve did not become healthy within 60 s")
            time.sleep(0.05)

    def start_floor(
        self, workers: int = 1, sizes: dict[str, int] | None = None, schema: dict[str, Any] | None = None
    ) -> tuple[str, subprocess.Popen[bytes]]:
        """``bench._floor_app`` (FastAPI on configd's server stack, doing only the Consul write) on a free port;
        ``schema`` is what its required floor (``/push``) validates against."""
        sizes = sizes or {"version": 774, "head": 320, "audit": 272}
        port = free_ports(1)[0]
        cmd = [sys.executable, "-m", "bench._floor_app", self.consul_addr, str(port), "bench-raw/floor", str(workers)]
        cmd += [str(sizes["version"]), str(sizes["head"]), str(sizes["audit"])]
        cmd += [json.dumps(schema)] if schema is not None else []
        process = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL)
        self.children.append(process)
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.put(f"{base_url}/noop", timeout=2)
                return base_url, process
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the floor app did not start") from None
                time.sleep(0.05)


def ok(answer: httpx.Response, *codes: int) -> dict[str, Any]:
    """The JSON body of an answer whose status is one of ``codes`` (201/200 by default)."""
    if answer.status_code not in (codes or (200, 201)):
        raise RuntimeError(f"{answer.request.method} {answer.request.url}: {answer.status_code} {answer.text[:500]}")
    body: dict[str, Any] = answer.json()
    return body


def setup_configs(server: Server, namespace: str, names: list[str], schema: dict[str, Any] | None = None) -> None:
    """Register the schema and push version 1 of ``config_data`` for every name."""
    with server.client() as http:
        for name in names:
            ok(http.put(f"/api/v1/schemas/{namespace}/{name}", json=schema or SCHEMA))
            ok(http.put(f"/api/v1/configs/{namespace}/{name}", json={"data": config_data(0)}))


def machine_load() -> dict[str, Any]:
    """Load averages and CPU count, recorded beside the results (other engineers share this machine)."""
    one, five, fifteen = os.getloadavg()
    return {
        "loadavg_1m": round(one, 2),
        "loadavg_5m": round(five, 2),
        "loadavg_15m": round(fifteen, 2),
        "cpus": os.cpu_count(),
    }
