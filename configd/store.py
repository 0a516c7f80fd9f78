"""The versioned, schema-validated store at the heart of configd: configs and schemas in Consul KV.

Every write follows one shape: read the heads it depends on, decide without I/O (validate, compare,
encode), then commit in ONE Consul transaction guarded by the heads' ModifyIndex (CAS). A reader therefore
never sees a head without its version record, and two concurrent writers never both win.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from jsonschema import Draft202012Validator

from configd_core.consul import (
    ConsulGateway,
    KVEntry,
    TxnOp,
    op_cas,
    op_check_index,
    op_get,
)
from configd_core.diff import Change, diff_json, unified_diff
from configd_core.errors import (
    ConfigdError,
    NotFound,
    SchemaIncompatible,
    SchemaNotFound,
    ValidationFailed,
    VersionConflict,
)
from configd_core.layout import (
    CONSUL_TXN_MAX_BYTES,
    CONSUL_TXN_MAX_OPS,
    MAX_AUTHOR_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_RECORD_BYTES,
    KeyLayout,
    validate_name,
)
from configd_core.records import (
    AuditRecord,
    HeadRecord,
    SchemaHeadRecord,
    SchemaRef,
    SchemaVersionRecord,
    VersionRecord,
    decode_data,
    sha256_hex,
    utcnow,
)

from .audit import AuditLog, new_entry
from .bulk import (
    MAX_IMPORT_ITEMS,
    RACE_DETAIL,
    GroupPlan,
    ImportGroup,
    ImportItem,
    ImportOutcome,
    check_items,
    common_prefix,
    import_rejection,
    json_size,
    pack_transactions,
    plan_group,
)
from .validation import compile_schema, config_errors
from .writes import Heads, checked_config, checked_schema, config_guard, config_write, schema_write

WriteStatus = Literal["created", "unchanged"]
# Without expected_version a push means "make this the head": a lost CAS race is retried this many times
# (re-reading and re-validating each time) before VersionConflict reaches the caller.
PUSH_ATTEMPTS = 5


@dataclass(frozen=True)
class PushResult:
    """Outcome of a push, rollback or delete: the head after it, and whether a version was created."""

    status: WriteStatus
    head: HeadRecord

    @property
    def created(self) -> bool:
        return self.status == "created"


@dataclass(frozen=True)
class SchemaResult:
    status: WriteStatus
    record: SchemaVersionRecord


@dataclass(frozen=True)
class DryRun:
    """What a push would do, computed without writing: validation errors and the diff against the head."""

    valid: bool
    errors: list[Any]
    head_version: int | None
    changes: list[Change]
    unified: str
    schema_ref: SchemaRef | None


@dataclass(frozen=True)
class VersionDiff:
    from_version: int
    to_version: int
    changes: list[Change]
    unified: str


@dataclass(frozen=True)
class HeadsPage:
    """Live heads of one namespace in name order; ``next_after`` continues the listing."""

    heads: list[HeadRecord]
    next_after: str | None


@dataclass(frozen=True)
class HistoryPage:
    """Version records newest first, without their data; ``next_before`` continues the listing."""

    versions: list[VersionRecord]
    total: int
    next_before: int | None


@dataclass(frozen=True)
class _PushRequest:
    namespace: str
    name: str
    data: Any
    actor: str
    message: str
    expected_version: int | None
    rollback_of: int | None


@dataclass
class _KnownHeads:
    """The heads this process last read or committed, per config (bounded LRU, thread-safe).

    A push may start from these instead of reading Consul: its transaction's CAS on the head and check-index on
    the schema head then prove them current (or fail, and the push re-reads). Another writer — a second server
    process, a replica — makes an entry stale, which costs one failed transaction, never a wrong result.
    """

    maxsize: int = 4096
    _items: OrderedDict[tuple[str, str], Heads] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, namespace: str, name: str) -> Heads | None:
        with self._lock:
            found = self._items.get((namespace, name))
            if found is not None:
                self._items.move_to_end((namespace, name))
            return found

    def put(self, namespace: str, name: str, heads: Heads) -> None:
        with self._lock:
            self._items[(namespace, name)] = heads
            self._items.move_to_end((namespace, name))
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._items.pop((namespace, name), None)


def _clip(text: str, limit: int, what: str) -> str:
    if len(text) > limit:
        raise ValidationFailed(f"{what} is longer than {limit} characters")
    return text


@dataclass
class _ValidatorCache:
    """Compiled validators per schema version (keyed by content hash too): a push never recompiles."""

    maxsize: int = 1024
    compiled: int = 0
    _items: OrderedDict[tuple[str, str, int, str], Draft202012Validator] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def cached(self, key: tuple[str, str, int, str]) -> Draft202012Validator | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def add(self, key: tuple[str, str, int, str], validator: Draft202012Validator, *, compiled: bool = True) -> None:
        with self._lock:
            self.compiled += compiled
            self._items[key] = validator
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def get(self, key: tuple[str, str, int, str], build: Callable[[], dict[str, Any]]) -> Draft202012Validator:
        found = self.cached(key)
        if found is None:
            found = compile_schema(build())
            self.add(key, found)
        return found


class SchemaRegistry:
    """Versioned JSON Schemas (Draft 2020-12), meta-validated when registered."""

    def __init__(self, gateway: ConsulGateway, layout: KeyLayout, audit: AuditLog) -> None:
        self._gateway = gateway
        self._layout = layout
        self._audit = audit
        self._validators = _ValidatorCache()

    @property
    def compiled_count(self) -> int:
        """How many schemas were compiled since start (a push of a known schema version adds none)."""
        return self._validators.compiled

    def head(self, namespace: str, name: str) -> tuple[SchemaHeadRecord, KVEntry] | None:
        entry = self._gateway.get(self._layout.schema_head(namespace, name))
        return (SchemaHeadRecord.from_bytes(entry.value), entry) if entry else None

    def get(self, namespace: str, name: str, version: int | None = None) -> SchemaVersionRecord:
        """The current schema, or one version of it."""
        validate_name(namespace, "namespace")
        validate_name(name, "name")
        if version is None:
            found = self.head(namespace, name)
            if found is None:
                raise SchemaNotFound(f"no schema is registered for {namespace}/{name}")
            version = found[0].version
        entry = self._gateway.get(self._layout.schema_version(namespace, name, version))
        if entry is None:
            raise NotFound(f"schema {namespace}/{name} has no version {version}")
        return SchemaVersionRecord.from_bytes(entry.value)

    def versions(self, namespace: str, name: str) -> list[int]:
        keys = self._gateway.keys(self._layout.schema_versions_prefix(namespace, name))
        return sorted(int(k.rsplit("/", 1)[-1]) for k in keys)

    def validator(self, head: SchemaHeadRecord) -> Draft202012Validator:
        key = (head.namespace, head.name, head.version, head.sha256)
        return self._validators.get(key, lambda: self.get(head.namespace, head.name, head.version).json_schema)

    def heads(self, namespace: str) -> list[SchemaHeadRecord]:
        """The schema heads of a namespace, in name order (one recursive read: heads are small)."""
        validate_name(namespace, "namespace")
        _, entries = self._gateway.list(self._layout.schema_head(namespace, ""))
        return sorted((SchemaHeadRecord.from_bytes(e.value) for e in entries), key=lambda h: h.name)

    def validators(self, heads: list[SchemaHeadRecord]) -> dict[str, Draft202012Validator]:
        """Compiled validators of many schema heads, by sha256. The versions not cached yet are read in
        transactions of up to 64 gets, and identical schemas (same sha256) are compiled once."""
        found: dict[str, Draft202012Validator] = {}
        missing: list[SchemaHeadRecord] = []
        for head in heads:
            cached = self._validators.cached((head.namespace, head.name, head.version, head.sha256))
            if cached is not None:
                found.setdefault(head.sha256, cached)
            else:
                missing.append(head)
        for start in range(0, len(missing), CONSUL_TXN_MAX_OPS):
            batch = missing[start : start + CONSUL_TXN_MAX_OPS]
            try:
                entries = self._gateway.txn(
                    [op_get(self._layout.schema_version(h.namespace, h.name, h.version)) for h in batch]
                )
                records = [SchemaVersionRecord.from_bytes(e.value) for e in entries]
            except VersionConflict:  # a version that is not there fails the read as a whole: read them apart
                records = [self.get(h.namespace, h.name, h.version) for h in batch]
            for head, record in zip(batch, records, strict=True):
                known = found.get(head.sha256)
                validator = known if known is not None else compile_schema(record.json_schema)
                self._validators.add(
                    (head.namespace, head.name, head.version, head.sha256), validator, compiled=known is None
                )
                found[head.sha256] = validator
        return found

    def register(
        self,
        namespace: str,
        name: str,
        schema: Any,
        *,
        actor: str,
        message: str = "",
        force: bool = False,
        current_config: Callable[[], Any | None] | None = None,
    ) -> SchemaResult:
        """Register a new schema version.

        Raises ValidationFailed when ``schema`` is not a valid Draft 2020-12 schema, and SchemaIncompatible when
        the config's current head would fail it (unless ``force``). Identical content reports "unchanged".
        """
        validate_name(namespace, "namespace")
        validate_name(name, "name")
        _clip(message, MAX_MESSAGE_CHARS, "message")
        _clip(actor, MAX_AUTHOR_CHARS, "author")
        sha = sha256_hex(checked_schema(namespace, name, schema))

        found = self.head(namespace, name)
        if found is not None and found[0].sha256 == sha:
            return SchemaResult("unchanged", self.get(namespace, name, found[0].version))

        config_entry = self._gateway.get(self._layout.head(namespace, name))
        if config_entry is not None and current_config is not None:
            data = current_config()
            if data is not None:
                errors = config_errors(compile_schema(schema), data)
                if errors and not force:
                    raise SchemaIncompatible(
                        f"{namespace}/{name}: the current config would fail this schema; "
                        "fix the config first or register with force",
                        errors,
                    )

        write = schema_write(
            namespace,
            name,
            schema,
            sha,
            current=found[0] if found else None,
            actor=actor,
            message=message,
            forced=force,
        )
        guard = config_guard(self._layout, namespace, name, config_entry.modify_index if config_entry else 0)
        self._gateway.txn([guard, *write.ops(self._layout, self._audit, found[1].modify_index if found else 0)])
        return SchemaResult("created", write.record)


class ConfigStore:
    """Versioned configs: push, history, rollback, diff and delete, all validated against their schema."""

    def __init__(self, gateway: ConsulGateway, layout: KeyLayout | None = None) -> None:
        self.gateway = gateway
        self.layout = layout or KeyLayout()
        self.audit = AuditLog(gateway, self.layout)
        self.schemas = SchemaRegistry(gateway, self.layout, self.audit)
        self._known = _KnownHeads()

    # --- reads -------------------------------------------------------------------------------------
    def _head(self, namespace: str, name: str) -> tuple[HeadRecord, KVEntry] | None:
        entry = self.gateway.get(self.layout.head(namespace, name))
        return (HeadRecord.from_bytes(entry.value), entry) if entry else None

    def head(self, namespace: str, name: str) -> HeadRecord:
        """The current head of a live (not deleted) config."""
        validate_name(namespace, "namespace")
        validate_name(name, "name")
        found = self._head(namespace, name)
        if found is None or found[0].deleted:
            raise NotFound(f"config {namespace}/{name} does not exist")
        return found[0]

    def version(self, namespace: str, name: str, version: int | None = None) -> VersionRecord:
        """One version record (the head's when ``version`` is None)."""
        if version is None:
            version = self.head(namespace, name).version
        validate_name(namespace, "namespace")
        validate_name(name, "name")
        entry = self.gateway.get(self.layout.version(namespace, name, version))
        if entry is None:
            raise NotFound(f"config {namespace}/{name} has no version {version}")
        return VersionRecord.from_bytes(entry.value)

    def data(self, record: VersionRecord) -> Any:
        """The document of a version, reassembled from blob chunks when it was stored in them."""
        return decode_data(record, self._chunks)

    def _chunks(self, record: VersionRecord) -> list[bytes]:
        _, entries = self.gateway.list(self.layout.blob_prefix(record.namespace, record.name, record.sha256))
        return [e.value for e in sorted(entries, key=lambda e: e.key)]

    def get(self, namespace: str, name: str, version: int | None = None) -> tuple[VersionRecord, Any]:
        record = self.version(namespace, name, version)
        return record, self.data(record)

    def history(self, namespace: str, name: str, *, limit: int = 50, before: int | None = None) -> HistoryPage:
        """Versions newest first, ``limit`` per page, those below ``before`` (exclusive) when given."""
        validate_name(namespace, "namespace")
        validate_name(name, "name")
        keys = self.gateway.keys(self.layout.versions_prefix(namespace, name))
        if not keys:
            raise NotFound(f"config {namespace}/{name} does not exist")
        numbers = sorted((int(k.rsplit("/", 1)[-1]) for k in keys), reverse=True)
        eligible = [v for v in numbers if before is None or v < before]
        page = eligible[: max(1, limit)]
        records: list[VersionRecord] = []
        for start in range(0, len(page), CONSUL_TXN_MAX_OPS):
            batch = page[start : start + CONSUL_TXN_MAX_OPS]
            entries = self.gateway.txn([op_get(self.layout.version(namespace, name, v)) for v in batch])
            records.extend(VersionRecord.from_bytes(e.value).model_copy(update={"data": None}) for e in entries)
        more = len(eligible) > len(page)
        return HistoryPage(records, total=len(numbers), next_before=page[-1] if more and page else None)

    def heads(self, namespace: str | None = None, *, include_deleted: bool = False) -> list[HeadRecord]:
        """Heads of one namespace, or of every namespace, sorted by namespace and name."""
        if namespace is not None:
            validate_name(namespace, "namespace")
        prefix = self.layout.heads_prefix(namespace) if namespace else self.layout.heads_root
        _, entries = self.gateway.list(prefix)
        heads = [HeadRecord.from_bytes(e.value) for e in entries]
        return sorted((h for h in heads if include_deleted or not h.deleted), key=lambda h: (h.namespace, h.name))

    def heads_page(self, namespace: str, *, limit: int, after: str | None = None) -> HeadsPage:
        """Up to ``limit`` live heads of a namespace with names after ``after``, in name order.

        Lists key names only (no values), then reads just the page's heads in read-only transactions, so a page
        costs the same in a namespace of 10 configs or of 10,000. Tombstones are skipped, so a page may hold
        fewer than ``limit`` heads; ``next_after`` is None on the last page.
        """
        validate_name(namespace, "namespace")
        if after is not None:
            validate_name(after, "after")
        prefix = self.layout.heads_prefix(namespace)
        names = [k[len(prefix) :] for k in self.gateway.keys(prefix)]
        eligible = [n for n in names if after is None or n > after]
        page = eligible[: max(1, limit)]
        heads: list[HeadRecord] = []
        for start in range(0, len(page), CONSUL_TXN_MAX_OPS):
            batch = page[start : start + CONSUL_TXN_MAX_OPS]
            entries = self.gateway.txn([op_get(self.layout.head(namespace, n)) for n in batch])
            heads.extend(h for h in (HeadRecord.from_bytes(e.value) for e in entries) if not h.deleted)
        more = len(eligible) > len(page)
        return HeadsPage(heads, next_after=page[-1] if more else None)

    def namespaces(self) -> dict[str, list[HeadRecord]]:
        """Live configs grouped by namespace."""
        grouped: dict[str, list[HeadRecord]] = {}
        for head in self.heads():
            grouped.setdefault(head.namespace, []).append(head)
        return grouped

    def diff(self, namespace: str, name: str, from_version: int, to_version: int) -> VersionDiff:
        a = self.data(self.version(namespace, name, from_version))
        b = self.data(self.version(namespace, name, to_version))
        return VersionDiff(
            from_version,
            to_version,
            diff_json(a, b),
            unified_diff(
                a,
                b,
                from_label=f"{namespace}/{name}@v{from_version}",
                to_label=f"{namespace}/{name}@v{to_version}",
            ),
        )

    # --- validation --------------------------------------------------------------------------------
    def _validated(self, namespace: str, name: str, data: Any, schema_head: SchemaHeadRecord | None) -> bytes:
        """Check ``data`` against the config's current schema head; returns its canonical bytes."""
        canonical = checked_config(data)
        if schema_head is None:
            raise SchemaNotFound(f"no schema is registered for {namespace}/{name}; register one before pushing configs")
        errors = config_errors(self.schemas.validator(schema_head), data)
        if errors:
            raise ValidationFailed(
                f"{namespace}/{name}: {len(errors)} validation error(s) against schema v{schema_head.version}",
                errors,
            )
        return canonical

    def _read_heads(self, namespace: str, name: str) -> Heads:
        """The config head and the schema head as Consul has them now, in one round trip when both exist."""
        head_key, schema_key = self.layout.head(namespace, name), self.layout.schema_head(namespace, name)
        try:
            found = {e.key: e for e in self.gateway.txn([op_get(head_key), op_get(schema_key)])}
        except VersionConflict:  # a read transaction fails as a whole when a key is missing: read them apart
            found = {key: entry for key in (head_key, schema_key) if (entry := self.gateway.get(key)) is not None}
        heads = Heads.of(found.get(head_key), found.get(schema_key))
        self._known.put(namespace, name, heads)
        return heads

    def dry_run(self, namespace: str, name: str, data: Any) -> DryRun:
        """Validate and diff against the head without writing anything."""
        validate_name(namespace, "namespace")
        validate_name(name, "name")
        current = self._read_heads(namespace, name)
        head = current.head if current.head and not current.head.deleted else None
        old = self._current_data(head)
        try:
            self._validated(namespace, name, data, current.schema)
            errors: list[Any] = []
            assert current.schema is not None
            ref: SchemaRef | None = SchemaRef(namespace=namespace, name=name, version=current.schema.version)
        except ValidationFailed as exc:
            errors, ref = exc.errors, None
        changes = diff_json(old, data) if old is not None else diff_json({}, data)
        return DryRun(
            valid=not errors,
            errors=errors,
            head_version=head.version if head else None,
            changes=changes,
            unified=unified_diff(old, data, from_label="head", to_label="candidate"),
            schema_ref=ref,
        )

    # --- writes ------------------------------------------------------------------------------------
    def push(
        self,
        namespace: str,
        name: str,
        data: Any,
        *,
        actor: str,
        message: str = "",
        expected_version: int | None = None,
        rollback_of: int | None = None,
    ) -> PushResult:
        """Validate ``data`` and make it the new head in one CAS-guarded transaction.

        ``expected_version`` (0 = the config must not exist) makes the push conditional like an ETag: if the
        head is elsewhere, VersionConflict. Without it, a lost race is re-read and retried a few times.
        Identical content to the head writes nothing and reports "unchanged".
        """
        validate_name(namespace, "namespace")
        validate_name(name, "name")
        _clip(message, MAX_MESSAGE_CHARS, "message")
        _clip(actor, MAX_AUTHOR_CHARS, "author")
        request = _PushRequest(namespace, name, data, actor, message, expected_version, rollback_of)
        attempts = 1 if expected_version is not None else PUSH_ATTEMPTS
        for attempt in range(attempts):
            try:
                return self._push_attempt(request)
            except VersionConflict:
                if attempt + 1 >= attempts:
                    raise
                time.sleep(random.uniform(0.001, 0.01 * (attempt + 1)))
        raise AssertionError("unreachable")

    def _push_attempt(self, request: _PushRequest) -> PushResult:
        """One push from the heads this process already knows, else (or when they prove stale) from a fresh read.

        Only a created version is trusted from known heads: its transaction's CAS and check-index prove they
        were current. Every other outcome — unchanged, an expected-version mismatch, a validation failure, a lost
        race — is decided again on a fresh read, so a stale cache can cost a round trip but never a wrong answer.
        """
        known = self._known.get(request.namespace, request.name)
        if known is not None:
            try:
                result = self._push_once(request, known, fresh=False)
                if result.created:
                    return result
            except (VersionConflict, ValidationFailed):
                pass
            self._known.forget(request.namespace, request.name)
        return self._push_once(request, self._read_heads(request.namespace, request.name), fresh=True)

    def _push_once(self, request: _PushRequest, current: Heads, *, fresh: bool) -> PushResult:
        namespace, name, data = request.namespace, request.name, request.data
        head = current.head
        live_version = head.version if head and not head.deleted else 0
        if request.expected_version is not None and request.expected_version != live_version:
            raise VersionConflict(
                f"{namespace}/{name}: expected version {request.expected_version}, but the head is {live_version}",
                expected=request.expected_version,
                actual=live_version,
            )
        canonical = self._validated(namespace, name, data, current.schema)
        assert current.schema is not None
        schema_head = current.schema
        sha = sha256_hex(canonical)
        if head is not None and not head.deleted and head.sha256 == sha:
            return PushResult("unchanged", head)

        write = config_write(
            namespace,
            name,
            data,
            canonical,
            sha,
            head=head,
            schema_version=schema_head.version,
            actor=request.actor,
            message=request.message,
            rollback_of=request.rollback_of,
        )
        # Chunks go first, each its own PUT, keyed by content hash: the head flip below stays one transaction,
        # and an orphan left by a lost race holds the same bytes any later writer would write.
        for key, chunk in write.chunk_puts(self.layout):
            self.gateway.put(key, chunk)
        try:
            results = self._commit(
                [
                    op_check_index(self.layout.schema_head(namespace, name), current.schema_index),
                    *write.ops(self.layout, self.audit, current.head_index),
                ],
                f"{namespace}/{name}",
            )
        except VersionConflict as exc:
            if not fresh:
                raise
            # A lost CAS race still reports which head the caller expected and which one won (the 409 contract).
            moved = self._head(namespace, name)
            actual = moved[0].version if moved and not moved[0].deleted else 0
            raise VersionConflict(str(exc), expected=live_version, actual=actual) from exc
        committed = Heads(write.head, results[2].modify_index, schema_head, current.schema_index)
        self._known.put(namespace, name, committed)
        return PushResult("created", write.head)

    def _commit(self, ops: list[TxnOp], what: str) -> list[KVEntry]:
        try:
            return self.gateway.txn(ops)
        except VersionConflict as exc:
            raise VersionConflict(f"{what}: another write landed first; re-read the head and retry") from exc

    def rollback(
        self,
        namespace: str,
        name: str,
        to_version: int,
        *,
        actor: str,
        message: str = "",
        expected_version: int | None = None,
    ) -> PushResult:
        """A new version whose content equals ``to_version`` (history is never rewritten).

        The old content is validated against the current schema like any push.
        """
        self.head(namespace, name)
        record, data = self.get(namespace, name, to_version)
        return self.push(
            namespace,
            name,
            data,
            actor=actor,
            message=message or f"rollback to v{record.version}",
            expected_version=expected_version,
            rollback_of=record.version,
        )

    def delete(self, namespace: str, name: str, *, actor: str, message: str = "") -> PushResult:
        """Mark the config deleted: its head becomes a tombstone, its history stays readable."""
        validate_name(namespace, "namespace")
        validate_name(name, "name")
        _clip(message, MAX_MESSAGE_CHARS, "message")
        found = self._head(namespace, name)
        if found is None or found[0].deleted:
            raise NotFound(f"config {namespace}/{name} does not exist")
        head, entry = found
        self._known.forget(namespace, name)
        tombstone = head.model_copy(
            update={
                "deleted": True,
                "data": None,
                "author": actor,
                "message": message or "deleted",
                "created_at": utcnow(),
            }
        )
        audit = new_entry(
            actor=actor,
            action="delete",
            namespace=namespace,
            name=name,
            result="deleted",
            status=200,
            version=head.version,
            message=message,
        )
        self._commit(
            [
                op_cas(self.layout.head(namespace, name), tombstone.to_bytes(), entry.modify_index),
                self.audit.op(audit),
            ],
            f"{namespace}/{name}",
        )
        return PushResult("created", tombstone)

    def register_schema(
        self, namespace: str, name: str, schema: Any, *, actor: str, message: str = "", force: bool = False
    ) -> SchemaResult:
        """Register a schema version; refuses one the current head would fail unless ``force``."""

        def current() -> Any | None:
            found = self._head(namespace, name)
            return self._current_data(found[0] if found else None)

        self._known.forget(namespace, name)
        return self.schemas.register(
            namespace, name, schema, actor=actor, message=message, force=force, current_config=current
        )

    def record_rejection(self, entry: AuditRecord) -> None:
        """Append the audit entry of a rejected write attempt (the only write a rejection makes)."""
        # Consul being down is why many writes fail; then the caller's error is the one that matters.
        with contextlib.suppress(ConfigdError):
            self.audit.append(entry)

    # --- bulk import ---------------------------------------------------------------------------------
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
        _clip(message, MAX_MESSAGE_CHARS, "message")
        _clip(actor, MAX_AUTHOR_CHARS, "author")
        if not 0 < len(items) <= MAX_IMPORT_ITEMS:
            raise ValidationFailed(f"an import carries 1 to {MAX_IMPORT_ITEMS} items, not {len(items)}")
        groups, problems = check_items(items)
        current = self._import_heads([(g.namespace, g.name) for g in groups])
        validators = self._import_validators(groups, current)
        unchanged: list[ImportOutcome] = []
        writes: list[tuple[GroupPlan, list[TxnOp], int]] = []
        for group in groups:
            heads = current[(group.namespace, group.name)]
            live_data = self._current_data(heads.head) if self._needs_live_data(group, heads) else None
            plan = plan_group(group, heads, validators, live_data, actor=actor, message=message)
            ops = plan.ops(self.layout, self.audit)
            size = json_size(ops)
            if size > CONSUL_TXN_MAX_BYTES and plan.schema is not None and plan.config is not None:
                # Too large for one transaction with its schema: the data moves to blob chunks (written first),
                # so the pair still commits atomically.
                plan = plan_group(
                    group, heads, validators, live_data, actor=actor, message=message, record_overhead=MAX_RECORD_BYTES
                )
                ops = plan.ops(self.layout, self.audit)
                size = json_size(ops)
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
            present = set(self.gateway.keys(self.layout.head(namespace, stem)))
            present.update(self.gateway.keys(self.layout.schema_head(namespace, stem)))
            for name in members:
                wanted += [
                    k
                    for k in (self.layout.head(namespace, name), self.layout.schema_head(namespace, name))
                    if k in present
                ]
        found: dict[str, KVEntry] = {}
        for start in range(0, len(wanted), CONSUL_TXN_MAX_OPS):
            batch = wanted[start : start + CONSUL_TXN_MAX_OPS]
            try:
                entries = self.gateway.txn([op_get(k) for k in batch])
            except VersionConflict:  # a key went away after the listing: read them apart
                entries = [e for k in batch if (e := self.gateway.get(k)) is not None]
            found.update((e.key, e) for e in entries)
        current: dict[tuple[str, str], Heads] = {}
        for namespace, name in refs:
            current[(namespace, name)] = Heads.of(
                found.get(self.layout.head(namespace, name)), found.get(self.layout.schema_head(namespace, name))
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
        return self.schemas.validators(needed) | validators

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

    def _current_data(self, head: HeadRecord | None) -> Any | None:
        """The document a live head points to: carried in the head when small, else read from its version."""
        if head is None or head.deleted:
            return None
        inline = head.inline_data()
        return inline if inline is not None else self.data(self.version(head.namespace, head.name, head.version))

    def _commit_import(self, writes: list[tuple[GroupPlan, list[TxnOp], int]]) -> list[ImportOutcome]:
        """Commit the planned writes in packed transactions; the outcome of every item they write.

        A transaction that loses a CAS race is retried config by config, so the race costs only the configs
        another writer touched. Consul failing part-way marks the rest ``failed`` (each transaction is atomic,
        so what landed is whole); failing before anything landed is raised, as for a single write.
        ``writes`` holds each config's plan, its operations and their size in JSON.
        """
        for plan, _, _ in writes:
            if plan.config is not None:
                for key, chunk in plan.config.chunk_puts(self.layout):
                    self.gateway.put(key, chunk)
        outcomes: list[ImportOutcome] = []
        failure: ConfigdError | None = None
        for batch in pack_transactions([(len(ops), size) for _, ops, size in writes]):
            members = [writes[i][:2] for i in batch]
            if len(members) == 1:
                found, failure = self._commit_group(*members[0], failure)
                outcomes += found
                continue
            try:
                self.gateway.txn([op for _, group_ops in members for op in group_ops])
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
            self.gateway.txn(ops)
        except VersionConflict:
            return plan.missed("conflict", RACE_DETAIL), failure
        except ConfigdError as exc:
            return plan.missed("failed", str(exc)), failure or exc
        return plan.created(), failure
