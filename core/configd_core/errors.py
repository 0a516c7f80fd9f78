"""configd's exceptions: one root, shared by the SDK, the server and the CLI.

    ConfigdError
    ├── ConsulUnavailable       Consul did not answer, has no leader, or answered with a server error
    ├── ConsulPermissionDenied  Consul's ACLs refused the request
    ├── NotFound                no such config, version or schema
    │   └── SchemaNotFound      a push names a config whose schema is not registered
    ├── InvalidName             a namespace or name is not a valid identifier
    ├── InvalidConfig           the body is not storable JSON (NaN, non-string keys, too deep, …)
    ├── ValidationFailed        the data fails its JSON Schema (or a settings model); `.errors` has every path
    │   ├── SchemaIncompatible  a new schema version that the current head would fail
    │   └── SecretUnreadable    a secret value cannot be encrypted or decrypted (no key, wrong key, tampered)
    ├── VersionConflict         the head moved (CAS lost) or `expected_version` did not match
    └── ConfigTooLarge          the canonical JSON exceeds the size limit; names both numbers

Consul and HTTP failures are mapped to these at the boundary (``raise … from exc``), so callers never
catch ``requests``, ``consul`` or ``httpx`` exceptions. An error that came back from configd's HTTP API carries
that request (:class:`RequestContext`, hvac-style), and the API names each error's class in its body
(``"error": "VersionConflict"``), so a client maps it back to this tree without reading the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self


@dataclass(frozen=True)
class ErrorDetail:
    """One validation error: a JSON Pointer into the document and a readable message."""

    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


@dataclass(frozen=True)
class RequestContext:
    """The HTTP request behind an error: method, URL, the status it got (None: no answer) and the decoded body."""

    method: str
    url: str
    status: int | None
    body: Any

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "url": self.url, "status": self.status, "body": self.body}


class ConfigdError(Exception):
    """Root of every configd exception."""

    #: The HTTP request that answered with this error, when there was one (set by :meth:`with_request`).
    request: RequestContext | None = None

    def with_request(self, request: RequestContext) -> Self:
        """This error, noting the HTTP request behind it (like ``with_traceback``: ``raise exc.with_request(r)``)."""
        self.request = request
        return self


class ConsulUnavailable(ConfigdError):
    """Consul could not be reached, has no leader, or failed the request."""


class ConsulPermissionDenied(ConfigdError):
    """Consul's ACL system refused the request (HTTP 403 from Consul)."""


class NotFound(ConfigdError):
    """The config, version or schema does not exist."""


class SchemaNotFound(NotFound):
    """No schema is registered for the config being pushed."""


class InvalidName(ConfigdError):
    """A namespace or config name is not a valid identifier."""


class InvalidConfig(ConfigdError):
    """The document cannot be stored as JSON (NaN, infinities, non-string keys, too deep)."""


class ValidationFailed(ConfigdError):
    """The document fails validation; ``errors`` lists every failure with its JSON Pointer path."""

    def __init__(self, message: str, errors: list[ErrorDetail] | None = None) -> None:
        super().__init__(message)
        self.errors: list[ErrorDetail] = list(errors or [])


class SchemaIncompatible(ValidationFailed):
    """The current head would fail the new schema version (register it with force to override)."""


class SecretUnreadable(ValidationFailed):
    """A secret value cannot be decrypted (missing or wrong key, tampered or moved ciphertext) or encrypted (the
    namespace has no key). The message names the key id and the namespace, never the value."""


class VersionConflict(ConfigdError):
    """Another writer moved the head first, or ``expected_version`` is not the head's version."""

    def __init__(self, message: str, *, expected: int | None = None, actual: int | None = None) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class RolloutActive(VersionConflict):
    """The config has an active rollout: a plain push, rollback, delete or second rollout waits until it is
    completed or aborted. ``rollout`` is the rollout's id."""

    def __init__(self, message: str, *, rollout: str) -> None:
        super().__init__(message)
        self.rollout = rollout


class ConfigTooLarge(ConfigdError):
    """The canonical JSON of a config is larger than configd stores."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"config is {size} bytes of canonical JSON; the limit is {limit} bytes")
        self.size = size
        self.limit = limit
