"""Bulk import, the pure part: what an import is made of, how it is checked and refused, and how whole configs
are packed into Consul transactions. :class:`configd.services.imports.BulkImporter` does the reads and commits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from jsonschema import Draft202012Validator

from configd_core.consul import TxnOp
from configd_core.errors import (
    ConfigdError,
    ErrorDetail,
    InvalidConfig,
    InvalidName,
    RolloutActive,
    SchemaIncompatible,
    SchemaNotFound,
    SecretUnreadable,
    ValidationFailed,
    VersionConflict,
)
from configd_core.layout import (
    CONSUL_TXN_MAX_BYTES,
    CONSUL_TXN_MAX_OPS,
    KeyLayout,
    validate_name,
)
from configd_core.records import (
    HeadRecord,
    canonical_json,
    sha256_hex,
)
from configd_core.secrets import KeyRing

from ..errors import Forbidden
from .secrets import opened, plain_values, redacted, schema_of, seal
from .validation import config_errors
from .writes import (
    ConfigWrite,
    Heads,
    SchemaWrite,
    checked_config,
    checked_schema,
    config_write,
    push_transaction,
    refuse_during_rollout,
    register_transaction,
    schema_and_config_transaction,
    schema_write,
)

# --- bulk import: what an import is made of and how it is refused (pure) ------------------------------------
ImportKind = Literal["schema", "config"]
ImportStatus = Literal["created", "unchanged", "conflict", "failed"]
ItemField = Literal["", "namespace", "name", "document", "expected_version", "force"]
# Items one import request may carry; configctl sends at most 500 (and at most ~4 MB) per request.
MAX_IMPORT_ITEMS = 1000


@dataclass(frozen=True)
class ImportItem:
    """One document of an import: a schema or a config. ``expected_version`` is the head the caller planned
    against (0 = must not exist yet); ``force`` (schemas only) registers a schema the current config fails."""

    kind: ImportKind
    namespace: str
    name: str
    document: Any
    expected_version: int | None = None
    force: bool = False

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}" + (" schema" if self.kind == "schema" else "")


@dataclass(frozen=True)
class ImportOutcome:
    """What an import did with one item: ``created`` (``version`` is new), ``unchanged`` (identical to the head;
    nothing written), ``conflict`` (another writer moved a head after the import read it) or ``failed``."""

    index: int
    item: ImportItem
    status: ImportStatus
    version: int | None = None
    sha256: str | None = None
    forced: bool = False
    detail: str = ""


@dataclass(frozen=True)
class ItemProblem:
    """Why one item stops a whole import: the error, and the field of the item it is about."""

    index: int
    item: ImportItem
    error: ConfigdError
    field: ItemField = ""

    def details(self) -> list[ErrorDetail]:
        """The error as JSON Pointer paths into the request body (``/items/<index>/…``)."""
        base = f"/items/{self.index}" + (f"/{self.field}" if self.field else "")
        errors = self.error.errors if isinstance(self.error, ValidationFailed) else []
        if not errors:
            return [ErrorDetail(base, f"{self.item.label}: {self.error}")]
        if self.field == "document":
            return [ErrorDetail(base + (e.path if e.path != "/" else ""), e.message) for e in errors]
        # SchemaIncompatible: the paths are in the current config, which is not part of the request.
        return [ErrorDetail(base, f"{self.item.label}: {self.error} — {e.path}: {e.message}") for e in errors]


class ImportRejected(ValidationFailed):
    """An import refused as a whole: nothing was written. ``problems`` has every bad item, ``errors`` their paths.

    A subclass says when every problem is of one kind, so the answer is the status a single-item write would get
    (403, 409, 404); a mix is a 422.
    """

    def __init__(self, problems: list[ItemProblem], total: int) -> None:
        shown = "; ".join(f"items/{p.index} {p.item.label}: {p.error}" for p in problems[:5])
        more = f"; … and {len(problems) - 5} more" if len(problems) > 5 else ""
        bad = len({p.index for p in problems})
        super().__init__(
            f"import refused, nothing written: {bad} of {total} item(s) cannot be imported: {shown}{more}",
            [detail for p in problems for detail in p.details()],
        )
        self.problems = problems


class ImportForbidden(ImportRejected, Forbidden):
    """Every problem is an item the token may not write (403)."""


class ImportConflict(ImportRejected, VersionConflict):
    """Every problem is an ``expected_version`` that is not the head (409)."""

    def __init__(self, problems: list[ItemProblem], total: int) -> None:
        super().__init__(problems, total)
        only = problems[0].error if len(problems) == 1 else None
        self.expected = only.expected if isinstance(only, VersionConflict) else None
        self.actual = only.actual if isinstance(only, VersionConflict) else None


class ImportSchemaNotFound(ImportRejected, SchemaNotFound):
    """Every problem is a config with no schema, neither registered nor in the import (404)."""


_REJECTIONS: tuple[tuple[type[ConfigdError], type[ImportRejected]], ...] = (
    (Forbidden, ImportForbidden),
    (VersionConflict, ImportConflict),
    (SchemaNotFound, ImportSchemaNotFound),
)


def import_rejection(problems: list[ItemProblem], total: int) -> ImportRejected:
    """The exception that refuses an import with ``problems`` (non-empty) among ``total`` items."""
    for kind, rejection in _REJECTIONS:
        if all(isinstance(p.error, kind) for p in problems):
            return rejection(problems, total)
    return ImportRejected(problems, total)


def pack_transactions(
    groups: list[tuple[int, int]], *, max_ops: int = CONSUL_TXN_MAX_OPS, max_bytes: int = CONSUL_TXN_MAX_BYTES
) -> list[range]:
    """Consecutive groups, each ``(operations, bytes of its JSON)``, packed into as few transactions as Consul 1.8
    allows (64 operations, 512 KiB of body); each range indexes the groups of one transaction. A group is never
    split. The bytes add up exactly: the JSON of a list of operations is the sum of its groups' JSON."""
    batches: list[range] = []
    start = ops = size = 0
    for index, (count, length) in enumerate(groups):
        if index > start and (ops + count > max_ops or size + length > max_bytes):
            batches.append(range(start, index))
            start, ops, size = index, 0, 0
        ops += count
        size += length
    if start < len(groups):
        batches.append(range(start, len(groups)))
    return batches


