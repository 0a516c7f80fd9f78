"""Bearer tokens, roles and namespace scopes: pure checks of the token book, then the real server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from configd.auth import Principal, TokenBook, TokenSpec, bearer_token
from configd.errors import Forbidden, Unauthenticated
from configd_core.consul import ConsulGateway
from configd_core.errors import ConfigdError
from tests.api_support import GOOD, SERVICE_SCHEMA, rejected, setup_config, unchanged_without_audit
from tests.conftest import ServerProcess

pytestmark = pytest.mark.timeout(120)


# --- pure ---------------------------------------------------------------------------------------------------
def _book() -> TokenBook:
    return TokenBook(
        (
            TokenSpec(name="ci", token="s3cret-token-ci", role="editor", namespaces=("payments", "team-*")),
            TokenSpec(name="ops", token="s3cret-token-ops", role="admin"),
        )
    )


def test_token_book_authenticates_and_scopes() -> None:
    book = _book()
    ci = book.authenticate("s3cret-token-ci")
    assert ci == Principal("ci", "editor", ("payments", "team-*"))
    assert ci.covers("payments") and ci.covers("team-x") and not ci.covers("paymentsx") and not ci.covers("web")
    ci.authorize("reader", "team-x")
    ci.authorize("editor", "payments")
    with pytest.raises(Forbidden, match="needs admin"):
        ci.authorize("admin", "payments")
    with pytest.raises(Forbidden, match="namespace 'web'"):
        ci.authorize("reader", "web")
    assert book.authenticate("s3cret-token-ops").role == "admin"
    for wrong in (None, "", "s3cret-token-c", "s3cret-token-ci ", "S3CRET-TOKEN-CI"):
        with pytest.raises(Unauthenticated):
            book.authenticate(wrong)


def test_bearer_header_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_tokens_file_errors_never_show_tokens(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [{"name": "a", "token": "very-secret-1", "role": "superuser"}]}))
    with pytest.raises(ConfigdError) as caught:
        TokenBook.from_file(path)
    assert "very-secret-1" not in str(caught.value) and "role" in str(caught.value)
    path.write_text(json.dumps({"tokens": [{"name": "a", "token": "short", "role": "admin"}]}))
    with pytest.raises(ConfigdError, match="at least 8"):
        TokenBook.from_file(path)
    dup = {"name": "a", "token": "long-enough-1", "role": "admin"}
    path.write_text(json.dumps({"tokens": [dup, {**dup, "token": "long-enough-2"}]}))
    with pytest.raises(ConfigdError, match="duplicate"):
        TokenBook.from_file(path)
    with pytest.raises(ConfigdError, match="cannot read"):
        TokenBook.from_file(tmp_path / "missing.json")


# --- against the server -------------------------------------------------------------------------------------
def test_401_without_or_with_unknown_token(server: ServerProcess, gateway: ConsulGateway, unique_ns: str) -> None:
    setup_config(server, unique_ns)
    url = f"/api/v1/configs/{unique_ns}/service"
    for headers in ({}, {"Authorization": "Bearer not-a-known-token"}, {"Authorization": "Basic YWxhZGRpbjpvcGVu"}):
        with httpx.Client(base_url=server.base_url, headers=headers) as http:
            # Counted and logged, but never stored: anonymous callers must not be able to grow Consul's KV.
            answer = unchanged_without_audit(server, gateway, lambda: http.put(url, json={"data": GOOD}), 401)
            assert answer.headers["www-authenticate"] == "Bearer"
            read = http.get(url)
            assert read.status_code == 401 and read.json()["detail"]
            assert http.get("/api/v1/audit").status_code == 401
    with httpx.Client(base_url=server.base_url) as http:
        assert http.get("/healthz").status_code == 200  # health and metrics need no token
        assert http.get("/metrics").status_code == 200


def test_reader_reads_but_never_writes(server: ServerProcess, gateway: ConsulGateway, unique_ns: str) -> None:
    setup_config(server, unique_ns)
    base = f"/api/v1/configs/{unique_ns}/service"
    with server.client("reader") as http:
        for path in (
            base,
            f"{base}/versions",
            f"{base}/versions/1",
            f"{base}/diff?from=1&to=1",
            f"/api/v1/schemas/{unique_ns}/service",
        ):
            assert http.get(path).status_code == 200, path
        assert http.post(f"{base}/validate", json={"data": GOOD}).status_code == 200
        writes = [
            ("push", lambda: http.put(base, json={"data": {**GOOD, "retries": 1}})),
            ("rollback", lambda: http.post(f"{base}/rollback", json={"to_version": 1})),
            ("schema.register", lambda: http.put(f"/api/v1/schemas/{unique_ns}/service", json=SERVICE_SCHEMA)),
            ("delete", lambda: http.delete(base)),
        ]
        for action, call in writes:
            answer, record = rejected(server, gateway, call, 403)
            assert "role reader" in answer.json()["detail"]
            assert (record.action, record.actor, record.name) == (action, "reader", "service")


def test_editor_pushes_and_rolls_back_but_admin_manages_schemas_and_deletes(
    server: ServerProcess, gateway: ConsulGateway, unique_ns: str
) -> None:
    setup_config(server, unique_ns)
    base = f"/api/v1/configs/{unique_ns}/service"
    with server.client("editor") as http:
        assert http.put(base, json={"data": {**GOOD, "retries": 1}}).status_code == 201
        assert http.post(f"{base}/rollback", json={"to_version": 1}).status_code == 201
        _, record = rejected(
            server, gateway, lambda: http.put(f"/api/v1/schemas/{unique_ns}/service", json=SERVICE_SCHEMA), 403
        )
        assert record.action == "schema.register" and record.actor == "editor"
        _, record = rejected(server, gateway, lambda: http.delete(base), 403)
        assert record.action == "delete"
    with server.client("admin") as http:
        assert (
            http.put(f"/api/v1/schemas/{unique_ns}/service", json={**SERVICE_SCHEMA, "title": "x"}).status_code == 201
        )
        assert http.delete(base).status_code == 200


def test_namespace_scoped_tokens(server: ServerProcess, gateway: ConsulGateway, unique_ns: str) -> None:
    team_ns = "team-a-" + unique_ns.removeprefix("ns-")
    setup_config(server, unique_ns)
    with server.client("team-admin") as http:
        assert http.put(f"/api/v1/schemas/{team_ns}/service", json=SERVICE_SCHEMA).status_code == 201
    with server.client("team-editor") as http:
        assert http.put(f"/api/v1/configs/{team_ns}/service", json={"data": GOOD}).status_code == 201
        answer, record = rejected(
            server, gateway, lambda: http.put(f"/api/v1/configs/{unique_ns}/service", json={"data": GOOD}), 403
        )
        assert f"namespace {unique_ns!r}" in answer.json()["detail"] and record.namespace == unique_ns
    with server.client("team-admin") as http:
        rejected(server, gateway, lambda: http.delete(f"/api/v1/configs/{unique_ns}/service"), 403)
    with server.client("team-reader") as http:
        assert http.get(f"/api/v1/configs/{team_ns}/service").status_code == 200
        assert http.get(f"/api/v1/configs/{unique_ns}/service").status_code == 403
        assert http.get(f"/api/v1/clients/{unique_ns}").status_code == 403
        assert http.get("/api/v1/audit", params={"namespace": unique_ns}).status_code == 403
        namespaces = [n["namespace"] for n in http.get("/api/v1/configs").json()["namespaces"]]
        assert team_ns in namespaces and all(n.startswith("team-a-") for n in namespaces)
        entries = http.get("/api/v1/audit", params={"limit": 1000}).json()["entries"]
        assert entries and all(e["namespace"].startswith("team-a-") for e in entries)


def test_server_log_never_contains_a_token(server: ServerProcess, unique_ns: str) -> None:
    setup_config(server, unique_ns)
    with httpx.Client(base_url=server.base_url, headers={"Authorization": "Bearer wrong-token-xyz"}) as http:
        http.get(f"/api/v1/configs/{unique_ns}/service")
    log = server.log_path.read_text(errors="replace")
    assert "GET /api/v1/configs" in log  # the access log is on, so the check below means something
    for token in [*server.tokens.values(), "wrong-token-xyz"]:
        assert token not in log
