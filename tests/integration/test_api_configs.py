"""The configs API against a real server process and a real Consul: every endpoint and every status code."""

from __future__ import annotations

import json
from typing import Any

import pytest

from configd_core.consul import ConsulGateway
from configd_core.layout import MAX_CONFIG_BYTES, MAX_JSON_DEPTH
from tests.api_support import GOOD, SERVICE_SCHEMA, rejected, setup_config, unchanged_without_audit
from tests.conftest import ServerProcess, kv_tree

pytestmark = pytest.mark.timeout(120)


def _audit(server: ServerProcess, namespace: str) -> list[dict[str, Any]]:
    with server.client("reader") as http:
        answer = http.get("/api/v1/audit", params={"namespace": namespace})
    assert answer.status_code == 200
    entries: list[dict[str, Any]] = answer.json()["entries"]
    return entries


def test_push_read_history_diff_rollback_delete(server: ServerProcess, unique_ns: str) -> None:
    ns = unique_ns
    with server.client("admin") as admin:
        assert admin.put(f"/api/v1/schemas/{ns}/service", json=SERVICE_SCHEMA).status_code == 201
    with server.client("editor") as http:
        first = http.put(f"/api/v1/configs/{ns}/service", json={"data": GOOD, "message": "initial"})
        assert first.status_code == 201, first.text
        body = first.json()
        assert body["status"] == "created" and body["version"] == 1 and body["author"] == "editor"
        assert body["message"] == "initial" and body["schema_version"] == 1 and body["size"] > 0
        assert set(body) == {
            "status", "namespace", "name", "version", "sha256", "size", "author", "message", "created_at",
            "schema_version",
        }  # fmt: skip

        second = http.put(
            f"/api/v1/configs/{ns}/service", json={"data": {**GOOD, "timeout_ms": 900}, "expected_version": 1}
        )
        assert second.status_code == 201 and second.json()["version"] == 2
        same = http.put(f"/api/v1/configs/{ns}/service", json={"data": {**GOOD, "timeout_ms": 900}})
        assert same.status_code == 200 and same.json()["status"] == "unchanged" and same.json()["version"] == 2

        head = http.get(f"/api/v1/configs/{ns}/service").json()
        assert head["version"] == 2 and head["parent"] == 1 and head["data"]["timeout_ms"] == 900
        assert head["rollback_of"] is None and head["schema_version"] == 1
        v1 = http.get(f"/api/v1/configs/{ns}/service/versions/1").json()
        assert v1["data"] == GOOD and v1["message"] == "initial"

        diff = http.get(f"/api/v1/configs/{ns}/service/diff", params={"from": 1, "to": 2}).json()
        assert diff["from"] == 1 and diff["to"] == 2
        assert diff["changes"] == [{"op": "replace", "path": "/timeout_ms", "old": 500, "new": 900}]
        assert '-  "timeout_ms": 500' in diff["unified"] and '+  "timeout_ms": 900' in diff["unified"]
        assert http.get(f"/api/v1/configs/{ns}/service/diff").json()["changes"] == diff["changes"]  # head-1 → head

        back = http.post(f"/api/v1/configs/{ns}/service/rollback", json={"to_version": 1, "message": "undo"})
        assert back.status_code == 201 and back.json()["version"] == 3 and back.json()["message"] == "undo"
        again = http.post(f"/api/v1/configs/{ns}/service/rollback", json={"to_version": 1})
        assert again.status_code == 200 and again.json()["status"] == "unchanged"
        assert http.get(f"/api/v1/configs/{ns}/service").json()["rollback_of"] == 1

        page = http.get(f"/api/v1/configs/{ns}/service/versions", params={"limit": 2}).json()
        assert [v["version"] for v in page["versions"]] == [3, 2] and page["total"] == 3 and page["next_before"] == 2
        assert "data" not in page["versions"][0]
        rest = http.get(f"/api/v1/configs/{ns}/service/versions", params={"limit": 2, "before": 2}).json()
        assert [v["version"] for v in rest["versions"]] == [1] and rest["next_before"] is None

        listing = http.get(f"/api/v1/configs/{ns}").json()
        assert listing["namespace"] == ns and [(c["name"], c["version"]) for c in listing["configs"]] == [
            ("service", 3)
        ]
        paged = http.get(f"/api/v1/configs/{ns}", params={"limit": 1}).json()
        assert [c["name"] for c in paged["configs"]] == ["service"] and paged["next_after"] is None
        assert http.get(f"/api/v1/configs/{ns}", params={"after": "service"}).json()["configs"] == []
        assert http.get(f"/api/v1/configs/{ns}", params={"after": "Bad/Name"}).status_code in (404, 422)
        namespaces = {n["namespace"]: n for n in http.get("/api/v1/configs").json()["namespaces"]}
        assert namespaces[ns]["configs"] == 1 and namespaces[ns]["latest_author"] == "editor"

    with server.client("admin") as admin:
        gone = admin.delete(f"/api/v1/configs/{ns}/service", params={"message": "retired"})
        assert gone.status_code == 200
        assert gone.json() == {"status": "deleted", "namespace": ns, "name": "service", "version": 3}
        assert admin.get(f"/api/v1/configs/{ns}/service").status_code == 404
        assert admin.get(f"/api/v1/configs/{ns}/service/versions/2").status_code == 200  # history stays readable
        assert admin.get(f"/api/v1/configs/{ns}").status_code == 404

    audit = [(e["action"], e["result"], e["status"], e["version"], e["actor"]) for e in _audit(server, ns)]
    assert audit == [
        ("delete", "deleted", 200, 3, "admin"),
        ("rollback", "created", 201, 3, "editor"),
        ("push", "created", 201, 2, "editor"),
        ("push", "created", 201, 1, "editor"),
        ("schema.register", "created", 201, 1, "admin"),
    ]
    assert _audit(server, ns)[0]["message"] == "retired"


