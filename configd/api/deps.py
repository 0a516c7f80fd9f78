"""FastAPI dependencies as ``Annotated`` aliases: the server state, the caller's principal, JSON request bodies.

Write endpoints declare their principal FIRST and their body second: FastAPI resolves dependencies in
declaration order, so a write attempt is identified (action, namespace, actor) before its body is read, and
the exception handlers can audit every rejection, including 401/403 and unreadable bodies.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError

from configd_core.diff import json_pointer
from configd_core.errors import ErrorDetail, InvalidConfig, InvalidName, ValidationFailed
from configd_core.gc_pause import paused_gc
from configd_core.layout import (
    MAX_CONFIG_BYTES,
    MAX_JSON_DEPTH,
    MAX_MESSAGE_CHARS,
    NAME_MAX_LENGTH,
    NAME_PATTERN,
    validate_name,
)
from configd_core.records import json_depth

from ..auth import Principal, Role, TokenBook
from ..errors import BadRequest, RequestTooLarge, UnsupportedMediaType
from ..metrics import ServerMetrics
from ..services.change_requests import ChangeRequests
from ..services.clients import ClientDirectory
from ..services.configs import ConfigStore
from ..services.health import ConsulHealth
from ..services.retention import Operations
from ..services.rollouts import Rollouts
from ..settings import ServerSettings
from ..tokens import TokenFile

# The body wraps the config (``{"data": …, "message": …}``) and may be pretty-printed, so it may be somewhat
# larger than the canonical limit; anything beyond this is refused before a byte of it is parsed.
MAX_REQUEST_BYTES = MAX_CONFIG_BYTES + 1024 * 1024
# Envelope levels a body adds around the document (``{"data": …}``), on top of the document's own limit.
_ENVELOPE_DEPTH = 2

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class ServerState:
    """Everything a request needs, built once per app (``app.state.configd``): the settings, the services over
    Consul (the HTTP layer calls these, never the gateway), the tokens and the metrics."""

    settings: ServerSettings
    store: ConfigStore
    clients: ClientDirectory
    health: Callable[[], ConsulHealth]
    tokens: TokenBook | TokenFile
    metrics: ServerMetrics
    change_requests: ChangeRequests
    rollouts: Rollouts
    operations: Operations | None = None


@dataclass(frozen=True)
class WriteAttempt:
    """What a write request tries to do; the exception handlers audit it when it is rejected."""

    action: str
    namespace: str | None
    name: str | None
    actor: str = "(unauthenticated)"
    message: str = ""


def get_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.configd
    return state


def get_store(request: Request) -> ConfigStore:
    return get_state(request).store


# The dependencies are ``async`` on purpose: FastAPI runs a plain ``def`` dependency on its thread pool, a
# hop that cost ~0.4 ms per request here (bench/notes.md), for what is an attribute lookup.
async def _state(request: Request) -> ServerState:
    return get_state(request)


async def _store(request: Request) -> ConfigStore:
    return get_store(request)


State = Annotated[ServerState, Depends(_state)]
Store = Annotated[ConfigStore, Depends(_store)]

_bearer = HTTPBearer(auto_error=False, description="A token from the server's tokens file")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _valid(value: Any, what: str) -> str | None:
    try:
        return validate_name(value, what) if isinstance(value, str) else None
    except InvalidName:
        return None


def current_attempt(request: Request) -> WriteAttempt | None:
    attempt: WriteAttempt | None = getattr(request.state, "attempt", None)
    return attempt


def note_message(request: Request, message: str) -> None:
    """Attach the write's message to the attempt, so a rejection's audit entry carries it."""
    attempt = current_attempt(request)
    if attempt is not None:
        request.state.attempt = replace(attempt, message=message)  # clipped, if need be, by the audit entry


class Authorize:
    """Authenticate the bearer token and require ``role`` in the path's namespace (``{ns}``) when there is one.

    With ``action`` the request is a write: it is recorded as a :class:`WriteAttempt` before anything can fail.
    """

    def __init__(self, role: Role, action: str | None = None) -> None:
        self.role = role
        self.action = action

    async def __call__(self, request: Request, credentials: Credentials) -> Principal:
        namespace = _valid(request.path_params.get("ns"), "namespace")
        if self.action is not None and namespace is not None:
            request.state.attempt = WriteAttempt(
                self.action, namespace, _valid(request.path_params.get("name"), "name")
            )
        token = credentials.credentials if credentials is not None else None
        principal = get_state(request).tokens.authenticate(token)
        attempt = current_attempt(request)
        if attempt is not None:
            request.state.attempt = replace(attempt, actor=principal.name)
        # An invalid namespace in the path is the handler's InvalidName (422), not a 403.
        principal.authorize(self.role, namespace)
        return principal


# --- shared aliases of the routers: who may call, and the parameters every resource shares ------------------
Reader = Annotated[Principal, Depends(Authorize("reader"))]
Pusher = Annotated[Principal, Depends(Authorize("editor", action="push"))]
RollbackEditor = Annotated[Principal, Depends(Authorize("editor", action="rollback"))]
SchemaAdmin = Annotated[Principal, Depends(Authorize("admin", action="schema.register"))]
DeleteAdmin = Annotated[Principal, Depends(Authorize("admin", action="delete"))]
Importer = Annotated[Principal, Depends(Authorize("editor", action="import"))]

# Names are checked by ``validate_name`` in the services (a 422 with configd's own message); these aliases state the
# same rule in the OpenAPI document, so generated clients and fuzzers know which names exist.
_NAME_RULE = {"pattern": NAME_PATTERN, "maxLength": NAME_MAX_LENGTH}
_OPTIONAL_NAME_RULE = {"pattern": f"^$|{NAME_PATTERN}", "maxLength": NAME_MAX_LENGTH}  # empty counts as absent
Namespace = Annotated[str, Path(json_schema_extra=_NAME_RULE)]
ConfigName = Annotated[str, Path(json_schema_extra=_NAME_RULE)]
NamespaceFilter = Annotated[
    str | None,
    Query(description="one namespace; default: every namespace you may read", json_schema_extra=_OPTIONAL_NAME_RULE),
]
AfterName = Annotated[
    str | None,
    Query(
        description="continue after this config name (the previous next_after)", json_schema_extra=_OPTIONAL_NAME_RULE
    ),
]

#: A write's message in the query string (the body's is ``models.Message``); the audit record's limit.
MessageQuery = Annotated[str, Query(max_length=MAX_MESSAGE_CHARS, description="why (recorded in history and audit)")]


# --- JSON bodies -------------------------------------------------------------------------------------------
def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


# An oversized body is still read (and discarded) up to this much before the 413 goes out with `Connection: close`.
# Most clients (urllib, requests, httpx) send the whole body before they read any answer, and a server that closes
# with unread bytes makes the kernel send a reset instead of a close: the client sees ECONNRESET, not the 413.
# Past this bound the connection is closed anyway (a reset); a client that sent `Expect: 100-continue` (curl) has
# sent nothing yet and reads the 413 at once, so nothing is drained for it.
DRAIN_BYTES = 64 * 1024 * 1024


async def _drained(request: Request, stream: AsyncIterator[bytes]) -> None:
    if "100-continue" in request.headers.get("expect", "").lower():
        return
    discarded = 0
    async for chunk in stream:
        discarded += len(chunk)
        if discarded > DRAIN_BYTES:
            return


async def read_json(request: Request) -> Any:
    """The request body as JSON (see :func:`read_json_body`), for a document wrapped in at most two levels."""
    return await read_json_body(request, _ENVELOPE_DEPTH)


async def read_json_body(request: Request, envelope_depth: int | None) -> Any:
    """The request body as JSON: declared as JSON (415), at most MAX_REQUEST_BYTES (413), UTF-8 (400), parseable,
    finite and not too deep (422). Too-large bodies are refused from Content-Length, or as soon as the stream
    passes the limit, never buffered whole. ``envelope_depth`` None leaves depth to the caller, which checks each
    document it carries (an import: every item's own error, and one walk of the body instead of two)."""
    content_type = request.headers.get("content-type")
    if content_type is not None and not _is_json(content_type):
        raise UnsupportedMediaType(f"the body must be JSON (Content-Type: application/json), not {content_type!r}")
    declared = request.headers.get("content-length")
    stream = request.stream()
    if declared is not None and declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        await _drained(request, stream)
        raise RequestTooLarge(int(declared), MAX_REQUEST_BYTES)
    chunks: list[bytes] = []
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > MAX_REQUEST_BYTES:
            await _drained(request, stream)
            raise RequestTooLarge(None, MAX_REQUEST_BYTES)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise InvalidConfig("the request body is empty; send a JSON document")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the request body is not UTF-8: {exc}") from exc
    try:
        with paused_gc(len(raw)):
            value = json.loads(
                text,
                parse_constant=_reject_constant,
                parse_float=_finite_float,
                parse_int=_bounded_int,
                object_pairs_hook=_unique_keys,
            )
    except RecursionError as exc:
        raise InvalidConfig(f"the request body is nested far deeper than {MAX_JSON_DEPTH} levels") from exc
    except json.JSONDecodeError as exc:
        raise InvalidConfig(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except ValueError as exc:  # anything else the decoder refuses, never a 500
        raise InvalidConfig(f"the request body is not valid JSON: {exc}") from exc
    if (
        envelope_depth is not None
        and json_depth(value, MAX_JSON_DEPTH + envelope_depth) > MAX_JSON_DEPTH + envelope_depth
    ):
        raise InvalidConfig(f"the request body is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _reject_constant(name: str) -> Any:
    raise InvalidConfig(f"the request body contains {name}, which JSON cannot represent portably")


# Numbers must fit an IEEE 754 double, the only number type many JSON readers have (RFC 8259 section 6):
# 1e400 or a 401-digit integer would be infinity or an error elsewhere. Checking the digit count first also
# keeps Python's 4300-digit int conversion limit (a ValueError) out of the way.
_MAX_INT_DIGITS = len(str(int(sys.float_info.max)))


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise InvalidConfig(f"the number {text[:40]} is beyond the range of a JSON number (IEEE 754 double)")
    return number


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > _MAX_INT_DIGITS or abs(number := int(text)) > sys.float_info.max:
        raise InvalidConfig(
            f"the integer {text[:20]}… ({digits} digits) is beyond the range of a JSON number (IEEE 754 double)"
        )
    return number


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Duplicate keys are refused (422), not resolved last-wins: RFC 8259 leaves their meaning undefined, and a
    config whose reader and writer disagree about a key is worse than a refused push."""
    found = dict(pairs)  # built in C; only a body that has a duplicate pays for finding which key it is
    if len(found) != len(pairs):
        key = next(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        raise InvalidConfig(f"the request body repeats the key {key!r} in one object; keys must be unique")
    return found


def body_errors(exc: ValidationError) -> list[ErrorDetail]:
    """pydantic's errors as JSON Pointer paths into the body."""
    found = []
    for error in exc.errors(include_url=False, include_input=False):
        found.append(ErrorDetail(json_pointer(error["loc"]) or "/", error["msg"]))
    return found


def parse_model(model: type[M], value: Any) -> M:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise ValidationFailed("the request body does not have the expected shape", body_errors(exc)) from exc


def json_body(model: type[M], *, envelope_depth: int | None = _ENVELOPE_DEPTH) -> Callable[[Request], Awaitable[M]]:
    """A dependency that reads the body as JSON and validates it as ``model``."""

    async def dependency(request: Request) -> M:
        parsed = parse_model(model, await read_json_body(request, envelope_depth))
        message = getattr(parsed, "message", None)
        if isinstance(message, str):
            note_message(request, message)
        return parsed

    return dependency


JSONDocument = Annotated[Any, Depends(read_json)]


def optional_json_body(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """:func:`json_body` for a body that may be left out: none at all (or an empty one) is ``model()``."""
    read = json_body(model)

    async def dependency(request: Request) -> M:
        if request.headers.get("content-length", "0") == "0" and "transfer-encoding" not in request.headers:
            return model()
        return await read(request)

    return dependency


def _inlined(node: Any, defs: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """``node`` with each ``{"$ref": "#/$defs/X"}`` replaced by X: pydantic's ``$defs`` refs point at the root of the
    model's schema, which in the OpenAPI document is the document's root, where nothing is (issue 18)."""
    if isinstance(node, list):
        return [_inlined(item, defs, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref.removeprefix("#/$defs/")
        if name in seen:
            raise ValueError(f"body_openapi cannot inline the recursive model {name}")
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return {**_inlined(defs[name], defs, (*seen, name)), **_inlined(rest, defs, seen)}
    return {k: _inlined(v, defs, seen) for k, v in node.items() if k != "$defs"}


def body_openapi(
    model: type[BaseModel] | None = None, description: str = "", *, required: bool = True
) -> dict[str, Any]:
    """The OpenAPI requestBody of a route whose body is read by :func:`read_json` instead of FastAPI."""
    schema: dict[str, Any] = model.model_json_schema() if model is not None else {"type": "object"}
    schema = _inlined(schema, schema.get("$defs", {}))
    return {
        "requestBody": {
            "required": required,
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    }
