"""``/ofrep/v1``: the OpenFeature Remote Evaluation Protocol, so OpenFeature SDKs in any language evaluate configd
flags over HTTP (docs/interop.md).

A flag is a value in a config, its key ``NS/NAME/PATH`` (``configd_core.flags``), percent-encoded in the path or
not (``/ofrep/v1/evaluate/flags/payments%2Fservice%2Ffeatures%2Fnew_checkout``). Bearer tokens as for the API:
any role, and only namespaces the token covers.

- ``POST /ofrep/v1/evaluate/flags/{key}`` → 200 ``{"key", "value", "reason": "STATIC"|"SPLIT", "variant": "v<version>",
  "metadata": {"config", "version", "sha256"}}``; 404 ``{"key", "errorCode": "FLAG_NOT_FOUND", "errorDetails"}``;
  400 ``{"key", "errorCode": "PARSE_ERROR" | "INVALID_CONTEXT", "errorDetails"}``. OFREP has no typed request:
  the OpenFeature SDK checks the type on its side (its TYPE_MISMATCH).
- ``POST /ofrep/v1/evaluate/flags`` (bulk) → 200 ``{"flags": [...], "metadata": {...}}`` with an ``ETag``; the
  same ``If-None-Match`` → 304. The flags are every value that is not an object (scalars and arrays) of every live
  config in the namespaces named by the context attribute ``configd.namespace`` (a string or a list of them), each
  of which the token must cover; without it, every namespace the token covers. The ETag is computed from the
  namespaces, the (config, version, sha256) of every config and the schema versions in them, before any document
  is read.

Secret fields (``writeOnly`` or ``x-configd-secret`` in the schema) are never flags, as they are never projected.

Cohort-aware: while a config has an active rollout, a context whose ``targetingKey`` is in the rollout's cohort
(its other string attributes are the labels; the SDK's own rule) gets the candidate's values, ``reason: "SPLIT"``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor

from configd_core.errors import InvalidName, NotFound
from configd_core.flags import FlagNotFound, flag_leaves, parse_flag_key, resolve_pointer
from configd_core.layout import validate_name
from configd_core.records import HeadRecord, canonical_json, sha256_hex
from configd_core.rollouts import InstanceIdentity, is_member

from ..auth import Principal
from ..errors import Forbidden
from ..services.configs import ConfigStore
from .deps import Reader, Store, body_openapi
from .models import ErrorBody

router = APIRouter(prefix="/ofrep/v1", tags=["ofrep"])


class _FlagKeyConvertor(Convertor[str]):
    """Starlette's ``path`` convertor without its one gap: a key holding a newline still reaches the handler (and
    gets OFREP's 400 PARSE_ERROR) instead of missing the route."""

    regex = "[\\s\\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("flagkey", _FlagKeyConvertor())

NAMESPACE_ATTRIBUTE = "configd.namespace"


class EvaluationRequest(BaseModel):
    context: dict[str, Any] = Field(default_factory=dict, description="the evaluation context (not used to target)")


class Evaluation(BaseModel):
    key: str
    value: Any = Field(json_schema_extra={"nullable": True})
    reason: str
    variant: str = Field(description="v<version>: the config version the value comes from")
    metadata: dict[str, Any]


class EvaluationFailure(BaseModel):
    key: str | None = None
    errorCode: str = Field(description="FLAG_NOT_FOUND, PARSE_ERROR or INVALID_CONTEXT")
    errorDetails: str


class BulkEvaluation(BaseModel):
    flags: list[Evaluation | EvaluationFailure]
    metadata: dict[str, Any]


