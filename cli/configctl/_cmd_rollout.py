"""Progressive rollouts of one config: ``rollout start|status|promote|pause|resume|abort|history NS/NAME`` over
``/api/v1/configs/{ns}/{name}/rollouts``.

A rollout takes a config from its head (H, the base version) to a candidate (C) step by step: each step is the
percentage of the cohort's instances that run C, held for the bake time, then advanced by the server (or by
``promote`` with ``--manual``). The parsing helpers (durations, steps, labels) and the status view do no I/O and
are tested without a server; the plan is checked locally with the record model the server stores
(``configd_core.records.RolloutPlan``), so a bad ``--steps`` is a usage error (exit 2) before any request.

``status --watch`` polls ``…/rollouts/current`` every ``--interval`` seconds, like ``tail`` polls the history
(the API has no streaming endpoint); when the rollout ends the endpoint answers 404 and the finished record is
read from the history.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from configd_core.errors import NotFound
from configd_core.errors import ValidationFailed as _LabelError
from configd_core.records import RolloutCohort, RolloutPlan
from configd_core.rollouts import parse_labels as _core_labels

from ._errors import ExitCode, UsageError
from ._render import when
from ._session import JsonOpt, RefArg, Session, read_document, session, split_ref

rollout_app = typer.Typer(no_args_is_help=True)

MessageOpt = Annotated[str, typer.Option("--message", "-m", help="Why: recorded with the step and in the audit.")]
FINAL_STATES = ("completed", "aborted")
BAR_WIDTH = 40

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


# --- parsing (no I/O) -------------------------------------------------------------------------------------
def parse_duration(text: str) -> float:
    """``90s``, ``2m``, ``1h``, ``1h30m``, ``1.5m`` or plain seconds (``120``) as seconds."""
    raw = text.strip().lower().replace(" ", "")
    if not raw:
        raise UsageError("a duration is needed, e.g. 90s, 2m, 1h or plain seconds")
    if _DURATION_PART.fullmatch(raw) and raw[-1].isdigit():
        return float(raw)
    total, pos = 0.0, 0
    for match in _DURATION_PART.finditer(raw):
        if match.start() != pos or match.group(2) is None:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(raw):
        raise UsageError(f"{text!r} is not a duration: use e.g. 90s, 2m, 1h, 1h30m or plain seconds")
    return total


def format_duration(seconds: float) -> str:
    """``120`` → ``2m``, ``5400`` → ``1h30m``, ``45`` → ``45s`` (the form ``parse_duration`` reads back)."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    return "".join(parts)


def parse_steps(text: str) -> list[float]:
    """``5,25,100`` (or ``5%,25%,100%``) as percentages; the order rules are the plan's (checked in ``build_plan``)."""
    steps: list[float] = []
    for part in text.split(","):
        part = part.strip().removesuffix("%").strip()
        if not part:
            continue
        try:
            steps.append(float(part))
        except ValueError:
            raise UsageError(f"--steps: {part!r} is not a percentage (e.g. --steps 5,25,100)") from None
    if not steps:
        raise UsageError("--steps needs at least one percentage (e.g. --steps 5,25,100)")
    return steps


def parse_labels(values: Sequence[str]) -> dict[str, str]:
    """``--labels region=eu,tier=canary`` (repeatable) as one mapping, by the rule the SDK's ``CONFIGD_LABELS`` uses."""
    labels: dict[str, str] = {}
    for value in values:
        try:
            labels.update(_core_labels(value))
        except _LabelError as exc:
            raise UsageError(f"--labels: {exc}") from exc
    return labels


def parse_instances(values: Sequence[str]) -> list[str]:
    """``--instances a,b`` (repeatable): instance keys or ids, in order, each once."""
    found: list[str] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if part and part not in found:
                found.append(part)
    return found


