"""The records of one write, built without I/O: shared by push, rollback, schema registration, delete and import.

A write is decided here (checked documents, version records, heads, audit entries) and so is its transaction:
:func:`push_transaction`, :func:`register_transaction`, :func:`schema_and_config_transaction` and
:meth:`DeleteWrite.ops` are the only builders of configd's write transactions. :mod:`configd.services` does the
reads before and the commit after.

Every transaction is guarded by the heads it was decided from (:class:`Heads`): the head it moves by CAS, and the
head it depends on by check-index (or check-not-exists), so two concurrent writers never both win and a config is
never validated against a schema that changed meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from configd_core.consul import (
    KVEntry,
    TxnOp,
    op_cas,
    op_check_index,
    op_check_not_exists,
    op_create,
)
from configd_core.errors import (
    ConfigTooLarge,
    RolloutActive,
    ValidationFailed,
)
from configd_core.layout import (
    MAX_AUTHOR_CHARS,
    MAX_CONFIG_BYTES,
    MAX_MESSAGE_CHARS,
    MAX_SCHEMA_BYTES,
    KeyLayout,
)
from configd_core.records import (
    AuditRecord,
    HeadRecord,
    SchemaHeadRecord,
    SchemaRef,
    SchemaVersionRecord,
    VersionRecord,
    canonical_json,
    check_document,
    encode_data,
    head_inline,
    utcnow,
)

from .audit import audit_op, new_entry
from .validation import schema_errors


@dataclass(frozen=True)
class Heads:
    """What a push depends on: the config head and its schema head, each with the ModifyIndex it was read at
    (0 when absent). The push transaction is guarded by exactly these two indexes."""

    head: HeadRecord | None
    head_index: int
    schema: SchemaHeadRecord | None
    schema_index: int

    @classmethod
    def of(cls, head: KVEntry | None, schema: KVEntry | None) -> Heads:
        """The heads as read from Consul (None: the key does not exist)."""
        return cls(
            head=HeadRecord.from_bytes(head.value) if head else None,
            head_index=head.modify_index if head else 0,
            schema=SchemaHeadRecord.from_bytes(schema.value) if schema else None,
            schema_index=schema.modify_index if schema else 0,
        )


# --- the records of one write: pure, shared by push, schema registration and import --------------------
def checked_message(message: str, what: str = "message") -> str:
    """``message`` if it fits the audit record's limit (MAX_MESSAGE_CHARS), else ValidationFailed."""
    if len(message) > MAX_MESSAGE_CHARS:
        raise ValidationFailed(f"{what} is longer than {MAX_MESSAGE_CHARS} characters")
    return message


def checked_author(actor: str) -> str:
    """``actor`` (a token's name) if it fits MAX_AUTHOR_CHARS, else ValidationFailed."""
    if len(actor) > MAX_AUTHOR_CHARS:
        raise ValidationFailed(f"author is longer than {MAX_AUTHOR_CHARS} characters")
    return actor


def checked_config(data: Any) -> bytes:
    """The canonical bytes of a config document; InvalidConfig or ConfigTooLarge when configd cannot store it."""
    check_document(data)
    canonical = canonical_json(data)
    if len(canonical) > MAX_CONFIG_BYTES:
        raise ConfigTooLarge(len(canonical), MAX_CONFIG_BYTES)
    return canonical


def checked_schema(namespace: str, name: str, schema: Any) -> bytes:
    """The canonical bytes of a JSON Schema; raises unless it is a storable, valid Draft 2020-12 schema."""
    check_document(schema, "schema")
    canonical = canonical_json(schema)
    if len(canonical) > MAX_SCHEMA_BYTES:
        raise ConfigTooLarge(len(canonical), MAX_SCHEMA_BYTES)
    problems = schema_errors(schema)
    if problems:
        raise ValidationFailed(f"{namespace}/{name}: not a valid JSON Schema (Draft 2020-12)", problems)
    return canonical


def refuse_during_rollout(head: HeadRecord | None, what: str) -> None:
    """RolloutActive (409, naming the rollout) when ``head`` has an active rollout: ``what`` (a push, a rollback, a
    delete, a schema change, another rollout) waits until it is completed or aborted."""
    if head is None or head.deleted or head.rollout is None or not head.rollout.active:
        return
    rollout = head.rollout
    raise RolloutActive(
        f"{head.namespace}/{head.name} has an active rollout {rollout.id} (v{rollout.base_version} → "
        f"v{rollout.candidate_version}, {rollout.state}); {what} waits until it is completed or aborted "
        f"(configctl rollout promote|abort {head.namespace}/{head.name})",
        rollout=rollout.id,
    )


