"""Every write endpoint × every kind of caller: no token, an unknown token, reader/editor/admin with all
namespaces, and reader/editor/admin scoped to ``team-a-*`` — inside and outside their namespaces.

A caller may write only with the right role in the right namespace; every refusal is a 401/403 with a detail,
leaves the config as it was and (on the API) is audited with its status and actor. The UI's rollback form is a
write too: it needs a signed-in session, the session's CSRF token and a same-origin request (the browser tests in
tests/test_ui_browser.py cover forged and cross-site posts; this matrix covers roles and namespaces).
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from configd.auth import ROLE_RANK, Role
from configd_core.consul import ConsulGateway
from tests.api_support import GOOD, SERVICE_SCHEMA, rejected, setup_config, unchanged_without_audit
from tests.conftest import SERVER_TOKENS, ServerProcess

pytestmark = [pytest.mark.timeout(240), pytest.mark.reliability]

V2 = {**GOOD, "retries": 5}
CALLERS: list[str | None] = [None, "unknown", "reader", "editor", "admin", "team-reader", "team-editor", "team-admin"]


@dataclass(frozen=True)
class Endpoint:
    action: str
    role: Role
    success: int
    send: Callable[[httpx.Client, str, str], httpx.Response]


ENDPOINTS = {
    e.action: e
    for e in [
        Endpoint(
            "schema.register",
            "admin",
            201,
            lambda http, ns, name: http.put(
                f"/api/v1/schemas/{ns}/{name}", json={**SERVICE_SCHEMA, "description": "v2"}
            ),
        ),
        Endpoint(
            "push", "editor", 201, lambda http, ns, name: http.put(f"/api/v1/configs/{ns}/{name}", json={"data": V2})
        ),
        Endpoint(
            "rollback",
            "editor",
            201,
            lambda http, ns, name: http.post(f"/api/v1/configs/{ns}/{name}/rollback", json={"to_version": 1}),
        ),
        Endpoint("delete", "admin", 200, lambda http, ns, name: http.delete(f"/api/v1/configs/{ns}/{name}")),
    ]
}


def expected_status(caller: str | None, namespace: str, role: Role, success: int) -> int:
    if caller is None or caller == "unknown":
        return 401
    _, held, globs = SERVER_TOKENS[caller]
    if ROLE_RANK[held] < ROLE_RANK[role]:  # type: ignore[index]
        return 403
    if not any(re.fullmatch(g.replace("*", ".*"), namespace) for g in globs):
        return 403
    return success


def _client(server: ServerProcess, caller: str | None) -> httpx.Client:
    if caller == "unknown":
        return httpx.Client(base_url=server.base_url, headers={"Authorization": "Bearer not-a-known-token-0000"})
    return server.client(caller)


def _head(server: ServerProcess, ns: str, name: str) -> tuple[int, int]:
    with server.client("admin") as http:
        config = http.get(f"/api/v1/configs/{ns}/{name}")
        schema = http.get(f"/api/v1/schemas/{ns}/{name}")
    return (config.json()["version"] if config.status_code == 200 else 0), schema.json()["version"]


@pytest.mark.parametrize("action", sorted(ENDPOINTS))
def test_api_write_matrix(action: str, server: ServerProcess, gateway: ConsulGateway) -> None:
    endpoint = ENDPOINTS[action]
    inside, outside = f"team-a-{uuid.uuid4().hex[:8]}", f"ns-{uuid.uuid4().hex[:8]}"
    cells = 0
    for namespace in (inside, outside):
        for caller in CALLERS:
            name = f"c-{uuid.uuid4().hex[:8]}"
            setup_config(server, namespace, name, GOOD, {**GOOD, "retries": 4})
            status = expected_status(caller, namespace, endpoint.role, endpoint.success)
            with _client(server, caller) as http:
                if status == endpoint.success:
                    answer = endpoint.send(http, namespace, name)
                    assert answer.status_code == status, (caller, namespace, answer.text)
                    assert _head(server, namespace, name) != (2, 1), "an allowed write changed nothing"
                elif status == 401:  # anonymous refusals are counted and logged, never written to Consul
                    request = functools.partial(endpoint.send, http, namespace, name)
                    answer = unchanged_without_audit(server, gateway, request, status)
                    assert answer.headers["www-authenticate"] == "Bearer" and answer.json()["detail"]
                else:
                    request = functools.partial(endpoint.send, http, namespace, name)
                    answer, record = rejected(server, gateway, request, status)
                    assert record.action == action and record.namespace == namespace
                    assert record.actor == caller
                    assert _head(server, namespace, name) == (2, 1)
            cells += 1
    assert cells == 2 * len(CALLERS)


_CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


def _ui_session(server: ServerProcess, caller: str | None) -> tuple[httpx.Client, str]:
    """An HTTP client signed in to the UI as ``caller`` (None: not signed in) and its CSRF token."""
    http = httpx.Client(base_url=server.base_url, headers={"Origin": server.base_url}, timeout=30)
    if caller is None:
        return http, "0" * 64
    signed_in = http.post("/ui/login", data={"token": server.tokens[caller], "next": "/ui/"})
    assert signed_in.status_code == 303, signed_in.text
    found = _CSRF.search(http.get("/ui/").text)
    assert found, "no CSRF token on the signed-in page"
    return http, found.group(1)


def test_ui_rollback_matrix(server: ServerProcess) -> None:
    inside, outside = f"team-a-{uuid.uuid4().hex[:8]}", f"ns-{uuid.uuid4().hex[:8]}"
    for caller in [c for c in CALLERS if c != "unknown"]:
        http, csrf = _ui_session(server, caller)
        try:
            for namespace in (inside, outside):
                name = f"u-{uuid.uuid4().hex[:8]}"
                setup_config(server, namespace, name, GOOD, V2)
                status = expected_status(caller, namespace, "editor", 303)
                form = {"to_version": "1", "expected_version": "2", "csrf": csrf}
                answer = http.post(f"/ui/configs/{namespace}/{name}/rollback", data=form)
                assert answer.status_code == status, (caller, namespace, answer.status_code)
                assert _head(server, namespace, name)[0] == (3 if status == 303 else 2)
                if status != 303:
                    assert "sign in" in answer.text.lower() or "may not" in answer.text or "role" in answer.text
                # Without the CSRF token even an allowed caller is refused.
                forged = http.post(f"/ui/configs/{namespace}/{name}/rollback", data={"to_version": "1"})
                assert forged.status_code in (401, 403)
                assert _head(server, namespace, name)[0] == (3 if status == 303 else 2)
        finally:
            http.close()
