"""Config commands: push, get, ls, history, diff, rollback, validate, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from configd_core.diff import diff_json, unified_diff
from configd_core.errors import ErrorDetail, ValidationFailed
from configd_core.layout import validate_name

from ._errors import ExitCode, UsageError
from ._offline import validate_offline
from ._render import when
from ._session import JsonOpt, RefArg, Session, read_document, session, split_ref

configs_app = typer.Typer()

MessageOpt = Annotated[str, typer.Option("--message", "-m", help="Why: stored with the version and in the audit log.")]
ExpectedOpt = Annotated[
    int | None,
    typer.Option("--expected-version", help="Only write if the head is this version (0 = must not exist yet)."),
]


def _details(raw: Any) -> list[ErrorDetail]:
    return [ErrorDetail(str(e.get("path", "")), str(e.get("message", ""))) for e in raw or [] if isinstance(e, dict)]


def report_write(state: Session, ref: str, result: dict[str, Any]) -> None:
    """The outcome of a push or rollback: the version it produced (or that nothing changed)."""
    if state.output.json_output:
        state.output.emit_json(result)
        return
    version = result.get("version")
    if result.get("status") == "unchanged":
        state.output.line(f"{ref}: unchanged at v{version}", style="yellow")
        return
    extra = f", schema v{result['schema_version']}" if result.get("schema_version") is not None else ""
    sha = str(result.get("sha256", ""))[:12]
    state.output.line(f"{ref}: created v{version} (sha256 {sha}, {result.get('size')} bytes{extra})", style="green")


def report_dry_run(state: Session, ref: str, result: dict[str, Any]) -> None:
    """A server-side dry run: the diff against the head and the verdict; exit 1 when invalid."""
    valid = bool(result.get("valid"))
    if state.output.json_output:
        state.output.emit_json(result)
        if not valid:
            raise typer.Exit(int(ExitCode.VALIDATION_FAILED))
        return
    head = result.get("head_version")
    state.output.line(f"{ref}: dry run against {'head v' + str(head) if head else 'no head (would create v1)'}")
    if result.get("unified"):
        state.output.diff(str(result["unified"]))
    state.output.changes(result.get("changes") or [])
    if not valid:
        errors = _details(result.get("errors"))
        raise ValidationFailed(f"{ref}: {len(errors)} validation error(s); nothing written", errors)
    state.output.line(f"{ref}: valid; nothing written", style="green")


@configs_app.command()
def push(
    ctx: typer.Context,
    ref: RefArg,
    file: Annotated[str, typer.Argument(metavar="FILE", help="JSON file, or - for stdin.")],
    message: MessageOpt = "",
    expected_version: ExpectedOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and diff against the head; write nothing.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Push FILE as the next version of NS/NAME (validated by the server against the config's schema)."""
    state = session(ctx, as_json)
    namespace, name = split_ref(ref)
    data = read_document(file)
    if dry_run:
        report_dry_run(state, ref, state.api().validate(namespace, name, data))
        return
    result = state.api().push(namespace, name, data, message=message, expected_version=expected_version)
    report_write(state, ref, result)


