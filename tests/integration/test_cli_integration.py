"""configctl against a real configd server (``python -m configd serve``) and a real Consul agent.

CliRunner tests check output and exit codes in-process; subprocess tests run the installed ``configctl``:
a 1,000-file import (and a second, all-unchanged run), ``--from-model``, ``watch`` with an editor-style atomic
save, ``tail``, export/import round trips and shell completion.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from typer.testing import CliRunner

from configctl import app
from configd_core.consul import ConsulGateway
from configd_core.layout import KeyLayout
from configd_core.records import ClientRecord, utcnow

REPO = Path(__file__).resolve().parents[2]
CONFIGCTL = Path(sys.executable).parent / "configctl"
TOKENS = {
    "admin": "cli-admin-token",
    "editor": "cli-editor-token",
    "reader": "cli-reader-token",
    "scoped": "cli-scoped-token",
}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "host": {"type": "string"},
        "tls": {"type": "object", "properties": {"enabled": {"type": "boolean"}}, "additionalProperties": False},
    },
    "required": ["port"],
    "additionalProperties": False,
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def cli_server(consul_addr: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real ``configd serve`` on a free port with its own key prefix; yields url and prefix."""
    workdir = tmp_path_factory.mktemp("configd-cli")
    tokens_file = workdir / "tokens.json"
    tokens = [
        {"name": "cli-admin", "token": TOKENS["admin"], "role": "admin", "namespaces": ["*"]},
        {"name": "cli-editor", "token": TOKENS["editor"], "role": "editor", "namespaces": ["*"]},
        {"name": "cli-reader", "token": TOKENS["reader"], "role": "reader", "namespaces": ["*"]},
        {"name": "cli-scoped", "token": TOKENS["scoped"], "role": "editor", "namespaces": ["scoped"]},
    ]
    tokens_file.write_text(json.dumps({"tokens": tokens}))
    port, prefix = _free_port(), f"cli-{uuid.uuid4().hex[:10]}"
    url = f"http://127.0.0.1:{port}"
    log = (workdir / "server.log").open("wb")
    command = [sys.executable, "-m", "configd", "serve", "--consul", consul_addr, "--port", str(port)]
    command += ["--prefix", prefix, "--tokens-file", str(tokens_file), "--log-level", "warning"]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"configd serve did not come up: {(workdir / 'server.log').read_text()}")
            time.sleep(0.1)
        yield {"url": url, "prefix": prefix}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def cli(server: dict[str, str], *args: str, token: str = "admin", input: str | None = None) -> Any:
    env = {"CONFIGD_URL": server["url"], "CONFIGD_TOKEN": TOKENS.get(token, token), "COLUMNS": "200"}
    return CliRunner(env=env).invoke(app, list(args), input=input)


