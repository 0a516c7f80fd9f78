"""Bulk import: many schemas and configs checked together, then committed in packed, CAS-guarded transactions.

The checks and the packing are :mod:`configd.planning.bulk` (no I/O); this module reads the heads it needs and
commits what was planned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jsonschema import Draft202012Validator

from configd_core.consul import ConsulGateway, KVEntry, TxnOp, op_get
from configd_core.errors import ConfigdError, ValidationFailed, VersionConflict
from configd_core.layout import CONSUL_TXN_MAX_BYTES, CONSUL_TXN_MAX_OPS, MAX_RECORD_BYTES, KeyLayout
from configd_core.records import HeadRecord

from ..planning.bulk import (
    MAX_IMPORT_ITEMS,
    RACE_DETAIL,
    GroupPlan,
    ImportGroup,
    ImportItem,
    ImportOutcome,
    ItemProblem,
    check_items,
    common_prefix,
    import_rejection,
    json_size,
    pack_transactions,
    plan_group,
)
from ..planning.validation import compile_schema
from ..planning.writes import Heads, checked_author, checked_message
from .heads import KnownHeads
from .keys import ServerKeys
from .schemas import SchemaRegistry


class BulkImporter:
    """Writes many schemas and configs at once (``POST /api/v1/import``).

    Args:
        gateway: the Consul gateway.
        layout: the key layout.
        schemas: the schema registry (its validator cache is shared with pushes).
        known: the heads this process remembers; an import forgets those it touched.
        current_data: the document a live head points to, its secrets decrypted (to check it against a schema).
        keys: the server's namespace keys (an imported config's secrets are opened and sealed again).
        current_data: the document a live head points to (inline in the head, or read from its version).
        project: the projection operations of an imported config (namespace, name, document, its JSON Schema),
            appended to its group when the group still fits one transaction (docs/storage.md, "Projections").
    """

    def __init__(
        self,
        gateway: ConsulGateway,
        layout: KeyLayout,
        schemas: SchemaRegistry,
        known: KnownHeads,
        current_data: Callable[[HeadRecord | None], Any | None],
        keys: ServerKeys,
        project: Callable[[str, str, Any, Any], list[TxnOp]] | None = None,
    ) -> None:
        self._gateway = gateway
        self._layout = layout
        self._schemas = schemas
        self._known = known
        self._current_data = current_data
        self._keys = keys
        self._project = project

    def import_items(self, items: list[ImportItem], *, actor: str, message: str = "") -> list[ImportOutcome]:
        """Write many schemas and configs at once; one outcome per item, in item order.

        Everything is checked before anything is written — names, documents, sizes, schemas against the
        meta-schema, each config against the schema it will have after the import, ``expected_version`` against
        the heads — and any problem refuses the whole import (an :class:`ImportRejected`, nothing written).
        Then whole configs (a schema, its config, their audit entries) are packed into as few Consul transactions
        as the limits allow, each guarded by CAS like a push: a config never lands half-written, and a schema
        imported with its config lands in the same transaction as that config. A concurrent writer that moves a
        head in between makes that config's items ``conflict`` while the others land.
        """
        checked_message(message)
        checked_author(actor)
        if not 0 < len(items) <= MAX_IMPORT_ITEMS:
            raise ValidationFailed(f"an import carries 1 to {MAX_IMPORT_ITEMS} items, not {len(items)}")
        groups, problems = check_items(items)
        current = self._import_heads([(g.namespace, g.name) for g in groups])
        validators = self._import_validators(groups, current)
        unchanged: list[ImportOutcome] = []
        ring = self._keys.ring()
        writes: list[tuple[GroupPlan, list[TxnOp], int]] = []
        for group in groups:
            heads = current[(group.namespace, group.name)]
            live_data = self._current_data(heads.head) if self._needs_live_data(group, heads) else None
            plan = plan_group(group, heads, validators, live_data, actor=actor, message=message, ring=ring)
            ops = plan.ops(self._layout)
            size = json_size(ops)
            if size > CONSUL_TXN_MAX_BYTES and plan.schema is not None and plan.config is not None:
                # Too large for one transaction with its schema: the data moves to blob chunks (written first),
                # so the pair still commits atomically.
                plan = plan_group(
                    group,
                    heads,
                    validators,
                    live_data,
                    actor=actor,
                    message=message,
                    record_overhead=MAX_RECORD_BYTES,
                    ring=ring,
                )
                ops = plan.ops(self._layout)
                size = json_size(ops)
            ops, size = self._with_projection(group, heads, plan, ops, size, problems)
            problems.extend(plan.problems)
            unchanged.extend(plan.unchanged)
            if ops:
                writes.append((plan, ops, size))
        if problems:
            raise import_rejection(sorted(problems, key=lambda p: p.index), len(items))
        outcomes = unchanged + self._commit_import(writes)
        for group in groups:
            self._known.forget(group.namespace, group.name)
        return sorted(outcomes, key=lambda o: o.index)

    def _with_projection(
        self,
        group: ImportGroup,
        heads: Heads,
        plan: GroupPlan,
        ops: list[TxnOp],
        size: int,
        problems: list[ItemProblem],
    ) -> tuple[list[TxnOp], int]:
        """The group's operations with its config's projection when they still fit one transaction (else the
        projection follows the import, :meth:`ConfigStore.import_items`)."""
        if self._project is None or plan.config is None or group.config is None:
            return ops, size
        if group.schema is not None:
            schema = group.schema.item.document
        else:
            schema = self._schemas.validator(heads.schema).schema if heads.schema is not None else {}
        try:
            extra = self._project(group.namespace, group.name, group.config.item.document, schema)
        except (ValidationFailed, VersionConflict) as exc:  # a taken key or an unusable projection
            problems.append(ItemProblem(group.config.index, group.config.item, exc, "document"))
            return ops, size
        if extra and len(ops) + len(extra) <= CONSUL_TXN_MAX_OPS and size + json_size(extra) <= CONSUL_TXN_MAX_BYTES:
            return [*ops, *extra], size + json_size(extra)
        return ops, size

    def _import_heads(self, refs: list[tuple[str, str]]) -> dict[tuple[str, str], Heads]:
        """The config and schema heads of ``refs``.

        A read transaction fails as a whole when one of its keys is missing (and an import mostly names new
        configs), so the key names are listed first — per namespace, narrowed to the names' common prefix — and
        only keys that exist are read, in transactions of up to 64 gets.
        """
        names: dict[str, list[str]] = {}
        for namespace, name in refs:
            names.setdefault(namespace, []).append(name)
        wanted: list[str] = []
        for namespace, members in names.items():
            stem = common_prefix(members)
            present = set(self._gateway.keys(self._layout.head(namespace, stem)))
            present.update(self._gateway.keys(self._layout.schema_head(namespace, stem)))
            for name in members:
                wanted += [
                    k
                    for k in (self._layout.head(namespace, name), self._layout.schema_head(namespace, name))
                    if k in present
                ]
        found: dict[str, KVEntry] = {}
        for start in range(0, len(wanted), CONSUL_TXN_MAX_OPS):
            batch = wanted[start : start + CONSUL_TXN_MAX_OPS]
            try:
                entries = self._gateway.txn([op_get(k) for k in batch])
            except VersionConflict:  # a key went away after the listing: read them apart
                entries = [e for k in batch if (e := self._gateway.get(k)) is not None]
            found.update((e.key, e) for e in entries)
        current: dict[tuple[str, str], Heads] = {}
        for namespace, name in refs:
            current[(namespace, name)] = Heads.of(
                found.get(self._layout.head(namespace, name)), found.get(self._layout.schema_head(namespace, name))
            )
        return current

    def _import_validators(
        self, groups: list[ImportGroup], current: dict[tuple[str, str], Heads]
    ) -> dict[str, Draft202012Validator]:
        """A validator per schema sha256 the import needs: each new schema compiled once, each current schema a
        config is validated against loaded in batches (and cached like a push's)."""
        validators: dict[str, Draft202012Validator] = {}
        for group in groups:
            if group.schema is not None and group.schema.sha not in validators:
                validators[group.schema.sha] = compile_schema(group.schema.item.document)
        needed = [
            heads.schema
            for group in groups
            if group.schema is None
            and group.config is not None
            and (heads := current[(group.namespace, group.name)]).schema is not None
        ]
        return self._schemas.validators(needed) | validators

    @staticmethod
    def _needs_live_data(group: ImportGroup, heads: Heads) -> bool:
        """A schema imported without its config is checked against the current config (unless forced)."""
        return (
            group.schema is not None
            and group.config is None
            and not group.schema.item.force
            and heads.head is not None
            and not heads.head.deleted
            and (heads.schema is None or heads.schema.sha256 != group.schema.sha)
        )

    def _commit_import(self, writes: list[tuple[GroupPlan, list[TxnOp], int]]) -> list[ImportOutcome]:
        """Commit the planned writes in packed transactions; the outcome of every item they write.

        A transaction that loses a CAS race is retried config by config, so the race costs only the configs
        another writer touched. Consul failing part-way marks the rest ``failed`` (each transaction is atomic,
        so what landed is whole); failing before anything landed is raised, as for a single write.
        ``writes`` holds each config's plan, its operations and their size in JSON.
        """
        for plan, _, _ in writes:
            if plan.config is not None:
                for key, chunk in plan.config.chunk_puts(self._layout):
                    self._gateway.put(key, chunk)
        outcomes: list[ImportOutcome] = []
        failure: ConfigdError | None = None
        for batch in pack_transactions([(len(ops), size) for _, ops, size in writes]):
            members = [writes[i][:2] for i in batch]
            if len(members) == 1:
                found, failure = self._commit_group(*members[0], failure)
                outcomes += found
                continue
            try:
                self._gateway.txn([op for _, group_ops in members for op in group_ops])
            except VersionConflict:
                # Consul does not say which guard failed: commit each config alone, so that only the configs
                # another writer touched miss.
                for plan, group_ops in members:
                    found, failure = self._commit_group(plan, group_ops, failure)
                    outcomes += found
            except ConfigdError as exc:
                failure = failure or exc
                outcomes += [o for plan, _ in members for o in plan.missed("failed", str(exc))]
            else:
                outcomes += [o for plan, _ in members for o in plan.created()]
        if failure is not None and not any(o.status == "created" for o in outcomes):
            raise failure
        return outcomes

    def _commit_group(
        self, plan: GroupPlan, ops: list[TxnOp], failure: ConfigdError | None
    ) -> tuple[list[ImportOutcome], ConfigdError | None]:
        try:
            self._gateway.txn(ops)
        except VersionConflict:
            return plan.missed("conflict", RACE_DETAIL), failure
        except ConfigdError as exc:
            return plan.missed("failed", str(exc)), failure or exc
        return plan.created(), failure
