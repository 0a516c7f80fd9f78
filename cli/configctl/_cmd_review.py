"""Review commands: ``policy set|get``, ``propose``, ``requests``, ``review``, ``approve``, ``reject``, ``publish``,
``withdraw`` and ``comment`` over ``/api/v1/policies`` and ``/api/v1/change-requests``.

Exit codes as everywhere (docs/cli.md): a refused step is 6 (403: not an approver, your own request, a reviewed
namespace), 3 (409: wrong state, stale base, a moved head), 1 (422: the document fails its schema), 4 (no such
request).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ._cmd_rollout import (
    BakeOpt,
    InstancesOpt,
    LabelsOpt,
    ManualOpt,
    MaxFailureRatioOpt,
    MaxFailuresOpt,
    StepsOpt,
    cohort_text,
    plan_from_options,
    steps_text,
    threshold_text,
)
from ._render import short, when
from ._session import JsonOpt, RefArg, Session, read_document, session, split_ref

review_app = typer.Typer()
policy_app = typer.Typer(no_args_is_help=True)

API = "/api/v1"
IdArg = Annotated[int, typer.Argument(metavar="ID", min=1, help="The change request's id.")]
MessageOpt = Annotated[str, typer.Option("--message", "-m", help="A note, recorded with the step and in the audit.")]


def _segment(value: str) -> str:
    """A namespace as a path segment (the server validates it; a bad one is its 422, exit 2)."""
    return value.replace("/", "%2F")


@policy_app.command("set")
def policy_set(
    ctx: typer.Context,
    namespace: Annotated[str, typer.Argument(metavar="NS", help="The namespace.")],
    approvals: Annotated[
        int, typer.Option("--approvals", min=0, max=2, help="Approvals every change needs (0 = publish directly).")
    ],
    approver: Annotated[
        list[str] | None,
        typer.Option("--approver", help="Who may approve: a role (editor, admin) or a token name; repeatable."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Set NS's review policy (admin): with --approvals 1 or 2, pushes become change requests."""
    state = session(ctx, as_json)
    body: dict[str, Any] = {"approvals_required": approvals}
    if approver:
        body["approvers"] = approver
    result = state.api().request("PUT", f"{API}/policies/{_segment(namespace)}", json=body)
    _show_policy(state, result)


@policy_app.command("get")
def policy_get(
    ctx: typer.Context,
    namespace: Annotated[str, typer.Argument(metavar="NS", help="The namespace.")],
    as_json: JsonOpt = False,
) -> None:
    """Print NS's review policy."""
    state = session(ctx, as_json)
    _show_policy(state, state.api().request("GET", f"{API}/policies/{_segment(namespace)}"))


def _show_policy(state: Session, policy: dict[str, Any]) -> None:
    if state.output.json_output:
        state.output.emit_json(policy)
        return
    needed = int(policy["approvals_required"])
    approvers = ", ".join(policy.get("approvers") or [])
    if needed:
        state.output.line(f"{policy['namespace']}: {needed} approval(s) required; approvers: {approvers}")
    else:
        state.output.line(f"{policy['namespace']}: no review required (pushes publish directly)")


