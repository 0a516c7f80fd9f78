"""Rollouts decided without I/O: sticky membership, the tally of reports, the driver's next move, and each step's
records and transaction (configd_core.rollouts, configd.planning.rollouts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from configd.errors import TransitionRefused
from configd.planning.rollouts import next_move, start_rollout, step_rollout, tally, threshold_reached
from configd.planning.writes import config_write
from configd_core.consul import TxnOp
from configd_core.errors import NotFound, RolloutActive, ValidationFailed
from configd_core.layout import KeyLayout
from configd_core.records import (
    ClientRecord,
    HeadRecord,
    RolloutFailure,
    RolloutPlan,
    RolloutReport,
    SchemaRef,
    canonical_json,
    document_sha256,
    utcnow,
)
from configd_core.rollouts import InstanceIdentity, bucket, is_member, parse_labels

LAYOUT = KeyLayout("t")
H = {"timeout_ms": 500}
C = {"timeout_ms": 900}


def _head(data: dict[str, int] = H, version: int = 1) -> HeadRecord:
    canonical = canonical_json(data)
    return HeadRecord(
        namespace="ns",
        name="svc",
        version=version,
        sha256=document_sha256(data),
        size=len(canonical),
        schema_ref=SchemaRef(namespace="ns", name="svc", version=1),
        author="a",
        created_at=utcnow(),
        data=data,
    )


def _started(plan: RolloutPlan, rollout_id: str = "r1") -> HeadRecord:
    write = config_write(
        "ns", "svc", C, canonical_json(C), document_sha256(C), head=_head(), schema_version=1, actor="e", message=""
    )
    return start_rollout(write, _head(), plan, LAYOUT, actor="e", message="m", rollout_id=rollout_id).head


def _client(instance: str, report: RolloutReport | None, version: int) -> ClientRecord:
    now = utcnow()
    return ClientRecord(
        instance=instance,
        application="app",
        host="h",
        pid=1,
        started_at=now,
        updated_at=now,
        applied={"svc": version},
        rollouts={"svc": report} if report else {},
    )


def test_buckets_are_sticky_and_larger_percentages_only_add() -> None:
    head = _started(RolloutPlan(steps=[25, 50]))
    rollout = head.rollout
    assert rollout is not None
    keys = [f"host-{i}/app" for i in range(400)]
    at_25 = {k for k in keys if is_member(rollout, InstanceIdentity(k), 25)}
    at_50 = {k for k in keys if is_member(rollout, InstanceIdentity(k), 50)}
    assert at_25 < at_50  # strictly more, none moved out
    assert 60 < len(at_25) < 140 and 150 < len(at_50) < 250  # about 25 % and 50 % of 400
    assert bucket("k", "ns", "svc", "r1") == bucket("k", "ns", "svc", "r1")  # a restart computes the same
    other = {k for k in keys if bucket(k, "ns", "svc", "r2") < 25}
    assert other != at_25  # a new rollout draws a new sample


def test_labels_and_listed_instances() -> None:
    plan = RolloutPlan(steps=[100], cohort={"labels": {"region": "eu"}, "instances": ["pinned"]})
    rollout = _started(plan).rollout
    assert rollout is not None
    assert is_member(rollout, InstanceIdentity("x", labels={"region": "eu", "tier": "web"}))
    assert not is_member(rollout, InstanceIdentity("x", labels={"region": "us"}))
    assert not is_member(rollout, InstanceIdentity("x"))
    assert is_member(rollout, InstanceIdentity("pinned"))  # listed: in whatever its labels
    assert is_member(rollout, InstanceIdentity("k", instance_id="pinned"))
    assert not is_member(rollout, InstanceIdentity("y", labels={"region": "eu"}), 0)
    assert parse_labels(" region=eu, tier=canary ,") == {"region": "eu", "tier": "canary"}
    with pytest.raises(ValidationFailed):
        parse_labels("region")


def test_plan_rules() -> None:
    with pytest.raises(ValidationError):
        RolloutPlan(steps=[50, 25])
    with pytest.raises(ValidationError):
        RolloutPlan(steps=[101])
    with pytest.raises(ValidationError):
        RolloutPlan(steps=[])
    with pytest.raises(ValidationError):
        RolloutPlan.model_validate({"max_failures": "2"})
    with pytest.raises(ValidationError):
        RolloutPlan.model_validate({"auto": 0})


def test_start_refuses_a_second_rollout_and_an_unchanged_candidate() -> None:
    head = _started(RolloutPlan())
    with pytest.raises(RolloutActive) as caught:
        config_write("ns", "svc", C, canonical_json(C), "x", head=head, schema_version=1, actor="e", message="")
    assert caught.value.rollout == "r1"
    same = config_write(
        "ns", "svc", H, canonical_json(H), document_sha256(H), head=_head(), schema_version=1, actor="e", message=""
    )
    with pytest.raises(TransitionRefused):  # equal to the head: a state of the config (409), not a bad document
        start_rollout(same, _head(), RolloutPlan(), LAYOUT, actor="e", message="")


def _ops_keys(ops: list[TxnOp]) -> list[tuple[str, str]]:
    return [(op["KV"]["Verb"], op["KV"]["Key"]) for op in ops]


def test_start_and_end_transactions() -> None:
    write = config_write(
        "ns", "svc", C, canonical_json(C), document_sha256(C), head=_head(), schema_version=1, actor="e", message=""
    )
    start = start_rollout(write, _head(), RolloutPlan(steps=[10, 100]), LAYOUT, actor="e", message="", rollout_id="r")
    assert start.candidate.version == 2 and start.candidate.rollout == "r" and start.head.version == 1
    verbs = _ops_keys(start.ops(LAYOUT, head_index=7, schema_index=3))
    assert verbs[:4] == [
        ("check-index", "t/schemas/heads/ns/svc"),
        ("cas", "t/versions/ns/svc/000000000002"),
        ("cas", "t/heads/ns/svc"),
        ("set", "t/rollouts/active/ns/svc"),
    ]
    head = start.head
    advanced = step_rollout(head, "promote", LAYOUT, actor="e")
    assert not advanced.ended and advanced.rollout.step == 1 and advanced.head.version == 1
    with pytest.raises(NotFound):  # completing needs the candidate's record
        step_rollout(advanced.head, "promote", LAYOUT, actor="e")
    done = step_rollout(advanced.head, "promote", LAYOUT, actor="e", candidate=start.candidate)
    assert done.ended and done.head.version == 2 and done.head.rollout is None and done.head.data == C
    assert done.head.sha256 == start.candidate.sha256
    ended = _ops_keys(done.ops(LAYOUT, 9))
    assert ("delete", "t/rollouts/active/ns/svc") in ended
    assert not any(key.startswith("t/versions/") for _, key in ended)
    aborted = step_rollout(head, "abort", LAYOUT, actor="e", message="why")
    assert aborted.head.version == 1 and aborted.head.rollout is None and aborted.rollout.reason == "why"
    assert ("delete", "t/versions/ns/svc/000000000002") in _ops_keys(aborted.ops(LAYOUT, 9))
    paused = step_rollout(head, "pause", LAYOUT, actor="e")
    with pytest.raises(TransitionRefused):
        step_rollout(paused.head, "pause", LAYOUT, actor="e")
    with pytest.raises(TransitionRefused):
        step_rollout(head, "resume", LAYOUT, actor="e")


def test_tally_and_threshold() -> None:
    rollout = _started(RolloutPlan(steps=[50], max_failure_ratio=0.5)).rollout
    assert rollout is not None
    failed = RolloutFailure(instance="a", kind="callback", reason="boom", at=utcnow())
    counted = tally(
        rollout,
        [
            _client("a", RolloutReport(id="r1", member=True, version=2, failures=[failed]), 2),
            _client("b", RolloutReport(id="r1", member=True, version=2), 2),
            _client("c", RolloutReport(id="r1", member=False, version=1), 1),
            _client("d", RolloutReport(id="old", member=True, version=2, failures=[failed]), 2),  # another rollout
            _client("e", None, 1),
        ],
    )
    assert (counted.total, counted.members, counted.on_base, counted.on_candidate) == (5, 2, 2, 3)
    assert counted.failing == {"a"}
    assert threshold_reached(rollout.plan, counted)  # 1 of 2 members = 50 %
    assert not threshold_reached(RolloutPlan(max_failures=2), counted)
    assert threshold_reached(RolloutPlan(), counted)  # no limit given: the first failing instance


def test_next_move() -> None:
    head = _started(RolloutPlan(steps=[10, 100], bake_seconds=60))
    rollout = head.rollout
    assert rollout is not None
    quiet = tally(rollout, [])
    start = datetime.strptime(rollout.step_started_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert next_move(rollout, quiet, start + timedelta(seconds=59)) is None
    assert next_move(rollout, quiet, start + timedelta(seconds=61)) == "advance"
    last = step_rollout(head, "promote", LAYOUT, actor="e").rollout
    assert next_move(last, quiet, datetime.now(UTC) + timedelta(seconds=61)) == "complete"
    paused = step_rollout(head, "pause", LAYOUT, actor="e").rollout
    assert next_move(paused, quiet, datetime.now(UTC) + timedelta(days=1)) is None
    failure = RolloutFailure(instance="a", kind="rejected", at=utcnow())
    failing = tally(paused, [_client("a", RolloutReport(id="r1", member=True, version=1, failures=[failure]), 1)])
    assert next_move(paused, failing, datetime.now(UTC)) == "abort"  # paused or not, failures abort
    lenient = _started(RolloutPlan(max_failures=3)).rollout
    assert lenient is not None
    assert (
        next_move(
            lenient,
            tally(lenient, [_client("a", RolloutReport(id="r1", member=True, failures=[failure]), 2)]),
            datetime.now(UTC),
        )
        == "record-failures"
    )