def test_validate_is_a_dry_run(server: ServerProcess, gateway: ConsulGateway, unique_ns: str) -> None:
    setup_config(server, unique_ns)
    before = kv_tree(gateway, f"{server.prefix}/")
    with server.client("reader") as http:
        ok = http.post(f"/api/v1/configs/{unique_ns}/service/validate", json={"data": {**GOOD, "retries": 5}})
        bad = http.post(f"/api/v1/configs/{unique_ns}/service/validate", json={"data": {"timeout_ms": -1}})
    assert kv_tree(gateway, f"{server.prefix}/") == before
    assert ok.status_code == 200 and ok.json()["valid"] is True and ok.json()["head_version"] == 1
    assert ok.json()["changes"] == [{"op": "replace", "path": "/retries", "old": 3, "new": 5}]
    assert '+  "retries": 5' in ok.json()["unified"]
    assert bad.status_code == 200 and bad.json()["valid"] is False
    assert {"path": "/timeout_ms", "message": "-1 is less than the minimum of 1"} in bad.json()["errors"]


def test_validation_failed_is_422_with_paths_and_audited(
    server: ServerProcess, gateway: ConsulGateway, unique_ns: str
) -> None:
    setup_config(server, unique_ns)
    with server.client("editor") as http:
        answer, record = rejected(
            server,
            gateway,
            lambda: http.put(
                f"/api/v1/configs/{unique_ns}/service",
                json={"data": {"timeout_ms": 0, "currency": "XXX"}, "message": "bad push"},
            ),
            422,
        )
    errors = answer.json()["errors"]
    assert {e["path"] for e in errors} == {"/timeout_ms", "/currency"}
    assert all(e["message"] for e in errors)
    assert (record.action, record.actor, record.namespace, record.name) == ("push", "editor", unique_ns, "service")
    assert record.message == "bad push" and "validation error" in record.detail


