"""``/api/v1/retention`` (each namespace's retention policy) and ``/api/v1/storage`` (KV keys and bytes)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from configd_core.errors import NotFound
from configd_core.layout import validate_name

from ..auth import Principal
from ..planning.retention import RetentionPolicy
from ..services.retention import Operations
from .deps import Authorize, Namespace, NamespaceFilter, Reader, State, body_openapi, json_body
from .errors import ERROR_RESPONSES

router = APIRouter(prefix="/api/v1", tags=["operations"])

RetentionAdmin = Annotated[Principal, Depends(Authorize("admin", action="retention"))]
PolicyBody = Annotated[RetentionPolicy, Depends(json_body(RetentionPolicy))]


def _operations(state: Any) -> Operations:
    found: Operations | None = getattr(state, "operations", None)
    if found is None:
        raise NotFound("this server runs without operations services")
    return found


@router.get("/retention/{ns}", responses=ERROR_RESPONSES, summary="The namespace's retention policy")
def get_retention(ns: Namespace, _: Reader, state: State) -> dict[str, Any]:
    policy = _operations(state).retention.policy(ns)
    return {
        "namespace": ns,
        "policy": policy.model_dump(exclude_none=True) if policy else {},
        "keeps_everything": policy is None or not (policy.trims_audit or policy.trims_versions),
    }


@router.put(
    "/retention/{ns}",
    responses=ERROR_RESPONSES,
    summary="Set the namespace's retention policy (applied by the elected replica)",
    openapi_extra=body_openapi(RetentionPolicy),
)
def put_retention(ns: Namespace, principal: RetentionAdmin, policy: PolicyBody, state: State) -> dict[str, Any]:
    _operations(state).retention.set_policy(ns, policy, actor=principal.name)
    return {"namespace": ns, "policy": policy.model_dump(exclude_none=True)}


@router.delete("/retention/{ns}", responses=ERROR_RESPONSES, summary="Remove the policy: keep everything")
def delete_retention(ns: Namespace, principal: RetentionAdmin, state: State) -> dict[str, Any]:
    _operations(state).retention.clear_policy(ns, actor=principal.name)
    return {"namespace": ns, "policy": {}}


@router.get("/storage", responses=ERROR_RESPONSES, summary="Consul KV keys and bytes per namespace")
def storage(
    principal: Reader,
    state: State,
    namespace: NamespaceFilter = None,  # counted now; without it, the last stored count of every namespace
) -> dict[str, Any]:
    operations = _operations(state)
    if namespace:
        validate_name(namespace, "namespace")
        principal.authorize("reader", namespace)
        counted = operations.usage.count(namespace)
        return {"computed_at": None, "fresh": True, "namespaces": _totals(counted)}
    record = operations.usage.published() or {"computed_at": None, "namespaces": {}}
    covered = {ns: kinds for ns, kinds in record.get("namespaces", {}).items() if principal.covers(ns)}
    return {"computed_at": record.get("computed_at"), "fresh": False, "namespaces": _totals(covered)}


def _totals(usage: dict[str, dict[str, dict[str, int]]]) -> dict[str, Any]:
    return {
        ns: {
            "keys": sum(k["keys"] for k in kinds.values()),
            "bytes": sum(k["bytes"] for k in kinds.values()),
            "by_kind": kinds,
        }
        for ns, kinds in sorted(usage.items())
    }