@configs_app.command()
def get(
    ctx: typer.Context,
    ref: RefArg,
    version: Annotated[int | None, typer.Option("--version", "-v", help="A past version (default: the head).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the config's JSON data (pipeable); --json prints the whole version record."""
    state = session(ctx, as_json)
    namespace, name = split_ref(ref)
    record = state.api().config(namespace, name, version)
    if state.output.json_output:
        state.output.emit_json(record)
    else:
        state.output.emit_document(record.get("data"))


@configs_app.command("ls")
def list_configs(
    ctx: typer.Context,
    namespace: Annotated[str | None, typer.Argument(metavar="[NS]", help="List this namespace's configs.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List namespaces, or the configs of one namespace."""
    state = session(ctx, as_json)
    out = state.output
    if namespace is None:
        spaces = state.api().namespaces()
        if out.json_output:
            out.emit_json({"namespaces": spaces})
            return
        summary = [
            (s["namespace"], s.get("configs"), when(s.get("latest_change")), s.get("latest_author")) for s in spaces
        ]
        out.table(None, ["namespace", "configs", "latest change", "by"], summary)
        return
    validate_name(namespace, "namespace")
    configs = state.api().configs(namespace)
    if out.json_output:
        out.emit_json({"namespace": namespace, "configs": configs})
        return
    rows = [
        (
            c["name"],
            f"v{c.get('version')}",
            f"v{c['schema_version']}" if c.get("schema_version") is not None else "",
            c.get("size"),
            c.get("author"),
            when(c.get("created_at")),
            c.get("message"),
        )
        for c in configs
    ]
    out.table(namespace, ["name", "version", "schema", "bytes", "author", "created", "message"], rows)


@configs_app.command()
def history(
    ctx: typer.Context,
    ref: RefArg,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, help="Versions to show.")] = 50,
    before: Annotated[int | None, typer.Option("--before", help="Only versions older than this one.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The versions of a config, newest first."""
    state = session(ctx, as_json)
    namespace, name = split_ref(ref)
    page = state.api().history(namespace, name, limit=limit, before=before)
    if state.output.json_output:
        state.output.emit_json(page)
        return
    rows = [
        (
            f"v{v.get('version')}",
            when(v.get("created_at")),
            v.get("author"),
            f"rollback of v{v['rollback_of']}" if v.get("rollback_of") else "",
            str(v.get("sha256", ""))[:12],
            v.get("size"),
            v.get("message"),
        )
        for v in page.get("versions", [])
    ]
    title = f"{ref}: {page.get('total')} version(s)"
    state.output.table(title, ["version", "created", "author", "rollback", "sha256", "bytes", "message"], rows)
    if page.get("next_before"):
        state.output.note(f"older versions: configctl history {ref} --before {page['next_before']}")


def _as_version(text: str) -> int | None:
    stripped = text[1:] if text[:1] in ("v", "V") else text
    return int(stripped) if stripped.isdigit() else None


@configs_app.command()
def diff(
    ctx: typer.Context,
    ref: RefArg,
    sides: Annotated[
        list[str], typer.Argument(metavar="A [B] | FILE", help="Two versions, one version (vs the head), or a file.")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Coloured unified diff plus the changed paths: between versions A and B, or the head and a local FILE."""
    state = session(ctx, as_json)
    namespace, name = split_ref(ref)
    api = state.api()
    if len(sides) == 2:
        a, b = (_as_version(s) for s in sides)
        if a is None or b is None:
            raise UsageError(f"diff {ref} A B: A and B must be version numbers, got {sides[0]!r} and {sides[1]!r}")
        result = api.diff(namespace, name, a, b)
    elif len(sides) == 1 and (_as_version(sides[0]) is not None and not Path(sides[0]).is_file()):
        a = _as_version(sides[0])
        head = api.config(namespace, name)
        assert a is not None
        result = api.diff(namespace, name, a, int(head["version"]))
    elif len(sides) == 1:
        local = read_document(sides[0])
        head = api.config(namespace, name)
        changes = diff_json(head.get("data"), local)
        result = {
            "from": head.get("version"),
            "to": sides[0],
            "changes": [c.as_dict() for c in changes],
            "unified": unified_diff(
                head.get("data"), local, from_label=f"{ref}@v{head.get('version')}", to_label=sides[0]
            ),
        }
    else:
        raise UsageError(f"diff {ref}: give two versions (A B), one version, or one FILE")
    if state.output.json_output:
        state.output.emit_json(result)
        return
    if result.get("unified"):
        state.output.diff(str(result["unified"]))
    state.output.changes(result.get("changes") or [])


@configs_app.command()
def rollback(
    ctx: typer.Context,
    ref: RefArg,
    to: Annotated[int, typer.Option("--to", help="The version whose data becomes the new head.", min=1)],
    message: MessageOpt = "",
    expected_version: ExpectedOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make version N's data the head again, as a new version (history is never rewritten)."""
    state = session(ctx, as_json)
    namespace, name = split_ref(ref)
    result = state.api().rollback(namespace, name, to, message=message, expected_version=expected_version)
    report_write(state, ref, result)


@configs_app.command()
def validate(
    ctx: typer.Context,
    args: Annotated[list[str], typer.Argument(metavar="[NS/NAME] FILE", help="NS/NAME FILE, or FILE with --schema.")],
    schema: Annotated[
        Path | None, typer.Option("--schema", help="Validate offline against this JSON Schema file (no server).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate FILE: server-side dry run (NS/NAME FILE) or fully offline (--schema SCHEMA.json FILE)."""
    state = session(ctx, as_json)
    if schema is not None:
        if len(args) not in (1, 2):
            raise UsageError("validate --schema SCHEMA.json FILE: give exactly one FILE")
        file = args[-1]
        json_schema = read_document(str(schema), "schema")
        errors = validate_offline(json_schema, read_document(file), str(schema))
        result = {"valid": not errors, "errors": [e.as_dict() for e in errors], "schema": str(schema), "file": file}
        if state.output.json_output:
            state.output.emit_json(result)
            if errors:
                raise typer.Exit(int(ExitCode.VALIDATION_FAILED))
            return
        if errors:
            raise ValidationFailed(f"{file}: {len(errors)} validation error(s) against {schema}", errors)
        state.output.line(f"{file}: valid against {schema}", style="green")
        return
    if len(args) != 2:
        raise UsageError("validate NS/NAME FILE (server dry run), or validate --schema SCHEMA.json FILE (offline)")
    ref, file = args
    namespace, name = split_ref(ref)
    report_dry_run(state, ref, state.api().validate(namespace, name, read_document(file)))


@configs_app.command()
def delete(
    ctx: typer.Context,
    ref: RefArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete a config (its history stays readable; clients keep their last good version)."""
    state = session(ctx, as_json)
    namespace, name = split_ref(ref)
    if not yes and not typer.confirm(f"delete {ref}?", err=True):
        raise typer.Exit(int(ExitCode.USAGE))
    result = state.api().delete(namespace, name)
    if state.output.json_output:
        state.output.emit_json(result)
    else:
        state.output.line(f"{ref}: deleted (tombstone v{result.get('version')})", style="yellow")
