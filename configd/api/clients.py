"""``/api/v1/clients``: the SDK instances of a namespace and whether each runs the current versions."""

from __future__ import annotations

from fastapi import APIRouter

from configd_core.layout import validate_name

from ..services.clients import Instance
from .deps import Namespace, Reader, State
from .errors import ERROR_RESPONSES
from .models import AppliedConfig, ClientsView, ClientView

router = APIRouter(prefix="/api/v1/clients", tags=["clients"])


def client_view(instance: Instance) -> ClientView:
    record = instance.record
    return ClientView(
        instance=record.instance,
        application=record.application,
        host=record.host,
        pid=record.pid,
        started_at=record.started_at,
        updated_at=record.updated_at,
        current=instance.current,
        configs=[
            AppliedConfig(
                name=c.name, applied_version=c.applied_version, head_version=c.head_version, current=c.current
            )
            for c in instance.configs
        ],
    )


@router.get("/{ns}", response_model=ClientsView, responses=ERROR_RESPONSES, summary="Registered SDK instances")
def list_clients(ns: Namespace, principal: Reader, state: State) -> ClientsView:
    validate_name(ns, "namespace")
    instances = state.clients.instances(ns, state.store.heads(ns, include_deleted=True))
    return ClientsView(namespace=ns, clients=[client_view(i) for i in instances])