def config_guard(layout: KeyLayout, namespace: str, name: str, head_index: int) -> TxnOp:
    """Holds the config head where it was read (absent when ``head_index`` is 0) while its schema changes."""
    key = layout.head(namespace, name)
    return op_check_index(key, head_index) if head_index else op_check_not_exists(key)


def _write_ops(
    version_key: str, version: bytes, head_key: str, head: bytes, head_index: int, audit: TxnOp
) -> list[TxnOp]:
    """Every write's three operations: create the immutable version, move the head by CAS from ``head_index``
    (0 = it must not exist yet), create the audit entry."""
    return [op_create(version_key, version), op_cas(head_key, head, head_index), audit]


@dataclass(frozen=True)
class SchemaWrite:
    """A new schema version, built without I/O: its version record, head and audit entry."""

    record: SchemaVersionRecord
    head: SchemaHeadRecord
    audit: AuditRecord

    def ops(self, layout: KeyLayout, head_index: int) -> list[TxnOp]:
        """Create the version, CAS the schema head from ``head_index`` (0 = new), create the audit entry."""
        namespace, name, version = self.record.namespace, self.record.name, self.record.version
        version_key, head_key = layout.schema_version(namespace, name, version), layout.schema_head(namespace, name)
        audit = audit_op(layout, self.audit)
        return _write_ops(version_key, self.record.to_bytes(), head_key, self.head.to_bytes(), head_index, audit)


def schema_write(
    namespace: str,
    name: str,
    schema: Any,
    sha: str,
    *,
    current: SchemaHeadRecord | None,
    actor: str,
    message: str,
    forced: bool,
) -> SchemaWrite:
    """The records that make ``schema`` (content hash ``sha``) the version after ``current``."""
    version = current.version + 1 if current else 1
    now = utcnow()
    record = SchemaVersionRecord(
        namespace=namespace,
        name=name,
        version=version,
        sha256=sha,
        author=actor,
        message=message,
        created_at=now,
        forced=forced,
        json_schema=schema,
    )
    head = SchemaHeadRecord(namespace=namespace, name=name, version=version, sha256=sha, author=actor, created_at=now)
    audit = new_entry(
        actor=actor,
        action="schema.register",
        namespace=namespace,
        name=name,
        result="forced" if forced else "created",
        status=201,
        version=version,
        from_version=current.version if current else None,
        message=message,
    )
    return SchemaWrite(record, head, audit)


@dataclass(frozen=True)
class ConfigWrite:
    """A new config version, built without I/O: its version record, head, audit entry and any blob chunks."""

    record: VersionRecord
    head: HeadRecord
    audit: AuditRecord
    chunks: tuple[bytes, ...]

    def chunk_puts(self, layout: KeyLayout) -> list[tuple[str, bytes]]:
        """The blob chunks to PUT before the transaction (content-addressed, so a lost race is harmless)."""
        record = self.record
        return [
            (layout.blob_chunk(record.namespace, record.name, record.sha256, i), chunk)
            for i, chunk in enumerate(self.chunks)
        ]

    def ops(self, layout: KeyLayout, head_index: int) -> list[TxnOp]:
        """Create the version, CAS the config head from ``head_index`` (0 = new), create the audit entry."""
        namespace, name, version = self.record.namespace, self.record.name, self.record.version
        version_key, head_key = layout.version(namespace, name, version), layout.head(namespace, name)
        audit = audit_op(layout, self.audit)
        return _write_ops(version_key, self.record.to_bytes(), head_key, self.head.to_bytes(), head_index, audit)


