"""Consul ACL mode (ACLs enabled, default deny): configd with a token scoped to its own key prefix, and an SDK
client whose token reads only namespace ``alpha``. The policies are the ones docs/security.md prints, built by the
same functions.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict

from configd.devagent import ConsulAgent
from configd_client import ConfigClient, ConsulPermissionDenied
from configd_core.consul import ConsulGateway
from configd_core.layout import KeyLayout
from tests.conftest import start_server
from tests.reliability.support import wait_until

pytestmark = [pytest.mark.timeout(180), pytest.mark.reliability]

MASTER = "acl-master-" + uuid.uuid4().hex
# Consul 1.8 syntax. Token persistence needs a data dir: the dev agent's temporary one.
ACL_HCL = (
    'acl { enabled = true, default_policy = "deny", enable_token_persistence = true, '
    f'tokens {{ master = "{MASTER}" }} }}'
)


def configd_policy(prefix: str) -> str:
    """configd's own token: everything under its key prefix, nothing else (leader status needs no ACL)."""
    return f'key_prefix "{prefix}/" {{\n  policy = "write"\n}}\nsession_prefix "" {{\n  policy = "write"\n}}\n'


def application_policy(prefix: str, namespace: str) -> str:
    """An application reading one namespace: heads, versions and blobs; its own registrations; sessions."""
    return (
        f'key_prefix "{prefix}/heads/{namespace}/" {{\n  policy = "read"\n}}\n'
        f'key_prefix "{prefix}/versions/{namespace}/" {{\n  policy = "read"\n}}\n'
        f'key_prefix "{prefix}/blobs/{namespace}/" {{\n  policy = "read"\n}}\n'
        f'key_prefix "{prefix}/clients/{namespace}/" {{\n  policy = "write"\n}}\n'
        'session_prefix "" {\n  policy = "write"\n}\n'
    )


def operator_policy(prefix: str) -> str:
    """A human operator: reads every configd record and the cluster state, writes nothing (configd writes)."""
    return f'key_prefix "{prefix}/" {{\n  policy = "read"\n}}\noperator = "read"\n'


class Service(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_prefix="ACL_TEST_")
    timeout_ms: int = 0


@pytest.fixture(scope="module")
def acl_agent() -> Iterator[ConsulAgent]:
    with ConsulAgent.dev(name="configd-acl", extra_hcl=ACL_HCL) as agent:
        yield agent


def _token(agent: ConsulAgent, name: str, rules: str) -> str:
    """Create a policy and a token holding it through Consul's ACL HTTP API; returns the token's secret."""
    headers = {"X-Consul-Token": MASTER}
    with httpx.Client(base_url=agent.http_addr, headers=headers, timeout=10) as http:
        policy = http.put("/v1/acl/policy", json={"Name": name, "Rules": rules})
        assert policy.status_code == 200, policy.text
        token = http.put("/v1/acl/token", json={"Description": name, "Policies": [{"Name": name}]})
        assert token.status_code == 200, token.text
        return str(token.json()["SecretID"])


def test_configd_with_a_prefix_scoped_token(acl_agent: ConsulAgent, tmp_path: Path) -> None:
    prefix = f"acl-{uuid.uuid4().hex[:8]}"
    secret = _token(acl_agent, f"configd-{prefix}", configd_policy(prefix))
    proc = start_server(acl_agent.http_addr, tmp_path / "ok", prefix=prefix, env={"CONSUL_HTTP_TOKEN": secret})
    try:
        with proc.client("admin") as http:
            assert http.get("/healthz").status_code == 200
            for ns in ("alpha", "bravo"):
                assert http.put(f"/api/v1/schemas/{ns}/service", json={"type": "object"}).status_code == 201
                assert http.put(f"/api/v1/configs/{ns}/service", json={"data": {"timeout_ms": 1}}).status_code == 201
                assert http.put(f"/api/v1/configs/{ns}/service", json={"data": {"timeout_ms": 2}}).status_code == 201
                assert http.get(f"/api/v1/configs/{ns}/service/versions").json()["total"] == 2
                assert http.get(f"/api/v1/configs/{ns}/service/diff").status_code == 200
                assert http.post(f"/api/v1/configs/{ns}/service/rollback", json={"to_version": 1}).status_code == 201
            assert {n["namespace"] for n in http.get("/api/v1/configs").json()["namespaces"]} == {"alpha", "bravo"}
            assert len(http.get("/api/v1/audit").json()["entries"]) >= 8
            assert http.get("/api/v1/clients/alpha").status_code == 200
    finally:
        proc.stop()

    # The same token cannot write outside configd's prefix: directly, or through a configd with another prefix.
    with ConsulGateway(acl_agent.http_addr, token=secret) as gateway:
        with pytest.raises(ConsulPermissionDenied):
            gateway.put("elsewhere/key", b"x")
        with pytest.raises(ConsulPermissionDenied):
            gateway.put(f"{prefix}-sibling/key", b"x")  # a prefix that merely starts the same way
        assert gateway.get(f"{prefix}/heads/alpha/service") is not None
    stray = start_server(acl_agent.http_addr, tmp_path / "stray", prefix="other", env={"CONSUL_HTTP_TOKEN": secret})
    try:
        with stray.client("admin") as http:
            answer = http.put("/api/v1/schemas/alpha/service", json={"type": "object"})
        assert answer.status_code == 503 and "ACL token" in answer.json()["detail"], answer.text
    finally:
        stray.stop()
    with ConsulGateway(acl_agent.http_addr, token=MASTER) as root:
        assert root.keys("elsewhere/") == [] and root.keys("other/") == []


