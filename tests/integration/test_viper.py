"""Opt-in (``pytest -m viper``): a Go program reads a configd projection through Viper (Debian's golang-go and
golang-github-spf13-viper-dev: ``apt-get install golang-go golang-github-spf13-viper-dev``).

Viper's remote provider (``viper/remote``) needs the crypt library, which Debian does not package; the Go program
therefore fetches the key's raw value from Consul's HTTP API — the bytes the remote provider would fetch — and hands
them to Viper's own parser (``ReadConfig``) as JSON and as YAML.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess

pytestmark = pytest.mark.viper

GO_SOURCE = Path(__file__).parent / "viper"
DOC: dict[str, Any] = {"db": {"host": "db1", "password": "hidden"}, "retries": 3, "tags": ["a", "b"]}
SCHEMA = {"type": "object", "properties": {"db": {"properties": {"password": {"writeOnly": True}}}}}


@pytest.fixture(scope="module")
def viper_read(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    viper = Path("/usr/share/gocode/src/github.com/spf13/viper")
    if go is None or not viper.is_dir():
        pytest.fail("the viper check needs: apt-get install golang-go golang-github-spf13-viper-dev")
    out = tmp_path_factory.mktemp("viper") / "viper-read"
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": "/usr/share/gocode",
        "GOCACHE": str(out.parent / "gocache"),
        "GOFLAGS": "",
    }
    subprocess.run([go, "build", "-o", str(out), "."], cwd=GO_SOURCE, env=env, check=True, timeout=600)
    return out


@pytest.mark.timeout(900)
@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_viper_reads_the_document_projection(server: ServerProcess, unique_ns: str, viper_read: Path, fmt: str) -> None:
    ref = f"{unique_ns}/service"
    key = f"viper-{uuid.uuid4().hex[:8]}/service.{fmt}"
    with server.client("admin") as http:
        assert http.put(f"/api/v1/schemas/{ref}", json=SCHEMA).status_code == 201
        assert http.put(f"/api/v1/configs/{ref}", json={"data": DOC}).status_code == 201
        answer = http.put(f"/api/v1/projections/{ref}", json={"document": {"key": key, "format": fmt}})
        assert answer.status_code == 200, answer.text
    done = subprocess.run(
        [str(viper_read), server.consul_addr, key, fmt], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["settings"] == {"db": {"host": "db1"}, "retries": 3, "tags": ["a", "b"]}
    assert (seen["db.host"], seen["retries"]) == ("db1", 3)