# OFREP clients may send no body at all: that is an empty context.
_OPTIONAL_BODY: dict[str, Any] = {**body_openapi(EvaluationRequest)["requestBody"], "required": False}
_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": ErrorBody}, 403: {"model": ErrorBody}}
_SINGLE: dict[int | str, dict[str, Any]] = {
    200: {"model": Evaluation, "description": "the flag's value"},
    400: {"model": EvaluationFailure, "description": "PARSE_ERROR or INVALID_CONTEXT"},
    404: {"model": EvaluationFailure, "description": "FLAG_NOT_FOUND"},
    **_AUTH_ERRORS,
    503: {"model": ErrorBody},
}
_BULK: dict[int | str, dict[str, Any]] = {
    200: {"model": BulkEvaluation, "description": "every flag of the namespaces, with an ETag"},
    304: {"description": "unchanged since the If-None-Match ETag"},
    400: {"model": EvaluationFailure, "description": "PARSE_ERROR or INVALID_CONTEXT"},
    **_AUTH_ERRORS,
    422: {"model": ErrorBody},
    503: {"model": ErrorBody},
}


@dataclass(frozen=True)
class _Served:
    """The version of a config one evaluation context gets: the head, or during a rollout the cohort's."""

    head: HeadRecord
    version: int
    sha256: str
    document: Any
    reason: str


def _identity(context: dict[str, Any]) -> InstanceIdentity | None:
    """The context as a rollout instance: ``targetingKey`` is its key, its other string attributes its labels."""
    key = context.get("targetingKey")
    if not isinstance(key, str) or not key:
        return None
    labels = {k: v for k, v in context.items() if k != "targetingKey" and isinstance(v, str)}
    return InstanceIdentity(key=key, instance_id=key, labels=labels)


def _served(store: ConfigStore, head: HeadRecord, identity: InstanceIdentity | None) -> _Served:
    """Cohort-aware: during a rollout a context whose ``targetingKey`` is in the cohort gets the candidate (reason
    ``SPLIT``), one outside it the head (``SPLIT`` too: the split decided); no targetingKey, or no rollout: the
    head (``STATIC``). Membership is the SDK's rule (``configd_core.rollouts.is_member``)."""
    rollout = head.rollout if head.rollout is not None and head.rollout.active else None
    if rollout is None or identity is None:
        return _Served(head, head.version, head.sha256, store.current_data(head), "STATIC")
    if not is_member(rollout, identity):
        return _Served(head, head.version, head.sha256, store.current_data(head), "SPLIT")
    candidate = rollout.candidate_inline()
    if candidate is None:
        candidate = store.data(store.version(head.namespace, head.name, rollout.candidate_version))
    return _Served(head, rollout.candidate_version, rollout.candidate_sha256, candidate, "SPLIT")


def _evaluated(key: str, served: _Served, value: Any) -> dict[str, Any]:
    head = served.head
    return {
        "key": key,
        "value": value,
        "reason": served.reason,
        "variant": f"v{served.version}",
        "metadata": {"config": f"{head.namespace}/{head.name}", "version": served.version, "sha256": served.sha256},
    }


def _failure(code: int, key: str | None, error_code: str, details: str) -> JSONResponse:
    body: dict[str, Any] = {"errorCode": error_code, "errorDetails": details}
    if key is not None:
        body = {"key": key, **body}
    return JSONResponse(body, status_code=code)


