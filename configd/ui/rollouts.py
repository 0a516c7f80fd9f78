"""The UI's rollout steps: Promote, Pause, Resume and Abort on the config page (its rollout section is built by
``routes._rollout_values`` and ``templates/_rollout.html``).

Same rules as every UI form (:mod:`configd.ui.routes`): a signed-in cookie, the Origin check and the CSRF token
first, then the editor role, exactly as the API checks them; the move itself is the service's
(:meth:`configd.services.rollouts.Rollouts.move`, audited as ``rollout.<step>``), and a refused step writes only its
rejection audit entry. Promote and Abort are two-step in the page (open the panel, then confirm).
"""

from __future__ import annotations

from typing import get_args

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from configd_core.errors import ConfigdError, NotFound
from configd_core.layout import validate_name

from ..api.deps import WriteAttempt
from ..api.errors import classify, record_rejection
from ..errors import Forbidden, Unauthenticated
from ..planning.rollouts import Action
from .routes import Page, Session, _error_page, _from_our_pages, _read_form, _render, _session, _state, csrf_valid_for

router = APIRouter(include_in_schema=False)  # included in routes.router, under its /ui prefix

STEPS: tuple[Action, ...] = get_args(Action)
# The flash (routes.ROLLOUT_FLASHES) for each step; a promote at the last step completes the rollout instead.
DONE = {"promote": "promoted", "pause": "paused", "resume": "resumed", "abort": "aborted"}


@router.post("/configs/{ns}/{name}/rollout/{step}")
async def rollout_step(request: Request, ns: str, name: str, step: str) -> Response:
    session = _session(request)
    if session is None:
        return _render(request, None, _error_page(Unauthenticated("sign in first; your session has ended")))
    try:
        if step not in STEPS:
            raise NotFound(f"no such rollout step {step!r}")
        form = await _read_form(request)
    except ConfigdError as exc:
        return _render(request, session, _error_page(exc))
    return await run_in_threadpool(_rollout_step, request, session, ns, name, step, form)


def _rollout_step(request: Request, session: Session, ns: str, name: str, step: str, form: dict[str, str]) -> Response:
    message = form.get("message", "").strip()
    back = f"/ui/configs/{ns}/{name}"
    action = next(a for a in STEPS if a == step)
    try:
        validate_name(ns, "namespace")
        validate_name(name, "name")
        attempt = WriteAttempt(f"rollout.{step}", ns, name, session.principal.name, message)
        try:
            if not _from_our_pages(request):
                raise Forbidden("this form did not come from configd's own pages (Origin check)")
            if not csrf_valid_for(request, form):
                raise Forbidden("this form has expired or was not issued by configd (CSRF check); reload the page")
            session.principal.authorize("editor", ns)
            status = _state(request).rollouts.move(ns, name, action, actor=session.principal.name, message=message)
        except ConfigdError as exc:
            code, reason, _ = classify(exc)
            if code < 500:
                record_rejection(_state(request), attempt, code, reason, f"ui: {exc}")
            raise
    except ConfigdError as exc:
        page = _error_page(exc)
        return _render(request, session, Page(page.template, {**page.values, "back": back}, page.status))
    done = "completed" if status.rollout.state == "completed" else DONE[step]
    return RedirectResponse(f"{back}?rollout={done}", status_code=303)
