"""Rollouts through the HTTP API against a real server and Consul: start, the 409 for other writes, promote to
completion, abort, the elected driver's automatic steps and automatic rollback, and change requests that start one.

Instance reports are written here as the SDK writes them (``clients/<ns>/<instance>`` records); the end-to-end run
with real SDK processes is tests/reliability/test_rollouts_e2e.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from configd_core.consul import ConsulGateway
from configd_core.records import (
    AuditRecord,
    HeadRecord,
    RolloutFailure,
    RolloutRecord,
    VersionRecord,
    utcnow,
)
from tests.api_support import GOOD, SERVICE_SCHEMA, rejected, report_rollout, setup_config
from tests.conftest import ServerProcess, kv_tree

pytestmark = pytest.mark.timeout(120)

CANDIDATE = {**GOOD, "timeout_ms": 900}


def _url(ns: str, suffix: str = "") -> str:
    return f"/api/v1/configs/{ns}/service/rollouts{suffix}"


def _start(server: ServerProcess, ns: str, **body: Any) -> dict[str, Any]:
    with server.client("editor") as http:
        answer = http.post(_url(ns), json={"data": CANDIDATE, "bake_seconds": 3600, **body})
    assert answer.status_code == 201, answer.text
    started: dict[str, Any] = answer.json()
    return started


def _head(gateway: ConsulGateway, server: ServerProcess, ns: str) -> HeadRecord:
    entry = gateway.get(server.layout.head(ns, "service"))
    assert entry is not None
    return HeadRecord.from_bytes(entry.value)


def _audit(server: ServerProcess, ns: str) -> list[dict[str, Any]]:
    with server.client("reader") as http:
        entries: list[dict[str, Any]] = http.get("/api/v1/audit", params={"namespace": ns, "limit": 200}).json()[
            "entries"
        ]
    return list(reversed(entries))


def test_start_holds_the_head_and_refuses_other_writes(
    server: ServerProcess, gateway: ConsulGateway, unique_ns: str
) -> None:
    ns = unique_ns
    setup_config(server, ns)
    started = _start(server, ns, steps=[10, 50, 100], cohort={"labels": {"region": "eu"}}, message="faster")
    rollout = started["rollout"]
    assert (rollout["base_version"], rollout["candidate_version"], rollout["state"], rollout["step"]) == (
        1,
        2,
        "running",
        0,
    )
    assert started["percent"] == 10 and started["instances"]["total"] == 0
    head = _head(gateway, server, ns)
    assert head.version == 1 and head.rollout is not None and head.rollout.candidate_data == CANDIDATE
    version_entry = gateway.get(server.layout.version(ns, "service", 2))
    assert version_entry is not None and VersionRecord.from_bytes(version_entry.value).rollout == rollout["id"]
    assert gateway.get(server.layout.active_rollout(ns, "service")) is not None
    with server.client("reader") as http:
        assert http.get(f"/api/v1/configs/{ns}/service").json()["version"] == 1  # readers see the head: H

    with server.client("editor") as http:
        push = rejected(
            server,
            gateway,
            lambda: http.put(f"/api/v1/configs/{ns}/service", json={"data": {**GOOD, "retries": 1}}),
            409,
        )[0]
        assert push.json()["error"] == "RolloutActive" and rollout["id"] in push.json()["detail"]
        again = rejected(server, gateway, lambda: http.post(_url(ns), json={"data": {**GOOD, "retries": 2}}), 409)[0]
        assert again.json()["error"] == "RolloutActive"
        rejected(
            server, gateway, lambda: http.post(f"/api/v1/configs/{ns}/service/rollback", json={"to_version": 1}), 409
        )
    with server.client("admin") as http:
        rejected(server, gateway, lambda: http.delete(f"/api/v1/configs/{ns}/service"), 409)
        changed = {**SERVICE_SCHEMA, "properties": {**SERVICE_SCHEMA["properties"], "extra": {"type": "string"}}}
        rejected(server, gateway, lambda: http.put(f"/api/v1/schemas/{ns}/service", json=changed), 409)
        items = [
            {"kind": "schema", "namespace": ns, "name": "service", "document": changed},
            {"kind": "config", "namespace": ns, "name": "service", "document": {**GOOD, "retries": 4}},
        ]
        imported = rejected(server, gateway, lambda: http.post("/api/v1/import", json={"items": items}), 409)[0]
        assert [e["path"] for e in imported.json()["errors"]] == ["/items/0", "/items/1"]


def test_invalid_rollouts_change_nothing(server: ServerProcess, gateway: ConsulGateway, unique_ns: str) -> None:
    ns = unique_ns
    setup_config(server, ns)
    with server.client("editor") as http:
        for body in (
            {"data": CANDIDATE, "steps": [50, 10]},  # shrinking
            {"data": CANDIDATE, "steps": [120]},
            {"data": CANDIDATE, "version": 1},  # both
            {"steps": [10]},  # neither
            {"data": {**GOOD, "timeout_ms": -5}},  # fails the schema
            {"data": CANDIDATE, "max_failure_ratio": 1.5},
            {"data": CANDIDATE, "auto": 0},
            {"data": CANDIDATE, "max_failures": "2"},
        ):
            answer = rejected(server, gateway, lambda body=body: http.post(_url(ns), json=body), 422)[0]
            assert answer.json()["detail"]
        same = rejected(server, gateway, lambda: http.post(_url(ns), json={"data": GOOD}), 409)[0]
        assert same.json()["error"] == "TransitionRefused" and "equals the head" in same.json()["detail"]
    with server.client("reader") as http:
        rejected(server, gateway, lambda: http.post(_url(ns), json={"data": CANDIDATE}), 403)
        assert http.get(_url(ns, "/current")).status_code == 404


def test_promote_steps_to_completion(server: ServerProcess, gateway: ConsulGateway, unique_ns: str) -> None:
    ns = unique_ns
    setup_config(server, ns)
    started = _start(server, ns, steps=[25, 100], auto=False)
    rid = started["rollout"]["id"]
    report_rollout(gateway, server, ns, "a", rollout=rid, member=True, version=2)
    report_rollout(gateway, server, ns, "b", rollout=rid, member=False, version=1)
    with server.client("reader") as http:
        status = http.get(_url(ns, "/current")).json()
    assert status["instances"] == {"total": 2, "members": 1, "on_base": 1, "on_candidate": 1, "failed": 0}
    assert status["next_step_at"] is None  # manual
    with server.client("editor") as http:
        paused = http.post(_url(ns, "/current/pause"), json={"message": "look first"})
        assert paused.status_code == 200 and paused.json()["rollout"]["state"] == "paused"
        assert http.post(_url(ns, "/current/pause")).status_code == 409
        assert http.post(_url(ns, "/current/resume")).json()["rollout"]["state"] == "running"
        step = http.post(_url(ns, "/current/promote"), json={"message": "25% fine"})
        assert step.status_code == 200 and step.json()["rollout"]["step"] == 1 and step.json()["percent"] == 100
        done = http.post(_url(ns, "/current/promote"), json={"message": "ship it"})
        assert done.status_code == 200 and done.json()["rollout"]["state"] == "completed"
        assert done.json()["rollout"]["finished_by"] == "editor"
        assert http.get(_url(ns, "/current")).status_code == 404
        assert http.post(_url(ns, "/current/promote")).status_code == 404
        history = http.get(_url(ns)).json()["items"]
    head = _head(gateway, server, ns)
    assert head.version == 2 and head.rollout is None and head.data == CANDIDATE
    assert [h["id"] for h in history] == [rid] and history[0]["state"] == "completed"
    assert gateway.get(server.layout.active_rollout(ns, "service")) is None
    actions = [(e["action"], e["result"]) for e in _audit(server, ns) if e["action"].startswith("rollout.")]
    assert actions == [
        ("rollout.start", "started"),
        ("rollout.pause", "updated"),
        ("rollout.pause", "rejected"),
        ("rollout.resume", "updated"),
        ("rollout.promote", "updated"),
        ("rollout.complete", "completed"),
        ("rollout.promote", "rejected"),  # no active rollout any more: 404, audited
    ]
    with server.client("editor") as http:  # pushes go on from the new head
        pushed = http.put(f"/api/v1/configs/{ns}/service", json={"data": {**CANDIDATE, "retries": 5}})
        assert pushed.status_code == 201 and pushed.json()["version"] == 3


def test_abort_returns_to_the_head_and_frees_the_version(
    server: ServerProcess, gateway: ConsulGateway, unique_ns: str
) -> None:
    ns = unique_ns
    setup_config(server, ns)
    before = kv_tree(gateway, server.layout.heads_prefix(ns))
    rid = _start(server, ns, steps=[50])["rollout"]["id"]
    with server.client("editor") as http:
        aborted = http.post(_url(ns, "/current/abort"), json={"message": "p99 went up"})
        assert aborted.status_code == 200 and aborted.json()["rollout"]["state"] == "aborted"
        assert aborted.json()["rollout"]["reason"] == "p99 went up"
    head = _head(gateway, server, ns)
    assert head.version == 1 and head.rollout is None
    assert {k: v[0] for k, v in kv_tree(gateway, server.layout.heads_prefix(ns)).items()} == {
        k: v[0] for k, v in before.items()
    }
    assert gateway.get(server.layout.version(ns, "service", 2)) is None
    with server.client("editor") as http:
        assert http.get(_url(ns)).json()["items"][0]["id"] == rid
        pushed = http.put(f"/api/v1/configs/{ns}/service", json={"data": {**GOOD, "retries": 1}})
        assert pushed.status_code == 201 and pushed.json()["version"] == 2
        # an existing version can be rolled out too
        again = http.post(_url(ns), json={"version": 1, "steps": [100], "bake_seconds": 0, "auto": False})
        assert again.status_code == 201 and again.json()["rollout"]["candidate_version"] == 3


def _wait_for(predicate: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_driver_advances_after_each_bake_and_completes(
    server: ServerProcess, gateway: ConsulGateway, unique_ns: str
) -> None:
    ns = unique_ns
    setup_config(server, ns)
    _start(server, ns, steps=[20, 60, 100], bake_seconds=1)
    head = _wait_for(lambda: (h := _head(gateway, server, ns)).rollout is None and h)
    assert head.version == 2
    steps = [
        (e["action"], e["actor"]) for e in _audit(server, ns) if e["action"] in ("rollout.advance", "rollout.complete")
    ]
    assert steps == [
        ("rollout.advance", "configd-rollouts"),
        ("rollout.advance", "configd-rollouts"),
        ("rollout.complete", "configd-rollouts"),
    ]


def test_failures_at_the_threshold_abort_by_themselves(
    server: ServerProcess, gateway: ConsulGateway, unique_ns: str
) -> None:
    ns = unique_ns
    setup_config(server, ns)
    rid = _start(server, ns, steps=[50, 100], max_failures=2)["rollout"]["id"]
    failure = RolloutFailure(instance="a", kind="callback", reason="ValueError: boom", at=utcnow())
    report_rollout(gateway, server, ns, "a", rollout=rid, member=True, version=2, failures=[failure])
    report_rollout(gateway, server, ns, "b", rollout=rid, member=True, version=2)
    report_rollout(gateway, server, ns, "c", rollout=rid, member=False, version=1)
    # one failure of two allowed: recorded in the rollout, not aborted
    kept = _wait_for(lambda: (h := _head(gateway, server, ns)).rollout is not None and h.rollout.failures and h)
    assert kept.rollout.state == "running" and [f.instance for f in kept.rollout.failures] == ["a"]
    # a non-member's failure does not count
    other = RolloutFailure(instance="c", kind="unhealthy", reason="not on C", at=utcnow())
    report_rollout(gateway, server, ns, "c", rollout=rid, member=False, version=1, failures=[other])
    time.sleep(2.5)
    assert _head(gateway, server, ns).rollout is not None
    second = RolloutFailure(instance="b", kind="unhealthy", reason="error rate 7%", at=utcnow())
    report_rollout(gateway, server, ns, "b", rollout=rid, member=True, version=2, failures=[second])
    head = _wait_for(lambda: (h := _head(gateway, server, ns)).rollout is None and h)
    assert head.version == 1
    with server.client("reader") as http:
        history = http.get(_url(ns)).json()["items"]
    ended = RolloutRecord.model_validate(history[0])
    assert ended.state == "aborted" and ended.finished_by == "configd-rollouts"
    assert {f.instance for f in ended.failures} == {"a", "b"}
    assert "automatic rollback" in ended.reason and "a: callback (ValueError: boom)" in ended.reason
    entry = next(e for e in _audit(server, ns) if e["action"] == "rollout.abort")
    audit = AuditRecord.model_validate(entry)
    assert "b: unhealthy (error rate 7%)" in audit.detail and audit.actor == "configd-rollouts"


def test_a_change_request_can_start_a_rollout(server: ServerProcess, gateway: ConsulGateway, unique_ns: str) -> None:
    ns = unique_ns
    setup_config(server, ns)
    plan = {"steps": [10, 100], "bake_seconds": 600, "cohort": {"labels": {"tier": "canary"}}, "max_failures": 1}
    with server.client("editor") as http:
        proposed = http.post(
            "/api/v1/change-requests",
            json={"namespace": ns, "name": "service", "data": CANDIDATE, "rollout": plan},
        )
        assert proposed.status_code == 201, proposed.text
        assert proposed.json()["publish_target"] == "rollout"
        published = http.post(f"/api/v1/change-requests/{proposed.json()['id']}/publish")
        assert published.status_code == 200, published.text
        assert published.json()["state"] == "published" and published.json()["published_version"] == 2
        current = http.get(_url(ns, "/current")).json()["rollout"]
    assert current["plan"]["cohort"]["labels"] == {"tier": "canary"} and current["plan"]["steps"] == [10, 100]
    assert _head(gateway, server, ns).version == 1
