"""Rollouts in the SDK against the session's real Consul: membership decided by each process from the head its
blocking query delivers, abort back to the head, completion, and the reports in the registration.

The server's rollout endpoints are not used: the test writes what the server writes (a candidate version record and
the head carrying the RolloutRecord) straight to Consul through the gateway.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict

from configd.services.configs import ConfigStore
from configd_client import ChangeEvent, ConfigClient
from configd_core.consul import ConsulGateway
from configd_core.layout import KeyLayout
from configd_core.records import (
    ClientRecord,
    HeadRecord,
    RolloutCohort,
    RolloutPlan,
    RolloutRecord,
    VersionRecord,
    canonical_json,
    document_sha256,
    head_inline,
    utcnow,
)

NS, NAME = "payments", "service"
H_DATA: dict[str, Any] = {"timeout_ms": 100}
C_DATA: dict[str, Any] = {"timeout_ms": 200}


class PaymentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CFGTEST_ROLLOUT_", extra="ignore")

    timeout_ms: int = 500


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


class FakeServer:
    """Writes the records the server's rollout service writes (docs/client.md, "Rollouts")."""

    def __init__(self, gateway: ConsulGateway, layout: KeyLayout) -> None:
        self.gateway = gateway
        self.layout = layout

    def head(self) -> HeadRecord:
        entry = self.gateway.get(self.layout.head(NS, NAME))
        assert entry is not None
        return HeadRecord.from_bytes(entry.value)

    def start(self, rollout_id: str, cohort: RolloutCohort, steps: list[float] | None = None) -> None:
        """Candidate v2 as a version record (not carried in the rollout: members read it), the head keeps v1."""
        base = self.head()
        at = utcnow()
        candidate = VersionRecord(
            namespace=NS,
            name=NAME,
            version=base.version + 1,
            parent=base.version,
            sha256=document_sha256(C_DATA),
            size=len(canonical_json(C_DATA)),
            schema_ref=base.schema_ref,
            author="test",
            created_at=at,
            rollout=rollout_id,
            data=C_DATA,
        )
        self.gateway.put(self.layout.version(NS, NAME, candidate.version), candidate.to_bytes())
        rollout = RolloutRecord(
            id=rollout_id,
            namespace=NS,
            name=NAME,
            base_version=base.version,
            candidate_version=candidate.version,
            candidate_sha256=candidate.sha256,
            candidate_size=candidate.size,
            candidate_data=None,
            plan=RolloutPlan(cohort=cohort, steps=steps or [100.0], bake_seconds=0),
            started_by="test",
            started_at=at,
            step_started_at=at,
            updated_by="test",
            updated_at=at,
        )
        self._put_head(base.model_copy(update={"rollout": rollout}))

    def abort(self) -> None:
        base = self.head()
        assert base.rollout is not None
        self.gateway.delete(self.layout.version(NS, NAME, base.rollout.candidate_version))
        self._put_head(base.model_copy(update={"rollout": None}))

    def complete(self) -> None:
        base = self.head()
        assert base.rollout is not None
        canonical = canonical_json(C_DATA)
        self._put_head(
            base.model_copy(
                update={
                    "version": base.rollout.candidate_version,
                    "sha256": base.rollout.candidate_sha256,
                    "size": len(canonical),
                    "data": head_inline(C_DATA, canonical),
                    "created_at": utcnow(),
                    "rollout": None,
                }
            )
        )

    def _put_head(self, head: HeadRecord) -> None:
        self.gateway.put(self.layout.head(NS, NAME), head.to_bytes())


@pytest.fixture
def server(gateway: ConsulGateway, layout: KeyLayout) -> FakeServer:
    store = ConfigStore(gateway, layout)
    store.register_schema(NS, NAME, {"type": "object"}, actor="test")
    store.push(NS, NAME, H_DATA, actor="test")
    return FakeServer(gateway, layout)


@pytest.fixture
def clients(consul_addr: str, layout: KeyLayout, tmp_path: Path) -> Iterator[tuple[ConfigClient, ConfigClient]]:
    options: dict[str, Any] = {"prefix": layout.prefix, "registration_delay": 0.2, "application": "rollouts"}
    canary = ConfigClient(
        consul_addr, cache_dir=tmp_path / "a", labels={"tier": "canary"}, instance_key="host-a/app", **options
    )
    main = ConfigClient(
        consul_addr, cache_dir=tmp_path / "b", labels={"tier": "main"}, instance_key="host-b/app", **options
    )
    yield canary, main
    canary.close()
    main.close()