def test_version_conflict_is_409_with_expected_and_actual(
    server: ServerProcess, gateway: ConsulGateway, unique_ns: str
) -> None:
    setup_config(server, unique_ns)
    with server.client("editor") as http:
        answer, record = rejected(
            server,
            gateway,
            lambda: http.put(f"/api/v1/configs/{unique_ns}/service", json={"data": GOOD, "expected_version": 0}),
            409,
        )
        assert answer.json()["expected"] == 0 and answer.json()["actual"] == 1
        assert record.action == "push"
        conflict, _ = rejected(
            server,
            gateway,
            lambda: http.post(
                f"/api/v1/configs/{unique_ns}/service/rollback", json={"to_version": 1, "expected_version": 7}
            ),
            409,
        )
        assert conflict.json()["expected"] == 7 and conflict.json()["actual"] == 1


def test_not_found_cases(server: ServerProcess, gateway: ConsulGateway, unique_ns: str) -> None:
    with server.client("admin") as http:
        _, record = rejected(
            server, gateway, lambda: http.put(f"/api/v1/configs/{unique_ns}/noschema", json={"data": GOOD}), 404
        )
        assert "no schema is registered" in record.detail
        _, record = rejected(server, gateway, lambda: http.delete(f"/api/v1/configs/{unique_ns}/missing"), 404)
        assert record.action == "delete"
        _, record = rejected(
            server,
            gateway,
            lambda: http.post(f"/api/v1/configs/{unique_ns}/missing/rollback", json={"to_version": 1}),
            404,
        )
        assert record.action == "rollback"
        setup_config(server, unique_ns)
        rejected(
            server,
            gateway,
            lambda: http.post(f"/api/v1/configs/{unique_ns}/service/rollback", json={"to_version": 99}),
            404,
        )
        for path in (
            f"/api/v1/configs/{unique_ns}/missing",
            f"/api/v1/configs/{unique_ns}/missing/versions",
            f"/api/v1/configs/{unique_ns}/service/versions/99",
            f"/api/v1/configs/{unique_ns}/service/diff?from=1&to=99",
            "/api/v1/configs/ns-nothing-here",
            "/api/v1/no-such-route",
        ):
            answer = http.get(path)
            assert answer.status_code == 404, path
            assert answer.json()["detail"], path
        assert http.post(f"/api/v1/configs/{unique_ns}/missing/validate", json={"data": GOOD}).status_code == 404
        not_allowed = http.patch(f"/api/v1/configs/{unique_ns}/service")
        assert not_allowed.status_code == 405 and not_allowed.json()["detail"]


def test_invalid_names(server: ServerProcess, gateway: ConsulGateway, unique_ns: str) -> None:
    with server.client("admin") as http:
        _, record = rejected(
            server, gateway, lambda: http.put(f"/api/v1/configs/{unique_ns}/Bad_Name", json={"data": GOOD}), 422
        )
        assert record.name is None and record.namespace == unique_ns
        # An invalid namespace cannot be audited (audit keys live under the namespace): nothing is written.
        answer = unchanged_without_audit(
            server, gateway, lambda: http.put("/api/v1/configs/Bad..NS/service", json={"data": GOOD}), 422
        )
        assert "invalid" in answer.json()["detail"]
        assert http.get("/api/v1/configs/UPPER/service").status_code == 422


