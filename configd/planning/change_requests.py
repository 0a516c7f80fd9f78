"""Change requests and review policies, decided without I/O: who may do which step, and the records each step writes.

A change request (:class:`ChangeRequestRecord`) moves through these states::

    open ──approve (enough approvals)──▶ approved ──publish──▶ published
      │  ◀──────── (fewer than required) ─┘   │
      ├──reject──▶ rejected                    ├──publish, head moved──▶ conflicted
      └──withdraw──▶ withdrawn ◀───────────────┴──────────────(withdraw)─┘

Each step here returns a :class:`Transition` — the new record and its audit entry — and
:func:`transition_ops` is the one builder of its transaction: CAS the request from the ModifyIndex it was read at,
create the audit entry. Publishing adds the request's CAS and audit to the config's own push transaction
(:meth:`configd.services.configs.ConfigStore.push`), so the new version and the request's ``published`` state
land together or not at all. Refusals raise before any record is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from configd_core.consul import TxnOp, op_cas
from configd_core.errors import ConfigTooLarge, ValidationFailed
from configd_core.layout import (
    MAX_CHANGE_REQUEST_COMMENTS,
    MAX_CHANGE_REQUEST_DOCUMENT_BYTES,
    MAX_RECORD_BYTES,
    KeyLayout,
)
from configd_core.records import (
    FINAL_STATES,
    AuditRecord,
    ChangeRequestRecord,
    PolicyRecord,
    ReviewEvent,
    RolloutPlan,
    utcnow,
)

from ..auth import ROLE_RANK, Principal
from ..errors import Forbidden, ReviewRequired, TransitionRefused
from .audit import audit_op, new_entry
from .writes import checked_message

#: The audit action of each step (``change-request.<step>``).
STEPS = ("propose", "approve", "reject", "withdraw", "comment", "publish", "conflict")
DEFAULT_APPROVERS = ("editor",)
MAX_APPROVERS = 50


def action(step: str) -> str:
    return f"change-request.{step}"


def approvals_required(policy: PolicyRecord | None) -> int:
    return policy.approvals_required if policy is not None else 0


def may_approve(policy: PolicyRecord | None, principal: Principal) -> bool:
    """Whether ``principal`` is one of the policy's approvers: a role it holds (or exceeds), or its token name."""
    approvers = policy.approvers if policy is not None else list(DEFAULT_APPROVERS)
    for entry in approvers:
        if entry in ROLE_RANK:
            if ROLE_RANK[principal.role] >= ROLE_RANK[entry]:
                return True
        elif entry == principal.name:
            return True
    return False


def direct_write(policy: PolicyRecord | None, principal: Principal, namespace: str) -> bool:
    """Whether a plain push/rollback/import by ``principal`` is an emergency push (True: an admin in a reviewed
    namespace, audited as ``push.emergency``) or a normal one (False: no policy, or 0 approvals required).
    Anyone else in a reviewed namespace is refused (ReviewRequired, 403) and pointed at the change-request route."""
    if approvals_required(policy) == 0:
        return False
    if principal.role == "admin":
        return True
    raise ReviewRequired(
        f"namespace {namespace!r} requires {approvals_required(policy)} approval(s) for every change: "
        "propose it with POST /api/v1/change-requests (configctl propose) instead of writing directly"
    )


# --- policies ----------------------------------------------------------------------------------------------
def policy_record(namespace: str, approvals: int, approvers: list[str] | None, *, actor: str) -> PolicyRecord:
    """A namespace's review policy (raises ValidationFailed on bad values)."""
    chosen = list(DEFAULT_APPROVERS) if not approvers else [a.strip() for a in approvers]
    if approvals not in (0, 1, 2):
        raise ValidationFailed("approvals_required must be 0, 1 or 2")
    if len(chosen) > MAX_APPROVERS or any(not a or len(a) > 200 for a in chosen):
        raise ValidationFailed(f"approvers must be 1 to {MAX_APPROVERS} role or token names of 1 to 200 characters")
    if "reader" in chosen:
        raise ValidationFailed("approvers: 'reader' is not allowed (a reader may not approve changes)")
    return PolicyRecord(
        namespace=namespace,
        approvals_required=approvals,
        approvers=sorted(set(chosen)),
        updated_by=actor,
        updated_at=utcnow(),
    )