@dataclass(frozen=True)
class _Checked:
    """An item whose name and document passed the checks that need no Consul: its canonical bytes and hash."""

    index: int
    item: ImportItem
    canonical: bytes
    sha: str


@dataclass
class ImportGroup:
    """One config's items in an import (its schema, its data, or both); they commit together or not at all."""

    namespace: str
    name: str
    schema: _Checked | None = None
    config: _Checked | None = None


def check_items(items: list[ImportItem]) -> tuple[list[ImportGroup], list[ItemProblem]]:
    """Names, duplicates, documents, sizes and schema meta-validation of every item; no I/O.

    A config whose items are not all sound is left out of the groups (its problems are reported).
    """
    problems: list[ItemProblem] = []
    groups: dict[tuple[str, str], ImportGroup] = {}
    broken: set[tuple[str, str]] = set()
    seen: dict[tuple[str, str, str], int] = {}
    sound_schemas: set[bytes] = set()
    for index, item in enumerate(items):
        try:
            validate_name(item.namespace, "namespace")
        except InvalidName as exc:
            problems.append(ItemProblem(index, item, exc, "namespace"))
            continue
        try:
            validate_name(item.name, "name")
        except InvalidName as exc:
            problems.append(ItemProblem(index, item, exc, "name"))
            continue
        ref = (item.namespace, item.name)
        first = seen.setdefault((item.kind, *ref), index)
        if first != index:
            broken.add(ref)
            problems.append(ItemProblem(index, item, ValidationFailed(f"the same {item.kind} as items/{first}")))
            continue
        if item.force and item.kind == "config":
            broken.add(ref)
            problems.append(ItemProblem(index, item, ValidationFailed("force applies to schema items only"), "force"))
            continue
        try:
            if item.kind == "schema":
                canonical = _checked_schema_once(item, sound_schemas)
            else:
                canonical = checked_config(item.document)
        except ConfigdError as exc:
            broken.add(ref)
            problems.append(ItemProblem(index, item, exc, "document"))
            continue
        group = groups.setdefault(ref, ImportGroup(*ref))
        checked = _Checked(index, item, canonical, sha256_hex(canonical))
        if item.kind == "schema":
            group.schema = checked
        else:
            group.config = checked
    return [g for ref, g in groups.items() if ref not in broken], problems


