"""`configd dev` end to end: starts a Consul agent and the server, serves the examples, runs the README's curl
examples, and stops everything on SIGINT."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from configd.devagent import PROJECT_ROOT, free_ports

pytestmark = pytest.mark.timeout(180)

README = PROJECT_ROOT / "README.md"
ADMIN = {"Authorization": "Bearer dev-admin-token"}


@dataclass
class DevProcess:
    process: subprocess.Popen[str]
    port: int
    output: list[str]
    consul_addr: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _start_dev(tmp_path: Path) -> DevProcess:
    port = free_ports(1)[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "CONFIGD_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "configd", "dev", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert process.stdout is not None
    output: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        if line.startswith("Press Ctrl-C"):
            joined = "".join(output)
            consul = re.search(r"Consul \(throwaway dev agent\): (\S+)", joined)
            assert consul is not None, joined
            return DevProcess(process, port, output, consul.group(1))
    process.kill()
    raise AssertionError("configd dev did not come up:\n" + "".join(output))


def _stop(dev: DevProcess) -> int:
    if dev.process.poll() is None:
        dev.process.send_signal(signal.SIGINT)
        try:
            rest, _ = dev.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            dev.process.kill()
            dev.process.communicate(timeout=5)
            raise
        dev.output.append(rest)
    return dev.process.returncode


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevProcess]:
    started = time.perf_counter()
    proc = _start_dev(tmp_path)
    print(f"configd dev ready in {time.perf_counter() - started:.2f}s")
    try:
        yield proc
    finally:
        _stop(proc)


def test_dev_serves_examples_and_stops_cleanly_on_sigint(dev: DevProcess) -> None:
    banner = "".join(dev.output)
    assert "dev-admin-token" in banner and f"{dev.base_url}/docs" in banner and f"{dev.base_url}/ui/" in banner
    with httpx.Client(base_url=dev.base_url, headers=ADMIN) as http:
        assert http.get("/healthz").status_code == 200
        namespaces = {n["namespace"]: n["configs"] for n in http.get("/api/v1/configs").json()["namespaces"]}
        assert namespaces == {"payments": 2, "search": 1, "web": 1}
        # the example with a secret field: encrypted with the dev key ring, masked for every reader
        database = http.get("/api/v1/configs/payments/database").json()["data"]
        assert database["db_password"] == "••••••" and "CONFIGD_KEYS_FILE=" in banner
        service = http.get("/api/v1/configs/payments/service").json()
        assert service["version"] == 2 and service["data"]["timeout_ms"] == 1500
        diff = http.get("/api/v1/configs/payments/service/diff", params={"from": 1, "to": 2}).json()
        assert {c["path"] for c in diff["changes"]} == {"/timeout_ms", "/features/instant_refunds"}
        ranking = http.get("/api/v1/schemas/search/ranking").json()
        assert ranking["schema"]["required"] == ["weights", "max_results"]
        assert http.get("/docs").status_code == 200 and http.get("/openapi.json").json()["info"]["title"] == "configd"
        for role in ("editor", "reader"):
            assert http.get("/api/v1/configs", headers={"Authorization": f"Bearer dev-{role}-token"}).status_code == 200

    started = time.perf_counter()
    assert _stop(dev) == 0, "".join(dev.output)
    print(f"configd dev stopped in {time.perf_counter() - started:.2f}s")
    assert "configd dev: stopped" in "".join(dev.output)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{dev.base_url}/healthz", timeout=2)
    with pytest.raises(httpx.TransportError):  # the Consul agent it started is gone too
        httpx.get(f"{dev.consul_addr}/v1/status/leader", timeout=2)


def readme_api_examples() -> str:
    text = README.read_text()
    section = text.split("<!-- api-examples:start -->", 1)[1].split("<!-- api-examples:end -->", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert blocks, "no bash block between the api-examples markers"
    return "\n".join(blocks)


def test_readme_curl_examples_work_verbatim(dev: DevProcess) -> None:
    script = readme_api_examples()
    commands = [line for line in script.splitlines() if line.startswith("curl ")]
    assert len(commands) >= 10 and all("127.0.0.1:8080" in c or c.endswith("\\") for c in commands)
    # Verbatim except the port: the test instance runs on a free port, not on 8080.
    runnable = script.replace("127.0.0.1:8080", f"127.0.0.1:{dev.port}")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", runnable], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.stderr == ""
    with httpx.Client(base_url=dev.base_url, headers=ADMIN) as http:
        service = http.get("/api/v1/configs/payments/service").json()
        assert service["version"] == 4 and service["rollback_of"] == 1  # push (v3), then rollback to v1 (v4)
        fees = http.get("/api/v1/configs/payments/fees").json()
        assert fees["data"] == {"percent": 1.5} and fees["author"] == "dev-admin"
        audit = http.get("/api/v1/audit", params={"namespace": "payments", "limit": 4}).json()["entries"]
        assert [e["action"] for e in audit] == ["push", "schema.register", "rollback", "push"]
    first, _ = json.JSONDecoder().raw_decode(done.stdout)  # curl prints the bodies back to back
    assert {n["namespace"] for n in first["namespaces"]} == {"payments", "search", "web"}
