"""Versioned configs in Consul: reads, push, rollback, delete, dry-run and diff, each validated against its schema.

Every write follows one shape: read the heads it depends on, decide without I/O (:mod:`configd.planning`:
validate, compare, build the records and the transaction), then commit in ONE Consul transaction guarded by the
heads' ModifyIndex (CAS). A reader therefore never sees a head without its version record, and two concurrent
writers never both win.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from configd_core.consul import ConsulGateway, KVEntry, TxnOp, op_get
from configd_core.diff import Change, diff_json, unified_diff
from configd_core.errors import (
    NotFound,
    RolloutActive,
    SchemaIncompatible,
    SchemaNotFound,
    ValidationFailed,
    VersionConflict,
)
from configd_core.layout import CONSUL_TXN_MAX_OPS, KeyLayout, validate_name
from configd_core.records import HeadRecord, SchemaHeadRecord, SchemaRef, VersionRecord, decode_data
from configd_core.secrets import masked, masked_pair, open_document

from ..planning.bulk import ImportItem, ImportOutcome
from ..planning.projections import ProjectionKeyTaken
from ..planning.secrets import Sealed, candidate_form, opened, plain_values, redacted, schema_of, seal
from ..planning.validation import config_errors
from ..planning.writes import (
    Heads,
    checked_author,
    checked_config,
    checked_message,
    config_write,
    delete_write,
    push_transaction,
    refuse_during_rollout,
)
from .audit import AuditLog
from .heads import KnownHeads
from .imports import BulkImporter
from .keys import ServerKeys
from .projections import ProjectionService
from .schemas import SchemaRegistry, SchemaResult

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
    audit_action: str | None = None
    also: tuple[TxnOp, ...] = ()
    guard: Callable[[bool], tuple[str | None, tuple[TxnOp, ...]]] | None = None

    def decided(self, fresh: bool) -> tuple[str | None, tuple[TxnOp, ...]]:
        """The audit action and the extra operations of one attempt (``guard`` decides them per attempt)."""
        if self.guard is None:
            return self.audit_action, self.also
        action, guards = self.guard(fresh)
        return action, (*guards, *self.also)


class ConfigStore:
    """Versioned configs: push, history, rollback, diff and delete, all validated against their schema."""

    def __init__(self, gateway: ConsulGateway, layout: KeyLayout | None = None, keys: ServerKeys | None = None) -> None:
        self._gateway = gateway
        self.layout = layout or KeyLayout()
        self.keys = keys or ServerKeys(None)
        self.audit = AuditLog(gateway, self.layout)
        self.schemas = SchemaRegistry(gateway, self.layout)
        self._known = KnownHeads()
        self.projections = ProjectionService(gateway, self.layout, self.schemas, self.current_data)
        self._importer = BulkImporter(
            gateway,
            self.layout,
            self.schemas,
            self._known,
            self.plain_data,
            self.keys,
            self.projections.import_ops,
        )

    # --- reads -------------------------------------------------------------------------------------
    def _head(self, namespace: str, name: str) -> tuple[HeadRecord, KVEntry] | None:
        entry = self._gateway.get(self.layout.head(namespace, name))
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
        entry = self._gateway.get(self.layout.version(namespace, name, version))
        if entry is None:
            raise NotFound(
                f"config {namespace}/{name} has no version {version}: it never existed, or the namespace's "
                "retention policy removed it (its history lists the versions kept)"
            )
        return VersionRecord.from_bytes(entry.value)

    def data(self, record: VersionRecord) -> Any:
        """The document of a version, reassembled from blob chunks when it was stored in them."""
        return decode_data(record, self._chunks)

    def _chunks(self, record: VersionRecord) -> list[bytes]:
        return self._gateway.get_values(
            self.layout.blob_chunks(record.namespace, record.name, record.sha256, record.chunks)
        )

    def get(
        self, namespace: str, name: str, version: int | None = None, *, sealed: bool = False
    ) -> tuple[VersionRecord, Any]:
        """A version and its document as readers see it: each secret value masked, or (``sealed``) as stored,
        in its encrypted envelope (rollback and export; never the plain value)."""
        record = self.version(namespace, name, version)
        data = self.data(record)
        return record, data if sealed else masked(data)

    def history(self, namespace: str, name: str, *, limit: int = 50, before: int | None = None) -> HistoryPage:
        """Versions newest first, ``limit`` per page, those below ``before`` (exclusive) when given."""
        validate_name(namespace, "namespace")
        validate_name(name, "name")
        keys = self._gateway.keys(self.layout.versions_prefix(namespace, name))
        if not keys:
            raise NotFound(f"config {namespace}/{name} does not exist")
        numbers = sorted((int(k.rsplit("/", 1)[-1]) for k in keys), reverse=True)
        eligible = [v for v in numbers if before is None or v < before]
        page = eligible[: max(1, limit)]
        records: list[VersionRecord] = []
        for start in range(0, len(page), CONSUL_TXN_MAX_OPS):
            batch = page[start : start + CONSUL_TXN_MAX_OPS]
            entries = self._gateway.txn([op_get(self.layout.version(namespace, name, v)) for v in batch])
            records.extend(VersionRecord.from_bytes(e.value).model_copy(update={"data": None}) for e in entries)
        more = len(eligible) > len(page)
        return HistoryPage(records, total=len(numbers), next_before=page[-1] if more and page else None)

    def heads(self, namespace: str | None = None, *, include_deleted: bool = False) -> list[HeadRecord]:
        """Heads of one namespace, or of every namespace, sorted by namespace and name."""
        if namespace is not None:
            validate_name(namespace, "namespace")
        prefix = self.layout.heads_prefix(namespace) if namespace else self.layout.heads_root
        _, entries = self._gateway.list(prefix)
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
        names = [k[len(prefix) :] for k in self._gateway.keys(prefix)]
        eligible = [n for n in names if after is None or n > after]
        page = eligible[: max(1, limit)]
        heads: list[HeadRecord] = []
        for start in range(0, len(page), CONSUL_TXN_MAX_OPS):
            batch = page[start : start + CONSUL_TXN_MAX_OPS]
            entries = self._gateway.txn([op_get(self.layout.head(namespace, n)) for n in batch])
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
        """Secrets are compared by fingerprint: masked, and "secret changed" where the fingerprints differ."""
        a, b = masked_pair(
            self.data(self.version(namespace, name, from_version)), self.data(self.version(namespace, name, to_version))
        )
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
    def _plain(
        self, namespace: str, name: str, data: Any, schema_head: SchemaHeadRecord | None, head: HeadRecord | None
    ) -> tuple[Any, dict[str, Any], bytes | None]:
        """``data`` made plain (envelopes decrypted, masks kept from ``head``) and checked against the config's
        current schema head; returns the plain document, the schema and the plain document's canonical bytes when
        it is ``data`` itself. Errors never show a secret value."""
        canonical = checked_config(data)
        if schema_head is None:
            raise SchemaNotFound(f"no schema is registered for {namespace}/{name}; register one before pushing configs")
        validator = self.schemas.validator(schema_head)
        schema = schema_of(validator)
        live = head if head is not None and not head.deleted else None
        plain = opened(self.keys.ring(), namespace, name, data, schema, lambda: self.current_data(live), canonical)
        if plain is not data:
            checked_config(plain)
        errors = config_errors(validator, plain)
        if errors:
            raise ValidationFailed(
                f"{namespace}/{name}: {len(errors)} validation error(s) against schema v{schema_head.version}",
                redacted(errors, plain_values(schema, plain)),
            )
        return plain, schema, canonical if plain is data else None

    def _sealed(
        self, namespace: str, name: str, data: Any, schema_head: SchemaHeadRecord | None, head: HeadRecord | None
    ) -> Sealed:
        """The one encryption step of every write: validate the plain document, then seal its secret values."""
        plain, schema, canonical = self._plain(namespace, name, data, schema_head, head)
        return seal(self.keys.ring(), namespace, name, plain, schema, canonical)

    def sealed_candidate(self, namespace: str, name: str, data: Any) -> Sealed:
        """``data`` as a push would store it now — validated plain against the schema head, secret values sealed —
        without writing it (a change request keeps its proposal in this form: never a plain secret in Consul)."""
        current = self._read_heads(namespace, name)
        return self._sealed(namespace, name, data, current.schema, current.head)

    def sealed_for(self, namespace: str, name: str, data: Any, current: Heads) -> Sealed:
        """``data`` validated against ``current``'s schema head and sealed (a rollout's candidate)."""
        return self._sealed(namespace, name, data, current.schema, current.head)

    def forget(self, namespace: str, name: str) -> None:
        """Drop what this process knows of a config's heads (another service moved the head)."""
        self._known.forget(namespace, name)

    def read_heads(self, namespace: str, name: str) -> Heads:
        return self._read_heads(namespace, name)

    def _read_heads(self, namespace: str, name: str) -> Heads:
        """The config head and the schema head as Consul has them now, in one round trip when both exist."""
        head_key, schema_key = self.layout.head(namespace, name), self.layout.schema_head(namespace, name)
        try:
            found = {e.key: e for e in self._gateway.txn([op_get(head_key), op_get(schema_key)])}
        except VersionConflict:  # a read transaction fails as a whole when a key is missing: read them apart
            found = {key: entry for key in (head_key, schema_key) if (entry := self._gateway.get(key)) is not None}
        heads = Heads.of(found.get(head_key), found.get(schema_key))
        self._known.put(namespace, name, heads)
        return heads

    def dry_run(self, namespace: str, name: str, data: Any) -> DryRun:
        """Validate and diff against the head without writing anything."""
        validate_name(namespace, "namespace")
        validate_name(name, "name")
        current = self._read_heads(namespace, name)
        head = current.head if current.head and not current.head.deleted else None
        stored = self.current_data(head)
        try:
            self._plain(namespace, name, data, current.schema, head)
            errors: list[Any] = []
            assert current.schema is not None
            ref: SchemaRef | None = SchemaRef(namespace=namespace, name=name, version=current.schema.version)
        except ValidationFailed as exc:
            errors, ref = exc.errors, None
        # Secrets: masked, "secret changed" unless the candidate keeps the head's (never compared by value).
        schema = schema_of(self.schemas.validator(current.schema)) if current.schema is not None else {}
        old, new = masked_pair(stored, candidate_form(data, schema, stored))
        changes = diff_json(old, new) if old is not None else diff_json({}, new)
        return DryRun(
            valid=not errors,
            errors=errors,
            head_version=head.version if head else None,
            changes=changes,
            unified=unified_diff(old, new, from_label="head", to_label="candidate"),
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
        audit_action: str | None = None,
        also: tuple[TxnOp, ...] = (),
        guard: Callable[[bool], tuple[str | None, tuple[TxnOp, ...]]] | None = None,
    ) -> PushResult:
        """Validate ``data`` and make it the new head in one CAS-guarded transaction.

        ``audit_action`` names the audit entry's action (``push.emergency``); ``also`` are operations committed in
        the same transaction (a change request's move to ``published`` and its audit entry). ``guard(fresh)``
        decides both per attempt instead (a direct write under a review policy: ``ChangeRequests.write_guard``;
        ``fresh`` is False only on an attempt made from what this process already knows).

        ``expected_version`` (0 = the config must not exist) makes the push conditional like an ETag: if the
        head is elsewhere, VersionConflict. Without it, a lost race is re-read and retried a few times.
        Identical content to the head writes nothing and reports "unchanged".
        """
        validate_name(namespace, "namespace")
        validate_name(name, "name")
        checked_message(message)
        checked_author(actor)
        request = _PushRequest(
            namespace, name, data, actor, message, expected_version, rollback_of, audit_action, also, guard
        )
        attempts = 1 if expected_version is not None else PUSH_ATTEMPTS
        for attempt in range(attempts):
            try:
                return self._push_attempt(request)
            except (ProjectionKeyTaken, RolloutActive):
                raise
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
            result = self._created_from(request, known)
            if result is not None:
                return result
            self._known.forget(request.namespace, request.name)
            # Most often the heads moved on another worker process of this server (a config's pushes spread over
            # them). The heads are read again; the review policy and projection settings are still taken as last
            # read, because the transaction checks their indexes as well: a stale one fails it, and the attempt
            # below reads everything. One read instead of three before the retry.
            result = self._created_from(request, self._read_heads(request.namespace, request.name))
            if result is not None:
                return result
        return self._push_once(request, self._read_heads(request.namespace, request.name), fresh=True)

    def _created_from(self, request: _PushRequest, current: Heads) -> PushResult | None:
        """A push decided from settings already known, trusted only when it created a version (its transaction
        proved every index it relied on); None for any other outcome, to be decided again on a fresh read."""
        try:
            result = self._push_once(request, current, fresh=False)
        except (VersionConflict, ValidationFailed):
            return None
        return result if result.created else None

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
        refuse_during_rollout(head, "a push")
        action, also = request.decided(fresh)
        sealed = self._sealed(namespace, name, data, current.schema, head)
        assert current.schema is not None
        schema_head = current.schema
        if head is not None and not head.deleted and head.sha256 == sealed.sha:
            return PushResult("unchanged", head)

        write = config_write(
            namespace,
            name,
            sealed.data,
            sealed.canonical,
            sealed.sha,
            head=head,
            schema_version=schema_head.version,
            actor=request.actor,
            message=request.message,
            rollback_of=request.rollback_of,
            action=action,
        )
        projection = self.projections.plan(namespace, name, data, schema_head, fresh=fresh)
        base = push_transaction(self.layout, write, current)  # the records serialised once, for both uses below
        extra, deferred = projection.inline(base)
        # Chunks go first, each its own PUT, keyed by content hash: the head flip below stays one transaction,
        # and an orphan left by a lost race holds the same bytes any later writer would write.
        for key, chunk in write.chunk_puts(self.layout):
            self._gateway.put(key, chunk)
        try:
            ops = [*base, *extra, *also]  # = push_transaction(self.layout, write, current, extra) + also
            results = self._commit(ops, f"{namespace}/{name}")
        except VersionConflict as exc:
            if not fresh:
                raise
            # A lost CAS race still reports which head the caller expected and which one won (the 409 contract).
            moved = self._head(namespace, name)
            actual = moved[0].version if moved and not moved[0].deleted else 0
            raise VersionConflict(str(exc), expected=live_version, actual=actual) from exc
        committed = Heads(write.head, results[2].modify_index, schema_head, current.schema_index)
        self._known.put(namespace, name, committed)
        if deferred:  # too large to ride with the head: written right after it (docs/storage.md)
            self.projections.sync_quietly(namespace, name)
        return PushResult("created", write.head)

    def _commit(self, ops: list[TxnOp], what: str) -> list[KVEntry]:
        try:
            return self._gateway.txn(ops)
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
        guard: Callable[[bool], tuple[str | None, tuple[TxnOp, ...]]] | None = None,
    ) -> PushResult:
        """A new version whose content equals ``to_version`` (history is never rewritten).

        The old content is validated against the current schema like any push.
        """
        self.head(namespace, name)
        record, data = self.get(namespace, name, to_version, sealed=True)  # decrypted and re-sealed by push
        return self.push(
            namespace,
            name,
            data,
            actor=actor,
            message=message or f"rollback to v{record.version}",
            expected_version=expected_version,
            rollback_of=record.version,
            guard=guard,
        )

    def delete(self, namespace: str, name: str, *, actor: str, message: str = "") -> PushResult:
        """Mark the config deleted: its head becomes a tombstone, its history stays readable."""
        validate_name(namespace, "namespace")
        validate_name(name, "name")
        checked_message(message)
        found = self._head(namespace, name)
        if found is None or found[0].deleted:
            raise NotFound(f"config {namespace}/{name} does not exist")
        head, entry = found
        self._known.forget(namespace, name)
        write = delete_write(head, actor=actor, message=message)
        removal = self.projections.plan(namespace, name, None, None)
        extra, deferred = removal.inline(write.ops(self.layout, entry.modify_index))
        self._commit(write.ops(self.layout, entry.modify_index, extra), f"{namespace}/{name}")
        if deferred:
            self.projections.sync_quietly(namespace, name)
        return PushResult("created", write.tombstone)

    def register_schema(
        self, namespace: str, name: str, schema: Any, *, actor: str, message: str = "", force: bool = False
    ) -> SchemaResult:
        """Register a schema version; refuses one the current head would fail unless ``force``."""

        plain: list[Any] = []

        def current() -> Any | None:
            found = self._head(namespace, name)
            refuse_during_rollout(found[0] if found else None, "a schema change")
            plain.append(self.plain_data(found[0] if found else None))
            return plain[-1]

        self._known.forget(namespace, name)
        try:
            result = self.schemas.register(
                namespace, name, schema, actor=actor, message=message, force=force, current_config=current
            )
        except SchemaIncompatible as exc:
            shown = redacted(
                exc.errors, plain_values(schema if isinstance(schema, dict) else None, plain[-1] if plain else None)
            )
            raise SchemaIncompatible(str(exc), shown) from None
        self._reproject([(namespace, name)])  # the new schema may mark other fields secret
        return result

    def import_items(self, items: list[ImportItem], *, actor: str, message: str = "") -> list[ImportOutcome]:
        """Write many schemas and configs at once; one outcome per item, in item order (see :class:`BulkImporter`)."""
        outcomes = self._importer.import_items(items, actor=actor, message=message)
        self._reproject(sorted({(o.item.namespace, o.item.name) for o in outcomes if o.status == "created"}))
        return outcomes

    def _reproject(self, refs: list[tuple[str, str]]) -> None:
        """Project configs whose head or schema a write moved, after it: a schema registration, and an imported
        config whose projection did not fit its import group (for one that did, this finds nothing to write).
        One settings read per namespace; nothing for configs not projected."""
        settings: dict[str, Any] = {}
        for namespace, name in refs:
            if namespace not in settings:
                settings[namespace] = self.projections.settings(namespace)[0]
            record = settings[namespace]
            if record is not None and (record.every_config or name in record.configs):
                self.projections.sync_quietly(namespace, name)

    def current_data(self, head: HeadRecord | None) -> Any | None:
        """The document a live head points to: carried in the head when small, else read from its version."""
        if head is None or head.deleted:
            return None
        inline = head.inline_data()
        return inline if inline is not None else self.data(self.version(head.namespace, head.name, head.version))

    def plain_data(self, head: HeadRecord | None) -> Any | None:
        """The document a live head points to, its secrets decrypted (only to validate it against a schema)."""
        stored = self.current_data(head)
        if stored is None or head is None:
            return stored
        return open_document(self.keys.ring(), head.namespace, head.name, stored)