@review_app.command()
def propose(
    ctx: typer.Context,
    ref: RefArg,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The proposed JSON document, or - for stdin.")],
    message: MessageOpt = "",
    base: Annotated[
        int | None, typer.Option("--base", min=0, help="The version your edit started from (default: the head).")
    ] = None,
    rollout: Annotated[
        bool,
        typer.Option("--rollout", help="Publishing starts a rollout (--steps, --bake, --labels, …) instead of a push."),
    ] = False,
    steps: StepsOpt = "100",
    bake: BakeOpt = "5m",
    labels: LabelsOpt = None,
    instances: InstancesOpt = None,
    max_failures: MaxFailuresOpt = None,
    max_failure_ratio: MaxFailureRatioOpt = None,
    manual: ManualOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Propose FILE as the next version of NS/NAME; prints the change request's id. With --rollout, publishing it
    starts a rollout by the plan given (the options of `configctl rollout start`)."""
    state = session(ctx, as_json)
    namespace, name = split_ref(ref)
    data = read_document(str(file))
    body: dict[str, Any] = {"namespace": namespace, "name": name, "data": data, "message": message}
    if base is not None:
        body["base_version"] = base
    if rollout:
        plan = plan_from_options(steps, bake, labels, instances, max_failures, max_failure_ratio, manual)
        body["rollout"] = plan.model_dump(mode="json")
    result = state.api().request("POST", f"{API}/change-requests", json=body)
    if state.output.json_output:
        state.output.emit_json({"id": result["id"], "state": result["state"], "base_version": result["base_version"]})
        return
    state.output.line(str(result["id"]))
    state.output.note(
        f"change request {result['id']} ({result['state']}) for {ref} from v{result['base_version']}: "
        f"{len(result.get('changes') or [])} changed path(s)"
    )


@review_app.command()
def requests(
    ctx: typer.Context,
    mine: Annotated[bool, typer.Option("--mine", help="Only the requests you proposed.")] = False,
    namespace: Annotated[str | None, typer.Option("--namespace", "-n", help="Only this namespace.")] = None,
    state_filter: Annotated[
        str | None,
        typer.Option("--state", help="open, approved, published, rejected, withdrawn or conflicted."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List change requests, newest first."""
    state = session(ctx, as_json)
    params: dict[str, str | int | bool] = {"mine": mine}
    if namespace:
        params["namespace"] = namespace
    if state_filter:
        params["state"] = state_filter
    found = state.api().request("GET", f"{API}/change-requests", params=params)["change_requests"]
    if state.output.json_output:
        state.output.emit_json(found)
        return
    state.output.table(
        None,
        ["ID", "CONFIG", "STATE", "BASE", "AUTHOR", "APPROVALS", "UPDATED", "MESSAGE"],
        [
            [
                r["id"],
                f"{r['namespace']}/{r['name']}",
                r["state"],
                f"v{r['base_version']}",
                r["author"],
                len(r["approvals"]),
                when(r["updated_at"]),
                short(r["message"], 40),
            ]
            for r in found
        ],
    )


@review_app.command()
def review(ctx: typer.Context, request_id: IdArg, as_json: JsonOpt = False) -> None:
    """Show change request ID: state, approvals, validation and the diff base → proposed (and what moved)."""
    state = session(ctx, as_json)
    cr = state.api().request("GET", f"{API}/change-requests/{request_id}")
    if state.output.json_output:
        state.output.emit_json(cr)
        return
    out = state.output
    out.line(f"change request {cr['id']}: {cr['namespace']}/{cr['name']} — {cr['state']}", style="bold")
    out.line(
        f"proposed by {cr['author']} at {when(cr['created_at'])} "
        f"from v{cr['base_version']} (head v{cr['head_version']})"
    )
    if cr.get("message"):
        out.line(f"message: {cr['message']}")
    approvers = ", ".join(a["actor"] for a in cr["approvals"]) or "none"
    out.line(f"approvals: {len(cr['approvals'])} of {cr['approvals_required']} ({approvers})")
    if cr.get("rejection"):
        out.line(f"rejected by {cr['rejection']['actor']}: {cr['rejection']['message']}")
    plan = cr.get("rollout")
    if cr.get("publish_target") == "rollout" and plan:
        out.line(f"publishing starts a rollout: {cohort_text(plan)}; {steps_text(plan)}; {threshold_text(plan)}")
    if cr.get("published_version"):
        out.line(f"published as v{cr['published_version']} by {cr['published_by']}")
    if cr["valid"]:
        out.line("validation: valid against the current schema", style="green")
    else:
        out.line("validation: " + "; ".join(f"{e['path']}: {e['message']}" for e in cr["errors"]), style="red")
    for comment in cr.get("comments") or []:
        out.line(f"comment by {comment['actor']} at {when(comment['at'])}: {comment['message']}")
    if cr.get("unified"):
        out.diff(str(cr["unified"]))
    out.changes(cr.get("changes") or [])
    if cr.get("moved_changes"):
        out.line(f"the head moved since v{cr['base_version']}:", style="yellow")
        out.changes(cr["moved_changes"])


def _step(ctx: typer.Context, request_id: int, step: str, message: str, as_json: bool) -> None:
    state = session(ctx, as_json)
    path = f"{API}/change-requests/{request_id}/{step}"
    body = None if step == "publish" else {"message": message}
    cr = state.api().request("POST", path, json=body)
    if state.output.json_output:
        state.output.emit_json(cr)
        return
    done = f"change request {cr['id']}: {cr['state']}"
    if cr.get("published_version"):
        done += f" as {cr['namespace']}/{cr['name']} v{cr['published_version']}"
    elif cr["state"] == "open":
        done += f" ({len(cr['approvals'])} of {cr['approvals_required']} approvals)"
    state.output.line(done, style="green")


@review_app.command()
def approve(ctx: typer.Context, request_id: IdArg, message: MessageOpt = "", as_json: JsonOpt = False) -> None:
    """Approve change request ID (not your own; you must be one of the namespace's approvers)."""
    _step(ctx, request_id, "approve", message, as_json)


@review_app.command()
def reject(ctx: typer.Context, request_id: IdArg, message: MessageOpt = "", as_json: JsonOpt = False) -> None:
    """Reject change request ID (an approver or an admin; final)."""
    _step(ctx, request_id, "reject", message, as_json)


@review_app.command()
def publish(ctx: typer.Context, request_id: IdArg, as_json: JsonOpt = False) -> None:
    """Publish approved change request ID: a push from its base (exit 3 and 'conflicted' if the head moved)."""
    _step(ctx, request_id, "publish", "", as_json)


@review_app.command()
def withdraw(ctx: typer.Context, request_id: IdArg, message: MessageOpt = "", as_json: JsonOpt = False) -> None:
    """Withdraw change request ID (its author or an admin; final)."""
    _step(ctx, request_id, "withdraw", message, as_json)


@review_app.command()
def comment(ctx: typer.Context, request_id: IdArg, message: MessageOpt = "", as_json: JsonOpt = False) -> None:
    """Comment on change request ID."""
    _step(ctx, request_id, "comments", message, as_json)
