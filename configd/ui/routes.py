"""The web UI under ``/ui/``: server-rendered pages over the same store and tokens as the HTTP API.

Sign-in stores the pasted API token in an HttpOnly, SameSite=Strict cookie scoped to ``/ui``. Every POST is
checked for its Origin (or Referer) and for a per-session CSRF token (an HMAC of the cookie token under a secret
of this process) before anything else, then for the role it needs, exactly as the API checks it.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.concurrency import run_in_threadpool

from configd_core.diff import diff_json
from configd_core.errors import ConfigdError, NotFound, ValidationFailed, VersionConflict
from configd_core.layout import MAX_MESSAGE_CHARS, validate_name
from configd_core.records import AuditRecord, HeadRecord
from configd_core.secrets import masked_pair

from ..api.clients import client_view
from ..api.deps import ServerState, WriteAttempt, get_state
from ..api.errors import classify, record_rejection
from ..api.models import ClientView
from ..auth import ROLE_RANK, Principal
from ..errors import BadRequest, Forbidden, Unauthenticated
from ._present import (
    RolloutCounts,
    change_views,
    client_counts,
    csrf_token,
    csrf_valid,
    format_time,
    highlight_json,
    pretty_for_display,
    rollout_panel,
    safe_next,
    same_origin,
    side_by_side,
    time_ago,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/ui", include_in_schema=False)

SESSION_COOKIE = "configd_session"
# Versions offered in the diff page's pickers and shown per history page.
PICKER_VERSIONS = 500
HISTORY_PAGE = 50
AUDIT_DEFAULT_LIMIT = 100
AUDIT_MAX_LIMIT = 1000
# A sign-in or rollback form is a few hundred bytes; anything much larger is not one of ours.
MAX_FORM_BYTES = 16 * 1024

_PACKAGE = Path(__file__).resolve().parent.parent
_STATIC = _PACKAGE / "static"
_STATIC_NAME = re.compile(r"^[a-z0-9_-]+\.(css|js|svg)$")
_MEDIA_TYPES = {"css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8", "svg": "image/svg+xml"}
# Only this server's own files may run or style a page: a value that slipped past escaping still could not act.
# The editor (CodeMirror) injects its theme as a <style> element carrying the page's nonce (``csp_nonce`` in the
# template, fresh per response), and sets one inline style attribute, ``tab-size: 4``, allowed by its hash only.
_EDITOR_STYLE_HASH = "'sha256-qokx773Tl626SVTuhxQSccr23ixTSkbnBXWRqLjyuIg='"
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'nonce-{nonce}' 'unsafe-hashes' "
    + _EDITOR_STYLE_HASH
    + "; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
# The CSRF secret lives as long as the process: a restart only asks open forms to be reloaded.
_CSRF_SECRET = secrets.token_bytes(32)

_templates = Environment(
    loader=FileSystemLoader(str(_PACKAGE / "templates")),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_templates.filters["when"] = format_time
_templates.filters["ago"] = time_ago
_templates.filters["json"] = highlight_json


@dataclass(frozen=True)
class Session:
    """A signed-in browser: who it is and the CSRF token its forms carry."""

    principal: Principal
    csrf: str

    def can_write(self, namespace: str) -> bool:
        return ROLE_RANK[self.principal.role] >= ROLE_RANK["editor"] and self.principal.covers(namespace)


@dataclass(frozen=True)
class Page:
    """What a page handler decided: a template and its values (rendering is done in one place)."""

    template: str
    values: dict[str, Any] = field(default_factory=dict)
    status: int = 200


# --- plumbing ---------------------------------------------------------------------------------------------
def _state(request: Request) -> ServerState:
    return get_state(request)


def _session(request: Request) -> Session | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        principal = _state(request).tokens.authenticate(token)
    except Unauthenticated:
        return None
    return Session(principal, csrf_token(_CSRF_SECRET, token))


def _render(request: Request, session: Session | None, page: Page) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    values = {"me": session, "path": request.url.path, "nav": "", "back": "", "csp_nonce": nonce, **page.values}
    html = _templates.get_template(page.template).render(values)
    headers = {**_SECURITY_HEADERS, "Content-Security-Policy": _CSP.format(nonce=nonce)}
    return HTMLResponse(html, status_code=page.status, headers=headers)


def _status_of(exc: ConfigdError) -> int:
    code, _, _ = classify(exc)
    return 503 if code == 500 else code


def _error_page(exc: ConfigdError) -> Page:
    status = _status_of(exc)
    titles = {
        401: "Sign-in required",
        403: "Not allowed",
        404: "Not found",
        409: "Changed meanwhile",
        413: "Too large",
        422: "Refused",
        503: "Consul is unavailable",
    }
    errors = exc.errors if isinstance(exc, ValidationFailed) else []
    return Page(
        "error.html",
        {"title": titles.get(status, "Error"), "message": str(exc) or type(exc).__name__, "errors": errors},
        status,
    )


def _to_sign_in(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/ui/login?{urlencode({'next': target})}", status_code=303)


def _page(request: Request, build: Callable[[Session], Page | Response]) -> Response:
    """Authenticate from the cookie, run ``build``, render its page; a configd error becomes an error page."""
    session = _session(request)
    if session is None:
        return _to_sign_in(request)
    try:
        result = build(session)
    except ConfigdError as exc:
        if _status_of(exc) == 503:
            log.warning("ui: %s %s failed: %s", request.method, request.url.path, exc)
        result = _error_page(exc)
    if isinstance(result, Response):
        return result
    return _render(request, session, result)


def _query_int(request: Request, key: str) -> int | None:
    raw = request.query_params.get(key)
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise BadRequest(f"{key} must be a version number, not {raw[:40]!r}")
    return int(raw)


def _require_namespace(session: Session, namespace: str) -> None:
    validate_name(namespace, "namespace")
    session.principal.authorize("reader", namespace)


def _clients(state: ServerState, namespace: str) -> list[ClientView]:
    """The namespace's SDK instances against its heads (deleted ones too: an instance may still follow one)."""
    instances = state.clients.instances(namespace, state.store.heads(namespace, include_deleted=True))
    return [client_view(i) for i in instances]