def test_application_token_reads_only_its_namespace(acl_agent: ConsulAgent, tmp_path: Path) -> None:
    prefix = f"acl-{uuid.uuid4().hex[:8]}"
    layout = KeyLayout(prefix)
    configd_secret = _token(acl_agent, f"configd-{prefix}", configd_policy(prefix))
    app_secret = _token(acl_agent, f"app-alpha-{prefix}", application_policy(prefix, "alpha"))
    operator_secret = _token(acl_agent, f"operator-{prefix}", operator_policy(prefix))
    proc = start_server(acl_agent.http_addr, tmp_path / "srv", prefix=prefix, env={"CONSUL_HTTP_TOKEN": configd_secret})
    try:
        with proc.client("admin") as http:
            for ns in ("alpha", "bravo"):
                assert http.put(f"/api/v1/schemas/{ns}/service", json={"type": "object"}).status_code == 201
                assert http.put(f"/api/v1/configs/{ns}/service", json={"data": {"timeout_ms": 7}}).status_code == 201
        with ConfigClient(acl_agent.http_addr, token=app_secret, prefix=prefix, cache_dir=tmp_path / "c") as client:
            alpha = client.settings(Service, "alpha/service", timeout=10)
            assert alpha.version == 1 and alpha.current.timeout_ms == 7

            started = time.monotonic()
            with pytest.raises(ConsulPermissionDenied) as denied:
                client.settings(Service, "bravo/service", timeout=3)
            print(f"\nbravo refused after {time.monotonic() - started:.2f} s: {denied.value}")
            assert "bravo/service" in str(denied.value) and "ACL" in str(denied.value)

            # The refusal crashed nothing: alpha keeps following configd, and the registration was written.
            with proc.client("admin") as http:
                assert http.put("/api/v1/configs/alpha/service", json={"data": {"timeout_ms": 8}}).status_code == 201
            assert alpha.wait_for_version(2, 30) and alpha.current.timeout_ms == 8 and not alpha.stale
            registered = wait_until(lambda: bool(proc_clients(proc, "alpha")), 30)
            assert registered is not None, "the application's registration never appeared"

        with ConsulGateway(acl_agent.http_addr, token=app_secret) as app:
            with pytest.raises(ConsulPermissionDenied):
                app.put(layout.head("alpha", "service"), b"{}")  # read-only on its configs
            with pytest.raises(ConsulPermissionDenied):
                app.get(layout.version("bravo", "service", 1))
            assert app.list(layout.heads_prefix("bravo"))[1] == []  # Consul filters what a token may not read
        with ConsulGateway(acl_agent.http_addr, token=operator_secret) as operator:
            assert operator.get(layout.head("bravo", "service")) is not None
            assert operator.leader()
            with pytest.raises(ConsulPermissionDenied):
                operator.put(layout.head("bravo", "service"), b"{}")
    finally:
        proc.stop()


def proc_clients(proc: object, namespace: str) -> list[object]:
    from tests.conftest import ServerProcess

    assert isinstance(proc, ServerProcess)
    with proc.client("reader") as http:
        return list(http.get(f"/api/v1/clients/{namespace}").json()["clients"])