def _checked_schema_once(item: ImportItem, sound: set[bytes]) -> bytes:
    """:func:`checked_schema`, once per distinct schema of an import (imports often bring one schema many times,
    and the verdict depends on the content alone); ``sound`` holds the canonical bytes of those that passed."""
    if isinstance(item.document, dict):
        try:
            canonical = canonical_json(item.document)
        except (InvalidConfig, RecursionError):  # checked_schema says why, depth first
            canonical = b""
        if canonical in sound:
            return canonical
    canonical = checked_schema(item.namespace, item.name, item.document)
    sound.add(canonical)
    return canonical


@dataclass(frozen=True)
class GroupPlan:
    """What an import does with one config, decided without I/O from the heads it read."""

    group: ImportGroup
    current: Heads
    schema: SchemaWrite | None = None
    config: ConfigWrite | None = None
    unchanged: tuple[ImportOutcome, ...] = ()
    problems: tuple[ItemProblem, ...] = ()

    def ops(self, layout: KeyLayout) -> list[TxnOp]:
        """The group's operations: exactly the transaction a push, a registration or both would commit."""
        if self.schema is not None and self.config is not None:
            return schema_and_config_transaction(layout, self.schema, self.config, self.current)
        if self.schema is not None:
            return register_transaction(layout, self.schema, self.current)
        if self.config is not None:
            return push_transaction(layout, self.config, self.current)
        return []

    def created(self) -> list[ImportOutcome]:
        found: list[ImportOutcome] = []
        if self.schema is not None and self.group.schema is not None:
            record = self.schema.record
            found.append(
                ImportOutcome(
                    self.group.schema.index,
                    self.group.schema.item,
                    "created",
                    record.version,
                    record.sha256,
                    record.forced,
                )
            )
        if self.config is not None and self.group.config is not None:
            head = self.config.head
            found.append(
                ImportOutcome(self.group.config.index, self.group.config.item, "created", head.version, head.sha256)
            )
        return found

    def missed(self, status: ImportStatus, detail: str) -> list[ImportOutcome]:
        """The outcomes of the items this group would have written, when its transaction did not commit."""
        return [ImportOutcome(o.index, o.item, status, detail=detail) for o in self.created()]


def _items(group: ImportGroup) -> list[_Checked]:
    return [c for c in (group.schema, group.config) if c is not None]


