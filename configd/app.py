"""The FastAPI application: the services, the routers and the exception handlers.

The handlers turn every exception into its status and error body by the one table of :mod:`configd.api.errors`,
and audit a rejected write attempt there, in one place, with the status it got; that entry is the only write a
rejection makes.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from configd_core.consul import ConsulGateway
from configd_core.diff import json_pointer
from configd_core.errors import ConfigdError, ErrorDetail, RolloutActive, ValidationFailed, VersionConflict
from configd_core.layout import KeyLayout

from . import __version__
from .api import ROUTERS
from .api.deps import ServerState, current_attempt, get_state
from .api.errors import classify, error_body, error_detail, record_rejection
from .auth import TokenBook
from .errors import RequestTooLarge, Unauthenticated
from .metrics import ServerMetrics
from .services.change_requests import ChangeRequests
from .services.clients import ClientDirectory
from .services.configs import ConfigStore
from .services.election import ElectedDriver, LeaderElection
from .services.health import consul_health
from .services.keys import ServerKeys
from .services.retention import KVUsage, Operations, Retention, UsageCollector
from .services.rollouts import Rollouts
from .settings import ServerSettings
from .tokens import TokenFile
from .ui import router as ui_router

log = logging.getLogger("configd")


async def _reject(request: Request, code: int, reason: str, detail: str) -> None:
    """The audit of a rejected write attempt (when the request was one), off the event loop."""
    attempt = current_attempt(request)
    if attempt is not None:
        await run_in_threadpool(record_rejection, get_state(request), attempt, code, reason, detail)


async def _configd_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConfigdError)
    code, reason, error = classify(exc)
    detail = error_detail(exc, code, get_state(request).settings.prefix)
    if code == 500:
        log.error("unexpected configd error on %s %s", request.method, request.url.path, exc_info=exc)
    errors = exc.errors if isinstance(exc, ValidationFailed) else None
    extra: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if isinstance(exc, VersionConflict):
        extra = {"expected": exc.expected, "actual": exc.actual}
    if isinstance(exc, RolloutActive):
        extra["rollout"] = exc.rollout
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, RequestTooLarge):
        headers["Connection"] = "close"  # the rest of the body was drained or never sent (api/deps.py DRAIN_BYTES)
    await _reject(request, code, reason, detail)
    return JSONResponse(error_body(detail, error, errors, **extra), status_code=code, headers=headers)


async def _request_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [ErrorDetail(json_pointer(e.get("loc", ())) or "/", str(e.get("msg", "invalid"))) for e in exc.errors()]
    detail = "the request is invalid: " + "; ".join(f"{e.path}: {e.message}" for e in errors)
    await _reject(request, 422, "validation", detail)
    return JSONResponse(error_body(detail, ValidationFailed.__name__, errors), status_code=422)


_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})


def _allowed_methods(request: Request) -> list[str]:
    """Every method the OpenAPI document lists for this path (Starlette's 405 names only one route's)."""
    path = request.scope.get("path", "")
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^/]*?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            methods |= {m.upper() for m in operations if m in _HTTP_METHODS}
    return sorted(methods)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        headers["Allow"] = ", ".join(allowed)
    # Routing's own answers (no such path, method not allowed): not errors of configd's tree.
    error = "NotFound" if exc.status_code == 404 else "HTTPError"
    return JSONResponse(error_body(str(exc.detail), error), status_code=exc.status_code, headers=headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Starlette's ServerErrorMiddleware calls this and re-raises, so the traceback reaches the server log only.
    incident = uuid.uuid4().hex[:12]
    log.error("incident %s: unexpected error on %s %s", incident, request.method, request.url.path, exc_info=exc)
    detail = f"internal error in configd (incident {incident}); the server log has the details"
    await _reject(request, 500, "internal", detail)
    return JSONResponse(error_body(detail, ConfigdError.__name__), status_code=500)


def create_app(settings: ServerSettings, *, tokens: TokenBook | TokenFile | None = None) -> FastAPI:
    """A configd application for ``settings``; ``tokens`` defaults to the settings' tokens file, reloaded when it
    changes (or none)."""
    book = tokens if tokens is not None else TokenFile(settings.tokens_file) if settings.tokens_file else TokenBook()
    metrics = ServerMetrics()
    gateway = ConsulGateway(settings.consul_addr, token=settings.consul_token_value(), pool_size=64)
    gateway.on_call = metrics.observe_consul_call
    layout = KeyLayout(settings.prefix)
    store = ConfigStore(gateway, layout, ServerKeys(settings.keys_file))
    clients = ClientDirectory(gateway, layout)
    rollouts = Rollouts(gateway, store, clients)
    operations, driver = _maintenance(settings, gateway, layout, metrics, rollouts)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if driver is not None:
            driver.start()
        try:
            yield
        finally:
            if driver is not None:
                await run_in_threadpool(driver.stop)
            gateway.close()

    app = FastAPI(
        title="configd",
        version=__version__,
        description=(
            "Schema-checked, versioned configuration on HashiCorp Consul. Authenticate with "
            "`Authorization: Bearer <token>`; roles reader < editor < admin, scoped to namespaces."
        ),
        lifespan=lifespan,
    )
    app.state.configd = ServerState(
        settings=settings,
        store=store,
        clients=clients,
        health=functools.partial(consul_health, gateway),
        tokens=book,
        metrics=metrics,
        operations=operations,
        change_requests=ChangeRequests(gateway, store, rollouts),
        rollouts=rollouts,
    )
    app.add_exception_handler(ConfigdError, _configd_error)
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(ui_router)
    return app


def _maintenance(
    settings: ServerSettings, gateway: ConsulGateway, layout: KeyLayout, metrics: ServerMetrics, rollouts: Rollouts
) -> tuple[Operations, ElectedDriver | None]:
    """Retention, usage and rollouts, and (unless disabled) the elected driver that runs them on one replica."""
    operations = Operations(Retention(gateway, layout), KVUsage(gateway, layout))
    driver: ElectedDriver | None = None
    if settings.maintenance:
        election = LeaderElection(
            gateway,
            layout.lock("maintenance"),
            holder=f"{socket.gethostname()}:{os.getpid()}:{settings.port}",
            ttl_seconds=settings.election_ttl,
            lock_delay_seconds=settings.lock_delay,
        )
        driver = ElectedDriver(election)
        driver.register("rollouts", rollouts.drive, settings.rollout_interval)
        driver.register("retention", operations.retention.run, settings.retention_interval)
        driver.register("usage", operations.usage.publish, settings.usage_interval)
        operations.leading = lambda: driver.leading if driver is not None else False
    metrics.extra.register(UsageCollector(operations.usage, lambda: operations.leading()))
    return operations, driver


def app_from_environment() -> FastAPI:
    """The app of one worker process of ``configd serve --workers N`` (settings from the environment)."""
    return create_app(ServerSettings())
