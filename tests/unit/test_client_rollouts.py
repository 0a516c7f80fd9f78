"""Rollouts in the SDK, without network: the apply rule, membership from the head in the watcher's processing,
what a LiveSettings reports as failures, and the registration's report bookkeeping."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict

from configd_client import ChangeEvent, ConfigClient, ValidationFailed
from configd_client._async import _LoopSubscription
from configd_client._dispatch import CallbackWorker, Mailbox
from configd_client._events import Applied, Document, plan_apply
from configd_client._live import LiveSettings
from configd_client._registration import InstanceRegistration
from configd_client._rollouts import (
    MAX_FAILURE_REASON,
    MAX_REPORTED_FAILURES,
    RolloutParticipant,
    RolloutReports,
    failure,
)
from configd_client._source import SettingsFactory
from configd_client._watcher import NamespaceWatcher, head_key
from configd_core.consul import ConsulGateway
from configd_core.layout import KeyLayout
from configd_core.records import (
    FailureKind,
    HeadRecord,
    RolloutCohort,
    RolloutPlan,
    RolloutRecord,
    SchemaRef,
    canonical_json,
    document_sha256,
    head_inline,
)
from configd_core.rollouts import InstanceIdentity
from tests.unit.test_client_fork_logic import run_forked

NS, NAME = "payments", "service"
H_DATA: dict[str, Any] = {"timeout_ms": 100}
C_DATA: dict[str, Any] = {"timeout_ms": 200}


class Payment(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CFGTEST_ROLL_", extra="ignore")

    timeout_ms: int = 500


def sha(data: dict[str, Any]) -> str:
    return document_sha256(data)


def doc(version: int, data: dict[str, Any], rollout: str | None = None, origin: str = "consul") -> Document:
    return Document(NS, NAME, version, sha(data), data, origin, rollout)  # type: ignore[arg-type]


def rollout(
    rid: str = "r1",
    *,
    labels: dict[str, str] | None = None,
    instances: list[str] | None = None,
    steps: list[float] | None = None,
    step: int = 0,
    state: str = "running",
    candidate: dict[str, Any] | None = None,
    inline: bool = True,
) -> RolloutRecord:
    data = C_DATA if candidate is None else candidate
    at = "2026-12-02T00:00:00.000000Z"
    return RolloutRecord(
        id=rid,
        namespace=NS,
        name=NAME,
        base_version=1,
        candidate_version=2,
        candidate_sha256=sha(data),
        candidate_size=len(canonical_json(data)),
        candidate_data=data if inline else None,
        plan=RolloutPlan(
            cohort=RolloutCohort(labels=labels or {}, instances=instances or []), steps=steps or [100.0], bake_seconds=0
        ),
        step=step,
        state=state,  # type: ignore[arg-type]
        started_by="t",
        started_at=at,
        step_started_at=at,
        updated_by="t",
        updated_at=at,
    )


def head(version: int, data: dict[str, Any], ro: RolloutRecord | None = None) -> HeadRecord:
    canonical = canonical_json(data)
    return HeadRecord(
        namespace=NS,
        name=NAME,
        version=version,
        sha256=sha(data),
        size=len(canonical),
        schema_ref=SchemaRef(namespace=NS, name=NAME, version=1),
        author="t",
        created_at="2026-12-02T00:00:00.000000Z",
        data=head_inline(data, canonical),
        rollout=ro,
    )


# --- the apply rule ------------------------------------------------------------------------------------------------
def test_plan_apply_lets_a_member_leave_its_candidate_even_for_a_lower_version() -> None:
    on_candidate = Applied(2, sha(C_DATA), "consul", "r1")
    assert plan_apply(on_candidate, doc(1, H_DATA))  # aborted: back to the head, a lower version
    assert not plan_apply(on_candidate, doc(2, C_DATA, "r1"))  # the same candidate again (a step, a pause)
    assert not plan_apply(on_candidate, doc(2, C_DATA))  # completed: the head is the candidate, no event
    assert plan_apply(on_candidate, doc(2, {"timeout_ms": 300}, "r2"))  # a later rollout's candidate, same number
    on_head = Applied(3, sha(H_DATA), "consul")
    assert not plan_apply(on_head, doc(2, C_DATA, "r1"))  # versions only move forward outside rollouts
    assert plan_apply(on_head, doc(4, C_DATA, "r1"))


# --- the watcher's processing: membership from the head, no network --------------------------------------------------
class Sink:
    """Records what a participant reports (the registration's place)."""

    def __init__(self) -> None:
        self.decisions: list[tuple[str, bool]] = []
        self.ended = 0
        self.failures: list[tuple[str, str, str]] = []

    def rollout_decided(self, namespace: str, name: str, rollout_id: str, member: bool) -> None:
        self.decisions.append((rollout_id, member))

    def rollout_ended(self, namespace: str, name: str) -> None:
        self.ended += 1

    def rollout_failed(self, namespace: str, name: str, rollout_id: str, kind: FailureKind, reason: str) -> None:
        self.failures.append((rollout_id, kind, reason))


class Instance:
    """One process's watcher with its own identity, following payments/service with one LiveSettings."""

    def __init__(self, key: str, labels: dict[str, str]) -> None:
        self.sink = Sink()
        self.participant = RolloutParticipant(InstanceIdentity(key, f"{key}-id", labels), self.sink)
        self.gateway = ConsulGateway("http://127.0.0.1:1")  # never reached: every document rides in its head
        self.watcher = NamespaceWatcher(
            NS, KeyLayout("t"), blocking=self.gateway, reader=self.gateway, participant=self.participant
        )
        self.live: LiveSettings[Payment] = LiveSettings(
            SettingsFactory(Payment),
            NS,
            NAME,
            on_failure=lambda live, rid, kind, reason: self.participant.failed(NS, NAME, rid, kind, reason),
        )
        self.events: list[ChangeEvent[Payment]] = []
        self.live.on_change(self.events.append)

    def deliver(self, record: HeadRecord) -> None:
        assert self.watcher._process({NAME: record}, {NAME: (self.live,)})
        assert self.live.callbacks_idle(5)

    def close(self) -> None:
        self.live.close()
        self.gateway.close()


@pytest.fixture
def pair() -> Iterator[tuple[Instance, Instance]]:
    member, other = Instance("host-a/app", {"tier": "canary"}), Instance("host-b/app", {"tier": "main"})
    yield member, other
    member.close()
    other.close()


def test_members_run_the_candidate_and_non_members_never_see_it(pair: tuple[Instance, Instance]) -> None:
    member, other = pair
    for instance in pair:
        instance.deliver(head(1, H_DATA))
    assert (member.live.version, other.live.version) == (1, 1)

    member_events = len(member.events)
    started = head(1, H_DATA, rollout(labels={"tier": "canary"}))
    for instance in pair:
        instance.deliver(started)
    assert (member.live.version, member.live.rollout, member.live.current.timeout_ms) == (2, "r1", 200)
    assert [(e.old_version, e.version, e.rollout) for e in member.events[member_events:]] == [(1, 2, "r1")]
    assert (other.live.version, other.live.rollout, other.events) == (1, None, [])
    assert (member.sink.decisions, other.sink.decisions) == ([("r1", True)], [("r1", False)])

    # Aborted: the head stays v1 and loses its rollout; the member goes back, a lower version than before.
    for instance in pair:
        instance.deliver(head(1, H_DATA))
    assert (member.live.version, member.live.rollout, member.live.current.timeout_ms) == (1, None, 100)
    assert [(e.old_version, e.version, e.rollout) for e in member.events[-1:]] == [(2, 1, None)]
    assert other.events == [] and member.sink.ended == other.sink.ended == 2


def test_a_completed_rollout_is_no_event_for_members_and_the_head_for_the_others(
    pair: tuple[Instance, Instance],
) -> None:
    member, other = pair
    for instance in pair:
        instance.deliver(head(1, H_DATA, rollout(labels={"tier": "canary"}, inline=True)))
    before = len(member.events)
    applied: list[Document] = []
    member.live._on_applied = lambda live, document: applied.append(document)
    for instance in pair:
        instance.deliver(head(2, C_DATA))  # completed: the candidate is the head
    assert len(member.events) == before and (member.live.version, member.live.rollout) == (2, None)
    assert [(d.version, d.rollout) for d in applied] == [(2, None)]  # the cache and registration hear of it
    assert [(e.old_version, e.version) for e in other.events] == [(1, 2)]
    assert not member.live.report_unhealthy("too late: no rollout any more")


def test_a_step_that_grows_the_cohort_takes_new_members_to_the_candidate(pair: tuple[Instance, Instance]) -> None:
    member, other = pair
    steps = [0.0, 100.0]
    first = head(1, H_DATA, rollout(steps=steps, step=0, instances=["host-a/app"]))  # the key listed: always in
    second = head(1, H_DATA, rollout(steps=steps, step=1, instances=["host-a/app"]))
    assert head_key(first) != head_key(second)
    for instance in pair:
        instance.deliver(first)
    assert (member.live.version, other.live.version) == (2, 1)
    for instance in pair:
        instance.deliver(second)
    assert (member.live.version, other.live.version) == (2, 2)
    assert len(member.events) == 0 and [(e.old_version, e.version, e.rollout) for e in other.events] == [(1, 2, "r1")]
    assert other.sink.decisions == [("r1", False), ("r1", True)]


def test_a_paused_rollout_keeps_its_members_and_a_watcher_without_identity_is_never_one() -> None:
    gateway = ConsulGateway("http://127.0.0.1:1")
    watcher = NamespaceWatcher(NS, KeyLayout("t"), blocking=gateway, reader=gateway)
    live: LiveSettings[Payment] = LiveSettings(SettingsFactory(Payment), NS, NAME)
    try:
        assert watcher._process({NAME: head(1, H_DATA, rollout())}, {NAME: (live,)})
        assert (live.version, live.rollout) == (1, None)
    finally:
        live.close()
        gateway.close()

    member = Instance("host-a/app", {})
    try:
        member.deliver(head(1, H_DATA, rollout()))
        member.deliver(head(1, H_DATA, rollout(state="paused")))
        assert (member.live.version, member.live.rollout, len(member.events)) == (2, "r1", 0)
        assert member.sink.decisions == [("r1", True), ("r1", True)]  # decided again (RolloutReports dedupes)
    finally:
        member.close()


# --- failures on the candidate -------------------------------------------------------------------------------------
def test_a_candidate_failing_the_model_is_a_rejected_failure_and_the_head_stays() -> None:
    member = Instance("host-a/app", {})
    errors: list[Exception] = []
    member.live.on_error(errors.append)
    try:
        member.deliver(head(1, H_DATA))
        member.deliver(head(1, H_DATA, rollout(candidate={"timeout_ms": "soon"})))
        assert (member.live.version, member.live.rollout) == (1, None)
        assert member.live.callbacks_idle(5) and isinstance(errors[0], ValidationFailed)
        assert [(rid, kind) for rid, kind, _ in member.sink.failures] == [("r1", "rejected")]
        assert "timeout_ms" in member.sink.failures[0][2]
        member.deliver(head(1, H_DATA, rollout(candidate={"timeout_ms": "soon"}, state="paused")))
        assert len(member.sink.failures) == 1  # the same candidate is not rejected (nor reported) twice
        assert not member.live.report_unhealthy("the head is not a candidate")
    finally:
        member.close()


def test_report_unhealthy_and_a_raising_callback_are_failures_of_the_candidate_only() -> None:
    member = Instance("host-a/app", {})
    raised = threading.Event()

    def picky(event: ChangeEvent[Payment]) -> None:
        raised.set()
        raise RuntimeError("cannot reconnect with timeout 200")

    try:
        member.deliver(head(1, H_DATA))
        member.live.on_change(picky)
        member.deliver(head(1, H_DATA, rollout()))
        assert raised.wait(5) and member.live.callbacks_idle(5)
        assert member.live.report_unhealthy("error rate 12 %")
        assert [(rid, kind) for rid, kind, _ in member.sink.failures] == [("r1", "callback"), ("r1", "unhealthy")]
        assert "RuntimeError: cannot reconnect" in member.sink.failures[0][2]
        member.deliver(head(1, H_DATA))  # aborted: back on the head, the callback raises again — no failure
        assert member.live.callbacks_idle(5) and len(member.sink.failures) == 2
    finally:
        member.close()


def test_a_callback_worker_tells_its_hook_what_raised() -> None:
    told: list[tuple[int, str]] = []

    def boom(item: int) -> None:
        raise ValueError(f"bad {item}")

    worker: CallbackWorker[int] = CallbackWorker(
        boom, Mailbox(), "hooked", on_raise=lambda cb, item, exc: told.append((item, str(exc)))
    )
    worker.post(1)
    worker.post(2)
    assert worker.idle(5)
    assert told == [(1, "bad 1"), (2, "bad 2")]
    worker.close()


# --- reports --------------------------------------------------------------------------------------------------------
def test_reports_follow_membership_keep_the_last_failures_and_go_with_the_rollout() -> None:
    reports = RolloutReports()
    assert reports.decided(NS, NAME, "r1", False)
    assert not reports.decided(NS, NAME, "r1", False)
    assert reports.decided(NS, NAME, "r1", True)
    assert not reports.failed(NS, NAME, "r0", failure("i", "unhealthy", "an older rollout"))
    assert not reports.failed(NS, "other", "r1", failure("i", "unhealthy", "no rollout there"))
    for n in range(MAX_REPORTED_FAILURES + 2):
        assert reports.failed(NS, NAME, "r1", failure("i", "callback", f"#{n} " + "x" * 500))
    (report,) = reports.for_namespace(NS, {NAME: 2}).values()
    assert (report.id, report.member, report.version, len(report.failures)) == ("r1", True, 2, MAX_REPORTED_FAILURES)
    assert report.failures[0].reason.startswith("#2 ") and len(report.failures[0].reason) == MAX_FAILURE_REASON
    assert reports.for_namespace("elsewhere", {}) == {}
    assert reports.decided(NS, NAME, "r2", False)  # a new rollout: a new report, no failures carried over
    assert reports.for_namespace(NS, {NAME: 3})[NAME].failures == []
    assert reports.ended(NS, NAME) and not reports.ended(NS, NAME)
    assert reports.for_namespace(NS, {NAME: 3}) == {}


def test_the_registration_publishes_identity_and_reports() -> None:
    gateway = ConsulGateway("http://127.0.0.1:1")  # never reached: the publish delay is a minute
    registration = InstanceRegistration(
        gateway, KeyLayout("t"), application="app", publish_delay=60.0, instance_key="h/app", labels={"tier": "c"}
    )
    try:
        registration.applied(NS, NAME, 1)
        registration.rollout_decided(NS, NAME, "r1", False)
        registration.rollout_failed(NS, NAME, "r1", "unhealthy", "slow")
        record = registration.record(NS)
        assert (record.instance_key, record.labels) == ("h/app", {"tier": "c"})
        report = record.rollouts[NAME]
        assert (report.id, report.member, report.version) == ("r1", False, 1)
        failures = [(f.instance, f.kind, f.reason) for f in report.failures]
        assert failures == [(registration.instance_id, "unhealthy", "slow")]
        registration.rollout_ended(NS, NAME)
        assert registration.record(NS).rollouts == {}
    finally:
        registration.close()
        gateway.close()


# --- identity ----------------------------------------------------------------------------------------------------
def test_identity_from_arguments_else_the_environment_else_host_and_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONFIGD_LABELS", "region=eu, tier=canary")
    monkeypatch.setenv("CONFIGD_INSTANCE_KEY", "web-7")
    with ConfigClient("http://127.0.0.1:1", cache=False, application="shop") as client:
        identity = client.identity
        assert client.registration is not None
        assert (identity.key, dict(identity.labels)) == ("web-7", {"region": "eu", "tier": "canary"})
        assert identity.instance_id == client.registration.instance_id
        assert (client.registration.instance_key, client.registration.labels) == ("web-7", dict(identity.labels))
    with ConfigClient("http://127.0.0.1:1", cache=False, labels={}, instance_key="k") as client:
        assert (client.identity.key, dict(client.identity.labels)) == ("k", {})
    monkeypatch.delenv("CONFIGD_INSTANCE_KEY")
    with ConfigClient("http://127.0.0.1:1", cache=False, application="shop", register=False) as client:
        assert client.identity.key.endswith("/shop") and client.identity.instance_id == ""
    monkeypatch.setenv("CONFIGD_LABELS", "tier")
    with pytest.raises(ValidationFailed):
        ConfigClient("http://127.0.0.1:1", cache=False)


def test_a_forked_child_decides_with_its_own_instance_id_and_reports_afresh() -> None:
    client = ConfigClient("http://127.0.0.1:1", cache=False, labels={"tier": "canary"}, instance_key="web-1")
    registration = client.registration
    assert registration is not None
    registration.rollout_decided(NS, NAME, "r1", True)
    parent_id = registration.instance_id

    def child() -> list[object]:  # the at-fork hook has run: the client is the child's own
        record = registration.record(NS)
        identity = client.identity
        return [identity.instance_id, registration.instance_id, identity.key, dict(identity.labels), record.rollouts]

    answer = run_forked(child)["ok"]
    assert isinstance(answer, list)
    seen, registered, key, labels, rollouts = answer
    assert seen == registered != parent_id
    assert (key, labels, rollouts) == ("web-1", {"tier": "canary"}, {})
    assert client.identity.instance_id == parent_id and NAME in registration.record(NS).rollouts
    client.close()


def test_an_asyncio_callback_that_raises_is_reported_too() -> None:
    told: list[tuple[str, str]] = []

    async def boom(item: str) -> None:
        raise RuntimeError(f"bad {item}")

    async def run() -> None:
        subscription: _LoopSubscription[str] = _LoopSubscription(
            boom, asyncio.get_running_loop(), None, lambda cb, item, exc: told.append((item, str(exc)))
        )
        subscription.post_threadsafe("c")
        await asyncio.sleep(0.05)
        await subscription.idle()
        subscription.close()

    asyncio.run(run())
    assert told == [("c", "bad c")]