def policy_audit(policy: PolicyRecord, previous: PolicyRecord | None) -> AuditRecord:
    return new_entry(
        actor=policy.updated_by,
        action="policy.set",
        namespace=policy.namespace,
        name=None,
        result="updated" if previous is not None else "created",
        status=200,
        message=f"approvals_required={policy.approvals_required} approvers={','.join(policy.approvers)}",
    )


# --- change requests ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Transition:
    """One step of a change request: the record after it and its audit entry."""

    record: ChangeRequestRecord
    audit: AuditRecord


def transition_ops(layout: KeyLayout, step: Transition, index: int) -> list[TxnOp]:
    """CAS the request from ``index`` (0: create it) and create the step's audit entry."""
    return [
        op_cas(layout.change_request(step.record.id), checked_record(step.record), index),
        audit_op(layout, step.audit),
    ]


def checked_record(record: ChangeRequestRecord) -> bytes:
    """The record's bytes, refused when it would not fit beside a version in one publish transaction."""
    raw = record.to_bytes()
    if len(raw) > MAX_RECORD_BYTES:
        raise ConfigTooLarge(len(raw), MAX_RECORD_BYTES)
    return raw


def _audit(record: ChangeRequestRecord, step: str, actor: str, *, status: int = 200, message: str = "") -> AuditRecord:
    return new_entry(
        actor=actor,
        action=action(step),
        namespace=record.namespace,
        name=record.name,
        result=record.state,
        status=status,
        version=record.published_version,
        from_version=record.base_version,
        message=message,
        detail=f"change request {record.id}",
    )


def proposal(
    request_id: int,
    namespace: str,
    name: str,
    data: dict[str, Any],
    canonical: bytes,
    sha: str,
    *,
    base_version: int,
    base_sha: str | None,
    policy: PolicyRecord | None,
    author: str,
    message: str,
    rollout: RolloutPlan | None = None,
) -> Transition:
    """A new change request from a validated document (``canonical`` its bytes, ``sha`` theirs); with ``rollout``,
    publishing it starts that rollout instead of making it the head for everyone."""
    checked_message(message)
    if len(canonical) > MAX_CHANGE_REQUEST_DOCUMENT_BYTES:
        raise ConfigTooLarge(len(canonical), MAX_CHANGE_REQUEST_DOCUMENT_BYTES)
    if base_sha == sha:  # a state of the config, not a fault of the document: 409, like a stale base
        raise TransitionRefused(
            f"{namespace}/{name}: the proposed document is identical to v{base_version}; nothing to review"
        )
    now = utcnow()
    record = ChangeRequestRecord(
        id=request_id,
        namespace=namespace,
        name=name,
        base_version=base_version,
        data=data,
        sha256=sha,
        author=author,
        message=message,
        created_at=now,
        updated_at=now,
        state="approved" if approvals_required(policy) == 0 else "open",
        publish_target="rollout" if rollout is not None else "everyone",
        rollout=rollout,
    )
    return Transition(record, _audit(record, "propose", author, status=201, message=message))


def _require_state(record: ChangeRequestRecord, step: str, allowed: tuple[str, ...]) -> None:
    if record.state not in allowed:
        raise TransitionRefused(
            f"change request {record.id} is {record.state}; only a request that is {' or '.join(allowed)} can be {step}"
        )


def approval(
    record: ChangeRequestRecord, principal: Principal, policy: PolicyRecord | None, message: str = ""
) -> Transition:
    """One approval; the request becomes ``approved`` once it holds as many as the policy requires."""
    checked_message(message)
    _require_state(record, "approved", ("open", "approved"))
    if principal.name == record.author:
        raise Forbidden(f"{principal.name!r} proposed change request {record.id} and may not approve it (four eyes)")
    if not may_approve(policy, principal):
        raise Forbidden(f"token {principal.name!r} is not an approver of namespace {record.namespace!r}")
    if any(a.actor == principal.name for a in record.approvals):
        raise TransitionRefused(f"{principal.name!r} has already approved change request {record.id}")
    approvals = [*record.approvals, ReviewEvent(actor=principal.name, at=utcnow(), message=message)]
    state = "approved" if len(approvals) >= approvals_required(policy) else "open"
    updated = record.model_copy(update={"approvals": approvals, "state": state, "updated_at": utcnow()})
    return Transition(updated, _audit(updated, "approve", principal.name, message=message))