# What a rollout step did, for the flash on the config page it redirects to (``?rollout=…``).
ROLLOUT_FLASHES = {
    "promoted": "Promoted: the rollout moved to its next step.",
    "completed": "Rollout completed: the candidate is the head version.",
    "paused": "Rollout paused: instances keep what they run until it is resumed.",
    "resumed": "Rollout resumed.",
    "aborted": "Rollout aborted: every instance goes back to the head version.",
}
ROLLOUT_HISTORY_SHOWN = 10


def _rollout_values(state: ServerState, ns: str, name: str, head: HeadRecord) -> dict[str, Any]:
    """The config page's rollout section (the active rollout with its counts, its H → C diff) and the config's
    recent finished rollouts. The active rollout rides in the head already read: no second head read."""
    values: dict[str, Any] = {
        "rollout": None,
        "rollout_changes": [],
        "rollout_rows": [],
        "rollout_history_items": state.rollouts.history(ns, name, limit=ROLLOUT_HISTORY_SHOWN),
    }
    active = head.rollout if head.rollout is not None and head.rollout.active else None
    if active is None:
        return values
    status = state.rollouts.status_of(active)
    counts = status.counts
    values["rollout"] = rollout_panel(
        active,
        next_step_at=status.next_step_at.isoformat() if status.next_step_at else None,
        instances=RolloutCounts(
            counts.total, counts.members, counts.on_base, counts.on_candidate, failed=len(counts.failing)
        ),
        failures=counts.failures,
    )
    base = state.store.get(ns, name, active.base_version, sealed=True)[1]
    candidate = state.store.get(ns, name, active.candidate_version, sealed=True)[1]
    base, candidate = masked_pair(base, candidate)  # secrets: masked, "secret changed" decided by fingerprint
    values["rollout_changes"] = change_views(diff_json(base, candidate))
    values["rollout_rows"] = side_by_side(pretty_for_display(base)[0], pretty_for_display(candidate)[0])
    return values


