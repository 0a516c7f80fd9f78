"""``configctl projections``: project configs into plain Consul keys for Viper, Spring, consul-template and
envconsul (docs/interop.md): ``set``, ``ls`` and ``unset``."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from configd_core.errors import InvalidName
from configd_core.layout import validate_name

from ._errors import UsageError
from ._session import JsonOpt, session

projections_app = typer.Typer(no_args_is_help=True)

TargetArg = Annotated[
    str, typer.Argument(metavar="NS[/NAME]", help="A config (ns/name), or a namespace for every config in it.")
]
_PATH = "/api/v1/projections"


def _scope(target: str) -> str:
    """The API path of ``ns`` or ``ns/name`` (validated: a usage error otherwise)."""
    parts = target.split("/")
    if not 1 <= len(parts) <= 2:
        raise UsageError(f"{target!r}: give NS/NAME (one config) or NS (every config of the namespace)")
    try:
        for part, what in zip(parts, ("namespace", "name"), strict=False):
            validate_name(part, what)
    except InvalidName as exc:
        raise UsageError(str(exc)) from exc
    return _PATH + "".join(f"/{quote(p, safe='')}" for p in parts)


def _show(rows: list[dict[str, Any]], state: Any) -> None:
    if state.output.json_output:
        state.output.emit_json(rows)
        return
    state.output.table(
        None,
        ["config", "kind", "format", "target", "keys"],
        [
            (
                f"{r['namespace']}/{r['name'] or '*'}",
                r["kind"],
                r["format"] if r["kind"] == "document" else ("yaml" if r["kind"] == "spring" else "-"),
                r["target"],
                ", ".join(r["keys"]) or "-",
            )
            for r in rows
        ],
    )


@projections_app.command("set")
def set_projections(
    ctx: typer.Context,
    target: TargetArg,
    document: Annotated[
        str | None, typer.Option("--document", metavar="KEY", help="Project the document to KEY (Viper, templates).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="The document's format: json or yaml.")] = "json",
    spring: Annotated[
        str | None,
        typer.Option("--spring", metavar="APP[,PROFILE]", help="Project YAML to config/APP[,PROFILE]/data."),
    ] = None,
    tree: Annotated[
        str | None, typer.Option("--tree", metavar="PREFIX", help="Project one key per leaf under PREFIX.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Project NS/NAME (or every config of NS: use {name} in the targets). Each kind given replaces that kind's
    projection, the others stay; the projection is written at once."""
    state = session(ctx, as_json)
    if fmt not in ("json", "yaml"):
        raise UsageError(f"--format must be json or yaml, not {fmt!r}")
    if document is None and spring is None and tree is None:
        raise UsageError("projections set: give at least one of --document KEY, --spring APP[,PROFILE], --tree PREFIX")
    body: dict[str, Any] = {}
    if document is not None:
        body["document"] = {"key": document, "format": fmt}
    if spring is not None:
        body["spring"] = spring
    if tree is not None:
        body["tree"] = tree
    result = state.api().request("PUT", _scope(target), json=body)
    _show(result["projections"], state)


@projections_app.command("ls")
def list_projections(
    ctx: typer.Context,
    namespace: Annotated[
        str | None, typer.Argument(metavar="[NS]", help="One namespace; default: all you may read.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List what is projected where (a namespace-wide projection shows as NS/*)."""
    state = session(ctx, as_json)
    params = {}
    if namespace is not None:
        try:
            params["ns"] = validate_name(namespace, "namespace")
        except InvalidName as exc:
            raise UsageError(str(exc)) from exc
    result = state.api().request("GET", _PATH, params=params)
    _show(result["projections"], state)


@projections_app.command("unset")
def unset_projections(
    ctx: typer.Context,
    target: TargetArg,
    document: Annotated[bool, typer.Option("--document", help="Only the document projection.")] = False,
    spring: Annotated[bool, typer.Option("--spring", help="Only the spring projection.")] = False,
    tree: Annotated[bool, typer.Option("--tree", help="Only the tree projection.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Stop projecting NS/NAME (or NS's namespace-wide projections; all kinds, or those named) and delete the keys
    configd wrote for them."""
    state = session(ctx, as_json)
    kinds = [k for k, on in (("document", document), ("spring", spring), ("tree", tree)) if on]
    state.api().request(
        "DELETE", _scope(target) + "".join(("&" if i else "?") + f"kind={k}" for i, k in enumerate(kinds))
    )
    if state.output.json_output:
        state.output.emit_json({"unset": target})
    else:
        state.output.line(f"{target}: projections unset", style="green")
