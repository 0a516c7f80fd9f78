"""The records of one write, built without I/O: shared by push, schema registration and bulk import.

A write is decided here (checked documents, version records, heads, audit entries, the transaction's operations);
:mod:`configd.store` does the reads before it and the transaction after it.
"""

from __future__ import annotations

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
    ValidationFailed,
)
from configd_core.layout import (
    MAX_CONFIG_BYTES,
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

from .audit import AuditLog, new_entry
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

    def ops(self, layout: KeyLayout, audit: AuditLog, head_index: int) -> list[TxnOp]:
        """Create the version, CAS the schema head from ``head_index`` (0 = new), create the audit entry."""
        namespace, name, version = self.record.namespace, self.record.name, self.record.version
        version_key, head_key = layout.schema_version(namespace, name, version), layout.schema_head(namespace, name)
        return _write_ops(
            version_key, self.record.to_bytes(), head_key, self.head.to_bytes(), head_index, audit.op(self.audit)
        )


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

    def ops(self, layout: KeyLayout, audit: AuditLog, head_index: int) -> list[TxnOp]:
        """Create the version, CAS the config head from ``head_index`` (0 = new), create the audit entry."""
        namespace, name, version = self.record.namespace, self.record.name, self.record.version
        version_key, head_key = layout.version(namespace, name, version), layout.head(namespace, name)
        return _write_ops(
            version_key, self.record.to_bytes(), head_key, self.head.to_bytes(), head_index, audit.op(self.audit)
        )


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
) -> ConfigWrite:
    """The records that make ``data`` the version after ``head`` (validated; ``canonical`` its bytes, ``sha`` theirs).

    ``record_overhead`` is passed to :func:`encode_data`: the larger it is, the sooner the data leaves the record
    for gzip or blob chunks.
    """
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
        action="rollback" if rollback_of is not None else "push",
        namespace=namespace,
        name=name,
        result="created",
        status=201,
        version=version,
        from_version=rollback_of if rollback_of is not None else (head.version if head else None),
        message=message,
    )
    return ConfigWrite(record, new_head, audit, encoded.chunks)
