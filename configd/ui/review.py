"""The UI's editing and review pages: edit a config in the browser, publish or propose it, and review change
requests (approve, reject, comment, publish, withdraw).

Same rules as every UI form (:mod:`configd.ui.routes`): a signed-in cookie, the Origin check and the CSRF token
first, then the role, exactly as the API checks them; a refused step writes only its rejection audit entry.
Publishing from the editor is a push with ``expected_version`` = the version the edit started from: a head that
moved meanwhile is shown as a three-way picture (what moved, and your edit against the head), never overwritten.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from configd_core.diff import diff_json
from configd_core.errors import ConfigdError, ErrorDetail, InvalidConfig, NotFound, ValidationFailed, VersionConflict
from configd_core.layout import MAX_CONFIG_BYTES, MAX_MESSAGE_CHARS, validate_name

from ..api.deps import WriteAttempt
from ..api.errors import classify, record_rejection
from ..errors import BadRequest, Forbidden, ReviewRequired, TransitionRefused, Unauthenticated
from ..planning import change_requests as plan
from ..services.change_requests import ChangeRequests
from ._present import change_views, pretty_for_display, side_by_side
from .routes import (
    Page,
    Session,
    _error_page,
    _from_our_pages,
    _page,
    _read_form,
    _render,
    _require_namespace,
    _session,
    _state,
    csrf_valid_for,
)

router = APIRouter(include_in_schema=False)  # included in routes.router, under its /ui prefix

# The editor's form carries the whole document: allow a generous config, well under the API's body limit.
MAX_EDIT_FORM_BYTES = min(MAX_CONFIG_BYTES, 2 * 1024 * 1024)
STEPS = ("approve", "reject", "withdraw", "comment", "publish")


def _reviews(request: Request) -> ChangeRequests:
    return _state(request).change_requests


def _text(data: Any) -> str:
    return pretty_for_display(data)[0] + "\n"


def _parse(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(
            f"the document is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            [ErrorDetail("/", f"line {exc.lineno} column {exc.colno}: {exc.msg}")],
        ) from exc
    if not isinstance(value, dict):
        raise InvalidConfig("a config must be a JSON object")
    return value


def _guarded(request: Request, session: Session, form: dict[str, str], attempt: WriteAttempt) -> None:
    """Origin and CSRF first; a failure is a Forbidden whose rejection is audited in the attempt's namespace."""
    if not _from_our_pages(request):
        raise Forbidden("this form did not come from configd's own pages (Origin check)")
    if not csrf_valid_for(request, form):
        raise Forbidden("this form has expired or was not issued by configd (CSRF check); reload the page")


def _audit_refusal(request: Request, attempt: WriteAttempt, exc: ConfigdError) -> None:
    code, reason, _ = classify(exc)
    if code < 500:
        record_rejection(_state(request), attempt, code, reason, f"ui: {exc}")


# --- the editor -------------------------------------------------------------------------------------------
def _edit_values(
    request: Request, session: Session, ns: str, name: str, text: str, base: int, message: str
) -> dict[str, Any]:
    """Everything the editor page shows for ``text`` edited from ``base``: validation at paths, the diff against
    the head, and — when the head moved past ``base`` — what moved (base → head)."""
    store = _state(request).store
    policy = _reviews(request).policy(ns)
    head = store.head(ns, name)
    values: dict[str, Any] = {
        "title": f"Edit {ns}/{name}",
        "nav": "namespaces",
        "ns": ns,
        "name": name,
        "head": head,
        "base": base,
        "text": text,
        "message": message,
        "message_limit": MAX_MESSAGE_CHARS,
        "policy": policy,
        "reviewed": plan.approvals_required(policy) > 0,
        "may_publish": plan.approvals_required(policy) == 0 or session.principal.role == "admin",
        "checked": False,
        "errors": [],
        "parse_error": "",
        "changes": [],
        "rows": [],
        "moved": None,
        "notice": "",
    }
    try:
        data = _parse(text)
    except ValidationFailed as exc:
        values.update(parse_error=str(exc), errors=exc.errors, checked=True)
        return values
    run = store.dry_run(ns, name, data)
    head_data = store.current_data(head)
    values.update(
        checked=True,
        errors=run.errors,
        changes=change_views(run.changes),
        rows=side_by_side(_text(head_data), _text(data)),
    )
    if base != head.version:
        base_data = store.get(ns, name, base)[1]
        values["moved"] = {
            "changes": change_views(diff_json(base_data, head_data)),
            "rows": side_by_side(_text(base_data), _text(head_data)),
        }
    return values


