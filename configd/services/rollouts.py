"""Rollouts over Consul: start one, read its status and history, move it (promote, pause, resume, abort), and drive
every active rollout from the elected replica (:meth:`Rollouts.drive`, a duty of :class:`.election.ElectedDriver`).

Each move reads the head, decides in :mod:`configd.planning.rollouts`, and commits one transaction that moves the
head by CAS. The rollout's whole state is in Consul (its record in the head, times as UTC timestamps), so the
replica that takes over after the driver dies continues at the same step and bake.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from configd_core.consul import ConsulGateway, KVEntry, TxnOp
from configd_core.errors import ConfigdError, NotFound, VersionConflict
from configd_core.layout import KeyLayout, validate_name
from configd_core.records import HeadRecord, RolloutPlan, RolloutRecord

from ..planning.rollouts import (
    DRIVER,
    Action,
    Move,
    RolloutStep,
    Tally,
    active_rollout,
    failure_summary,
    next_move,
    next_step_at,
    start_rollout,
    step_rollout,
    tally,
)
from ..planning.writes import checked_author, checked_message, config_write, refuse_during_rollout
from .clients import ClientDirectory
from .configs import ConfigStore

log = logging.getLogger("configd.rollouts")

MOVE_ATTEMPTS = 3


@dataclass(frozen=True)
class RolloutStatus:
    """An active (or just ended) rollout with what the instances report about it."""

    rollout: RolloutRecord
    counts: Tally
    next_step_at: datetime | None


class Rollouts:
    """Progressive rollouts of configs (see :mod:`configd.planning.rollouts` for the model)."""

    def __init__(self, gateway: ConsulGateway, store: ConfigStore, clients: ClientDirectory) -> None:
        self._gateway = gateway
        self._store = store
        self._clients = clients
        self.layout: KeyLayout = store.layout

    # --- reads ------------------------------------------------------------------------------------------------
    def _head(self, namespace: str, name: str) -> tuple[HeadRecord, KVEntry]:
        validate_name(namespace, "namespace")
        validate_name(name, "name")
        entry = self._gateway.get(self.layout.head(namespace, name))
        head = HeadRecord.from_bytes(entry.value) if entry else None
        if entry is None or head is None or head.deleted:
            raise NotFound(f"config {namespace}/{name} does not exist")
        return head, entry

    def status_of(self, rollout: RolloutRecord) -> RolloutStatus:
        counted = tally(rollout, self._clients.records(rollout.namespace))
        return RolloutStatus(rollout, counted, next_step_at(rollout))

    def current(self, namespace: str, name: str) -> RolloutStatus:
        """The active rollout of a config with its counts; NotFound when there is none."""
        head, _ = self._head(namespace, name)
        return self.status_of(active_rollout(head, f"{namespace}/{name}"))

    def active(self, namespace: str, name: str) -> RolloutRecord | None:
        """The active rollout of a config, or None (no counts: one read)."""
        try:
            head, _ = self._head(namespace, name)
        except NotFound:
            return None
        return head.rollout if head.rollout is not None and head.rollout.active else None

    def history(self, namespace: str, name: str, *, limit: int = 50) -> list[RolloutRecord]:
        """Finished rollouts of a config, newest first."""
        validate_name(namespace, "namespace")
        validate_name(name, "name")
        _, entries = self._gateway.list(self.layout.rollout_history_prefix(namespace, name))
        newest = sorted(entries, key=lambda e: e.key, reverse=True)[: max(1, limit)]
        return [RolloutRecord.from_bytes(e.value) for e in newest]

    # --- start ------------------------------------------------------------------------------------------------
    def start(
        self,
        namespace: str,
        name: str,
        plan: RolloutPlan,
        *,
        actor: str,
        data: Any | None = None,
        version: int | None = None,
        message: str = "",
        expected_version: int | None = None,
        also: tuple[TxnOp, ...] = (),
    ) -> RolloutStatus:
        """Validate the candidate (``data``, or the document of an existing ``version``) like a push, write it as
        the version after the head without moving the head, and start rolling it out by ``plan``.

        ``expected_version``: the head must be that version (VersionConflict otherwise); ``also``: operations
        committed in the same transaction (a change request's move to published)."""
        checked_message(message)
        checked_author(actor)
        if (data is None) == (version is None):
            raise ConfigdError("give the candidate's data or an existing version, not both and not neither")
        self._head(namespace, name)
        if version is not None:
            _, data = self._store.get(namespace, name, version, sealed=True)
        heads = self._store.read_heads(namespace, name)
        if heads.head is None or heads.head.deleted:
            raise NotFound(f"config {namespace}/{name} does not exist")
        head = heads.head
        refuse_during_rollout(head, "another rollout")
        if expected_version is not None and head.version != expected_version:
            raise VersionConflict(
                f"{namespace}/{name}: expected version {expected_version}, but the head is {head.version}",
                expected=expected_version,
                actual=head.version,
            )
        sealed = self._store.sealed_for(namespace, name, data, heads)
        assert heads.schema is not None
        write = config_write(
            namespace,
            name,
            sealed.data,
            sealed.canonical,
            sealed.sha,
            head=head,
            schema_version=heads.schema.version,
            actor=actor,
            message=message or (f"rollout of v{version}" if version is not None else ""),
        )
        start = start_rollout(write, head, plan, self.layout, actor=actor, message=message)
        for key, chunk in start.chunks:
            self._gateway.put(key, chunk)
        try:
            self._gateway.txn([*start.ops(self.layout, heads.head_index, heads.schema_index), *also])
        except VersionConflict as exc:
            raise VersionConflict(
                f"{namespace}/{name}: the head moved while the rollout was being started; read it again and retry",
                expected=head.version,
            ) from exc
        self._store.forget(namespace, name)
        return self.status_of(start.rollout)

    # --- moves ------------------------------------------------------------------------------------------------
    def move(self, namespace: str, name: str, action: Action, *, actor: str, message: str = "") -> RolloutStatus:
        """Promote (next step, or complete at the last), pause, resume or abort the active rollout."""
        checked_message(message)
        checked_author(actor)
        step = self._move(namespace, name, action, actor=actor, message=message)
        return self.status_of(step.rollout)

    def _move(
        self,
        namespace: str,
        name: str,
        move: Action | Move,
        *,
        actor: str,
        message: str = "",
        expected: str | None = None,
        counted: Tally | None = None,
    ) -> RolloutStep:
        """One move, committed by CAS on the head; a lost race is re-read and decided again (``expected``: the
        rollout id the move was decided for — if another rollout is active by then, NotFound)."""
        for attempt in range(MOVE_ATTEMPTS):
            head, entry = self._head(namespace, name)
            rollout = active_rollout(head, f"{namespace}/{name}")
            if expected is not None and rollout.id != expected:
                raise NotFound(f"{namespace}/{name}: rollout {expected} is no longer active")
            counted = counted or self.status_of(rollout).counts
            candidate = None
            if move in ("promote", "advance", "complete") and rollout.step + 1 >= len(rollout.plan.steps):
                candidate = self._store.version(namespace, name, rollout.candidate_version)
            step = step_rollout(
                head,
                move,
                self.layout,
                actor=actor,
                message=message,
                candidate=candidate,
                failures=counted.failures,
            )
            try:
                self._gateway.txn(step.ops(self.layout, entry.modify_index))
            except VersionConflict:
                if attempt + 1 >= MOVE_ATTEMPTS:
                    raise
                counted = None
                time.sleep(random.uniform(0.005, 0.05))
                continue
            self._store.forget(namespace, name)
            if step.ended and step.rollout.state == "completed":
                self._store.projections.sync_quietly(namespace, name)
            log.info("%s/%s rollout %s: %s by %s", namespace, name, rollout.id, move, actor)
            return step
        raise AssertionError("unreachable")

    # --- the elected driver -------------------------------------------------------------------------------------
    def drive(self, holding: Callable[[], bool] = lambda: True) -> int:
        """Move every active rollout that is due (a duty of the elected replica); returns how many moved.

        Per active rollout: read its head and the namespace's registrations, decide (:func:`next_move`), commit.
        A rollout that cannot be moved now is retried on the next round; the lock is checked between rollouts.
        """
        moved = 0
        root = self.layout.active_rollouts_root
        for key in self._gateway.keys(root):
            if not holding():
                break
            parts = key[len(root) :].split("/")
            if len(parts) != 2:
                continue
            namespace, name = parts
            try:
                moved += self._drive_one(namespace, name)
            except NotFound:
                self._drop_stale_marker(key, namespace, name)
            except ConfigdError as exc:
                log.warning("rollout of %s/%s not driven this round: %s", namespace, name, exc)
        return moved

    def _drive_one(self, namespace: str, name: str) -> int:
        head, _ = self._head(namespace, name)
        rollout = active_rollout(head, f"{namespace}/{name}")
        counted = self.status_of(rollout).counts
        move = next_move(rollout, counted, datetime.now(UTC))
        if move is None:
            return 0
        reason = ""
        if move == "abort":
            reason = f"automatic rollback: {len(counted.failing)} instance(s) failed on v{rollout.candidate_version}"
            reason += f" — {failure_summary(counted.failures)}"
        elif move == "complete":
            reason = "completed after the last step baked"
        elif move == "advance":
            reason = f"step {rollout.step + 1} baked"
        self._move(namespace, name, move, actor=DRIVER, message=reason[:1000], expected=rollout.id, counted=counted)
        return 1

    def _drop_stale_marker(self, key: str, namespace: str, name: str) -> None:
        """A marker whose config has no active rollout (a crash between... cannot happen in one transaction, but a
        restore or a hand edit can leave one): removed so the driver stops looking."""
        if self.active(namespace, name) is None:
            log.info("removing stale rollout marker %s", key)
            self._gateway.delete(key)