def build_plan(
    *,
    steps: list[float],
    bake_seconds: float,
    auto: bool,
    labels: dict[str, str],
    instances: list[str],
    max_failures: int | None,
    max_failure_ratio: float | None,
) -> RolloutPlan:
    """The plan as the server will store it; a plan the record refuses is a usage error naming the option."""
    try:
        return RolloutPlan(
            cohort=RolloutCohort.model_validate({"labels": labels, "instances": instances}),
            steps=steps,
            bake_seconds=bake_seconds,
            auto=auto,
            max_failures=max_failures,
            max_failure_ratio=max_failure_ratio,
        )
    except ValidationError as exc:
        options = {
            "steps": "--steps",
            "bake_seconds": "--bake",
            "max_failures": "--max-failures",
            "max_failure_ratio": "--max-failure-ratio",
            "labels": "--labels",
            "instances": "--instances",
        }
        problems = []
        for error in exc.errors():
            named = [options[str(part)] for part in error["loc"] if str(part) in options]
            where = named[0] if named else "plan"
            problems.append(f"{where}: {str(error['msg']).removeprefix('Value error, ')}")
        raise UsageError("; ".join(problems)) from None


# The plan's options, shared by `rollout start` and `propose --rollout`.
StepsOpt = Annotated[str, typer.Option("--steps", help="Percentages of the cohort, in order, e.g. 5,25,100.")]
BakeOpt = Annotated[
    str, typer.Option("--bake", help="How long each step is held before the next: 90s, 2m, 1h or seconds.")
]
LabelsOpt = Annotated[
    list[str] | None,
    typer.Option("--labels", help="Cohort: instances with all these labels, e.g. region=eu,tier=web."),
]
InstancesOpt = Annotated[
    list[str] | None,
    typer.Option("--instances", help="Instance keys or ids that always run the candidate (comma-separated)."),
]
MaxFailuresOpt = Annotated[
    int | None, typer.Option("--max-failures", min=1, help="Abort when this many instances failed.")
]
MaxFailureRatioOpt = Annotated[
    float | None,
    typer.Option("--max-failure-ratio", help="Abort when this share (0-1] of the cohort's members failed."),
]
ManualOpt = Annotated[
    bool, typer.Option("--manual", help="Never advance by itself: every step waits for `rollout promote`.")
]


def plan_from_options(
    steps: str,
    bake: str,
    labels: Sequence[str] | None,
    instances: Sequence[str] | None,
    max_failures: int | None,
    max_failure_ratio: float | None,
    manual: bool,
) -> RolloutPlan:
    """The plan the command-line options describe (usage errors name the option)."""
    return build_plan(
        steps=parse_steps(steps),
        bake_seconds=parse_duration(bake),
        auto=not manual,
        labels=parse_labels(labels or []),
        instances=parse_instances(instances or []),
        max_failures=max_failures,
        max_failure_ratio=max_failure_ratio,
    )


def start_body(plan: RolloutPlan, *, data: Any = None, version: int | None = None, message: str = "") -> dict[str, Any]:
    """The ``POST …/rollouts`` body: the candidate (``data`` or an existing ``version``) and the plan's fields."""
    body: dict[str, Any] = {"data": data} if version is None else {"version": version}
    body.update(plan.model_dump(mode="json"))
    body["message"] = message
    return body


# --- the status view (no I/O) -----------------------------------------------------------------------------
def _percent(value: Any) -> str:
    return f"{float(value):g}%"


def _parse_time(stamp: Any) -> datetime | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def cohort_text(plan: dict[str, Any]) -> str:
    """``region=eu, tier=canary + instances a, b`` — who the rollout is for."""
    cohort = plan.get("cohort") or {}
    labels = cohort.get("labels") or {}
    instances = cohort.get("instances") or []
    who = ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "every instance"
    if instances:
        who += " + always " + ", ".join(str(i) for i in instances)
    return who


def steps_text(plan: dict[str, Any]) -> str:
    """``steps 5%, 25%, 100%, 5m each`` (or ``…, promoted by hand``)."""
    steps = ", ".join(_percent(s) for s in plan.get("steps") or [])
    pace = (
        f"{format_duration(float(plan.get('bake_seconds', 0)))} each" if plan.get("auto", True) else "promoted by hand"
    )
    return f"steps {steps}, {pace}"


def threshold_text(plan: dict[str, Any]) -> str:
    limits = []
    if plan.get("max_failures") is not None:
        limits.append(f"{plan['max_failures']} failed instance(s)")
    if plan.get("max_failure_ratio") is not None:
        limits.append(f"{float(plan['max_failure_ratio']) * 100:g}% of members failed")
    return "aborts at " + " or ".join(limits) if limits else "the first failed instance aborts it"