@router.get("/configs/{ns}/{name}/edit")
def edit_page(request: Request, ns: str, name: str) -> Response:
    def build(session: Session) -> Page:
        _require_namespace(session, ns)
        validate_name(name, "name")
        session.principal.authorize("editor", ns)
        store = _state(request).store
        head = store.head(ns, name)
        values = _edit_values(request, session, ns, name, _text(store.current_data(head)), head.version, "")
        values.update(checked=False, changes=[], rows=[])
        return Page("edit.html", values)

    return _page(request, build)


@router.post("/configs/{ns}/{name}/edit")
async def edit_submit(request: Request, ns: str, name: str) -> Response:
    session = _session(request)
    if session is None:
        return _render(request, None, _error_page(Unauthenticated("sign in first; your session has ended")))
    try:
        form = await _read_form(request, MAX_EDIT_FORM_BYTES)
    except ConfigdError as exc:
        return _render(request, session, _error_page(exc))
    return await run_in_threadpool(_edit, request, session, ns, name, form)


def _edit(request: Request, session: Session, ns: str, name: str, form: dict[str, str]) -> Response:
    intent = form.get("intent", "check")
    text = form.get("document", "")
    message = form.get("message", "").strip()
    action = {"publish": "push", "propose": "change-request.propose"}.get(intent)
    try:
        validate_name(ns, "namespace")
        validate_name(name, "name")
        attempt = WriteAttempt(action or "push", ns, name, session.principal.name, message)
        base_raw = form.get("base_version", "")
        if not base_raw.isdigit():
            raise BadRequest("base_version must be a version number")
        base = int(base_raw)
        if action is None:  # a check writes nothing: only the role to read is needed
            _require_namespace(session, ns)
            return _render(
                request, session, Page("edit.html", _edit_values(request, session, ns, name, text, base, message))
            )
        try:
            _guarded(request, session, form, attempt)
            session.principal.authorize("editor", ns)
            data = _parse(text)
            if intent == "propose":
                record = _reviews(request).propose(
                    ns, name, data, principal=session.principal, message=message, base_version=base
                )
                return RedirectResponse(f"/ui/change-requests/{record.id}?proposed=1", status_code=303)
            emergency = _reviews(request).direct_write(session.principal, ns)
            result = _state(request).store.push(
                ns,
                name,
                data,
                actor=session.principal.name,
                message=message,
                expected_version=base,
                audit_action=emergency,
            )
        except ConfigdError as exc:
            _audit_refusal(request, attempt, exc)
            raise
    except (ValidationFailed, VersionConflict, ReviewRequired, InvalidConfig, TransitionRefused) as exc:
        if isinstance(exc, VersionConflict | TransitionRefused):
            notice = f"Not {'proposed' if intent == 'propose' else 'published'}: {exc}"
        elif isinstance(exc, ReviewRequired):
            notice = str(exc)
        else:
            notice = "Not published: fix the errors below." if intent == "publish" else f"Not proposed: {exc}"
        try:
            values = _edit_values(request, session, ns, name, text, int(form.get("base_version") or 0), message)
        except ConfigdError as again:
            return _render(request, session, _error_page(again))
        values["notice"] = notice
        status = 409 if isinstance(exc, VersionConflict | TransitionRefused) else 422
        status = 403 if isinstance(exc, ReviewRequired) else status
        return _render(request, session, Page("edit.html", values, status))
    except ConfigdError as exc:
        return _render(request, session, _error_page(exc))
    flag = f"published={result.head.version}" if result.created else "unchanged=1"
    return RedirectResponse(f"/ui/configs/{ns}/{name}?{flag}", status_code=303)


