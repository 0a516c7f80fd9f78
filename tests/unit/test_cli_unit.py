"""configctl without a server: exit-code mapping, HTTP status mapping, the import planner, the debouncer,
--from-model, offline validation and usage errors (CliRunner). No network except one refused connection."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from configctl import ExitCode, app, exit_code_for
from configctl._errors import (
    AuthFailed,
    ServerUnavailable,
    UsageError,
    error_document,
    error_line,
    worst,
)
from configctl._http import from_status, item_failures
from configctl._offline import DRAFT_2020_12, load_model, schema_from_model, validate_offline
from configctl._tree import (
    Plan,
    RemoteDocument,
    TreeFile,
    classify,
    content_sha,
    exportable,
    import_requests,
    plan_item,
    scan_tree,
)
from configctl._watch import Debouncer
from configd.planning.validation import schema_errors
from configd_client import (
    ConfigdError,
    ConfigTooLarge,
    ConsulPermissionDenied,
    ConsulUnavailable,
    ErrorDetail,
    InvalidConfig,
    InvalidName,
    NotFound,
    SchemaIncompatible,
    SchemaNotFound,
    ValidationFailed,
    VersionConflict,
)
from configd_core.errors import RequestContext

REPO = Path(__file__).resolve().parents[2]
SCHEMA: dict[str, Any] = {
    "$schema": DRAFT_2020_12,
    "type": "object",
    "properties": {"port": {"type": "integer"}, "tls": {"type": "object", "properties": {"on": {"type": "boolean"}}}},
    "required": ["port"],
    "additionalProperties": False,
}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(args: list[str], **env: str) -> Any:
    runner = CliRunner(env={"CONFIGD_URL": f"http://127.0.0.1:{_closed_port()}", "CONFIGD_TOKEN": "", **env})
    return runner.invoke(app, args)


# --- exit codes -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ValidationFailed("x"), 1),
        (SchemaIncompatible("x"), 1),
        (InvalidConfig("x"), 1),
        (ConfigTooLarge(10, 5), 1),
        (UsageError("x"), 2),
        (InvalidName("x"), 2),
        (VersionConflict("x", expected=1, actual=2), 3),
        (NotFound("x"), 4),
        (SchemaNotFound("x"), 4),
        (ConsulUnavailable("x"), 5),
        (ServerUnavailable("x"), 5),
        (ConfigdError("x"), 5),
        (AuthFailed("x"), 6),
        (ConsulPermissionDenied("x"), 6),
    ],
)
def test_exit_code_for_every_exception(exc: ConfigdError, code: int) -> None:
    assert exit_code_for(exc) == code


def test_worst_prefers_the_run_breaking_failure() -> None:
    assert worst([ExitCode.VALIDATION_FAILED, ExitCode.CONFLICT]) == ExitCode.CONFLICT
    assert worst([ExitCode.CONFLICT, ExitCode.UNAVAILABLE]) == ExitCode.UNAVAILABLE
    assert worst([ExitCode.VALIDATION_FAILED]) == ExitCode.VALIDATION_FAILED
    assert worst([]) == ExitCode.OK


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (422, {"detail": "bad", "errors": [{"path": "/port", "message": "not an integer"}]}, ValidationFailed),
        (409, {"detail": "moved", "expected": 3, "actual": 4}, VersionConflict),
        (404, {"detail": "no such config"}, NotFound),
        (413, {"detail": "too big"}, ConfigTooLarge),
        (401, {"detail": "no token"}, AuthFailed),
        (403, {"detail": "reader"}, AuthFailed),
        (503, {"detail": "no leader"}, ConsulUnavailable),
        (400, {"detail": "bad request"}, UsageError),
        (415, "unsupported", UsageError),
        (502, "<html>bad gateway</html>", ServerUnavailable),
    ],
)
def test_from_status_maps_codes_and_keeps_the_request(status: int, body: Any, cls: type[ConfigdError]) -> None:
    failure = RequestContext("PUT", "http://h/api/v1/configs/a/b", status, body)
    exc = from_status(failure)
    assert type(exc) is cls
    assert exc.request == failure
    assert error_document(exc)["request"] == {"method": "PUT", "url": failure.url, "status": status, "body": body}
    if isinstance(body, dict):
        assert str(exc) == body["detail"]
    else:
        assert "HTTP" in str(exc)


def test_from_status_keeps_paths_and_versions() -> None:
    body = {"detail": "2 errors", "errors": [{"path": "/a", "message": "m1"}, {"path": "/b/0", "message": "m2"}]}
    exc = from_status(RequestContext("PUT", "u", 422, body))
    assert isinstance(exc, ValidationFailed)
    assert exc.errors == [ErrorDetail("/a", "m1"), ErrorDetail("/b/0", "m2")]
    conflict = from_status(RequestContext("PUT", "u", 409, {"detail": "d", "expected": 1, "actual": 5}))
    assert isinstance(conflict, VersionConflict)
    assert (conflict.expected, conflict.actual) == (1, 5)
    # The class comes from the body's ``error`` name, never from the message's words.
    missing = from_status(
        RequestContext("PUT", "http://h/api/v1/configs/a/b", 404, {"detail": "d", "error": "SchemaNotFound"})
    )
    assert isinstance(missing, SchemaNotFound)
    plain = from_status(RequestContext("PUT", "http://h/api/v1/configs/a/b", 404, {"detail": "no schema registered"}))
    assert type(plain) is NotFound


def test_error_line_is_one_line_with_every_path() -> None:
    exc = ValidationFailed("a/b: 2 errors", [ErrorDetail("/port", "'x' is not\nan integer"), ErrorDetail("/tls", "m")])
    line = error_line(exc)
    assert "\n" not in line
    assert line.startswith("validation failed: a/b: 2 errors")
    assert "/port: 'x' is not an integer" in line and "/tls: m" in line
    many = ValidationFailed("x", [ErrorDetail(f"/k{i}", "bad") for i in range(15)])
    assert "… and 5 more" in error_line(many)
    assert "(expected 1, head is 2)" in error_line(VersionConflict("moved", expected=1, actual=2))


# --- planner and tree -----------------------------------------------------------------------------------
def test_classify_tree_paths(tmp_path: Path) -> None:
    assert classify(tmp_path, tmp_path / "pay" / "svc.json") == TreeFile("config", "pay", "svc")
    assert classify(tmp_path, tmp_path / "pay" / "svc.schema.json") == TreeFile("schema", "pay", "svc")
    assert classify(tmp_path, tmp_path / "pay" / ".svc.json.swp") is None
    assert classify(tmp_path, tmp_path / "pay" / "svc.json~") is None
    assert classify(tmp_path, tmp_path / "svc.json") is None
    assert classify(tmp_path, tmp_path / "a" / "b" / "svc.json") is None
    assert classify(tmp_path, Path("/elsewhere/pay/svc.json")) is None
    with pytest.raises(UsageError, match="Pay"):
        classify(tmp_path, tmp_path / "Pay" / "svc.json")
    assert exportable("svc") and not exportable("svc.schema")


def test_scan_tree_orders_schema_before_config(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    for path in ["b/x.json", "a/y.json", "a/y.schema.json", "a/notes.txt"]:
        (tmp_path / path).write_text("{}")
    found = [(f.kind, f.namespace, f.name) for f, _ in scan_tree(tmp_path)]
    assert found == [("schema", "a", "y"), ("config", "a", "y"), ("config", "b", "x")]
    with pytest.raises(UsageError):
        scan_tree(tmp_path / "missing")


def test_plan_item_decides_create_update_unchanged() -> None:
    local = {"port": 8080, "tls": {"on": True}}
    created = plan_item("config", "a", "b", local, None)
    assert created.action == "create" and {c.path for c in created.changes} == {"/port", "/tls"}
    same = plan_item("config", "a", "b", local, RemoteDocument(3, content_sha({"tls": {"on": True}, "port": 8080})))
    assert same.action == "unchanged" and same.remote_version == 3 and same.changes == []
    remote = RemoteDocument(3, content_sha({"port": 80}), {"port": 80})
    updated = plan_item("config", "a", "b", local, remote)
    assert updated.action == "update"
    assert [(c.op, c.path) for c in updated.changes] == [("replace", "/port"), ("add", "/tls")]
    assert '-  "port": 80' in updated.unified and '+  "port": 8080' in updated.unified


def test_plan_batches_put_schema_first_and_skip_unchanged() -> None:
    unchanged = RemoteDocument(1, content_sha({"port": 1}))
    plan = Plan(
        [
            plan_item("config", "a", "b", {"port": 2}, None),
            plan_item("schema", "a", "b", SCHEMA, None),
            plan_item("config", "a", "c", {"port": 1}, unchanged),
        ]
    )
    assert plan.summary() == {"create": 2, "update": 0, "unchanged": 1}
    batches = plan.batches()
    assert [[(i.kind, i.name) for i in batch] for batch in batches] == [[("schema", "b"), ("config", "b")]]


def test_import_requests_keep_a_config_whole_within_the_limits() -> None:
    small = [[plan_item("schema", "a", f"c{i}", SCHEMA, None), plan_item("config", "a", f"c{i}", {"port": i}, None)]
             for i in range(5)]  # fmt: skip
    big = [plan_item("config", "a", "big", {"port": 1, "tls": {"on": True}, "x": "y" * 1000}, None)]
    assert big[0].size == len(json.dumps(big[0].local, separators=(",", ":"))) and small[0][0].size > 0
    requests = import_requests([*small, big], max_items=4, max_bytes=10_000)
    assert [[len(b) for b in r] for r in requests] == [[2, 2], [2, 2], [2, 1]]
    requests = import_requests([*small, big], max_items=500, max_bytes=100)
    assert [len(r) for r in requests] == [1, 1, 1, 1, 1, 1]  # each config alone, none split, none dropped
    assert small[0][1].as_import() == {
        "kind": "config", "namespace": "a", "name": "c0", "document": {"port": 0}, "expected_version": 0,
    }  # fmt: skip
    updated = plan_item("schema", "a", "b", SCHEMA, RemoteDocument(4, "0" * 64, {}))
    assert updated.as_import()["expected_version"] == 4


def _refusal(status: int, errors: list[dict[str, str]]) -> ConfigdError:
    body = {"detail": "import refused, nothing written", "errors": errors, "expected": None, "actual": None}
    return from_status(RequestContext("POST", "http://x/api/v1/import", status, body))


def test_item_failures_decode_an_import_refusal_per_item() -> None:
    labels = ["a/x schema", "a/x", "a/y", "a/z"]
    mixed = _refusal(
        422,
        [
            {"path": "/items/1/document/port", "message": "'x' is not of type 'integer'"},
            {"path": "/items/1/document", "message": "'port' is a required property"},
            {"path": "/items/2/expected_version", "message": "a/y: expected version 3, but the head is 4"},
            {"path": "/items/9/document", "message": "beyond the items sent: ignored"},
        ],
    )
    found = item_failures(mixed, labels)
    assert sorted(found) == [1, 2]
    assert isinstance(found[1], ValidationFailed) and str(found[1]) == "a/x: 2 validation error(s)"
    assert [(e.path, e.message) for e in found[1].errors] == [
        ("/port", "'x' is not of type 'integer'"),
        ("/", "'port' is a required property"),
    ]
    assert isinstance(found[2], VersionConflict) and exit_code_for(found[2]) == ExitCode.CONFLICT
    assert found[2].request is not None  # the request stays attached for --json
    forbidden = item_failures(_refusal(403, [{"path": "/items/0", "message": "a/x schema: needs admin"}]), labels)
    assert isinstance(forbidden[0], AuthFailed) and "needs admin" in str(forbidden[0])
    missing = item_failures(_refusal(404, [{"path": "/items/3", "message": "a/z: no schema"}]), labels)
    assert isinstance(missing[3], NotFound) and exit_code_for(missing[3]) == ExitCode.NOT_FOUND
    assert item_failures(_refusal(503, []), labels) == {}
    assert item_failures(_refusal(422, [{"path": "/data", "message": "a push's error"}]), labels) == {}


# --- watch debouncing -----------------------------------------------------------------------------------
def test_debouncer_waits_for_quiet_and_pops_once() -> None:
    debouncer = Debouncer(quiet=0.5)
    a, b = Path("/t/a.json"), Path("/t/b.json")
    debouncer.touch(a, 10.0)
    debouncer.touch(b, 10.2)
    debouncer.touch(a, 10.4)  # a burst of writes to a: the clock restarts
    assert debouncer.due(10.6) == []
    assert debouncer.next_deadline() == pytest.approx(10.7)
    assert debouncer.due(10.7) == [b]
    assert debouncer.due(10.9) == [a]
    assert debouncer.due(20.0) == [] and debouncer.next_deadline() is None


# --- --from-model and offline validation ----------------------------------------------------------------
def test_schema_from_model_is_draft_2020_12_and_mirrors_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    schema = schema_from_model(load_model("examples.settings_models:PaymentsSettings"))
    assert schema["$schema"] == DRAFT_2020_12
    assert schema_errors(schema) == []
    assert schema["additionalProperties"] is False
    assert all(d["additionalProperties"] is False for d in schema["$defs"].values())
    good = {"timeout_ms": 900, "retries": 2, "currency": "USD", "limits": {"daily": 5}}
    assert validate_offline(schema, good, "model") == []
    bad = {"timeout_ms": 10, "currency": "XYZ", "limits": {"weekly": 1}}
    paths = {e.path for e in validate_offline(schema, bad, "model")}
    assert paths == {"/timeout_ms", "/currency", "/limits"}


def test_load_model_usage_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    for spec in ["examples.settings_models", "no_such_module_xyz:Model", "examples.settings_models:Missing"]:
        with pytest.raises(UsageError):
            load_model(spec)
    with pytest.raises(UsageError, match="not a pydantic model"):
        load_model("examples.settings_models:Literal")


def test_offline_validate_cli(tmp_path: Path) -> None:
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps(SCHEMA))
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text('{"port": 1}')
    bad.write_text('{"port": "x", "extra": 1, "tls": {"on": "yes"}}')
    ok = _run(["validate", "--schema", str(schema), str(good)])
    assert ok.exit_code == 0, ok.output
    assert "valid" in ok.stdout
    failed = _run(["validate", "--schema", str(schema), str(bad)])
    assert failed.exit_code == 1
    err_lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(err_lines) == 1
    assert "/port" in err_lines[0] and "/tls/on" in err_lines[0] and "extra" in err_lines[0]
    as_json = _run(["validate", "--schema", str(schema), str(bad), "--json"])
    assert as_json.exit_code == 1
    doc = json.loads(as_json.stdout)
    assert doc["valid"] is False and {e["path"] for e in doc["errors"]} == {"/", "/port", "/tls/on"}


def test_offline_validate_rejects_a_broken_schema_and_broken_json(tmp_path: Path) -> None:
    schema = tmp_path / "s.json"
    schema.write_text('{"type": "objekt"}')
    data = tmp_path / "d.json"
    data.write_text('{"port": 1,}')
    result = _run(["validate", "--schema", str(schema), str(tmp_path / "ok.json")])
    assert result.exit_code == 2 and "no such file" in result.stderr
    (tmp_path / "ok.json").write_text("{}")
    result = _run(["validate", "--schema", str(schema), str(tmp_path / "ok.json")])
    assert result.exit_code == 1 and "not a valid JSON Schema" in result.stderr and "/type" in result.stderr
    schema.write_text(json.dumps(SCHEMA))
    result = _run(["validate", "--schema", str(schema), str(data)])
    assert result.exit_code == 1 and "invalid JSON at line 1" in result.stderr
    data.write_text('{"port": NaN}')
    result = _run(["validate", "--schema", str(schema), str(data)])
    assert result.exit_code == 1 and "NaN" in result.stderr


def test_schema_push_print_from_model_needs_no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    result = _run(
        ["schema", "push", "payments/service", "--from-model", "examples.settings_models:PaymentsSettings", "--print"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["$schema"] == DRAFT_2020_12


# --- usage errors and an unreachable server -------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["get", "no-slash"], "namespace/name"),
        (["get", "Bad/Name"], "invalid"),
        (["push", "a/b", "/does/not/exist.json"], "no such file"),
        (["validate", "only-one-arg.json"], "validate NS/NAME FILE"),
        (["diff", "a/b", "x", "y"], "version numbers"),
        (["schema", "push", "a/b"], "exactly one of"),
        (["schema", "push", "a/b", "s.json", "--from-model", "m:C"], "exactly one of"),
        (["schema", "push", "a/b", "--from-model", "nomodule"], "package.module:Class"),
        (["status", "Bad"], "invalid"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], needle: str) -> None:
    result = _run(args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("usage:") and needle in lines[0]


def test_click_usage_errors_exit_2() -> None:
    assert _run(["push"]).exit_code == 2
    assert _run(["ls", "--no-such-option"]).exit_code == 2
    assert _run(["rollback", "a/b"]).exit_code == 2  # --to is required
    assert _run(["no-such-command"]).exit_code == 2


def test_unreachable_server_exits_5_and_json_error_document() -> None:
    result = _run(["ls"])
    assert result.exit_code == 5
    assert result.stderr.startswith("unavailable: cannot reach configd at http://127.0.0.1:")
    as_json = _run(["get", "a/b", "--json"])
    assert as_json.exit_code == 5
    doc = json.loads(as_json.stdout)
    assert doc["error"] == "ServerUnavailable" and doc["exit_code"] == 5
    assert doc["request"]["method"] == "GET" and doc["request"]["url"].endswith("/api/v1/configs/a/b")


def test_help_documents_the_exit_codes() -> None:
    result = _run(["--help"])
    assert result.exit_code == 0
    assert "6 auth" in result.stdout and "schema" in result.stdout and "import" in result.stdout