def next_text(status: dict[str, Any], now: datetime | None = None) -> str:
    """When the rollout moves next: ``next step in 1m30s``, ``waits for promote``, ``paused``, or its end."""
    rollout = status["rollout"]
    state = rollout.get("state")
    if state in FINAL_STATES:
        by = f" by {rollout['finished_by']}" if rollout.get("finished_by") else ""
        return f"{state}{by} {when(rollout.get('finished_at'))}".rstrip()
    if state == "paused":
        return "paused: resume to continue"
    last = rollout["step"] >= len(rollout["plan"]["steps"]) - 1
    at = _parse_time(status.get("next_step_at"))
    if at is None:
        return "waits for promote" + (" (completes it)" if last else "")
    left = (at - (now or datetime.now(UTC))).total_seconds()
    what = "completes" if last else "next step"
    return f"{what} in {format_duration(max(math.ceil(left), 0))} (at {when(status['next_step_at'])})"


def bar(instances: dict[str, Any], width: int = BAR_WIDTH) -> Text:
    """Instances on C (green), on H (blue), others (not in the cohort or not reported yet) dim."""
    total = int(instances.get("total") or 0)
    on_c, on_h = int(instances.get("on_candidate") or 0), int(instances.get("on_base") or 0)
    text = Text("[")
    if total <= 0:
        text.append("·" * width, style="dim")
    else:
        c = round(width * on_c / total)
        h = min(round(width * on_h / total), width - c)
        text.append("█" * c, style="green")
        text.append("▒" * h, style="blue")
        text.append("·" * (width - c - h), style="dim")
    text.append("]")
    return text


def summary_line(status: dict[str, Any]) -> str:
    """One line per change for ``--watch`` without a terminal (logs, CI)."""
    rollout, counts = status["rollout"], status.get("instances") or {}
    steps = rollout["plan"]["steps"]
    return (
        f"{rollout['state']} step {rollout['step'] + 1}/{len(steps)} {_percent(status.get('percent', 0))} · "
        f"C {counts.get('on_candidate', 0)} · H {counts.get('on_base', 0)} · failed {counts.get('failed', 0)} · "
        f"{counts.get('members', 0)} of {counts.get('total', 0)} in the cohort"
    )


def status_view(ref: str, status: dict[str, Any], now: datetime | None = None) -> RenderableType:
    """The whole picture of one rollout: state, versions, step i/n and percent, cohort, the H/C bar, failures."""
    rollout = status["rollout"]
    plan = rollout["plan"]
    steps = plan["steps"]
    counts = status.get("instances") or {}
    state = str(rollout.get("state"))
    colour = {"running": "cyan", "paused": "yellow", "completed": "green", "aborted": "red"}.get(state, "")
    lines: list[RenderableType] = []
    head = Text(f"{ref} ", style="bold")
    head.append(state, style=f"bold {colour}".strip())
    head.append(f"  rollout {rollout['id']}", style="dim")
    lines.append(head)
    lines.append(
        Text(
            f"v{rollout['base_version']} (H) → v{rollout['candidate_version']} (C)  ·  "
            f"step {min(rollout['step'], len(steps) - 1) + 1}/{len(steps)} at {_percent(status.get('percent', 0))}  ·  "
            f"bake {format_duration(float(plan.get('bake_seconds', 0)))}{'' if plan.get('auto', True) else ', manual'}"
        )
    )
    plan_line = Text("steps   ")
    for index, step in enumerate(steps):
        if index:
            plan_line.append(" → ", style="dim")
        current = index == rollout["step"] and state not in FINAL_STATES
        done = index < rollout["step"]
        plan_line.append(_percent(step), style="bold reverse" if current else ("" if done else "dim"))
    lines.append(plan_line)
    lines.append(Text(f"cohort  {cohort_text(plan)}"))
    lines.append(Text(f"next    {next_text(status, now)}"))
    instance_line = Text("H ")
    instance_line.append_text(bar(counts))
    instance_line.append(" C  ")
    instance_line.append(f"C {counts.get('on_candidate', 0)}", style="green")
    instance_line.append(" · ")
    instance_line.append(f"H {counts.get('on_base', 0)}", style="blue")
    instance_line.append(f" · {counts.get('members', 0)} of {counts.get('total', 0)} instance(s) in the cohort")
    lines.append(instance_line)
    failures = status.get("failures") or rollout.get("failures") or []
    failed = int(counts.get("failed") or 0)
    lines.append(
        Text(
            f"failures {failed} instance(s), {len(failures)} report(s) — {threshold_text(plan)}",
            style="red" if failures or failed else "",
        )
    )
    if failures:
        table = Table(header_style="bold", title_justify="left")
        for column in ("instance", "kind", "reason", "at"):
            table.add_column(column, overflow="fold", no_wrap=column != "reason")
        for failure in failures:
            table.add_row(
                str(failure.get("instance", "")),
                str(failure.get("kind", "")),
                str(failure.get("reason", "")),
                when(failure.get("at")),
            )
        lines.append(table)
    if rollout.get("reason"):
        lines.append(Text(f"reason  {rollout['reason']}"))
    return Group(*lines)


