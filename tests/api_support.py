"""Helpers of the HTTP API tests: example schema/config, and the proof that a rejection wrote only its audit entry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from configd_core.consul import ConsulGateway
from configd_core.records import AuditRecord, ClientRecord, RolloutFailure, RolloutReport, utcnow
from tests.conftest import ServerProcess, kv_tree

SERVICE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "timeout_ms": {"type": "integer", "minimum": 1, "maximum": 60000},
        "retries": {"type": "integer", "minimum": 0, "maximum": 10},
        "currency": {"type": "string", "enum": ["EUR", "USD"]},
        "flags": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "blob": {"type": "string"},
        "nested": {},
    },
    "required": ["timeout_ms"],
}
GOOD: dict[str, Any] = {"timeout_ms": 500, "retries": 3, "currency": "EUR"}


def setup_config(server: ServerProcess, namespace: str, name: str = "service", *versions: dict[str, Any]) -> None:
    """Register SERVICE_SCHEMA and push ``versions`` (default: GOOD) as admin, asserting success."""
    with server.client("admin") as http:
        assert http.put(f"/api/v1/schemas/{namespace}/{name}", json=SERVICE_SCHEMA).status_code == 201
        for data in versions or (GOOD,):
            answer = http.put(f"/api/v1/configs/{namespace}/{name}", json={"data": data})
            assert answer.status_code == 201, answer.text


def rejected(
    server: ServerProcess, gateway: ConsulGateway, request: Callable[[], httpx.Response], status: int
) -> tuple[httpx.Response, AuditRecord]:
    """Run ``request``; assert ``status``, an error body, an unchanged KV tree outside ``audit/``, and exactly one
    new audit entry (returned)."""
    audit_root = server.layout.audit_root
    before = kv_tree(gateway, f"{server.prefix}/")
    answer = request()
    after = kv_tree(gateway, f"{server.prefix}/")
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert isinstance(body.get("detail"), str) and body["detail"], body
    assert {k: v for k, v in before.items() if not k.startswith(audit_root)} == {
        k: v for k, v in after.items() if not k.startswith(audit_root)
    }, "a rejected request changed Consul outside the audit log"
    added = sorted(set(after) - set(before))
    assert len(added) == 1 and added[0].startswith(audit_root), added
    assert all(after[k] == v for k, v in before.items()), "a rejected request rewrote an existing audit entry"
    entry = gateway.get(added[0])
    assert entry is not None
    record: AuditRecord = AuditRecord.from_bytes(entry.value)
    assert record.result == "rejected" and record.status == status
    return answer, record


def unchanged_without_audit(
    server: ServerProcess, gateway: ConsulGateway, request: Callable[[], httpx.Response], status: int
) -> httpx.Response:
    """For refusals that cannot be attributed to a namespace: nothing at all is written."""
    before = kv_tree(gateway, f"{server.prefix}/")
    answer = request()
    assert answer.status_code == status, answer.text
    assert kv_tree(gateway, f"{server.prefix}/") == before
    return answer


def report_rollout(
    gateway: ConsulGateway,
    server: ServerProcess,
    ns: str,
    instance: str,
    *,
    rollout: str,
    member: bool,
    version: int,
    failures: list[RolloutFailure] | None = None,
    application: str = "app",
) -> None:
    """Write the registration record an SDK instance of ``ns/service`` would: on ``version``, in the rollout or not."""
    now = utcnow()
    record = ClientRecord(
        instance=instance,
        application=application,
        host="host",
        pid=1,
        started_at=now,
        updated_at=now,
        applied={"service": version},
        instance_key=f"key-{instance}",
        labels={"region": "eu"},
        rollouts={"service": RolloutReport(id=rollout, member=member, version=version, failures=failures or [])},
    )
    gateway.put(server.layout.client(ns, instance), record.to_bytes())
