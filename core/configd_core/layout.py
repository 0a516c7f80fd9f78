"""The Consul key layout and the limits configd designs around — defined once, imported everywhere.

Every key lives under one prefix (``configd`` by default)::

    <prefix>/heads/<ns>/<name>                     head record: the current version (document inline if ≤ 4 KiB)
    <prefix>/versions/<ns>/<name>/<v:012d>         version record: immutable, data inline or compressed
    <prefix>/blobs/<ns>/<name>/<sha256>/<i:04d>    gzip chunks of a version too large for one value
    <prefix>/schemas/heads/<ns>/<name>             schema head record
    <prefix>/schemas/versions/<ns>/<name>/<v:012d> schema version record
    <prefix>/audit/<ns>/<at>-<id>                  audit entry of an accepted or rejected write
    <prefix>/clients/<ns>/<instance>               SDK instance registration, bound to a Consul session
    <prefix>/retention/<ns>                        the namespace's retention policy (absent: keep everything)
    <prefix>/locks/<duty>                          leader-election lock, held by one replica's session
    <prefix>/maintenance/usage                     KV keys and bytes per namespace, written by the elected replica
    <prefix>/policies/<ns>                         review policy of a namespace (approvals required, approvers)
    <prefix>/change-requests/<id:012d>             change request: base, proposed document, approvals, state
    <prefix>/change-request-seq                    the last change request id handed out (CAS counter)
    <prefix>/projections/<ns>                      projection settings of a namespace and its configs
    <prefix>/rollouts/active/<ns>/<name>           marker of an active rollout (its record rides in the head)
    <prefix>/rollouts/history/<ns>/<name>/<at>-<id> a finished rollout: how it ended, who ended it, failures
    <any key outside the prefix>                   a projection's keys (document, spring, tree), Consul Flags = owner

Heads sit apart from version bodies so that ONE blocking query on ``<prefix>/heads/<ns>/`` watches every
config of a namespace and its responses stay small; a small document (≤ ``HEAD_INLINE_BYTES``) rides in its
head too, so a watcher applies a change from the wake-up itself. See docs/storage.md for the why of each shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidName

DEFAULT_PREFIX = "configd"

# Consul 1.8's limits (kv_max_value_size and txn_max_req_len both default to 512 KiB; a transaction holds at
# most 64 operations). A transaction carries values base64-encoded, so 4/3 of their raw size counts.
CONSUL_MAX_VALUE_BYTES = 512 * 1024
CONSUL_TXN_MAX_OPS = 64
CONSUL_TXN_MAX_BYTES = 512 * 1024

# A version record travels in the push transaction beside the head and the audit entry; keeping it at or
# under 256 KiB keeps that transaction (base64: ~342 KiB) well inside the 512 KiB request limit.
MAX_RECORD_BYTES = 256 * 1024
# Raw bytes per blob chunk; chunks are written with plain KV PUTs before the head flips.
CHUNK_BYTES = 256 * 1024
# The largest config configd accepts, measured as canonical JSON.
MAX_CONFIG_BYTES = 8 * 1024 * 1024
# A config whose canonical JSON is at most this long is also carried inside its head record, so a watcher that
# wakes on a head change has the document at once (no second read). Larger ones are read from the version.
HEAD_INLINE_BYTES = 4 * 1024
# The largest JSON Schema configd accepts (a schema version is one record, never chunked).
MAX_SCHEMA_BYTES = 128 * 1024
# Deepest nesting accepted in a config or schema document.
MAX_JSON_DEPTH = 64
MAX_MESSAGE_CHARS = 1000
# A change request carries its proposed document inline and travels in the publish transaction beside the new
# version record, so its document is capped well under MAX_RECORD_BYTES, and so are its comments.
MAX_CHANGE_REQUEST_DOCUMENT_BYTES = 64 * 1024
MAX_CHANGE_REQUEST_COMMENTS = 40
# Keys one config may project (a tree projection writes one per leaf): past this a push is refused.
MAX_PROJECTED_KEYS = 4096
MAX_AUTHOR_CHARS = 200

NAME_MAX_LENGTH = 64
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
# The same rule as one regular expression without look-arounds (every '.' is followed by a non-'.' or ends the
# name), for the OpenAPI document: generated clients and fuzzers then know which names exist.
NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9_-]|\.[a-z0-9_-])*\.?$"


def validate_name(value: str, what: str = "name") -> str:
    """Return ``value`` if it is a valid namespace or config name, else raise InvalidName.

    Lowercase letters, digits, ``.``, ``_`` and ``-``; starts with a letter or digit; no ``..``;
    at most 64 characters. Names become Consul key segments, so no slash can appear inside one.
    """
    if not isinstance(value, str) or not value:
        raise InvalidName(f"{what} must be a non-empty string")
    if len(value) > NAME_MAX_LENGTH:
        raise InvalidName(f"{what} {value[:80]!r}… is longer than {NAME_MAX_LENGTH} characters")
    if not _NAME_RE.fullmatch(value) or ".." in value:
        raise InvalidName(
            f"{what} {value!r} is invalid: use lowercase letters, digits, '.', '_' and '-', "
            "start with a letter or digit, and no '..'"
        )
    return value


def parse_ref(ref: str) -> tuple[str, str]:
    """Split ``"namespace/name"`` into its validated parts."""
    if not isinstance(ref, str) or ref.count("/") != 1:
        raise InvalidName(f"config reference {ref!r} must be 'namespace/name'")
    namespace, name = ref.split("/")
    return validate_name(namespace, "namespace"), validate_name(name, "name")


def version_segment(version: int) -> str:
    """Zero-padded so that Consul's lexicographic key order is version order."""
    return f"{version:012d}"


