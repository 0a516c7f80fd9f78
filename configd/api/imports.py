"""``POST /api/v1/import``: many schemas and configs in one request.

Every item is authorized (a schema needs admin, a config editor, in its namespace) and checked before anything is
written; one bad item refuses the whole request, with a path per problem (``/items/<i>/…``). Then whole configs
are committed in batched Consul transactions (:class:`configd.services.imports.BulkImporter`), each item
getting its outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from configd_core.errors import InvalidName
from configd_core.layout import validate_name

from ..auth import Principal, Role
from ..errors import Forbidden
from ..planning.bulk import ImportItem, ImportKind, ImportRejected, ItemProblem, import_rejection
from .deps import Importer, State, WriteAttempt, body_openapi, json_body
from .errors import ERROR_RESPONSES
from .models import ImportBody, ImportItemResult, ImportView

router = APIRouter(prefix="/api/v1", tags=["import"])

# An import needs at least the editor role (``Importer``); each item then needs what its single-item endpoint needs.
# Each document's depth is checked by the store, item by item (one walk, and an error with the item's path).
ImportDoc = Annotated[ImportBody, Depends(json_body(ImportBody, envelope_depth=None))]
ROLE_BY_KIND: dict[ImportKind, Role] = {"schema": "admin", "config": "editor"}
ACTION_BY_KIND: dict[ImportKind, str] = {"schema": "schema.register", "config": "push"}


def _named(namespace: str) -> bool:
    try:
        validate_name(namespace, "namespace")
    except InvalidName:
        return False
    return True


def _forbidden(
    principal: Principal, items: list[ImportItem], reviewed: Callable[[Principal, str], object]
) -> list[ItemProblem]:
    """Items the token may not write (``reviewed`` refuses configs of a namespace under review to non-admins).
    An invalid namespace is left to the import's own checks (422, not 403)."""
    problems: list[ItemProblem] = []
    for index, item in enumerate(items):
        if not _named(item.namespace):
            continue
        try:
            principal.authorize(ROLE_BY_KIND[item.kind], item.namespace)
            if item.kind == "config":
                reviewed(principal, item.namespace)
        except Forbidden as exc:
            problems.append(ItemProblem(index, item, exc))
    return problems


def _attribute(request: Request, principal: Principal, items: list[ImportItem], message: str) -> None:
    """Name the namespace whose audit log records this import if it is refused: the first (bad) item's."""
    item = next((i for i in items if _named(i.namespace)), None)
    if item is not None:
        request.state.attempt = WriteAttempt("import", item.namespace, item.name, principal.name, message)


@router.post(
    "/import",
    response_model=ImportView,
    responses=ERROR_RESPONSES,
    openapi_extra=body_openapi(ImportBody),
    summary="Import many schemas and configs (validated together, committed in batches)",
)
def import_documents(principal: Importer, body: ImportDoc, state: State, request: Request) -> ImportView:
    """200 with one result per item (``created``, ``unchanged``, ``conflict``, ``failed``). Refused as a whole,
    nothing written, when any item is forbidden (403), invalid (422), expects another head (409) or has no schema
    (404) — ``errors`` has a path per problem, ``/items/<index>/…``."""
    items = [
        ImportItem(i.kind, i.namespace, i.name, i.document, expected_version=i.expected_version, force=i.force)
        for i in body.items
    ]
    _attribute(request, principal, items, body.message)
    try:
        if forbidden := _forbidden(principal, items, state.change_requests.direct_write):
            raise import_rejection(forbidden, len(items))
        outcomes = state.store.import_items(items, actor=principal.name, message=body.message)
    except ImportRejected as exc:
        _attribute(request, principal, [p.item for p in exc.problems], body.message)
        raise
    summary = dict.fromkeys(("created", "unchanged", "conflict", "failed"), 0)
    for outcome in outcomes:
        summary[outcome.status] += 1
        action = ACTION_BY_KIND[outcome.item.kind]
        if outcome.status in ("created", "unchanged"):
            state.metrics.write(action, outcome.status)
        else:
            state.metrics.rejection(action, "conflict" if outcome.status == "conflict" else "consul_unavailable")
    return ImportView.model_validate({"summary": summary, "items": [ImportItemResult.of(o) for o in outcomes]})
