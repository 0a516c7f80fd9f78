"""Secret fields end to end (issue 14): a real Consul agent, a real ``configd serve`` holding the namespace keys,
the SDK in process with an application key file, ``configctl`` and ``configd keys`` as subprocesses, and the UI's
pages fetched over HTTP with a signed-in session.

The plain values are pushed through every write path (push, rollback, import), then searched for everywhere a
reader, an operator or an attacker could look: the whole Consul KV tree, every API response for the reader,
editor and admin, every UI page, the audit log, ``configctl get/export/diff`` output, the SDK's cache directory
and the captured logs. Only the application's settings object holds them.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from typer.testing import CliRunner

from configctl import app
from configd.services.keys import create_key, export_keys, rotate_key
from configd_client import ConfigClient
from configd_core.consul import ConsulGateway
from configd_core.errors import SecretUnreadable
from configd_core.records import HeadRecord, document_sha256
from configd_core.secrets import ENVELOPE_KEY, KEYS_FILE_ENV, MASK, DataKey, KeyRing, open_document
from tests.conftest import ServerProcess, start_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

BIN = Path(sys.executable).parent
PW_1, PW_2, PW_3, PW_BAD = "pw-one-Zq81xK", "pw-two-Lr55vN", "pw-three-Yt07cA", "short7!"
TOKEN_1, TOKEN_IMPORTED = "tok-api-Hh3m9Q", "pw-imported-Wp42dE"
ALL_PLAIN = (PW_1, PW_2, PW_3, PW_BAD, TOKEN_1, TOKEN_IMPORTED)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "host": {"type": "string"},
        "password": {"type": "string", "format": "password", "writeOnly": True, "minLength": 8},
        "api": {"$ref": "#/$defs/Api"},
    },
    "$defs": {"Api": {"type": "object", "properties": {"token": {"type": "string", "x-configd-secret": True}}}},
    "required": ["host", "password"],
    "additionalProperties": False,
}


class Api(BaseModel):
    token: SecretStr | None = None


class DbSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    host: str = "localhost"
    password: SecretStr = SecretStr("")
    api: Api = Api()


def configd_keys(*args: str, keys_file: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "configd", "keys", *args, "--keys-file", str(keys_file)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def keyed(consul_addr: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str, Path]]:
    """A server with a key file holding one namespace's key, and that namespace."""
    workdir = tmp_path_factory.mktemp("secrets")
    namespace = f"sec-{uuid.uuid4().hex[:8]}"
    keys_file = workdir / "server-keys.json"
    out = configd_keys("create", namespace, keys_file=keys_file)
    assert f"for namespace {namespace}" in out
    listed = configd_keys("list", keys_file=keys_file)
    assert namespace in listed and "active" in listed and KeyRing.from_file(keys_file).active(namespace).kid in listed
    server = start_server(consul_addr, workdir, env={KEYS_FILE_ENV: str(keys_file)})
    try:
        with server.client("admin") as admin:
            assert admin.put(f"/api/v1/schemas/{namespace}/db", json=SCHEMA).status_code == 201
        yield server, namespace, keys_file
    finally:
        server.stop()


def app_keys(server_keys: Path, namespace: str, out: Path) -> Path:
    """An application's key file (``configd keys export``, in process: the CLI runs in the rotation test)."""
    export_keys(server_keys, [namespace], out)
    return out


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    event = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return True
        event.wait(0.02)
    return bool(predicate())


