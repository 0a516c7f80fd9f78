"""The audit listing and the clients view (SDK registrations written under a real Consul session)."""

from __future__ import annotations

import pytest

from configd_core.consul import ConsulGateway
from configd_core.records import ClientRecord, utcnow
from tests.api_support import GOOD, setup_config
from tests.conftest import ServerProcess

pytestmark = pytest.mark.timeout(120)


def test_audit_newest_first_filter_and_limit(server: ServerProcess, unique_ns: str) -> None:
    other = unique_ns + "-other"
    setup_config(server, unique_ns, "service", GOOD, {**GOOD, "retries": 4})
    setup_config(server, other)
    with server.client("reader") as http:
        mine = http.get("/api/v1/audit", params={"namespace": unique_ns}).json()["entries"]
        assert [(e["action"], e["version"]) for e in mine] == [("push", 2), ("push", 1), ("schema.register", 1)]
        assert mine[0]["from_version"] == 1 and mine[0]["actor"] == "admin" and mine[0]["at"].endswith("Z")
        assert {"id", "at", "actor", "action", "namespace", "name", "result", "status", "message", "detail"} <= set(
            mine[0]
        )
        latest = http.get("/api/v1/audit", params={"limit": 2}).json()["entries"]
        assert [e["namespace"] for e in latest] == [other, other]
        stamps = [e["at"] for e in http.get("/api/v1/audit", params={"limit": 50}).json()["entries"]]
        assert stamps == sorted(stamps, reverse=True)
        assert http.get("/api/v1/audit", params={"namespace": "Bad NS"}).status_code == 422


def test_clients_current_and_outdated(server: ServerProcess, gateway: ConsulGateway, unique_ns: str) -> None:
    setup_config(server, unique_ns, "service", GOOD, {**GOOD, "retries": 4})
    setup_config(server, unique_ns, "flags")
    session = gateway.session_create("test-sdk", 30)
    try:
        now = utcnow()
        for instance, applied in (("api-1", {"service": 2, "flags": 1}), ("api-2", {"service": 1, "flags": 1})):
            record = ClientRecord(
                instance=instance,
                application="payments-api",
                host="host-" + instance,
                pid=1234,
                started_at=now,
                updated_at=now,
                applied=applied,
            )
            gateway.put(server.layout.client(unique_ns, instance), record.to_bytes(), acquire=session)
        with server.client("reader") as http:
            body = http.get(f"/api/v1/clients/{unique_ns}").json()
        assert body["namespace"] == unique_ns
        by_instance = {c["instance"]: c for c in body["clients"]}
        assert by_instance["api-1"]["current"] is True
        assert by_instance["api-2"]["current"] is False
        assert by_instance["api-2"]["configs"] == [
            {"name": "flags", "applied_version": 1, "head_version": 1, "current": True},
            {"name": "service", "applied_version": 1, "head_version": 2, "current": False},
        ]
        assert by_instance["api-1"]["application"] == "payments-api" and by_instance["api-1"]["pid"] == 1234
    finally:
        gateway.session_destroy(session)
    # The session's end deletes its keys (behavior=delete): the instances disappear from the view.
    with server.client("reader") as http:
        assert http.get(f"/api/v1/clients/{unique_ns}").json()["clients"] == []
