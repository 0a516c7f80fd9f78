"""``/healthz`` (Consul answers and has a leader) and ``/metrics`` (Prometheus text)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from configd_core.errors import ConsulPermissionDenied, ConsulUnavailable

from .deps import State
from .models import HealthView

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthView, responses={503: {"model": HealthView}}, summary="Health")
def healthz(state: State, response: Response) -> HealthView:
    try:
        leader = state.store.gateway.leader()
    except (ConsulUnavailable, ConsulPermissionDenied) as exc:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return HealthView(status="unavailable", leader=None, detail=str(exc))
    if not leader:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return HealthView(status="unavailable", leader=None, detail="Consul answers but has no leader")
    return HealthView(status="ok", leader=leader, detail=f"Consul at {state.store.gateway.address} has a leader")


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
def metrics(state: State) -> Response:
    return Response(content=state.metrics.render(), media_type=state.metrics.content_type)