def config_write(
    namespace: str,
    name: str,
    data: Any,
    canonical: bytes,
    sha: str,
    *,
    head: HeadRecord | None,
    schema_version: int,
    actor: str,
    message: str,
    rollback_of: int | None = None,
    record_overhead: int = 4096,
    action: str | None = None,
) -> ConfigWrite:
    """The records that make ``data`` the version after ``head`` (validated; ``canonical`` its bytes, ``sha`` theirs).

    ``record_overhead`` is passed to :func:`encode_data`: the larger it is, the sooner the data leaves the record
    for gzip or blob chunks. ``action`` names the audit entry's action (default: push or rollback). A head with
    an active rollout takes no new version (RolloutActive): the rollout's candidate is the next one.
    """
    refuse_during_rollout(head, "a new version")
    version = head.version + 1 if head else 1
    encoded = encode_data(data, canonical, record_overhead=record_overhead)
    now = utcnow()
    schema_ref = SchemaRef(namespace=namespace, name=name, version=schema_version)
    record = VersionRecord(
        namespace=namespace,
        name=name,
        version=version,
        parent=head.version if head else None,
        sha256=sha,
        size=len(canonical),
        schema_ref=schema_ref,
        author=actor,
        message=message,
        created_at=now,
        rollback_of=rollback_of,
        encoding=encoded.encoding,
        data=encoded.inline,
        chunks=len(encoded.chunks),
    )
    new_head = HeadRecord(
        namespace=namespace,
        name=name,
        version=version,
        sha256=sha,
        size=len(canonical),
        schema_ref=schema_ref,
        author=actor,
        message=message,
        created_at=now,
        data=head_inline(data, canonical),
    )
    audit = new_entry(
        actor=actor,
        action=action or ("rollback" if rollback_of is not None else "push"),
        namespace=namespace,
        name=name,
        result="created",
        status=201,
        version=version,
        from_version=rollback_of if rollback_of is not None else (head.version if head else None),
        message=message,
    )
    return ConfigWrite(record, new_head, audit, encoded.chunks)


@dataclass(frozen=True)
class DeleteWrite:
    """A config's tombstone, built without I/O: the head marked deleted (history stays) and its audit entry."""

    tombstone: HeadRecord
    audit: AuditRecord

    def ops(self, layout: KeyLayout, head_index: int, extra: Sequence[TxnOp] = ()) -> list[TxnOp]:
        """CAS the head to its tombstone from ``head_index``, create the audit entry; then ``extra`` (the removal
        of the config's projected keys, :mod:`configd.planning.projections`)."""
        key = layout.head(self.tombstone.namespace, self.tombstone.name)
        return [op_cas(key, self.tombstone.to_bytes(), head_index), audit_op(layout, self.audit), *extra]


def delete_write(head: HeadRecord, *, actor: str, message: str) -> DeleteWrite:
    """The tombstone that deletes the live config ``head`` points to (not during a rollout)."""
    refuse_during_rollout(head, "deleting it")
    tombstone = head.model_copy(
        update={"deleted": True, "data": None, "author": actor, "message": message or "deleted", "created_at": utcnow()}
    )
    audit = new_entry(
        actor=actor,
        action="delete",
        namespace=head.namespace,
        name=head.name,
        result="deleted",
        status=200,
        version=head.version,
        message=message,
    )
    return DeleteWrite(tombstone, audit)


# --- the transactions: the one builder of each, shared by push, rollback, registration and import ----------
def push_transaction(layout: KeyLayout, write: ConfigWrite, current: Heads, extra: Sequence[TxnOp] = ()) -> list[TxnOp]:
    """A config version against an unchanged schema: the schema head must still be at ``current.schema_index``
    (the version was validated against it) and the config head moves by CAS from ``current.head_index``.
    ``extra`` follows them: the projection of the new head (:mod:`configd.planning.projections`), when it fits."""
    record = write.record
    return [
        op_check_index(layout.schema_head(record.namespace, record.name), current.schema_index),
        *write.ops(layout, current.head_index),
        *extra,
    ]


def register_transaction(layout: KeyLayout, write: SchemaWrite, current: Heads) -> list[TxnOp]:
    """A schema version alone: the config head must still be where it was read (the current config was checked
    against the new schema) and the schema head moves by CAS from ``current.schema_index``."""
    record = write.record
    return [
        config_guard(layout, record.namespace, record.name, current.head_index),
        *write.ops(layout, current.schema_index),
    ]


def schema_and_config_transaction(
    layout: KeyLayout, schema: SchemaWrite, config: ConfigWrite, current: Heads
) -> list[TxnOp]:
    """A schema version and a config version together (an import): each head moves by its own CAS, which guards
    the other as well."""
    return [*schema.ops(layout, current.schema_index), *config.ops(layout, current.head_index)]