def configctl(server: ServerProcess, *args: str, token: str = "reader", subprocess_run: bool = False) -> str:
    """configctl's output: the installed command in a subprocess, or its app in process (CliRunner)."""
    env = {"CONFIGD_URL": server.base_url, "CONFIGD_TOKEN": server.tokens[token], "COLUMNS": "200"}
    if not subprocess_run:
        result = CliRunner(env=env).invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result.output
    done = subprocess.run(
        [str(BIN / "configctl"), *args], capture_output=True, text=True, timeout=60, env={**os.environ, **env}
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def kv_dump(gateway: ConsulGateway, prefix: str) -> str:
    _, entries = gateway.list(prefix, consistent=True)
    return "\n".join(f"{e.key}={e.value.decode(errors='replace')}" for e in entries)


def assert_no_plain(where: str, text: str) -> None:
    hits = [value for value in ALL_PLAIN if value in text]
    assert not hits, f"plain secret value(s) {hits} found in {where}"


_CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


def test_secrets_never_leave_the_application(
    keyed: tuple[ServerProcess, str, Path],
    gateway: ConsulGateway,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server, ns, server_keys = keyed
    monkeypatch.setenv(KEYS_FILE_ENV, str(app_keys(server_keys, ns, tmp_path / "app-keys.json")))
    responses: list[str] = []
    editor = server.client("editor")
    base = f"/api/v1/configs/{ns}/db"

    def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
        answer = editor.request(method, path, **kwargs)
        responses.append(answer.text)
        return answer

    # push: created, then the same secret again is unchanged (randomized ciphertext, equal fingerprints)
    v1 = {"host": "db1", "password": PW_1, "api": {"token": TOKEN_1}}
    assert call("PUT", base, json={"data": v1}).status_code == 201
    again = call("PUT", base, json={"data": v1})
    assert again.status_code == 200 and again.json()["status"] == "unchanged"
    # changing only a secret is a new version
    assert call("PUT", base, json={"data": {**v1, "password": PW_2}}).json()["version"] == 2
    # the mask keeps the current secret: get → edit → push round-trips without the value
    shown = call("GET", base).json()["data"]
    assert shown == {"host": "db1", "password": MASK, "api": {"token": MASK}}
    assert call("PUT", base, json={"data": {**shown, "host": "db3"}}).json()["version"] == 3
    # a dry run with a new secret: the diff says "secret changed", never the value
    dry = call("POST", f"{base}/validate", json={"data": {**shown, "host": "db3", "password": PW_3}}).json()
    assert dry["valid"] and [c["path"] for c in dry["changes"]] == ["/password"]
    # a secret that fails the schema: 422 whose errors never show it, nothing written
    before = kv_dump(gateway, server.prefix + "/heads")
    bad = call("PUT", base, json={"data": {**shown, "password": PW_BAD}})
    assert bad.status_code == 422 and bad.json()["errors"][0]["path"] == "/password"
    assert kv_dump(gateway, server.prefix + "/heads") == before
    # rollback: the old version's ciphertext is opened and sealed again
    rolled = call("POST", f"{base}/rollback", json={"to_version": 1})
    assert rolled.status_code == 201 and rolled.json()["version"] == 4
    # import: a plain config is encrypted like a push
    items = [{"kind": "config", "namespace": ns, "name": "imported", "document": {"password": TOKEN_IMPORTED}}]
    with server.client("admin") as admin:
        assert admin.put(f"/api/v1/schemas/{ns}/imported", json=SCHEMA | {"required": ["password"]}).status_code == 201
        imported = admin.post("/api/v1/import", json={"items": items})
        responses.append(imported.text)
        assert imported.status_code == 200, imported.text

    # the application: decrypted in process, SecretStr as usual; its cache holds ciphertext
    cache = tmp_path / "cache"
    with ConfigClient(server.consul_addr, prefix=server.prefix, cache_dir=cache, application="sec-test") as client:
        live = client.settings(DbSettings, f"{ns}/db", timeout=10)
        assert live.version == 4
        assert live.current.password.get_secret_value() == PW_1
        assert live.current.api.token is not None and live.current.api.token.get_secret_value() == TOKEN_1
        other = client.settings(DbSettings, f"{ns}/imported", timeout=10)
        assert other.current.password.get_secret_value() == TOKEN_IMPORTED
        assert wait_for(lambda: len(list(cache.rglob("*.json"))) >= 2)
    cached = "\n".join(p.read_text() for p in cache.rglob("*") if p.is_file())
    assert ENVELOPE_KEY in cached
    assert_no_plain("the SDK's cache directory", cached)

    # every API response, for every role
    for role in ("reader", "editor", "admin"):
        with server.client(role) as http:
            for path in (
                "/api/v1/configs",
                f"/api/v1/configs/{ns}",
                base,
                f"{base}?sealed=true",
                f"{base}/versions",
                *(f"{base}/versions/{v}" for v in range(1, 5)),
                *(f"{base}/diff?from={a}&to={b}" for a in range(1, 5) for b in range(1, 5) if a != b),
                f"/api/v1/configs/{ns}/imported",
                f"/api/v1/audit?namespace={ns}&limit=100",
                f"/api/v1/schemas/{ns}/db",
            ):
                answer = http.get(path)
                assert answer.status_code == 200, (path, answer.text)
                responses.append(answer.text)
    diff = editor.get(f"{base}/diff", params={"from": 1, "to": 2}).json()
    assert [(c["path"], c["new"]) for c in diff["changes"]] == [("/password", f"{MASK} (secret changed)")]
    assert editor.get(f"{base}/diff", params={"from": 1, "to": 4}).json()["changes"] == []
    assert_no_plain("API responses", "\n".join(responses))

    # every UI page, signed in
    ui = httpx.Client(base_url=server.base_url, headers={"Origin": server.base_url}, timeout=30)
    assert ui.post("/ui/login", data={"token": server.tokens["reader"], "next": "/ui/"}).status_code == 303
    pages = [
        ui.get(path).text
        for path in (
            "/ui/",
            f"/ui/configs/{ns}",
            f"/ui/configs/{ns}/db",
            *(f"/ui/configs/{ns}/db?version={v}" for v in range(1, 5)),
            f"/ui/configs/{ns}/db/diff?from=1&to=2",
            f"/ui/configs/{ns}/db/diff?from=2&to=3",
            f"/ui/audit?namespace={ns}",
        )
    ]
    assert "secret changed" in pages[7]
    assert_no_plain("UI pages", "\n".join(pages))

    # configctl get / export / diff, and the exported tree
    exported = tmp_path / "export"
    out = configctl(server, "get", f"{ns}/db") + configctl(server, "diff", f"{ns}/db", "1", "2")
    out += configctl(server, "export", str(exported), ns, subprocess_run=True)
    tree = "\n".join(p.read_text() for p in exported.rglob("*.json"))
    assert ENVELOPE_KEY in tree and MASK in out
    assert_no_plain("configctl output and the exported tree", out + tree)
    # the export re-imports as unchanged: the ciphertext carries the same fingerprints
    assert "unchanged" in configctl(server, "import", str(exported), "--dry-run", token="admin")

    # the whole Consul KV tree, and every log
    assert_no_plain("Consul KV", kv_dump(gateway, ""))
    assert_no_plain("the server's log", server.log_path.read_text(errors="replace"))
    assert_no_plain("captured logs", "\n".join(r.getMessage() for r in caplog.records))
    editor.close()
    ui.close()


def _head(gateway: ConsulGateway, key: str) -> tuple[HeadRecord, int]:
    entry = gateway.get(key)
    assert entry is not None
    return HeadRecord.from_bytes(entry.value), entry.modify_index


def _forge(gateway: ConsulGateway, key: str, data: dict[str, Any]) -> None:
    """What an attacker with Consul write access could do: a new head version carrying ``data``."""
    head, index = _head(gateway, key)
    forged = head.model_copy(update={"version": head.version + 1, "sha256": document_sha256(data), "data": data})
    gateway.put(key, forged.to_bytes(), cas=index)


def test_bad_keys_and_tampering_are_clear_errors_and_the_app_keeps_running(
    keyed: tuple[ServerProcess, str, Path], gateway: ConsulGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, ns, server_keys = keyed
    name = f"t{uuid.uuid4().hex[:6]}"
    with server.client("admin") as admin:
        assert admin.put(f"/api/v1/schemas/{ns}/{name}", json=SCHEMA).status_code == 201
        assert admin.put(f"/api/v1/configs/{ns}/{name}", json={"data": {"host": "h", "password": PW_1}}).is_success
        sealed = admin.get(f"/api/v1/configs/{ns}/{name}?sealed=true").json()["data"]
    app_file = app_keys(server_keys, ns, tmp_path / "app-keys.json")
    good_ring = app_file.read_text()
    monkeypatch.setenv(KEYS_FILE_ENV, str(app_file))
    errors: list[Exception] = []
    head_key = server.layout.head(ns, name)
    with ConfigClient(server.consul_addr, prefix=server.prefix, cache=False, register=False) as client:
        live = client.settings(DbSettings, f"{ns}/{name}", timeout=10)
        live.on_error(errors.append)
        assert live.current.password.get_secret_value() == PW_1

        def push_and_expect_error(password: str, *needles: str) -> None:
            count = len(errors)
            with server.client("editor") as editor:
                pushed = editor.put(f"/api/v1/configs/{ns}/{name}", json={"data": {"host": "h", "password": password}})
            assert pushed.status_code == 201
            assert wait_for(lambda: len(errors) > count), "no error reported to on_error"
            live.callbacks_idle(5)
            message = str(errors[-1])
            assert isinstance(errors[-1], SecretUnreadable)
            assert all(n in message for n in needles), message
            assert live.current.password.get_secret_value() == PW_1  # the last good settings stay

        kid = KeyRing.from_file(server_keys).active(ns).kid
        # a wrong key: the same key id, other bytes
        body = json.loads(good_ring)
        body["namespaces"][ns]["keys"][0]["key"] = base64.b64encode(os.urandom(32)).decode()
        app_file.write_text(json.dumps(body))
        push_and_expect_error(PW_2, kid, ns)
        # a missing key: the application's file holds no key for the namespace
        app_file.write_text(json.dumps({"format": "configd-keys/1", "namespaces": {}}))
        push_and_expect_error(PW_3, kid, ns)
        app_file.write_text(good_ring)

        # a tampered ciphertext, and a ciphertext copied to another field, written straight into Consul
        current = json.loads(json.dumps(sealed))
        envelope = current["password"][ENVELOPE_KEY]
        raw = bytearray(base64.b64decode(envelope["ct"]))
        raw[0] ^= 1
        envelope["ct"] = base64.b64encode(bytes(raw)).decode()
        count = len(errors)
        _forge(gateway, head_key, current)
        assert wait_for(lambda: len(errors) > count)
        assert "does not decrypt" in str(errors[-1]) and kid in str(errors[-1])
        moved = {"host": "h", "password": "x" * 8, "api": {"token": sealed["password"]}}
        count = len(errors)
        _forge(gateway, head_key, moved)
        assert wait_for(lambda: len(errors) > count)
        assert "/api/token" in str(errors[-1])
        assert live.current.password.get_secret_value() == PW_1

    # an application starting without the key: a clear error at start-up, naming the key id and the namespace
    app_file.write_text(json.dumps({"format": "configd-keys/1", "namespaces": {}}))
    starting = ConfigClient(server.consul_addr, prefix=server.prefix, cache=False, register=False)
    with starting, pytest.raises(SecretUnreadable, match=rf"no key '.+' for namespace '{ns}'"):
        starting.settings(DbSettings, f"{ns}/{name}", timeout=1)

    # through the server: an import carrying a moved, a tampered or a foreign ciphertext is refused, nothing written
    other = tmp_path / "other-environment-keys.json"
    foreign_kid = create_key(other, ns).kid
    foreign = DataKey(ns, name, KeyRing.from_file(other).active(ns)).envelope("/password", PW_3)
    nokey_ns = f"{ns}-nokey"
    with server.client("admin") as admin:
        assert admin.put(f"/api/v1/schemas/{nokey_ns}/{name}", json=SCHEMA).status_code == 201
        assert admin.put(f"/api/v1/schemas/{ns}/{name}x", json=SCHEMA).status_code == 201
    before = kv_dump(gateway, server.prefix)
    for document, needle in (
        (
            {"host": "h", "password": "x" * 8, "api": {"token": sealed["password"]}},
            f"/api/token does not decrypt with key {kid!r}",
        ),
        (current, f"does not decrypt with key {kid!r}"),
        ({"host": "h", "password": foreign}, f"no key {foreign_kid!r} for namespace {ns!r}"),
    ):
        items = [{"kind": "config", "namespace": ns, "name": name, "document": document}]
        with server.client("admin") as admin:
            refused = admin.post("/api/v1/import", json={"items": items})
        assert refused.status_code == 422, refused.text
        assert needle in refused.json()["errors"][0]["message"], refused.text
        assert_no_plain("an import's refusal", refused.text)
    with server.client("editor") as editor:
        # a ciphertext copied to another config, pushed; a namespace the server holds no key for
        moved = editor.put(
            f"/api/v1/configs/{ns}/{name}x", json={"data": {"host": "h", "password": sealed["password"]}}
        )
        assert moved.status_code == 422 and f"/password does not decrypt with key {kid!r}" in moved.text
        nokey = editor.put(f"/api/v1/configs/{nokey_ns}/{name}", json={"data": {"host": "h", "password": PW_3}})
        assert nokey.status_code == 422 and f"namespace {nokey_ns!r} has no active key" in nokey.text
        assert_no_plain("a refused push", moved.text + nokey.text)
    after = kv_dump(gateway, server.prefix)
    # only audit entries of the refusals were written
    assert len(after.splitlines()) > len(before.splitlines())
    assert [line for line in after.splitlines() if "/audit/" not in line] == [
        line for line in before.splitlines() if "/audit/" not in line
    ]


def test_rotation_with_a_running_app(
    keyed: tuple[ServerProcess, str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _, server_keys = keyed
    # a namespace of its own, keyed while the server runs (it re-reads its key file)
    ns, name = f"rot-{uuid.uuid4().hex[:8]}", "db"
    create_key(server_keys, ns)
    with server.client("admin") as admin:
        assert admin.put(f"/api/v1/schemas/{ns}/{name}", json=SCHEMA).status_code == 201
        assert admin.put(f"/api/v1/configs/{ns}/{name}", json={"data": {"host": "h", "password": PW_1}}).is_success
    app_file = app_keys(server_keys, ns, tmp_path / "app-keys.json")
    monkeypatch.setenv(KEYS_FILE_ENV, str(app_file))
    editor = server.client("editor")
    with ConfigClient(server.consul_addr, prefix=server.prefix, cache=False, register=False) as client:
        live = client.settings(DbSettings, f"{ns}/{name}", timeout=10)
        old_kid = KeyRing.from_file(server_keys).active(ns).kid
        # rotate: the next key is staged and shipped to the app first, then activated; new writes use it
        assert "staged key" in configd_keys("rotate", ns, "--stage", keys_file=server_keys)
        app_keys(server_keys, ns, app_file)
        assert KeyRing.from_file(server_keys).active(ns).kid == old_kid
        rotate_key(server_keys, ns)
        new_kid = KeyRing.from_file(server_keys).active(ns).kid
        assert new_kid != old_kid
        pushed = editor.put(f"/api/v1/configs/{ns}/{name}", json={"data": {"host": "h", "password": PW_2}})
        assert pushed.status_code == 201
        assert live.wait_for_version(2, timeout=10)
        assert live.current.password.get_secret_value() == PW_2
        stored = editor.get(f"/api/v1/configs/{ns}/{name}?sealed=true").json()["data"]
        assert stored["password"][ENVELOPE_KEY]["kid"] == new_kid
        # old versions stay readable (with the old key the file keeps)
        v1 = editor.get(f"/api/v1/configs/{ns}/{name}/versions/1?sealed=true").json()["data"]
        assert v1["password"][ENVELOPE_KEY]["kid"] == old_kid
        assert open_document(KeyRing.from_file(app_file), ns, name, v1)["password"] == PW_1
        # rotate --rewrap: the head is written again (a new version, same values) under the newest key
        rotate_key(server_keys, ns, stage=True)
        app_keys(server_keys, ns, app_file)
        rewrap_env = {"CONFIGD_PREFIX": server.prefix, "CONSUL_HTTP_ADDR": server.consul_addr}
        out = configd_keys("rotate", ns, "--rewrap", keys_file=server_keys, env=rewrap_env)
        assert f"rewrapped {ns}/{name}: v3" in out
        newest = KeyRing.from_file(server_keys).active(ns).kid
        head = editor.get(f"/api/v1/configs/{ns}/{name}?sealed=true").json()
        assert head["version"] == 3 and head["data"]["password"][ENVELOPE_KEY]["kid"] == newest != new_kid
        assert live.wait_for_version(3, timeout=10)
        assert live.current.password.get_secret_value() == PW_2
        assert live.last_error is None
    editor.close()


def test_a_change_request_keeps_its_proposal_sealed_and_publishes_the_secret(
    keyed: tuple[ServerProcess, str, Path], gateway: ConsulGateway
) -> None:
    """Change requests are a write path too: the proposal is stored as a push would store it (sealed), reviewers
    see masks, and publishing lands the secret, still sealed, as the head."""
    server, namespace, keys_file = keyed
    name = f"cr-{uuid.uuid4().hex[:6]}"
    secret = "pw-proposed-Kd31sQ"
    with server.client("admin") as admin:
        assert admin.put(f"/api/v1/schemas/{namespace}/{name}", json=SCHEMA).status_code == 201
        assert (
            admin.put(f"/api/v1/configs/{namespace}/{name}", json={"data": {"host": "a", "password": PW_1}}).status_code
            == 201
        )
    with server.client("editor") as editor:
        proposed = editor.post(
            "/api/v1/change-requests",
            json={"namespace": namespace, "name": name, "data": {"host": "b", "password": secret}, "message": "rotate"},
        )
        assert proposed.status_code == 201, proposed.text
        request_id = proposed.json()["id"]
        stored = kv_dump(gateway, f"{server.prefix}/")
        assert secret not in stored and PW_1 not in stored  # the proposal rests sealed in Consul
        for path in (f"/api/v1/change-requests/{request_id}", "/api/v1/change-requests"):
            assert secret not in editor.get(path).text
    with server.client("admin") as admin:
        published = admin.post(f"/api/v1/change-requests/{request_id}/publish", json={})
        assert published.status_code == 200, published.text
        head = admin.get(f"/api/v1/configs/{namespace}/{name}").json()
    assert head["version"] == 2 and head["data"]["host"] == "b" and head["data"]["password"] != secret
    stored = kv_dump(gateway, f"{server.prefix}/")
    assert secret not in stored
    ring = KeyRing.from_file(keys_file)
    record, _ = _head(gateway, server.layout.head(namespace, name))
    assert open_document(ring, namespace, name, record.inline_data())["password"] == secret