# --- sign-in ----------------------------------------------------------------------------------------------
async def _read_form(request: Request, limit: int = MAX_FORM_BYTES) -> dict[str, str]:
    """An urlencoded form body (the UI's only kind); refused when larger than ``limit`` or not a form."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise BadRequest("expected a form (application/x-www-form-urlencoded)")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise BadRequest("the form is too large")
    try:
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError as exc:
        raise BadRequest("the form is not UTF-8") from exc


def _from_our_pages(request: Request) -> bool:
    return same_origin(
        request.headers.get("origin"), request.headers.get("referer"), request.headers.get("host"), request.url.scheme
    )


@router.get("/login")
def sign_in_form(request: Request) -> Response:
    if _session(request) is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    page = Page("login.html", {"title": "Sign in", "next": safe_next(request.query_params.get("next")), "error": ""})
    return _render(request, None, page)


@router.post("/login")
async def sign_in(request: Request) -> Response:
    next_page = "/ui/"
    try:
        if not _from_our_pages(request):
            raise Forbidden("this sign-in did not come from configd's own sign-in page")
        form = await _read_form(request)
        next_page = safe_next(form.get("next"))
        token = form.get("token", "").strip()
        _state(request).tokens.authenticate(token)
    except ConfigdError as exc:
        message = "Unknown token." if isinstance(exc, Unauthenticated) else str(exc)
        page = Page("login.html", {"title": "Sign in", "next": next_page, "error": message}, _status_of(exc))
        return _render(request, None, page)
    response = RedirectResponse(next_page, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def sign_out(request: Request) -> Response:
    session = _session(request)
    form = await _read_form(request)
    if session is not None and not (_from_our_pages(request) and csrf_valid_for(request, form)):
        return _render(request, session, _error_page(Forbidden("this sign-out did not come from configd's pages")))
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/ui", httponly=True, samesite="strict")
    return response


def csrf_valid_for(request: Request, form: dict[str, str]) -> bool:
    token = request.cookies.get(SESSION_COOKIE, "")
    return bool(token) and csrf_valid(_CSRF_SECRET, token, form.get("csrf"))


# --- pages ------------------------------------------------------------------------------------------------
@router.get("/")
def namespaces_page(request: Request) -> Response:
    def build(session: Session) -> Page:
        store = _state(request).store
        rows = []
        for namespace, heads in sorted(store.namespaces().items()):
            if not session.principal.covers(namespace):
                continue
            latest = max(heads, key=lambda h: h.created_at)
            rows.append({"namespace": namespace, "configs": len(heads), "latest": latest})
        return Page("namespaces.html", {"title": "Namespaces", "nav": "namespaces", "rows": rows})

    return _page(request, build)


@router.get("/configs/{ns}")
def namespace_page(request: Request, ns: str) -> Response:
    def build(session: Session) -> Page:
        _require_namespace(session, ns)
        state = _state(request)
        every_head = state.store.heads(ns, include_deleted=True)  # one read: tombstones only serve the client view
        heads = [h for h in every_head if not h.deleted]
        if not heads:
            raise NotFound(f"namespace {ns} has no configs")
        clients = [client_view(i) for i in state.clients.instances(ns, every_head)]
        counts = client_counts(clients, [h.name for h in heads])
        rows = [{"head": h, "clients": counts[h.name]} for h in heads]
        return Page(
            "namespace.html",
            {"title": ns, "nav": "namespaces", "ns": ns, "rows": rows, "client_total": len(clients)},
        )

    return _page(request, build)


@router.get("/configs/{ns}/{name}")
def config_page(request: Request, ns: str, name: str) -> Response:
    def build(session: Session) -> Page:
        _require_namespace(session, ns)
        validate_name(name, "name")
        store = _state(request).store
        head = store.head(ns, name)
        wanted = _query_int(request, "version")
        record, data = store.get(ns, name, wanted)
        text, cut = pretty_for_display(data)
        try:
            schema = store.schemas.get(ns, name, record.schema_ref.version)
            schema_text: str | None = pretty_for_display(schema.json_schema)[0]
        except NotFound:
            schema_text = None
        history = store.history(ns, name, limit=HISTORY_PAGE, before=_query_int(request, "before"))
        clients = [
            (client, applied)
            for client in _clients(_state(request), ns)
            for applied in client.configs
            if applied.name == name
        ]
        created = _query_int(request, "created")
        try:
            projections = store.projections.of_config(ns, name)
        except ValidationFailed:  # settings this config cannot be projected with: the next write says why
            projections = []
        return Page(
            "config.html",
            {
                "title": f"{ns}/{name}",
                "nav": "namespaces",
                "ns": ns,
                "name": name,
                "head": head,
                "record": record,
                "json_text": text,
                "json_cut": cut,
                "schema_text": schema_text,
                "history": history,
                "clients": clients,
                "projections": projections,
                "created": created,
                "published": _query_int(request, "published"),
                "can_edit": session.can_write(ns),
                "unchanged": request.query_params.get("unchanged") == "1",
                "rollout_done": ROLLOUT_FLASHES.get(request.query_params.get("rollout", ""), ""),
                "message_limit": MAX_MESSAGE_CHARS,
                **_rollout_values(_state(request), ns, name, head),
            },
        )

    return _page(request, build)


@router.get("/configs/{ns}/{name}/diff")
def diff_page(request: Request, ns: str, name: str) -> Response:
    def build(session: Session) -> Page:
        _require_namespace(session, ns)
        validate_name(name, "name")
        store = _state(request).store
        head = store.head(ns, name)
        to_version = _query_int(request, "to") or head.version
        from_version = _query_int(request, "from") or max(1, to_version - 1)
        old_record, old = store.get(ns, name, from_version, sealed=True)
        new_record, new = store.get(ns, name, to_version, sealed=True)
        old, new = masked_pair(old, new)  # secrets: masked, "secret changed" decided by fingerprint
        old_text, old_cut = pretty_for_display(old)
        new_text, new_cut = pretty_for_display(new)
        versions = store.history(ns, name, limit=PICKER_VERSIONS).versions
        return Page(
            "diff.html",
            {
                "title": f"{ns}/{name} v{from_version} → v{to_version}",
                "nav": "namespaces",
                "ns": ns,
                "name": name,
                "head": head,
                "old": old_record,
                "new": new_record,
                "rows": side_by_side(old_text, new_text),
                "cut": old_cut or new_cut,
                "changes": change_views(diff_json(old, new)),
                "versions": versions,
                "can_rollback": session.can_write(ns) and from_version != head.version,
                "same_as_head": old_record.sha256 == head.sha256,
                "message_limit": MAX_MESSAGE_CHARS,
            },
        )

    return _page(request, build)


@router.post("/configs/{ns}/{name}/rollback")
async def rollback(request: Request, ns: str, name: str) -> Response:
    session = _session(request)
    if session is None:
        page = _error_page(Unauthenticated("sign in first; your session has ended"))
        return _render(request, None, page)
    try:
        form = await _read_form(request)
    except ConfigdError as exc:
        return _render(request, session, _error_page(exc))
    return await run_in_threadpool(_rollback, request, session, ns, name, form)


def _rollback(request: Request, session: Session, ns: str, name: str, form: dict[str, str]) -> Response:
    store = _state(request).store
    message = form.get("message", "").strip()
    try:
        validate_name(ns, "namespace")
        validate_name(name, "name")
        try:
            if not _from_our_pages(request):
                raise Forbidden("this form did not come from configd's own pages (Origin check)")
            if not csrf_valid_for(request, form):
                raise Forbidden("this form has expired or was not issued by configd (CSRF check); reload the page")
            session.principal.authorize("editor", ns)
            _state(request).change_requests.direct_write(session.principal, ns)  # ReviewRequired in a reviewed ns
            to_version = _form_int(form, "to_version")
            expected = _form_int(form, "expected_version") if form.get("expected_version") else None
        except (Forbidden, BadRequest) as exc:
            attempt = WriteAttempt("rollback", ns, name, session.principal.name, message)
            code, reason, _ = classify(exc)
            record_rejection(_state(request), attempt, code, reason, f"ui: {exc}")
            raise
        result = store.rollback(
            ns, name, to_version, actor=session.principal.name, message=message, expected_version=expected
        )
    except ConfigdError as exc:
        page = _error_page(exc)
        if isinstance(exc, VersionConflict | ValidationFailed):
            back = f"/ui/configs/{ns}/{name}"
            page = replace(page, values={**page.values, "back": back})
        return _render(request, session, page)
    flag = f"created={result.head.version}" if result.created else "unchanged=1"
    return RedirectResponse(f"/ui/configs/{ns}/{name}?{flag}", status_code=303)


def _form_int(form: dict[str, str], key: str) -> int:
    raw = form.get(key, "")
    if not raw.isdigit() or int(raw) < 1:
        raise BadRequest(f"{key} must be a version number")
    return int(raw)


@router.get("/audit")
def audit_page(request: Request) -> Response:
    def build(session: Session) -> Page:
        store = _state(request).store
        chosen = request.query_params.get("namespace", "")
        limit = min(max(_query_int(request, "limit") or AUDIT_DEFAULT_LIMIT, 1), AUDIT_MAX_LIMIT)
        known = store.audit.namespaces()
        visible = [ns for ns in known if session.principal.covers(ns)]
        if chosen:
            _require_namespace(session, chosen)
            entries = store.audit.list(chosen, limit)
        elif len(visible) == len(known):
            entries = store.audit.list(None, limit)
        else:
            merged: list[AuditRecord] = [e for ns in visible for e in store.audit.list(ns, limit)]
            entries = sorted(merged, key=lambda e: e.id, reverse=True)[:limit]
        return Page(
            "audit.html",
            {
                "title": "Audit log",
                "nav": "audit",
                "entries": entries,
                "namespaces": visible,
                "chosen": chosen,
                "limit": limit,
            },
        )

    return _page(request, build)


@router.get("/static/{filename}")
def static_file(filename: str) -> Response:
    match = _STATIC_NAME.fullmatch(filename)
    path = _STATIC / filename
    if match is None or not path.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(
        path.read_bytes(),
        media_type=_MEDIA_TYPES[match.group(1)],
        headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
    )