def run_configctl(
    server: dict[str, str], *args: str, cwd: Path = REPO, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONFIGD_URL": server["url"], "CONFIGD_TOKEN": TOKENS["admin"], "COLUMNS": "120"}
    return subprocess.run([str(CONFIGCTL), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def ns() -> str:
    return f"ns-{uuid.uuid4().hex[:8]}"


def write_json(path: Path, value: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return path


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


# --- CliRunner: the everyday commands -----------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_push_get_ls_history_diff_rollback(cli_server: dict[str, str], tmp_path: Path) -> None:
    space = ns()
    ref = f"{space}/web"
    schema_file = write_json(tmp_path / "schema.json", SCHEMA)
    result = cli(cli_server, "schema", "push", ref, str(schema_file), "-m", "first schema")
    assert result.exit_code == 0, result.output
    assert f"{ref}: schema created v1" in result.stdout
    assert "unchanged at v1" in cli(cli_server, "schema", "push", ref, str(schema_file)).stdout
    assert json.loads(cli(cli_server, "schema", "get", ref).stdout) == SCHEMA

    v1 = write_json(tmp_path / "v1.json", {"port": 8080, "host": "a"})
    result = cli(cli_server, "push", ref, str(v1), "-m", "first", "--expected-version", "0")
    assert result.exit_code == 0, result.output
    assert f"{ref}: created v1" in result.stdout
    result = cli(cli_server, "push", ref, "-", "-m", "from stdin", "--json", input='{"port": 9090, "host": "a"}')
    assert result.exit_code == 0, result.output
    pushed = json.loads(result.stdout)
    assert (pushed["status"], pushed["version"], pushed["message"]) == ("created", 2, "from stdin")
    again = cli(cli_server, "push", ref, "-", input='{"host": "a", "port": 9090}')
    assert again.exit_code == 0 and f"{ref}: unchanged at v2" in again.stdout

    got = cli(cli_server, "get", ref)
    assert got.exit_code == 0 and json.loads(got.stdout) == {"port": 9090, "host": "a"}
    assert json.loads(cli(cli_server, "get", ref, "--version", "1").stdout) == {"port": 8080, "host": "a"}
    record = json.loads(cli(cli_server, "get", ref, "--json").stdout)
    assert record["version"] == 2 and record["data"]["port"] == 9090

    listing = cli(cli_server, "ls")
    assert listing.exit_code == 0 and space in listing.stdout
    configs = cli(cli_server, "ls", space)
    assert configs.exit_code == 0 and "web" in configs.stdout and "v2" in configs.stdout
    assert json.loads(cli(cli_server, "ls", space, "--json").stdout)["configs"][0]["name"] == "web"

    history = cli(cli_server, "history", ref)
    assert history.exit_code == 0 and "2 version(s)" in history.stdout and "from stdin" in history.stdout
    page = json.loads(cli(cli_server, "history", ref, "--json").stdout)
    assert [v["version"] for v in page["versions"]] == [2, 1]

    diff = cli(cli_server, "diff", ref, "1", "2")
    assert diff.exit_code == 0
    assert '-  "port": 8080' in diff.stdout and '+  "port": 9090' in diff.stdout
    assert "~ /port: 8080 → 9090" in diff.stdout
    local = write_json(tmp_path / "local.json", {"port": 9090, "host": "b", "tls": {"enabled": True}})
    file_diff = json.loads(cli(cli_server, "diff", ref, str(local), "--json").stdout)
    assert {(c["op"], c["path"]) for c in file_diff["changes"]} == {("replace", "/host"), ("add", "/tls")}
    assert json.loads(cli(cli_server, "diff", ref, "1", "--json").stdout)["to"] == 2

    rolled = cli(cli_server, "rollback", ref, "--to", "1", "-m", "back to 8080")
    assert rolled.exit_code == 0, rolled.output
    assert f"{ref}: created v3" in rolled.stdout
    assert json.loads(cli(cli_server, "get", ref).stdout)["port"] == 8080
    page = json.loads(cli(cli_server, "history", ref, "--json").stdout)
    assert page["versions"][0]["rollback_of"] == 1


@pytest.mark.timeout(60)
def test_failures_map_to_exit_codes_with_one_line(cli_server: dict[str, str], tmp_path: Path) -> None:
    space = ns()
    ref = f"{space}/api"
    write_json(tmp_path / "s.json", SCHEMA)
    assert cli(cli_server, "schema", "push", ref, str(tmp_path / "s.json")).exit_code == 0
    good = write_json(tmp_path / "good.json", {"port": 1})
    bad = write_json(tmp_path / "bad.json", {"port": 0, "tls": {"enabled": "yes"}, "extra": True})

    no_schema = cli(cli_server, "push", f"{space}/unregistered", str(good))
    assert no_schema.exit_code == 4 and one_line(no_schema.stderr).startswith("not found:")

    invalid = cli(cli_server, "push", ref, str(bad))
    assert invalid.exit_code == 1
    line = one_line(invalid.stderr)
    assert line.startswith("validation failed:") and "/port" in line and "/tls/enabled" in line
    as_json = cli(cli_server, "push", ref, str(bad), "--json")
    assert as_json.exit_code == 1
    doc = json.loads(as_json.stdout)
    assert doc["error"] == "ValidationFailed" and {"/port", "/tls/enabled"} <= {e["path"] for e in doc["errors"]}
    assert doc["request"]["status"] == 422 and doc["request"]["method"] == "PUT"

    assert cli(cli_server, "push", ref, str(good)).exit_code == 0
    conflict = cli(cli_server, "push", ref, "-", "--expected-version", "0", input='{"port": 2}')
    assert conflict.exit_code == 3 and one_line(conflict.stderr).startswith("conflict:")
    conflict_doc = json.loads(
        cli(cli_server, "push", ref, "-", "--expected-version", "7", "--json", input='{"port": 2}').stdout
    )
    assert (conflict_doc["expected"], conflict_doc["actual"]) == (7, 1)

    assert cli(cli_server, "get", f"{space}/nothing").exit_code == 4
    assert cli(cli_server, "get", ref, "--version", "99").exit_code == 4
    assert cli(cli_server, "ls", ns()).exit_code == 4
    assert cli(cli_server, "rollback", ref, "--to", "42").exit_code == 4
    assert cli(cli_server, "schema", "get", f"{space}/nothing").exit_code == 4

    for token in ("wrong-token", ""):
        denied = cli(cli_server, "ls", token=token)
        assert denied.exit_code == 6 and one_line(denied.stderr).startswith("not authorized:")
    reader = cli(cli_server, "push", ref, str(good), token="reader")
    assert reader.exit_code == 6
    scoped = cli(cli_server, "push", ref, str(good), token="scoped")
    assert scoped.exit_code == 6
    assert cli(cli_server, "get", ref, token="reader").exit_code == 0

    # nothing above changed the head
    assert json.loads(cli(cli_server, "history", ref, "--json").stdout)["total"] == 1


@pytest.mark.timeout(60)
def test_dry_run_and_server_validate_write_nothing(cli_server: dict[str, str], tmp_path: Path) -> None:
    ref = f"{ns()}/svc"
    write_json(tmp_path / "s.json", SCHEMA)
    assert cli(cli_server, "schema", "push", ref, str(tmp_path / "s.json")).exit_code == 0
    assert cli(cli_server, "push", ref, "-", input='{"port": 80}').exit_code == 0
    candidate = write_json(tmp_path / "c.json", {"port": 443, "tls": {"enabled": True}})
    dry = cli(cli_server, "push", ref, str(candidate), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "dry run against head v1" in dry.stdout and '+  "port": 443' in dry.stdout
    assert "+ /tls" in dry.stdout and "valid; nothing written" in dry.stdout
    validated = json.loads(cli(cli_server, "validate", ref, str(candidate), "--json").stdout)
    assert validated["valid"] is True and validated["head_version"] == 1
    bad = write_json(tmp_path / "bad.json", {"port": "https"})
    rejected = cli(cli_server, "validate", ref, str(bad))
    assert rejected.exit_code == 1 and "/port" in one_line(rejected.stderr)
    assert cli(cli_server, "push", ref, str(bad), "--dry-run", "--json").exit_code == 1
    assert json.loads(cli(cli_server, "history", ref, "--json").stdout)["total"] == 1


@pytest.mark.timeout(60)
def test_status_lists_client_instances(cli_server: dict[str, str], consul_addr: str) -> None:
    space = ns()
    ref = f"{space}/svc"
    schema = json.dumps(SCHEMA)
    assert cli(cli_server, "schema", "push", ref, "-", input=schema).exit_code == 0
    assert cli(cli_server, "push", ref, "-", input='{"port": 1}').exit_code == 0
    assert cli(cli_server, "push", ref, "-", input='{"port": 2}').exit_code == 0
    layout = KeyLayout(prefix=cli_server["prefix"])
    record = ClientRecord(
        instance="inst-1",
        application="billing",
        host="h1",
        pid=42,
        started_at=utcnow(),
        updated_at=utcnow(),
        applied={"svc": 1},
    )
    with ConsulGateway(consul_addr) as gateway:
        gateway.put(layout.client(space, "inst-1"), record.to_bytes())
    result = cli(cli_server, "status", space)
    assert result.exit_code == 0, result.output
    assert "1 client instance(s)" in result.stdout and "inst-1" in result.stdout and "billing" in result.stdout
    assert "Consul KV: " in result.stdout and "versions 2" in result.stdout  # issue 18: keys and bytes
    doc = json.loads(cli(cli_server, "status", space, "--json").stdout)
    config = doc["clients"][0]["configs"][0]
    assert (config["name"], config["applied_version"], config["head_version"]) == ("svc", 1, 2)
    assert doc["storage"]["by_kind"]["versions"]["keys"] == 2 and doc["storage"]["bytes"] > 0


# --- subprocess: the installed configctl --------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_import_1000_files_then_all_unchanged(cli_server: dict[str, str], tmp_path: Path) -> None:
    spaces = [ns() for _ in range(5)]
    tree = tmp_path / "tree"
    for space in spaces:  # 5 namespaces x 100 configs, each with its schema beside it: 1,000 files
        for i in range(100):
            write_json(tree / space / f"svc-{i:03d}.schema.json", SCHEMA)
            write_json(tree / space / f"svc-{i:03d}.json", {"port": 1000 + i, "host": f"h{i}"})
    assert len(list(tree.glob("*/*.json"))) == 1000
    started = time.perf_counter()
    first = run_configctl(cli_server, "import", str(tree))
    first_seconds = time.perf_counter() - started
    print(f"\nimport of 1,000 files (500 schemas + 500 configs), all new: {first_seconds:.2f}s")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "plan: 1000 to create, 0 to update, 0 unchanged" in first.stdout
    assert "applied: 1000 created, 0 updated, 0 failed" in first.stdout
    assert "1000/1000" in first.stderr  # the progress bar's final state (stderr is not a terminal here)
    started = time.perf_counter()
    second = run_configctl(cli_server, "import", str(tree))
    print(f"second import of the same 1,000 files (all unchanged): {time.perf_counter() - started:.2f}s")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "plan: 0 to create, 0 to update, 1000 unchanged" in second.stdout
    assert "applied:" not in second.stdout
    listing = json.loads(run_configctl(cli_server, "ls", spaces[0], "--json").stdout)
    assert len(listing["configs"]) == 100


class LineReader:
    """Collects a subprocess stream's lines on a thread, so a test can wait for one without blocking forever."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def expect(self, needle: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(line)
            if needle in line:
                return line
        raise AssertionError(f"no line with {needle!r} within {timeout}s; saw {self.seen}")


def start_configctl(server: dict[str, str], *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CONFIGD_URL": server["url"], "CONFIGD_TOKEN": TOKENS["admin"], "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [str(CONFIGCTL), *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def atomic_save(path: Path, value: Any) -> None:
    """What editors do: write a temp file beside the target, then rename it over the target."""
    temp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:6]}"
    temp.write_text(json.dumps(value, indent=2))
    os.replace(temp, path)


@pytest.mark.timeout(90)
def test_watch_pushes_atomic_saves_and_reports_rejections(cli_server: dict[str, str], tmp_path: Path) -> None:
    space = ns()
    folder = tmp_path / "watched" / space
    folder.mkdir(parents=True)
    proc = start_configctl(cli_server, "watch", str(tmp_path / "watched"), "--json", "--debounce", "0.2")
    try:
        assert proc.stdout is not None and proc.stderr is not None
        out, err = LineReader(proc.stdout), LineReader(proc.stderr)
        err.expect("watching")
        atomic_save(folder / "app.schema.json", SCHEMA)
        schema_event = json.loads(out.expect('"kind": "schema"'))
        assert (schema_event["status"], schema_event["version"], schema_event["name"]) == ("accepted", 1, "app")
        atomic_save(folder / "app.json", {"port": 8000})
        accepted = json.loads(out.expect('"accepted"'))
        assert (accepted["kind"], accepted["namespace"], accepted["version"]) == ("config", space, 1)
        atomic_save(folder / "app.json", {"port": 0, "tls": {"enabled": 1}})
        rejected = json.loads(out.expect('"rejected"'))
        assert rejected["exit_code"] == 1 and {e["path"] for e in rejected["errors"]} == {"/port", "/tls/enabled"}
        atomic_save(folder / "app.json", {"port": 8001})
        assert json.loads(out.expect('"accepted"'))["version"] == 2
    finally:
        stop(proc)
    assert json.loads(cli(cli_server, "get", f"{space}/app").stdout) == {"port": 8001}
    # and the human form, one line per save
    proc = start_configctl(cli_server, "watch", str(tmp_path / "watched"))
    try:
        assert proc.stdout is not None and proc.stderr is not None
        out, err = LineReader(proc.stdout), LineReader(proc.stderr)
        err.expect("watching")
        atomic_save(folder / "app.json", {"port": "x"})
        assert "/port" in out.expect(f"{space}/app: rejected — validation failed")
        atomic_save(folder / "app.json", {"port": 8002})
        out.expect(f"{space}/app: accepted v3")
    finally:
        stop(proc)


@pytest.mark.timeout(60)
def test_tail_follows_new_versions_with_diffs(cli_server: dict[str, str]) -> None:
    ref = f"{ns()}/svc"
    assert cli(cli_server, "schema", "push", ref, "-", input=json.dumps(SCHEMA)).exit_code == 0
    assert cli(cli_server, "push", ref, "-", input='{"port": 1}').exit_code == 0
    proc = start_configctl(cli_server, "tail", ref, "--interval", "0.2", "--count", "2", "--json")
    try:
        assert proc.stderr is not None
        LineReader(proc.stderr).expect("following")
        assert cli(cli_server, "push", ref, "-", "-m", "two", input='{"port": 2}').exit_code == 0
        assert cli(cli_server, "push", ref, "-", "-m", "three", input='{"port": 3, "host": "h"}').exit_code == 0
        stdout, _ = proc.communicate(timeout=30)
    finally:
        stop(proc)
    assert proc.returncode == 0
    events = [json.loads(line) for line in stdout.splitlines()]
    assert [(e["version"], e["message"]) for e in events] == [(2, "two"), (3, "three")]
    assert events[0]["diff"]["changes"] == [{"op": "replace", "path": "/port", "old": 1, "new": 2}]
    assert {c["path"] for c in events[1]["diff"]["changes"]} == {"/port", "/host"}


@pytest.mark.timeout(60)
def test_schema_push_from_model(cli_server: dict[str, str]) -> None:
    ref = f"{ns()}/payments"
    spec = "examples.settings_models:PaymentsSettings"
    pushed = run_configctl(cli_server, "schema", "push", ref, "--from-model", spec, "-m", "from the app's class")
    assert pushed.returncode == 0, pushed.stderr
    assert f"{ref}: schema created v1" in pushed.stdout
    stored = json.loads(run_configctl(cli_server, "schema", "get", ref).stdout)
    assert stored["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert stored["additionalProperties"] is False and "timeout_ms" in stored["properties"]
    example = REPO / "examples" / "configs" / "payments" / "service.json"
    accepted = run_configctl(cli_server, "push", ref, str(example))
    assert accepted.returncode == 0, accepted.stderr
    bad = json.loads(example.read_text()) | {"timeout_ms": 5, "surprise": True}
    rejected = subprocess.run(
        [str(CONFIGCTL), "push", ref, "-"],
        input=json.dumps(bad),
        env={**os.environ, "CONFIGD_URL": cli_server["url"], "CONFIGD_TOKEN": TOKENS["admin"]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rejected.returncode == 1
    assert "/timeout_ms" in rejected.stderr and "surprise" in rejected.stderr
    again = run_configctl(cli_server, "schema", "push", ref, "--from-model", spec)
    assert again.returncode == 0 and "schema unchanged at v1" in again.stdout


@pytest.mark.timeout(90)
def test_export_then_import_round_trip_with_an_update_plan(cli_server: dict[str, str], tmp_path: Path) -> None:
    space = ns()
    source = tmp_path / "source"
    for name, port in [("a", 1), ("b", 2), ("c", 3)]:
        write_json(source / space / f"{name}.schema.json", SCHEMA)
        write_json(source / space / f"{name}.json", {"port": port})
    assert run_configctl(cli_server, "import", str(source)).returncode == 0
    exported = tmp_path / "exported"
    result = run_configctl(cli_server, "export", str(exported), space)
    assert result.returncode == 0, result.stderr
    assert "exported 3 config(s), 6 file(s)" in result.stdout
    assert json.loads((exported / space / "b.json").read_text()) == {"port": 2}
    assert json.loads((exported / space / "b.schema.json").read_text()) == SCHEMA
    unchanged = run_configctl(cli_server, "import", str(exported))
    assert "plan: 0 to create, 0 to update, 6 unchanged" in unchanged.stdout

    write_json(exported / space / "b.json", {"port": 20, "host": "new"})
    strict = SCHEMA | {"required": ["port", "host"]}  # the current head {"port": 3} would fail it
    write_json(exported / space / "c.schema.json", strict)
    write_json(exported / space / "c.json", {"port": 3, "host": "c"})
    planned = run_configctl(cli_server, "import", str(exported), "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert "plan: 0 to create, 3 to update, 3 unchanged" in planned.stdout
    assert f"~ update {space}/b (from v1)" in planned.stdout and '+  "port": 20' in planned.stdout
    assert f"~ update schema {space}/c (from v1)" in planned.stdout
    assert "dry run: nothing written" in planned.stdout
    assert json.loads(cli(cli_server, "get", f"{space}/b").stdout) == {"port": 2}
    applied = run_configctl(cli_server, "import", str(exported), "--json")
    assert applied.returncode == 0, applied.stdout
    report = json.loads(applied.stdout)
    assert report["plan"] == {"create": 0, "update": 3, "unchanged": 3} and report["failures"] == []
    # The stricter schema and the config that satisfies it land together (one transaction): no force needed.
    assert sorted((a["kind"], a["ref"], a["status"], a["version"], a["forced"]) for a in report["applied"]) == [
        ("config", f"{space}/b", "created", 2, False),
        ("config", f"{space}/c", "created", 2, False),
        ("schema", f"{space}/c", "created", 2, False),
    ]
    assert json.loads(cli(cli_server, "get", f"{space}/c").stdout) == {"port": 3, "host": "c"}

    write_json(exported / space / "a.json", {"port": "not a number"})
    failed = run_configctl(cli_server, "import", str(exported))
    assert failed.returncode == 1 and "/port" in failed.stderr
    assert "applied: 0 created, 0 updated, 1 failed" in failed.stdout

    # A refused config keeps its schema out too (they land together); the rest of the tree still lands.
    write_json(exported / space / "a.json", {"port": 5})  # passes the current schema, fails the new one
    write_json(exported / space / "a.schema.json", SCHEMA | {"required": ["port", "host"]})
    write_json(exported / space / "b.json", {"port": 21, "host": "newer"})
    partial = run_configctl(cli_server, "import", str(exported), "--json")
    assert partial.returncode == 1
    report = json.loads(partial.stdout)
    assert [(a["ref"], a["version"]) for a in report["applied"]] == [(f"{space}/b", 3)]
    assert report["skipped"] == [{"kind": "schema", "ref": f"{space}/a"}]
    assert [(f["error"], f["exit_code"], [e["path"] for e in f["errors"]]) for f in report["failures"]] == [
        ("ValidationFailed", 1, ["/"])
    ]
    assert "'host' is a required property" in report["failures"][0]["errors"][0]["message"]
    assert json.loads(cli(cli_server, "schema", "get", f"{space}/a").stdout)["required"] == ["port"]


def test_shell_completion(cli_server: dict[str, str]) -> None:
    # typer detects the shell from the parent process (``--show-completion`` takes no value since typer 0.2x),
    # so the command runs under bash, as a user's would; the trailing command keeps bash from exec'ing it.
    script = subprocess.run(
        ["bash", "-c", f'"{CONFIGCTL}" --show-completion; exit $?'], capture_output=True, text=True, timeout=30
    )
    assert script.returncode == 0 and "_CONFIGCTL_COMPLETE=complete_bash" in script.stdout
    env = {**os.environ, "_CONFIGCTL_COMPLETE": "complete_bash", "COMP_WORDS": "configctl sch", "COMP_CWORD": "1"}
    completed = subprocess.run([str(CONFIGCTL)], env=env, capture_output=True, text=True, timeout=30)
    assert completed.stdout.split() == ["schema"]
    env |= {"COMP_WORDS": "configctl schema ", "COMP_CWORD": "2"}
    completed = subprocess.run([str(CONFIGCTL)], env=env, capture_output=True, text=True, timeout=30)
    assert set(completed.stdout.split()) == {"push", "get"}
