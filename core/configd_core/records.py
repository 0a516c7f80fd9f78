"""The records configd writes to Consul: plain JSON, readable with ``consul kv get``.

The pydantic models here are the one definition of each record format; ``schemas/records/*.schema.json``
is generated from them (``make schemas``) and a test keeps the two equal.

Encoding of a version's data (decided by :func:`encode_data`, a pure function):

- ``json``: the document inline under ``data`` when the whole record stays under ``MAX_RECORD_BYTES``;
- ``gzip+base64``: the gzip of the canonical JSON, base64, under ``data`` when that fits;
- ``gzip-chunks``: the gzip split into ``chunks`` values under ``blobs/<ns>/<name>/<sha256>/``, written before
  the head flips; content-addressed, so two writers of the same bytes can never corrupt each other.
"""

from __future__ import annotations

import base64
import gzip
import itertools
import json
from collections.abc import Callable
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, field_validator

# Re-exported (``X as X``): the one definition is in documents, which needs no pydantic.
from .documents import ENVELOPE_KEY as ENVELOPE_KEY
from .documents import ENVELOPE_MARKER as ENVELOPE_MARKER
from .documents import canonical_json as canonical_json
from .documents import check_document as check_document
from .documents import document_sha256 as document_sha256
from .documents import fingerprint_form as fingerprint_form
from .documents import json_depth as json_depth
from .documents import pretty_json as pretty_json
from .documents import sha256_hex as sha256_hex
from .documents import utcnow as utcnow
from .errors import ConfigdError, ConfigTooLarge
from .layout import CHUNK_BYTES, HEAD_INLINE_BYTES, MAX_CONFIG_BYTES, MAX_RECORD_BYTES

Encoding = Literal["json", "gzip+base64", "gzip-chunks"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=False).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Self:
        try:
            return cls.model_validate_json(raw)
        except ValueError as exc:
            raise ConfigdError(f"unreadable {cls.__name__} in Consul: {exc}") from exc


class SchemaRef(_Record):
    """The schema version a config version was validated against."""

    namespace: str
    name: str
    version: int


RolloutState = Literal["running", "paused", "completed", "aborted"]
#: Rollout states that are over: the record then lives only in the rollout history.
ROLLOUT_FINAL_STATES: frozenset[str] = frozenset({"completed", "aborted"})
FailureKind = Literal["rejected", "callback", "unhealthy"]


class RolloutCohort(_Record):
    """Who runs a rollout's candidate (``configd_core.rollouts.is_member`` is the one rule):

    an instance whose key or id is in ``instances`` always; otherwise one whose labels include every pair of
    ``labels`` (no labels: every instance) and whose sticky bucket is below the current step's percentage.
    """

    labels: dict[str, str] = Field(
        default_factory=dict, max_length=20, description="every pair must match the instance's labels"
    )
    instances: list[str] = Field(
        default_factory=list, max_length=200, description="instance keys or ids always in the cohort"
    )


class RolloutFailure(_Record):
    """One instance's report of a failure on a rollout's candidate (aggregated by the driver, kept in history)."""

    instance: str
    kind: FailureKind
    reason: str = ""
    at: str


def _json_number(value: Any) -> Any:
    # A JSON number: false must not mean 0, nor "3" mean 3 (a plan arrives in request bodies).
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON number")
    return value


JSONNumber = Annotated[float, BeforeValidator(_json_number)]
JSONInteger = Annotated[int, BeforeValidator(_json_number)]


class RolloutPlan(_Record):
    """How a rollout goes: the cohort, the steps (percentages) each held for ``bake_seconds``, whether it advances
    by itself, and the failure threshold (neither given: the first instance that fails aborts it)."""

    cohort: RolloutCohort = Field(default_factory=RolloutCohort)
    steps: list[Annotated[JSONNumber, Field(ge=0, le=100)]] = Field(
        default_factory=lambda: [100.0], min_length=1, max_length=20, description="percentages, never shrinking"
    )
    bake_seconds: JSONNumber = Field(default=300.0, ge=0, le=7 * 86400)
    auto: StrictBool = True
    max_failures: JSONInteger | None = Field(default=None, ge=1)
    max_failure_ratio: JSONNumber | None = Field(default=None, gt=0, le=1)

    @field_validator("steps")
    @classmethod
    def _steps_grow(cls, steps: list[float]) -> list[float]:
        if any(not 0 <= step <= 100 for step in steps):
            raise ValueError("every step is a percentage from 0 to 100")
        if any(later < earlier for earlier, later in itertools.pairwise(steps)):
            raise ValueError("steps may not shrink: a larger percentage only adds instances")
        return steps