async def _context(request: Request) -> dict[str, Any]:
    """The request's evaluation context (``{"context": {...}}``; an empty body is an empty context)."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _BadContext("PARSE_ERROR", f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("context", {}), dict):
        raise _BadContext("INVALID_CONTEXT", 'the body must be {"context": {...}}')
    context: dict[str, Any] = body.get("context", {})
    return context


class _BadContext(Exception):
    def __init__(self, error_code: str, details: str) -> None:
        super().__init__(details)
        self.error_code = error_code


def _evaluate_one(store: ConfigStore, principal: Principal, key: str, context: dict[str, Any]) -> dict[str, Any]:
    flag = parse_flag_key(key)
    if not principal.covers(flag.namespace):
        raise Forbidden(f"token {principal.name!r} may not access namespace {flag.namespace!r}")
    served = _served(store, store.head(flag.namespace, flag.name), _identity(context))
    document = store.projections.public(flag.namespace, flag.name, served.document)
    value = resolve_pointer(document, flag.pointer)
    return _evaluated(key, served, value)


@router.post(
    "/evaluate/flags/{key:flagkey}",
    summary="Evaluate one flag (OFREP)",
    responses=_SINGLE,
    response_class=JSONResponse,
    openapi_extra={"requestBody": {**_OPTIONAL_BODY}},
)
async def evaluate_flag(key: str, request: Request, principal: Reader, store: Store) -> JSONResponse:
    try:
        context = await _context(request)
    except _BadContext as exc:
        return _failure(400, key, exc.error_code, str(exc))
    try:
        body = await run_in_threadpool(_evaluate_one, store, principal, key, context)
    except InvalidName as exc:
        return _failure(400, key, "PARSE_ERROR", str(exc))
    except (NotFound, FlagNotFound) as exc:
        return _failure(404, key, "FLAG_NOT_FOUND", f"{key}: {exc}")
    return JSONResponse(body)


def _namespaces(store: ConfigStore, principal: Principal, context: dict[str, Any]) -> list[str]:
    wanted = context.get(NAMESPACE_ATTRIBUTE)
    if wanted is None:
        return sorted(ns for ns in store.namespaces() if principal.covers(ns))
    names = [wanted] if isinstance(wanted, str) else wanted
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _BadContext("INVALID_CONTEXT", f"{NAMESPACE_ATTRIBUTE} must be a namespace or a list of namespaces")
    for name in names:
        try:
            validate_name(name, "namespace")
        except InvalidName as exc:
            raise _BadContext("INVALID_CONTEXT", f"{NAMESPACE_ATTRIBUTE}: {exc}") from exc
        if not principal.covers(name):
            raise Forbidden(f"token {principal.name!r} may not access namespace {name!r}")
    return sorted(set(names))


def _bulk(store: ConfigStore, principal: Principal, context: dict[str, Any], if_none_match: str | None) -> Response:
    namespaces = _namespaces(store, principal, context)
    heads = [head for namespace in namespaces for head in store.heads(namespace)]
    schemas = [(s.namespace, s.name, s.version) for namespace in namespaces for s in store.schemas.heads(namespace)]
    identity = _identity(context)
    # The schemas count too: a new schema version may mark a field secret (no longer a flag); and during a rollout
    # the version served depends on the rollout's step and on who asks.
    rollouts = [(h.rollout.id, h.rollout.step, h.rollout.state) for h in heads if h.rollout is not None]
    asking = [identity.key, sorted(identity.labels.items())] if identity is not None and rollouts else None
    state = [namespaces, [(h.namespace, h.name, h.version, h.sha256) for h in heads], schemas, rollouts, asking]
    etag = f'"{sha256_hex(canonical_json(state))[:32]}"'
    if if_none_match is not None and etag in {tag.strip() for tag in if_none_match.split(",")}:
        return Response(status_code=304, headers={"ETag": etag})
    flags = []
    for head in heads:
        ref = f"{head.namespace}/{head.name}"
        served = _served(store, head, identity)
        document = store.projections.public(head.namespace, head.name, served.document)
        for pointer, value in flag_leaves(document):
            flags.append(_evaluated(ref + pointer, served, value))
    return JSONResponse({"flags": flags, "metadata": {"namespaces": namespaces}}, headers={"ETag": etag})


@router.post(
    "/evaluate/flags",
    summary="Evaluate every flag of the context's namespaces (OFREP bulk)",
    responses=_BULK,
    response_class=JSONResponse,
    openapi_extra={"requestBody": {**_OPTIONAL_BODY}},
)
async def evaluate_flags(request: Request, principal: Reader, store: Store) -> Response:
    try:
        context = await _context(request)
        return await run_in_threadpool(_bulk, store, principal, context, request.headers.get("if-none-match"))
    except _BadContext as exc:
        return _failure(400, None, exc.error_code, str(exc))
