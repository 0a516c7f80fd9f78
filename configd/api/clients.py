"""``/api/v1/clients``: the SDK instances of a namespace and whether each runs the current versions."""

from __future__ import annotations

import logging

from fastapi import APIRouter

from configd_core.layout import validate_name
from configd_core.records import ClientRecord, HeadRecord

from .deps import Reader, Store
from .models import AppliedConfig, ClientsView, ClientView, ErrorBody

router = APIRouter(prefix="/api/v1/clients", tags=["clients"])
log = logging.getLogger(__name__)


def client_view(record: ClientRecord, heads: dict[str, HeadRecord]) -> ClientView:
    """Compare what an instance applied with the heads (pure)."""
    configs = []
    for name, applied in sorted(record.applied.items()):
        head = heads.get(name)
        head_version = head.version if head is not None and not head.deleted else None
        configs.append(
            AppliedConfig(
                name=name, applied_version=applied, head_version=head_version, current=applied == head_version
            )
        )
    return ClientView(
        instance=record.instance,
        application=record.application,
        host=record.host,
        pid=record.pid,
        started_at=record.started_at,
        updated_at=record.updated_at,
        current=all(c.current for c in configs),
        configs=configs,
    )


@router.get(
    "/{ns}",
    response_model=ClientsView,
    responses={code: {"model": ErrorBody} for code in (401, 403, 422, 503)},
    summary="Registered SDK instances",
)
def list_clients(ns: str, principal: Reader, store: Store) -> ClientsView:
    validate_name(ns, "namespace")
    _, entries = store.gateway.list(store.layout.clients_prefix(ns))
    heads = {h.name: h for h in store.heads(ns, include_deleted=True)}
    clients = []
    for entry in sorted(entries, key=lambda e: e.key):
        try:
            record = ClientRecord.from_bytes(entry.value)
        except Exception:  # one unreadable registration must not hide the others
            log.warning("skipping unreadable client record %s", entry.key)
            continue
        clients.append(client_view(record, heads))
    return ClientsView(namespace=ns, clients=clients)
