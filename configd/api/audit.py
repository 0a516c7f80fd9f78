"""``/api/v1/audit``: every accepted write and every rejected write attempt, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from .deps import NamespaceFilter, Reader, Store
from .errors import ERROR_RESPONSES
from .models import AuditEntry, AuditView

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


@router.get(
    "",
    response_model=AuditView,
    responses=ERROR_RESPONSES,
    summary="The audit log",
)
def list_audit(
    principal: Reader,
    store: Store,
    namespace: NamespaceFilter = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditView:
    if namespace:
        principal.authorize("reader", namespace)
        records = store.audit.list(namespace, limit)
    else:
        # Entries of namespaces the token may not read are skipped; read a few more so a page stays full.
        wanted = limit if principal.namespaces == ("*",) else limit * 4
        records = [r for r in store.audit.list(None, wanted) if principal.covers(r.namespace)][:limit]
    return AuditView(entries=[AuditEntry.of(r) for r in records])
