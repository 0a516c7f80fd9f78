"""Review policies and change requests in Consul: each step read, decided by :mod:`configd.planning.change_requests`,
and committed in ONE transaction guarded by the ModifyIndex it was read at, with its audit entry.

Publishing is a normal push (:meth:`ConfigStore.push` with ``expected_version`` = the request's base) whose
transaction also moves the request to ``published``; a head that moved since the base marks the request
``conflicted`` instead. :meth:`ChangeRequests._deliver` is the one place a request reaches its audience: today
everyone (``publish_target: "everyone"``); rollouts (issue 13) will branch there.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from configd_core.consul import ConsulGateway, KVEntry, TxnOp, op_cas, op_check_index, op_check_not_exists
from configd_core.diff import Change, diff_json, unified_diff
from configd_core.errors import NotFound, SchemaNotFound, VersionConflict
from configd_core.layout import KeyLayout, validate_name
from configd_core.records import ChangeRequestRecord, HeadRecord, PolicyRecord, RolloutPlan
from configd_core.secrets import masked_pair

from ..auth import Principal
from ..errors import ReviewRequired, TransitionRefused
from ..planning import change_requests as plan
from ..planning.audit import audit_op
from ..planning.writes import checked_config
from .configs import ConfigStore
from .rollouts import Rollouts

# A proposal takes the next id from a CAS counter; two proposers racing for it retry this many times.
ID_ATTEMPTS = 8


@dataclass(frozen=True)
class Review:
    """A change request with what a reviewer needs: the diff base→proposed, its validation against the current
    schema, the current head, and (when the head moved) the diff base→head — what moved meanwhile."""

    record: ChangeRequestRecord
    policy: PolicyRecord | None
    head_version: int
    valid: bool
    errors: list[Any]
    base_data: dict[str, Any] | None
    changes: list[Change]
    unified: str
    moved_changes: list[Change]
    moved_unified: str


#: Decides a direct write's audit action and the guard of its transaction; ``fresh``: read the policy again.
WriteGuard = Callable[[bool], tuple[str | None, tuple[TxnOp, ...]]]


class ChangeRequests:
    """Namespace review policies and the change requests they turn pushes into."""

    def __init__(self, gateway: ConsulGateway, store: ConfigStore, rollouts: Rollouts | None = None) -> None:
        self._gateway = gateway
        self._store = store
        self._rollouts = rollouts
        self.layout: KeyLayout = store.layout
        # Policies as last read (record, ModifyIndex; 0 = none). A push decided from one checks that index in its
        # transaction (:meth:`write_guard`), so a stale entry costs a retry, never an unreviewed write.
        self._known: dict[str, tuple[PolicyRecord | None, int]] = {}
        self._lock = threading.Lock()

    # --- policies ------------------------------------------------------------------------------------------
    def _policy(self, namespace: str, *, fresh: bool = True) -> tuple[PolicyRecord | None, int]:
        if not fresh:
            with self._lock:
                known = self._known.get(namespace)
            if known is not None:
                return known
        entry = self._gateway.get(self.layout.policy(validate_name(namespace, "namespace")))
        found = (PolicyRecord.from_bytes(entry.value), entry.modify_index) if entry else (None, 0)
        with self._lock:
            self._known[namespace] = found
        return found

    def policy(self, namespace: str) -> PolicyRecord | None:
        """The namespace's review policy, or None (no review: pushes publish directly)."""
        return self._policy(namespace)[0]

    def set_policy(
        self, namespace: str, approvals_required: int, approvers: list[str] | None, *, actor: str
    ) -> PolicyRecord:
        """Replace the namespace's policy (admins only, checked by the caller); one transaction with its audit."""
        previous, index = self._policy(namespace)
        record = plan.policy_record(namespace, approvals_required, approvers, actor=actor)
        ops = [
            op_cas(self.layout.policy(namespace), record.to_bytes(), index),
            audit_op(self.layout, plan.policy_audit(record, previous)),
        ]
        with self._lock:
            self._known.pop(namespace, None)
        self._commit(ops, f"the policy of {namespace}")
        return record

    def direct_write(self, principal: Principal, namespace: str) -> str | None:
        """The audit action of a plain push/rollback/import by ``principal``: None (a normal write), or
        ``push.emergency`` (an admin in a reviewed namespace). ReviewRequired (403) for anyone else there."""
        return "push.emergency" if plan.direct_write(self.policy(namespace), principal, namespace) else None

    def write_guard(self, principal: Principal, namespace: str) -> WriteGuard:
        """What a direct push or rollback by ``principal`` may do, decided per attempt (``ConfigStore.push``): its
        audit action (as :meth:`direct_write`) and a check-index on the policy it was decided from.

        The first attempt decides from the policy this process last read — no round trip; a refusal, or any
        failed attempt, decides again from a fresh read. The push transaction checks the policy's index, so a
        policy changed on another replica meanwhile fails that attempt instead of letting it through."""
        key = self.layout.policy(namespace)

        def decide(fresh: bool) -> tuple[str | None, tuple[TxnOp, ...]]:
            policy, index = self._policy(namespace, fresh=fresh)
            try:
                emergency = plan.direct_write(policy, principal, namespace)
            except ReviewRequired:
                if fresh:
                    raise
                policy, index = self._policy(namespace, fresh=True)
                emergency = plan.direct_write(policy, principal, namespace)
            guard = op_check_index(key, index) if index else op_check_not_exists(key)
            return ("push.emergency" if emergency else None), (guard,)

        return decide

    # --- reads ---------------------------------------------------------------------------------------------
    def _read(self, request_id: int) -> tuple[ChangeRequestRecord, int]:
        entry = self._gateway.get(self.layout.change_request(request_id)) if request_id >= 1 else None
        if entry is None:
            raise NotFound(f"change request {request_id} does not exist")
        return ChangeRequestRecord.from_bytes(entry.value), entry.modify_index

    def get(self, request_id: int) -> ChangeRequestRecord:
        return self._read(request_id)[0]

    def find(self, request_id: int) -> ChangeRequestRecord | None:
        entry = self._gateway.get(self.layout.change_request(request_id)) if request_id >= 1 else None
        return ChangeRequestRecord.from_bytes(entry.value) if entry else None

    def find_all(
        self, *, namespace: str | None = None, state: str | None = None, author: str | None = None
    ) -> list[ChangeRequestRecord]:
        """Change requests newest first, filtered by namespace, state and author."""
        if namespace:
            validate_name(namespace, "namespace")
        _, entries = self._gateway.list(self.layout.change_requests_root)
        records = [ChangeRequestRecord.from_bytes(e.value) for e in sorted(entries, key=lambda e: e.key, reverse=True)]
        return [
            r
            for r in records
            if (not namespace or r.namespace == namespace)
            and (not state or r.state == state)
            and (not author or r.author == author)
        ]

    def review(self, request_id: int) -> Review:
        """The request with its diffs and its validation against the schema as it is now."""
        record = self.get(request_id)
        policy = self.policy(record.namespace)
        store = self._store
        base_version = record.base_version
        stored_base = store.get(record.namespace, record.name, base_version, sealed=True)[1] if base_version else None
        # Secrets are compared by fingerprint and shown masked, as in every other diff.
        base, proposed = masked_pair(stored_base, record.data)
        try:
            head_version = store.head(record.namespace, record.name).version
        except NotFound:
            head_version = 0
        if record.state in ("published", "rejected", "withdrawn"):
            valid, errors = True, []
        else:
            run = store.dry_run(record.namespace, record.name, record.data)
            valid, errors = run.valid, run.errors
        moved: list[Change] = []
        moved_text = ""
        watermark = record.published_version - 1 if record.published_version else head_version
        if head_version and head_version != record.base_version and watermark != record.base_version:
            head_base, head_data = masked_pair(
                stored_base, store.get(record.namespace, record.name, head_version, sealed=True)[1]
            )
            moved = diff_json(head_base or {}, head_data)
            moved_text = unified_diff(
                base, head_data, from_label=f"base v{record.base_version}", to_label=f"head v{head_version}"
            )
        return Review(
            record=record,
            policy=policy,
            head_version=head_version,
            valid=valid,
            errors=errors,
            base_data=base,
            changes=diff_json(base or {}, proposed),
            unified=unified_diff(
                base,
                proposed,
                from_label=f"{record.namespace}/{record.name}@v{record.base_version}",
                to_label=f"change request {record.id}",
            ),
            moved_changes=moved,
            moved_unified=moved_text,
        )

    # --- steps ---------------------------------------------------------------------------------------------
    def propose(
        self,
        namespace: str,
        name: str,
        data: Any,
        *,
        principal: Principal,
        message: str = "",
        base_version: int | None = None,
        rollout: RolloutPlan | None = None,
    ) -> ChangeRequestRecord:
        """A new change request from ``base_version`` (default: the head), validated against the schema head;
        with ``rollout``, publishing it starts that rollout (the config must exist then).

        One transaction: the id counter by CAS, the request created, its audit entry, and check-index guards on
        the config head (still the base) and the schema head (still the one it was validated against).
        """
        validate_name(namespace, "namespace")
        validate_name(name, "name")
        principal.authorize("editor", namespace)
        checked_config(data)
        for attempt in range(ID_ATTEMPTS):
            head_entry = self._gateway.get(self.layout.head(namespace, name))
            schema_entry = self._gateway.get(self.layout.schema_head(namespace, name))
            head = HeadRecord.from_bytes(head_entry.value) if head_entry else None
            live = head if head is not None and not head.deleted else None
            current = live.version if live else 0
            if base_version is not None and base_version != current:
                raise VersionConflict(
                    f"{namespace}/{name}: the proposal starts from v{base_version}, but the head is v{current}; "
                    "start again from the head",
                    expected=base_version,
                    actual=current,
                )
            if schema_entry is None:
                raise SchemaNotFound(f"no schema is registered for {namespace}/{name}; register one before proposing")
            # Validated like a push, and kept as a push would store it: secret values sealed, never plain.
            sealed = self._store.sealed_candidate(namespace, name, data)
            seq_entry = self._gateway.get(self.layout.change_request_seq)
            last = int(seq_entry.value) if seq_entry else 0
            step = plan.proposal(
                last + 1,
                namespace,
                name,
                sealed.data,
                sealed.canonical,
                sealed.sha,
                base_version=current,
                base_sha=live.sha256 if live else None,
                policy=self.policy(namespace),
                author=principal.name,
                message=message,
                rollout=rollout,
            )
            ops: list[TxnOp] = [
                op_cas(
                    self.layout.change_request_seq, str(last + 1).encode(), seq_entry.modify_index if seq_entry else 0
                ),
                *plan.transition_ops(self.layout, step, 0),
                self._guard(self.layout.head(namespace, name), head_entry),
                self._guard(self.layout.schema_head(namespace, name), schema_entry),
            ]
            try:
                self._gateway.txn(ops)
                return step.record
            except VersionConflict:
                if attempt + 1 >= ID_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _guard(key: str, entry: KVEntry | None) -> TxnOp:
        return op_check_index(key, entry.modify_index) if entry else op_check_not_exists(key)

    def approve(self, request_id: int, principal: Principal, message: str = "") -> ChangeRequestRecord:
        record, index = self._read(request_id)
        principal.authorize("reader", record.namespace)
        return self._apply(plan.approval(record, principal, self.policy(record.namespace), message), index)

    def reject(self, request_id: int, principal: Principal, message: str = "") -> ChangeRequestRecord:
        record, index = self._read(request_id)
        principal.authorize("reader", record.namespace)
        return self._apply(plan.rejection(record, principal, self.policy(record.namespace), message), index)

    def withdraw(self, request_id: int, principal: Principal, message: str = "") -> ChangeRequestRecord:
        record, index = self._read(request_id)
        principal.authorize("reader", record.namespace)
        return self._apply(plan.withdrawal(record, principal, message), index)

    def comment(self, request_id: int, principal: Principal, message: str) -> ChangeRequestRecord:
        record, index = self._read(request_id)
        principal.authorize("reader", record.namespace)
        return self._apply(plan.comment(record, principal, message), index)

    def publish(self, request_id: int, principal: Principal) -> ChangeRequestRecord:
        """Publish an approved request: a push from its base, CAS-guarded, that also marks it ``published``.

        A head that moved since the base marks the request ``conflicted`` (its own transaction and audit entry)
        and raises VersionConflict; a document that fails the schema as it is now raises ValidationFailed and
        writes nothing.
        """
        record, index = self._read(request_id)
        principal.authorize("editor", record.namespace)
        plan.publish_check(record, principal, self.policy(record.namespace))
        return self._deliver(record, index, principal)

    def _deliver(self, record: ChangeRequestRecord, index: int, principal: Principal) -> ChangeRequestRecord:
        """The one place a request reaches its audience: a push of the whole config (``publish_target`` everyone),
        or the start of the request's rollout (``rollout``), the request's move committed in the same transaction."""
        head_entry = self._gateway.get(self.layout.head(record.namespace, record.name))
        head = HeadRecord.from_bytes(head_entry.value) if head_entry else None
        live = head.version if head is not None and not head.deleted else 0
        if live != record.base_version:
            self._mark_conflicted(record, index, principal, live)
        step = plan.published(record, principal, (head.version if head else 0) + 1)
        message = f"{record.message} (change request {record.id})" if record.message else f"change request {record.id}"
        if record.publish_target == "rollout" and record.rollout is not None:
            return self._start_rollout(record, index, principal, step, message)
        try:
            result = self._store.push(
                record.namespace,
                record.name,
                record.data,
                actor=principal.name,
                message=message[:1000],
                expected_version=record.base_version,
                also=tuple(plan.transition_ops(self.layout, step, index)),
            )
        except VersionConflict:
            again, again_index = self._read(record.id)
            if again_index != index:
                raise VersionConflict(
                    f"change request {record.id} changed meanwhile (now {again.state}); reload it"
                ) from None
            moved = self._gateway.get(self.layout.head(record.namespace, record.name))
            moved_head = HeadRecord.from_bytes(moved.value) if moved else None
            now = moved_head.version if moved_head and not moved_head.deleted else 0
            if now != record.base_version:
                self._mark_conflicted(record, index, principal, now)
            raise  # the schema moved under the push: the request stays approved; publishing again re-validates
        if not result.created:  # the head already holds this document: nothing was pushed, record it as published
            return self._apply(plan.published(record, principal, result.head.version), index)
        return step.record

    def _start_rollout(
        self, record: ChangeRequestRecord, index: int, principal: Principal, step: plan.Transition, message: str
    ) -> ChangeRequestRecord:
        if self._rollouts is None or record.rollout is None:
            raise TransitionRefused(f"change request {record.id}: this server cannot start rollouts")
        if record.base_version == 0:
            raise TransitionRefused(f"change request {record.id}: a new config cannot be rolled out; publish it")
        self._rollouts.start(
            record.namespace,
            record.name,
            record.rollout,
            actor=principal.name,
            data=record.data,
            message=message[:1000],
            expected_version=record.base_version,
            also=tuple(plan.transition_ops(self.layout, step, index)),
        )
        return step.record

    def _mark_conflicted(self, record: ChangeRequestRecord, index: int, principal: Principal, head: int) -> None:
        self._apply(plan.conflicted(record, principal, head), index)
        raise VersionConflict(
            f"{record.namespace}/{record.name} moved from v{record.base_version} to v{head} since change request "
            f"{record.id} was proposed: it is now conflicted; review what moved and propose again",
            expected=record.base_version,
            actual=head,
        )

    def _apply(self, step: plan.Transition, index: int) -> ChangeRequestRecord:
        self._commit(plan.transition_ops(self.layout, step, index), f"change request {step.record.id}")
        return step.record

    def _commit(self, ops: list[TxnOp], what: str) -> None:
        try:
            self._gateway.txn(ops)
        except VersionConflict as exc:
            raise VersionConflict(f"{what} changed meanwhile; reload and try again") from exc


def document_text(data: Any) -> str:
    """The document as the editor shows it: pretty JSON, keys in their stored order."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