def rejection(
    record: ChangeRequestRecord, principal: Principal, policy: PolicyRecord | None, message: str
) -> Transition:
    """An approver (or an admin) turns the request down; final."""
    checked_message(message)
    _require_state(record, "rejected", ("open", "approved", "conflicted"))
    if principal.name == record.author:
        raise Forbidden(f"{principal.name!r} proposed change request {record.id}: withdraw it instead of rejecting it")
    if not (may_approve(policy, principal) or principal.role == "admin"):
        raise Forbidden(f"token {principal.name!r} is not an approver of namespace {record.namespace!r}")
    event = ReviewEvent(actor=principal.name, at=utcnow(), message=message)
    updated = record.model_copy(update={"rejection": event, "state": "rejected", "updated_at": utcnow()})
    return Transition(updated, _audit(updated, "reject", principal.name, message=message))


def withdrawal(record: ChangeRequestRecord, principal: Principal, message: str = "") -> Transition:
    """Its author (or an admin) takes the request back; final."""
    checked_message(message)
    _require_state(record, "withdrawn", ("open", "approved", "conflicted"))
    if principal.name != record.author and principal.role != "admin":
        raise Forbidden(f"only {record.author!r} (its author) or an admin may withdraw change request {record.id}")
    updated = record.model_copy(update={"state": "withdrawn", "updated_at": utcnow()})
    return Transition(updated, _audit(updated, "withdraw", principal.name, message=message))


def comment(record: ChangeRequestRecord, principal: Principal, message: str) -> Transition:
    """A comment from anyone who can read the namespace; the state does not change."""
    checked_message(message, "comment")
    if not message.strip():
        raise ValidationFailed("a comment needs some text")
    if len(record.comments) >= MAX_CHANGE_REQUEST_COMMENTS:
        raise TransitionRefused(f"change request {record.id} already has {MAX_CHANGE_REQUEST_COMMENTS} comments")
    comments = [*record.comments, ReviewEvent(actor=principal.name, at=utcnow(), message=message)]
    updated = record.model_copy(update={"comments": comments, "updated_at": utcnow()})
    return Transition(updated, _audit(updated, "comment", principal.name, message=message))


def publish_check(record: ChangeRequestRecord, principal: Principal, policy: PolicyRecord | None) -> None:
    """Refuse a publish before anything is read or written: wrong state, too few approvals under the current
    policy, or a caller who is neither the author nor an approver (editors of the namespace only, checked by the
    route)."""
    if record.state == "open":
        raise TransitionRefused(
            f"change request {record.id} has {len(record.approvals)} of {approvals_required(policy)} approval(s); "
            "it can be published once approved"
        )
    _require_state(record, "published", ("approved",))
    valid = [a for a in record.approvals if a.actor != record.author]
    if len(valid) < approvals_required(policy):
        raise TransitionRefused(
            f"change request {record.id} has {len(valid)} approval(s); the policy of {record.namespace!r} now "
            f"requires {approvals_required(policy)}"
        )
    if principal.name != record.author and not may_approve(policy, principal) and principal.role != "admin":
        raise Forbidden(f"only the author or an approver may publish change request {record.id}")


def published(record: ChangeRequestRecord, principal: Principal, version: int) -> Transition:
    updated = record.model_copy(
        update={
            "state": "published",
            "published_version": version,
            "published_by": principal.name,
            "updated_at": utcnow(),
        }
    )
    return Transition(updated, _audit(updated, "publish", principal.name, status=201, message=record.message))


def conflicted(record: ChangeRequestRecord, principal: Principal, head_version: int) -> Transition:
    """The head moved past the request's base: it is marked conflicted (the diff base→head says what moved)."""
    updated = record.model_copy(update={"state": "conflicted", "conflict_head": head_version, "updated_at": utcnow()})
    audit = _audit(updated, "conflict", principal.name, status=409)
    return Transition(updated, audit)


def is_final(record: ChangeRequestRecord) -> bool:
    return record.state in FINAL_STATES
