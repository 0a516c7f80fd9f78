"""Projections in Consul: their settings, the reads a projection write needs, and the writes that do not fit
the head's own transaction (docs/storage.md, "Projections").

A push asks :meth:`ProjectionService.plan` for the projection of the document it is about to make the head and
commits :meth:`ProjectionPlan.inline` with the head (one transaction, guarded by the settings' index). When the
projection does not fit there (64 operations, 512 KiB), the head's transaction carries only the guard and
:meth:`ProjectionService.sync` writes the projection right after, in transactions that each check the head is
still the one projected. Settings changes, deletes and imports use :meth:`sync` too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from configd_core.consul import ConsulGateway, KVEntry, TxnOp, op_cas, op_check_index, op_check_not_exists
from configd_core.errors import ValidationFailed, VersionConflict
from configd_core.layout import KeyLayout, validate_name
from configd_core.records import HeadRecord, ProjectionSpec, ProjectionsRecord, SchemaHeadRecord, utcnow

from ..planning.audit import audit_op, new_entry
from ..planning.projections import (
    ProjectionKeyTaken,
    Target,
    check_specs,
    fits,
    follow_up_batches,
    owner_flags,
    projected_document,
    projection_ops,
    render_all,
    resolve,
    targets,
)
from .schemas import SchemaRegistry

log = logging.getLogger("configd")

SYNC_ATTEMPTS = 5
_KIND_ORDER = {"document": 0, "spring": 1, "tree": 2}


@dataclass(frozen=True)
class ProjectionPlan:
    """What a write of one config does to its projections: ``guards`` (the settings it was planned from) and the
    CAS ``ops`` on the projected keys."""

    guards: list[TxnOp]
    ops: list[TxnOp] = field(default_factory=list)

    def inline(self, base: list[TxnOp]) -> tuple[list[TxnOp], bool]:
        """The operations to append to the head's transaction ``base``, and whether the projection is left for
        :meth:`ProjectionService.sync` (it does not fit beside the head)."""
        if not self.ops:  # nothing projected: the guards go with the head either way (no size to measure)
            return list(self.guards), False
        if fits([*base, *self.guards, *self.ops]):
            return [*self.guards, *self.ops], False
        return list(self.guards), bool(self.ops)


@dataclass(frozen=True)
class ConfigProjection:
    """Where one config is projected (for listings and the UI)."""

    namespace: str
    name: str
    kind: str
    scope: str
    key: str
    format: str


class ProjectionService:
    """Projection settings (``projections/<ns>``) and the writes of projected keys.

    Args:
        gateway: the Consul gateway.
        layout: the key layout.
        schemas: the schema registry (a projection drops the fields the config's schema marks secret).
        current_data: the document a live head points to.
    """

    def __init__(
        self,
        gateway: ConsulGateway,
        layout: KeyLayout,
        schemas: SchemaRegistry,
        current_data: Callable[[HeadRecord | None], Any | None],
    ) -> None:
        self._gateway = gateway
        self._layout = layout
        self._schemas = schemas
        self._current_data = current_data
        self._lock = threading.Lock()
        # Settings per namespace as last read (record, ModifyIndex; 0 = absent). Every transaction that relies on
        # them checks that index, so a stale entry costs a retry, never a wrong projection.
        self._known: dict[str, tuple[ProjectionsRecord | None, int]] = {}

    # --- settings ----------------------------------------------------------------------------------
    def settings(self, namespace: str, *, fresh: bool = True) -> tuple[ProjectionsRecord | None, int]:
        """The namespace's projection settings and their ModifyIndex (None, 0 when there are none)."""
        if not fresh:
            with self._lock:
                known = self._known.get(namespace)
            if known is not None:
                return known
        entry = self._gateway.get(self._layout.projections(namespace))
        found = (ProjectionsRecord.from_bytes(entry.value), entry.modify_index) if entry else (None, 0)
        with self._lock:
            self._known[namespace] = found
        return found

    def guard(self, namespace: str, index: int) -> TxnOp:
        key = self._layout.projections(namespace)
        return op_check_index(key, index) if index else op_check_not_exists(key)

    def forget(self, namespace: str) -> None:
        with self._lock:
            self._known.pop(namespace, None)

    def listing(self, namespace: str | None = None) -> list[ProjectionsRecord]:
        """Every namespace's settings (or one namespace's), in namespace order."""
        if namespace is not None:
            validate_name(namespace, "namespace")
            record, _ = self.settings(namespace)
            return [record] if record is not None else []
        _, entries = self._gateway.list(self._layout.projections_root)
        records = [ProjectionsRecord.from_bytes(e.value) for e in entries]
        return sorted(records, key=lambda r: r.namespace)

    def of_config(self, namespace: str, name: str) -> list[ConfigProjection]:
        """Where ``namespace/name`` is projected (empty when nowhere)."""
        record, _ = self.settings(namespace)
        return [
            ConfigProjection(namespace, name, t.kind, t.scope, t.key, t.format)
            for t in targets(record, namespace, name, self._layout)
        ]

    def key_of(self, spec: ProjectionSpec, namespace: str, name: str) -> str | None:
        """The key (a tree: the prefix) ``spec`` projects ``namespace/name`` to; None when it cannot."""
        try:
            return resolve(spec, namespace, name, self._layout, "config").key
        except ValidationFailed:
            return None

    def public(self, namespace: str, name: str, document: Any) -> dict[str, Any]:
        """``document`` (a live head's) without the fields the config's current schema marks secret (what
        projections and OFREP hand to clients)."""
        if not isinstance(document, dict):
            return {}
        schema = self._schemas.head(namespace, name)
        return projected_document(document, self._schema(schema[0] if schema else None))

    # --- planning a write ------------------------------------------------------------------------------
    def _existing(self, found: list[Target]) -> list[KVEntry]:
        entries: dict[str, KVEntry] = {}
        for target in found:
            if target.kind == "tree":
                _, listed = self._gateway.list(target.key)
                entries.update((e.key, e) for e in listed)
            elif (entry := self._gateway.get(target.key)) is not None:
                entries[entry.key] = entry
        return list(entries.values())

    def _schema(self, schema: SchemaHeadRecord | None) -> Any:
        return self._schemas.validator(schema).schema if schema is not None else {}

    def plan(
        self,
        namespace: str,
        name: str,
        document: dict[str, Any] | None,
        schema: SchemaHeadRecord | None,
        *,
        fresh: bool = True,
        record: tuple[ProjectionsRecord | None, int] | None = None,
        also_scan: list[Target] | None = None,
    ) -> ProjectionPlan:
        """The projection of ``document`` (None: the config is deleted) as the head of ``namespace/name``.

        ``record`` plans against given settings (a settings change) instead of the stored ones; ``also_scan``
        names targets whose keys this config wrote before (projections being replaced) to delete.
        """
        settings, index = record if record is not None else self.settings(namespace, fresh=fresh)
        found = targets(settings, namespace, name, self._layout)
        scanned = found + (also_scan or [])
        guards = [self.guard(namespace, index)] if record is None else []
        if not scanned:
            return ProjectionPlan(guards)
        where = f"{namespace}/{name}"
        wanted = (
            render_all(found, projected_document(document, self._schema(schema)), where) if document is not None else {}
        )
        ops = projection_ops(owner_flags(namespace, name), wanted, self._existing(scanned), scanned, where)
        return ProjectionPlan(guards, ops)

    def import_ops(self, namespace: str, name: str, document: Any, schema: Any) -> list[TxnOp]:
        """The projection of ``document`` (an imported config; ``schema`` the JSON Schema it will have) to ride in
        its import group: the settings guard and the CAS operations, or nothing when the config is not projected.
        ProjectionKeyTaken and ValidationFailed refuse the import (nothing written)."""
        settings, index = self.settings(namespace)
        found = targets(settings, namespace, name, self._layout)
        if not found or not isinstance(document, dict):
            return []
        where = f"{namespace}/{name}"
        wanted = render_all(found, projected_document(document, schema), where)
        ops = projection_ops(owner_flags(namespace, name), wanted, self._existing(found), found, where)
        return [self.guard(namespace, index), *ops]

    # --- writes after the head's own transaction ------------------------------------------------------------
    def sync(self, namespace: str, name: str, *, also_scan: list[Target] | None = None) -> None:
        """Make the projected keys of ``namespace/name`` hold its current head (none when it is deleted or has no
        projections), in transactions that each check the head and the settings are still as read.

        When the head moves meanwhile, the writer that moved it projects its own head, so this one stops.
        ProjectionKeyTaken and ValidationFailed reach the caller.
        """
        for _ in range(SYNC_ATTEMPTS):
            head_entry = self._gateway.get(self._layout.head(namespace, name))
            head = HeadRecord.from_bytes(head_entry.value) if head_entry else None
            head_guard = (
                op_check_index(head_entry.key, head_entry.modify_index)
                if head_entry
                else op_check_not_exists(self._layout.head(namespace, name))
            )
            live = head is not None and not head.deleted
            schema = self._schemas.head(namespace, name) if live else None
            document = self._current_data(head) if live else None
            plan = self.plan(namespace, name, document, schema[0] if schema else None, fresh=True, also_scan=also_scan)
            try:
                for batch in follow_up_batches([head_guard, *plan.guards], plan.ops):
                    self._gateway.txn(batch)
                return
            except VersionConflict:
                moved = self._gateway.get(self._layout.head(namespace, name))
                if head_entry is not None and (moved is None or moved.modify_index != head_entry.modify_index):
                    return
        raise VersionConflict(f"{namespace}/{name}: its projected keys kept changing; projection not written")

    def sync_quietly(self, namespace: str, name: str) -> None:
        """:meth:`sync` after a committed head: a failure is logged (the head stands; the next write repairs)."""
        try:
            self.sync(namespace, name)
        except (ProjectionKeyTaken, ValidationFailed, VersionConflict) as exc:
            log.warning("projection of %s/%s not written: %s", namespace, name, exc)

    # --- settings changes ------------------------------------------------------------------------------------
    def _heads(self, namespace: str, name: str | None) -> list[tuple[str, KVEntry | None]]:
        """The config (or every config of the namespace) with its head entry as read now."""
        if name is not None:
            return [(name, self._gateway.get(self._layout.head(namespace, name)))]
        prefix = self._layout.heads_prefix(namespace)
        _, entries = self._gateway.list(prefix)
        return [(e.key[len(prefix) :], e) for e in entries]

    def update(
        self,
        namespace: str,
        name: str | None,
        specs: list[ProjectionSpec],
        *,
        actor: str,
        remove: set[str] | None = None,
    ) -> ProjectionsRecord:
        """Set ``specs`` — each replaces the projection of its kind, the other kinds stay — or, with no specs,
        unset the kinds in ``remove`` (None: all of them) for ``namespace/name``, or for every config of the
        namespace (``name`` None); then write the projections at once for the current heads.

        Every affected config is planned before anything is written: an unusable target or a key configd did
        not write refuses the change with nothing written. The settings and, when they fit, the projection of
        a single config commit in one transaction (guarded by its head); a namespace's configs are projected
        one by one after the settings.
        """
        validate_name(namespace, "namespace")
        if name is not None:
            validate_name(name, "name")
        check_specs(specs, every_config=name is None)
        for _ in range(SYNC_ATTEMPTS):
            old, index = self.settings(namespace)
            configs = dict(old.configs) if old else {}
            every = list(old.every_config) if old else []
            current = every if name is None else configs.get(name, [])
            dropped = (
                {s.kind for s in specs} if specs else (remove if remove is not None else {"document", "spring", "tree"})
            )
            kept = sorted([s for s in current if s.kind not in dropped] + specs, key=lambda s: _KIND_ORDER[s.kind])
            if name is None:
                every = kept
            elif kept:
                configs[name] = kept
            else:
                configs.pop(name, None)
            new = ProjectionsRecord(
                namespace=namespace, every_config=every, configs=configs, author=actor, updated_at=utcnow()
            )
            plans: list[tuple[str, ProjectionPlan, TxnOp]] = []
            for config, entry in self._heads(namespace, name):
                head = HeadRecord.from_bytes(entry.value) if entry else None
                live = head is not None and not head.deleted
                schema = self._schemas.head(namespace, config) if live else None
                plan = self.plan(
                    namespace,
                    config,
                    self._current_data(head) if live else None,
                    schema[0] if schema else None,
                    record=(new, index),
                    also_scan=targets(old, namespace, config, self._layout),
                )
                key = self._layout.head(namespace, config)
                guard = op_check_index(key, entry.modify_index) if entry else op_check_not_exists(key)
                plans.append((config, plan, guard))
            audit = new_entry(
                actor=actor,
                action="projections.set" if specs else "projections.unset",
                namespace=namespace,
                name=name,
                result="updated",
                status=200,
                message="; ".join(f"{s.kind} {s.target}" for s in specs) or "unset " + ", ".join(sorted(dropped)),
            )
            write = [op_cas(self._layout.projections(namespace), new.to_bytes(), index), audit_op(self._layout, audit)]
            single = [plans[0][2], *plans[0][1].ops] if name is not None else []
            inline = bool(single) and fits([*write, *single])
            try:
                self._gateway.txn([*write, *single] if inline else write)
            except VersionConflict:
                self.forget(namespace)
                continue
            self.forget(namespace)
            for config, plan, _ in plans:
                if plan.ops and not inline:
                    self.sync(namespace, config, also_scan=targets(old, namespace, config, self._layout))
            return new
        raise VersionConflict(f"{namespace}: the projection settings or heads kept changing; nothing was changed")
