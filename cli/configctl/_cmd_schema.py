"""``configctl schema``: register a config's JSON Schema (from a file or a pydantic settings class) and read it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ._errors import UsageError
from ._offline import check_schema, load_model, schema_from_model
from ._session import JsonOpt, RefArg, read_document, session, split_ref

schema_app = typer.Typer(no_args_is_help=True)


@schema_app.command("push")
def push_schema(
    ctx: typer.Context,
    ref: RefArg,
    file: Annotated[
        Path | None, typer.Argument(metavar="[SCHEMA.json]", help="JSON Schema file, or - for stdin.")
    ] = None,
    from_model: Annotated[
        str | None,
        typer.Option("--from-model", metavar="package.module:Class", help="Generate the schema from a pydantic class."),
    ] = None,
    message: Annotated[str, typer.Option("--message", "-m", help="Why: stored with the schema version.")] = "",
    force: Annotated[bool, typer.Option("--force", help="Register even if the current config would fail it.")] = False,
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the schema that would be pushed; send nothing.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Register a new schema version for NS/NAME (Draft 2020-12), from SCHEMA.json or --from-model."""
    state = session(ctx, as_json)
    namespace, name = split_ref(ref)
    if (file is None) == (from_model is None):
        raise UsageError("schema push: give exactly one of SCHEMA.json or --from-model package.module:Class")
    schema: Any
    if from_model is not None:
        schema = schema_from_model(load_model(from_model))
    else:
        schema = read_document(str(file), "schema")
        check_schema(schema, str(file))
    if print_only:
        state.output.emit_json(schema)
        return
    result = state.api().put_schema(namespace, name, schema, message=message, force=force)
    if state.output.json_output:
        state.output.emit_json(result)
    elif result.get("status") == "unchanged":
        state.output.line(f"{ref}: schema unchanged at v{result.get('version')}", style="yellow")
    else:
        state.output.line(f"{ref}: schema created v{result.get('version')}", style="green")


@schema_app.command("get")
def get_schema(
    ctx: typer.Context,
    ref: RefArg,
    version: Annotated[int | None, typer.Option("--version", "-v", help="A past schema version.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the config's JSON Schema (pipeable); --json prints the whole schema version record."""
    state = session(ctx, as_json)
    namespace, name = split_ref(ref)
    record = state.api().schema(namespace, name, version)
    if state.output.json_output:
        state.output.emit_json(record)
    else:
        state.output.emit_document(record.get("schema"))