def published(gateway: ConsulGateway, layout: KeyLayout, client: ConfigClient) -> ClientRecord | None:
    assert client.registration is not None
    entry = gateway.get(layout.client(NS, client.registration.instance_id))
    return ClientRecord.from_bytes(entry.value) if entry is not None else None


@pytest.mark.timeout(90)
def test_members_run_the_candidate_abort_brings_them_back_and_completion_takes_everyone(
    server: FakeServer, clients: tuple[ConfigClient, ConfigClient], gateway: ConsulGateway, layout: KeyLayout
) -> None:
    canary, main = clients
    member = canary.settings(PaymentSettings, f"{NS}/{NAME}")
    other = main.settings(PaymentSettings, f"{NS}/{NAME}")
    assert (member.version, other.version) == (1, 1)
    member_events: list[ChangeEvent[PaymentSettings]] = []
    other_events: list[tuple[int, int, str | None, int]] = []
    member.on_change(member_events.append)

    @other.on_change
    def watch_other(event: ChangeEvent[PaymentSettings]) -> None:
        other_events.append((event.old_version, event.version, event.rollout, event.new.timeout_ms))

    # Started: the head stays v1, the canary runs the candidate v2 (read from its version record).
    server.start("r1", RolloutCohort(labels={"tier": "canary"}))
    assert member.wait_for_version(2, 10)
    assert (member.version, member.rollout, member.current.timeout_ms) == (2, "r1", 200)
    assert member.callbacks_idle(5)
    assert [(e.old_version, e.version, e.rollout) for e in member_events] == [(1, 2, "r1")]

    # Both report, the non-member too; the canary's health report is a failure of the candidate.
    def report(client: ConfigClient) -> tuple[bool, int] | None:
        record = published(gateway, layout, client)
        found = record.rollouts.get(NAME) if record is not None else None
        return (found.member, found.version) if found is not None and found.id == "r1" else None

    assert wait_until(lambda: report(canary) == (True, 2) and report(main) == (False, 1))
    record = published(gateway, layout, canary)
    assert record is not None and (record.instance_key, record.labels) == ("host-a/app", {"tier": "canary"})
    assert member.report_unhealthy("p99 latency 3 s")
    assert not other.report_unhealthy("not on a candidate")

    def failures(client: ConfigClient) -> list[tuple[str, str, str]]:
        record = published(gateway, layout, client)
        found = record.rollouts.get(NAME) if record is not None else None
        return [(f.instance, f.kind, f.reason) for f in found.failures] if found is not None else []

    assert canary.registration is not None
    instance = canary.registration.instance_id
    assert wait_until(lambda: failures(canary) == [(instance, "unhealthy", "p99 latency 3 s")])
    assert failures(main) == []
    assert canary._fallback is not None and canary._fallback.flush(5)
    cached = canary.cache.read(NS, NAME) if canary.cache is not None else None
    assert cached is not None and cached.version == 1  # the cache holds heads only, never a candidate

    # Aborted: the head stays v1 without its rollout; the canary goes back, a version lower than before.
    server.abort()
    assert wait_until(lambda: member.version == 1)
    assert (member.rollout, member.current.timeout_ms) == (None, 100)
    assert member.callbacks_idle(5)
    assert [(e.old_version, e.version, e.rollout) for e in member_events[1:]] == [(2, 1, None)]
    assert wait_until(lambda: all((r := published(gateway, layout, c)) and r.rollouts == {} for c in clients))

    # A second rollout of the same candidate, completed: the head becomes v2 and everyone runs it.
    server.start("r2", RolloutCohort(instances=["host-a/app"]), steps=[0.0])  # the listed instance only
    assert member.wait_for_version(2, 10) and member.rollout == "r2"
    assert other.callbacks_idle(5) and other_events == []
    server.complete()
    assert other.wait_for_version(2, 10) and other.callbacks_idle(5)
    assert (other.version, other.current.timeout_ms, other.rollout) == (2, 200, None)
    assert other_events == [(1, 2, None, 200)]  # the non-member saw the candidate's content only as the head
    assert wait_until(lambda: member.rollout is None)
    assert member.callbacks_idle(5) and len(member_events) == 3  # completion is no event for a member
    assert wait_until(lambda: (r := published(gateway, layout, canary)) is not None and r.rollouts == {})
    canary.close()
    cached = canary.cache.read(NS, NAME) if canary.cache is not None else None
    assert cached is not None and cached.version == 2  # the completed head is cached
