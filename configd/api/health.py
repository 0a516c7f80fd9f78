"""``/healthz`` (Consul answers and has a leader) and ``/metrics`` (Prometheus text)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from .deps import State
from .models import HealthView

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthView, responses={503: {"model": HealthView}}, summary="Health")
def healthz(state: State, response: Response) -> HealthView:
    health = state.health()
    if not health.ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return HealthView(status="ok" if health.ok else "unavailable", leader=health.leader, detail=health.detail)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
def metrics(state: State) -> Response:
    return Response(content=state.metrics.render(), media_type=state.metrics.content_type)
