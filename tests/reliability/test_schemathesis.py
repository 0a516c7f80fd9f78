"""Schemathesis against the running server's /openapi.json: every operation, with an admin token, every check
(no 5xx, status codes, content types, headers and bodies as documented, invalid input refused, valid input
accepted). The fast run is bounded by examples per operation; ``reliability_long`` runs many more.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from configd_core.consul import ConsulGateway
from tests.conftest import ServerProcess, start_server
from tests.reliability.support import audit_prefix

pytestmark = pytest.mark.reliability

CONFIG = Path(__file__).with_name("schemathesis.toml")  # the one documented exception, explained there


@pytest.fixture
def fuzzed_server(consul_addr: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of its own (own key prefix): the fuzzer writes whatever it likes there."""
    # No elected maintenance: a fuzzed retention policy must not trim the versions the integrity audit then checks.
    proc = start_server(consul_addr, tmp_path / "server", env={"CONFIGD_MAINTENANCE": "false"})
    try:
        with proc.client("admin") as http:  # something real to find among the random names
            assert http.put("/api/v1/schemas/0/0", json={"type": "object"}).status_code == 201
            assert http.put("/api/v1/configs/0/0", json={"data": {"a": 1}}).status_code == 201
        yield proc
    finally:
        proc.stop()


def run_schemathesis(server: ServerProcess, workdir: Path, *, max_examples: int, seed: int | None) -> dict[str, int]:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is not installed (dev extra)"
    cmd = [
        st,
        "--config-file",
        str(CONFIG),
        "run",
        f"{server.base_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {server.tokens['admin']}",
        "--checks",
        "all",
        "--max-examples",
        str(max_examples),
        "--workers",
        "1",  # hypothesis' lambda introspection is not thread-safe on CPython 3.11 (SystemError in ast.parse)
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        "--no-color",
        "--continue-on-failure",
        "--report",
        "junit",
        "--report-dir",
        str(workdir / "report"),
    ]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=900, check=False)
    elapsed = time.perf_counter() - started
    output = done.stdout + done.stderr
    log = server.log_tail(100_000)
    assert done.returncode == 0, output[-8000:] + "\n--- server log ---\n" + log[-4000:]
    generated = re.search(r"(\d+) generated, (\d+) passed(?:, (\d+) skipped)?", output)
    assert generated, output[-4000:]
    operations = re.search(r"Tested: (\d+)", output)
    assert operations and int(operations.group(1)) >= 17, output[-4000:]
    assert "incident" not in log and "Traceback" not in log, log[-4000:]
    counts = {
        "operations": int(operations.group(1)),
        "cases": int(generated.group(1)),
        "passed": int(generated.group(2)),
        "skipped": int(generated.group(3) or 0),
    }
    print(f"\nschemathesis: {counts} in {elapsed:.1f} s (max {max_examples} examples per operation)")
    return counts


@pytest.mark.timeout(300)  # ~30 operations; the long run (400 examples each) is `make test-reliability`
def test_schemathesis_finds_nothing(fuzzed_server: ServerProcess, gateway: ConsulGateway, tmp_path: Path) -> None:
    counts = run_schemathesis(fuzzed_server, tmp_path, max_examples=10, seed=20261127)
    assert counts["cases"] == counts["passed"] > 500
    assert audit_prefix(gateway, fuzzed_server.layout).problems == []


@pytest.mark.reliability_long
@pytest.mark.timeout(1200)
def test_schemathesis_long_run(fuzzed_server: ServerProcess, gateway: ConsulGateway, tmp_path: Path) -> None:
    counts = run_schemathesis(fuzzed_server, tmp_path, max_examples=400, seed=None)
    assert counts["cases"] == counts["passed"]
    assert audit_prefix(gateway, fuzzed_server.layout).problems == []