def test_unreadable_bodies(server: ServerProcess, gateway: ConsulGateway, unique_ns: str) -> None:
    setup_config(server, unique_ns)
    url = f"/api/v1/configs/{unique_ns}/service"
    json_header = {"Content-Type": "application/json"}
    with server.client("editor") as http:
        answer, _ = rejected(server, gateway, lambda: http.put(url, content=b'{"data": {', headers=json_header), 422)
        assert "not valid JSON" in answer.json()["detail"]
        answer, _ = rejected(
            server, gateway, lambda: http.put(url, content=b"data=1", headers={"Content-Type": "text/plain"}), 415
        )
        assert "application/json" in answer.json()["detail"]
        answer, _ = rejected(
            server, gateway, lambda: http.put(url, content=b'{"data": "\xff"}', headers=json_header), 400
        )
        assert "UTF-8" in answer.json()["detail"]
        answer, _ = rejected(server, gateway, lambda: http.put(url, content=b"", headers=json_header), 422)
        answer, _ = rejected(
            server, gateway, lambda: http.put(url, content=b'{"data": {"timeout_ms": NaN}}', headers=json_header), 422
        )
        assert "NaN" in answer.json()["detail"]
        answer, _ = rejected(server, gateway, lambda: http.put(url, json={"message": "no data"}), 422)
        assert {"path": "/data", "message": "Field required"} in answer.json()["errors"]
        answer, _ = rejected(server, gateway, lambda: http.put(url, json={"data": GOOD, "expected_versoin": 1}), 422)
        assert answer.json()["errors"][0]["path"] == "/expected_versoin"
        answer, _ = rejected(server, gateway, lambda: http.put(url, json={"data": [1, 2]}), 422)
        assert "JSON object" in answer.json()["detail"]


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH + 5, 10_000, 100_000])
def test_deep_nesting_is_a_clear_4xx(
    server: ServerProcess, gateway: ConsulGateway, unique_ns: str, levels: int
) -> None:
    setup_config(server, unique_ns)
    body = ('{"data": {"nested": ' + "[" * levels + "]" * levels + "}}").encode()
    with server.client("editor") as http:
        answer, record = rejected(
            server,
            gateway,
            lambda: http.put(
                f"/api/v1/configs/{unique_ns}/service", content=body, headers={"Content-Type": "application/json"}
            ),
            422,
        )
    assert "nested" in answer.json()["detail"] and record.action == "push"


def test_too_large(server: ServerProcess, gateway: ConsulGateway, unique_ns: str) -> None:
    setup_config(server, unique_ns)
    url = f"/api/v1/configs/{unique_ns}/service"
    with server.client("editor") as http:
        # Over the request limit: refused from Content-Length before parsing.
        huge = json.dumps({"data": {"timeout_ms": 5, "blob": "x" * (MAX_CONFIG_BYTES + 2 * 1024 * 1024)}}).encode()
        answer, record = rejected(
            server, gateway, lambda: http.put(url, content=huge, headers={"Content-Type": "application/json"}), 413
        )
        assert "at most" in answer.json()["detail"] and record.status == 413
        # Under the request limit but over the canonical config limit: the store's ConfigTooLarge.
        big = {"data": {"timeout_ms": 5, "blob": "y" * (MAX_CONFIG_BYTES + 1000)}}
        answer, _ = rejected(server, gateway, lambda: http.put(url, json=big), 413)
        assert str(MAX_CONFIG_BYTES) in answer.json()["detail"]


def test_large_config_round_trip(server: ServerProcess, unique_ns: str) -> None:
    """A 3 MB config is stored in gzip chunks and comes back byte-identical through the API."""
    import random

    rng = random.Random(7)
    blob = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(3 * 1024 * 1024))
    setup_config(server, unique_ns, "service", {"timeout_ms": 5, "blob": blob})
    with server.client("reader") as http:
        answer = http.get(f"/api/v1/configs/{unique_ns}/service")
    assert answer.status_code == 200 and answer.json()["data"]["blob"] == blob


def test_query_and_path_validation_use_the_error_shape(server: ServerProcess, unique_ns: str) -> None:
    setup_config(server, unique_ns)
    with server.client("reader") as http:
        for path, pointer in (
            (f"/api/v1/configs/{unique_ns}/service/versions?limit=abc", "/query/limit"),
            (f"/api/v1/configs/{unique_ns}/service/versions?limit=0", "/query/limit"),
            (f"/api/v1/configs/{unique_ns}/service/versions/abc", "/path/version"),
            (f"/api/v1/configs/{unique_ns}/service/diff?from=x", "/query/from"),
            ("/api/v1/audit?limit=-1", "/query/limit"),
        ):
            answer = http.get(path)
            assert answer.status_code == 422, path
            body = answer.json()
            assert isinstance(body["detail"], str) and body["errors"][0]["path"] == pointer, body
