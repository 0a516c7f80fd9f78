"""``/api/v1/retention`` and ``/api/v1/storage`` on a real server (issue 18): a policy is set and cleared with its
audit entry; an invalid policy or a caller without the role is refused and writes nothing but the rejection's
audit entry; storage counts what Consul holds for the namespace."""

from __future__ import annotations

from configd_core.consul import ConsulGateway
from tests.api_support import GOOD, rejected, setup_config
from tests.conftest import ServerProcess


def test_policy_round_trip_is_audited(server: ServerProcess, gateway: ConsulGateway, unique_ns: str) -> None:
    with server.client("reader") as http:
        assert http.get(f"/api/v1/retention/{unique_ns}").json() == {
            "namespace": unique_ns,
            "policy": {},
            "keeps_everything": True,
        }
    policy = {"audit_max_entries": 100, "versions_keep_last": 10, "versions_max_age_days": 30}
    with server.client("admin") as http:
        answer = http.put(f"/api/v1/retention/{unique_ns}", json=policy)
        assert answer.status_code == 200, answer.text
        shown = http.get(f"/api/v1/retention/{unique_ns}").json()
        assert shown["policy"] == policy and shown["keeps_everything"] is False
        entries = http.get("/api/v1/audit", params={"namespace": unique_ns}).json()["entries"]
        assert [(e["action"], e["actor"], e["result"]) for e in entries] == [("retention.set", "admin", "created")]
        assert http.delete(f"/api/v1/retention/{unique_ns}").status_code == 200
        assert http.get(f"/api/v1/retention/{unique_ns}").json()["keeps_everything"] is True
        entries = http.get("/api/v1/audit", params={"namespace": unique_ns}).json()["entries"]
        assert [e["action"] for e in entries] == ["retention.clear", "retention.set"]
    assert gateway.get(server.layout.retention(unique_ns)) is None


def test_refused_policies_write_only_their_audit_entry(
    server: ServerProcess, gateway: ConsulGateway, unique_ns: str
) -> None:
    url = f"{server.base_url}/api/v1/retention/{unique_ns}"
    cases = [
        ("admin", {"versions_keep_last": 5}, 422, "set both"),
        ("admin", {"audit_max_entries": 0}, 422, "audit_max_entries"),
        ("admin", {"keep": "everything"}, 422, "keep"),
        ("editor", {"audit_max_entries": 5}, 403, "needs admin"),
        ("team-admin", {"audit_max_entries": 5}, 403, "may not access"),
    ]
    for token, body, status, words in cases:
        with server.client(token) as http:
            answer, record = rejected(server, gateway, lambda: http.put(url, json=body), status)  # noqa: B023
        assert words in answer.text, answer.text
        assert record.action == "retention"
    assert gateway.get(server.layout.retention(unique_ns)) is None


def test_storage_counts_the_namespace(server: ServerProcess, unique_ns: str) -> None:
    setup_config(server, unique_ns, "service", GOOD, {**GOOD, "retries": 4})
    with server.client("reader") as http:
        body = http.get("/api/v1/storage", params={"namespace": unique_ns}).json()
    usage = body["namespaces"][unique_ns]
    assert body["fresh"] is True
    kinds = usage["by_kind"]
    assert (kinds["heads"]["keys"], kinds["versions"]["keys"], kinds["schemas"]["keys"]) == (1, 2, 1)
    assert kinds["audit"]["keys"] == 3  # the schema registration and two pushes
    assert usage["keys"] == sum(k["keys"] for k in kinds.values())
    assert usage["bytes"] > 0
    with server.client("team-reader") as http:
        assert http.get("/api/v1/storage", params={"namespace": unique_ns}).status_code == 403