@dataclass(frozen=True)
class KeyLayout:
    """Where each record lives in Consul KV. Names must be validated before they reach these methods."""

    prefix: str = DEFAULT_PREFIX

    # --- configs -------------------------------------------------------------------------------
    @property
    def heads_root(self) -> str:
        return f"{self.prefix}/heads/"

    def heads_prefix(self, namespace: str) -> str:
        return f"{self.prefix}/heads/{namespace}/"

    def head(self, namespace: str, name: str) -> str:
        return f"{self.prefix}/heads/{namespace}/{name}"

    def versions_prefix(self, namespace: str, name: str) -> str:
        return f"{self.prefix}/versions/{namespace}/{name}/"

    def version(self, namespace: str, name: str, version: int) -> str:
        return f"{self.versions_prefix(namespace, name)}{version_segment(version)}"

    def blob_prefix(self, namespace: str, name: str, sha256: str) -> str:
        return f"{self.prefix}/blobs/{namespace}/{name}/{sha256}/"

    def blob_chunk(self, namespace: str, name: str, sha256: str, index: int) -> str:
        return f"{self.blob_prefix(namespace, name, sha256)}{index:04d}"

    def blob_chunks(self, namespace: str, name: str, sha256: str, count: int) -> list[str]:
        """The keys of a version's ``count`` chunks, in the order their bytes join."""
        return [self.blob_chunk(namespace, name, sha256, i) for i in range(count)]

    # --- schemas -------------------------------------------------------------------------------
    @property
    def schema_heads_root(self) -> str:
        return f"{self.prefix}/schemas/heads/"

    def schema_head(self, namespace: str, name: str) -> str:
        return f"{self.prefix}/schemas/heads/{namespace}/{name}"

    def schema_versions_prefix(self, namespace: str, name: str) -> str:
        return f"{self.prefix}/schemas/versions/{namespace}/{name}/"

    def schema_version(self, namespace: str, name: str, version: int) -> str:
        return f"{self.schema_versions_prefix(namespace, name)}{version_segment(version)}"

    # --- audit and clients ---------------------------------------------------------------------
    @property
    def audit_root(self) -> str:
        return f"{self.prefix}/audit/"

    def audit_prefix(self, namespace: str) -> str:
        return f"{self.prefix}/audit/{namespace}/"

    def audit_entry(self, namespace: str, entry_id: str) -> str:
        return f"{self.prefix}/audit/{namespace}/{entry_id}"

    def clients_prefix(self, namespace: str) -> str:
        return f"{self.prefix}/clients/{namespace}/"

    def client(self, namespace: str, instance_id: str) -> str:
        return f"{self.prefix}/clients/{namespace}/{instance_id}"

    # --- operations (retention, leader election, usage) ----------------------------------------
    @property
    def retention_root(self) -> str:
        return f"{self.prefix}/retention/"

    def retention(self, namespace: str) -> str:
        return f"{self.prefix}/retention/{namespace}"

    def lock(self, duty: str) -> str:
        return f"{self.prefix}/locks/{duty}"

    @property
    def usage(self) -> str:
        return f"{self.prefix}/maintenance/usage"

    def namespace_prefixes(self, namespace: str) -> dict[str, str]:
        """Every prefix that holds keys of ``namespace``, by kind (what usage counts and export copies)."""
        return {
            "heads": self.heads_prefix(namespace),
            "versions": f"{self.prefix}/versions/{namespace}/",
            "blobs": f"{self.prefix}/blobs/{namespace}/",
            "schemas": f"{self.prefix}/schemas/heads/{namespace}/",
            "schema_versions": f"{self.prefix}/schemas/versions/{namespace}/",
            "audit": self.audit_prefix(namespace),
            "clients": self.clients_prefix(namespace),
            "rollouts": f"{self.prefix}/rollouts/active/{namespace}/",
            "rollout_history": f"{self.prefix}/rollouts/history/{namespace}/",
        }

    # --- rollouts ---------------------------------------------------------------------------------------
    @property
    def active_rollouts_root(self) -> str:
        return f"{self.prefix}/rollouts/active/"

    def active_rollout(self, namespace: str, name: str) -> str:
        return f"{self.prefix}/rollouts/active/{namespace}/{name}"

    def rollout_history_prefix(self, namespace: str, name: str) -> str:
        return f"{self.prefix}/rollouts/history/{namespace}/{name}/"

    def rollout_history(self, namespace: str, name: str, started_at: str, rollout_id: str) -> str:
        stamp = "".join(ch for ch in started_at if ch.isdigit())
        return f"{self.rollout_history_prefix(namespace, name)}{stamp}-{rollout_id}"

    # --- review: namespace policies and change requests ---------------------------------------------
    def policy(self, namespace: str) -> str:
        return f"{self.prefix}/policies/{namespace}"

    @property
    def change_requests_root(self) -> str:
        return f"{self.prefix}/change-requests/"

    def change_request(self, request_id: int) -> str:
        return f"{self.prefix}/change-requests/{version_segment(request_id)}"

    @property
    def change_request_seq(self) -> str:
        return f"{self.prefix}/change-request-seq"

    # --- projections (docs/interop.md) -----------------------------------------------------------
    @property
    def projections_root(self) -> str:
        return f"{self.prefix}/projections/"

    def projections(self, namespace: str) -> str:
        return f"{self.prefix}/projections/{namespace}"
