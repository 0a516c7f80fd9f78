"""``/api/v1/configs/{ns}/{name}/rollouts``: start a progressive rollout, follow it, promote, pause, resume, abort.

Every move is audited as ``rollout.<move>`` (the elected driver's own moves too, as ``configd-rollouts``); a refused
move writes only its rejection audit entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from configd_core.layout import MAX_MESSAGE_CHARS
from configd_core.records import JSONInteger, JSONNumber, RolloutCohort, RolloutFailure, RolloutPlan, RolloutRecord

from ..auth import Principal
from ..services.rollouts import Rollouts, RolloutStatus
from .deps import Authorize, ConfigName, Namespace, Reader, body_openapi, get_state, json_body, optional_json_body
from .errors import ERROR_RESPONSES
from .models import VersionNumber

router = APIRouter(prefix="/api/v1/configs", tags=["rollouts"])

Message = Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)]


class StartBody(BaseModel):
    """A rollout: the candidate (``data`` or an existing ``version``) and how it goes."""

    model_config = ConfigDict(extra="forbid")

    data: dict[str, Any] | None = Field(default=None, description="the candidate document")
    version: VersionNumber | None = Field(default=None, description="an existing version to roll out")
    cohort: RolloutCohort = Field(default_factory=RolloutCohort)
    steps: list[Annotated[JSONNumber, Field(ge=0, le=100)]] = Field(
        default_factory=lambda: [100.0], min_length=1, max_length=20, description="percentages, never shrinking"
    )
    bake_seconds: Annotated[JSONNumber, Field(ge=0, le=7 * 86400)] = 300.0
    auto: StrictBool = Field(default=True, description="advance after each bake by itself (false: wait for promote)")
    max_failures: Annotated[JSONInteger, Field(ge=1)] | None = None
    max_failure_ratio: Annotated[JSONNumber, Field(gt=0, le=1)] | None = None
    message: Message = ""

    @model_validator(mode="after")
    def _one_candidate(self) -> StartBody:
        if (self.data is None) == (self.version is None):
            raise ValueError("give the candidate as data or as an existing version (exactly one of them)")
        self.plan()  # the steps' order is the plan's rule: checked here, so a bad plan is a 422 like the rest
        return self

    def plan(self) -> RolloutPlan:
        return RolloutPlan(
            cohort=self.cohort,
            steps=self.steps,
            bake_seconds=self.bake_seconds,
            auto=self.auto,
            max_failures=self.max_failures,
            max_failure_ratio=self.max_failure_ratio,
        )


class StepBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: Message = ""


class InstanceCounts(BaseModel):
    total: int = Field(description="registered instances watching the config")
    members: int = Field(description="instances in the cohort now")
    on_base: int = Field(description="instances running the head (H)")
    on_candidate: int = Field(description="instances running the candidate (C)")
    failed: int = Field(description="instances that reported a failure on C")


class InstanceView(BaseModel):
    instance: str
    instance_key: str
    application: str
    host: str
    labels: dict[str, str]
    member: bool
    version: int
    failures: list[RolloutFailure]


class RolloutStatusView(BaseModel):
    rollout: RolloutRecord
    percent: float = Field(description="the current step's percentage")
    next_step_at: str | None = Field(description="when the current step's bake ends (null: paused or manual)")
    instances: InstanceCounts
    failures: list[RolloutFailure]
    reporting: list[InstanceView]

    @classmethod
    def of(cls, status: RolloutStatus) -> RolloutStatusView:
        counts = status.counts
        return cls(
            rollout=status.rollout,
            percent=status.rollout.percent,
            next_step_at=status.next_step_at.isoformat() if status.next_step_at else None,
            instances=InstanceCounts(
                total=counts.total,
                members=counts.members,
                on_base=counts.on_base,
                on_candidate=counts.on_candidate,
                failed=len(counts.failing),
            ),
            failures=list(counts.failures),
            reporting=[
                InstanceView(
                    instance=r.instance,
                    instance_key=r.instance_key,
                    application=r.application,
                    host=r.host,
                    labels=r.labels,
                    member=r.member,
                    version=r.version,
                    failures=list(r.failures),
                )
                for r in counts.reporting
            ],
        )


class RolloutHistoryView(BaseModel):
    items: list[RolloutRecord] = Field(description="finished rollouts, newest first")


def _rollouts(request: Request) -> Rollouts:
    return get_state(request).rollouts


Service = Annotated[Rollouts, Depends(_rollouts)]
Starter = Annotated[Principal, Depends(Authorize("editor", action="rollout.start"))]
StartDoc = Annotated[StartBody, Depends(json_body(StartBody))]


StepDoc = Annotated[StepBody, Depends(optional_json_body(StepBody))]


@router.post(
    "/{ns}/{name}/rollouts",
    response_model=RolloutStatusView,
    status_code=status.HTTP_201_CREATED,
    responses=ERROR_RESPONSES,
    openapi_extra=body_openapi(StartBody),
    summary="Start a progressive rollout (editor)",
)
def start_rollout(
    ns: Namespace, name: ConfigName, principal: Starter, body: StartDoc, rollouts: Service, request: Request
) -> RolloutStatusView:
    """The candidate is validated like a push and stored as the next version, which is not the head until the
    rollout completes. 409 (``RolloutActive``) while another rollout of the config is active. In a namespace with
    a review policy, a rollout starts from a change request (admins may start one directly, audited as such)."""
    get_state(request).change_requests.direct_write(principal, ns)
    started = rollouts.start(
        ns, name, body.plan(), actor=principal.name, data=body.data, version=body.version, message=body.message
    )
    return RolloutStatusView.of(started)


@router.get(
    "/{ns}/{name}/rollouts/current",
    response_model=RolloutStatusView,
    responses=ERROR_RESPONSES,
    summary="The active rollout: state, step, instances on H and C, failures",
)
def current_rollout(ns: Namespace, name: ConfigName, _: Reader, rollouts: Service) -> RolloutStatusView:
    return RolloutStatusView.of(rollouts.current(ns, name))


@router.get(
    "/{ns}/{name}/rollouts",
    response_model=RolloutHistoryView,
    responses=ERROR_RESPONSES,
    summary="Finished rollouts, newest first",
)
def rollout_history(
    ns: Namespace,
    name: ConfigName,
    _: Reader,
    rollouts: Service,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> RolloutHistoryView:
    return RolloutHistoryView(items=rollouts.history(ns, name, limit=limit))


Promoter = Annotated[Principal, Depends(Authorize("editor", action="rollout.promote"))]
Pauser = Annotated[Principal, Depends(Authorize("editor", action="rollout.pause"))]
Resumer = Annotated[Principal, Depends(Authorize("editor", action="rollout.resume"))]
Aborter = Annotated[Principal, Depends(Authorize("editor", action="rollout.abort"))]


Route = Callable[..., RolloutStatusView]


def _move_route(move: str, summary: str) -> Callable[[Route], Route]:
    return router.post(
        f"/{{ns}}/{{name}}/rollouts/current/{move}",
        response_model=RolloutStatusView,
        responses=ERROR_RESPONSES,
        openapi_extra=body_openapi(StepBody, required=False),
        summary=summary,
    )


@_move_route("promote", "Promote: the next step now, or complete at the last (editor)")
def promote_rollout(
    ns: Namespace, name: ConfigName, principal: Promoter, body: StepDoc, rollouts: Service
) -> RolloutStatusView:
    """Completing makes the candidate the head (a history entry that names the rollout)."""
    return RolloutStatusView.of(rollouts.move(ns, name, "promote", actor=principal.name, message=body.message))


@_move_route("pause", "Pause: no automatic step; failures still abort (editor)")
def pause_rollout(
    ns: Namespace, name: ConfigName, principal: Pauser, body: StepDoc, rollouts: Service
) -> RolloutStatusView:
    return RolloutStatusView.of(rollouts.move(ns, name, "pause", actor=principal.name, message=body.message))


@_move_route("resume", "Resume a paused rollout; its step bakes again from now (editor)")
def resume_rollout(
    ns: Namespace, name: ConfigName, principal: Resumer, body: StepDoc, rollouts: Service
) -> RolloutStatusView:
    return RolloutStatusView.of(rollouts.move(ns, name, "resume", actor=principal.name, message=body.message))


@_move_route("abort", "Abort: every instance returns to the head (editor)")
def abort_rollout(
    ns: Namespace, name: ConfigName, principal: Aborter, body: StepDoc, rollouts: Service
) -> RolloutStatusView:
    """The candidate's version record is removed (the next push takes its number); the history keeps the rollout."""
    return RolloutStatusView.of(rollouts.move(ns, name, "abort", actor=principal.name, message=body.message))
