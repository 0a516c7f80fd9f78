"""The HTTP API: one router per resource."""

from fastapi import APIRouter

from . import audit, clients, configs, health, imports, ofrep, projections, schemas

ROUTERS: tuple[APIRouter, ...] = (
    schemas.router,
    configs.router,
    imports.router,
    audit.router,
    clients.router,
    health.router,
    projections.router,
    ofrep.router,
)

__all__ = ["ROUTERS"]