def plan_group(
    group: ImportGroup,
    current: Heads,
    validators: dict[str, Draft202012Validator],
    live_data: Any | None,
    *,
    actor: str,
    message: str,
    record_overhead: int = 4096,
    ring: KeyRing | None = None,
) -> GroupPlan:
    """Decide one config's part of an import (pure): the same checks, in the same order, as ``register_schema``
    and ``push``, except that a config is validated against the schema it will have after the import — the one
    in the import when it brings one — and that every problem is collected instead of raised.

    ``validators`` holds a compiled validator per schema sha256 (the new schema's and the current one's);
    ``live_data`` is the current config, needed only when a schema comes without its config. A config's
    document may carry encrypted secrets (an export): they are opened with ``ring`` (which checks each belongs to
    this config and pointer), validated plain, and sealed again (:mod:`configd.planning.secrets`).
    """
    problems: list[ItemProblem] = []
    unchanged: list[ImportOutcome] = []
    schema_out: SchemaWrite | None = None
    config_out: ConfigWrite | None = None
    ns, name = group.namespace, group.name
    try:
        refuse_during_rollout(current.head, "an import of it")
    except RolloutActive as exc:
        return GroupPlan(group, current, problems=tuple(ItemProblem(c.index, c.item, exc) for c in _items(group)))
    live_schema = current.schema.version if current.schema else 0
    validator = validators.get(current.schema.sha256) if current.schema else None
    schema_version = live_schema
    if (s := group.schema) is not None:
        expected = s.item.expected_version
        if expected is not None and expected != live_schema:
            conflict = VersionConflict(
                f"expected schema version {expected}, but the current one is {live_schema}",
                expected=expected,
                actual=live_schema,
            )
            problems.append(ItemProblem(s.index, s.item, conflict, "expected_version"))
        validator = validators[s.sha]
        if current.schema is not None and current.schema.sha256 == s.sha:
            unchanged.append(ImportOutcome(s.index, s.item, "unchanged", live_schema, s.sha))
        else:
            schema_out = schema_write(
                ns,
                name,
                s.item.document,
                s.sha,
                current=current.schema,
                actor=actor,
                message=message,
                forced=s.item.force,
            )
            schema_version = schema_out.record.version
    head = current.head
    live = head.version if head is not None and not head.deleted else 0
    if (c := group.config) is not None:
        expected = c.item.expected_version
        if expected is not None and expected != live:
            conflict = VersionConflict(
                f"expected version {expected}, but the head is {live}", expected=expected, actual=live
            )
            problems.append(ItemProblem(c.index, c.item, conflict, "expected_version"))
        if validator is None:
            missing = SchemaNotFound(f"no schema is registered for {ns}/{name} and the import brings none")
            problems.append(ItemProblem(c.index, c.item, missing))
        else:
            config_out = _config_plan(
                c,
                ns,
                name,
                validator,
                schema_version,
                ring or KeyRing(),
                head,
                problems,
                unchanged,
                actor=actor,
                message=message,
                record_overhead=record_overhead,
            )
    elif (
        schema_out is not None
        and live_data is not None
        and group.schema is not None
        and not group.schema.item.force
        and (errors := config_errors(validators[group.schema.sha], live_data))
    ):
        incompatible = SchemaIncompatible(
            "the current config would fail this schema; import the config with it, or set force", errors
        )
        problems.append(ItemProblem(group.schema.index, group.schema.item, incompatible))
    if problems:
        return GroupPlan(group, current, problems=tuple(problems))
    return GroupPlan(group, current, schema_out, config_out, tuple(unchanged))


def _config_plan(
    c: _Checked,
    ns: str,
    name: str,
    validator: Draft202012Validator,
    schema_version: int,
    ring: KeyRing,
    head: HeadRecord | None,
    problems: list[ItemProblem],
    unchanged: list[ImportOutcome],
    *,
    actor: str,
    message: str,
    record_overhead: int,
) -> ConfigWrite | None:
    """One imported config: opened, validated plain, sealed; its write, or None (unchanged or a problem)."""
    schema = schema_of(validator)
    try:
        plain = opened(ring, ns, name, c.item.document, schema, lambda: None, c.canonical)
    except SecretUnreadable as exc:
        problems.append(ItemProblem(c.index, c.item, exc, "document"))
        return None
    if errors := config_errors(validator, plain):
        shown = redacted(errors, plain_values(schema, plain))
        failed = ValidationFailed(f"{len(errors)} validation error(s) against schema v{schema_version}", shown)
        problems.append(ItemProblem(c.index, c.item, failed, "document"))
        return None
    try:
        sealed = seal(ring, ns, name, plain, schema, c.canonical if plain is c.item.document else None)
    except ConfigdError as exc:
        problems.append(ItemProblem(c.index, c.item, exc, "document"))
        return None
    live = head.version if head is not None and not head.deleted else 0
    if head is not None and live and head.sha256 == sealed.sha:
        unchanged.append(ImportOutcome(c.index, c.item, "unchanged", live, sealed.sha))
        return None
    return config_write(
        ns,
        name,
        sealed.data,
        sealed.canonical,
        sealed.sha,
        head=head,
        schema_version=schema_version,
        actor=actor,
        message=message,
        record_overhead=record_overhead,
    )


RACE_DETAIL = "another write moved a head after the import read it; nothing of this config was written"


def common_prefix(names: list[str]) -> str:
    """The longest string every name starts with (that of the first and last in sort order)."""
    first, last = min(names), max(names)
    size = next((i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), min(len(first), len(last)))
    return first[:size]


def json_size(ops: list[TxnOp]) -> int:
    """Bytes of the JSON body Consul receives for ``ops`` (how ConsulGateway.txn encodes it)."""
    return len(json.dumps(ops))
