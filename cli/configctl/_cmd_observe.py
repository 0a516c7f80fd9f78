"""Following a config: ``tail NS/NAME`` (new versions with their diffs) and ``status NS`` (client instances).

``tail`` polls the history endpoint (``GET …/versions?limit=…``) every ``--interval`` seconds. configctl only
talks to configd's HTTP API, which has no streaming endpoint; one small request per second per tail is cheap
for the server (it reads one head key), and every version is shown even when several land between two polls.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from ._errors import ExitCode
from ._render import when
from ._session import JsonOpt, RefArg, Session, session, split_ref

observe_app = typer.Typer()

HISTORY_PAGE = 100


def new_versions(page: dict[str, Any], after: int) -> list[dict[str, Any]]:
    """Versions newer than ``after`` from a newest-first history page, oldest first."""
    return sorted((v for v in page.get("versions", []) if int(v["version"]) > after), key=lambda v: int(v["version"]))


def _show_version(state: Session, ref: str, version: dict[str, Any], diff: dict[str, Any] | None) -> None:
    if state.output.json_output:
        state.output.emit_json_line({"ref": ref, **version, "diff": diff})
        return
    rollback = f" (rollback of v{version['rollback_of']})" if version.get("rollback_of") else ""
    state.output.line(
        f"{ref} v{version['version']}{rollback} by {version.get('author')} at {when(version.get('created_at'))}: "
        f"{version.get('message') or ''}".rstrip(),
        style="bold",
    )
    if diff is not None:
        if diff.get("unified"):
            state.output.diff(str(diff["unified"]))
        state.output.changes(diff.get("changes") or [])


@observe_app.command()
def tail(
    ctx: typer.Context,
    ref: RefArg,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between polls.")] = 1.0,
    count: Annotated[int | None, typer.Option("--count", "-c", min=1, help="Exit after this many versions.")] = None,
    since: Annotated[
        int | None, typer.Option("--since", min=0, help="Also show versions after this one (default: the head).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Follow NS/NAME: print each new version as it lands, with its diff from the one before."""
    state = session(ctx, as_json)
    namespace, name = split_ref(ref)
    api = state.api()
    if since is None:
        first = api.history(namespace, name, limit=1).get("versions") or []
        since = int(first[0]["version"]) if first else 0
    state.output.note(f"following {ref} after v{since} (every {interval:g}s; Ctrl-C to stop)")
    last, shown = since, 0
    try:
        while count is None or shown < count:
            for version in new_versions(api.history(namespace, name, limit=HISTORY_PAGE), last):
                number = int(version["version"])
                parent = version.get("parent") or (number - 1)
                diff = api.diff(namespace, name, int(parent), number) if int(parent) >= 1 else None
                _show_version(state, ref, version, diff)
                last, shown = number, shown + 1
                if count is not None and shown >= count:
                    break
            else:
                time.sleep(interval)
    except KeyboardInterrupt:
        state.output.note("stopped")
    raise typer.Exit(int(ExitCode.OK))


@observe_app.command()
def status(
    ctx: typer.Context,
    namespace: Annotated[str, typer.Argument(metavar="NS", help="The namespace whose clients to show.")],
    as_json: JsonOpt = False,
) -> None:
    """The SDK instances watching NS and the version of each config they applied, and NS's Consul KV keys and bytes."""
    state = session(ctx, as_json)
    split_ref(f"{namespace}/x")
    result = state.api().clients(namespace)
    usage = state.api().storage(namespace).get("namespaces", {}).get(namespace, {"keys": 0, "bytes": 0, "by_kind": {}})
    if state.output.json_output:
        state.output.emit_json({**result, "storage": usage})
        return
    rows: list[tuple[Any, ...]] = []
    for client in result.get("clients", []):
        configs = client.get("configs") or [{}]
        for config in configs:
            applied, head = config.get("applied_version"), config.get("head_version")
            state_text = "current" if config.get("current") else ("behind" if config else "")
            rows.append(
                (
                    client.get("instance"),
                    client.get("application"),
                    f"{client.get('host')}:{client.get('pid')}",
                    when(client.get("updated_at")),
                    config.get("name"),
                    f"v{applied}" if applied is not None else "",
                    f"v{head}" if head is not None else "",
                    state_text,
                )
            )
    count = len(result.get("clients", []))
    title = f"{namespace}: {count} client instance(s)"
    state.output.table(title, ["instance", "application", "host:pid", "seen", "config", "applied", "head", ""], rows)
    kinds = ", ".join(f"{kind} {n['keys']}" for kind, n in sorted(usage.get("by_kind", {}).items()))
    state.output.line(f"Consul KV: {usage['keys']} keys, {usage['bytes']} bytes ({kinds or 'nothing stored'})")
