"""The README's CLI examples, extracted verbatim and run against a fresh ``configd dev`` (same example data)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def readme_cli_script() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("<!-- cli-examples:start -->", 1)[1].split("<!-- cli-examples:end -->", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the CLI section has exactly one bash block"
    return str(blocks[0])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``configd dev`` (its own throwaway Consul agent and the example data) on a free port."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("dev") / "dev.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "configd", "dev", "--port", str(port)], cwd=REPO, stdout=log, stderr=log
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/healthz", timeout=1) as answer:
                        if answer.status == 200 and "configd dev is running" in log_path.read_text():
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"configd dev did not come up:\n{log_path.read_text()}")
                time.sleep(0.2)
            yield url
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.timeout(120)
def test_readme_cli_examples_run_verbatim(dev_server: str) -> None:
    script = readme_cli_script()
    assert "export CONFIGD_TOKEN=dev-admin-token" in script
    shutil.rmtree("/tmp/configd-export", ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIGD_")}
    env |= {"CONFIGD_URL": dev_server, "COLUMNS": "120"}  # the only difference from `make run`: the port
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=110
    )
    print(result.stdout[-4000:])
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    assert "payments/service: created v3" in result.stdout  # the edited copy
    assert "payments/service: created v4" in result.stdout  # the rollback
    assert "exit code 1" in result.stdout
    assert "validation failed" in result.stderr and "/timeout_ms" in result.stderr and "/currency" in result.stderr
    assert "examples/configs/payments/service.json: valid against" in result.stdout
    assert '"db_password": "••••••"' in result.stdout  # configctl get payments/database: the secret is masked
    assert "payments/service: schema created v2" in result.stdout
    assert "plan: 0 to create, 0 to update, 8 unchanged" in result.stdout
