"""The CLI's exit codes and the ONE mapping from configd's exception tree to them.

The CLI adds three leaves that only exist at its HTTP boundary::

    ConfigdError
    ├── UsageError          bad arguments or local files (exit 2)
    ├── AuthFailed          HTTP 401/403: no, unknown or insufficient token (exit 6)
    └── ServerUnavailable   configd did not answer, or answered with an unexpected 5xx (exit 5)

Everything else is the shared tree from ``configd_core.errors``.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from configd_core.errors import (
    ConfigdError,
    ConfigTooLarge,
    ConsulPermissionDenied,
    ConsulUnavailable,
    InvalidConfig,
    InvalidName,
    NotFound,
    ValidationFailed,
    VersionConflict,
)


class ExitCode(IntEnum):
    """configctl's documented exit codes (docs/cli.md)."""

    OK = 0
    VALIDATION_FAILED = 1
    USAGE = 2
    CONFLICT = 3
    NOT_FOUND = 4
    UNAVAILABLE = 5
    AUTH = 6


class UsageError(ConfigdError):
    """The command line or a local file is unusable (missing file, bad option combination, bad tree layout)."""


class AuthFailed(ConfigdError):
    """configd refused the token: missing or unknown (401), or its role or namespaces forbid the action (403)."""


class ServerUnavailable(ConfigdError):
    """configd could not be reached, timed out, or failed with an unexpected server error."""


# Order matters: the first matching class wins, so subclasses sit before their bases.
_EXIT_CODES: tuple[tuple[type[ConfigdError], ExitCode], ...] = (
    (ValidationFailed, ExitCode.VALIDATION_FAILED),
    (InvalidConfig, ExitCode.VALIDATION_FAILED),
    (ConfigTooLarge, ExitCode.VALIDATION_FAILED),
    (UsageError, ExitCode.USAGE),
    (InvalidName, ExitCode.USAGE),
    (VersionConflict, ExitCode.CONFLICT),
    (NotFound, ExitCode.NOT_FOUND),
    (ConsulUnavailable, ExitCode.UNAVAILABLE),
    (ServerUnavailable, ExitCode.UNAVAILABLE),
    (AuthFailed, ExitCode.AUTH),
    (ConsulPermissionDenied, ExitCode.AUTH),
)

_KINDS: dict[ExitCode, str] = {
    ExitCode.VALIDATION_FAILED: "validation failed",
    ExitCode.USAGE: "usage",
    ExitCode.CONFLICT: "conflict",
    ExitCode.NOT_FOUND: "not found",
    ExitCode.UNAVAILABLE: "unavailable",
    ExitCode.AUTH: "not authorized",
}

MAX_PATHS_IN_LINE = 10


def exit_code_for(exc: ConfigdError) -> ExitCode:
    """The exit code of a failure; an unknown ConfigdError is treated as the server's fault (5)."""
    for cls, code in _EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return ExitCode.UNAVAILABLE


def worst(codes: list[ExitCode]) -> ExitCode:
    """The exit code for several failures (an import): the first failure kind in the documented order wins.

    Unavailability and auth beat conflicts and validation because they say the run itself could not work.
    """
    precedence = [ExitCode.AUTH, ExitCode.UNAVAILABLE, ExitCode.USAGE, ExitCode.NOT_FOUND, ExitCode.CONFLICT]
    for code in precedence:
        if code in codes:
            return code
    return ExitCode.VALIDATION_FAILED if ExitCode.VALIDATION_FAILED in codes else ExitCode.OK


def error_line(exc: ConfigdError) -> str:
    """One readable line: the kind, the message and, for validation failures, every error path."""
    code = exit_code_for(exc)
    line = f"{_KINDS.get(code, 'error')}: {exc}"
    if isinstance(exc, ValidationFailed) and exc.errors:
        shown = [f"{e.path}: {e.message}" for e in exc.errors[:MAX_PATHS_IN_LINE]]
        more = len(exc.errors) - len(shown)
        line += " — " + "; ".join(shown) + (f"; … and {more} more" if more > 0 else "")
    if isinstance(exc, VersionConflict) and exc.actual is not None:
        line += f" (expected {exc.expected}, head is {exc.actual})"
    return " ".join(line.split())


def error_document(exc: ConfigdError) -> dict[str, Any]:
    """The ``--json`` form of a failure."""
    doc: dict[str, Any] = {
        "error": type(exc).__name__,
        "exit_code": int(exit_code_for(exc)),
        "detail": str(exc),
    }
    if isinstance(exc, ValidationFailed):
        doc["errors"] = [e.as_dict() for e in exc.errors]
    if isinstance(exc, VersionConflict):
        doc["expected"], doc["actual"] = exc.expected, exc.actual
    if exc.request is not None:
        doc["request"] = exc.request.as_dict()
    return doc
