"""The schemas API: register, read, versions, incompatibility and force, each write audited."""

from __future__ import annotations

import pytest

from configd_core.consul import ConsulGateway
from configd_core.layout import MAX_SCHEMA_BYTES
from tests.api_support import GOOD, SERVICE_SCHEMA, rejected, setup_config
from tests.conftest import ServerProcess

pytestmark = pytest.mark.timeout(120)


def test_register_read_versions(server: ServerProcess, unique_ns: str) -> None:
    url = f"/api/v1/schemas/{unique_ns}/service"
    with server.client("admin") as http:
        created = http.put(url, json=SERVICE_SCHEMA, params={"message": "first"})
        assert created.status_code == 201
        assert created.json()["status"] == "created" and created.json()["version"] == 1
        same = http.put(url, json=SERVICE_SCHEMA)
        assert same.status_code == 200 and same.json()["status"] == "unchanged" and same.json()["version"] == 1
        v2 = http.put(url, json={**SERVICE_SCHEMA, "title": "service v2"})
        assert v2.status_code == 201 and v2.json()["version"] == 2
        head = http.get(url).json()
        assert head["version"] == 2 and head["versions"] == [1, 2] and head["schema"]["title"] == "service v2"
        assert head["author"] == "admin" and head["forced"] is False
        first = http.get(f"{url}/versions/1").json()
        assert first["message"] == "first" and "title" not in first["schema"]
        assert http.get(f"{url}/versions/9").status_code == 404
        assert http.get(f"/api/v1/schemas/{unique_ns}/nothing").status_code == 404
        entries = http.get("/api/v1/audit", params={"namespace": unique_ns}).json()["entries"]
    assert [(e["action"], e["version"], e["status"]) for e in entries] == [
        ("schema.register", 2, 201),
        ("schema.register", 1, 201),
    ]


def test_invalid_schema_is_422(server: ServerProcess, gateway: ConsulGateway, unique_ns: str) -> None:
    with server.client("admin") as http:
        answer, record = rejected(
            server,
            gateway,
            lambda: http.put(f"/api/v1/schemas/{unique_ns}/service", json={"type": "objekt", "minimum": "x"}),
            422,
        )
    assert answer.json()["errors"] and all(e["path"] and e["message"] for e in answer.json()["errors"])
    assert record.action == "schema.register" and record.actor == "admin"


def test_incompatible_schema_needs_force(server: ServerProcess, gateway: ConsulGateway, unique_ns: str) -> None:
    setup_config(server, unique_ns, "service", {**GOOD, "retries": 8})
    stricter = {
        **SERVICE_SCHEMA,
        "properties": {**SERVICE_SCHEMA["properties"], "retries": {"type": "integer", "maximum": 5}},
    }
    url = f"/api/v1/schemas/{unique_ns}/service"
    with server.client("admin") as http:
        answer, record = rejected(
            server, gateway, lambda: http.put(url, json=stricter, params={"message": "tighten"}), 422
        )
        assert "force" in answer.json()["detail"]
        assert answer.json()["errors"][0]["path"] == "/retries"
        assert record.message == "tighten"
        forced = http.put(url, json=stricter, params={"force": "true"})
        assert forced.status_code == 201 and forced.json()["version"] == 2
        assert http.get(url).json()["forced"] is True
        entries = http.get("/api/v1/audit", params={"namespace": unique_ns, "limit": 1}).json()["entries"]
        assert entries[0]["result"] == "forced"
        # Pushes now validate against v2: the current content no longer passes.
        assert (
            http.put(f"/api/v1/configs/{unique_ns}/service", json={"data": {**GOOD, "retries": 9}}).status_code == 422
        )
        bad_flag = http.put(url, json=stricter, params={"force": "maybe"})
        assert bad_flag.status_code == 422 and bad_flag.json()["errors"][0]["path"] == "/query/force"


def test_schema_too_large_is_413(server: ServerProcess, gateway: ConsulGateway, unique_ns: str) -> None:
    big = {**SERVICE_SCHEMA, "description": "d" * (MAX_SCHEMA_BYTES + 10)}
    with server.client("admin") as http:
        answer, _ = rejected(server, gateway, lambda: http.put(f"/api/v1/schemas/{unique_ns}/service", json=big), 413)
    assert str(MAX_SCHEMA_BYTES) in answer.json()["detail"]
