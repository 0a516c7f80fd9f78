"""Rollouts, decided without I/O: the records of a start and of every later step, the driver's next move, and the
tally of what the instances report. :mod:`configd.services.rollouts` reads before and commits after.

A rollout lives in its config's head record (``HeadRecord.rollout``) while it is active, so every move is one
transaction that moves the head by CAS: two replicas (or a person and the driver) never both move a rollout, and
a push that was decided from the head before the rollout started cannot land after it.

- **start**: the candidate C = H + 1 is created as an ordinary (immutable) version record that names the rollout;
  the head stays at H and carries the rollout; a marker under ``rollouts/active/`` lets the elected driver find
  active rollouts without reading every head.
- **advance / pause / resume**: the head is rewritten with the rollout's new step or state.
- **complete**: the head becomes C (its version record already says which rollout released it); the rollout goes
  to the history.
- **abort**: the head stays H, without the rollout; the candidate's version record is deleted (so the next push
  takes its number: versions in history are always versions that were the head); the rollout goes to the history.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from configd_core.consul import TxnOp, op_cas, op_check_index, op_create, op_delete, op_set
from configd_core.errors import NotFound
from configd_core.layout import KeyLayout
from configd_core.records import (
    ClientRecord,
    HeadRecord,
    RolloutFailure,
    RolloutPlan,
    RolloutRecord,
    VersionRecord,
    utcnow,
)

from ..errors import TransitionRefused
from .audit import audit_op, new_entry
from .writes import ConfigWrite, refuse_during_rollout

Action = Literal["promote", "pause", "resume", "abort"]
Move = Literal["advance", "complete", "abort", "record-failures"]
#: Failures a rollout record keeps (in the head while active, then in the history).
MAX_KEPT_FAILURES = 50
#: Who the elected driver writes as.
DRIVER = "configd-rollouts"


def new_rollout_id() -> str:
    return secrets.token_hex(6)


def _parse_time(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- start ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RolloutStart:
    """A rollout's first transaction: the candidate's version record, the head carrying the rollout, the marker,
    the audit entry (and any blob chunks, PUT before it like a push's)."""

    candidate: VersionRecord
    head: HeadRecord
    audit_ops: tuple[TxnOp, ...]
    chunks: tuple[tuple[str, bytes], ...]

    @property
    def rollout(self) -> RolloutRecord:
        assert self.head.rollout is not None
        return self.head.rollout

    def ops(self, layout: KeyLayout, head_index: int, schema_index: int) -> list[TxnOp]:
        rollout = self.rollout
        ns, name = rollout.namespace, rollout.name
        return [
            op_check_index(layout.schema_head(ns, name), schema_index),
            op_create(layout.version(ns, name, self.candidate.version), self.candidate.to_bytes()),
            op_cas(layout.head(ns, name), self.head.to_bytes(), head_index),
            op_set(layout.active_rollout(ns, name), rollout.id.encode()),
            *self.audit_ops,
        ]


def start_rollout(
    write: ConfigWrite,
    head: HeadRecord,
    plan: RolloutPlan,
    layout: KeyLayout,
    *,
    actor: str,
    message: str,
    rollout_id: str | None = None,
) -> RolloutStart:
    """The records that start rolling ``write`` (the version after ``head``, validated) out by ``plan``."""
    refuse_during_rollout(head, "another rollout")
    if write.record.sha256 == head.sha256:  # a state of the config, not a fault of the document: 409
        raise TransitionRefused(
            f"{head.namespace}/{head.name}: the candidate equals the head v{head.version}; nothing to roll out"
        )
    now = utcnow()
    rollout = RolloutRecord(
        id=rollout_id or new_rollout_id(),
        namespace=head.namespace,
        name=head.name,
        base_version=head.version,
        candidate_version=write.record.version,
        candidate_sha256=write.record.sha256,
        candidate_size=write.record.size,
        candidate_data=write.head.data,
        plan=plan,
        message=message,
        started_by=actor,
        started_at=now,
        step_started_at=now,
        updated_by=actor,
        updated_at=now,
    )
    candidate = write.record.model_copy(update={"rollout": rollout.id})
    audit = new_entry(
        actor=actor,
        action="rollout.start",
        namespace=head.namespace,
        name=head.name,
        result="started",
        status=201,
        version=candidate.version,
        from_version=head.version,
        message=message,
        detail=f"rollout {rollout.id}: {describe_plan(plan)}",
    )
    return RolloutStart(
        candidate,
        head.model_copy(update={"rollout": rollout}),
        (audit_op(layout, audit),),
        tuple(write.chunk_puts(layout)),
    )


def describe_plan(plan: RolloutPlan) -> str:
    """One line: cohort, steps, bake, threshold (audit details and the CLI)."""
    parts = []
    if plan.cohort.labels:
        parts.append("labels " + ",".join(f"{k}={v}" for k, v in sorted(plan.cohort.labels.items())))
    if plan.cohort.instances:
        parts.append(f"{len(plan.cohort.instances)} listed instance(s)")
    parts.append("steps " + ",".join(f"{s:g}%" for s in plan.steps))
    parts.append(f"bake {plan.bake_seconds:g}s" + ("" if plan.auto else ", manual promote"))
    parts.append(threshold_text(plan))
    return "; ".join(parts)


def threshold_text(plan: RolloutPlan) -> str:
    limits = []
    if plan.max_failures is not None:
        limits.append(f"{plan.max_failures} failing instance(s)")
    if plan.max_failure_ratio is not None:
        limits.append(f"{plan.max_failure_ratio:.0%} of the cohort failing")
    return "abort at " + (" or ".join(limits) if limits else "the first failing instance")


# --- what the instances report ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class InstanceReport:
    """One registered instance that watches the config, as the rollout sees it."""

    instance: str
    instance_key: str
    application: str
    host: str
    labels: dict[str, str]
    member: bool
    version: int
    failures: tuple[RolloutFailure, ...]


@dataclass(frozen=True)
class Tally:
    """Counts of the instances watching a config during its rollout (from their registrations)."""

    total: int
    members: int
    on_base: int
    on_candidate: int
    failures: tuple[RolloutFailure, ...]
    reporting: tuple[InstanceReport, ...] = field(default=())

    @property
    def failing(self) -> frozenset[str]:
        return frozenset(f.instance for f in self.failures)


def tally(rollout: RolloutRecord, clients: Iterable[ClientRecord]) -> Tally:
    """What the registrations say about ``rollout``: who is in the cohort, who runs H or C, who failed on C.

    Failures count only from instances in the cohort of THIS rollout; those the rollout record already keeps
    (reported by instances since gone) are counted too, each instance once.
    """
    reports: list[InstanceReport] = []
    failures: dict[tuple[str, str, str], RolloutFailure] = {(f.instance, f.kind, f.at): f for f in rollout.failures}
    for client in clients:
        if rollout.name not in client.applied:
            continue
        report = client.rollouts.get(rollout.name)
        mine = report is not None and report.id == rollout.id
        member = bool(report is not None and mine and report.member)
        own_failures = tuple(report.failures) if report is not None and mine and member else ()
        for failure in own_failures:
            failures.setdefault((failure.instance, failure.kind, failure.at), failure)
        reports.append(
            InstanceReport(
                instance=client.instance,
                instance_key=client.instance_key,
                application=client.application,
                host=client.host,
                labels=dict(client.labels),
                member=member,
                version=client.applied.get(rollout.name, 0),
                failures=own_failures,
            )
        )
    ordered = tuple(sorted(failures.values(), key=lambda f: f.at))
    return Tally(
        total=len(reports),
        members=sum(r.member for r in reports),
        on_base=sum(r.version == rollout.base_version for r in reports),
        on_candidate=sum(r.version == rollout.candidate_version for r in reports),
        failures=ordered,
        reporting=tuple(sorted(reports, key=lambda r: r.instance)),
    )


def threshold_reached(plan: RolloutPlan, counted: Tally) -> bool:
    """Whether the failing instances reach the plan's threshold (neither limit set: one failing instance)."""
    failing = len(counted.failing)
    if failing == 0:
        return False
    if plan.max_failures is None and plan.max_failure_ratio is None:
        return True
    if plan.max_failures is not None and failing >= plan.max_failures:
        return True
    cohort = max(counted.members, failing)
    return plan.max_failure_ratio is not None and failing / cohort >= plan.max_failure_ratio


def next_step_at(rollout: RolloutRecord) -> datetime | None:
    """When the current step's bake ends (None: paused, or promoted by hand only)."""
    if rollout.state != "running" or not rollout.plan.auto:
        return None
    return _parse_time(rollout.step_started_at) + timedelta(seconds=rollout.plan.bake_seconds)


def next_move(rollout: RolloutRecord, counted: Tally, now: datetime) -> Move | None:
    """What the elected driver does now: abort at the failure threshold (paused or not), keep newly reported
    failures in the record, advance or complete once a running step has baked, or nothing."""
    if not rollout.active:
        return None
    if threshold_reached(rollout.plan, counted):
        return "abort"
    kept = {(f.instance, f.kind, f.at) for f in rollout.failures}
    if any((f.instance, f.kind, f.at) not in kept for f in counted.failures):
        return "record-failures"
    due = next_step_at(rollout)
    if due is None or now < due:
        return None
    return "complete" if rollout.step + 1 >= len(rollout.plan.steps) else "advance"


def failure_summary(failures: Sequence[RolloutFailure], limit: int = 10) -> str:
    """Which instances reported what, for the audit entry of an automatic abort."""
    shown = "; ".join(f"{f.instance}: {f.kind}" + (f" ({f.reason})" if f.reason else "") for f in failures[:limit])
    more = len(failures) - limit
    return shown + (f"; and {more} more" if more > 0 else "")


# --- every later step -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RolloutStep:
    """One move of an active rollout: the new head, whether the rollout ends here (history), and its ops."""

    head: HeadRecord
    rollout: RolloutRecord
    ended: bool
    audit_ops: tuple[TxnOp, ...]

    def ops(self, layout: KeyLayout, head_index: int) -> list[TxnOp]:
        rollout = self.rollout
        ns, name = rollout.namespace, rollout.name
        ops = [op_cas(layout.head(ns, name), self.head.to_bytes(), head_index)]
        if self.ended:
            ops.append(op_delete(layout.active_rollout(ns, name)))
            ops.append(op_create(layout.rollout_history(ns, name, rollout.started_at, rollout.id), rollout.to_bytes()))
            if rollout.state == "aborted":
                ops.append(op_delete(layout.version(ns, name, rollout.candidate_version)))
        return [*ops, *self.audit_ops]


def active_rollout(head: HeadRecord | None, ref: str) -> RolloutRecord:
    """The active rollout of a live head, else NotFound."""
    rollout = head.rollout if head is not None and not head.deleted else None
    if rollout is None or not rollout.active:
        raise NotFound(f"{ref} has no active rollout")
    return rollout


def step_rollout(
    head: HeadRecord,
    move: Action | Move,
    layout: KeyLayout,
    *,
    actor: str,
    message: str = "",
    candidate: VersionRecord | None = None,
    failures: Sequence[RolloutFailure] = (),
) -> RolloutStep:
    """The records of one move of ``head``'s active rollout.

    ``promote`` (a person) and ``advance`` (the driver) go to the next step, or complete at the last one;
    ``complete`` needs the ``candidate`` version record (the new head is built from it). ``failures`` are the
    failures known now: kept in the rollout record (at most MAX_KEPT_FAILURES).
    """
    ref = f"{head.namespace}/{head.name}"
    rollout = active_rollout(head, ref)
    now = utcnow()
    kept = _merge_failures(rollout.failures, failures)
    changes: dict[str, object] = {"updated_by": actor, "updated_at": now, "failures": kept}
    if move in ("promote", "advance"):
        if rollout.step + 1 >= len(rollout.plan.steps):
            move = "complete"
        else:
            changes.update(step=rollout.step + 1, step_started_at=now)
    elif move == "pause":
        if rollout.state == "paused":
            raise TransitionRefused(f"{ref}: rollout {rollout.id} is already paused")
        changes["state"] = "paused"
    elif move == "resume":
        if rollout.state != "paused":
            raise TransitionRefused(f"{ref}: rollout {rollout.id} is not paused")
        changes.update(state="running", step_started_at=now)
    if move in ("complete", "abort"):
        changes.update(
            state="completed" if move == "complete" else "aborted", finished_by=actor, finished_at=now, reason=message
        )
    moved = rollout.model_copy(update=changes)
    if move == "complete":
        if candidate is None or candidate.version != rollout.candidate_version:
            raise NotFound(f"{ref}: the candidate v{rollout.candidate_version} of rollout {rollout.id} is missing")
        new_head = HeadRecord(
            namespace=head.namespace,
            name=head.name,
            version=candidate.version,
            sha256=candidate.sha256,
            size=candidate.size,
            schema_ref=candidate.schema_ref,
            author=candidate.author,
            message=candidate.message,
            created_at=now,
            data=rollout.candidate_data,
        )
    elif move == "abort":
        new_head = head.model_copy(update={"rollout": None})
    else:
        new_head = head.model_copy(update={"rollout": moved})
    ended = move in ("complete", "abort")
    version = {"complete": rollout.candidate_version, "abort": rollout.base_version}.get(move)
    audit = new_entry(
        actor=actor,
        action=f"rollout.{move}",
        namespace=head.namespace,
        name=head.name,
        result={"complete": "completed", "abort": "aborted"}.get(move, "updated"),
        status=200,
        version=version,
        from_version=rollout.candidate_version if move == "abort" else rollout.base_version,
        message=message,
        detail=f"rollout {rollout.id}: step {moved.step + 1}/{len(rollout.plan.steps)} ({moved.percent:g}%), "
        f"{moved.state}" + (f"; failures: {failure_summary(kept)}" if kept else ""),
    )
    return RolloutStep(new_head, moved, ended, (audit_op(layout, audit),))


def _merge_failures(kept: Sequence[RolloutFailure], new: Sequence[RolloutFailure]) -> list[RolloutFailure]:
    seen = {(f.instance, f.kind, f.at): f for f in kept}
    for failure in new:
        seen.setdefault((failure.instance, failure.kind, failure.at), failure)
    return sorted(seen.values(), key=lambda f: f.at)[-MAX_KEPT_FAILURES:]
