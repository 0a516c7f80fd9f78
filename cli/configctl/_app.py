"""The root ``configctl`` app: global options, the sub-apps, and the ONE place failures become exit codes."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from configd_core.errors import ConfigdError

from ._errors import error_document, error_line, exit_code_for
from ._http import DEFAULT_SERVER
from ._render import Output
from ._session import Session


class _ConfigctlGroup(TyperGroup):
    """Runs every (sub)command and turns a configd exception into one stderr line and its exit code."""

    def invoke(self, ctx: Any) -> Any:  # typer's Context base class is private API
        try:
            return super().invoke(ctx)
        except ConfigdError as exc:
            found = ctx.find_object(Session)
            output = found.output if found is not None else Output()
            if output.json_output:
                output.emit_json(error_document(exc))
            else:
                output.error(error_line(exc))
            raise typer.Exit(int(exit_code_for(exc))) from None


app = typer.Typer(
    name="configctl",
    cls=_ConfigctlGroup,
    help="configctl: push, inspect, diff, roll back and sync configd configs over its HTTP API.",
    epilog="Exit codes: 0 ok, 1 validation failed, 2 usage, 3 conflict, 4 not found, "
    "5 server or Consul unavailable, 6 auth.",
    no_args_is_help=True,
    # Plain (click) help and usage errors: typer's rich formatting imports rich.markdown, markdown_it, rich.traceback
    # and rich.syntax first, ~65 ms of every `--help` and usage error on a 2-core VM, for boxes around the same text
    # (docs/benchmarks.md, start-up). Tables, diffs and errors of the commands themselves are still rich.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    ctx: typer.Context,
    server: Annotated[
        str, typer.Option("--server", envvar="CONFIGD_URL", help="configd base URL.", show_default=True)
    ] = DEFAULT_SERVER,
    token: Annotated[
        str | None, typer.Option("--token", envvar="CONFIGD_TOKEN", help="Bearer token (reader/editor/admin).")
    ] = None,
) -> None:
    """Connection settings shared by every command."""
    state = Session(server=server, token=token or None)
    ctx.obj = state
    ctx.call_on_close(state.close)


def _register() -> None:
    from ._cmd_configs import configs_app
    from ._cmd_observe import observe_app
    from ._cmd_projections import projections_app
    from ._cmd_review import policy_app, review_app
    from ._cmd_rollout import rollout_app
    from ._cmd_schema import schema_app
    from ._cmd_sync import sync_app

    app.add_typer(configs_app)
    app.add_typer(schema_app, name="schema", help="Register and read the JSON Schema of a config.")
    app.add_typer(sync_app)
    app.add_typer(observe_app)
    app.add_typer(review_app)
    app.add_typer(policy_app, name="policy", help="Set and read a namespace's review policy.")
    app.add_typer(
        rollout_app, name="rollout", help="Progressive rollouts: start, watch, promote, pause, resume, abort."
    )
    app.add_typer(
        projections_app, name="projections", help="Project configs to plain Consul keys (Viper, Spring, templates)."
    )


_register()


def main() -> None:
    """Console-script entry point."""
    app()
