"""Request bodies and response shapes of the HTTP API (the contract in docs/api.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from configd_core.diff import Change
from configd_core.errors import ErrorDetail
from configd_core.layout import MAX_MESSAGE_CHARS, NAME_MAX_LENGTH, NAME_PATTERN
from configd_core.records import AuditRecord, HeadRecord, SchemaHeadRecord, SchemaVersionRecord, VersionRecord

from ..planning.bulk import MAX_IMPORT_ITEMS, ImportOutcome


def _json_integer(value: Any) -> Any:
    # JSON Schema's integer: 3 and 3.0 are, but false must not mean version 0 ("must not exist"), nor "3" mean 3.
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON integer")
    return value


VersionNumber = Annotated[int, Field(ge=1), BeforeValidator(_json_integer)]
ExpectedVersion = Annotated[int, Field(ge=0), BeforeValidator(_json_integer)]
#: A write's message in a body (the query-string form is ``deps.MessageQuery``): the audit record's limit.
Message = Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PushBody(_Body):
    data: Any = Field(description="the config document (a JSON object)", json_schema_extra={"type": "object"})
    message: Message = ""
    expected_version: ExpectedVersion | None = Field(default=None, description="the head you expect; 0 = not yet")


class RollbackBody(_Body):
    to_version: VersionNumber
    message: Message = ""
    expected_version: ExpectedVersion | None = None


class ValidateBody(_Body):
    data: Any = Field(description="the candidate config document", json_schema_extra={"type": "object"})


class ImportItemBody(_Body):
    kind: Literal["schema", "config"]
    # Documented with the name rule (now that /openapi.json resolves this body, fuzzers read it); checked per item
    # by the import itself, so one bad name is that item's error, not the whole body's.
    namespace: str = Field(json_schema_extra={"pattern": NAME_PATTERN, "maxLength": NAME_MAX_LENGTH})
    name: str = Field(json_schema_extra={"pattern": NAME_PATTERN, "maxLength": NAME_MAX_LENGTH})
    document: Any = Field(
        description="the JSON Schema (kind schema) or the config document (kind config)",
        json_schema_extra={"type": "object"},
    )
    expected_version: ExpectedVersion | None = Field(
        default=None, description="the head (schema or config) you planned against; 0 = must not exist yet"
    )
    force: bool = Field(default=False, description="schemas only: register it even if the current config fails it")


class ImportBody(_Body):
    message: Message = ""
    items: list[ImportItemBody] = Field(min_length=1, max_length=MAX_IMPORT_ITEMS)


# --- responses -------------------------------------------------------------------------------------------
class ErrorItem(BaseModel):
    path: str
    message: str

    @classmethod
    def of(cls, detail: ErrorDetail) -> ErrorItem:
        return cls(path=detail.path, message=detail.message)


class ErrorBody(BaseModel):
    detail: str
    error: str = Field(description="the class of configd's exception tree behind the status, e.g. VersionConflict")
    errors: list[ErrorItem] | None = None


class ChangeItem(BaseModel):
    op: Literal["add", "remove", "replace"]
    path: str
    old: Any = None
    new: Any = None

    @classmethod
    def of(cls, change: Change) -> ChangeItem:
        return cls(op=change.op, path=change.path, old=change.old, new=change.new)


class SchemaWriteResult(BaseModel):
    status: Literal["created", "unchanged"]
    namespace: str
    name: str
    version: int
    sha256: str


class SchemaSummary(BaseModel):
    name: str
    version: int
    sha256: str
    author: str
    created_at: str

    @classmethod
    def of(cls, head: SchemaHeadRecord) -> SchemaSummary:
        return cls(
            name=head.name, version=head.version, sha256=head.sha256, author=head.author, created_at=head.created_at
        )


class SchemaListView(BaseModel):
    namespace: str
    schemas: list[SchemaSummary]


class SchemaView(BaseModel):
    namespace: str
    name: str
    version: int
    sha256: str
    author: str
    message: str
    created_at: str
    forced: bool
    schema_: dict[str, Any] = Field(alias="schema", serialization_alias="schema")
    versions: list[int]

    model_config = ConfigDict(populate_by_name=True)

    @classmethod
    def of(cls, record: SchemaVersionRecord, versions: list[int]) -> SchemaView:
        return cls(
            namespace=record.namespace,
            name=record.name,
            version=record.version,
            sha256=record.sha256,
            author=record.author,
            message=record.message,
            created_at=record.created_at,
            forced=record.forced,
            schema=record.json_schema,
            versions=versions,
        )


class WriteResult(BaseModel):
    status: Literal["created", "unchanged"]
    namespace: str
    name: str
    version: int
    sha256: str
    size: int
    author: str
    message: str
    created_at: str
    schema_version: int

    @classmethod
    def of(cls, status: Literal["created", "unchanged"], head: HeadRecord) -> WriteResult:
        return cls.model_validate(cls.body(status, head))

    @staticmethod
    def body(status: Literal["created", "unchanged"], head: HeadRecord) -> dict[str, Any]:
        """The JSON body of :meth:`of` without building the model (the push route's answer, serialised once)."""
        return {
            "status": status,
            "namespace": head.namespace,
            "name": head.name,
            "version": head.version,
            "sha256": head.sha256,
            "size": head.size,
            "author": head.author,
            "message": head.message,
            "created_at": head.created_at,
            "schema_version": head.schema_ref.version,
        }


class DeleteResult(BaseModel):
    status: Literal["deleted"] = "deleted"
    namespace: str
    name: str
    version: int


class VersionSummary(BaseModel):
    namespace: str
    name: str
    version: int
    parent: int | None
    sha256: str
    size: int
    schema_version: int
    author: str
    message: str
    created_at: str
    rollback_of: int | None

    @classmethod
    def fields_of(cls, record: VersionRecord) -> dict[str, Any]:
        return {
            "namespace": record.namespace,
            "name": record.name,
            "version": record.version,
            "parent": record.parent,
            "sha256": record.sha256,
            "size": record.size,
            "schema_version": record.schema_ref.version,
            "author": record.author,
            "message": record.message,
            "created_at": record.created_at,
            "rollback_of": record.rollback_of,
        }

    @classmethod
    def of(cls, record: VersionRecord) -> VersionSummary:
        return cls(**cls.fields_of(record))


class VersionView(VersionSummary):
    data: Any

    @classmethod
    def with_data(cls, record: VersionRecord, data: Any) -> VersionView:
        return cls(**cls.fields_of(record), data=data)


class HistoryView(BaseModel):
    namespace: str
    name: str
    total: int
    versions: list[VersionSummary]
    next_before: int | None


class DiffView(BaseModel):
    from_: int = Field(alias="from", serialization_alias="from")
    to: int
    changes: list[ChangeItem]
    unified: str

    model_config = ConfigDict(populate_by_name=True)


class ValidateView(BaseModel):
    valid: bool
    errors: list[ErrorItem]
    head_version: int | None
    changes: list[ChangeItem]
    unified: str


class NamespaceSummary(BaseModel):
    namespace: str
    configs: int
    latest_change: str | None
    latest_author: str | None


class NamespacesView(BaseModel):
    namespaces: list[NamespaceSummary]


class ConfigSummary(BaseModel):
    name: str
    version: int
    sha256: str
    size: int
    schema_version: int
    author: str
    message: str
    created_at: str

    @classmethod
    def of(cls, head: HeadRecord) -> ConfigSummary:
        return cls(
            name=head.name,
            version=head.version,
            sha256=head.sha256,
            size=head.size,
            schema_version=head.schema_ref.version,
            author=head.author,
            message=head.message,
            created_at=head.created_at,
        )


class NamespaceView(BaseModel):
    namespace: str
    configs: list[ConfigSummary]
    next_after: str | None = None


class AuditEntry(BaseModel):
    id: str
    at: str
    actor: str
    action: str
    namespace: str
    name: str | None
    result: str
    status: int
    version: int | None
    from_version: int | None
    message: str
    detail: str

    @classmethod
    def of(cls, record: AuditRecord) -> AuditEntry:
        return cls.model_validate(record.model_dump(exclude={"kind"}))


class AuditView(BaseModel):
    entries: list[AuditEntry]


class AppliedConfig(BaseModel):
    name: str
    applied_version: int
    head_version: int | None
    current: bool


class ClientView(BaseModel):
    instance: str
    application: str
    host: str
    pid: int
    started_at: str
    updated_at: str
    current: bool
    configs: list[AppliedConfig]


class ClientsView(BaseModel):
    namespace: str
    clients: list[ClientView]


class HealthView(BaseModel):
    status: Literal["ok", "unavailable"]
    leader: str | None
    detail: str


class ImportItemResult(BaseModel):
    kind: Literal["schema", "config"]
    namespace: str
    name: str
    status: Literal["created", "unchanged", "conflict", "failed"]
    version: int | None = Field(description="the head after the import; null for conflict and failed")
    sha256: str | None
    forced: bool
    detail: str

    @classmethod
    def of(cls, outcome: ImportOutcome) -> ImportItemResult:
        item = outcome.item
        return cls(
            kind=item.kind,
            namespace=item.namespace,
            name=item.name,
            status=outcome.status,
            version=outcome.version,
            sha256=outcome.sha256,
            forced=outcome.forced,
            detail=outcome.detail,
        )


class ImportView(BaseModel):
    summary: dict[Literal["created", "unchanged", "conflict", "failed"], int]
    items: list[ImportItemResult] = Field(description="one result per item of the request, in its order")
