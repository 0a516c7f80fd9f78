"""The HTTP API: one router per resource."""

from fastapi import APIRouter

from . import (
    audit,
    change_requests,
    clients,
    configs,
    health,
    imports,
    ofrep,
    operations,
    projections,
    rollouts,
    schemas,
)

ROUTERS: tuple[APIRouter, ...] = (
    schemas.router,
    configs.router,
    imports.router,
    audit.router,
    clients.router,
    health.router,
    operations.router,
    change_requests.router,
    rollouts.router,
    projections.router,
    ofrep.router,
)

__all__ = ["ROUTERS"]