def final_line(ref: str, rollout: dict[str, Any]) -> str:
    """How a finished rollout ended, and which version is the head now."""
    by = f" by {rollout['finished_by']}" if rollout.get("finished_by") else ""
    why = f": {rollout['reason']}" if rollout.get("reason") else ""
    if rollout.get("state") == "completed":
        return f"{ref}: rollout {rollout['id']} completed{by}; v{rollout['candidate_version']} is the head{why}"
    return f"{ref}: rollout {rollout['id']} {rollout.get('state')}{by}; v{rollout['base_version']} stays the head{why}"


def step_line(ref: str, step: str, status: dict[str, Any]) -> str:
    """What ``promote``/``pause``/``resume``/``abort`` did."""
    rollout = status["rollout"]
    if rollout.get("state") in FINAL_STATES:
        return final_line(ref, rollout)
    steps = rollout["plan"]["steps"]
    done = {"promote": "promoted to", "pause": "paused at", "resume": "resumed at", "abort": "aborting at"}[step]
    return (
        f"{ref}: rollout {rollout['id']} {done} step {rollout['step'] + 1}/{len(steps)} "
        f"({_percent(status.get('percent', 0))}) — {rollout['state']}"
    )


# --- commands ---------------------------------------------------------------------------------------------
@rollout_app.command()
def start(
    ctx: typer.Context,
    ref: RefArg,
    file: Annotated[
        Path | None, typer.Argument(metavar="[FILE]", help="The candidate JSON document, or - for stdin.")
    ] = None,
    version: Annotated[
        int | None, typer.Option("--version", min=1, help="Roll out this existing version instead of FILE.")
    ] = None,
    steps: StepsOpt = "100",
    bake: BakeOpt = "5m",
    labels: LabelsOpt = None,
    instances: InstancesOpt = None,
    max_failures: MaxFailuresOpt = None,
    max_failure_ratio: MaxFailureRatioOpt = None,
    manual: ManualOpt = False,
    message: MessageOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Start a rollout of FILE (or --version N) to NS/NAME, step by step through the cohort."""
    state = session(ctx, as_json)
    namespace, name = split_ref(ref)
    if (file is None) == (version is None):
        raise UsageError("give the candidate as FILE or as --version N (one of the two)")
    plan = plan_from_options(steps, bake, labels, instances, max_failures, max_failure_ratio, manual)
    data = read_document(str(file)) if file is not None else None
    result = state.api().start_rollout(namespace, name, start_body(plan, data=data, version=version, message=message))
    if state.output.json_output:
        state.output.emit_json(result)
        return
    state.output.out.print(status_view(ref, result))
    state.output.note(f"follow it with: configctl rollout status {ref} --watch")


@rollout_app.command()
def status(
    ctx: typer.Context,
    ref: RefArg,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Refresh until the rollout ends (Ctrl-C stops).")
    ] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.2, help="Seconds between refreshes.")] = 2.0,
    as_json: JsonOpt = False,
) -> None:
    """The active rollout of NS/NAME: state, step and percent, instances on H and C, failures (exit 4 if none)."""
    state = session(ctx, as_json)
    namespace, name = split_ref(ref)
    current = state.api().rollout_status(namespace, name)
    if not watch:
        if state.output.json_output:
            state.output.emit_json(current)
        else:
            state.output.out.print(status_view(ref, current))
        return
    try:
        _watch(state, ref, namespace, name, current, interval)
    except KeyboardInterrupt:
        state.output.note("stopped")
    raise typer.Exit(int(ExitCode.OK))


def _watch(state: Session, ref: str, namespace: str, name: str, current: dict[str, Any], interval: float) -> None:
    api, out = state.api(), state.output
    rollout_id = current["rollout"]["id"]
    final: dict[str, Any] | None = None
    if out.json_output or not out.out.is_terminal:
        last = ""
        while final is None:
            line = summary_line(current)
            if line != last:
                if out.json_output:
                    out.emit_json_line(current)
                else:
                    out.line(f"{datetime.now(UTC):%H:%M:%S} {line}")
                last = line
            current, final = _poll(api, namespace, name, rollout_id, current, interval)
    else:
        from rich.live import Live  # only a terminal needs the live view

        with Live(status_view(ref, current), console=out.out, refresh_per_second=4, transient=False) as live:
            while final is None:
                current, final = _poll(api, namespace, name, rollout_id, current, interval)
                live.update(status_view(ref, current if final is None else {**current, "rollout": final}))
    if out.json_output:
        out.emit_json_line({"rollout": final})
    else:
        out.line(final_line(ref, final), style="green" if final.get("state") == "completed" else "red")


def _poll(
    api: Any, namespace: str, name: str, rollout_id: str, current: dict[str, Any], interval: float
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The next status, or — once the rollout ended (the current endpoint answers 404 or shows another rollout) —
    its finished record from the history."""
    time.sleep(interval)
    try:
        latest = api.rollout_status(namespace, name)
    except NotFound:
        latest = None
    if latest is not None and latest["rollout"]["id"] == rollout_id:
        if latest["rollout"].get("state") in FINAL_STATES:
            return latest, latest["rollout"]
        return latest, None
    for item in api.rollout_history(namespace, name):
        if item.get("id") == rollout_id:
            return current, item
    # Ended but not in the history yet (or ever): report what was last seen, marked as ended.
    return current, {**current["rollout"], "state": current["rollout"].get("state", "ended")}


def _step(ctx: typer.Context, ref: str, step: str, message: str, as_json: bool) -> None:
    state = session(ctx, as_json)
    namespace, name = split_ref(ref)
    result = state.api().rollout_step(namespace, name, step, message=message)
    if state.output.json_output:
        state.output.emit_json(result)
        return
    state.output.line(step_line(ref, step, result), style="red" if step == "abort" else "green")


@rollout_app.command()
def promote(ctx: typer.Context, ref: RefArg, message: MessageOpt = "", as_json: JsonOpt = False) -> None:
    """Advance NS/NAME's rollout to its next step now (at the last step: complete it, C becomes the head)."""
    _step(ctx, ref, "promote", message, as_json)


@rollout_app.command()
def pause(ctx: typer.Context, ref: RefArg, message: MessageOpt = "", as_json: JsonOpt = False) -> None:
    """Hold NS/NAME's rollout at its current step (instances keep what they run)."""
    _step(ctx, ref, "pause", message, as_json)


@rollout_app.command()
def resume(ctx: typer.Context, ref: RefArg, message: MessageOpt = "", as_json: JsonOpt = False) -> None:
    """Resume NS/NAME's paused rollout (the bake time of its step starts again)."""
    _step(ctx, ref, "resume", message, as_json)


@rollout_app.command()
def abort(ctx: typer.Context, ref: RefArg, message: MessageOpt = "", as_json: JsonOpt = False) -> None:
    """Abort NS/NAME's rollout: every instance goes back to H, the base version stays the head."""
    _step(ctx, ref, "abort", message, as_json)


@rollout_app.command()
def history(ctx: typer.Context, ref: RefArg, as_json: JsonOpt = False) -> None:
    """Finished rollouts of NS/NAME, newest first."""
    state = session(ctx, as_json)
    namespace, name = split_ref(ref)
    items = state.api().rollout_history(namespace, name)
    if state.output.json_output:
        state.output.emit_json(items)
        return
    state.output.table(
        f"{ref}: {len(items)} finished rollout(s)",
        ["ID", "VERSIONS", "STATE", "STEPS", "COHORT", "STARTED", "FINISHED", "FAILURES", "REASON"],
        [
            [
                r.get("id"),
                f"v{r.get('base_version')} → v{r.get('candidate_version')}",
                r.get("state"),
                " → ".join(_percent(s) for s in r["plan"]["steps"]),
                cohort_text(r["plan"]),
                f"{when(r.get('started_at'))} {r.get('started_by', '')}".strip(),
                f"{when(r.get('finished_at'))} {r.get('finished_by') or ''}".strip(),
                len(r.get("failures") or []),
                r.get("reason") or r.get("message") or "",
            ]
            for r in items
        ],
    )
