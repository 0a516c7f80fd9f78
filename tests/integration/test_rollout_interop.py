"""What the clients beyond the SDK see during a rollout (issue 16): projections hold the head only and follow it when
the rollout completes; OFREP and the OpenFeature provider are cohort-aware (the candidate for the cohort only)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from pydantic_settings import BaseSettings, SettingsConfigDict

from configd_client import ConfigClient
from configd_client.openfeature import ConfigdProvider
from configd_core.consul import ConsulGateway
from tests.conftest import ServerProcess

pytestmark = pytest.mark.timeout(120)

SCHEMA = {"type": "object", "properties": {"features": {"type": "object"}}}
HEAD = {"features": {"new_checkout": False, "limit": 5}}
CANDIDATE = {"features": {"new_checkout": True, "limit": 9}}


class AnyDocument(BaseSettings):
    model_config = SettingsConfigDict(extra="allow")


def _until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return found


def _setup(server: ServerProcess, ns: str, **rollout: Any) -> str:
    ref = f"{ns}/flags"
    with server.client("admin") as http:
        assert http.put(f"/api/v1/schemas/{ref}", json=SCHEMA).status_code == 201
        assert http.put(f"/api/v1/configs/{ref}", json={"data": HEAD}).status_code == 201
        answer = http.post(f"/api/v1/configs/{ref}/rollouts", json={"data": CANDIDATE, "auto": False, **rollout})
        assert answer.status_code == 201, answer.text
        rollout_id: str = answer.json()["rollout"]["id"]
    return rollout_id


def test_projection_holds_the_head_until_the_rollout_completes(
    server: ServerProcess, gateway: ConsulGateway, unique_ns: str
) -> None:
    ref = f"{unique_ns}/flags"
    key = f"interop-{unique_ns}/flags.json"
    with server.client("admin") as http:
        assert http.put(f"/api/v1/schemas/{ref}", json=SCHEMA).status_code == 201
        assert http.put(f"/api/v1/configs/{ref}", json={"data": HEAD}).status_code == 201
        assert http.put(f"/api/v1/projections/{ref}", json={"document": {"key": key}}).status_code == 200
        started = http.post(f"/api/v1/configs/{ref}/rollouts", json={"data": CANDIDATE, "auto": False})
        assert started.status_code == 201, started.text

    def projected() -> Any:
        entry = gateway.get(key)
        assert entry is not None
        return json.loads(entry.value)

    assert projected() == HEAD  # the candidate is never projected
    with server.client("editor") as http:
        assert http.post(f"/api/v1/configs/{ref}/rollouts/current/promote").json()["rollout"]["state"] == "completed"
    _until(lambda: projected() == CANDIDATE)


def test_ofrep_serves_the_candidate_to_the_cohort_only(server: ServerProcess, unique_ns: str) -> None:
    _setup(server, unique_ns, cohort={"labels": {"tier": "canary"}, "instances": ["user-7"]}, steps=[0, 100])
    flag = f"{unique_ns}%2Fflags%2Ffeatures%2Flimit"
    with server.client("reader") as http:

        def evaluate(context: dict[str, Any]) -> dict[str, Any]:
            answer = http.post(f"/ofrep/v1/evaluate/flags/{flag}", json={"context": context})
            assert answer.status_code == 200, answer.text
            body: dict[str, Any] = answer.json()
            return body

        listed = evaluate({"targetingKey": "user-7"})
        assert (listed["value"], listed["variant"], listed["reason"]) == (9, "v2", "SPLIT")
        outside = evaluate({"targetingKey": "user-8", "tier": "canary"})  # step 0 %: only listed instances
        assert (outside["value"], outside["variant"], outside["reason"]) == (5, "v1", "SPLIT")
        anonymous = evaluate({})
        assert (anonymous["value"], anonymous["reason"]) == (5, "STATIC")
        bulk = {"context": {"targetingKey": "user-7", "configd.namespace": unique_ns}}
        first = http.post("/ofrep/v1/evaluate/flags", json=bulk)
        values = {f["key"]: f["value"] for f in first.json()["flags"]}
        assert values[f"{unique_ns}/flags/features/new_checkout"] is True
        other = http.post(
            "/ofrep/v1/evaluate/flags", json={"context": {"targetingKey": "user-8", "configd.namespace": unique_ns}}
        )
        assert other.headers["etag"] != first.headers["etag"]  # who asks decides the answer during a rollout
    with server.client("editor") as http:  # step 100 % of tier=canary
        assert http.post(f"/api/v1/configs/{unique_ns}/flags/rollouts/current/promote").status_code == 200
    with server.client("reader") as http:
        canary = http.post(
            f"/ofrep/v1/evaluate/flags/{flag}", json={"context": {"targetingKey": "u", "tier": "canary"}}
        )
        assert canary.json()["value"] == 9


def test_openfeature_provider_is_cohort_aware_by_construction(
    server: ServerProcess, unique_ns: str, tmp_path: Path
) -> None:
    _setup(server, unique_ns, cohort={"instances": ["in-cohort"]}, steps=[0])
    ref = f"{unique_ns}/flags"
    clients = {
        key: ConfigClient(
            server.consul_addr, prefix=server.prefix, cache=False, application="of-rollout", instance_key=key
        )
        for key in ("in-cohort", "outside")
    }
    try:
        for key, sdk in clients.items():
            api.set_provider_and_wait(ConfigdProvider(sdk, configs=[ref], timeout=3.0), domain=key)
        member = api.get_client("in-cohort").get_integer_details(f"{ref}/features/limit", 0)
        outsider = api.get_client("outside").get_integer_details(f"{ref}/features/limit", 0)
        assert (member.value, member.variant) == (9, "v2")
        assert (outsider.value, outsider.variant) == (5, "v1")
        with server.client("editor") as http:
            assert http.post(f"/api/v1/configs/{ref}/rollouts/current/abort").status_code == 200
        _until(lambda: api.get_client("in-cohort").get_integer_value(f"{ref}/features/limit", 0) == 5)
    finally:
        api.clear_providers()
        for sdk in clients.values():
            sdk.close()
