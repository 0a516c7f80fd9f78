"""Projections against the real server and Consul, read back with Consul's own CLI (`consul kv get`,
`consul watch -type=key` and `-type=keyprefix`): clients nobody here wrote."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from configctl._app import app
from configd.devagent import consul_binary
from configd.planning.projections import owner_flags
from configd_core.consul import ConsulGateway
from configd_core.records import pretty_json
from tests.api_support import rejected
from tests.conftest import ServerProcess, kv_tree

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "db": {
            "type": "object",
            "properties": {"host": {"type": "string"}, "password": {"type": "string", "writeOnly": True}},
        },
        "api_key": {"$ref": "#/$defs/secret"},
    },
    "$defs": {"secret": {"type": "string", "x-configd-secret": True}},
}
V1: dict[str, Any] = {"db": {"host": "db1", "password": "s3cret"}, "api_key": "k-1", "retries": 3, "tags": ["a", "b"]}
V2: dict[str, Any] = {"db": {"host": "db2", "password": "s3cret"}, "api_key": "k-1", "retries": 4}
PUBLIC_V1 = {"db": {"host": "db1"}, "retries": 3, "tags": ["a", "b"]}
PUBLIC_V2 = {"db": {"host": "db2"}, "retries": 4}


def consul(server: ServerProcess, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Consul's own CLI against the session's agent (CONSUL_HTTP_ADDR, as its docs say)."""
    return subprocess.run(
        [consul_binary(), *args],
        env={**os.environ, "CONSUL_HTTP_ADDR": server.consul_addr},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def kv_get(server: ServerProcess, key: str) -> str | None:
    """``consul kv get KEY``: the value as Consul's CLI prints it (None when the key does not exist)."""
    done = consul(server, "kv", "get", key)
    if done.returncode != 0:
        assert "No key exists" in done.stderr, done.stderr
        return None
    return done.stdout


def kv(gateway: ConsulGateway, key: str) -> str | None:
    """The value of ``key`` as text (None when it does not exist), read over the HTTP API."""
    entry = gateway.get(key)
    return entry.value.decode() if entry is not None else None


def cli(server: ServerProcess, *args: str, token: str = "admin") -> Any:
    env = {"CONFIGD_URL": server.base_url, "CONFIGD_TOKEN": server.tokens[token], "COLUMNS": "250"}
    return CliRunner(env=env).invoke(app, list(args))


def api(server: ServerProcess, method: str, path: str, body: Any = None, token: str = "admin") -> Any:
    with server.client(token) as http:
        return http.request(method, path, json=body)


def push(server: ServerProcess, ref: str, data: dict[str, Any]) -> int:
    answer = api(server, "PUT", f"/api/v1/configs/{ref}", {"data": data})
    assert answer.status_code in (200, 201), answer.text
    version: int = answer.json()["version"]
    return version


@pytest.fixture
def ref(server: ServerProcess, unique_ns: str) -> str:
    server.allow_secrets(unique_ns)  # the schema marks secret fields: the server seals them
    ref = f"{unique_ns}/service"
    assert api(server, "PUT", f"/api/v1/schemas/{ref}", SCHEMA).status_code == 201
    push(server, ref, V1)
    return ref


@pytest.fixture
def keys() -> str:
    """A key prefix outside configd's, unique to the test."""
    return f"apps-{uuid.uuid4().hex[:8]}"


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_document_follows_push_rollback_and_delete_byte_for_byte(
    server: ServerProcess, gateway: ConsulGateway, ref: str, keys: str
) -> None:
    key = f"{keys}/service.json"
    done = cli(server, "projections", "set", ref, "--document", key)
    assert done.exit_code == 0, done.output
    assert key in done.output
    # Written at once for the current head; `consul kv get` prints the value and one newline.
    assert kv_get(server, key) == pretty_json(PUBLIC_V1) + "\n"
    entry = gateway.get(key)
    assert entry is not None and entry.value == pretty_json(PUBLIC_V1).encode()
    assert entry.flags == owner_flags(*ref.split("/"))

    push(server, ref, V2)
    assert kv_get(server, key) == pretty_json(PUBLIC_V2) + "\n"
    answer = api(server, "POST", f"/api/v1/configs/{ref}/rollback", {"to_version": 1})
    assert answer.status_code == 201, answer.text
    assert json.loads(kv(gateway, key) or "") == PUBLIC_V1

    # YAML at another key: the JSON key is deleted (configd wrote it), the YAML one written.
    yaml_key = f"{keys}/service.yaml"
    assert cli(server, "projections", "set", ref, "--document", yaml_key, "--format", "yaml").exit_code == 0
    assert kv(gateway, key) is None
    assert yaml.safe_load(kv(gateway, yaml_key) or "") == PUBLIC_V1

    listed = cli(server, "projections", "ls", ref.split("/")[0], "--json")
    assert listed.exit_code == 0, listed.output
    assert [(r["kind"], r["format"], r["keys"]) for r in json.loads(listed.output)] == [
        ("document", "yaml", [yaml_key])
    ]

    # Kinds are independent: setting a tree keeps the document; unsetting only the tree keeps it too.
    assert cli(server, "projections", "set", ref, "--tree", f"{keys}/t").exit_code == 0
    assert kv(gateway, f"{keys}/t/retries") == "3" and kv(gateway, yaml_key) is not None
    assert cli(server, "projections", "unset", ref, "--tree").exit_code == 0
    assert kv_tree(gateway, f"{keys}/t/") == {} and yaml.safe_load(kv(gateway, yaml_key) or "") == PUBLIC_V1

    assert api(server, "DELETE", f"/api/v1/configs/{ref}").status_code == 200
    assert kv(gateway, yaml_key) is None
    push(server, ref, V2)  # re-created: projected again
    assert yaml.safe_load(kv(gateway, yaml_key) or "") == PUBLIC_V2

    assert cli(server, "projections", "unset", ref).exit_code == 0
    assert kv(gateway, yaml_key) is None
    assert json.loads(cli(server, "projections", "ls", ref.split("/")[0], "--json").output) == []


def test_spring_and_tree_with_deleted_leaves(
    server: ServerProcess, gateway: ConsulGateway, ref: str, keys: str
) -> None:
    name = ref.split("/")[1]
    app_name = f"app-{keys}"
    done = cli(server, "projections", "set", ref, "--spring", f"{app_name},{name}", "--tree", f"{keys}/env")
    assert done.exit_code == 0, done.output
    spring_key = f"config/{app_name},{name}/data"
    assert yaml.safe_load(kv_get(server, spring_key) or "") == PUBLIC_V1
    tree = {k: v for k, (v, _) in kv_tree(gateway, f"{keys}/env/").items()}
    assert sorted(tree) == [f"{keys}/env/db/host", f"{keys}/env/retries", f"{keys}/env/tags/0", f"{keys}/env/tags/1"]
    assert kv_get(server, f"{keys}/env/retries") == "3\n"

    # The UI's config page shows what is projected where.
    with httpx.Client(base_url=server.base_url, headers={"Origin": server.base_url}, timeout=30) as ui:
        assert ui.post("/ui/login", data={"token": server.tokens["reader"], "next": "/ui/"}).status_code == 303
        page = ui.get(f"/ui/configs/{ref}").text
        assert 'id="projections"' in page and spring_key in page and f"{keys}/env/" in page
    assert kv(gateway, f"{keys}/env/db/host") == "db1"
    assert kv(gateway, f"{keys}/env/db/password") is None  # secrets are never projected

    # A key under the prefix that configd did not write survives every later write.
    gateway.put(f"{keys}/env/manual", b"ops")  # what `consul kv put` does: Flags 0
    push(server, ref, V2)  # tags disappear
    assert sorted(kv_tree(gateway, f"{keys}/env/")) == [
        f"{keys}/env/db/host",
        f"{keys}/env/manual",
        f"{keys}/env/retries",
    ]
    assert kv(gateway, f"{keys}/env/db/host") == "db2"
    assert yaml.safe_load(kv(gateway, spring_key) or "") == PUBLIC_V2
    assert kv(gateway, f"{keys}/env/manual") == "ops"
    try:
        assert cli(server, "projections", "unset", ref).exit_code == 0
        assert sorted(kv_tree(gateway, f"{keys}/env/")) == [f"{keys}/env/manual"]
        assert kv(gateway, spring_key) is None
    finally:
        gateway.delete(f"{keys}/", recurse=True)


def test_a_key_configd_did_not_write_is_never_overwritten(
    server: ServerProcess, gateway: ConsulGateway, ref: str, keys: str
) -> None:
    key = f"{keys}/taken.json"
    assert consul(server, "kv", "put", key, "owned by ops").returncode == 0  # Consul's own CLI: Flags 0
    outside = kv_tree(gateway, f"{keys}/")
    answer, audit = rejected(
        server, gateway, lambda: api(server, "PUT", f"/api/v1/projections/{ref}", {"document": {"key": key}}), 409
    )
    assert "not written by configd" in answer.json()["detail"] and answer.json()["error"] == "VersionConflict"
    assert audit.action == "projections.set"
    assert kv_tree(gateway, f"{keys}/") == outside and kv(gateway, key) == "owned by ops"
    done = cli(server, "projections", "set", ref, "--document", key)
    assert done.exit_code == 3 and "not written by configd" in done.output

    # Projected, then overwritten by someone else: the next push is refused whole (head included).
    own = f"{keys}/own.json"
    assert api(server, "PUT", f"/api/v1/projections/{ref}", {"document": {"key": own}}).status_code == 200
    gateway.put(own, b"hand edit")
    outside = kv_tree(gateway, f"{keys}/")
    refused, _ = rejected(server, gateway, lambda: api(server, "PUT", f"/api/v1/configs/{ref}", {"data": V2}), 409)
    assert own in refused.json()["detail"]
    assert kv_tree(gateway, f"{keys}/") == outside
    # An import of the config is refused the same way, whole.
    items = [{"kind": "config", "namespace": ref.split("/")[0], "name": "service", "document": V2}]
    imported, _ = rejected(server, gateway, lambda: api(server, "POST", "/api/v1/import", {"items": items}), 409)
    assert own in imported.json()["detail"]
    assert kv_tree(gateway, f"{keys}/") == outside

    # Unusable targets are refused with nothing written.
    for body in (
        {"document": {"key": f"{server.prefix}/heads/x"}},
        {"document": {"key": "/leading"}},
        {"spring": "bad/app"},
        {},
    ):
        assert api(server, "PUT", f"/api/v1/projections/{ref}", body).status_code == 422, body
    assert api(server, "PUT", f"/api/v1/projections/{ref}", {"tree": "x/"}, token="editor").status_code == 403
    gateway.delete(f"{keys}/", recurse=True)


def test_namespace_wide_projection_import_and_a_tree_beyond_one_transaction(
    server: ServerProcess, gateway: ConsulGateway, unique_ns: str, keys: str
) -> None:
    items = [{"kind": "schema", "namespace": unique_ns, "name": n, "document": {"type": "object"}} for n in "ab"]
    items += [{"kind": "config", "namespace": unique_ns, "name": n, "document": {"n": n}} for n in "ab"]
    assert api(server, "POST", "/api/v1/import", {"items": items}).status_code in (200, 201)
    refused = api(server, "PUT", f"/api/v1/projections/{unique_ns}", {"document": {"key": f"{keys}/all.json"}})
    assert refused.status_code == 422 and "{name}" in refused.json()["detail"]
    answer = api(server, "PUT", f"/api/v1/projections/{unique_ns}", {"document": {"key": f"{keys}/{{name}}.json"}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["projections"][0]["keys"] == [f"{keys}/a.json", f"{keys}/b.json"]
    assert json.loads(kv(gateway, f"{keys}/a.json") or "") == {"n": "a"}

    # An import moves heads: their projections follow.
    items = [{"kind": "config", "namespace": unique_ns, "name": "a", "document": {"n": "a2"}}]
    assert api(server, "POST", "/api/v1/import", {"items": items}).status_code in (200, 201)
    assert json.loads(kv(gateway, f"{keys}/a.json") or "") == {"n": "a2"}

    # 150 leaves: more than one transaction holds, so the head lands first and the leaves right after it.
    big = {f"k{i:03d}": i for i in range(150)}
    push(server, f"{unique_ns}/b", big)
    assert api(server, "PUT", f"/api/v1/projections/{unique_ns}/b", {"tree": f"{keys}/tree"}).status_code == 200
    assert len(kv_tree(gateway, f"{keys}/tree/")) == 150
    push(server, f"{unique_ns}/b", {f"k{i:03d}": i + 1 for i in range(100)})
    leaves = kv_tree(gateway, f"{keys}/tree/")
    assert len(leaves) == 100 and kv(gateway, f"{keys}/tree/k099") == "100"
    assert json.loads(kv(gateway, f"{keys}/b.json") or "") == {f"k{i:03d}": i + 1 for i in range(100)}
    assert api(server, "DELETE", f"/api/v1/projections/{unique_ns}").status_code == 200
    assert kv(gateway, f"{keys}/a.json") is None and len(kv_tree(gateway, f"{keys}/tree/")) == 100
    # A delete whose removals do not fit beside the tombstone: they follow it.
    assert api(server, "DELETE", f"/api/v1/configs/{unique_ns}/b").status_code == 200
    assert kv_tree(gateway, f"{keys}/tree/") == {}
    gateway.delete(f"{keys}/", recurse=True)


@pytest.fixture
def watches(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in started:
            process.kill()
            process.wait(timeout=5)


def test_consul_watch_fires_with_the_new_content(
    server: ServerProcess, ref: str, keys: str, tmp_path: Path, watches: list[subprocess.Popen[bytes]]
) -> None:
    key, prefix = f"{keys}/doc.json", f"{keys}/env/"
    assert cli(server, "projections", "set", ref, "--document", key, "--tree", prefix).exit_code == 0
    outputs = {}
    for kind, arg in (("key", f"-key={key}"), ("keyprefix", f"-prefix={prefix}")):
        out = tmp_path / f"{kind}.jsonl"
        # The handler gets the watch's JSON on stdin, once now and once per change: one line per call.
        handler = f"tr -d '\\n' >> {out}; echo >> {out}"
        watches.append(
            subprocess.Popen(
                [consul_binary(), "watch", f"-http-addr={server.consul_addr}", f"-type={kind}", arg, handler],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        outputs[kind] = out

    def calls(kind: str) -> list[Any]:
        path = outputs[kind]
        return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []

    # Generous bounds: a loaded machine can take seconds to start a Go binary; a healthy one fires in ~0.1 s.
    assert wait_for(lambda: bool(calls("key")) and bool(calls("keyprefix")), timeout=60)
    push(server, ref, V2)

    def key_has_v2() -> bool:
        found = calls("key")
        return bool(found) and base64.b64decode(found[-1]["Value"]) == pretty_json(PUBLIC_V2).encode()

    def prefix_has_v2() -> bool:
        found = calls("keyprefix")
        if not found:
            return False
        values = {e["Key"]: base64.b64decode(e["Value"]).decode() for e in found[-1]}
        return values == {f"{prefix}db/host": "db2", f"{prefix}retries": "4"}

    assert wait_for(key_has_v2, timeout=30), calls("key")
    assert wait_for(prefix_has_v2, timeout=30), calls("keyprefix")


def test_concurrent_pushes_leave_the_projection_at_the_newest_head(
    server: ServerProcess, gateway: ConsulGateway, unique_ns: str, keys: str
) -> None:
    ref = f"{unique_ns}/busy"
    assert api(server, "PUT", f"/api/v1/schemas/{ref}", {"type": "object"}).status_code == 201
    push(server, ref, {"writer": -1})
    body = {"document": {"key": f"{keys}/busy.json"}, "tree": f"{keys}/busy"}
    assert api(server, "PUT", f"/api/v1/projections/{ref}", body).status_code == 200

    def writer(index: int) -> None:
        with server.client("editor") as http:
            for round_ in range(3):
                # 80 leaves: the tree never fits beside the head, so every push also takes the follow-up path.
                data = {"writer": index, "round": round_, "leaves": {f"k{i:02d}": index for i in range(80)}}
                answer = http.put(f"/api/v1/configs/{ref}", json={"data": data})
                assert answer.status_code in (200, 201, 409), answer.text

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    head = api(server, "GET", f"/api/v1/configs/{ref}").json()
    assert json.loads(kv(gateway, f"{keys}/busy.json") or "") == head["data"]
    leaves = {k: v for k, (v, _) in kv_tree(gateway, f"{keys}/busy/").items()}
    assert len(leaves) == 82
    assert kv(gateway, f"{keys}/busy/writer") == str(head["data"]["writer"])
    assert {kv(gateway, f"{keys}/busy/leaves/k{i:02d}") for i in range(80)} == {str(head["data"]["writer"])}
    gateway.delete(f"{keys}/", recurse=True)