class RolloutRecord(_Record):
    """A progressive rollout of one config from its head (``base_version``) to ``candidate_version``.

    While active it rides in the config's head record (``HeadRecord.rollout``), so every SDK watching the namespace
    receives it with its one blocking query and decides membership itself. Finished, it is kept under
    ``rollouts/<ns>/<name>/<started>-<id>`` (the rollout history) with who ended it, why, and the failures reported.
    """

    kind: Literal["configd.rollout"] = "configd.rollout"
    id: str
    namespace: str
    name: str
    base_version: int = Field(ge=1)
    candidate_version: int = Field(ge=2)
    candidate_sha256: str
    candidate_size: int
    candidate_data: dict[str, Any] | None = Field(
        default=None, description="the candidate itself when its canonical JSON is at most 4 KiB; else null"
    )
    plan: RolloutPlan
    step: int = Field(default=0, ge=0, description="index into plan.steps")
    state: RolloutState = "running"
    message: str = ""
    started_by: str
    started_at: str
    step_started_at: str
    updated_by: str
    updated_at: str
    finished_by: str | None = None
    finished_at: str | None = None
    reason: str = ""
    failures: list[RolloutFailure] = Field(default_factory=list, description="kept when the rollout ends")

    @property
    def active(self) -> bool:
        return self.state not in ROLLOUT_FINAL_STATES

    @property
    def percent(self) -> float:
        return self.plan.steps[min(self.step, len(self.plan.steps) - 1)]

    def candidate_inline(self) -> dict[str, Any] | None:
        """The candidate carried in this record, checked against its sha256 (None when not carried)."""
        if self.candidate_data is None:
            return None
        if document_sha256(self.candidate_data) != self.candidate_sha256:
            raise ConfigdError(f"{self.namespace}/{self.name} rollout {self.id}: candidate does not match its sha256")
        return self.candidate_data


class HeadRecord(_Record):
    """``heads/<ns>/<name>``: which version is current. Small: watchers receive every head of a namespace.

    A document of at most ``HEAD_INLINE_BYTES`` (canonical JSON) is carried here as well as in its version
    record, written in the same transaction, so watchers apply it without a second read.
    """

    kind: Literal["configd.head"] = "configd.head"
    namespace: str
    name: str
    version: int = Field(ge=1)
    sha256: str
    size: int = Field(description="bytes of canonical JSON")
    schema_ref: SchemaRef
    author: str
    message: str = ""
    created_at: str
    deleted: bool = False
    data: dict[str, Any] | None = Field(
        default=None, description="the document itself when its canonical JSON is at most 4 KiB; else null"
    )
    rollout: RolloutRecord | None = Field(default=None, description="the config's active rollout, if any")

    def inline_data(self) -> dict[str, Any] | None:
        """The document carried in this head, checked against its sha256 (None when not carried)."""
        if self.data is None or self.deleted:
            return None
        if document_sha256(self.data) != self.sha256:
            raise ConfigdError(f"{self.namespace}/{self.name} v{self.version}: head data does not match its sha256")
        return self.data


def head_inline(data: Any, canonical: bytes) -> dict[str, Any] | None:
    """The document to carry in a head record: itself when its canonical JSON is small enough, else None."""
    return data if isinstance(data, dict) and len(canonical) <= HEAD_INLINE_BYTES else None


class VersionRecord(_Record):
    """``versions/<ns>/<name>/<v>``: one immutable version of a config."""

    kind: Literal["configd.version"] = "configd.version"
    namespace: str
    name: str
    version: int = Field(ge=1)
    parent: int | None = None
    sha256: str
    size: int = Field(description="bytes of canonical JSON")
    schema_ref: SchemaRef
    author: str
    message: str = ""
    created_at: str
    rollback_of: int | None = None
    rollout: str | None = Field(default=None, description="the rollout that released this version, if any")
    encoding: Encoding = "json"
    data: Any = Field(default=None, description="the document (json), base64 gzip (gzip+base64), or null")
    chunks: int = Field(default=0, description="number of blob chunks (gzip-chunks)")


class SchemaHeadRecord(_Record):
    """``schemas/heads/<ns>/<name>``: the current schema version."""

    kind: Literal["configd.schema-head"] = "configd.schema-head"
    namespace: str
    name: str
    version: int = Field(ge=1)
    sha256: str
    author: str
    created_at: str