# --- change requests --------------------------------------------------------------------------------------
@router.get("/change-requests")
def requests_page(request: Request) -> Response:
    def build(session: Session) -> Page:
        chosen = request.query_params.get("state", "")
        namespace = request.query_params.get("namespace", "") or None
        mine = request.query_params.get("mine") == "1"
        if namespace:
            _require_namespace(session, namespace)
        found = _reviews(request).find_all(
            namespace=namespace, state=chosen or None, author=session.principal.name if mine else None
        )
        rows = [r for r in found if session.principal.covers(r.namespace)]
        return Page(
            "change_requests.html",
            {"title": "Change requests", "nav": "reviews", "rows": rows, "chosen": chosen, "mine": mine},
        )

    return _page(request, build)


@router.get("/change-requests/{request_id}")
def review_page(request: Request, request_id: int) -> Response:
    def build(session: Session) -> Page:
        reviews = _reviews(request)
        record = reviews.get(request_id)
        _require_namespace(session, record.namespace)
        review = reviews.review(request_id)
        principal = session.principal
        policy = review.policy
        open_ = record.state in ("open", "approved")
        can = {
            "approve": open_
            and principal.name != record.author
            and plan.may_approve(policy, principal)
            and all(a.actor != principal.name for a in record.approvals),
            "reject": record.state in ("open", "approved", "conflicted")
            and principal.name != record.author
            and (plan.may_approve(policy, principal) or principal.role == "admin"),
            "withdraw": record.state in ("open", "approved", "conflicted")
            and (principal.name == record.author or principal.role == "admin"),
            "publish": record.state == "approved" and session.can_write(record.namespace),
            "comment": True,
        }
        base_text = _text(review.base_data) if review.base_data is not None else ""
        moved_rows = []
        if review.moved_changes and record.state in ("open", "approved", "conflicted"):
            head_data = _state(request).store.get(record.namespace, record.name, review.head_version)[1]
            moved_rows = side_by_side(base_text, _text(head_data))
        return Page(
            "review.html",
            {
                "title": f"Change request {record.id}",
                "nav": "reviews",
                "cr": record,
                "review": review,
                "required": plan.approvals_required(policy),
                "rows": side_by_side(base_text, _text(record.data)),
                "changes": change_views(review.changes),
                "moved_changes": change_views(review.moved_changes),
                "moved_rows": moved_rows,
                "can": can,
                "message_limit": MAX_MESSAGE_CHARS,
                "proposed": request.query_params.get("proposed") == "1",
                "done": request.query_params.get("done", ""),
            },
        )

    return _page(request, build)


@router.post("/change-requests/{request_id}/{step}")
async def review_step(request: Request, request_id: int, step: str) -> Response:
    session = _session(request)
    if session is None:
        return _render(request, None, _error_page(Unauthenticated("sign in first; your session has ended")))
    try:
        if step not in STEPS:
            raise NotFound(f"no such step {step!r}")
        form = await _read_form(request)
    except ConfigdError as exc:
        return _render(request, session, _error_page(exc))
    return await run_in_threadpool(_review_step, request, session, request_id, step, form)


def _review_step(request: Request, session: Session, request_id: int, step: str, form: dict[str, str]) -> Response:
    reviews = _reviews(request)
    message = form.get("message", "").strip()
    back = f"/ui/change-requests/{request_id}"
    try:
        record = reviews.get(request_id)
        attempt = WriteAttempt(plan.action(step), record.namespace, record.name, session.principal.name, message)
        try:
            _guarded(request, session, form, attempt)
            principal = session.principal
            if step == "approve":
                reviews.approve(request_id, principal, message)
            elif step == "reject":
                reviews.reject(request_id, principal, message)
            elif step == "withdraw":
                reviews.withdraw(request_id, principal, message)
            elif step == "comment":
                reviews.comment(request_id, principal, message)
            else:
                reviews.publish(request_id, principal)
        except ConfigdError as exc:
            _audit_refusal(request, attempt, exc)
            raise
    except ConfigdError as exc:
        page = _error_page(exc)
        return _render(request, session, Page(page.template, {**page.values, "back": back}, page.status))
    return RedirectResponse(f"{back}?done={step}", status_code=303)
