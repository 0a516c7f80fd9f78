"""The example application runs as documented: against Consul (CONSUL_HTTP_ADDR) and against local files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from configd.dev import load_examples
from configd.services.configs import ConfigStore
from configd_core.consul import ConsulGateway
from configd_core.layout import KeyLayout

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "app" / "main.py"


def run_app(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(APP), *args, "--changes", "1"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def read_until(app: subprocess.Popen[str], marker: str) -> list[str]:
    assert app.stdout is not None
    lines = []
    for line in app.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith(marker):
            return lines
    raise AssertionError(
        f"the app ended before printing {marker!r}: {lines}; stderr: {app.stderr.read() if app.stderr else ''}"
    )


@pytest.mark.timeout(60)
def test_example_app_against_consul(
    gateway: ConsulGateway, layout: KeyLayout, consul_addr: str, tmp_path: Path
) -> None:
    store = ConfigStore(gateway, layout)
    load_examples(store)  # what `make run` loads: payments/service is at v2
    env = {"CONSUL_HTTP_ADDR": consul_addr, "CONFIGD_PREFIX": layout.prefix, "CONFIGD_CACHE_DIR": str(tmp_path)}
    app = run_app([], env)
    try:
        lines = read_until(app, "watching")
        assert lines[0].startswith("loaded payments/service v2 from http://127.0.0.1:")
        assert json.loads(lines[1].removeprefix("settings "))["timeout_ms"] == 1500
        _, current = store.get("payments", "service")
        store.push("payments", "service", {**current, "retries": 5}, actor="test")
        lines = read_until(app, "settings")
        assert lines[0] == "changed v2 -> v3: /retries: 3 -> 5"
        assert app.wait(20) == 0
    finally:
        if app.poll() is None:
            app.kill()
            app.wait(10)


@pytest.mark.timeout(60)
def test_example_app_against_local_files(tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    shutil.copytree(ROOT / "examples" / "configs", configs)
    app = run_app(["--source", f"file://{configs}"], {"TIMEOUT_MS": "2000"})
    try:
        lines = read_until(app, "watching")
        assert lines[0].startswith("loaded payments/service v1 from file://")
        assert json.loads(lines[1].removeprefix("settings "))["timeout_ms"] == 2000  # the env var pins it
        target = configs / "payments" / "service.json"
        data = json.loads(target.read_text())
        data["currency"] = "CHF"
        tmp = target.with_name(".service.json.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, target)
        lines = read_until(app, "settings")
        assert lines[0] == "changed v1 -> v2: /currency: 'EUR' -> 'CHF'"
        assert app.wait(20) == 0
    finally:
        if app.poll() is None:
            app.kill()
            app.wait(10)


@pytest.mark.timeout(60)
def test_readme_sdk_snippet_runs(gateway: ConsulGateway, layout: KeyLayout, consul_addr: str, tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("<!-- sdk:start -->") : readme.index("<!-- sdk:end -->")]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    load_examples(ConfigStore(gateway, layout))
    env = {"CONSUL_HTTP_ADDR": consul_addr, "CONFIGD_PREFIX": layout.prefix, "CONFIGD_CACHE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", snippet], env={**os.environ, **env}, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "v2: timeout_ms=1500 retries=3"