class SchemaVersionRecord(_Record):
    """``schemas/versions/<ns>/<name>/<v>``: one immutable version of a JSON Schema (Draft 2020-12)."""

    kind: Literal["configd.schema-version"] = "configd.schema-version"
    namespace: str
    name: str
    version: int = Field(ge=1)
    sha256: str
    author: str
    message: str = ""
    created_at: str
    forced: bool = False
    json_schema: dict[str, Any]


class RolloutReport(_Record):
    """What one instance says about one config's active rollout: whether it is in the cohort, which version it
    runs, and the failures it had on the candidate (at most the last few)."""

    id: str
    member: bool
    version: int = 0
    failures: list[RolloutFailure] = Field(default_factory=list)


class ClientRecord(_Record):
    """``clients/<ns>/<instance>``: an SDK instance, held by a Consul session with a TTL."""

    kind: Literal["configd.client"] = "configd.client"
    instance: str
    application: str
    host: str
    pid: int
    started_at: str
    updated_at: str
    applied: dict[str, int] = Field(default_factory=dict, description="config name -> applied version")
    instance_key: str = Field(default="", description="the stable key rollout percentages are computed from")
    labels: dict[str, str] = Field(default_factory=dict, description="the instance's labels (rollout cohorts)")
    rollouts: dict[str, RolloutReport] = Field(
        default_factory=dict, description="config name -> this instance's part in its active rollout"
    )


class AuditRecord(_Record):
    """``audit/<ns>/<id>``: one accepted or rejected write attempt."""

    kind: Literal["configd.audit"] = "configd.audit"
    id: str
    at: str
    actor: str
    action: str
    namespace: str
    name: str | None = None
    result: str
    status: int
    version: int | None = None
    from_version: int | None = None
    message: str = ""
    detail: str = ""


ChangeRequestState = Literal["open", "approved", "published", "rejected", "withdrawn", "conflicted"]
#: States a change request never leaves.
FINAL_STATES: frozenset[str] = frozenset({"published", "rejected", "withdrawn"})


class PolicyRecord(_Record):
    """``policies/<ns>``: how changes to a namespace are reviewed (set by an admin).

    ``approvers`` holds role names (``editor``, ``admin``: that role or higher) and token names.
    """

    kind: Literal["configd.policy"] = "configd.policy"
    namespace: str
    approvals_required: int = Field(ge=0, le=2)
    approvers: list[str] = Field(default_factory=lambda: ["editor"])
    updated_by: str
    updated_at: str


class ReviewEvent(_Record):
    """One approval, rejection or comment on a change request."""

    actor: str
    at: str
    message: str = ""


class ChangeRequestRecord(_Record):
    """``change-requests/<id>``: a proposed new version of one config, reviewed before it is published."""

    kind: Literal["configd.change-request"] = "configd.change-request"
    id: int = Field(ge=1)
    namespace: str
    name: str
    base_version: int = Field(ge=0, description="the head the proposal started from (0: a new config)")
    data: dict[str, Any] = Field(description="the proposed document")
    sha256: str
    author: str
    message: str = ""
    created_at: str
    updated_at: str
    state: ChangeRequestState = "open"
    approvals: list[ReviewEvent] = Field(default_factory=list)
    rejection: ReviewEvent | None = None
    comments: list[ReviewEvent] = Field(default_factory=list)
    published_version: int | None = None
    published_by: str | None = None
    conflict_head: int | None = Field(default=None, description="the head version found at publish (conflicted)")
    publish_target: Literal["everyone", "rollout"] = Field(
        default="everyone", description="everyone: publishing makes it the head; rollout: publishing starts a rollout"
    )
    rollout: RolloutPlan | None = Field(default=None, description="the rollout publishing starts (publish_target)")


ProjectionKind = Literal["document", "spring", "tree"]
ProjectionFormat = Literal["json", "yaml"]


class ProjectionSpec(_Record):
    """One projection of a config's head into plain Consul keys for clients that are not configd's SDK.

    ``target`` is the key (``document``), ``APP[,PROFILE]`` (``spring``: the key ``config/APP[,PROFILE]/data``) or
    the key prefix (``tree``); ``{namespace}`` and ``{name}`` in it are the config's own (a namespace-wide
    projection must use ``{name}``). ``format`` is the document's (a spring projection is always YAML).
    """

    kind: ProjectionKind
    target: str
    format: ProjectionFormat = "json"


