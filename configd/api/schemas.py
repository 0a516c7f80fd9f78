"""``/api/v1/schemas``: register and read versioned JSON Schemas (admin writes, reader reads)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from configd_core.errors import NotFound

from .deps import (
    ConfigName,
    JSONDocument,
    MessageQuery,
    Namespace,
    Reader,
    SchemaAdmin,
    State,
    Store,
    body_openapi,
    note_message,
)
from .errors import ERROR_RESPONSES
from .models import SchemaListView, SchemaSummary, SchemaView, SchemaWriteResult

router = APIRouter(prefix="/api/v1/schemas", tags=["schemas"])


@router.put(
    "/{ns}/{name}",
    response_model=SchemaWriteResult,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": SchemaWriteResult, "description": "identical to the current schema"}, **ERROR_RESPONSES},
    openapi_extra=body_openapi(description="the JSON Schema (Draft 2020-12)"),
    summary="Register a new schema version",
)
def put_schema(
    ns: Namespace,
    name: ConfigName,
    principal: SchemaAdmin,
    schema: JSONDocument,
    state: State,
    request: Request,
    response: Response,
    force: Annotated[bool, Query(description="register even if the current config would fail it")] = False,
    message: MessageQuery = "",
) -> SchemaWriteResult:
    """201 with the new version, or 200 when the schema equals the current one. 422 when it is not a valid
    schema, or when the current config would fail it (register with ``force=true`` to override)."""
    note_message(request, message)
    result = state.store.register_schema(ns, name, schema, actor=principal.name, message=message, force=force)
    state.metrics.write("schema.register", result.status)
    if result.status == "unchanged":
        response.status_code = status.HTTP_200_OK
    record = result.record
    return SchemaWriteResult(
        status=result.status, namespace=record.namespace, name=record.name, version=record.version, sha256=record.sha256
    )


@router.get("/{ns}", response_model=SchemaListView, responses=ERROR_RESPONSES, summary="The schemas of a namespace")
def list_schemas(ns: Namespace, _: Reader, store: Store) -> SchemaListView:
    """Every current schema of the namespace (name, version, sha256): what an import plans against, in one
    request. 404 when the namespace has none."""
    heads = store.schemas.heads(ns)
    if not heads:
        raise NotFound(f"namespace {ns} has no schemas")
    return SchemaListView(namespace=ns, schemas=[SchemaSummary.of(h) for h in heads])


@router.get("/{ns}/{name}", response_model=SchemaView, responses=ERROR_RESPONSES, summary="The current schema")
def get_schema(ns: Namespace, name: ConfigName, _: Reader, store: Store) -> SchemaView:
    record = store.schemas.get(ns, name)
    return SchemaView.of(record, store.schemas.versions(ns, name))


@router.get(
    "/{ns}/{name}/versions/{version}", response_model=SchemaView, responses=ERROR_RESPONSES, summary="A schema version"
)
def get_schema_version(ns: Namespace, name: ConfigName, version: int, _: Reader, store: Store) -> SchemaView:
    record = store.schemas.get(ns, name, version)
    return SchemaView.of(record, store.schemas.versions(ns, name))
