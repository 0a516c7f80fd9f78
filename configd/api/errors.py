"""The ONE table from configd's exception tree to HTTP, the error body, and the audit of rejected writes.

Every error body is ``{"detail": "…", "error": "<class>", "errors": [{"path", "message"}]}`` (``errors`` only when
there are some). ``error`` names the class of the exception tree that decided the status — the row of
:data:`STATUS_BY_ERROR` — so a client (configctl) maps an answer back to the tree without reading its message.
The API's exception handlers (:mod:`configd.app`) and the UI's pages (:mod:`configd.ui`) both use this module.
"""

from __future__ import annotations

import logging
from typing import Any

from configd_core.errors import (
    ConfigdError,
    ConfigTooLarge,
    ConsulPermissionDenied,
    ConsulUnavailable,
    ErrorDetail,
    InvalidConfig,
    InvalidName,
    NotFound,
    RolloutActive,
    SchemaIncompatible,
    SchemaNotFound,
    ValidationFailed,
    VersionConflict,
)

from ..errors import (
    BadRequest,
    Forbidden,
    RequestTooLarge,
    ReviewRequired,
    TransitionRefused,
    Unauthenticated,
    UnsupportedMediaType,
)
from ..planning.audit import new_entry
from .deps import ServerState, WriteAttempt
from .models import ErrorBody

log = logging.getLogger("configd")

# Most specific first: the first class an exception is an instance of decides its status, its metric reason and
# the ``error`` name of its body.
STATUS_BY_ERROR: tuple[tuple[type[ConfigdError], int, str], ...] = (
    (Unauthenticated, 401, "unauthenticated"),
    (ReviewRequired, 403, "review_required"),
    (Forbidden, 403, "forbidden"),
    (TransitionRefused, 409, "conflict"),
    (BadRequest, 400, "bad_request"),
    (UnsupportedMediaType, 415, "unsupported_media_type"),
    (RequestTooLarge, 413, "too_large"),
    (ConfigTooLarge, 413, "too_large"),
    (RolloutActive, 409, "rollout_active"),
    (VersionConflict, 409, "conflict"),
    (SchemaNotFound, 404, "not_found"),
    (NotFound, 404, "not_found"),
    (SchemaIncompatible, 422, "validation"),
    (ValidationFailed, 422, "validation"),
    (InvalidName, 422, "invalid_name"),
    (InvalidConfig, 422, "invalid_config"),
    (ConsulPermissionDenied, 503, "consul_permission_denied"),
    (ConsulUnavailable, 503, "consul_unavailable"),
)
INTERNAL = (500, "internal", "ConfigdError")

#: Every status an API route can answer with an :class:`ErrorBody` (the OpenAPI ``responses`` of a route).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in sorted({code for _, code, _ in STATUS_BY_ERROR})
}


def classify(exc: ConfigdError) -> tuple[int, str, str]:
    """HTTP status, metric reason and error name (the table row's class) of a configd exception (pure)."""
    for kind, code, reason in STATUS_BY_ERROR:
        if isinstance(exc, kind):
            return code, reason, kind.__name__
    return INTERNAL


def error_body(detail: str, error: str, errors: list[ErrorDetail] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"detail": detail, "error": error}
    if errors:
        body["errors"] = [e.as_dict() for e in errors]
    body.update(extra)
    return body


def error_detail(exc: ConfigdError, code: int, prefix: str) -> str:
    """The readable ``detail`` of an error: its message, with what to do when Consul is the cause."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ConsulPermissionDenied):
        return (
            f"Consul refused configd's request: {text}. Give configd a Consul ACL token (CONSUL_HTTP_TOKEN) "
            f"with write access to the key prefix '{prefix}/'"
        )
    if isinstance(exc, ConsulUnavailable):
        return f"Consul is unavailable: {text}"
    if code == 500:
        return "internal error in configd; the server log has the details"
    return text


def record_rejection(state: ServerState, attempt: WriteAttempt, code: int, reason: str, detail: str) -> None:
    """Count a rejected write and append its audit entry (the only write a rejection makes; none for a 401).

    Blocking (it may write to Consul): the API calls it on the thread pool, the UI from its page handlers.
    """
    if attempt.namespace is None:
        return
    state.metrics.rejection(attempt.action, reason)
    if code == 401:
        # Anyone can send a request without a valid token: writing an audit entry for each would let anonymous
        # callers grow Consul's KV without bound. They are counted (metrics) and logged, never stored.
        log.warning("rejected unauthenticated %s of %s/%s", attempt.action, attempt.namespace, attempt.name or "")
        return
    state.store.audit.record_rejection(
        new_entry(
            actor=attempt.actor,
            action=attempt.action,
            namespace=attempt.namespace,
            name=attempt.name,
            result="rejected",
            status=code,
            message=attempt.message,
            detail=detail,
        )
    )