class ProjectionsRecord(_Record):
    """``projections/<ns>``: what configd projects in one namespace — for every config (``namespace``) and for
    single configs (``configs``). Written by admins; read by every push of the namespace."""

    kind: Literal["configd.projections"] = "configd.projections"
    namespace: str
    every_config: list[ProjectionSpec] = Field(default_factory=list, description="for every config of the namespace")
    configs: dict[str, list[ProjectionSpec]] = Field(default_factory=dict, description="config name -> its own")
    author: str
    updated_at: str


RECORD_MODELS: dict[str, type[_Record]] = {
    "head": HeadRecord,
    "version": VersionRecord,
    "schema-head": SchemaHeadRecord,
    "schema-version": SchemaVersionRecord,
    "client": ClientRecord,
    "audit": AuditRecord,
    "policy": PolicyRecord,
    "change-request": ChangeRequestRecord,
    "projections": ProjectionsRecord,
    "rollout": RolloutRecord,
}


class EncodedData(BaseModel):
    """How one version's data is stored: the record's ``encoding``/``data`` and any blob chunks."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    encoding: Encoding
    inline: Any
    chunks: tuple[bytes, ...] = ()


#: zlib level of stored gzip: level 1 compresses a 4 MB document in ~35 ms to ~12 % more bytes than level 6
#: (~90 ms); every push pays the compression, and reading is equally fast at either level.
GZIP_LEVEL = 1


def encode_data(data: Any, canonical: bytes, *, record_overhead: int = 4096) -> EncodedData:
    """Choose the storage form of ``data`` given its canonical bytes (pure; raises ConfigTooLarge).

    Compressed forms hold the canonical bytes themselves, so a reader can check the sha256 over what it
    decompressed without serialising the document again (:func:`decode_data`)."""
    if len(canonical) > MAX_CONFIG_BYTES:
        raise ConfigTooLarge(len(canonical), MAX_CONFIG_BYTES)
    budget = MAX_RECORD_BYTES - record_overhead
    # Inline, the document is stored as sent; its compact JSON has the canonical length (same separators and
    # characters, only the key order differs).
    if len(canonical) <= budget:
        return EncodedData(encoding="json", inline=data)
    packed = gzip.compress(canonical, compresslevel=GZIP_LEVEL, mtime=0)
    b64 = base64.b64encode(packed).decode("ascii")
    if len(b64) <= budget:
        return EncodedData(encoding="gzip+base64", inline=b64)
    chunks = tuple(packed[i : i + CHUNK_BYTES] for i in range(0, len(packed), CHUNK_BYTES))
    return EncodedData(encoding="gzip-chunks", inline=None, chunks=chunks)


def decode_data(record: VersionRecord, fetch_chunks: Callable[[VersionRecord], list[bytes]]) -> Any:
    """Rebuild a version's data; ``fetch_chunks`` reads the blob chunks when the record needs them.

    The result is checked against the record's sha256, so a torn or tampered value is never applied.
    """
    return decode_data_and_bytes(record, fetch_chunks)[0]


def decode_data_and_bytes(
    record: VersionRecord, fetch_chunks: Callable[[VersionRecord], list[bytes]]
) -> tuple[Any, bytes | None]:
    """:func:`decode_data`, plus the data's canonical JSON when the record stored exactly that (else None).

    Compressed data written since the canonical bytes are stored is checked by hashing the decompressed bytes:
    equal to the sha256, they are the canonical JSON, and ``json.loads`` of them is the document. Anything else
    (older records stored the compact JSON in the key order sent; a document with secrets hashes over its
    fingerprint form) is checked as before, by re-serialising the parsed document.
    """
    raw: bytes | None = None
    if record.encoding == "json":
        data = record.data
    else:
        if record.encoding == "gzip+base64":
            packed = base64.b64decode(record.data)
        else:
            parts = fetch_chunks(record)
            if len(parts) != record.chunks:
                raise ConfigdError(
                    f"{record.namespace}/{record.name} v{record.version}: expected {record.chunks} chunks, "
                    f"found {len(parts)}"
                )
            packed = b"".join(parts)
        raw = gzip.decompress(packed)
        data = json.loads(raw)
        if sha256_hex(raw) == record.sha256:
            return data, raw
        raw = None
    if document_sha256(data) != record.sha256:
        raise ConfigdError(f"{record.namespace}/{record.name} v{record.version}: data does not match its sha256")
    return data, raw
