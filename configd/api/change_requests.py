"""``/api/v1/change-requests`` and ``/api/v1/policies``: propose, review, approve, reject, withdraw, comment, publish.

Every step is audited as ``change-request.<step>``; a refused step writes only its rejection audit entry (the
request's namespace is known before anything can fail: :class:`ReviewStep` reads it first).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from configd_core.layout import MAX_MESSAGE_CHARS, NAME_MAX_LENGTH, NAME_PATTERN, validate_name
from configd_core.records import ChangeRequestRecord, PolicyRecord, ReviewEvent, RolloutPlan

from ..auth import Principal
from ..services.change_requests import ChangeRequests, Review
from .deps import (
    Authorize,
    Credentials,
    Namespace,
    NamespaceFilter,
    Reader,
    State,
    WriteAttempt,
    body_openapi,
    get_state,
    json_body,
    optional_json_body,
)
from .errors import ERROR_RESPONSES
from .models import ChangeItem, ErrorItem, ExpectedVersion

router = APIRouter(prefix="/api/v1", tags=["change requests"])

Message = Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)]
State_ = Literal["open", "approved", "published", "rejected", "withdrawn", "conflicted"]


# --- bodies and views --------------------------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=NAME_MAX_LENGTH)]
RequestId = Annotated[int, Path(ge=1, description="the change request's id")]


class ProposeBody(_Body):
    namespace: Name
    name: Name
    data: Any = Field(description="the proposed config document (a JSON object)", json_schema_extra={"type": "object"})
    message: Message = ""
    base_version: ExpectedVersion | None = Field(
        default=None, description="the head the edit started from (default: the head now); 0 = a new config"
    )
    rollout: RolloutPlan | None = Field(
        default=None, description="publishing starts this progressive rollout instead of publishing to everyone"
    )


class StepBody(_Body):
    message: Message = ""


class CommentBody(_Body):
    message: Annotated[str, Field(min_length=1, max_length=MAX_MESSAGE_CHARS)]


class PolicyBody(_Body):
    approvals_required: Annotated[ExpectedVersion, Field(le=2)]
    approvers: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None,
        min_length=1,
        max_length=50,
        description="role names (editor, admin: that role or higher) and token names; default editor",
    )


class EventView(BaseModel):
    actor: str
    at: str
    message: str

    @classmethod
    def of(cls, event: ReviewEvent) -> EventView:
        return cls(actor=event.actor, at=event.at, message=event.message)


class PolicyView(BaseModel):
    namespace: str
    approvals_required: int
    approvers: list[str]
    updated_by: str | None = None
    updated_at: str | None = None

    @classmethod
    def of(cls, namespace: str, policy: PolicyRecord | None) -> PolicyView:
        if policy is None:
            return cls(namespace=namespace, approvals_required=0, approvers=["editor"])
        return cls(
            namespace=namespace,
            approvals_required=policy.approvals_required,
            approvers=list(policy.approvers),
            updated_by=policy.updated_by,
            updated_at=policy.updated_at,
        )


class ChangeRequestSummary(BaseModel):
    id: int
    namespace: str
    name: str
    state: State_
    base_version: int
    author: str
    message: str
    created_at: str
    updated_at: str
    approvals: list[EventView]
    rejection: EventView | None
    comments: list[EventView]
    published_version: int | None
    published_by: str | None
    conflict_head: int | None
    publish_target: str
    rollout: RolloutPlan | None = None

    @classmethod
    def of(cls, record: ChangeRequestRecord) -> ChangeRequestSummary:
        return cls(
            id=record.id,
            namespace=record.namespace,
            name=record.name,
            state=record.state,
            base_version=record.base_version,
            author=record.author,
            message=record.message,
            created_at=record.created_at,
            updated_at=record.updated_at,
            approvals=[EventView.of(e) for e in record.approvals],
            rejection=EventView.of(record.rejection) if record.rejection else None,
            comments=[EventView.of(e) for e in record.comments],
            published_version=record.published_version,
            published_by=record.published_by,
            conflict_head=record.conflict_head,
            publish_target=record.publish_target,
            rollout=record.rollout,
        )


class ChangeRequestView(ChangeRequestSummary):
    data: dict[str, Any]
    approvals_required: int
    head_version: int = Field(description="the config's head now (0: none)")
    valid: bool = Field(description="the proposed document against the schema as it is now")
    errors: list[ErrorItem]
    changes: list[ChangeItem] = Field(description="base → proposed")
    unified: str
    moved_changes: list[ChangeItem] = Field(description="base → head: what moved since the base (empty if nothing)")
    moved_unified: str

    @classmethod
    def of_review(cls, review: Review) -> ChangeRequestView:
        summary = ChangeRequestSummary.of(review.record).model_dump()
        return cls(
            **summary,
            data=review.record.data,
            approvals_required=review.policy.approvals_required if review.policy else 0,
            head_version=review.head_version,
            valid=review.valid,
            errors=[ErrorItem.of(e) for e in review.errors],
            changes=[ChangeItem.of(c) for c in review.changes],
            unified=review.unified,
            moved_changes=[ChangeItem.of(c) for c in review.moved_changes],
            moved_unified=review.moved_unified,
        )


class ChangeRequestList(BaseModel):
    change_requests: list[ChangeRequestSummary]


# --- dependencies ------------------------------------------------------------------------------------------
def reviews(request: Request) -> ChangeRequests:
    return get_state(request).change_requests


Reviews = Annotated[ChangeRequests, Depends(reviews)]


class ReviewStep:
    """Authenticate, then name the request's namespace and config in the write attempt (so a refusal is audited
    in that namespace) before any check can fail."""

    def __init__(self, step: str) -> None:
        self.action = f"change-request.{step}"

    async def __call__(self, request: Request, credentials: Credentials) -> Principal:
        state = get_state(request)
        principal = state.tokens.authenticate(credentials.credentials if credentials else None)
        raw = request.path_params.get("request_id", "")
        if isinstance(raw, str) and raw.isdigit():
            found = state.change_requests.find(int(raw))
            if found is not None:
                request.state.attempt = WriteAttempt(self.action, found.namespace, found.name, principal.name)
        return principal


Approver = Annotated[Principal, Depends(ReviewStep("approve"))]
Rejecter = Annotated[Principal, Depends(ReviewStep("reject"))]
Withdrawer = Annotated[Principal, Depends(ReviewStep("withdraw"))]
Commenter = Annotated[Principal, Depends(ReviewStep("comment"))]
Publisher = Annotated[Principal, Depends(ReviewStep("publish"))]
Proposer = Annotated[Principal, Depends(Authorize("reader"))]
PolicyAdmin = Annotated[Principal, Depends(Authorize("admin", action="policy.set"))]


StepDoc = Annotated[StepBody, Depends(optional_json_body(StepBody))]
ProposeDoc = Annotated[ProposeBody, Depends(json_body(ProposeBody))]
PolicyDoc = Annotated[PolicyBody, Depends(json_body(PolicyBody))]
CommentDoc = Annotated[CommentBody, Depends(json_body(CommentBody))]


# --- routes ------------------------------------------------------------------------------------------------
@router.get("/policies/{ns}", response_model=PolicyView, responses=ERROR_RESPONSES, summary="A namespace's policy")
def get_policy(ns: Namespace, _: Reader, changes: Reviews) -> PolicyView:
    return PolicyView.of(ns, changes.policy(ns))


@router.put(
    "/policies/{ns}",
    response_model=PolicyView,
    responses=ERROR_RESPONSES,
    openapi_extra=body_openapi(PolicyBody),
    summary="Set a namespace's review policy (admin)",
)
def set_policy(ns: Namespace, principal: PolicyAdmin, body: PolicyDoc, changes: Reviews) -> PolicyView:
    """``approvals_required`` 1 or 2 turns every push into a change request (admins may still push: an emergency
    push, audited as ``push.emergency``); 0 publishes directly, as without a policy."""
    record = changes.set_policy(ns, body.approvals_required, body.approvers, actor=principal.name)
    return PolicyView.of(ns, record)


@router.get("/change-requests", response_model=ChangeRequestList, responses=ERROR_RESPONSES, summary="Change requests")
def list_change_requests(
    principal: Reader,
    changes: Reviews,
    namespace: NamespaceFilter = None,
    state: Annotated[State_ | None, Query(description="only this state")] = None,
    author: Annotated[str | None, Query(description="only this author (token name)")] = None,
    mine: Annotated[bool, Query(description="only the caller's own")] = False,
) -> ChangeRequestList:
    """Newest first, only in namespaces the token can read."""
    found = changes.find_all(namespace=namespace or None, state=state, author=principal.name if mine else author)
    visible = [r for r in found if principal.covers(r.namespace)]
    return ChangeRequestList(change_requests=[ChangeRequestSummary.of(r) for r in visible])


@router.post(
    "/change-requests",
    response_model=ChangeRequestView,
    status_code=status.HTTP_201_CREATED,
    responses=ERROR_RESPONSES,
    openapi_extra=body_openapi(ProposeBody),
    summary="Propose a change (editor)",
)
def propose(principal: Proposer, body: ProposeDoc, changes: Reviews, request: Request) -> ChangeRequestView:
    """Validated against the current schema; ``base_version`` must be the head (409 otherwise). 201 with the
    request: ``open``, or ``approved`` at once when the namespace requires no approval."""
    namespace = validate_name(body.namespace, "namespace")
    name = validate_name(body.name, "name")
    request.state.attempt = WriteAttempt("change-request.propose", namespace, name, principal.name, body.message)
    record = changes.propose(
        namespace,
        name,
        body.data,
        principal=principal,
        message=body.message,
        base_version=body.base_version,
        rollout=body.rollout,
    )
    return ChangeRequestView.of_review(changes.review(record.id))


@router.get(
    "/change-requests/{request_id}",
    response_model=ChangeRequestView,
    responses=ERROR_RESPONSES,
    summary="One change request with its diff and validation",
)
def get_change_request(request_id: RequestId, principal: Reader, changes: Reviews) -> ChangeRequestView:
    record = changes.get(request_id)
    principal.authorize("reader", record.namespace)
    return ChangeRequestView.of_review(changes.review(request_id))


def _view(changes: ChangeRequests, record: ChangeRequestRecord) -> ChangeRequestView:
    return ChangeRequestView.of_review(changes.review(record.id))


@router.post(
    "/change-requests/{request_id}/approve",
    response_model=ChangeRequestView,
    openapi_extra=body_openapi(StepBody, required=False),
    responses=ERROR_RESPONSES,
    summary="Approve (not your own)",
)
def approve(request_id: RequestId, principal: Approver, body: StepDoc, changes: Reviews) -> ChangeRequestView:
    return _view(changes, changes.approve(request_id, principal, body.message))


@router.post(
    "/change-requests/{request_id}/reject",
    response_model=ChangeRequestView,
    openapi_extra=body_openapi(StepBody, required=False),
    responses=ERROR_RESPONSES,
    summary="Reject",
)
def reject(request_id: RequestId, principal: Rejecter, body: StepDoc, changes: Reviews) -> ChangeRequestView:
    return _view(changes, changes.reject(request_id, principal, body.message))


@router.post(
    "/change-requests/{request_id}/withdraw",
    response_model=ChangeRequestView,
    openapi_extra=body_openapi(StepBody, required=False),
    responses=ERROR_RESPONSES,
    summary="Withdraw (the author)",
)
def withdraw(request_id: RequestId, principal: Withdrawer, body: StepDoc, changes: Reviews) -> ChangeRequestView:
    return _view(changes, changes.withdraw(request_id, principal, body.message))


@router.post(
    "/change-requests/{request_id}/comments",
    response_model=ChangeRequestView,
    openapi_extra=body_openapi(CommentBody),
    responses=ERROR_RESPONSES,
    summary="Comment",
)
def comment(request_id: RequestId, principal: Commenter, body: CommentDoc, changes: Reviews) -> ChangeRequestView:
    return _view(changes, changes.comment(request_id, principal, body.message))


@router.post(
    "/change-requests/{request_id}/publish",
    response_model=ChangeRequestView,
    responses=ERROR_RESPONSES,
    summary="Publish an approved request (CAS from its base)",
)
def publish(request_id: RequestId, principal: Publisher, state: State, changes: Reviews) -> ChangeRequestView:
    """201-like semantics in a 200: the request is ``published`` with ``published_version``. 409 when the head
    moved since the base (the request is then ``conflicted``) or the request is not approved; 422 when the
    document fails the schema as it is now (nothing written)."""
    record = changes.publish(request_id, principal)
    state.metrics.write("push", "created")
    return _view(changes, record)
