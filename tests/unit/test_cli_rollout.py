"""configctl rollout without a server: durations, steps, labels and instances, the plan check (usage errors before
any request), the request body, the status view and the 409 RolloutActive mapping."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from configctl import ExitCode, app
from configctl._cmd_rollout import (
    bar,
    build_plan,
    cohort_text,
    final_line,
    format_duration,
    next_text,
    parse_duration,
    parse_instances,
    parse_labels,
    parse_steps,
    start_body,
    status_view,
    step_line,
    summary_line,
    threshold_text,
)
from configctl._errors import UsageError, exit_code_for
from configctl._http import from_status
from configd_core.errors import RequestContext, RolloutActive, VersionConflict


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("2m", 120),
        ("1h", 3600),
        ("120", 120),
        ("0", 0),
        ("1.5m", 90),
        ("1h30m", 5400),
        (" 2M ", 120),
        ("500ms", 0.5),
        ("1d", 86400),
        ("2.5", 2.5),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "2x", "-5", "1h30", "m", "5 minutes", "1..5s"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0, 45, 60, 90, 120, 3600, 5400, 86400 + 61])
def test_format_duration_reads_back(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds
    assert format_duration(120) == "2m"
    assert format_duration(5400) == "1h30m"


def test_parse_steps() -> None:
    assert parse_steps("5,25,100") == [5.0, 25.0, 100.0]
    assert parse_steps(" 1% , 50%,100 ") == [1.0, 50.0, 100.0]
    assert parse_steps("0.5,100") == [0.5, 100.0]
    for bad in ["", ",", "5,x,100", "five"]:
        with pytest.raises(UsageError):
            parse_steps(bad)


def test_parse_labels_and_instances() -> None:
    assert parse_labels(["region=eu"]) == {"region": "eu"}
    assert parse_labels(["region=eu,tier=web", "zone = a"]) == {"region": "eu", "tier": "web", "zone": "a"}
    assert parse_labels([]) == {}
    for bad in [["region"], ["=eu"], ["region=eu,broken"]]:
        with pytest.raises(UsageError, match="--labels"):
            parse_labels(bad)
    assert parse_instances(["a,b", "b", " c ,"]) == ["a", "b", "c"]
    assert parse_instances([]) == []


def _plan(**overrides: Any) -> Any:
    values: dict[str, Any] = {
        "steps": [5.0, 25.0, 100.0],
        "bake_seconds": 120.0,
        "auto": True,
        "labels": {"region": "eu"},
        "instances": [],
        "max_failures": 1,
        "max_failure_ratio": None,
    }
    values.update(overrides)
    return build_plan(**values)


def test_build_plan_and_body() -> None:
    plan = _plan()
    assert plan.steps == [5.0, 25.0, 100.0] and plan.cohort.labels == {"region": "eu"}
    body = start_body(plan, data={"port": 1}, message="canary")
    assert body == {
        "data": {"port": 1},
        "cohort": {"labels": {"region": "eu"}, "instances": []},
        "steps": [5.0, 25.0, 100.0],
        "bake_seconds": 120.0,
        "auto": True,
        "max_failures": 1,
        "max_failure_ratio": None,
        "message": "canary",
    }
    by_version = start_body(_plan(auto=False), version=3)
    assert by_version["version"] == 3 and "data" not in by_version and by_version["auto"] is False


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"steps": [50.0, 25.0]}, "--steps: steps may not shrink"),
        ({"steps": [5.0, 150.0]}, "--steps"),
        ({"steps": [float(i) for i in range(21)]}, "--steps"),
        ({"bake_seconds": 8 * 86400.0}, "--bake"),
        ({"max_failure_ratio": 1.5}, "--max-failure-ratio"),
        ({"max_failure_ratio": 0.0}, "--max-failure-ratio"),
        ({"instances": [f"i{n}" for n in range(201)]}, "--instances"),
    ],
)
def test_build_plan_refusals_name_the_option(overrides: dict[str, Any], needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        _plan(**overrides)


def _status(**rollout: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": "r1",
        "base_version": 3,
        "candidate_version": 4,
        "plan": {
            "cohort": {"labels": {"region": "eu"}, "instances": ["web-1"]},
            "steps": [5.0, 25.0, 100.0],
            "bake_seconds": 120.0,
            "auto": True,
            "max_failures": 1,
            "max_failure_ratio": None,
        },
        "step": 1,
        "state": "running",
        "started_by": "editor",
        "finished_by": None,
        "reason": "",
        "failures": [],
    }
    record.update(rollout)
    return {
        "rollout": record,
        "percent": record["plan"]["steps"][min(record["step"], 2)],
        "next_step_at": "2026-12-02T10:01:30Z",
        "instances": {"total": 10, "members": 8, "on_base": 6, "on_candidate": 2, "failed": 0},
        "failures": [],
        "reporting": [],
    }


def _plain(renderable: Any) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=120, color_system=None).print(renderable)
    return buffer.getvalue()


def test_status_view_shows_everything() -> None:
    now = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)
    status = _status()
    status["failures"] = [
        {"instance": "web-7", "kind": "rejected", "reason": "port: too small", "at": "2026-12-02T10:00:00Z"}
    ]
    status["instances"]["failed"] = 1
    text = _plain(status_view("payments/service", status, now))
    for needle in [
        "payments/service running",
        "v3 (H) → v4 (C)",
        "step 2/3 at 25%",
        "bake 2m",
        "5% → 25% → 100%",
        "region=eu + always web-1",
        "next step in 1m30s",
        "C 2 · H 6 · 8 of 10 instance(s) in the cohort",
        "failures 1 instance(s), 1 report(s) — aborts at 1 failed instance(s)",
        "web-7",
        "port: too small",
    ]:
        assert needle in text, (needle, text)
    assert summary_line(status) == "running step 2/3 25% · C 2 · H 6 · failed 1 · 8 of 10 in the cohort"


def test_bar_splits_candidate_base_and_the_rest() -> None:
    text = bar({"total": 10, "on_candidate": 2, "on_base": 6}, width=10).plain
    assert text == "[██▒▒▒▒▒▒··]"
    assert bar({"total": 0}, width=4).plain == "[····]"
    assert bar({"total": 3, "on_candidate": 3, "on_base": 3}, width=3).plain == "[███]"


def test_next_and_threshold_texts() -> None:
    now = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)
    assert next_text(_status(state="paused"), now) == "paused: resume to continue"
    manual = _status(step=2)
    manual["next_step_at"] = None
    assert next_text(manual, now) == "waits for promote (completes it)"
    late = _status(step=2)
    assert next_text(late, datetime(2026, 12, 2, 11, 0, 0, tzinfo=UTC)).startswith("completes in 0s")
    soon = datetime(2026, 12, 2, 10, 1, 29, 600_000, tzinfo=UTC)  # 0.4 s left: shown as whole seconds
    assert next_text(_status(), soon) == "next step in 1s (at 2026-12-02 10:01:30Z)"
    done = _status(state="completed", finished_by="admin", finished_at="2026-12-02T10:05:00Z")
    assert next_text(done, now) == "completed by admin 2026-12-02 10:05:00Z"
    assert threshold_text({}) == "the first failed instance aborts it"
    assert threshold_text({"max_failures": 2, "max_failure_ratio": 0.2}) == (
        "aborts at 2 failed instance(s) or 20% of members failed"
    )
    assert cohort_text({"cohort": {}}) == "every instance"


def test_step_and_final_lines() -> None:
    assert step_line("a/b", "promote", _status(step=2)) == "a/b: rollout r1 promoted to step 3/3 (100%) — running"
    aborted = _status(state="aborted", finished_by="editor", reason="bad latency")
    assert step_line("a/b", "abort", aborted) == "a/b: rollout r1 aborted by editor; v3 stays the head: bad latency"
    assert final_line("a/b", _status(state="completed")["rollout"]) == "a/b: rollout r1 completed; v4 is the head"


def test_rollout_active_is_mapped_by_its_error_name() -> None:
    body = {"detail": "a/b has an active rollout r1", "error": "RolloutActive", "errors": [], "rollout": "r1"}
    exc = from_status(RequestContext("POST", "http://x/api/v1/configs/a/b/rollouts", 409, body))
    assert isinstance(exc, RolloutActive) and exc.rollout == "r1"
    assert exit_code_for(exc) == ExitCode.CONFLICT
    plain = from_status(RequestContext("PUT", "http://x", 409, {"detail": "moved", "error": "VersionConflict"}))
    assert type(plain) is VersionConflict


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["rollout", "start", "a/b"], "FILE or as --version"),
        (["rollout", "start", "a/b", "x.json", "--version", "2"], "FILE or as --version"),
        (["rollout", "start", "a/b", "--version", "2", "--steps", "50,10"], "--steps"),
        (["rollout", "start", "a/b", "--version", "2", "--bake", "soon"], "not a duration"),
        (["rollout", "start", "a/b", "--version", "2", "--labels", "region"], "--labels"),
        (["rollout", "start", "bad name/b", "--version", "2"], "usage"),
        (["rollout", "status", "nope"], "usage"),
    ],
)
def test_rollout_usage_errors_exit_2_without_a_request(args: list[str], needle: str) -> None:
    # A closed port: reaching the server would be exit 5, so exit 2 proves nothing was sent.
    result = CliRunner().invoke(app, ["--server", "http://127.0.0.1:9", *args])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert needle in result.output
