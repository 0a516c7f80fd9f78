"""Change requests and review policies against a real server and a real Consul: every transition, and every
refusal proven to change nothing in Consul but its rejection audit entry."""

from __future__ import annotations

from typing import Any

import pytest

from configd_core.consul import ConsulGateway
from configd_core.records import ChangeRequestRecord, PolicyRecord, utcnow
from tests.api_support import GOOD, rejected, setup_config
from tests.conftest import ServerProcess, kv_tree

pytestmark = pytest.mark.timeout(120)

CR = "/api/v1/change-requests"


def _policy(server: ServerProcess, ns: str, approvals: int, approvers: list[str] | None = None) -> None:
    with server.client("admin") as http:
        body: dict[str, Any] = {"approvals_required": approvals}
        if approvers is not None:
            body["approvers"] = approvers
        answer = http.put(f"/api/v1/policies/{ns}", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["approvals_required"] == approvals


def _propose(server: ServerProcess, ns: str, data: dict[str, Any], who: str = "editor", **extra: Any) -> dict[str, Any]:
    with server.client(who) as http:
        answer = http.post(CR, json={"namespace": ns, "name": "service", "data": data, "message": "raise", **extra})
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _audit_actions(server: ServerProcess, ns: str) -> list[tuple[str, str]]:
    with server.client("reader") as http:
        entries = http.get("/api/v1/audit", params={"namespace": ns, "limit": 200}).json()["entries"]
    return [(e["action"], e["result"]) for e in reversed(entries)]


def test_propose_approve_publish_with_two_approvals(
    server: ServerProcess, gateway: ConsulGateway, unique_ns: str
) -> None:
    ns = f"team-a-{unique_ns}"  # the author is team-editor; admin and editor are two other approvers
    setup_config(server, ns)
    _policy(server, ns, 2)
    proposed = {**GOOD, "timeout_ms": 900}
    cr = _propose(server, ns, proposed, who="team-editor")
    assert cr["state"] == "open" and cr["base_version"] == 1 and cr["author"] == "team-editor"
    assert cr["valid"] is True and cr["approvals_required"] == 2
    assert cr["changes"] == [{"op": "replace", "path": "/timeout_ms", "old": 500, "new": 900}]
    assert '+  "timeout_ms": 900' in cr["unified"]
    rid = cr["id"]
    stored = gateway.get(server.layout.change_request(rid))
    assert stored is not None and ChangeRequestRecord.from_bytes(stored.value).data == proposed

    with server.client("reader") as http:
        listed = http.get(CR, params={"namespace": ns}).json()["change_requests"]
        assert [r["id"] for r in listed] == [rid]
        assert http.get(f"{CR}/{rid}").json()["state"] == "open"
    with server.client("team-editor") as http:
        mine = http.get(CR, params={"mine": "true", "namespace": ns}).json()["change_requests"]
        assert [r["id"] for r in mine] == [rid]
    with server.client("admin") as http:
        assert http.get(CR, params={"mine": "true", "namespace": ns}).json()["change_requests"] == []
        first = http.post(f"{CR}/{rid}/approve", json={"message": "ok"})
        assert first.status_code == 200 and first.json()["state"] == "open"  # 1 of 2
    with server.client("team-editor") as http:
        assert http.post(f"{CR}/{rid}/publish").status_code == 409  # still open: 1 of 2
    with server.client("reader") as http:
        commented = http.post(f"{CR}/{rid}/comments", json={"message": "looks fine"})
        assert commented.status_code == 200 and commented.json()["comments"][0]["actor"] == "reader"
    with server.client("editor") as http:
        second = http.post(f"{CR}/{rid}/approve", json={})
        assert second.status_code == 200 and second.json()["state"] == "approved"
        assert [a["actor"] for a in second.json()["approvals"]] == ["admin", "editor"]
    with server.client("team-editor") as http:
        published = http.post(f"{CR}/{rid}/publish")
        assert published.status_code == 200, published.text
        body = published.json()
        assert body["state"] == "published" and body["published_version"] == 2 and body["published_by"] == "team-editor"
        head = http.get(f"/api/v1/configs/{ns}/service").json()
        assert head["version"] == 2 and head["data"] == proposed and head["author"] == "team-editor"
        assert f"change request {rid}" in head["message"]
    actions = _audit_actions(server, ns)
    assert ("change-request.propose", "open") in actions
    assert ("change-request.approve", "open") in actions and ("change-request.approve", "approved") in actions
    assert ("change-request.comment", "open") in actions
    assert ("change-request.publish", "published") in actions and ("push", "created") in actions
    assert ("policy.set", "created") in actions


def test_one_approval_reject_withdraw_and_zero_policy(server: ServerProcess, unique_ns: str) -> None:
    ns = unique_ns
    setup_config(server, ns)
    _policy(server, ns, 1)
    a = _propose(server, ns, {**GOOD, "retries": 1})
    b = _propose(server, ns, {**GOOD, "retries": 2})
    with server.client("admin") as http:
        approved = http.post(f"{CR}/{a['id']}/approve", json={})
        assert approved.status_code == 200 and approved.json()["state"] == "approved"
        rejected_ = http.post(f"{CR}/{b['id']}/reject", json={"message": "no"})
        assert rejected_.json()["state"] == "rejected" and rejected_.json()["rejection"]["message"] == "no"
    with server.client("editor") as http:
        withdrawn = http.post(f"{CR}/{a['id']}/withdraw", json={"message": "not now"})
        assert withdrawn.status_code == 200 and withdrawn.json()["state"] == "withdrawn"
    # A namespace whose policy requires nothing: a proposal is approved at once, and plain pushes still work.
    _policy(server, ns, 0)
    c = _propose(server, ns, {**GOOD, "retries": 4})
    assert c["state"] == "approved"
    with server.client("editor") as http:
        assert http.put(f"/api/v1/configs/{ns}/service", json={"data": {**GOOD, "retries": 5}}).status_code == 201
    actions = _audit_actions(server, ns)
    assert ("change-request.reject", "rejected") in actions and ("change-request.withdraw", "withdrawn") in actions


def test_moved_head_marks_conflicted_with_what_moved(
    server: ServerProcess, gateway: ConsulGateway, unique_ns: str
) -> None:
    ns = unique_ns
    setup_config(server, ns)
    _policy(server, ns, 1)
    cr = _propose(server, ns, {**GOOD, "timeout_ms": 700})
    with server.client("admin") as http:
        assert http.post(f"{CR}/{cr['id']}/approve", json={}).status_code == 200
        emergency = http.put(f"/api/v1/configs/{ns}/service", json={"data": {**GOOD, "retries": 9}})
        assert emergency.status_code == 201 and emergency.json()["version"] == 2
    head_before = kv_tree(gateway, server.layout.heads_prefix(ns))
    with server.client("editor") as http:
        answer = http.post(f"{CR}/{cr['id']}/publish")
        assert answer.status_code == 409 and answer.json()["error"] == "VersionConflict", answer.text
        assert answer.json()["expected"] == 1 and answer.json()["actual"] == 2
        view = http.get(f"{CR}/{cr['id']}").json()
    assert kv_tree(gateway, server.layout.heads_prefix(ns)) == head_before  # nothing published
    assert view["state"] == "conflicted" and view["conflict_head"] == 2 and view["head_version"] == 2
    assert view["moved_changes"] == [{"op": "replace", "path": "/retries", "old": 3, "new": 9}]
    assert view["changes"] == [{"op": "replace", "path": "/timeout_ms", "old": 500, "new": 700}]
    actions = _audit_actions(server, ns)
    assert ("push.emergency", "created") in actions and ("change-request.conflict", "conflicted") in actions


def test_refusals_change_nothing(server: ServerProcess, gateway: ConsulGateway, unique_ns: str) -> None:
    ns = unique_ns
    setup_config(server, ns)
    _policy(server, ns, 1, ["admin"])
    cr = _propose(server, ns, {**GOOD, "timeout_ms": 800})
    rid = cr["id"]

    def post(who: str, path: str, body: Any = None) -> Any:
        return lambda: server.client(who).post(path, json=body if body is not None else {})

    def put(who: str, path: str, body: Any) -> Any:
        return lambda: server.client(who).put(path, json=body)

    # A plain push or rollback by a non-admin in a reviewed namespace: 403 ReviewRequired naming the route.
    answer, entry = rejected(server, gateway, put("editor", f"/api/v1/configs/{ns}/service", {"data": GOOD}), 403)
    assert answer.json()["error"] == "ReviewRequired" and "/api/v1/change-requests" in answer.json()["detail"]
    assert entry.action == "push"
    answer, _ = rejected(
        server, gateway, post("editor", f"/api/v1/configs/{ns}/service/rollback", {"to_version": 1}), 403
    )
    assert answer.json()["error"] == "ReviewRequired"
    # Self-approval (the author is an admin here too, so the role would allow it).
    own = _propose(server, ns, {**GOOD, "timeout_ms": 801}, who="admin")
    answer, entry = rejected(server, gateway, post("admin", f"{CR}/{own['id']}/approve"), 403)
    assert "may not approve" in answer.json()["detail"] and entry.action == "change-request.approve"
    # Wrong role: an editor is not an approver under ["admin"]; a reader never is.
    answer, _ = rejected(server, gateway, post("reader", f"{CR}/{rid}/approve"), 403)
    answer, _ = rejected(server, gateway, post("team-admin", f"{CR}/{rid}/approve"), 403)  # namespace not covered
    # A reader may not propose or publish; the author may not reject; only the author withdraws.
    rejected(
        server,
        gateway,
        lambda: server.client("reader").post(CR, json={"namespace": ns, "name": "service", "data": GOOD}),
        403,
    )
    rejected(server, gateway, post("editor", f"{CR}/{rid}/reject"), 403)
    rejected(server, gateway, post("reader", f"{CR}/{rid}/withdraw"), 403)
    # Publishing an open request: 409; an invalid proposal: 422; one equal to the head or from a stale base: 409.
    answer, _ = rejected(server, gateway, post("editor", f"{CR}/{rid}/publish"), 409)
    assert answer.json()["error"] == "TransitionRefused"
    bad = {"namespace": ns, "name": "service", "data": {"timeout_ms": -1}}
    answer, entry = rejected(server, gateway, lambda: server.client("editor").post(CR, json=bad), 422)
    assert answer.json()["errors"][0]["path"] == "/timeout_ms" and entry.action == "change-request.propose"
    same = {"namespace": ns, "name": "service", "data": GOOD}
    answer, _ = rejected(server, gateway, lambda: server.client("editor").post(CR, json=same), 409)
    assert "identical" in answer.json()["detail"]
    stale = {"namespace": ns, "name": "service", "data": {**GOOD, "retries": 7}, "base_version": 5}
    answer, _ = rejected(server, gateway, lambda: server.client("editor").post(CR, json=stale), 409)
    assert answer.json()["error"] == "VersionConflict" and answer.json()["actual"] == 1
    # A non-admin may not set a policy; bad policy values are 422.
    rejected(server, gateway, put("editor", f"/api/v1/policies/{ns}", {"approvals_required": 0}), 403)
    rejected(server, gateway, put("admin", f"/api/v1/policies/{ns}", {"approvals_required": 3}), 422)
    # Approve twice, then steps on a final request.
    with server.client("admin") as http:
        assert http.post(f"{CR}/{rid}/approve", json={}).json()["state"] == "approved"
    answer, _ = rejected(server, gateway, post("admin", f"{CR}/{rid}/approve"), 409)
    with server.client("editor") as http:
        assert http.post(f"{CR}/{rid}/withdraw", json={}).json()["state"] == "withdrawn"
    answer, _ = rejected(server, gateway, post("editor", f"{CR}/{rid}/publish"), 409)
    assert "withdrawn" in answer.json()["detail"]
    rejected(server, gateway, post("admin", f"{CR}/{rid}/approve"), 409)
    # An unknown request: 404, nothing written at all (no namespace to audit it in).
    before = kv_tree(gateway, f"{server.prefix}/")
    with server.client("admin") as http:
        assert http.post(f"{CR}/999999/approve", json={}).status_code == 404
        assert http.get(f"{CR}/999999").status_code == 404
    assert kv_tree(gateway, f"{server.prefix}/") == before


def test_publish_revalidates_against_the_current_schema(
    server: ServerProcess, gateway: ConsulGateway, unique_ns: str
) -> None:
    ns = unique_ns
    setup_config(server, ns)
    _policy(server, ns, 1)
    cr = _propose(server, ns, {**GOOD, "currency": "USD"})
    with server.client("admin") as http:
        assert http.post(f"{CR}/{cr['id']}/approve", json={}).status_code == 200
        stricter = {
            "type": "object",
            "properties": {
                "timeout_ms": {"type": "integer"},
                "retries": {"type": "integer"},
                "currency": {"enum": ["EUR"]},
            },
            "required": ["timeout_ms"],
        }
        assert http.put(f"/api/v1/schemas/{ns}/service", json=stricter).status_code == 201
    answer, entry = rejected(server, gateway, lambda: server.client("editor").post(f"{CR}/{cr['id']}/publish"), 422)
    assert answer.json()["errors"][0]["path"] == "/currency" and entry.action == "change-request.publish"
    with server.client("editor") as http:
        assert http.get(f"{CR}/{cr['id']}").json()["state"] == "approved"  # still approved: fix the schema, or withdraw


def test_a_policy_changed_by_another_replica_is_enforced_at_once(
    server: ServerProcess, gateway: ConsulGateway, unique_ns: str
) -> None:
    """The server decides a push from the policy it last read and checks that policy's index in the push's own
    transaction: a policy written elsewhere (here straight into Consul, as another replica would) takes effect on
    the very next push, in both directions."""
    ns = unique_ns
    setup_config(server, ns)
    with server.client("editor") as http:
        assert http.put(f"/api/v1/configs/{ns}/service", json={"data": {**GOOD, "retries": 1}}).status_code == 201
        record = PolicyRecord(namespace=ns, approvals_required=1, updated_by="elsewhere", updated_at=utcnow())
        gateway.put(server.layout.policy(ns), record.to_bytes())
        refused = http.put(f"/api/v1/configs/{ns}/service", json={"data": {**GOOD, "retries": 2}})
        assert refused.status_code == 403 and refused.json()["error"] == "ReviewRequired"
        gateway.delete(server.layout.policy(ns))
        again = http.put(f"/api/v1/configs/{ns}/service", json={"data": {**GOOD, "retries": 2}})
        assert again.status_code == 201, again.text
